"""Active-preference-learning selectors after Muldrew et al. 2024.

Muldrew, Hayes, Zhang and Barber, "Active Preference Learning for Large
Language Models", ICML 2024 (arXiv:2402.08114), acquire prompt/completion
pairs for DPO with two scores:

* *preference-model certainty*: how sure the DPO implicit preference model
  p(a > b) = sigmoid(beta (r(a) - r(b))), r = log pi_theta - log pi_ref, is of
  its ranking, |r(a) - r(b)| scaled by beta. The paper finds that acquiring the
  *most certain* pairs (the model is confidently wrong on the ones that teach
  it most) beats random.
* *predictive entropy* of the language model on the prompt, H(Y | x),
  estimated by Monte Carlo from completions sampled for the prompt: a
  prompt-level score, not a pair margin.

Selectors (each is a plain harness selector; combine levels freely, e.g.
``--instance-selector certainty --corpus-selector entropy`` keeps the
highest-entropy prompts, each with its most certain pair):

* ``certainty``: exactly ``largest`` under another name. beta > 0 scales every
  margin alike, so the most certain pair of a prompt, and the most certain
  pairs of the pool, are the largest-|r(a) - r(b)| ones. The same ``normalize``
  option; same pairs as ``largest`` for any input.
* ``uncertainty``: exactly ``smallest`` under another name. The entropy of the
  Bernoulli sigmoid(beta d) is symmetric in d and decreasing in |d|, so the
  most uncertain pairs are the smallest-margin ones.
* ``entropy``: corpus level keeps the pairs whose prompts have the highest
  predictive entropy, estimated per token as H(x) = mean over the prompt's N
  samples of -log pi_theta(y|x) / |y| (minus the prompt's mean of the
  ``policy_logprob_mean`` column). All N samples count, repeats included: they
  are i.i.d. draws, which is what the Monte Carlo estimate needs; a NaN score
  is left out of the mean, and a prompt with no finite score ranks last. Ties
  keep the earliest offered pair. Instance level: the first two distinct
  (finitely scored) responses, a random pair, as in the paper's two
  completions per prompt.

Where this differs from the paper:

* The paper samples two completions per prompt, so its certainty compares one
  pair; ``certainty``/``uncertainty`` here choose among the N(N-1)/2 pairs of N
  samples at the instance level. ``--responses 2`` gives the paper's setting.
* The paper's hybrid acquisition filters prompts by entropy and then picks by
  certainty within that subset, in one acquisition step; here the two levels
  run in the harness's order (a pair per prompt first, then a share of the
  pool), which keeps the same prompts only when one pair per prompt is offered.
* ``entropy`` uses a per-token (length-normalised) estimate; the summed
  sequence log-prob would rank prompts by how long their answers are as much
  as by how uncertain the model is.
* The paper retrains on all labels acquired so far at each acquisition step;
  the harness trains pi_i from pi_{i-1} on the new pairs, and its allocators
  decide how many labels each iteration gets.
"""

from __future__ import annotations

import numpy as np

from harness import hookimpl
from harness.interfaces import Pairs, SelectionBatch, Selector
from plugins._columns import POLICY_LOGPROB_MEAN
from plugins.selectors._margin import MarginSelector
from plugins.selectors._pairs import first_two_distinct, keep_by_margin, prompt_means, usable_responses


class Certainty(MarginSelector):
    """Muldrew et al.'s preference-model certainty: identical to ``largest``."""

    name = "certainty"
    description = (
        "Muldrew et al. 2024 preference certainty: the largest |beta(r(a)-r(b))| at both levels; "
        "identical to largest (beta scales every margin alike); -o normalize as largest"
    )
    largest = True


class Uncertainty(MarginSelector):
    """Muldrew et al.'s preference uncertainty (entropy of sigmoid(beta d)): identical to ``smallest``."""

    name = "uncertainty"
    description = (
        "most uncertain implicit preference, max entropy of sigmoid(beta(r(a)-r(b))) at both levels; "
        "identical to smallest (that entropy decreases in |r(a)-r(b)|); -o normalize as smallest"
    )
    largest = False


def predictive_entropy(policy_logprob_mean: np.ndarray) -> np.ndarray:
    """``(M,)`` per-token predictive entropy of each prompt: minus the mean of its finite scores."""
    return -prompt_means(policy_logprob_mean)


class PredictiveEntropy(Selector):
    """Keep the pairs of the prompts with the highest per-token predictive entropy."""

    name = "entropy"
    description = (
        "Muldrew et al. 2024 predictive entropy: instance, the first two distinct responses; corpus, "
        "keep the pairs whose prompts have the highest mean -log pi(y|x)/|y| over their N samples"
    )
    requires = (POLICY_LOGPROB_MEAN,)

    def select_instances(self, batch: SelectionBatch, rng: np.random.Generator) -> Pairs:
        return first_two_distinct(usable_responses(batch.distinct, batch.score(POLICY_LOGPROB_MEAN)))

    def select_corpus(
        self, batch: SelectionBatch, pairs: Pairs, n_keep: int, rng: np.random.Generator
    ) -> Pairs:
        entropy = predictive_entropy(batch.score(POLICY_LOGPROB_MEAN))
        return pairs.take(keep_by_margin(entropy[pairs.prompt], n_keep, largest=True))


@hookimpl
def register_selectors(register):
    register(Certainty)
    register(Uncertainty)
    register(PredictiveEntropy)
