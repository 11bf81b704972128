"""Every built-in component runs through its kind's contract (:mod:`harness.testing`).

The rule (:func:`test_every_builtin_runs_through_its_kinds_contract`): every
component class a built-in plugin registers (``source == "builtin"`` in
:func:`harness.plugins.load_registry`) is the ``<kind>_class`` of at least one
module-level ``Test*`` class that subclasses its kind's contract
(:data:`harness.testing.CONTRACTS`), in this module or in one of
:data:`CONTRACT_MODULES` (where the selector and allocator contracts already
ran before this module existed). A new built-in without such a class fails it,
naming the component; a contract run in another module counts once that module
is added to :data:`CONTRACT_MODULES`.

The contracts run here on the tiny worlds of the other tests: the synthetic
testbed's tiny options (``TINY_TESTBED``) and the tiny GPT-2 models of
:mod:`tests.hf_tiny`, built in code. Judges that need a service or weights the
machine cannot have run against stand-ins of those: ``openai`` against the
scripted endpoint of :mod:`tests.openai_standin`, ``pairrm`` with a stand-in
ranker behind its ``load_ranker`` seam (PairRM's weights are on the Hub only).
Classes needing torch and transformers (or trl) are skipped, saying so, when
those are not installed.
"""

from __future__ import annotations

import atexit
import functools
import importlib
import importlib.util
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from conftest import TINY_TESTBED
from harness.plugins import PluginInfo, Registry, load_registry
from harness.testing import (
    CONTRACTS,
    JudgeContract,
    ScorerContract,
    TokenTextWorld,
    SelectorContract,
    TestbedContract,
    TrainerContract,
    world_preference_data,
)
from plugins.judges.embedding import EmbeddingJudge
from plugins.judges.external import ExternalAnnotator
from plugins.judges.function import FunctionJudge
from plugins.judges.openai import OpenAIJudge
from plugins.judges.pairrm import PairRMJudge
from plugins.judges.reward_model import RewardModelJudge
from plugins.judges.synthetic import SyntheticGold, SyntheticProxy
from plugins.judges.verifier import VerifierJudge
from plugins.scorers.implicit import ImplicitReward, ImplicitRewardNormalized, PolicyLogprobMean
from plugins.selectors.gold_gradient import GoldGradient
from plugins.testbeds.hf import HFTestbed
from plugins.testbeds.synthetic import SyntheticTestbed
from plugins.trainers.native import NativeDPOTrainer
from plugins.trainers.trl import TRLDPOTrainer
from tests.extras import requires_extra

#: Test modules whose module-level contract classes count as contract runs of built-ins.
CONTRACT_MODULES = ("test_selectors", "test_selectors_explicit", "test_field_strategies", "test_allocators",
                    "test_active_exploration", "test_stochastic_scoring", "test_adaptive_allocator",
                    "test_feature_selectors", "test_steered_sampling")

needs_hf = requires_extra("hf")  # the hf testbed, the trl trainer and the model judges

TINY = dict(option.split("=", 1) for option in TINY_TESTBED)
TINY = {name.removeprefix("testbed."): value for name, value in TINY.items()}


# ------------------------------------------------------------------ the rule


def contract_runs(modules) -> dict[tuple[str, type], list[str]]:
    """(kind, component class) -> the module-level contract test classes that run it, over ``modules``."""
    runs: dict[tuple[str, type], list[str]] = {}
    for module in modules:
        for attribute, value in vars(module).items():
            if not (isinstance(value, type) and attribute.startswith("Test")):
                continue
            for kind, contract in CONTRACTS.items():
                component = getattr(value, f"{kind}_class", None)
                if issubclass(value, contract) and value is not contract and component is not None:
                    runs.setdefault((kind, component), []).append(f"{module.__name__}.{attribute}")
    return runs


def uncovered(registry: Registry, runs) -> list[str]:
    """Every built-in component of ``registry`` that no contract run covers, as ``kind 'name' (class)``."""
    return sorted(
        f"{kind} {name!r} ({item.cls.__module__}.{item.cls.__qualname__})"
        for kind, items in registry.components.items()
        for name, item in items.items()
        if item.plugin.source == "builtin" and (kind, item.cls) not in runs
    )


def test_every_builtin_runs_through_its_kinds_contract():
    modules = [sys.modules[__name__], *(importlib.import_module(name) for name in CONTRACT_MODULES)]
    registry = load_registry()
    missing = uncovered(registry, contract_runs(modules))
    assert not missing, (
        f"built-ins without a contract run: {missing}. Add a Test* subclass of its kind's contract "
        f"(harness.testing.CONTRACTS) to {__name__} or to a module listed in CONTRACT_MODULES."
    )
    assert all(registry.components[kind] for kind in CONTRACTS)  # the registry was really read: every kind


