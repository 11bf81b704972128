"""The mechanism gate of the staircase world (plugins/testbeds/synthetic/gate.py, harness/experiments/mechanism_gate.py).

Pins: the decision rule (both intervals, either sign of the interaction, undefined never passes);
one seed's figures are a pure function of the seed; with ``state_dependence=false`` the gate measures
exactly what it measures in the bigram world (so it is a gate on a world without the mechanism);
the published results agree with the rule applied to their own per-seed figures; attempt 1 passed with
the knob off too (so it did not isolate the mechanism), and attempt 2, the differenced gate, fails with
the knob off.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from harness.experiments.mechanism_gate import differenced, verdict
from harness.experiments.statistics import sign_flip_p
from plugins.testbeds.synthetic import SyntheticTestbed
from plugins.testbeds.synthetic import gate
from plugins.trainers.native import NativeDPOTrainer

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "docs" / "results" / "state-gate"
PAGE = REPO / "docs" / "usage" / "state-dependent-world.md"
TINY = {"sft_samples": 2000, "sft_epochs": 1, "seed_prompts": 40, "pi0_epochs": 2, "eval_prompts": 60}


@pytest.fixture(autouse=True)
def no_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("HARNESS_NO_CACHE", "1")


@pytest.fixture
def small_probes(monkeypatch):
    """A tenth of the protocol's labels: the same code, in seconds."""
    monkeypatch.setattr(gate, "STATE_LABELS", 100)
    monkeypatch.setattr(gate, "PROBE_LABELS", 50)
    monkeypatch.setattr(gate, "EVAL_SAMPLES", 2)


def rows(effects, interactions):
    return [{"effect": e, "interaction": i} for e, i in zip(effects, interactions)]


def test_the_gate_passes_only_when_both_intervals_say_so():
    clear = [0.10, 0.12, 0.09, 0.11, 0.13, 0.10, 0.12, 0.08]
    assert verdict(rows(clear, clear))["passed"]
    negative = [-v for v in clear]
    assert verdict(rows(clear, negative))["passed"], "an interaction of either sign counts"
    noise = [0.1, -0.1, 0.12, -0.08, 0.05, -0.06, 0.02, -0.03]
    assert not verdict(rows(noise, clear))["passed"], "an effect whose interval covers 0 fails"
    assert not verdict(rows(negative, clear))["passed"], "own samples worth less fails"
    assert not verdict(rows(clear, noise))["passed"], "an interaction whose interval covers 0 fails"
    assert not verdict(rows(clear[:1], clear[:1]))["passed"], "one seed has no interval"
    assert not verdict(rows([0.1] * 5, [0.1] * 5))["passed"], "no spread: undefined, never passes"


def test_the_verdict_reports_intervals_and_sign_flip_p():
    effects = [0.3, 0.1, 0.2, 0.25, 0.15]
    out = verdict(rows(effects, effects))
    assert out["effect"]["ci_low"] < 0.2 < out["effect"]["ci_high"]
    assert out["effect"]["mean"] == pytest.approx(0.2)
    assert out["effect"]["sign_flip_p"] == sign_flip_p(effects) == pytest.approx(2 / 32)


def test_a_seed_s_figures_are_a_pure_function_of_the_seed(small_probes):
    testbed = SyntheticTestbed({"world": "staircase", **TINY})
    first = gate.run_seed(testbed, NativeDPOTrainer({}), 5).as_dict()
    again = gate.run_seed(testbed, NativeDPOTrainer({}), 5).as_dict()
    assert first == again
    other = gate.run_seed(testbed, NativeDPOTrainer({}), 6).as_dict()
    assert other["effect"] != first["effect"]
    assert first["early"]["labels"] == 50
    assert set(first["early"]["stairs_own"]) == {"lower", "upper", "pairs_differ_lower", "pairs_differ_upper"}


def test_with_the_knob_off_the_gate_measures_the_bigram_world(small_probes):
    off = gate.run_seed(SyntheticTestbed({"world": "staircase", "state_dependence": False, **TINY}),
                        NativeDPOTrainer({}), 5).as_dict()
    bigram = gate.run_seed(SyntheticTestbed(dict(TINY)), NativeDPOTrainer({}), 5).as_dict()
    on = gate.run_seed(SyntheticTestbed({"world": "staircase", **TINY}), NativeDPOTrainer({}), 5).as_dict()
    assert off["world"] == "staircase-off" and bigram["world"] == "bigram"
    for key in ("gold_pi0", "effect", "interaction"):
        assert off[key] == bigram[key], key
    assert on["effect"] != off["effect"], "the stairs change what the gate measures"
    assert bigram["early"]["stairs_own"] == {}, "the bigram world has no stairs to count"


