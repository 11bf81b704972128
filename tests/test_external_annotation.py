"""The external annotator's round trip: export the selected pairs, import labels, resume; every label kept."""

from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import TINY_TESTBED
from tests.extras import skip_unless_extra

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

import label_from_gold  # noqa: E402  (the docs' stand-in for people)

TINY = ["--iterations", "2", "--budget", "80", "-o", "trainer.epochs=2",
        *sum((["-o", o] for o in TINY_TESTBED), [])]


def _rows(db: Path, sql: str, *params):
    with sqlite3.connect(db) as conn:
        return conn.execute(sql, params).fetchall()


def _only_run(db: Path) -> str:
    (run_id,), = _rows(db, "select id from runs order by started_at desc limit 1")
    return run_id


def _to_label(tmp_path: Path, run_id: str, iteration: int) -> Path:
    return tmp_path / "runs" / run_id / f"iteration-{iteration}" / "to-label.jsonl"


def _gold_labels(db: Path, run_id: str, to_label: Path, out: Path, skip: int = 0) -> Path:
    args = [run_id, str(to_label), "--out", str(out), "--db", str(db)] + (["--skip", str(skip)] if skip else [])
    assert label_from_gold.main(args) == 0
    return out


@pytest.fixture
def awaiting(cli, tmp_path, monkeypatch):
    """A tiny run stopped at iteration 1's annotation step."""
    monkeypatch.delenv("HARNESS_RUNS_DIR", raising=False)
    db = tmp_path / "board.db"
    result = cli("run", "--selector", "smallest", "--annotator", "external", "--db", db, *TINY)
    assert result.exit_code == 0, result.output
    return db, _only_run(db), result


def test_the_run_stops_with_the_pairs_exported_and_the_commands_printed(awaiting, tmp_path):
    db, run_id, result = awaiting
    assert _rows(db, "select status from runs") == [("awaiting_labels",)]
    path = _to_label(tmp_path, run_id, 1)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines and all(set(line) == {"pair_id", "prompt", "response_a", "response_b"} for line in lines)
    assert [line["pair_id"] for line in lines] == [f"{run_id}/1/p{k:05d}" for k in range(len(lines))]
    for command in (f"harness label import {run_id}", f"harness run --resume {run_id}", f"harness label status {run_id}"):
        assert command in " ".join(result.output.split())
    # The order shown is randomised per pair and recorded on our side only.
    swapped = [s for (s,) in _rows(db, "select shown_swapped from labels where run_id = ? order by position", run_id)]
    assert len(swapped) == len(lines) and 0 < sum(swapped) < len(swapped)
    assert all(s is None for (s,) in _rows(db, "select label from labels"))
    # No iteration 1 row yet: the run is paused, not finished.
    assert _rows(db, "select max(iteration) from iterations") == [(0,)]


def test_round_trip_gives_the_numbers_of_the_same_labels_given_in_process(awaiting, cli, tmp_path):
    """Gold-reward labels by file, un-swapped on import, reproduce a noiseless gold annotator run exactly."""
    db, run_id, _ = awaiting
    part = _gold_labels(db, run_id, _to_label(tmp_path, run_id, 1), tmp_path / "part.jsonl", skip=3)
    first = cli("label", "import", run_id, part, "--db", db)
    assert first.exit_code == 0 and "3 pair(s) still missing" in first.output
    again = cli("label", "import", run_id, part, "--db", db)
    assert again.exit_code == 0 and "imported 0 label(s)" in again.output
    early = cli("run", "--resume", run_id, "--db", db)
    assert early.exit_code == 2 and "awaits 3 of" in early.output
    assert _rows(db, "select status from runs") == [("awaiting_labels",)]

    for iteration in (1, 2):
        labels = _gold_labels(db, run_id, _to_label(tmp_path, run_id, iteration), tmp_path / f"it{iteration}.jsonl")
        assert cli("label", "import", run_id, labels, "--db", db).exit_code == 0
        resumed = cli("run", "--resume", run_id, "--db", db)
        assert resumed.exit_code == 0, resumed.output
    assert _rows(db, "select status from runs") == [("finished",)]

    inproc = tmp_path / "inproc.db"
    same = cli("run", "--selector", "smallest", "--annotator", "synthetic_gold", "-o", "annotator.noise=0",
               "--db", inproc, *TINY)
    assert same.exit_code == 0, same.output
    external = _rows(db, "select iteration, win_rate, kl, labels from iterations order by iteration")
    assert external == _rows(inproc, "select iteration, win_rate, kl, labels from iterations order by iteration")
    assert _rows(db, "select annotator, count(*) from labels group by annotator") == [("gold-script", 80)]


