"""Selector contract 3 (steerable sampling) and its first users: PILAF, XPO (with its trainer term) and AE-Borda.

The contract classes run every selector check on the three selectors, with
``batch.sources`` from their own plans. The rest checks each rule against a
direct computation, the synthetic sampler of the interpolated policies
against the plain samplers it must reduce to, the loop's hand-over of sources
to the selector and the trainer, and the refusals.
"""

from __future__ import annotations

import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from harness.errors import UsageError
from harness.interfaces import PreferenceData, Responses
from harness.testing import SelectorContract, make_pool
from plugins.selectors.steered import AEBorda, MINUS, PILAF, PLUS, POLICY, REFERENCE, XPO, borda_bounds
from plugins.trainers.native import NativeDPOTrainer
from tests.conftest import TINY_RUN, TINY_TESTBED


class TestPILAFContract(SelectorContract):
    selector_class = PILAF


class TestXPOContract(SelectorContract):
    selector_class = XPO


class TestAEBordaContract(SelectorContract):
    selector_class = AEBorda


class TestAEBordaOddContract(SelectorContract):
    selector_class = AEBorda
    settings = {"passes": 3, "gamma": 0.5}
    n_responses = 5


# -- the rules ----------------------------------------------------------------------------------------


def test_pilaf_interpolates_about_half_the_prompts_and_pairs_plus_with_minus():
    selector = PILAF()
    sources = selector.sampling_sources(2000, 4, np.random.default_rng(0))
    steered = (sources == PLUS).any(axis=1)
    assert 0.45 < steered.mean() < 0.55
    assert (sources[steered] == np.array([PLUS, MINUS, PLUS, MINUS])).all()
    assert (sources[~steered] == POLICY).all()
    pool = make_pool(1, n_prompts=200, n_responses=4, duplication="none",
                     sources=selector.sampling_sources(200, 4, np.random.default_rng(1)))
    pairs = selector.select_instances(pool.batch, np.random.default_rng(0))
    codes = pool.batch.sources
    interpolated = (codes[pairs.prompt] == PLUS).any(axis=1)
    assert (codes[pairs.prompt, pairs.a][interpolated] == PLUS).all()
    assert (codes[pairs.prompt, pairs.b][interpolated] == MINUS).all()
    assert ((pairs.a == 0) & (pairs.b == 1)).all()  # the first of each / the first two distinct


def test_xpo_pairs_a_policy_sample_with_a_reference_sample():
    selector = XPO()
    sources = selector.sampling_sources(50, 6, np.random.default_rng(0))
    assert (sources == np.array([POLICY, REFERENCE] * 3)).all()
    pool = make_pool(2, n_prompts=50, n_responses=6, sources=sources)
    pairs = selector.select_instances(pool.batch, np.random.default_rng(0))
    distinct = pool.batch.distinct
    for prompt, a, b in zip(pairs.prompt, pairs.a, pairs.b):
        policy_ok = np.flatnonzero(distinct[prompt] & (sources[prompt] == POLICY))
        reference_ok = np.flatnonzero(distinct[prompt] & (sources[prompt] == REFERENCE))
        if policy_ok.size and reference_ok.size:
            assert (a, b) == (policy_ok[0], reference_ok[0])
        else:  # fallback: the first two distinct responses
            assert (a, b) == tuple(np.flatnonzero(distinct[prompt])[:2])


def test_borda_bounds_match_the_formula():
    rng = np.random.default_rng(3)
    m, n, gamma, beta = 5, 6, 2.0, 0.7
    mean, sd = rng.standard_normal((m, n)), rng.uniform(0, 1, (m, n))
    usable = rng.random((m, n)) < 0.8
    sources = np.tile(np.array([POLICY] * 3 + [REFERENCE] * 3, dtype=np.int8), (m, 1))
    ucb, lcb = borda_bounds(mean, sd, usable, sources, gamma, beta)

    def sigma(x):
        return 1.0 / (1.0 + np.exp(-x))

    for i in range(m):
        opponents = [j for j in range(n) if usable[i, j] and sources[i, j] == REFERENCE]
        for k in range(n):
            if not (usable[i, k] and sources[i, k] == POLICY and opponents):
                assert np.isnan(ucb[i, k]) and np.isnan(lcb[i, k])
                continue
            up, low = mean[i] + gamma * sd[i], mean[i] - gamma * sd[i]
            assert ucb[i, k] == pytest.approx(np.mean([sigma(beta * (up[k] - low[j])) for j in opponents]))
            assert lcb[i, k] == pytest.approx(np.mean([sigma(beta * (low[k] - up[j])) for j in opponents]))


