"""The plan's memory estimate against the peak memory a run really takes, on the synthetic testbed.

For each budget, one iteration of ``harness run`` (``--selector smallest``, one training epoch) runs in a
fresh interpreter that reports its peak resident set size (``ru_maxrss``); ``harness run --dry-run --json``
gives the estimate for the same plan. The estimate leaves out the interpreter, torch and the libraries, so
what is compared is the growth over the smallest budget: measured peak growth against estimated growth.
A ratio near 1 means the estimate tracks what the pool really costs; above 1, it underestimates.

    .venv/bin/python benchmarks/bench_memory_estimate.py [--budgets 2000,20000,50000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import REPO, load_average

PROBE = """
import resource, sys
from harness.cli import main
sys.argv = ["harness", *sys.argv[1:]]
try:
    main()
except SystemExit:
    pass
print("MAXRSS", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, file=sys.stderr)
"""


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", PROBE, *args], cwd=REPO, env=env, capture_output=True, text=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budgets", default="2000,20000,50000", help="comma-separated label budgets (one iteration)")
    args = parser.parse_args()
    budgets = [int(b) for b in args.budgets.split(",")]
    print(f"load before: {load_average()}")
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        env = dict(os.environ, HARNESS_DB=str(Path(folder) / "bench.db"), PYTHONPATH=str(REPO))
        for budget in budgets:
            plan = ["run", "--selector", "smallest", "--iterations", "1", "--budget", str(budget),
                    "-o", "trainer.epochs=1"]
            dry = _run([*plan, "--dry-run", "--json"], env)
            estimate = json.loads(dry.stdout)["memory_bytes"]
            done = _run(plan, env)
            peak = int(next(line.split()[1] for line in done.stderr.splitlines() if line.startswith("MAXRSS")))
            rows.append((budget, estimate, peak))
            print(f"budget {budget:>7,}: estimate {estimate / 2**20:8.1f} MiB, peak RSS {peak / 2**20:8.1f} MiB",
                  flush=True)
    base_budget, base_estimate, base_peak = rows[0]
    print(f"\ngrowth over budget {base_budget:,} (the interpreter, torch and the world are in both):")
    print("| budget | estimated growth | measured growth | measured / estimated |")
    print("| --- | --- | --- | --- |")
    for budget, estimate, peak in rows[1:]:
        grown, expected = peak - base_peak, estimate - base_estimate
        print(f"| {budget:,} | {expected / 2**20:.0f} MiB | {grown / 2**20:.0f} MiB | {grown / expected:.2f} |")
    print(f"load after: {load_average()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
