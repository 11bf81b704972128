"""The ``native`` DPO trainer, run against a tiny fake policy that has only the Policy protocol."""

from __future__ import annotations

import copy
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from harness.errors import UsageError
from harness.interfaces import Policy, PreferenceData, TrainResult, check_component_class
from plugins.trainers import native
from plugins.trainers.native import NativeDPOTrainer

torch.set_num_threads(1)

V, L, P = 4, 3, 2  # tokens, response width, prompt width


class PositionUnigram(torch.nn.Module):
    """logits[t] over V tokens at response position t; ignores the prompt."""

    def __init__(self, seed: int = 0):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.logits = torch.nn.Parameter(torch.randn(L, V, generator=generator))


class FakePolicy:
    """Exactly the three methods of the Policy protocol, and a log of the calls made to them."""

    __slots__ = ("module", "log")

    def __init__(self, module: torch.nn.Module, log: list):
        self.module = module
        self.log = log

    def clone(self) -> FakePolicy:
        self.log.append("clone")
        return FakePolicy(copy.deepcopy(self.module), self.log)

    def parameters(self):
        self.log.append("parameters")
        return self.module.parameters()

    def sequence_logprobs(self, prompts, responses, lengths):
        self.log.append(("sequence_logprobs", int(responses.shape[0])))
        assert prompts.shape[0] == responses.shape[0] == lengths.shape[0]
        logp = torch.log_softmax(self.module.logits, dim=-1)  # (L, V)
        width = responses.shape[1]
        token_logp = logp[torch.arange(width)[None, :], responses.clamp(max=V - 1)]
        mask = torch.arange(width)[None, :] < lengths[:, None]
        return torch.where(mask, token_logp, torch.zeros_like(token_logp)).sum(dim=1)


def make_policy(seed: int = 0) -> FakePolicy:
    return FakePolicy(PositionUnigram(seed), [])


def own_logps(policy: FakePolicy, prompts, tokens, lengths) -> np.ndarray:
    with torch.no_grad():
        values = policy.sequence_logprobs(torch.as_tensor(prompts), torch.as_tensor(tokens), torch.as_tensor(lengths))
    return values.double().numpy()


def make_data(policy: FakePolicy, k: int = 40, seed: int = 0, ref_shift: float = 0.0) -> PreferenceData:
    """Chosen responses are all token 0, rejected all token 1, with random lengths.

    The reference log-probs are the policy's own (minus ``ref_shift`` for chosen).
    """
    rng = np.random.default_rng(seed)
    prompts = rng.integers(0, V, size=(k, P))
    chosen = np.zeros((k, L), dtype=np.int64)
    rejected = np.ones((k, L), dtype=np.int64)
    chosen_lengths = rng.integers(1, L + 1, size=k)
    rejected_lengths = rng.integers(1, L + 1, size=k)
    policy.log.clear()
    ref_chosen = own_logps(policy, prompts, chosen, chosen_lengths) - ref_shift
    ref_rejected = own_logps(policy, prompts, rejected, rejected_lengths)
    policy.log.clear()
    return PreferenceData(prompts, chosen, chosen_lengths, rejected, rejected_lengths, ref_chosen, ref_rejected)


def params(policy: FakePolicy) -> torch.Tensor:
    return policy.module.logits.detach().clone()


def test_fake_policy_follows_the_protocol():
    assert isinstance(make_policy(), Policy)


def test_registration_and_options():
    registered = []
    native.register_trainers(register=registered.append)
    assert registered == [NativeDPOTrainer]
    check_component_class("trainer", NativeDPOTrainer)
    trainer = NativeDPOTrainer()
    assert trainer.settings == {"beta": 1.0, "lr": 3e-3, "epochs": 8, "steps": 0, "batch_size": 64, "xpo_alpha": 0.0}
    assert trainer.beta == 1.0
    assert NativeDPOTrainer({"beta": "0.5"}).beta == 0.5
    for bad in ({"beta": 0}, {"lr": 0.0}, {"batch_size": 0}, {"epochs": -1}, {"steps": -2}):
        with pytest.raises(UsageError):
            NativeDPOTrainer(bad)


def test_module_import_does_not_import_torch():
    code = "import plugins.trainers.native, sys; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_loss_decreases_and_policy_learns_the_preference():
    policy = make_policy()
    data = make_data(policy)
    result = NativeDPOTrainer({"epochs": 20, "batch_size": 8, "lr": 0.05}).train(
        policy=policy, data=data, rng=np.random.default_rng(0)
    )
    assert isinstance(result, TrainResult)
    assert result.steps == 20 * 5 and result.epochs == 20.0
    assert result.loss_first == pytest.approx(math.log(2), abs=1e-6)
    assert result.loss_last < 0.3 < result.loss_first
    before_c = own_logps(policy, data.prompts, data.chosen, data.chosen_lengths)
    before_r = own_logps(policy, data.prompts, data.rejected, data.rejected_lengths)
    after_c = own_logps(result.policy, data.prompts, data.chosen, data.chosen_lengths)
    after_r = own_logps(result.policy, data.prompts, data.rejected, data.rejected_lengths)
    assert np.all((after_c - after_r) > (before_c - before_r))


def test_input_policy_and_data_are_not_modified():
    policy = make_policy()
    data = make_data(policy)
    snapshot = params(policy)
    arrays = {name: getattr(data, name).copy() for name in data.__dataclass_fields__ if getattr(data, name) is not None}
    result = NativeDPOTrainer().train(policy=policy, data=data, rng=np.random.default_rng(0))
    assert result.policy is not policy and result.policy.module is not policy.module
    assert torch.equal(params(policy), snapshot)
    assert not torch.equal(params(result.policy), snapshot)
    for name, value in arrays.items():
        np.testing.assert_array_equal(getattr(data, name), value)


