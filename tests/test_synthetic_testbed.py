"""The ``synthetic`` testbed: world contract, masking, annotator, evaluation, determinism and cache."""

from __future__ import annotations

import itertools
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.interfaces import Labels, Pairs, Policy, PreferenceData, Responses, check_component_class
from harness.progress import NullReporter
from plugins.testbeds import synthetic
from plugins.testbeds.synthetic import SyntheticTestbed
from plugins.testbeds.synthetic.policy import GRUPolicy, PolicyConfig
from plugins.testbeds.synthetic.process import Vocab, gold_rewards, sample_process
from plugins.trainers.native import NativeDPOTrainer

torch.set_num_threads(1)

SMALL = {"sft_samples": 3000, "sft_epochs": 2, "eval_prompts": 100, "seed_prompts": 50}
# no SFT, no pi_0 round: a world that builds in milliseconds, for annotator tests
BARE = {"sft_samples": 0, "seed_prompts": 0, "eval_prompts": 10}


def build(settings=SMALL, seed=0):
    return SyntheticTestbed(settings).build_world(seed=seed, reporter=NullReporter())


@pytest.fixture(scope="module")
def world():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HARNESS_NO_CACHE", "1")
        mp.setenv("HARNESS_CACHE_DIR", "/nonexistent/pairsel-harness-test")
        return build()


@pytest.fixture(autouse=True)
def no_cache(monkeypatch, tmp_path):
    """Never touch the user's cache: the cache is off unless a test turns it on, in tmp_path."""
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("HARNESS_NO_CACHE", "1")


def state(policy: GRUPolicy) -> dict[str, torch.Tensor]:
    return policy.state_dict()


def assert_same_world(a, b):
    for pa, pb in ((a.reference_policy, b.reference_policy), (a.initial_policy, b.initial_policy)):
        sa, sb = state(pa), state(pb)
        assert sa.keys() == sb.keys()
        for key in sa:
            assert torch.equal(sa[key], sb[key]), key
    np.testing.assert_array_equal(a.eval_prompts, b.eval_prompts)
    np.testing.assert_array_equal(a.reference_tokens, b.reference_tokens)
    np.testing.assert_array_equal(a.reference_lengths, b.reference_lengths)
    np.testing.assert_array_equal(a.reference_gold, b.reference_gold)


# ------------------------------------------------------------------ plugin surface


def test_registration_and_defaults_match_design():
    registered = []
    synthetic.register_testbeds(register=registered.append)
    assert registered == [SyntheticTestbed]
    check_component_class("testbed", SyntheticTestbed)
    assert SyntheticTestbed().settings == {
        "world": "bigram",
        "state_dependence": True,
        "vocab_size": 32,
        "prompt_length": 6,
        "max_response_length": 12,
        "eos_logit_base": 1.0,
        "eos_logit_slope": 0.5,
        "transition_scale": 2.0,
        "prompt_bias_scale": 0.6,
        "gold_alignment": 0.3,
        "gold_prompt_scale": 1.0,
        "gold_token_scale": 0.5,
        "tau": 0.3,
        "embedding_dim": 32,
        "hidden_dim": 64,
        "sft_samples": 60000,
        "sft_epochs": 2,
        "sft_lr": 3e-3,
        "sft_batch": 256,
        "seed_prompts": 500,
        "pi0_beta": 1.0,
        "pi0_lr": 3e-3,
        "pi0_batch": 64,
        "pi0_epochs": 8,
        "eval_prompts": 1000,
        "eval_samples": 2,
        "reference_best_of": 4,
    }
    for option in SyntheticTestbed.options:
        bounded = option.min is not None or option.max is not None or option.choices or option.type is bool
        assert bounded, option.name  # every option has a range


def test_module_import_does_not_import_torch():
    code = "import plugins.testbeds.synthetic, sys; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_default_policy_has_about_22k_parameters(world):
    assert isinstance(world.reference_policy, Policy)
    n = sum(p.numel() for p in world.reference_policy.parameters())
    # SMALL keeps the default sizes: embedding 36 x 32, GRU 32 -> 64, head 64 -> 33
    assert n == 36 * 32 + 3 * (64 * 32 + 64 * 64 + 2 * 64) + 64 * 33 + 33


