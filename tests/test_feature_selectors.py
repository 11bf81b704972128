"""Selector contract 2 (features and memory) and its first users, APO and SEA.

The contract classes run every selector check, the features-and-memory ones
included, on APO and on SEA in each of its modes. The rest checks each rule
against a direct computation of what its paper says, the loop's hand-over of
features and feedback, and that a run killed mid-way and resumed ends with
the numbers, and the selector memory, of an uninterrupted one.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from harness.errors import SelectionError
from killer_plugin import KILLER  # the plugin file's source, shared with test_resume
from harness.interfaces import Feedback, Pairs, SelectionBatch
from harness.testing import SelectorContract, make_feedback, make_pool
from plugins.selectors._pairs import pair_index
from plugins.selectors.apo import ActivePreferenceOptimization
from plugins.selectors.sea import SampleEfficientAlignment, fit_head
from tests.conftest import TINY_RUN


class TestAPOContract(SelectorContract):
    selector_class = ActivePreferenceOptimization


class TestAPOUnscaledContract(SelectorContract):
    selector_class = ActivePreferenceOptimization
    settings = {"normalize": False, "regularization": 0.1, "features": "policy"}


class TestSEAContract(SelectorContract):
    selector_class = SampleEfficientAlignment


class TestSEABestResponseContract(SelectorContract):
    selector_class = SampleEfficientAlignment
    settings = {"mode": "bai", "heads": 5}


class TestSEARandomCorpusContract(SelectorContract):
    selector_class = SampleEfficientAlignment
    settings = {"corpus": "random", "heads": 3, "max_try": 2}


# -- APO ---------------------------------------------------------------------------------------------


def _unit(features: np.ndarray) -> np.ndarray:
    return features / np.linalg.norm(features, axis=-1, keepdims=True)


def test_apo_instance_level_is_the_largest_bonus_of_each_prompt():
    pool = make_pool(3, n_prompts=20, features=5, duplication="none")
    selector = ActivePreferenceOptimization()
    selector.observe(make_feedback(pool, Pairs(np.arange(10), np.zeros(10), np.ones(10)), 3),
                     np.random.default_rng(0))
    design = np.eye(5) + 0.0
    phi = _unit(pool.batch.features)
    z_seen = phi[np.arange(10), 0] - phi[np.arange(10), 1]
    design += z_seen.T @ z_seen
    assert np.allclose(selector.state_dict()["design"], design)
    inverse = np.linalg.inv(design)
    pairs = selector.select_instances(pool.batch, np.random.default_rng(0))
    a, b = pair_index(pool.batch.n_responses)
    for prompt, first, second in zip(pairs.prompt, pairs.a, pairs.b):
        z = phi[prompt, a] - phi[prompt, b]
        bonus = np.einsum("pd,de,pe->p", z, inverse, z)
        chosen = np.flatnonzero((a == first) & (b == second))[0]
        assert bonus[chosen] == pytest.approx(bonus.max(), rel=1e-12)


def test_apo_corpus_level_is_greedy_with_the_design_updated_after_every_pick():
    """Sherman-Morrison gives what inverting V + z z^T afresh after each pick gives."""
    pool = make_pool(5, n_prompts=40, features=4, duplication="none")
    selector = ActivePreferenceOptimization({"regularization": 0.5})
    offered = selector.select_instances(pool.batch, np.random.default_rng(0))
    kept = selector.select_corpus(pool.batch, offered, 12, np.random.default_rng(0))
    phi = _unit(pool.batch.features)
    z = phi[offered.prompt, offered.a] - phi[offered.prompt, offered.b]
    design, chosen = 0.5 * np.eye(4), []
    for _ in range(12):
        bonus = np.einsum("kd,de,ke->k", z, np.linalg.inv(design), z)
        bonus[chosen] = -np.inf
        j = int(bonus.argmax())
        chosen.append(j)
        design += np.outer(z[j], z[j])
    assert sorted(chosen) == np.flatnonzero(np.isin(offered.prompt, kept.prompt)).tolist()
    assert len(set(kept.prompt.tolist())) == 12


def test_apo_memory_turns_it_away_from_a_direction_already_asked():
    """Two candidate pairs per prompt, one along a direction labelled many times: the memory picks the other."""
    features = np.zeros((1, 3, 2))
    features[0, 0], features[0, 1], features[0, 2] = [1.0, 0.0], [-1.0, 0.0], [0.9, 0.6]
    batch = SelectionBatch(lengths=np.ones((1, 3), np.int64), distinct=np.ones((1, 3), bool), scores={},
                           features=features)
    selector = ActivePreferenceOptimization({"normalize": False})
    fresh = selector.select_instances(batch, np.random.default_rng(0))
    assert (fresh.a[0], fresh.b[0]) == (0, 1)  # the longest difference, with nothing learnt
    asked = Pairs(np.zeros(50, np.int64), np.zeros(50, np.int64), np.ones(50, np.int64))
    selector.observe(Feedback(1, asked, np.ones(50, bool), np.zeros(50, bool), features), np.random.default_rng(0))
    after = selector.select_instances(batch, np.random.default_rng(0))
    assert (after.a[0], after.b[0]) != (0, 1)


def test_a_state_key_that_is_also_an_np_savez_argument_survives_a_checkpoint(tmp_path):
    """Keys such as `file` or `allow_pickle` are np.savez's own arguments: the files prefix every key."""
    from harness.experiments.checkpoints import _load_selector_state, _sha256, save, selector_state_file
    from harness.loop import LoopState

    class World:
        def save_policy(self, policy, path):
            path.write_bytes(b"policy")

    state = LoopState(1, object(), [{"iteration": 0}, {"iteration": 1}], {1: 4}, [],
                      selector_states={"corpus": {"file": np.arange(3.0), "allow_pickle": np.ones((2, 2))}})
    directory = save(tmp_path, World(), state)
    path = directory / selector_state_file("corpus")
    loaded = _load_selector_state(path, _sha256(path))
    assert sorted(loaded) == ["allow_pickle", "file"]
    assert np.array_equal(loaded["file"], np.arange(3.0)) and np.array_equal(loaded["allow_pickle"], np.ones((2, 2)))


