"""The guard against an iteration that trained nothing.

A trainer returns pi_i as a clone of pi_{i-1} (:class:`harness.interfaces.Trainer`),
so after every training step both policies exist and the loop can ask the
cheapest question that catches a silently wasted iteration: did any trainable
parameter change at all? :func:`compare_parameters` answers it bit for bit
over the parameters that require gradients (``Policy.parameters()``), for any
trainer, built-in or third-party.

When nothing changed although there were pairs to train on, the run stops
as failed with :func:`static_policy_message`, which names the likely causes
and the options that fix them; ``harness run --allow-static-policy`` records
the same message as a warning on the iteration row instead. An iteration
with no trainable pairs (no labels bought, or only ties) is recorded, never
failed: there was nothing to learn.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from harness.errors import HarnessError


class StaticPolicyError(HarnessError):
    """A trainer returned a policy whose trainable parameters equal its input's, bit for bit."""


@dataclass(frozen=True)
class ParameterChange:
    """How many trainable parameter tensors of pi_i differ from pi_{i-1}'s, out of how many."""

    changed: int
    total: int

    @property
    def static(self) -> bool:
        return self.changed == 0


def _trainable(policy: Any) -> list[Any] | None:
    """The policy's parameters that require gradients, or None when it exposes no torch parameters.

    A policy whose trainable weights do not show as ``requires_grad`` parameters (LoRA adapters on a shared model,
    where that flag follows the active adapter) says which they are with ``trainable_weights()``.
    """
    weights = getattr(policy, "trainable_weights", None)
    if callable(weights):
        return list(weights())
    parameters = getattr(policy, "parameters", None)
    if not callable(parameters):
        return None
    try:
        found = list(parameters())
    except Exception:  # noqa: BLE001 - a policy without parameters() support is simply not checked
        return None
    if not all(hasattr(p, "requires_grad") and hasattr(p, "detach") for p in found):
        return None
    return [p for p in found if p.requires_grad]


def compare_parameters(before: Any, after: Any) -> ParameterChange | None:
    """Compare the trainable parameters of ``after`` with ``before``'s, bit for bit.

    None when either policy exposes no torch parameters (the check is then
    skipped, not failed). The same object on both sides counts as unchanged:
    a trainer must return a trained clone. Parameter lists of different length
    or shape (e.g. an adapter added by training) count as changed.
    """
    old, new = _trainable(before), _trainable(after)
    if old is None or new is None:
        return None
    if after is before:
        return ParameterChange(0, len(new))
    if len(old) != len(new):
        return ParameterChange(max(len(old), len(new)), max(len(old), len(new)))
    import torch

    changed = 0
    with torch.no_grad():
        for a, b in zip(old, new):
            a, b = a.detach(), b.detach()
            if a.shape != b.shape or a.dtype != b.dtype:
                changed += 1
            elif a.device != b.device:
                changed += int(not torch.equal(a.cpu(), b.cpu()))
            else:
                changed += int(not torch.equal(a, b))
    return ParameterChange(changed, len(new))


def static_policy_message(*, iteration: int, trainer: str, pairs: int, steps: int, log: dict[str, Any],
                          change: ParameterChange, same_object: bool) -> str:
    """Why pi_{iteration} may equal pi_{iteration-1}, and what to pass instead."""
    facts = [f"{pairs} pairs", f"{steps} optimiser step{'s' if steps != 1 else ''}"]
    if "lr_first" in log:
        facts.append(f"first-step learning rate {float(log['lr_first']):.3g}")
    if "lr_max" in log:
        facts.append(f"largest learning rate {float(log['lr_max']):.3g}")
    what = ("returned the policy it was given" if same_object else
            f"returned a policy whose {change.total} trainable parameter tensors all equal pi_{iteration - 1}'s "
            "bit for bit")
    if change.total == 0:
        what = "returned a policy with no trainable parameters (every parameter has requires_grad=False)"
    causes = []
    if steps == 0:
        causes.append("no optimiser step ran: raise -o trainer.steps=N or -o trainer.epochs=E")
    else:
        causes.append("too few steps for the warm-up or the batch (batch_size x grad_accum larger than the pairs): "
                      "set -o trainer.steps=N, or lower -o trainer.grad_accum / -o trainer.warmup_ratio")
        causes.append("a learning rate too small to move the weights: raise -o trainer.lr")
    causes.append("frozen parameters (requires_grad=False) or a trainer that does not return its trained clone")
    return (
        f"iteration {iteration}: trainer {trainer!r} {what} ({', '.join(facts)}), so the iteration trained nothing "
        f"and every later number would be pi_{iteration - 1}'s. Likely causes: " + "; ".join(causes)
        + ". Pass --allow-static-policy to record this as a warning and go on."
    )
