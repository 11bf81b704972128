"""The hf testbed's world on the tiny offline models: loading, sampling, log-probs, text, evaluation, checkpoints."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from harness.errors import CheckpointError, UsageError
from harness.interfaces import Pairs, PreferenceData, Responses
from tests.extras import skip_unless_extra
from tests.hf_tiny import tiny_paths, tiny_world, world_settings

skip_unless_extra("hf")

pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")


@pytest.fixture(scope="module")
def world():
    return tiny_world()


@pytest.fixture(scope="module")
def pool(world):
    rng = np.random.default_rng(0)
    prompts = world.draw_prompts(12, rng)
    responses = world.sample(world.initial_policy, prompts, 4, rng)
    return prompts, responses


def _naive_logprob(policy, prompt_row: int, response: list[int]) -> float:
    """One sequence, no padding, no batching: the definition of the summed response log-prob."""
    ids = torch.tensor([list(policy.table.ids[prompt_row]) + response])
    with torch.no_grad():
        logits = policy.model(input_ids=ids).logits[0].double()
    logps = torch.log_softmax(logits, dim=-1)
    p = len(policy.table.ids[prompt_row])
    return float(sum(logps[p + t - 1, token] for t, token in enumerate(response)))


# ------------------------------------------------------------------ the tiny models


def test_tiny_models_are_saved_and_reload_by_path():
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    paths = tiny_paths()
    tokenizer = AutoTokenizer.from_pretrained(paths.policy, local_files_only=True)
    assert tokenizer.decode(tokenizer("Hello, world 42!\n")["input_ids"]) == "Hello, world 42!\n"
    assert tokenizer.chat_template and tokenizer.pad_token == "<pad>" and tokenizer.eos_token == "<eos>"
    policy = AutoModelForCausalLM.from_pretrained(paths.policy, local_files_only=True)
    assert 5_000 < sum(p.numel() for p in policy.parameters()) < 50_000
    reward = AutoModelForSequenceClassification.from_pretrained(paths.reward, local_files_only=True)
    assert reward.config.num_labels == 1 and reward.config.pad_token_id == tokenizer.pad_token_id
    rows = [json.loads(line) for line in paths.eval.read_text().splitlines()]
    assert rows and all(set(r) == {"prompt", "output"} for r in rows)


def test_world_loads_and_reports(world):
    assert world.info["train_prompts"] == 60 and world.info["eval_prompts"] == 15
    assert world.info["chat_template"] is True and world.info["initial_is_reference"] is False
    assert world.eval_rows.shape == (15, 1) and int(world.eval_rows[0, 0]) == 60
    assert world.initial_policy is not world.reference_policy
    assert world.table.texts[0] == json.loads(tiny_paths().prompts.read_text().splitlines()[0])["prompt"]
    # the chat template wraps every prompt as a user message
    assert world.tokenizer.decode(list(world.table.ids[0])).startswith("user: ")


def test_without_initial_model_pi0_is_pi_ref():
    world = tiny_world(initial_model=None)
    assert world.initial_policy is world.reference_policy and world.info["initial_is_reference"]


def test_reference_outputs_file_alone_gives_the_evaluation_set(tmp_path):
    references = tmp_path / "refs.jsonl"
    references.write_text(tiny_paths().eval.read_text())
    world = tiny_world(eval_prompts=None, reference_outputs=str(references), eval_limit=4)
    assert len(world.eval_rows) == 4 and len(world.reference_outputs) == 4


def test_prompts_from_csv_and_parquet(tmp_path):
    import pandas as pd

    prompts = [json.loads(line)["prompt"] for line in tiny_paths().prompts.read_text().splitlines()]
    pd.DataFrame({"instruction": prompts}).to_csv(tmp_path / "p.csv", index=False)
    pd.DataFrame({"instruction": prompts}).to_parquet(tmp_path / "p.parquet")
    rows = [json.loads(line) for line in tiny_paths().eval.read_text().splitlines()]
    pd.DataFrame({"instruction": [r["prompt"] for r in rows], "output": [r["output"] for r in rows]}).to_parquet(
        tmp_path / "e.parquet")
    for name in ("p.csv", "p.parquet"):
        world = tiny_world(prompts=str(tmp_path / name), eval_prompts=str(tmp_path / "e.parquet"),
                           prompt_column="instruction")
        assert list(world.table.texts[:60]) == prompts
        assert world.reference_outputs == [r["output"] for r in rows]


# ------------------------------------------------------------------ usage errors


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"model": None}, "testbed option `model` is required"),
        ({"model": "HuggingFaceTB/SmolLM2-135M-Instruct"}, "`hf download HuggingFaceTB/SmolLM2-135M-Instruct`"),
        ({"model": "/nonexistent/model"}, "no such directory"),
        ({"initial_model": "org/name"}, "no local directory, and the Hugging Face Hub model 'org/name' is not in the local"),
        ({"prompts": "/nonexistent/prompts.jsonl"}, "no such file"),
        ({"prompts": "datasets/alpaca"}, "hf download datasets/alpaca --repo-type dataset"),
        ({"eval_prompts": None}, "needs evaluation prompts"),
        ({"prompt_column": "question"}, "has no column 'question'"),
        ({"max_prompt_length": 3}, "none of the 60 prompts fits"),
        ({"max_new_tokens": 90}, "exceeds the model's 96 positions"),
        ({"device": "cuda:7"}, "device"),
    ],
)
def test_clear_usage_errors(overrides, message):
    if overrides.get("device") and torch.cuda.is_available():
        pytest.skip("a CUDA machine may have that device")
    with pytest.raises(UsageError, match=message):
        tiny_world(**overrides)


def test_a_model_directory_without_config_is_refused(tmp_path):
    (tmp_path / "weights.gguf").write_bytes(b"GGUF")
    with pytest.raises(UsageError, match="no config.json"):
        tiny_world(model=str(tmp_path))


def test_annotate_points_to_the_annotator_option(world, pool):
    prompts, responses = pool
    with pytest.raises(UsageError, match="--annotator"):
        world.annotate(prompts, responses, Pairs([0], [0], [1]), np.random.default_rng(0))


def test_draw_prompts(world):
    rows = world.draw_prompts(20, np.random.default_rng(3))
    assert rows.shape == (20, 1) and rows.dtype == np.int64
    assert len(set(rows[:, 0].tolist())) == 20 and rows.min() >= 0 and rows.max() < world.n_train
    np.testing.assert_array_equal(rows, world.draw_prompts(20, np.random.default_rng(3)))
    with pytest.raises(UsageError, match="60 usable"):
        world.draw_prompts(61, np.random.default_rng(0))


# ------------------------------------------------------------------ sampling


def test_sample_shapes_padding_and_eos(world, pool):
    prompts, responses = pool
    m, n, width = responses.tokens.shape
    assert (m, n) == (12, 4) and responses.lengths.shape == (12, 4) and responses.tokens.dtype == np.int64
    assert width <= 16 and responses.lengths.min() >= 1 and responses.lengths.max() == width
    ended = world.ends_with_eos(responses)
    assert ended.mean() > 0.5  # the tiny SFT model answers briefly and stops
    eos = set(world.eos_ids)
    for i in range(m):
        for j in range(n):
            length = int(responses.lengths[i, j])
            row = responses.tokens[i, j]
            assert (row[length:] == world.pad_id).all()
            body = row[: length - 1] if ended[i, j] else row[:length]
            assert not eos & set(body.tolist())  # EOS only as the last scored token
            if not ended[i, j]:
                assert length == 16  # cut by max_new_tokens


def test_sampling_is_seeded_by_the_generator_and_leaves_torch_rng_alone(world):
    prompts = world.draw_prompts(6, np.random.default_rng(1))
    state = torch.get_rng_state()
    a = world.sample(world.initial_policy, prompts, 3, np.random.default_rng(5))
    assert torch.equal(state, torch.get_rng_state())
    b = world.sample(world.initial_policy, prompts, 3, np.random.default_rng(5))
    c = world.sample(world.initial_policy, prompts, 3, np.random.default_rng(6))
    np.testing.assert_array_equal(a.tokens, b.tokens)
    assert not np.array_equal(a.tokens, c.tokens)


def test_top_k_one_is_greedy(world):
    prompts = world.draw_prompts(5, np.random.default_rng(2))
    greedy = world.sample(world.initial_policy, prompts, 1, np.random.default_rng(0), mode="greedy")
    topk = tiny_world(top_k=1)
    sampled = topk.sample(topk.initial_policy, prompts, 2, np.random.default_rng(9))
    for j in range(2):
        np.testing.assert_array_equal(sampled.lengths[:, j], greedy.lengths[:, 0])


# ------------------------------------------------------------------ log-probs


def test_logprobs_equal_the_naive_unbatched_sum(world, pool):
    prompts, responses = pool
    batched = world.logprobs(world.initial_policy, prompts, responses)
    assert batched.shape == (12, 4) and batched.dtype == np.float64 and (batched < 0).all()
    worst = 0.0
    for i in range(12):
        for j in range(4):
            tokens = responses.tokens[i, j, : responses.lengths[i, j]].tolist()
            worst = max(worst, abs(batched[i, j] - _naive_logprob(world.initial_policy, int(prompts[i, 0]), tokens)))
    print(f"max abs diff {worst:.3g}")
    assert worst < 1e-4, worst


def test_logprobs_do_not_depend_on_batch_size_or_padding(world, pool):
    prompts, responses = pool
    small = tiny_world(logprob_batch_size=1)
    a = world.logprobs(world.initial_policy, prompts, responses)
    b = small.logprobs(small.initial_policy, prompts, responses)
    wider = Responses(np.concatenate([responses.tokens, np.full((12, 4, 5), world.pad_id)], axis=2), responses.lengths)
    c = world.logprobs(world.initial_policy, prompts, wider)
    np.testing.assert_allclose(a, b, atol=1e-4)
    np.testing.assert_array_equal(a, c)


def test_logprobs_are_those_generate_sampled_from(world):
    """Ancestral samples (temperature 1, no top-k): the summed log-softmax of generate's logits equals logprobs."""
    policy = world.initial_policy
    row = 7
    ids = torch.tensor([list(world.table.ids[row])])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        out = policy.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=True, top_k=0,
                                    temperature=1.0, max_new_tokens=16, num_return_sequences=4,
                                    output_logits=True, return_dict_in_generate=True,
                                    eos_token_id=world.eos_ids, pad_token_id=world.pad_id)
    new = out.sequences[:, ids.shape[1]:]
    steps = torch.log_softmax(torch.stack(out.logits, dim=1).double(), dim=-1)
    token_logps = steps.gather(-1, new[..., None])[..., 0]
    tokens = np.full((1, 4, new.shape[1]), world.pad_id)
    lengths = np.zeros((1, 4), dtype=np.int64)
    expected = []
    for j in range(4):
        hits = [t for t in range(new.shape[1]) if int(new[j, t]) in world.eos_ids]
        length = hits[0] + 1 if hits else new.shape[1]
        tokens[0, j, :length] = new[j, :length].numpy()
        lengths[0, j] = length
        expected.append(float(token_logps[j, :length].sum()))
    got = world.logprobs(policy, np.array([[row]]), Responses(tokens, lengths))[0]
    print(f"max abs diff vs generate {np.abs(got - np.array(expected)).max():.3g}")
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_logprobs_match_trl_reference_logprobs(world, pool, tmp_path):
    """TRL's own reference pass (DPOTrainer with precompute_ref_log_probs) on the same pairs, to 1e-4."""
    import copy

    import datasets
    from trl import DPOConfig, DPOTrainer

    prompts, responses = pool
    ended = world.ends_with_eos(responses)
    reference = world.reference_policy
    logps = world.logprobs(reference, prompts, responses)
    chosen_rows, rejected_rows, texts = [], [], {"prompt": [], "chosen": [], "rejected": []}
    for i in range(12):
        for a, b in ((0, 1), (2, 3)):
            if not (ended[i, a] and ended[i, b]):
                continue  # TRL's text path appends an EOS; compare on responses that have one
            texts["prompt"].append(world.tokenizer.decode(list(world.table.ids[int(prompts[i, 0])])))
            for key, j in (("chosen", a), ("rejected", b)):
                body = responses.tokens[i, j, : responses.lengths[i, j] - 1].tolist()
                texts[key].append(world.tokenizer.decode(body))
            chosen_rows.append((i, a))
            rejected_rows.append((i, b))
    assert len(chosen_rows) >= 8
    config = DPOConfig(output_dir=str(tmp_path), precompute_ref_log_probs=True, report_to="none", use_cpu=True,
                       bf16=False, activation_checkpointing=False, per_device_train_batch_size=4, max_length=None,
                       disable_tqdm=True)
    trainer = DPOTrainer(model=copy.deepcopy(reference.model), ref_model=copy.deepcopy(reference.model), args=config,
                         train_dataset=datasets.Dataset.from_dict(texts), processing_class=world.tokenizer)
    data = trainer.train_dataset
    for k, (i, j) in enumerate(chosen_rows):  # TRL tokenized exactly the sampled tokens
        assert data[k]["chosen_ids"] == responses.tokens[i, j, : responses.lengths[i, j]].tolist()
        assert data[k]["prompt_ids"] == list(world.table.ids[int(prompts[i, 0])])
    trl_chosen = np.array(data["ref_chosen_logps"])
    trl_rejected = np.array(data["ref_rejected_logps"])
    ours_chosen = np.array([logps[i, j] for i, j in chosen_rows])
    ours_rejected = np.array([logps[i, j] for i, j in rejected_rows])
    worst = max(np.abs(trl_chosen - ours_chosen).max(), np.abs(trl_rejected - ours_rejected).max())
    print(f"max abs diff {worst:.3g}")
    assert worst < 1e-4, worst


