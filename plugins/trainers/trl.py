"""The ``trl`` trainer: TRL's ``DPOTrainer`` on the reference log-probs computed at scoring time.

Every call trains a copy of pi_{i-1} (``policy.clone()``) with a fresh
optimiser and returns it; the input policy is never modified. It trains the
hf testbed's policies (:class:`plugins._hf.policy.HFPolicy`: a
transformers model, its tokenizer and the prompt table).

**No reference pass.** :class:`~harness.interfaces.PreferenceData` carries the
reference log-probs of every chosen and rejected response (summed over the
response tokens, EOS included, computed once when the loop scored them). They
go to TRL as the ``ref_chosen_logps``/``ref_rejected_logps`` columns of an
already tokenized dataset, through a small ``DPOTrainer`` subclass that
overrides two private methods of trl 1.16 (so trl is pinned to its minor):

* ``_prepare_dataset`` passes a dataset that already has ``prompt_ids``,
  ``chosen_ids`` and ``rejected_ids`` through untouched (TRL would otherwise
  tokenize text and append its own EOS; the harness trains on exactly the
  tokens it sampled and scored, which a decode/re-encode round trip of a
  subword tokenizer does not always reproduce);
* ``_precompute_ref_logps`` returns a dataset that already has both reference
  columns as it is (TRL would run a reference forward and then fail on the
  duplicated columns).

With ``precompute_ref_log_probs=True`` and ``ref_model=None`` TRL keeps no
reference model; the trainer checks ``ref_model is None`` and no reference
forward ever runs. Tests compare the losses with TRL's own live-reference run.

**LoRA.** With the hf testbed's ``lora_rank`` the policy is an adapter on a
shared PEFT model (:mod:`plugins._hf.lora`). TRL gets the transformers model
inside it, with the policy's adapter active and its weights the only trainable
ones, so TRL's own PEFT path (which would add a ``ref`` adapter) stays out and
the reference log-probs still come precomputed. ``gradient_checkpointing``
works with it as it is (transformers' non-reentrant checkpointing passes the
gradients to the adapters below the frozen embeddings; a test checks it).

**Options.** ``loss_type`` is any of TRL's loss types (:data:`LOSS_TYPES`) or
a comma-separated list combined with ``loss_weights`` (same length; default
all 1), e.g. ``loss_type=sigmoid,bco_pair,sft`` with ``loss_weights=0.8,0.2,1``
(MPO). ``exo_pair`` needs ``label_smoothing`` > 0 and ``robust`` uses it as
the label-flip rate. TRL's ``ld_alpha`` is not offered: it re-weights the
log-probs, which would no longer match the precomputed reference sums.
``batch_size`` x ``grad_accum`` is the effective batch (the paper: 128).
Training budget: ``steps`` > 0 runs exactly that many optimiser steps,
otherwise ``epochs`` passes. Sequences are never truncated (that would break
the precomputed reference log-probs): with ``max_length`` > 0, pairs whose
prompt plus longer response exceeds it are dropped, with a warning.

**Learning-rate schedules never spend a step at learning rate 0.**
Hugging Face's warm-up schedules give optimiser step 0 the multiplier
0/warm-up, so with any warm-up the first step of every call changes nothing,
and a call of one step is a no-op. This trainer builds its own schedule
(:func:`lr_multiplier`): warm-up step ``s`` (0-based) runs at
``(s + 1) / (W + 1)`` of the peak, with ``W = ceil(warmup_ratio x steps)``
capped at ``steps - 1`` (a warm-up never takes every step); after it,
``linear`` falls to ``1 / (steps - W)`` of the peak at the last step and
``cosine`` follows half a cosine, neither reaching 0 on a step that runs;
``constant`` ignores the warm-up, as Hugging Face's does. With no warm-up
the schedule equals Hugging Face's step for step.

``loss_first``/``loss_last`` are the losses TRL logs at the first and last
optimiser step (logging every step; under gradient accumulation, the mean
over the accumulated micro-batches). :attr:`TrainResult.log` summarises
TRL's per-step log: ``lr_first``/``lr_max`` (the learning rate each step
ran at, as the trainer logs it before the scheduler moves on), and the first
and last value of the reward margin and accuracy and the gradient norm
(:data:`LOGGED`). With no pairs the clone is returned untouched with
``steps = 0``, both losses 0.0 and an empty log.

**Several processes.** Under ``accelerate launch --multi_gpu`` (or
``torchrun``) TRL trains data-parallel: each process takes its share of the
pairs, ``batch_size`` per process, gradients averaged. A launch with FSDP or
DeepSpeed (``ACCELERATE_USE_FSDP`` / ``ACCELERATE_USE_DEEPSPEED``) is
refused (exit 2): either would leave the policy's weights sharded across the
processes after training, while the main process alone evaluates it, and
neither has run here (accelerate turns both on only on accelerator devices).

**Tracking.** With ``--report-to`` (:mod:`harness.tracking`) every entry of
TRL's per-step log (loss, learning rate, reward margins and accuracies,
gradient norm, ...) goes to the run's tracker under ``train/``, at a step
counted across the run's iterations. TRL's own reporting stays off
(``report_to="none"``): its callbacks would number the steps of every call
from 1 again and, for W&B, re-key the loop's metrics on that count.

Randomness: TRL seeds the global ``random``/numpy/torch RNGs itself; the
trainer draws that seed from the Generator it is given and restores the
global states afterwards. torch, transformers, datasets and trl are imported
inside :meth:`TRLDPOTrainer.train` only.
"""

