"""Stochastic scoring (scorer contract 2): K stochastic passes behind score columns, and old plugins unchanged.

The loop asks the world for ``(K, M, N)`` stochastic log-probs only when a
stochastic scorer is in the run; scorers and selectors written to contract 1
are called exactly as before. The synthetic world's surrogate (dropout on the
GRU output before the head) and the hf world's MC dropout are checked here
too; their worlds also run the testbed contract's ``test_stochastic_logprobs``
(tests/test_contracts_builtin.py).
"""

from __future__ import annotations

import textwrap
from types import SimpleNamespace

import numpy as np
import pytest

from conftest import TINY_RUN, TINY_TESTBED
from harness import iteration
from harness.errors import PluginError, UsageError
from harness.interfaces import (
    API_VERSION,
    DEFAULT_STOCHASTIC_PASSES,
    SCORER_CONTRACT,
    Responses,
    Scorer,
    Selector,
    stochastic_passes,
)
from harness.ranks import SINGLE
from harness.testing import ScorerContract, stochastic_samples
from plugins.scorers.implicit import ImplicitReward
from plugins.scorers.stochastic import (
    StochasticLogprobMean,
    StochasticLogprobSd,
    StochasticRewardMean,
    pass_sd,
)
from tests.extras import requires_extra

# ------------------------------------------------------------------ the scorers


class TestStochasticLogprobMeanContract(ScorerContract):
    scorer_class = StochasticLogprobMean


class TestStochasticLogprobSdContract(ScorerContract):
    scorer_class = StochasticLogprobSd


class TestStochasticRewardMeanContract(ScorerContract):
    scorer_class = StochasticRewardMean


def test_columns_are_the_mean_the_sd_with_ddof_1_and_the_mean_reward():
    rng = np.random.default_rng(0)
    logp_policy = -rng.uniform(1, 5, size=(3, 4))
    logp_ref = -rng.uniform(1, 5, size=(3, 4))
    samples = stochastic_samples(0, logp_policy, 5)
    inputs = {"logp_policy": logp_policy, "logp_ref": logp_ref, "lengths": np.ones((3, 4), dtype=np.int64),
              "logp_samples": samples}
    assert np.allclose(StochasticLogprobMean().score(**inputs), samples.mean(axis=0))
    assert np.allclose(StochasticLogprobSd().score(**inputs), samples.std(axis=0, ddof=1))
    assert np.allclose(StochasticRewardMean().score(**inputs), samples.mean(axis=0) - logp_ref)
    # the deterministic log-prob plays no part: m(y) is the mean of the passes
    moved = dict(inputs, logp_policy=logp_policy - 7.0)
    assert np.array_equal(StochasticRewardMean().score(**moved), StochasticRewardMean().score(**inputs))


def test_sd_is_zero_for_equal_passes_and_exact_for_huge_values():
    samples = np.full((5, 2, 3), -1e6)
    assert np.array_equal(pass_sd(samples), np.zeros((2, 3)))
    samples[0] += 1.0  # a one-off of 1 among four equal passes: sd = sqrt(0.2) whatever the offset
    assert np.allclose(pass_sd(samples), np.sqrt(0.2))


def test_a_stochastic_scorer_refuses_samples_of_the_wrong_shape():
    inputs = {"logp_policy": np.zeros((2, 3)), "logp_ref": np.zeros((2, 3)), "lengths": np.ones((2, 3))}
    with pytest.raises(ValueError, match=r"\(K, M, N\)"):
        StochasticLogprobSd().score(**inputs, logp_samples=np.zeros((5, 3, 2)))
    with pytest.raises(ValueError, match="at least 2"):
        StochasticLogprobSd().score(**inputs, logp_samples=np.zeros((1, 2, 3)))


# ------------------------------------------------------------------ the contract change


class OldScorer(Scorer):
    """Written to scorer contract 1: three keywords, nothing else (a fourth would be a TypeError)."""

    name = "old_column"
    description = "a contract-1 scorer"

    def score(self, *, logp_policy, logp_ref, lengths):
        return logp_policy - logp_ref


