"""AE-DPO and US-DPO (Mehta et al. 2023): pairs chosen by the spread of K stochastic passes.

Mehta et al., "Sample Efficient Preference Alignment in LLMs via Active
Exploration", arXiv:2312.00267; the authors' code:
github.com/belakaria/active-llm-alignment (its functions
``select_ae_elements``, ``select_us_elements``, ``predict_logits_with_dropout``
and its ``DropoutModel`` wrapper).

K stochastic forward passes of pi_{i-1} (MC dropout; see
:meth:`harness.interfaces.World.stochastic_logprobs`) give, for every
response y, the mean m(y) and standard deviation s(y) of the summed log
pi(y|x). With the reference log-prob log pi_ref(y|x) from one deterministic
pass, the optimistic and pessimistic implicit rewards are

    r+(y) = m(y) + gamma s(y) - log pi_ref(y),    r-(y) = m(y) - gamma s(y) - log pi_ref(y)

and a pair (y1, y2) scores

* AE (active exploration): max(r+(y1), r+(y2)) - max(r-(y1), r-(y2)), the
  width of the confidence interval of the better response's reward;
* US (uncertainty sampling): (s(y1)^2 + s(y2)^2) / 2, the mean variance.

Neither score is multiplied by the DPO beta (the authors' code uses only
``active_beta``, gamma here, in them), so beta changes no choice. Both
selectors keep the highest-scoring pairs:

* instance level: among the N(N-1)/2 pairs of two usable responses of a
  prompt (distinct, both columns finite), the highest-scoring pair; ties go
  to the first pair in row-major order. For US this is the two responses with
  the largest s(y);
* corpus level: the ``n_keep`` offered pairs (from any instance selector) with
  the highest score; ties keep the earliest pair and a pair with a
  non-finite score ranks last.

Columns read (scorer contract 2, :mod:`plugins.scorers.stochastic`):
``stochastic_reward_mean`` = m(y) - log pi_ref(y) and ``stochastic_logprob_sd``
= s(y) for AE; ``stochastic_logprob_sd`` for US. No gold, no explicit score:
each kept pair costs one gold label, charged by the loop, and the K passes are
compute, never labels.

Where this differs from the authors' setting (docs/usage/field-strategies.md):

* the authors' offline setting ranks fixed dataset pairs (one chosen/rejected
  pair per dataset entry) in batches of ``selection_ratio`` = 3 times the
  training batch and keeps the top third (``torch.topk``); here each prompt's
  pair is first chosen among its N sampled responses by the same score, and
  the corpus level keeps the ``--keep`` share of the pool (default 0.5;
  ``--keep 0.333`` is their ratio, ``--responses 2`` their one pair per prompt);
* their MC dropout is the model's own dropout in train mode plus dropout at
  0.05 on the final hidden state before the LM head; the synthetic testbed's
  GRU has no dropout, so it uses that head dropout alone as a declared
  surrogate (plugins/testbeds/synthetic/world.py), and the hf testbed does as
  the authors do;
* their reference log-prob is itself one pass in train mode (the reference's
  own dropout modules active); here the reference is scored deterministically.
"""

from __future__ import annotations

import numpy as np

from harness import hookimpl
from harness.interfaces import Option, Pairs, SelectionBatch, Selector
from plugins._columns import STOCHASTIC_LOGPROB_SD, STOCHASTIC_REWARD_MEAN
from plugins.selectors._pairs import candidate_mask, keep_by_margin, pair_index, usable_responses

_FLOAT_MAX = np.finfo(np.float64).max

_PASSES = Option("passes", int, 5, "K, stochastic forward passes (MC dropout) behind m(y) and s(y)", min=2, max=1000)
_GAMMA = Option("gamma", float, 2.0, "width of the confidence interval, r+-(y) = m(y) +- gamma s(y) - log pi_ref(y)",
                min=0.0)