def test_ae_borda_pairs_the_ucb_argmax_with_a_reference_sample_and_keeps_the_top_prompts():
    selector = AEBorda()
    sources = selector.sampling_sources(80, 6, np.random.default_rng(0))
    pool = make_pool(4, n_prompts=80, n_responses=6, duplication="none", passes=5,
                     requires=selector.requires, sources=sources)
    batch = pool.batch
    pairs = selector.select_instances(batch, np.random.default_rng(1))
    ucb, _ = selector._bounds(batch)
    assert (sources[pairs.prompt, pairs.a] == POLICY).all() and (sources[pairs.prompt, pairs.b] == REFERENCE).all()
    assert np.array_equal(pairs.a, np.nanargmax(ucb[pairs.prompt], axis=1))
    kept = selector.select_corpus(batch, pairs, 20, np.random.default_rng(2))
    scores = selector.prompt_scores(batch)
    assert scores[kept.prompt].min() >= np.sort(scores[pairs.prompt])[-20]


# -- the synthetic sampler --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def world():
    from harness.config import plan_run
    from harness.loop import build_world
    from harness.plugins import load_registry
    from harness.progress import NullReporter
    from harness.run_request import RunRequest

    plan = plan_run(load_registry(), RunRequest.from_values(selector="xpo", options=TINY_TESTBED))
    return build_world(plan.components, 0, NullReporter())


def test_interpolation_reduces_to_the_plain_samplers_at_its_ends(world):
    """Weight 0 is pi itself and weight -1 is pi_ref, draw for draw (the same Gumbel noise gives the same tokens)."""
    from plugins.testbeds.synthetic.policy import sample_interpolated

    prompts = torch.as_tensor(world.draw_prompts(64, np.random.default_rng(0)))
    policy, reference = world.initial_policy, world.reference_policy
    for weight, plain in ((0.0, policy), (-1.0, reference)):
        mixed = sample_interpolated(policy, reference, weight, prompts, torch.Generator().manual_seed(5))
        alone = plain.sample(prompts, torch.Generator().manual_seed(5), n=1)
        assert torch.equal(mixed[0], alone[0]) and torch.equal(mixed[1], alone[1])


def test_pi_plus_samples_carry_more_implicit_reward_than_pi_minus_samples(world):
    """pi+ tilts pi towards log pi - log pi_ref, pi- away from it: their samples' implicit rewards are ordered."""
    prompts = world.draw_prompts(300, np.random.default_rng(1))
    sources = np.tile(np.array([PLUS, MINUS], dtype=np.int8), (300, 4))
    responses = world.steered_sample(world.initial_policy, world.reference_policy, prompts, sources, 1.0,
                                     np.random.default_rng(2))
    reward = world.logprobs(world.initial_policy, prompts, responses) - world.logprobs(world.reference_policy,
                                                                                         prompts, responses)
    assert reward[sources == PLUS].mean() > reward[sources == MINUS].mean()


def test_each_source_draws_from_its_own_seed(world):
    """Changing where the other responses come from leaves the pi_ref rows' draws as they were."""
    prompts = world.draw_prompts(30, np.random.default_rng(3))
    with_policy = np.array([[POLICY, REFERENCE]] * 30, dtype=np.int8)
    with_plus = np.array([[PLUS, REFERENCE]] * 30, dtype=np.int8)
    first, second = (world.steered_sample(world.initial_policy, world.reference_policy, prompts, plan, 1.0,
                                          np.random.default_rng(4)) for plan in (with_policy, with_plus))
    assert second.sources is not None and np.array_equal(second.sources, with_plus)
    assert np.array_equal(first.tokens[:, 1], second.tokens[:, 1])
    assert not np.array_equal(first.tokens[:, 0], second.tokens[:, 0])


# -- the loop and the trainer ------------------------------------------------------------------------------


def test_the_trainer_receives_where_each_response_came_from():
    from harness.config import plan_run
    from harness.loop import run_experiment
    from harness.plugins import load_registry
    from harness.run_request import RunRequest

    seen = []

    class Recorder(NativeDPOTrainer):
        def train(self, *, policy, data, rng):
            seen.append(data)
            return super().train(policy=policy, data=data, rng=rng)

    plan = plan_run(load_registry(), RunRequest.from_values(selector="xpo", iterations=1, budget=40,
                                                            options=("trainer.epochs=2", *TINY_TESTBED)))
    plan.components.trainer = Recorder(plan.components.trainer.settings)
    run_experiment(plan.config, plan.components)
    (data,) = seen
    assert data.chosen_sources is not None and len(data.chosen_sources) == len(data)
    pairs = np.stack([data.chosen_sources, data.rejected_sources], axis=1)
    assert ((pairs == POLICY).any(axis=1) & (pairs == REFERENCE).any(axis=1)).mean() > 0.9


