"""The reward_model and function judges on the tiny offline models."""

from __future__ import annotations

import sys
import textwrap

import numpy as np
import pytest
import torch

from harness.errors import UsageError
from harness.interfaces import Judge, Pairs, Responses
from plugins.judges.function import FunctionJudge, load_callable
from plugins.judges.reward_model import RewardModelJudge
from tests.extras import skip_unless_extra
from tests.hf_tiny import tiny_paths, tiny_world

skip_unless_extra("hf")


@pytest.fixture(scope="module")
def world():
    return tiny_world()


@pytest.fixture(scope="module")
def pool(world):
    rng = np.random.default_rng(0)
    prompts = world.draw_prompts(6, rng)
    return prompts, world.sample(world.initial_policy, prompts, 3, rng)


@pytest.fixture(scope="module")
def judge():
    return RewardModelJudge({"model": str(tiny_paths().reward), "batch_size": 4})


def _direct_score(prompt: str, response: str) -> float:
    """The reward model run by hand on one chat-templated text, no batching."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = tiny_paths().reward
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModelForSequenceClassification.from_pretrained(path, local_files_only=True).eval()
    text = tokenizer.apply_chat_template([{"role": "user", "content": prompt},
                                          {"role": "assistant", "content": response}], tokenize=False)
    ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        return float(model(input_ids=ids).logits[0, 0])


# ------------------------------------------------------------------ reward_model


def test_reward_model_scores_every_response(world, pool, judge):
    prompts, responses = pool
    scores = judge.score(world=world, prompts=prompts, responses=responses, rng=np.random.default_rng(0))
    assert scores.shape == (6, 3) and scores.dtype == np.float64 and np.isfinite(scores).all()
    prompt_texts, response_texts = world.texts(prompts, responses)
    for i, j in ((0, 0), (3, 2), (5, 1)):
        assert scores[i, j] == pytest.approx(_direct_score(prompt_texts[i], response_texts[i][j]), abs=1e-5)
    assert judge.usage() == {"texts_scored": 18}


def test_reward_model_batching_does_not_change_scores(world, pool, judge):
    prompts, responses = pool
    one = RewardModelJudge({"model": str(tiny_paths().reward), "batch_size": 1})
    a = judge.score(world=world, prompts=prompts, responses=responses, rng=None)
    b = one.score(world=world, prompts=prompts, responses=responses, rng=None)
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_reward_model_compare_is_the_base_verdict_on_paired_responses_only(world, pool, judge):
    prompts, responses = pool
    pairs = Pairs([0, 1, 2, 4, 5], [0, 2, 1, 0, 1], [1, 0, 2, 2, 1 - 1])
    fresh = RewardModelJudge({"model": str(tiny_paths().reward)})
    labels = fresh.compare(world=world, prompts=prompts, responses=responses, pairs=pairs, rng=None)
    assert fresh.usage()["texts_scored"] == 10  # 2 per pair, not all 18 responses
    base = Judge.compare(judge, world=world, prompts=prompts, responses=responses, pairs=pairs, rng=None)
    np.testing.assert_array_equal(labels.prefer_a, base.prefer_a)
    np.testing.assert_array_equal(labels.tie, base.tie)


def test_reward_model_identical_texts_tie(world, pool, judge):
    prompts, responses = pool
    same = Responses(np.repeat(responses.tokens[:, :1], 2, axis=1), np.repeat(responses.lengths[:, :1], 2, axis=1))
    labels = judge.compare(world=world, prompts=prompts, responses=same, pairs=Pairs([0, 1], [0, 0], [1, 1]), rng=None)
    assert labels.tie.all()


def test_reward_model_without_chat_template_uses_text_pairs(world, pool):
    prompts, responses = pool
    plain = RewardModelJudge({"model": str(tiny_paths().reward), "use_chat_template": False})
    scores = plain.score(world=world, prompts=prompts, responses=responses, rng=None)
    model, tokenizer = plain._load()
    prompt_texts, response_texts = world.texts(prompts, responses)
    ids = torch.tensor([tokenizer(prompt_texts[0], response_texts[0][0])["input_ids"]])
    with torch.no_grad():
        assert scores[0, 0] == pytest.approx(float(model(input_ids=ids).logits[0, 0]), abs=1e-5)


def test_reward_model_truncation_keeps_the_end(world, pool):
    prompts, responses = pool
    short = RewardModelJudge({"model": str(tiny_paths().reward), "max_length": 8})
    model, tokenizer = short._load()
    encoded = short._encode(tokenizer, "a long prompt text", "the response")
    full = RewardModelJudge({"model": str(tiny_paths().reward)})._encode(tokenizer, "a long prompt text", "the response")
    assert len(encoded) == 8 and encoded == full[-8:]


def test_reward_model_scores_evaluation_pairs(world, judge):
    rows, pairs = world.evaluation_pairs(world.initial_policy, np.random.default_rng(0))
    labels = judge.compare(world=world, prompts=rows, responses=pairs,
                           pairs=Pairs(np.arange(len(rows)), np.zeros(len(rows)), np.ones(len(rows))), rng=None)
    assert labels.prefer_a.shape == (15,)


@pytest.mark.parametrize("model, message", [
    ("OpenAssistant/reward-model-deberta-v3-large-v2", "`hf download OpenAssistant/reward-model-deberta-v3-large-v2`"),
    ("/nonexistent/rm", "no such directory"),
])
def test_reward_model_bad_paths_fail_at_construction(model, message):
    with pytest.raises(UsageError, match=message):
        RewardModelJudge({"model": model})


def test_reward_model_without_model_option(world, pool):
    prompts, responses = pool
    judge = RewardModelJudge()  # constructing with defaults works (listing, validation)
    with pytest.raises(UsageError, match="needs its `model` option"):
        judge.score(world=world, prompts=prompts, responses=responses, rng=None)


def test_reward_model_label_index_is_checked(world, pool):
    prompts, responses = pool
    with pytest.raises(UsageError, match="label_index 1"):
        RewardModelJudge({"model": str(tiny_paths().reward), "label_index": 1}).score(
            world=world, prompts=prompts, responses=responses, rng=None)


# ------------------------------------------------------------------ function


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    source = textwrap.dedent("""
        calls = []

        def length(prompts, responses):
            calls.append(len(responses))
            return [float(len(r)) for r in responses]

        def prefer_shorter(prompts, a, b):
            return [1.0 if len(x) < len(y) else 0.0 if len(x) > len(y) else 0.5 for x, y in zip(a, b)]

        def wrong_length(prompts, responses):
            return [1.0]

        def not_numbers(prompts, responses):
            return ["good"] * len(responses)

        def out_of_range(prompts, a, b):
            return [2.0] * len(a)

        NOT_CALLABLE = 3
    """)
    (tmp_path / "pairsel_user_rewards.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    sys.modules.pop("pairsel_user_rewards", None)


def test_function_scores(world, pool, user_module):
    prompts, responses = pool
    judge = FunctionJudge({"callable": "pairsel_user_rewards:length"})
    scores = judge.score(world=world, prompts=prompts, responses=responses, rng=None)
    _, texts = world.texts(prompts, responses)
    np.testing.assert_array_equal(scores, [[len(t) for t in row] for row in texts])
    pairs = Pairs([0, 1], [0, 1], [1, 2])
    labels = judge.compare(world=world, prompts=prompts, responses=responses, pairs=pairs, rng=None)
    base = Judge.compare(judge, world=world, prompts=prompts, responses=responses, pairs=pairs, rng=None)
    np.testing.assert_array_equal(labels.prefer_a, base.prefer_a)
    np.testing.assert_array_equal(labels.tie, base.tie)
    assert sys.modules["pairsel_user_rewards"].calls[-2] == 4  # compare sends only the paired responses


def test_function_compares_pairs_from_a_file(world, pool, user_module):
    prompts, responses = pool
    judge = FunctionJudge({"callable": f"{user_module / 'pairsel_user_rewards.py'}:prefer_shorter", "mode": "compare"})
    pairs = Pairs([0, 1, 2, 3], [0, 1, 2, 0], [1, 2, 0, 0])
    labels = judge.compare(world=world, prompts=prompts, responses=responses, pairs=pairs, rng=None)
    _, texts = world.texts(prompts, responses)
    for k in range(4):
        a, b = texts[pairs.prompt[k]][pairs.a[k]], texts[pairs.prompt[k]][pairs.b[k]]
        assert labels.tie[k] == (len(a) == len(b))
        if not labels.tie[k]:
            assert labels.prefer_a[k] == (len(a) < len(b))
    assert labels.tie[3]
    with pytest.raises(UsageError, match="pairwise preferences only"):
        judge.score(world=world, prompts=prompts, responses=responses, rng=None)


@pytest.mark.parametrize("spec, message", [
    ("no_colon", "MODULE:FUNCTION"),
    ("pairsel_missing_module_xyz:fn", "cannot import module 'pairsel_missing_module_xyz'"),
    ("pairsel_user_rewards:missing", "has no attribute 'missing'.*length"),
    ("pairsel_user_rewards:NOT_CALLABLE", "not callable"),
    ("/nonexistent/file.py:fn", "no such file"),
])
def test_function_import_errors_are_clear(user_module, spec, message):
    with pytest.raises(UsageError, match=message):
        FunctionJudge({"callable": spec})


def test_function_in_a_file_that_fails_to_import(tmp_path):
    broken = tmp_path / "broken.py"
    broken.write_text("raise RuntimeError('boom')\n")
    with pytest.raises(UsageError, match="importing .* failed: RuntimeError: boom"):
        load_callable(f"{broken}:fn")


@pytest.mark.parametrize("spec, mode, message", [
    ("pairsel_user_rewards:wrong_length", "score", "returned 1 values for"),
    ("pairsel_user_rewards:not_numbers", "score", "not numbers"),
    ("pairsel_user_rewards:out_of_range", "compare", "outside \\[0, 1\\]"),
])
def test_function_bad_outputs(world, pool, user_module, spec, mode, message):
    prompts, responses = pool
    judge = FunctionJudge({"callable": spec, "mode": mode})
    with pytest.raises(UsageError, match=message):
        if mode == "score":
            judge.score(world=world, prompts=prompts, responses=responses, rng=None)
        else:
            judge.compare(world=world, prompts=prompts, responses=responses, pairs=Pairs([0], [0], [1]), rng=None)


def test_function_without_callable(world, pool):
    prompts, responses = pool
    with pytest.raises(UsageError, match="needs its `callable` option"):
        FunctionJudge().score(world=world, prompts=prompts, responses=responses, rng=None)


def test_judges_register_through_their_hooks():
    import plugins.judges.function as function_module
    import plugins.judges.reward_model as reward_module
    import plugins.testbeds.hf as testbed_module
    import plugins.trainers.trl as trl_module
    from harness.interfaces import check_component_class

    registered = []
    for module, hook in ((reward_module, "register_judges"), (function_module, "register_judges"),
                         (testbed_module, "register_testbeds"), (trl_module, "register_trainers")):
        getattr(module, hook)(register=registered.append)
    assert [c.name for c in registered] == ["reward_model", "function", "hf", "trl"]
    for cls, kind in zip(registered, ("judge", "judge", "testbed", "trainer")):
        check_component_class(kind, cls)
    assert testbed_module.HFTestbed.default_judges == {"annotator": "reward_model", "evaluator": "reward_model"}