from __future__ import annotations

import math
import warnings
from contextlib import contextmanager
from typing import Any

import numpy as np

from harness import hookimpl, tracking
from harness.errors import UsageError
from harness.interfaces import PreferenceData, Trainer, TrainResult
from harness.options import Option
from plugins._hf import lora

LOSS_TYPES = (
    "sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot", "aot_unpaired",
    "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm",
)
"""TRL 1.16's ``DPOConfig.loss_type`` values."""

_POSITIVE = {"min": 0.0, "min_inclusive": False}

SCHEDULERS = ("linear", "cosine", "constant", "constant_with_warmup")
"""The learning-rate schedules the trainer offers (see :func:`lr_multiplier`)."""

LOGGED = {"rewards/margins": "margin", "rewards/accuracies": "accuracy", "grad_norm": "grad_norm"}
"""TRL's per-step log entries summarised in :attr:`TrainResult.log` (as ``<name>_first``/``<name>_last``)."""


def warmup_steps(warmup_ratio: float, total: int) -> int:
    """Warm-up steps of a call of ``total`` optimiser steps: ``ceil(ratio x total)``, at most ``total - 1``."""
    return max(0, min(math.ceil(float(warmup_ratio) * total), total - 1))


def lr_multiplier(step: int, *, schedule: str, warmup: int, total: int) -> float:
    """The share of the peak learning rate at optimiser step ``step`` (0-based) of ``total``; > 0 on every step.

    Warm-up step ``s < warmup`` runs at ``(s + 1) / (warmup + 1)``; then
    ``linear`` decays as ``(total - s) / (total - warmup)`` and ``cosine``
    as ``(1 + cos(pi (s - warmup) / (total - warmup))) / 2``.
    ``constant`` ignores ``warmup``.
    """
    if schedule not in SCHEDULERS:
        raise ValueError(f"unknown schedule {schedule!r}; one of {', '.join(SCHEDULERS)}")
    if schedule == "constant":
        return 1.0
    if step < warmup:
        return (step + 1) / (warmup + 1)
    if schedule == "constant_with_warmup":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    if schedule == "linear":
        return max(0.0, 1.0 - progress)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))


def summarise_log(history: list[dict[str, Any]]) -> dict[str, float]:
    """:attr:`TrainResult.log` from TRL's ``state.log_history`` (one entry per optimiser step)."""
    steps = [entry for entry in history if "loss" in entry]
    out: dict[str, float] = {}
    rates = [float(entry["learning_rate"]) for entry in steps if "learning_rate" in entry]
    if rates:
        out["lr_first"], out["lr_max"] = rates[0], max(rates)
    for key, name in LOGGED.items():
        values = [float(entry[key]) for entry in steps if key in entry]
        if values:
            out[f"{name}_first"], out[f"{name}_last"] = values[0], values[-1]
    return out


def parse_loss_types(text: str) -> list[str]:
    """``"sigmoid,sft"`` -> ``["sigmoid", "sft"]``; UsageError naming an unknown type."""
    types = [t.strip() for t in str(text).split(",") if t.strip()]
    if not types:
        raise UsageError("option 'loss_type' of trainer 'trl' is empty; e.g. loss_type=sigmoid")
    unknown = [t for t in types if t not in LOSS_TYPES]
    if unknown:
        raise UsageError(f"option 'loss_type' of trainer 'trl': unknown loss type {unknown[0]!r}; "
                         f"TRL's are {', '.join(LOSS_TYPES)}")
    return types


