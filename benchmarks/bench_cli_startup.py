"""Start-up cost of the CLI, as ratios to a bare interpreter, with every extra installed and with the core alone.

Times, as the median of REPEATS fresh subprocesses each (interleaved, so that
load changes hit every command alike):

* ``python -c "pass"``                        the interpreter alone (the baseline)
* ``python -c "import harness.cli.leaderboard"`` the sub-app module (typer only: docs/internals/architecture.md)
* ``python -c "import leaderboard.store"``    the store (reads need only sqlite3)
* ``python -c "import sqlite_utils"``         what the store defers to its first write
  (sqlite-utils imports numpy when it is installed)
* ``harness --help``, ``harness list selectors``, ``harness leaderboard --db <missing>`` /
  ``--db <10 runs>`` / ``--db <10,000 runs>`` and ``harness leaderboard compare --baseline random``
  on the 10,000 runs, when the ``harness`` console script exists (a failing command is reported,
  not fatal)

``--python`` names a second interpreter whose environment holds the core alone (e.g. a venv made with
``pip install -c constraints.txt -e '.[test]'``, as ``.ci/run-minimal`` makes): every command then runs
in both, interleaved, and a side-by-side table gives both medians, their ratio and the goals
(``harness --help`` under 0.4 s, ``harness leaderboard`` on 10,000 runs under 1 s). The 10,000-run
database is ``benchmarks/bench_leaderboard.py``'s (realistic rows, inserted in bulk; a few seconds).

The machine is shared and noisy: the load average is printed before and after,
and only ratios measured side by side in this one run should be compared.

    .venv/bin/python benchmarks/bench_cli_startup.py [--repeats 5] [--python /path/to/core-only/bin/python]
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

#: Goals of the start-up (docs/results/performance.md), in seconds, on the project's 2-core machine.
GOALS = {"harness --help": 0.4, "harness leaderboard --db <10,000 runs>": 1.0}


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


def commands_for(python: str, dbs: dict[str, Path], *, path_fallback: bool = False) -> dict[str, list[str]]:
    """The timed commands of one interpreter (the harness commands only where its console script exists)."""
    commands: dict[str, list[str]] = {
        'python -c "pass"': [python, "-c", "pass"],
        'python -c "import harness.cli.leaderboard"': [python, "-c", "import harness.cli.leaderboard"],
        'python -c "import leaderboard.store"': [python, "-c", "import leaderboard.store"],
        'python -c "import sqlite_utils"': [python, "-c", "import sqlite_utils"],
    }
    harness = shutil.which("harness", path=str(Path(python).parent))
    if harness is None and path_fallback:
        harness = shutil.which("harness")
    if harness:
        commands["harness --help"] = [harness, "--help"]
        commands["harness list selectors"] = [harness, "list", "selectors"]
        commands["harness leaderboard --db <missing>"] = [harness, "leaderboard", "--db", str(dbs["missing"])]
        commands["harness leaderboard --db <10 runs>"] = [harness, "leaderboard", "--db", str(dbs["10"])]
        commands["harness leaderboard --db <10,000 runs>"] = [harness, "leaderboard", "--db", str(dbs["big"])]
        commands["harness leaderboard compare --db <10,000 runs> --baseline random"] = [
            harness, "leaderboard", "compare", "--db", str(dbs["big"]), "--baseline", "random"]
    return commands


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--runs", type=int, default=10_000, help="runs in the large database (default 10,000)")
    parser.add_argument("--python", metavar="PYTHON",
                        help="a second interpreter, whose environment holds the core alone, timed side by side")
    args = parser.parse_args()

    env = {**os.environ, "COLUMNS": "120"}
    env.pop("HARNESS_DB", None)
    tmp = Path(tempfile.mkdtemp(prefix="bench_cli_"))
    dbs = {"missing": tmp / "missing.db", "10": tmp / "populated.db", "big": tmp / "big.db"}
    make_populated_db(dbs["10"])
    from bench_leaderboard import build

    built = build(dbs["big"], args.runs)
    big = f"<{args.runs:,} runs>"
    rename = (lambda name: name.replace("<10,000 runs>", big)) if args.runs != 10_000 else (lambda name: name)

    envs = {"every extra": sys.executable}
    if args.python:
        envs["core only"] = str(Path(args.python).absolute())
    commands = {label: {rename(name): argv for name, argv in
                        commands_for(python, dbs, path_fallback=label == "every extra").items()}
                for label, python in envs.items()}

    print(f"python {sys.version.split()[0]} at {sys.executable}")
    print(f"built the {args.runs:,}-run database in {built:.1f} s")
    print(f"load average before: {load_average()}")
    times = {label: {name: [] for name in cmds} for label, cmds in commands.items()}
    failures: dict[str, dict[str, str]] = {label: {} for label in envs}
    for label, cmds in commands.items():  # one warm-up each (file cache, .pyc)
        for name, argv in cmds.items():
            _, code, err = time_once(argv, env)
            if code != 0:
                failures[label][name] = f"exit {code}: {err.splitlines()[-1] if err else '(no stderr)'}"
    for _ in range(args.repeats):
        for label, cmds in commands.items():
            for name, argv in cmds.items():
                if name not in failures[label]:
                    times[label][name].append(time_once(argv, env)[0])
    print(f"load average after:  {load_average()}")
    if dbs["missing"].exists():
        print("WARNING: `harness leaderboard` created the missing database file")

    medians = {label: {name: statistics.median(t) for name, t in ts.items() if t} for label, ts in times.items()}
    for label, cmds in commands.items():
        base = medians[label]['python -c "pass"']
        print(f"\n{label}: {envs[label]}")
        print(f"median of {args.repeats} runs each (ratio = median / median of python -c pass)")
        width = max(len(name) for name in cmds)
        for name in cmds:
            if name in failures[label]:
                print(f"  {name:<{width}}  FAILED ({failures[label][name]})")
                continue
            median = medians[label][name]
            spread = f"{min(times[label][name]) * 1e3:.0f}-{max(times[label][name]) * 1e3:.0f}"
            print(f"  {name:<{width}}  {median * 1e3:7.1f} ms  (range {spread} ms)  ratio {median / base:5.2f}")
        if not any(name.startswith("harness") for name in cmds):
            print("  (no `harness` console script found: skipped the harness commands)")

    if len(envs) == 2:
        full, core = medians["every extra"], medians["core only"]
        shared = [name for name in commands["every extra"] if name in full and name in core]
        width = max(len(name) for name in shared)
        print("\nside by side: median ms, every extra installed / the core alone")
        for name in shared:
            print(f"  {name:<{width}}  {full[name] * 1e3:7.1f} ms / {core[name] * 1e3:7.1f} ms"
                  f"  core/every {core[name] / full[name]:5.2f}")
    print("\ngoals (on the project's 2-core machine)")
    for name, goal in GOALS.items():
        name = rename(name)
        cells = [f"{label} {medians[label][name]:.3f} s {'ok' if medians[label][name] < goal else 'OVER'}"
                 for label in envs if name in medians[label]]
        print(f"  {name} < {goal:g} s: {'; '.join(cells) or 'not measured'}")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
