"""Allocator contract 2 and ``plateau``: an adaptive allocator that decides on what a user observes.

* ``plateau`` passes the allocator contract; its rule stops buying once held-out agreement stops rising,
  stays stopped, and never plans past the total;
* the loop keeps the allocator's ``holdout`` share out of training (never in the last iteration), records the
  agreement of pi_{i-1} and pi_i with it, and hands the allocator ``observed`` facts only, never the evaluator's
  metrics: replacing the evaluator with noise changes no decision;
* an iteration granted no labels trains nothing; a checkpoint keeps ``observed``, so a resumed run decides alike.
"""

from __future__ import annotations

import numpy as np
import pytest

from conftest import TINY_TESTBED
from harness import iteration as steps
from harness.experiments import checkpoints
from harness.interfaces import OBSERVED_FIELDS, IterationRecord
from harness.config import plan_run
from harness.loop import run_experiment
from harness.plugins import PluginInfo, load_registry
from harness.run_request import RunRequest
from harness.testing import AllocatorContract
from plugins.allocators.adaptive import Plateau, agreement_gain_per_100

TEST_PLUGIN = PluginInfo("tests.test_adaptive_allocator", "0", "local")
HANDED: list[tuple[IterationRecord, ...]] = []


class TestPlateauContract(AllocatorContract):
    allocator_class = Plateau


class PeekingPlateau(Plateau):
    """plateau that would stop at once if an evaluator metric ever reached it (test)."""

    name = "peeking_plateau"
    description = "plateau that stops when it sees an evaluator metric (test)"

    def stopped(self, history):
        return any(record.metrics for record in history) or super().stopped(history)


class RecordingPlateau(Plateau):
    name = "recording_plateau"
    description = "plateau, recording the history it is handed (test)"

    def allocate(self, *, total_labels, iterations, history):
        HANDED.append(tuple(history))
        return super().allocate(total_labels=total_labels, iterations=iterations, history=history)


def record(iteration, labels, *, trained=400, held=100, before=0.5, after=0.6):
    return IterationRecord(iteration, labels, {}, {"labels": labels, "sel_pairs": trained, "holdout_pairs": held,
                                                   "holdout_agreement_before": before,
                                                   "holdout_agreement_after": after})


def test_the_gain_is_per_100_pairs_trained_on_and_absent_without_a_holdout():
    assert agreement_gain_per_100(record(1, 500, trained=400, before=0.5, after=0.6)) == pytest.approx(0.025)
    assert agreement_gain_per_100(IterationRecord(1, 500, {}, {"sel_pairs": 400})) is None


def test_plateau_spends_evenly_while_agreement_rises_then_stops_and_stays_stopped():
    plateau = Plateau({"threshold": 0.01})
    assert plateau.allocate(total_labels=3000, iterations=6, history=()) == [500] * 6
    rising = [record(1, 500, after=0.62)]  # +0.12 over 400 pairs: 0.03 per 100
    assert plateau.allocate(total_labels=3000, iterations=6, history=rising) == [500] * 6
    flat = [*rising, record(2, 500, after=0.52)]  # +0.02 over 400: 0.005 per 100, below 0.01
    assert plateau.allocate(total_labels=3000, iterations=6, history=flat) == [500, 500, 0, 0, 0, 0]
    idle = [*flat, IterationRecord(3, 0, {}, {"labels": 0})]
    assert plateau.allocate(total_labels=3000, iterations=6, history=idle) == [500, 500, 0, 0, 0, 0]
    # what an earlier iteration did not spend is spread over the rest, within the total
    short = [record(1, 300, after=0.9)]
    assert plateau.allocate(total_labels=1000, iterations=3, history=short) == [300, 350, 350]


def test_plateau_refuses_a_zero_holdout():
    with pytest.raises(Exception, match="holdout must be above 0"):
        Plateau({"holdout": 0.0})


def registry():
    found = load_registry()
    found.add("allocator", RecordingPlateau, TEST_PLUGIN)
    found.add("allocator", PeekingPlateau, TEST_PLUGIN)
    return found


def tiny(**given):
    options = ("trainer.epochs=2", *TINY_TESTBED, *given.pop("options", ()))
    request = RunRequest.from_values(**{"iterations": 3, "budget": 150, "selector": "smallest", "options": options,
                                        **given})
    return plan_run(registry(), request)


@pytest.fixture(autouse=True)
def _clean():
    HANDED.clear()
    yield


