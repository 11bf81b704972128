"""Run one configuration end to end and keep its record.

:func:`execute` is what ``harness run`` and every sweep worker call. It:

- inserts the run in the leaderboard with status ``running``;
- records each iteration's row as it completes;
- checkpoints after every iteration under the run's directory;
- finally marks the row ``finished`` (with its final metrics, atomically), ``failed`` (with the
  traceback) or ``interrupted``.

:func:`resume` continues an unfinished run from its last checkpoint, under the
same run id, and ends with exactly the numbers an uninterrupted run would have had.

Under a multi-process launch (:mod:`harness.ranks`) only the main process does
the above; the other processes get the run id (and on resume its directory) from it, follow
the loop (scoring and training their share) and write nothing.
"""

from __future__ import annotations

import os
import re
import sqlite3
import sys
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import tracking
from harness.experiments import checkpoints
from harness.config import ROLES, Components, RunConfig, instantiate
from harness.errors import UnknownNameError, UsageError
from harness.interfaces import Judge
from harness.plugins import Registry
from harness.ranks import SINGLE, MainProcessStopped, Ranks

RUNS_DIR_ENV = "HARNESS_RUNS_DIR"
#: What a run id may look like (the store makes ``r`` and ten hex digits); anything else is refused before it is
#: used as a directory name.
RUN_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


@dataclass
class RunOutcome:
    """How one run ended: ``finished``, ``failed``, ``interrupted`` or ``awaiting_labels``.

    ``awaiting`` (for ``awaiting_labels``) says which iteration's pairs went
    out for labelling, how many, and the file they are in.
    """

    run_id: str
    status: str
    final: dict[str, Any] | None = None
    iterations: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    awaiting: dict[str, Any] | None = None
    unrecorded: str | None = None  # the journal holding what the leaderboard could not take, and why
    unrecorded_reason: str | None = None


#: Why a run's writes go to its journal when a sweep's driver records it (a worker never opens the leaderboard).
DRIVER_RECORDS = "recorded by the sweep's driver: this worker does not open the leaderboard"


def runs_root(db_path: Path) -> Path:
    """Where run directories live: ``$HARNESS_RUNS_DIR``, else ``runs/`` beside the database."""
    configured = os.environ.get(RUNS_DIR_ENV, "").strip()
    return Path(configured) if configured else Path(db_path).resolve().parent / "runs"


def run_record(config: RunConfig, components: Components, registry: Registry) -> dict[str, Any]:
    """The leaderboard row of a new run: config, seeds, components with plugin versions, provenance."""
    from harness import __version__
    from harness.provenance import command_line, git_commit, library_versions

    plugins = {}
    for role, choice in config.choices().items():
        registered = registry.get(ROLES[role], choice.name)
        plugins[role] = {"name": registered.name, "plugin": registered.plugin.name,
                         "version": registered.plugin.version}
        component = getattr(components, role, None)
        sources = component.sources() if component is not None else {}
        if sources:  # e.g. the Hub commit a model id resolved to (Component.sources)
            plugins[role]["sources"] = dict(sources)
    for column in components.scorers:  # explicit_reward comes from a judge, recorded with the judges
        registered = registry.get("scorer", column)
        plugins[f"scorer:{column}"] = {"name": column, "plugin": registered.plugin.name,
                                       "version": registered.plugin.version}
    return {
        "config": config.to_dict(),
        "config_hash": config.strategy_hash(),
        "seed": config.seed,
        "world_seed": config.world_seed,
        "testbed": config.testbed.name,
        "instance_selector": config.instance_selector.name,
        "corpus_selector": config.corpus_selector.name,
        "allocator": config.allocator.name,
        "trainer": config.trainer.name,
        "scorer_columns": ",".join(components.score_columns),
        "explicit_source": components.explicit_source or "none",
        "explicit_judge": components.explicit_judge().name if components.explicit_judge() else "none",
        "plugins": plugins,
        "versions": library_versions(),
        "git_commit": git_commit(),
        "command": command_line(),
        "iterations": config.iterations,
        "budget": config.budget,
        "keep": config.keep,
        "n_responses": config.n_responses,
        "harness_version": __version__,
    }