def published(attempt: int, name: str) -> dict:
    path = RESULTS / f"attempt-{attempt}" / f"{name}.json"
    if not path.exists():
        pytest.skip(f"{path.relative_to(REPO)} is not published yet")
    return json.loads(path.read_text())


SEEDS = {1: list(range(2000, 2030)), 2: list(range(2100, 2220))}


@pytest.mark.parametrize("attempt", [1, 2])
@pytest.mark.parametrize("name", ["staircase", "staircase-off"])
def test_the_published_gates_follow_their_own_rule(attempt, name):
    result = published(attempt, name)
    assert result["protocol"] == gate.PROTOCOL, "the protocol changed after the gate ran"
    assert result["seeds"] == SEEDS[attempt], "the pre-registered seeds"
    assert [r["seed"] for r in result["results"]] == result["seeds"]
    assert bool(result["testbed_options"]["state_dependence"]) is (name == "staircase")
    recomputed = verdict(result["results"])
    assert recomputed["passed"] == result["verdict"]["passed"]
    assert recomputed["effect"]["ci_low"] == pytest.approx(result["verdict"]["effect"]["ci_low"])
    if attempt == 1:  # attempt 2's verdict of record is the differenced one
        word = "passed" if recomputed["passed"] else "failed"
        assert f"**{name}: the gate {word}** (attempt 1)" in PAGE.read_text(), "the docs state the verdict"


def test_attempt_2_is_the_differenced_gate_and_fails_with_the_knob_off():
    on, off = published(2, "staircase"), published(2, "staircase-off")
    mechanism = verdict(differenced(on["results"], off["results"]))
    assert on["differenced"]["verdict"]["passed"] == mechanism["passed"]
    word = "passed" if mechanism["passed"] else "failed"
    assert f"**The mechanism gate {word}** (attempt 2)" in PAGE.read_text(), "the docs state the verdict"
    knob_off = verdict(differenced(off["results"], off["results"]))
    assert not knob_off["passed"], "with the mechanism switched off in both arms the gate must fail"


def test_differenced_pairs_seeds_and_subtracts():
    on = [{"seed": 1, "effect": 0.5, "interaction": 0.2}, {"seed": 2, "effect": 0.1, "interaction": -0.1}]
    off = [{"seed": 1, "effect": 0.2, "interaction": 0.2}, {"seed": 2, "effect": 0.3, "interaction": 0.1}]
    assert differenced(on, off) == [{"seed": 1, "effect": pytest.approx(0.3), "interaction": 0.0},
                                    {"seed": 2, "effect": pytest.approx(-0.2), "interaction": pytest.approx(-0.2)}]
    with pytest.raises(ValueError, match="same seeds"):
        differenced(on, off[::-1])


def test_a_collapsed_policy_draws_more_prompts_until_the_batch_is_full():
    import numpy as np

    from harness.interfaces import Responses

    class Collapsing:
        """Two samples per prompt that differ only on prompts whose first token is even."""

        pad_id = 9

        def draw_prompts(self, n, rng):
            return rng.integers(0, 8, size=(n, 3))

        def sample(self, policy, prompts, n, rng):
            m = prompts.shape[0]
            tokens = np.zeros((m, n, 2), dtype=np.int64)
            tokens[:, 1, 0] = np.where(prompts[:, 0] % 2 == 0, 1, 0)
            return Responses(tokens=tokens, lengths=np.full((m, n), 2))

    world, rng = Collapsing(), np.random.default_rng(0)
    first = world.draw_prompts(10, rng)
    prompts, responses = gate._distinct_pairs(world, None, first, 12, rng, np.random.default_rng(1))
    assert prompts.shape[0] == 12 and responses.tokens.shape[0] == 12
    assert (prompts[:, 0] % 2 == 0).all(), "only prompts whose two samples differ are kept"
    with pytest.raises(RuntimeError, match="gave two different samples"):
        gate._distinct_pairs(world, None, first, 10_000, rng, np.random.default_rng(1))