def test_import_checks_everything_before_writing_anything(awaiting, cli, tmp_path):
    db, run_id, _ = awaiting
    good = f"{run_id}/1/p00000"
    cases = {
        "bad_label.jsonl": (json.dumps({"pair_id": good, "label": "left"}) + "\n", "line 1: label 'left'"),
        "malformed.jsonl": (json.dumps({"pair_id": good, "label": "a"}) + "\n{oops\n", "line 2: not valid JSON"),
        "unknown.jsonl": (json.dumps({"pair_id": f"{run_id}/1/p99999", "label": "a"}) + "\n", "was not handed out"),
        "repeat.csv": (f"pair_id,label\n{good},a\n{good},b\n", "line 3: pair_id"),
        "no_column.csv": (f"pair_id,choice\n{good},a\n", "no label column"),
        "other_run.jsonl": (json.dumps({"pair_id": "r0000000000/1/p00000", "label": "a"}) + "\n", "not for run"),
        "missing_field.jsonl": (json.dumps({"pair_id": good}) + "\n", "line 1: missing label"),
        "empty.jsonl": ("\n", "holds no labels"),
    }
    for name, (content, message) in cases.items():
        path = tmp_path / name
        path.write_text(content)
        result = cli("label", "import", run_id, path, "--db", db)
        assert result.exit_code == 2, (name, result.output)
        assert message in " ".join(result.output.split()), (name, result.output)
    latin = tmp_path / "latin.csv"
    latin.write_bytes(f"pair_id,label\n{good},a\n".encode() + b"\xe9\n")
    result = cli("label", "import", run_id, latin, "--db", db)
    assert result.exit_code == 2 and "line 3 is not UTF-8" in result.output
    assert _rows(db, "select count(label) from labels") == [(0,)]

    first = tmp_path / "first.jsonl"
    first.write_text(json.dumps({"pair_id": good, "label": "a"}) + "\n")
    assert cli("label", "import", run_id, first, "--db", db).exit_code == 0
    changed = tmp_path / "changed.jsonl"
    changed.write_text(json.dumps({"pair_id": good, "label": "b"}) + "\n")
    result = cli("label", "import", run_id, changed, "--db", db)
    assert result.exit_code == 2 and "refusing to change a label" in result.output


def test_status_shows_labelled_and_missing_per_iteration(awaiting, cli, tmp_path):
    db, run_id, _ = awaiting
    part = _gold_labels(db, run_id, _to_label(tmp_path, run_id, 1), tmp_path / "part.jsonl", skip=5)
    cli("label", "import", run_id, part, "--db", db)
    result = cli("label", "status", run_id, "--db", db, "--json")
    data = json.loads(result.stdout)
    (row,) = data["iterations"]
    assert data["status"] == "awaiting_labels"
    assert (row["iteration"], row["requested"], row["labelled"], row["missing"]) == (1, 40, 35, 5)


def test_ties_are_paid_for_and_dropped_from_training(awaiting, cli, tmp_path):
    db, run_id, _ = awaiting
    lines = [json.loads(line) for line in _to_label(tmp_path, run_id, 1).read_text().splitlines()]
    labels = tmp_path / "ties.jsonl"
    labels.write_text("".join(json.dumps({"pair_id": line["pair_id"], "label": "tie" if k < 10 else "a"}) + "\n"
                              for k, line in enumerate(lines)))
    assert cli("label", "import", run_id, labels, "--db", db).exit_code == 0
    result = cli("run", "--resume", run_id, "--db", db)
    assert result.exit_code == 0, result.output
    assert _rows(db, "select labels, ties from iterations where iteration = 1") == [(40, 10)]
    assert _rows(db, "select count(*) from labels where iteration = 1 and label = 'tie'") == [(10,)]


def test_a_damaged_selection_file_stops_the_resume_with_its_name(awaiting, cli, tmp_path):
    db, run_id, _ = awaiting
    labels = _gold_labels(db, run_id, _to_label(tmp_path, run_id, 1), tmp_path / "all.jsonl")
    cli("label", "import", run_id, labels, "--db", db)
    selection = _to_label(tmp_path, run_id, 1).with_name("selection.npz")
    selection.write_bytes(b"not an npz file")
    result = cli("run", "--resume", run_id, "--db", db)
    assert result.exit_code != 0
    assert "selection.npz" in _rows(db, "select error from runs")[0][0]


