"""The contracts of :mod:`harness.testing` can fail: each check against a component broken on purpose.

Every case is a component that differs from a correct one (which passes the
same contract: the ``Test*Control`` classes and the built-ins of
``test_contracts_builtin``) by one flaw, and the contract test that must
catch it, called directly, with the message it must give.
"""

from __future__ import annotations

import numpy as np
import pytest

from conftest import TINY_TESTBED
from harness.errors import UsageError
from harness.interfaces import Judge, Labels, TrainResult
from harness.options import Option
from harness.testing import (
    JudgeContract,
    ScorerContract,
    TestbedContract,
    TokenTextWorld,
    TrainerContract,
)
from plugins.scorers.implicit import ImplicitReward
from plugins.testbeds.synthetic import SyntheticTestbed
from plugins.trainers.native import NativeDPOTrainer

TINY = {name.removeprefix("testbed."): value for name, value in (o.split("=", 1) for o in TINY_TESTBED)}


def contract(base, attribute, component, **attributes):
    """A contract class over ``component`` (named so that pytest does not collect it)."""
    return type(f"Check{component.__name__}", (base,), {attribute: component, **attributes})


def assert_fails(check, method, match):
    """``check().method()`` fails with an AssertionError whose message matches ``match``."""
    with pytest.raises(AssertionError, match=match):
        getattr(check(), method)()


# ------------------------------------------------------------------ component basics


class _NoSuper(ImplicitReward):
    options = (Option("scale", float, 1.0, "a scale"),)

    def __init__(self, settings=None):  # forgets Component.__init__: no settings
        pass


class _SwallowsOptions(ImplicitReward):
    options = (Option("scale", float, 1.0, "a scale"),)

    def __init__(self, settings=None):
        super().__init__({})  # ignores what the user passed, unknown names included


class _NoDescription(ImplicitReward):
    description = ""


@pytest.mark.parametrize("component, method, match", [
    (_NoDescription, "test_class_registers", "refuse to register.*no description"),
    (_NoSuper, "test_settings_are_the_declared_options", "call super"),
    (_SwallowsOptions, "test_settings_are_the_declared_options", r"settings\['scale'\] is 1.0, expected 2.0"),
    (_SwallowsOptions, "test_an_unknown_option_is_a_usage_error", "must raise UsageError, but returned normally"),
])
def test_the_component_checks_fail_for_broken_classes(component, method, match):
    assert_fails(contract(ScorerContract, "scorer_class", component, settings={"scale": 2.0}), method, match)


# ------------------------------------------------------------------ scorers


class TestImplicitRewardControl(ScorerContract):
    scorer_class = ImplicitReward


class _Flat(ImplicitReward):
    def score(self, *, logp_policy, logp_ref, lengths):
        return (logp_policy - logp_ref).reshape(-1)


class _PerContentToken(ImplicitReward):
    def score(self, *, logp_policy, logp_ref, lengths):
        with np.errstate(divide="ignore", invalid="ignore"):
            return (logp_policy - logp_ref) / (lengths - 1)  # a response of EOS alone divides by 0


class _Stateful(ImplicitReward):
    calls = 0

    def score(self, *, logp_policy, logp_ref, lengths):
        type(self).calls += 1
        return logp_policy - logp_ref + type(self).calls


class _InPlace(ImplicitReward):
    def score(self, *, logp_policy, logp_ref, lengths):
        logp_policy -= logp_ref
        return logp_policy


class _Noisy(ImplicitReward):
    def score(self, *, logp_policy, logp_ref, lengths):
        return logp_policy - logp_ref + np.random.normal(0.0, 1e-6, size=np.shape(lengths))


class _ReadsGlobalState(ImplicitReward):
    def score(self, *, logp_policy, logp_ref, lengths):
        return logp_policy - logp_ref + 1e-9 * float(np.random.get_state()[1][0])


