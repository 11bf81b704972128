"""`harness sweep`: grid expansion, seeds, parallel runs, skip / resume / redo, --force, bad cells, Ctrl-C."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import pytest

import reliability

from harness.errors import UsageError
from harness.plugins import load_registry
from harness.experiments.sweep import GridSpec, cell_keys, expand_grid, format_seeds, parse_seeds, split_grid_values, sweep_id
from leaderboard.store import Leaderboard
from tests.conftest import TINY_RUN

# Trainers for the tests: one that sleeps (so a Ctrl-C lands mid-run) and one that fails or is
# interrupted in its second iteration when an environment variable says so.
PLUGIN = textwrap.dedent('''
    import os
    import time

    from harness import hookimpl
    from plugins.trainers.native import NativeDPOTrainer


    class SlowTrainer(NativeDPOTrainer):
        name = "native_slow"
        description = "native DPO that first sleeps $SWEEP_SLOW_SECONDS per iteration"

        def train(self, *, policy, data, rng):
            time.sleep(float(os.environ.get("SWEEP_SLOW_SECONDS", "0")))
            return super().train(policy=policy, data=data, rng=rng)


    class FlakyTrainer(NativeDPOTrainer):
        name = "native_flaky"
        description = "native DPO that raises ($SWEEP_FLAKY=raise) or is interrupted (=interrupt) in iteration 2"

        def train(self, *, policy, data, rng):
            self.calls = getattr(self, "calls", 0) + 1
            mode = os.environ.get("SWEEP_FLAKY", "")
            if self.calls == 2 and mode == "raise":
                raise RuntimeError("flaky trainer failed on purpose")
            if self.calls == 2 and mode == "interrupt":
                raise KeyboardInterrupt
            if self.calls == 2 and mode == "kill":
                os.kill(os.getpid(), 9)  # SIGKILL: the worker dies without marking its run
            return super().train(policy=policy, data=data, rng=rng)


    @hookimpl
    def register_trainers(register):
        register(SlowTrainer)
        register(FlakyTrainer)
''')


@pytest.fixture
def plugin(tmp_path):
    path = tmp_path / "sweep_trainers.py"
    path.write_text(PLUGIN)
    return str(path)


@pytest.fixture(scope="module")
def registry():
    return load_registry()


def sweep_json(result):
    return json.loads(result.stdout.strip().splitlines()[-1])


def rows(db):
    return Leaderboard(db).runs(status=None)


# -- units ------------------------------------------------------------------------


@pytest.mark.parametrize("text, seeds", [
    ("0-4", [0, 1, 2, 3, 4]), ("0,2,5", [0, 2, 5]), ("0-2,7", [0, 1, 2, 7]), (" 3 ", [3]), ("2,0-2", [0, 1, 2]),
])
def test_parse_seeds(text, seeds):
    assert parse_seeds(text) == seeds
    assert parse_seeds(format_seeds(seeds)) == seeds


@pytest.mark.parametrize("text, fix", [
    ("", "--seeds 0-4"), ("4-0", "0-4"), ("a", "--seeds 0,2,5"), ("-1", "non-negative"), ("1,,2", "0-2,7"),
    ("0-9999999", "typo"),
])
def test_bad_seeds_name_the_fix(text, fix):
    with pytest.raises(UsageError, match="--seeds") as info:
        parse_seeds(text)
    assert fix in str(info.value)


def test_grid_values_split_on_commas_except_in_list_options():
    assert split_grid_values("beta", "0.5,1", list_valued=False) == ("0.5", "1")
    assert split_grid_values("beta", "0.5|1", list_valued=False) == ("0.5", "1")
    assert split_grid_values("weights", "1,1,2", list_valued=True) == ("1,1,2",)
    assert split_grid_values("weights", "1,1,2|2,1,1", list_valued=True) == ("1,1,2", "2,1,1")
    assert split_grid_values("weights", "1,1,2;2,1,1", list_valued=True) == ("1,1,2", "2,1,1")
    with pytest.raises(UsageError, match="empty"):
        split_grid_values("beta", "0.5,", list_valued=False)


def test_grid_expansion_keys_and_a_deterministic_id(registry):
    spec = GridSpec.from_cli(registry, selector="smallest,random", allocator="custom",
                             options=["weights=1,1,2|2,1,1", "trainer.beta=1,0.5"])
    cells = expand_grid(registry, spec)
    assert len(cells) == 8 and len({c.config_hash for c in cells}) == 8
    assert cells[0].key == "selector=smallest allocator.weights=1:1:2 trainer.beta=1"
    assert cells[0].config.allocator.settings["weights"] == (1.0, 1.0, 2.0)
    # The same grid written differently (order, prefixes, separators, spelled-out floats): same id.
    again = expand_grid(registry, GridSpec.from_cli(
        registry, selector="random,smallest", allocator="custom",
        options=["trainer.beta=0.5,1.0", "allocator.weights=2,1,1;1,1,2"]))
    assert sweep_id(again, None) == sweep_id(cells, None)
    assert sweep_id(cells, 3) != sweep_id(cells, None)  # a fixed world is another experiment
    # A list-valued option with one value keeps its commas.
    (single,) = expand_grid(registry, GridSpec.from_cli(registry, allocator="custom", options=["weights=1,1,2"]))
    assert single.config.allocator.settings["weights"] == (1.0, 1.0, 2.0)
    assert single.key == "selector=random allocator=custom"
    split = expand_grid(registry, GridSpec.from_cli(registry, instance_selector="smallest,random",
                                                    corpus_selector="random"))
    assert [c.key for c in split] == ["instance=smallest", "instance=random"]
    assert cell_keys([c.config for c in split]) == ["instance=smallest", "instance=random"]


def test_grid_input_mistakes(registry):
    with pytest.raises(UsageError, match="twice"):
        GridSpec.from_cli(registry, selector="smallest,smallest")
    with pytest.raises(UsageError, match="one -o per key"):
        GridSpec.from_cli(registry, options=["beta=1", "beta=0.5"])
    with pytest.raises(UsageError, match="same configuration"):
        expand_grid(registry, GridSpec.from_cli(registry, options=["trainer.beta=1,1.0"]))
    with pytest.raises(UsageError, match=r"cell 2 of 2 \(--selector smalest\).*did you mean 'smallest'"):
        expand_grid(registry, GridSpec.from_cli(registry, selector="smallest,smalest"))


def test_plan_rule_skip_busy_resume_redo_new(registry, tmp_path):
    from harness.config import instantiate
    from harness.experiments.runner import run_record
    from harness.experiments.sweep import make_plan

    db = tmp_path / "board.db"
    (cell,) = expand_grid(registry, GridSpec.from_cli(registry, selector="smallest"))
    sweep = sweep_id([cell], None)
    board = Leaderboard(db)

    def start(seed, pid, host="here", sweep_tag=sweep):
        config = cell.for_seed(seed, None)
        record = run_record(config, instantiate(registry, config), registry)
        tags = {"pid": pid, "hostname": host, "pid_start": 0}
        if sweep_tag:
            tags |= {"sweep_id": sweep_tag, "sweep_cell": cell.key}
        return board.start_run({**record, "runs_root": str(tmp_path / "runs"), **tags})

    def checkpoint(run_id):
        (tmp_path / "runs" / run_id / "checkpoint-0").mkdir(parents=True)
        (tmp_path / "runs" / run_id / "LATEST").write_text("checkpoint-0")

    board.fail_run(start(0, 1), "failed", "boom")
    board.finish_run(start(0, 1), {"final_win_rate": 0.5})  # seed 0: finished after a failure
    start(1, 111)  # alive
    start(2, 333, host="elsewhere")  # another host: cannot tell
    checkpoint(dead := start(3, 222))  # its process is gone, and it has a checkpoint
    board.fail_run(cut := start(4, 1), "interrupted", "stopped")  # before any checkpoint
    board.fail_run(failed := start(5, 1), "failed", "boom")
    board.finish_run(start(6, 1, sweep_tag=None), {"final_win_rate": 0.5})  # a harness run outside the sweep

    alive = {111: True, 222: False, 333: None, 1: False}
    plan = make_plan([cell], range(7), sweep=sweep, db_path=db, alive=lambda run: alive[run["pid"]])
    assert [(p.seed, p.action) for p in plan] == [
        (0, "skip"), (1, "busy"), (2, "busy"), (3, "resume"), (4, "redo"), (5, "redo"), (6, "new")]
    assert plan[3].run_id == dead and plan[3].claim == (222, "here", 0)
    assert plan[4].run_id == cut and "before its first checkpoint" in plan[4].reason
    assert plan[5].run_id == failed
    forced = make_plan([cell], range(7), sweep=sweep, db_path=db, force=True)
    assert {p.action for p in forced} == {"new"}
    # an executor whose workers never open the leaderboard cannot resume: the checkpointed run is redone
    driver = make_plan([cell], range(7), sweep=sweep, db_path=db, alive=lambda run: alive[run["pid"]],
                       resumable=False)
    assert [p.action for p in driver] == ["skip", "busy", "busy", "redo", "redo", "redo", "new"]
    assert driver[3].run_id == dead and "do not resume runs" in driver[3].reason


# -- the command ---------------------------------------------------------------------


def test_bad_cell_exits_2_and_writes_nothing(cli, db_path):
    result = cli("sweep", "--allocator", "custom", "-o", "weights=1,1,1|1,1,100", "--iterations", "3",
                 "--budget", "10", "--seeds", "0-3")
    assert result.exit_code == 2
    assert "cell 2 of 2 (-o weights=1,1,100)" in result.output and "budget too small" in result.output
    unknown = cli("sweep", "--executor", "locl")
    assert unknown.exit_code == 2 and "did you mean 'local'" in unknown.output
    bad_seeds = cli("sweep", "--seeds", "5-1")
    assert bad_seeds.exit_code == 2 and "low-high" in bad_seeds.output
    dry = cli("sweep", *TINY_RUN, "--selector", "smallest,random", "--seeds", "0-2", "--dry-run")
    assert dry.exit_code == 0 and dry.output.count("   new  ") == 6
    assert not db_path.exists()


def test_grid_with_two_jobs_lands_tagged_runs_and_a_rerun_runs_nothing(cli, db_path):
    args = ["sweep", *TINY_RUN, "--selector", "smallest,random", "--allocator", "constant,decrease",
            "--seeds", "0-1", "--jobs", "2", "--json"]
    first = cli(*args)
    assert first.exit_code == 0, first.output
    summary = sweep_json(first)
    runs = rows(db_path)
    assert len(runs) == 8 and {r["status"] for r in runs} == {"finished"}
    assert {r["sweep_id"] for r in runs} == {summary["sweep_id"]}
    assert len({r["sweep_cell"] for r in runs}) == 4
    assert {(r["sweep_cell"], r["seed"]) for r in runs} == {(c["cell"], s) for c in summary["cells"] for s in (0, 1)}
    assert all(r["pid"] and r["hostname"] and r["pid"] != os.getpid() for r in runs)  # recorded by workers
    assert [c["n"] for c in summary["cells"]] == [2, 2, 2, 2]
    assert "harness leaderboard --sweep " + summary["sweep_id"] in first.stderr

    again = cli(*args)
    assert again.exit_code == 0
    assert sweep_json(again)["results"] == [] and sweep_json(again)["plan"]["skip"] == 8
    assert len(rows(db_path)) == 8


def test_failed_runs_are_redone_and_interrupted_ones_resumed(cli, db_path, plugin, monkeypatch):
    args = ["sweep", *TINY_RUN, "--trainer", "native,native_flaky", "--plugin", plugin, "--jobs", "2", "--json"]
    monkeypatch.setenv("SWEEP_FLAKY", "raise")
    failing = cli(*args, "--seeds", "0-1")
    assert failing.exit_code == 1  # a failed run does not stop the sweep, but the sweep says so
    statuses = sorted((r["sweep_cell"], r["status"]) for r in rows(db_path))
    assert statuses == [("trainer=native", "finished")] * 2 + [("trainer=native_flaky", "failed")] * 2

    monkeypatch.delenv("SWEEP_FLAKY")
    redo = cli(*args, "--seeds", "0-1")
    assert redo.exit_code == 0, redo.output
    assert sweep_json(redo)["plan"] == {"new": 0, "resume": 0, "redo": 2, "skip": 2, "busy": 0}
    runs = rows(db_path)
    assert sorted(r["status"] for r in runs) == ["failed"] * 2 + ["finished"] * 4  # failed rows stay

    monkeypatch.setenv("SWEEP_FLAKY", "interrupt")
    cut = cli(*args, "--seeds", "2")  # more seeds of the same grid: the same sweep
    assert cut.exit_code == 1
    assert sweep_json(cut)["sweep_id"] == sweep_json(redo)["sweep_id"]
    (stopped,) = [r for r in rows(db_path) if r["status"] == "interrupted"]

    monkeypatch.delenv("SWEEP_FLAKY")
    resumed = cli(*args, "--seeds", "2")
    assert resumed.exit_code == 0, resumed.output
    (result,) = sweep_json(resumed)["results"]
    assert result["action"] == "resume" and result["run_id"] == stopped["id"] and result["status"] == "finished"
    board = Leaderboard(db_path)
    assert board.get_run(stopped["id"])["status"] == "finished"
    assert [r["iteration"] for r in board.iterations(stopped["id"])] == [0, 1, 2]


def test_a_run_whose_worker_died_is_resumed(cli, db_path, plugin, monkeypatch):
    args = ["sweep", *TINY_RUN, "--trainer", "native_flaky", "--plugin", plugin, "--jobs", "1", "--json"]
    monkeypatch.setenv("SWEEP_FLAKY", "kill")
    killed = cli(*args)
    assert killed.exit_code == 1
    assert sweep_json(killed)["results"][0]["status"] == "crashed"
    (run,) = rows(db_path)
    assert run["status"] == "running"  # SIGKILL gave it no chance; its pid tag shows nobody runs it
    monkeypatch.delenv("SWEEP_FLAKY")
    resumed = cli(*args)
    assert resumed.exit_code == 0, resumed.output
    (result,) = sweep_json(resumed)["results"]
    assert (result["action"], result["run_id"], result["status"]) == ("resume", run["id"], "finished")
    after = Leaderboard(db_path).get_run(run["id"])
    assert after["status"] == "finished" and after["pid"] != run["pid"]  # retagged by the resuming worker


def test_force_redoes_everything_as_new_runs(cli, db_path):
    args = ["sweep", *TINY_RUN, "--selector", "smallest", "--seeds", "0-1", "--jobs", "2", "--json"]
    assert cli(*args).exit_code == 0
    forced = cli(*args, "--force")
    assert forced.exit_code == 0
    assert sweep_json(forced)["plan"]["new"] == 2
    runs = rows(db_path)
    assert len(runs) == 4 and {r["status"] for r in runs} == {"finished"}
    assert sorted(r["seed"] for r in runs) == [0, 0, 1, 1]


def _wait_for(predicate, timeout=90.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def _read(db, sql):
    if not db.exists():
        return []
    try:
        with sqlite3.connect(db, timeout=5) as conn:
            return conn.execute(sql).fetchall()
    except sqlite3.OperationalError:  # no table or column yet
        return []


@pytest.mark.fault
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_marks_running_runs_interrupted_and_a_rerun_resumes_them(db_path, plugin, signum):
    args = [sys.executable, "-m", "harness", "sweep", *TINY_RUN, "--trainer", "native,native_slow",
            "--seeds", "0-1", "--jobs", "2", "--plugin", plugin, "--db", str(db_path)]
    env = dict(os.environ, SWEEP_SLOW_SECONDS="60")
    process = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        # Wait for a finished run and both slow ones past their first checkpoint (iteration 0 recorded).
        ready = _wait_for(lambda: _read(db_path, "select 1 from runs where status = 'finished'")
                          and len(_read(db_path, "select distinct id from runs join iterations on run_id = id "
                                                 "where status = 'running' and trainer = 'native_slow'")) == 2)
        assert ready, "the sweep never got going"
        finished_before = {r[0] for r in _read(db_path, "select id from runs where status = 'finished'")}
        os.killpg(process.pid, signum)  # what Ctrl-C in a terminal does, or a scheduler stopping the job
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 130, stderr
    runs = rows(db_path)
    statuses = {r["id"]: r["status"] for r in runs}
    assert "running" not in statuses.values(), statuses
    assert all(statuses[run_id] == "finished" for run_id in finished_before)
    interrupted = {run_id for run_id, status in statuses.items() if status == "interrupted"}
    assert interrupted
    for pid in {r["pid"] for r in runs}:  # every worker is gone with the sweep
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)

    rerun = subprocess.run([*args, "--json"], env=dict(os.environ, SWEEP_SLOW_SECONDS="0"),
                           capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    results = json.loads(rerun.stdout.strip().splitlines()[-1])["results"]
    assert {r["run_id"] for r in results if r["action"] == "resume"} == interrupted
    final = rows(db_path)
    assert len(final) == 4 and {r["status"] for r in final} == {"finished"}
    reliability.fault(f"{signal.Signals(signum).name} to a running sweep, then re-run", expected_rows=4,
                      recorded_rows=len(final))


def test_help_teaches_and_planning_imports_no_torch(cli, tmp_path):
    text = cli("sweep", "--help").output
    for phrase in ("harness sweep --selector smallest,random,largest --seeds 0-9", "weights=1,1,2|2,1,1",
                   "resumed from its last checkpoint", "redone as a new run", "docs/reproduction.md"):
        assert phrase in text, phrase
    probe = ("import sys\nfrom harness.cli import main\nsys.argv = ['harness', *sys.argv[1:]]\n"
             "try:\n    main()\nexcept SystemExit:\n    pass\n"
             "print('TORCH=' + str('torch' in sys.modules), file=sys.stderr)\n")
    result = subprocess.run([sys.executable, "-c", probe, "sweep", *TINY_RUN, "--selector", "smallest,random",
                             "--seeds", "0-4", "--dry-run", "--db", str(tmp_path / "none.db")],
                            capture_output=True, text=True)
    assert "TORCH=False" in result.stderr, result.stderr
    assert not (tmp_path / "none.db").exists()


def test_judges_are_grid_axes_too(registry):
    cells = expand_grid(registry, GridSpec.from_cli(registry, selector="map", options=["proxy.fidelity=0.8,0.5"]))
    assert [c.key for c in cells] == ["proxy.fidelity=0.8", "proxy.fidelity=0.5"]
    assert {c.config.proxy_judge.name for c in cells} == {"synthetic_proxy"}


def test_a_grid_mixing_selectors_leaves_a_judge_out_of_the_cells_that_do_not_use_it():
    """Options for the proxy judge (or a named annotator) reach the cells whose selectors use it and are left out
    of the others; when no cell uses the judge they are still refused, naming why."""
    registry = load_registry()
    random_cell, map_cell = expand_grid(registry, GridSpec.from_cli(
        registry, selector="random,map", options=["proxy_judge.fidelity=0.9"]))
    assert random_cell.config.proxy_judge is None
    assert map_cell.config.proxy_judge.settings["fidelity"] == 0.9
    with pytest.raises(UsageError, match="no cell reads its scores"):
        expand_grid(registry, GridSpec.from_cli(registry, selector="random,smallest",
                                                options=["proxy_judge.fidelity=0.9"]))
    # written for many grids at once (a study's testbed section): a grid that never uses the judge is not refused
    (cell,) = expand_grid(registry, GridSpec.from_cli(registry, selector="random", options=["proxy_judge.fidelity=0.9"]),
                          may_go_unused=frozenset({"proxy_judge"}))
    assert cell.config.proxy_judge is None
    plain, gold = expand_grid(registry, GridSpec.from_cli(registry, selector="random,signedgap",
                                                         annotator="synthetic_gold"))
    assert plain.config.annotator.name == "synthetic_gold" and gold.config.annotator is None
