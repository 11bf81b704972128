"""The loop against a numpy-only fake world: order of steps, ledger, what gets scored, contract checks."""

from dataclasses import dataclass, field

import numpy as np
import pytest

from harness.config import Components, ComponentChoice, RunConfig
from harness.errors import SelectionError
from harness.interfaces import Labels, Pairs, Responses, Selector, Testbed, Trainer, TrainResult
from harness.loop import run_experiment
from plugins.allocators.schedules import Decrease
from plugins.scorers.implicit import ImplicitReward
from plugins.selectors.margin import SmallestMargin
from plugins.selectors.random import RandomSelector


@dataclass
class FakePolicy:
    scale: float


@dataclass
class FakeWorld:
    calls: list = field(default_factory=list)

    def __post_init__(self):
        self.reference_policy = FakePolicy(0.0)
        self.initial_policy = FakePolicy(1.0)

    def draw_prompts(self, n, rng):
        return rng.integers(0, 5, size=(n, 2))

    def sample(self, policy, prompts, n_responses, rng):
        tokens = rng.integers(0, 4, size=(len(prompts), n_responses, 3))
        return Responses(tokens=tokens, lengths=np.full((len(prompts), n_responses), 3))

    def logprobs(self, policy, prompts, responses):
        self.calls.append(("logprobs", responses.tokens.shape[:2]))
        return -policy.scale * responses.tokens.sum(axis=-1).astype(float)

    def annotate(self, prompts, responses, pairs, rng):
        self.calls.append(("annotate", len(pairs)))
        gold = responses.tokens.sum(axis=-1)
        return Labels(prefer_a=gold[pairs.prompt, pairs.a] >= gold[pairs.prompt, pairs.b])

    def evaluate(self, policy, rng):
        return {"win_rate": min(1.0, 0.1 * policy.scale), "win_rate_se": 0.01, "gold_reward": policy.scale, "kl": 0.0}


class FakeTestbed(Testbed):
    name = "fake"
    description = "numpy-only world for loop tests"

    def build_world(self, *, seed, reporter):
        self.world = FakeWorld()
        return self.world


class FakeTrainer(Trainer):
    name = "fake"
    description = "adds the number of pairs to the policy's scale"

    def train(self, *, policy, data, rng):
        assert np.isfinite(data.ref_chosen_logps).all() and np.isfinite(data.ref_rejected_logps).all()
        return TrainResult(FakePolicy(policy.scale + len(data) / 100), steps=1, epochs=1.0,
                           loss_first=0.7, loss_last=0.6)


def make(selector_cls, budget=300, iterations=3):
    choice = ComponentChoice("x", {})
    config = RunConfig(testbed=choice, instance_selector=choice, corpus_selector=choice, allocator=choice,
                       trainer=choice, iterations=iterations, budget=budget, keep=0.5, n_responses=4, seed=1)
    selector = selector_cls()
    components = Components(testbed=FakeTestbed(), instance_selector=selector, corpus_selector=selector,
                            allocator=Decrease(), trainer=FakeTrainer(), scorers={})
    for column in components.score_columns:
        components.scorers[column] = ImplicitReward() if column == "implicit_reward" else None
    return config, components


def test_ledger_spends_the_plan_exactly_and_rows_come_in_order():
    config, components = make(SmallestMargin)
    rows = []
    result = run_experiment(config, components, on_iteration=rows.append)
    assert [row["iteration"] for row in rows] == [0, 1, 2, 3]
    assert [row["labels"] for row in rows[1:]] == [150, 100, 50]
    assert result.final["labels_used"] == 300
    assert [row["prompts"] for row in rows[1:]] == [300, 200, 100]
    assert result.final["final_win_rate"] == rows[-1]["win_rate"]


def test_margin_selector_scores_the_whole_pool_once_per_policy():
    config, components = make(SmallestMargin, budget=100, iterations=1)
    run_experiment(config, components)
    calls = components.testbed.world.calls
    # pool under pi_0 and pi_ref; then pi_1 on one response per prompt for KL(pi_0 || pi_1), pi_0's reused
    assert calls == [("logprobs", (200, 4)), ("logprobs", (200, 4)), ("annotate", 100), ("logprobs", (200, 1))]


