"""Diagnostics of the pairs selected in one iteration (DESIGN.md section 3, pitfalls 1 and 3).

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
    agreement = np.where(delta > 0, 1.0, np.where(delta < 0, 0.0, 0.5))
    return {
        "pairs": n,
        "mean_abs_margin": float(np.mean(np.abs(delta))),
        "beta_margin_q10": float(q10),
        "beta_margin_q50": float(q50),
        "beta_margin_q90": float(q90),
        "mean_dpo_weight": float(np.mean(_sigmoid(-scaled))),
        "ranking_accuracy": float(np.mean(agreement)),
        "label_noise": None if gold_agrees is None else float(1.0 - np.mean(gold_agrees)),
        "selected_kl": float(np.mean(np.concatenate([reward_chosen, reward_rejected]))),
    }
