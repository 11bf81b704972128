"""Sweeps: a grid of run configurations times a list of seeds, each cell × seed one leaderboard run.

This module holds what ``harness sweep`` decides before anything runs, and
what a worker does for one run; it imports neither torch nor an executor:

- :func:`parse_seeds` and :func:`parse_names` read ``--seeds 0-4`` and
  ``--selector smallest,random``;
- :func:`expand_grid` turns a :class:`GridSpec` into validated :class:`Cell`
  objects (every cell goes through ``build_config``, which checks the budget
  plan, before anything starts; a bad cell is a UsageError naming it);
- :func:`sweep_id` is a hash of the normalised grid, so the same command (or
  one that means the same) always gets the same id;
- :func:`make_plan` reads the leaderboard and decides, for every cell × seed,
  whether to skip, resume, redo or start it (the rule is in its docstring);
- :func:`run_task` is what a worker process calls for one planned run: it goes
  through :func:`harness.experiments.runner.execute` or :func:`harness.experiments.runner.resume`,
  the one way runs are recorded.

Grid values: ``--selector``, ``--instance-selector``, ``--corpus-selector``,
``--allocator``, ``--trainer``, ``--testbed``, ``--gold-judge`` and ``--proxy-judge`` take comma lists; so does
``-o KEY=V1,V2``. For a list-valued option (``-o weights=1,1,2``) the commas
belong to the value, so its grid values are separated with ``|`` (or ``;``):
``-o "weights=1,1,2|2,1,1"``. ``|`` or ``;`` in any ``-o`` value always
separates grid values (``-o "beta=0.5|1"`` works too).
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import os
import re
import socket
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.config import EXTERNAL_ANNOTATOR, PREFIX_ALIASES, ROLES, RunConfig, parse_option_assignments, plan_run
from harness.errors import UnknownNameError, UsageError
from harness.plugins import Registry
from harness.reference_point import MARK, is_deployable
from harness.run_request import RUN_OPTIONS, RunRequest, sweep_options

#: Actions of a planned run. The first three start work; the last two do not.
RUN_ACTIONS = ("new", "resume", "redo")
IDLE_ACTIONS = ("skip", "busy")

GRID_SEPARATORS = re.compile(r"[|;]")
SEEDS_HELP = "write e.g. --seeds 0-4, --seeds 0,2,5 or --seeds 0-2,7 (non-negative integers)"

# Short labels of a config's fields in cell keys.
_ROLE_LABELS = {
    "testbed": "testbed",
    "instance_selector": "instance",
    "corpus_selector": "corpus",
    "allocator": "allocator",
    "trainer": "trainer",
    "gold_judge": "gold",
    "proxy_judge": "proxy",
    "annotator": "annotator",
    "evaluator": "evaluator",
}
_SCALARS = tuple(option.name for option in RUN_OPTIONS if option.kind == "shape")


# -- parsing ------------------------------------------------------------------


def parse_seeds(text: str) -> list[int]:
    """``"0-4"`` -> [0..4]; ``"0,2,5"``; ``"0-2,7"``. Sorted, without repeats; UsageError on bad input."""
    if text is None or not str(text).strip():
        raise UsageError(f"--seeds is empty; {SEEDS_HELP}")
    seeds: set[int] = set()
    for part in str(text).split(","):
        part = part.strip()
        match = re.fullmatch(r"(\d+)\s*(?:-\s*(\d+))?", part)
        if not match:
            raise UsageError(f"--seeds {text!r}: cannot read {part!r}; {SEEDS_HELP}")
        low = int(match.group(1))
        high = int(match.group(2)) if match.group(2) is not None else low
        if high < low:
            raise UsageError(
                f"--seeds {text!r}: range {part!r} runs backwards; write it low-high, e.g. {high}-{low}"
            )
        if high - low >= 100_000:
            raise UsageError(f"--seeds {text!r}: range {part!r} has {high - low + 1} seeds; that is surely a typo")
        seeds.update(range(low, high + 1))
    return sorted(seeds)


def format_seeds(seeds: Sequence[int]) -> str:
    """[0, 1, 2, 5] -> ``"0-2,5"`` (the inverse of :func:`parse_seeds`)."""
    parts: list[str] = []
    ordered = sorted(set(seeds))
    for _, group in itertools.groupby(enumerate(ordered), key=lambda pair: pair[1] - pair[0]):
        run = [value for _, value in group]
        parts.append(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}")
    return ",".join(parts)


def parse_names(text: str, flag: str) -> tuple[str, ...]:
    """``"smallest, random"`` -> ("smallest", "random"); UsageError for an empty or repeated name."""
    names = [name.strip() for name in str(text).split(",")]
    if not names or any(not name for name in names):
        raise UsageError(f"{flag} {text!r} has an empty name; write a comma list such as {flag} smallest,random")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise UsageError(f"{flag} {text!r} lists {', '.join(repeated)} twice; list each name once")
    return tuple(names)


def split_grid_values(key: str, value: str, *, list_valued: bool) -> tuple[str, ...]:
    """The grid values of ``-o key=value`` (see the module docstring for the rule)."""
    if GRID_SEPARATORS.search(value):
        values = [v.strip() for v in GRID_SEPARATORS.split(value)]
    elif list_valued:
        values = [value.strip()]
    else:
        values = [v.strip() for v in value.split(",")]
    if any(not v for v in values):
        sep = "|" if list_valued else ","
        raise UsageError(
            f"-o {key}={value}: a grid value is empty; separate values with {sep!r}"
            + (" (list-valued option: its own commas belong to one value)" if list_valued else "")
        )
    if len(set(values)) != len(values):
        raise UsageError(f"-o {key}={value}: a value is listed twice; list each value once")
    return tuple(values)


def _option_is_list_valued(registry: Registry, key: str, names: Mapping[str, Sequence[str]]) -> bool:
    """Whether any component of the grid that ``key`` may reach declares it as a list (tuple) option."""
    prefix, dot, name = key.rpartition(".")
    roles: Sequence[str] = PREFIX_ALIASES.get(prefix, (prefix,)) if dot else tuple(ROLES)
    for role in roles:
        kind = ROLES.get(role)
        if kind is None:
            continue  # an unknown prefix: build_config reports it
        for component in names.get(role, ()):
            try:
                cls = registry.get(kind, component).cls
            except UnknownNameError:
                continue
            if any(option.name == name and option.type is tuple for option in cls.options):
                return True
    return False


# -- the grid -----------------------------------------------------------------


@dataclass(frozen=True)
class GridSpec:
    """What a sweep command asked for: the values of every grid axis, and the fixed run options.

    ``values`` holds every option of :func:`harness.run_request.sweep_options`:
    a tuple of values for a grid option (``selector``: ``("smallest", "random")``;
    None where the option was not given and has no default), one value for the
    others (``iterations``, ``world_seed``, ...). ``options`` holds the ``-o``
    axes as ``(key, values)``. Options read as attributes: ``spec.selector``.
    """

    values: Mapping[str, Any]
    options: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def __getattr__(self, name: str) -> Any:
        values = self.__dict__.get("values", {})
        if name in values:
            return values[name]
        raise AttributeError(name)

    @classmethod
    def from_cli(cls, registry: Registry, **given: Any) -> GridSpec:
        """Parse the comma lists of a command line (or a study grid); UsageError on malformed input.

        ``given`` takes every option of :func:`harness.run_request.sweep_options`
        by name: comma strings for grid options, values for the others, and
        ``options``, the ``-o KEY=V1,V2`` assignments.
        """
        declared = {option.name: option for option in sweep_options()}
        unknown = sorted(set(given) - set(declared))
        if unknown:
            raise TypeError(f"not sweep options: {', '.join(unknown)} (see harness.run_request.RUN_OPTIONS)")
        values: dict[str, Any] = {}
        for name, option in declared.items():
            if name == "options":
                continue
            value = given.get(name, option.default)
            if option.grid:
                values[name] = None if value is None else parse_names(value, option.flag)
            elif name == "world_seed":
                values[name] = option.check(value)
            else:
                values[name] = value  # checked per cell by build_config, which names the cell
        spec = cls(values)
        if spec.annotator is not None and EXTERNAL_ANNOTATOR in spec.annotator:
            raise UsageError(
                "--annotator external stops each run for people to label its pairs, which a sweep cannot wait for: "
                "start such runs one at a time with harness run --annotator external"
            )
        names = spec.names_by_role(registry)
        axes: list[tuple[str, tuple[str, ...]]] = []
        seen: set[str] = set()
        for key, value in parse_option_assignments(given.get("options") or ()):
            if key in seen:
                raise UsageError(
                    f"-o {key} is given twice; give one -o per key, with its grid values in one list "
                    f"(e.g. -o {key}=V1,V2)"
                )
            seen.add(key)
            list_valued = _option_is_list_valued(registry, key, names)
            axes.append((key, split_grid_values(key, value, list_valued=list_valued)))
        return dataclasses.replace(spec, options=tuple(axes))

    def names_by_role(self, registry: Registry | None = None) -> dict[str, tuple[str, ...]]:
        """Every component name each role can take in this grid (judges: as given, else the testbeds' defaults)."""
        names = {
            "testbed": self.testbed,
            "instance_selector": self.instance_selector or self.selector,
            "corpus_selector": self.corpus_selector or self.selector,
            "allocator": self.allocator,
            "trainer": self.trainer,
        }
        for role, given, key in (("gold_judge", self.gold_judge, "gold"), ("proxy_judge", self.proxy_judge, "proxy"),
                                 ("annotator", self.annotator, "annotator"), ("evaluator", self.evaluator, "evaluator")):
            if given is not None:
                names[role] = given
            elif registry is not None:
                defaults = []
                for testbed in self.testbed:
                    try:
                        default = getattr(registry.get("testbed", testbed).cls, "default_judges", {}).get(key)
                    except UnknownNameError:
                        continue
                    if default and default not in defaults:
                        defaults.append(default)
                names[role] = tuple(defaults)
        return names

    def axes(self) -> list[tuple[str, tuple[str, ...]]]:
        """The grid's axes in expansion order, as (command-line flag, values).

        The world (``--testbed``) is the outermost axis, then every other grid
        option in declaration order, then the ``-o`` axes. ``--selector`` is an
        axis unless both levels are given.
        """
        grid = [option for option in sweep_options() if option.grid]
        grid.sort(key=lambda option: option.name != "testbed")
        axes: list[tuple[str, tuple[str, ...]]] = []
        for option in grid:
            values = self.values[option.name]
            if option.name == "selector" and self.instance_selector is not None and self.corpus_selector is not None:
                continue
            if values is not None:
                axes.append((option.flag, values))
        axes += [(f"-o {key}", values) for key, values in self.options]
        return axes


@dataclass(frozen=True)
class Cell:
    """One point of the grid: a validated config (its seeds are placeholders)."""

    key: str  # normalised label of what varies, e.g. "selector=smallest allocator=decrease"
    label: str  # the command-line flags that make this cell, for messages
    config: RunConfig
    memory_bytes: int = 0  # the run's memory estimate (harness.memory), for running several at once

    @property
    def config_hash(self) -> str:
        return self.config.strategy_hash()

    def for_seed(self, seed: int, world_seed: int | None) -> RunConfig:
        return dataclasses.replace(self.config, seed=seed, world_seed=seed if world_seed is None else world_seed)


#: The judges a run uses only when a selector reads their scores (:func:`harness.config.plan_run` leaves the others
#: out), and the annotator, which a run whose pairs are labelled by the gold judge's scores does not use.
OPTIONAL_JUDGES = ("gold_judge", "proxy_judge", "annotator")


def exc_text(role: str) -> str:
    """Why a grid's options for ``role`` are refused when none of its cells uses that judge."""
    return (f"the grid sets options for the {role.replace('_', ' ')}, but no cell reads its scores (no selector of "
            "the grid reads explicit scores from it); drop those options or add a selector that reads them")


def _role(option: str) -> str:
    return option.split("=", 1)[0].split(".", 1)[0]


def _plan_cell(registry: Registry, values: dict[str, Any], seed: int) -> tuple[Any, list[str]]:
    """One cell's :func:`harness.config.plan_run`, and the optional judges it left out.

    A grid may mix selectors that read a gold or proxy judge's scores with selectors that do not. A cell of
    the second kind does not use that judge, and a cell whose pairs are labelled by the gold judge's scores
    does not use the annotator: the grid's options for such a judge (and a named annotator) are left out of
    that cell and of its config. :func:`expand_grid` refuses them when no cell of the grid uses the judge.
    """
    try:
        return plan_run(registry, RunRequest.from_values(**values, seed=seed)), []
    except UsageError:
        judged = [o for o in values["options"] if _role(o) in OPTIONAL_JUDGES]
        if not judged and not values.get("annotator"):
            raise
        bare = {**values, "options": tuple(o for o in values["options"] if o not in judged), "annotator": None}
        probe = plan_run(registry, RunRequest.from_values(**bare, seed=seed))
        unused = [role for role in OPTIONAL_JUDGES if role != "annotator" and getattr(probe.config, role, None) is None]
        if probe.components.explicit_source == "gold":
            unused.append("annotator")
        kept = {**values, "options": tuple(o for o in values["options"] if _role(o) not in unused)}
        if "annotator" in unused:
            kept["annotator"] = None
        if kept == values:
            raise
        planned = plan_run(registry, RunRequest.from_values(**kept, seed=seed))
        return planned, [role for role in unused if any(_role(o) == role for o in values["options"])
                         or (role == "annotator" and values.get("annotator"))]


def expand_grid(registry: Registry, spec: GridSpec, *, first_seed: int = 0,
                may_go_unused: frozenset[str] = frozenset()) -> list[Cell]:
    """Every cell of the grid, validated; UsageError naming the first bad cell.

    Each cell goes through :func:`harness.config.plan_run` (names, option
    values, ranges) and :func:`harness.config.check_budget_plan`, so nothing
    starts unless every cell could.
    """
    axes = spec.axes()
    flags = [flag for flag, _ in axes]
    combos = list(itertools.product(*(values for _, values in axes)))
    cells: list[tuple[str, RunConfig]] = []
    memory: list[int] = []
    used_judges: set[str] = set()
    unused_judges: dict[str, str] = {}  # judge roles whose options some cell left out (it does not use that judge)
    for number, combo in enumerate(combos, 1):
        chosen = dict(zip(flags, combo))
        label = " ".join(f"{flag}{'=' if flag.startswith('-o ') else ' '}{value}"
                         for (flag, values), value in zip(axes, combo) if len(values) > 1)
        values = {option.name: chosen.get(option.flag) if option.grid else spec.values[option.name]
                  for option in sweep_options() if option.name != "options"}
        values["selector"] = chosen.get("--selector", spec.selector[0])
        values["options"] = tuple(f"{flag[3:]}={chosen[flag]}" for flag in flags if flag.startswith("-o "))
        try:
            # plan_run checks every value, the budget plan and the memory estimate
            planned, left_out = _plan_cell(registry, values, first_seed)
        except UsageError as exc:
            where = f"cell {number} of {len(combos)}" + (f" ({label})" if label else "")
            raise UsageError(f"{where}: {exc}\nNothing was run; fix or drop that value and run the sweep again.") from None
        for role in left_out:
            unused_judges.setdefault(role, exc_text(role))
        used_judges.update(role for role in OPTIONAL_JUDGES if getattr(planned.config, role, None) is not None)
        if planned.components.explicit_source != "gold" and planned.components.annotator is not None:
            used_judges.add("annotator")
        cells.append((label, planned.config))
        memory.append(planned.memory.total_bytes)
    for role, text in unused_judges.items():
        # no cell reads that judge: its options are a mistake, not a cell's detail (unless the caller said they
        # are written for many grids at once, as a study's testbed section's are)
        if role not in used_judges and role not in may_go_unused:
            raise UsageError(text)
    by_hash: dict[str, str] = {}
    for label, config in cells:
        digest = config.strategy_hash()
        if digest in by_hash:
            raise UsageError(
                f"cells ({by_hash[digest] or 'the only cell'}) and ({label}) are the same configuration "
                "(a value given twice, or a default spelled out); list each value once"
            )
        by_hash[digest] = label
    references = frozenset(name for name in registry.names("selector")
                           if not is_deployable(registry.get("selector", name).cls))
    keys = cell_keys([config for _, config in cells], references=references)
    return [Cell(key, label, config, need) for key, (label, config), need in zip(keys, cells, memory)]


def check_parallel_memory(cells: Sequence[Cell], jobs: int, seeds: int = 1) -> None:
    """UsageError (exit 2) when ``jobs`` runs at once (each cell runs once per seed), the largest together, would
    not fit in memory."""
    from harness.memory import available_bytes, format_bytes

    if jobs <= 1 or not cells:
        return
    largest = sorted((cell.memory_bytes for cell in cells for _ in range(seeds)), reverse=True)[:jobs]
    available = available_bytes()
    if available is None or sum(largest) <= available[0]:
        return
    fits = max(1, sum(1 for total in itertools.accumulate(largest) if total <= available[0]))
    raise UsageError(
        f"{len(largest)} runs at once need about {format_bytes(sum(largest))} of memory (the largest cells' estimates "
        f"together) and {format_bytes(available[0])} is available ({available[1]}); run with --jobs {fits}, or "
        f"shrink the runs (harness run --dry-run shows one run's estimate)"
    )


def _flatten(config: RunConfig) -> dict[str, Any]:
    data = config.to_dict()
    flat: dict[str, Any] = {}
    for role in ROLES:
        if data.get(role) is None:
            continue  # an optional role (a judge) this cell does not fill
        flat[role] = data[role]["name"]
        for name, value in sorted(data[role]["settings"].items()):
            flat[f"{role}.{name}"] = value
    for name in _SCALARS:
        flat[name] = data.get(name)  # a label left out of the JSON while unset (the regime) reads as None
    return flat


def _fmt_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return format(value, "g")
    if isinstance(value, (list, tuple)):
        return ":".join(_fmt_value(v) for v in value)
    return str(value)


_SELECTOR_PATHS = ("instance_selector", "corpus_selector")


def cell_keys(configs: Sequence[RunConfig], *, references: frozenset[str] = frozenset()) -> list[str]:
    """A short key per config naming only what varies across them (normalised values).

    ``instance``/``corpus`` merge into ``selector`` where both levels are the
    same in every cell. A grid of one cell is keyed by its selector(s) and
    allocator. A selector named in ``references`` (a reference point, not a
    deployable strategy) carries :data:`~harness.reference_point.MARK`, so
    every table keyed by cells (sweeps, study reports) marks it.
    """
    flats = [_flatten(config) for config in configs]
    paths: list[str] = []
    for flat in flats:
        paths += [path for path in flat if path not in paths]
    # A setting that only some cells have (their component declares it) varies only if it
    # takes different values among those cells; the component's name already tells the rest.
    varying = [path for path in paths
               if len({json.dumps(f[path], default=list) for f in flats if path in f}) > 1]
    if not varying:
        varying = ["instance_selector", "corpus_selector", "allocator"]

    def label(path: str) -> str:
        role, _, rest = path.partition(".")
        short = _ROLE_LABELS.get(role, role)
        return f"{short}.{rest}" if rest else short

    def merges(instance_path: str) -> bool:
        twin = "corpus_selector" + instance_path[len("instance_selector"):]
        return all((instance_path in f) == (twin in f) and f.get(instance_path) == f.get(twin) for f in flats)

    merged: list[tuple[str, str]] = []
    for path in varying:
        if path.startswith("corpus_selector"):
            instance_path = "instance_selector" + path[len("corpus_selector"):]
            if instance_path in varying and merges(instance_path):
                continue
        if path.startswith("instance_selector") and merges(path):
            merged.append(("selector" + path[len("instance_selector"):], path))
            continue
        merged.append((label(path), path))
    keys = []
    for flat in flats:
        parts = [f"{name}={_fmt_value(flat[path])}" + (MARK if path in _SELECTOR_PATHS and flat[path] in references
                                                        else "")
                 for name, path in merged if path in flat]
        shown = {path for _, path in merged if path in flat}
        hidden = [path for path in _SELECTOR_PATHS if flat.get(path) in references and path not in shown]
        if hidden:  # a reference point the key would not name (every cell shares it): named, with its mark
            same = len(hidden) == 2 and flat[hidden[0]] == flat[hidden[1]]
            parts[:0] = ([f"selector={flat[hidden[0]]}{MARK}"] if same else
                         [f"{label(path)}={flat[path]}{MARK}" for path in hidden])
        keys.append(" ".join(parts))
    return keys


def sweep_id(cells: Sequence[Cell], world_seed: int | None) -> str:
    """``s`` + 10 hex digits: a hash of the normalised grid.

    It covers the set of cells (each a complete config, defaults included, so
    order and spelling do not matter) and the world-seed rule; not the seed
    list, so extending ``--seeds`` adds runs to the same sweep.
    """
    blob = json.dumps(
        {"v": 1, "cells": sorted(cell.config_hash for cell in cells),
         "world_seed": "seed" if world_seed is None else int(world_seed)},
        sort_keys=True,
    )
    return "s" + hashlib.sha256(blob.encode()).hexdigest()[:10]


# -- who recorded a run, and is it still alive ----------------------------------


def _process_start(pid: int) -> int:
    """The start time of ``pid`` in clock ticks since boot (Linux), else 0 (unknown)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            text = handle.read()
        return int(text.rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return 0


def recorder_tags() -> dict[str, Any]:
    """Tags naming the process that records a run: ``pid``, ``hostname``, ``pid_start``."""
    pid = os.getpid()
    return {"pid": pid, "hostname": socket.gethostname(), "pid_start": _process_start(pid)}


def recorder_alive(run: Mapping[str, Any]) -> bool | None:
    """Whether the process that recorded ``run`` still exists: True, False, or None (another host)."""
    pid, host = run.get("pid"), run.get("hostname")
    if pid is None or host is None:
        return False  # not recorded by a sweep worker: nothing can be alive for it
    if host != socket.gethostname():
        return None
    pid = int(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    recorded = int(run.get("pid_start") or 0)
    return not (recorded and _process_start(pid) not in (0, recorded))  # a reused pid is not the recorder


# -- the plan -----------------------------------------------------------------


@dataclass(frozen=True)
class PlannedRun:
    """What the sweep does for one cell × seed; ``run_id`` is the existing run concerned, if any."""

    cell: Cell
    seed: int
    world_seed: int
    action: str  # new | resume | redo | skip | busy
    run_id: str | None = None
    reason: str = ""
    claim: tuple[Any, Any, Any] | None = None  # (pid, hostname, pid_start) on the row when planned

    @property
    def config(self) -> RunConfig:
        return dataclasses.replace(self.cell.config, seed=self.seed, world_seed=self.world_seed)

    @property
    def runs_something(self) -> bool:
        return self.action in RUN_ACTIONS


def sweep_runs(db_path: Path, sweep: str) -> list[dict[str, Any]]:
    """Every run of the sweep in the leaderboard (any status), oldest first; [] without a database."""
    if not Path(db_path).exists():
        return []
    from leaderboard.store import Leaderboard

    with Leaderboard(db_path, create=False) as board:
        runs = [run for run in board.runs(status=None) if run.get("sweep_id") == sweep]
    return sorted(runs, key=lambda run: (run.get("started_at") or "", run["id"]))


def _has_checkpoint(run: Mapping[str, Any], db_path: Path) -> bool:
    from harness.experiments import checkpoints
    from harness.errors import CheckpointError
    from harness.experiments.runner import runs_root

    run_dir = Path(run.get("runs_root") or runs_root(db_path)) / run["id"]
    try:
        return checkpoints.latest(run_dir) is not None
    except CheckpointError:
        return False


def make_plan(
    cells: Sequence[Cell],
    seeds: Sequence[int],
    *,
    sweep: str,
    db_path: Path,
    world_seed: int | None = None,
    force: bool = False,
    alive: Callable[[Mapping[str, Any]], bool | None] = recorder_alive,
    resumable: bool = True,
) -> list[PlannedRun]:
    """For every cell × seed, what to do. A run matches when it is tagged with this
    ``sweep`` id and has the cell's ``config_hash``, the ``seed`` and the ``world_seed``.

    - a **finished** match: skip it (runs of the same config made outside this
      sweep, by ``harness run`` or another sweep, do not count: the sweep id
      must select the complete grid);
    - else a **running** match whose recording process is alive (same host,
      pid alive): leave it to that process (``busy``); on another host the
      sweep cannot tell, and also leaves it;
    - else an **interrupted** match, or a ``running`` one whose process is
      gone, with a checkpoint: **resume** it (same run id, through
      :func:`harness.experiments.runner.resume`); without a checkpoint, redo it;
    - else a **failed** match: **redo** it as a new run (the failed row stays);
    - else: a **new** run.

    ``force`` starts a new run for every cell × seed whatever exists. With ``resumable`` False (an executor
    whose workers never open the leaderboard, which resuming reads) an unfinished match is redone instead.
    """
    existing = [] if force else sweep_runs(db_path, sweep)
    index: dict[tuple[str, int, int], list[dict[str, Any]]] = {}
    for run in existing:
        index.setdefault((run["config_hash"], run["seed"], run["world_seed"]), []).append(run)
    plan = []
    for cell in cells:
        for seed in seeds:
            world = seed if world_seed is None else world_seed
            matches = index.get((cell.config_hash, seed, world), [])
            plan.append(_decide(cell, seed, world, matches, db_path, alive, force, resumable))
    return plan


def _decide(cell, seed, world, matches, db_path, alive, force, resumable=True) -> PlannedRun:
    make = lambda action, run=None, reason="", claim=None: PlannedRun(  # noqa: E731
        cell, seed, world, action, None if run is None else run["id"], reason, claim
    )
    if force:
        return make("new", reason="--force")
    finished = [run for run in matches if run["status"] == "finished"]
    if finished:
        return make("skip", finished[-1], "finished")
    unfinished = []
    for run in reversed(matches):  # newest first
        if run["status"] == "running":
            state = alive(run)
            if state is True:
                return make("busy", run, f"running in pid {run.get('pid')}")
            if state is None:
                return make("busy", run, f"running on host {run.get('hostname')} (cannot check it from here)")
            unfinished.append((run, "its process is gone"))
        elif run["status"] == "interrupted":
            unfinished.append((run, "interrupted"))
    if unfinished and not resumable:
        run, why = unfinished[0]
        return make("redo", run, f"{why}; this executor's workers do not resume runs (resuming reads the "
                                 "leaderboard, which they never open)")
    for run, why in unfinished:
        if _has_checkpoint(run, db_path):
            claim = (run.get("pid"), run.get("hostname"), run.get("pid_start"))
            return make("resume", run, why, claim)
    if unfinished:
        run, why = unfinished[0]
        return make("redo", run, f"{why} before its first checkpoint")
    failed = [run for run in matches if run["status"] == "failed"]
    if failed:
        return make("redo", failed[-1], "failed")
    return make("new")


# -- one run, in a worker ---------------------------------------------------------


@dataclass(frozen=True)
class RunTask:
    """A planned run as sent to a worker (picklable; no registry, no config objects)."""

    index: int
    cell_key: str
    seed: int
    action: str  # "new", "redo" (both start a new run) or "resume"
    db_path: str | None  # None: the worker never opens the leaderboard; its result carries the run's journal
    config: dict[str, Any] | None = None
    run_id: str | None = None
    claim: tuple[Any, Any, Any] | None = None
    tags: dict[str, Any] = field(default_factory=dict)
    # tracking (harness.tracking): backends, or None to resume a run with the tracking it was started with
    report_to: tuple[str, ...] | None = None
    logging_dir: str | None = None
    runs_dir: str | None = None  # where the run directory goes (required when db_path is None)


@dataclass
class TaskResult:
    """How one task ended: finished, failed or interrupted (as the runner says), ``skipped``
    (claimed by another process before this one), ``crashed`` (the worker died) or ``cancelled``
    (never started: the sweep was stopped first)."""

    index: int
    status: str
    run_id: str | None = None
    final: dict[str, Any] | None = None
    error: str | None = None
    seconds: float = 0.0
    unrecorded: str | None = None  # the run's journal, when the leaderboard could not take its writes
    journal: list[dict[str, Any]] | None = None  # the run's record, returned to the driver (db_path None)


def tasks_from_plan(plan: Sequence[PlannedRun], *, sweep: str, db_path: Path,
                    report_to: Sequence[str] | None = None, logging_dir: str | Path | None = None) -> list[RunTask]:
    """The tasks for every planned run that runs something, in plan order.

    ``report_to``/``logging_dir``: every run's tracking (:mod:`harness.tracking`); None (not given) starts
    new runs without tracking and resumes the others with the tracking they were started with.
    """
    tasks = []
    for index, item in enumerate(plan):
        if not item.runs_something:
            continue
        tasks.append(
            RunTask(
                index=index,
                cell_key=item.cell.key,
                seed=item.seed,
                action=item.action,
                db_path=str(db_path),
                config=item.config.to_dict() if item.action != "resume" else None,
                run_id=item.run_id if item.action == "resume" else None,
                claim=item.claim,
                tags={"sweep_id": sweep, "sweep_cell": item.cell.key},
                report_to=None if report_to is None else tuple(report_to),
                logging_dir=None if logging_dir is None else str(logging_dir),
            )
        )
    return tasks


RECORDER_TAGS = ("pid", "hostname", "pid_start")


def claim_run(db_path: str | Path, run_id: str, expected: tuple[Any, Any, Any] | None) -> bool:
    """Retag an unfinished run with this process before resuming it; False if another took it.

    The run's (pid, hostname, pid_start) tags must still be those the plan
    saw (:meth:`leaderboard.store.Leaderboard.claim_run`), so two sweeps never resume one run.
    """
    from leaderboard.store import Leaderboard

    tags = recorder_tags()
    with Leaderboard(db_path, create=False) as board:
        return board.claim_run(
            run_id,
            {name: tags[name] for name in RECORDER_TAGS},
            None if expected is None else dict(zip(RECORDER_TAGS, expected)),
        )


FINAL_KEYS = ("final_win_rate", "final_win_rate_se", "final_kl", "final_gold_reward", "labels_used", "wall_seconds")


def run_task(task: RunTask, registry: Registry, emit: Callable[..., None] | None = None) -> TaskResult:
    """Run one task in this process through :mod:`harness.experiments.runner`; never raises for a run's error.

    ``emit(kind, **data)`` reports ``started`` (run_id) and ``iteration``
    (iteration, win_rate). A KeyboardInterrupt ends the task as
    ``interrupted`` (the runner has marked the row; if the interrupt landed
    outside the runner's own handling, the row is marked here).
    """
    from harness.experiments import runner
    from harness.experiments.journal import JOURNAL, read_entries

    emit = emit or (lambda kind, **data: None)
    started = time.monotonic()
    current: dict[str, str | None] = {"run_id": task.run_id}

    def on_start(run_id: str) -> None:
        current["run_id"] = run_id
        emit("started", run_id=run_id)

    def on_row(run_id: str, row: Mapping[str, Any]) -> None:
        emit("iteration", run_id=run_id, iteration=row.get("iteration"), win_rate=row.get("win_rate"))

    def result(status: str, **more: Any) -> TaskResult:
        return TaskResult(task.index, status, seconds=round(time.monotonic() - started, 3), **more)

    def returned(outcome: TaskResult) -> TaskResult:
        """With no leaderboard here, the run's journal goes back to the driver in the result."""
        if task.db_path is None and outcome.run_id is not None:
            path = Path(task.runs_dir) / outcome.run_id / JOURNAL
            outcome.journal = read_entries(path) if path.exists() else None
        return outcome

    if task.db_path is None and task.action == "resume":
        return result("failed", run_id=task.run_id, error="resuming a run reads the leaderboard, which this worker "
                                                          "does not open; the driver plans no resumes for it")
    try:
        if task.action == "resume":
            assert task.run_id is not None
            if not claim_run(task.db_path, task.run_id, task.claim):
                return result("skipped", run_id=task.run_id, error="another process took this run over first")
            emit("started", run_id=task.run_id)
            outcome = runner.resume(task.run_id, registry, db_path=Path(task.db_path), on_row=on_row,
                                    report_to=task.report_to, logging_dir=task.logging_dir)
        else:
            config = RunConfig.from_dict(task.config or {})
            tags = {**task.tags, **recorder_tags()}
            outcome = runner.execute(
                config, registry, db_path=None if task.db_path is None else Path(task.db_path), tags=tags,
                on_start=on_start, on_row=on_row, report_to=task.report_to or (), logging_dir=task.logging_dir,
                runs_dir=task.runs_dir,
            )
    except KeyboardInterrupt:
        if task.db_path is not None:
            _mark_interrupted(task.db_path, current["run_id"])
        return returned(result("interrupted", run_id=current["run_id"]))
    except Exception:  # before the runner owned the row (e.g. a resume with a damaged checkpoint)
        return returned(result("failed", run_id=current["run_id"], error=traceback.format_exc()))
    final = {key: outcome.final.get(key) for key in FINAL_KEYS} if outcome.final else None
    return returned(result(outcome.status, run_id=outcome.run_id, final=final, error=outcome.error,
                           unrecorded=outcome.unrecorded))


def _mark_interrupted(db_path: str, run_id: str | None) -> None:
    """Mark ``run_id`` interrupted if it is still ``running`` (an interrupt outside the runner's handler)."""
    if run_id is None:
        return
    from leaderboard.store import Leaderboard

    try:
        with Leaderboard(db_path, create=False) as board:
            run = board.get_run(run_id)
            if run is not None and run["status"] == "running":
                board.fail_run(run_id, "interrupted", "interrupted (sweep stopped); re-run the sweep to resume it")
    except Exception:  # the row stays running; a re-run sees its process gone and resumes it
        pass


# -- summaries ------------------------------------------------------------------


def summarise(cells: Sequence[Cell], seeds: Sequence[int], world_seed: int | None, runs: Sequence[Mapping[str, Any]]):
    """Per cell, over this grid's seeds: the finished runs' n, mean ± std win rate, mean KL and labels.

    A cell × seed with several finished runs (``--force``) counts its newest.
    """
    import statistics

    wanted = {(seed, seed if world_seed is None else world_seed) for seed in seeds}
    rows = []
    for cell in cells:
        newest: dict[int, Mapping[str, Any]] = {}
        latest: dict[int, Mapping[str, Any]] = {}
        for run in runs:  # oldest first
            if run["config_hash"] != cell.config_hash or (run["seed"], run["world_seed"]) not in wanted:
                continue
            latest[run["seed"]] = run
            if run["status"] == "finished":
                newest[run["seed"]] = run
        statuses: dict[str, int] = {}  # cell × seeds without a finished run: the state of their latest run
        for seed, run in latest.items():
            if seed not in newest:
                statuses[run["status"]] = statuses.get(run["status"], 0) + 1
        finished = [newest[seed] for seed in sorted(newest)]
        wins = [run["final_win_rate"] for run in finished]
        kls = [run["final_kl"] for run in finished if run.get("final_kl") is not None]
        labels = [run["labels_used"] for run in finished if run.get("labels_used") is not None]
        rows.append({
            "cell": cell.key,
            "config_hash": cell.config_hash,
            "n": len(finished),
            "seeds": len(seeds),
            "win_mean": statistics.fmean(wins) if wins else None,
            "win_std": statistics.stdev(wins) if len(wins) > 1 else None,
            "kl_mean": statistics.fmean(kls) if kls else None,
            "labels_mean": statistics.fmean(labels) if labels else None,
            "not_finished": statuses,
            "runs": [{"seed": run["seed"], "run_id": run["id"], "final_win_rate": run["final_win_rate"]}
                     for run in finished],
        })
    return rows
