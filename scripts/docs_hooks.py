"""MkDocs hooks of the docs site (``hooks:`` in mkdocs.yml): pages generated from the code at build time.

* ``<!-- cli-reference -->`` (in ``docs/reference/cli.md``) becomes every command's ``--help``,
  generated from the Typer application by ``scripts/cli_reference.py``;
* ``<!-- plan-schema -->`` (in ``docs/experiments/plans.md``) becomes the study plan's keys,
  :data:`harness.experiments.study_plan.PLAN_SCHEMA_DOC`, the text the plan validation itself uses.

These pages are therefore never stale, and nothing generated is committed.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

PLACEHOLDER = "<!-- cli-reference -->"
PLAN_PLACEHOLDER = "<!-- plan-schema -->"
_SCRIPT = Path(__file__).resolve().parent / "cli_reference.py"
_cache: dict[str, str] = {}


def _reference() -> str:
    if "cli" not in _cache:
        spec = importlib.util.spec_from_file_location("cli_reference", _SCRIPT)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _cache["cli"] = module.render()
    return _cache["cli"]


def _plan_schema() -> str:
    from harness.experiments.study_plan import PLAN_SCHEMA_DOC

    return "```text\n" + PLAN_SCHEMA_DOC.rstrip("\n") + "\n```\n"


def on_page_markdown(markdown: str, page, config, files) -> str:
    if PLACEHOLDER in markdown:
        markdown = markdown.replace(PLACEHOLDER, _reference())
    if PLAN_PLACEHOLDER in markdown:
        markdown = markdown.replace(PLAN_PLACEHOLDER, _plan_schema())
    return markdown