def test_random_selector_scores_only_the_kept_pairs():
    config, components = make(RandomSelector, budget=100, iterations=1)
    result = run_experiment(config, components)
    calls = components.testbed.world.calls
    # the kept pairs under pi_0 and pi_ref; then one response per prompt under pi_0 and pi_1 for the step's KL
    assert calls == [("annotate", 100), ("logprobs", (100, 2)), ("logprobs", (100, 2)), ("logprobs", (200, 1)),
                     ("logprobs", (200, 1))]
    assert 0.0 <= result.iterations[1]["sel_ranking_accuracy"] <= 1.0


def test_same_seed_same_rows():
    first = run_experiment(*make(SmallestMargin)).iterations
    second = run_experiment(*make(SmallestMargin)).iterations
    strip = lambda rows: [{k: v for k, v in r.items() if not k.startswith("time_")} for r in rows]  # noqa: E731
    assert strip(first) == strip(second)


class PairsDuplicates(Selector):
    name = "dupes"
    description = "breaks the contract: pairs every response with a duplicate flag ignored"

    def select_instances(self, batch, rng):
        rows = np.arange(batch.n_prompts)
        return Pairs(rows, np.zeros_like(rows), np.zeros_like(rows))

    def select_corpus(self, batch, pairs, n_keep, rng):
        return pairs.take(np.arange(n_keep))


def test_a_selector_breaking_the_contract_fails_by_name():
    config, components = make(PairsDuplicates, budget=100, iterations=1)
    with pytest.raises(SelectionError, match="instance selector 'dupes': paired a response with itself"):
        run_experiment(config, components)


class RecordingTrainer(FakeTrainer):
    name = "recording"
    description = "FakeTrainer that keeps the data it was given"

    def __init__(self, settings=None):
        super().__init__(settings)
        self.seen = []

    def train(self, *, policy, data, rng):
        self.seen.append((policy.scale, data))
        return super().train(policy=policy, data=data, rng=rng)


def test_previous_reference_trains_against_the_policy_itself_and_selects_against_its_reference():
    from dataclasses import replace

    from plugins.selectors.margin import LargestMargin

    config, components = make(LargestMargin, budget=200, iterations=2)
    components.trainer = RecordingTrainer()
    rows = run_experiment(replace(config, reference="previous"), components).iterations
    (scale_1, data_1), (scale_2, data_2) = components.trainer.seen
    # FakeWorld: logp = -scale * sum(tokens); the training reference is pi_{i-1}'s own log-prob
    for scale, data in ((scale_1, data_1), (scale_2, data_2)):
        assert np.allclose(data.ref_chosen_logps, -scale * data.chosen.sum(axis=1))
        assert np.allclose(data.ref_rejected_logps, -scale * data.rejected.sum(axis=1))
    fixed = run_experiment(*make(LargestMargin, budget=200, iterations=2)).iterations
    # Iteration 1 scores pi_0 against pi_ref in both modes. Iteration 2 scores pi_1 against the
    # reference pi_1 was trained with: pi_0 (scale 1) under previous, pi_ref (scale 0) under fixed,
    # so the same pairs have margins smaller by exactly (scale_2 - 1) / scale_2.
    assert rows[1]["sel_mean_abs_margin"] == pytest.approx(fixed[1]["sel_mean_abs_margin"])
    assert rows[2]["sel_mean_abs_margin"] == pytest.approx(fixed[2]["sel_mean_abs_margin"] * (scale_2 - 1) / scale_2)


def test_without_a_leaderboard_labels_are_kept_in_memory_and_people_cannot_label():
    from harness.errors import UsageError
    from harness.labelling import MemoryLabelDesk

    config, components = make(SmallestMargin, budget=100, iterations=2)
    desk = MemoryLabelDesk()
    result = run_experiment(config, components, desk=desk)
    assert sum(len(r.pairs) for r in desk.records) == result.final["labels_used"] == 100
    assert {r.source for r in desk.records} == {"testbed:x"} and [r.iteration for r in desk.records] == [1, 2]
    with pytest.raises(UsageError, match="needs a leaderboard"):
        desk.request(1, None, None, np.random.default_rng(0))


def test_closing_the_world_is_optional_and_a_failure_there_is_only_a_warning():
    from types import SimpleNamespace

    from harness.loop import _close

    closed = []
    _close(SimpleNamespace(close=lambda: closed.append(True)))
    _close(SimpleNamespace())  # a world without close
    assert closed == [True]

    def broken():
        raise RuntimeError("CUDA error: device-side assert")

    with pytest.warns(RuntimeWarning, match="closing the world failed .RuntimeError: CUDA error"):
        _close(SimpleNamespace(close=broken))
