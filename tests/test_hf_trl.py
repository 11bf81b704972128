"""The trl trainer: TRL's DPOTrainer on precomputed reference log-probs, checked against TRL's live-reference run."""

from __future__ import annotations

import copy
import random
import warnings

import numpy as np
import pytest
import torch

from harness.errors import UsageError
from harness.interfaces import Pairs, PreferenceData, Responses
from plugins.trainers.trl import LOSS_TYPES, TRLDPOTrainer, build_trainer, dpo_config, preference_rows, release
from tests.extras import skip_unless_extra
from tests.hf_tiny import tiny_world

skip_unless_extra("hf")

pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")

FAST = {"lr": 1e-3, "batch_size": 4, "grad_accum": 1, "warmup_ratio": 0.0}


@pytest.fixture(scope="module")
def world():
    return tiny_world()


@pytest.fixture(scope="module")
def loop_data(world):
    """PreferenceData built as harness.loop builds it: kept pairs, labels, reference log-probs at scoring time."""
    rng = np.random.default_rng(0)
    prompts = world.draw_prompts(24, rng)
    responses = world.sample(world.initial_policy, prompts, 4, rng)
    distinct = responses.distinct_mask()
    a, b = [], []
    for i in range(24):  # first two distinct responses of each prompt, as a selector would
        js = np.flatnonzero(distinct[i])
        a.append(js[0])
        b.append(js[1] if len(js) > 1 else (js[0] + 1) % 4)
    pairs = Pairs(np.arange(24), a, b)
    ref_logps = world.logprobs(world.reference_policy, prompts, responses)
    prefer_a = responses.lengths[pairs.prompt, pairs.a] <= responses.lengths[pairs.prompt, pairs.b]  # "shorter wins"
    data = PreferenceData.from_labels(prompts=prompts, responses=responses, pairs=pairs, prefer_a=prefer_a,
                                      ref_logps=ref_logps)
    return prompts, responses, data


def _losses(trainer) -> list[float]:
    return [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]


def _stock_live_run(world, rows, settings, seed, output_dir):
    """TRL itself, unmodified: text dataset, its own tokenization and EOS, a live reference model."""
    import datasets
    from trl import DPOTrainer

    decode = world.tokenizer.decode
    ended = all(r[-1] in world.eos_ids for r in rows["chosen_ids"] + rows["rejected_ids"])
    assert ended, "the text path appends EOS; use pairs whose responses end with one"
    texts = {
        "prompt": [decode(ids) for ids in rows["prompt_ids"]],
        "chosen": [decode(ids[:-1]) for ids in rows["chosen_ids"]],
        "rejected": [decode(ids[:-1]) for ids in rows["rejected_ids"]],
    }
    policy = world.initial_policy.clone()
    config = dpo_config(settings, output_dir=str(output_dir), seed=seed, use_cpu=True,
                        precompute_ref_log_probs=False)
    trainer = DPOTrainer(model=policy.model, ref_model=copy.deepcopy(world.reference_policy.model), args=config,
                         train_dataset=datasets.Dataset.from_dict(texts), processing_class=world.tokenizer)
    assert trainer.train_dataset["chosen_ids"] == rows["chosen_ids"]  # same tokens as ours
    trainer.train()
    return trainer, policy


def _eos_only(world, data: PreferenceData) -> PreferenceData:
    def ends(tokens, lengths):
        return np.isin(tokens[np.arange(len(lengths)), lengths - 1], world.eos_ids)

    keep = ends(data.chosen, data.chosen_lengths) & ends(data.rejected, data.rejected_lengths)
    return PreferenceData(**{k: getattr(data, k)[keep] for k in (
        "prompts", "chosen", "chosen_lengths", "rejected", "rejected_lengths", "ref_chosen_logps",
        "ref_rejected_logps")})