def ae_scores(reward_mean: np.ndarray, sd: np.ndarray, a: np.ndarray, b: np.ndarray, gamma: float,
              rows: np.ndarray | None = None) -> np.ndarray:
    """max(r+(a), r+(b)) - max(r-(a), r-(b)) for responses ``a``/``b`` (of prompts ``rows``, or every prompt)."""
    mean = np.asarray(reward_mean, dtype=np.float64)
    spread = float(gamma) * np.asarray(sd, dtype=np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        upper, lower = mean + spread, mean - spread
        if rows is None:
            return np.maximum(upper[:, a], upper[:, b]) - np.maximum(lower[:, a], lower[:, b])
        return (np.maximum(upper[rows, a], upper[rows, b])
                - np.maximum(lower[rows, a], lower[rows, b]))


def us_scores(sd: np.ndarray, a: np.ndarray, b: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """(s(a)^2 + s(b)^2) / 2 for responses ``a``/``b`` (of prompts ``rows``, or every prompt)."""
    sd = np.asarray(sd, dtype=np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        if rows is None:
            return (sd[:, a] ** 2 + sd[:, b] ** 2) / 2.0
        return (sd[rows, a] ** 2 + sd[rows, b] ** 2) / 2.0


def best_pairs(candidate_scores: np.ndarray, usable: np.ndarray) -> Pairs:
    """Per prompt, the candidate pair of two usable responses with the highest score (first on a tie).

    ``candidate_scores`` is ``(M, N(N-1)/2)`` over :func:`pair_index` order. A
    candidate with a NaN score still beats a non-candidate but loses to any
    number; prompts with fewer than two usable responses give no pair.
    """
    n_prompts, n_responses = usable.shape
    if n_prompts == 0 or n_responses < 2:
        return Pairs.empty()
    candidates = candidate_mask(usable)
    key = np.where(np.isnan(candidate_scores), -_FLOAT_MAX, np.maximum(candidate_scores, -_FLOAT_MAX))
    best = np.where(candidates, key, -np.inf).argmax(axis=1)
    prompts = np.flatnonzero(candidates.any(axis=1))
    a, b = pair_index(n_responses)
    return Pairs(prompts, a[best[prompts]], b[best[prompts]])


class _StochasticSelector(Selector):
    """Shared body: ``passes`` as ``stochastic_passes``; subclasses define the pair score."""

    @property
    def stochastic_passes(self) -> int:
        return int(self.settings["passes"])

    def _usable(self, batch: SelectionBatch) -> np.ndarray:
        usable = usable_responses(batch.distinct)
        for column in self.requires:
            usable = usable & np.isfinite(batch.score(column))
        return usable

    def _all_pair_scores(self, batch: SelectionBatch, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def pair_scores(self, batch: SelectionBatch, pairs: Pairs) -> np.ndarray:
        """``(len(pairs),)`` the method's score of each pair (higher: annotate first)."""
        raise NotImplementedError

    def select_instances(self, batch: SelectionBatch, rng: np.random.Generator) -> Pairs:
        if batch.n_prompts == 0 or batch.n_responses < 2:
            return Pairs.empty()
        a, b = pair_index(batch.n_responses)
        return best_pairs(self._all_pair_scores(batch, a, b), self._usable(batch))

    def select_corpus(self, batch: SelectionBatch, pairs: Pairs, n_keep: int, rng: np.random.Generator) -> Pairs:
        return pairs.take(keep_by_margin(self.pair_scores(batch, pairs), n_keep, largest=True))


class ActiveExploration(_StochasticSelector):
    """AE-DPO (Mehta et al. 2023): the widest confidence interval of the better response's implicit reward."""

    name = "ae_dpo"
    description = (
        "AE-DPO (Mehta et al., arXiv:2312.00267): keep the top max(r+(y1), r+(y2)) - max(r-(y1), r-(y2)), "
        "r+-(y) = m(y) +- gamma s(y) - log pi_ref(y) from K MC-dropout passes; -o passes=5 -o gamma=2"
    )
    options = (_PASSES, _GAMMA)
    requires = (STOCHASTIC_REWARD_MEAN, STOCHASTIC_LOGPROB_SD)

    def _all_pair_scores(self, batch: SelectionBatch, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return ae_scores(batch.score(STOCHASTIC_REWARD_MEAN), batch.score(STOCHASTIC_LOGPROB_SD), a, b,
                         self.settings["gamma"])

    def pair_scores(self, batch: SelectionBatch, pairs: Pairs) -> np.ndarray:
        return ae_scores(batch.score(STOCHASTIC_REWARD_MEAN), batch.score(STOCHASTIC_LOGPROB_SD), pairs.a, pairs.b,
                         self.settings["gamma"], rows=pairs.prompt)


class UncertaintySampling(_StochasticSelector):
    """US-DPO (Mehta et al. 2023's baseline): the largest mean variance of the two responses' log-probs."""

    name = "us_dpo"
    description = (
        "US-DPO (Mehta et al., arXiv:2312.00267): keep the top (s(y1)^2 + s(y2)^2)/2, s(y) the sd of "
        "log pi(y|x) over K MC-dropout passes; -o passes=5"
    )
    options = (_PASSES,)
    requires = (STOCHASTIC_LOGPROB_SD,)

    def _all_pair_scores(self, batch: SelectionBatch, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return us_scores(batch.score(STOCHASTIC_LOGPROB_SD), a, b)

    def pair_scores(self, batch: SelectionBatch, pairs: Pairs) -> np.ndarray:
        return us_scores(batch.score(STOCHASTIC_LOGPROB_SD), pairs.a, pairs.b, rows=pairs.prompt)


@hookimpl
def register_selectors(register):
    register(ActiveExploration)
    register(UncertaintySampling)