# ------------------------------------------------------------------ the data process and gold


def test_process_lengths_and_layout():
    world = build(BARE)
    rng = np.random.default_rng(0)
    prompts = world.draw_prompts(4000, rng)
    tokens, lengths = sample_process(world.tables, prompts, rng, max_len=12, eos_base=1.0, eos_slope=0.5)
    assert tokens.shape == (4000, 13) and lengths.min() >= 2 and lengths.max() <= 13
    assert 5.0 < (lengths - 1).mean() < 8.5  # docs/internals/synthetic-testbed.md: mean about 6-7 content tokens
    assert (lengths == 13).any()  # the forced EOS is reachable
    rows = np.arange(4000)
    assert np.all(tokens[rows, lengths - 1] == world.eos_id)


def test_gold_reward_matches_a_direct_loop():
    world = build(BARE)
    rng = np.random.default_rng(1)
    prompts = world.draw_prompts(5, rng)
    responses = world.sample(world.reference_policy, prompts, 3, rng)
    gold = world.gold_rewards(prompts, responses)
    t = world.tables
    for m, n in itertools.product(range(5), range(3)):
        x = prompts[m]
        ys = responses.tokens[m, n, : responses.lengths[m, n] - 1]
        prev, total = world.vocab.size, 0.0
        for y in ys:
            total += t.gold_bigram[prev, y] + t.gold_token[y] + t.gold_prompt[x, y].sum() / math.sqrt(6)
            prev = y
        assert gold[m, n] == pytest.approx(total / len(ys), abs=1e-12)


# ------------------------------------------------------------------ responses and masking


def test_responses_layout(world):
    rng = np.random.default_rng(0)
    prompts = world.draw_prompts(300, rng)
    assert prompts.shape == (300, 6) and prompts.dtype == np.int64
    assert prompts.min() >= 0 and prompts.max() < 32
    responses = world.sample(world.initial_policy, prompts, 8, rng)
    assert isinstance(responses, Responses)
    assert responses.tokens.shape == (300, 8, 13) and responses.tokens.dtype == np.int64
    assert responses.lengths.shape == (300, 8) and responses.lengths.dtype == np.int64
    lengths = responses.lengths
    assert lengths.min() >= 2 and lengths.max() <= 13
    position = np.arange(13)[None, None, :]
    content = position < (lengths - 1)[..., None]
    eos = position == (lengths - 1)[..., None]
    pad = position >= lengths[..., None]
    assert np.all(responses.tokens[content] < 32)
    assert (world.eos_id, world.pad_id) == (32, 35)
    assert np.all(responses.tokens[eos] == world.eos_id)
    assert np.all(responses.tokens[pad] == world.pad_id)
    assert (world.bos_id, world.sep_id) == (33, 34)


def tiny_policy(seed=0, scale=3.0):
    config = PolicyConfig(
        vocab_size=3, prompt_length=2, max_len=3, eos_base=1.0, eos_slope=0.5, embedding_dim=4, hidden_dim=5
    )
    policy = GRUPolicy.initialise(config, torch.Generator().manual_seed(seed))
    with torch.no_grad():
        policy.net.head.weight.mul_(scale)  # sharpen, so the distribution is far from uniform
        policy.net.head.bias.mul_(scale)
    return policy


def all_responses(v=3, max_len=3):
    """Every legal response of a vocab-v world: 1..max_len content tokens then EOS, padded."""
    vocab = Vocab(v)
    rows, lengths = [], []
    for n in range(1, max_len + 1):
        for content in itertools.product(range(v), repeat=n):
            rows.append(list(content) + [vocab.eos] + [vocab.pad] * (max_len - n))
            lengths.append(n + 1)
    return torch.tensor(rows), torch.tensor(lengths)