class TRLDPOTrainer(Trainer):
    name = "trl"
    description = "TRL's DPOTrainer (every TRL loss type) on the precomputed reference log-probs; hf testbed only"
    options = (
        Option("beta", float, 0.1, "DPO beta (for ipo: its tau)", **_POSITIVE),
        Option("lr", float, 5e-7, "peak learning rate (the paper's 5e-7 on Llama-3-8B)", **_POSITIVE),
        Option("epochs", float, 1.0, "passes over the pairs per call (used when steps is 0)", min=0.0),
        Option("steps", int, 0, "exact number of optimiser steps per call; 0 = use epochs", min=0),
        Option("batch_size", int, 8, "pairs per device per forward", min=1),
        Option("grad_accum", int, 16, "gradient accumulation steps (batch_size x grad_accum = effective batch)", min=1),
        Option("loss_type", str, "sigmoid", "a TRL loss type, or a comma-separated list of them (see loss_weights)"),
        Option("loss_weights", tuple, None, "weights of a loss_type list, e.g. 0.8,0.2,1; unset = all 1"),
        Option("label_smoothing", float, 0.0, "label-flip rate for robust, epsilon for exo_pair", min=0.0, max=0.5,
               max_inclusive=False),
        Option("f_divergence_type", str, "reverse_kl", "f-DPO divergence (reverse_kl is standard DPO)",
               choices=("reverse_kl", "forward_kl", "js_divergence", "alpha_divergence")),
        Option("lr_scheduler", str, "linear", "learning-rate schedule (no step ever runs at learning rate 0)",
               choices=SCHEDULERS),
        Option("warmup_ratio", float, 0.1, "share of the steps spent warming up the learning rate (the first "
               "warm-up step already runs at peak/(warm-up steps + 1))", min=0.0, max=1.0, max_inclusive=False),
        Option("weight_decay", float, 0.0, "AdamW weight decay", min=0.0),
        Option("max_grad_norm", float, 1.0, "gradient clipping norm; 0 = off", min=0.0),
        Option("max_length", int, 0, "drop pairs whose prompt + longer response exceeds this many tokens; 0 = keep all",
               min=0),
        Option("precision", str, "fp32", "mixed precision of the training step", choices=("fp32", "bf16", "fp16")),
        Option("gradient_checkpointing", bool, False, "trade compute for memory in the policy's forward"),
    )

    @property
    def loss_types(self) -> list[str]:
        return parse_loss_types(self.settings["loss_type"])

    def __init__(self, settings=None):
        super().__init__(settings)
        check_parallelism()
        types = self.loss_types  # validate early: a typo is a UsageError before any model loads
        weights = self.settings["loss_weights"]
        if weights is not None and len(weights) != len(types):
            raise UsageError(f"option 'loss_weights' of trainer 'trl' has {len(weights)} weights for "
                             f"{len(types)} loss types ({','.join(types)})")
        if "exo_pair" in types and self.settings["label_smoothing"] == 0:
            raise UsageError("trainer 'trl': loss_type exo_pair needs label_smoothing > 0 (the EXO paper uses 1e-3)")

    def train(self, *, policy, data: PreferenceData, rng: np.random.Generator) -> TrainResult:
        for attribute in ("model", "tokenizer", "prompt_ids", "clone"):
            if not hasattr(policy, attribute):
                raise UsageError(f"trainer 'trl' trains transformers policies (the hf testbed's), "
                                 f"not {type(policy).__name__}")
        seed = int(rng.integers(0, 2**31 - 1))
        model = policy.clone()
        dataset_rows = preference_rows(model, data, max_length=int(self.settings["max_length"]))
        if not dataset_rows["prompt_ids"]:
            return TrainResult(policy=model, steps=0, epochs=0.0, loss_first=0.0, loss_last=0.0)
        with _restored_global_rngs():
            trainer = build_trainer(model, dataset_rows, self.settings, seed=seed)
            try:
                session = tracking.active()
                if session is not None:  # --report-to: TRL's per-step log to the run's tracker
                    trainer.add_callback(_tracking_callback(session))
                trainer.train()
                history = list(trainer.state.log_history)
                steps, epochs = int(trainer.state.global_step), float(trainer.state.epoch or 0.0)
            finally:  # also after a failure: with LoRA the model is shared with every other policy
                release(trainer, model)
        losses = [entry["loss"] for entry in history if "loss" in entry]
        log = summarise_log(history)
        return TrainResult(
            policy=model,
            steps=steps,
            epochs=epochs,
            loss_first=float(losses[0]) if losses else 0.0,
            loss_last=float(losses[-1]) if losses else 0.0,
            log=log,
        )