def execute(
    config: RunConfig,
    registry: Registry,
    *,
    db_path: Path | None,
    reporter: Any = None,
    on_row: Callable[[str, dict[str, Any]], None] | None = None,
    tags: Mapping[str, Any] | None = None,
    on_start: Callable[[str], None] | None = None,
    ranks: Ranks = SINGLE,
    components: Components | None = None,
    report_to: Sequence[str] = (),
    logging_dir: str | Path | None = None,
    runs_dir: str | Path | None = None,
) -> RunOutcome:
    """Run ``config`` as a new leaderboard run; see the module docstring.

    ``db_path`` None: this process never opens a leaderboard (a sweep's worker on another node, whose driver
    records the run): every write goes to the run's journal (:mod:`harness.experiments.journal`), which the
    caller hands back, and the run directory is ``runs_dir/RUN_ID``. Otherwise ``runs_dir`` overrides
    :func:`runs_root`.

    ``components`` are the config's instances when the caller already built
    them (:func:`harness.config.plan_run`); they are built here otherwise.

    ``report_to``: tracking backends (:mod:`harness.tracking`, checked with
    :func:`~harness.tracking.parse_report_to`), one tracker run named by the run
    id, tagged with ``tags["sweep_id"]``, its files under ``logging_dir`` (default:
    the run directory). The main process alone tracks. Tracking changes no number.

    ``tags`` are extra scalar columns of the run row (e.g. ``sweep_id``);
    ``on_start(run_id)`` is called once the row exists; ``on_row(run_id, row)``
    after each iteration is recorded. KeyboardInterrupt marks the run
    ``interrupted`` and propagates; any other exception marks it ``failed``.
    """
    from leaderboard.store import new_run_id

    components = components if components is not None else instantiate(registry, config)
    if not ranks.is_main:
        return _follow(ranks.share(None), config, components, ranks, restore=None)
    import secrets

    if db_path is None and runs_dir is None:
        raise ValueError("a run recorded by a driver (db_path None) needs runs_dir")
    root = Path(runs_dir) if runs_dir is not None else runs_root(db_path)
    token = secrets.token_hex(8)  # the run directory's owner mark, also on the run row
    record = {**run_record(config, components, registry), "runs_root": str(root), "run_dir_token": token,
              **dict(tags or {})}
    if ranks.parallel:  # the optimiser steps (and so the numbers) depend on how many processes trained
        record["versions"] = {**record["versions"], "processes": str(ranks.size)}
    if report_to:  # provenance only: not in the config, so the config hash is the same with or without it
        record["tracking"] = tracking.record(report_to, logging_dir)
    run_id = new_run_id()
    ranks.share(run_id)
    with tracking.tracking(report_to, run_id=run_id, run_dir=root / run_id, logging_dir=logging_dir,
                           tags=tracking.tracker_tags(tags), config=_tracked_config(record, run_id)) as session:
        outcome = _start(record, run_id, root, token, config, components, reporter, on_row, on_start, db_path, ranks)
        if session is not None:
            session.status = outcome.status
        return outcome


def _start(record, run_id, root, token, config, components, reporter, on_row, on_start, db_path, ranks) -> RunOutcome:
    """The new run's row, its directory's owner mark, then the loop (:func:`execute`)."""
    from harness.experiments.journal import Recorder
    from leaderboard.store import Leaderboard

    if db_path is None:
        board, failure = None, DRIVER_RECORDS
    else:
        try:
            board, failure = Leaderboard(db_path), None
        except sqlite3.OperationalError as exc:  # locked past the busy timeout, read-only, I/O error
            board, failure = None, f"{type(exc).__name__}: {exc}"
    recorder = Recorder(board, run_id, root / run_id, failure=failure)
    started_at = _utc_now()
    recorder.write("start", {"record": record, "started_at": started_at},
                   lambda: board.start_run(record, run_id=run_id, started_at=started_at))
    checkpoints.write_owner(root / run_id, run_id, token)
    if on_start is not None:
        on_start(run_id)
    return _drive(board, run_id, config, components, root / run_id, reporter, on_row, restore=None, db_path=db_path,
                  recorder=recorder, ranks=ranks)


def _tracked_config(record: Mapping[str, Any], run_id: str) -> dict[str, Any]:
    """What a tracker run shows as its config: the run's config and what identifies the run."""
    keys = ("config_hash", "seed", "world_seed", "testbed", "instance_selector", "corpus_selector", "allocator",
            "trainer", "sweep_id", "sweep_cell", "study", "study_grid", "study_variant", "git_commit",
            "harness_version")
    return {"run_id": run_id, **{key: record[key] for key in keys if record.get(key) is not None},
            "config": record["config"]}


def _follow(run_id: str, config: RunConfig, components: Components, ranks: Ranks, restore) -> RunOutcome:
    """A process other than the main one: the loop's scoring and training, nothing recorded."""
    from harness.loop import run_experiment

    try:
        result = run_experiment(config, components, restore=restore, ranks=ranks)
    except MainProcessStopped as stop:
        return RunOutcome(run_id, stop.kind, error=stop.message)
    return RunOutcome(run_id, "finished", result.final, result.iterations)