def test_labelstudio_tasks_and_export_round_trip(awaiting, cli, tmp_path):
    """Tasks for Label Studio, then a project export in Label Studio's format, imported back."""
    db, run_id, _ = awaiting
    tasks_file = tmp_path / "tasks.json"
    result = cli("label", "labelstudio", run_id, "--out", tasks_file, "--db", db)
    assert result.exit_code == 0 and "<Pairwise" in result.stdout
    tasks = json.loads(tasks_file.read_text())
    shown = [json.loads(line) for line in _to_label(tmp_path, run_id, 1).read_text().splitlines()]
    assert [t["data"]["text1"] for t in tasks] == [s["response_a"] for s in shown]
    # What Label Studio exports once people have labelled: left = text1 = response_a.
    exported = []
    for k, task in enumerate(tasks):
        result_item = ({"type": "choices", "value": {"choices": ["tie"]}, "from_name": "tie", "to_name": "prompt"}
                       if k == 0 else
                       {"type": "pairwise", "value": {"selected": "left" if k % 2 else "right"},
                        "from_name": "preference", "to_name": "text1,text2"})
        exported.append({"id": k + 1, "data": task["data"], "annotations": [
            {"id": 1, "result": [], "was_cancelled": True, "completed_by": 7, "updated_at": "2026-01-01T00:00:00Z"},
            {"id": 2, "result": [result_item], "was_cancelled": False, "completed_by": {"id": 3, "email": "ann@lab"},
             "updated_at": "2026-01-02T00:00:00Z"},
        ]})
    export_file = tmp_path / "project-export.json"
    export_file.write_text(json.dumps(exported))
    result = cli("label", "import", run_id, export_file, "--db", db)
    assert result.exit_code == 0, result.output
    swapped = dict(_rows(db, "select position, shown_swapped from labels where run_id = ?", run_id))
    stored = dict(_rows(db, "select position, label from labels where run_id = ?", run_id))
    for k in range(len(tasks)):
        if k == 0:
            assert stored[k] == "tie"
            continue
        seen = "a" if k % 2 else "b"
        assert stored[k] == (seen if not swapped[k] else {"a": "b", "b": "a"}[seen])
    assert {a for (a,) in _rows(db, "select distinct annotator from labels")} == {"ann@lab"}


def test_export_preferences_loads_with_datasets(awaiting, cli, tmp_path):
    skip_unless_extra("hf")
    import datasets

    db, run_id, _ = awaiting
    for iteration in (1, 2):
        labels = _gold_labels(db, run_id, _to_label(tmp_path, run_id, iteration), tmp_path / f"it{iteration}.jsonl")
        cli("label", "import", run_id, labels, "--db", db)
        cli("run", "--resume", run_id, "--db", db)
    jsonl, parquet = tmp_path / "prefs.jsonl", tmp_path / "prefs.parquet"
    assert cli("export", "preferences", run_id, "--out", jsonl, "--db", db).exit_code == 0
    assert cli("export", "preferences", run_id, "--out", parquet, "--format", "parquet", "--db", db).exit_code == 0
    from_json = datasets.load_dataset("json", data_files=str(jsonl), split="train")
    from_parquet = datasets.load_dataset("parquet", data_files=str(parquet), split="train")
    n_untied = _rows(db, "select count(*) from labels where label in ('a', 'b')")[0][0]
    assert len(from_json) == len(from_parquet) == n_untied
    assert {"prompt", "chosen", "rejected"} <= set(from_json.column_names)
    # chosen is the gold-better response of each pair
    world_rows = [json.loads(line) for line in (tmp_path / "it1.jsonl").read_text().splitlines()]
    first = next(r for r in from_json if r["pair_id"] == world_rows[0]["pair_id"])
    shown = json.loads(_to_label(tmp_path, run_id, 1).read_text().splitlines()[0])
    winner = shown["response_a"] if world_rows[0]["label"] == "a" else shown["response_b"]
    assert first["chosen"] == winner and first["rejected"] != winner
    bad = cli("export", "preferences", run_id, "--out", tmp_path / "x.csv", "--format", "csv", "--db", db)
    assert bad.exit_code == 2 and not (tmp_path / "x.csv").exists()


