"""AlpacaEval files and win-rate metrics of the hf testbed (testbed option ``alpaca_dir``, extra ``[alpaca]``)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from harness.errors import UsageError
from harness.interfaces import Labels
from harness.rng import stream
from plugins.testbeds.hf import alpaca
from tests.extras import skip_unless_extra
from tests.hf_tiny import tiny_paths, tiny_world

skip_unless_extra("hf")

pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")

KEYS = {"instruction", "output", "generator"}


def _eval_rows():
    return [json.loads(line) for line in tiny_paths().eval.read_text().splitlines()]


def test_evaluation_pairs_write_alpaca_eval_files(tmp_path):
    world = tiny_world(alpaca_dir=str(tmp_path / "alpaca"), alpaca_generator="tiny")
    prompts, responses = world.evaluation_pairs(world.initial_policy, stream(7, 2, "evaluation-pairs"))
    folder = tmp_path / "alpaca" / "iteration-2"
    model = json.loads((folder / "model_outputs.json").read_text(encoding="utf-8"))
    reference = json.loads((folder / "reference_outputs.json").read_text(encoding="utf-8"))
    rows = _eval_rows()
    assert isinstance(model, list) and len(model) == len(reference) == len(rows) == 15
    assert all(set(r) == KEYS for r in model + reference)
    assert [r["instruction"] for r in model] == [r["instruction"] for r in reference] == [r["prompt"] for r in rows]
    assert [r["output"] for r in reference] == [r["output"] for r in rows]
    assert {r["generator"] for r in model} == {"tiny-iteration-2"} and {r["generator"] for r in reference} == {"reference"}
    # the policy's outputs are the greedy responses the evaluator compares, as text
    _, texts = world.texts(prompts, responses)
    assert [r["output"] for r in model] == [t[0] for t in texts]
    assert world.alpaca_exports == [folder]


def test_no_alpaca_dir_no_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    world = tiny_world()
    world.evaluation_pairs(world.initial_policy, stream(0, 0, "evaluation-pairs"))
    assert world.alpaca_exports == [] and list(tmp_path.iterdir()) == []


def test_directory_template_and_fallback_numbering(tmp_path):
    assert alpaca.export_dir(str(tmp_path / "s{seed}/i{iteration}"), iteration=3, seed=11) == tmp_path / "s11" / "i3"
    assert alpaca.export_dir(str(tmp_path / "run"), iteration=0, seed=1) == tmp_path / "run" / "iteration-0"
    with pytest.raises(UsageError, match="alpaca_dir"):
        alpaca.export_dir(str(tmp_path / "{run}"), iteration=0, seed=0)
    # a Generator that is not the loop's evaluation stream: numbered by evaluation count
    world = tiny_world(alpaca_dir=str(tmp_path / "w{seed}-e{iteration}"))
    world.evaluation_pairs(world.initial_policy, np.random.default_rng(0))
    world.evaluation_pairs(world.initial_policy, np.random.default_rng(0))
    assert world.alpaca_exports == [tmp_path / "w0-e0", tmp_path / "w0-e1"]


def test_files_are_utf8_and_replaced_whole(tmp_path):
    path = alpaca.write_json(tmp_path / "a" / "model_outputs.json", alpaca.records(["héllo"], ["wörld ✓"], "g"))
    assert json.loads(path.read_text(encoding="utf-8")) == [{"instruction": "héllo", "output": "wörld ✓", "generator": "g"}]
    alpaca.write_json(path, [])
    assert json.loads(path.read_text()) == [] and [p.name for p in path.parent.iterdir()] == ["model_outputs.json"]
    with pytest.raises(ValueError):
        alpaca.records(["a", "b"], ["x"], "g")


def test_preference_encoding():
    prefs = alpaca.preferences(np.array([True, False, True, False]), np.array([False, False, True, True]))
    np.testing.assert_array_equal(prefs, [2.0, 1.0, 1.5, 1.5])
    np.testing.assert_array_equal(alpaca.preferences(np.array([True, False])), [2.0, 1.0])


class StandInMetrics:
    """Stand-in for ``alpaca_eval.metrics`` (NOT alpaca-eval): get_winrate with AlpacaEval's formula."""

    calls = 0

    @classmethod
    def get_winrate(cls, annotations):
        cls.calls += 1
        p = np.array([a["preference"] for a in annotations]) - 1.0
        return {"win_rate": p.mean() * 100, "standard_error": p.std(ddof=1) / np.sqrt(len(p)) * 100,
                "n_draws": int((p == 0.5).sum())}