def _utc_now() -> str:
    import datetime

    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")


def resume(
    run_id: str,
    registry: Registry,
    *,
    db_path: Path,
    reporter: Any = None,
    on_row: Callable[[str, dict[str, Any]], None] | None = None,
    ranks: Ranks = SINGLE,
    report_to: Sequence[str] | None = None,
    logging_dir: str | Path | None = None,
) -> RunOutcome:
    """Continue the unfinished run ``run_id`` from its last checkpoint.

    ``report_to``/``logging_dir``: tracking as in :func:`execute`; None (not
    given) continues with what the run was started with (its ``tracking`` record),
    into the same tracker run.

    UsageError (exit 2) for an unknown or finished run, or one whose
    components are no longer installed; CheckpointError for a missing or
    damaged checkpoint.
    """
    from leaderboard.store import Leaderboard

    if not ranks.is_main:  # the main process checks everything; this one loads the same checkpoint
        run_id, run_dir, stored = ranks.share(None)
        config = RunConfig.from_dict(stored)
        return _follow(run_id, config, instantiate(registry, config), ranks,
                       restore=lambda world: checkpoints.load(Path(run_dir), world))
    if not Path(db_path).exists():
        raise UsageError(f"no leaderboard database at {db_path}; pass the --db the run was recorded in")
    if not RUN_ID.fullmatch(run_id):  # never a path: an id the OS would refuse as a directory name fails here
        raise UsageError(f"{run_id[:60]!r}{'...' if len(run_id) > 60 else ''} is not a run id (ids are letters, "
                         "digits, '-' and '_', at most 64 of them, e.g. r8a54543680); `harness leaderboard --all "
                         f"--db {db_path}` lists them")
    board = Leaderboard(db_path, create=False)
    run = board.get_run(run_id)
    from harness.experiments.journal import JOURNAL

    if run is None:
        journal = runs_root(db_path) / run_id / JOURNAL
        if journal.exists():
            raise UsageError(f"run {run_id} never reached the leaderboard; its record is in {journal}: "
                             f"record it first (harness leaderboard import {journal.parent} --db {db_path})")
        known = [r["id"] for r in board.runs(status=None)]
        raise UnknownNameError("run", run_id, known)
    if run["status"] == "finished":
        raise UsageError(f"run {run_id} is already finished; nothing to resume")
    config = RunConfig.from_dict(run["config"])
    components = instantiate(registry, config)
    run_dir = Path(run.get("runs_root") or runs_root(db_path)) / run_id
    if (run_dir / JOURNAL).exists():
        raise UsageError(f"run {run_id} has writes the leaderboard did not take, kept in {run_dir / JOURNAL}; "
                         f"record them first (harness leaderboard import {run_dir} --db {db_path}), then resume")
    directory = checkpoints.latest(run_dir)
    if directory is None:
        raise UsageError(
            f"run {run_id} has no checkpoint under {run_dir} (it stopped before pi_0 was evaluated); "
            "start it again with harness run"
        )
    keep_through = int(directory.name.rsplit("-", 1)[1])
    _check_directory_owner(run, run_dir, db_path)
    _check_against_database(board, run_id, run_dir, db_path)
    if run["status"] == "awaiting_labels":
        _check_labels_complete(board, run_id, keep_through + 1)
    stored = run.get("tracking") if isinstance(run.get("tracking"), dict) else {}
    if report_to is None:
        try:
            report_to = tracking.parse_report_to(stored.get("report_to") or ())
        except UsageError as exc:
            raise UsageError(f"run {run_id} was started with tracking, which cannot go on here: {exc} "
                             "(or resume with --report-to none)") from None
        logging_dir = logging_dir or stored.get("logging_dir")
    board.reopen_run(run_id, keep_through=keep_through)
    ranks.share((run_id, str(run_dir), run["config"]))

    def restore(world: Any):
        state = checkpoints.load(run_dir, world)
        session = tracking.active()
        if session is not None:  # the trainer's steps go on from where the kept iterations ended
            session.train_step = sum(int(row.get("train_steps") or 0) for row in state.rows)
        recorded = {row["iteration"] for row in board.iterations(run_id)}
        for row in state.rows:  # rows checkpointed but killed before they were recorded
            if row["iteration"] not in recorded:
                board.record_iteration(run_id, row)
                _track_row(row)
        return state

    with tracking.tracking(report_to, run_id=run_id, run_dir=run_dir, logging_dir=logging_dir,
                           tags=tracking.tracker_tags(run), config=_tracked_config(run, run_id)) as session:
        outcome = _drive(board, run_id, config, components, run_dir, reporter, on_row, restore=restore,
                         db_path=db_path, ranks=ranks)
        if session is not None:
            session.status = outcome.status
        return outcome


