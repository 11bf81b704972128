"""`--keep-checkpoints` and `harness export model`: a run's policy as a folder transformers loads as it is.

One tiny 2-iteration hf run that keeps every checkpoint (built once for the module) is exported at iteration 1
and at its end; a fresh Python process loads both folders with AutoModelForCausalLM / AutoTokenizer and
generates. The refusals (exit 2, nothing written) need no real model where they can: a synthetic run, a
non-empty --out.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import TINY_RUN
from harness.plugins import DEFAULT_PLUGINS
from tests.extras import skip_unless_extra

pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")

MODULES = ("plugins.testbeds.hf", "plugins.judges.reward_model")
SAMPLING = {"temperature": 0.7, "top_p": 0.9, "top_k": 20, "max_new_tokens": 8}


def _hf_run(cli, tmp: Path, *extra: str) -> tuple[Path, str]:
    """A tiny hf run recorded in ``tmp/board.db`` (its runs beside it); (database, run id)."""
    skip_unless_extra("hf")
    from tests.hf_tiny import tiny_paths

    paths = tiny_paths()
    db = tmp / "board.db"
    options = {"testbed.model": paths.policy, "testbed.initial_model": paths.initial, "testbed.prompts": paths.prompts,
               "testbed.eval_prompts": paths.eval, "testbed.eval_limit": 8, "testbed.threads": 1,
               "annotator.model": paths.reward, "evaluator.model": paths.reward,
               **{f"testbed.{name}": value for name, value in SAMPLING.items()}}
    plugins = [arg for module in MODULES if module not in DEFAULT_PLUGINS for arg in ("--plugin", module)]
    result = cli("run", *plugins, "--testbed", "hf", "--selector", "smallest", "--responses", "4", "--db", db,
                 *extra, *[arg for key, value in options.items() for arg in ("-o", f"{key}={value}")])
    assert result.exit_code == 0, result.output
    return db, _run_id(db)


def _run_id(db: Path) -> str:
    import sqlite3

    with sqlite3.connect(db) as conn:
        (run_id,), = conn.execute("select id from runs order by started_at desc limit 1").fetchall()
    return run_id


@pytest.fixture(scope="module")
def kept_all(tmp_path_factory, cli):
    """A finished 2-iteration hf run with --keep-checkpoints all: (database, run id, run directory)."""
    import os

    tmp = tmp_path_factory.mktemp("keep-all")
    before = os.environ.pop("HARNESS_RUNS_DIR", None)
    try:
        db, run_id = _hf_run(cli, tmp, "--iterations", "2", "--budget", "16", "--keep-checkpoints", "all")
    finally:
        if before is not None:
            os.environ["HARNESS_RUNS_DIR"] = before
    return db, run_id, tmp / "runs" / run_id


def test_keep_checkpoints_all_keeps_one_per_iteration_and_is_recorded(kept_all):
    from leaderboard.store import Leaderboard

    db, run_id, run_dir = kept_all
    assert sorted(p.name for p in run_dir.glob("checkpoint-*")) == ["checkpoint-0", "checkpoint-1", "checkpoint-2"]
    assert (run_dir / "LATEST").read_text().strip() == "checkpoint-2"
    assert Leaderboard(db, create=False).get_run(run_id)["config"]["keep_checkpoints"] == "all"


def test_retention_changes_no_strategy_hash_and_last_is_left_out_of_the_config():
    from harness.config import build_config
    from harness.errors import UsageError
    from harness.plugins import load_registry
    from harness.run_request import RunRequest

    registry = load_registry()
    last = build_config(registry, RunRequest.from_values(selector="smallest"))
    kept = build_config(registry, RunRequest.from_values(selector="smallest", keep_checkpoints="all"))
    assert last.keep_checkpoints == "last" and "keep_checkpoints" not in last.to_dict()
    assert kept.to_dict()["keep_checkpoints"] == "all"
    assert kept.strategy_hash() == last.strategy_hash()  # what is kept on disk changes no number
    with pytest.raises(UsageError, match="--keep-checkpoints must be one of last, all; got 'some'"):
        RunRequest.from_values(keep_checkpoints="some")


def test_checkpoint_retention_last_removes_older_ones_and_all_keeps_them(tmp_path):
    from types import SimpleNamespace

    from harness.experiments import checkpoints

    class World:
        def save_policy(self, policy, path):
            path.write_bytes(b"weights %d" % policy)

    def state(i):
        return SimpleNamespace(iteration=i, policy=i, reference=None, rows=[{"iteration": k} for k in range(i + 1)],
                               charged={}, proxy_calls={}, history=[])

    for keep, expected in (("last", [2]), ("all", [0, 1, 2])):
        run_dir = tmp_path / keep
        for i in range(3):
            checkpoints.save(run_dir, World(), state(i), keep=keep)
        assert checkpoints.kept_iterations(run_dir) == expected
        assert checkpoints.latest(run_dir).name == "checkpoint-2"
        policy, document = checkpoints.verified_policy(checkpoints.checkpoint_dir(run_dir, 2))
        assert policy.read_bytes() == b"weights 2" and document["iteration"] == 2
    with pytest.raises(ValueError, match="keep must be one of"):
        checkpoints.save(tmp_path / "x", World(), state(0), keep="some")


LOAD_AND_GENERATE = """
import json, sys
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
out = {}
for folder in sys.argv[1:]:
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    text = tokenizer.apply_chat_template([{"role": "user", "content": "say cat"}], add_generation_prompt=True,
                                         tokenize=False)
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)
    torch.manual_seed(0)
    generated = model.generate(**ids, max_new_tokens=3)
    config = model.generation_config
    out[folder] = {"new_tokens": int(generated.shape[1] - ids["input_ids"].shape[1]),
                   "sampling": [config.do_sample, config.temperature, config.top_p, config.top_k, config.max_new_tokens],
                   "class": type(model).__name__}
