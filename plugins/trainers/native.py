"""The ``native`` trainer: plain PyTorch DPO with the sigmoid loss.

    loss = -log sigmoid(beta * ((log pi(y_w) - ref_w) - (log pi(y_l) - ref_l)))

The reference log-probs come only from ``data.ref_chosen_logps`` /
``data.ref_rejected_logps`` (computed once at scoring time); no reference
model is ever run. Works with any :class:`harness.interfaces.Policy`: it uses
only ``clone``, ``parameters`` and ``sequence_logprobs``.

Training budget: ``steps`` > 0 runs exactly that many optimiser steps (cycling
through reshuffled epochs); ``steps`` = 0 runs ``epochs`` full passes
(``ceil(K / batch_size)`` steps each, the last batch of an epoch may be smaller).
Every call starts a fresh Adam optimiser on a clone of the input policy.

``loss_first`` is the loss of the first minibatch before any update and
``loss_last`` the loss of the last minibatch just before its update. When no
step runs (no pairs, or ``epochs`` = 0 with ``steps`` = 0) the clone is returned
untouched with ``steps = 0``, ``epochs = 0.0`` and both losses reported as 0.0
(not NaN), so records stay numeric. The learning rate is constant, so
:attr:`~harness.interfaces.TrainResult.log` reports it as both ``lr_first``
and ``lr_max``.

``xpo_alpha`` > 0 adds XPO's exploration term (Xie et al. 2024,
arXiv:2405.21046): alpha times the mean log pi_theta(y_ref) over the pairs of
a minibatch that hold a response sampled from pi_ref (``--selector xpo``
samples one per pair; selector contract 3). Minimising it lowers the
probability of the reference's own responses, pushing the policy to explore
beyond them. oat uses alpha = 5e-6. Pairs without sources are a UsageError.

With ``--report-to`` (:mod:`harness.tracking`) every step's loss goes to the
run's tracker (``train/loss``).

torch is imported inside :meth:`NativeDPOTrainer.train` only.
"""

from __future__ import annotations

import math

import numpy as np

from harness import hookimpl, tracking
from harness.errors import NonFiniteError, UsageError
from harness.interfaces import SAMPLING_SOURCES, PreferenceData, Trainer, TrainResult
from harness.options import Option
from harness.rng import torch_seed


