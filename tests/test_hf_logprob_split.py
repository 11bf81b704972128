"""Log-probs with the LM head on the scored positions only equal the full-logits ones (issue 19, item 6).

:meth:`HFPolicy.sequence_logprobs` runs the backbone, picks the response
positions and applies the head in chunks; ``full_logits=True`` is the old
way (logits of every position). Both must agree to 1e-5 in float32, values
and gradients, on the tiny GPT-2 and on tiny Llama (tied head, SmolLM2's
architecture), Gemma 2 (final logit softcapping) and Cohere (logit scale)
models built in code; a model with an unknown final transform falls back to
the full forward.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from plugins._hf import policy as policy_module
from plugins._hf.policy import HFPolicy, PromptTable
from tests.extras import skip_unless_extra
from tests.hf_tiny import tiny_world

skip_unless_extra("hf")

TOLERANCE = 1e-5
PAD = 0


def _table(vocab: int, n: int = 6, seed: int = 0) -> PromptTable:
    rng = np.random.default_rng(seed)
    ids = tuple(tuple(int(t) for t in rng.integers(1, vocab, size=int(rng.integers(2, 9)))) for _ in range(n))
    return PromptTable(texts=tuple(f"p{i}" for i in range(n)), ids=ids, n_train=n)


def _batch(vocab: int, batch: int, width: int, n_rows: int, seed: int):
    """Rows, responses ``(B, width)`` and lengths in 0..width (a zero-length response included)."""
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, n_rows, size=(batch, 1))
    tokens = rng.integers(1, vocab, size=(batch, width))
    lengths = rng.integers(1, width + 1, size=batch)
    lengths[0] = width
    if batch > 2:
        lengths[-1] = 0
    return rows, tokens, lengths


def _compare(policy: HFPolicy, vocab: int, *, batches=(1, 3, 8), width: int = 12) -> float:
    worst = 0.0
    with torch.no_grad():
        for b in batches:
            rows, tokens, lengths = _batch(vocab, b, width, len(policy.table), seed=b)
            split = policy.sequence_logprobs(rows, tokens, lengths)
            full = policy.sequence_logprobs(rows, tokens, lengths, full_logits=True)
            assert split.dtype == full.dtype == torch.float32 and split.shape == (b,)
            worst = max(worst, float((split - full).abs().max()))
            if b > 2:
                assert float(split[-1]) == 0.0  # a zero-length response scores nothing
    assert worst <= TOLERANCE, worst
    return worst


def _llama(vocab: int = 257, **extra):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                         tie_word_embeddings=True, pad_token_id=PAD, **extra)
    return LlamaForCausalLM(config).eval()


def test_tiny_world_policies_take_the_split_head_and_agree():
    world = tiny_world()
    vocab = int(world.reference_policy.model.config.vocab_size)
    for policy in (world.reference_policy, world.initial_policy):
        _compare(policy, vocab)
        assert policy._split is not None and policy._split[1] is not None  # the split path ran


def test_world_logprobs_equal_the_full_forward():
    world = tiny_world()
    policy = world.initial_policy
    rng = np.random.default_rng(0)
    prompts = world.draw_prompts(6, rng)
    responses = world.sample(policy, prompts, 3, rng)
    got = world.logprobs(policy, prompts, responses)
    m, n, width = responses.tokens.shape
    with torch.no_grad():
        full = policy.sequence_logprobs(np.repeat(prompts[:, 0], n)[:, None], responses.tokens.reshape(m * n, width),
                                        responses.lengths.reshape(m * n), full_logits=True)
    assert np.abs(got - full.double().numpy().reshape(m, n)).max() <= TOLERANCE


@pytest.mark.parametrize("chunk_positions", [1, 3, 1000])
def test_chunking_changes_nothing(monkeypatch, chunk_positions):
    model = _llama()
    policy = HFPolicy(model, None, _table(257), PAD)
    monkeypatch.setattr(policy_module, "LOGIT_CHUNK_BYTES", 4 * 257 * chunk_positions)
    _compare(policy, 257)


def test_gradients_equal_the_full_forward():
    model = _llama()
    policy = HFPolicy(model, None, _table(257), PAD)
    rows, tokens, lengths = _batch(257, 4, 10, len(policy.table), seed=1)
    grads = []
    for full in (False, True):
        model.zero_grad()
        value = policy.sequence_logprobs(rows, tokens, lengths, full_logits=full)
        (value * torch.tensor([1.0, -0.5, 2.0, 0.25])).sum().backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    assert policy._split[1] is not None
    for split_grad, full_grad in zip(*grads):
        assert torch.allclose(split_grad, full_grad, atol=TOLERANCE, rtol=1e-4)


def test_gemma2_softcapping_is_applied():
    from transformers import Gemma2Config, Gemma2ForCausalLM

    torch.manual_seed(0)
    config = Gemma2Config(vocab_size=211, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=64,
                          final_logit_softcapping=0.5, pad_token_id=PAD)  # a small cap, so it matters
    policy = HFPolicy(Gemma2ForCausalLM(config).eval(), None, _table(211), PAD)
    _compare(policy, 211)
    assert policy._split[1] is not None and policy._split[1].post is not None


def test_cohere_logit_scale_is_applied():
    from transformers import CohereConfig, CohereForCausalLM

    torch.manual_seed(0)
    config = CohereConfig(vocab_size=199, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                          logit_scale=3.0, pad_token_id=PAD)
    policy = HFPolicy(CohereForCausalLM(config).eval(), None, _table(199), PAD)
    _compare(policy, 199)
    assert policy._split[1] is not None and policy._split[1].post is not None


def test_an_unknown_final_transform_falls_back_to_the_full_forward():
    from transformers import LlamaForCausalLM

    class Doubled(LlamaForCausalLM):
        def forward(self, *args, **kwargs):
            out = super().forward(*args, **kwargs)
            out.logits = out.logits * 2.0 + 0.1
            return out

    base = _llama()
    model = Doubled(base.config).eval()
    model.load_state_dict(base.state_dict())
    policy = HFPolicy(model, None, _table(257), PAD)
    _compare(policy, 257)
    assert policy._split is not None and policy._split[1] is None  # the probe saw the difference


def test_a_new_model_object_is_probed_again():
    policy = HFPolicy(_llama(), None, _table(257), PAD)
    _compare(policy, 257, batches=(2,))
    first = policy._split
    policy.model = _llama()
    _compare(policy, 257, batches=(2,))
    assert policy._split[0] is policy.model and policy._split is not first
