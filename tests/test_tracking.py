"""``--report-to``: the loop's and the trainer's metrics in one tracker run, read back from what the backend wrote.

TensorBoard's event files are read with TensorBoard's own ``EventAccumulator``; a W&B run made with
``WANDB_MODE=offline`` is read from its ``.wandb`` file (a LevelDB-style log of protobuf records, read by
:func:`wandb_records`). The bad-input cases need no extra.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from harness import tracking
from harness.errors import UsageError
from tests.conftest import TINY_RUN
from tests.extras import requires_extra, skip_unless_extra


def _json(result) -> dict:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


def scalars(folder: Path) -> dict[str, dict[int, float]]:
    """Every scalar of the TensorBoard event files in ``folder``: tag -> {step: value}."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: {event.step: event.value for event in events.Scalars(tag)} for tag in events.Tags()["scalars"]}


def texts(folder: Path) -> dict[str, str]:
    """The text summaries of ``folder`` (run name, tags, config), tag -> the text."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"tensors": 0})
    events.Reload()
    return {tag.split("/")[0]: events.Tensors(tag)[-1].tensor_proto.string_val[0].decode()
            for tag in events.Tags()["tensors"]}


# -- TensorBoard -------------------------------------------------------------------------------------


@requires_extra("tensorboard")
def test_tensorboard_run_logs_every_iteration_and_every_trainer_step(cli, db_path):
    plain = _json(cli("run", *TINY_RUN, "--json"))
    out = _json(cli("run", *TINY_RUN, "--report-to", "tensorboard", "--json"))
    rows = out["iterations"]

    folder = db_path.parent / "runs" / out["run_id"] / "tensorboard"
    found = scalars(folder)
    assert found["loop/win_rate"] == {row["iteration"]: pytest.approx(row["win_rate"], abs=1e-6) for row in rows}
    assert found["loop/labels"] == {row["iteration"]: row["labels"] for row in rows[1:]}
    for key in ("loop/kl", "loop/gold_reward", "loop/sel_mean_dpo_weight", "loop/sel_beta_margin_q50"):
        assert set(found[key]) >= {1, 2}, key
    # the trainer's steps, numbered across the run: iteration 2's first step follows iteration 1's last
    steps = sum(row["train_steps"] for row in rows[1:])
    assert sorted(found["train/loss"]) == list(range(1, steps + 1))
    assert found["train/loss"][1] == pytest.approx(rows[1]["loss_first"], rel=1e-5)
    assert found["train/loss"][steps] == pytest.approx(rows[-1]["loss_last"], rel=1e-5)
    shown = texts(folder)
    assert shown["run"] == out["run_id"] and shown["status"] == "finished"
    assert json.loads(shown["config"].strip("`\n"))["config_hash"] == plain_hash(db_path, out["run_id"])

    # tracking changes no number and not the config hash; the row records it
    assert [row["win_rate"] for row in rows] == [row["win_rate"] for row in plain["iterations"]]
    assert out["final_win_rate"] == plain["final_win_rate"]
    assert plain_hash(db_path, out["run_id"]) == plain_hash(db_path, plain["run_id"])
    from leaderboard.store import Leaderboard

    run = Leaderboard(db_path, create=False).get_run(out["run_id"])
    assert run["tracking"]["report_to"] == ["tensorboard"] and run["tracking"]["versions"]["tensorboard"]
    assert Leaderboard(db_path, create=False).get_run(plain["run_id"]).get("tracking") is None


def plain_hash(db_path: Path, run_id: str) -> str:
    from leaderboard.store import Leaderboard

    return Leaderboard(db_path, create=False).get_run(run_id)["config_hash"]


INTERRUPTER = """
import os

from harness import hookimpl
from plugins.trainers.native import NativeDPOTrainer


class InterruptOnce(NativeDPOTrainer):
    name = "native_interrupt_once"
    description = "native DPO that stops the run (Ctrl-C) once, in iteration 2, while $INTERRUPT_FLAG exists"

    def train(self, *, policy, data, rng):
        flag = os.environ.get("INTERRUPT_FLAG", "")
        if self.calls() == 2 and os.path.exists(flag):
            os.remove(flag)
            raise KeyboardInterrupt
        return super().train(policy=policy, data=data, rng=rng)

    def calls(self):
        self._calls = getattr(self, "_calls", 0) + 1
        return self._calls


@hookimpl
def register_trainers(register):
    register(InterruptOnce)
