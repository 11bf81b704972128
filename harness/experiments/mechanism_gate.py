"""The verdict of a mechanism gate over world seeds (the measurement: plugins/testbeds/synthetic/gate.py).

A gate asks whether a label's value depends on the policy's state. Per world
seed it has two figures: the *effect* (how much more gold a batch of labels on
the state's own samples adds than one on pi_0's samples, averaged over an early
and a late state) and the *interaction* (that difference at the late state
minus at the early one). The gate passes when the paired-t 1 − :data:`ALPHA`
interval of the effect lies above 0 **and** the interval of the interaction
excludes 0 (either sign). The sign-flip p-value of each
(:func:`harness.experiments.statistics.sign_flip_p`) is reported beside it as
the distribution-free check; it does not enter the rule, which was
pre-registered on the intervals (docs/usage/state-dependent-world.md#the-mechanism-gate).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from harness.experiments.statistics import sign_flip_p, t_test

ALPHA = 0.05
"""Both intervals are 1 − ALPHA (95 %)."""
RULE = "the effect's interval lies above 0 and the interaction's interval excludes 0"


def verdict(results: Sequence[Any], *, alpha: float = ALPHA) -> dict[str, Any]:
    """The gate's decision over seeds: intervals and sign-flip p of the effect and the interaction.

    ``results`` are per-seed figures with ``effect`` and ``interaction``, as mappings or attributes.

    ``passed`` is True only when the effect's interval lies above 0 and the
    interaction's excludes 0; an undefined interval (fewer than two seeds, or no
    spread) never passes.
    """
    def figure(key: str) -> list[float]:
        return [float(r[key] if isinstance(r, Mapping) else getattr(r, key)) for r in results]

    out: dict[str, Any] = {"seeds": len(results), "alpha": alpha, "rule": RULE}
    for key in ("effect", "interaction"):
        values = figure(key)
        test = t_test(values, alpha=alpha)
        out[key] = {"mean": test["mean"], "ci_low": test["ci_low"], "ci_high": test["ci_high"], "p": test["p"],
                    "sign_flip_p": sign_flip_p(values)}
    effect, interaction = out["effect"], out["interaction"]
    effect_above = effect["ci_low"] is not None and effect["ci_low"] > 0
    interaction_excludes = interaction["ci_low"] is not None and (
        interaction["ci_low"] > 0 or interaction["ci_high"] < 0)
    out.update(effect_above_zero=effect_above, interaction_excludes_zero=interaction_excludes,
               passed=bool(effect_above and interaction_excludes))
    return out


def differenced(on: Sequence[Mapping[str, Any]], off: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per seed, the mechanism's own share: the gate's figures in a world minus those in the same world with the
    mechanism switched off (attempt 2 of the staircase gate: the bigram world has an on-policy effect of its own).

    ``on`` and ``off`` hold one row per seed (``seed``, ``effect``, ``interaction``); ValueError unless they
    cover the same seeds in the same order.
    """
    if [int(r["seed"]) for r in on] != [int(r["seed"]) for r in off]:
        raise ValueError("the two gates must cover the same seeds in the same order")
    return [{"seed": int(a["seed"]), "effect": float(a["effect"]) - float(b["effect"]),
             "interaction": float(a["interaction"]) - float(b["interaction"])} for a, b in zip(on, off)]