def blame(exc: BaseException, components: Components) -> str | None:
    """Which component of the run raised ``exc``: the innermost traceback frame in a component's module.

    E.g. ``"instance selector 'crashy' (/home/me/crashy.py)"``; None when the error
    came from the harness itself (or a library it called directly).
    """
    owners = [(role, component, type(component).__module__) for role, component in _components_by_role(components)]
    for frame, _ in reversed(list(traceback.walk_tb(exc.__traceback__))):
        name = frame.f_globals.get("__name__", "")
        for role, component, module in owners:
            if name == module or name.startswith(module + "."):  # a package's submodules (a testbed's world)
                source = getattr(sys.modules.get(module), "__file__", None) or module
                return f"{role.replace('_', ' ')} {component.name!r} ({source})"
    return None


def _components_by_role(components: Components) -> list[tuple[str, Any]]:
    roles = ("instance_selector", "corpus_selector", "allocator", "trainer", "testbed")
    found = [(role, getattr(components, role)) for role in roles]
    found += list(components.judges().items())
    found += [(f"scorer {column}", scorer) for column, scorer in components.scorers.items()]
    return found


def _check_labels_complete(board: Any, run_id: str, iteration: int) -> None:
    """UsageError (nothing changed) while the pairs a run stopped for still miss labels."""
    from leaderboard.labels import status

    for item in status(board, run_id):
        if item.iteration == iteration and item.missing:
            raise UsageError(
                f"run {run_id} awaits {item.missing} of {item.requested} labels for iteration {iteration}; "
                f"import them first: harness label import {run_id} FILE (see harness label status {run_id})"
            )


def _bought_labels(board: Any, run_id: str) -> dict[int, list[str]] | None:
    """The ids of the labels (and gold scores) ``run_id`` holds, per iteration; None without a readable board."""
    if board is None:
        return None
    try:
        cursor = board.conn.execute("SELECT iteration, id FROM labels WHERE run_id = ? AND "
                                    "(label IS NOT NULL OR score IS NOT NULL)", (run_id,))
        bought: dict[int, list[str]] = {}
        for iteration, label_id in cursor:
            bought.setdefault(int(iteration), []).append(str(label_id))
    except sqlite3.Error:
        return None
    return bought


def _check_directory_owner(run: Mapping[str, Any], run_dir: Path, db_path: Path) -> None:
    """UsageError when ``run_dir`` was made for another run (another database's, or another id)."""
    token = run.get("run_dir_token")
    owner = checkpoints.read_owner(run_dir)
    if token is None or owner is None:
        return  # runs recorded before directories were marked
    if owner.get("run_id") != run["id"] or owner.get("token") != token:
        raise UsageError(
            f"run directory {run_dir} belongs to run {owner.get('run_id')} (mark {owner.get('token')}), not to "
            f"run {run['id']} of {db_path} (mark {token}): another database's run wrote it. Resume that run with "
            "its own database, or point HARNESS_RUNS_DIR at this run's own directory"
        )


def _check_against_database(board: Any, run_id: str, run_dir: Path, db_path: Path) -> None:
    """UsageError (nothing changed) unless the latest checkpoint's history is in the database.

    Its iterations (all but the last, which may have been killed between checkpoint and
    record), its ledger per iteration and, for format-2 checkpoints, the ids of the labels it
    had bought must all be in ``iterations`` and ``labels`` for ``run_id``. A database
    restored from a backup, or a run directory from another copy of it, fails here instead
    of finishing a run without its labels.
    """
    import warnings

    from leaderboard.labels import count_labels

    state = checkpoints.saved_state(run_dir)
    name = f"{run_dir / ('checkpoint-' + str(state['iteration']))}"
    fix = (f"the run directory and the database {db_path} come from different moments (a restored backup, or "
           "a copy of the database): put back the run directory that belongs to this database, or the database "
           "that belongs to this run directory, or start the run again with harness run")
    recorded = {int(row["iteration"]) for row in board.iterations(run_id)}
    missing = sorted(set(range(state["iteration"])) - recorded)
    if missing:
        raise UsageError(f"{name} continues from iteration {state['iteration']}, but the database has no row "
                         f"for iteration(s) {', '.join(map(str, missing))} of run {run_id}; {fix}")
    held = _bought_labels(board, run_id) or {}
    counted = count_labels(board, run_id)
    for iteration, charged in sorted(state["charged"].items()):
        have = len(held.get(iteration, []))
        if have != charged:
            raise UsageError(f"{name} bought {charged} labels in iteration {iteration}, but the database holds "
                             f"{have} labelled rows for it ({counted.get(iteration, 0)} rows in all) for run "
                             f"{run_id}; {fix}")
    if state["labels"] is None:
        warnings.warn(f"{name} is an older checkpoint without label ids: checked on its iterations and ledger only",
                      RuntimeWarning, stacklevel=2)
        return
    for iteration, ids in sorted(state["labels"].items()):
        absent = sorted(set(ids) - set(held.get(iteration, [])))
        if absent:
            raise UsageError(f"{name} trained on {len(absent)} label(s) of iteration {iteration} that the database "
                             f"does not hold for run {run_id} (e.g. {absent[0]}); {fix}")


