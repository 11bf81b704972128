"""The ``random`` selector: the paper's baseline, which reads no scores.

Instance level (Yang et al. 2024): each prompt's first two *distinct*
responses, i.e. responses 0 and 1 unless one repeats an earlier response, in
which case the next distinct one takes its place. The responses are i.i.d.
samples, so this is a uniformly random pair. A prompt with fewer than two
distinct responses gives no pair.

Corpus level: a uniform random sample of ``n_keep`` of the given pairs (all of
them when fewer are given), without replacement, drawn from the Generator the
loop passes; the kept pairs are returned in the order they were given.
"""

from __future__ import annotations

import numpy as np

from harness import hookimpl
from harness.interfaces import Pairs, SelectionBatch, Selector
from plugins.selectors._pairs import check_n_keep, first_two_distinct


class RandomSelector(Selector):
    """Instance: the first two distinct responses; corpus: a uniform random sample of pairs."""

    name = "random"
    description = (
        "instance: the first two distinct responses of each prompt (responses 0 and 1 unless "
        "duplicated; a random pair, as in the paper); corpus: keep a uniform random n_keep of "
        "the pairs"
    )
    requires = ()

    def select_instances(self, batch: SelectionBatch, rng: np.random.Generator) -> Pairs:
        return first_two_distinct(batch.distinct)

    def select_corpus(
        self, batch: SelectionBatch, pairs: Pairs, n_keep: int, rng: np.random.Generator
    ) -> Pairs:
        n_keep = min(check_n_keep(n_keep), len(pairs))
        if n_keep == 0:
            return Pairs.empty()
        keep = rng.choice(len(pairs), size=n_keep, replace=False, shuffle=False)
        return pairs.take(np.sort(keep))


@hookimpl
def register_selectors(register):
    register(RandomSelector)