def test_policy_sequence_logprobs_is_differentiable(world, pool):
    prompts, responses = pool
    policy = world.initial_policy.clone()
    values = policy.sequence_logprobs(torch.as_tensor(prompts[:3]), torch.as_tensor(responses.tokens[:3, 0]),
                                      torch.as_tensor(responses.lengths[:3, 0]))
    values.sum().backward()
    assert all(p.grad is not None for p in policy.parameters() if p.requires_grad)
    np.testing.assert_allclose(values.detach().numpy(),
                               world.logprobs(world.initial_policy, prompts[:3], Responses(
                                   responses.tokens[:3, :1], responses.lengths[:3, :1]))[:, 0], atol=1e-5)


# ------------------------------------------------------------------ text and evaluation


def test_texts_decode_prompts_and_responses(world, pool):
    prompts, responses = pool
    prompt_texts, response_texts = world.texts(prompts, responses)
    assert prompt_texts == [world.table.texts[int(r)] for r in prompts[:, 0]]
    assert len(response_texts) == 12 and all(len(r) == 4 for r in response_texts)
    assert all("<eos>" not in t and "<pad>" not in t for row in response_texts for t in row)
    i, j = 0, 0
    expected = world.tokenizer.decode(responses.tokens[i, j, : responses.lengths[i, j]].tolist(),
                                      skip_special_tokens=True)
    assert response_texts[i][j] == expected


