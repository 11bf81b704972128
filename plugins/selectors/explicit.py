"""Selectors that read explicit (reward-model) scores: M_AP and the explicit-score baselines.

Every selector here declares ``explicit_reward`` in ``requires``: a judge
scores all N responses of every pool prompt *before* selection, from the
source named by the selector's ``explicit_source`` (see
:class:`harness.interfaces.Selector` and ``harness.budget``):

* ``proxy``: the run's proxy judge (a cheap reward model). Its M x N calls are
  counted and reported, not charged; kept pairs then get one pairwise gold
  label each.
* ``gold``: the run's gold judge, pointwise, at one gold label per response:
  N labels per pool prompt, charged before anything is selected; kept pairs
  are labelled by those scores (the higher one wins) at no further cost. The
  pool is sized for that: ``prompts = labels / N``.

Selectors:

* ``map``: M_AP, "alignment potential" (Huang et al. 2025, "Larger or Smaller
  Reward Margins to Select Preferences for Alignment?", ICML), as the authors'
  public code computes it. Instance level: per prompt, chosen = the response
  with the highest explicit score, rejected = the lowest (the max-min pair).
  Corpus level: for each offered pair, the explicit margin
  ``e = |E(a) - E(b)|`` (max - min for its own pairs) and the implicit margin
  ``i = |mean-token log pi(a) - mean-token log pi(b)|`` (column
  ``policy_logprob_mean``: reference-free, SimPO style), then
  ``score = z(e) - w * z(i)``, each z-scored over the offered pairs with ddof 0;
  keep the ``n_keep`` pairs with the highest score. Options ``w`` (default 1;
  the authors' self-play scripts use 2.5) and ``explicit_source``. The paper
  keeps the top 40%; here the run's ``--keep`` decides (default 0.5), so pass
  ``--keep 0.4`` for the paper's share.
* ``map_dpo``: the same with the DPO implicit reward log pi - log pi_ref
  (column ``implicit_reward``, or ``implicit_reward_normalized`` with
  ``-o normalize=true``) in place of the reference-free mean-token log-prob.
  The DPO beta scales every implicit margin alike, and a z-score does not
  change when its column is scaled by beta > 0, so beta is left out.
* ``bestworst``: the standard recipe (RLHFlow's max-min pairs, UltraFeedback
  style): every response scored by the *gold* judge (``explicit_source`` is
  fixed to ``gold``; N gold labels per prompt, pointwise: an all-pairs
  comparison would be N(N-1)/2 pairwise labels), best paired with worst, the
  pair labelled by those scores. Corpus level: a uniform random share, drawn
  exactly as ``random`` draws it; ``--keep 1`` gives the classic recipe of one
  pair for every prompt.
* ``explicit_largest``: the max-min pair per prompt and, across the pool, the
  pairs with the largest explicit margin ``|E(a) - E(b)|``. ``map -o w=0``
  ranks pairs in the same order.
* ``implicit_smallest``: Huang et al.'s implicit-margin metric M-: the same
  max-min pair per prompt and, across the pool, the pairs with the *smallest*
  implicit margin ``|mean-token log pi(a) - mean-token log pi(b)|`` (the
  column M_AP reads). It is M_AP's second term alone, as ``explicit_largest``
  (M+) is its first, so the three rank the same pools and differ only in the
  corpus-level rule. Its explicit scores only choose the pair.

Decisions and edge cases, shared by all five:

* *Distinct responses only.* The max and min are taken over the responses
  ``batch.distinct`` marks, so two identical responses are never paired.
* *Zero explicit range.* A prompt whose usable responses all score the same
  still gives a pair (its first two usable responses, explicit margin 0), as
  the authors' code would; at the corpus level its explicit margin is the
  smallest possible, so M_AP keeps it only if its implicit margin is small
  enough. A prompt with fewer than two usable responses gives no pair.
* *NaN.* A response is usable only when every score column the selector reads
  is finite for it (for ``map``: the explicit score and the mean-token
  log-prob). At the corpus level a pair with a non-finite margin gets a NaN
  score, takes no part in the z-scores and ranks after every valid pair.
* *z-scores* are computed over the pairs offered to the corpus level (valid
  ones), whichever instance selector offered them: both margins are recomputed
  from the score columns for those pairs. A constant column, or a pool of one
  pair, has z = 0 (no division by zero).
* *Ties* are deterministic: the first response for the max and for the min;
  at the corpus level the earliest offered pair (stable sort). Only
  ``bestworst``'s corpus level uses the Generator.

Pair orientation: ``a`` is the explicit judge's chosen response (the max),
``b`` the rejected one; with ``explicit_source = gold`` the loop labels the pair
by the same scores, so ``a`` wins.

Differences from the authors' code (``metric_selection.py`` /
``merge_gen_annotate.py`` of the paper's repository): they z-score over the
whole offline dataset once; here each iteration's pool is z-scored against
itself. Their ties (``np.argsort``) fall where the sort puts them; here the
first of the tied responses or pairs wins, and a prompt's max and min are
never two identical texts. Their mean-token log-probs come from the model
being aligned, as here (pi_{i-1}, the policy that sampled the pool).
"""

