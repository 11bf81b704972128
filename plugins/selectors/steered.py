"""Strategies that choose where responses are sampled from (selector contract 3): PILAF, XPO and AE-Borda.

Each declares ``steers_sampling = True`` and, through :meth:`sampling_sources`,
which source every one of a prompt's N responses is drawn from
(:data:`harness.interfaces.SAMPLING_SOURCES`): pi_{i-1} (``policy``), pi_ref
(``reference``), or the logit interpolations

    pi+ : (1 + beta) h_pi - beta h_ref,     pi- : (1 - beta) h_pi + beta h_ref

(``plus``, ``minus``), h the next-token logits and beta the trainer's DPO
beta. The loop draws them (:meth:`World.steered_sample`) and hands the codes
to the selector as ``batch.sources``; the preference data carries each pair's
sources on to the trainer. The extra decoding is compute, never labels: each
kept pair costs one gold label, as for every selector.

* **PILAF** (Feng et al. 2025, arXiv:2502.04270): with probability 1/2 a
  prompt's responses alternate pi+ and pi-, and its pair is its first pi+
  against its first pi- response; otherwise they are plain samples of
  pi_{i-1}, paired as ``random`` pairs them (the first two distinct ones).
  Corpus level: a uniform share (the paper labels every pair it draws).
* **XPO** (Xie et al. 2024, arXiv:2405.21046): responses alternate pi_{i-1}
  and pi_ref; the pair is the first of each. Corpus level: a uniform share.
  The method's other half is in training: ``-o trainer.xpo_alpha=5e-6`` adds
  alpha times the mean log pi_theta of the pairs' pi_ref responses to the
  native trainer's DPO loss.
* **AE-Borda** (Mehta et al. 2023, arXiv:2312.00267, its online method): the
  first half of a prompt's responses from pi_{i-1}, the rest from pi_ref. With
  r+-(y) = m(y) +- gamma s(y) - log pi_ref(y) from K stochastic passes (as
  ``ae_dpo``), UCB-Borda(a_i) = mean_j sigma(beta (r+(a_i) - r-(b_j))) and
  LCB-Borda(a_i) = mean_j sigma(beta (r-(a_i) - r+(b_j))) over the pi_ref
  samples b_j; the prompt scores max UCB-Borda - max LCB-Borda, and its pair is
  the UCB-Borda argmax against a pi_ref sample drawn at random. Corpus level:
  the highest prompt scores.

A prompt whose sources give no usable pair of the method's kind (e.g. every
pi- response repeats a pi+ one) falls back to its first two distinct
responses, so no prompt with two distinct responses is left without a pair.
"""

from __future__ import annotations

import numpy as np

from harness import hookimpl
from harness.interfaces import SAMPLING_SOURCES, Option, Pairs, SelectionBatch, Selector
from plugins._columns import STOCHASTIC_LOGPROB_SD, STOCHASTIC_REWARD_MEAN
from plugins.selectors._pairs import first_two_distinct, keep_by_margin, keep_uniform, usable_responses

POLICY, REFERENCE, PLUS, MINUS = (SAMPLING_SOURCES.index(name) for name in ("policy", "reference", "plus", "minus"))


def alternating(n_prompts: int, n_responses: int, first: int, second: int) -> np.ndarray:
    """``(M, N)`` int8 sources ``first, second, first, ...`` for every prompt."""
    row = np.where(np.arange(n_responses) % 2 == 0, first, second).astype(np.int8)
    return np.repeat(row[None], n_prompts, axis=0)


def first_of_each(usable: np.ndarray, sources: np.ndarray, first: int, second: int) -> Pairs:
    """Per prompt, its first usable response from source ``first`` against its first usable one from ``second``;
    a prompt with no such two falls back to its first two usable responses; fewer than two usable: no pair."""
    m, n = usable.shape
    if m == 0 or n < 2:
        return Pairs.empty()
    plain = first_two_distinct(usable)  # the fallback, and the prompts that get a pair at all
    index = np.arange(n)
    a = np.where(usable & (sources == first), index, n).min(axis=1)[plain.prompt]  # n: none of that source
    b = np.where(usable & (sources == second), index, n).min(axis=1)[plain.prompt]
    both = (a < n) & (b < n)
    return Pairs(plain.prompt, np.where(both, a, plain.a), np.where(both, b, plain.b))


def _sources(batch: SelectionBatch, selector: str) -> np.ndarray:
    if batch.sources is None:
        from harness.errors import SelectionError

        raise SelectionError(f"selector {selector!r} pairs responses by where they were sampled from, but this "
                             "batch carries no sources (batch.sources); the loop sets them for a selector that "
                             "steers sampling")
    return np.asarray(batch.sources)


