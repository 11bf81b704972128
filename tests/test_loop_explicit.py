"""Budget accounting of selectors that read explicit scores, through the loop and the CLI.

A numpy-only fake world (the one of tests/test_loop.py plus a known gold
reward) and two fake judges: a noisy pointwise gold judge and a proxy that is
*anti*-correlated with gold, so labels taken from the wrong source show up.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from harness.budget import plan_pool
from harness.config import Components, ComponentChoice, RunConfig, build_config, instantiate
from harness.errors import UsageError
from harness.interfaces import Judge, Labels, Selector, TrainResult
from harness.loop import run_experiment
from harness.plugins import load_registry
from harness.experiments.runner import run_record
from leaderboard.store import Leaderboard
from plugins.allocators.schedules import Decrease
from plugins.scorers.implicit import ImplicitReward, ImplicitRewardNormalized, PolicyLogprobMean
from plugins.selectors.explicit import AlignmentPotential, AlignmentPotentialDPO, BestWorst, ExplicitLargest
from tests.conftest import TINY_RUN
from tests.test_loop import FakePolicy, FakeTestbed, FakeTrainer, FakeWorld

N = 4
WEIGHTS = np.array([1.0, 0.37, 0.113])


def gold_of(tokens: np.ndarray) -> np.ndarray:
    return (np.asarray(tokens) * WEIGHTS).sum(axis=-1)


def judged_of(tokens: np.ndarray) -> np.ndarray:
    """The gold judge's pointwise score: gold plus a fixed 'noise' that depends on the response."""
    return gold_of(tokens) + 0.8 * np.sin(np.asarray(tokens) @ np.array([3.1, 1.7, 0.9]))


class GoldWorld(FakeWorld):
    """The fake world with a known gold reward; its annotator is exact on that gold."""

    def gold_rewards(self, prompts, responses):
        return gold_of(responses.tokens)

    def annotate(self, prompts, responses, pairs, rng):
        self.calls.append(("annotate", len(pairs)))
        gold = gold_of(responses.tokens)
        return Labels(prefer_a=gold[pairs.prompt, pairs.a] >= gold[pairs.prompt, pairs.b])


class GoldTestbed(FakeTestbed):
    name = "fake_gold_world"

    def build_world(self, *, seed, reporter):
        self.world = GoldWorld()
        return self.world


class FakeGoldJudge(Judge):
    name = "fake_gold"
    description = "pointwise gold with a response-dependent error"

    def score(self, *, world, prompts, responses, rng):
        world.calls.append(("judge", self.name, responses.lengths.shape))
        return judged_of(responses.tokens)


class FakeProxyJudge(Judge):
    name = "fake_proxy"
    description = "a proxy reward model that ranks responses backwards"

    def score(self, *, world, prompts, responses, rng):
        world.calls.append(("judge", self.name, responses.lengths.shape))
        return -gold_of(responses.tokens)


class RecordingTrainer(FakeTrainer):
    name = "recording"

    def __init__(self, settings=None):
        super().__init__(settings)
        self.data = []

    def train(self, *, policy, data, rng):
        self.data.append(data)
        return TrainResult(FakePolicy(policy.scale + len(data) / 100), steps=1, epochs=1.0,
                           loss_first=0.7, loss_last=0.6)


SCORERS = {
    "implicit_reward": ImplicitReward,
    "implicit_reward_normalized": ImplicitRewardNormalized,
    "policy_logprob_mean": PolicyLogprobMean,
}


def make(selector: Selector, *, corpus: Selector | None = None, budget=300, iterations=3, keep=0.5):
    choice = ComponentChoice("x", {})
    config = RunConfig(testbed=choice, instance_selector=choice, corpus_selector=choice, allocator=choice,
                       trainer=choice, iterations=iterations, budget=budget, keep=keep, n_responses=N, seed=1)
    components = Components(testbed=GoldTestbed(), instance_selector=selector, corpus_selector=corpus or selector,
                            allocator=Decrease(), trainer=RecordingTrainer(), scorers={},
                            gold_judge=FakeGoldJudge(), proxy_judge=FakeProxyJudge())
    for column in components.score_columns:
        if column in SCORERS:
            components.scorers[column] = SCORERS[column]()
    return config, components


