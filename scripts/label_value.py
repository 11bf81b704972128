"""Measure what each bought label was worth (harness/experiments/label_value.py) for strategies on world seeds.

Each (selector, seed) is one default-size run with the label-value step
inserted after training; runs go to ``--jobs`` worker processes (one torch
thread each). The per-iteration figures, the pooled rank correlation and the
regression of the estimated value on the pair features (pooled over every
trained pair of every run, and per selector) go to ``--out`` as JSON with the
git commit, the command and the library versions, written once every run has
finished.

    .venv/bin/python scripts/label_value.py --selectors random,smallest,largest,gold_gradient \\
        --seeds 0 --jobs 2 --out docs/results/label-value/label-value.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _one(args: tuple[str, int, int, tuple]) -> dict:
    import numpy as np
    import torch

    torch.set_num_threads(1)
    from harness.config import plan_run
    from harness.experiments.label_value import FEATURES, LabelValueProbe
    from harness.loop import run_experiment
    from harness.plugins import load_registry

    selector, seed, minibatch, options = args
    registry = load_registry()
    plan = plan_run(registry, selector=selector, seed=seed, options=options)
    probe = LabelValueProbe(minibatch=minibatch, explicit_judge=registry.create("judge", "synthetic_proxy"))
    start = time.perf_counter()
    result = run_experiment(plan.config, plan.components, steps=probe.steps())
    seconds = round(time.perf_counter() - start, 1)
    rhos = [v.rank_correlation for v in probe.iterations]
    print(f"{selector} seed {seed}: rank correlations {rhos} ({seconds} s)", flush=True)
    return {
        "selector": selector, "seed": seed, "seconds": seconds,
        "final_win_rate": result.final.get("final_win_rate"), "final_gold_reward": result.final.get("final_gold_reward"),
        "iterations": [v.as_dict() for v in probe.iterations],
        "pairs": {"estimate": np.concatenate([v.estimate for v in probe.iterations]).tolist(),
                  **{name: np.concatenate([v.features[name] for v in probe.iterations]).tolist()
                     for name in FEATURES}},
    }


def _seeds(text: str) -> list[int]:
    if "-" in text:
        first, last = text.split("-")
        return list(range(int(first), int(last) + 1))
    return [int(part) for part in text.split(",")]


def main() -> None:
    import numpy as np

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--selectors", default="random,smallest,largest,gold_gradient")
    parser.add_argument("--seeds", default="0", help="e.g. 0-4 or 0,3")
    parser.add_argument("--minibatch", type=int, default=None, help="pairs left out together (default: MINIBATCH)")
    parser.add_argument("-o", "--option", action="append", default=[], help="run option KEY=VALUE, as harness run -o")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    from harness.experiments.label_value import MINIBATCH, regress, spearman
    from harness.provenance import command_line, git_commit, library_versions

    minibatch = args.minibatch or MINIBATCH
    options = tuple(args.option)
    work = [(s, seed, minibatch, options) for s in args.selectors.split(",") for seed in _seeds(args.seeds)]
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        runs = list(pool.map(_one, work))

    def regression(subset: list[dict]) -> dict:
        pairs = {key: np.concatenate([np.asarray(r["pairs"][key]) for r in subset]) for key in subset[0]["pairs"]}
        return regress(pairs.pop("estimate"), pairs)

    def rank_correlation(subset: list[dict]) -> float | None:
        its = [i for r in subset for i in r["iterations"] if i["reproduced"]]
        return spearman([e for i in its for e in i["probe_estimate"]], [m for i in its for m in i["probe_measured"]])

    selectors = list(dict.fromkeys(r["selector"] for r in runs))
    out = {
        "minibatch": minibatch, "options": list(options),
        "pooled": {"rank_correlation": rank_correlation(runs), "regression": regression(runs)},
        "by_selector": {s: {"rank_correlation": rank_correlation([r for r in runs if r["selector"] == s]),
                            "regression": regression([r for r in runs if r["selector"] == s]),
                            "mean_estimate": float(np.mean([e for r in runs if r["selector"] == s
                                                            for e in r["pairs"]["estimate"]]))}
                        for s in selectors},
        "runs": [{k: v for k, v in r.items() if k != "pairs"} for r in runs],
        "provenance": {"git_commit": git_commit(), "command": command_line(), "libraries": library_versions()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    partial = args.out.with_suffix(".partial")
    partial.write_text(json.dumps(out, indent=1) + "\n")
    os.replace(partial, args.out)
    print(json.dumps(out["pooled"], indent=1))


if __name__ == "__main__":
    main()
