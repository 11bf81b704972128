"""No optimiser step of the trl trainer runs at learning rate 0, whatever the schedule, warm-up and step count.

Hugging Face's warm-up schedules start at multiplier 0/warm-up, so with the
trainer's default warm-up (0.1) every call lost its first step and a call of
one step trained nothing. These tests read the learning rate of every step
from the trainer's own log history (transformers logs the rate a step ran at,
before the scheduler moves on).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from harness.interfaces import Pairs, PreferenceData
from plugins.trainers.trl import (
    SCHEDULERS,
    TRLDPOTrainer,
    build_trainer,
    lr_multiplier,
    preference_rows,
    release,
    warmup_steps,
)
from tests.extras import skip_unless_extra
from tests.hf_tiny import tiny_world

skip_unless_extra("hf")

pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")

STEPS = (1, 2, 3, 10, 128)
WARMUPS = (0.0, 0.1, 0.5, 0.99)


@pytest.fixture(scope="module")
def world():
    return tiny_world()


@pytest.fixture(scope="module")
def data(world):
    rng = np.random.default_rng(0)
    prompts = world.draw_prompts(8, rng)
    responses = world.sample(world.initial_policy, prompts, 2, rng)
    pairs = Pairs(np.arange(8), np.zeros(8, np.int64), np.ones(8, np.int64))
    ref = world.logprobs(world.reference_policy, prompts, responses)
    return PreferenceData.from_labels(prompts=prompts, responses=responses, pairs=pairs, prefer_a=np.ones(8, bool),
                                      ref_logps=ref)


def _rates(trainer) -> list[float]:
    return [entry["learning_rate"] for entry in trainer.state.log_history if "loss" in entry]


@pytest.mark.parametrize("schedule", SCHEDULERS)
@pytest.mark.parametrize("warmup", WARMUPS)
@pytest.mark.parametrize("total", STEPS)
def test_every_step_of_every_schedule_has_a_positive_learning_rate(schedule, warmup, total):
    w = warmup_steps(warmup, total)
    assert 0 <= w <= total - 1
    rates = [lr_multiplier(s, schedule=schedule, warmup=w, total=total) for s in range(total)]
    assert all(r > 0 for r in rates), rates
    assert max(rates) == pytest.approx(1.0)
    if schedule != "constant":
        assert rates[:w] == sorted(rates[:w]) and (w == 0 or rates[w - 1] < 1.0)  # warm-up rises to the peak
        assert rates[w] == pytest.approx(1.0)


@pytest.mark.parametrize("schedule", ["linear", "cosine", "constant", "constant_with_warmup"])
@pytest.mark.parametrize("total", [1, 3, 10])
def test_without_warmup_the_schedule_is_hugging_faces(schedule, total):
    from transformers import get_scheduler

    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=1.0)
    theirs = get_scheduler(schedule, optimizer=optimizer, num_warmup_steps=0, num_training_steps=total)
    for step in range(total):
        assert lr_multiplier(step, schedule=schedule, warmup=0, total=total) == pytest.approx(
            theirs.get_last_lr()[0], abs=1e-12)
        optimizer.step()
        theirs.step()


def test_hugging_faces_warmup_does_start_at_zero():
    """The bug this trainer works around: still there upstream (if this fails, upstream changed)."""
    from transformers import get_scheduler

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    theirs = get_scheduler("linear", optimizer=optimizer, num_warmup_steps=math.ceil(0.1 * 3), num_training_steps=3)
    assert theirs.get_last_lr()[0] == 0.0


@pytest.mark.parametrize("schedule", SCHEDULERS)
@pytest.mark.parametrize("warmup", (0.0, 0.1, 0.99))
@pytest.mark.parametrize("total", (1, 2, 3, 10))
def test_the_trainer_logs_a_positive_first_rate(world, data, schedule, warmup, total):
    settings = TRLDPOTrainer({"steps": total, "batch_size": 2, "grad_accum": 1, "lr_scheduler": schedule,
                              "warmup_ratio": warmup}).settings
    policy = world.initial_policy.clone()
    trainer = build_trainer(policy, preference_rows(policy, data), settings, seed=0)
    trainer.train()
    rates = _rates(trainer)
    release(trainer, policy)
    assert len(rates) == total
    w = warmup_steps(warmup, total)
    expected = [settings["lr"] * lr_multiplier(s, schedule=schedule, warmup=w, total=total) for s in range(total)]
    assert rates == pytest.approx(expected, rel=1e-6)
    assert rates[0] > 0


@pytest.mark.parametrize("schedule", SCHEDULERS)
def test_a_long_call_keeps_every_rate_positive(world, data, schedule):
    result = TRLDPOTrainer({"steps": 128, "batch_size": 8, "grad_accum": 1, "lr_scheduler": schedule}).train(
        policy=world.initial_policy, data=data, rng=np.random.default_rng(0))
    assert result.steps == 128
    assert result.log["lr_first"] > 0 and result.log["lr_max"] == pytest.approx(5e-7)


@pytest.mark.parametrize("total", (1, 2, 3))
def test_default_options_change_the_weights_at_every_step(world, data, total):
    """The trainer's defaults (lr 5e-7, warm-up 0.1, batch 8 x 16): every optimiser step moves the weights."""
    from transformers import TrainerCallback

    settings = TRLDPOTrainer({"steps": total}).settings
    assert settings["warmup_ratio"] == 0.1 and settings["lr"] == 5e-7 and settings["grad_accum"] == 16
    policy = world.initial_policy.clone()
    snapshots = [[p.detach().clone() for p in policy.model.parameters()]]

    class Snapshot(TrainerCallback):
        def on_optimizer_step(self, args, state, control, **kwargs):
            snapshots.append([p.detach().clone() for p in policy.model.parameters()])

    trainer = build_trainer(policy, preference_rows(policy, data), settings, seed=0)
    trainer.add_callback(Snapshot())
    trainer.train()
    release(trainer, policy)
    assert len(snapshots) == total + 1
    for before, after in zip(snapshots, snapshots[1:]):
        changed = sum(not torch.equal(a, b) for a, b in zip(before, after))
        assert changed > 0, "an optimiser step left every weight as it was"


def test_the_train_result_summarises_trls_log(world, data):
    result = TRLDPOTrainer({"steps": 3, "batch_size": 4, "grad_accum": 1}).train(
        policy=world.initial_policy, data=data, rng=np.random.default_rng(0))
    log = result.log
    assert log["lr_first"] == pytest.approx(5e-7 / 2)  # warm-up 1 of 3 steps: half the peak, never 0
    assert log["lr_max"] == pytest.approx(5e-7)
    for name in ("margin", "accuracy", "grad_norm"):
        assert np.isfinite(log[f"{name}_first"]) and np.isfinite(log[f"{name}_last"])
    assert 0.0 <= log["accuracy_first"] <= 1.0 and log["grad_norm_first"] > 0
