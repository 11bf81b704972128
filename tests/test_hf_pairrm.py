"""The ``pairrm`` judge: a STAND-IN blender for the adapter; real llm-blender code (tiny random weights) where installed.

The real PairRM weights are on the Hugging Face Hub only and cannot be fetched
here, so nothing in this file checks PairRM's actual judgements. What runs:

* always: the adapter against :class:`StandInBlender` (NOT llm-blender: an
  object with ``Blender.compare``'s signature, injected through
  ``plugins.judges.pairrm.load_ranker``), option and error handling;
* with llm-blender installed (the ``[pairrm]`` extra; skipped otherwise): the
  transformers-5 import shim, and llm-blender's own ``DebertaV2PairRM`` and
  ``Blender.loadranker``/``Blender.compare`` loading tiny random checkpoints
  from local directories.
"""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import torch

from harness.errors import UsageError
from harness.interfaces import Pairs
from plugins.judges import pairrm
from plugins.judges.pairrm import PairRMJudge
from tests.extras import skip_unless_extra
from tests.hf_tiny import tiny_world

skip_unless_extra("hf")


def _need_llm_blender():
    skip_unless_extra("pairrm")


@pytest.fixture(scope="module")
def world():
    return tiny_world()


@pytest.fixture(scope="module")
def pool(world):
    rng = np.random.default_rng(0)
    prompts = world.draw_prompts(6, rng)
    responses = world.sample(world.initial_policy, prompts, 3, rng)
    return prompts, responses


@pytest.fixture(scope="module")
def text_pool(world):
    """Six prompts with three different hand-written responses each (the tiny policy often repeats itself)."""
    from harness.interfaces import Responses

    texts = [["apple", "APPLE!", "elppa"], ["cat", "a cat", "tac tac"], ["moon", "MOON", "noom?"],
             ["sun", "s u n", "nus"], ["tree", "TREE", "eert"], ["owl", "OWL owl", "lwo"]]
    eos = world.tokenizer.eos_token_id
    encoded = [[world.tokenizer(t, add_special_tokens=False)["input_ids"] + [eos] for t in row] for row in texts]
    width = max(len(x) for row in encoded for x in row)
    tokens = np.full((6, 3, width), world.pad_id, dtype=np.int64)
    lengths = np.zeros((6, 3), dtype=np.int64)
    for i, row in enumerate(encoded):
        for j, ids in enumerate(row):
            tokens[i, j, : len(ids)] = ids
            lengths[i, j] = len(ids)
    return np.arange(6, dtype=np.int64)[:, None], Responses(tokens=tokens, lengths=lengths)


@pytest.fixture
def hf_layout_dir(tmp_path):
    """A directory that looks like llm-blender/PairRM-hf (config only: enough for option checks)."""
    folder = tmp_path / "pairrm-hf"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"architectures": ["DebertaV2PairRM"], "model_type": "deberta-v2"}))
    return folder


class StandInBlender:
    """Stand-in for ``llm_blender.Blender`` (NOT PairRM): ``compare`` prefers the longer response, ties equal lengths."""

    def __init__(self):
        self.calls = []

    def compare(self, inputs, candidates_A, candidates_B, instructions=None, batch_size=4, return_logits=False,
                mode="[A,B]+[B,A]", disable_tqdm=False):
        assert len(inputs) == len(candidates_A) == len(candidates_B)
        self.calls.append({"inputs": list(inputs), "A": list(candidates_A), "B": list(candidates_B),
                           "batch_size": batch_size, "mode": mode, "return_logits": return_logits})
        logits = np.array([len(a) - len(b) for a, b in zip(candidates_A, candidates_B)], dtype=float)
        return logits if return_logits else logits > 0


@pytest.fixture
def standin(monkeypatch):
    blender = StandInBlender()
    monkeypatch.setattr(pairrm, "load_ranker", lambda settings: blender)
    return blender


# ------------------------------------------------------------------ the adapter, with a stand-in


def test_compare_follows_the_blender_logits(world, text_pool, standin, hf_layout_dir):
    prompts, responses = text_pool
    judge = PairRMJudge({"model": str(hf_layout_dir), "batch_size": 2})
    pairs = Pairs(prompt=np.arange(6), a=np.zeros(6), b=np.full(6, 2))
    labels = judge.compare(world=world, prompts=prompts, responses=responses, pairs=pairs, rng=None)
    prompt_texts, response_texts = world.texts(prompts, responses)
    a_len = np.array([len(response_texts[i][0]) for i in range(6)])
    b_len = np.array([len(response_texts[i][2]) for i in range(6)])
    same = np.array([response_texts[i][0] == response_texts[i][2] for i in range(6)])
    np.testing.assert_array_equal(labels.prefer_a, (a_len > b_len) & ~same)
    np.testing.assert_array_equal(labels.tie, (a_len == b_len) | same)
    (call,) = standin.calls
    assert call["mode"] == "[A,B]+[B,A]" and call["batch_size"] == 2 and call["return_logits"] is True
    assert call["inputs"] == [prompt_texts[i] for i in range(6) if not same[i]]  # instructions as written
    usage = judge.usage()
    assert usage["pairs"] == 6 and usage["comparisons"] == 2 * int((~same).sum()) and usage["identical"] == same.sum()


