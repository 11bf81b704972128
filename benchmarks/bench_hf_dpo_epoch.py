"""One DPO epoch: the harness's trl trainer (reused reference log-probs) vs stock TRL with a live reference model.

Same model, pairs and hyperparameters, side by side in one run (1 thread):

* **harness**: ``TRLDPOTrainer.train`` as the loop calls it, on
  :class:`PreferenceData` whose reference log-probs were computed when the
  pool was scored (so they are not timed here: the loop needs them for
  selection anyway). Timed: cloning the policy, building the tokenized
  dataset, building TRL's trainer (no reference model) and the epoch.
* **stock**: ``trl.DPOTrainer(model, ref_model=...)`` with the harness's own
  ``DPOConfig`` but ``precompute_ref_log_probs=False``, on the same pairs as
  text (prompt, chosen, rejected; TRL tokenizes them and appends EOS; the
  character tokenizer round-trips, and the script checks TRL's token ids
  equal the harness's). The reference model is a copy made outside the timer.
  Timed: building the trainer (tokenizing) and the epoch.

Both train the same starting weights with the same seed, so their first
losses must agree (printed). Speed-up = stock time / harness time; target
>= 1.25. Default model: GPT-2 6 layers x 256 built in code (about 4.8M
parameters), 128 pairs, batch 8, 16 optimiser steps. Prints medians of the
repeats (interleaved) and the load average; exits 1 when the target fails.

    .venv/bin/python benchmarks/bench_hf_dpo_epoch.py [--pairs 128] [--batch 8] [--repeats 3] [--model DIR]
        [--device cuda --dtype bfloat16]   # on a GPU: the models there, bf16 training when the dtype is bf16
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from _common import load_average
from _hf import build_world, parameters, random_responses

TARGET = 1.25


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--min-length", type=int, default=32, help="response tokens, EOS included")
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", help="a local model directory instead of the GPT-2 built in code")
    parser.add_argument("--device", default="cpu", help="where the models run (cpu, cuda)")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    import datasets
    from transformers.trainer_callback import PrinterCallback, ProgressCallback
    from transformers.utils import logging as hf_logging
    from trl import DPOTrainer

    from harness.interfaces import PreferenceData
    from plugins.trainers.trl import TRLDPOTrainer, dpo_config, preference_rows

    datasets.utils.logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    with tempfile.TemporaryDirectory(prefix="bench-hf-dpo-") as tmp:
        world = build_world(Path(tmp), model=args.model, n_layer=args.layers, n_embd=args.width,
                            n_prompts=args.pairs, device=args.device, dtype=args.dtype)
    prompts, responses = random_responses(world, args.pairs, 2, min_length=args.min_length,
                                          max_length=args.max_length)
    reference = world.reference_policy
    ref_logps = world.logprobs(reference, prompts, responses)  # computed at scoring time in a run
    data = PreferenceData(prompts=prompts, chosen=responses.tokens[:, 0], chosen_lengths=responses.lengths[:, 0],
                          rejected=responses.tokens[:, 1], rejected_lengths=responses.lengths[:, 1],
                          ref_chosen_logps=ref_logps[:, 0], ref_rejected_logps=ref_logps[:, 1])
    trainer = TRLDPOTrainer({"lr": 1e-4, "epochs": 1.0, "batch_size": args.batch, "grad_accum": 1,
                             "warmup_ratio": 0.0, "precision": "bf16" if args.dtype == "bfloat16" else "fp32"})
    settings = trainer.settings

    rows = preference_rows(reference, data)
    decode = world.tokenizer.decode
    eos = world.tokenizer.eos_token
    text = datasets.Dataset.from_dict({
        "prompt": [decode(p) for p in rows["prompt_ids"]],
        "chosen": [decode(c[:-1]) + eos for c in rows["chosen_ids"]],
        "rejected": [decode(r[:-1]) + eos for r in rows["rejected_ids"]],
    })

    def harness_epoch(seed: int):
        result = trainer.train(policy=reference, data=data, rng=np.random.default_rng(seed))
        return result.loss_first, result.steps

    def stock_epoch(seed: int, check: bool = False):
        model, ref_model = copy.deepcopy(reference.model), copy.deepcopy(reference.model)
        with tempfile.TemporaryDirectory(prefix="bench-stock-") as out:
            # the seed TRLDPOTrainer.train draws from a Generator seeded with `seed`
            config = dpo_config(settings, output_dir=out, seed=int(np.random.default_rng(seed).integers(0, 2**31 - 1)),
                                use_cpu=args.device == "cpu", precompute_ref_log_probs=False)
            start = time.perf_counter()
            stock = DPOTrainer(model=model, ref_model=ref_model, args=config, train_dataset=text,
                               processing_class=world.tokenizer)
            for callback in (PrinterCallback, ProgressCallback):
                stock.remove_callback(callback)
            stock.train()
            elapsed = time.perf_counter() - start
        if check:
            same = (list(stock.train_dataset["prompt_ids"]) == rows["prompt_ids"]
                    and list(stock.train_dataset["chosen_ids"]) == rows["chosen_ids"]
                    and list(stock.train_dataset["rejected_ids"]) == rows["rejected_ids"])
            if not same:
                raise SystemExit("stock TRL tokenized the pairs differently from the harness; not comparable")
        losses = [e["loss"] for e in stock.state.log_history if "loss" in e]
        return elapsed, losses[0], int(stock.state.global_step)

    # warm-up (and the checks): one epoch of each
    harness_first, harness_steps = harness_epoch(0)
    _, stock_first, stock_steps = stock_epoch(0, check=True)
    harness_times, stock_times = [], []
    for repeat in range(args.repeats):
        start = time.perf_counter()
        harness_epoch(repeat + 1)
        harness_times.append(time.perf_counter() - start)
        stock_times.append(stock_epoch(repeat + 1)[0])
    harness_s, stock_s = statistics.median(harness_times), statistics.median(stock_times)
    speedup = stock_s / harness_s
    name = args.model or f"GPT-2 {args.layers}x{args.width}"
    where = "1 thread" if args.device == "cpu" else f"{device_name(args.device)}, {args.dtype}"
    print(f"hf DPO epoch: {name} ({parameters(world) / 1e6:.1f}M params), {args.pairs} pairs, batch {args.batch}, "
          f"{harness_steps} steps, {where}, median of {args.repeats}")
    print(f"  harness trl trainer (precomputed ref, no ref model)  {harness_s:7.3f} s  first loss {harness_first:.6f}")
    print(f"  stock TRL DPOTrainer (live reference model)          {stock_s:7.3f} s  first loss {stock_first:.6f}"
          f"  ({stock_steps} steps)")
    verdict = "ok" if speedup >= TARGET else "FAIL"
    print(f"  speed-up stock/harness  {speedup:.3f}x (target >= {TARGET}x) {verdict}")
    print(f"  load average {load_average()}")
    return 0 if speedup >= TARGET else 1


def device_name(device: str) -> str:
    """The GPU's name (``torch.cuda.get_device_name``) for a CUDA device, else the device string."""
    import torch

    return torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda") else device


if __name__ == "__main__":
    sys.exit(main())