class _PromptPosition(ImplicitReward):
    def score(self, *, logp_policy, logp_ref, lengths):
        return logp_policy - logp_ref + np.arange(np.shape(lengths)[0])[:, None]


class _ResponsePosition(ImplicitReward):
    def score(self, *, logp_policy, logp_ref, lengths):
        return logp_policy - logp_ref + 0.01 * np.arange(np.shape(lengths)[1])[None, :]


class _RankWithinPrompt(ImplicitReward):
    def score(self, *, logp_policy, logp_ref, lengths):
        return np.argsort(np.argsort(logp_policy - logp_ref, axis=1, kind="stable"), axis=1).astype(float)


@pytest.mark.parametrize("component, method, match", [
    (_Flat, "test_column_shape_and_values", "returned shape"),
    (_PerContentToken, "test_extreme_inputs_stay_finite", "NaN or infinite"),
    (_Stateful, "test_deterministic", "differs"),
    (_InPlace, "test_does_not_modify_its_inputs", "modified its input logp_policy"),
    (_Noisy, "test_does_not_touch_global_rng", "global numpy.random"),
    (_ReadsGlobalState, "test_does_not_depend_on_global_rng", "changes with the global RNG"),
    (_PromptPosition, "test_permuting_prompts_permutes_the_column", "prompt's position"),
    (_ResponsePosition, "test_permuting_responses_permutes_the_column", "response's position"),
    (_RankWithinPrompt, "test_identical_responses_score_the_same", "identical log-probs"),
])
def test_the_scorer_contract_fails_for_broken_scorers(component, method, match):
    assert_fails(contract(ScorerContract, "scorer_class", component), method, match)


def test_a_broken_scorer_passes_the_checks_it_does_not_break():
    """Each flaw fails its own check only: _RankWithinPrompt is a fine scorer but for ties."""
    check = contract(ScorerContract, "scorer_class", _RankWithinPrompt)()
    check.test_column_shape_and_values()
    check.test_permuting_prompts_permutes_the_column()


# ------------------------------------------------------------------ trainers


class TestNativeControl(TrainerContract):
    trainer_class = NativeDPOTrainer
    settings = {"epochs": 2, "batch_size": 8}


def _swap(data):
    from dataclasses import replace

    return replace(data, chosen=data.rejected, chosen_lengths=data.rejected_lengths, rejected=data.chosen,
                   rejected_lengths=data.chosen_lengths, ref_chosen_logps=data.ref_rejected_logps,
                   ref_rejected_logps=data.ref_chosen_logps)


class _FixedBeta(NativeDPOTrainer):
    @property
    def beta(self):
        return 1.0  # ignores the beta option


class _NanLoss(NativeDPOTrainer):
    def train(self, *, policy, data, rng):
        result = super().train(policy=policy, data=data, rng=rng)
        return TrainResult(result.policy, result.steps, result.epochs, float("nan"), result.loss_last)


class _ReturnsItsInput(NativeDPOTrainer):
    def train(self, *, policy, data, rng):
        return TrainResult(policy, 1, 1.0, 0.0, 0.0)


class _TrainsInPlace(NativeDPOTrainer):
    def train(self, *, policy, data, rng):
        import torch

        result = super().train(policy=policy, data=data, rng=rng)
        with torch.no_grad():
            for mine, trained in zip(policy.parameters(), result.policy.parameters()):
                mine.copy_(trained)
        return result


class _Swapped(NativeDPOTrainer):
    def train(self, *, policy, data, rng):
        return super().train(policy=policy, data=_swap(data), rng=rng)


class _NotAPolicy(NativeDPOTrainer):
    def train(self, *, policy, data, rng):
        result = super().train(policy=policy, data=data, rng=rng)
        return TrainResult(result.policy.parameters(), result.steps, result.epochs, result.loss_first, 0.0)


class _Unseeded(NativeDPOTrainer):
    def train(self, *, policy, data, rng):
        return super().train(policy=policy, data=data, rng=np.random.default_rng())