def test_evaluation_pairs_are_greedy_output_then_reference(world):
    rows, pairs = world.evaluation_pairs(world.initial_policy, np.random.default_rng(0))
    assert rows.shape == (15, 1) and pairs.tokens.shape[:2] == (15, 2)
    prompt_texts, texts = world.texts(rows, pairs)
    expected = [json.loads(line) for line in tiny_paths().eval.read_text().splitlines()]
    assert prompt_texts == [r["prompt"] for r in expected]
    assert [t[1] for t in texts] == [r["output"] for r in expected]
    again = world.evaluation_pairs(world.initial_policy, np.random.default_rng(99))[1]
    np.testing.assert_array_equal(pairs.tokens, again.tokens)  # greedy: no randomness
    greedy = world.sample(world.initial_policy, rows, 1, np.random.default_rng(0), mode="greedy")
    np.testing.assert_array_equal(pairs.lengths[:, 0], greedy.lengths[:, 0])


def test_evaluation_pairs_need_reference_outputs(tmp_path):
    prompts_only = tmp_path / "eval.jsonl"
    prompts_only.write_text("".join(json.dumps({"prompt": json.loads(line)["prompt"]}) + "\n"
                                    for line in tiny_paths().eval.read_text().splitlines()))
    world = tiny_world(eval_prompts=str(prompts_only))
    assert set(world.evaluate(world.initial_policy, np.random.default_rng(0))) >= {"kl", "mean_length"}
    with pytest.raises(UsageError, match="reference_outputs"):
        world.evaluation_pairs(world.initial_policy, np.random.default_rng(0))