def test_uses_only_the_policy_protocol_and_one_forward_per_step():
    policy = make_policy()
    data = make_data(policy, k=6)
    result = NativeDPOTrainer({"steps": 5, "batch_size": 4}).train(
        policy=policy, data=data, rng=np.random.default_rng(1)
    )
    assert result.steps == 5
    calls = [c if isinstance(c, str) else c[0] for c in policy.log]
    assert set(calls) <= {"clone", "parameters", "sequence_logprobs"}
    assert calls[0] == "clone"
    forwards = [c for c in policy.log if c[0] == "sequence_logprobs"]
    # one forward over chosen and rejected together per optimiser step: batches 4, 2, 4, 2, 4
    assert [n for _, n in forwards] == [8, 4, 8, 4, 8]


@pytest.mark.parametrize("steps", [1, 3, 13])
def test_steps_option_gives_exactly_that_many_optimiser_steps(steps, monkeypatch):
    policy = make_policy()
    data = make_data(policy, k=10)
    counter = {"n": 0}

    class CountingAdam(torch.optim.Adam):
        def step(self, closure=None):
            counter["n"] += 1
            return super().step(closure)

    monkeypatch.setattr(torch.optim, "Adam", CountingAdam)
    result = NativeDPOTrainer({"steps": steps, "batch_size": 4, "epochs": 99}).train(
        policy=policy, data=data, rng=np.random.default_rng(0)
    )
    assert counter["n"] == steps == result.steps
    seen = sum(min(4, 10 - (i % 3) * 4) for i in range(steps))  # batches of 4, 4, 2 per epoch
    assert result.epochs == pytest.approx(seen / 10)


def test_epochs_mode_counts_partial_batches():
    policy = make_policy()
    data = make_data(policy, k=10)
    result = NativeDPOTrainer({"epochs": 3, "batch_size": 4}).train(
        policy=policy, data=data, rng=np.random.default_rng(0)
    )
    assert result.steps == 3 * 3 and result.epochs == 3.0


def test_first_batch_loss_is_log_two_when_reference_is_the_policy():
    policy = make_policy(seed=5)
    data = make_data(policy, k=16)
    result = NativeDPOTrainer({"steps": 1, "batch_size": 16}).train(
        policy=policy, data=data, rng=np.random.default_rng(0)
    )
    assert result.loss_first == pytest.approx(math.log(2), abs=1e-7)


def test_loss_uses_beta_and_the_chosen_minus_rejected_sign():
    policy = make_policy()
    # the reference is 1 nat worse on chosen: the implicit margin starts at +1 on every pair
    data = make_data(policy, k=16, ref_shift=1.0)
    for beta in (0.5, 2.0):
        result = NativeDPOTrainer({"steps": 1, "batch_size": 16, "beta": beta}).train(
            policy=policy, data=data, rng=np.random.default_rng(0)
        )
        assert result.loss_first == pytest.approx(math.log1p(math.exp(-beta)), abs=1e-6)


def test_deterministic_for_a_fixed_rng_seed():
    policy = make_policy()
    data = make_data(policy, k=30)
    trainer = NativeDPOTrainer({"epochs": 2, "batch_size": 7, "lr": 0.05})
    a = trainer.train(policy=policy, data=data, rng=np.random.default_rng(3))
    b = trainer.train(policy=policy, data=data, rng=np.random.default_rng(3))
    c = trainer.train(policy=policy, data=data, rng=np.random.default_rng(4))
    assert torch.equal(params(a.policy), params(b.policy))
    assert (a.loss_first, a.loss_last) == (b.loss_first, b.loss_last)
    assert not torch.equal(params(a.policy), params(c.policy))  # a different shuffle


def test_zero_pairs_returns_an_untrained_clone():
    policy = make_policy()
    empty = PreferenceData(
        prompts=np.zeros((0, P), dtype=np.int64),
        chosen=np.zeros((0, L), dtype=np.int64),
        chosen_lengths=np.zeros(0, dtype=np.int64),
        rejected=np.zeros((0, L), dtype=np.int64),
        rejected_lengths=np.zeros(0, dtype=np.int64),
        ref_chosen_logps=np.zeros(0),
        ref_rejected_logps=np.zeros(0),
    )
    for settings in ({}, {"steps": 10}):
        result = NativeDPOTrainer(settings).train(policy=policy, data=empty, rng=np.random.default_rng(0))
        assert result.policy is not policy
        assert torch.equal(params(result.policy), params(policy))
        assert (result.steps, result.epochs, result.loss_first, result.loss_last) == (0, 0.0, 0.0, 0.0)


def test_zero_epochs_trains_nothing():
    policy = make_policy()
    data = make_data(policy, k=8)
    result = NativeDPOTrainer({"epochs": 0}).train(policy=policy, data=data, rng=np.random.default_rng(0))
    assert result.steps == 0 and torch.equal(params(result.policy), params(policy))


def test_chosen_and_rejected_of_different_widths():
    policy = make_policy()
    data = make_data(policy, k=8)
    narrow = PreferenceData(
        prompts=data.prompts,
        chosen=data.chosen[:, :2],
        chosen_lengths=np.minimum(data.chosen_lengths, 2),
        rejected=data.rejected,
        rejected_lengths=data.rejected_lengths,
        ref_chosen_logps=own_logps(policy, data.prompts, data.chosen[:, :2], np.minimum(data.chosen_lengths, 2)),
        ref_rejected_logps=data.ref_rejected_logps,
    )
    result = NativeDPOTrainer({"steps": 2, "batch_size": 8}).train(
        policy=policy, data=narrow, rng=np.random.default_rng(0)
    )
    assert result.steps == 2 and result.loss_first == pytest.approx(math.log(2), abs=1e-7)
