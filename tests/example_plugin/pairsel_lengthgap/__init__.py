"""A third-party selector for pairsel-harness: pair the longest with the shortest response.

A probe for length bias: if the annotator prefers long answers, these pairs
teach the policy to ramble. It uses only the public API of ``harness``.
"""

import numpy as np

from harness import hookimpl
from harness.interfaces import Pairs, Selector
from harness.options import Option


class LengthGapSelector(Selector):
    name = "lengthgap"
    description = "Pair each prompt's longest and shortest distinct responses; keep the largest gaps."
    options = (
        Option("min_gap", int, 0, "Drop pairs whose length gap is below this many tokens.", min=0),
    )

    def select_instances(self, batch, rng):
        # Non-distinct responses (repeats of an earlier one) must never be paired.
        lengths = np.where(batch.distinct, batch.lengths, -1)
        longest = lengths.argmax(axis=1)
        lengths = np.where(batch.distinct, batch.lengths, np.iinfo(np.int64).max)
        shortest = lengths.argmin(axis=1)
        rows = np.arange(batch.n_prompts)
        gap = batch.lengths[rows, longest] - batch.lengths[rows, shortest]
        ok = (longest != shortest) & (gap >= self.settings["min_gap"])
        return Pairs(rows[ok], longest[ok], shortest[ok])

    def select_corpus(self, batch, pairs, n_keep, rng):
        gap = batch.lengths[pairs.prompt, pairs.a] - batch.lengths[pairs.prompt, pairs.b]
        order = np.argsort(-gap, kind="stable")
        return pairs.take(order[:n_keep])


@hookimpl
def register_selectors(register):
    register(LengthGapSelector)