class NativeDPOTrainer(Trainer):
    name = "native"
    description = "Plain PyTorch DPO (sigmoid loss) on precomputed reference log-probs, fresh Adam each call"
    options = (
        Option("beta", float, 1.0, "DPO inverse temperature beta", min=0.0, min_inclusive=False),
        Option("lr", float, 3e-3, "Adam learning rate (constant)", min=0.0, min_inclusive=False),
        Option("epochs", int, 8, "passes over the pairs per call (used when steps is 0)", min=0),
        Option("steps", int, 0, "exact number of optimiser steps per call; 0 = use epochs", min=0),
        Option("batch_size", int, 64, "pairs per optimiser step", min=1),
        Option("xpo_alpha", float, 0.0, "XPO (Xie et al. 2024): add alpha x mean log pi_theta of the pairs' pi_ref "
               "responses to the loss (--selector xpo samples them; 5e-6 in oat); 0 = plain DPO", min=0.0,
               omit_at_default=True),
    )

    @property
    def needs_sampling_sources(self) -> tuple[str, ...]:
        """``("reference",)`` with ``xpo_alpha`` > 0: the term reads the pairs' responses sampled from pi_ref."""
        return ("reference",) if float(self.settings["xpo_alpha"]) > 0 else ()

    def train(self, *, policy, data: PreferenceData, rng: np.random.Generator) -> TrainResult:
        import torch

        settings = self.settings
        beta = float(settings["beta"])
        batch_size = int(settings["batch_size"])
        steps_setting = int(settings["steps"])
        epochs_setting = int(settings["epochs"])

        model = policy.clone()
        n = len(data)
        generator = torch.Generator().manual_seed(torch_seed(rng))
        if steps_setting > 0:
            total_steps = steps_setting if n > 0 else 0
        else:
            total_steps = epochs_setting * math.ceil(n / batch_size) if n > 0 else 0
        if total_steps == 0:
            return TrainResult(policy=model, steps=0, epochs=0.0, loss_first=0.0, loss_last=0.0)

        def tensor(array, dtype):
            return torch.as_tensor(np.ascontiguousarray(array)).to(dtype)

        prompts = tensor(data.prompts, torch.long)
        chosen = tensor(data.chosen, torch.long)
        rejected = tensor(data.rejected, torch.long)
        chosen_lengths = tensor(data.chosen_lengths, torch.long)
        rejected_lengths = tensor(data.rejected_lengths, torch.long)
        ref_margin = tensor(data.ref_chosen_logps, torch.float64) - tensor(data.ref_rejected_logps, torch.float64)
        alpha = float(settings["xpo_alpha"])
        explored = _reference_sides(data) if alpha > 0 else None
        same_width = chosen.shape[1] == rejected.shape[1]

        optimizer = torch.optim.Adam(list(model.parameters()), lr=float(settings["lr"]))

        def batch_loss(index):
            k = index.shape[0]
            if same_width:  # one forward over chosen and rejected together
                logps = model.sequence_logprobs(
                    torch.cat([prompts[index], prompts[index]]),
                    torch.cat([chosen[index], rejected[index]]),
                    torch.cat([chosen_lengths[index], rejected_lengths[index]]),
                )
                logp_chosen, logp_rejected = logps[:k], logps[k:]
            else:
                logp_chosen = model.sequence_logprobs(prompts[index], chosen[index], chosen_lengths[index])
                logp_rejected = model.sequence_logprobs(prompts[index], rejected[index], rejected_lengths[index])
            margin = (logp_chosen.double() - logp_rejected.double()) - ref_margin[index]
            loss = -torch.nn.functional.logsigmoid(beta * margin).mean()
            if explored is None:
                return loss
            chosen_side, rejected_side = explored[0][index], explored[1][index]
            with_reference = chosen_side | rejected_side
            if not bool(with_reference.any()):
                return loss
            # XPO's exploration term: alpha times the mean log pi_theta of the pairs' pi_ref responses
            logp_reference = torch.where(chosen_side, logp_chosen, logp_rejected).double()[with_reference]
            return loss + alpha * logp_reference.mean()

        steps = 0
        seen = 0
        loss_first = loss_last = 0.0
        session = tracking.active()  # --report-to: each step's loss to the run's tracker
        while steps < total_steps:
            order = torch.randperm(n, generator=generator)
            for start in range(0, n, batch_size):
                index = order[start : start + batch_size]
                loss = batch_loss(index)
                value = float(loss.detach())
                if not math.isfinite(value):  # stop before a NaN step poisons the weights
                    raise NonFiniteError(f"the DPO loss is {value} at training step {steps + 1} of {total_steps}")
                if steps == 0:
                    loss_first = value
                loss_last = value
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                if session is not None:
                    session.log_train_step({"loss": value, "learning_rate": float(optimizer.param_groups[0]["lr"])})
                steps += 1
                seen += int(index.shape[0])
                if steps >= total_steps:
                    break
        epochs = float(epochs_setting) if steps_setting == 0 else seen / n
        rate = float(optimizer.param_groups[0]["lr"])  # constant: every step ran at it
        return TrainResult(policy=model, steps=steps, epochs=epochs, loss_first=loss_first, loss_last=loss_last,
                           log={"lr_first": rate, "lr_max": rate})


def _reference_sides(data: PreferenceData):
    """Bool tensors: each pair's chosen / rejected response was sampled from pi_ref (selector contract 3).

    UsageError when the data carries no sources: the XPO term needs to know
    which responses came from pi_ref, which only a steering selector records.
    """
    import torch

    if data.chosen_sources is None or data.rejected_sources is None:
        raise UsageError("trainer option xpo_alpha needs pairs with a response sampled from pi_ref, but these "
                         "pairs carry no sampling sources: run it with a selector that samples from pi_ref "
                         "(--selector xpo), or leave xpo_alpha at 0")
    reference = SAMPLING_SOURCES.index("reference")
    return (torch.as_tensor(np.asarray(data.chosen_sources) == reference),
            torch.as_tensor(np.asarray(data.rejected_sources) == reference))


@hookimpl
def register_trainers(register):
    register(NativeDPOTrainer)
