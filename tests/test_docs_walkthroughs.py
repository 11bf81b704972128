"""The annotator walk-throughs of the docs, run verbatim in bash from a scratch directory.

Each block is the page's own text (the bash block under its "Walk-through" heading, marked
``<!-- docs-test: run-by tests/test_docs_walkthroughs.py::TEST -->``, which tests/test_docs_commands.py
checks): if a command, a flag or a path in it stops working, this test fails. The only changes are the
environment: the session's world cache and a free port for the stand-in endpoint.
(These walk-throughs were in the README before the manual moved to docs/.)
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.docs_blocks import Block, run_by_block
from tests.extras import requires_extra

ROOT = Path(__file__).resolve().parent.parent


def _block(page: str, marked: Block) -> str:
    """The one bash block of the "## Walk-through" section of ``docs/<page>``, which must be ``marked``
    (the block marked run-by the calling test)."""
    text = (ROOT / "docs" / page).read_text(encoding="utf-8")
    section = text.split("\n## Walk-through\n", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```bash\n(.+?)\n```", section, flags=re.S)
    assert (marked.page, marked.text) == (f"docs/{page}", block), f"{marked.id} is not the walk-through of {page}"
    return block


def _run(block: str, tmp_path: Path) -> subprocess.CompletedProcess:
    for folder in ("scripts", "tests"):
        (tmp_path / folder).symlink_to(ROOT / folder)
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
               PYTHONPATH=str(ROOT), HARNESS_DB="", COLUMNS="200")
    if shutil.which("harness", path=env["PATH"]) is None:
        pytest.skip("the harness command is not on PATH (install the package with pip install -e .)")
    return subprocess.run(["bash", "-e", "-c", block], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=900)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@requires_extra("hf")  # its last step loads the exported preferences with datasets
def test_people_as_annotators_walkthrough(tmp_path):
    marked = run_by_block("tests/test_docs_walkthroughs.py::test_people_as_annotators_walkthrough")
    result = _run(_block("annotators/people.md", marked), tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    output = " ".join((result.stdout + result.stderr).split())
    assert "awaits labels: iteration 2" in output
    assert "final win rate" in output and "1000 of 1000 labels" in output
    assert "num_rows: 1000" in output and "'chosen'" in output


def test_llm_judge_walkthrough(tmp_path):
    port = str(_free_port())
    marked = run_by_block("tests/test_docs_walkthroughs.py::test_llm_judge_walkthrough")
    block = _block("annotators/llm-judge.md", marked).replace("8765", port)
    result = _run(block, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    output = " ".join((result.stdout + result.stderr).split())
    assert "2000 requests" in output and "0 requests" in output and "2000 answers from the cache" in output