def test_a_feature_selector_on_a_testbed_without_features_is_refused_before_the_run():
    from harness.config import check_features_and_sources
    from harness.errors import UsageError
    from types import SimpleNamespace

    components = SimpleNamespace(testbed=SimpleNamespace(gives_features=False), instance_selector=
                                 ActivePreferenceOptimization(), corpus_selector=ActivePreferenceOptimization(),
                                 steering_selector=lambda: None)
    with pytest.raises(UsageError, match="gives_features"):
        check_features_and_sources(components, SimpleNamespace(testbed=SimpleNamespace(name="elsewhere")))


def test_apo_refuses_a_state_from_features_of_another_width():
    selector = ActivePreferenceOptimization()
    selector.load_state_dict({"design": np.eye(3)})
    with pytest.raises(SelectionError, match="width 3"):
        selector.select_instances(make_pool(0, features=4).batch, np.random.default_rng(0))
    with pytest.raises(ValueError, match="design"):
        selector.load_state_dict({"design": np.ones(3)})


# -- SEA ---------------------------------------------------------------------------------------------


def test_fit_head_reaches_the_regularised_optimum():
    rng = np.random.default_rng(1)
    z, anchor = rng.standard_normal((200, 4)), rng.standard_normal(4)
    w = fit_head(z, anchor, 0.7)
    p = 1.0 / (1.0 + np.exp(z @ w))  # sigma(-w.z)
    gradient = -(z.T @ p) + 0.7 * (w - anchor)
    assert np.abs(gradient).max() < 1e-8


def test_sea_learns_a_linear_reward_and_then_picks_its_best_response_first():
    """With many labels from a linear reward, every head ranks like it, so the first response is its best."""
    rng = np.random.default_rng(2)
    true = np.array([2.0, -1.0, 0.5])
    pool = make_pool(4, n_prompts=300, n_responses=6, features=3, duplication="none")
    phi = _unit(pool.batch.features)
    offered = Pairs(np.arange(300), np.zeros(300, np.int64), np.full(300, 5, np.int64))
    reward = phi @ true
    prefer_a = reward[offered.prompt, offered.a] > reward[offered.prompt, offered.b]
    selector = SampleEfficientAlignment({"heads": 8, "regularization": 0.01})
    selector.observe(Feedback(1, offered, prefer_a, np.zeros(300, bool), pool.batch.features), rng)
    heads = selector.state_dict()["heads"]
    cosines = heads @ true / (np.linalg.norm(heads, axis=1) * np.linalg.norm(true))
    assert cosines.min() > 0.9
    pairs = selector.select_instances(pool.batch, np.random.default_rng(0))
    best = reward.argmax(axis=1)
    assert np.mean(pairs.a == best[pairs.prompt]) > 0.8
    assert (pairs.a != pairs.b).all()


def test_sea_bai_second_response_is_where_the_heads_disagree_most():
    pool = make_pool(6, n_prompts=30, n_responses=5, features=4, duplication="none")
    selector = SampleEfficientAlignment({"mode": "bai", "heads": 6})
    selector.observe(make_feedback(pool, Pairs(np.arange(30), np.zeros(30), np.ones(30)), 6),
                     np.random.default_rng(0))
    heads = selector.state_dict()["heads"]
    pairs = selector.select_instances(pool.batch, np.random.default_rng(9))
    rewards = np.einsum("mnd,ed->emn", _unit(pool.batch.features), heads)
    for prompt, first, second in zip(pairs.prompt, pairs.a, pairs.b):
        spread = np.var(rewards[:, prompt] - rewards[:, prompt, first][:, None], axis=0, ddof=1)
        spread[first] = -np.inf
        assert second == spread.argmax()


