"""The verdict on one claim: a paired difference A − B over seeds, its tests, and what they say.

A study (:mod:`harness.experiments.study`) runs the two cells of each claim on
the same seeds and hands the per-seed metric values here.
:func:`claim_statistics` pairs them by ``(seed, world_seed)`` and computes the
Student-t test and interval, the exact sign-flip p and, for claims of "no
difference" or "no better / no worse", the equivalence or non-inferiority
test with the plan's margin (:mod:`harness.experiments.statistics`).
:func:`adjust_family` then adjusts the claims' p-values over their family
(Holm by default) and sets each verdict by :data:`VERDICT_RULE`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from harness.experiments import statistics

ALPHA = 0.05
#: What a claim says of A − B: a direction, "no difference" (``none``), or "no better" / "no worse".
DIRECTIONS = ("a > b", "a < b", "none", "a <= b", "a >= b")
#: Directions tested against a margin: they need the plan's margin for their metric.
MARGIN_DIRECTIONS = ("none", "a <= b", "a >= b")

VERDICT_RULE = (
    "Each claim is tested on the paired differences Δ = A − B over the (seed, world_seed) pairs both sides ran, "
    "and its p-value is adjusted over the claim's family (Holm by default; the plan names the families and the "
    "correction). **Direction claims** (`a > b`, `a < b`): two-sided one-sample t-test of mean Δ = 0; "
    "**reproduced** when the adjusted p < 0.05 and mean Δ has the source's sign, **reversed** when the adjusted "
    "p < 0.05 with the other sign, **not significant** otherwise; a claim that is the harness's own question (plan "
    "key `kind = \"question\"`) **holds** instead of being reproduced, and one whose sides see unequal "
    "information (`kind = \"unequal\"`) **holds (unequal information)**. **No difference** (`none`): two one-sided tests "
    "(TOST) against the plan's equivalence margin ±m for the metric; **equivalent within ±m** when the adjusted "
    "TOST p < 0.05, **different** when not and the 95% interval excludes 0, **inconclusive** otherwise; the "
    "*smallest equivalence margin* is where TOST would succeed at this n and spread. **No better / no worse** "
    "(`a <= b`, `a >= b`): one one-sided test against the margin; **no better (within m)** / **no worse (within "
    "m)** when the adjusted p < 0.05, **better** / **worse** when not and the 95% interval excludes 0 that way, "
    "**inconclusive** otherwise. At least 2 pairs with Δ = 0 in every one (A and B ended exactly alike): **no "
    "difference in any pair**. Fewer than 2 pairs (or the same non-zero Δ in every pair): **too few pairs**. Beside every t-based p, "
    "the exact sign-flip permutation p (all 2^n sign patterns up to n = 20) checks it without assuming normality; "
    "a verdict whose sign-flip p disagrees at 0.05 is marked †. *Detectable Δ* is the 95% interval's half-width "
    "t₀.₉₇₅,ₙ₋₁·sd/√n; *MDE (80% power)* is (t₀.₉₇₅,ₙ₋₁ + t₀.₈,ₙ₋₁)·sd/√n."
)


COMPARISON_RULE = (
    "A claim with `compare` tests its plain claim's contrast (`of`) compared fairly, with the same tests and its own "
    "family. **Matched KL:** on each seed the common KL k* is the smaller of the two arms' final KL(π‖π_ref); each "
    "arm's metric at k* is interpolated linearly along that seed's path of (KL, metric) points from π_0 (iteration 0, "
    "its recorded KL) to the arm's last iteration, at the first crossing of k* when the path is not monotone in KL; "
    "a seed where an arm's path never reaches k* is listed and left out of the test, never dropped silently. The "
    "design-level k̄ (the smaller of the two arms' mean final KL, one value for every seed) is described, not tested. "
    "**Matched steps:** both arms are re-run with the trainer's `steps` fixed (the same optimiser steps in every "
    "iteration) in a derived grid `GRID@stepsS`, and compared as recorded. **Tuned:** each arm is run at every point "
    "of the claim's tuning grid (e.g. lr × β, 3 × 3) on tuning seeds that no verdict uses (`GRID@tune`); the point "
    "with the highest mean final gold reward is chosen for that arm alone (ties: the first point), and only then "
    "are the chosen points run on the confirmation seeds (`GRID@tuned`) and compared as recorded."
)


def _pair_order(key: Any) -> tuple:
    return tuple(-1 if v is None else v for v in (key if isinstance(key, tuple) else (key,)))


def claim_statistics(
    a: Mapping[Any, float], b: Mapping[Any, float], direction: str, *, margin: float | None = None,
    alpha: float = ALPHA,
) -> dict[str, Any]:
    """Every test of one claim on the keys (``(seed, world_seed)``) both sides have; its verdict unadjusted.

    Returns ``n, mean, std, ci_low, ci_high, excludes_zero, pairs, half_width,
    mde80`` (the t interval and detectable differences), ``p_t`` (two-sided
    t), ``p_sign_flip``, ``p`` (the claim's own test: ``p_t`` for a direction,
    TOST for ``none``, the one-sided margin test for ``a <= b`` / ``a >= b``),
    ``margin`` and, for ``none``, ``smallest_margin``; and ``verdict`` as if
    the claim were alone in its family (:func:`adjust_family` sets the final one).
    """
    from scipy import stats as scipy_stats

    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}; got {direction!r}")
    if direction in MARGIN_DIRECTIONS and not (margin is not None and margin > 0):
        raise ValueError(f"a claim with direction {direction!r} needs a margin > 0; got {margin!r}")
    common = sorted(set(a) & set(b), key=_pair_order)
    diffs = [float(a[k]) - float(b[k]) for k in common]
    t = statistics.t_test(diffs, alpha=alpha)
    out: dict[str, Any] = {
        "n": t["n"], "mean": t["mean"], "std": t["std"], "ci_low": t["ci_low"], "ci_high": t["ci_high"],
        "excludes_zero": None if t["ci_low"] is None else bool(t["ci_low"] > 0.0 or t["ci_high"] < 0.0),
        "pairs": [list(k) if isinstance(k, tuple) else k for k in common],
        "half_width": t["half_width"], "mde80": None, "p_t": t["p"], "p_sign_flip": statistics.sign_flip_p(diffs),
        "p": t["p"], "margin": margin if direction in MARGIN_DIRECTIONS else None, "smallest_margin": None,
        "direction": direction,
    }
    if t["se"] is not None:  # the true difference this design detects 80% of the time
        out["mde80"] = t["half_width"] + float(scipy_stats.t.ppf(0.8, t["n"] - 1)) * t["se"]
    if direction == "none":
        equivalence = statistics.tost(diffs, margin, alpha=alpha)
        out.update(p=equivalence["p"], smallest_margin=equivalence["smallest_margin"])
    elif direction in ("a <= b", "a >= b"):
        out["p"] = statistics.non_inferiority(diffs, margin, direction, alpha=alpha)["p"]
    out["p_adjusted"] = out["p"]
    out["verdict"] = decide(out, alpha=alpha)
    return out


def decide(stats: Mapping[str, Any], *, alpha: float = ALPHA) -> str:
    """The verdict of one claim from its statistics and its adjusted p (:data:`VERDICT_RULE`)."""
    direction, p = stats["direction"], stats.get("p_adjusted")
    if p is None and (stats.get("n") or 0) >= 2 and stats.get("mean") == 0.0 and stats.get("std") == 0.0:
        return "no difference in any pair"
    if p is None or stats.get("mean") is None:
        return "too few pairs"
    mean = stats["mean"]
    if direction in ("a > b", "a < b"):
        if p >= alpha:
            return "not significant"
        agrees = mean > 0 if direction == "a > b" else mean < 0
        if not agrees:
            return "reversed"
        # only the source's own claim, on equal information, is reproduced (plan key ``kind``)
        return {"question": "holds", "unequal": "holds (unequal information)"}.get(stats.get("kind"), "reproduced")
    margin = f"{stats['margin']:g}"
    if p < alpha:
        return {"none": f"equivalent within ±{margin}", "a <= b": f"no better (within {margin})",
                "a >= b": f"no worse (within {margin})"}[direction]
    if stats.get("excludes_zero"):
        if direction == "none":
            return "different"
        if direction == "a <= b" and mean > 0:
            return "better"
        if direction == "a >= b" and mean < 0:
            return "worse"
    return "inconclusive"


def sign_flip_disagrees(stats: Mapping[str, Any], *, alpha: float = ALPHA) -> bool:
    """True when the t-based and the sign-flip test of mean Δ = 0 fall on different sides of ``alpha``
    (a direction claim's verdict then rests on the normal approximation: marked † in reports)."""
    p_t, p_flip = stats.get("p_t"), stats.get("p_sign_flip")
    if p_t is None or p_flip is None:
        return False
    return (p_t < alpha) != (p_flip < alpha)


def adjust_family(claim_stats: Sequence[dict[str, Any]], correction: str = "holm", *,
                  alpha: float = ALPHA) -> None:
    """Adjust the claims of one family in place: ``p_adjusted``, ``family_size``, ``correction``, ``verdict``.

    The family size counts the claims that have a p-value (claims with too
    few pairs take no share of the error rate).
    """
    adjust = statistics.CORRECTIONS[correction]
    adjusted = adjust([s["p"] for s in claim_stats])
    size = sum(1 for s in claim_stats if s["p"] is not None)
    for stats, p in zip(claim_stats, adjusted):
        stats.update(p_adjusted=p, family_size=size, correction=correction)
        stats["verdict"] = decide(stats, alpha=alpha)
        stats["sign_flip_disagrees"] = sign_flip_disagrees(stats, alpha=alpha)


def fmt_p(value: float | None) -> str:
    """A p-value as text: ``0.0123``, ``<0.0001``, or ``–``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return "<0.0001" if value < 1e-4 else f"{value:.4f}"
