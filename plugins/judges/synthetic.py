"""Judges of the synthetic testbed: its gold reward, scored pointwise, and a proxy reward model.

``synthetic_gold`` is the world's exact gold reward plus Gaussian noise. A
pointwise gold score is noisy like the pairwise annotator: with noise
sd = 2 tau / sqrt(pi), the probability that the higher-scored of two
responses is the better one has the same slope at a tie as the Bradley-Terry
annotator with temperature tau (0.34 for the default tau = 0.3). Evaluation
always uses the exact gold reward, so no strategy can buy the evaluator's answer.

``synthetic_proxy`` is a misspecified reward model: the gold reward's form with
every table mixed with an independent one, fidelity * gold + sqrt(1 - fidelity^2)
* other, so its correlation with gold is about ``fidelity``. Optional length
bias and noise add the usual reward-model flaws. It is deterministic for a
world and its options, like a trained reward model.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from harness import hookimpl
from harness.errors import UsageError
from harness.interfaces import Judge
from harness.options import Option


def _synthetic_world(world, judge: str):
    if not (hasattr(world, "gold_rewards") and hasattr(world, "tables")):
        raise UsageError(f"judge {judge!r} scores only the synthetic testbed's worlds, not {type(world).__name__}")
    return world


class SyntheticGold(Judge):
    name = "synthetic_gold"
    description = "The synthetic world's gold reward, scored pointwise with Gaussian noise (1 gold label per response)"
    options = (
        Option("noise", float, 0.34, "sd of the noise on each gold score (0.34 matches the annotator's tau 0.3)",
               min=0.0, max=100.0),
    )

    def score(self, *, world, prompts, responses, rng):
        gold = _synthetic_world(world, self.name).gold_rewards(prompts, responses)
        if self.settings["noise"] == 0:
            return gold
        return gold + rng.normal(0.0, self.settings["noise"], size=gold.shape)


class SyntheticProxy(Judge):
    name = "synthetic_proxy"
    description = "A misspecified reward model whose correlation with gold is about `fidelity` (calls not charged)"
    options = (
        Option("fidelity", float, 0.8, "weight of the gold tables in the proxy's tables (1 = exact gold)",
               min=0.0, max=1.0),
        Option("length_bias", float, 0.0, "reward added per content token (reward models often favour length)",
               min=-10.0, max=10.0),
        Option("noise", float, 0.0, "sd of Gaussian noise on every proxy score", min=0.0, max=100.0),
    )

    def score(self, *, world, prompts, responses, rng):
        world = _synthetic_world(world, self.name)
        scores = world.gold_rewards(prompts, responses, tables=self._tables(world))
        scores = scores + self.settings["length_bias"] * (responses.lengths - 1)
        if self.settings["noise"] > 0:
            scores = scores + rng.normal(0.0, self.settings["noise"], size=scores.shape)
        return scores

    def _tables(self, world):
        """The world's gold tables mixed with independent ones drawn from the world seed."""
        gold = world.tables
        f = self.settings["fidelity"]
        other = math.sqrt(max(0.0, 1.0 - f * f))
        rng = np.random.default_rng(np.random.SeedSequence([int(world.seed), 0x70726F7879]))  # "proxy"
        bigram = rng.normal(0.0, gold.gold_bigram.std() or 1.0, size=gold.gold_bigram.shape)
        prompt = rng.normal(0.0, gold.gold_prompt.std() or 1.0, size=gold.gold_prompt.shape)
        token = rng.normal(0.0, gold.gold_token.std() or 1.0, size=gold.gold_token.shape)
        return replace(
            gold,
            gold_bigram=f * gold.gold_bigram + other * bigram,
            gold_prompt=f * gold.gold_prompt + other * prompt,
            gold_token=f * gold.gold_token + other * token,
        )


@hookimpl
def register_judges(register):
    register(SyntheticGold)
    register(SyntheticProxy)