def test_identical_responses_tie_without_asking(world, pool, standin, hf_layout_dir):
    prompts, responses = pool
    judge = PairRMJudge({"model": str(hf_layout_dir), "mode": "[A,B]"})
    labels = judge.compare(world=world, prompts=prompts, responses=responses,
                           pairs=Pairs(prompt=[0, 1], a=[1, 2], b=[1, 2]), rng=None)
    assert labels.tie.all() and not labels.prefer_a.any() and standin.calls == []
    empty = judge.compare(world=world, prompts=prompts, responses=responses, pairs=Pairs.empty(), rng=None)
    assert len(empty.prefer_a) == 0
    judge.compare(world=world, prompts=prompts, responses=responses, pairs=Pairs(prompt=[0], a=[0], b=[1]), rng=None)
    assert judge.usage()["comparisons"] in (0, 1)  # one order only in [A,B] mode


def test_score_is_not_supported(world, pool, hf_layout_dir):
    prompts, responses = pool
    with pytest.raises(UsageError, match="pairwise only"):
        PairRMJudge({"model": str(hf_layout_dir)}).score(world=world, prompts=prompts, responses=responses, rng=None)


def test_model_option_errors(world, pool, tmp_path):
    prompts, responses = pool
    with pytest.raises(UsageError, match="needs its `model` option.*never downloads"):
        PairRMJudge().compare(world=world, prompts=prompts, responses=responses,
                              pairs=Pairs(prompt=[0], a=[0], b=[1]), rng=None)
    with pytest.raises(UsageError, match="Hugging Face Hub model.*`hf download llm-blender/PairRM`"):
        PairRMJudge({"model": "llm-blender/PairRM"})
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(UsageError, match="neither llm-blender/PairRM"):
        PairRMJudge({"model": str(other)})
    with pytest.raises(UsageError, match="mode"):
        PairRMJudge({"mode": "[B,A]"})


def test_without_llm_blender_the_error_names_the_extra(world, pool, hf_layout_dir, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(pairrm.importlib.util, "find_spec",
                        lambda name, *a: None if name == "llm_blender" else real(name, *a))
    prompts, responses = pool
    judge = PairRMJudge({"model": str(hf_layout_dir)})
    with pytest.raises(UsageError, match=r"not installed: pip install 'pairsel-harness\[pairrm\]'"):
        judge.compare(world=world, prompts=prompts, responses=responses, pairs=Pairs(prompt=[0], a=[0], b=[1]),
                      rng=None)


def test_blender_layout_needs_a_local_backbone(tmp_path):
    _need_llm_blender()
    folder = tmp_path / "pairrm"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"ranker_type": "pairranker", "model_type": "deberta",
                                                     "model_name": "microsoft/deberta-v3-large"}))
    assert pairrm.detect_layout(folder) == "blender"
    with pytest.raises(UsageError, match="backbone=DIR.*deberta-v3-large"):
        pairrm.load_ranker(PairRMJudge({"model": str(folder)}).settings)


def test_registered_as_a_builtin():
    from harness.plugins import load_registry

    assert "pairrm" in load_registry().names("judge")


# ------------------------------------------------------------------ real llm-blender code, tiny random weights


def test_the_shim_lets_llm_blender_import_under_transformers_5():
    _need_llm_blender()
    import transformers.utils.hub as hub
    from huggingface_hub.constants import HF_HUB_CACHE

    module = pairrm.import_llm_blender()
    assert module.__name__ == "llm_blender" and hasattr(module, "Blender")
    assert hub.TRANSFORMERS_CACHE == HF_HUB_CACHE or isinstance(hub.TRANSFORMERS_CACHE, str)


def _char_tokenizer_with_prefixes():
    """The tiny character tokenizer made DeBERTa-like: ``<bos> text <eos>`` (CLS/SEP) and PairRM's prefix tokens."""
    from tokenizers.processors import TemplateProcessing

    from plugins.testbeds.hf.tiny import build_tokenizer

    tokenizer = build_tokenizer()
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    tokenizer.backend_tokenizer.post_processor = TemplateProcessing(
        single="<bos> $A <eos>", pair="<bos> $A <eos> $B <eos>", special_tokens=[("<bos>", bos), ("<eos>", eos)])
    tokenizer.cls_token = "<bos>"
    tokenizer.add_tokens([pairrm.SOURCE_PREFIX, "<|candidate|>", pairrm.CAND1_PREFIX, pairrm.CAND2_PREFIX],
                         special_tokens=True)
    tokenizer.sep_token = "<eos>"
    return tokenizer


