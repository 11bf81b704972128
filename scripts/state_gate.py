"""Run the mechanism gate (plugins/testbeds/synthetic/gate.py) on a range of world seeds.

Each seed is independent, so seeds run in ``--jobs`` worker processes (one torch
thread each). Per-seed figures and the verdict go to ``--out`` as JSON, with the
protocol, the testbed options, the git commit and the library versions; the
file is written atomically once every seed has finished.

    .venv/bin/python scripts/state_gate.py --world staircase --seeds 2000-2029 --jobs 2 \\
        --out docs/results/state-gate/staircase.json
    .venv/bin/python scripts/state_gate.py --world staircase --off --seeds 2000-2029 --jobs 2 \\
        --out docs/results/state-gate/staircase-off.json
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


def _one(args: tuple[dict, int]) -> dict:
    import torch

    torch.set_num_threads(1)
    from plugins.testbeds.synthetic import SyntheticTestbed
    from plugins.testbeds.synthetic.gate import run_seed
    from plugins.trainers.native import NativeDPOTrainer

    settings, seed = args
    start = time.perf_counter()
    result = run_seed(SyntheticTestbed(settings), NativeDPOTrainer({}), seed).as_dict()
    result["seconds"] = round(time.perf_counter() - start, 1)
    print(f"seed {seed}: effect {result['effect']:+.4f}, interaction {result['interaction']:+.4f} "
          f"({result['seconds']} s)", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", default="staircase", choices=("bigram", "staircase"))
    parser.add_argument("--off", action="store_true", help="staircase world with state_dependence=false")
    parser.add_argument("--seeds", default="2000-2029")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("-o", "--option", action="append", default=[], help="testbed option key=value (tiny runs)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--against", metavar="OFF.json",
                        help="a gate of the same seeds with the mechanism off: adds the differenced verdict (attempt 2)")
    args = parser.parse_args()

    from harness.provenance import command_line, git_commit, library_versions
    from plugins.testbeds.synthetic import SyntheticTestbed
    from harness.experiments.mechanism_gate import differenced, verdict
    from harness.experiments.sweep import parse_seeds
    from plugins.testbeds.synthetic.gate import PROTOCOL

    raw = {"world": args.world, **({"state_dependence": "false"} if args.off else {})}
    raw.update(dict(option.split("=", 1) for option in args.option))
    settings = SyntheticTestbed(raw).settings
    seeds = parse_seeds(args.seeds)
    against = json.loads(Path(args.against).read_text()) if args.against else None
    if against is not None and against["seeds"] != seeds:
        raise SystemExit(f"--against {args.against} covers other seeds than --seeds {args.seeds}")
    start = time.perf_counter()
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        results = list(pool.map(_one, [(dict(settings), seed) for seed in seeds]))
    out = {
        "protocol": PROTOCOL,
        "testbed_options": dict(settings),
        "trainer": "native (defaults)",
        "seeds": seeds,
        "results": results,
        "verdict": verdict(results),
        "wall_seconds": round(time.perf_counter() - start, 1),
        **({"differenced": {"against": args.against,
                            "verdict": verdict(differenced(results, against["results"]))}} if against else {}),
        "provenance": {"git_commit": git_commit(), "command": command_line(), "libraries": library_versions()},
    }
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(out, indent=1, default=str) + "\n")
    os.replace(partial, path)
    v = out["verdict"]
    print(f"gate {'PASSED' if v['passed'] else 'FAILED'} on {len(seeds)} seeds: effect {v['effect']['mean']:+.4f} "
          f"[{v['effect']['ci_low']}, {v['effect']['ci_high']}], interaction {v['interaction']['mean']:+.4f} "
          f"[{v['interaction']['ci_low']}, {v['interaction']['ci_high']}]; {out['wall_seconds']} s")
    if against is not None:
        d = out["differenced"]["verdict"]
        print(f"differenced gate (this world minus {args.against}) {'PASSED' if d['passed'] else 'FAILED'}: effect "
              f"{d['effect']['mean']:+.4f} [{d['effect']['ci_low']}, {d['effect']['ci_high']}], interaction "
              f"{d['interaction']['mean']:+.4f} [{d['interaction']['ci_low']}, {d['interaction']['ci_high']}]")


if __name__ == "__main__":
    main()
