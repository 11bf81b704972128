"""pi_0 for the hf testbed: one offline DPO round from pi_ref, on given pairs or on pi_ref's own samples.

The paper's pi_0 is the SFT model after one offline DPO round on a seed set
(10k UltraFeedback instances). Without such a round pi_0 = pi_ref, every
implicit margin of the first iteration is exactly 0, and smallest, largest
and random margin selectors buy the same pairs. The round runs once, when
the world is built, in one of two modes:

* **Given pairs** (``seed_pairs``, :func:`train_initial_policy`): a file with
  ``prompt``, ``chosen`` and ``rejected`` text columns (names:
  ``prompt_column``, ``chosen_column``, ``rejected_column``). Each prompt is
  encoded as the world encodes every prompt (chat template when the tokenizer
  has one), each response as its tokens without special tokens plus the
  tokenizer's EOS, as TRL does for text. Pairs whose prompt is longer than
  ``max_prompt_length``, whose two responses are identical, or that do not
  fit in the model's positions are dropped (``seed_pairs_dropped``).
* **On-policy** (``seed_prompt_share`` or ``seed_prompts``,
  :func:`bootstrap_initial_policy`): pi_ref samples ``seed_responses``
  responses for each seed prompt, the run's annotator judge labels one pair
  of distinct responses per prompt, and pi_ref is trained on those labels.
  The seed prompts are a share of the ``prompts`` file, drawn with the world
  seed and held out of the training pool, or the prompts of their own file;
  never evaluation prompts. Their labels go to a **seed ledger** of their own
  (``seed_labels`` on the iteration-0 row and in the run's final metrics),
  never to a strategy's budget. The trained pi_0 is cached
  (:mod:`plugins.testbeds.hf.seed_cache`), so every strategy compared on one
  world seed starts from the same pi_0 and only the first run pays for it.

Both modes train a copy of pi_ref with the ``seed_trainer`` (``trl``:
TRL's DPOTrainer through the ``trl`` trainer plugin, the default; ``native``:
the plain PyTorch sigmoid DPO) on reference log-probs computed with pi_ref,
with the **seed round's own defaults** (``seed_lr`` 3e-5, ``seed_epochs`` 2,
``seed_batch_size`` 8, ``seed_grad_accum`` 1): a seed set is small, and the
trainer's defaults (the paper's 5e-7 at an effective batch of 128, tuned for
10k pairs on an 8B model) give one or two steps that leave pi_0 all but equal
to pi_ref. A round that leaves every trainable parameter unchanged stops the
run (:class:`harness.static_policy.StaticPolicyError`). Randomness comes
from ``harness.rng.stream(world_seed, 0, ...)``, so pi_0 is a pure function
of the options, the judge and the world seed.

Given pairs are trained again at every world build; to pay once, set
``seed_save_dir`` (pi_0 is saved there with ``save_pretrained``, tokenizer
included) and pass that directory as ``initial_model`` later. The on-policy
round saves there too when asked.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from harness.errors import UsageError
from harness.interfaces import Pairs, PreferenceData
from harness.ranks import launched_rank
from harness.rng import stream


def trainer_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The seed trainer's options from the testbed's ``seed_*`` options (the seed round's defaults, see above).

    ``seed_beta`` unset keeps the trainer's beta. The trainer's other options
    keep the trainer's defaults (for ``trl``: warm-up 0.1 of the steps, linear
    decay, fp32).
    """
    s = settings
    out: dict[str, Any] = {"lr": float(s["seed_lr"]), "batch_size": int(s["seed_batch_size"])}
    if s["seed_beta"] is not None:
        out["beta"] = float(s["seed_beta"])
    epochs = float(s["seed_epochs"])
    if s["seed_trainer"] == "native":
        if not epochs.is_integer():
            raise UsageError(f"testbed option `seed_epochs`: the native seed trainer runs whole epochs, got {epochs}")
        out["epochs"] = int(epochs)
        if int(s["seed_grad_accum"]) != 1:
            raise UsageError("testbed option `seed_grad_accum` applies to seed_trainer=trl only")
    else:
        out["epochs"] = epochs
        out["grad_accum"] = int(s["seed_grad_accum"])
    return out


def make_trainer(settings: Mapping[str, Any], trainers=None):
    """The seed round's trainer component (``trl`` or ``native``) with :func:`trainer_settings`, from
    ``trainers`` (a :data:`harness.interfaces.TrainerFactory`; without it, the default registry's)."""
    if trainers is None:
        from harness.plugins import default_trainers

        trainers = default_trainers()
    return trainers(str(settings["seed_trainer"]), trainer_settings(settings))


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
    trainers=None,
) -> tuple[Any, dict[str, Any]]:
    """pi_0: a copy of ``reference`` (an HFPolicy) trained with DPO on the pairs in ``path``; and diagnostics.

    Returns ``(policy, info)``: the trained HFPolicy (in eval mode; over the seed pairs' prompt table)
    and ``{"seed_pairs": used, "seed_pairs_dropped": dropped, "seed_train_steps": ...,
    "seed_loss_first": ..., "seed_loss_last": ...}``.
    """
    import torch

    from plugins._hf import loading
    from plugins._hf.policy import PromptTable

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
    seed_reference = reference.with_table(table)
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
    policy, trained = _train_round(s, seed_reference, data, world_seed, trainers)
    info = {"seed_round": "pairs", "seed_pairs": k, "seed_pairs_dropped": dropped, **trained}
    _save_copy(s, policy, tokenizer, info)
    return policy, info