def test_xpo_alpha_adds_the_exploration_term_to_the_loss():
    """The term is alpha x the mean log pi_theta of the pi_ref responses: the first loss moves by exactly that."""
    from harness.testing import ToyPolicy

    policy = ToyPolicy(vocab_size=8, seed=0)
    rng = np.random.default_rng(0)
    k = 16
    data = PreferenceData(
        prompts=rng.integers(0, 8, (k, 2)), chosen=rng.integers(1, 8, (k, 3)), chosen_lengths=np.full(k, 3),
        rejected=rng.integers(1, 8, (k, 3)), rejected_lengths=np.full(k, 3), ref_chosen_logps=np.zeros(k),
        ref_rejected_logps=np.zeros(k), chosen_sources=np.tile(np.array([POLICY, REFERENCE], np.int8), k // 2),
        rejected_sources=np.tile(np.array([REFERENCE, POLICY], np.int8), k // 2))
    settings = {"steps": 1, "batch_size": k}
    plain = NativeDPOTrainer(settings).train(policy=policy, data=data, rng=np.random.default_rng(1))
    xpo = NativeDPOTrainer({**settings, "xpo_alpha": 0.5}).train(policy=policy, data=data,
                                                               rng=np.random.default_rng(1))
    with torch.no_grad():
        logp = policy.sequence_logprobs(torch.as_tensor(data.prompts), torch.as_tensor(
            np.where((data.chosen_sources == REFERENCE)[:, None], data.chosen, data.rejected)),
            torch.as_tensor(data.chosen_lengths))
    assert xpo.loss_first == pytest.approx(plain.loss_first + 0.5 * float(logp.double().mean()), rel=1e-6)
    with pytest.raises(UsageError, match="xpo_alpha"):
        NativeDPOTrainer({**settings, "xpo_alpha": 0.5}).train(
            policy=policy, data=PreferenceData(**{**data.__dict__, "chosen_sources": None, "rejected_sources": None}),
            rng=np.random.default_rng(1))


def _harness(*args, db):
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True,
                          env=dict(os.environ, HARNESS_DB=str(db)))


def test_xpo_alpha_without_a_steering_selector_is_refused_before_the_run(tmp_path):
    db = tmp_path / "board.db"
    refused = _harness("run", *TINY_RUN, "--selector", "smallest", "-o", "trainer.xpo_alpha=0.1", db=db)
    assert refused.returncode == 2, refused.stderr
    assert "xpo_alpha" in refused.stderr and "--selector xpo" in refused.stderr
    assert not db.exists() or "runs" not in __import__("sqlite_utils").Database(db).table_names()


def test_xpo_alpha_with_a_selector_that_never_samples_pi_ref_is_refused(tmp_path):
    refused = _harness("run", *TINY_RUN, "--selector", "pilaf", "-o", "trainer.xpo_alpha=0.1",
                       db=tmp_path / "board.db")
    assert refused.returncode == 2, refused.stderr
    assert "samples only from policy, plus, minus" in refused.stderr


def test_a_steering_selector_on_the_vllm_backend_is_refused_before_the_run(tmp_path):
    refused = _harness("run", "--testbed", "hf", "--selector", "pilaf", "-o", "testbed.backend=vllm", "--dry-run",
                       db=tmp_path / "board.db")
    assert refused.returncode == 2, refused.stderr
    assert "backend=transformers" in refused.stderr


def test_kl_to_the_previous_policy_reads_only_pi_prev_samples_when_sampling_is_steered():
    """With r = log pi_i - log pi_{i-1} equal to each response's length here, the estimate is a function of the
    lengths of the responses it read: those of the first pi_{i-1} sample of each prompt."""
    from harness.iteration import _kl_to_previous
    from harness.ranks import SINGLE

    class World:
        def logprobs(self, policy, prompts, responses):
            return -responses.lengths * (1.0 if policy == "after" else 2.0)

    lengths = np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9]])
    sources = np.array([[PLUS, POLICY, MINUS], [PLUS, MINUS, POLICY], [PLUS, PLUS, MINUS]], dtype=np.int8)
    responses = Responses(tokens=np.zeros((3, 3, 9), np.int64), lengths=lengths, sources=sources)
    kl = _kl_to_previous(SINGLE, World(), "before", "after", np.zeros((3, 2), np.int64), responses, None)
    read = np.array([2.0, 6.0])  # prompt 0's response 1, prompt 1's response 2; prompt 2 has no pi_{i-1} sample
    assert kl["kl_prev"] == pytest.approx(float(np.mean(np.expm1(read) - read)))
    plain = _kl_to_previous(SINGLE, World(), "before", "after", np.zeros((3, 2), np.int64),
                            Responses(tokens=responses.tokens, lengths=lengths), None)
    first = np.array([1.0, 4.0, 7.0])
    assert plain["kl_prev"] == pytest.approx(float(np.mean(np.expm1(first) - first)))