def test_logprobs_of_all_responses_sum_to_one():
    """Banned EOS at position 0 is renormalised and the forced EOS scores 0, so the
    probabilities of all legal responses sum to 1 exactly."""
    policy = tiny_policy()
    tokens, lengths = all_responses()
    assert tokens.shape[0] == 3 + 9 + 27
    for prompt in ([0, 1], [2, 2]):
        prompts = torch.tensor([prompt] * tokens.shape[0])
        with torch.no_grad():
            logp = policy.sequence_logprobs(prompts, tokens, lengths).double()
        assert float(logp.exp().sum()) == pytest.approx(1.0, abs=1e-5)
    # an EOS in first position is impossible
    bad = torch.tensor([[Vocab(3).eos, 6, 6, 6]])
    with torch.no_grad():
        assert policy.sequence_logprobs(torch.tensor([[0, 1]]), bad, torch.tensor([1])).item() == -math.inf


def test_sampling_frequencies_match_logprobs():
    policy = tiny_policy(seed=1)
    tokens, lengths = all_responses()
    prompt = torch.tensor([[1, 0]])
    with torch.no_grad():
        probs = policy.sequence_logprobs(prompt.expand(tokens.shape[0], 2), tokens, lengths).double().exp().numpy()
    n = 40000
    sampled, sampled_lengths = policy.sample(prompt, torch.Generator().manual_seed(0), n=n)
    assert sampled.shape == (n, 4)
    index = {(tuple(row.tolist()), int(length)): i for i, (row, length) in enumerate(zip(tokens, lengths))}
    counts = np.zeros(len(index))
    for row, length in zip(sampled.tolist(), sampled_lengths.tolist()):
        counts[index[(tuple(row), length)]] += 1  # KeyError = an illegal response
    freq = counts / n
    tolerance = 5 * np.sqrt(probs * (1 - probs) / n) + 1e-3
    assert np.all(np.abs(freq - probs) < tolerance), np.c_[freq, probs]


def test_world_logprobs_match_policy_logprobs(world):
    rng = np.random.default_rng(2)
    prompts = world.draw_prompts(200, rng)
    responses = world.sample(world.initial_policy, prompts, 4, rng)
    batched = world.logprobs(world.initial_policy, prompts, responses)
    assert batched.shape == (200, 4) and batched.dtype == np.float64
    with torch.no_grad():
        direct = world.initial_policy.sequence_logprobs(
            torch.as_tensor(np.repeat(prompts, 4, axis=0)),
            torch.as_tensor(responses.tokens.reshape(800, 13)),
            torch.as_tensor(responses.lengths.reshape(800)),
        )
    np.testing.assert_allclose(batched.reshape(-1), direct.double().numpy(), atol=1e-4)
    assert np.all(batched < 0) and np.all(np.isfinite(batched))


def test_foreign_policy_is_refused(world):
    with pytest.raises(TypeError):
        world.sample(object(), world.draw_prompts(2, np.random.default_rng(0)), 2, np.random.default_rng(0))


# ------------------------------------------------------------------ annotator


def pool(world, m=400, n=4, seed=0):
    rng = np.random.default_rng(seed)
    prompts = world.draw_prompts(m, rng)
    return prompts, world.sample(world.reference_policy, prompts, n, rng)


def test_noiseless_annotator_is_exact_gold_and_breaks_ties_by_coin():
    world = build({**BARE, "tau": 0.0})
    prompts, responses = pool(world)
    gold = world.gold_rewards(prompts, responses)
    pairs = Pairs(np.arange(400), np.zeros(400), np.ones(400))
    labels = world.annotate(prompts, responses, pairs, np.random.default_rng(0))
    assert isinstance(labels, Labels)
    distinct = gold[:, 0] != gold[:, 1]
    np.testing.assert_array_equal(labels.prefer_a[distinct], (gold[:, 0] > gold[:, 1])[distinct])
    assert labels.gold_agrees.all()
    ties = Pairs(np.arange(400), np.zeros(400), np.zeros(400))  # a response against itself
    tie_labels = world.annotate(prompts, responses, ties, np.random.default_rng(1))
    assert 0.4 < tie_labels.prefer_a.mean() < 0.6 and tie_labels.gold_agrees.all()