"""


@requires_extra("tensorboard")
def test_a_resumed_run_goes_on_in_the_same_tracker_run(cli, db_path, tmp_path, monkeypatch):
    plugin = tmp_path / "interrupter.py"
    plugin.write_text(INTERRUPTER)
    monkeypatch.setenv("INTERRUPT_FLAG", str(tmp_path / "flag"))
    (tmp_path / "flag").write_text("")
    args = [*TINY_RUN, "--plugin", plugin, "--trainer", "native_interrupt_once"]
    stopped = cli("run", *args, "--report-to", "tensorboard")
    assert stopped.exit_code == 130, stopped.output
    from leaderboard.store import Leaderboard

    (run,) = Leaderboard(db_path, create=False).runs(status=None)
    assert run["status"] == "interrupted"
    out = _json(cli("run", "--resume", run["id"], "--plugin", plugin, "--json"))  # no --report-to: as started
    rows = out["iterations"]
    found = scalars(db_path.parent / "runs" / run["id"] / "tensorboard")
    assert found["loop/win_rate"] == {row["iteration"]: pytest.approx(row["win_rate"], abs=1e-6) for row in rows}
    steps = sum(row["train_steps"] for row in rows[1:])
    assert sorted(found["train/loss"]) == list(range(1, steps + 1))  # iteration 2's steps follow iteration 1's
    assert found["train/loss"][steps] == pytest.approx(rows[-1]["loss_last"], rel=1e-5)


# -- W&B, offline --------------------------------------------------------------------------------------


def wandb_records(path: Path) -> list:
    """The protobuf records of a W&B ``.wandb`` file: a 7-byte header (``:W&B``, magic, version), then
    32 KiB blocks of chunks, each with a 7-byte header (CRC, length, type: full, first, middle, last)."""
    from wandb.proto import wandb_internal_pb2

    data, block = path.read_bytes(), 32768
    assert data[:4] == b":W&B", f"{path} is not a W&B transaction log"
    position, pending, records = 7, b"", []
    while position + 7 <= len(data):
        room = block - position % block
        if room < 7:
            position += room
            continue
        _, length, kind = struct.unpack("<IHB", data[position:position + 7])
        if kind == 0:  # the rest of the block is padding
            position += room
            continue
        chunk = data[position + 7:position + 7 + length]
        position += 7 + length
        if kind in (1, 2):
            pending = chunk
        else:
            pending += chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
    return records


@requires_extra("wandb")
def test_wandb_offline_sweep_run_is_named_by_the_run_id_and_tagged_with_the_sweep(cli, db_path, tmp_path,
                                                                                   monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb-files"))
    monkeypatch.setenv("WANDB_PROJECT", "pairsel-tests")
    out = _json(cli("sweep", *TINY_RUN, "--selector", "random", "--seeds", "0", "--jobs", "1",
                    "--report-to", "wandb", "--json"))
    (result,) = out["results"]
    assert result["status"] == "finished"
    run_id, sweep = result["run_id"], out["sweep_id"]

    (log,) = (tmp_path / "wandb-files").glob(f"wandb/offline-run-*-{run_id}/run-{run_id}.wandb")
    records = wandb_records(log)
    (run,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert (run.run_id, run.display_name, run.project) == (run_id, run_id, "pairsel-tests")
    assert list(run.tags) == [sweep] and run.run_group == sweep
    history = [{item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in r.history.item}
               for r in records if r.WhichOneof("record_type") == "history"]
    loop = {int(h["loop/iteration"]): h for h in history if "loop/win_rate" in h}
    from leaderboard.store import Leaderboard

    rows = Leaderboard(db_path, create=False).iterations(run_id)
    assert sorted(loop) == [row["iteration"] for row in rows] == [0, 1, 2]
    for row in rows:
        assert loop[row["iteration"]]["loop/win_rate"] == pytest.approx(row["win_rate"])
    assert [loop[i]["loop/labels"] for i in (1, 2)] == [row["labels"] for row in rows[1:]]
    train = [h for h in history if "train/loss" in h]
    assert [h["train/step"] for h in train] == list(range(1, sum(row["train_steps"] for row in rows[1:]) + 1))
    (closing,) = [r.exit for r in records if r.WhichOneof("record_type") == "exit"]
    assert closing.exit_code == 0


# -- the trl trainer's own per-step log ------------------------------------------------------------------


@requires_extra("hf", "tensorboard")
@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")
def test_trl_trainer_steps_land_in_the_same_tensorboard_run(cli, db_path, tmp_path, monkeypatch):
    from harness.plugins import DEFAULT_PLUGINS
    from tests.hf_tiny import tiny_paths

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    paths = tiny_paths()
    options = {
        "testbed.model": paths.policy, "testbed.initial_model": paths.initial, "testbed.prompts": paths.prompts,
        "testbed.eval_prompts": paths.eval, "testbed.max_new_tokens": 8, "testbed.threads": 1,
        "annotator.model": paths.reward, "evaluator.model": paths.reward,
        "trainer.lr": 1e-3, "trainer.batch_size": 2, "trainer.grad_accum": 1,
    }
    modules = ("plugins.testbeds.hf", "plugins.trainers.trl", "plugins.judges.reward_model")
    plugins = [arg for module in modules if module not in DEFAULT_PLUGINS for arg in ("--plugin", module)]
    logs = tmp_path / "tracking"
    out = _json(cli("run", *plugins, "--testbed", "hf", "--trainer", "trl", "--iterations", "2", "--budget", "8",
                    "--responses", "2", *[a for k, v in options.items() for a in ("-o", f"{k}={v}")],
                    "--report-to", "tensorboard", "--logging-dir", logs, "--json"))
    rows = out["iterations"]
    assert [path.name for path in logs.iterdir()] == [out["run_id"]]  # one run, named by the run id
    found = scalars(logs / out["run_id"])
    steps = sum(row["train_steps"] for row in rows[1:])
    assert steps >= 2 and rows[1]["train_steps"] >= 1
    # TRL's per-step log entries, one step axis across the iterations
    for key in ("train/loss", "train/learning_rate", "train/rewards/margins", "train/grad_norm"):
        assert sorted(found[key]) == list(range(1, steps + 1)), key
    assert found["train/loss"][1] == pytest.approx(rows[1]["loss_first"], rel=1e-5)
    assert found["train/loss"][steps] == pytest.approx(rows[-1]["loss_last"], rel=1e-5)
    assert found["loop/win_rate"] == {row["iteration"]: pytest.approx(row["win_rate"], abs=1e-6) for row in rows}


# -- bad input: exit 2, nothing made ---------------------------------------------------------------------


def _nothing_made(tmp_path: Path, db_path: Path) -> None:
    assert not db_path.exists() and not (tmp_path / "runs").exists() and not (tmp_path / "logs").exists()


@pytest.mark.bad_input
@pytest.mark.parametrize("args, message", [
    (["--report-to", "mlflow"], "--report-to mlflow: not supported by this harness"),
    (["--report-to", "tensorbord"], "unknown tracking backend; choose from none, tensorboard, wandb"),
    (["--report-to", "none,tensorboard"], "--report-to none means no tracking"),
    (["--logging-dir", "LOGS"], "--logging-dir is where trackers write; it needs --report-to"),
])
@pytest.mark.parametrize("command", ["run", "sweep"])
def test_a_bad_report_to_exits_2_before_anything_is_made(cli, db_path, tmp_path, command, args, message):
    args = [str(tmp_path / "logs") if arg == "LOGS" else arg for arg in args]
    result = cli(command, *TINY_RUN, *args)
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
    _nothing_made(tmp_path, db_path)


@pytest.mark.bad_input
@pytest.mark.parametrize("name", ["tensorboard", "wandb"])
def test_a_backend_whose_extra_is_absent_names_the_extra_and_makes_nothing(cli, db_path, tmp_path, monkeypatch,
                                                                           name):
    absent = tracking.Backend(name, name, "no_such_module_for_pairsel_tests", "")
    monkeypatch.setitem(tracking.BACKENDS, name, absent)
    result = cli("run", *TINY_RUN, "--report-to", f"{name}", "--logging-dir", tmp_path / "logs")
    assert result.exit_code == 2, result.output
    assert f"pip install 'pairsel-harness[{name}]'" in " ".join(result.output.split())
    _nothing_made(tmp_path, db_path)


def test_report_to_takes_repeats_and_comma_lists_in_order_without_repeats():
    for name in tracking.BACKENDS:
        if not tracking.BACKENDS[name].installed():
            with pytest.raises(UsageError, match=rf"pairsel-harness\[{name}\]"):
                tracking.parse_report_to([name])
    assert tracking.parse_report_to(None) == () == tracking.parse_report_to(["none"]) == tracking.parse_report_to([])
    skip_unless_extra("tensorboard", "wandb")
    assert tracking.parse_report_to(["wandb,tensorboard", " TensorBoard", "wandb"]) == ("wandb", "tensorboard")


def test_metrics_are_the_finite_numbers_of_a_row():
    row = {"iteration": 1, "win_rate": 0.5, "labels": 30, "policy_changed": True, "warning": "x", "kl": float("nan"),
           "gold_reward": None, "weights": [1, 2]}
    assert tracking.metrics_of(row) == {"iteration": 1.0, "win_rate": 0.5, "labels": 30.0, "policy_changed": 1.0}
    assert tracking.tracker_tags({"sweep_id": "s1", "sweep_cell": "c", "study": "huang2025"}) == ["s1", "huang2025"]
    assert tracking.tracker_tags(None) == []
