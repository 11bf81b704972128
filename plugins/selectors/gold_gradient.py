"""``gold_gradient``: a gold-informed reference point, NOT a deployable strategy.

It reads the world's exact gold reward of every response in the pool
(``needs_exact_gold``, :class:`harness.interfaces.ExactGold`), information no
real strategy has, and ranks candidate pairs by how well the DPO gradient of
the pair aligns with the gradient of expected gold under the current policy
pi = pi_{i-1}. It is there to read other strategies against (docs/usage/gold-reference.md):
a first-order reference, *not* an upper bound (a strategy can beat it).

The criterion. For a candidate pair (a, b) let w be the response with the
higher exact gold (``a`` on a tie) and l the other, Delta = r(w) - r(l) the
implicit-reward margin (r = log pi - log pi_ref, the ``implicit_reward``
column) and beta the trainer's DPO beta. One gradient step on the pair's DPO
loss moves the parameters along

    -grad L_DPO = beta * sigmoid(-beta * Delta) * (g(w) - g(l)),   g(y) = grad log pi(y | x),

and the gradient of the expected gold reward under pi is

    G = E_x E_{y ~ pi(.|x)} [(R(x, y) - b(x)) g(y)],

estimated from the pool itself: the N responses of each prompt are samples of
pi, and b(x) is the mean gold of the prompt's N responses. A pair's score is
the inner product of the two,

    score(a, b) = beta * sigmoid(-beta * Delta) * (s(w) - s(l)),   s(y) = <g(y), G>,

the first-order gain in expected gold of one small SGD step on that pair alone
(per unit learning rate). The instance level keeps, per prompt, the candidate
pair of two distinct, finitely scored responses with the highest score (ties:
the first pair in row-major order); the corpus level keeps the ``n_keep``
offered pairs (from this or any instance selector) with the highest score,
ties to the earliest pair, a pair with a non-finite score last.

How it is computed, without per-sample gradients (which would be M*N vectors
the size of the model): G is one backward pass of the weighted sum
sum (R - b) log pi(y) over the pool, and every s(y) = <g(y), G> at once is a
directional derivative of log pi(y) along G, taken by a central difference of
two no-grad forward passes of clones of pi moved by +-eps along G/|G| (eps =
:data:`harness.influence.RELATIVE_STEP` times the parameters' norm). G is cross-fitted: the
prompts are split by parity, and the responses of each half are scored with
the G of the other half, so no response's score contains its own gradient
(with a single prompt there is no other half, and G is that prompt's own).
Only the :class:`~harness.interfaces.Policy` protocol is used (``clone``,
``parameters``, ``sequence_logprobs``); pi itself is never modified.

Cost, per iteration: one backward and two forward passes of the policy over
the pool's M*N responses (a training epoch's worth of compute over the pool,
roughly). On the synthetic testbed's defaults (2,000 prompts x 8 responses per
iteration, a 22k-parameter GRU, one CPU thread) about 1.4 s per iteration; the
central difference agrees with the exact inner product to a few 1e-4 of the
scores' mean magnitude (:data:`harness.influence.RELATIVE_STEP`). The time counts under the run's ``time_select``.

What it assumes: each kept pair is labelled in its gold order (the
annotator's noise is ignored), and one small step on one pair (no
interactions between pairs, no second-order terms, no training beyond the
first step). It costs no label to read the gold (the ledger never sees it);
the kept pairs are labelled by the run's annotator at one label each, as any
other selector's, so comparisons with other strategies are at equal labels.
It runs only on a testbed that declares ``exact_gold`` (the synthetic one);
elsewhere the run stops with a usage error before anything is built.
"""

from __future__ import annotations

import weakref

import numpy as np

from harness import hookimpl
from harness.errors import SelectionError
from harness.influence import directional_logprobs, trainable, weighted_logprob_gradient
from harness.interfaces import ExactGold, Pairs, SelectionBatch, Selector
from plugins._columns import IMPLICIT_REWARD
from plugins.selectors._pairs import candidate_mask, keep_by_margin, pair_index, usable_responses

_FLOAT_MAX = np.finfo(np.float64).max

