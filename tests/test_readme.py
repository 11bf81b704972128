"""The README stays what a visitor reads in two minutes: its test command is what CI runs, and its
links into the docs lead somewhere.

The checks of the manual's content (every hook documented, the tutorial, the reliability figures,
the walk-throughs) moved with that content to docs/: tests/test_docs_pages.py,
tests/test_docs_generated.py and tests/test_docs_walkthroughs.py.
"""

import re
from pathlib import Path

from tests.test_citations import anchors

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
CI = (ROOT / ".ci" / "run").read_text()


def setup_commands():
    section = README.split("## Set-up", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", section, flags=re.S)


def test_exactly_two_setup_commands():
    commands = setup_commands()
    assert len(commands) == 2
    assert all("\n" not in c for c in commands)
    assert commands[0].endswith("harness run --selector smallest --allocator decrease")
    assert commands[0].startswith("python3 -m venv .venv") and "pip install torch==2.13.0 &&" in commands[0]
    assert commands[1].endswith("&& python -m pytest") and ".[test,docs," in commands[1]


def test_ci_runs_the_readme_test_command_verbatim():
    assert setup_commands()[1] + " || status=$?" in CI


def test_the_readme_is_short():
    assert len(README.splitlines()) < 200, "the README is a two-minute read; put the rest in docs/"


def test_every_link_of_the_readme_leads_to_a_file_and_heading_of_the_repository():
    links = re.findall(r"\]\(([^)\s]+)\)", README)
    local = [link for link in links if not re.match(r"[a-z]+://", link)]
    assert len(local) >= 20  # the README is mostly a map of the docs
    for link in local:
        path, _, anchor = link.partition("#")
        target = ROOT / path
        assert target.exists(), f"the README links to {path}, which does not exist"
        if anchor:
            assert anchor in anchors(target), f"{path} has no heading with the anchor #{anchor}"