def _uniform_share(pairs: Pairs, n_keep: int, rng: np.random.Generator) -> Pairs:
    """A uniform share, drawn as the ``random`` selector's corpus level draws it."""
    return pairs.take(keep_uniform(len(pairs), n_keep, rng))


class PILAF(Selector):
    """PILAF (Feng et al. 2025): half the prompts' pairs drawn from the interpolated policies pi+ and pi-."""

    name = "pilaf"
    description = (
        "PILAF (Feng et al., arXiv:2502.04270): with probability 1/2 a prompt's pair is a pi+ against a pi- "
        "sample, logits (1 +- beta) h_pi -+ beta h_ref; otherwise two plain samples. Steers sampling"
    )
    options = (Option("interpolated", float, 0.5, "share of prompts whose responses come from pi+ and pi-",
                      min=0.0, max=1.0),)
    steers_sampling = True
    samples_from = ("policy", "plus", "minus")

    def sampling_sources(self, n_prompts: int, n_responses: int, rng: np.random.Generator) -> np.ndarray:
        sources = np.full((n_prompts, n_responses), POLICY, dtype=np.int8)
        steered = rng.random(n_prompts) < float(self.settings["interpolated"])
        sources[steered] = alternating(1, n_responses, PLUS, MINUS)[0]
        return sources

    def select_instances(self, batch: SelectionBatch, rng: np.random.Generator) -> Pairs:
        return first_of_each(usable_responses(batch.distinct), _sources(batch, self.name), PLUS, MINUS)

    def select_corpus(self, batch: SelectionBatch, pairs: Pairs, n_keep: int, rng: np.random.Generator) -> Pairs:
        return _uniform_share(pairs, n_keep, rng)


class XPO(Selector):
    """XPO (Xie et al. 2024): a pi_{i-1} sample against a pi_ref sample; pair with ``-o trainer.xpo_alpha``."""

    name = "xpo"
    description = (
        "XPO (Xie et al., arXiv:2405.21046): each pair is a pi_{i-1} sample against a pi_ref sample; with "
        "-o trainer.xpo_alpha=5e-6 the native trainer adds the exploration term. Steers sampling"
    )
    steers_sampling = True
    samples_from = ("policy", "reference")

    def sampling_sources(self, n_prompts: int, n_responses: int, rng: np.random.Generator) -> np.ndarray:
        return alternating(n_prompts, n_responses, POLICY, REFERENCE)

    def select_instances(self, batch: SelectionBatch, rng: np.random.Generator) -> Pairs:
        return first_of_each(usable_responses(batch.distinct), _sources(batch, self.name), POLICY, REFERENCE)

    def select_corpus(self, batch: SelectionBatch, pairs: Pairs, n_keep: int, rng: np.random.Generator) -> Pairs:
        return _uniform_share(pairs, n_keep, rng)


