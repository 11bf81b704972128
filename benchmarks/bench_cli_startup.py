"""Start-up cost of the leaderboard CLI, as ratios to a bare interpreter.

Times, as the median of REPEATS fresh subprocesses each (interleaved, so that
load changes hit every command alike):

* ``python -c "pass"``                        the interpreter alone (the baseline)
* ``python -c "import harness.cli.leaderboard"`` the sub-app module (typer only: docs/internals/architecture.md)
* ``python -c "import leaderboard.store"``    the store (reads need only sqlite3)
* ``python -c "import sqlite_utils"``         what the store defers to its first write
  (sqlite-utils imports numpy when it is installed)
* ``harness --help`` and ``harness leaderboard --db <missing>`` / ``--db <10 runs>``,
  when the ``harness`` console script exists (a failing command is reported, not fatal)

The machine is shared and noisy: the load average is printed before and after,
and only ratios measured side by side in this one run should be compared.

    .venv/bin/python benchmarks/bench_cli_startup.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from _common import load_average, time_once

REPO = Path(__file__).resolve().parents[1]




def make_populated_db(path: Path, n_runs: int = 10) -> None:
    sys.path.insert(0, str(REPO))
    from leaderboard.store import Leaderboard

    with Leaderboard(path) as lb:
        for seed in range(n_runs):
            run_id = lb.start_run(
                {
                    "config": {"seed": seed},
                    "config_hash": "bench",
                    "seed": seed,
                    "world_seed": 0,
                    "testbed": "synthetic",
                    "instance_selector": ("smallest", "random", "largest")[seed % 3],
                    "corpus_selector": "smallest",
                    "allocator": "constant",
                    "trainer": "dpo",
                    "scorer_columns": "implicit",
                    "plugins": {},
                    "versions": {},
                    "git_commit": None,
                    "command": "bench",
                    "iterations": 3,
                    "budget": 3000,
                    "keep": 0.5,
                    "n_responses": 8,
                    "harness_version": "bench",
                }
            )
            lb.record_iteration(run_id, {"iteration": 0, "win_rate": 0.5})
            lb.finish_run(
                run_id,
                {"final_win_rate": 0.5 + seed / 100, "final_win_rate_se": 0.01, "initial_win_rate": 0.5},
            )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    python = sys.executable
    env = {**os.environ, "COLUMNS": "120"}
    env.pop("HARNESS_DB", None)
    tmp = Path(tempfile.mkdtemp(prefix="bench_cli_"))
    missing_db = tmp / "missing.db"
    populated_db = tmp / "populated.db"
    make_populated_db(populated_db)

    commands: dict[str, list[str]] = {
        'python -c "pass"': [python, "-c", "pass"],
        'python -c "import harness.cli.leaderboard"': [python, "-c", "import harness.cli.leaderboard"],
        'python -c "import leaderboard.store"': [python, "-c", "import leaderboard.store"],
        'python -c "import sqlite_utils"': [python, "-c", "import sqlite_utils"],
    }
    harness = shutil.which("harness", path=str(Path(python).parent)) or shutil.which("harness")
    if harness:
        commands["harness --help"] = [harness, "--help"]
        commands["harness leaderboard --db <missing>"] = [harness, "leaderboard", "--db", str(missing_db)]
        commands["harness leaderboard --db <10 runs>"] = [harness, "leaderboard", "--db", str(populated_db)]

    print(f"python {sys.version.split()[0]} at {python}")
    print(f"load average before: {load_average()}")
    times: dict[str, list[float]] = {name: [] for name in commands}
    failures: dict[str, str] = {}
    for name, argv in commands.items():  # one warm-up each (file cache, .pyc)
        _, code, err = time_once(argv, env)
        if code != 0:
            failures[name] = f"exit {code}: {err.splitlines()[-1] if err else '(no stderr)'}"
    for _ in range(args.repeats):
        for name, argv in commands.items():
            if name not in failures:
                times[name].append(time_once(argv, env)[0])
    print(f"load average after:  {load_average()}")
    if missing_db.exists():
        print("WARNING: `harness leaderboard` created the missing database file")

    base = statistics.median(times['python -c "pass"'])
    print(f"\nmedian of {args.repeats} runs each (ratio = median / median of python -c pass)")
    width = max(len(name) for name in commands)
    for name in commands:
        if name in failures:
            print(f"  {name:<{width}}  FAILED ({failures[name]})")
            continue
        median = statistics.median(times[name])
        spread = f"{min(times[name]) * 1e3:.0f}-{max(times[name]) * 1e3:.0f}"
        print(
            f"  {name:<{width}}  {median * 1e3:7.1f} ms  (range {spread} ms)  ratio {median / base:5.2f}"
        )
    if not harness:
        print("  (no `harness` console script found: skipped the harness commands)")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
