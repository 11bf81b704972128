"""Experiment tracking: a run's metrics sent to TensorBoard or Weights & Biases as it goes.

``harness run --report-to tensorboard`` (or ``wandb``, or both) opens one
tracker run per leaderboard run, named by the run id and tagged with the sweep
id when the run belongs to a sweep. Two kinds of metrics go to it:

* the loop's per-iteration row (win rate, gold reward, KL, labels, the
  selected pairs' diagnostics, timings), under ``loop/``, at step = iteration;
* the trainer's per-optimiser-step log, under ``train/``, at a step counted
  across the whole run (iteration 2's first step follows iteration 1's last):
  a trainer calls :func:`log_train_step` (the ``trl`` trainer forwards TRL's
  own per-step log; the ``native`` trainer its loss).

The names are TRL's ``report_to`` names. Only backends with an offline test are
accepted (:data:`BACKENDS`): TensorBoard's event files are read back, and
W&B runs with ``WANDB_MODE=offline``. Each backend is an extra of the package
(``pip install 'pairsel-harness[tensorboard]'``) and is imported only when a
run uses it; :func:`parse_report_to` refuses an unknown or uninstalled one
(:class:`~harness.errors.UsageError`, exit 2) before anything is made.

Tracking is not part of a run's config: it changes none of its numbers nor its
config hash (like ``--threads``). The run row records what was used
(``tracking_json``). Under a multi-process launch only the main process logs.

Why the ``trl`` trainer does not hand ``report_to`` to TRL: transformers'
``TensorBoardCallback`` writes at the trainer's ``global_step``, which starts
again at 1 on every call (one per iteration), into a folder under the call's
temporary ``output_dir``; its ``WandbCallback`` reuses an open ``wandb.run``
but re-keys every metric of the run (``define_metric("*",
step_metric="train/global_step")``), the loop's included. Forwarding TRL's
per-step log to this module's tracker keeps one run with one step axis.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import UsageError

NONE = "none"
"""``--report-to none``: no tracking (the default)."""

#: What TRL's ``report_to`` also names, refused here for want of an offline test.
UNTESTED = ("mlflow", "trackio", "comet_ml", "clearml", "dagshub", "dvclive", "flyte", "neptune", "swanlab",
            "azure_ml", "codecarbon", "all")


@dataclass(frozen=True)
class Backend:
    """A tracking backend: its ``--report-to`` name, the extra that installs it, the module it needs."""

    name: str
    extra: str
    module: str
    what: str

    def installed(self) -> bool:
        try:
            return importlib.util.find_spec(self.module) is not None
        except (ImportError, ValueError):
            return False

    def install_hint(self) -> str:
        return f"pip install 'pairsel-harness[{self.extra}]'"


#: The backends ``--report-to`` accepts, by name.
BACKENDS: dict[str, Backend] = {
    "tensorboard": Backend("tensorboard", "tensorboard", "tensorboard",
                           "TensorBoard event files (torch.utils.tensorboard)"),
    "wandb": Backend("wandb", "wandb", "wandb", "Weights & Biases (WANDB_MODE=offline writes a local run)"),
}


def parse_report_to(values: Sequence[str] | str | None) -> tuple[str, ...]:
    """``--report-to`` values (repeatable, each a comma list) as backend names, in order, without repeats.

    ``none`` (alone) means no tracking. UsageError for an unknown backend, one
    TRL knows but this harness does not test, or one that is not installed
    (naming the extra to install).
    """
    if values is None:
        return ()
    if isinstance(values, str):
        values = [values]
    names: list[str] = []
    for value in values:
        for name in str(value).split(","):
            name = name.strip().lower()
            if name and name not in names:
                names.append(name)
    if NONE in names:
        if len(names) > 1:
            others = ", ".join(name for name in names if name != NONE)
            raise UsageError(f"--report-to none means no tracking; it cannot go with {others}")
        return ()
    known = ", ".join([NONE, *BACKENDS])
    for name in names:
        if name in UNTESTED:
            raise UsageError(f"--report-to {name}: not supported by this harness (only backends with an offline "
                             f"test are); choose from {known}")
        if name not in BACKENDS:
            raise UsageError(f"--report-to {name!r}: unknown tracking backend; choose from {known}")
        backend = BACKENDS[name]
        if not backend.installed():
            raise UsageError(f"--report-to {name} needs the {backend.extra} extra, which is not installed "
                             f"(no module {backend.module!r}): {backend.install_hint()}")
    return tuple(names)


def metrics_of(row: Mapping[str, Any]) -> dict[str, float]:
    """The finite numbers of ``row`` (booleans as 0/1); text, lists and None left out."""
    out: dict[str, float] = {}
    for key, value in row.items():
        if isinstance(value, bool):
            value = int(value)
        if isinstance(value, (int, float)) and math.isfinite(float(value)):
            out[str(key)] = float(value)
    return out


class Tracker:
    """One backend's run: :meth:`start` once, :meth:`log` any number of times, :meth:`finish` once."""

    name = ""

    def start(self, run_name: str, tags: Sequence[str], config: Mapping[str, Any]) -> None:
        raise NotImplementedError

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        raise NotImplementedError

    def finish(self, status: str) -> None:
        raise NotImplementedError