def test_evaluate_reports_kl_and_length_not_win_rate(world):
    metrics = world.evaluate(world.initial_policy, np.random.default_rng(0))
    assert set(metrics) == {"kl", "kl_se", "mean_length", "truncated_share"}
    assert "win_rate" not in metrics
    assert metrics["kl"] > 0 and metrics["kl_se"] >= 0 and 0 < metrics["mean_length"] <= 16
    reference = world.evaluate(world.reference_policy, np.random.default_rng(0))
    assert reference["kl"] == 0.0 and reference["kl_se"] == 0.0


# ------------------------------------------------------------------ checkpoints and training


def test_save_and_load_policy_round_trip(world, tmp_path, pool):
    prompts, responses = pool
    path = tmp_path / "policy.safetensors"
    world.save_policy(world.initial_policy, path)
    assert path.is_file()
    loaded = world.load_policy(path)
    assert loaded is not world.initial_policy
    np.testing.assert_array_equal(world.logprobs(loaded, prompts, responses),
                                  world.logprobs(world.initial_policy, prompts, responses))
    for key, value in world.initial_policy.model.state_dict().items():
        assert torch.equal(value, loaded.model.state_dict()[key]), key


def test_load_policy_refuses_bad_files(world, tmp_path):
    from safetensors.torch import save_file

    truncated = tmp_path / "truncated.safetensors"
    world.save_policy(world.initial_policy, truncated)
    truncated.write_bytes(truncated.read_bytes()[:100])
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign), metadata={"format": "gru-policy-1"})
    pickle = tmp_path / "pickle.safetensors"
    torch.save({"w": torch.zeros(2)}, pickle)
    for path in (truncated, foreign, pickle, tmp_path / "missing.safetensors"):
        with pytest.raises(CheckpointError, match="unusable"):
            world.load_policy(path)


