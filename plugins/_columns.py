"""The score columns the built-in scorers provide, named once for the scorers and the selectors that read them.

A selector declares the columns it reads in ``requires``; the run computes
each with the scorer registered under that name (``harness list scorers``).
"""

IMPLICIT_REWARD = "implicit_reward"
"""r(y) = log pi(y|x) - log pi_ref(y|x), the DPO implicit reward (beta left out)."""

IMPLICIT_REWARD_NORMALIZED = "implicit_reward_normalized"
"""r(y) / |y|: the implicit reward per response token (Yang et al. 2024, eq. 6)."""

POLICY_LOGPROB_MEAN = "policy_logprob_mean"
"""log pi(y|x) / |y|: the policy's mean token log-probability (minus a per-token entropy estimate)."""

STOCHASTIC_LOGPROB_MEAN = "stochastic_logprob_mean"
"""m(y): the mean over K stochastic passes of log pi(y|x), summed over the response tokens (scorer contract 2)."""

STOCHASTIC_LOGPROB_SD = "stochastic_logprob_sd"
"""s(y): the standard deviation (ddof 1) over K stochastic passes of log pi(y|x), summed over the response tokens."""

STOCHASTIC_REWARD_MEAN = "stochastic_reward_mean"
"""m(y) - log pi_ref(y|x): the implicit reward with the policy term averaged over K stochastic passes."""