def test_bradley_terry_annotator_probabilities():
    world = build(BARE)  # tau = 0.3
    prompts, responses = pool(world, m=1, n=2, seed=3)
    gold = world.gold_rewards(prompts, responses)[0]
    k = 20000
    pairs = Pairs(np.zeros(k), np.zeros(k), np.ones(k))
    labels = world.annotate(prompts, responses, pairs, np.random.default_rng(0))
    expected = 1.0 / (1.0 + math.exp(-(gold[0] - gold[1]) / 0.3))
    assert labels.prefer_a.mean() == pytest.approx(expected, abs=5 * math.sqrt(expected * (1 - expected) / k) + 1e-3)
    np.testing.assert_array_equal(labels.gold_agrees, labels.prefer_a == (gold[0] > gold[1]))
    # deterministic for a fixed Generator seed; empty pairs work
    again = world.annotate(prompts, responses, pairs, np.random.default_rng(0))
    np.testing.assert_array_equal(labels.prefer_a, again.prefer_a)
    assert len(world.annotate(prompts, responses, Pairs.empty(), np.random.default_rng(0)).prefer_a) == 0


# ------------------------------------------------------------------ evaluation and pi_0


def test_evaluate_reference_and_initial_policy(world):
    ref = world.evaluate(world.reference_policy, np.random.default_rng(0))
    for key in ("win_rate", "win_rate_se", "gold_reward", "kl"):
        assert key in ref and math.isfinite(ref[key])
    assert ref["kl"] == 0.0  # log pi_ref - log pi_ref, exactly
    # the reference output is the best of 4 pi_ref samples: a fifth sample beats it about 1/5 of the time
    assert 0.08 < ref["win_rate"] < 0.35
    assert 0.0 < ref["win_rate_se"] < 0.1
    assert ref["gold_reward"] < ref["reference_gold_reward"]
    pi0 = world.evaluate(world.initial_policy, np.random.default_rng(0))
    assert pi0["kl"] > -0.05  # a Monte-Carlo KL is never clearly negative (masking bug symptom)
    assert pi0["kl"] > 0.01  # the offline round moved the policy
    assert pi0 == world.evaluate(world.initial_policy, np.random.default_rng(0))
    assert pi0 != world.evaluate(world.initial_policy, np.random.default_rng(1))


def test_sft_learned_and_pi0_round_ran(world):
    info = world.info
    assert info["sft_loss_last_epoch"] < info["sft_loss_first_epoch"]
    assert info["pi0_pairs"] > 45  # 50 seed prompts, identical pairs dropped
    assert info["pi0_steps"] == 8 * math.ceil(info["pi0_pairs"] / 64)
    assert info["pi0_loss_first"] == pytest.approx(math.log(2), abs=1e-5)  # pi_ref is its own reference
    assert info["pi0_loss_last"] < info["pi0_loss_first"]


def test_dpo_on_world_data_starts_at_log_two(world):
    """world.logprobs and the trainer's forward agree: reference = policy gives loss log 2."""
    rng = np.random.default_rng(5)
    prompts, responses = pool(world, m=64, n=2, seed=5)
    logp = world.logprobs(world.initial_policy, prompts, responses)
    keep = np.flatnonzero(responses.distinct_mask()[:, 1])
    data = PreferenceData(
        prompts[keep], responses.tokens[keep, 0], responses.lengths[keep, 0],
        responses.tokens[keep, 1], responses.lengths[keep, 1], logp[keep, 0], logp[keep, 1],
    )
    result = NativeDPOTrainer({"steps": 3}).train(policy=world.initial_policy, data=data, rng=rng)
    assert result.loss_first == pytest.approx(math.log(2), abs=1e-5)
    assert result.steps == 3


# ------------------------------------------------------------------ determinism and the global RNG


