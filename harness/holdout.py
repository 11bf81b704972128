"""Held-out labels: a share of an iteration's bought pairs kept out of training, to measure agreement.

An allocator that declares ``holdout`` (allocator contract 2) asks the loop to
keep that share of each iteration's labelled pairs (ties dropped) out of
training, in every iteration but the last (no decision follows the last one).
After training, the loop measures how often pi_{i-1} and pi_i agree with those
labels: the gain is what training on the other pairs taught about labels it
never saw, a figure a user of the loop has without asking the evaluator.
"""

from __future__ import annotations

import numpy as np

from harness.diagnostics import agreement_share
from harness.interfaces import Pairs, winners_and_losers


def holdout_positions(pairs: int, share: float, rng: np.random.Generator) -> np.ndarray:
    """Sorted positions of the held-out pairs: ``round(share * pairs)`` of them, drawn without replacement.

    At least one pair stays in training whenever there are pairs.
    """
    if not 0.0 <= share < 1.0:
        raise ValueError(f"a holdout share must lie in [0, 1), got {share!r}")
    count = min(int(round(share * pairs)), max(pairs - 1, 0))
    if count == 0:
        return np.empty(0, dtype=np.int64)
    return np.sort(rng.choice(pairs, size=count, replace=False)).astype(np.int64)


def agreement(reward: np.ndarray, pairs: Pairs, prefer_a: np.ndarray) -> float:
    """Share of ``pairs`` whose label the implicit ``reward`` ``(M, N)`` agrees with; a tie in reward counts one half."""
    if len(pairs) == 0:
        return float("nan")
    winner, loser = winners_and_losers(pairs, prefer_a)
    return agreement_share(reward[pairs.prompt, winner] - reward[pairs.prompt, loser])
