"""Time smallest-margin selection on 100,000 prompts x 8 responses.

One run = instance level (the smallest of all 28 pairs of each prompt's distinct
responses) then corpus level (keep the 50% smallest margins), exactly as the
loop calls the ``smallest`` selector. Prints the median of 5 runs, its ratio to
the 1 s target, and the machine's load average (the machine is shared).

    .venv/bin/python benchmarks/bench_selection.py [--prompts 100000] [--responses 8] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

from harness.interfaces import SelectionBatch
from plugins.selectors.margin import SmallestMargin

TARGET_S = 1.0


def build_batch(n_prompts: int, n_responses: int, seed: int = 0) -> SelectionBatch:
    rng = np.random.default_rng(seed)
    scores = rng.normal(size=(n_prompts, n_responses))
    lengths = rng.integers(1, 13, size=(n_prompts, n_responses))
    distinct = rng.random((n_prompts, n_responses)) > 0.05  # ~5% duplicates
    distinct[:, 0] = True  # the first response of a prompt is never a repeat
    return SelectionBatch(lengths=lengths, distinct=distinct, scores={"implicit_reward": scores})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=100_000)
    parser.add_argument("--responses", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    batch = build_batch(args.prompts, args.responses)
    selector = SmallestMargin()
    n_pairs = args.responses * (args.responses - 1) // 2
    instance_times, corpus_times, total_times = [], [], []
    for repeat in range(args.repeats):
        rng = np.random.default_rng(repeat)
        start = time.perf_counter()
        pairs = selector.select_instances(batch, rng)
        middle = time.perf_counter()
        kept = selector.select_corpus(batch, pairs, len(pairs) // 2, rng)
        end = time.perf_counter()
        instance_times.append(middle - start)
        corpus_times.append(end - middle)
        total_times.append(end - start)

    total = statistics.median(total_times)
    load = os.getloadavg()
    print(
        f"smallest selection, {args.prompts:,} prompts x {args.responses} responses "
        f"({n_pairs} pairs each), median of {args.repeats}"
    )
    print(f"  instance level   {statistics.median(instance_times):.4f} s  ({len(pairs):,} pairs)")
    print(f"  corpus level     {statistics.median(corpus_times):.4f} s  (kept {len(kept):,})")
    print(f"  instance+corpus  {total:.4f} s  = {total / TARGET_S:.3f} x the {TARGET_S:g} s target")
    print(f"  load average     {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (1, 5, 15 min; {os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
