"""Fixed budget schedules: split the total gold labels over K iterations by fixed weights.

* ``constant``: equal shares (1:1:...:1).
* ``increase``: shares growing linearly, 1:2:...:K (1:2:3 for 3 iterations).
* ``decrease``: shares shrinking linearly, K:...:2:1 (3:2:1 for 3 iterations).
* ``custom``: the shares given by ``-o weights=w1,w2,...,wK`` (exactly K
  positive numbers, e.g. ``weights=1,1,2``).

Every schedule rounds with :func:`split_by_weights` (largest remainder), so the
labels add up to the total exactly. They ignore the history: the plan is the
same before every iteration. (Yang et al. 2024, Table 2, 30k labels over three
iterations: increase 5k/10k/15k, constant 10k/10k/10k, decrease 15k/10k/5k.)

On the default synthetic testbed these schedules could not be told apart in
any of 12 designs (docs/internals/synthetic-testbed.md#budget-schedules-in-the-prototypes).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction

from harness import hookimpl
from harness.errors import UsageError
from harness.interfaces import Allocator, IterationRecord, Option


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


class _FixedSchedule(Allocator):
    """An allocator whose plan depends only on the total and the number of iterations."""

    def weights(self, iterations: int) -> list[float]:
        raise NotImplementedError

    def allocate(
        self, *, total_labels: int, iterations: int, history: Sequence[IterationRecord]
    ) -> list[int]:
        if iterations < 1:
            raise UsageError(f"a run needs at least one iteration, got {iterations}")
        return split_by_weights(total_labels, self.weights(iterations))


class Constant(_FixedSchedule):
    """The same number of labels in every iteration (1:1:...:1)."""

    name = "constant"
    description = "equal labels in every iteration (1:1:...:1, e.g. 10k/10k/10k of 30k)"

    def weights(self, iterations: int) -> list[float]:
        return [1.0] * iterations


class Increase(_FixedSchedule):
    """Labels growing linearly over the iterations: weights 1:2:...:K."""

    name = "increase"
    description = (
        "labels growing linearly, weights 1:2:...:K (1:2:3 for 3 iterations, e.g. 5k/10k/15k of 30k)"
    )

    def weights(self, iterations: int) -> list[float]:
        return [float(i) for i in range(1, iterations + 1)]


class Decrease(_FixedSchedule):
    """Labels shrinking linearly over the iterations: weights K:...:2:1."""

    name = "decrease"
    description = (
        "labels shrinking linearly, weights K:...:2:1 (3:2:1 for 3 iterations, e.g. 15k/10k/5k of 30k)"
    )

    def weights(self, iterations: int) -> list[float]:
        return [float(i) for i in range(iterations, 0, -1)]


class Custom(_FixedSchedule):
    """Labels split by user weights: ``-o weights=w1,...,wK``, exactly K positive numbers."""

    name = "custom"
    description = (
        "labels split by your weights, one positive number per iteration: -o weights=1,1,2"
    )
    options = (
        Option(
            "weights",
            tuple,
            None,
            help="one positive weight per iteration, e.g. 1,1,2 (also 1:1:2)",
            min=0,
            min_inclusive=False,
        ),
    )

    def __init__(self, settings=None):
        super().__init__(settings)
        if self.settings["weights"] is None:
            raise UsageError(
                "custom needs -o weights=...: one positive number per iteration, "
                "e.g. -o weights=1,1,2 for 3 iterations"
            )

    def weights(self, iterations: int) -> list[float]:
        weights = list(self.settings["weights"])
        if len(weights) != iterations:
            example = ",".join(["1"] * iterations)
            raise UsageError(
                f"custom allocator: weights={','.join(f'{w:g}' for w in weights)} has "
                f"{len(weights)} entries but the run has {iterations} iterations; pass exactly "
                f"{iterations}, e.g. -o weights={example}"
            )
        return weights


@hookimpl
def register_allocators(register):
    register(Constant)
    register(Increase)
    register(Decrease)
    register(Custom)