def calls(components, kind):
    return [c for c in components.testbed.world.calls if c[0] == kind]


# ------------------------------------------------------------------ proxy source


@pytest.mark.parametrize("selector", [AlignmentPotential(), AlignmentPotentialDPO(), ExplicitLargest()],
                         ids=lambda s: s.name)
def test_proxy_source_charges_the_kept_pairs_and_counts_m_times_n_proxy_calls(selector):
    config, components = make(selector)
    assert components.pool_costs(N) == (0, 1)
    result = run_experiment(config, components)
    rows = result.iterations[1:]
    assert [row["labels"] for row in rows] == [150, 100, 50]  # the plan: one gold label per kept pair
    assert [row["prompts"] for row in rows] == [300, 200, 100]  # keep 0.5: two prompts per label
    for row in rows:
        assert row["sel_pairs"] == row["labels"]
        assert row["proxy_calls"] == row["prompts"] * N
        assert row["labels_pool"] == 0
    assert calls(components, "annotate") == [("annotate", 150), ("annotate", 100), ("annotate", 50)]
    assert calls(components, "judge") == [("judge", "fake_proxy", (m, N)) for m in (300, 200, 100)]
    assert result.final["labels_used"] == 300 == config.budget
    assert result.final["proxy_calls"] == (300 + 200 + 100) * N
    # Kept pairs were labelled by the gold annotator, not by the (backwards) proxy scores.
    for data in components.trainer.data:
        assert np.all(gold_of(data.chosen) >= gold_of(data.rejected))


# ------------------------------------------------------------------ gold source


GOLD_SELECTORS = [AlignmentPotential({"explicit_source": "gold"}), AlignmentPotentialDPO({"explicit_source": "gold"}),
                  ExplicitLargest({"explicit_source": "gold"}), BestWorst()]


@pytest.mark.parametrize("budget", [300, 301, 97])
@pytest.mark.parametrize("selector", GOLD_SELECTORS, ids=lambda s: s.name)
def test_gold_source_charges_n_labels_per_pool_prompt_and_nothing_per_pair(selector, budget):
    config, components = make(selector, budget=budget)
    assert components.explicit_source == "gold" and components.pool_costs(N) == (N, 0)
    result = run_experiment(config, components)
    rows = result.iterations[1:]
    for row in rows:
        assert row["labels"] == row["prompts"] * N <= row["labels_planned"]
        assert row["sel_pairs"] == math.floor(config.keep * row["prompts"] + 1e-9)
        assert row["proxy_calls"] == 0
    assert result.final["labels_used"] == sum(row["labels"] for row in rows) <= budget
    assert result.final["proxy_calls"] == 0
    assert calls(components, "annotate") == []  # no pairwise label is ever bought
    assert calls(components, "judge") == [("judge", "fake_gold", (row["prompts"], N)) for row in rows]


@pytest.mark.parametrize("selector", GOLD_SELECTORS, ids=lambda s: s.name)
def test_gold_source_labels_pairs_by_the_gold_judges_scores(selector):
    config, components = make(selector)
    result = run_experiment(config, components)
    data = components.trainer.data
    assert sum(len(d) for d in data) == sum(row["sel_pairs"] for row in result.iterations[1:]) > 0
    disagreements = 0
    for d in data:
        # chosen = the higher *judged* score, even where the exact gold says otherwise
        assert np.all(judged_of(d.chosen) >= judged_of(d.rejected))
        disagreements += int(np.sum(gold_of(d.chosen) < gold_of(d.rejected)))
    # the loop reports those label errors against the exact gold, where the world knows it
    noise = [row["sel_label_noise"] for row in result.iterations[1:]]
    assert all(0.0 <= x <= 1.0 for x in noise)
    assert (disagreements > 0) == (max(noise) > 0)


def test_gold_source_reports_the_pool_labels():
    """``labels_pool`` is what the pool cost before selection: N per prompt, all the labels of the iteration.

    ``harness.budget.PoolPlan.prompt_labels`` is ``labels - pairs``, right only when a pair costs 1.
    """
    config, components = make(BestWorst())
    rows = run_experiment(config, components).iterations[1:]
    assert [row["labels_pool"] for row in rows] == [row["prompts"] * N for row in rows]


