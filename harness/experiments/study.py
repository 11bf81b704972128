"""Studies: "does A beat B, by how much, and is that real?" as a plan file, runs and a verdict.

A study is a TOML plan (schema: :data:`PLAN_SCHEMA_DOC`, and the README
section *Studies: claims with verdicts*). This module holds everything a study
decides without running anything, and the arithmetic of its verdicts:

- :func:`load_plan` reads and validates a plan. TOML syntax errors come from
  :mod:`tomllib`, which already names the line; schema errors (an unknown key,
  a missing claim field, a bad direction) are found on the parsed data and
  then *located* in the text by :func:`locate`, which scans the file for the
  offending table header (``[[claim]]`` number k, ``[quick]`` ...) and then for
  ``key =`` inside that block. tomllib keeps no positions, so this scan is
  deliberately simple: it understands ``[table]``, ``[[array]]`` headers and
  ``key = value`` lines (inline tables included), which is the plan style the
  schema documents; anything it cannot place falls back to the block's header.
- :func:`expand` turns every ``[[grid]]`` into sweep cells with the sweep
  module's own :class:`~harness.experiments.sweep.GridSpec` / :func:`~harness.experiments.sweep.expand_grid`,
  gives each grid a sweep id, and binds every claim's ``a`` and ``b`` to exactly
  one cell (an error names the claim's line otherwise).
- :func:`make_plan` / :func:`tasks` reuse :func:`harness.experiments.sweep.make_plan` and
  :func:`harness.experiments.sweep.tasks_from_plan`, so skip / resume / redo and the
  executors behave exactly as in ``harness sweep``; every task is also tagged
  ``study`` and ``study_grid``.
- :func:`results` reads the leaderboard and computes each claim's paired
  difference and verdict with :func:`paired_verdict` (which uses
  :func:`leaderboard.stats.paired_interval`), and, for a claim with
  ``blocks = N``, the same per consecutive block of N seeds with
  :func:`paired_blocks` (the same function on a subset: no second statistics).
- :func:`study_time` and :func:`run_provenance` read, from the runs' own rows,
  how long the study took (so an interrupted study and its re-run add up) and
  what it ran with.

**Sweep ids of a study.** A grid's sweep id is the usual hash of its cells
(:func:`harness.experiments.sweep.sweep_id`) salted with the study's name, still ``s`` plus
10 hex digits. So a study never counts runs of a plain ``harness sweep`` (they
lack the ``study`` tag), and ``harness leaderboard --sweep ID`` shows one grid.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import math
import re
import textwrap
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import UsageError
from harness.run_request import run_option, sweep_options

ALPHA = 0.05
DIRECTIONS = ("a > b", "a < b", "none")
VERDICT_RULE = (
    "Verdict per claim, from the paired differences Δ = A − B over the (seed, world_seed) pairs both "
    "sides ran: **reproduced** when the 95% Student-t interval of the mean Δ excludes 0 in the source's "
    "direction, **reversed** when it excludes 0 the other way, **not separable** otherwise. For a claim "
    "whose source reports no difference (direction `none`) the verdict is **not separable** (as the "
    "source reports) or **separated (a > b / a < b)**. Fewer than 2 pairs: **too few pairs**. "
    "*Detectable Δ* is the interval's half-width t₀.₉₇₅,ₙ₋₁·sd/√n: the smallest |mean Δ| that would "
    "have excluded 0 at this study's n and spread. *MDE (80% power)* is (t₀.₉₇₅,ₙ₋₁ + t₀.₈,ₙ₋₁)·sd/√n: "
    "the true difference this design would detect 80% of the time."
)

# -- the schema ------------------------------------------------------------------------------------

STUDY_KEYS = ("title", "source", "description", "seeds")
QUICK_KEYS = ("seeds", "budget_scale", "options", "description")
CLAIM_KEYS = ("id", "finding", "metric", "a", "b", "direction", "source", "source_value", "note", "blocks")
CLAIM_REQUIRED = ("id", "metric", "a", "b", "direction")
FIGURE_KEYS = ("kind", "grid", "metrics", "title")
FIGURE_KINDS = ("curves", "forest")
TOP_KEYS = ("study", "quick", "grid", "claim", "figure")
_GRID_ALIASES = {"responses": "n_responses"}


def grid_keys() -> tuple[str, ...]:
    """The keys a ``[[grid]]`` accepts: ``name``, ``seeds`` and every run option ``harness sweep`` takes
    (:func:`harness.run_request.sweep_options`, so a new run option is a new grid key)."""
    return ("name", "seeds", *(option.name for option in sweep_options()), *_GRID_ALIASES)


_PLAN_SCHEMA_TEMPLATE = """\
[study]            title, source, description (text); seeds = 10 or "0-9" (default for every grid)
[quick]            seeds; budget_scale (multiplies every grid's budget); options = ["k=v", ...]
                   (fixed options added to every grid; a grid's own option of the same key wins)
{grid}
[[claim]]          id, metric, a, b, direction (required); finding, source, source_value, note
                   metric = "final_win_rate" (a runs column) or {metric = "win_rate", iteration = 1}
                   a / b = {grid = "...", instance_selector = "...", "trainer.epochs" = 1, ...}: equality
                   filters on the config (selector = X means both levels; iteration = k overrides the
                   metric's iteration for that side); each must match exactly one cell
                   direction = "a > b" | "a < b" | "none" (the source reports no difference)
                   blocks = 10 (optional): also a verdict per consecutive block of 10 seeds of the
                   sorted seed list (0-9, 10-19, ...), besides the pooled one
[[figure]]         kind = "curves" (grid, metrics = ["win_rate", ...]) or "forest"; title
"""


def _plan_schema_doc() -> str:
    options = [option for option in sweep_options() if option.kind != "assignments"]
    grid_names = ", ".join(option.name for option in options if option.grid)
    fixed_names = ", ".join("responses" if option.name == "n_responses" else option.name
                            for option in options if not option.grid)
    grid = textwrap.fill(
        f"name (required) plus the run options of `harness sweep`: grid axes {grid_names} (a list or a "
        f'comma string); options = ["k=v1,v2", ...]; one value each: {fixed_names}; seeds (overrides [study] seeds)',
        width=100, initial_indent="[[grid]]".ljust(19), subsequent_indent=" " * 19)
    return _PLAN_SCHEMA_TEMPLATE.replace("{grid}", grid)


#: The plan file's keys, in brief (the grid keys derived from the run options).
PLAN_SCHEMA_DOC = _plan_schema_doc()


class PlanError(UsageError):
    """A plan file that is not valid: the message names the file, the line and the fix."""


@dataclass(frozen=True)
class GridPlan:
    name: str
    args: dict[str, Any]  # keyword arguments of GridSpec.from_cli (comma strings, options list)
    seeds: int | str | None
    index: int


@dataclass(frozen=True)
class ClaimPlan:
    id: str
    finding: str
    metric: str
    iteration: int | None
    a: dict[str, Any]
    b: dict[str, Any]
    direction: str
    source: str = ""
    source_value: str = ""
    note: str = ""
    index: int = 0
    blocks: int | None = None  # seeds per block: a verdict per block besides the pooled one

    @property
    def metric_label(self) -> str:
        return self.metric if self.iteration is None else f"{self.metric} @ it{self.iteration}"


@dataclass(frozen=True)
class FigurePlan:
    kind: str
    grid: str | None = None
    metrics: tuple[str, ...] = ("win_rate",)
    title: str = ""


@dataclass(frozen=True)
class StudyPlan:
    name: str
    path: Path
    text: str
    title: str
    source: str
    description: str
    seeds: int | str
    quick: dict[str, Any]
    grids: tuple[GridPlan, ...]
    claims: tuple[ClaimPlan, ...]
    figures: tuple[FigurePlan, ...]

    def grid(self, name: str) -> GridPlan:
        return next(g for g in self.grids if g.name == name)


# -- locating a key in the text ---------------------------------------------------------------------

_HEADER = re.compile(r"^\s*\[")


def locate(text: str, path: Sequence[str | int]) -> int | None:
    """The 1-based line of ``path`` in a plan's text, e.g. ``("claim", 2, "direction")``,
    ``("quick", "seeds")``, ``("grid", 0)``; the enclosing header when the key is not written
    (a missing field), None when even that is not found. See the module docstring."""
    lines = text.splitlines()
    path = list(path)
    if not path:
        return None
    top, rest = path[0], path[1:]
    start = None
    if rest and isinstance(rest[0], int):
        pattern = re.compile(rf"^\s*\[\[\s*{re.escape(str(top))}\s*\]\]")
        headers = [i for i, line in enumerate(lines) if pattern.match(line)]
        if rest[0] >= len(headers):
            return None
        start, rest = headers[rest[0]], rest[1:]
    else:
        pattern = re.compile(rf"^\s*\[\s*{re.escape(str(top))}\s*\]")
        headers = [i for i, line in enumerate(lines) if pattern.match(line)]
        if headers:
            start = headers[0]
        else:  # a top-level key (before the first header)
            first = next((i for i, line in enumerate(lines) if _HEADER.match(line)), len(lines))
            found = _find_key(lines, 0, first, str(top))
            return None if found is None else found + 1
    end = next((i for i in range(start + 1, len(lines)) if _HEADER.match(lines[i])), len(lines))
    if not rest:
        return start + 1
    found = _find_key(lines, start + 1, end, str(rest[0]))
    return (start if found is None else found) + 1


def _find_key(lines: Sequence[str], start: int, end: int, key: str) -> int | None:
    pattern = re.compile(rf"""^\s*(?:{re.escape(key)}|"{re.escape(key)}"|'{re.escape(key)}')\s*=""")
    for i in range(start, end):
        if pattern.match(lines[i]):
            return i
    inline = re.compile(rf"""[{{,]\s*(?:{re.escape(key)}|"{re.escape(key)}")\s*=""")
    for i in range(start, end):  # a key inside an inline table, e.g. a = {grid = "x", iteration = 1}
        if inline.search(lines[i]):
            return i
    return None


class _Errors:
    """Collects schema errors as ``FILE:LINE: where: problem; fix``."""

    def __init__(self, path: Path, text: str):
        self.path, self.text, self.items = path, text, []

    def add(self, where: Sequence[str | int], problem: str, fix: str) -> None:
        line = locate(self.text, where)
        place = f"{self.path}:{line}" if line else str(self.path)
        self.items.append(f"{place}: {_describe(where)}: {problem}; {fix}")

    def unknown(self, where: Sequence[str | int], keys: Mapping[str, Any], allowed: Sequence[str]) -> None:
        for key in keys:
            if key not in allowed:
                close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
                fix = f"did you mean {close[0]!r}?" if close else "remove it"
                self.add([*where, key], f"unknown key {key!r}", f"{fix} (allowed: {', '.join(allowed)})")

    def raise_if_any(self) -> None:
        if self.items:
            count = f"{len(self.items)} problems" if len(self.items) > 1 else "1 problem"
            raise PlanError(f"plan {self.path} has {count}:\n" + "\n".join(self.items))


def _describe(where: Sequence[str | int]) -> str:
    parts, i = [], 0
    where = list(where)
    while i < len(where):
        item = where[i]
        if i + 1 < len(where) and isinstance(where[i + 1], int):
            parts.append(f"[[{item}]] #{where[i + 1] + 1}")
            i += 2
            continue
        parts.append(f"[{item}]" if i == 0 else str(item))
        i += 1
    return " ".join(parts)


# -- loading ----------------------------------------------------------------------------------------


def load_plan(path: str | Path, name: str | None = None) -> StudyPlan:
    """Read and validate the plan at ``path``; PlanError (exit 2) naming every problem's line and fix.

    The study's name is ``name`` when given (a registered study), else the file name without ``.toml``.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise PlanError(f"cannot read plan {path}: {exc.strerror or exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PlanError(f"plan {path} is not valid TOML: {exc}") from None
    errors = _Errors(path, text)
    errors.unknown([], data, TOP_KEYS)

    study = data.get("study", {})
    if not isinstance(study, dict):
        errors.add(["study"], "must be a table", "write it as a [study] section")
        study = {}
    errors.unknown(["study"], study, STUDY_KEYS)
    seeds = study.get("seeds", 10)
    _check_seeds(errors, ["study", "seeds"], seeds)

    quick = data.get("quick", {})
    if not isinstance(quick, dict):
        errors.add(["quick"], "must be a table", "write it as a [quick] section")
        quick = {}
    errors.unknown(["quick"], quick, QUICK_KEYS)
    if "seeds" in quick:
        _check_seeds(errors, ["quick", "seeds"], quick["seeds"])
    scale = quick.get("budget_scale", 1.0)
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 < scale <= 1:
        errors.add(["quick", "budget_scale"], f"budget_scale {scale!r} is not a number in (0, 1]",
                   "write e.g. budget_scale = 0.1")
    _check_strings(errors, ["quick", "options"], quick.get("options", []), 'options = ["testbed.eval_prompts=100"]')

    grids = _load_grids(errors, data.get("grid", []))
    grid_names = [g.name for g in grids]
    claims = _load_claims(errors, data.get("claim", []), grids)
    figures = _load_figures(errors, data.get("figure", []), grid_names)
    errors.raise_if_any()
    return StudyPlan(
        name=name or path.stem, path=path, text=text, title=str(study.get("title", name or path.stem)),
        source=str(study.get("source", "")), description=str(study.get("description", "")).strip(),
        seeds=seeds, quick=dict(quick), grids=tuple(grids), claims=tuple(claims), figures=tuple(figures),
    )


def _check_seeds(errors: _Errors, where: list, value: Any) -> None:
    from harness.experiments.sweep import parse_seeds

    if isinstance(value, bool) or not isinstance(value, (int, str)):
        errors.add(where, f"seeds {value!r} is neither a count nor a seed list", 'write seeds = 10 or seeds = "0-9"')
    elif isinstance(value, int):
        if value < 1:
            errors.add(where, f"seeds = {value} runs nothing", "write a count >= 1, e.g. seeds = 10")
    else:
        try:
            parse_seeds(value)
        except UsageError as exc:
            errors.add(where, str(exc).replace("--seeds", "seeds"), 'write e.g. seeds = "0-9"')


def _check_strings(errors: _Errors, where: list, value: Any, example: str) -> None:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        errors.add(where, f"{value!r} is not a list of strings", f"write e.g. {example}")


def _load_grids(errors: _Errors, items: Any) -> list[GridPlan]:
    if not isinstance(items, list) or not items:
        errors.add(["grid"], "a plan needs at least one [[grid]]",
                   'add [[grid]] with name = "..." and the arguments of `harness sweep`')
        return []
    allowed = grid_keys()
    grids, seen = [], set()
    for index, item in enumerate(items):
        where = ["grid", index]
        errors.unknown(where, item, allowed)
        name = item.get("name")
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", name or ""):
            errors.add([*where, "name"], f"missing or bad grid name {name!r}",
                       'write name = "one_iteration" (letters, digits, _ . -)')
            name = f"grid{index + 1}"
        if name in seen:
            errors.add([*where, "name"], f"grid name {name!r} is used twice", "give every grid its own name")
        seen.add(name)
        args: dict[str, Any] = {}
        for key, value in item.items():
            if key in ("name", "seeds") or key not in allowed:
                continue
            target = _GRID_ALIASES.get(key, key)
            option = run_option(target)
            if option.grid:
                if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
                    value = ",".join(value)
                if not isinstance(value, str):
                    errors.add([*where, key], f"{value!r} is not a name or a list of names",
                               f'write {key} = ["{option.default or "a"}", "b"] or {key} = "{option.default or "a"}"')
                    continue
            elif option.kind == "assignments":
                _check_strings(errors, [*where, key], value, 'options = ["trainer.epochs=1,2"]')
            elif option.type is float:
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    errors.add([*where, key], f"{value!r} is not a number", f"write e.g. {key} = {option.default}")
                    continue
            elif option.type is int:
                if isinstance(value, bool) or not isinstance(value, int):
                    errors.add([*where, key], f"{value!r} is not an integer", f"write e.g. {key} = 3")
                    continue
            elif option.type is bool and not isinstance(value, bool):
                errors.add([*where, key], f"{value!r} is not true or false", f"write e.g. {key} = true")
                continue
            args[target] = value
        seeds = item.get("seeds")
        if seeds is not None:
            _check_seeds(errors, [*where, "seeds"], seeds)
        grids.append(GridPlan(name, args, seeds, index))
    return grids


def _load_claims(errors: _Errors, items: Any, grids: Sequence[GridPlan]) -> list[ClaimPlan]:
    if not isinstance(items, list) or not items:
        errors.add(["claim"], "a plan needs at least one [[claim]]",
                   'add [[claim]] with id, metric, a, b and direction')
        return []
    claims, seen = [], set()
    names = [g.name for g in grids]
    for index, item in enumerate(items):
        where = ["claim", index]
        errors.unknown(where, item, CLAIM_KEYS)
        for key in CLAIM_REQUIRED:
            if key not in item:
                example = {"id": 'id = "F1-smallest-vs-random"', "metric": 'metric = "final_win_rate"',
                           "a": 'a = {grid = "one_iteration", selector = "smallest"}',
                           "b": 'b = {grid = "one_iteration", selector = "random"}',
                           "direction": 'direction = "a > b"'}[key]
                errors.add(where, f"missing required field {key!r}", f"add {example}")
        claim_id = str(item.get("id", f"claim{index + 1}"))
        if claim_id in seen:
            errors.add([*where, "id"], f"claim id {claim_id!r} is used twice", "give every claim its own id")
        seen.add(claim_id)
        direction = item.get("direction", "a > b")
        if direction not in DIRECTIONS:
            errors.add([*where, "direction"], f"direction {direction!r} is not one of {', '.join(map(repr, DIRECTIONS))}",
                       'write direction = "a > b" when the source reports A above B, "a < b" for below, '
                       '"none" when it reports no difference')
        metric, iteration = item.get("metric", "final_win_rate"), None
        if isinstance(metric, dict):
            errors.unknown([*where, "metric"], metric, ("metric", "iteration"))
            iteration = metric.get("iteration")
            metric = metric.get("metric")
            if iteration is not None and (isinstance(iteration, bool) or not isinstance(iteration, int) or iteration < 0):
                errors.add([*where, "metric"], f"iteration {iteration!r} is not an iteration number",
                           "write e.g. metric = {metric = \"sel_ranking_accuracy\", iteration = 1}")
                iteration = None
        if not isinstance(metric, str) or not metric:
            errors.add([*where, "metric"], f"metric {metric!r} is not a metric name",
                       'write metric = "final_win_rate" or metric = {metric = "win_rate", iteration = 1}')
            metric = "final_win_rate"
        sides = {}
        for side in ("a", "b"):
            value = item.get(side, {})
            if not isinstance(value, dict) or not value:
                if side in item:
                    errors.add([*where, side], f"{side} = {value!r} is not a table of filters",
                               f'write {side} = {{grid = "{names[0] if names else "NAME"}", selector = "smallest"}}')
                value = {}
            grid = value.get("grid")
            if grid is not None and grid not in names:
                close = difflib.get_close_matches(str(grid), names, n=1)
                errors.add([*where, side], f"grid {grid!r} is not a grid of this plan",
                           (f"did you mean {close[0]!r}? " if close else "") + f"grids: {', '.join(names)}")
            side_iteration = value.get("iteration")
            if side_iteration is not None and (isinstance(side_iteration, bool) or not isinstance(side_iteration, int)):
                errors.add([*where, side], f"iteration {side_iteration!r} is not an integer", "write iteration = 3")
            sides[side] = dict(value)
        for key in ("source", "source_value", "finding", "note"):
            if key in item and not isinstance(item[key], (str, int, float)):
                errors.add([*where, key], f"{key} must be text or a number", f'write {key} = "..."')
        blocks = _check_blocks(errors, [*where, "blocks"], item.get("blocks"))
        claims.append(ClaimPlan(
            id=claim_id, finding=str(item.get("finding", "")), metric=metric, iteration=iteration,
            a=sides["a"], b=sides["b"], direction=direction if direction in DIRECTIONS else "a > b",
            source=str(item.get("source", "")), source_value=str(item.get("source_value", "")),
            note=str(item.get("note", "")), index=index, blocks=blocks,
        ))
    return claims


def _check_blocks(errors: _Errors, where: list, value: Any) -> int | None:
    """A claim's ``blocks`` (seeds per block): an integer >= 2, since a block of one seed has no interval."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        errors.add(where, f"blocks {value!r} is not a number of seeds",
                   "write e.g. blocks = 10 (a verdict per block of 10 seeds, besides the pooled one)")
        return None
    if value < 2:
        errors.add(where, f"blocks = {value} leaves no spread to build an interval from",
                   "write a block size >= 2 seeds, e.g. blocks = 10")
        return None
    return value


def _load_figures(errors: _Errors, items: Any, grid_names: Sequence[str]) -> list[FigurePlan]:
    if not isinstance(items, list):
        errors.add(["figure"], "must be an array of tables", "write each figure as [[figure]]")
        return []
    figures = []
    for index, item in enumerate(items):
        where = ["figure", index]
        errors.unknown(where, item, FIGURE_KEYS)
        kind = item.get("kind")
        if kind not in FIGURE_KINDS:
            errors.add([*where, "kind"], f"figure kind {kind!r} is not one of {', '.join(FIGURE_KINDS)}",
                       'write kind = "curves" (with grid = "...") or kind = "forest"')
            continue
        grid = item.get("grid")
        if kind == "curves" and grid not in grid_names:
            errors.add([*where, "grid"], f"curves need the grid to draw; {grid!r} is not one",
                       f"write grid = one of {', '.join(map(repr, grid_names))}")
            continue
        metrics = item.get("metrics", ["win_rate"])
        if isinstance(metrics, str):
            metrics = [metrics]
        figures.append(FigurePlan(kind, grid, tuple(metrics), str(item.get("title", ""))))
    return figures


# -- finding a study ----------------------------------------------------------------------------------


def find_plan(spec: str, registry: Any) -> StudyPlan:
    """``spec`` is a registered study's name (``harness study list``) or a path to a plan file."""
    studies = getattr(registry, "studies", {})
    if spec in studies:
        path, _plugin = studies[spec]
        return load_plan(path, name=spec)
    path = Path(spec)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise PlanError(f"no plan file at {path}")
        return load_plan(path)
    from harness.errors import UnknownNameError

    raise UnknownNameError("study", spec, studies)


# -- expansion --------------------------------------------------------------------------------------


@dataclass
class ExpandedGrid:
    plan: GridPlan
    spec: Any  # harness.experiments.sweep.GridSpec
    cells: list  # [harness.experiments.sweep.Cell]
    seeds: list[int]
    sweep_id: str


@dataclass
class BoundClaim:
    plan: ClaimPlan
    a: tuple[str, Any]  # (grid name, Cell)
    b: tuple[str, Any]
    a_iteration: int | None
    b_iteration: int | None


@dataclass
class ExpandedStudy:
    plan: StudyPlan
    quick: bool
    grids: list[ExpandedGrid]
    claims: list[BoundClaim]
    seeds_override: str | None = None

    @property
    def variant(self) -> str:
        return "quick" if self.quick else "full"

    def grid(self, name: str) -> ExpandedGrid:
        return next(g for g in self.grids if g.plan.name == name)

    @property
    def n_runs(self) -> int:
        return sum(len(g.cells) * len(g.seeds) for g in self.grids)


def seed_list(value: int | str) -> list[int]:
    """A ``seeds`` value: a count (``10`` -> 0..9) or a list spec (``"0-9"``, ``"0,2,5"``)."""
    from harness.experiments.sweep import parse_seeds

    if isinstance(value, int) and not isinstance(value, bool):
        return list(range(value))
    return parse_seeds(str(value))


def study_sweep_id(study: str, cells: Sequence[Any], world_seed: int | None) -> str:
    """The sweep id of a study grid: :func:`harness.experiments.sweep.sweep_id` salted with the study's name."""
    from harness.experiments.sweep import sweep_id

    base = sweep_id(cells, world_seed)
    return "s" + hashlib.sha256(f"study:{study}:{base}".encode()).hexdigest()[:10]


def expand(plan: StudyPlan, registry: Any, *, quick: bool = False, seeds: str | None = None) -> ExpandedStudy:
    """Every grid's validated cells, seeds and sweep id, and every claim bound to its two cells.

    ``quick`` applies the plan's ``[quick]`` overrides; ``seeds`` (the command line's ``--seeds``: a
    count or a list) replaces every grid's seeds. A bad cell or an ambiguous claim is a PlanError
    naming the plan's line.
    """
    from harness.experiments.sweep import GridSpec, expand_grid

    errors = _Errors(plan.path, plan.text)
    grids = []
    for grid in plan.grids:
        args = dict(grid.args)
        if quick:
            args = _apply_quick(args, plan.quick)
        value: int | str = seeds if seeds is not None else (
            plan.quick.get("seeds", grid.seeds or plan.seeds) if quick else (grid.seeds or plan.seeds))
        try:
            seed_values = seed_list(value)
            spec = GridSpec.from_cli(registry, **args)
            cells = expand_grid(registry, spec, first_seed=seed_values[0])
        except UsageError as exc:
            errors.add(["grid", grid.index], str(exc).replace("\n", " "),
                       "fix this grid (its keys are the arguments of `harness sweep`)")
            continue
        grids.append(ExpandedGrid(grid, spec, cells, seed_values,
                                  study_sweep_id(plan.name, cells, spec.world_seed)))
    errors.raise_if_any()
    study = ExpandedStudy(plan, quick, grids, [], seeds)
    for claim in plan.claims:
        sides = []
        for side in ("a", "b"):
            filters = getattr(claim, side)
            found = _match_cells(study, filters)
            if len(found) != 1:
                shown = ", ".join(f"{g}: {c.key or 'the only cell'}" for g, c in found[:6])
                if not found:
                    problem = f"{side} = {_show(filters)} matches no cell of the plan"
                    fix = "check the names and values against the grids (`harness study run PLAN --dry-run` lists the cells)"
                else:
                    problem = f"{side} = {_show(filters)} matches {len(found)} cells ({shown})"
                    fix = "add filters (e.g. grid = ..., instance_selector = ...) until it names one cell"
                errors.add(["claim", claim.index, side], problem, fix)
                sides.append(None)
            else:
                sides.append(found[0])
            iteration = filters.get("iteration", claim.iteration)
            if sides[-1] is not None and iteration is not None and iteration > sides[-1][1].config.iterations:
                errors.add(["claim", claim.index, side],
                           f"iteration {iteration} is past the grid's last iteration ({sides[-1][1].config.iterations})",
                           "pick an iteration the grid runs (0 = pi_0)")
        if None not in sides:
            study.claims.append(BoundClaim(claim, sides[0], sides[1],
                                           claim.a.get("iteration", claim.iteration),
                                           claim.b.get("iteration", claim.iteration)))
    errors.raise_if_any()
    return study


def _apply_quick(args: dict[str, Any], quick: Mapping[str, Any]) -> dict[str, Any]:
    args = dict(args)
    scale = float(quick.get("budget_scale", 1.0))
    if scale != 1.0:
        args["budget"] = max(1, int(round(args.get("budget", 3000) * scale)))
    own = {o.split("=", 1)[0].strip() for o in args.get("options", [])}
    extra = [o for o in quick.get("options", []) if o.split("=", 1)[0].strip() not in own]
    if extra:
        args["options"] = [*args.get("options", []), *extra]
    return args


def _show(filters: Mapping[str, Any]) -> str:
    return "{" + ", ".join(f"{k} = {v!r}" for k, v in filters.items()) + "}"


def cell_fields(grid: str, cell: Any) -> dict[str, Any]:
    """What a claim's ``a``/``b`` filters are matched against: the cell's config as ``-o``-style keys
    (:func:`leaderboard.query.flat_config`) plus ``grid``."""
    from leaderboard.query import flat_config

    return {"grid": grid, **flat_config(cell.config.to_dict())}


def _same(want: Any, have: Any) -> bool:
    numbers = (int, float)
    if isinstance(want, numbers) and not isinstance(want, bool) and isinstance(have, numbers) and not isinstance(have, bool):
        return math.isclose(float(want), float(have), rel_tol=1e-12, abs_tol=0.0)
    norm = lambda v: str(v).lower() if isinstance(v, bool) else str(v)  # noqa: E731
    return norm(want) == norm(have)


def matches(filters: Mapping[str, Any], fields: Mapping[str, Any]) -> bool:
    """Whether a cell (its :func:`cell_fields`) passes every equality filter; ``selector`` means both levels."""
    for key, want in filters.items():
        if key == "iteration":
            continue
        if key == "selector":
            if not (_same(want, fields.get("instance_selector")) and _same(want, fields.get("corpus_selector"))):
                return False
            continue
        if key not in fields:
            aliases = [k for k in fields if k.endswith("." + key)]
            if len(aliases) != 1 or not _same(want, fields[aliases[0]]):
                return False
            continue
        if not _same(want, fields[key]):
            return False
    return True


def _match_cells(study: ExpandedStudy, filters: Mapping[str, Any]) -> list[tuple[str, Any]]:
    found = []
    for grid in study.grids:
        for cell in grid.cells:
            if matches(filters, cell_fields(grid.plan.name, cell)):
                found.append((grid.plan.name, cell))
    return found


# -- planning and tasks (the sweep module's own) -------------------------------------------------------


@dataclass
class StudyPlanItem:
    grid: str
    item: Any  # harness.experiments.sweep.PlannedRun


def make_plan(study: ExpandedStudy, db_path: Path, *, force: bool = False) -> list[StudyPlanItem]:
    """Per grid, :func:`harness.experiments.sweep.make_plan` (skip / busy / resume / redo / new); in grid order."""
    from harness.experiments.sweep import make_plan as sweep_plan

    items = []
    for grid in study.grids:
        for planned in sweep_plan(grid.cells, grid.seeds, sweep=grid.sweep_id, db_path=db_path,
                                  world_seed=grid.spec.world_seed, force=force):
            items.append(StudyPlanItem(grid.plan.name, planned))
    return items


def tasks(study: ExpandedStudy, plan: Sequence[StudyPlanItem], db_path: Path) -> list[Any]:
    """:func:`harness.experiments.sweep.tasks_from_plan` per grid, indexed into ``plan`` and tagged
    ``study`` / ``study_grid`` / ``study_variant`` besides ``sweep_id`` / ``sweep_cell``."""
    from harness.experiments.sweep import tasks_from_plan

    out = []
    for grid in study.grids:
        positions = [i for i, item in enumerate(plan) if item.grid == grid.plan.name]
        for task in tasks_from_plan([plan[i].item for i in positions], sweep=grid.sweep_id, db_path=db_path):
            tags = {**task.tags, "study": study.plan.name, "study_grid": grid.plan.name,
                    "study_variant": study.variant}
            out.append(dataclasses.replace(task, index=positions[task.index], tags=tags))
    return sorted(out, key=lambda t: t.index)


# -- results and verdicts -------------------------------------------------------------------------------


def paired_verdict(
    a: Mapping[Any, float], b: Mapping[Any, float], direction: str, *, alpha: float = ALPHA
) -> dict[str, Any]:
    """The paired difference A − B over the keys (``(seed, world_seed)``) both sides have, and its verdict.

    Returns :func:`leaderboard.stats.paired_interval`'s ``n, mean, std, ci_low, ci_high,
    excludes_zero`` plus ``pairs``, ``half_width`` (t_{1-alpha/2, n-1}·sd/sqrt(n), the detectable
    difference), ``mde80`` ((t_{1-alpha/2} + t_{0.8})·sd/sqrt(n)) and ``verdict`` (the rule is
    :data:`VERDICT_RULE`).
    """
    from leaderboard.stats import paired_interval, t_ppf

    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}; got {direction!r}")
    common = sorted(set(a) & set(b), key=lambda k: tuple(-1 if v is None else v for v in (k if isinstance(k, tuple) else (k,))))
    diffs = [float(a[k]) - float(b[k]) for k in common]
    out = paired_interval(diffs, 1.0 - alpha)
    out["pairs"] = [list(k) if isinstance(k, tuple) else k for k in common]
    out["half_width"] = out["mde80"] = None
    if out["n"] >= 2 and out["std"] is not None:
        n = out["n"]
        se = out["std"] / math.sqrt(n)
        out["half_width"] = t_ppf(1.0 - alpha / 2.0, n - 1) * se
        out["mde80"] = (t_ppf(1.0 - alpha / 2.0, n - 1) + t_ppf(0.8, n - 1)) * se
    out["verdict"] = verdict(out.get("ci_low"), out.get("ci_high"), direction)
    return out


def seed_blocks(seeds: Sequence[int], size: int) -> list[list[int]]:
    """The sorted ``seeds`` cut into consecutive blocks of ``size`` (0-9, 10-19, ...); the last may be shorter."""
    if size < 1:
        raise ValueError(f"block size must be >= 1; got {size}")
    ordered = sorted(set(seeds))
    return [ordered[i:i + size] for i in range(0, len(ordered), size)]


def paired_blocks(
    a: Mapping[Any, float], b: Mapping[Any, float], direction: str, seeds: Sequence[int], size: int,
    *, alpha: float = ALPHA,
) -> list[dict[str, Any]]:
    """:func:`paired_verdict` once per block of ``size`` consecutive seeds of the sorted ``seeds``.

    ``seeds`` is the design's seed list (the claim's grids'), not the seeds that happen to have finished,
    so a missing run shrinks its own block's n and never shifts the other blocks. Keys are as for
    :func:`paired_verdict` (``(seed, world_seed)``, blocked by the seed). Each result also holds
    ``seeds``, the block's seeds.
    """
    out = []
    for block in seed_blocks(seeds, size):
        members = set(block)
        a_block = {k: v for k, v in a.items() if _seed_of(k) in members}
        b_block = {k: v for k, v in b.items() if _seed_of(k) in members}
        out.append({"seeds": block, **paired_verdict(a_block, b_block, direction, alpha=alpha)})
    return out


def _seed_of(key: Any) -> Any:
    return key[0] if isinstance(key, tuple) else key


def verdict(ci_low: float | None, ci_high: float | None, direction: str) -> str:
    """The verdict of one interval (see :data:`VERDICT_RULE`)."""
    if ci_low is None or ci_high is None:
        return "too few pairs"
    above, below = ci_low > 0.0, ci_high < 0.0
    if direction == "none":
        return "separated (a > b)" if above else "separated (a < b)" if below else "not separable"
    agrees, disagrees = (above, below) if direction == "a > b" else (below, above)
    return "reproduced" if agrees else "reversed" if disagrees else "not separable"


@dataclass
class ClaimResult:
    claim: BoundClaim
    a_values: dict[tuple[int, int], float]
    b_values: dict[tuple[int, int], float]
    stats: dict[str, Any]
    a_mean: float | None = None
    b_mean: float | None = None
    notes: list[str] = field(default_factory=list)
    blocks: list[dict[str, Any]] = field(default_factory=list)  # paired_blocks(), when the claim sets blocks


@dataclass
class StudyResults:
    study: ExpandedStudy
    runs: dict[str, dict[str, list[dict[str, Any]]]]  # grid -> config_hash -> finished runs (newest per seed)
    iterations: dict[str, list[dict[str, Any]]]  # run id -> rows
    claims: list[ClaimResult]
    counts: dict[str, int]  # finished / wanted

    def finished_runs(self) -> list[dict[str, Any]]:
        """Every run the verdicts use (the newest finished run per cell and wanted seed), oldest first."""
        runs = [run for cells in self.runs.values() for rs in cells.values() for run in rs]
        return sorted(runs, key=lambda run: (run.get("started_at") or "", run["id"]))


def study_runs(study: ExpandedStudy, db_path: Path) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Per grid and cell: the newest finished run of each wanted (seed, world_seed), tagged with the study."""
    from harness.experiments.sweep import sweep_runs

    out: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for grid in study.grids:
        runs = sweep_runs(db_path, grid.sweep_id)
        wanted = {(s, s if grid.spec.world_seed is None else grid.spec.world_seed) for s in grid.seeds}
        per_cell: dict[str, dict[tuple, dict]] = {c.config_hash: {} for c in grid.cells}
        for run in runs:  # oldest first: the newest finished run wins
            if run.get("status") != "finished" or run.get("study") not in (None, study.plan.name):
                continue
            key = (run["seed"], run["world_seed"])
            if run["config_hash"] in per_cell and key in wanted:
                per_cell[run["config_hash"]][key] = run
        out[grid.plan.name] = {h: [runs[k] for k in sorted(runs)] for h, runs in per_cell.items()}
    return out


def _iteration_rows(db_path: Path, run_ids: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
    import sqlite3

    out: dict[str, list[dict[str, Any]]] = {}
    if not run_ids or not Path(db_path).exists():
        return out
    conn = sqlite3.connect(str(db_path))
    try:
        ids = list(run_ids)
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            cursor = conn.execute(
                f"select * from iterations where run_id in ({', '.join('?' for _ in chunk)}) order by run_id, iteration",
                chunk)
            names = [d[0] for d in cursor.description]
            for row in cursor:
                item = dict(zip(names, row))
                out.setdefault(item["run_id"], []).append(item)
    finally:
        conn.close()
    return out


def metric_value(run: Mapping[str, Any], rows: Sequence[Mapping[str, Any]], metric: str,
                 iteration: int | None) -> float | None:
    """A run's value of ``metric``: a runs column (or a derived metric such as ``delta_win_rate``),
    or, with ``iteration``, the column of that iteration's row."""
    from leaderboard.compare import DERIVED_METRICS

    if iteration is not None:
        for row in rows:
            if row.get("iteration") == iteration:
                value = row.get(metric)
                return None if value is None else float(value)
        return None
    if metric in DERIVED_METRICS:
        column, minus = DERIVED_METRICS[metric]
        if run.get(column) is None or run.get(minus) is None:
            return None
        return float(run[column]) - float(run[minus])
    value = run.get(metric)
    return None if value is None or isinstance(value, str) else float(value)


def results(study: ExpandedStudy, db_path: Path) -> StudyResults:
    """Every claim's paired difference and verdict from the leaderboard (nothing runs)."""
    runs = study_runs(study, db_path)
    ids = [r["id"] for cells in runs.values() for rs in cells.values() for r in rs]
    iterations = _iteration_rows(db_path, ids)
    wanted = sum(len(g.cells) * len(g.seeds) for g in study.grids)
    claims = []
    for bound in study.claims:
        claim = bound.plan
        values = []
        notes = []
        for (grid, cell), iteration in ((bound.a, bound.a_iteration), (bound.b, bound.b_iteration)):
            side: dict[tuple[int, int], float] = {}
            for run in runs[grid][cell.config_hash]:
                value = metric_value(run, iterations.get(run["id"], []), claim.metric, iteration)
                if value is not None:
                    side[(run["seed"], run["world_seed"])] = value
            if runs[grid][cell.config_hash] and not side:
                notes.append(f"no run of {grid}: {cell.key or 'its cell'} has {claim.metric_label}")
            values.append(side)
        stats = paired_verdict(values[0], values[1], claim.direction)
        blocks = []
        if claim.blocks:
            seeds = set(study.grid(bound.a[0]).seeds) | set(study.grid(bound.b[0]).seeds)
            blocks = paired_blocks(values[0], values[1], claim.direction, sorted(seeds), claim.blocks)
        mean = lambda d: sum(d.values()) / len(d) if d else None  # noqa: E731
        claims.append(ClaimResult(bound, values[0], values[1], stats, mean(values[0]), mean(values[1]), notes,
                                  blocks))
    finished = len(ids)
    return StudyResults(study, runs, iterations, claims, {"finished": finished, "wanted": wanted})


def contrast_label(bound: BoundClaim) -> str:
    """``A − B`` in words: ``[grid] a-cell − b-cell``, with each side's grid when they differ and its
    iteration when the side overrides the metric's."""
    def side(grid: str, cell: Any, iteration: int | None, filters: Mapping[str, Any], with_grid: bool) -> str:
        shown = {k: v for k, v in filters.items() if k not in ("grid", "iteration")}
        text = "/".join(f"{v}" if k in ("selector", "instance_selector", "corpus_selector", "allocator") else f"{k}={v}"
                        for k, v in shown.items()) or (cell.key or grid)
        if "iteration" in filters:
            text += f" @it{iteration}"
        return f"{grid}: {text}" if with_grid else text

    (ga, ca), (gb, cb) = bound.a, bound.b
    if ga == gb:
        return (f"[{ga}] {side(ga, ca, bound.a_iteration, bound.plan.a, False)} − "
                f"{side(gb, cb, bound.b_iteration, bound.plan.b, False)}")
    return (f"{side(ga, ca, bound.a_iteration, bound.plan.a, True)} − "
            f"{side(gb, cb, bound.b_iteration, bound.plan.b, True)}")


# -- how long a study took, and what it ran with (from the leaderboard) ---------------------------------


def _instant(text: Any) -> Any:
    import datetime

    if not text:
        return None
    try:
        moment = datetime.datetime.fromisoformat(str(text))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=datetime.timezone.utc)


def study_time(runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The measured time of a study's runs, from their leaderboard rows, so that an interrupted run and
    its re-run report the true total rather than the last command's time.

    Returns ``runs`` (how many), ``first_start`` / ``last_finish`` (ISO 8601, UTC), ``span_seconds``
    (first start to last finish: pauses between commands included), ``busy_seconds`` (the length of
    the union of the runs' computing intervals ``[finished_at - wall_seconds, finished_at]``: time
    when at least one run was computing, pauses excluded; a resumed run counts its last attempt) and
    ``run_seconds`` (the sum of ``wall_seconds``: compute time, several at once under ``--jobs``).
    Values are None when no run has the timestamps.
    """
    import datetime

    intervals, starts, total = [], [], 0.0
    for run in runs:
        start, finish = _instant(run.get("started_at")), _instant(run.get("finished_at"))
        wall = run.get("wall_seconds")
        if start is not None:
            starts.append(start)
        if wall is not None:
            total += float(wall)
        if finish is None:
            continue
        begin = finish - datetime.timedelta(seconds=float(wall)) if wall is not None else start
        if begin is not None:
            intervals.append((max(begin, start) if start is not None else begin, finish))
    out: dict[str, Any] = {"runs": len(runs), "first_start": None, "last_finish": None, "span_seconds": None,
                           "busy_seconds": None, "run_seconds": round(total, 1) if runs else None}
    if not intervals:
        return out
    first = min(starts) if starts else min(b for b, _ in intervals)
    last = max(f for _, f in intervals)
    busy, reach = 0.0, None
    for begin, finish in sorted(intervals):
        if reach is None or begin > reach:
            busy += (finish - begin).total_seconds()
            reach = finish
        elif finish > reach:
            busy += (finish - reach).total_seconds()
            reach = finish
    out.update(first_start=first.isoformat(timespec="seconds"), last_finish=last.isoformat(timespec="seconds"),
               span_seconds=round((last - first).total_seconds(), 1), busy_seconds=round(busy, 1))
    return out


def run_provenance(runs: Sequence[Mapping[str, Any]]) -> dict[str, list[str]]:
    """What a study's runs were made with: the distinct ``harness_version``, ``git_commit`` and the
    ``python`` / ``numpy`` / ``torch`` versions of their ``versions_json`` column (the store hands it
    over decoded, as ``versions``); each list sorted, usually of one."""
    import json

    seen: dict[str, set[str]] = {k: set() for k in ("harness", "git_commit", "python", "numpy", "torch")}
    for run in runs:
        if run.get("harness_version"):
            seen["harness"].add(str(run["harness_version"]))
        if run.get("git_commit"):
            seen["git_commit"].add(str(run["git_commit"]))
        versions = run.get("versions", run.get("versions_json"))  # the store decodes *_json columns
        if isinstance(versions, str):
            try:
                versions = json.loads(versions)
            except ValueError:
                versions = None
        for library in ("python", "numpy", "torch"):
            if isinstance(versions, Mapping) and versions.get(library):
                seen[library].add(str(versions[library]))
    return {k: sorted(v) for k, v in seen.items()}