def borda_bounds(reward_mean: np.ndarray, sd: np.ndarray, usable: np.ndarray, sources: np.ndarray, gamma: float,
                 beta: float) -> tuple[np.ndarray, np.ndarray]:
    """``(M, N)`` UCB-Borda and LCB-Borda of every usable pi_{i-1} response against its prompt's usable pi_ref
    responses (NaN elsewhere, and for a prompt without a usable pi_ref response)."""
    spread = float(gamma) * np.asarray(sd, dtype=np.float64)
    upper, lower = reward_mean + spread, reward_mean - spread
    opponents = usable & (sources == REFERENCE)  # (M, N): the b_j
    count = opponents.sum(axis=1).astype(np.float64)

    def mean_sigmoid(mine: np.ndarray, theirs: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore", over="ignore"):
            values = 0.5 * (1.0 + np.tanh(float(beta) * (mine[:, :, None] - theirs[:, None, :]) / 2.0))
        values = np.where(opponents[:, None, :], values, 0.0).sum(axis=2)
        with np.errstate(invalid="ignore", divide="ignore"):
            return values / count[:, None]

    players = usable & (sources == POLICY) & (count > 0)[:, None]
    ucb = np.where(players, mean_sigmoid(upper, lower), np.nan)
    lcb = np.where(players, mean_sigmoid(lower, upper), np.nan)
    return ucb, lcb


class AEBorda(Selector):
    """AE-Borda-DPO (Mehta et al. 2023, online): optimistic Borda scores of pi_{i-1} samples against pi_ref samples."""

    name = "ae_borda"
    description = (
        "AE-Borda-DPO (Mehta et al., arXiv:2312.00267): half the samples from pi_{i-1}, half from pi_ref; keep the "
        "prompts with the largest max UCB-Borda - max LCB-Borda, pairing the UCB argmax with a random pi_ref "
        "sample; -o passes=5 -o gamma=2. Steers sampling"
    )
    options = (
        Option("passes", int, 5, "K, stochastic forward passes (MC dropout) behind m(y) and s(y)", min=2, max=1000),
        Option("gamma", float, 2.0, "width of the confidence interval, r+-(y) = m(y) +- gamma s(y) - log pi_ref(y)",
               min=0.0),
    )
    requires = (STOCHASTIC_REWARD_MEAN, STOCHASTIC_LOGPROB_SD)
    steers_sampling = True
    samples_from = ("policy", "reference")

    @property
    def stochastic_passes(self) -> int:
        return int(self.settings["passes"])

    def sampling_sources(self, n_prompts: int, n_responses: int, rng: np.random.Generator) -> np.ndarray:
        row = np.where(np.arange(n_responses) < (n_responses + 1) // 2, POLICY, REFERENCE).astype(np.int8)
        return np.repeat(row[None], n_prompts, axis=0)

    def _usable(self, batch: SelectionBatch) -> np.ndarray:
        """Distinct responses with finite r+-(y)."""
        mean, sd = batch.score(STOCHASTIC_REWARD_MEAN), batch.score(STOCHASTIC_LOGPROB_SD)
        return usable_responses(batch.distinct) & np.isfinite(mean) & np.isfinite(sd)

    def _bounds(self, batch: SelectionBatch) -> tuple[np.ndarray, np.ndarray]:
        mean, sd = batch.score(STOCHASTIC_REWARD_MEAN), batch.score(STOCHASTIC_LOGPROB_SD)
        return borda_bounds(mean, sd, self._usable(batch), _sources(batch, self.name), self.settings["gamma"],
                            batch.beta)

    def prompt_scores(self, batch: SelectionBatch) -> np.ndarray:
        """``(M,)`` max UCB-Borda - max LCB-Borda of each prompt (NaN where it has no Borda pair)."""
        ucb, lcb = self._bounds(batch)
        best_ucb = np.where(np.isnan(ucb), -np.inf, ucb).max(axis=1, initial=-np.inf)
        best_lcb = np.where(np.isnan(lcb), -np.inf, lcb).max(axis=1, initial=-np.inf)
        scored = np.isfinite(best_ucb) & np.isfinite(best_lcb)
        return np.where(scored, np.where(scored, best_ucb, 0.0) - np.where(scored, best_lcb, 0.0), np.nan)

    def pair_scores(self, batch: SelectionBatch, pairs: Pairs) -> np.ndarray:
        """``(len(pairs),)`` the score of each pair's prompt."""
        return self.prompt_scores(batch)[pairs.prompt]

    def select_instances(self, batch: SelectionBatch, rng: np.random.Generator) -> Pairs:
        m, n = batch.n_prompts, batch.n_responses
        if m == 0 or n < 2:
            return Pairs.empty()
        sources = _sources(batch, self.name)
        ucb, _ = self._bounds(batch)
        usable = self._usable(batch)
        fallback = first_of_each(usable_responses(batch.distinct), sources, POLICY, REFERENCE)
        a = np.full(m, -1, dtype=np.int64)
        b = np.full(m, -1, dtype=np.int64)
        a[fallback.prompt], b[fallback.prompt] = fallback.a, fallback.b
        borda = ~np.isnan(ucb).all(axis=1)
        best = np.where(np.isnan(ucb), -np.inf, ucb).argmax(axis=1)
        opponents = usable & (sources == REFERENCE)
        draws = rng.random((m, n))  # one uniform per response: the random pi_ref opponent is the largest
        opponent = np.where(opponents, draws, -1.0).argmax(axis=1)
        a[borda], b[borda] = best[borda], opponent[borda]
        prompts = np.flatnonzero(a >= 0)
        return Pairs(prompts, a[prompts], b[prompts])

    def select_corpus(self, batch: SelectionBatch, pairs: Pairs, n_keep: int, rng: np.random.Generator) -> Pairs:
        return pairs.take(keep_by_margin(self.pair_scores(batch, pairs), n_keep, largest=True))


@hookimpl
def register_selectors(register):
    register(PILAF)
    register(XPO)
    register(AEBorda)