def _drive(board, run_id, config, components, run_dir, reporter, on_row, restore, db_path, recorder=None,
           ranks: Ranks = SINGLE) -> RunOutcome:
    from leaderboard.judgements import JudgementCache

    # Judges that pay per call keep every answer in the database (harness.interfaces.Judge.use_cache).
    paying = [j for j in components.judges().values() if type(j).use_cache is not Judge.use_cache]
    cache = None
    if paying and db_path is not None:  # a worker whose driver records the run keeps answers in memory
        try:
            cache = JudgementCache(db_path)
        except sqlite3.OperationalError:  # locked or read-only: the judges keep their answers in memory only
            cache = None
    for judge in paying:
        if cache is not None:
            judge.use_cache(cache)
    try:
        return _run_loop(board, run_id, config, components, run_dir, reporter, on_row, restore, recorder, ranks)
    finally:
        if cache is not None:
            cache.close()


def _run_loop(board, run_id, config, components, run_dir, reporter, on_row, restore, recorder, ranks) -> RunOutcome:
    from harness.experiments.labels import LabelDesk
    from harness.labelling import AwaitingLabels
    from harness.loop import run_experiment
    from harness.experiments.journal import Recorder

    recorder = recorder or Recorder(board, run_id, run_dir)

    def record(row: dict[str, Any]) -> None:
        recorder.write("iteration", {"row": row}, lambda: board.record_iteration(run_id, row))
        _track_row(row)
        if on_row is not None:
            on_row(run_id, row)

    def checkpoint(world: Any, state: Any) -> None:
        if hasattr(world, "save_policy") and hasattr(world, "load_policy"):
            checkpoints.save(run_dir, world, state, labels=_bought_labels(board, run_id),
                             keep=config.keep_checkpoints)

    try:
        result = run_experiment(
            config, components, reporter=reporter, on_iteration=record, checkpoint=checkpoint, restore=restore,
            desk=LabelDesk(board, run_id, run_dir, recorder), ranks=ranks,
        )
    except AwaitingLabels as stop:
        recorder.write("await", {}, lambda: board.await_labels(run_id))
        awaiting = {"iteration": stop.iteration, "pairs": stop.requested, "file": str(stop.path)}
        return _noting(recorder, RunOutcome(run_id, "awaiting_labels", awaiting=awaiting))
    except KeyboardInterrupt:
        note = "interrupted (KeyboardInterrupt); resume with harness run --resume"
        recorder.write("fail", {"status": "interrupted", "error": note},
                       lambda: board.fail_run(run_id, "interrupted", note))
        raise
    except Exception as exc:
        error = traceback.format_exc()
        culprit = blame(exc, components)
        if culprit:
            error = f"{culprit} raised {type(exc).__name__}: {exc}\n\n{error}"
        recorder.write("fail", {"status": "failed", "error": error}, lambda: board.fail_run(run_id, "failed", error))
        return _noting(recorder, RunOutcome(run_id, "failed", error=error))
    recorder.write("finish", {"final": result.final}, lambda: board.finish_run(run_id, result.final))
    return _noting(recorder, RunOutcome(run_id, "finished", result.final, result.iterations))


def _track_row(row: Mapping[str, Any]) -> None:
    """The iteration's row to the run's tracker, if it has one (``--report-to``)."""
    session = tracking.active()
    if session is not None:
        session.log_iteration(row)


def _noting(recorder, outcome: RunOutcome) -> RunOutcome:
    """``outcome`` with the journal's path when the leaderboard stopped taking the run's writes."""
    if recorder.failure is not None:
        outcome.unrecorded = str(recorder.journal)
        outcome.unrecorded_reason = recorder.failure
    return outcome