@pytest.mark.parametrize("loss_type, extra", [
    ("sigmoid", {}),
    ("ipo", {}),
    ("sigmoid,bco_pair,sft", {"loss_weights": (0.8, 0.2, 1.0)}),
])
def test_losses_equal_trl_with_a_live_reference(world, loop_data, loss_type, extra, tmp_path):
    _, _, data = loop_data
    data = _eos_only(world, data)
    assert len(data) >= 12
    settings = TRLDPOTrainer({**FAST, "loss_type": loss_type, "epochs": 2, **extra}).settings
    rows = preference_rows(world.initial_policy, data)
    stock, stock_policy = _stock_live_run(world, rows, settings, seed=11, output_dir=tmp_path)

    policy = world.initial_policy.clone()
    ours = build_trainer(policy, rows, settings, seed=11)
    calls = []
    ours.compute_ref_log_probs = lambda *a, **k: calls.append(1)  # a reference forward would be recorded
    ours.train()
    assert ours.ref_model is None and calls == []
    a, b = np.array(_losses(stock)), np.array(_losses(ours))
    release(ours, policy)
    assert len(a) == len(b) == 2 * int(np.ceil(len(data) / 4))
    worst = float(np.abs(a - b).max())
    print(f"{loss_type}: max abs loss diff {worst:.3g} over {len(a)} steps")
    assert worst < 1e-5, worst
    # Adam turns float noise on near-zero gradients into lr-sized steps, so compare what the policies do
    prompts, responses, _ = loop_data
    ours_logps = world.logprobs(policy, prompts, responses)
    stock_logps = world.logprobs(stock_policy, prompts, responses)
    print(f"{loss_type}: max abs log-prob diff of the trained policies {np.abs(ours_logps - stock_logps).max():.3g}")
    np.testing.assert_allclose(ours_logps, stock_logps, atol=1e-3)


def test_train_returns_a_trained_copy_and_leaves_the_input_alone(world, loop_data):
    prompts, responses, data = loop_data
    before = world.logprobs(world.initial_policy, prompts, responses)
    python_state, numpy_state, torch_state = random.getstate(), np.random.get_state(), torch.get_rng_state()
    result = TRLDPOTrainer({**FAST, "epochs": 2}).train(policy=world.initial_policy, data=data,
                                                        rng=np.random.default_rng(0))
    assert random.getstate() == python_state and torch.equal(torch.get_rng_state(), torch_state)
    assert np.random.get_state()[1].tolist() == numpy_state[1].tolist()
    assert result.steps == 12 and result.epochs == pytest.approx(2.0)
    assert np.isfinite(result.loss_first) and np.isfinite(result.loss_last)
    assert result.loss_first == pytest.approx(np.log(2), abs=0.05)  # pi_0 vs pi_ref: small margins at the start
    np.testing.assert_array_equal(before, world.logprobs(world.initial_policy, prompts, responses))
    after = world.logprobs(result.policy, prompts, responses)
    assert not np.allclose(before, after)
    # the trained policy is an ordinary policy again: eval mode, its own forward, generates and saves
    assert not result.policy.model.training and "forward" not in vars(result.policy.model)
    world.sample(result.policy, prompts[:2], 2, np.random.default_rng(0))
    clone = result.policy.clone()
    np.testing.assert_array_equal(world.logprobs(clone, prompts, responses), after)


def test_training_is_reproducible_from_the_generator(world, loop_data):
    _, _, data = loop_data
    trainer = TRLDPOTrainer({**FAST, "steps": 3})
    a = trainer.train(policy=world.initial_policy, data=data, rng=np.random.default_rng(4))
    b = trainer.train(policy=world.initial_policy, data=data, rng=np.random.default_rng(4))
    assert a.steps == b.steps == 3 and a.loss_last == b.loss_last
    for key, value in a.policy.model.state_dict().items():
        assert torch.equal(value, b.policy.model.state_dict()[key])


