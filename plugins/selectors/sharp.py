"""SHARP and W-SHARP (Belakaria et al. 2025): documented aliases of ``smallest``.

Belakaria et al. 2025 ("Sharpe Ratio-Guided Active Learning for Preference
Optimization in RLHF", arXiv:2503.22137) weigh the two DPO updates a pair
(a, b) could cause, one per possible label, and score the pair by a Sharpe
ratio of them: the expected update over its spread. As functions of the DPO
implicit preference ``p = sigmoid(beta * (r(a) - r(b)))``, r the implicit
reward, the two variants are:

* SHARP   = 1 / |2p - 1|
* W-SHARP = 2 sqrt(p (1 - p)) / |2p - 1|

and keep the highest-scoring pairs. Write ``x = beta |r(a) - r(b)|`` (beta > 0).
Then ``|2p - 1| = tanh(x / 2)`` and ``2 sqrt(p (1 - p)) = 1 / cosh(x / 2)``, so

* SHARP   = coth(x / 2)
* W-SHARP = 1 / sinh(x / 2) (csch)

Both fall strictly as x grows: the highest score is the smallest margin, at
both selection levels, for any beta > 0. So the two selectors *are*
``smallest``: they are its body (:class:`plugins.selectors._margin.MarginSelector`
with the smallest margin first), choose and keep exactly the same pairs (ties,
NaN handling and the ``normalize`` option included), and differ only in name,
description and the score they report through :meth:`SharpSelector.pair_scores`
(for diagnostics; no decision reads it).

Why the ranking uses the margin and not the score: computed from p as
written, the scores lose the order that they stand for. In float32, p rounds to
exactly 1 once x is about 17 (float64: about 37), so every such pair gets
SHARP = 1 and W-SHARP = 0 and they tie; with a sigmoid computed as
``exp(x) / (1 + exp(x))`` the ratio is inf/inf = NaN once exp overflows
(float32: x above about 88). The closed forms above are stable (no p, no
subtraction), but even they saturate (coth -> 1 in float64 for x above about
37), so a score is only reported; the margin, which the scores are strictly
decreasing functions of, decides.

Reported scores: ``+inf`` at x = 0 (two different responses with equal
implicit reward; the formula's limit, p = 1/2), which is also the pair
``smallest`` ranks first; NaN where an implicit reward is NaN, and such a pair
ranks after every valid pair (the margin is NaN there too).
"""

from __future__ import annotations

import numpy as np

from harness import hookimpl
from harness.interfaces import Pairs, SelectionBatch
from plugins.selectors._margin import MarginSelector
from plugins.selectors._pairs import pair_margins


def _half_gap(margins: np.ndarray, beta: float) -> np.ndarray:
    """``beta * |r(a) - r(b)| / 2`` as float64 (NaN stays NaN)."""
    with np.errstate(over="ignore", invalid="ignore"):
        return np.abs(np.asarray(margins, dtype=np.float64)) * (float(beta) / 2.0)


def sharp_score(margins: np.ndarray, beta: float) -> np.ndarray:
    """SHARP = 1 / |2 sigmoid(beta d) - 1| = coth(beta |d| / 2) for margins ``d``; +inf at d = 0, NaN for NaN."""
    half = _half_gap(margins, beta)
    with np.errstate(divide="ignore", invalid="ignore"):
        return 1.0 / np.tanh(half)


def wsharp_score(margins: np.ndarray, beta: float) -> np.ndarray:
    """W-SHARP = 2 sqrt(p (1 - p)) / |2p - 1| = 1 / sinh(beta |d| / 2); +inf at d = 0, NaN for NaN.

    Underflows to 0 only past ``beta |d|`` of about 1420 (float64), where
    ``sinh`` overflows; the naive float32 formula is already 0 at about 17.
    """
    half = _half_gap(margins, beta)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return 1.0 / np.sinh(half)


class SharpSelector(MarginSelector):
    """Shared body of ``sharp`` and ``wsharp``: ``smallest``'s selection, plus the paper's score."""

    largest = False  # as SmallestMargin (plugins.selectors.margin, another plugin: not imported)

    @staticmethod
    def score_of(margins: np.ndarray, beta: float) -> np.ndarray:
        raise NotImplementedError

    def pair_scores(self, batch: SelectionBatch, pairs: Pairs) -> np.ndarray:
        """``(len(pairs),)`` the paper's score of each pair, with the batch's beta (diagnostics only)."""
        return self.score_of(pair_margins(batch.score(self.column), pairs), batch.beta)


class Sharp(SharpSelector):
    """SHARP (Belakaria et al. 2025), 1/|2p-1|: ranks exactly as ``smallest``."""

    name = "sharp"
    description = (
        "SHARP (Belakaria et al. 2025, arXiv:2503.22137): keep the top 1/|2p-1|, p = sigmoid(beta(r(a)-r(b))); "
        "an alias of smallest (the score falls strictly in |r(a)-r(b)|), same pairs; -o normalize as smallest"
    )
    score_of = staticmethod(sharp_score)


class WSharp(SharpSelector):
    """W-SHARP (Belakaria et al. 2025), 2 sqrt(p(1-p))/|2p-1|: ranks exactly as ``smallest``."""

    name = "wsharp"
    description = (
        "W-SHARP (Belakaria et al. 2025, arXiv:2503.22137): keep the top 2sqrt(p(1-p))/|2p-1|, "
        "p = sigmoid(beta(r(a)-r(b))); an alias of smallest (same pairs); -o normalize as smallest"
    )
    score_of = staticmethod(wsharp_score)


@hookimpl
def register_selectors(register):
    register(Sharp)
    register(WSharp)
