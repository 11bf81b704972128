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
"""

from __future__ import annotations

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
