"""pi_0 for the hf testbed from one offline DPO round on seed pairs (testbed option ``seed_pairs``).

The paper's pi_0 is the SFT model after one offline DPO round on a seed set
(10k UltraFeedback instances); without it pi_0 = pi_ref and every implicit
margin of the first iteration is 0 (DESIGN section 1). With ``seed_pairs``
(and no ``initial_model``) the world trains that round once, at build:

1. Read the file's ``prompt``, ``chosen`` and ``rejected`` text columns
   (names: ``prompt_column``, ``chosen_column``, ``rejected_column``).
2. Encode each prompt as the world encodes every prompt (chat template when
   the tokenizer has one), and each response as its tokens without special
   tokens plus the tokenizer's EOS, as TRL does for text. Pairs whose prompt
   is longer than ``max_prompt_length``, whose two responses are identical,
   or that do not fit in the model's positions are dropped (counted in
   ``world.info["seed_pairs_dropped"]``).
3. Compute the reference log-probs with pi_ref (no grad), then train a copy
   of pi_ref with the ``seed_trainer`` (``trl``: TRL's DPOTrainer through the
   ``trl`` trainer plugin, the default; ``native``: the plain PyTorch sigmoid
   DPO), with the trainer's own defaults unless ``seed_beta``, ``seed_lr``,
   ``seed_epochs``, ``seed_batch_size`` or ``seed_grad_accum`` are set.
   Randomness comes from ``harness.rng.stream(world_seed, 0, "seed-pairs")``,
   so pi_0 is a pure function of the options and the world seed.

The round runs at every world build (a resumed run trains it again, with the
same result). To pay for it once, set ``seed_save_dir``: pi_0 is saved there
with ``save_pretrained`` (tokenizer included) and later runs can pass that
directory as ``initial_model``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from harness.errors import UsageError
from harness.interfaces import PreferenceData
from harness.ranks import launched_rank
from harness.rng import stream


def trainer_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The seed trainer's options from the testbed's ``seed_*`` options (unset ones keep the trainer's defaults)."""
    s = settings
    out: dict[str, Any] = {}
    if s["seed_beta"] is not None:
        out["beta"] = float(s["seed_beta"])
    if s["seed_lr"] is not None:
        out["lr"] = float(s["seed_lr"])
    if s["seed_batch_size"] is not None:
        out["batch_size"] = int(s["seed_batch_size"])
    epochs = float(s["seed_epochs"])
    if s["seed_trainer"] == "native":
        if not epochs.is_integer():
            raise UsageError(f"testbed option `seed_epochs`: the native seed trainer runs whole epochs, got {epochs}")
        out["epochs"] = int(epochs)
        if s["seed_grad_accum"] is not None:
            raise UsageError("testbed option `seed_grad_accum` applies to seed_trainer=trl only")
    else:
        out["epochs"] = epochs
        if s["seed_grad_accum"] is not None:
            out["grad_accum"] = int(s["seed_grad_accum"])
    return out


def make_trainer(settings: Mapping[str, Any]):
    """The seed round's trainer component (``trl`` or ``native``), with :func:`trainer_settings`."""
    if settings["seed_trainer"] == "native":
        from plugins.trainers.native import NativeDPOTrainer

        return NativeDPOTrainer(trainer_settings(settings))
    from plugins.trainers.trl import TRLDPOTrainer

    return TRLDPOTrainer(trainer_settings(settings))


def _response_ids(tokenizer, text: str, eos: int) -> list[int]:
    return list(tokenizer(str(text), add_special_tokens=False)["input_ids"]) + [int(eos)]