def test_trains_truncated_responses_on_their_own_tokens(world, loop_data):
    """Responses cut by max_new_tokens (no EOS) are trained as sampled: TRL adds no EOS to them."""
    prompts, responses, _ = loop_data
    cut = Responses(responses.tokens[:, :, :2].copy(), np.minimum(responses.lengths, 2))
    ref = world.logprobs(world.reference_policy, prompts, cut)
    pairs = Pairs(np.arange(8), np.zeros(8, np.int64), np.ones(8, np.int64))
    data = PreferenceData.from_labels(prompts=prompts, responses=cut, pairs=pairs, prefer_a=np.ones(8, bool),
                                      ref_logps=ref)
    rows = preference_rows(world.initial_policy, data)
    assert all(len(ids) <= 2 for ids in rows["chosen_ids"])
    policy = world.initial_policy.clone()
    trainer = build_trainer(policy, rows, TRLDPOTrainer({**FAST, "batch_size": 8}).settings, seed=0)
    assert trainer.train_dataset["chosen_ids"] == rows["chosen_ids"]
    trainer.train()
    release(trainer, policy)
    policy_logps = world.logprobs(world.initial_policy, prompts, cut)
    margin = (policy_logps[:8, 0] - ref[:8, 0]) - (policy_logps[:8, 1] - ref[:8, 1])
    expected = np.logaddexp(0.0, -0.1 * margin).mean()  # -log sigmoid(beta * margin), one batch of all 8 pairs
    assert _losses(trainer) == [pytest.approx(float(expected), abs=1e-5)]


def test_no_pairs_returns_the_untouched_clone(world, loop_data):
    _, _, data = loop_data
    empty = PreferenceData(**{k: getattr(data, k)[:0] for k in (
        "prompts", "chosen", "chosen_lengths", "rejected", "rejected_lengths", "ref_chosen_logps",
        "ref_rejected_logps")})
    result = TRLDPOTrainer(FAST).train(policy=world.initial_policy, data=empty, rng=np.random.default_rng(0))
    assert (result.steps, result.epochs, result.loss_first, result.loss_last) == (0, 0.0, 0.0, 0.0)
    assert result.policy is not world.initial_policy


def test_max_length_drops_long_pairs_instead_of_truncating(world, loop_data):
    _, _, data = loop_data
    rows = preference_rows(world.initial_policy, data)
    longest = max(len(p) + max(len(c), len(r)) for p, c, r in zip(rows["prompt_ids"], rows["chosen_ids"],
                                                                   rows["rejected_ids"]))
    with pytest.warns(UserWarning, match="dropped"):
        kept = preference_rows(world.initial_policy, data, max_length=longest - 1)
    assert 0 < len(kept["prompt_ids"]) < len(data)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(preference_rows(world.initial_policy, data, max_length=longest)["prompt_ids"]) == len(data)


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_every_trl_loss_type_runs(world, loop_data, loss_type):
    _, _, data = loop_data
    extra = {"label_smoothing": 1e-3} if loss_type == "exo_pair" else {}
    result = TRLDPOTrainer({**FAST, "steps": 2, "loss_type": loss_type, **extra}).train(
        policy=world.initial_policy, data=data, rng=np.random.default_rng(0))
    assert result.steps == 2 and np.isfinite(result.loss_first) and np.isfinite(result.loss_last)


@pytest.mark.parametrize("settings, message", [
    ({"loss_type": "sigmod"}, "unknown loss type 'sigmod'"),
    ({"loss_type": "sigmoid,sft", "loss_weights": "1"}, "1 weights for 2 loss types"),
    ({"loss_type": "exo_pair"}, "label_smoothing"),
    ({"loss_type": " , "}, "empty"),
])
def test_bad_options_are_usage_errors(settings, message):
    with pytest.raises(UsageError, match=message):
        TRLDPOTrainer(settings)


def test_refuses_policies_it_cannot_train(loop_data):
    _, _, data = loop_data
    with pytest.raises(UsageError, match="transformers policies"):
        TRLDPOTrainer(FAST).train(policy=object(), data=data, rng=np.random.default_rng(0))


def test_defaults_follow_the_paper():
    settings = TRLDPOTrainer().settings
    assert settings["beta"] == 0.1 and settings["lr"] == 5e-7 and settings["epochs"] == 1
    assert settings["batch_size"] * settings["grad_accum"] == 128 and settings["loss_type"] == "sigmoid"
