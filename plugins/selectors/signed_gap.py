"""The signed implicit-reward gap (Qi, Xu and Jin 2025): keep the pairs the policy gets most wrong.

Qi, Xu and Jin 2025 ("Difficulty-Based Preference Data Selection by DPO
Implicit Reward Gap", arXiv:2508.04149) select from an already *labelled*
preference set: for each pair, the DPO implicit reward gap

    gap = beta * (r(chosen) - r(rejected)),   r = log pi - log pi_ref,

is signed by the label, and the pairs with the smallest gap (most negative:
the policy prefers the rejected response) are kept, 10% of the data in the
paper. Unlike ``smallest``, which ranks by |r(a) - r(b)| and needs no label,
this rule needs each pair's orientation *before* selection. The harness offers
it in two forms, differing only in who gives that orientation:

* ``signedgap`` (exact): the gold judge scores all N responses of every pool
  prompt, pointwise, before selection, as ``bestworst`` does
  (``explicit_source = "gold"``): N gold labels per prompt, charged up front
  by the loop; the kept pairs are labelled by those scores, at no further
  cost, so the sign used for selection is exactly the label trained on.
* ``signedgap_proxy`` (approximate): the run's proxy judge scores all N
  responses (``explicit_source = "proxy"``; M x N calls counted, never
  charged), its scores orient the pairs, and each kept pair then costs one
  pairwise gold label, like every proxy-fed selector. Where the proxy and the
  gold label disagree, the sign was guessed wrong: the pair may not be one the
  policy gets wrong at all. This is an approximation of the paper's rule.

Levels:

* Instance: per prompt, the response with the highest explicit score
  (chosen) against the lowest (rejected) over the distinct responses with
  finite scores, the max-min pair of ``bestworst`` and ``map``. The paper has
  one labelled pair per prompt and no choice to make here; best against worst
  is the usual way to turn N scored samples into one labelled pair, and it is
  what ``bestworst`` spends the same labels on, so the two differ only in the
  corpus level. (Choosing, per prompt, the oriented pair with the most
  negative gap among all N(N-1)/2 would be a stronger, different method.)
* Corpus: for each offered pair (from this or any instance selector), chosen
  is the response with the higher explicit score (``a`` on a tie, the rule by
  which the loop labels pairs from gold scores), the gap is
  ``beta * (r(chosen) - r(rejected))`` with the trainer's beta, and the
  ``n_keep`` pairs with the most negative gaps are kept. beta > 0 does not
  change the order; it is there so that :meth:`SignedGap.pair_scores` reports
  the paper's quantity. The run's ``--keep`` sets the share: ``--keep 0.1``
  is the paper's 10%.

Ties keep the earliest offered pair (stable sort); a pair whose gap is NaN
(a non-finite score) ranks after every valid pair. No randomness is used.

Where this differs from the paper: the paper ranks a fixed offline data set
once, with the gap of a model fixed before training; here each iteration's
freshly sampled pool is ranked with pi_{i-1} against the run's reference (the
same implicit reward ``smallest`` reads), and the labels are bought by the
harness's budget, not given.
"""

from __future__ import annotations

import numpy as np

from harness import hookimpl
from harness.interfaces import EXPLICIT_REWARD, Pairs, SelectionBatch, Selector
from plugins._columns import IMPLICIT_REWARD
from plugins.selectors._pairs import extreme_score_pairs, keep_by_margin, usable_responses


def signed_gaps(explicit: np.ndarray, implicit: np.ndarray, pairs: Pairs, beta: float) -> np.ndarray:
    """``(len(pairs),)`` beta * (r(chosen) - r(rejected)), chosen by the explicit scores (``a`` on a tie).

    NaN where any of the four scores is not finite (a difference that overflows stays +-inf and ranks
    where it belongs).
    """
    explicit = np.asarray(explicit, dtype=np.float64)
    implicit = np.asarray(implicit, dtype=np.float64)
    e_a, e_b = explicit[pairs.prompt, pairs.a], explicit[pairs.prompt, pairs.b]
    r_a, r_b = implicit[pairs.prompt, pairs.a], implicit[pairs.prompt, pairs.b]
    with np.errstate(invalid="ignore", over="ignore"):
        gap = float(beta) * np.where(e_a >= e_b, r_a - r_b, r_b - r_a)
    valid = np.isfinite(e_a) & np.isfinite(e_b) & np.isfinite(r_a) & np.isfinite(r_b)
    return np.where(valid, gap, np.nan)


class SignedGap(Selector):
    """Best against worst by explicit score; keep the most negative implicit-reward gaps (the exact, gold form)."""

    name = "signedgap"
    description = (
        "signed implicit-reward gap (Qi, Xu, Jin 2025, arXiv:2508.04149), exact: the gold judge scores all N "
        "responses (N gold labels per prompt, as bestworst), best paired with worst; corpus: keep the most "
        "negative beta(r(chosen)-r(rejected)) (--keep 0.1: the paper's 10%)"
    )
    requires = (EXPLICIT_REWARD, IMPLICIT_REWARD)
    explicit_source = "gold"

    def select_instances(self, batch: SelectionBatch, rng: np.random.Generator) -> Pairs:
        usable = usable_responses(batch.distinct, batch.score(IMPLICIT_REWARD))
        return extreme_score_pairs(batch.score(EXPLICIT_REWARD), usable)

    def pair_scores(self, batch: SelectionBatch, pairs: Pairs) -> np.ndarray:
        """``(len(pairs),)`` the signed gap of each pair (lower is kept first); NaN where undefined."""
        return signed_gaps(batch.score(EXPLICIT_REWARD), batch.score(IMPLICIT_REWARD), pairs, batch.beta)

    def select_corpus(
        self, batch: SelectionBatch, pairs: Pairs, n_keep: int, rng: np.random.Generator
    ) -> Pairs:
        return pairs.take(keep_by_margin(self.pair_scores(batch, pairs), n_keep, largest=False))


class SignedGapProxy(SignedGap):
    """``signedgap`` with the proxy judge's orientation: an approximation, one gold label per kept pair."""

    name = "signedgap_proxy"
    description = (
        "signedgap (Qi, Xu, Jin 2025, arXiv:2508.04149) approximated: the proxy judge's scores (calls counted, "
        "not charged) pick best and worst and orient the gap; keep the most negative gaps; 1 gold label per kept pair"
    )
    explicit_source = "proxy"


@hookimpl
def register_selectors(register):
    register(SignedGap)
    register(SignedGapProxy)