class OldSelector(Selector):
    """Written before contract 2: no stochastic_passes of its own."""

    name = "old"
    description = "a contract-1 selector"
    requires = ("old_column",)


class NamesPasses(Selector):
    name = "names"
    description = "names K"
    stochastic_passes = 7


def test_the_contract_grew_compatibly():
    assert SCORER_CONTRACT == 2
    assert API_VERSION == 1  # a compatible change: no bump
    assert Scorer.stochastic is False and Selector.stochastic_passes == 0


def test_passes_are_asked_only_for_a_stochastic_scorer():
    old = OldSelector()
    assert stochastic_passes([old, old], [OldScorer(), ImplicitReward()]) == 0
    assert stochastic_passes([old, old], [OldScorer(), StochasticLogprobSd()]) == DEFAULT_STOCHASTIC_PASSES == 5
    assert stochastic_passes([old, NamesPasses()], [StochasticLogprobSd()]) == 7
    # a selector class that predates the attribute altogether counts as naming none
    assert stochastic_passes([SimpleNamespace(), SimpleNamespace()], [StochasticLogprobSd()]) == 5
    one = NamesPasses()
    one.stochastic_passes = 1
    with pytest.raises(UsageError, match="at least 2"):
        stochastic_passes([one], [StochasticLogprobSd()])


def _components(scorers, selectors=(OldSelector(), OldSelector())):
    return SimpleNamespace(scorers=scorers, instance_selector=selectors[0], corpus_selector=selectors[1],
                           testbed=SimpleNamespace(name="toy"))


def test_old_scorers_get_three_keywords_and_stochastic_ones_get_the_passes():
    lengths = np.ones((2, 3), dtype=np.int64)
    logp_policy, logp_ref = -np.ones((2, 3)), -2 * np.ones((2, 3))
    samples = stochastic_samples(1, logp_policy, 4)
    components = _components({"old_column": OldScorer(), "stochastic_logprob_sd": StochasticLogprobSd()})
    columns = iteration._score_columns(components, logp_policy, logp_ref, lengths, samples)
    assert np.array_equal(columns["old_column"], np.ones((2, 3)))
    assert np.allclose(columns["stochastic_logprob_sd"], samples.std(axis=0, ddof=1))
    # without passes only old scorers can run; a stochastic one says what is missing
    assert set(iteration._score_columns(_components({"old_column": OldScorer()}), logp_policy, logp_ref,
                                        lengths)) == {"old_column"}
    with pytest.raises(PluginError, match="no stochastic passes"):
        iteration._score_columns(components, logp_policy, logp_ref, lengths)


def test_a_world_without_stochastic_logprobs_is_a_usage_error_naming_the_selectors():
    components = _components({"stochastic_logprob_sd": StochasticLogprobSd()})
    with pytest.raises(UsageError, match="stochastic_logprobs"):
        iteration.check_stochastic_scoring(components, object())
    assert iteration.check_stochastic_scoring(_components({"old_column": OldScorer()}), object()) == 0


class CountingWorld:
    """Stochastic passes of a known form: pass k of response [m, n] is -(k + 1) * (1 + m + n), from ``rng``'s draw."""

    def __init__(self):
        self.calls = []

    def stochastic_logprobs(self, policy, prompts, responses, passes, rng):
        self.calls.append((len(prompts), passes, float(rng.random())))
        m, n = responses.lengths.shape
        k = np.arange(passes)[:, None, None] + 1
        return -k * (1.0 + np.arange(m)[None, :, None] + np.arange(n)[None, None, :])


def test_the_loop_helper_returns_k_m_n_from_its_own_stream():
    world = CountingWorld()
    responses = Responses(tokens=np.zeros((4, 3, 2), dtype=np.int64), lengths=np.ones((4, 3), dtype=np.int64))
    out = iteration._stochastic_logprobs(SINGLE, world, None, np.zeros((4, 2)), responses, 5, seed=3, iteration=2)
    assert out.shape == (5, 4, 3) and out[4, 3, 2] == -5 * 6
    again = CountingWorld()
    iteration._stochastic_logprobs(SINGLE, again, None, np.zeros((4, 2)), responses, 5, seed=3, iteration=2)
    other = CountingWorld()
    iteration._stochastic_logprobs(SINGLE, other, None, np.zeros((4, 2)), responses, 5, seed=3, iteration=3)
    assert world.calls == again.calls and world.calls != other.calls

    class Wrong(CountingWorld):
        def stochastic_logprobs(self, *args):
            return super().stochastic_logprobs(*args)[:, :, :1]

    with pytest.raises(PluginError, match="expected"):
        iteration._stochastic_logprobs(SINGLE, Wrong(), None, np.zeros((4, 2)), responses, 5, seed=3, iteration=2)