def test_held_out_pairs_are_charged_but_never_trained_on_and_the_last_iteration_holds_none_out():
    plan = tiny(allocator="recording_plateau", options=("allocator.threshold=-1000", "allocator.holdout=0.4"))
    rows = run_experiment(plan.config, plan.components).iterations[1:]
    for row in rows[:-1]:
        assert row["holdout_pairs"] == round(0.4 * (row["labels"] - row["ties"]))
        assert row["sel_pairs"] + row["holdout_pairs"] == row["labels"] - row["ties"]
        assert 0.0 <= row["holdout_agreement_before"] <= 1.0 and 0.0 <= row["holdout_agreement_after"] <= 1.0
    assert "holdout_pairs" not in rows[-1] and rows[-1]["sel_pairs"] == rows[-1]["labels"] - rows[-1]["ties"]


def test_the_allocator_is_handed_observed_facts_and_no_evaluator_metric():
    plan = tiny(allocator="recording_plateau", options=("allocator.threshold=-1000",))
    run_experiment(plan.config, plan.components)
    handed = [record for history in HANDED for record in history]
    assert handed, "the allocator was never handed a finished iteration"
    for item in handed:
        assert dict(item.metrics) == {}
        assert set(item.observed) <= set(OBSERVED_FIELDS) and "sel_label_noise" not in item.observed
        assert item.observed["labels"] == item.labels


def test_an_allocator_that_would_act_on_evaluator_metrics_never_gets_to():
    plan = tiny(allocator="peeking_plateau", options=("allocator.threshold=-1000",))
    rows = run_experiment(plan.config, plan.components).iterations
    assert [row["labels"] for row in rows[1:]] == [50, 50, 50]  # it would have bought nothing after iteration 1
    evaluated = set(rows[1]) & {key for key in rows[0] if key != "iteration"}  # what pi_0's evaluation gave
    assert evaluated and not evaluated & set(OBSERVED_FIELDS), "an observed field shares a name with a metric"


def test_the_holdout_works_when_scoring_was_skipped():
    """random reads no score column: the held-out pairs' log-probs are computed for them alone."""
    plan = tiny(allocator="plateau", selector="random", options=("allocator.threshold=-1000",))
    rows = run_experiment(plan.config, plan.components).iterations[1:]
    for row in rows[:-1]:
        assert row["holdout_pairs"] > 0 and 0.0 <= row["holdout_agreement_after"] <= 1.0
        assert 0.0 <= row["holdout_agreement_before"] <= 1.0


def test_no_decision_changes_when_the_evaluator_is_replaced_by_noise(monkeypatch):
    """The stopping rule fires in this run; with a random evaluator every iteration buys the same labels."""
    def labels_bought(evaluate):
        monkeypatch.setattr(steps, "evaluate_policy", evaluate)
        plan = tiny(allocator="plateau", iterations=4, budget=200, options=("allocator.threshold=0.03",))
        rows = run_experiment(plan.config, plan.components).iterations
        return [row.get("labels") for row in rows[1:]], [row["win_rate"] for row in rows]

    original = steps.evaluate_policy
    noise = np.random.default_rng(5)

    def noisy(*args, **kwargs):
        metrics = original(*args, **kwargs)
        return {key: float(noise.uniform(0, 3)) if key in ("win_rate", "gold_reward") else value
                for key, value in metrics.items()}

    labels, win_rates = labels_bought(original)
    noisy_labels, noisy_win_rates = labels_bought(noisy)
    assert 0 in labels and labels[0] > 0, f"the rule should fire in this run: {labels}"
    assert noisy_labels == labels and noisy_win_rates != win_rates


def test_an_iteration_without_labels_trains_nothing_and_the_budget_left_is_saved():
    plan = tiny(allocator="plateau", iterations=4, budget=200, options=("allocator.threshold=1000",))
    result = run_experiment(plan.config, plan.components)
    first, *rest = result.iterations[1:]
    assert first["labels"] == 50 and first["train_steps"] > 0
    for row in rest:
        assert row["labels"] == 0 and row["train_steps"] == 0 and row["instance_pairs"] == 0
        assert "loss_first" not in row and "kl_prev" not in row
    assert result.final["labels_used"] == 50


def test_a_checkpoint_keeps_what_the_allocator_observed(tmp_path):
    plan = tiny(allocator="plateau", options=("allocator.threshold=-1000",))  # runs every iteration
    saved, worlds = [], []

    def keep(world, state):
        checkpoints.save(tmp_path / "run", world, state)
        saved.append(state)
        worlds.append(world)

    run_experiment(plan.config, plan.components, checkpoint=keep)
    restored = checkpoints.load(tmp_path / "run", worlds[-1])
    assert [r.observed for r in restored.history] == [r.observed for r in saved[-1].history]
    assert restored.history[0].observed["holdout_pairs"] > 0
    strict = Plateau({"threshold": 1000})  # fires on any recorded gain: only if observed survived the checkpoint
    decided = strict.allocate(total_labels=150, iterations=3, history=[r.for_allocator() for r in restored.history[:1]])
    assert decided == [50, 0, 0]