class TensorBoardTracker(Tracker):
    """Event files in ``directory`` (``tensorboard --logdir`` on it, or on a folder above it)."""

    name = "tensorboard"

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.writer = None

    def start(self, run_name, tags, config):
        from torch.utils.tensorboard import SummaryWriter

        self.directory.mkdir(parents=True, exist_ok=True)
        self.writer = SummaryWriter(log_dir=str(self.directory))
        self.writer.add_text("run", run_name)
        if tags:
            self.writer.add_text("tags", ", ".join(tags))
        self.writer.add_text("config", "```\n" + json.dumps(config, indent=2, sort_keys=True, default=str) + "\n```")
        self.writer.flush()

    def log(self, metrics, step):
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, global_step=int(step))
        self.writer.flush()

    def finish(self, status):
        if self.writer is not None:
            self.writer.add_text("status", status)
            self.writer.close()
            self.writer = None


class WandbTracker(Tracker):
    """A W&B run whose id and name are the leaderboard run id (a resumed run continues it).

    The project is ``$WANDB_PROJECT``, else ``pairsel-harness``; the mode is
    W&B's own (``WANDB_MODE=offline`` writes a local run to sync later). The
    run's files go to ``$WANDB_DIR``, else ``directory``. W&B does not capture
    the console (the harness keeps stdout for piped output).
    """

    name = "wandb"

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.run = None

    def start(self, run_name, tags, config):
        import wandb

        folder = os.environ.get("WANDB_DIR") or str(self.directory)
        Path(folder).mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT") or "pairsel-harness", id=run_name, name=run_name,
            tags=list(tags), group=(list(tags) or [None])[0], config=dict(config), dir=folder, resume="allow",
            reinit="finish_previous",
            settings=wandb.Settings(console="off", silent=True, x_disable_stats=True, disable_git=True,
                                    save_code=False),
        )
        # the two step axes: the loop's metrics by iteration, the trainer's by its run-wide step
        self.run.define_metric("loop/iteration")
        self.run.define_metric("loop/*", step_metric="loop/iteration")
        self.run.define_metric("train/step")
        self.run.define_metric("train/*", step_metric="train/step")

    def log(self, metrics, step):
        axis = "loop/iteration" if any(key.startswith("loop/") for key in metrics) else "train/step"
        self.run.log({**metrics, axis: int(step)})

    def finish(self, status):
        if self.run is not None:
            self.run.summary["status"] = status
            self.run.finish(exit_code=0 if status in ("finished", "awaiting_labels") else 1)
            self.run = None


def tensorboard_dir(run_dir: Path, run_id: str, logging_dir: str | Path | None) -> Path:
    """Where a run's TensorBoard event files go: ``LOGGING_DIR/RUN_ID`` with ``--logging-dir``, else
    ``RUN_DIR/tensorboard``."""
    return Path(logging_dir) / run_id if logging_dir else Path(run_dir) / "tensorboard"


def wandb_dir(run_dir: Path, run_id: str, logging_dir: str | Path | None) -> Path:
    """Where a run's W&B files go unless ``$WANDB_DIR`` says: ``LOGGING_DIR/RUN_ID``, else ``RUN_DIR``."""
    return Path(logging_dir) / run_id if logging_dir else Path(run_dir)


