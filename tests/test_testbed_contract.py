"""The testbed contract's optional keywords: testbeds get trainers from the registry, old testbeds still work."""

from __future__ import annotations

from types import SimpleNamespace

from harness.interfaces import TESTBED_CONTRACT
from harness.loop import build_world
from harness.plugins import default_trainers, load_registry
from harness.progress import NullReporter


class OldTestbed:
    """Written against contract 1: build_world(seed, reporter) only."""

    def build_world(self, *, seed, reporter):
        return ("world", seed)


class TrainingTestbed:
    def build_world(self, *, seed, reporter, trainers=None):
        return trainers("native", {"lr": 0.5})


def test_a_testbed_of_the_first_contract_is_called_as_before():
    components = SimpleNamespace(testbed=OldTestbed(), annotator=object(), trainers=object())
    assert build_world(components, 7, NullReporter()) == ("world", 7)
    assert TESTBED_CONTRACT == 4


def test_a_testbed_that_declares_trainers_gets_the_registrys():
    registry = load_registry()
    components = SimpleNamespace(testbed=TrainingTestbed(), annotator=None, trainers=registry.trainers())
    trainer = build_world(components, 0, NullReporter())
    assert trainer.name == "native" and trainer.settings["lr"] == 0.5
    assert default_trainers()("trl", {}).name == "trl"


class GoldTakingTestbed:
    def build_world(self, *, seed, reporter, gold=None):
        return gold


def test_only_an_exact_gold_judge_is_offered_as_the_worlds_gold():
    registry = load_registry()
    verifier, embedding = registry.create("judge", "verifier", {}), registry.create("judge", "embedding", {})
    assert verifier.exact and not embedding.exact
    for judge, offered in ((verifier, verifier), (embedding, None), (None, None)):
        components = SimpleNamespace(testbed=GoldTakingTestbed(), annotator=None, trainers=None, gold_judge=judge)
        assert build_world(components, 0, NullReporter()) is offered


def test_the_synthetic_testbed_trains_pi0_with_the_trainer_it_is_given(monkeypatch, tmp_path):
    """Its pi_0 comes from the factory's ``native`` trainer (a spy that delegates), not from an import."""
    from conftest import TINY_TESTBED

    from harness.config import build_config, instantiate

    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path))  # build the world, do not load it
    registry = load_registry()
    config = build_config(registry, options=tuple(TINY_TESTBED))
    components = instantiate(registry, config)
    asked = []
    real = registry.trainers()

    def spy(name, settings):
        asked.append((name, dict(settings)))
        return real(name, settings)

    components.trainers = spy
    world = build_world(components, 3, NullReporter())
    assert [name for name, _ in asked] == ["native"]
    assert asked[0][1]["epochs"] == 2  # testbed.pi0_epochs of the tiny world
    assert world.initial_policy is not world.reference_policy