def test_native_trainer_trains_an_hf_policy_from_loop_style_data(world, pool):
    """The Policy protocol is enough for the native trainer; the input policy is not modified."""
    from plugins.trainers.native import NativeDPOTrainer

    prompts, responses = pool
    ref = world.logprobs(world.reference_policy, prompts, responses)
    pairs = Pairs(np.arange(12), np.zeros(12, np.int64), np.ones(12, np.int64))
    data = PreferenceData.from_labels(prompts=prompts, responses=responses, pairs=pairs,
                                      prefer_a=np.arange(12) % 2 == 0, ref_logps=ref)
    before = world.logprobs(world.initial_policy, prompts, responses)
    result = NativeDPOTrainer({"epochs": 2, "batch_size": 4, "lr": 1e-3, "beta": 0.1}).train(
        policy=world.initial_policy, data=data, rng=np.random.default_rng(0))
    assert result.steps == 6 and np.isfinite(result.loss_first)
    np.testing.assert_array_equal(before, world.logprobs(world.initial_policy, prompts, responses))
    assert not np.allclose(before, world.logprobs(result.policy, prompts, responses))


def test_importing_the_testbed_is_cheap():
    code = ("import sys; import plugins.testbeds.hf, plugins.trainers.trl, plugins.judges.reward_model, "
            "plugins.judges.function, plugins._hf.loading; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'transformers', 'trl', 'datasets'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
    assert world_settings()["threads"] == 1
