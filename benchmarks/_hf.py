"""What the hf benchmarks share: a GPT-2 of a few million parameters built in code, its world, random responses.

The models use the character-level tokenizer of :mod:`plugins.testbeds.hf.tiny`
(100 ids), so the forward and backward passes, not the LM head, dominate.
pi_ref is randomly initialised from the seed; pi_0 is pi_ref with small noise
added to every weight, so the two log-prob passes run two distinct models.
Nothing is downloaded; ``--model DIR`` in the scripts swaps in any local model
directory instead (e.g. SmolLM2 converted with ``plugins.testbeds.hf.convert_gguf``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

for _name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "TQDM_DISABLE"):
    os.environ.setdefault(_name, "1")

WORDS = ("apple", "berry", "cloud", "delta", "ember", "fjord", "grove", "harbor", "island", "jungle", "kettle",
         "lantern", "meadow", "nectar", "orchid", "pebble", "quartz", "river", "summit", "tundra")


def build_models(root: Path, *, n_layer: int, n_embd: int, seed: int = 0) -> tuple[Path, Path]:
    """Save pi_ref and pi_0 (GPT-2, char tokenizer) under ``root``; return their directories."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from plugins.testbeds.hf.tiny import build_tokenizer

    tokenizer = build_tokenizer()
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=512, n_embd=n_embd, n_layer=n_layer,
                        n_head=max(1, n_embd // 64), resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                        pad_token_id=tokenizer.pad_token_id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = GPT2LMHeadModel(config)
        reference, initial = root / "reference", root / "initial"
        model.save_pretrained(reference)
        tokenizer.save_pretrained(reference)
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.add_(0.01 * torch.randn_like(parameter))
        model.save_pretrained(initial)
        tokenizer.save_pretrained(initial)
    return reference, initial


def write_prompts(root: Path, n: int, seed: int = 0) -> tuple[Path, Path]:
    """``n`` training prompts (3-6 random words) and 4 evaluation prompts with outputs, as JSONL."""
    rng = np.random.default_rng(seed)
    prompts = [" ".join(rng.choice(WORDS, size=int(rng.integers(3, 7)))) + f" #{i}" for i in range(n)]
    prompts_file, eval_file = root / "prompts.jsonl", root / "eval.jsonl"
    prompts_file.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
    eval_file.write_text("".join(json.dumps({"prompt": p, "output": p.upper()}) + "\n" for p in prompts[:4]))
    return prompts_file, eval_file


def build_world(root: Path, *, model: str | None, n_layer: int, n_embd: int, n_prompts: int,
                logprob_batch_size: int = 16, device: str = "cpu", dtype: str = "float32"):
    """The hf world on the benchmark models (or on the local model directory ``model``: pi_0 = pi_ref), its
    models on ``device`` in ``dtype``."""
    from harness.progress import NullReporter
    from plugins.testbeds.hf import HFTestbed

    if model is None:
        reference, initial = build_models(root, n_layer=n_layer, n_embd=n_embd)
        reference, initial = str(reference), str(initial)
    else:
        reference, initial = model, None
    prompts_file, eval_file = write_prompts(root, n_prompts)
    settings = {"model": reference, "initial_model": initial, "prompts": str(prompts_file),
                "eval_prompts": str(eval_file), "threads": 1, "max_new_tokens": 128,
                "logprob_batch_size": logprob_batch_size, "device": device, "dtype": dtype}
    return HFTestbed(settings).build_world(seed=0, reporter=NullReporter())


def random_responses(world, n_prompts: int, n_responses: int, *, min_length: int, max_length: int, seed: int = 0):
    """``(M, N)`` responses of random printable tokens, each ending in EOS, and the prompt rows ``(M, 1)``."""
    from harness.interfaces import Responses

    rng = np.random.default_rng(seed)
    vocab = len(world.tokenizer)
    special = {world.pad_id, *world.eos_ids, *(world.tokenizer.all_special_ids or [])}
    allowed = np.array([t for t in range(vocab) if t not in special], dtype=np.int64)
    lengths = rng.integers(min_length, max_length + 1, size=(n_prompts, n_responses))
    tokens = np.full((n_prompts, n_responses, max_length), world.pad_id, dtype=np.int64)
    for i in range(n_prompts):
        for j in range(n_responses):
            k = int(lengths[i, j])
            tokens[i, j, : k - 1] = rng.choice(allowed, size=k - 1)
            tokens[i, j, k - 1] = world.eos_ids[0]
    prompts = np.arange(n_prompts, dtype=np.int64)[:, None]
    return prompts, Responses(tokens=tokens, lengths=lengths.astype(np.int64))


def parameters(world) -> int:
    return int(sum(p.numel() for p in world.reference_policy.model.parameters()))