def make_tracker(name: str, run_dir: Path, run_id: str, logging_dir: str | Path | None) -> Tracker:
    if name == "tensorboard":
        return TensorBoardTracker(tensorboard_dir(run_dir, run_id, logging_dir))
    if name == "wandb":
        return WandbTracker(wandb_dir(run_dir, run_id, logging_dir))
    raise UsageError(f"unknown tracking backend {name!r}")


class Tracking:
    """The trackers of one run: every metric goes to each of them.

    :meth:`log_iteration` takes the loop's rows; :meth:`log_train_step` a
    trainer's per-step log, numbered across the whole run.
    """

    def __init__(self, trackers: Sequence[Tracker]):
        self.trackers = list(trackers)
        self.train_step = 0
        self.status = "finished"  # how the run ended, as its tracker runs are closed (the runner sets it)

    def start(self, run_name: str, tags: Sequence[str], config: Mapping[str, Any]) -> None:
        started: list[Tracker] = []
        try:
            for tracker in self.trackers:
                tracker.start(run_name, tags, config)
                started.append(tracker)
        except Exception as exc:
            for tracker in started:
                tracker.finish("failed")
            raise UsageError(f"--report-to {tracker.name} could not start its run: "
                             f"{type(exc).__name__}: {exc}") from exc

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        for tracker in self.trackers:
            tracker.log(metrics, step)

    def log_iteration(self, row: Mapping[str, Any]) -> None:
        """The loop's row of one iteration (iteration 0: pi_0), under ``loop/``."""
        metrics = {f"loop/{key}": value for key, value in metrics_of(row).items() if key != "iteration"}
        self.log(metrics, int(row.get("iteration", 0)))

    def log_train_step(self, metrics: Mapping[str, Any]) -> None:
        """One optimiser step of the trainer, under ``train/``, at the next run-wide step."""
        self.train_step += 1
        values = {f"train/{key}": value for key, value in metrics_of(metrics).items()}
        if values:
            self.log(values, self.train_step)

    def finish(self, status: str) -> None:
        for tracker in self.trackers:
            try:
                tracker.finish(status)
            except Exception:  # a tracker that cannot close changes nothing of the run
                pass


_ACTIVE: Tracking | None = None


def active() -> Tracking | None:
    """The tracking of the run under way in this process, or None (no ``--report-to``, or not the main process)."""
    return _ACTIVE


def log_train_step(metrics: Mapping[str, Any]) -> None:
    """For trainers: one optimiser step's metrics (e.g. ``{"loss": 0.69}``); nothing without tracking."""
    if _ACTIVE is not None:
        _ACTIVE.log_train_step(metrics)


def tracker_tags(tags: Mapping[str, Any] | None) -> list[str]:
    """The tracker run's tags from the run row's tags: the sweep id, and the study's name for a study's run."""
    tags = tags or {}
    return [str(tags[key]) for key in ("sweep_id", "study") if tags.get(key)]


@contextmanager
def tracking(report_to: Sequence[str], *, run_id: str, run_dir: Path, logging_dir: str | Path | None,
             tags: Sequence[str], config: Mapping[str, Any]) -> Iterator[Tracking | None]:
    """A tracker run for ``run_id`` with every backend of ``report_to`` open while inside (None if empty).

    While inside, :func:`active` returns it (trainers log their steps through it). On leaving, the tracker
    runs are closed with :attr:`Tracking.status` (the caller sets the run's outcome there), ``failed`` on an
    exception, ``interrupted`` on Ctrl-C. UsageError when a backend cannot start its run.
    """
    global _ACTIVE
    if not report_to:
        yield None
        return
    session = Tracking([make_tracker(name, run_dir, run_id, logging_dir) for name in report_to])
    session.start(run_id, tags, config)
    previous, _ACTIVE = _ACTIVE, session
    status = "failed"
    try:
        yield session
        status = session.status
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    finally:
        _ACTIVE = previous
        session.finish(status)


def record(report_to: Sequence[str], logging_dir: str | Path | None) -> dict[str, Any]:
    """What the run row keeps of its tracking (``tracking_json``): the backends, the folder, their versions."""
    import importlib.metadata

    versions = {}
    for name in report_to:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return {"report_to": list(report_to), "logging_dir": str(logging_dir) if logging_dir else None,
            "versions": versions}
