"""The docs pages stay true to the code: every hook is documented with its arguments, the plugin
tutorial is the example plugin, the reliability figures were generated, the example plan runs, and
the install commands agree everywhere they are given.

(These checks parsed the README before the manual moved to docs/.)
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness import hookspecs

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def page(name: str) -> str:
    return (DOCS / name).read_text(encoding="utf-8")


def section(text: str, heading: str) -> str:
    """The text under ``heading`` (a whole heading line) up to the next heading of its level or above,
    outside code blocks (a ``#`` comment in a code block is not a heading)."""
    level = len(heading) - len(heading.lstrip("#"))
    lines = text.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if line.rstrip() == heading]
    assert starts, f"no heading {heading!r}"
    out, fenced = [], False
    for line in lines[starts[0] + 1:]:
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced and re.match(rf"#{{1,{level}}}\s", line):
            break
        out.append(line)
    return "".join(out)


def blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.+?)\n```", text, flags=re.S | re.M)


def test_every_hook_is_documented_with_its_arguments():
    hooks_page = page("plugins/hooks.md")
    hooks = [name for name in dir(hookspecs) if name.startswith("register_")]
    assert len(hooks) == 9
    for name in hooks:
        function = getattr(hookspecs, name)
        arguments = ", ".join(function.__code__.co_varnames[: function.__code__.co_argcount])
        assert f"`{name}({arguments})`" in hooks_page, name
        assert f"- {name}" in hooks_page, f"{name} is missing from the API reference of the hooks page"


def test_tutorial_code_is_the_example_plugin():
    tutorial_page = page("plugins/index.md")
    (selector,) = blocks(section(tutorial_page, "## 2. Write the selector and one hook implementation"), "python")
    source = (ROOT / "tests" / "example_plugin" / "pairsel_lengthgap" / "__init__.py").read_text()
    assert selector.strip() in source
    (contract,) = blocks(section(tutorial_page, "## 4. Test it with the harness's contract tests"), "python")
    assert contract.strip() in (ROOT / "tests" / "example_plugin" / "test_lengthgap.py").read_text()
    (entry_point,) = blocks(section(tutorial_page, "## 3. Declare the entry point"), "toml")
    example = (ROOT / "tests" / "example_plugin" / "pyproject.toml").read_text().splitlines()
    assert [line for line in entry_point.splitlines() if line.strip() and line not in example] == []


def test_reliability_section_is_generated_and_lost_nothing():
    text = page("results/reliability.md")
    generated = text.split("<!-- reliability:start -->", 1)[1].split("<!-- reliability:end -->", 1)[0]
    assert "python scripts/reliability.py" in generated and "rows lost: 0." in generated
    assert re.search(r"\*\*[\d,]+ bad inputs tried", generated)


def _setup_commands(text: str, heading: str) -> list[str]:
    return [c for c in blocks(section(text, heading), "bash")]


def test_the_install_commands_agree_everywhere():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    main_job, tests = _setup_commands(readme, "## Set-up")
    started = _setup_commands(page("getting-started.md"), "## Install and run")
    assert started == [main_job, tests]
    assert _setup_commands(page("development.md"), "## Set-up and tests")[0] == tests


def test_the_example_plan_is_valid_and_runs_what_the_page_says(tmp_path):
    plans = page("experiments/plans.md")
    (plan,) = blocks(section(plans, "## An example"), "toml")
    (tmp_path / "my_study.toml").write_text(plan + "\n", encoding="utf-8")
    harness = shutil.which("harness", path=str(Path(sys.executable).parent)) or shutil.which("harness")
    if harness is None:
        pytest.skip("the harness command is not on PATH (install the package with pip install -e .)")
    env = dict(os.environ, HARNESS_DB=str(tmp_path / "plan.db"), COLUMNS="200")
    counts = re.search(r"\((\d+) runs, a tiny\s+world\) or without `--quick` \((\d+) runs\)", plans)
    assert counts, "the page no longer says how many runs the example makes"
    for flags, runs in ((["--quick"], counts.group(1)), ([], counts.group(2))):
        done = subprocess.run([harness, "study", "run", "my_study.toml", "--dry-run", *flags], cwd=tmp_path,
                              env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"2 grids, 2 claims, {runs} runs" in " ".join(done.stderr.split()), done.stderr


def test_every_docs_page_says_where_its_generated_sections_come_from():
    for name, marker, command in (
        ("leaderboard/schema.md", "schema", "python -m leaderboard.schema_doc --write docs/leaderboard/schema.md"),
        ("results/index.md", "reproduction", "python -m harness.experiments.study_report --write docs/results/index.md"),
        ("results/reliability.md", "reliability", "python scripts/reliability.py --write docs/results/reliability.md"),
        ("results/performance.md", "performance", "python scripts/performance.py --write docs/results/performance.md"),
    ):
        text = page(name)
        assert text.count(f"<!-- {marker}:start -->") == 1 and text.count(f"<!-- {marker}:end -->") == 1, name
        assert command in text.replace("\n", " "), f"{name} does not name the command that refreshes it"
