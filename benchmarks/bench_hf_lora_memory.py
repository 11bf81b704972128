"""Peak memory of a DPO training call with LoRA adapters against full fine-tuning, on SmolLM2-135M.

Each way runs in a fresh subprocess (one torch thread): load the model, wrap it
as the hf testbed does (full: an :class:`~plugins._hf.policy.HFPolicy` of the
model; LoRA: the model wrapped once by :func:`plugins._hf.lora.wrap`, pi_ref
being the base with its adapters off), then one call of the ``trl`` trainer
(``--steps`` optimiser steps, AdamW) on the same random preference pairs. The
subprocess reports its peak resident set size (``ru_maxrss``) and its RSS just
before training (model loaded, trl and datasets imported), so the increase
training causes shows too.

Full fine-tuning holds pi_{i-1}, the trained copy, its gradients and AdamW's
two moments; LoRA holds the base once plus two small adapters, the adapter's
gradients and moments. Target: LoRA's peak <= 0.6 x full's; exits 1 when it
fails, or when LoRA's pi_ref log-probs differ from the base model's.

The model is SmolLM2-135M's architecture (30 layers, width 576, vocabulary
49,152, tied embeddings) built in code with random weights: the memory does
not depend on the weights' values. ``--model DIR`` loads a local model
directory instead (e.g. the SmolLM2 package's weights converted with
``python -m plugins.testbeds.hf.convert_gguf DIR``).

    .venv/bin/python benchmarks/bench_hf_lora_memory.py [--model DIR] [--rank 16] [--pairs 16] [--steps 2] [--batch 1]
        [--gradient-checkpointing]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from _common import REPO, load_average, peak_mib, rss_mib

TARGET = 0.6
PROMPT, RESPONSE = 32, 64


def smollm2_135m():
    """SmolLM2-135M's architecture with random weights (seed 0)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=49_152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                         num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=2048,
                         tie_word_embeddings=True, rms_norm_eps=1e-5, rope_theta=100_000.0, pad_token_id=0,
                         bos_token_id=1, eos_token_id=2)
    return LlamaForCausalLM(config).eval()


def child(mode: str, model_dir: str | None, rank: int, pairs: int, steps: int, batch: int, checkpointing: bool) -> dict:
    import numpy as np
    import torch

    from harness.interfaces import PreferenceData
    from plugins._hf import lora
    from plugins._hf.policy import HFPolicy, PromptTable
    from plugins.trainers.trl import TRLDPOTrainer

    torch.set_num_threads(1)
    if model_dir:
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    else:
        model = smollm2_135m()
    vocab = int(model.config.vocab_size)
    rng = np.random.default_rng(0)
    table = PromptTable(texts=tuple(f"p{i}" for i in range(pairs)),
                        ids=tuple(tuple(int(t) for t in rng.integers(3, vocab, size=PROMPT)) for _ in range(pairs)),
                        n_train=pairs)
    tokenizer = _tokenizer(model_dir)
    base_policy = HFPolicy(model, tokenizer, table, pad_id=0)
    prompts = np.arange(pairs, dtype=np.int64)[:, None]
    chosen, rejected = (rng.integers(3, vocab, size=(pairs, RESPONSE)) for _ in range(2))
    lengths = np.full(pairs, RESPONSE, dtype=np.int64)
    with torch.no_grad():
        base_chosen = base_policy.sequence_logprobs(prompts, chosen, lengths).double().numpy()
        base_rejected = base_policy.sequence_logprobs(prompts, rejected, lengths).double().numpy()
    reference = base_policy
    if mode == "lora":
        config = lora.lora_config(rank=rank, alpha=2.0 * rank, dropout=0.0, target_modules="all-linear")
        reference = HFPolicy(lora.wrap(model, config, seed=0), tokenizer, table, pad_id=0)
        with torch.no_grad():  # pi_ref of a LoRA run is the base model exactly
            same = np.array_equal(reference.sequence_logprobs(prompts, chosen, lengths).double().numpy(), base_chosen)
    else:
        same = True
    data = PreferenceData(prompts=prompts, chosen=chosen, chosen_lengths=lengths, rejected=rejected,
                          rejected_lengths=lengths, ref_chosen_logps=base_chosen, ref_rejected_logps=base_rejected)
    trainer = TRLDPOTrainer({"lr": 1e-4, "steps": steps, "batch_size": batch, "grad_accum": 1, "warmup_ratio": 0.0,
                             "gradient_checkpointing": checkpointing})
    import datasets  # noqa: F401  (the trainer's imports, loaded before the measurement: not training memory)
    import trl  # noqa: F401

    before = rss_mib()
    start = time.perf_counter()
    result = trainer.train(policy=reference, data=data, rng=np.random.default_rng(0))
    seconds = time.perf_counter() - start
    trained = sum(p.numel() for p in result.policy.parameters())
    return {"mode": mode, "rss_before_mib": before, "peak_mib": peak_mib(), "seconds": seconds,
            "steps": int(result.steps), "trained_parameters": int(trained), "reference_is_base": bool(same),
            "parameters": int(sum(p.numel() for name, p in lora.unwrap(model).named_parameters()
                                  if ".lora_" not in name))}


