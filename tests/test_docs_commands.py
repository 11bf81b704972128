"""Every command block of the README and docs/ is run by a test, or marked as run elsewhere or skipped.

``test_every_command_block_is_run_or_marked`` (the meta-test) fails on a command block that nothing runs,
a ``docs-test`` marker with an unknown verb or skip reason, a substitution whose text is not in its
block, and a ``run-by`` whose target does not exist or does not read the block. ``test_command_block``
runs each block that is neither skipped nor run elsewhere in ``bash -e`` from a scratch directory that
looks like a clone (symlinks to the repository's top-level files), with its declared setup and
substitutions, and checks its exit code and its expected output. The markers are described in
tests/docs_blocks.py and docs/development.md ("Tests of the docs' commands").

The environment of a block: the venv's bin first on PATH, PYTHONPATH the repository, HARNESS_DB a
database in the scratch directory (nothing touches the user's), the session's world cache, entry-point
plugins on (as for a user), one torch thread, wide columns, and two variables for substitutions:
``$TINY``, the options of a synthetic world and run small enough to take seconds, and ``$TINY_HF``, a
folder of tiny hf models and data built in code (tests/hf_tiny.py), only for blocks that name it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.extras import missing, skip_unless_extra

from tests.docs_blocks import ROOT, audit, collect, command_blocks, parse

#: A synthetic world and run of a few seconds: tests/conftest.py's tiny world, 3 iterations of few labels.
TINY = ("--budget 90 -o trainer.epochs=2 -o testbed.sft_samples=2000 -o testbed.sft_epochs=1 "
        "-o testbed.seed_prompts=40 -o testbed.pi0_epochs=2 -o testbed.eval_prompts=100")
#: What of the repository's top level a scratch directory links to (build outputs and state left out).
LEFT_OUT = {"build", "site", "runs", "study-reports", "figures", "leaderboard.db", "__pycache__"}


def test_every_command_block_is_run_or_marked():
    blocks, outside = collect()
    problems = audit(blocks, outside)
    assert not problems, "\n".join(problems)
    commands = [block for block in blocks if block.language == "bash"]
    assert len(commands) >= 25  # README.md and docs/ had 25 bash blocks when this test was written
    assert sum(block.run_by is not None for block in commands) >= 5


def test_a_planted_unmarked_or_mismarked_block_fails_the_meta_test(tmp_path):
    (tmp_path / ".ci").mkdir()
    (tmp_path / ".ci" / "run").write_text("echo ci\n")
    markdown = "\n".join([
        "# A page",
        "```zsh", "harness run", "```",                                        # a command block nothing runs
        "<!-- docs-test: skip slow -- it takes long -->", "```bash", "harness sweep", "```",  # reason not allowed
        "<!-- docs-test: skip gpu -->", "```bash", "harness run --testbed hf", "```",          # no why
        "<!-- docs-test: substitute \"--seeds 0-9\" \"--seeds 0\" -->", "```bash", "harness sweep --seeds 0-4", "```",
        "<!-- docs-test: later -->", "```bash", "harness list", "```",         # unknown verb
        "<!-- docs-test: run-by .ci/run -->", "```bash", "echo not ci", "```",  # .ci/run does not hold it
        "<!-- docs-test: run-by tests/test_docs_commands.py::test_no_such_test -->", "```bash", "true", "```",
        "<!-- docs-test: expect \"x\" -->", "", "```bash", "true", "```",      # a marker not directly above
        "```bash", "harness leaderboard", "```",                               # unmarked: run by test_command_block
        "<!-- docs-test: run-by .ci/run -->", "```bash", "echo ci", "```",     # fine
    ])
    blocks, outside = parse(markdown, "planted.md")
    problems = "\n".join(audit(blocks, outside, root=tmp_path))
    for expected in ("planted.md:2: a ```zsh block is neither a command block", "skip reason 'slow' is not allowed",
                     "skip gpu needs a why", "substitute '--seeds 0-9': not found in the block",
                     "unknown docs-test verb 'later'", ".ci/run does not hold the block verbatim",
                     "run-by 'tests/test_docs_commands.py::test_no_such_test'",
                     "planted.md:29: a docs-test marker must be directly above a code block"):
        assert expected in problems
    assert len(problems.splitlines()) == 8, problems
    assert [block.text for block in blocks if block.runnable] == ["harness sweep --seeds 0-4", "harness list", "true",
                                                                  "harness leaderboard"]
    # the real run-by targets pass the check against the real repository
    assert not audit(parse("<!-- docs-test: run-by tests/test_docs_walkthroughs.py::test_llm_judge_walkthrough -->\n"
                           "```bash\nx\n```\n", "p.md")[0])
    assert audit(parse("<!-- docs-test: run-by tests/test_docs_walkthroughs.py::test_people_as_annotators_walkthrough"
                       " -->\n```bash\nx\n```\n", "p.md")[0]) == []


def test_the_meta_test_fails_on_a_planted_unmarked_block_that_nothing_runs(monkeypatch):
    real_blocks, real_outside = collect()
    planted, outside = parse("# Planted\n\n```zsh\nharness run --selector smallest\n```\n", "docs/planted.md")
    monkeypatch.setattr(sys.modules[__name__], "collect", lambda: (real_blocks + planted, real_outside + outside))
    with pytest.raises(AssertionError, match=r"docs/planted.md:3: a ```zsh block is neither a command block"):
        test_every_command_block_is_run_or_marked()


def test_a_run_by_test_must_read_its_block_by_its_own_id(tmp_path):
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_x.py").write_text(
        "def test_reads():\n    block = run_by_block('tests/test_x.py::test_reads')\n\n"
        "def test_reads_another():\n    block = run_by_block('tests/test_x.py::test_reads')\n")
    good, bad = (parse(f"<!-- docs-test: run-by tests/test_x.py::{name} -->\n```bash\ntrue\n```\n", "p.md")[0]
                 for name in ("test_reads", "test_reads_another"))
    assert audit(good, root=tmp_path) == []
    assert "that test does not read the block" in "\n".join(audit(bad, root=tmp_path))


def _scratch(folder: Path) -> Path:
    """A directory that looks like a clone: a symlink to each top-level file and folder of the repository."""
    folder.mkdir(parents=True)
    for entry in ROOT.iterdir():
        if entry.name in LEFT_OUT or entry.name.endswith(".egg-info") or (entry.name.startswith(".")
                                                                          and entry.name != ".ci") \
                or entry.name.startswith("leaderboard.db"):  # a local database's -wal/-shm files too
            continue
        (folder / entry.name).symlink_to(entry)
    return folder


def _run(script: str, folder: Path, tiny_hf: Path | None) -> subprocess.CompletedProcess:
    bin_dir = Path(sys.executable).parent
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", PYTHONPATH=str(ROOT),
               HARNESS_DB=str(folder / "leaderboard.db"), COLUMNS="200", TINY=TINY, OMP_NUM_THREADS="1",
               HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TQDM_DISABLE="1")
    env.pop("HARNESS_LOAD_PLUGINS", None)  # entry-point plugins load, as for a user
    if tiny_hf is not None:
        env["TINY_HF"] = str(tiny_hf)
    return subprocess.run(["bash", "-e", "-c", script], cwd=_scratch(folder), env=env, capture_output=True, text=True,
                          timeout=600)


#: What in a block's script needs an extra: such a block is skipped, naming the extra, where it is absent.
NEEDS_EXTRA = (("$TINY_HF", "hf"), ("mkdocs", "docs"), ("--report-to tensorboard", "tensorboard"),
               ("--report-to wandb", "wandb"), ("testbed.lora_rank", "peft"))


@pytest.fixture(scope="module")
def started(request):
    """The blocks this session selected, started two at a time as soon as the first is asked for: each runs
    on one thread, so two use both cores of a 2-core machine. A block identical to another (the README's
    and getting-started's first command) runs once. The scratch directories are under a folder of their
    own, not pytest's numbered tmp folders, which another pytest session may prune while blocks run."""
    if shutil.which("harness", path=str(Path(sys.executable).parent)) is None:
        pytest.skip("the harness command is not on PATH (install the package with pip install -e .)")
    selected = [item.callspec.params["block"] for item in request.session.items
                if getattr(item, "originalname", None) == "test_command_block"]
    tiny_hf = None
    if any("$TINY_HF" in block.script() for block in selected) and not missing("hf"):
        from tests.hf_tiny import tiny_paths

        tiny_hf = tiny_paths().root
    scratch = Path(tempfile.mkdtemp(prefix="pairsel-docs-blocks-"))
    pool = ThreadPoolExecutor(max_workers=min(2, os.cpu_count() or 1))
    futures: dict[str, Future] = {}
    for block in selected:
        script = block.script()
        if any(text in script and missing(extra) for text, extra in NEEDS_EXTRA):
            continue  # skipped by the test: an extra it needs is not installed
        if script not in futures:
            folder = scratch / re.sub(r"\W+", "-", block.id)
            futures[script] = pool.submit(_run, script, folder, tiny_hf if "$TINY_HF" in script else None)
    yield futures
    pool.shutdown(wait=True, cancel_futures=True)
    shutil.rmtree(scratch, ignore_errors=True)


@pytest.mark.parametrize("block", [block for block in command_blocks() if block.runnable], ids=lambda block: block.id)
def test_command_block(block, started):
    script = block.script()
    for text, extra in NEEDS_EXTRA:
        if text in script:
            skip_unless_extra(extra)
    done = started[script].result()
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{block.id} failed (exit {done.returncode}):\n{script}\n---\n{output[-6000:]}"
    flat = " ".join(output.split())
    for text in block.expect:
        assert " ".join(text.split()) in flat, f"{block.id}: {text!r} is not in its output:\n{output[-6000:]}"
