"""The generated sections of the docs follow their content.

Each page section that a command writes lies between two marker lines, and every generator goes
through one helper, :mod:`harness.markers`. The leaderboard schema and the studies' verdict table
must equal what their commands would write now (these checks parsed the README before the manual
moved to docs/); the performance script must still read what the benchmarks print.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from harness import markers
from harness.experiments import study_report as sr
from leaderboard import schema_doc
from leaderboard.store import MIGRATION_NAMES

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


# -- the pages --------------------------------------------------------------------------------------


def test_schema_page_is_generated():
    text = (DOCS / "leaderboard" / "schema.md").read_text(encoding="utf-8")
    generated = schema_doc.generate()
    assert schema_doc.section(text) == generated, (
        f"docs/leaderboard/schema.md is stale: refresh it with `{schema_doc.REFRESH_COMMAND}`"
    )
    for item in ("## Table `runs`", "## Table `iterations`", "`final_win_rate` | REAL",
                 "idx_runs_config_hash", "## View `ranked_runs`", *MIGRATION_NAMES):
        assert item in generated


def test_the_verdict_table_agrees_with_docs_reproduction():
    published = (DOCS / "reproduction.md").read_text(encoding="utf-8")
    results = (DOCS / "results" / "index.md").read_text(encoding="utf-8")
    assert sr.readme_section(results) == sr.readme_table(published), (
        f"docs/results/index.md's verdict table disagrees with docs/reproduction.md; refresh it with "
        f"`{sr.README_COMMAND}`")


def test_the_refresh_commands_check_the_pages(monkeypatch):
    monkeypatch.chdir(ROOT)  # the commands as the pages give them, from the repository root
    assert schema_doc.main(["--check", "docs/leaderboard/schema.md"]) == 0
    assert sr.main(["--check", "docs/results/index.md"]) == 0


# -- the shared helper ------------------------------------------------------------------------------

START, END = markers.markers("demo")
PAGE = f"""# A page

The section below lies between `{START}` and `{END}` (a mention in prose is not a marker).

{START}
old
{END}

after
"""


def test_a_section_is_replaced_and_nothing_else():
    assert markers.section(PAGE, START, END) == "old\n"
    new = markers.replace(PAGE, START, END, "new\nlines")
    assert markers.section(new, START, END) == "new\nlines\n"
    assert new.replace("new\nlines\n", "old\n") == PAGE
    assert markers.replace(new, START, END, "new\nlines\n") == new


def test_missing_or_misordered_markers_are_an_error():
    with pytest.raises(markers.MarkerError, match="no <!-- demo:start -->"):
        markers.section("no markers here\n", START, END)
    with pytest.raises(markers.MarkerError, match="lacks one of its marker lines"):
        markers.section(f"{START}\nonly the start\n", START, END)
    with pytest.raises(markers.MarkerError, match="wrong"):
        markers.section(f"{END}\nbackwards\n{START}\n", START, END)
    assert markers.span("nothing\n", START, END) is None


def test_refresh_writes_or_checks(tmp_path, capsys):
    path = tmp_path / "page.md"
    path.write_text(PAGE, encoding="utf-8")
    assert markers.refresh(path, START, END, "fresh", check=True, command="make it") == 1
    assert "refresh it with `make it`" in capsys.readouterr().err
    assert path.read_text(encoding="utf-8") == PAGE
    assert markers.refresh(path, START, END, "fresh", check=False, command="make it") == 0
    assert markers.refresh(path, START, END, "fresh", check=True, command="make it") == 0
    assert markers.section(path.read_text(encoding="utf-8"), START, END) == "fresh\n"
    (tmp_path / "bare.md").write_text("no markers\n", encoding="utf-8")
    assert markers.refresh(tmp_path / "bare.md", START, END, "x", check=False, command="c") == 2
    assert markers.refresh(tmp_path / "missing.md", START, END, "x", check=False, command="c") == 2


def test_every_generator_uses_the_shared_helper():
    for path in ("leaderboard/schema_doc.py", "harness/experiments/study_report.py", "scripts/reliability.py",
                 "scripts/performance.py"):
        source = (ROOT / path).read_text(encoding="utf-8")
        assert "markers.refresh(" in source, f"{path} does not write its section through harness.markers"


# -- the performance table --------------------------------------------------------------------------

#: What the four benchmarks printed on the project's 2-core machine (their output format, kept here
#: so that a change to it fails this test instead of the next `python scripts/performance.py`).
OUTPUTS = {
    "bench_cli_startup.py": """\
python 3.11.7 at /venv/bin/python
load average before: 0.42 1.01 1.31 (1/5/15 min, 2 CPUs)
load average after:  0.51 1.01 1.31 (1/5/15 min, 2 CPUs)