_LAST: tuple[weakref.ref, weakref.ref, np.ndarray] | None = None
"""The last pool's s(y), keyed by its ExactGold and token array (weakly): see :meth:`GoldGradient.alignment`."""


# ------------------------------------------------------------------ the criterion


def dpo_weights(implicit: np.ndarray, gold: np.ndarray, a: np.ndarray, b: np.ndarray, beta: float,
                rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(sigmoid(-beta * Delta), sign)`` of responses ``a``/``b`` (of prompts ``rows``, or every prompt).

    ``sign`` is +1 where ``a`` has the higher exact gold (or ties), -1 where
    ``b`` has; Delta = r(winner) - r(loser) of the implicit reward. The weight
    is NaN where an implicit reward is NaN or a gold reward is not finite.
    """
    def take(values: np.ndarray, index: np.ndarray) -> np.ndarray:
        values = np.asarray(values, dtype=np.float64)
        return values[:, index] if rows is None else values[rows, index]

    gold_a, gold_b = take(gold, a), take(gold, b)
    sign = np.where(gold_a >= gold_b, 1.0, -1.0)
    with np.errstate(invalid="ignore", over="ignore"):
        margin = sign * (take(implicit, a) - take(implicit, b))
        weight = 1.0 / (1.0 + np.exp(np.clip(float(beta) * margin, -700.0, 700.0)))
    undefined = np.isnan(margin) | ~np.isfinite(gold_a) | ~np.isfinite(gold_b)
    return np.where(undefined, np.nan, weight), sign


def pair_scores(alignment: np.ndarray, implicit: np.ndarray, gold: np.ndarray, a: np.ndarray, b: np.ndarray,
                beta: float, rows: np.ndarray | None = None) -> np.ndarray:
    """beta * sigmoid(-beta * Delta) * (s(winner) - s(loser)) for responses ``a``/``b`` (higher: keep first).

    ``alignment`` is s(y) = <grad log pi(y), G> of every response
    (:func:`response_alignment`), ``implicit`` the implicit reward, ``gold``
    the exact gold reward, all ``(M, N)``; ``rows`` selects one prompt per
    pair (corpus level), else every prompt gets every pair ``(a[k], b[k])``.
    """
    weight, sign = dpo_weights(implicit, gold, a, b, beta, rows)
    s = np.asarray(alignment, dtype=np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        gap = s[:, a] - s[:, b] if rows is None else s[rows, a] - s[rows, b]
        return float(beta) * weight * sign * gap


# ------------------------------------------------------------------ s(y) = <g(y), G>


def response_alignment(exact: ExactGold, tokens: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """``(M, N)`` float64: s(y) = <grad log pi(y | x), G> for every response, G cross-fitted (module docstring).

    Zero everywhere when the gold gives no gradient (all responses of every
    prompt tie, or the policy has no trainable parameter). The policy is read
    only: no parameter, ``.grad`` or RNG changes.
    """
    rewards = np.asarray(exact.rewards, dtype=np.float64)
    m, n = rewards.shape
    out = np.zeros((m, n))
    if m == 0 or n < 2:
        return out
    centred = rewards - rewards.mean(axis=1, keepdims=True)
    if not np.any(centred) or not trainable(exact.policy):
        return out
    policy = exact.policy
    prompts = np.repeat(np.asarray(exact.prompts, dtype=np.int64), n, axis=0)  # (M*N, P), row m*N + j
    tokens = np.asarray(tokens, dtype=np.int64).reshape(m * n, -1)
    lengths = np.asarray(lengths, dtype=np.int64).reshape(m * n)

    def responses(prompt_rows: np.ndarray) -> np.ndarray:
        return (prompt_rows[:, None] * n + np.arange(n)[None, :]).reshape(-1)

    def gold_gradient(prompt_rows: np.ndarray) -> list:
        """G from the responses of ``prompt_rows``: grad of sum (R - b) log pi(y), averaged over them."""
        flat = responses(prompt_rows)
        weights = centred.reshape(-1)[flat] / (len(prompt_rows) * n)
        return weighted_logprob_gradient(policy, prompts[flat], tokens[flat], lengths[flat], weights)

    def directional(direction: list, prompt_rows: np.ndarray) -> None:
        """``out`` of ``prompt_rows``' responses: the derivative of log pi(y) along ``direction``."""
        flat = responses(prompt_rows)
        out.reshape(-1)[flat] = directional_logprobs(policy, direction, prompts[flat], tokens[flat], lengths[flat])

    halves = [np.flatnonzero(np.arange(m) % 2 == h) for h in (0, 1)]
    if not halves[1].size:  # one prompt: no other half, so its own G
        directional(gold_gradient(halves[0]), halves[0])
        return out
    other = [gold_gradient(halves[1]), gold_gradient(halves[0])]
    for half, direction in zip(halves, other):
        directional(direction, half)
    return out


# ------------------------------------------------------------------ the selector


class GoldGradient(Selector):
    """Reference point (not deployable): pairs whose DPO gradient best aligns with the gradient of expected gold."""

    name = "gold_gradient"
    description = (
        "NOT a deployable strategy: a reference point that reads the world's exact gold reward (free; kept pairs "
        "cost 1 label each). Keeps the pairs whose DPO gradient beta*sigmoid(-beta*Delta)*(grad log pi(y_w) - "
        "grad log pi(y_l)), gold-ordered, best aligns with the gradient of expected gold under pi_{i-1}; instance: "
        "best pair per prompt, corpus: the n_keep best. Synthetic testbed only"
    )
    requires = (IMPLICIT_REWARD,)
    needs_tokens = True
    needs_exact_gold = True

    def alignment(self, batch: SelectionBatch) -> np.ndarray:
        """s(y) of every response of the batch's pool, computed once per pool.

        The two levels of a run are two instances handed the same batch, so the
        result is kept in :data:`_LAST` keyed by the batch's :class:`ExactGold`
        (held weakly) and token array: the corpus level reuses the instance
        level's passes, and nothing outlives the pool's batch. The result is a
        pure function of the batch, so keeping it changes no selection.
        """
        global _LAST
        exact = batch.gold()
        if batch.tokens is None:
            raise SelectionError("gold_gradient needs the responses' tokens (needs_tokens), and the batch has none")
        last = _LAST
        if last is not None and last[0]() is exact and last[1]() is batch.tokens:
            return last[2]
        values = response_alignment(exact, batch.tokens, batch.lengths)
        values.flags.writeable = False
        _LAST = (weakref.ref(exact), weakref.ref(batch.tokens), values)
        return values

    def pair_scores(self, batch: SelectionBatch, pairs: Pairs) -> np.ndarray:
        """``(len(pairs),)`` each pair's score (higher: keep first); NaN where a score is undefined."""
        gold = batch.gold().rewards
        return pair_scores(self.alignment(batch), batch.score(IMPLICIT_REWARD), gold, pairs.a, pairs.b, batch.beta,
                           rows=pairs.prompt)

    def select_instances(self, batch: SelectionBatch, rng: np.random.Generator) -> Pairs:
        gold = batch.gold().rewards
        if batch.n_prompts == 0 or batch.n_responses < 2:
            return Pairs.empty()
        implicit = batch.score(IMPLICIT_REWARD)
        usable = usable_responses(batch.distinct, implicit) & np.isfinite(gold)
        candidates = candidate_mask(usable)
        a, b = pair_index(batch.n_responses)
        scores = pair_scores(self.alignment(batch), implicit, gold, a, b, batch.beta)
        key = np.where(np.isnan(scores), -_FLOAT_MAX, np.clip(scores, -_FLOAT_MAX, _FLOAT_MAX))
        best = np.where(candidates, key, -np.inf).argmax(axis=1)
        prompts = np.flatnonzero(candidates.any(axis=1))
        return Pairs(prompts, a[best[prompts]], b[best[prompts]])

    def select_corpus(self, batch: SelectionBatch, pairs: Pairs, n_keep: int, rng: np.random.Generator) -> Pairs:
        batch.gold()  # a clear error when the batch carries no exact gold, even for an empty pool
        if len(pairs) == 0 or int(n_keep) == 0:  # nothing to rank: no gradient pass
            return pairs.take(keep_by_margin(np.zeros(len(pairs)), n_keep, largest=True))
        return pairs.take(keep_by_margin(self.pair_scores(batch, pairs), n_keep, largest=True))


@hookimpl
def register_selectors(register):
    register(GoldGradient)