def train_initial_policy(
    *,
    settings: Mapping[str, Any],
    path: Path,
    reference,
    encode_prompt: Callable[[str], list[int]],
    position_limit: int | None,
    world_seed: int,
) -> tuple[Any, dict[str, Any]]:
    """pi_0: a copy of ``reference`` (an HFPolicy) trained with DPO on the pairs in ``path``; and diagnostics.

    Returns ``(model, info)``: the trained transformers model (in eval mode)
    and ``{"seed_pairs": used, "seed_pairs_dropped": dropped, "seed_train_steps": ...,
    "seed_loss_first": ..., "seed_loss_last": ...}``.
    """
    import torch

    from plugins.testbeds.hf import loading
    from plugins.testbeds.hf.policy import HFPolicy, PromptTable

    s = settings
    label = "testbed option `seed_pairs`"
    columns = [str(s["prompt_column"]), str(s["chosen_column"]), str(s["rejected_column"])]
    found = loading.load_columns(path, columns, label)
    tokenizer = reference.tokenizer
    eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else reference.pad_id
    max_prompt = int(s["max_prompt_length"])
    texts, prompt_ids, chosen, rejected = [], [], [], []
    dropped = 0
    for prompt, good, bad in zip(*(found[c] for c in columns)):
        ids = encode_prompt(str(prompt))
        good_ids, bad_ids = _response_ids(tokenizer, good, eos), _response_ids(tokenizer, bad, eos)
        longest = len(ids) + max(len(good_ids), len(bad_ids))
        if (not 0 < len(ids) <= max_prompt or good_ids == bad_ids
                or (position_limit is not None and longest > position_limit)):
            dropped += 1
            continue
        texts.append(str(prompt))
        prompt_ids.append(tuple(ids))
        chosen.append(good_ids)
        rejected.append(bad_ids)
    if not prompt_ids:
        raise UsageError(f"{label}: none of the {dropped} pairs in {str(path)!r} is usable (prompt longer than "
                         f"max_prompt_length={max_prompt}, identical chosen and rejected, or longer than the "
                         "model's positions)")

    k = len(prompt_ids)
    table = PromptTable(texts=tuple(texts), ids=tuple(prompt_ids), n_train=k)
    seed_reference = HFPolicy(reference.model, tokenizer, table, reference.pad_id)
    rows = np.arange(k, dtype=np.int64)[:, None]

    def padded(sequences: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
        width = max(len(x) for x in sequences)
        tokens = np.full((len(sequences), width), reference.pad_id, dtype=np.int64)
        for i, x in enumerate(sequences):
            tokens[i, : len(x)] = x
        return tokens, np.array([len(x) for x in sequences], dtype=np.int64)

    chosen_tokens, chosen_lengths = padded(chosen)
    rejected_tokens, rejected_lengths = padded(rejected)
    batch = int(s["logprob_batch_size"])

    def reference_logps(tokens: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        out = np.zeros(k, dtype=np.float64)
        with torch.no_grad():
            for start in range(0, k, batch):
                part = slice(start, start + batch)
                out[part] = seed_reference.sequence_logprobs(rows[part], tokens[part], lengths[part]).double().cpu().numpy()
        return out

    data = PreferenceData(
        prompts=rows,
        chosen=chosen_tokens,
        chosen_lengths=chosen_lengths,
        rejected=rejected_tokens,
        rejected_lengths=rejected_lengths,
        ref_chosen_logps=reference_logps(chosen_tokens, chosen_lengths),
        ref_rejected_logps=reference_logps(rejected_tokens, rejected_lengths),
    )
    trainer = make_trainer(s)
    result = trainer.train(policy=seed_reference, data=data, rng=stream(world_seed, 0, "seed-pairs"))
    model = result.policy.model
    model.eval()
    info = {
        "seed_pairs": k,
        "seed_pairs_dropped": dropped,
        "seed_trainer": str(s["seed_trainer"]),
        "seed_train_steps": int(result.steps),
        "seed_loss_first": float(result.loss_first),
        "seed_loss_last": float(result.loss_last),
    }
    if s["seed_save_dir"]:
        target = Path(str(s["seed_save_dir"])).expanduser()
        if launched_rank() == 0:  # under a multi-process launch every process holds this pi_0: one writes it
            target.mkdir(parents=True, exist_ok=True)
            model.save_pretrained(target)
            tokenizer.save_pretrained(target)
        info["seed_saved_to"] = str(target)
    return model, info
