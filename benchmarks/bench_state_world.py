"""Time a default run of the staircase world against the bigram world, side by side (1 thread).

Runs ``harness run`` on defaults (random selector, constant schedule, 3 iterations,
3,000 labels) with ``-o testbed.world=bigram`` and ``-o testbed.world=staircase``,
alternating, each with a fresh world cache (so the world build is included) and
its own leaderboard in a temporary folder. Prints each median and the ratio
staircase / bigram, which the issue bounds at 2x, with the machine's load
average (the machine is shared and noisy, so only the ratio measured in one
run is meaningful).

    .venv/bin/python benchmarks/bench_state_world.py [--repeats 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

from _common import REPO, load_average

LIMIT = 2.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    times: dict[str, list[float]] = {"bigram": [], "staircase": []}
    for repeat in range(args.repeats):
        for world in times:
            with tempfile.TemporaryDirectory() as folder:
                env = dict(os.environ, HARNESS_CACHE_DIR=os.path.join(folder, "cache"),
                           HARNESS_DB=os.path.join(folder, "board.db"), OMP_NUM_THREADS="1")
                env.pop("HARNESS_NO_CACHE", None)
                env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
                argv = [sys.executable, "-m", "harness", "run", "-o", f"testbed.world={world}"]
                start = time.perf_counter()  # from the temporary folder: the run folder goes there too
                done = subprocess.run(argv, cwd=folder, env=env, capture_output=True, text=True)
                seconds = time.perf_counter() - start
                if done.returncode != 0:
                    raise SystemExit(f"{world} run failed ({done.returncode}): {done.stderr[-2000:]}")
                times[world].append(seconds)
    bigram, stairs = statistics.median(times["bigram"]), statistics.median(times["staircase"])
    print(f"default run (fresh world cache), median of {args.repeats}, alternating:")
    print(f"  bigram world     {bigram:7.2f} s")
    print(f"  staircase world  {stairs:7.2f} s")
    print(f"  ratio            {stairs / bigram:7.2f}x (limit {LIMIT:.1f}x)")
    print(f"  load average: {load_average()}")


if __name__ == "__main__":
    main()
