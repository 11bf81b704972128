"""The annotation ledger and the arithmetic that sizes each iteration's pool.

The budget unit is one *gold label*: one pairwise preference from the gold
annotator costs 1 label. A selector may also spend labels on every prompt of
the pool before it selects (``Selector.labels_per_prompt``, 0 for the margin
selectors). The ledger refuses any charge that would take it past the budget,
so a run can never exceed what the user paid for.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from harness.errors import BudgetExceededError


@dataclass
class Ledger:
    """Gold labels charged per iteration against a fixed total."""

    budget: int
    charged: dict[int, int] = field(default_factory=dict)

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

    @property
    def prompt_labels(self) -> int:
        """Labels spent on the pool before selection."""
        return self.labels - self.pairs


def plan_pool(labels: int, keep: float, labels_per_prompt: int = 0) -> PoolPlan:
    """Size one iteration's pool.

    Each prompt costs ``labels_per_prompt`` labels up front and a share ``keep``
    of the prompts becomes a kept pair at one label each, so
    ``prompts = floor(labels / (labels_per_prompt + keep))`` and the pairs kept
    are the labels left: ``labels - prompts * labels_per_prompt``. For the
    margin selectors (0 labels per prompt) that is ``prompts = labels / keep``
    and ``pairs = labels``, as in DESIGN.md.
    """
    if labels < 0:
        raise ValueError("labels must be >= 0")
    if not 0 < keep <= 1:
        raise ValueError("keep must be in (0, 1]")
    prompts = math.floor(labels / (labels_per_prompt + keep) + 1e-9)
    pairs = labels - prompts * labels_per_prompt
    pairs = max(0, min(pairs, prompts))
    return PoolPlan(labels=prompts * labels_per_prompt + pairs, prompts=prompts, pairs=pairs)
