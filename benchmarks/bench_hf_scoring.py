"""Scoring throughput of the hf world against a bare batched forward of the same models, side by side (1 thread).

The harness: ``world.logprobs(pi_0, ...)`` then ``world.logprobs(pi_ref, ...)``
over the same responses, as the loop scores a pool (summed response
log-probs, batches of ``logprob_batch_size`` sorted by length, everything
the world does: building padded batches from the prompt table, the forward,
log-softmax of the response positions, the sums, numpy out). The bare
baseline: the same two models, the same batches (same sequences, same
order, same padding), prebuilt as tensors outside the timer; inside it only
``model(input_ids, attention_mask).logits``, ``log_softmax`` over every
position, a gather and a masked sum. Both run 2 models x the same number of
forwards. Ratio = harness throughput / bare throughput (bare time / harness
time); target >= 0.8. The model is a GPT-2 built in code (default 6 layers x
256, about 4.8M parameters; a character tokenizer, so the LM head is small)
or any local model directory (``--model``, e.g. SmolLM2 converted with
``python -m plugins.testbeds.hf.convert_gguf``). Prints the medians of the
repeats, interleaved, and the load average; exits 1 when the target fails.

    .venv/bin/python benchmarks/bench_hf_scoring.py [--prompts 64] [--responses 4] [--repeats 3] [--model DIR]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import load_average
from _hf import build_world, parameters, random_responses

TARGET = 0.8


def bare_batches(world, prompts: np.ndarray, responses) -> list[tuple]:
    """The world's batches (same order and width) as (input_ids, attention, target mask) tensors."""
    import torch

    m, n, width = responses.tokens.shape
    rows = np.repeat(prompts[:, 0], n)
    tokens = responses.tokens.reshape(m * n, width)
    lengths = responses.lengths.reshape(m * n)
    prompt_lengths = np.array([len(world.table.ids[r]) for r in rows])
    order = np.argsort(-(prompt_lengths + lengths), kind="stable")
    size = int(world.settings["logprob_batch_size"])
    batches = []
    for start in range(0, m * n, size):
        index = order[start : start + size]
        totals = prompt_lengths[index] + lengths[index]
        ids = torch.full((len(index), int(totals.max())), world.pad_id, dtype=torch.long)
        attention = torch.zeros_like(ids)
        target = torch.zeros_like(ids, dtype=torch.bool)
        for i, k in enumerate(index):
            p, total = int(prompt_lengths[k]), int(totals[i])
            ids[i, :p] = torch.tensor(world.table.ids[rows[k]])
            ids[i, p:total] = torch.from_numpy(tokens[k, : total - p])
            attention[i, :total] = 1
            target[i, p:total] = True
        batches.append((index, ids, attention, target))
    return batches


def bare_logprobs(model, batches, total: int) -> np.ndarray:
    import torch

    out = np.zeros(total)
    with torch.no_grad():
        for index, ids, attention, target in batches:
            logits = model(input_ids=ids, attention_mask=attention, use_cache=False).logits[:, :-1]
            token_logps = torch.log_softmax(logits.float(), dim=-1).gather(-1, ids[:, 1:, None])[..., 0]
            out[index] = (token_logps * target[:, 1:]).sum(dim=1).double().numpy()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--responses", type=int, default=4)
    parser.add_argument("--min-length", type=int, default=32, help="response tokens, EOS included")
    parser.add_argument("--max-length", type=int, default=96)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--batch", type=int, default=16, help="logprob_batch_size")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", help="a local model directory instead of the GPT-2 built in code")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="bench-hf-scoring-") as tmp:
        world = build_world(Path(tmp), model=args.model, n_layer=args.layers, n_embd=args.width,
                            n_prompts=args.prompts, logprob_batch_size=args.batch)
    prompts, responses = random_responses(world, args.prompts, args.responses, min_length=args.min_length,
                                          max_length=args.max_length)
    policies = (world.initial_policy, world.reference_policy)
    batches = bare_batches(world, prompts, responses)  # the same batches for both models
    total = args.prompts * args.responses
    tokens = int(sum(len(world.table.ids[int(r)]) for r in prompts[:, 0]) * args.responses + responses.lengths.sum())

    def harness_pass():
        return [world.logprobs(p, prompts, responses).reshape(-1) for p in policies]

    def bare_pass():
        return [bare_logprobs(p.model, batches, total) for p in policies]

    check = max(float(np.abs(h - b).max()) for h, b in zip(harness_pass(), bare_pass()))  # also the warm-up
    harness_times, bare_times = [], []
    for _ in range(args.repeats):
        for run, times in ((harness_pass, harness_times), (bare_pass, bare_times)):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
    harness_s, bare_s = statistics.median(harness_times), statistics.median(bare_times)
    ratio = bare_s / harness_s
    name = args.model or f"GPT-2 {args.layers}x{args.width}"
    print(f"hf scoring: {name} ({parameters(world) / 1e6:.1f}M params), pi_0 + pi_ref log-probs of {total} sequences "
          f"({tokens:,} tokens each pass), batch {args.batch}, 1 thread, median of {args.repeats}")
    print(f"  harness (world.logprobs x 2)   {harness_s:7.3f} s  {2 * tokens / harness_s:9,.0f} tok/s")
    print(f"  bare batched forward x 2       {bare_s:7.3f} s  {2 * tokens / bare_s:9,.0f} tok/s")
    print(f"  max |harness - bare| log-prob  {check:.2e}")
    verdict = "ok" if ratio >= TARGET else "FAIL"
    print(f"  throughput ratio harness/bare  {ratio:.3f} (target >= {TARGET}) {verdict}")
    print(f"  load average {load_average()}")
    return 0 if ratio >= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
