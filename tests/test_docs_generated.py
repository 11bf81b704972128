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
        f"`{sr.TABLE_COMMAND}`")


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
python 3.11.7 at /work/main/.venv/bin/python
built the 10,000-run database in 1.4 s
load average before: 2.10 2.64 2.06 (1/5/15 min, 2 CPUs)
load average after:  2.30 2.64 2.07 (1/5/15 min, 2 CPUs)

every extra: /work/main/.venv/bin/python
median of 3 runs each (ratio = median / median of python -c pass)
  python -c "pass"                                                     22.1 ms  (range 22-23 ms)  ratio  1.00
  python -c "import harness.cli.leaderboard"                           63.5 ms  (range 63-64 ms)  ratio  2.87
  python -c "import leaderboard.store"                                 44.0 ms  (range 44-49 ms)  ratio  1.99
  python -c "import sqlite_utils"                                     421.0 ms  (range 409-585 ms)  ratio 19.03
  harness --help                                                      313.4 ms  (range 310-437 ms)  ratio 14.17
  harness list selectors                                              348.5 ms  (range 289-580 ms)  ratio 15.75
  harness leaderboard --db <missing>                                  317.6 ms  (range 314-357 ms)  ratio 14.36
  harness leaderboard --db <10 runs>                                  345.4 ms  (range 330-407 ms)  ratio 15.61
  harness leaderboard --db <10,000 runs>                              480.2 ms  (range 463-784 ms)  ratio 21.70
  harness leaderboard compare --db <10,000 runs> --baseline random    505.1 ms  (range 475-688 ms)  ratio 22.83

core only: /tmp/minimal-venv/bin/python
median of 3 runs each (ratio = median / median of python -c pass)
  python -c "pass"                                                     21.7 ms  (range 21-47 ms)  ratio  1.00
  python -c "import harness.cli.leaderboard"                           63.6 ms  (range 64-137 ms)  ratio  2.93
  python -c "import leaderboard.store"                                 45.3 ms  (range 44-100 ms)  ratio  2.09
  python -c "import sqlite_utils"                                     198.8 ms  (range 188-223 ms)  ratio  9.17
  harness --help                                                      311.4 ms  (range 305-609 ms)  ratio 14.36
  harness list selectors                                              339.9 ms  (range 339-611 ms)  ratio 15.68
  harness leaderboard --db <missing>                                  304.3 ms  (range 289-501 ms)  ratio 14.04
  harness leaderboard --db <10 runs>                                  340.4 ms  (range 281-600 ms)  ratio 15.70
  harness leaderboard --db <10,000 runs>                              477.6 ms  (range 477-758 ms)  ratio 22.03
  harness leaderboard compare --db <10,000 runs> --baseline random    643.6 ms  (range 484-770 ms)  ratio 29.69

side by side: median ms, every extra installed / the core alone
  python -c "pass"                                                     22.1 ms /    21.7 ms  core/every  0.98
  python -c "import harness.cli.leaderboard"                           63.5 ms /    63.6 ms  core/every  1.00
  python -c "import leaderboard.store"                                 44.0 ms /    45.3 ms  core/every  1.03
  python -c "import sqlite_utils"                                     421.0 ms /   198.8 ms  core/every  0.47
  harness --help                                                      313.4 ms /   311.4 ms  core/every  0.99
  harness list selectors                                              348.5 ms /   339.9 ms  core/every  0.98
  harness leaderboard --db <missing>                                  317.6 ms /   304.3 ms  core/every  0.96
  harness leaderboard --db <10 runs>                                  345.4 ms /   340.4 ms  core/every  0.99
  harness leaderboard --db <10,000 runs>                              480.2 ms /   477.6 ms  core/every  0.99
  harness leaderboard compare --db <10,000 runs> --baseline random    505.1 ms /   643.6 ms  core/every  1.27

goals (on the project's 2-core machine)
  harness --help < 0.4 s: every extra 0.313 s ok; core only 0.311 s ok
  harness leaderboard --db <10,000 runs> < 1 s: every extra 0.480 s ok; core only 0.478 s ok
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
    assert ("0.313 s / 0.345 s / 0.480 s (14.2× / 15.6× / 21.7× a bare `python -c pass`); "
            "the core alone: 0.311 s / 0.340 s / 0.478 s") in table
    alone = OUTPUTS["bench_cli_startup.py"].split("\nside by side:")[0]  # run without --python
    assert "core alone" not in performance.cli_row(alone) and "0.313 s / 0.345 s / 0.480 s" in performance.cli_row(alone)
    assert "8.27 s wall, of which 0.12 s (1.48%) is outside model compute" in table
    assert "0.056 s for instance + corpus level" in table
    assert "DPO 1.31 s" in table and "world build 11.0 s (then cached, loads in 7 ms)" in table
    with pytest.raises(performance.UnreadableOutput, match="run wall time"):
        performance.overhead_row("the output format changed\n")


def test_the_benchmarks_still_print_what_the_script_reads():
    """The lines the script reads are printed by the benchmarks' own code (a cheap guard against a
    benchmark whose output changes without this script)."""
    for script, needles in {
        "bench_cli_startup.py": ["median of {args.repeats} runs each", "ratio {median / base:5.2f}",
                                 "side by side:", "core/every"],
        "bench_overhead.py": ["run wall time", "overhead (outside model)", "start-up and imports"],
        "bench_selection.py": ["instance+corpus", "smallest selection, {args.prompts:,} prompts x"],
        "bench_synthetic_stages.py": ["build world (fresh)", "load world (cache)", "DPO (native trainer)"],
    }.items():
        source = (ROOT / "benchmarks" / script).read_text(encoding="utf-8")
        for needle in needles:
            assert needle in source, f"benchmarks/{script} no longer prints {needle!r}; update scripts/performance.py"