class _SeedsTorch(NativeDPOTrainer):
    def train(self, *, policy, data, rng):
        import torch

        torch.manual_seed(0)
        return super().train(policy=policy, data=data, rng=rng)


class _ReadsTorchSeed(NativeDPOTrainer):
    def train(self, *, policy, data, rng):
        import torch

        return super().train(policy=policy, data=data, rng=np.random.default_rng(torch.initial_seed()))


class _AlwaysAStep(NativeDPOTrainer):
    def train(self, *, policy, data, rng):
        result = super().train(policy=policy, data=data, rng=rng)
        return TrainResult(result.policy, max(1, result.steps), result.epochs, result.loss_first, result.loss_last)


class _DropsTheLastPair(NativeDPOTrainer):
    def train(self, *, policy, data, rng):
        return super().train(policy=policy, data=data.take(slice(None, -1)), rng=rng)


class _DoublesSteps(NativeDPOTrainer):
    def train(self, *, policy, data, rng):
        trainer = NativeDPOTrainer({**self.settings, "steps": 2 * self.settings["steps"]})
        return trainer.train(policy=policy, data=data, rng=rng)


@pytest.mark.parametrize("component, method, match", [
    (_FixedBeta, "test_beta_is_a_positive_float", "beta is 1.0 but the beta option is 0.5"),
    (_NanLoss, "test_trains_a_clone_and_leaves_its_inputs_alone", "loss_first must be a finite real"),
    (_ReturnsItsInput, "test_trains_a_clone_and_leaves_its_inputs_alone", "returned the policy it was given"),
    (_TrainsInPlace, "test_trains_a_clone_and_leaves_its_inputs_alone", "modified the policy it was given"),
    (_Swapped, "test_training_raises_the_margin_of_the_chosen", "did not prefer the chosen"),
    (_NotAPolicy, "test_trained_policy_is_a_policy", "lacks clone, parameters or sequence_logprobs"),
    (_Unseeded, "test_deterministic_for_equal_seeds", "equal seeds gave different"),
    (_SeedsTorch, "test_does_not_touch_global_rng", "global torch RNG"),
    (_ReadsTorchSeed, "test_does_not_depend_on_global_rng", "changes with the global RNG"),
    (_AlwaysAStep, "test_no_pairs_train_nothing", "no pairs ran 1 steps"),
    (_DropsTheLastPair, "test_one_pair_trains", "one pair ran no step"),
    (_DoublesSteps, "test_steps_option_is_honoured", "with steps=1 the trainer ran 2 steps"),
])
def test_the_trainer_contract_fails_for_broken_trainers(component, method, match):
    check = contract(TrainerContract, "trainer_class", component, settings={"epochs": 2, "batch_size": 8, "beta": 0.5})
    assert_fails(check, method, match)


# ------------------------------------------------------------------ judges


class LengthJudge(Judge):
    """A correct judge for the controls: the longer response scores higher (text worlds only)."""

    name = "length"
    description = "the longer response wins"

    def __init__(self, settings=None):
        super().__init__(settings)
        self.calls = 0

    def score(self, *, world, prompts, responses, rng):
        if not hasattr(world, "texts"):
            raise UsageError(f"judge 'length' reads text, and {type(world).__name__} has none")
        self.calls += 1
        return responses.lengths.astype(np.float64)

    def usage(self):
        return {"calls": self.calls}


class TestLengthJudgeControl(JudgeContract):
    judge_class = LengthJudge


class _FlatScores(LengthJudge):
    def score(self, **kwargs):
        return super().score(**kwargs).reshape(-1)


class _UnseededNoise(LengthJudge):
    def score(self, **kwargs):
        scores = super().score(**kwargs)
        return scores + np.random.default_rng().normal(size=scores.shape)


class _FloatVerdicts(LengthJudge):
    def compare(self, **kwargs):
        labels = super().compare(**kwargs)
        return Labels(prefer_a=labels.prefer_a.astype(float), tie=labels.tie)


