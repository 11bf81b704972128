"""Time each model stage of the synthetic testbed for one iteration's worth of work (1 thread).

Builds a default world (fresh, then once more from the world cache in a
temporary folder), then times one iteration as the loop runs it: sample 2,000
prompts x 8 responses from pi_0, log-probs of the 16k responses under pi_0 and
pi_ref, annotate 1,000 random pairs, DPO on them with the ``native`` trainer
(defaults: 8 epochs, batch 64), and evaluate. Prints the median of the
repeats, its ratio to the target time, and the machine's load average (the
machine is shared and noisy).

    .venv/bin/python benchmarks/bench_synthetic_stages.py [--prompts 2000] [--responses 8] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import numpy as np

TARGETS_S = {
    "build world (fresh)": 8.0,
    "sample": 0.5,
    "log-probs (policy + reference)": 0.8,
    "annotate": None,
    "DPO (native trainer)": 1.3,
    "evaluate": 0.2,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=2000)
    parser.add_argument("--responses", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    from harness.interfaces import Pairs, PreferenceData
    from harness.progress import NullReporter
    from plugins.testbeds.synthetic import SyntheticTestbed
    from plugins.trainers.native import NativeDPOTrainer

    times: dict[str, list[float]] = {name: [] for name in TARGETS_S}
    times["load world (cache)"] = []
    testbed = SyntheticTestbed()
    with tempfile.TemporaryDirectory() as cache:
        os.environ["HARNESS_CACHE_DIR"] = cache
        os.environ.pop("HARNESS_NO_CACHE", None)
        start = time.perf_counter()
        world = testbed.build_world(seed=args.seed, reporter=NullReporter())
        times["build world (fresh)"].append(time.perf_counter() - start)
        start = time.perf_counter()
        cached = testbed.build_world(seed=args.seed, reporter=NullReporter())
        times["load world (cache)"].append(time.perf_counter() - start)
        assert cached.info["from_cache"], "the second build should come from the cache"

    trainer = NativeDPOTrainer()
    policy, reference = world.initial_policy, world.reference_policy
    for repeat in range(args.repeats):
        rng = np.random.default_rng(repeat)
        prompts = world.draw_prompts(args.prompts, rng)

        start = time.perf_counter()
        responses = world.sample(policy, prompts, args.responses, rng)
        times["sample"].append(time.perf_counter() - start)

        start = time.perf_counter()
        logp = world.logprobs(policy, prompts, responses)
        logp_ref = world.logprobs(reference, prompts, responses)
        times["log-probs (policy + reference)"].append(time.perf_counter() - start)

        # random pairs: the first two distinct responses of each prompt, keep half at random
        distinct = responses.distinct_mask()
        second = np.argmax(distinct[:, 1:], axis=1) + 1
        ok = distinct[:, 1:].any(axis=1)
        rows = np.flatnonzero(ok)
        rows = np.sort(rng.choice(rows, size=min(len(rows), args.prompts // 2), replace=False))
        pairs = Pairs(rows, np.zeros_like(rows), second[rows])

        start = time.perf_counter()
        labels = world.annotate(prompts, responses, pairs, rng)
        times["annotate"].append(time.perf_counter() - start)

        data = PreferenceData.from_labels(
            prompts=prompts, responses=responses, pairs=pairs, prefer_a=labels.prefer_a, ref_logps=logp_ref
        )
        start = time.perf_counter()
        result = trainer.train(policy=policy, data=data, rng=rng)
        times["DPO (native trainer)"].append(time.perf_counter() - start)

        start = time.perf_counter()
        metrics = world.evaluate(result.policy, rng)
        times["evaluate"].append(time.perf_counter() - start)
        del logp

    load = os.getloadavg()
    n_seq = args.prompts * args.responses
    print(
        f"synthetic testbed stages, 1 thread, {args.prompts:,} prompts x {args.responses} responses "
        f"({n_seq:,} sequences), DPO on {len(data):,} pairs x {trainer.settings['epochs']} epochs "
        f"({result.steps} steps); median of {args.repeats} (build: 1 run)"
    )
    for name, values in times.items():
        median = statistics.median(values)
        target = TARGETS_S.get(name)
        ratio = f"  {median / target:5.2f}x target {target:.1f} s" if target else ""
        print(f"  {name:<32} {median:7.3f} s{ratio}")
    iteration = sum(statistics.median(times[k]) for k in ("sample", "log-probs (policy + reference)", "annotate", "DPO (native trainer)", "evaluate"))
    print(f"  {'one iteration (sum)':<32} {iteration:7.3f} s")
    print(
        f"  last iteration: win {metrics['win_rate']:.3f}, gold {metrics['gold_reward']:.3f}, kl {metrics['kl']:.2f}"
    )
    print(f"  load average: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


if __name__ == "__main__":
    main()
