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