from __future__ import annotations

import numpy as np

from harness import hookimpl
from harness.interfaces import EXPLICIT_REWARD, EXPLICIT_SOURCES, Option, Pairs, SelectionBatch, Selector
from plugins._columns import IMPLICIT_REWARD, IMPLICIT_REWARD_NORMALIZED, POLICY_LOGPROB_MEAN
from plugins.selectors._pairs import (
    extreme_score_pairs,
    keep_by_margin,
    keep_uniform,
    pair_margins,
    usable_responses,
    zscore,
)

_EXPLICIT_SOURCE = Option(
    "explicit_source",
    str,
    "proxy",
    help="who scores every response before selection: proxy (the run's proxy judge; calls counted, "
    "not charged; kept pairs get one gold label each) or gold (the gold judge, charged N labels "
    "per prompt; kept pairs labelled by those scores)",
    choices=EXPLICIT_SOURCES,
)
_W = Option(
    "w",
    float,
    1.0,
    help="weight of the implicit margin's z-score: score = z(explicit margin) - w * z(implicit margin) "
    "(the authors' self-play scripts use 2.5)",
    min=0.0,
)
_NORMALIZE = Option(
    "normalize",
    bool,
    False,
    help="use implicit_reward_normalized (r(y)/|y|) instead of implicit_reward for the implicit margin",
)


def _usable(batch: SelectionBatch, columns: tuple[str, ...]) -> np.ndarray:
    """``(M, N)``: distinct, and finitely scored in every one of ``columns``."""
    usable = usable_responses(batch.distinct)
    for column in columns:
        usable = usable & np.isfinite(batch.score(column))
    return usable


class _ExplicitSelector(Selector):
    """Shared body: the max-min explicit pair at the instance level; ``explicit_source`` from the option."""

    explicit_source = "proxy"  # the class attribute states the default; instances follow their option
    requires: tuple[str, ...] = (EXPLICIT_REWARD,)

    def __init__(self, settings=None):
        super().__init__(settings)
        if "explicit_source" in self.settings:
            self.explicit_source = self.settings["explicit_source"]

    def select_instances(self, batch: SelectionBatch, rng: np.random.Generator) -> Pairs:
        return extreme_score_pairs(batch.score(EXPLICIT_REWARD), _usable(batch, self.requires))


class ExplicitLargest(_ExplicitSelector):
    """The max-min explicit pair per prompt; keep the largest explicit margins."""

    name = "explicit_largest"
    description = (
        "instance: per prompt, the distinct responses with the highest and lowest explicit score; "
        "corpus: keep the largest explicit margins |E(a)-E(b)| (-o explicit_source=proxy|gold)"
    )
    options = (_EXPLICIT_SOURCE,)

    def select_corpus(
        self, batch: SelectionBatch, pairs: Pairs, n_keep: int, rng: np.random.Generator
    ) -> Pairs:
        margins = pair_margins(batch.score(EXPLICIT_REWARD), pairs)
        return pairs.take(keep_by_margin(margins, n_keep, largest=True))