class _UnseededCoin(LengthJudge):
    def compare(self, *, pairs, **kwargs):
        return Labels(prefer_a=np.random.default_rng().random(len(pairs)) < 0.5)


class _OneVerdictTooMany(LengthJudge):
    def compare(self, *, pairs, **kwargs):
        return Labels(prefer_a=np.ones(len(pairs) + 1, dtype=bool))


class _SortsLengths(LengthJudge):
    def score(self, *, responses, **kwargs):
        responses.lengths.sort(axis=1)
        return super().score(responses=responses, **kwargs)


class _GlobalNoise(LengthJudge):
    def score(self, **kwargs):
        scores = super().score(**kwargs)
        return scores + np.random.normal(size=scores.shape)


class _AssumesGold(LengthJudge):
    def score(self, *, world, prompts, responses, rng):
        return world.gold_rewards(prompts, responses)


class _NegativeCounter(LengthJudge):
    def usage(self):
        return {"calls": -self.calls}


class _ResetsItsCounter(LengthJudge):
    def usage(self):
        calls, self.calls = self.calls, 0
        return {"calls": calls}


class _CacheFlipsVerdicts(LengthJudge):
    flip = False

    def use_cache(self, cache):
        self.flip = True

    def compare(self, **kwargs):
        labels = super().compare(**kwargs)
        return Labels(prefer_a=labels.prefer_a ^ self.flip, tie=labels.tie)


@pytest.mark.parametrize("component, method, match, attributes", [
    (_FlatScores, "test_score", "score returned shape", {}),
    (_UnseededNoise, "test_score", "equal seeds differ", {}),
    (LengthJudge, "test_score", "must raise UsageError, but returned normally", {"pointwise": False}),
    (_FloatVerdicts, "test_compare", "prefer_a must be a bool array", {}),
    (_UnseededCoin, "test_compare", "prefer_a differ", {}),
    (LengthJudge, "test_compare", "must raise UsageError, but returned normally", {"pairwise": False}),
    (_OneVerdictTooMany, "test_compare_of_no_pairs", r"shape \(1,\), expected \(0,\)", {}),
    (_SortsLengths, "test_does_not_modify_its_inputs", "modified its input lengths", {}),
    (_GlobalNoise, "test_does_not_touch_global_rng", "global numpy.random", {}),
    (_AssumesGold, "test_a_world_it_cannot_read_is_a_usage_error", "raised AttributeError", {}),
    (_NegativeCounter, "test_usage_counters_never_decrease", "non-negative ints", {}),
    (_ResetsItsCounter, "test_usage_counters_never_decrease", "went down", {}),
    (_CacheFlipsVerdicts, "test_a_judgement_cache_changes_no_verdict", "judgement cache", {}),
])
def test_the_judge_contract_fails_for_broken_judges(component, method, match, attributes):
    assert_fails(contract(JudgeContract, "judge_class", component, **attributes), method, match)


def test_the_token_text_world_renders_responses_up_to_their_length():
    from harness.interfaces import Responses

    tokens = np.array([[[3, 4, 0], [5, 0, 0]]])
    prompts, responses = TokenTextWorld().texts(np.array([[7, 8]]), Responses(tokens, np.array([[2, 1]])))
    assert (prompts, responses) == (["t7 t8"], [["t3 t4", "t5"]])


# ------------------------------------------------------------------ testbeds


class WorldWrapper:
    """The tiny synthetic world, with one method replaced by a subclass."""

    def __init__(self, inner):
        self._inner = inner

    def __getattr__(self, name):
        return getattr(self._inner, name)


def wrapped(world_class, **attributes):
    """The synthetic testbed, building its world wrapped in ``world_class``."""

    def build_world(self, *, seed, reporter, trainers=None):
        return world_class(SyntheticTestbed.build_world(self, seed=seed, reporter=reporter, trainers=trainers))

    return type(f"Wrapped{world_class.__name__}", (SyntheticTestbed,), {"build_world": build_world, **attributes})