def test_pairrm_hf_layout_with_llm_blenders_own_model(world, text_pool, tmp_path):
    _need_llm_blender()
    pairrm.import_llm_blender()
    from llm_blender.pair_ranker.pairrm import DebertaV2PairRM
    from transformers import DebertaV2Config

    tokenizer = _char_tokenizer_with_prefixes()
    ids = {name: tokenizer.convert_tokens_to_ids(token) for name, token in
           [("source_prefix_id", pairrm.SOURCE_PREFIX), ("cand_prefix_id", "<|candidate|>"),
            ("cand1_prefix_id", pairrm.CAND1_PREFIX), ("cand2_prefix_id", pairrm.CAND2_PREFIX)]}
    torch.manual_seed(0)
    config = DebertaV2Config(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                             intermediate_size=64, max_position_embeddings=2048, n_tasks=1, drop_out=0.0,
                             sep_token_id=tokenizer.sep_token_id, pad_token_id=tokenizer.pad_token_id,
                             architectures=["DebertaV2PairRM"], **ids)
    folder = tmp_path / "pairrm-hf"
    DebertaV2PairRM(config).eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)

    prompts, responses = text_pool
    pairs = Pairs(prompt=np.arange(6), a=np.zeros(6), b=np.ones(6))
    swapped = Pairs(prompt=pairs.prompt, a=pairs.b, b=pairs.a)
    judge = PairRMJudge({"model": str(folder), "batch_size": 4})
    labels = judge.compare(world=world, prompts=prompts, responses=responses, pairs=pairs, rng=None)
    again = judge.compare(world=world, prompts=prompts, responses=responses, pairs=swapped, rng=None)
    decided = ~labels.tie
    assert decided.any()
    # both orders are read: swapping a and b flips every verdict exactly
    np.testing.assert_array_equal(again.tie, labels.tie)
    np.testing.assert_array_equal(again.prefer_a[decided], ~labels.prefer_a[decided])
    # the same pairs, batched differently, give the same verdicts
    one = PairRMJudge({"model": str(folder), "batch_size": 1}).compare(world=world, prompts=prompts,
                                                                         responses=responses, pairs=pairs, rng=None)
    np.testing.assert_array_equal(one.prefer_a, labels.prefer_a)


def test_pairrm_blender_layout_with_llm_blenders_loader(world, text_pool, tmp_path):
    """llm-blender/PairRM's layout: a ranker config + checkpoint, and a local backbone (tiny, random)."""
    _need_llm_blender()
    pairrm.import_llm_blender()
    from llm_blender.blender.blender_utils import load_ranker
    from llm_blender.pair_ranker.config import RankerConfig
    from safetensors.torch import save_model
    from transformers import DebertaV2Config, DebertaV2Model

    backbone = tmp_path / "deberta-tiny"
    torch.manual_seed(1)
    tokenizer = _char_tokenizer_with_prefixes()
    DebertaV2Model(DebertaV2Config(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1,
                                   num_attention_heads=2, intermediate_size=64,
                                   pad_token_id=tokenizer.pad_token_id)).save_pretrained(backbone)
    tokenizer.save_pretrained(backbone)
    config = RankerConfig(ranker_type="pairranker", model_type="deberta", model_name=str(backbone),
                          source_maxlength=64, candidate_maxlength=64, n_tasks=1, load_checkpoint=None,
                          device="cpu")
    ranker, _, _ = load_ranker(config)
    folder = tmp_path / "pairrm"
    folder.mkdir()
    save_model(ranker, str(folder / "model.safetensors"))
    saved = {k: v for k, v in config.to_dict().items() if isinstance(v, (str, int, float, bool, type(None)))}
    saved["model_name"] = "microsoft/deberta-v3-large"  # as the hub checkpoint names it
    (folder / "config.json").write_text(json.dumps(saved))

    prompts, responses = text_pool
    pairs = Pairs(prompt=np.arange(6), a=np.zeros(6), b=np.ones(6))
    judge = PairRMJudge({"model": str(folder), "backbone": str(backbone)})
    labels = judge.compare(world=world, prompts=prompts, responses=responses, pairs=pairs, rng=None)
    swapped = judge.compare(world=world, prompts=prompts, responses=responses,
                            pairs=Pairs(prompt=pairs.prompt, a=pairs.b, b=pairs.a), rng=None)
    decided = ~labels.tie
    assert decided.any()
    np.testing.assert_array_equal(swapped.prefer_a[decided], ~labels.prefer_a[decided])


def test_batch_encode_plus_is_restored_as_the_tokenizer_call():
    from plugins.testbeds.hf.tiny import build_tokenizer

    tokenizer = build_tokenizer()
    pairrm.restore_batch_encode_plus(tokenizer)
    got = tokenizer.batch_encode_plus(["ab", "c"], max_length=4, padding="max_length", truncation=True,
                                      return_tensors="pt")
    expected = tokenizer(["ab", "c"], max_length=4, padding="max_length", truncation=True, return_tensors="pt")
    assert torch.equal(got["input_ids"], expected["input_ids"])
    assert torch.equal(got["attention_mask"], expected["attention_mask"])
