"""Adaptive allocators: each iteration's labels decided from what the run has observed so far.

* ``plateau``: spends the budget evenly over the iterations and stops buying
  once the labels stop teaching: when training on the last iteration's pairs
  changed the policy's agreement with held-out labels by less than
  ``threshold`` per 100 pairs trained on (at the default 0: when the agreement
  fell; an unchanged agreement does not stop it). The labels it does not spend are
  saved, not moved to another iteration.

An allocator is handed only what a user of the loop sees (allocator contract
2, :data:`harness.interfaces.OBSERVED_FIELDS`): label counts, the trainer's
losses, and the policy's agreement with labels it bought. Never the
evaluator's metrics, which are exact gold in the synthetic world.
"""

from __future__ import annotations

from collections.abc import Sequence

from harness import hookimpl
from harness.budget import split_by_weights
from harness.errors import UsageError
from harness.interfaces import Allocator, IterationRecord, Option


def agreement_gain_per_100(record: IterationRecord) -> float | None:
    """Held-out agreement of pi_i minus that of pi_{i-1}, per 100 pairs trained on; None without a holdout."""
    seen = record.observed
    if not seen.get("holdout_pairs") or not seen.get("sel_pairs"):
        return None
    gain = float(seen["holdout_agreement_after"]) - float(seen["holdout_agreement_before"])
    return 100.0 * gain / float(seen["sel_pairs"])


class Plateau(Allocator):
    """Even shares until held-out agreement stops rising; then no more labels."""

    name = "plateau"
    description = (
        "even shares, holding out a share of each iteration's pairs; stops buying once training changed "
        "the policy's agreement with the held-out labels by less than -o threshold per 100 pairs"
    )
    options = (
        Option("holdout", float, 0.2, min=0.0, max=1.0, max_inclusive=False,
               help="share of each iteration's labelled pairs (but the last iteration's) kept out of training "
                    "to measure agreement; charged, never trained on"),
        Option("threshold", float, 0.0,
               help="stop buying when the held-out agreement gain per 100 pairs trained on falls below this "
                    "(0: stop once the trained policy agrees with the held-out labels less often than before)"),
    )

    def __init__(self, settings=None):
        super().__init__(settings)
        if self.settings["holdout"] <= 0.0:
            raise UsageError("plateau decides from held-out agreement: -o holdout must be above 0, e.g. 0.2")

    @property
    def holdout(self) -> float:
        return float(self.settings["holdout"])

    def stopped(self, history: Sequence[IterationRecord]) -> bool:
        """Whether the stopping rule has fired on a finished iteration (it stays fired)."""
        for record in history:
            gain = agreement_gain_per_100(record)
            if record.labels == 0 or (gain is not None and gain < self.settings["threshold"]):
                return True
        return False

    def allocate(
        self, *, total_labels: int, iterations: int, history: Sequence[IterationRecord]
    ) -> list[int]:
        if iterations < 1:
            raise UsageError(f"a run needs at least one iteration, got {iterations}")
        done = [int(record.labels) for record in history][:iterations]
        left = iterations - len(done)
        if left == 0:
            return done
        if self.stopped(history):
            return done + [0] * left
        remaining = max(total_labels - sum(done), 0)
        return done + split_by_weights(remaining, [1.0] * left)


@hookimpl
def register_allocators(register):
    register(Plateau)
