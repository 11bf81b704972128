"""The annotation ledger and the arithmetic that sizes each iteration's pool.

The budget unit is one *gold label*: one pairwise preference from the gold
annotator costs 1 label, and so does one pointwise gold score of one response
(a selector reading gold explicit scores pays N labels per prompt before it
selects). Proxy reward-model calls are counted separately and never charged.
The ledger refuses any charge that would take it past the budget, so a run
can never exceed what the user paid for.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction

from harness.errors import BudgetExceededError


@dataclass
class Ledger:
    """Gold labels charged per iteration against a fixed total, and proxy calls beside them."""

    budget: int
    charged: dict[int, int] = field(default_factory=dict)
    proxy_calls: dict[int, int] = field(default_factory=dict)

    def count_proxy(self, iteration: int, calls: int) -> None:
        """Record ``calls`` proxy scorer calls: reported with the run, not charged."""
        self.proxy_calls[iteration] = self.proxy_calls.get(iteration, 0) + int(calls)

    @property
    def spent(self) -> int:
        return sum(self.charged.values())

    @property
    def remaining(self) -> int:
        return self.budget - self.spent

    def charge(self, iteration: int, labels: int) -> None:
        """Charge ``labels`` to ``iteration``; raise, charging nothing, if over budget."""
        if labels < 0:
            raise ValueError(f"cannot charge a negative number of labels ({labels})")
        if labels > self.remaining:
            raise BudgetExceededError(
                f"iteration {iteration} asked for {labels} labels but only {self.remaining} "
                f"of {self.budget} remain"
            )
        self.charged[iteration] = self.charged.get(iteration, 0) + labels


@dataclass(frozen=True)
class PoolPlan:
    """How many prompts to draw and pairs to keep to spend ``labels`` labels."""

    labels: int
    prompts: int
    pairs: int
    labels_per_pair: int = 1

    @property
    def prompt_labels(self) -> int:
        """Labels spent on the pool before selection."""
        return self.labels - self.pairs * self.labels_per_pair


def plan_pool(labels: int, keep: float, labels_per_prompt: int = 0, labels_per_pair: int = 1) -> PoolPlan:
    """Size one iteration's pool.

    Every prompt in the pool costs ``labels_per_prompt`` labels up front
    (pointwise gold scores of its responses) and a share ``keep`` of the
    prompts becomes a kept pair at ``labels_per_pair`` each (1 for a pairwise
    gold label; 0 when the pair is labelled by the gold scores already bought).
    So ``prompts = floor(labels / (labels_per_prompt + keep * labels_per_pair))``.

    For the margin selectors (0 per prompt, 1 per pair) that is
    ``prompts = labels / keep`` and ``pairs = labels`` (docs/internals/definitions.md#budget-accounting).
    """
    if labels < 0:
        raise ValueError("labels must be >= 0")
    if not 0 < keep <= 1:
        raise ValueError("keep must be in (0, 1]")
    if labels_per_prompt < 0 or labels_per_pair < 0 or labels_per_prompt + labels_per_pair == 0:
        raise ValueError("a pool must cost something: labels_per_prompt + labels_per_pair > 0")
    prompts = math.floor(labels / (labels_per_prompt + keep * labels_per_pair) + 1e-9)
    if labels_per_pair:
        pairs = (labels - prompts * labels_per_prompt) // labels_per_pair
    else:
        pairs = math.floor(keep * prompts + 1e-9)
    pairs = max(0, min(pairs, prompts))
    return PoolPlan(
        labels=prompts * labels_per_prompt + pairs * labels_per_pair,
        prompts=prompts,
        pairs=pairs,
        labels_per_pair=labels_per_pair,
    )


def split_by_weights(total: int, weights: Sequence[float]) -> list[int]:
    """Split ``total`` labels into ``len(weights)`` integer shares proportional to ``weights``.

    Largest-remainder method: every share is first rounded down, then the labels
    left over (fewer than ``len(weights)``) go one each to the shares with the
    largest fractional parts, ties to the earlier iteration. The arithmetic is
    exact (fractions), so the shares are non-negative ints summing to ``total``
    exactly.

    :param total: labels to split, an int >= 0.
    :param weights: one positive finite number per iteration (at least one).
    :return: a list of ``len(weights)`` Python ints.
    :raises ValueError: for a negative total, no weights, or a weight that is not
        a positive finite number.
    """
    if isinstance(total, bool) or int(total) != total or total < 0:
        raise ValueError(f"total must be an integer >= 0, got {total!r}")
    total = int(total)
    if len(weights) == 0:
        raise ValueError("weights must hold one positive number per iteration; got none")
    for w in weights:
        if isinstance(w, bool) or not math.isfinite(w) or w <= 0:
            raise ValueError(f"every weight must be a positive finite number; got {list(weights)}")
    exact = [Fraction(w) for w in weights]
    weight_sum = sum(exact)
    shares = [total * w / weight_sum for w in exact]
    floors = [math.floor(s) for s in shares]
    left = total - sum(floors)  # 0 <= left < len(weights)
    # Largest fractional part first; sorted() is stable, so ties keep iteration order.
    by_remainder = sorted(range(len(shares)), key=lambda i: shares[i] - floors[i], reverse=True)
    for i in by_remainder[:left]:
        floors[i] += 1
    return [int(x) for x in floors]