def _tokenizer(model_dir: str | None):
    """The model's tokenizer, or the tiny character tokenizer (TRL wants a processing class; ids come given)."""
    if model_dir:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(model_dir)
    from plugins.testbeds.hf.tiny import build_tokenizer

    return build_tokenizer()


def run_child(mode: str, args) -> dict:
    argv = [sys.executable, __file__, "--child", mode, "--rank", str(args.rank), "--pairs", str(args.pairs),
            "--steps", str(args.steps), "--batch", str(args.batch)] + (["--model", args.model] if args.model else [])
    argv += ["--gradient-checkpointing"] if args.gradient_checkpointing else []
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "TQDM_DISABLE": "1"}
    done = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"the {mode} subprocess failed ({done.returncode}):\n{done.stderr.strip()}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a local model directory (default: SmolLM2-135M's architecture, built)")
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--pairs", type=int, default=16)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--batch", type=int, default=1, help="pairs per optimiser step (1: the memory is mostly the "
                        "model states LoRA changes; activations, which it does not, grow with the batch)")
    parser.add_argument("--gradient-checkpointing", action="store_true", help="the trainer's gradient_checkpointing")
    parser.add_argument("--child", choices=("full", "lora"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        sys.path.insert(0, str(REPO))
        print(json.dumps(child(args.child, args.model, args.rank, args.pairs, args.steps, args.batch,
                               args.gradient_checkpointing)))
        return 0
    full, low = run_child("full", args), run_child("lora", args)
    ratio = low["peak_mib"] / full["peak_mib"]
    grow_full, grow_lora = full["peak_mib"] - full["rss_before_mib"], low["peak_mib"] - low["rss_before_mib"]
    print(f"DPO training memory: {args.model or 'SmolLM2-135M architecture (random weights)'}, "
          f"{full['parameters'] / 1e6:.1f}M parameters, {args.pairs} pairs of {PROMPT} + {RESPONSE} tokens, "
          f"batch {args.batch}, {args.steps} AdamW steps, gradient checkpointing "
          f"{'on' if args.gradient_checkpointing else 'off'}, one thread")
    print(f"  full fine-tuning: peak RSS {full['peak_mib']:7.0f} MiB  (+{grow_full:6.0f} MiB while training)  "
          f"{full['trained_parameters'] / 1e6:8.2f}M trained  {full['seconds']:.1f} s")
    print(f"  LoRA rank {args.rank:<3}:    peak RSS {low['peak_mib']:7.0f} MiB  (+{grow_lora:6.0f} MiB while "
          f"training)  {low['trained_parameters'] / 1e6:8.2f}M trained  {low['seconds']:.1f} s")
    print(f"  ratio of peaks {ratio:.3f} (target <= {TARGET}); of the increases {grow_lora / grow_full:.3f}; "
          f"LoRA's pi_ref equals the base model: {low['reference_is_base']}")
    print(f"  load average: {load_average()}")
    return 0 if ratio <= TARGET and low["reference_is_base"] and full["steps"] == low["steps"] == args.steps else 1


if __name__ == "__main__":
    raise SystemExit(main())
