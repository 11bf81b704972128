"""Regime maps: which knobs a verdict depends on, as an exploratory sweep around the study's regime.

A plan's ``[regime_map]`` table names the claims to map, the seeds, and the
axes: each axis is a knob (β, training strength, τ, the DPO reference, N,
keep), each value a set of sweep arguments (``options = [...]``, each replacing the
grid's option of the same key, or a run option such as ``reference =
"previous"``). The map runs every value of every axis one at a time around the study's regime
(``--regime``, or the testbed's defaults), plus every combination along each
``slices`` pair (a two-dimensional slice).

For each *map cell* (one value of one axis, or one point of a slice) the plan
is re-expanded by :func:`harness.experiments.study.expand` with the cell's
arguments added to every grid, keeping only the cells the mapped claims compare
(only the arms a claim needs). Cells whose grids resolve to the same configs
(β = 1 and 8 epochs at lr 3e-3 are both the outcome-chosen centre) share one
sweep id, so those runs run once. Each (claim, map cell) is tested like any
claim; the p-values of one claim are Holm-adjusted over its map cells, and the
verdict reads **holds** (the source's direction), **reverses**, or **null**.
Every map is exploratory: its seeds should be exploration seeds, and nothing it
shows is a confirmed verdict.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

MAP_KEYS = ("claims", "seeds", "axes", "slices")
#: The sweep arguments an axis value may set (besides ``options``): the grid-able run options a regime varies.
VALUE_KEYS = ("options", "reference", "n_responses", "keep", "iterations", "budget")
MAP_NAME_SUFFIX = "~regime-map"  # the derived studies' name: their runs are tagged study = NAME~regime-map


@dataclass(frozen=True)
class RegimeMapPlan:
    """A plan's ``[regime_map]``: which claims, on which seeds, over which axes and slices."""

    claims: tuple[str, ...]
    seeds: int | str
    axes: dict[str, dict[str, dict[str, Any]]]  # axis -> value label -> sweep arguments
    slices: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class MapCell:
    """One point of the map: a label (``β = 0.1``, ``β = 0.1 × training = 20 steps``) and its sweep arguments."""

    label: str
    settings: tuple[tuple[str, str], ...]  # ((axis, value label), ...)
    args: dict[str, Any] = field(hash=False, compare=False)


def load_regime_map(errors: Any, table: Any, claims: Sequence[Any]) -> RegimeMapPlan | None:
    """Validate a plan's ``[regime_map]`` table (errors go to the plan's :class:`PlanErrors`)."""
    from harness.experiments.study_plan import check_seeds

    where = ["regime_map"]
    if not isinstance(table, dict):
        errors.add(where, "must be a table", "write it as a [regime_map] section")
        return None
    errors.unknown(where, table, MAP_KEYS)
    by_id = {c.id: c for c in claims}
    ids = table.get("claims")
    ok = True
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
        errors.add([*where, "claims"], f"claims {ids!r} is not a list of claim ids",
                   'write claims = ["F1-instance-smallest-vs-random", ...]')
        ids, ok = [], False
    for claim_id in ids:
        claim = by_id.get(claim_id)
        if claim is None:
            errors.add([*where, "claims"], f"{claim_id!r} is not a claim of this plan",
                       "list claim ids from the plan's [[claim]] tables")
            ok = False
        elif claim.compare != "final" or claim.direction not in ("a > b", "a < b"):
            errors.add([*where, "claims"], f"{claim_id!r} is not a plain direction claim",
                       "map plain claims with direction a > b or a < b (a map cell holds, reverses or is null)")
            ok = False
    seeds = table.get("seeds", 10)
    check_seeds(errors, [*where, "seeds"], seeds)
    axes = table.get("axes")
    if not isinstance(axes, dict) or not axes:
        errors.add([*where, "axes"], "axes is missing or empty",
                   'write [regime_map.axes.beta] with one line per value: "0.1" = {options = ["trainer.beta=0.1"]}')
        return None
    clean: dict[str, dict[str, dict[str, Any]]] = {}
    for axis, values in axes.items():
        if not isinstance(values, dict) or len(values) < 2:
            errors.add([*where, "axes"], f"axis {axis!r} needs a table of two or more values",
                       f'write [regime_map.axes.{axis}] with lines like "label" = {{options = ["k=v"]}}')
            ok = False
            continue
        clean[axis] = {}
        for label, args in values.items():
            if not isinstance(args, dict) or not args or set(args) - set(VALUE_KEYS):
                errors.add([*where, "axes"], f"value {label!r} of axis {axis!r} is not a table of sweep arguments",
                           f"use only {', '.join(VALUE_KEYS)}, e.g. {{options = [\"trainer.beta=0.1\"]}}")
                ok = False
                continue
            options = args.get("options", [])
            if not isinstance(options, list) or not all(isinstance(o, str) and "=" in o for o in options):
                errors.add([*where, "axes"], f"value {label!r} of axis {axis!r}: options must be \"k=v\" strings",
                           'write options = ["trainer.beta=0.1"]')
                ok = False
                continue
            clean[axis][str(label)] = dict(args)
    slices = table.get("slices", [])
    if not isinstance(slices, list) or not all(
            isinstance(s, list) and len(s) == 2 and all(a in clean for a in s) and s[0] != s[1] for s in slices):
        errors.add([*where, "slices"], f"slices {slices!r} is not a list of pairs of this map's axes",
                   'write slices = [["beta", "training"]]')
        slices, ok = [], False
    if not ok:
        return None
    return RegimeMapPlan(tuple(ids), seeds, clean, tuple((a, b) for a, b in slices))


