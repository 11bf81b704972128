"""Paired differences of final metrics against a baseline selector, over common seeds.

A stop-gap until `harness leaderboard compare` exists: reads finished runs from
the leaderboard, pairs each strategy with the baseline on the seeds both have,
and prints mean, std and a 95% t-interval of the paired difference.
"""

from __future__ import annotations

import argparse
import math
import statistics
from collections import defaultdict

from leaderboard.store import Leaderboard

# Two-sided 97.5% quantiles of Student's t for small n - 1 (enough for a summary).
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262,
        10: 2.228, 14: 2.145, 19: 2.093, 29: 2.045}


def t975(df: int) -> float:
    if df in T975:
        return T975[df]
    known = [k for k in T975 if k <= df]
    return T975[max(known)] if known else 1.96


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default="leaderboard.db")
    parser.add_argument("--baseline", default="random")
    parser.add_argument("--metric", default="final_win_rate")
    args = parser.parse_args()
    runs = Leaderboard(args.db, create=False).runs(status="finished")
    by_strategy: dict[str, dict[int, float]] = defaultdict(dict)
    for run in runs:
        name = run["instance_selector"] if run["instance_selector"] == run["corpus_selector"] else \
            f"{run['instance_selector']}/{run['corpus_selector']}"
        by_strategy[f"{name} · {run['allocator']}"][run["seed"]] = run[args.metric]
    base_key = next(k for k in by_strategy if k.startswith(args.baseline + " "))
    base = by_strategy[base_key]
    print(f"{'strategy':28} {'n':>3} {args.metric:>16}   paired Δ vs {base_key} (mean ± std, 95% CI)")
    for key, values in sorted(by_strategy.items(), key=lambda kv: -statistics.mean(kv[1].values())):
        seeds = sorted(set(values) & set(base))
        mean = statistics.mean(values.values())
        spread = statistics.stdev(values.values()) if len(values) > 1 else float("nan")
        line = f"{key:28} {len(values):>3} {mean:>9.3f} ± {spread:.3f}"
        if key != base_key and len(seeds) > 1:
            deltas = [values[s] - base[s] for s in seeds]
            d_mean, d_std = statistics.mean(deltas), statistics.stdev(deltas)
            half = t975(len(seeds) - 1) * d_std / math.sqrt(len(seeds))
            line += f"   {d_mean:+.3f} ± {d_std:.3f}  [{d_mean - half:+.3f}, {d_mean + half:+.3f}]  n={len(seeds)}"
        print(line)


if __name__ == "__main__":
    main()
