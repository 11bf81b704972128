"""The label-value measurement (harness.experiments.label_value): estimates, leave-out check, statistics.

The measurement must leave the run exactly as it would have been, an emptied pair must give no
gradient (up to float rounding), the importance-weighted value of a policy against itself is 0, and the statistics recover
what they were built from.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from conftest import TINY_TESTBED
from harness.config import plan_run
from harness.errors import UsageError
from harness.experiments import label_value as lv
from harness.loop import STEPS, run_experiment
from harness.plugins import load_registry
from harness.progress import NullReporter
from harness.run_request import RunRequest
from harness.testing import world_preference_data
from plugins.testbeds.synthetic import SyntheticTestbed

torch.set_num_threads(1)

TINY_SETTINGS = dict(option.removeprefix("testbed.").split("=") for option in TINY_TESTBED)


def tiny(selector="smallest"):
    request = RunRequest.from_values(selector=selector, iterations=2, budget=80,
                                     options=("trainer.epochs=2", *TINY_TESTBED))
    return plan_run(load_registry(), request)


@pytest.fixture(scope="module")
def world():
    return SyntheticTestbed({k: int(v) for k, v in TINY_SETTINGS.items()}).build_world(seed=0, reporter=NullReporter())


def parameters(policy):
    return [p.detach().clone() for p in policy.parameters()]


def dpo_gradient_size(policy, data) -> float:
    """The largest entry of the DPO loss's gradient on ``data`` (beta 1, the native trainer's loss)."""
    def tensor(values):
        return torch.as_tensor(np.ascontiguousarray(values)).long()

    k = len(data)
    logps = policy.sequence_logprobs(torch.cat([tensor(data.prompts)] * 2),
                                     torch.cat([tensor(data.chosen), tensor(data.rejected)]),
                                     torch.cat([tensor(data.chosen_lengths), tensor(data.rejected_lengths)]))
    margin = (logps[:k].double() - logps[k:].double()) - torch.as_tensor(data.ref_chosen_logps - data.ref_rejected_logps)
    grads = torch.autograd.grad(-torch.nn.functional.logsigmoid(margin).mean(), list(policy.parameters()))
    return max(float(g.abs().max()) for g in grads)


def test_an_emptied_pair_teaches_nothing(world):
    data = world_preference_data(world, n_pairs=24, seed=1)
    emptied = lv.emptied(data, range(len(data)))
    assert np.array_equal(emptied.ref_chosen_logps, emptied.ref_rejected_logps)
    assert np.array_equal(emptied.chosen, emptied.rejected)  # same width here: chosen copied over rejected
    policy = world.initial_policy.clone()
    # zero up to float rounding (the two copies sit in different rows of one batch)
    assert dpo_gradient_size(policy, emptied) < 1e-6 * dpo_gradient_size(policy, data)
    assert not np.array_equal(data.ref_chosen_logps, data.ref_rejected_logps)  # the input is not modified


def test_emptying_copies_the_shorter_response_when_widths_differ(world):
    data = world_preference_data(world, n_pairs=16, seed=2)  # the shorter response of each pair is chosen
    # chosen <- the longer responses (full width), rejected <- the shorter ones, cut to their longest
    swapped = replace(data, chosen=data.rejected, chosen_lengths=data.rejected_lengths,
                      rejected=data.chosen[:, : int(data.chosen_lengths.max())], rejected_lengths=data.chosen_lengths,
                      ref_chosen_logps=data.ref_rejected_logps, ref_rejected_logps=data.ref_chosen_logps)
    row = int(np.argmax(swapped.chosen_lengths))
    assert swapped.chosen_lengths[row] > swapped.rejected.shape[1]  # the chosen one cannot fit: rejected is copied
    emptied = lv.emptied(swapped, [row])
    assert emptied.chosen.shape == swapped.chosen.shape and emptied.rejected.shape == swapped.rejected.shape
    assert emptied.chosen_lengths[row] == emptied.rejected_lengths[row] == swapped.rejected_lengths[row]
    length = emptied.chosen_lengths[row]
    assert np.array_equal(emptied.chosen[row, :length], swapped.rejected[row, :length])
    assert emptied.ref_chosen_logps[row] == emptied.ref_rejected_logps[row] == swapped.ref_rejected_logps[row]
    others = np.arange(len(swapped)) != row
    assert np.array_equal(emptied.chosen[others], swapped.chosen[others])


def test_the_measurement_leaves_the_run_bit_identical_and_reproduces_the_training():
    plain = run_experiment(tiny().config, tiny().components)
    plan = tiny()
    probe = lv.LabelValueProbe(minibatch=3, probe_pairs=12)
    measured = run_experiment(plan.config, plan.components, steps=probe.steps())

    def untimed(rows):
        return [{k: v for k, v in row.items() if not k.startswith("time_")} for row in rows]

    assert untimed(measured.iterations) == untimed(plain.iterations)  # every metric, label and diagnostic
    assert len(probe.iterations) == 2
    for values in probe.iterations:
        k = len(values.estimate)
        assert k > 0 and np.isfinite(values.estimate).all()
        assert values.reproduced
        assert len(values.probe_groups) == 4 and all(len(g) == 3 for g in values.probe_groups)
        assert sorted(i for g in values.probe_groups for i in g) == sorted(set(i for g in values.probe_groups for i in g))
        assert np.allclose(values.probe_estimate, [values.estimate[g].sum() for g in values.probe_groups])
        assert set(values.features) == set(lv.FEATURES)
        assert np.isnan(values.features["explicit_margin"]).all()  # no proxy judge in this run, none given


def test_the_probe_steps_insert_the_measurement_around_train_only():
    probe = lv.LabelValueProbe()
    steps = probe.steps()
    assert [s for s in steps if s not in (probe.remember, probe.measure)] == list(STEPS)
    at = steps.index(probe.measure)
    assert steps[at - 1].__name__ == "train" and steps[at - 2] == probe.remember


def test_a_policy_against_itself_loses_no_value(world):
    sample = lv._EvalSample.draw(world, world.initial_policy, 4, np.random.default_rng(0))
    assert sample.value_lost(world.initial_policy) == 0.0
    assert sample.value_lost(world.reference_policy) != 0.0


def test_bad_settings_and_a_world_without_exact_gold_are_refused():
    with pytest.raises(UsageError, match="minibatch"):
        lv.LabelValueProbe(minibatch=0)
    with pytest.raises(UsageError, match="probe_pairs"):
        lv.LabelValueProbe(probe_pairs=lv.PROBE_PAIRS + 1)

    class Run:
        world = object()
        policy = None

    probe = lv.LabelValueProbe()
    with pytest.raises(UsageError, match="exact gold"):
        probe.measure(Run(), None)


def test_spearman_uses_average_ranks_and_refuses_too_little():
    assert lv.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert lv.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert lv.spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(np.corrcoef([1, 2.5, 2.5, 4], [1, 2, 3, 4])[0, 1])
    assert lv.spearman([1, 2], [1, 2]) is None
    assert lv.spearman([1, 1, 1], [1, 2, 3]) is None


def test_the_regression_recovers_standardised_effects_and_drops_unusable_features():
    rng = np.random.default_rng(0)
    n = 4000
    features = {name: rng.normal(size=n) for name in lv.FEATURES}
    features["label_noise"] = np.zeros(n)  # constant: dropped
    features["explicit_margin"] = np.full(n, np.nan)  # no judge: dropped
    y = 2.0 * features["abs_margin"] - 1.0 * features["dpo_weight"] + rng.normal(size=n)
    result = lv.regress(y, features)
    assert result["dropped"] == ["explicit_margin", "label_noise"]
    coef = {row["feature"]: row for row in result["coefficients"]}
    sd = y.std()
    assert coef["abs_margin"]["ci_low"] < 2.0 / sd < coef["abs_margin"]["ci_high"]
    assert coef["dpo_weight"]["ci_low"] < -1.0 / sd < coef["dpo_weight"]["ci_high"]
    assert coef["length"]["ci_low"] < 0.0 < coef["length"]["ci_high"]
    assert result["r2"] == pytest.approx(5.0 / 6.0, abs=0.02)