@pytest.mark.parametrize("annotation", [
    [],
    ["--annotator", "synthetic_gold"],
    ["--annotator", "synthetic_proxy"],
    ["--selector", "map", "-o", "selector.explicit_source=gold"],
])
def test_the_ledger_is_the_count_of_labels_rows(cli, tmp_path, annotation):
    db = tmp_path / "ledger.db"
    args = ["--selector", "smallest", *annotation] if "--selector" not in annotation else annotation
    budget = ["--budget", "400"] if "map" in annotation else []
    result = cli("run", *args, "--db", db, *TINY, *budget)
    assert result.exit_code == 0, result.output
    per_iteration = dict(_rows(db, "select iteration, count(*) from labels group by iteration"))
    charged = dict(_rows(db, "select iteration, labels from iterations where iteration > 0"))
    assert per_iteration == charged and sum(charged.values()) == _rows(db, "select labels_used from runs")[0][0]
    kinds = {k for (k,) in _rows(db, "select distinct kind from labels")}
    assert kinds == ({"score"} if "map" in annotation else {"pair"})
    # every row's text is stored
    assert _rows(db, "select count(*) from labels l left join texts t on t.hash = l.prompt_hash where t.text is null") == [(0,)]


def test_an_evaluator_judge_supplies_the_win_rate(cli, tmp_path):
    db = tmp_path / "eval.db"
    result = cli("run", "--selector", "smallest", "--evaluator", "synthetic_gold", "-o", "evaluator.noise=0",
                 "--db", db, *TINY)
    assert result.exit_code == 0, result.output
    rows = _rows(db, "select win_rate, testbed_win_rate, evaluator_tie_share from iterations order by iteration")
    assert all(0 <= w <= 1 and 0 <= t <= 1 for w, t, _ in rows)
    assert any(abs(w - t) > 1e-9 for w, t, _ in rows)  # greedy vs reference, not the sampled testbed win rate
    config = json.loads(_rows(db, "select config_json from runs")[0][0])
    assert config["evaluator"]["name"] == "synthetic_gold"


def test_unset_judge_roles_leave_the_config_hash_of_earlier_runs_unchanged():
    from harness.config import RunConfig, build_config
    from harness.plugins import load_registry

    config = build_config(load_registry([]), selector="smallest")
    data = config.to_dict()
    assert "annotator" not in data and "evaluator" not in data
    assert RunConfig.from_dict(data) == config
    with_annotator = build_config(load_registry([]), selector="smallest", annotator="external")
    assert with_annotator.strategy_hash() != config.strategy_hash()
    assert RunConfig.from_dict(with_annotator.to_dict()) == with_annotator


def test_bad_judge_roles_are_usage_errors(cli, tmp_path):
    db = tmp_path / "x.db"
    result = cli("run", "--evaluator", "external", "--db", db, *TINY)
    assert result.exit_code == 2 and "--evaluator external" in result.output
    result = cli("run", "--selector", "map", "-o", "selector.explicit_source=gold", "--annotator", "synthetic_gold",
                 "--db", db, *TINY)
    assert result.exit_code == 2 and "already scored" in result.output
    result = cli("run", "--annotator", "extrenal", "--db", db, *TINY)
    assert result.exit_code == 2 and "external" in result.output
    assert not db.exists()


def test_synthetic_texts_are_the_tokens_before_eos():
    from harness.interfaces import Responses
    from harness.plugins import load_registry
    from harness.progress import NullReporter

    settings = dict(o.split("=", 1) for o in (t.split(".", 1)[1] for t in TINY_TESTBED))
    world = load_registry([]).create("testbed", "synthetic", settings).build_world(seed=0, reporter=NullReporter())
    tokens = np.full((1, 2, 4), world.pad_id, dtype=np.int64)
    tokens[0, 0, :3] = [5, 7, world.eos_id]
    tokens[0, 1, :1] = [world.eos_id]
    prompts, responses = world.texts(np.array([[1, 2]]), Responses(tokens=tokens, lengths=np.array([[3, 1]])))
    assert prompts == ["w1 w2"] and responses == [["w5 w7", ""]]


def test_sweeps_take_annotators_as_an_axis_but_not_people(cli, tmp_path):
    db = tmp_path / "sweep.db"
    result = cli("sweep", "--selector", "smallest", "--annotator", "synthetic_gold", "-o", "annotator.noise=0,0.5",
                 "--seeds", "0", "--jobs", "1", "--db", db, *TINY)
    assert result.exit_code == 0, result.output
    noises = sorted(json.loads(c)["annotator"]["settings"]["noise"] for (c,) in _rows(db, "select config_json from runs"))
    assert noises == [0.0, 0.5]
    assert {s for (s,) in _rows(db, "select distinct source from labels")} == {"judge:synthetic_gold"}
    refused = cli("sweep", "--annotator", "external", "--db", tmp_path / "x.db", *TINY)
    assert refused.exit_code == 2 and "harness run --annotator external" in " ".join(refused.output.split())