class ImplicitSmallest(_ExplicitSelector):
    """Huang's M-: the max-min explicit pair per prompt; keep the smallest |mean-token log pi margin|."""

    name = "implicit_smallest"
    description = (
        "Huang et al. 2025's M-: per prompt the max-min explicit pair (as map); corpus: keep the smallest "
        "implicit margins |mean-token log pi(a) - log pi(b)| (-o explicit_source=proxy|gold)"
    )
    options = (_EXPLICIT_SOURCE,)
    requires = (EXPLICIT_REWARD, POLICY_LOGPROB_MEAN)

    def select_corpus(
        self, batch: SelectionBatch, pairs: Pairs, n_keep: int, rng: np.random.Generator
    ) -> Pairs:
        margins = pair_margins(batch.score(POLICY_LOGPROB_MEAN), pairs)
        return pairs.take(keep_by_margin(margins, n_keep, largest=False))


class AlignmentPotential(_ExplicitSelector):
    """M_AP: the max-min explicit pair; keep the highest z(explicit margin) - w z(implicit margin)."""

    name = "map"
    description = (
        "M_AP (Huang et al. 2025): per prompt the max-min explicit pair; corpus: keep the top "
        "z(explicit margin) - w*z(|mean-token log pi margin|) (-o w=1, explicit_source=proxy|gold; "
        "--keep sets the share, paper 0.4)"
    )
    options = (_W, _EXPLICIT_SOURCE)
    # Class attributes state the default settings; an instance sets its own from its options.
    implicit_column = POLICY_LOGPROB_MEAN
    requires = (EXPLICIT_REWARD, POLICY_LOGPROB_MEAN)

    def __init__(self, settings=None):
        super().__init__(settings)
        self.implicit_column = self._implicit_column()
        self.requires = (EXPLICIT_REWARD, self.implicit_column)

    def _implicit_column(self) -> str:
        return POLICY_LOGPROB_MEAN

    def pair_scores(self, batch: SelectionBatch, pairs: Pairs) -> np.ndarray:
        """``(len(pairs),)`` M_AP score of each pair; NaN where a margin is not finite."""
        explicit = pair_margins(batch.score(EXPLICIT_REWARD), pairs)
        implicit = pair_margins(batch.score(self.implicit_column), pairs)
        valid = np.isfinite(explicit) & np.isfinite(implicit)
        explicit = np.where(valid, explicit, np.nan)
        implicit = np.where(valid, implicit, np.nan)
        return zscore(explicit) - self.settings["w"] * zscore(implicit)

    def select_corpus(
        self, batch: SelectionBatch, pairs: Pairs, n_keep: int, rng: np.random.Generator
    ) -> Pairs:
        return pairs.take(keep_by_margin(self.pair_scores(batch, pairs), n_keep, largest=True))


class AlignmentPotentialDPO(AlignmentPotential):
    """M_AP with the DPO implicit reward (log pi - log pi_ref) as the implicit margin."""

    name = "map_dpo"
    description = (
        "M_AP with the DPO implicit reward log pi - log pi_ref for the implicit margin (beta cancels "
        "in the z-score); -o normalize=true uses r(y)/|y|; -o w, explicit_source as map"
    )
    options = (_NORMALIZE, _W, _EXPLICIT_SOURCE)
    implicit_column = IMPLICIT_REWARD
    requires = (EXPLICIT_REWARD, IMPLICIT_REWARD)

    def _implicit_column(self) -> str:
        return IMPLICIT_REWARD_NORMALIZED if self.settings["normalize"] else IMPLICIT_REWARD


class BestWorst(_ExplicitSelector):
    """Gold-scored best vs worst response per prompt (RLHFlow max-min); a uniform random share."""

    name = "bestworst"
    description = (
        "the standard recipe (RLHFlow max-min): gold judge scores all N responses, costing N gold labels "
        "per prompt (pointwise; equivalently it would be N(N-1)/2 pairwise comparisons), best paired with "
        "worst and labelled by those scores; corpus: a uniform random share (--keep 1: every prompt)"
    )
    options = ()
    explicit_source = "gold"

    def select_corpus(
        self, batch: SelectionBatch, pairs: Pairs, n_keep: int, rng: np.random.Generator
    ) -> Pairs:
        return pairs.take(keep_uniform(len(pairs), n_keep, rng))


@hookimpl
def register_selectors(register):
    register(AlignmentPotential)
    register(AlignmentPotentialDPO)
    register(BestWorst)
    register(ExplicitLargest)
    register(ImplicitSmallest)
