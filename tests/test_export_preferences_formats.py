"""`harness export preferences` in TRL's conversational format, as a `datasets` folder, and pushed to the Hub.

The push goes through ``harness.experiments.hub_push.hub_api``, replaced here by a recorder that keeps the
repository id, the private flag and the files it was handed: no test reaches the network.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from conftest import TINY_RUN
from tests.extras import requires_extra


@pytest.fixture(scope="module")
def labelled(tmp_path_factory, cli):
    """A finished tiny synthetic run with labelled pairs: (database, run id)."""
    tmp = tmp_path_factory.mktemp("prefs")
    db = tmp / "board.db"
    result = cli("run", "--selector", "smallest", "--db", db, *TINY_RUN)
    assert result.exit_code == 0, result.output
    with sqlite3.connect(db) as conn:
        (run_id,), = conn.execute("select id from runs").fetchall()
    return db, run_id


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_conversational_is_the_standard_rows_as_messages(labelled, cli, tmp_path):
    db, run_id = labelled
    plain, chat = tmp_path / "plain.jsonl", tmp_path / "chat.jsonl"
    assert cli("export", "preferences", run_id, "--out", plain, "--db", db).exit_code == 0
    result = cli("export", "preferences", run_id, "--format", "conversational", "--out", chat, "--db", db)
    assert result.exit_code == 0, result.output
    standard, conversational = _jsonl(plain), _jsonl(chat)
    assert standard and len(standard) == len(conversational)
    for row, turned in zip(standard, conversational):
        assert turned["prompt"] == [{"role": "user", "content": row["prompt"]}]
        assert turned["chosen"] == [{"role": "assistant", "content": row["chosen"]}]
        assert turned["rejected"] == [{"role": "assistant", "content": row["rejected"]}]
        assert {k: turned[k] for k in ("pair_id", "iteration", "source")} == {
            k: row[k] for k in ("pair_id", "iteration", "source")}


@requires_extra("hf")
def test_trl_reads_the_conversational_file_as_conversational(labelled, cli, tmp_path):
    import datasets
    from trl.data_utils import is_conversational

    db, run_id = labelled
    chat = tmp_path / "chat.jsonl"
    assert cli("export", "preferences", run_id, "--format", "conversational", "--out", chat, "--db", db).exit_code == 0
    loaded = datasets.load_dataset("json", data_files=str(chat), split="train")
    assert is_conversational(loaded[0]) and loaded[0]["chosen"][0]["role"] == "assistant"


def test_stored_prompt_messages_are_used_when_the_database_has_them(labelled, cli, tmp_path):
    """prompt_messages() is the one place the conversational export asks; a stored list wins over the wrapped text."""
    from leaderboard.labels import prompt_messages, text_hash
    from leaderboard.store import Leaderboard

    db, run_id = labelled
    copy = tmp_path / "copy.db"
    source, target = sqlite3.connect(db), sqlite3.connect(copy)
    source.backup(target)  # the write-ahead log included
    source.close()
    target.close()
    first = _jsonl(_export(cli, run_id, copy, tmp_path / "before.jsonl", "conversational"))[0]
    prompt = first["prompt"][0]["content"]
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": prompt}]
    with sqlite3.connect(copy) as conn:
        conn.execute("UPDATE texts SET messages = ? WHERE hash = ?", (json.dumps(messages), text_hash(prompt)))
    assert prompt_messages(Leaderboard(copy, create=False), run_id, prompt) == messages
    after = _jsonl(_export(cli, run_id, copy, tmp_path / "after.jsonl", "conversational"))
    assert after[0]["prompt"] == messages


def _export(cli, run_id: str, db: Path, out: Path, file_format: str, *extra) -> Path:
    result = cli("export", "preferences", run_id, "--format", file_format, "--out", out, "--db", db, *extra)
    assert result.exit_code == 0, result.output
    return out


@requires_extra("hf")
def test_datasets_format_is_a_save_to_disk_folder(labelled, cli, tmp_path):
    import datasets

    db, run_id = labelled
    folder = _export(cli, run_id, db, tmp_path / "prefs-ds", "datasets")
    loaded = datasets.load_from_disk(str(folder))
    assert len(loaded) == len(_jsonl(_export(cli, run_id, db, tmp_path / "p.jsonl", "jsonl")))
    assert {"prompt", "chosen", "rejected", "pair_id"} <= set(loaded.column_names)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folder left
    again = cli("export", "preferences", run_id, "--format", "datasets", "--out", folder, "--db", db)
    assert again.exit_code == 2 and "exists and is not empty" in again.output


class RecordingHub:
    """Stands in for huggingface_hub.HfApi: records create_repo and upload_folder, uploads nothing."""

    def __init__(self):
        self.created: list[dict] = []
        self.uploads: list[dict] = []

    def create_repo(self, *, repo_id, repo_type, private, exist_ok):
        self.created.append({"repo_id": repo_id, "repo_type": repo_type, "private": private, "exist_ok": exist_ok})

    def upload_folder(self, *, folder_path, repo_id, repo_type, commit_message):
        root = Path(folder_path)
        self.uploads.append({"repo_id": repo_id, "repo_type": repo_type, "files": {
            str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}})


@pytest.fixture
def hub(monkeypatch):
    from harness.experiments import hub_push

    recorder = RecordingHub()
    monkeypatch.setattr(hub_push, "hub_api", lambda: recorder)
    return recorder


def test_push_to_hub_uploads_the_file_and_a_card(labelled, cli, tmp_path, hub):
    db, run_id = labelled
    out = _export(cli, run_id, db, tmp_path / "prefs.jsonl", "conversational", "--push-to-hub", "me/prefs",
                  "--private")
    assert hub.created == [{"repo_id": "me/prefs", "repo_type": "dataset", "private": True, "exist_ok": True}]
    (upload,) = hub.uploads
    assert upload["repo_id"] == "me/prefs" and upload["repo_type"] == "dataset"
    assert set(upload["files"]) == {"prefs.jsonl", "README.md"}
    assert upload["files"]["prefs.jsonl"] == out.read_bytes()
    card = upload["files"]["README.md"].decode()
    assert card.startswith("---\ntags:") and run_id in card and "conversational" in card


@requires_extra("hf")
def test_push_to_hub_of_a_datasets_folder_uploads_its_files(labelled, cli, tmp_path, hub):
    db, run_id = labelled
    folder = _export(cli, run_id, db, tmp_path / "ds", "datasets", "--push-to-hub", "me/prefs")
    assert hub.created[0]["private"] is False
    files = set(hub.uploads[0]["files"])
    assert files == {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()} | {"README.md"}
    assert "dataset_info.json" in files


def test_push_refusals_exit_2_before_anything_is_written(labelled, cli, tmp_path, hub):
    db, run_id = labelled
    out = tmp_path / "p.jsonl"
    for args, said in ((["--private"], "--private applies to --push-to-hub"),
                       (["--push-to-hub", "not a repo"], "is not a Hub repository id")):
        result = cli("export", "preferences", run_id, "--out", out, "--db", db, *args)
        assert result.exit_code == 2 and said in result.output, result.output
        assert not out.exists()
    assert hub.created == hub.uploads == []


@requires_extra("hf")  # huggingface_hub comes with it
def test_push_while_the_hub_is_offline_says_so(labelled, cli, tmp_path):
    from huggingface_hub import constants

    assert constants.HF_HUB_OFFLINE  # the suite is offline (conftest)
    db, run_id = labelled
    result = cli("export", "preferences", run_id, "--out", tmp_path / "p.jsonl", "--db", db,
                 "--push-to-hub", "me/prefs")
    assert result.exit_code == 2 and "HF_HUB_OFFLINE" in result.output
