"""Generated sections of Markdown files: the text between two marker lines, replaced or checked.

Several pages of the docs hold sections that a command writes (the leaderboard schema,
the verdict table of the studies, the reliability figures, the performance table).
Each section lies between two HTML comments, each alone on its line::

    <!-- schema:start -->
    ... written by the command, never by hand ...
    <!-- schema:end -->

Every generator goes through :func:`refresh`, which either rewrites the section
(``--write FILE``) or reports whether it is up to date (``--check FILE``), and
leaves every byte outside the markers alone. Markers count only as whole lines, so a
page may mention them in its prose or in a code span.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

__all__ = ["MarkerError", "markers", "refresh", "replace", "section", "span"]


class MarkerError(ValueError):
    """A file lacks one of a section's marker lines, or has them in the wrong order."""


def markers(name: str) -> tuple[str, str]:
    """The start and end marker lines of the section called ``name``."""
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


def _line(text: str, marker: str) -> re.Match[str] | None:
    return re.search(rf"^{re.escape(marker)}[ \t]*$", text, re.M)


def span(text: str, start: str, end: str) -> tuple[int, int] | None:
    """Where the section lies in ``text``: from the start of its start marker line to the end of its
    end marker line (that line's newline not included). None when neither marker line is there;
    :class:`MarkerError` when only one is, or the end comes first."""
    first, last = _line(text, start), _line(text, end)
    if first is None and last is None:
        return None
    if first is None or last is None or last.start() < first.end():
        raise MarkerError(f"the section {start} ... {end} lacks one of its marker lines or has them in the wrong "
                          "order; restore both lines, each alone on its line")
    return first.start(), last.end()


def _inner(text: str, start: str, end: str) -> tuple[int, int]:
    """The offsets of what lies strictly between the two marker lines."""
    found = span(text, start, end)
    if found is None:
        raise MarkerError(f"no {start} ... {end} section found; add the two marker lines where it belongs")
    begin = _line(text, start).end()
    return begin + text.startswith("\n", begin), _line(text, end).start()


def _body(generated: str) -> str:
    return generated if generated.endswith("\n") or not generated else generated + "\n"


def section(text: str, start: str, end: str) -> str:
    """What lies between the marker lines of ``text`` (the markers' own lines excluded)."""
    begin, stop = _inner(text, start, end)
    return text[begin:stop]


def replace(text: str, start: str, end: str, generated: str) -> str:
    """``text`` with the section between the marker lines replaced by ``generated`` (given a final
    newline if it lacks one); the marker lines and everything outside them are kept."""
    begin, stop = _inner(text, start, end)
    return text[:begin] + _body(generated) + text[stop:]


def refresh(path: Path, start: str, end: str, generated: str, *, check: bool, command: str) -> int:
    """Write ``generated`` between the marker lines of ``path``, or with ``check`` only compare.

    Prints one line on stderr and returns an exit code: 0 when the section was up to date or has
    been rewritten, 1 when ``check`` finds it stale (the message names ``command``, which refreshes
    it), 2 when the file cannot be read or lacks the markers.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        current = section(text, start, end)
    except OSError as exc:
        print(f"cannot read {path}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except MarkerError as exc:
        print(f"{path}: {exc}", file=sys.stderr)
        return 2
    if current == _body(generated):
        print(f"{path}: the section {start} is up to date", file=sys.stderr)
        return 0
    if check:
        print(f"{path}: the section {start} is stale; refresh it with `{command}`", file=sys.stderr)
        return 1
    path.write_text(replace(text, start, end, generated), encoding="utf-8")
    print(f"{path}: the section {start} rewritten", file=sys.stderr)
    return 0
