"""Prompts from Hugging Face datasets, and conversational prompts (issue "Hugging Face native", item 2).

Data sources of the hf testbed: a local file, a ``save_to_disk`` output, a
folder of data files, or a Hub dataset id found in a temporary Hugging Face
cache laid out the way ``hf download ORG/NAME --repo-type dataset`` leaves it
(``datasets--ORG--NAME/blobs``, ``snapshots/<commit>/...``, ``refs/main``).
Conversational prompts (lists of role/content messages) are rendered once
with the tiny tokenizer's chat template; that rendering is their key. The
last test runs a conversational prompts file end to end: an external
annotator's round trip (run, labels awaited, label file imported, resume)
with the embedding judge as the evaluator. Everything is offline
(``tests/conftest.py``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
from pathlib import Path

import pytest

from harness.errors import UsageError
from tests.extras import skip_unless_extra

skip_unless_extra("hf")

from plugins._hf import loading  # noqa: E402
from plugins.testbeds.hf import HFTestbed  # noqa: E402
from plugins.testbeds.hf.tiny import WORDS, answer, build_tokenizer  # noqa: E402
from tests.hf_tiny import tiny_paths, tiny_world, world_settings  # noqa: E402

SYSTEM = "answer in one word"
COMMIT = "4" * 8 + "c" * 32
REPO = "tiny-org/tiny-prompts"


def conversation(prompt: str, *, system: bool = True) -> list[dict[str, str]]:
    return ([{"role": "system", "content": SYSTEM}] if system else []) + [{"role": "user", "content": prompt}]


def rendered(messages) -> str:
    """The canonical text of a conversation under the tiny chat template."""
    return build_tokenizer().apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


TRAIN = [f"{task} {word}" for word in WORDS[:8] for task in ("say", "upper")]  # 16
EVAL = [f"say {word}" for word in WORDS[8:12]]  # 4


@pytest.fixture(scope="module")
def conversational(tmp_path_factory) -> dict[str, Path]:
    """A conversational prompts file (system turn in every other row) and conversational evaluation prompts."""
    root = tmp_path_factory.mktemp("conversational")
    prompts = write_jsonl(root / "prompts.jsonl",
                          [{"prompt": conversation(p, system=i % 2 == 0)} for i, p in enumerate(TRAIN)])
    evaluation = write_jsonl(root / "eval.jsonl", [{"prompt": conversation(p), "output": "no"} for p in EVAL])
    return {"prompts": prompts, "eval": evaluation, "root": root}


def test_conversations_are_rendered_once_and_their_rendering_is_their_key(conversational):
    world = tiny_world(prompts=str(conversational["prompts"]), eval_prompts=str(conversational["eval"]))
    tokenizer = world.tokenizer
    first = conversation(TRAIN[0])
    text = rendered(first)
    assert text == f"system: {SYSTEM}\nuser: {TRAIN[0]}\nassistant: "
    row = world.table.texts.index(text)
    # tokenized as rendered, not wrapped in the template a second time
    assert list(world.table.ids[row]) == tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(list(world.table.ids[row])) == text
    assert world.prompt_messages(text) == first
    assert world.prompt_messages(rendered(conversation(TRAIN[1], system=False))) == conversation(TRAIN[1], system=False)
    assert world.prompt_messages("say apple") is None
    assert set(world.conversations) == set(world.table.texts) and len(world.conversations) == 20
    assert not any(t.startswith("[") or "{'role'" in t for t in world.table.texts)  # never a list's repr
    assert world.info["conversational_prompts"] == 20
    assert world.info["prompts_source"] == str(conversational["prompts"]) and world.info["prompts_split"] is None
    assert world.info["prompts_fingerprint"]
    # texts() hands judges and label files the canonical text
    import numpy as np

    prompts = np.array([[row]])
    responses = world.sample(world.initial_policy, prompts, 2, np.random.default_rng(0))
    assert world.texts(prompts, responses)[0] == [text]


def test_plain_prompts_are_still_wrapped_and_keyed_by_their_own_text():
    world = tiny_world()
    text = world.table.texts[0]
    assert not text.startswith("user:") and world.prompt_messages(text) is None and world.conversations == {}
    wrapped = world.tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                                  add_generation_prompt=True)
    assert list(world.table.ids[0]) == world.tokenizer(wrapped, add_special_tokens=False)["input_ids"]
    assert world.info["conversational_prompts"] == 0


def test_a_save_to_disk_dataset_dict_gives_each_option_its_split(tmp_path):
    import datasets

    dd = datasets.DatasetDict({
        "train": datasets.Dataset.from_dict({"prompt": [conversation(p) for p in TRAIN]}),
        "test": datasets.Dataset.from_dict({"prompt": [conversation(p) for p in EVAL], "output": ["x"] * len(EVAL)}),
    })
    dd.save_to_disk(str(tmp_path / "saved"))
    world = tiny_world(prompts=str(tmp_path / "saved"), eval_prompts=str(tmp_path / "saved"))
    assert world.n_train == len(TRAIN) and len(world.eval_rows) == len(EVAL)
    assert world.info["prompts_split"] == "train" and world.info["eval_prompts_split"] == "test"
    reloaded = datasets.load_from_disk(str(tmp_path / "saved"))
    assert world.info["prompts_fingerprint"] == reloaded["train"]._fingerprint
    assert world.info["eval_prompts_fingerprint"] == reloaded["test"]._fingerprint
    assert world.info["prompts_revision"] is None and world.info["prompts_source"] == str(tmp_path / "saved")
    # a lone saved Dataset has one table; the evaluation prompts can take another split by name
    datasets.Dataset.from_dict({"prompt": TRAIN}).save_to_disk(str(tmp_path / "lone"))
    world = tiny_world(prompts=str(tmp_path / "lone"), eval_prompts=str(tmp_path / "saved"), eval_split="train",
                       eval_limit=3)
    assert world.table.texts[0] == TRAIN[0] and world.info["prompts_split"] is None
    assert world.info["eval_prompts_split"] == "train" and world.info["eval_prompts"] == 3


def test_a_folder_of_data_files_takes_its_splits_from_the_file_names(tmp_path):
    folder = tmp_path / "folder"
    (folder / "data").mkdir(parents=True)
    write_jsonl(folder / "data" / "train.jsonl", [{"prompt": p, "output": answer(p)} for p in TRAIN])
    write_jsonl(folder / "data" / "test.jsonl", [{"prompt": p, "output": answer(p)} for p in EVAL])
    world = tiny_world(prompts=str(folder), eval_prompts=str(folder))
    assert list(world.table.texts) == TRAIN + EVAL
    assert world.reference_outputs == [answer(p) for p in EVAL]
    with pytest.raises(UsageError, match=r"has no split 'validation' \(splits: train, test\).*testbed.prompts_split"):
        tiny_world(prompts=str(folder), prompts_split="validation")
    write_jsonl(folder / "data" / "train.jsonl", [{"prompt": p} for p in TRAIN])
    with pytest.raises(UsageError, match=r"(?s)as a folder of data files: .*every split of a folder must have the same"):
        tiny_world(prompts=str(folder))


def lay_out_dataset(cache: Path, repo_id: str, files: dict[str, str], commit: str) -> Path:
    """Put ``files`` (relative name -> text) into ``cache`` as the Hub dataset snapshot ``commit`` of ``repo_id``."""
    repo = cache / ("datasets--" + repo_id.replace("/", "--"))
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot = repo / "snapshots" / commit
    for name, text in files.items():
        blob = repo / "blobs" / hashlib.sha256(text.encode()).hexdigest()
        blob.write_text(text)
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return snapshot


@pytest.fixture
def hub_dataset(tmp_path, monkeypatch) -> Path:
    cache = tmp_path / "hub"
    lines = lambda rows: "".join(json.dumps(r) + "\n" for r in rows)  # noqa: E731
    lay_out_dataset(cache, REPO, {
        "data/train-00000-of-00001.jsonl": lines({"prompt": conversation(p), "output": answer(p)} for p in TRAIN),
        "data/test-00000-of-00001.jsonl": lines({"prompt": conversation(p), "output": answer(p)} for p in EVAL),
    }, COMMIT)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    return cache


@pytest.mark.parametrize("value", [REPO, f"{REPO}@main", f"{REPO}@{COMMIT[:10]}"])
def test_a_hub_dataset_id_is_read_from_the_local_cache_with_its_commit(hub_dataset, value):
    world = tiny_world(prompts=value, eval_prompts=value)
    assert world.n_train == len(TRAIN) and len(world.eval_rows) == len(EVAL)
    assert world.table.texts[0] == rendered(conversation(TRAIN[0]))
    info = world.info
    assert (info["prompts_source"], info["prompts_revision"], info["prompts_split"]) == (REPO, COMMIT, "train")
    assert (info["eval_prompts_source"], info["eval_prompts_revision"], info["eval_prompts_split"]) == (
        REPO, COMMIT, "test")
    assert info["prompts_fingerprint"] and info["prompts_fingerprint"] != info["eval_prompts_fingerprint"]
    # the run's record: the same, read without building a world
    sources = HFTestbed(world_settings(prompts=value, eval_prompts=value)).sources()
    for key in ("prompts_source", "prompts_revision", "prompts_split", "prompts_fingerprint",
                "eval_prompts_revision", "eval_prompts_fingerprint"):
        assert sources[key] == info[key], key


def test_an_uncached_hub_dataset_gives_the_download_command(hub_dataset):
    with pytest.raises(UsageError, match=r"Hub dataset 'tiny-org/absent' is not in the local Hugging Face cache.*"
                                         r"`hf download tiny-org/absent --repo-type dataset`.*allow_download=true"):
        tiny_world(prompts="tiny-org/absent")
    # with downloads allowed the testbed is built, and its record names the id without downloading it
    sources = HFTestbed(world_settings(prompts="tiny-org/absent", allow_download=True)).sources()
    assert sources["prompts_source"] == "tiny-org/absent" and sources["prompts_revision"] is None
    with pytest.raises(UsageError, match=r"at revision 'v9'.*--repo-type dataset --revision v9"):
        tiny_world(prompts=f"{REPO}@v9")


@pytest.mark.parametrize("prompt, message", [
    ([{"role": "user"}], r"row 2 of '.*bad.jsonl': message 1 has no 'content'; each message needs a role and a "
                         r"content"),
    ([{"role": "system", "content": "x"}, {"content": "say dog"}], r"row 2 of .*: message 2 has no 'role'"),
    ([], r"row 2 of .*: the message list is empty"),
    ([{"role": "user", "content": "say dog"}, {"role": "assistant", "content": "dog"}],
     r"row 2 of .*: the last message is the assistant's"),
    ([{"role": "user", "content": [{"type": "text", "text": "hi"}]}], r"row 2 of .*: message 1 has a list as its "
                                                                       r"'content', not text"),
])
def test_a_malformed_conversation_is_named_by_its_row_with_the_fix(tmp_path, prompt, message):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": conversation("say cat")}, {"prompt": prompt}])
    with pytest.raises(UsageError, match=message):
        tiny_world(prompts=str(path))


def test_message_checks_name_the_row_whatever_the_source():
    with pytest.raises(UsageError, match=r"row 2 of 'x': message 1 is a str, not an object; each message needs"):
        loading.check_prompts([conversation("say cat"), ["say dog"]], "prompt", "x", "testbed option `prompts`")
    with pytest.raises(UsageError, match=r"row 1 of 'x': 'prompt' is one message, not a list"):
        loading.check_prompts([{"role": "user", "content": "hi"}], "prompt", "x", "testbed option `prompts`")
    with pytest.raises(UsageError, match=r"row 1 of 'x' has a list in 'output', which must hold text"):
        loading.check_texts([["a"]], "output", "x", "testbed option `eval_prompts`")


def test_text_and_message_lists_in_one_column_name_both_lines(tmp_path):
    path = write_jsonl(tmp_path / "mixed.jsonl", [{"prompt": "say cat"}, {"prompt": "say dog"},
                                                  {"prompt": conversation("say egg")}])
    with pytest.raises(UsageError, match=r"line 3: column 'prompt' holds a list here but a text on line 1"):
        tiny_world(prompts=str(path))


def test_split_and_path_mistakes_are_usage_errors(tmp_path):
    paths = tiny_paths()
    with pytest.raises(UsageError, match=r"is a single file, which has no split 'test'.*leave -o "
                                         r"testbed.prompts_split unset"):
        tiny_world(prompts=str(paths.prompts), prompts_split="test")
    with pytest.raises(UsageError, match=r"testbed option `prompts`: no such file or directory: '\./nope'"):
        tiny_world(prompts="./nope")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UsageError, match=r"cannot read '.*empty' as a folder of data files"):
        tiny_world(prompts=str(empty))


def test_a_template_less_tokenizer_cannot_take_conversations(tmp_path, conversational):
    model = tmp_path / "model"
    shutil.copytree(tiny_paths().policy, model)
    config = json.loads((model / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (model / "tokenizer_config.json").write_text(json.dumps(config))
    (model / "chat_template.jinja").unlink(missing_ok=True)
    with pytest.raises(UsageError, match=r"row 1 of .* is a list of messages, but the tokenizer of testbed option "
                                         r"`model` has no chat template"):
        tiny_world(model=str(model), initial_model=None, prompts=str(conversational["prompts"]))


def test_a_malformed_row_stops_the_cli_with_exit_code_2(cli, db_path, tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": conversation("say cat")}] * 16
                       + [{"prompt": [{"role": "system", "content": "x"}, {"role": "user"}]}])
    paths = tiny_paths()
    result = cli("run", "--testbed", "hf", "--annotator", "external", "--iterations", "1", "--budget", "2",
                 "--responses", "2", "-o", f"testbed.model={paths.policy}", "-o", f"testbed.prompts={path}",
                 "-o", f"testbed.eval_prompts={paths.eval}", "-o", "testbed.max_new_tokens=4")
    assert result.exit_code == 2, result.output
    assert "row 17 of" in result.output and "message 2 has no 'content'" in " ".join(result.output.split())


def _rows(db: Path, sql: str, *params):
    with sqlite3.connect(db) as conn:
        return conn.execute(sql, params).fetchall()


def test_conversational_prompts_end_to_end_with_the_embedding_judge_and_an_external_round_trip(
        cli, tmp_path, monkeypatch, conversational):
    monkeypatch.delenv("HARNESS_RUNS_DIR", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    paths = tiny_paths()
    db = tmp_path / "board.db"
    # the embedding judge's targets are keyed by the canonical text, as World.texts gives it
    targets = write_jsonl(tmp_path / "targets.jsonl",
                          [{"prompt": rendered(conversation(p)), "target": answer(p)} for p in EVAL])
    options = {
        "testbed.model": paths.policy, "testbed.initial_model": paths.initial,
        "testbed.prompts": conversational["prompts"], "testbed.eval_prompts": conversational["eval"],
        "testbed.max_new_tokens": 6, "testbed.threads": 1, "testbed.eval_samples": 1,
        "testbed.temperature": 3.0, "testbed.top_k": 0,  # distinct responses to pair from the tiny model
        "evaluator.targets": targets, "evaluator.model": paths.policy,
        "trainer.lr": 1e-3, "trainer.batch_size": 4, "trainer.grad_accum": 1,
    }
    args = [a for key, value in options.items() for a in ("-o", f"{key}={value}")]
    result = cli("run", "--testbed", "hf", "--trainer", "trl", "--selector", "smallest", "--annotator", "external",
                 "--evaluator", "embedding", "--iterations", "1", "--budget", "4", "--responses", "3", "--db", db,
                 *args)
    assert result.exit_code == 0, result.output
    (run_id, status), = _rows(db, "select id, status from runs")
    assert status == "awaiting_labels"
    to_label = tmp_path / "runs" / run_id / "iteration-1" / "to-label.jsonl"
    handed = [json.loads(line) for line in to_label.read_text().splitlines()]
    assert len(handed) == 4, result.output
    canonical = {rendered(conversation(p, system=i % 2 == 0)) for i, p in enumerate(TRAIN)}
    assert all(row["prompt"] in canonical for row in handed)  # the rendering, never a list or its repr
    labels = write_jsonl(tmp_path / "labels.jsonl", [{"pair_id": row["pair_id"], "label": "a"} for row in handed])
    imported = cli("label", "import", run_id, labels, "--db", db)
    assert imported.exit_code == 0, imported.output
    resumed = cli("run", "--resume", run_id, "--db", db)
    assert resumed.exit_code == 0, resumed.output
    assert _rows(db, "select status from runs") == [("finished",)]
    iterations = _rows(db, "select iteration, win_rate, labels from iterations order by iteration")
    assert [i for i, _, _ in iterations] == [0, 1] and all(0.0 <= w <= 1.0 for _, w, _ in iterations)
    # the texts table holds each labelled prompt's canonical text
    stored = {text for (text,) in _rows(db, "select text from texts")}
    assert {row["prompt"] for row in handed} <= stored
    assert not any(text.startswith("[{") for text in stored)
    # the run's record names the prompts file and its fingerprint (harness leaderboard show RUN --json)
    sources = json.loads(_rows(db, "select plugins_json from runs")[0][0])["testbed"]["sources"]
    assert sources["prompts_source"] == str(conversational["prompts"]) and sources["prompts_fingerprint"]
    assert sources["prompts_split"] is None and sources["eval_prompts_fingerprint"]
    # each labelled prompt keeps its message list beside its text, and the conversational export gives it back
    messages = {text: json.loads(value) for text, value in _rows(db, "select text, messages from texts "
                                                                     "where messages is not null")}
    by_text = {rendered(conversation(p, system=i % 2 == 0)): conversation(p, system=i % 2 == 0)
               for i, p in enumerate(TRAIN)}
    assert {row["prompt"] for row in handed} == set(messages)
    assert all(messages[text] == by_text[text] for text in messages)
    out = tmp_path / "prefs.jsonl"
    exported = cli("export", "preferences", run_id, "--format", "conversational", "--out", out, "--db", db)
    assert exported.exit_code == 0, exported.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows and all(row["prompt"] in by_text.values() for row in rows)
    assert any(message["role"] == "system" for row in rows for message in row["prompt"])