# ------------------------------------------------------------------ runs


def test_a_run_with_old_components_never_asks_for_passes(cli, db_path, monkeypatch):
    """`smallest` (contract 1 columns) runs as before: the world's stochastic method is never called."""
    from plugins.testbeds.synthetic.world import SyntheticWorld

    def refuse(*args, **kwargs):
        raise AssertionError("stochastic_logprobs was called for a run without a stochastic scorer")

    monkeypatch.setattr(SyntheticWorld, "stochastic_logprobs", refuse)
    result = cli("run", *TINY_RUN, "--selector", "smallest")
    assert result.exit_code == 0, result.output


def test_a_third_party_plugin_of_contract_1_still_runs(cli, db_path, tmp_path):
    plugin = tmp_path / "old_plugin.py"
    plugin.write_text(textwrap.dedent('''
        import numpy as np
        from harness import hookimpl
        from harness.interfaces import Pairs, Scorer, Selector

        class Gap(Scorer):
            name = "old_gap"
            description = "contract 1: three keywords"

            def score(self, *, logp_policy, logp_ref, lengths):
                return logp_policy - logp_ref

        class FirstTwo(Selector):
            name = "old_first_two"
            description = "responses 0 and 1, keep the first pairs"
            requires = ("old_gap",)

            def select_instances(self, batch, rng):
                ok = np.flatnonzero(batch.distinct[:, 1])
                return Pairs(ok, np.zeros(len(ok), dtype=np.int64), np.ones(len(ok), dtype=np.int64))

            def select_corpus(self, batch, pairs, n_keep, rng):
                return pairs.take(np.arange(min(n_keep, len(pairs))))

        @hookimpl
        def register_scorers(register):
            register(Gap)

        @hookimpl
        def register_selectors(register):
            register(FirstTwo)
    '''))
    result = cli("run", *TINY_RUN, "--selector", "old_first_two", "--plugin", str(plugin))
    assert result.exit_code == 0, result.output


def test_mixing_a_stochastic_and_an_old_selector(cli, db_path):
    """ae_dpo offers the pairs, smallest keeps the share: both column kinds are computed, K from ae_dpo."""
    result = cli("run", *TINY_RUN, "--instance-selector", "ae_dpo", "--corpus-selector", "smallest",
                 "-o", "passes=3")
    assert result.exit_code == 0, result.output


# ------------------------------------------------------------------ the synthetic world's surrogate


@pytest.fixture(scope="module")
def synthetic_world():
    from harness.config import build_config, instantiate
    from harness.loop import build_world
    from harness.plugins import load_registry
    from harness.progress import NullReporter

    registry = load_registry()
    config = build_config(registry, options=tuple(TINY_TESTBED))
    return build_world(instantiate(registry, config), 0, NullReporter())


def _pool(world, seed=0, m=6, n=4):
    rng = np.random.default_rng(seed)
    prompts = world.draw_prompts(m, rng)
    return prompts, world.sample(world.initial_policy, prompts, n, rng)


def test_synthetic_passes_spread_about_the_plain_log_probs(synthetic_world):
    world = synthetic_world
    prompts, responses = _pool(world)
    plain = world.logprobs(world.initial_policy, prompts, responses)
    samples = world.stochastic_logprobs(world.initial_policy, prompts, responses, 16, np.random.default_rng(1))
    assert samples.shape == (16, 6, 4)
    sd = samples.std(axis=0, ddof=1)
    assert (sd > 0).all(), "every response's log-prob moves under head dropout"
    # a perturbation, not a different model: the passes stay close to the plain forward
    assert np.abs(samples.mean(axis=0) - plain).max() < 4 * sd.max() + 0.5
    other = world.stochastic_logprobs(world.initial_policy, prompts, responses, 16, np.random.default_rng(2))
    assert not np.array_equal(samples, other)


