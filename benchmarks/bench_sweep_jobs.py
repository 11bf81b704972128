"""Parallel speed-up of `harness sweep`: the same sweep with --jobs 1 and --jobs 2, side by side.

The sweep: 3 selectors × 2 seeds = 6 runs on the default synthetic testbed, each
the size of a default `harness run` (3 iterations, 3,000 labels; about 5 s on one
thread), all in world 0 (--world-seed 0), so one cached world serves every run
(it is built once, before timing, in a private cache). --iterations and --budget
make the runs smaller: about 2.4 s of start-up (the parent, spawning the workers
and importing torch in them, a worker's first world load) does not parallelise, so
the shorter the runs, the worse the ratio. Each
repeat times --jobs 1 then --jobs 2, each with a fresh database and the same
warm cache; the script prints the median wall times, their ratio and the load
average. Target: jobs 2 / jobs 1 <= 0.6 on a 2-core machine. On a shared machine
other processes compete for the second core, so read the ratio beside the load.

    python benchmarks/bench_sweep_jobs.py [--repeats 3] [--jobs 2] [--iterations 3] [--budget 3000]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

SWEEP = ["--selector", "smallest,random,largest", "--seeds", "0-1", "--world-seed", "0"]


def machine_busy_seconds() -> float:
    """CPU seconds spent by every process on the machine so far (Linux /proc/stat; 0 elsewhere)."""
    try:
        with open("/proc/stat") as handle:
            fields = [int(v) for v in handle.readline().split()[1:]]
    except OSError:
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def our_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed_sweep(jobs: int, workdir: str, env: dict[str, str], extra: list[str], tag: str) -> tuple[float, float, float]:
    """Wall seconds of one sweep, the CPU share of other processes meanwhile, and the median run's seconds."""
    db = os.path.join(workdir, f"bench-{tag}-jobs{jobs}.db")
    busy, ours = machine_busy_seconds(), our_seconds()
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "harness", "sweep", *SWEEP, *extra, "--jobs", str(jobs), "--db", db, "--json"],
        capture_output=True, text=True, env=env,
    )
    wall = time.perf_counter() - start
    others = max(0.0, (machine_busy_seconds() - busy) - (our_seconds() - ours))
    if result.returncode != 0:
        sys.exit(f"harness sweep --jobs {jobs} exited {result.returncode}:\n{result.stderr}")
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    if sum(cell["n"] for cell in summary["cells"]) != 6:
        sys.exit(f"harness sweep --jobs {jobs} did not finish its 6 runs")
    run_seconds = statistics.median(run["seconds"] for run in summary["results"])
    return wall, others / (wall * (os.cpu_count() or 1)), run_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=2, help="the parallel side (default 2)")
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--budget", type=int, default=3000)
    parser.add_argument("extra", nargs="*", help="extra arguments for harness sweep")
    args = parser.parse_args()
    args.extra = ["--iterations", str(args.iterations), "--budget", str(args.budget), *args.extra]
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, HARNESS_CACHE_DIR=os.path.join(tmp, "cache"), HARNESS_RUNS_DIR=os.path.join(tmp, "runs"))
        print(f"cores {os.cpu_count()}, load average before {os.getloadavg()}", flush=True)
        warm = subprocess.run(
            [sys.executable, "-m", "harness", "run", "--world-seed", "0", "--iterations", "1", "--budget", "100",
             "--db", os.path.join(tmp, "warm.db")], capture_output=True, text=True, env=env,
        )
        if warm.returncode != 0:
            sys.exit(f"warming the world cache failed:\n{warm.stderr}")
        serial, parallel = [], []
        for repeat in range(args.repeats):
            one, others_one, run_one = timed_sweep(1, tmp, env, args.extra, f"r{repeat}")
            many, others_many, run_many = timed_sweep(args.jobs, tmp, env, args.extra, f"r{repeat}")
            serial.append(one)
            parallel.append(many)
            print(f"  repeat {repeat + 1}: --jobs 1 {one:6.2f} s, --jobs {args.jobs} {many:6.2f} s "
                  f"(ratio {many / one:.2f}); median run {run_one:.1f} s / {run_many:.1f} s; other processes used {others_one:.0%} / {others_many:.0%} of the "
                  f"machine's CPU meanwhile; load {tuple(round(x, 2) for x in os.getloadavg())}", flush=True)
    one, many = statistics.median(serial), statistics.median(parallel)
    print(f"harness sweep, 6 runs (3 selectors × 2 seeds, {args.iterations} iterations, {args.budget:,} labels, "
          f"world cached), median of {args.repeats}")
    print(f"  --jobs 1            {one:7.2f} s wall")
    print(f"  --jobs {args.jobs:<12} {many:7.2f} s wall")
    print(f"  ratio jobs {args.jobs} / jobs 1  {many / one:.2f}  (target <= 0.60)")
    print(f"  load average after  {os.getloadavg()}")


if __name__ == "__main__":
    main()