def test_a_builtin_without_a_contract_run_is_reported():
    class Unchecked(ImplicitReward):
        name = "unchecked_column"
        description = "a built-in nobody wrote a contract class for"

    registry = load_registry()
    runs = contract_runs([sys.modules[__name__]])
    assert uncovered(registry, runs) != []  # selectors and allocators run in CONTRACT_MODULES only
    registry.add("scorer", Unchecked, PluginInfo("plugins.scorers.unchecked", "0", "builtin"))
    modules = [sys.modules[__name__], *(importlib.import_module(name) for name in CONTRACT_MODULES)]
    assert uncovered(registry, contract_runs(modules)) == [
        f"scorer 'unchecked_column' ({__name__}.{Unchecked.__qualname__})"
    ]


# ------------------------------------------------------------------ shared tiny worlds


@functools.lru_cache(maxsize=None)
def synthetic_world():
    from harness.progress import NullReporter

    return SyntheticTestbed(TINY).build_world(seed=0, reporter=NullReporter())


@functools.lru_cache(maxsize=None)
def hf_world():
    from tests.hf_tiny import tiny_world

    return tiny_world()


def _scratch() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="pairsel-contracts-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


@functools.lru_cache(maxsize=None)
def embedding_targets() -> Path:
    """A targets file with the correct answer of every tiny prompt, training and evaluation."""
    from plugins.testbeds.hf.tiny import answer
    from tests.hf_tiny import tiny_paths

    paths = tiny_paths()
    prompts = [json.loads(line)["prompt"] for f in (paths.prompts, paths.eval) for line in f.read_text().splitlines()]
    path = _scratch() / "targets.jsonl"
    path.write_text("".join(json.dumps({"prompt": p, "target": answer(p)}) + "\n" for p in prompts))
    return path


@functools.lru_cache(maxsize=None)
def pairrm_dir() -> Path:
    """A directory laid out like llm-blender/PairRM-hf (its config only: the ranker is a stand-in)."""
    folder = _scratch() / "pairrm-hf"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"architectures": ["DebertaV2PairRM"], "model_type": "deberta-v2"}))
    return folder


# ------------------------------------------------------------------ scorers


class TestImplicitRewardContract(ScorerContract):
    scorer_class = ImplicitReward


class TestImplicitRewardNormalizedContract(ScorerContract):
    scorer_class = ImplicitRewardNormalized


class TestPolicyLogprobMeanContract(ScorerContract):
    scorer_class = PolicyLogprobMean


# ------------------------------------------------------------------ selectors
# (the other built-in selectors run their contract in CONTRACT_MODULES)


class TestGoldGradientContract(SelectorContract):
    """The reference point that reads exact gold: the contract hands it a pool's exact gold and a toy policy."""

    selector_class = GoldGradient


# ------------------------------------------------------------------ trainers


class TestNativeContract(TrainerContract):
    trainer_class = NativeDPOTrainer
    settings = {"epochs": 4, "batch_size": 8}


class TestNativeOnTheSyntheticWorldContract(TrainerContract):
    """The native trainer on the synthetic testbed's own GRU policy and loop-built data."""

    trainer_class = NativeDPOTrainer
    settings = {"epochs": 2, "batch_size": 8}

    def make_policy(self):
        return synthetic_world().initial_policy

    def make_data(self, policy, n_pairs, seed):
        return world_preference_data(synthetic_world(), n_pairs=n_pairs, seed=seed, policy=policy)


@needs_hf
@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")
class TestTrlContract(TrainerContract):
    trainer_class = TRLDPOTrainer
    settings = {"lr": 1e-3, "batch_size": 4, "grad_accum": 1, "warmup_ratio": 0.0}
    n_pairs = 12

    def make_policy(self):
        return hf_world().initial_policy

    def make_data(self, policy, n_pairs, seed):
        return world_preference_data(hf_world(), n_pairs=n_pairs, seed=seed, policy=policy)


# ------------------------------------------------------------------ testbeds


class TestSyntheticTestbedContract(TestbedContract):
    testbed_class = SyntheticTestbed
    settings = TINY
    required_metrics = ("win_rate", "win_rate_se", "gold_reward", "kl")


@needs_hf
class TestHFTestbedContract(TestbedContract):
    testbed_class = HFTestbed
    annotates = False  # the hf world has no annotator of its own: a run names a judge
    required_metrics = ("kl",)

    def make_settings(self):
        from tests.hf_tiny import world_settings

        return world_settings()


# ------------------------------------------------------------------ judges


