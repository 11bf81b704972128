"""`harness run` under a multi-process launch (torchrun, ``accelerate launch``): the main process decides
(docs/internals/architecture.md#several-processes-the-main-process-decides).

Two processes on this CPU machine, joined by gloo: the main process alone
samples, selects, buys labels, evaluates and writes the leaderboard; both
score and train. Checked: one run row and one set of labels whatever the
number of processes, the numbers of a one-process run on the synthetic
testbed, TRL's data parallelism on the hf testbed (half the optimiser steps),
two processes with per-prompt sampling streams reproducing a one-process run
of the same global batch, FSDP and DeepSpeed launches refused, and a failure
or a stop for labels on the main process ending every process.
"""

from __future__ import annotations

import json
import math
import os
import socket
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import reliability
from conftest import TINY_RUN
from tests.extras import skip_unless_extra

pytest.importorskip("torch.distributed")

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
TIMEOUT = 300  # a hung process would otherwise hang the suite; every launch here takes well under a minute


def _accelerate() -> list[str]:
    """``accelerate launch`` for two processes; ``--multi_gpu`` without GPUs falls back to gloo on the CPU."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
            "--main_process_port", str(port)]


def _harness(args, *, processes: int, cwd: Path, launcher: list[str] = TORCHRUN) -> subprocess.CompletedProcess:
    start = [*launcher, "-m", "harness"] if processes == 2 else [sys.executable, "-m", "harness"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("HARNESS_DB", None)
    return subprocess.run(start + [str(a) for a in args], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=TIMEOUT)


def _final(result: subprocess.CompletedProcess) -> dict:
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1, f"one JSON result expected on stdout (the main process's), got {result.stdout!r}"
    return json.loads(lines[0])


def _table(db: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(db) as conn:
        return conn.execute(sql).fetchall()


@pytest.mark.slow
def test_two_processes_give_one_run_with_the_numbers_of_one_process(tmp_path):
    args = ["run", "--selector", "smallest", *TINY_RUN, "--json"]
    one = _final(_harness([*args, "--db", tmp_path / "one.db"], processes=1, cwd=tmp_path))
    two = _final(_harness([*args, "--db", tmp_path / "two.db"], processes=2, cwd=tmp_path))

    assert two["final_win_rate"] == one["final_win_rate"]
    assert [r["win_rate"] for r in two["iterations"]] == [r["win_rate"] for r in one["iterations"]]
    assert two["labels_used"] == one["labels_used"] == 80
    # one row, one label per label paid for: the second process bought nothing and wrote nothing
    assert _table(tmp_path / "two.db", "select status from runs") == [("finished",)]
    assert _table(tmp_path / "two.db", "select count(*) from labels") == [(80,)]


@pytest.mark.slow
def test_trl_trains_data_parallel_under_accelerate_launch(tmp_path):
    skip_unless_extra("hf")
    from tests.hf_tiny import tiny_paths

    paths = tiny_paths()
    options = {
        "testbed.model": paths.policy, "testbed.initial_model": paths.initial, "testbed.prompts": paths.prompts,
        "testbed.eval_prompts": paths.eval, "testbed.max_new_tokens": 16, "annotator.model": paths.reward,
        "evaluator.model": paths.reward, "trainer.lr": 1e-3, "trainer.batch_size": 2, "trainer.grad_accum": 1,
    }
    args = ["run", "--testbed", "hf", "--trainer", "trl", "--selector", "smallest", "--iterations", "2",
            "--budget", "16", "--responses", "4", "--db", tmp_path / "hf.db", "--json",
            *[a for key, value in options.items() for a in ("-o", f"{key}={value}")]]
    out = _final(_harness(args, processes=2, cwd=tmp_path, launcher=_accelerate()))

    assert _table(tmp_path / "hf.db", "select status, json_extract(versions_json, '$.processes') from runs") == [
        ("finished", "2")]
    assert _table(tmp_path / "hf.db", "select count(*) from labels") == [(out["labels_used"],)]
    for row in out["iterations"][1:]:
        pairs = row["labels"] - row["ties"]
        # each process trains on half of the pairs (TRL's distributed sampler), batch 2 each:
        # one optimiser step covers 4 pairs, where one process would need twice the steps
        assert row["train_steps"] == math.ceil(math.ceil(pairs / 2) / 2), row


@pytest.mark.slow
def test_two_data_parallel_processes_give_the_responses_and_numbers_of_one(tmp_path):
    """With sampling_streams=per_prompt both processes sample (each its half of the prompts) and the iteration buys
    the labels of the same pairs, selected on the same scores, as a one-process run; two processes with batch 2
    each then train exactly as one process with batch 4 (12 pairs: whole batches, so no process repeats a pair
    to even out the last one), so every number of the iteration agrees."""
    skip_unless_extra("hf")
    from tests.hf_tiny import tiny_paths

    paths = tiny_paths()
    options = {
        "testbed.model": paths.policy, "testbed.initial_model": paths.initial, "testbed.prompts": paths.prompts,
        "testbed.eval_prompts": paths.eval, "testbed.max_new_tokens": 16, "testbed.sampling_streams": "per_prompt",
        "testbed.temperature": 2.0,  # diverse responses: no prompt lacks a pair, so all 12 labels are bought
        "annotator.model": paths.reward, "evaluator.model": paths.reward, "trainer.lr": 1e-3,
        "trainer.grad_accum": 1,
    }
    runs = {}
    for processes, batch in ((1, 4), (2, 2)):
        db = tmp_path / f"{processes}.db"
        args = ["run", "--testbed", "hf", "--trainer", "trl", "--selector", "smallest", "--iterations", "1",
                "--budget", "12", "--responses", "4", "--db", db, "--json", "-o", f"trainer.batch_size={batch}",
                *[a for key, value in options.items() for a in ("-o", f"{key}={value}")]]
        result = _harness(args, processes=processes, cwd=tmp_path, launcher=_accelerate())
        runs[processes] = (_final(result), _table(db, "select iteration, position, prompt_hash, a_hash, b_hash, "
                                                      "label from labels order by iteration, position"))
    (one, one_labels), (two, two_labels) = runs[1], runs[2]
    assert len(one_labels) == 12 and two_labels == one_labels  # the same prompts, responses, pairs and verdicts
    first_one, first_two = one["iterations"][1], two["iterations"][1]
    assert first_one["train_steps"] == first_two["train_steps"] == 3
    compared = [key for key, value in first_one.items()
                if isinstance(value, float) and not key.startswith("time_") and key != "peak_rss_mib"]
    assert {"kl", "win_rate", "sel_mean_abs_margin", "sel_ranking_accuracy", "train_grad_norm_last",
            "train_margin_last", "loss_last"} <= set(compared), compared
    for key in compared:
        assert first_two[key] == pytest.approx(first_one[key], rel=1e-5, abs=1e-6), key
    # that each process sampled its own half is checked in tests/test_hf_sampling_streams.py


CRASHY = textwrap.dedent('''
    from harness import hookimpl
    from plugins.selectors.margin import SmallestMargin


    class CrashOnSecond(SmallestMargin):
        """smallest, raising at its second selection: selection runs on the main process only."""

        name = "crash_on_second"
        description = "smallest margin that raises at the second iteration"
        calls = 0

        def select_instances(self, batch, rng):
            type(self).calls += 1
            if type(self).calls == 2:
                raise RuntimeError("selector broke on the main process")
            return super().select_instances(batch, rng)


    @hookimpl
    def register_selectors(register):
        register(CrashOnSecond)
''')


@pytest.mark.slow
@pytest.mark.fault
def test_a_failure_on_the_main_process_ends_every_process(tmp_path):
    plugin = tmp_path / "crashy.py"
    plugin.write_text(CRASHY)
    result = _harness(["run", "--plugin", plugin, "--selector", "crash_on_second", *TINY_RUN,
                       "--db", tmp_path / "f.db"], processes=2, cwd=tmp_path)

    assert result.returncode != 0  # and it returned at all: the other process did not wait forever
    [(status, error)] = _table(tmp_path / "f.db", "select status, error from runs")
    assert status == "failed" and "selector broke on the main process" in error
    assert "crash_on_second" in error
    assert _table(tmp_path / "f.db", "select iteration from iterations order by iteration") == [(0,), (1,)]
    kept = sum(_table(tmp_path / "f.db", f"select count(*) from {t}")[0][0] for t in ("runs", "iterations", "labels"))
    reliability.fault("plugin raises on the main process of a 2-process launch", expected_rows=1 + 2 + 40,
                      recorded_rows=kept)


@pytest.mark.slow
def test_an_external_annotator_stops_every_process_for_labels(tmp_path):
    result = _harness(["run", "--selector", "smallest", "--annotator", "external", *TINY_RUN,
                       "--db", tmp_path / "x.db"], processes=2, cwd=tmp_path)

    assert result.returncode == 0, result.stderr[-3000:]
    [(run_id, status)] = _table(tmp_path / "x.db", "select id, status from runs")
    assert status == "awaiting_labels"
    handed_out = (tmp_path / "runs" / run_id / "iteration-1" / "to-label.jsonl").read_text().splitlines()
    assert len(handed_out) == 40  # one file of the main process's pairs, not one per process
    assert _table(tmp_path / "x.db", "select count(*) from labels") == [(40,)]

    # label them, import, and resume under the same launcher: every process continues from the checkpoint
    repo = Path(__file__).resolve().parents[1]
    labelled = tmp_path / "it1.jsonl"
    subprocess.run([sys.executable, repo / "scripts" / "label_from_gold.py", run_id,
                    tmp_path / "runs" / run_id / "iteration-1" / "to-label.jsonl", "--db", tmp_path / "x.db",
                    "--out", labelled], check=True, cwd=tmp_path, timeout=TIMEOUT)
    imported = _harness(["label", "import", run_id, labelled, "--db", tmp_path / "x.db"], processes=1, cwd=tmp_path)
    assert imported.returncode == 0, imported.stderr
    resumed = _harness(["run", "--resume", run_id, "--db", tmp_path / "x.db"], processes=2, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert _table(tmp_path / "x.db", "select status from runs") == [("awaiting_labels",)]
    assert _table(tmp_path / "x.db", "select iteration from iterations order by iteration") == [(0,), (1,)]
    assert (tmp_path / "runs" / run_id / "iteration-2" / "to-label.jsonl").exists()


def test_sweeps_refuse_a_multi_process_launch(tmp_path, monkeypatch):
    from harness.errors import UsageError
    from harness.experiments.executors import executor_class

    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(UsageError, match="one harness run at a time"):
        executor_class("local")


@pytest.mark.parametrize("n, size", [(10, 2), (7, 2), (3, 4), (0, 3), (1, 2)])
def test_rows_split_contiguously_and_cover_every_row_once(n, size):
    from harness.ranks import Ranks

    shares = [Ranks(rank=r, size=size).rows(n) for r in range(size)]
    assert [i for share in shares for i in range(share.start, share.stop)] == list(range(n))
    assert max(s.stop - s.start for s in shares) - min(s.stop - s.start for s in shares) <= 1


def test_one_process_calls_through_and_reads_no_launcher():
    from harness.ranks import SINGLE, Ranks

    assert Ranks.from_environment({}) == SINGLE and Ranks.from_environment({"WORLD_SIZE": "1"}) == SINGLE
    assert SINGLE.main_only(lambda: 41) + 1 == 42 and SINGLE.share("x") == "x"
    assert SINGLE.split(3, lambda rows: list(range(rows.start, rows.stop))) == [0, 1, 2]
    with pytest.raises(ZeroDivisionError):
        SINGLE.main_only(lambda: 1 / 0)


SHARED_STEP = textwrap.dedent('''
    import sys
    from harness.ranks import MainProcessStopped, Ranks

    ranks = Ranks.from_environment()
    out = open(sys.argv[1] + f"/rank{ranks.rank}.txt", "w")
    print("gathered", ranks.gather(4, lambda rows: list(range(rows.start, rows.stop))), file=out, flush=True)

    def share(rows):
        if ranks.rank == 1:
            raise MemoryError("out of memory while sampling")
        return [rows.start]

    try:
        ranks.gather(4, share)
    except MainProcessStopped as exc:
        print("stopped", exc.kind, exc.message, file=out, flush=True)
    except MemoryError as exc:
        print("raised", exc, file=out, flush=True)
    ranks.barrier()  # both are past the failure: leave the process group together, so neither aborts at exit
    import torch.distributed as dist

    dist.destroy_process_group()
''')


@pytest.mark.slow
def test_a_share_that_fails_on_one_process_stops_every_process(tmp_path):
    """A step every process shares (scoring, split sampling) fails on rank 1: rank 1 raises its error, rank 0 stops
    naming it, and neither waits for the other (the launch ends well inside its timeout)."""
    script = tmp_path / "shared_step.py"
    script.write_text(SHARED_STEP)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    result = subprocess.run([*TORCHRUN, str(script), str(tmp_path)], capture_output=True, text=True, env=env,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    first, second = ((tmp_path / f"rank{r}.txt").read_text().splitlines() for r in (0, 1))
    assert first[0] == second[0] == "gathered [[0, 1], [2, 3]]"
    assert first[1] == "stopped failed rank 1: MemoryError: out of memory while sampling"
    assert second[1] == "raised out of memory while sampling"


def _gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


@pytest.mark.slow
@pytest.mark.skipif(_gpus() < 2, reason="needs 2 CUDA GPUs (NCCL, one model per GPU); this machine has fewer")
def test_two_gpus_under_accelerate_launch(tmp_path):
    skip_unless_extra("hf")
    from tests.hf_tiny import tiny_paths

    paths = tiny_paths()
    options = {
        "testbed.model": paths.policy, "testbed.prompts": paths.prompts, "testbed.eval_prompts": paths.eval,
        "testbed.max_new_tokens": 16, "testbed.device": "cuda", "annotator.model": paths.reward,
        "evaluator.model": paths.reward, "trainer.batch_size": 2, "trainer.grad_accum": 1,
    }
    args = ["run", "--testbed", "hf", "--trainer", "trl", "--selector", "smallest", "--iterations", "2",
            "--budget", "16", "--responses", "4", "--db", tmp_path / "gpu.db", "--json",
            *[a for key, value in options.items() for a in ("-o", f"{key}={value}")]]
    out = _final(_harness(args, processes=2, cwd=tmp_path, launcher=_accelerate()))
    assert _table(tmp_path / "gpu.db", "select status from runs") == [("finished",)]
    assert out["labels_used"] == _table(tmp_path / "gpu.db", "select count(*) from labels")[0][0]


@pytest.mark.slow
def test_the_static_policy_guard_runs_on_the_main_process_and_stops_every_process(tmp_path):
    from tests.test_static_policy import PLUGIN

    plugin = tmp_path / "static_plugin.py"
    plugin.write_text(PLUGIN)
    result = _harness(["run", "--plugin", plugin, "--trainer", "identity", *TINY_RUN, "--db", tmp_path / "s.db"],
                      processes=2, cwd=tmp_path)

    assert result.returncode != 0  # both processes returned: the other one got the main process's verdict
    [(status, error)] = _table(tmp_path / "s.db", "select status, error from runs")
    assert status == "failed" and "StaticPolicyError" in error and "returned the policy it was given" in error
    assert _table(tmp_path / "s.db", "select iteration from iterations order by iteration") == [(0,)]


@pytest.mark.parametrize("variable, value, name", [("ACCELERATE_USE_FSDP", "true", "FSDP"),
                                                   ("ACCELERATE_USE_FSDP", "1", "FSDP"),
                                                   ("ACCELERATE_USE_DEEPSPEED", "True", "DeepSpeed")])
def test_an_fsdp_or_deepspeed_launch_is_refused_by_the_trl_trainer(cli, db_path, monkeypatch, variable, value, name):
    skip_unless_extra("hf")
    monkeypatch.setenv(variable, value)
    result = cli("run", "--testbed", "hf", "--trainer", "trl", "--selector", "smallest")
    assert result.exit_code == 2, result.output
    assert f"trainer 'trl' under {name}" in result.output and "accelerate launch --multi_gpu" in result.output


def test_a_data_parallel_launch_is_not_refused():
    skip_unless_extra("hf")
    from plugins.trainers.trl import check_parallelism

    check_parallelism({"ACCELERATE_USE_FSDP": "false", "ACCELERATE_USE_DEEPSPEED": "0"})
    check_parallelism({})