def test_plan_pool_for_gold_explicit_scores():
    # 150 labels at N = 4 per prompt: 37 prompts (148 labels), half of them kept as pairs, free.
    pool = plan_pool(150, 0.5, N, 0)
    assert (pool.prompts, pool.pairs, pool.labels) == (37, 18, 148)
    pool = plan_pool(150, 1.0, N, 0)  # bestworst's classic recipe (--keep 1): every prompt's pair
    assert (pool.prompts, pool.pairs, pool.labels) == (37, 37, 148)


def test_mixing_explicit_sources_across_levels_is_a_usage_error():
    registry = load_registry()
    with pytest.raises(UsageError, match="different sources"):
        build_config(registry, instance_selector="map", corpus_selector="bestworst", budget=800)
    # One source for both levels is fine, and a level without explicit scores does not count.
    config = build_config(registry, instance_selector="map", corpus_selector="explicit_largest",
                          options=["explicit_source=gold"], budget=800)
    assert instantiate(registry, config).explicit_source == "gold"
    config = build_config(registry, instance_selector="bestworst", corpus_selector="random", budget=800)
    components = instantiate(registry, config)
    assert components.explicit_source == "gold" and components.pool_costs(8) == (8, 0)


def test_explicit_source_option_reaches_the_selector_through_the_config():
    registry = load_registry()
    config = build_config(registry, selector="map", budget=800)
    components = instantiate(registry, config)
    assert components.explicit_source == "proxy" and components.explicit_judge().name == "synthetic_proxy"
    assert components.pool_costs(8) == (0, 1)
    config = build_config(registry, selector="map", options=["explicit_source=gold", "w=2.5"], budget=800)
    components = instantiate(registry, config)
    assert config.instance_selector.settings == {"w": 2.5, "explicit_source": "gold"}
    assert components.explicit_source == "gold" and components.explicit_judge().name == "synthetic_gold"
    assert components.scorers.keys() == {"policy_logprob_mean"}  # explicit scores come from the judge


# ------------------------------------------------------------------ run rows and the CLI


@pytest.mark.parametrize("selector, source, judge", [
    ("map", "proxy", "synthetic_proxy"), ("bestworst", "gold", "synthetic_gold"), ("random", "none", "none"),
])
def test_the_run_record_names_the_explicit_source_and_judge(selector, source, judge):
    registry = load_registry()
    config = build_config(registry, selector=selector, budget=800)
    record = run_record(config, instantiate(registry, config), registry)
    assert (record["explicit_source"], record["explicit_judge"]) == (source, judge)
    assert "scorer:explicit_reward" not in record["plugins"]  # filled by a judge, not a scorer


def test_harness_run_bestworst_end_to_end(cli, db_path):
    result = cli("run", *TINY_RUN, "--selector", "bestworst", "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout.strip().splitlines()[-1])
    (run,) = Leaderboard(db_path).runs(status=None)
    assert run["status"] == "finished" and run["id"] == out["run_id"]
    assert run["explicit_source"] == "gold" and run["explicit_judge"] == "synthetic_gold"
    assert 0 < run["labels_used"] <= run["budget"] == 80
    rows = Leaderboard(db_path).iterations(run["id"])[1:]
    assert [row["labels"] for row in rows] == [row["prompts"] * 8 for row in rows]  # N = 8 gold scores per prompt
    assert all(row["proxy_calls"] == 0 for row in rows)


def test_harness_run_map_with_a_proxy_end_to_end(cli, db_path):
    result = cli("run", *TINY_RUN, "--selector", "map", "-o", "w=2.5", "--keep", "0.4")
    assert result.exit_code == 0, result.output
    (run,) = Leaderboard(db_path).runs(status=None)
    assert run["explicit_source"] == "proxy" and run["explicit_judge"] == "synthetic_proxy"
    assert run["labels_used"] == 80
    rows = Leaderboard(db_path).iterations(run["id"])[1:]
    assert [row["labels"] for row in rows] == [40, 40]
    assert [row["proxy_calls"] for row in rows] == [row["prompts"] * 8 for row in rows] == [800, 800]

