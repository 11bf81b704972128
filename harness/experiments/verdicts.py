"""The verdict on one claim: a paired difference A − B over seeds, its interval, and what it says.

A study (:mod:`harness.experiments.study`) runs the two cells of each claim on
the same seeds and hands the per-seed metric values here:
:func:`paired_verdict` pairs them by ``(seed, world_seed)``, computes the
Student-t interval of the mean difference (:func:`leaderboard.stats.paired_interval`)
and reads the verdict off it (:data:`VERDICT_RULE`); :func:`paired_blocks`
does the same per consecutive block of seeds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

ALPHA = 0.05
DIRECTIONS = ("a > b", "a < b", "none")
VERDICT_RULE = (
    "Verdict per claim, from the paired differences Δ = A − B over the (seed, world_seed) pairs both "
    "sides ran: **reproduced** when the 95% Student-t interval of the mean Δ excludes 0 in the source's "
    "direction, **reversed** when it excludes 0 the other way, **not separable** otherwise. For a claim "
    "whose source reports no difference (direction `none`) the verdict is **not separable** (as the "
    "source reports) or **separated (a > b / a < b)**. Fewer than 2 pairs: **too few pairs**. "
    "*Detectable Δ* is the interval's half-width t₀.₉₇₅,ₙ₋₁·sd/√n: the smallest |mean Δ| that would "
    "have excluded 0 at this study's n and spread. *MDE (80% power)* is (t₀.₉₇₅,ₙ₋₁ + t₀.₈,ₙ₋₁)·sd/√n: "
    "the true difference this design would detect 80% of the time."
)


def paired_verdict(
    a: Mapping[Any, float], b: Mapping[Any, float], direction: str, *, alpha: float = ALPHA
) -> dict[str, Any]:
    """The paired difference A − B over the keys (``(seed, world_seed)``) both sides have, and its verdict.

    Returns :func:`leaderboard.stats.paired_interval`'s ``n, mean, std, ci_low, ci_high,
    excludes_zero`` plus ``pairs``, ``half_width`` (t_{1-alpha/2, n-1}·sd/sqrt(n), the detectable
    difference), ``mde80`` ((t_{1-alpha/2} + t_{0.8})·sd/sqrt(n)) and ``verdict`` (the rule is
    :data:`VERDICT_RULE`).
    """
    from leaderboard.stats import paired_interval, t_ppf

    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}; got {direction!r}")
    common = sorted(set(a) & set(b), key=lambda k: tuple(-1 if v is None else v for v in (k if isinstance(k, tuple) else (k,))))
    diffs = [float(a[k]) - float(b[k]) for k in common]
    out = paired_interval(diffs, 1.0 - alpha)
    out["pairs"] = [list(k) if isinstance(k, tuple) else k for k in common]
    out["half_width"] = out["mde80"] = None
    if out["n"] >= 2 and out["std"] is not None:
        n = out["n"]
        se = out["std"] / math.sqrt(n)
        out["half_width"] = t_ppf(1.0 - alpha / 2.0, n - 1) * se
        out["mde80"] = (t_ppf(1.0 - alpha / 2.0, n - 1) + t_ppf(0.8, n - 1)) * se
    out["verdict"] = verdict(out.get("ci_low"), out.get("ci_high"), direction)
    return out


def seed_blocks(seeds: Sequence[int], size: int) -> list[list[int]]:
    """The sorted ``seeds`` cut into consecutive blocks of ``size`` (0-9, 10-19, ...); the last may be shorter."""
    if size < 1:
        raise ValueError(f"block size must be >= 1; got {size}")
    ordered = sorted(set(seeds))
    return [ordered[i:i + size] for i in range(0, len(ordered), size)]


def paired_blocks(
    a: Mapping[Any, float], b: Mapping[Any, float], direction: str, seeds: Sequence[int], size: int,
    *, alpha: float = ALPHA,
) -> list[dict[str, Any]]:
    """:func:`paired_verdict` once per block of ``size`` consecutive seeds of the sorted ``seeds``.

    ``seeds`` is the design's seed list (the claim's grids'), not the seeds that happen to have finished,
    so a missing run shrinks its own block's n and never shifts the other blocks. Keys are as for
    :func:`paired_verdict` (``(seed, world_seed)``, blocked by the seed). Each result also holds
    ``seeds``, the block's seeds.
    """
    out = []
    for block in seed_blocks(seeds, size):
        members = set(block)
        a_block = {k: v for k, v in a.items() if _seed_of(k) in members}
        b_block = {k: v for k, v in b.items() if _seed_of(k) in members}
        out.append({"seeds": block, **paired_verdict(a_block, b_block, direction, alpha=alpha)})
    return out


def _seed_of(key: Any) -> Any:
    return key[0] if isinstance(key, tuple) else key


def verdict(ci_low: float | None, ci_high: float | None, direction: str) -> str:
    """The verdict of one interval (see :data:`VERDICT_RULE`)."""
    if ci_low is None or ci_high is None:
        return "too few pairs"
    above, below = ci_low > 0.0, ci_high < 0.0
    if direction == "none":
        return "separated (a > b)" if above else "separated (a < b)" if below else "not separable"
    agrees, disagrees = (above, below) if direction == "a > b" else (below, above)
    return "reproduced" if agrees else "reversed" if disagrees else "not separable"