def _train_round(settings: Mapping[str, Any], reference, data: PreferenceData, world_seed: int, trainers=None):
    """A copy of ``reference`` trained on ``data`` by the seed trainer; and the round's ``seed_*`` diagnostics.

    StaticPolicyError when the round changed no trainable parameter.
    """
    from harness.static_policy import StaticPolicyError, compare_parameters

    trainer = make_trainer(settings, trainers)
    result = trainer.train(policy=reference, data=data, rng=stream(world_seed, 0, "seed-pairs"))
    change = compare_parameters(reference, result.policy)
    log = dict(result.log)
    if change is not None and change.static:
        rate = f", first-step learning rate {log['lr_first']:.3g}" if "lr_first" in log else ""
        raise StaticPolicyError(
            f"the seed round trained nothing: {len(data)} pairs, {result.steps} optimiser steps{rate}, and pi_0 "
            "equals pi_ref bit for bit, so every margin of iteration 1 would be 0. Raise the testbed options "
            "seed_lr or seed_epochs, or lower seed_batch_size / seed_grad_accum")
    result.policy.model.eval()
    return result.policy, {
        "seed_trainer": str(settings["seed_trainer"]),
        "seed_train_steps": int(result.steps),
        "seed_loss_first": float(result.loss_first),
        "seed_loss_last": float(result.loss_last),
        **{f"seed_{key}": float(value) for key, value in log.items()},
    }


def _save_copy(settings: Mapping[str, Any], policy, tokenizer, info: dict[str, Any]) -> None:
    """``seed_save_dir``: pi_0 saved with its tokenizer, for later runs' ``initial_model``."""
    if not settings["seed_save_dir"]:
        return
    target = Path(str(settings["seed_save_dir"])).expanduser()
    if launched_rank() == 0:  # under a multi-process launch every process holds this pi_0: one writes it
        target.mkdir(parents=True, exist_ok=True)
        policy.save_pretrained(target, base_model=str(settings["model"]))
        tokenizer.save_pretrained(target)
    info["seed_saved_to"] = str(target)


def seed_prompt_rows(n_prompts: int, share: float, world_seed: int) -> np.ndarray:
    """The rows of the prompts file held out for the on-policy seed round: ``round(share x n)``, drawn with the world seed.

    At least 1 and at most ``n - 1`` rows (the pool keeps one prompt), sorted.
    """
    if n_prompts < 2:
        raise UsageError(f"testbed option `seed_prompt_share`: the prompts file has {n_prompts} usable prompt; "
                         "holding seed prompts out of it needs at least 2 (or give `seed_prompts` a file)")
    k = min(max(1, round(float(share) * n_prompts)), n_prompts - 1)
    rng = stream(world_seed, 0, "seed-prompts")
    return np.sort(rng.choice(n_prompts, size=k, replace=False)).astype(np.int64)


def texts_sha256(texts) -> str:
    """One sha256 over prompt texts (recorded, so the seed prompts of a run can be told apart)."""
    import hashlib

    digest = hashlib.sha256()
    for text in texts:
        digest.update(str(text).encode("utf-8") + b"\0")
    return digest.hexdigest()