median of 3 runs each (ratio = median / median of python -c pass)
  python -c "pass"                               24.2 ms  (range 23-36 ms)  ratio  1.00
  python -c "import harness.cli.leaderboard"     72.4 ms  (range 69-118 ms)  ratio  2.99
  python -c "import leaderboard.store"           80.1 ms  (range 53-84 ms)  ratio  3.31
  python -c "import sqlite_utils"               475.6 ms  (range 433-540 ms)  ratio 19.67
  harness --help                                329.3 ms  (range 318-343 ms)  ratio 13.61
  harness leaderboard --db <missing>            358.1 ms  (range 357-377 ms)  ratio 14.81
  harness leaderboard --db <10 runs>            398.6 ms  (range 362-508 ms)  ratio 16.48
""",
    "bench_overhead.py": """\
default harness run, median of 1 (world cached), load average (0.76953125, 1.00830078125, 1.29248046875)
  run wall time                8.27 s
  model compute                8.14 s
  overhead (outside model)     0.12 s = 1.48% of the run's wall time (target < 5%: ratio 0.30 of the target)
  start-up and imports         2.70 s (process wall minus run wall, reported apart)
  stages: annotate 0.00s, check 0.00s, checkpoint 0.01s, evaluate 0.57s, labels 0.06s, logprobs 1.62s, prompts 0.00s, sample 0.76s, select 0.02s, setup 1.02s, train 4.17s
""",
    "bench_selection.py": """\
smallest selection, 100,000 prompts x 8 responses (28 pairs each), median of 5
  instance level   0.0426 s  (100,000 pairs)
  corpus level     0.0133 s  (kept 50,000)
  instance+corpus  0.0557 s  = 0.056 x the 1 s target
  load average     0.42 1.01 1.31 (1, 5, 15 min; 2 CPUs)
""",
    "bench_synthetic_stages.py": """\
synthetic testbed stages, 1 thread, 2,000 prompts x 8 responses (16,000 sequences), DPO on 1,000 pairs x 8 epochs (128 steps); median of 1 (build: 1 run)
  build world (fresh)               11.001 s   1.38x target 8.0 s
  sample                             0.284 s   0.57x target 0.5 s
  log-probs (policy + reference)     0.494 s   0.62x target 0.8 s
  annotate                           0.001 s
  DPO (native trainer)               1.308 s   1.01x target 1.3 s
  evaluate                           0.123 s   0.62x target 0.2 s
  load world (cache)                 0.007 s
  one iteration (sum)                2.211 s
  last iteration: win 0.541, gold 0.998, kl 1.95
  load average: 0.62 1.01 1.30
""",
}


def _performance():
    spec = importlib.util.spec_from_file_location("performance", ROOT / "scripts" / "performance.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_performance_script_reads_what_the_benchmarks_print():
    performance = _performance()
    table = performance.table(OUTPUTS, when="2026-12-05", machine="2 CPUs")
    assert table.startswith(f"<!-- generated by `{performance.COMMAND}`")
    rows = [line for line in table.splitlines() if line.startswith("| `benchmarks/")]
    assert [row.split("`")[1] for row in rows] == [f"benchmarks/{script}" for script, _ in performance.BENCHMARKS]
    assert "0.329 s / 0.399 s (13.6× / 16.5× a bare `python -c pass`)" in table
    assert "8.27 s wall, of which 0.12 s (1.48%) is outside model compute" in table
    assert "0.056 s for instance + corpus level" in table
    assert "DPO 1.31 s" in table and "world build 11.0 s (then cached, loads in 7 ms)" in table
    with pytest.raises(performance.UnreadableOutput, match="run wall time"):
        performance.overhead_row("the output format changed\n")


def test_the_benchmarks_still_print_what_the_script_reads():
    """The lines the script reads are printed by the benchmarks' own code (a cheap guard against a
    benchmark whose output changes without this script)."""
    for script, needles in {
        "bench_cli_startup.py": ["median of {args.repeats} runs each", "ratio {median / base:5.2f}"],
        "bench_overhead.py": ["run wall time", "overhead (outside model)", "start-up and imports"],
        "bench_selection.py": ["instance+corpus", "smallest selection, {args.prompts:,} prompts x"],
        "bench_synthetic_stages.py": ["build world (fresh)", "load world (cache)", "DPO (native trainer)"],
    }.items():
        source = (ROOT / "benchmarks" / script).read_text(encoding="utf-8")
        for needle in needles:
            assert needle in source, f"benchmarks/{script} no longer prints {needle!r}; update scripts/performance.py"