def check_of_testbed(testbed_class, **attributes):
    return type(f"Check{testbed_class.__name__}", (TestbedContract,),
                {"testbed_class": testbed_class, "settings": TINY, "__test__": False, **attributes})


class _Builds:
    count = 0


class _DrawsByBuild(WorldWrapper):
    def __init__(self, inner):
        super().__init__(inner)
        _Builds.count += 1
        self.build = _Builds.count

    def draw_prompts(self, n, rng):
        return (self._inner.draw_prompts(n, rng) + self.build) % 32


class _Int32Prompts(WorldWrapper):
    def draw_prompts(self, n, rng):
        return self._inner.draw_prompts(n, rng).astype(np.int32)


class _EmptyResponses(WorldWrapper):
    def sample(self, policy, prompts, n, rng):
        from harness.interfaces import Responses

        responses = self._inner.sample(policy, prompts, n, rng)
        return Responses(responses.tokens, np.zeros_like(responses.lengths))


class _SamplesGlobally(WorldWrapper):
    def sample(self, policy, prompts, n, rng):
        return self._inner.sample(policy, prompts, n, np.random.default_rng())


class _PositiveLogprobs(WorldWrapper):
    def logprobs(self, policy, prompts, responses):
        return -self._inner.logprobs(policy, prompts, responses)


class _CentredLogprobs(WorldWrapper):
    def logprobs(self, policy, prompts, responses):
        values = self._inner.logprobs(policy, prompts, responses)
        return values - values.max()  # relative to the call's best response: depends on the batch


class _OneLabelShort(WorldWrapper):
    def annotate(self, prompts, responses, pairs, rng):
        labels = self._inner.annotate(prompts, responses, pairs, rng)
        return Labels(prefer_a=labels.prefer_a[:-1])


class _WinRatePercent(WorldWrapper):
    def evaluate(self, policy, rng):
        metrics = self._inner.evaluate(policy, rng)
        return {**metrics, "win_rate": 100.0 * metrics["win_rate"]}


class _KlFloor(WorldWrapper):
    def evaluate(self, policy, rng):
        metrics = self._inner.evaluate(policy, rng)
        return {**metrics, "kl": metrics["kl"] + 0.1}


class _LoadsTheReference(WorldWrapper):
    def load_policy(self, path):
        return self._inner.reference_policy


class _LoadRaisesValueError(WorldWrapper):
    def load_policy(self, path):
        if path.read_bytes().startswith(b"not a checkpoint"):
            raise ValueError("bad header")
        return self._inner.load_policy(path)


class _NoLoad(WorldWrapper):
    def __getattr__(self, name):
        if name == "load_policy":
            raise AttributeError(name)
        return super().__getattr__(name)


class _TextsWithPositions(WorldWrapper):
    def texts(self, prompts, responses):
        prompt_texts, response_texts = self._inner.texts(prompts, responses)
        return prompt_texts, [[f"{j}: {t}" for j, t in enumerate(row)] for row in response_texts]


class _ReferenceIsGreedy(WorldWrapper):
    def evaluation_pairs(self, policy, rng):
        from harness.interfaces import Responses

        prompts, pairs = self._inner.evaluation_pairs(policy, rng)
        return prompts, Responses(pairs.tokens[:, [0, 0]], pairs.lengths[:, [0, 0]])


class _GoldByPosition(WorldWrapper):
    def gold_rewards(self, prompts, responses, tables=None):
        gold = self._inner.gold_rewards(prompts, responses, tables)
        return gold + np.arange(gold.shape[1])[None, :]


class _SeedRoundNumpy(WorldWrapper):
    seed_round = {"seed_labels": np.int64(40)}


class _SeedRoundUnprefixed(WorldWrapper):
    seed_round = {"pi0_steps": 3}


class _ReportsText(WorldWrapper):
    def evaluation_report(self, **kwargs):
        return {"alpaca_note": "n/a"}