def test_two_different_steering_selectors_are_refused(tmp_path):
    refused = _harness("run", *TINY_RUN, "--instance-selector", "pilaf", "--corpus-selector", "xpo",
                       db=tmp_path / "board.db")
    assert refused.returncode == 2, refused.stderr
    assert "steers_sampling" in refused.stderr


def test_the_vllm_backend_refuses_to_steer():
    from plugins.testbeds.hf.world import HFWorld

    stand_in = SimpleNamespace(sampler=object())
    with pytest.raises(UsageError, match="cannot mix two models"):
        HFWorld.steered_sample(stand_in, None, None, np.zeros((1, 1)), np.zeros((1, 2), np.int8), 0.1,
                               np.random.default_rng(0))


def test_a_selection_out_for_labelling_keeps_its_sources(tmp_path):
    """The external annotation round saves the pool; its sources come back with it for the trainer."""
    from harness.experiments.labels import load_selection, save_selection
    from harness.interfaces import Pairs, Responses
    from harness.labelling import PendingSelection

    pool = make_pool(8, n_prompts=5, n_responses=4, sources=XPO().sampling_sources(5, 4, np.random.default_rng(0)))
    responses = Responses(tokens=pool.tokens, lengths=pool.batch.lengths, sources=pool.batch.sources)
    selection = PendingSelection(np.zeros((5, 2), np.int64), responses, pool.batch.distinct, 5,
                                 Pairs(np.arange(2), np.zeros(2), np.ones(2)), None, None)
    save_selection(selection, tmp_path / "selection.npz")
    loaded = load_selection(tmp_path / "selection.npz")
    assert np.array_equal(loaded.responses.sources, pool.batch.sources)
    plain = PendingSelection(selection.prompts, Responses(tokens=pool.tokens, lengths=pool.batch.lengths),
                             selection.distinct, 5, selection.kept, None, None)
    save_selection(plain, tmp_path / "plain.npz")
    assert load_selection(tmp_path / "plain.npz").responses.sources is None


@pytest.mark.skipif(__import__("importlib").util.find_spec("transformers") is None,
                    reason="needs the hf extra (transformers)")
def test_the_hf_interpolation_at_weight_zero_is_the_policy_itself():
    """With top-k 1 both ways are greedy: pi+ at beta 0 must decode exactly what generate decodes from pi, and
    pi- at beta 1 ((1 - 1) h_pi + 1 h_ref) exactly what it decodes from pi_ref."""
    from hf_tiny import tiny_world

    world = tiny_world(top_k=1)
    policy, reference = world.initial_policy, world.reference_policy
    differs = 0
    for row in range(4):
        prompts = np.array([[row]])
        for source, beta, model in ((PLUS, 0.0, policy), (MINUS, 1.0, reference)):
            greedy = world.sample(model, prompts, 1, np.random.default_rng(0), mode="greedy")
            steered = world.steered_sample(policy, reference, prompts, np.array([[source]], np.int8), beta,
                                           np.random.default_rng(0))
            length = int(greedy.lengths[0, 0])
            assert int(steered.lengths[0, 0]) == length
            assert np.array_equal(steered.tokens[0, 0, :length], greedy.tokens[0, 0, :length])
        mine = world.sample(policy, prompts, 1, np.random.default_rng(0), mode="greedy")
        theirs = world.sample(reference, prompts, 1, np.random.default_rng(0), mode="greedy")
        differs += not np.array_equal(mine.tokens, theirs.tokens)
    assert differs  # pi_0 and pi_ref decode differently somewhere, so the two checks tell the sources apart