def test_sea_ties_are_not_learnt_and_labels_are_oriented():
    pool = make_pool(7, n_prompts=4, features=3, duplication="none")
    kept = Pairs(np.arange(4), np.zeros(4), np.ones(4))
    selector = SampleEfficientAlignment({"heads": 2})
    selector.observe(Feedback(1, kept, np.array([True, False, True, True]), np.array([False, False, True, False]),
                              pool.batch.features), np.random.default_rng(0))
    phi = _unit(pool.batch.features)
    z = phi[:, 0] - phi[:, 1]
    assert np.allclose(selector.state_dict()["pairs"], np.stack([z[0], -z[1], z[3]]))


def test_a_selector_that_names_a_feature_source_refuses_a_batch_without_features():
    for selector in (ActivePreferenceOptimization(), SampleEfficientAlignment()):
        with pytest.raises(SelectionError, match="feature_source"):
            selector.select_instances(make_pool(0).batch, np.random.default_rng(0))


# -- in the loop --------------------------------------------------------------------------------------


def test_the_loop_hands_features_and_feedback_to_a_stateful_selector(tmp_path):
    """A recording selector sees features of the GRU's width, one array for both levels, and its labels."""
    from harness.config import plan_run
    from harness.loop import run_experiment
    from harness.plugins import load_registry
    from harness.run_request import RunRequest
    from tests.conftest import TINY_TESTBED

    seen = []

    class Recorder(ActivePreferenceOptimization):
        def observe(self, feedback, rng):
            seen.append(feedback)
            super().observe(feedback, rng)

    request = RunRequest.from_values(iterations=2, budget=40, selector="apo",
                                     options=("trainer.epochs=2", *TINY_TESTBED))
    plan = plan_run(load_registry(), request)
    components = plan.components
    components.instance_selector = Recorder(components.instance_selector.settings)
    components.corpus_selector = Recorder(components.corpus_selector.settings)
    result = run_experiment(plan.config, components)
    assert len(seen) == 4  # two iterations, one instance per level
    assert [f.iteration for f in seen] == [1, 1, 2, 2]
    first = seen[0]
    width = int(components.testbed.settings["hidden_dim"])  # the GRU's final state per response
    assert first.features is not None and first.features.shape == (*first.features.shape[:2], width)
    assert seen[1].features is first.features  # one computation, handed to both levels
    assert len(first.kept) == result.iterations[1]["labels"] == len(first.prefer_a) == len(first.tie)
    assert components.corpus_selector.state_dict()["design"].shape == (width, width)




def _harness(*args, db, kill_at=None):
    env = dict(os.environ, HARNESS_DB=str(db))
    env.pop("KILL_AT_ITERATION", None)
    if kill_at is not None:
        env["KILL_AT_ITERATION"] = str(kill_at)
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True, env=env)


@pytest.mark.fault
@pytest.mark.parametrize("selector", ["apo", "sea"])
def test_a_stateful_selector_resumed_after_sigkill_ends_as_an_uninterrupted_run(tmp_path, selector):
    from leaderboard.store import Leaderboard

    killer = tmp_path / "killer.py"
    killer.write_text(KILLER)
    db = tmp_path / "board.db"
    args = [*TINY_RUN, "--iterations", "3", "--budget", "120", "--selector", selector, "--seed", "11",
            "--trainer", "native_killer", "--plugin", str(killer)]
    killed = _harness("run", *args, db=db, kill_at=3)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    (run,) = Leaderboard(db).runs(status=None)
    resumed = _harness("run", "--resume", run["id"], "--plugin", str(killer), "--json", db=db)
    assert resumed.returncode == 0, resumed.stderr
    uninterrupted = _harness("run", *args, "--json", db=db)
    assert uninterrupted.returncode == 0, uninterrupted.stderr
    board = Leaderboard(db)
    other = json.loads(uninterrupted.stdout.strip().splitlines()[-1])["run_id"]

    def numbers(run_id):
        return [{k: v for k, v in row.items() if not k.startswith("time_") and k not in ("recorded_at", "run_id")}
                for row in board.iterations(run_id)]

    assert numbers(run["id"]) == numbers(other)
    assert [row["iteration"] for row in numbers(other)] == [0, 1, 2, 3]

    from harness.experiments.checkpoints import STATE_PREFIX, latest, selector_state_file

    def memory(run_id):  # the selector's memory in the run's last checkpoint
        with np.load(latest(db.parent / "runs" / run_id) / selector_state_file("corpus")) as arrays:
            return {key: arrays[key] for key in arrays.files}

    resumed_memory, whole_memory = memory(run["id"]), memory(other)
    assert resumed_memory and all(key.startswith(STATE_PREFIX) for key in resumed_memory)
    assert sorted(resumed_memory) == sorted(whole_memory)
    assert all(np.array_equal(resumed_memory[key], whole_memory[key]) for key in resumed_memory)
