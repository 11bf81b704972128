"""Diagnostics of the pool and of the pairs selected in one iteration.

They tell a user which regime the run is in: beta times the implicit margin
and the DPO weight sigmoid(-beta * margin) show whether the loss saturates,
ranking accuracy shows how often the policy already agreed with the label,
and the selected-data KL (Yang et al. Figure 4c) is the distribution shift of
the pairs before training.
"""

from __future__ import annotations

import numpy as np


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def agreement_share(delta: np.ndarray) -> float:
    """Share of pairs whose signed implicit margin ``delta`` (winner minus loser) agrees with the label; 0 counts ½."""
    return float(np.mean(np.where(delta > 0, 1.0, np.where(delta < 0, 0.0, 0.5))))


def selected_pair_diagnostics(
    *,
    reward_chosen: np.ndarray,
    reward_rejected: np.ndarray,
    beta: float,
    gold_agrees: np.ndarray | None,
) -> dict[str, float | None]:
    """Summary statistics of the annotated pairs before training.

    ``reward_chosen``/``reward_rejected`` are the implicit rewards
    log pi_{i-1}(y) - log pi_ref(y) of the labelled winner and loser.
    """
    n = int(reward_chosen.shape[0])
    if n == 0:
        return {"pairs": 0}
    delta = reward_chosen - reward_rejected  # signed by the label
    scaled = beta * delta
    q10, q50, q90 = np.quantile(scaled, [0.1, 0.5, 0.9])
    return {
        "pairs": n,
        "mean_abs_margin": float(np.mean(np.abs(delta))),
        "beta_margin_q10": float(q10),
        "beta_margin_q50": float(q50),
        "beta_margin_q90": float(q90),
        "mean_dpo_weight": float(np.mean(_sigmoid(-scaled))),
        "ranking_accuracy": agreement_share(delta),
        "label_noise": None if gold_agrees is None else float(1.0 - np.mean(gold_agrees)),
        "selected_kl": float(np.mean(np.concatenate([reward_chosen, reward_rejected]))),
    }


TINY_MARGIN = 1e-6
"""|beta * margin| below this counts as no margin at all (pi_{i-1} = pi_ref gives exactly 0)."""


def pool_margin_diagnostics(*, reward: np.ndarray, distinct: np.ndarray, beta: float) -> dict[str, float | int]:
    """Whether the implicit margins of the whole pool can tell pairs apart, before anything is selected.

    ``reward`` is the ``(M, N)`` implicit reward log pi_{i-1}(y) - log pi_ref(y)
    of every sampled response; the candidate pairs are the pairs ``a < b`` of
    two distinct responses of a prompt (the pairs a margin selector chooses
    from). Reported: how many candidates there are, the median |beta * margin|
    over them, the share below :data:`TINY_MARGIN` (all of them when
    pi_{i-1} = pi_ref), and the share of prompts whose smallest-margin and
    largest-margin candidates differ (ties going to the first candidate, as the
    margin selectors break them): with all-zero margins it is 0, and a
    smallest-margin and a largest-margin strategy buy the same pairs.
    """
    reward = np.asarray(reward, dtype=np.float64)
    m, n = reward.shape
    a, b = np.triu_indices(n, k=1)
    usable = np.asarray(distinct, dtype=bool) & np.isfinite(reward)
    candidates = usable[:, a] & usable[:, b]
    with np.errstate(invalid="ignore"):
        margins = np.abs(beta * (reward[:, a] - reward[:, b]))
    values = margins[candidates]
    if values.size == 0:
        return {"pool_pairs": 0}
    prompts = candidates.any(axis=1)
    low = np.where(candidates, margins, np.inf).argmin(axis=1)
    high = np.where(candidates, margins, -np.inf).argmax(axis=1)
    return {
        "pool_pairs": int(values.size),
        "pool_beta_margin_median": float(np.median(values)),
        "pool_tiny_margin_share": float(np.mean(values < TINY_MARGIN)),
        "pool_extremes_differ_share": float(np.mean(low[prompts] != high[prompts])),
    }


def pool_gold_diagnostics(*, gold: np.ndarray, distinct: np.ndarray) -> dict[str, float]:
    """Whether the gold reward can tell the pool's responses apart: the signal a selection effect needs.

    ``gold`` is the ``(M, N)`` exact gold reward of every sampled response (a
    world's :meth:`World.gold_rewards`), ``distinct`` marks the responses that
    are not copies of an earlier one. Reported: the mean gold over the pool,
    and the share of prompts with at least one pair of distinct responses of
    different gold (a prompt where every response is equally good, or equally
    bad, gives any selector only ties).
    """
    gold = np.asarray(gold, dtype=np.float64)
    usable = np.asarray(distinct, dtype=bool)
    if gold.size == 0:
        return {}
    high = np.where(usable, gold, -np.inf).max(axis=1)
    low = np.where(usable, gold, np.inf).min(axis=1)
    return {
        "pool_gold_mean": float(gold.mean()),
        "pool_gold_split_share": float(np.mean(high > low)),
    }