#: accelerate's launch variables for the sharded trainers the harness refuses, by name.
SHARDED_LAUNCHES = {"ACCELERATE_USE_FSDP": "FSDP (--use_fsdp)", "ACCELERATE_USE_DEEPSPEED": "DeepSpeed (--use_deepspeed)"}


def check_parallelism(environ=None) -> None:
    """UsageError (exit 2) under an FSDP or DeepSpeed launch (see the module docstring)."""
    import os

    env = os.environ if environ is None else environ
    for variable, name in SHARDED_LAUNCHES.items():
        if str(env.get(variable, "")).strip().lower() in ("1", "true", "yes", "y", "on"):  # accelerate's truth
            raise UsageError(
                f"trainer 'trl' under {name}: not supported yet. FSDP and DeepSpeed shard the policy's weights "
                "across the processes, while the harness's main process evaluates the trained policy alone; that "
                "combination has not been made to work or verified on GPUs. Launch data-parallel instead: "
                "accelerate launch --multi_gpu --num_processes K -m harness run ... (docs/real-models/processes.md)")


def preference_rows(policy, data: PreferenceData, *, max_length: int = 0) -> dict[str, list]:
    """The columns of TRL's tokenized preference dataset, from :class:`PreferenceData` and the policy's prompt table.

    ``chosen_ids``/``rejected_ids`` are the scored response tokens (EOS
    included when the response has one), so TRL's log-probs cover exactly
    the tokens whose reference log-probs ``data`` carries.
    """
    prompt_ids = policy.prompt_ids(data.prompts)
    rows: dict[str, list] = {k: [] for k in ("prompt_ids", "chosen_ids", "rejected_ids",
                                             "ref_chosen_logps", "ref_rejected_logps")}
    dropped = 0
    for k in range(len(data)):
        chosen = [int(t) for t in data.chosen[k, : int(data.chosen_lengths[k])]]
        rejected = [int(t) for t in data.rejected[k, : int(data.rejected_lengths[k])]]
        if max_length > 0 and len(prompt_ids[k]) + max(len(chosen), len(rejected)) > max_length:
            dropped += 1
            continue
        rows["prompt_ids"].append(list(prompt_ids[k]))
        rows["chosen_ids"].append(chosen)
        rows["rejected_ids"].append(rejected)
        rows["ref_chosen_logps"].append(float(data.ref_chosen_logps[k]))
        rows["ref_rejected_logps"].append(float(data.ref_rejected_logps[k]))
    if dropped:
        warnings.warn(f"trainer 'trl' dropped {dropped} of {len(data)} pairs longer than max_length={max_length} "
                      "tokens (truncating them would break the precomputed reference log-probs)", stacklevel=2)
    return rows


def _trainer_class():
    from trl import DPOTrainer

    class PrecomputedRefDPOTrainer(DPOTrainer):
        """DPOTrainer that takes tokenized data and reference log-probs as given (see the module docstring)."""

        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            if {"prompt_ids", "chosen_ids", "rejected_ids"} <= set(dataset.column_names):
                return dataset
            return super()._prepare_dataset(dataset, processing_class, args, dataset_name)

        def _precompute_ref_logps(self, dataset, name, batch_size):
            if {"ref_chosen_logps", "ref_rejected_logps"} <= set(dataset.column_names):
                return dataset
            return super()._precompute_ref_logps(dataset, name, batch_size)

        def create_scheduler(self, num_training_steps, optimizer=None):
            """The schedule of :func:`lr_multiplier` instead of Hugging Face's (whose warm-up starts at 0)."""
            if self.lr_scheduler is None:
                from torch.optim.lr_scheduler import LambdaLR

                schedule = self.args.lr_scheduler_type
                schedule = getattr(schedule, "value", schedule)
                total = int(num_training_steps)
                warmup = warmup_steps(self._pairsel_warmup_ratio, total)
                self.lr_scheduler = LambdaLR(
                    optimizer if optimizer is not None else self.optimizer,
                    lambda step: lr_multiplier(step, schedule=schedule, warmup=warmup, total=total),
                )
                self._created_lr_scheduler = True
            return self.lr_scheduler

    return PrecomputedRefDPOTrainer


