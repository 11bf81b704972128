"""The transfer report: the same claims on a plan's own testbed and under one of its testbed sections."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from harness.experiments.transfer import MIN_SEEDS, SATURATION, Side, _flags, _outcome, _power
from tests.conftest import TINY_TESTBED

TINY_OPTIONS = ", ".join(f'"{option}"' for option in TINY_TESTBED)


def _side(mean, low, high, p, n=MIN_SEEDS, std=0.05, gain=0.1, medians=(0.5, 0.5), noise=(0.0, 0.0)):
    stats = {"n": n, "mean": mean, "ci_low": low, "ci_high": high, "p_adjusted": p, "std": std,
             "excludes_zero": low > 0 or high < 0, "verdict": "x", "direction": "a > b"}
    diagnostics = {arm: {"median β·Δ": m, "label noise": z} for arm, m, z in zip("ab", medians, noise)}
    return Side("s", "final_win_rate", stats, gain, diagnostics)


@pytest.mark.parametrize(("toy", "real", "quick", "outcome"), [
    (_side(0.1, 0.05, 0.15, 0.01), _side(0.02, 0.01, 0.03, 0.02), False, "confirmed"),
    (_side(0.1, 0.05, 0.15, 0.01), _side(-0.02, -0.03, -0.01, 0.02), False, "contradicted"),
    (_side(-0.1, -0.15, -0.05, 0.01), _side(-0.02, -0.03, -0.01, 0.02), False, "confirmed"),
    (_side(0.1, 0.05, 0.15, 0.01), _side(0.02, -0.01, 0.05, 0.2), False, "not separable"),
    # decided unadjusted, not after the family's adjustment: still no information
    (_side(0.1, 0.05, 0.15, 0.01), _side(-0.02, -0.03, -0.01, 0.08), False, "not separable"),
    (_side(0.1, -0.05, 0.15, 0.3), _side(0.02, 0.01, 0.03, 0.02), False, "no toy direction"),
    (_side(0.1, 0.05, 0.15, 0.01), _side(0.02, 0.01, 0.03, 0.02, n=MIN_SEEDS - 1), False, "too few seeds"),
    (_side(0.1, 0.05, 0.15, 0.01), _side(0.02, 0.01, 0.03, 0.02), True, "too few seeds"),
    (_side(0.1, 0.05, 0.15, 0.01), Side("s", "m", None), False, "not run"),
    (Side("s", "m", {**_side(0.1, 0.05, 0.15, 0.01).stats, "direction": "none"}), _side(0.0, -0.01, 0.01, 0.01),
     False, "not compared"),
])
def test_the_outcome_needs_both_sides_decided_and_enough_seeds(toy, real, quick, outcome):
    assert _outcome(toy, real, quick) == outcome


def test_flags_name_what_differs_in_mechanism():
    calm, saturated = _side(0.1, 0.05, 0.15, 0.01), _side(0.1, 0.05, 0.15, 0.01, medians=(SATURATION + 1, 0.4))
    assert _flags(calm, calm) == []
    assert any("saturated on the real testbed only" in f for f in _flags(calm, saturated))
    noisy = _side(0.1, 0.05, 0.15, 0.01, noise=(0.2, 0.1))
    assert any("label noise differs: toy 0.20, real 0.00" in f for f in _flags(noisy, calm))
    losing = _side(0.1, 0.05, 0.15, 0.01, gain=-0.01)
    assert any("gained over pi_0 on one testbed only" in f for f in _flags(calm, losing))


def test_power_scales_the_toys_effect_by_the_real_baselines_gain():
    toy = _side(0.10, 0.05, 0.15, 0.01, gain=0.20)  # half a baseline gain
    real = _side(0.0, -0.01, 0.01, 0.5, n=4, std=0.04, gain=0.06)
    predicted, needed = _power(toy, real)
    assert predicted == pytest.approx(0.03)
    from scipy import stats

    mde = lambda n: (stats.t.ppf(0.975, n - 1) + stats.t.ppf(0.8, n - 1)) * 0.04 / n ** 0.5  # noqa: E731
    assert mde(needed) <= 0.03 < mde(needed - 1)
    no_gain = _side(0.0, -0.01, 0.01, 0.5, n=4, std=0.04, gain=-0.01)
    assert _power(toy, no_gain)[0] == pytest.approx(0.10)  # the raw toy Δ when the real baseline did not gain
    no_gain.metric = "final_gold_reward"  # ... but only on the same metric: another scale predicts nothing
    assert _power(toy, no_gain) == (None, None)
    assert _power(toy, _side(0.0, 0.0, 0.0, 0.5, n=1))[1] is None


def test_the_report_says_why_there_is_no_prediction():
    from types import SimpleNamespace

    from harness.experiments.transfer import TransferRow
    from harness.experiments.transfer_report import no_prediction

    toy = _side(0.10, 0.05, 0.15, 0.01, gain=0.20)
    other_metric = _side(0.0, -0.01, 0.01, 0.5, n=4, gain=-0.01)
    other_metric.metric = "final_gold_reward"
    claim = SimpleNamespace(id="c")
    assert _power(toy, other_metric)[0] is None
    assert "did not gain over pi_0" in no_prediction(TransferRow(claim, toy, other_metric, "too few seeds", []))
    assert no_prediction(TransferRow(claim, toy, Side("s", "m", None), "not run", [])) == "a side has no runs"


def _fake_claim(evaluator, gold="verifier", annotator="verifier"):
    from types import SimpleNamespace as NS

    config = NS(evaluator=NS(name=evaluator) if evaluator else None, gold_judge=NS(name=gold),
                annotator=NS(name=annotator), testbed=NS(name="hf"))
    runs = {"g": {"A": [{"id": f"a{k}", "seed": k, "world_seed": k, "final_win_rate": 0.6 + 0.01 * k}
                        for k in range(3)],
                  "B": [{"id": f"b{k}", "seed": k, "world_seed": k, "final_win_rate": 0.5} for k in range(3)]}}
    bound = NS(plan=NS(metric="final_win_rate"), a=("g", NS(config=config, config_hash="A")),
               b=("g", NS(config=config, config_hash="B")), a_iteration=None, b_iteration=None)
    real = NS(runs=runs, iterations={}, study=NS(label="p+hf"))
    return real, NS(claim=bound), NS(metric=lambda m: "final_gold_reward" if m == "final_win_rate" else m)


@pytest.mark.parametrize(("evaluator", "gold", "annotator", "checked"), [
    ("embedding", "verifier", "verifier", True),
    ("verifier", "verifier", "verifier", False),  # the gold judge itself
    ("reward_model", "verifier", "reward_model", False),  # the annotator the pairs were bought from
    ("verifier", "embedding", "embedding", False),  # an exact judge is a gold of its own, never a check
    (None, "verifier", "verifier", False),
])
def test_the_second_evaluator_checks_gold_only_when_it_is_independent(evaluator, gold, annotator, checked):
    from harness.experiments.transfer import _independent
    from harness.plugins import load_registry

    real, item, section = _fake_claim(evaluator, gold, annotator)
    side, text = _independent(real, item, section, load_registry())
    if checked:
        assert side.stats["n"] == 3 and side.stats["mean"] == pytest.approx(0.11)
        assert text.startswith("checked by the evaluator 'embedding', independent of the gold judge 'verifier'")
    else:
        assert side is None and text.startswith("reward hacking not checked")


PLAN = textwrap.dedent(f'''
    [study]
    title = "smallest against random, here and there"
    confirmation_seeds = "0-1"

    [quick]
    seeds = 2
    budget_scale = 1.0

    [testbed.other]
    description = "the synthetic testbed with another trainer recipe, standing in for a real model"
    testbed = "synthetic"
    claims = ["smallest-vs-random"]
    metrics = {{final_win_rate = "final_gold_reward"}}
    evaluator = "synthetic_gold"
    options = ["trainer.lr=0.002"]

    [[grid]]
    name = "pair"
    selector = ["random", "smallest"]
    iterations = 2
    budget = 40
    responses = 4
    options = [{TINY_OPTIONS}, "trainer.epochs=1"]

    [[grid]]
    name = "extra"
    selector = ["largest"]
    iterations = 1
    budget = 40
    responses = 4
    options = [{TINY_OPTIONS}]

    [[claim]]
    id = "smallest-vs-random"
    kind = "question"
    metric = "final_win_rate"
    a = {{grid = "pair", selector = "smallest"}}
    b = {{grid = "pair", selector = "random"}}
    direction = "a > b"

    [[claim]]
    id = "largest-vs-nothing"
    kind = "question"
    metric = "final_win_rate"
    a = {{grid = "extra", selector = "largest"}}
    b = {{grid = "pair", selector = "random"}}
    direction = "a > b"

    [[heterogeneity]]
    claims = ["smallest-vs-random", "largest-vs-nothing"]
    title = "a group the section carries only half of: its report leaves the group out"
''')


def _harness(*args, db, cwd):
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True, cwd=cwd,
                          env=dict(os.environ, HARNESS_DB=str(db)))


def test_a_study_under_a_section_writes_the_transfer_report(tmp_path):
    """The docs' two commands (docs/experiments/studies.md), with this plan for yang2024 and its section
    ``other`` (the synthetic testbed again) standing in for hf."""
    from tests.docs_blocks import run_by_block

    block = run_by_block("tests/test_transfer.py::test_a_study_under_a_section_writes_the_transfer_report")
    plan = tmp_path / "here.toml"
    plan.write_text(PLAN)
    db = tmp_path / "t.db"
    commands = [line.split("#")[0].split() for line in block.text.splitlines() if line.strip()]
    assert [c[:3] for c in commands] == [["harness", "study", "run"]] * 2
    toy_args, real_args = ([str(plan) if a == "yang2024" else "other" if a == "hf" else a for a in c[3:]]
                           for c in commands)
    toy = _harness("study", "run", *toy_args, "--jobs", "1", db=db, cwd=tmp_path)
    assert toy.returncode == 0, toy.stderr
    assert not (tmp_path / "study-reports" / "here-quick" / "transfer.md").exists()  # the plan as written: none
    real = _harness("study", "run", *real_args, "--jobs", "1", "--json", db=db, cwd=tmp_path)
    assert real.returncode == 0, real.stderr
    out = json.loads(real.stdout.strip().splitlines()[-1])
    transfer = out["transfer"]
    assert [row["claim"] for row in transfer["claims"]] == ["smallest-vs-random"]  # only the carried claim
    row = transfer["claims"][0]
    assert row["outcome"] == "too few seeds" and transfer["outcomes"]["too few seeds"] == 1
    assert (row["toy_metric"], row["real_metric"]) == ("final_win_rate", "final_gold_reward")
    assert row["toy_mean"] is not None and row["real_mean"] is not None
    # the synthetic gold judge as evaluator reads the world's own gold: no independent check
    assert "not checked: the evaluator 'synthetic_gold' is not independent" in row["independence"]
    text = (tmp_path / transfer["report"]).read_text()  # relative to the working directory
    assert "**Quick mode: too few seeds.**" in text
    assert "| smallest-vs-random | final_win_rate → final_gold_reward |" in text
    assert "## Mechanism diagnostics" in text and "median β·Δ" in text
    assert (tmp_path / transfer["figure"]).stat().st_size > 1000
    assert "transfer:" in real.stderr and "too few seeds" in real.stderr
    again = _harness("study", "report", str(plan), "--quick", "--testbed", "other", db=db, cwd=tmp_path)
    assert again.returncode == 0 and "transfer:" in again.stderr  # rebuilt, nothing run