def test_same_seed_same_world_and_outputs(world):
    again = build()
    assert_same_world(world, again)
    prompts = world.draw_prompts(50, np.random.default_rng(9))
    np.testing.assert_array_equal(prompts, again.draw_prompts(50, np.random.default_rng(9)))
    a = world.sample(world.initial_policy, prompts, 8, np.random.default_rng(4))
    b = again.sample(again.initial_policy, prompts, 8, np.random.default_rng(4))
    np.testing.assert_array_equal(a.tokens, b.tokens)
    np.testing.assert_array_equal(a.lengths, b.lengths)
    c = world.sample(world.initial_policy, prompts, 8, np.random.default_rng(5))
    assert not np.array_equal(a.tokens, c.tokens)
    assert world.evaluate(world.initial_policy, np.random.default_rng(1)) == again.evaluate(
        again.initial_policy, np.random.default_rng(1)
    )


def test_different_seed_different_world(world):
    other = build(seed=1)
    assert not np.array_equal(world.tables.transition, other.tables.transition)
    assert not np.array_equal(world.eval_prompts, other.eval_prompts)
    assert not torch.equal(state(world.reference_policy)["head.weight"], state(other.reference_policy)["head.weight"])


def test_global_rngs_are_untouched(world):
    torch_state = torch.get_rng_state()
    np_state = np.random.get_state()[1].copy()
    fresh = build({**SMALL, "sft_samples": 500, "seed_prompts": 20}, seed=7)
    rng = np.random.default_rng(0)
    prompts = world.draw_prompts(10, rng)
    responses = world.sample(world.initial_policy, prompts, 2, rng)
    world.annotate(prompts, responses, Pairs([0], [0], [1]), rng)
    world.evaluate(world.initial_policy, rng)
    fresh.evaluate(fresh.initial_policy, rng)
    assert torch.equal(torch.get_rng_state(), torch_state)
    np.testing.assert_array_equal(np.random.get_state()[1], np_state)


# ------------------------------------------------------------------ cache


def cache_files(root: Path) -> list[Path]:
    return sorted((root / "worlds").glob("*")) if (root / "worlds").exists() else []


def test_cache_round_trip_is_bitwise_identical(world, tmp_path, monkeypatch):
    monkeypatch.delenv("HARNESS_NO_CACHE", raising=False)
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path))
    first = build()
    assert first.info["from_cache"] is False
    files = cache_files(tmp_path)
    assert len(files) == 1 and files[0].suffix == ".safetensors"  # no temp file left behind
    second = build()
    assert second.info["from_cache"] is True
    assert second.info["pi0_pairs"] == world.info["pi0_pairs"]
    assert_same_world(world, second)
    for policy_name in ("reference_policy", "initial_policy"):
        assert world.evaluate(getattr(world, policy_name), np.random.default_rng(3)) == second.evaluate(
            getattr(second, policy_name), np.random.default_rng(3)
        )
    # other options or another seed use other files
    build({**BARE, "tau": 0.5})
    assert len(cache_files(tmp_path)) == 2


@pytest.mark.parametrize("damage", ["garbage", "truncate", "wrong-shape"])
def test_corrupt_cache_file_is_rebuilt(world, tmp_path, monkeypatch, damage):
    monkeypatch.delenv("HARNESS_NO_CACHE", raising=False)
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path))
    build()
    (path,) = cache_files(tmp_path)
    if damage == "garbage":
        path.write_bytes(b"not a safetensors file")
    elif damage == "truncate":
        path.write_bytes(path.read_bytes()[:1000])
    else:
        from safetensors.torch import load_file, save_file

        tensors = load_file(str(path))
        tensors["eval_prompts"] = tensors["eval_prompts"][:5]
        save_file(tensors, str(path), metadata={"format": "synthetic-world-1"})
    with pytest.warns(RuntimeWarning, match="rebuilding"):
        rebuilt = build()
    assert rebuilt.info["from_cache"] is False
    assert_same_world(world, rebuilt)
    assert build().info["from_cache"] is True  # the rewritten file is good


def test_no_cache_env_disables_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("HARNESS_NO_CACHE", "1")
    build(BARE)
    assert cache_files(tmp_path) == []
