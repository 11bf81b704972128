"""A griffe extension for the docs site: Sphinx roles in docstrings become code spans.

The harness's docstrings use reST roles (``:class:`harness.interfaces.Selector```, ``:meth:`Ranks.split```,
``:data:`API_VERSION```), which mkdocstrings would print as they are. This extension, listed under
the mkdocstrings options in mkdocs.yml, rewrites each one to a code span (the role's target, or its
text after ``~``) before the docstring is rendered. The docstrings themselves are not changed.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(?:class|meth|func|mod|data|attr|exc|obj|const):`~?([^`]+)`")


def plain(text: str) -> str:
    """``text`` with every Sphinx cross-reference role replaced by a code span of its target."""
    return _ROLE.sub(lambda match: f"`{match.group(1)}`", text)


class SphinxRoles(griffe.Extension):
    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = plain(obj.docstring.value)