print(json.dumps(out))
"""


def _checkpoint_weights_equal(folder: Path, policy_file: Path) -> dict:
    """The exported model's state dict, once every tensor of the checkpoint is in it, equal (tied weights are
    stored under one name by each writer, not always the same one: compare through the loaded model)."""
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    exported = AutoModelForCausalLM.from_pretrained(str(folder), local_files_only=True).state_dict()
    saved = load_file(str(policy_file))
    assert saved and set(saved) <= set(exported), set(saved) - set(exported)
    for name, tensor in saved.items():
        assert exported[name].dtype == tensor.dtype and bool((exported[name] == tensor).all()), name
    return exported


def test_export_model_at_iteration_1_and_at_the_end_loads_in_a_fresh_process(kept_all, cli, tmp_path):
    db, run_id, run_dir = kept_all
    first, last = tmp_path / "it1", tmp_path / "last"
    result = cli("export", "model", run_id, "--iteration", "1", "--out", first, "--db", db)
    assert result.exit_code == 0, result.output
    result = cli("export", "model", run_id, "--out", last, "--db", db)
    assert result.exit_code == 0, result.output
    assert "after iteration 2" in result.output
    for folder in (first, last):
        names = {p.name for p in folder.iterdir()}
        assert {"config.json", "generation_config.json", "model.safetensors", "README.md", "tokenizer.json"} <= names
        assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no staging folder left
    one = _checkpoint_weights_equal(first, run_dir / "checkpoint-1" / "policy.safetensors")
    two = _checkpoint_weights_equal(last, run_dir / "checkpoint-2" / "policy.safetensors")
    assert any(not bool((one[name] == two[name]).all()) for name in one)  # two different policies
    generation = json.loads((first / "generation_config.json").read_text())
    assert {name: generation[name] for name in SAMPLING} == SAMPLING and generation["do_sample"] is True
    card = (first / "README.md").read_text()
    from leaderboard.store import Leaderboard

    run = Leaderboard(db, create=False).get_run(run_id)
    assert card.startswith("---\nlibrary_name: transformers\n")
    for needle in (run_id, run["config_hash"], "16 gold labels over 2 iterations", "| selector | smallest |",
                   "| allocator | constant |", "final_win_rate", "iteration 1: win_rate"):
        assert needle in card, needle

    process = subprocess.run([sys.executable, "-c", LOAD_AND_GENERATE, str(first), str(last)], capture_output=True,
                             text=True, timeout=300, env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})
    assert process.returncode == 0, process.stderr
    loaded = json.loads(process.stdout.strip().splitlines()[-1])
    for folder in (first, last):
        assert loaded[str(folder)]["class"] == "GPT2LMHeadModel"
        assert 1 <= loaded[str(folder)]["new_tokens"] <= 3
        assert loaded[str(folder)]["sampling"] == [True, 0.7, 0.9, 20, 8]


def test_a_tampered_policy_file_exits_2_and_writes_nothing(kept_all, cli, tmp_path):
    db, run_id, run_dir = kept_all
    policy = run_dir / "checkpoint-1" / "policy.safetensors"
    original = policy.read_bytes()
    try:
        policy.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
        result = cli("export", "model", run_id, "--iteration", "1", "--out", tmp_path / "out", "--db", db)
    finally:
        policy.write_bytes(original)
    assert result.exit_code == 2, result.output
    assert "does not match its recorded sha256" in result.output and str(policy) in result.output.replace("\n", "")
    assert list(tmp_path.iterdir()) == []


def test_a_non_empty_out_and_an_iteration_past_the_run_exit_2(kept_all, cli, tmp_path):
    db, run_id, _ = kept_all
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    result = cli("export", "model", run_id, "--out", taken, "--db", db)
    assert result.exit_code == 2 and "exists and is not empty" in result.output
    assert [p.name for p in taken.iterdir()] == ["keep.txt"]
    result = cli("export", "model", run_id, "--iteration", "5", "--out", tmp_path / "x", "--db", db)
    assert result.exit_code == 2 and "has iterations 0 (pi_0) to 2" in result.output
    empty = tmp_path / "empty"
    empty.mkdir()  # an empty folder is fine
    result = cli("export", "model", run_id, "--iteration", "0", "--out", empty, "--db", db)
    assert result.exit_code == 0, result.output
    assert (empty / "model.safetensors").exists()


def test_an_iteration_not_kept_under_last_exits_2(cli, tmp_path, monkeypatch):
    monkeypatch.delenv("HARNESS_RUNS_DIR", raising=False)
    db, run_id = _hf_run(cli, tmp_path, "--iterations", "1", "--budget", "8")
    assert [p.name for p in (tmp_path / "runs" / run_id).glob("checkpoint-*")] == ["checkpoint-1"]
    result = cli("export", "model", run_id, "--iteration", "0", "--out", tmp_path / "out", "--db", db)
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert "iteration 0 of run" in text and "was not kept" in text and "--keep-checkpoints all" in text
    assert not (tmp_path / "out").exists()


def test_a_synthetic_run_exits_2_saying_why(cli, tmp_path, monkeypatch):
    monkeypatch.delenv("HARNESS_RUNS_DIR", raising=False)
    db = tmp_path / "board.db"
    assert TINY_RUN[:2] == ["--iterations", "2"]
    result = cli("run", "--selector", "smallest", "--keep-checkpoints", "all", "--db", db, "--iterations", "1",
                 *TINY_RUN[2:])
    assert result.exit_code == 0, result.output
    run_id = _run_id(db)
    result = cli("export", "model", run_id, "--out", tmp_path / "out", "--db", db)
    assert result.exit_code == 2
    text = " ".join(result.output.split())
    assert "'synthetic' testbed" in text and "only runs of the hf testbed export a model" in text
    assert not (tmp_path / "out").exists()