def bootstrap_initial_policy(
    *,
    settings: Mapping[str, Any],
    reference,
    seed_table,
    annotator,
    world_seed: int,
    source: str,
    reporter=None,
    sampler=None,
    trainers=None,
) -> tuple[Any, dict[str, Any]]:
    """pi_0 from pi_ref's own samples on the seed prompts, labelled by ``annotator`` (see the module docstring).

    ``reference`` is pi_ref (an HFPolicy), ``seed_table`` a PromptTable whose
    rows are the seed prompts (all of them "training" rows), ``source`` says
    where they came from (recorded). Returns ``(policy, info)`` (an HFPolicy over ``seed_table``); a cached pi_0
    is loaded instead of trained when one matches (``seed_cache``).
    """
    from harness.progress import NullReporter
    from harness.ranks import launched_processes
    from plugins.testbeds.hf import seed_cache
    from plugins.testbeds.hf.world import HFWorld

    reporter = reporter or NullReporter()
    say = getattr(reporter, "log", None) or (lambda message: None)
    s = settings
    if annotator is None:
        raise UsageError("the on-policy seed round (testbed option `seed_prompt_share` or `seed_prompts`) needs a "
                         "judge to label pi_ref's samples: pass --annotator JUDGE (harness list judges)")
    if getattr(annotator, "external", False):
        raise UsageError("the on-policy seed round is labelled when the world is built, so it cannot wait for "
                         "people (--annotator external): label seed pairs yourself and pass them as the testbed "
                         "option `seed_pairs`, or use a judge as annotator")
    texts = list(seed_table.texts)
    trainer_options = trainer_settings(s)
    base = {
        "seed_round": "on_policy",
        "seed_prompts": len(texts),
        "seed_prompts_source": source,
        "seed_prompts_sha256": texts_sha256(texts),
        "seed_annotator": annotator.name,
    }
    use_cache = bool(s["seed_cache"]) and seed_cache.cache_enabled()
    key = None
    if use_cache:
        with reporter.stage("pi_0: looking up the seed-round cache", total=None):
            key = seed_cache.cache_key(settings=s, judge=annotator, world_seed=world_seed,
                                       trainer=str(s["seed_trainer"]), trainer_settings=trainer_options)
            folder, cached, state = seed_cache.lookup(key)
        if folder is not None:
            say(f"pi_0: seed-round cache hit ({folder}); {cached.get('seed_labels', '?')} seed labels were bought "
                "by the run that trained it")
            policy = reference.load_pretrained(folder, dtype=str(s["dtype"]))
            info = {**cached, **base, "seed_cache": "hit", "seed_cache_key": key[:32], "seed_labels_paid": 0}
            _save_copy(s, policy, reference.tokenizer, info)
            return policy, info
        say(f"pi_0: seed-round cache {'miss' if state == 'miss' else 'entry damaged, rebuilding'} "
            f"({seed_cache.entry(key)})")
    if launched_processes() > 1:
        raise UsageError("the on-policy seed round buys labels, so it runs in one process only: run the same "
                         "command once without the launcher (e.g. with --iterations 1) to fill the pi_0 cache, "
                         "then launch it; or set seed_save_dir and pass that directory as initial_model")

    n = int(s["seed_responses"])
    seed_reference = reference.with_table(seed_table)
    world = HFWorld(settings=s, seed=world_seed, tokenizer=reference.tokenizer, table=seed_table,
                    reference_policy=seed_reference, initial_policy=seed_reference, reference_outputs=None, info={},
                    sampler=sampler)
    rows = np.arange(len(texts), dtype=np.int64)[:, None]
    with reporter.stage(f"pi_0: sample {len(texts)}×{n} seed responses from pi_ref", total=None):
        responses = world.sample(seed_reference, rows, n, stream(world_seed, 0, "seed-sample"))
    distinct = responses.distinct_mask()
    usable = distinct.sum(axis=1) >= 2
    chosen_rows = np.flatnonzero(usable)
    if chosen_rows.size == 0:
        raise UsageError(f"the on-policy seed round: pi_ref gave identical responses on all {len(texts)} seed "
                         "prompts, so there is no pair to label; raise the testbed option temperature or "
                         "max_new_tokens, or give more seed prompts")
    firsts = [np.flatnonzero(distinct[i])[:2] for i in chosen_rows]
    pairs = Pairs(prompt=chosen_rows.astype(np.int64), a=np.array([f[0] for f in firsts], dtype=np.int64),
                  b=np.array([f[1] for f in firsts], dtype=np.int64))
    with reporter.stage(f"pi_0: {len(pairs)} seed labels from judge {annotator.name!r}", total=None):
        labels = annotator.compare(world=world, prompts=rows, responses=responses, pairs=pairs,
                                   rng=stream(world_seed, 0, "seed-annotate"))
    if len(labels.prefer_a) != len(pairs):
        raise UsageError(f"annotator {annotator.name!r} returned {len(labels.prefer_a)} labels for "
                         f"{len(pairs)} seed pairs")
    tie = labels.tie_mask()
    trained_pairs = pairs.take(np.flatnonzero(~tie))
    prefer_a = np.asarray(labels.prefer_a, dtype=bool)[~tie]
    if len(trained_pairs) == 0:
        raise UsageError(f"the on-policy seed round: judge {annotator.name!r} called all {len(pairs)} seed pairs "
                         "ties, so there is nothing to train pi_0 on")
    with reporter.stage("pi_0: reference log-probs of the seed responses", total=None), torch_no_grad():
        ref_logps = world.logprobs(seed_reference, rows, responses)
    data = PreferenceData.from_labels(prompts=rows, responses=responses, pairs=trained_pairs, prefer_a=prefer_a,
                                      ref_logps=ref_logps)
    with reporter.stage(f"pi_0: DPO on {len(data)} seed pairs", total=None):
        policy, trained = _train_round(s, seed_reference, data, world_seed, trainers)
    info = {
        **base,
        "seed_labels": int(len(pairs)),
        "seed_labels_paid": int(len(pairs)),
        "seed_label_ties": int(tie.sum()),
        "seed_prompts_without_pair": int((~usable).sum()),
        "seed_pairs": int(len(data)),
        **trained,
    }
    if use_cache and key is not None:
        folder = seed_cache.store(key, policy, info, base_model=str(s["model"]))
        info["seed_cache"] = "miss" if state == "miss" else "rebuilt"
        info["seed_cache_key"] = key[:32]
        if folder is not None:
            say(f"pi_0: trained on {len(data)} seed pairs and cached in {folder}")
    else:
        info["seed_cache"] = "off"
    _save_copy(s, policy, reference.tokenizer, info)
    return policy, info


def torch_no_grad():
    import torch

    return torch.no_grad()
