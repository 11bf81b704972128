"""pi_0 from one offline DPO round on seed pairs (hf testbed option ``seed_pairs``), on the tiny offline models."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from harness.errors import UsageError
from harness.interfaces import Responses
from tests.extras import skip_unless_extra
from tests.hf_tiny import tiny_paths, tiny_world

skip_unless_extra("hf")

pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")

TRL_FAST = {"seed_lr": 5e-3, "seed_batch_size": 8, "seed_grad_accum": 1, "seed_epochs": 2.0, "seed_beta": 0.5}


@pytest.fixture(scope="module")
def seed_file(tmp_path_factory):
    """Every training prompt with the correct answer as chosen and a wrong one (the word itself, shouted) as rejected."""
    from plugins.testbeds.hf.tiny import answer

    path = tmp_path_factory.mktemp("seed") / "seed.jsonl"
    with open(path, "w") as out:
        for line in tiny_paths().prompts.read_text().splitlines():
            prompt = json.loads(line)["prompt"]
            wrong = prompt.split(" ", 1)[1].upper() + "!"
            out.write(json.dumps({"prompt": prompt, "chosen": answer(prompt), "rejected": wrong}) + "\n")
    return path


@pytest.fixture(scope="module")
def seeded(seed_file):
    return tiny_world(initial_model=None, seed_pairs=str(seed_file), **TRL_FAST)


def _state(policy):
    return {k: v.detach().clone() for k, v in policy.model.state_dict().items()}


def _pairs_as_responses(world, seed_file):
    """The seed pairs' chosen and rejected answers as a ``(K, 2)`` response pool on the world's training prompts."""
    rows = [json.loads(line) for line in seed_file.read_text().splitlines()][:20]
    index = {text: i for i, text in enumerate(world.table.texts[: world.n_train])}
    eos = world.tokenizer.eos_token_id
    encoded = [[world.tokenizer(r[key], add_special_tokens=False)["input_ids"] + [eos] for key in ("chosen", "rejected")]
               for r in rows]
    width = max(len(x) for pair in encoded for x in pair)
    tokens = np.full((len(rows), 2, width), world.pad_id, dtype=np.int64)
    lengths = np.zeros((len(rows), 2), dtype=np.int64)
    for i, pair in enumerate(encoded):
        for j, ids in enumerate(pair):
            tokens[i, j, : len(ids)] = ids
            lengths[i, j] = len(ids)
    prompts = np.array([[index[r["prompt"]]] for r in rows], dtype=np.int64)
    return prompts, Responses(tokens=tokens, lengths=lengths)


def test_seed_round_trains_pi0_from_pi_ref(seeded, seed_file):
    world = seeded
    assert world.initial_policy is not world.reference_policy and not world.info["initial_is_reference"]
    assert world.info["seed_pairs"] == 60 and world.info["seed_pairs_dropped"] == 0
    assert world.info["seed_trainer"] == "trl" and world.info["seed_train_steps"] == 16  # 60 pairs / 8, 2 epochs
    assert world.initial_policy.source_dir is None  # trained weights: a vLLM engine would save them first
    # pi_ref is untouched: still the weights in its directory
    from transformers import AutoModelForCausalLM

    on_disk = AutoModelForCausalLM.from_pretrained(tiny_paths().policy, local_files_only=True).state_dict()
    assert all(torch.equal(on_disk[k], v) for k, v in world.reference_policy.model.state_dict().items())
    # pi_0 moved towards the chosen answers: positive implicit margins, so margin selectors are not random
    prompts, responses = _pairs_as_responses(world, seed_file)
    reward = world.logprobs(world.initial_policy, prompts, responses) - world.logprobs(world.reference_policy, prompts,
                                                                                       responses)
    margin = reward[:, 0] - reward[:, 1]
    assert np.abs(margin).min() > 0 and margin.mean() > 0 and (margin > 0).mean() >= 0.8


def test_seed_round_is_reproducible(seeded, seed_file):
    again = tiny_world(initial_model=None, seed_pairs=str(seed_file), **TRL_FAST)
    first, second = _state(seeded.initial_policy), _state(again.initial_policy)
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_native_seed_trainer_and_saving(seed_file, tmp_path):
    save = tmp_path / "pi0"
    world = tiny_world(initial_model=None, seed_pairs=str(seed_file), seed_trainer="native", seed_lr=3e-3,
                       seed_beta=1.0, seed_batch_size=16, seed_epochs=1, seed_save_dir=str(save))
    assert world.info["seed_trainer"] == "native" and world.info["seed_train_steps"] == 4
    assert world.info["seed_saved_to"] == str(save)
    reloaded = tiny_world(initial_model=str(save))
    a, b = _state(world.initial_policy), _state(reloaded.initial_policy)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert reloaded.initial_policy.source_dir == save


def test_unusable_pairs_are_dropped(seed_file, tmp_path):
    path = tmp_path / "mixed.jsonl"
    rows = [json.loads(line) for line in seed_file.read_text().splitlines()][:8]
    rows.append({"prompt": "say cat", "chosen": "cat", "rejected": "cat"})  # identical: no gradient
    rows.append({"prompt": "say " + "x" * 200, "chosen": "x", "rejected": "y"})  # prompt too long
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    world = tiny_world(initial_model=None, seed_pairs=str(path), max_prompt_length=40, seed_trainer="native",
                       seed_epochs=1)
    assert world.info["seed_pairs"] == 8 and world.info["seed_pairs_dropped"] == 2


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"initial_model": str(tiny_paths().initial)}, "both give pi_0"),
        ({"initial_model": None, "chosen_column": "good"}, "no column 'good'"),
        ({"initial_model": None, "seed_trainer": "native", "seed_epochs": 1.5}, "whole epochs"),
        ({"initial_model": None, "seed_trainer": "native", "seed_grad_accum": 2}, "seed_trainer=trl only"),
    ],
)
def test_seed_option_errors(seed_file, overrides, message):
    with pytest.raises(UsageError, match=message):
        tiny_world(seed_pairs=str(seed_file), **overrides)


def test_seed_pairs_file_must_exist():
    with pytest.raises(UsageError, match="seed_pairs"):
        tiny_world(initial_model=None, seed_pairs="/no/such/seed.jsonl")
