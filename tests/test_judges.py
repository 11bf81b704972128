"""The synthetic testbed's judges: pointwise gold with noise, and a proxy reward model of given fidelity."""

from __future__ import annotations

import numpy as np
import pytest

from harness.errors import UsageError
from harness.interfaces import Responses
from harness.progress import NullReporter
from plugins.judges.synthetic import SyntheticGold, SyntheticProxy
from plugins.testbeds.synthetic import SyntheticTestbed
from tests.conftest import TINY_TESTBED


@pytest.fixture(scope="module")
def world():
    settings = dict(option.removeprefix("testbed.").split("=", 1) for option in TINY_TESTBED)
    return SyntheticTestbed(settings).build_world(seed=0, reporter=NullReporter())


@pytest.fixture(scope="module")
def sft_samples(world):
    """4,000 responses of pi_ref (the SFT model): 500 prompts x 8."""
    rng = np.random.default_rng(7)
    prompts = world.draw_prompts(500, rng)
    responses = world.sample(world.reference_policy, prompts, 8, rng)
    return prompts, responses, world.gold_rewards(prompts, responses)


def score(judge, world, samples, seed=0):
    prompts, responses, _ = samples
    return judge.score(world=world, prompts=prompts, responses=responses, rng=np.random.default_rng(seed))


def correlation(x, y):
    return float(np.corrcoef(np.ravel(x), np.ravel(y))[0, 1])


# ------------------------------------------------------------------ gold


def test_gold_without_noise_is_the_exact_gold_reward(world, sft_samples):
    gold = sft_samples[2]
    scores = score(SyntheticGold({"noise": 0}), world, sft_samples)
    assert scores.shape == gold.shape == (500, 8) and scores.dtype == np.float64
    np.testing.assert_array_equal(scores, gold)


@pytest.mark.parametrize("noise", [0.34, 1.5])
def test_gold_noise_has_the_stated_sd(world, sft_samples, noise):
    error = score(SyntheticGold({"noise": noise}), world, sft_samples) - sft_samples[2]
    # 4,000 draws: the sd's standard error is about noise / sqrt(8000) ~ 1.1% of it.
    assert error.std() == pytest.approx(noise, rel=0.05)
    assert abs(error.mean()) < 4 * noise / np.sqrt(error.size)


def test_gold_default_noise_matches_the_annotators_tau(world):
    assert world.tau == 0.3
    assert SyntheticGold().settings["noise"] == pytest.approx(2 * world.tau / np.sqrt(np.pi), abs=0.005)


def test_gold_noise_comes_from_the_generator(world, sft_samples):
    judge = SyntheticGold()
    np.testing.assert_array_equal(score(judge, world, sft_samples, 1), score(judge, world, sft_samples, 1))
    assert not np.array_equal(score(judge, world, sft_samples, 1), score(judge, world, sft_samples, 2))


# ------------------------------------------------------------------ proxy


def test_proxy_with_fidelity_one_is_gold(world, sft_samples):
    scores = score(SyntheticProxy({"fidelity": 1.0, "length_bias": 0.0, "noise": 0.0}), world, sft_samples)
    np.testing.assert_array_equal(scores, sft_samples[2])


def test_proxy_correlation_with_gold_increases_with_fidelity_and_is_close_to_it(world, sft_samples):
    gold = sft_samples[2]
    fidelities = (0.1, 0.5, 0.9)
    correlations = [correlation(score(SyntheticProxy({"fidelity": f}), world, sft_samples), gold) for f in fidelities]
    assert correlations[0] < correlations[1] < correlations[2], correlations
    for f, c in zip(fidelities, correlations):
        assert abs(c - f) < 0.1, (f, c)
    # fidelity 0: independent tables, (nearly) uncorrelated with gold
    assert abs(correlation(score(SyntheticProxy({"fidelity": 0.0}), world, sft_samples), gold)) < 0.1


def test_proxy_is_deterministic_for_a_world(world, sft_samples):
    first = score(SyntheticProxy({"fidelity": 0.6}), world, sft_samples, seed=1)
    second = score(SyntheticProxy({"fidelity": 0.6}), world, sft_samples, seed=2)  # another judge, another rng
    np.testing.assert_array_equal(first, second)
    assert not np.array_equal(first, score(SyntheticProxy({"fidelity": 0.7}), world, sft_samples))


def test_proxy_length_bias_and_noise(world, sft_samples):
    responses = sft_samples[1]
    clean = score(SyntheticProxy({"fidelity": 0.6}), world, sft_samples)
    biased = score(SyntheticProxy({"fidelity": 0.6, "length_bias": 0.5}), world, sft_samples)
    np.testing.assert_allclose(biased - clean, 0.5 * (responses.lengths - 1), atol=1e-12)
    noisy = score(SyntheticProxy({"fidelity": 0.6, "noise": 0.8}), world, sft_samples)
    assert (noisy - clean).std() == pytest.approx(0.8, rel=0.05)


def test_judges_refuse_a_world_without_a_gold_reward(sft_samples):
    class Other:
        pass

    prompts, responses, _ = sft_samples
    for judge in (SyntheticGold(), SyntheticProxy()):
        with pytest.raises(UsageError, match="synthetic"):
            judge.score(world=Other(), prompts=prompts, responses=responses, rng=np.random.default_rng(0))


def test_scores_follow_the_responses_they_are_given(world, sft_samples):
    """Scoring a subset of the responses gives the same scores as scoring them all (no positional state)."""
    prompts, responses, gold = sft_samples
    subset = Responses(tokens=responses.tokens[:10, 2:5], lengths=responses.lengths[:10, 2:5])
    for judge in (SyntheticGold({"noise": 0}), SyntheticProxy({"fidelity": 0.4})):
        whole = judge.score(world=world, prompts=prompts, responses=responses, rng=np.random.default_rng(0))
        part = judge.score(world=world, prompts=prompts[:10], responses=subset, rng=np.random.default_rng(0))
        np.testing.assert_allclose(part, whole[:10, 2:5], atol=1e-12)
