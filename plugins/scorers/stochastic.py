"""Stochastic scorers (scorer contract 2): columns from K stochastic passes of the policy.

Each is a :class:`~harness.interfaces.Scorer` with ``stochastic = True``, so
the loop asks the world for ``(K, M, N)`` summed log-probs of pi_{i-1} from K
stochastic forward passes (:meth:`harness.interfaces.World.stochastic_logprobs`:
MC dropout, or a world's declared surrogate) and passes them as
``logp_samples``. K comes from the run's selectors (``stochastic_passes``,
e.g. ``-o passes=5``), 5 when they name none. Three columns:

* ``stochastic_logprob_mean``: m(y), the mean over the K passes of log pi(y|x);
* ``stochastic_logprob_sd``: s(y), their standard deviation with ddof 1 (the
  unbiased variance that Mehta et al.'s code takes with ``torch.var``), 0 for
  a response whose passes all agree;
* ``stochastic_reward_mean``: m(y) - log pi_ref(y|x), the implicit reward with
  the policy term averaged over the passes (the reference is scored once,
  deterministically).

All are sums over the response tokens, EOS included, like ``implicit_reward``,
and none is multiplied by a beta. The deterministic ``logp_policy`` is not
used: m(y) is the mean of the stochastic passes, not of the plain forward.
"""

from __future__ import annotations

import numpy as np

from harness import hookimpl
from harness.interfaces import Scorer
from plugins._columns import STOCHASTIC_LOGPROB_MEAN, STOCHASTIC_LOGPROB_SD, STOCHASTIC_REWARD_MEAN


def _samples(logp_samples: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``logp_samples`` as float64 ``(K, M, N)`` with K >= 2, checked against the ``(M, N)`` inputs."""
    samples = np.asarray(logp_samples, dtype=np.float64)
    if samples.ndim != 3 or samples.shape[1:] != tuple(shape):
        raise ValueError(
            f"logp_samples has shape {samples.shape}; a stochastic scorer needs (K, M, N) with (M, N) = {tuple(shape)}"
        )
    if samples.shape[0] < 2:
        raise ValueError(f"a standard deviation needs at least 2 stochastic passes, got K = {samples.shape[0]}")
    return samples


def pass_mean(logp_samples: np.ndarray) -> np.ndarray:
    """``(M, N)`` mean over the passes."""
    return np.asarray(logp_samples, dtype=np.float64).mean(axis=0)


def pass_sd(logp_samples: np.ndarray) -> np.ndarray:
    """``(M, N)`` standard deviation over the passes, ddof 1, computed about the mean (no cancellation)."""
    samples = np.asarray(logp_samples, dtype=np.float64)
    centred = samples - samples.mean(axis=0, keepdims=True)
    return np.sqrt((centred * centred).sum(axis=0) / (samples.shape[0] - 1))


class _StochasticScorer(Scorer):
    stochastic = True


class StochasticLogprobMean(_StochasticScorer):
    """m(y): mean over K stochastic passes of the summed log pi(y|x)."""

    name = STOCHASTIC_LOGPROB_MEAN
    description = (
        "m(y), the mean over K stochastic passes (MC dropout or the world's surrogate) of log pi(y|x) summed "
        "over the response tokens; scorer contract 2"
    )

    def score(self, *, logp_policy: np.ndarray, logp_ref: np.ndarray, lengths: np.ndarray,
              logp_samples: np.ndarray) -> np.ndarray:
        return pass_mean(_samples(logp_samples, np.shape(lengths)))


class StochasticLogprobSd(_StochasticScorer):
    """s(y): standard deviation (ddof 1) over K stochastic passes of the summed log pi(y|x)."""

    name = STOCHASTIC_LOGPROB_SD
    description = (
        "s(y), the standard deviation (ddof 1) over K stochastic passes of log pi(y|x) summed over the "
        "response tokens; scorer contract 2"
    )

    def score(self, *, logp_policy: np.ndarray, logp_ref: np.ndarray, lengths: np.ndarray,
              logp_samples: np.ndarray) -> np.ndarray:
        return pass_sd(_samples(logp_samples, np.shape(lengths)))


class StochasticRewardMean(_StochasticScorer):
    """m(y) - log pi_ref(y|x): the implicit reward with the policy term averaged over K stochastic passes."""

    name = STOCHASTIC_REWARD_MEAN
    description = (
        "m(y) - log pi_ref(y|x), the implicit reward with log pi averaged over K stochastic passes "
        "(the reference scored once, deterministically); scorer contract 2"
    )

    def score(self, *, logp_policy: np.ndarray, logp_ref: np.ndarray, lengths: np.ndarray,
              logp_samples: np.ndarray) -> np.ndarray:
        ref = np.asarray(logp_ref, dtype=np.float64)
        if ref.shape != np.shape(lengths):
            raise ValueError(f"logp_ref has shape {ref.shape} but lengths has shape {np.shape(lengths)}")
        return pass_mean(_samples(logp_samples, ref.shape)) - ref


@hookimpl
def register_scorers(register):
    register(StochasticLogprobMean)
    register(StochasticLogprobSd)
    register(StochasticRewardMean)
