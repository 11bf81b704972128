"""The body of the margin selectors (not a plugin; registers nothing): ``smallest``, ``largest`` and the
uncertainty family are this class with a direction (see :mod:`plugins.selectors.margin`)."""

from __future__ import annotations

import numpy as np

from harness.interfaces import Option, Pairs, SelectionBatch, Selector
from plugins._columns import IMPLICIT_REWARD, IMPLICIT_REWARD_NORMALIZED
from plugins.selectors._pairs import extreme_margin_pairs, keep_by_margin, pair_margins

RAW_COLUMN = IMPLICIT_REWARD
NORMALIZED_COLUMN = IMPLICIT_REWARD_NORMALIZED

_NORMALIZE = Option(
    "normalize",
    bool,
    False,
    help="compute margins on implicit_reward_normalized (r(y)/|y|, paper eq. 6) "
    "instead of implicit_reward",
)


class MarginSelector(Selector):
    """Shared body of the margin selectors; ``largest`` picks the direction."""

    largest: bool = False
    options = (_NORMALIZE,)
    # The class attribute is the default (normalize=false); an instance sets its
    # own ``requires`` from its settings in ``__init__``.
    requires = (RAW_COLUMN,)

    def __init__(self, settings=None):
        super().__init__(settings)
        self.column = NORMALIZED_COLUMN if self.settings.get("normalize") else RAW_COLUMN
        self.requires = (self.column,)

    def select_instances(self, batch: SelectionBatch, rng: np.random.Generator) -> Pairs:
        return extreme_margin_pairs(batch.score(self.column), batch.distinct, largest=self.largest)

    def select_corpus(
        self, batch: SelectionBatch, pairs: Pairs, n_keep: int, rng: np.random.Generator
    ) -> Pairs:
        margins = pair_margins(batch.score(self.column), pairs)
        return pairs.take(keep_by_margin(margins, n_keep, largest=self.largest))
