"""Fixed budget schedules: split the total gold labels over K iterations by fixed weights.

* ``constant``: equal shares (1:1:...:1).
* ``increase``: shares growing linearly, 1:2:...:K (1:2:3 for 3 iterations).
* ``decrease``: shares shrinking linearly, K:...:2:1 (3:2:1 for 3 iterations).
* ``custom``: the shares given by ``-o weights=w1,w2,...,wK`` (exactly K
  positive numbers, e.g. ``weights=1,1,2``).

Every schedule rounds with :func:`harness.budget.split_by_weights` (largest remainder), so the
labels add up to the total exactly. They ignore the history: the plan is the
same before every iteration. (Yang et al. 2024, Table 2, 30k labels over three
iterations: increase 5k/10k/15k, constant 10k/10k/10k, decrease 15k/10k/5k.)

On the default synthetic testbed these schedules could not be told apart in
any of 12 designs (docs/internals/synthetic-testbed.md#budget-schedules-in-the-prototypes).
"""

from __future__ import annotations

from collections.abc import Sequence

from harness import hookimpl
from harness.budget import split_by_weights
from harness.errors import UsageError
from harness.interfaces import Allocator, IterationRecord, Option


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
