"""Peak memory of scoring log-probs with the LM head on the scored positions only, against full logits.

``HFPolicy.sequence_logprobs`` runs the backbone, then the LM head and the
float32 log-softmax over the response positions only, in chunks
(``plugins/_hf/policy.py``); ``full_logits=True`` is the way it was before:
one forward producing logits for every position (B x L x vocab), then the
gather. Each way runs in a fresh subprocess (one torch thread) on the same
model and batch, and reports its peak resident set size (``ru_maxrss``) and
its RSS just before scoring (model and batch built), so the increase that
scoring itself causes shows too.

The model is a Llama built in code with SmolLM2-135M's vocabulary (49,152),
width (576), heads and tied embeddings, but only ``--layers`` layers (default
2), so the LM head dominates as it does for SmolLM2; random weights (the
numbers do not matter, only that both ways give the same ones: checked to
1e-5 relative to the sums). The batch: ``--batch`` sequences (default 16) of a 32-token prompt
plus a ``--length``-token response (default 256), scored under
``torch.no_grad`` as the world scores a pool; ``--grad`` also measures one
backward pass (the native trainer's step). Target: peak after <= 0.5 x peak
before; exits 1 when it fails.

    .venv/bin/python benchmarks/bench_hf_logprob_memory.py [--batch 16] [--length 256] [--layers 2] [--grad]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from _common import REPO, load_average, peak_mib, rss_mib

TARGET = 0.5
VOCAB = 49_152  # SmolLM2's
PROMPT = 32


def child(mode: str, batch: int, length: int, layers: int, grad: bool) -> dict:
    """Build the model and batch, score once the ``mode`` way; return the measurements."""
    import numpy as np
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from plugins._hf.policy import HFPolicy, PromptTable

    torch.set_num_threads(1)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=576, intermediate_size=1536, num_hidden_layers=layers,
                         num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=2048,
                         tie_word_embeddings=True, pad_token_id=0)
    model = LlamaForCausalLM(config).eval()
    rng = np.random.default_rng(0)
    table = PromptTable(texts=tuple(f"p{i}" for i in range(batch)),
                        ids=tuple(tuple(int(t) for t in rng.integers(1, VOCAB, size=PROMPT)) for _ in range(batch)),
                        n_train=batch)
    policy = HFPolicy(model, None, table, pad_id=0)
    prompts = np.arange(batch, dtype=np.int64)[:, None]
    responses = rng.integers(1, VOCAB, size=(batch, length))
    lengths = rng.integers(length // 2, length + 1, size=batch)
    lengths[0] = length
    full = mode == "before"
    if not full:  # the one-off probe that decides the split (8 tokens) before the measurement
        with torch.no_grad():
            policy.sequence_logprobs(prompts[:1], responses[:1, :1], lengths[:1] * 0 + 1)
        assert policy._split[1] is not None, "the split head was not taken"
    before = rss_mib()
    start = time.perf_counter()
    if grad:
        values = policy.sequence_logprobs(prompts, responses, lengths, full_logits=full)
        values.sum().backward()
    else:
        with torch.no_grad():
            values = policy.sequence_logprobs(prompts, responses, lengths, full_logits=full)
    seconds = time.perf_counter() - start
    return {"mode": mode, "rss_before_mib": before, "peak_mib": peak_mib(), "seconds": seconds,
            "values": values.detach().double().tolist(),
            "parameters": int(sum(p.numel() for p in model.parameters()))}


def run_child(mode: str, args) -> dict:
    argv = [sys.executable, __file__, "--child", mode, "--batch", str(args.batch), "--length", str(args.length),
            "--layers", str(args.layers)] + (["--grad"] if args.grad else [])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    done = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"the {mode} subprocess failed ({done.returncode}):\n{done.stderr.strip()}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=256, help="response tokens (the prompt adds 32)")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--grad", action="store_true", help="also run one backward pass (training)")
    parser.add_argument("--child", choices=("before", "after"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        sys.path.insert(0, str(REPO))
        print(json.dumps(child(args.child, args.batch, args.length, args.layers, args.grad)))
        return 0
    results = {mode: run_child(mode, args) for mode in ("before", "after")}
    before, after = results["before"], results["after"]
    worst = max(abs(a - b) for a, b in zip(before["values"], after["values"]))
    ratio = after["peak_mib"] / before["peak_mib"]
    grow_before = before["peak_mib"] - before["rss_before_mib"]
    grow_after = after["peak_mib"] - after["rss_before_mib"]
    print(f"log-prob scoring memory: Llama {args.layers} layers x 576, vocabulary {VOCAB:,} "
          f"({before['parameters'] / 1e6:.1f}M parameters), batch {args.batch} x ({PROMPT} prompt + "
          f"{args.length} response) tokens, {'no_grad + backward' if args.grad else 'no_grad'}, one thread")
    print(f"  before (full logits):       peak RSS {before['peak_mib']:8.0f} MiB  (+{grow_before:6.0f} MiB while "
          f"scoring)  {before['seconds']:.2f} s")
    print(f"  after (head on scored only): peak RSS {after['peak_mib']:7.0f} MiB  (+{grow_after:6.0f} MiB while "
          f"scoring)  {after['seconds']:.2f} s")
    print(f"  ratio of peaks {ratio:.3f} (target <= {TARGET}); of the increases {grow_after / grow_before:.3f}; "
          f"largest |difference| of the {args.batch} log-probs {worst:.2e}")
    print(f"  load average: {load_average()}")
    # sums of a few hundred float32 log-probs of about -11 each: compared relative to their size
    ok = ratio <= TARGET and worst <= 1e-5 * max(1.0, max(abs(v) for v in before["values"]))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