def test_evaluation_report_metrics_and_annotations(tmp_path, monkeypatch):
    world = tiny_world(alpaca_dir=str(tmp_path / "{iteration}"))
    prompts, responses = world.evaluation_pairs(world.initial_policy, stream(0, 1, "evaluation-pairs"))
    prefer = np.arange(15) % 3 == 0
    tie = np.arange(15) % 5 == 0
    monkeypatch.setattr(alpaca, "import_metrics", lambda: StandInMetrics)
    metrics = world.evaluation_report(iteration=1, seed=0, prompts=prompts, responses=responses,
                                      labels=Labels(prefer_a=prefer, tie=tie), annotator="reward_model")
    wins = np.where(tie, 0.5, prefer.astype(float))
    assert metrics["alpaca_win_rate"] == pytest.approx(100 * wins.mean())
    assert metrics["alpaca_win_rate_se"] == pytest.approx(100 * wins.std(ddof=1) / np.sqrt(15))
    assert metrics["alpaca_n_draws"] == tie.sum()
    notes = json.loads((tmp_path / "1" / "annotations.json").read_text())
    assert len(notes) == 15 and notes[0]["generator_1"] == "reference" and notes[0]["annotator"] == "reward_model"
    assert [n["preference"] for n in notes] == list(alpaca.preferences(prefer, tie))
    assert notes[1]["output_1"] == _eval_rows()[1]["output"]


def test_without_alpaca_eval_the_metrics_are_left_out(monkeypatch):
    monkeypatch.setattr(alpaca, "import_metrics", lambda: None)
    assert alpaca.winrate_metrics(np.array([2.0, 1.0])) == {}
    assert alpaca.winrate_metrics(np.array([]), StandInMetrics) == {}


def test_metrics_with_the_real_alpaca_eval():
    skip_unless_extra("alpaca")
    assert alpaca.import_metrics() is not None, alpaca.unavailable_reason()
    prefs = np.array([2, 2, 1, 1.5, 2, 1, 1, 2], dtype=float)
    metrics = alpaca.winrate_metrics(prefs)
    wins = prefs - 1
    assert metrics["alpaca_win_rate"] == pytest.approx(100 * wins.mean())
    assert metrics["alpaca_win_rate_se"] == pytest.approx(100 * wins.std(ddof=1) / np.sqrt(len(wins)))
    assert metrics["alpaca_n_draws"] == 1


def test_alpaca_eval_reads_the_exported_files(tmp_path):
    skip_unless_extra("alpaca")
    from alpaca_eval import utils

    world = tiny_world(alpaca_dir=str(tmp_path))
    world.evaluation_pairs(world.initial_policy, stream(0, 0, "evaluation-pairs"))
    for name in ("model_outputs.json", "reference_outputs.json"):
        frame = utils.load_or_convert_to_dataframe(str(tmp_path / "iteration-0" / name))
        assert set(frame.columns) >= KEYS and len(frame) == 15


def test_a_run_exports_every_evaluation(cli, db_path, tmp_path, monkeypatch):
    skip_unless_extra("hf")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    paths = tiny_paths()
    options = {
        "testbed.model": paths.policy, "testbed.initial_model": paths.initial, "testbed.prompts": paths.prompts,
        "testbed.eval_prompts": paths.eval, "testbed.max_new_tokens": 16, "testbed.threads": 1,
        "testbed.alpaca_dir": tmp_path / "alpaca-{seed}" / "{iteration}",
        "annotator.model": paths.reward, "evaluator.model": paths.reward,
        "trainer.lr": 1e-3, "trainer.batch_size": 4, "trainer.grad_accum": 1,
    }
    args = [arg for key, value in options.items() for arg in ("-o", f"{key}={value}")]
    result = cli("run", "--testbed", "hf", "--trainer", "trl", "--iterations", "1", "--budget", "4",
                 "--responses", "2", "--seed", "5", *args, "--json")
    assert result.exit_code == 0, result.output
    for iteration in (0, 1):
        folder = tmp_path / "alpaca-5" / str(iteration)
        model = json.loads((folder / "model_outputs.json").read_text())
        assert len(model) == 15 and model[0]["generator"] == f"pairsel-policy-iteration-{iteration}"
