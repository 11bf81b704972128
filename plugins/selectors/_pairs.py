"""Machinery shared by the built-in pair selectors (not a plugin; registers nothing).

Everything is vectorised over prompts: no Python loop over the M prompts of a
pool. The candidate pairs of a prompt are the N(N-1)/2 pairs ``a < b`` in row-major
order (``np.triu_indices(N, 1)``: (0,1), (0,2), ..., (1,2), ...), which is the
upper triangle of the (N, N) margin matrix with the diagonal and the lower
triangle left out rather than computed and masked.

A response is *usable* when ``batch.distinct`` marks it (it does not repeat an
earlier response of its prompt) and its score is finite. NaN (and +-inf)
scores are treated as invalid: such a response is never put in a pair by the
instance-level margin selectors, and a prompt with fewer than two usable
responses gives no pair.

For selectors that read explicit scores or prompt-level scores:
:func:`extreme_score_pairs` (the max-min pair of each prompt),
:func:`zscore` (ddof 0, NaN-aware, 0 for a constant column),
:func:`keep_uniform` (the ``random`` selector's corpus draw) and
:func:`prompt_means` (a per-prompt mean of finite scores).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from harness.interfaces import Pairs

_FLOAT_MAX = np.finfo(np.float64).max


@lru_cache(maxsize=64)
def pair_index(n_responses: int) -> tuple[np.ndarray, np.ndarray]:
    """``(a, b)``: the N(N-1)/2 candidate pairs ``a < b`` of one prompt, in row-major order."""
    a, b = np.triu_indices(n_responses, k=1)
    a = a.astype(np.int64)
    b = b.astype(np.int64)
    a.flags.writeable = False
    b.flags.writeable = False
    return a, b


def usable_responses(distinct: np.ndarray, scores: np.ndarray | None = None) -> np.ndarray:
    """``(M, N)`` bool: the response is distinct and (when ``scores`` is given) finitely scored."""
    usable = np.asarray(distinct, dtype=bool)
    if scores is not None:
        usable = usable & np.isfinite(scores)
    return usable


def candidate_mask(usable: np.ndarray) -> np.ndarray:
    """``(M, P)`` bool: candidate pair ``p`` of each prompt joins two usable responses."""
    a, b = pair_index(usable.shape[1])
    return usable[:, a] & usable[:, b]


def candidate_margins(scores: np.ndarray) -> np.ndarray:
    """``(M, P)`` float64: |r(a) - r(b)| for every candidate pair of every prompt."""
    a, b = pair_index(scores.shape[1])
    with np.errstate(invalid="ignore", over="ignore"):
        return np.abs(scores[:, a] - scores[:, b])


def extreme_margin_pairs(scores: np.ndarray, distinct: np.ndarray, *, largest: bool) -> Pairs:
    """One pair per prompt: the candidate pair with the smallest (or largest) margin.

    Only pairs of two usable responses compete (see the module docstring); ties
    go to the first pair in row-major order (``argmin``/``argmax`` return the
    first extreme). Prompts without a usable pair give no pair. Returned pairs
    have ``a < b`` and are ordered by prompt.
    """
    scores = np.asarray(scores, dtype=np.float64)
    n_prompts, n_responses = scores.shape
    if n_prompts == 0 or n_responses < 2:
        return Pairs.empty()
    candidates = candidate_mask(usable_responses(distinct, scores))
    margins = candidate_margins(scores)
    if largest:
        # A usable pair's margin is >= 0 (+inf after overflow), so -inf never wins.
        best = np.where(candidates, margins, -np.inf).argmax(axis=1)
    else:
        # Clip an overflowed margin to the largest float so that it still beats
        # the +inf given to the pairs that are not candidates.
        best = np.where(candidates, np.minimum(margins, _FLOAT_MAX), np.inf).argmin(axis=1)
    prompts = np.flatnonzero(candidates.any(axis=1))
    a, b = pair_index(n_responses)
    chosen = best[prompts]
    return Pairs(prompts, a[chosen], b[chosen])


def pair_margins(scores: np.ndarray, pairs: Pairs) -> np.ndarray:
    """``(len(pairs),)`` float64: |r(a) - r(b)| of the given pairs (NaN where a score is NaN)."""
    scores = np.asarray(scores, dtype=np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        return np.abs(scores[pairs.prompt, pairs.a] - scores[pairs.prompt, pairs.b])


def check_n_keep(n_keep: int) -> int:
    """``n_keep`` as an int; a ValueError if it is negative."""
    n_keep = int(n_keep)
    if n_keep < 0:
        raise ValueError(f"n_keep must be >= 0, got {n_keep}")
    return n_keep


def keep_by_margin(margins: np.ndarray, n_keep: int, *, largest: bool) -> np.ndarray:
    """Positions of the ``min(n_keep, len)`` pairs with the smallest (or largest) margin.

    Ranking uses a stable sort, so equal margins keep their given order. A NaN
    margin ranks after every number, for ``largest`` too: such pairs are kept
    only when ``n_keep`` exceeds the number of pairs with a valid margin (the
    corpus contract keeps ``min(n_keep, len(pairs))`` pairs). The positions are
    returned in the order the pairs were given, not in margin order.
    """
    n_keep = min(check_n_keep(n_keep), int(margins.shape[0]))
    key = -margins if largest else margins  # argsort puts NaN last in both cases
    order = np.argsort(key, kind="stable")[:n_keep]
    return np.sort(order)


# ------------------------------------------------------------ explicit scores


def extreme_score_pairs(scores: np.ndarray, usable: np.ndarray) -> Pairs:
    """One pair per prompt: ``a`` = the highest-scored usable response, ``b`` = the lowest.

    This is the best-worst (max-min) pair of an explicit reward: ``a`` is the
    response an explicit judge would choose. ``usable`` (``(M, N)`` bool) marks
    the responses that may be paired; a response with a NaN or infinite score
    is never usable. Ties go to the first response (``argmax``/``argmin``). A
    prompt whose usable responses all score the same (zero explicit range)
    still gives a pair, its first two usable responses, with explicit margin
    0: the authors' max-min code forms a pair there too, and two *distinct*
    responses are never identical. A prompt with fewer than two usable
    responses gives no pair. Returned pairs are ordered by prompt; ``a`` may be
    greater than ``b``.
    """
    scores = np.asarray(scores, dtype=np.float64)
    n_prompts, n_responses = scores.shape
    if n_prompts == 0 or n_responses < 2:
        return Pairs.empty()
    usable = usable_responses(usable, scores)
    seen = np.cumsum(usable, axis=1)
    prompts = np.flatnonzero(seen[:, -1] >= 2)
    usable, seen, scores = usable[prompts], seen[prompts], scores[prompts]
    high = np.where(usable, scores, -np.inf).argmax(axis=1)
    low = np.where(usable, scores, np.inf).argmin(axis=1)
    # With >= 2 usable finite scores, argmax == argmin exactly when they all tie.
    flat = high == low
    first = usable.argmax(axis=1)
    second = (seen == 2).argmax(axis=1)
    return Pairs(prompts, np.where(flat, first, high), np.where(flat, second, low))


def zscore(values: np.ndarray) -> np.ndarray:
    """``(x - mean) / sd`` over the finite entries, sd with ddof 0 (population sd).

    Non-finite entries stay NaN and take no part in the mean and sd. A
    constant column (including a single finite value) gives 0 everywhere, never
    a division by zero. Values are divided by their largest magnitude first
    (z-scores do not change), so huge values cannot overflow the squares.
    """
    values = np.asarray(values, dtype=np.float64)
    out = np.full(values.shape, np.nan)
    finite = np.isfinite(values)
    if not finite.any():
        return out
    kept = values[finite]
    if kept.max() == kept.min():
        out[finite] = 0.0
        return out
    kept = kept / np.abs(kept).max()
    centred = kept - kept.mean()
    sd = math.sqrt(float(np.mean(centred * centred)))
    out[finite] = centred / sd if sd > 0 else 0.0
    return out


def keep_uniform(n_pairs: int, n_keep: int, rng: np.random.Generator) -> np.ndarray:
    """Positions of a uniform random ``min(n_keep, n_pairs)`` of ``n_pairs`` pairs, in given order.

    Draws exactly as the ``random`` selector's corpus level does, so a
    selector whose corpus level is "a uniform random share" keeps the same
    pairs as ``random`` for the same Generator.
    """
    n_keep = min(check_n_keep(n_keep), int(n_pairs))
    if n_keep == 0:
        return np.empty(0, dtype=np.int64)
    keep = rng.choice(int(n_pairs), size=n_keep, replace=False, shuffle=False)
    return np.sort(keep).astype(np.int64)


def prompt_means(scores: np.ndarray) -> np.ndarray:
    """``(M,)`` mean of each prompt's finite scores (NaN for a prompt with none)."""
    scores = np.asarray(scores, dtype=np.float64)
    finite = np.isfinite(scores)
    count = finite.sum(axis=1)
    total = np.where(finite, scores, 0.0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def first_two_distinct(distinct: np.ndarray) -> Pairs:
    """Per prompt, the first two responses marked distinct; prompts with fewer give no pair."""
    distinct = np.asarray(distinct, dtype=bool)
    if distinct.shape[0] == 0 or distinct.shape[1] < 2:
        return Pairs.empty()
    seen = np.cumsum(distinct, axis=1)
    prompts = np.flatnonzero(seen[:, -1] >= 2)
    # argmax returns the first True: the first distinct response, then the
    # response at which the running count of distinct responses reaches 2.
    a = distinct[prompts].argmax(axis=1)
    b = (seen[prompts] == 2).argmax(axis=1)
    return Pairs(prompts, a, b)
