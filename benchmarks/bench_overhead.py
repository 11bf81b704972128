"""Harness overhead of a default `harness run`: wall time outside model compute, as a share.

Model compute = the loop's timed model stages (world build, sampling, log-prob
forwards, training steps, evaluation). Everything else inside the run (selection,
scoring arithmetic, annotation, leaderboard writes, progress display) is
overhead. Interpreter start-up and imports are reported on their own line.
Target: overhead < 5% of the run's wall time.

    python benchmarks/bench_overhead.py [--repeats 3] [-- extra harness run args]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time


def one_run(extra: list[str], db: str) -> dict:
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "harness", "run", "--selector", "smallest", "--json", "--db", db, *extra],
        capture_output=True, text=True, check=True,
    )
    process_wall = time.perf_counter() - start
    final = json.loads(result.stdout.strip().splitlines()[-1])
    final["process_wall"] = process_wall
    return final


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("extra", nargs="*", help="extra arguments for harness run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = os.path.join(tmp, "bench.db")
        one_run(args.extra, db)  # warm the world cache and the page cache
        runs = [one_run(args.extra, db) for _ in range(args.repeats)]
    wall = statistics.median(r["wall_seconds"] for r in runs)
    model = statistics.median(r["model_seconds"] for r in runs)
    share = statistics.median(r["overhead_share"] for r in runs)
    startup = statistics.median(r["process_wall"] - r["wall_seconds"] for r in runs)
    print(f"default harness run, median of {args.repeats} (world cached), load average {os.getloadavg()}")
    print(f"  run wall time            {wall:8.2f} s")
    print(f"  model compute            {model:8.2f} s")
    print(f"  overhead (outside model) {wall - model:8.2f} s = {share:.2%} of the run's wall time "
          f"(target < 5%: ratio {share / 0.05:.2f} of the target)")
    print(f"  start-up and imports     {startup:8.2f} s (process wall minus run wall, reported apart)")
    stages = {k: statistics.median(r.get(k, 0.0) for r in runs) for k in runs[0] if k.startswith("time_")}
    print("  stages: " + ", ".join(f"{k[5:]} {v:.2f}s" for k, v in sorted(stages.items())))


if __name__ == "__main__":
    main()