def test_synthetic_surrogate_is_dropout_at_the_declared_rate(synthetic_world, monkeypatch):
    from plugins.testbeds.synthetic import world as world_module

    world = synthetic_world
    prompts, responses = _pool(world, seed=3)
    plain = world.logprobs(world.initial_policy, prompts, responses)
    assert world_module.STOCHASTIC_DROPOUT == 0.05
    spread = world.stochastic_logprobs(world.initial_policy, prompts, responses, 8, np.random.default_rng(0)).std(0)
    monkeypatch.setattr(world_module, "STOCHASTIC_DROPOUT", 0.0)
    none = world.stochastic_logprobs(world.initial_policy, prompts, responses, 3, np.random.default_rng(0))
    assert np.allclose(none, plain[None], rtol=0, atol=1e-5), "at rate 0 every pass is the plain forward"
    monkeypatch.setattr(world_module, "STOCHASTIC_DROPOUT", 0.3)
    more = world.stochastic_logprobs(world.initial_policy, prompts, responses, 8, np.random.default_rng(0)).std(0)
    assert more.mean() > spread.mean()


def test_synthetic_passes_leave_every_other_draw_alone(synthetic_world):
    """Stochastic passes use only their own Generator: sampling and log-probs give the same numbers after."""
    world = synthetic_world
    prompts, responses = _pool(world, seed=5)
    before_logps = world.logprobs(world.initial_policy, prompts, responses)
    before_sample = world.sample(world.initial_policy, prompts, 3, np.random.default_rng(9))
    world.stochastic_logprobs(world.initial_policy, prompts, responses, 5, np.random.default_rng(4))
    assert np.array_equal(before_logps, world.logprobs(world.initial_policy, prompts, responses))
    after_sample = world.sample(world.initial_policy, prompts, 3, np.random.default_rng(9))
    assert np.array_equal(before_sample.tokens, after_sample.tokens)
    assert not world.initial_policy.net.head._forward_pre_hooks, "the dropout hook was left on the head"


# ------------------------------------------------------------------ the hf world's MC dropout


@requires_extra("hf")
def test_hf_passes_come_from_head_dropout_when_the_model_has_none():
    import torch

    from plugins._hf.policy import mc_dropout
    from tests.hf_tiny import tiny_world

    world = tiny_world()
    policy = world.initial_policy
    assert all(m.p == 0.0 for m in policy.model.modules() if isinstance(m, torch.nn.Dropout))
    prompts = world.draw_prompts(3, np.random.default_rng(0))
    responses = world.sample(policy, prompts, 2, np.random.default_rng(1))
    plain = world.logprobs(policy, prompts, responses)
    state = torch.get_rng_state()
    first = world.stochastic_logprobs(policy, prompts, responses, 4, np.random.default_rng(7))
    assert torch.equal(state, torch.get_rng_state()), "the global torch RNG moved"
    assert first.shape == (4, 3, 2) and (first.std(axis=0) > 0).all()
    assert np.array_equal(first, world.stochastic_logprobs(policy, prompts, responses, 4, np.random.default_rng(7)))
    assert not policy.model.training, "the model was left in train mode"
    assert np.array_equal(plain, world.logprobs(policy, prompts, responses))
    # the model's own dropout modules count too: with the head dropout off they are the only noise
    model = policy.clone()
    with mc_dropout(model, np.random.default_rng(0), rate=0.0):
        quiet = [world.logprobs(model, prompts, responses, dropout=True) for _ in range(2)]
    assert np.allclose(quiet[0], quiet[1], atol=1e-6) and np.allclose(quiet[0], plain, atol=1e-4)
    for module in model.model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.3
    with mc_dropout(model, np.random.default_rng(0), rate=0.0):
        noisy = [world.logprobs(model, prompts, responses, dropout=True) for _ in range(2)]
    assert not np.allclose(noisy[0], noisy[1])