def _tracking_callback(session):
    """A transformers callback that hands each optimiser step's log entry to ``session``
    (:meth:`harness.tracking.Tracking.log_train_step`); the main process's only."""
    from transformers import TrainerCallback

    class ForwardToTracker(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs and state.is_world_process_zero:  # a step's entry, not the closing summary
                session.log_train_step(logs)

    return ForwardToTracker()


def dpo_config(settings: dict[str, Any], *, output_dir: str, seed: int, use_cpu: bool, **overrides: Any):
    """The ``DPOConfig`` for ``settings`` (precomputed reference, no saving, no reporting, logging every step)."""
    from trl import DPOConfig

    types = parse_loss_types(settings["loss_type"])
    precision = settings["precision"]
    values: dict[str, Any] = dict(
        output_dir=output_dir,
        beta=float(settings["beta"]),
        learning_rate=float(settings["lr"]),
        num_train_epochs=float(settings["epochs"]),
        max_steps=int(settings["steps"]) if int(settings["steps"]) > 0 else -1,
        per_device_train_batch_size=int(settings["batch_size"]),
        gradient_accumulation_steps=int(settings["grad_accum"]),
        loss_type=types,
        loss_weights=list(settings["loss_weights"]) if settings["loss_weights"] is not None else None,
        label_smoothing=float(settings["label_smoothing"]),
        f_divergence_type=settings["f_divergence_type"],
        lr_scheduler_type=settings["lr_scheduler"],
        warmup_steps=0,  # the warm-up is lr_multiplier's (build_trainer hands it the ratio)
        weight_decay=float(settings["weight_decay"]),
        max_grad_norm=float(settings["max_grad_norm"]),
        max_length=None,
        precompute_ref_log_probs=True,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=use_cpu,
        seed=seed,
        data_seed=seed,
        logging_steps=1,
        save_strategy="no",
        report_to="none",  # tracking forwards the per-step log itself (_tracking_callback)
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    import dataclasses

    fields = {f.name for f in dataclasses.fields(DPOConfig)}
    # transformers >= 5.18 renamed gradient_checkpointing to activation_checkpointing (the old name warns)
    key = "activation_checkpointing" if "activation_checkpointing" in fields else "gradient_checkpointing"
    values[key] = bool(settings["gradient_checkpointing"])
    values.update(overrides)
    return DPOConfig(**values)


def build_trainer(policy, rows: dict[str, list], settings: dict[str, Any], *, seed: int, **config_overrides: Any):
    """The TRL trainer for ``policy`` (trained in place) on ``rows`` (see :func:`preference_rows`), not yet run.

    Exposed for tests and for callers that want TRL's per-step log
    (``trainer.state.log_history``); :meth:`TRLDPOTrainer.train` is the usual entry.
    """
    import tempfile

    import datasets

    datasets.utils.logging.disable_progress_bar()
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    dataset = datasets.Dataset.from_dict(
        rows,
        features=datasets.Features({
            "prompt_ids": datasets.List(datasets.Value("int64")),
            "chosen_ids": datasets.List(datasets.Value("int64")),
            "rejected_ids": datasets.List(datasets.Value("int64")),
            "ref_chosen_logps": datasets.Value("float64"),
            "ref_rejected_logps": datasets.Value("float64"),
        }),
    )
    output_dir = tempfile.mkdtemp(prefix="pairsel-trl-")
    config = dpo_config(settings, output_dir=output_dir, seed=seed, use_cpu=policy.device.type == "cpu",
                        **config_overrides)
    model = lora.unwrap(policy.model)  # with LoRA: the policy's adapter active and alone trainable
    trainer = _trainer_class()(model=model, ref_model=None, args=config, train_dataset=dataset,
                               processing_class=policy.tokenizer)
    trainer._pairsel_warmup_ratio = float(settings["warmup_ratio"])
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    for callback in (PrinterCallback, ProgressCallback):  # stdout: only piped output (docs/internals/architecture.md)
        trainer.remove_callback(callback)
    if trainer.ref_model is not None:  # the whole point: no reference model in memory
        raise RuntimeError("TRL built a reference model although the reference log-probs were precomputed")
    trainer._pairsel_output_dir = output_dir
    return trainer


def release(trainer, policy) -> None:
    """After training: the policy back in eval mode with its own forward, TRL's temporary directory removed."""
    import shutil

    from plugins._hf.policy import strip_patched_forward

    strip_patched_forward(lora.unwrap(policy.model))
    policy.model.eval()  # with LoRA the PEFT model around it too: sampling and evaluation run without dropout
    shutil.rmtree(getattr(trainer, "_pairsel_output_dir", ""), ignore_errors=True)
    trainer.model = trainer.model_wrapped = None
    trainer.optimizer = trainer.lr_scheduler = None


@contextmanager
def _restored_global_rngs():
    """Leave Python's, numpy's and torch's global RNG states as they were (TRL reseeds them)."""
    import random

    import torch

    python_state, numpy_state = random.getstate(), np.random.get_state()
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        try:
            yield
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)


@hookimpl
def register_trainers(register):
    register(TRLDPOTrainer)