class _ClaimsToShard(WorldWrapper):
    shards_sampling = True  # but the synthetic world draws all its prompts' responses from one stream


class _NeedsADevice(SyntheticTestbed):
    def build_world(self, *, seed, reporter, device):
        return super().build_world(seed=seed, reporter=reporter)


@pytest.mark.parametrize("testbed, method, match, attributes", [
    (wrapped(WorldWrapper, default_judges={"gold": "no_such_judge"}), "test_default_judges_are_registered_judges",
     "not registered: .'no_such_judge'.", {}),
    (wrapped(WorldWrapper, default_judges={"referee": "synthetic_gold"}), "test_default_judges_are_registered_judges",
     "roles .'referee'.", {}),
    (_NeedsADevice, "test_build_world_takes_the_loops_keywords", "'device' has no default", {}),
    (wrapped(_NoLoad), "test_world_has_the_loops_attributes", "both save_policy and load_policy", {}),
    (wrapped(_DrawsByBuild), "test_world_is_a_function_of_its_seed", "built again draws other prompts", {}),
    (wrapped(_Int32Prompts), "test_draw_prompts", "int64", {}),
    (wrapped(_EmptyResponses), "test_sample", "length 0", {}),
    (wrapped(_SamplesGlobally), "test_sample", "equal seeds: the responses differ", {}),
    (wrapped(_PositiveLogprobs), "test_logprobs", "log-prob is positive", {}),
    (wrapped(_CentredLogprobs), "test_logprobs_do_not_depend_on_the_batch", "scored with all of them", {}),
    (wrapped(_OneLabelShort), "test_annotate", "one value per pair", {}),
    (wrapped(WorldWrapper), "test_annotate", "must raise UsageError, but returned normally", {"annotates": False}),
    (wrapped(_WinRatePercent), "test_evaluate", r"outside \[0, 1\]", {}),
    (wrapped(WorldWrapper), "test_evaluate", r"reports no \['accuracy', 'f1'\]",
     {"required_metrics": ("win_rate", "accuracy", "f1")}),
    (wrapped(_KlFloor), "test_evaluating_the_reference_reports_no_kl", "KL.*reported as 0.1", {}),
    (wrapped(_LoadsTheReference), "test_checkpoints", "loaded back scores responses differently", {}),
    (wrapped(_LoadRaisesValueError), "test_checkpoints", "corrupt file must raise CheckpointError, but raised "
     "ValueError", {}),
    (wrapped(_TextsWithPositions), "test_texts", "identical responses read differently", {}),
    (wrapped(_ReferenceIsGreedy), "test_evaluation_pairs", "depends on the policy evaluated", {}),
    (wrapped(_GoldByPosition), "test_gold_rewards", "identical responses have different gold", {}),
    (wrapped(_SeedRoundNumpy), "test_seed_round", "is a int64; the loop records only", {}),
    (wrapped(_SeedRoundUnprefixed), "test_seed_round", "does not start with seed_", {}),
    (wrapped(_ClaimsToShard), "test_shards_sampling", "change with the other prompts of the sample call", {}),
])
def test_the_testbed_contract_fails_for_broken_testbeds(testbed, method, match, attributes):
    assert_fails(check_of_testbed(testbed, **attributes), method, match)


def test_an_evaluation_report_of_text_fails():
    check = check_of_testbed(wrapped(_ReportsText))
    with pytest.raises(AssertionError, match="alpaca_note.*not a finite number"):
        check().test_evaluation_report()


def test_an_optional_method_the_world_lacks_is_skipped():
    import unittest

    check = check_of_testbed(wrapped(WorldWrapper))()
    with pytest.raises(unittest.SkipTest, match="no optional seed_round"):
        check.test_seed_round()


def test_subclasses_of_the_testbed_contract_are_test_classes_and_it_is_not():
    class TestMine(TestbedContract):
        testbed_class = SyntheticTestbed

    assert TestbedContract.__test__ is False and TestMine.__test__ is True