def map_cells(plan: RegimeMapPlan) -> list[MapCell]:
    """Every value of every axis one at a time, then every point of each slice, each once, in that order."""
    cells: list[MapCell] = []
    seen: set[tuple[tuple[str, str], ...]] = set()

    def add(settings: tuple[tuple[str, str], ...]) -> None:
        key = tuple(sorted(settings))
        if key in seen:
            return
        seen.add(key)
        args: dict[str, Any] = {}
        for axis, value in settings:
            for name, item in plan.axes[axis][value].items():
                args[name] = [*args.get("options", []), *item] if name == "options" else item
        cells.append(MapCell(" × ".join(f"{axis} = {value}" for axis, value in settings), settings, args))

    for axis, values in plan.axes.items():
        for value in values:
            add(((axis, value),))
    for first, second in plan.slices:
        for a, b in itertools.product(plan.axes[first], plan.axes[second]):
            add(((first, a), (second, b)))
    return cells


def _key(option: str) -> str:
    return option.split("=", 1)[0].strip()


def _grid_with(args: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """A grid's sweep arguments with a map cell's: a cell's option replaces the grid's option of the same key (the
    knob the map moves wins), the other sweep arguments are replaced."""
    out = dict(args)
    for name, value in extra.items():
        if name == "options":
            moved = {_key(o) for o in value}
            out["options"] = [o for o in args.get("options", []) if _key(o) not in moved] + list(value)
        else:
            out[name] = value
    return out


@dataclass
class ExpandedMap:
    plan: RegimeMapPlan
    cells: list[MapCell]
    studies: list[Any]  # one harness.experiments.study.ExpandedStudy per map cell, in cells' order
    grids: list[Any]  # the distinct grids to run (by sweep id), named after the first map cell that uses each

    @property
    def n_runs(self) -> int:
        return sum(len(g.cells) * len(g.seeds) for g in self.grids)


def expand_map(study: Any, registry: Any) -> ExpandedMap | None:
    """The plan's regime map around ``study``'s regime: one derived study per map cell (None without a map)."""
    from harness.experiments.study import expand

    plan = study.plan
    if plan.regime_map is None:
        return None
    mapped = [c for c in plan.claims if c.id in plan.regime_map.claims]
    sides = [side.get("grid") for c in mapped for side in (c.a, c.b)]
    # a side without a grid filter may match a cell of any grid: then every grid is re-expanded
    used = [g for g in plan.grids if g.name in sides] if all(sides) else list(plan.grids)
    studies, grids, by_sweep = [], [], {}
    cells = map_cells(plan.regime_map)
    for cell in cells:
        derived_plan = dataclasses.replace(
            plan, name=plan.name + MAP_NAME_SUFFIX, seeds=plan.regime_map.seeds, exploration_seeds=None,
            grids=tuple(dataclasses.replace(g, args=_grid_with(g.args, cell.args), seeds=None) for g in used),
            claims=tuple(dataclasses.replace(c, family=c.id) for c in mapped), heterogeneity=(), figures=(),
            regime_map=None,
        )
        derived = expand(derived_plan, registry, quick=study.quick, regime=study.regime, testbed=study.testbed)
        keep = {(g, c.config_hash) for bound in derived.claims for g, c in (bound.a, bound.b)}
        for grid in derived.grids:
            grid.cells = [c for c in grid.cells if (grid.plan.name, c.config_hash) in keep]
            if grid.sweep_id in by_sweep:
                shared = by_sweep[grid.sweep_id]
                shared.cells += [c for c in grid.cells if c.config_hash not in {x.config_hash for x in shared.cells}]
                continue
            copy = dataclasses.replace(grid, plan=dataclasses.replace(grid.plan, name=f"{grid.plan.name} @ {cell.label}"),
                                       cells=list(grid.cells))
            by_sweep[grid.sweep_id] = copy
            grids.append(copy)
        studies.append(derived)
    return ExpandedMap(plan.regime_map, cells, studies, grids)


def planning_study(study: Any, regime_map: ExpandedMap) -> Any:
    """An :class:`~harness.experiments.study.ExpandedStudy` whose grids are the map's distinct grids: what
    :func:`harness.experiments.study.make_plan` and :func:`~harness.experiments.study.tasks` run."""
    first = regime_map.studies[0]
    return dataclasses.replace(first, grids=list(regime_map.grids), claims=[])


@dataclass
class MapResults:
    rows: list[MapResult]  # one per (map cell, claim), in cell order
    runs: list[dict[str, Any]]  # the distinct finished runs they use (cells that share a grid share its runs)


@dataclass
class MapResult:
    cell: MapCell
    claim: str
    stats: dict[str, Any]

    @property
    def word(self) -> str:
        """holds / reverses / null, from the adjusted verdict; "too few pairs" below 2 pairs (a cell not run yet)."""
        verdict = self.stats.get("verdict", "")
        if verdict == "too few pairs":
            return "too few pairs"
        if verdict in ("reproduced", "holds"):
            return "holds"
        if verdict == "reversed":
            return "reverses"
        return "null"


def map_results(regime_map: ExpandedMap, db_path: Any, correction: str = "holm") -> MapResults:
    """Every (map cell, claim)'s test, each claim's p-values adjusted over its map cells, and the runs used."""
    from harness.experiments.study import results
    from harness.experiments.verdicts import adjust_family

    out, runs = [], {}
    for cell, derived in zip(regime_map.cells, regime_map.studies):
        outcome = results(derived, db_path)
        out.extend(MapResult(cell, item.claim.plan.id, item.stats) for item in outcome.claims)
        runs.update((run["id"], run) for run in outcome.finished_runs())
    for claim in regime_map.plan.claims:
        adjust_family([r.stats for r in out if r.claim == claim], correction)
    ordered = sorted(runs.values(), key=lambda r: (r.get("started_at") or "", r["id"]))
    return MapResults(out, ordered)