def response_length(prompts, responses):
    """A ``function`` judge in score mode: the longer text scores higher."""
    return [float(len(text)) for text in responses]


def prefer_longer(prompts, responses_a, responses_b):
    """A ``function`` judge in compare mode: the longer text wins, equal lengths tie."""
    return [0.5 if len(a) == len(b) else float(len(a) > len(b)) for a, b in zip(responses_a, responses_b)]


class TestSyntheticGoldContract(JudgeContract):
    judge_class = SyntheticGold

    def make_world(self):
        return synthetic_world()


class TestSyntheticGoldNoiselessContract(TestSyntheticGoldContract):
    settings = {"noise": 0.0}


class TestSyntheticProxyContract(JudgeContract):
    judge_class = SyntheticProxy
    settings = {"fidelity": 0.5, "length_bias": 0.2, "noise": 0.1}

    def make_world(self):
        return synthetic_world()


class TestFunctionScoreContract(JudgeContract):
    judge_class = FunctionJudge
    settings = {"callable": f"{__name__}:response_length"}


class TestFunctionCompareContract(JudgeContract):
    judge_class = FunctionJudge
    settings = {"callable": f"{__name__}:prefer_longer", "mode": "compare"}
    pointwise = False


VERIFIABLE = Path(__file__).resolve().parent.parent / "plugins" / "testbeds" / "hf" / "data" / "verifiable"


class OneQuestionWorld(TokenTextWorld):
    """Every prompt is one shipped arithmetic question; responses are token words such as ``t5 t12``, whose
    last number sometimes is the answer, so the verifier's scores differ."""

    question = next(row["prompt"] for row in map(json.loads, (VERIFIABLE / "train.jsonl").open())
                    if json.loads(row["check"])["kind"] == "number")

    def texts(self, prompts, responses):
        _, response_texts = super().texts(prompts, responses)
        return [self.question] * len(response_texts), response_texts


class TestVerifierContract(JudgeContract):
    judge_class = VerifierJudge
    settings = {"tasks": str(VERIFIABLE)}

    def make_world(self):
        return OneQuestionWorld()


class TestExternalContract(JudgeContract):
    judge_class = ExternalAnnotator
    pointwise = False
    pairwise = False  # people label the pairs: the loop hands them over instead of calling compare


class TestOpenAIContract(JudgeContract):
    """Against the scripted stand-in endpoint (no model, no network): the judge's side of the contract."""

    judge_class = OpenAIJudge
    pointwise = False
    key_variable = "PAIRSEL_TEST_OPENAI_KEY"

    @pytest.fixture(autouse=True)
    def _standin(self, monkeypatch):
        from tests.openai_standin import StandinServer, prefer_longer as longer

        monkeypatch.setenv(self.key_variable, "sk-test-contract")
        monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
        monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
        with StandinServer(longer) as server:
            self.base_url = server.base_url
            yield

    def make_settings(self):
        return {"base_url": self.base_url, "model": "standin-judge", "api_key_env": self.key_variable,
                "retry_delay": 0.0}


class StandInRanker:
    """NOT PairRM: ``Blender.compare``'s signature, preferring the longer text (logit = length difference)."""

    def compare(self, inputs, candidates_A, candidates_B, instructions=None, batch_size=4, return_logits=False,
                mode="[A,B]+[B,A]", disable_tqdm=False):
        logits = np.array([len(a) - len(b) for a, b in zip(candidates_A, candidates_B)], dtype=float)
        return logits if return_logits else logits > 0


class TestPairRMContract(JudgeContract):
    """The adapter's side of the contract, with a stand-in ranker (PairRM's weights cannot be had offline)."""

    judge_class = PairRMJudge
    pointwise = False

    @pytest.fixture(autouse=True)
    def _standin_ranker(self, monkeypatch):
        from plugins.judges import pairrm

        monkeypatch.setattr(pairrm, "load_ranker", lambda settings: StandInRanker())

    def make_settings(self):
        return {"model": str(pairrm_dir()), "batch_size": 2}


@needs_hf
class TestRewardModelContract(JudgeContract):
    judge_class = RewardModelJudge

    def make_settings(self):
        from tests.hf_tiny import tiny_paths

        return {"model": str(tiny_paths().reward), "batch_size": 4}

    def make_world(self):
        return hf_world()


@needs_hf
class TestEmbeddingContract(JudgeContract):
    judge_class = EmbeddingJudge

    def make_settings(self):
        from tests.hf_tiny import tiny_paths

        return {"targets": str(embedding_targets()), "model": str(tiny_paths().policy), "batch_size": 3}

    def make_world(self):
        return hf_world()
