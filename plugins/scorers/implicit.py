"""Implicit-reward scorers: the DPO reward of every response under the current policy.

Three score columns, each named after its scorer (selectors list these names in
``requires``):

* ``implicit_reward``: r(y) = log pi_{i-1}(y|x) - log pi_ref(y|x), summed over
  the response tokens, EOS included (Yang et al. 2024, the un-normalised margin).
* ``implicit_reward_normalized``: r(y) / |y| with |y| the number of response
  tokens, EOS included (Yang et al. 2024, eq. 6).
* ``policy_logprob_mean``: log pi_{i-1}(y|x) / |y|, the mean per-token
  log-prob of the response under the current policy, with no reference model:
  SimPO's reference-free implicit reward (without its beta), which M_AP
  (Huang et al. 2025) uses for its implicit margin, and minus a per-token
  entropy estimate (Muldrew et al. 2024's ``entropy`` selector).

None is multiplied by a beta: margins are compared with each other
only, and selectors that need units of the DPO loss read ``SelectionBatch.beta``.
"""

from __future__ import annotations

import numpy as np

from harness import hookimpl
from harness.interfaces import Scorer

from plugins._columns import IMPLICIT_REWARD, IMPLICIT_REWARD_NORMALIZED, POLICY_LOGPROB_MEAN


def _log_ratio(logp_policy: np.ndarray, logp_ref: np.ndarray) -> np.ndarray:
    policy = np.asarray(logp_policy, dtype=np.float64)
    ref = np.asarray(logp_ref, dtype=np.float64)
    if policy.shape != ref.shape:
        raise ValueError(
            f"logp_policy has shape {policy.shape} but logp_ref has shape {ref.shape}; "
            "both must be (M, N) summed log-probs of the same responses"
        )
    return policy - ref


class ImplicitReward(Scorer):
    """r(y) = log pi(y|x) - log pi_ref(y|x), summed over response tokens (EOS included)."""

    name = IMPLICIT_REWARD
    description = (
        "implicit DPO reward log pi(y|x) - log pi_ref(y|x), summed over the response tokens "
        "(EOS included)"
    )

    def score(
        self, *, logp_policy: np.ndarray, logp_ref: np.ndarray, lengths: np.ndarray
    ) -> np.ndarray:
        return _log_ratio(logp_policy, logp_ref)


def _per_token(values: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """``values / lengths`` as float64, after checking shapes and that every length counts EOS."""
    lengths = np.asarray(lengths)
    if lengths.shape != values.shape:
        raise ValueError(
            f"lengths has shape {lengths.shape} but the log-probs have shape {values.shape}"
        )
    if lengths.size and lengths.min() < 1:
        raise ValueError(
            "every response has at least one scored token (its EOS); got a length < 1, "
            "so the lengths are not counting EOS or the batch is padded with empty responses"
        )
    return values / lengths.astype(np.float64)


class ImplicitRewardNormalized(Scorer):
    """r(y) / |y|: the implicit reward divided by the response length, EOS included (paper eq. 6)."""

    name = IMPLICIT_REWARD_NORMALIZED
    description = (
        "length-normalised implicit reward (log pi(y|x) - log pi_ref(y|x)) / |y|, "
        "|y| = response tokens including EOS (Yang et al. 2024, eq. 6)"
    )

    def score(
        self, *, logp_policy: np.ndarray, logp_ref: np.ndarray, lengths: np.ndarray
    ) -> np.ndarray:
        return _per_token(_log_ratio(logp_policy, logp_ref), lengths)


class PolicyLogprobMean(Scorer):
    """log pi(y|x) / |y|: the policy's mean per-token log-prob, reference-free (SimPO style)."""

    name = POLICY_LOGPROB_MEAN
    description = (
        "mean per-token log-prob under the current policy, log pi(y|x) / |y| (EOS included), "
        "reference-free: SimPO's implicit reward without beta, used by M_AP"
    )

    def score(
        self, *, logp_policy: np.ndarray, logp_ref: np.ndarray, lengths: np.ndarray
    ) -> np.ndarray:
        return _per_token(np.asarray(logp_policy, dtype=np.float64), lengths)


@hookimpl
def register_scorers(register):
    register(ImplicitReward)
    register(ImplicitRewardNormalized)
    register(PolicyLogprobMean)
