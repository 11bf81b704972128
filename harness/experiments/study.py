"""Studies: "does A beat B, by how much, and is that real?" as a plan file, runs and a verdict.

A study is a TOML plan (:mod:`harness.experiments.study_plan`: its schema,
loading and error locations). This module expands a loaded plan into sweep
cells, plans and tags its runs, and reads their results back; the arithmetic
of a verdict is :mod:`harness.experiments.verdicts`.

- :func:`expand` turns every ``[[grid]]`` into sweep cells with the sweep
  module's own :class:`~harness.experiments.sweep.GridSpec` / :func:`~harness.experiments.sweep.expand_grid`,
  gives each grid a sweep id, and binds every claim's ``a`` and ``b`` to exactly
  one cell (an error names the claim's line otherwise).
- :func:`make_plan` / :func:`tasks` reuse :func:`harness.experiments.sweep.make_plan` and
  :func:`harness.experiments.sweep.tasks_from_plan`, so skip / resume / redo and the
  executors behave exactly as in ``harness sweep``; every task is also tagged
  ``study`` and ``study_grid``.
- :func:`results` reads the leaderboard, computes each claim's tests with
  :func:`harness.experiments.verdicts.claim_statistics` and adjusts them over
  each family with :func:`harness.experiments.verdicts.adjust_family`.
- :func:`study_time` and :func:`run_provenance` read, from the runs' own rows,
  how long the study took (so an interrupted study and its re-run add up) and
  what it ran with.

**Fair comparisons.** A claim with ``compare = "matched_steps"`` and ``steps = S``
is bound to the cells of a *derived grid*, ``GRID@stepsS``: the grid of each of
its arms with ``trainer.steps=S`` added to the grid's options (so both arms run
exactly S optimiser steps per iteration), keeping only the cells such claims
compare. A derived grid's sweep id is computed over all its cells, so it does
not change when another claim starts to use it. A claim with
``compare = "matched_kl"`` runs nothing extra: :func:`results` reads both arms'
per-iteration rows and hands them to :func:`harness.experiments.matched.matched_kl`.
A claim with ``compare = "tuned"`` derives two grids per arm's grid
(:mod:`harness.experiments.tuned`): ``GRID@tune``, each arm's cell at every point
of the claim's ``tune`` grid on the tuning seeds, and ``GRID@tuned``, which holds
only the point tuning chose for each arm, on the grid's confirmation seeds. The
choice needs the tuning runs, so :func:`expand` leaves ``GRID@tuned`` empty and
:func:`bind_tuned` fills it from the leaderboard (``harness study run`` calls it
again once the tuning runs have finished, and then runs what it chose).

**Sweep ids of a study.** A grid's sweep id is the usual hash of its cells
(:func:`harness.experiments.sweep.sweep_id`) salted with the study's name, still ``s`` plus
10 hex digits. So a study never counts runs of a plain ``harness sweep`` (they
lack the ``study`` tag), and ``harness leaderboard --sweep ID`` shows one grid.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import UsageError
from harness.experiments.study_plan import ClaimPlan, GridPlan, PlanErrors, StudyPlan, seed_list
from harness.experiments.tuned import tuned_grid_name, tuning_grid_name
from harness.experiments.verdicts import adjust_family, claim_statistics
from harness.reference_point import MARK

# -- expansion --------------------------------------------------------------------------------------


@dataclass
class ExpandedGrid:
    plan: GridPlan
    spec: Any  # harness.experiments.sweep.GridSpec
    cells: list  # [harness.experiments.sweep.Cell]
    seeds: list[int]
    sweep_id: str
    derived_from: str | None = None  # a derived grid (matched steps, tuning, tuned): the plan's grid it copies
    steps: int | None = None  # a matched-steps grid: the trainer steps it fixes
    tuning: str | None = None  # "tune" (the tuning grid) or "tuned" (the chosen points on confirmation seeds)


def derived_grid_name(grid: str, steps: int) -> str:
    """The name of grid ``grid`` re-run with ``trainer.steps = steps`` (``@`` is never in a plan's grid names)."""
    return f"{grid}@steps{steps}"


@dataclass
class BoundClaim:
    plan: ClaimPlan
    a: tuple[str, Any]  # (grid name, Cell)
    b: tuple[str, Any]
    a_iteration: int | None
    b_iteration: int | None
    steps: int | None = None  # compare = "matched_steps": the steps per iteration its derived cells run
    tuning: dict[str, Any] | None = None  # compare = "tuned": side -> its harness.experiments.tuned.TunedArm


@dataclass
class ExpandedStudy:
    plan: StudyPlan
    quick: bool
    grids: list[ExpandedGrid]
    claims: list[BoundClaim]
    seeds_override: str | None = None
    regime: str | None = None  # --regime: the testbed regime every grid ran in (None: the testbed's defaults)
    testbed: str | None = None  # --testbed: the plan's [testbed.NAME] section every grid ran under (None: as written)
    regimes: dict[tuple[str, str], Any] = field(default_factory=dict)  # (grid, config hash) -> VerdictRegime
    arms: dict[tuple[str, str], Any] = field(default_factory=dict)  # (grid, base config hash) -> TunedArm

    @property
    def variant(self) -> str:
        return "quick" if self.quick else "full"

    @property
    def label(self) -> str:
        """The name of this study's report and published section: ``NAME[-quick][+TESTBED][@REGIME]``."""
        return (self.plan.name + ("-quick" if self.quick else "") + (f"+{self.testbed}" if self.testbed else "")
                + (f"@{self.regime}" if self.regime else ""))

    @property
    def section(self) -> Any:
        """The plan's ``[testbed.NAME]`` section the study runs under (None: the grids as written)."""
        return testbed_section(self.plan, self.testbed)

    @property
    def quick_table(self) -> dict[str, Any]:
        """The quick variant's overrides: the plan's ``[quick]``, or the testbed section's."""
        return dict(self.plan.quick) if self.section is None else quick_on_testbed(self.plan, self.section)

    def grid_args(self, grid: Any) -> dict[str, Any]:
        """A plan grid's sweep arguments as this study runs it: under its testbed section and regime."""
        return _with_regime(on_testbed(grid, self.section), self.regime)

    def regime_of(self, side: tuple[str, Any]) -> Any:
        """The :class:`~harness.experiments.verdict_regime.VerdictRegime` of one claim side's (grid, cell)."""
        grid, cell = side
        return self.regimes[(grid, cell.config_hash)]

    @property
    def confirmatory(self) -> bool:
        """Whether these are confirmatory verdicts: the full study, on seeds that no exploration used."""
        if self.quick:
            return False
        if self.plan.exploration_seeds is None:
            return True
        explored = set(seed_list(self.plan.exploration_seeds))
        # tuning grids run on exploration seeds by design: they choose options, they give no verdict
        return not any(explored & set(grid.seeds) for grid in self.grids if grid.tuning != "tune")

    def standing(self) -> str:
        """One sentence for reports: are these verdicts confirmatory, and on which seeds."""
        if self.quick:
            return "Quick variant: few seeds and small pools, to check the mechanics. These are not verdicts."
        if not self.confirmatory:
            return ("Exploratory: these seeds overlap the plan's exploration seeds, so the verdicts below are "
                    "exploratory, not confirmation.")
        if self.plan.exploration_seeds is None:
            return ("The plan does not declare exploration seeds, so whether its seeds were used to explore is "
                    "not recorded: read the verdicts as exploratory unless you know they were not.")
        from harness.experiments.sweep import format_seeds

        return (f"Confirmatory: every grid runs on confirmation seeds, disjoint from the exploration seeds "
                f"({format_seeds(seed_list(self.plan.exploration_seeds))}).")

    def grid(self, name: str) -> ExpandedGrid:
        return next(g for g in self.grids if g.plan.name == name)

    @property
    def n_runs(self) -> int:
        return sum(len(g.cells) * len(g.seeds) for g in self.grids)


def study_sweep_id(study: str, cells: Sequence[Any], world_seed: int | None) -> str:
    """The sweep id of a study grid: :func:`harness.experiments.sweep.sweep_id` salted with the study's name."""
    from harness.experiments.sweep import sweep_id

    base = sweep_id(cells, world_seed)
    return "s" + hashlib.sha256(f"study:{study}:{base}".encode()).hexdigest()[:10]


def expand(plan: StudyPlan, registry: Any, *, quick: bool = False, seeds: str | None = None,
           regime: str | None = None, testbed: str | None = None) -> ExpandedStudy:
    """Every grid's validated cells, seeds and sweep id, and every claim bound to its two cells.

    ``quick`` applies the plan's ``[quick]`` overrides; ``seeds`` (the command line's ``--seeds``: a
    count or a list) replaces every grid's seeds; ``regime`` (``--regime``) runs every grid in that
    regime of its testbed, its options in front of the grid's own (a grid's ``-o`` still wins). A bad
    cell or an ambiguous claim is a PlanError naming the plan's line; an unknown regime a UsageError.
    ``testbed`` (``--testbed NAME``) runs every grid under the plan's ``[testbed.NAME]`` section
    (:func:`on_testbed`); a plan without that section is a UsageError.
    """
    from harness.experiments.sweep import GridSpec, expand_grid

    section = testbed_section(plan, testbed)
    quick_table = plan.quick if section is None else quick_on_testbed(plan, section)
    if regime is not None:
        _check_regime(plan, registry, regime, section)
    errors = PlanErrors(plan.path, plan.text)
    carried = None if section is None or section.claims is None else set(section.claims)
    grids = []
    for grid in _grids_for(plan, carried):
        args = _with_regime(on_testbed(grid, section), regime)
        if quick:
            args = _apply_quick(args, quick_table)
        value: int | str = seeds if seeds is not None else (
            quick_table.get("seeds", grid.seeds or plan.seeds) if quick else (grid.seeds or plan.seeds))
        try:
            seed_values = seed_list(value)
            spec = GridSpec.from_cli(registry, **args)
            cells = expand_grid(registry, spec, first_seed=seed_values[0], may_go_unused=section_judges(section))
        except UsageError as exc:
            errors.add(["grid", grid.index], str(exc).replace("\n", " "),
                       "fix this grid (its keys are the arguments of `harness sweep`)")
            continue
        grids.append(ExpandedGrid(grid, spec, cells, seed_values,
                                  study_sweep_id(plan.name, cells, spec.world_seed)))
    errors.raise_if_any()
    study = ExpandedStudy(plan, quick, grids, [], seeds, regime, testbed)
    for claim in plan.claims:
        if carried is not None and claim.id not in carried:
            continue
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
    if carried is not None:  # a section that carries some claims runs only the grids they compare
        used = {side[0] for bound in study.claims for side in (bound.a, bound.b)}
        study.grids = [grid for grid in study.grids if grid.plan.name in used]
    _check_matched_kl(errors, study)
    _bind_matched_steps(errors, study, registry, quick=quick)
    _derive_tuning(errors, study, registry, quick=quick)
    errors.raise_if_any()
    _read_regimes(study, registry)
    return study


def _grids_for(plan: StudyPlan, carried: set[str] | None) -> list[Any]:
    """The plan's grids a study expands: all of them, or, under a section that carries some claims, the
    grids those claims name (all of them when a carried claim names no grid, so it can match any)."""
    if carried is None:
        return list(plan.grids)
    names = {side.get("grid") for claim in plan.claims if claim.id in carried for side in (claim.a, claim.b)}
    if None in names:
        return list(plan.grids)
    return [grid for grid in plan.grids if grid.name in names]


def testbed_section(plan: StudyPlan, testbed: str | None) -> Any:
    """The plan's ``[testbed.NAME]`` section for ``--testbed NAME`` (None without it); UsageError when absent."""
    if testbed is None:
        return None
    if testbed not in plan.testbeds:
        have = ", ".join(sorted(plan.testbeds)) or "none"
        raise UsageError(f"plan {plan.name!r} has no [testbed.{testbed}] section (its testbed sections: {have}); "
                         f"add one saying how its grids run there (docs/experiments/plans.md lists its keys), or "
                         "drop --testbed")
    return plan.testbeds[testbed]


def section_judges(section: Any) -> frozenset[str]:
    """The judge roles a testbed section names or sets options for: written for every grid at once, so a grid
    whose cells never use one of them is not refused for it (:func:`harness.experiments.sweep.expand_grid`)."""
    if section is None:
        return frozenset()
    roles = {_option_key(option).split(".", 1)[0] for option in section.options}
    roles |= {role for role in ("gold_judge", "proxy_judge", "annotator") if role in section.overrides}
    return frozenset(roles)


def _option_key(option: str) -> str:
    return option.split("=", 1)[0].strip()


def on_testbed(grid: Any, section: Any) -> dict[str, Any]:
    """A grid's sweep arguments under a ``[testbed.NAME]`` section (as written when ``section`` is None).

    The section's testbed replaces the grid's; the grid's own ``testbed.*`` options, written for the testbed
    it names, are dropped; the section's run-option overrides (budget, iterations, responses, keep), then its
    per-grid ones, replace the grid's; its options, then its per-grid options, are added, each replacing a
    grid option of the same key.
    """
    args = dict(grid.args)
    if section is None:
        return args
    own = section.grids.get(grid.name, {})
    args["testbed"] = section.testbed
    args.update(section.overrides)
    args.update(own.get("overrides", {}))
    mine = list(own.get("options", ()))
    added = [option for option in section.options if _option_key(option) not in {_option_key(o) for o in mine}]
    added += mine  # the grid's table wins over the section's options of the same key
    replaced = {_option_key(option) for option in added}
    kept = [option for option in args.get("options", []) if not _option_key(option).startswith("testbed.")
            and _option_key(option) not in replaced]
    args["options"] = [*kept, *added]
    return args


SECTION_QUICK = "_section_quick"
"""In a testbed section's own quick table: the keys of the options the section (and its grid tables) set,
which its options replace."""


def quick_on_testbed(plan: StudyPlan, section: Any) -> dict[str, Any]:
    """The quick variant under a testbed section: its own ``quick`` table (whose options replace the
    section's own of the same key), else the plan's ``[quick]`` without its ``testbed.*`` options (they were
    written for the plan's testbed)."""
    if section.quick is not None:
        written = [*section.options, *(o for table in section.grids.values() for o in table.get("options", ()))]
        return {**section.quick, SECTION_QUICK: tuple(dict.fromkeys(_option_key(o) for o in written))}
    quick = dict(plan.quick)
    quick["options"] = [option for option in quick.get("options", []) if not _option_key(option).startswith("testbed.")]
    return quick


def _with_regime(args: Mapping[str, Any], regime: str | None) -> dict[str, Any]:
    """A grid's sweep arguments run in ``regime`` (a grid that names its own regime keeps it)."""
    args = dict(args)
    if regime is not None and args.get("regime") is None:
        args["regime"] = regime
    return args


def _check_regime(plan: StudyPlan, registry: Any, regime: str, section: Any = None) -> None:
    """UsageError (exit 2) unless every testbed the plan's grids use (under ``section``) declares ``regime``."""
    from harness.regimes import regime_options

    names: set[str] = set()
    for grid in plan.grids:
        value = on_testbed(grid, section).get("testbed") or "synthetic"
        names.update(n.strip() for n in (value if isinstance(value, list) else str(value).split(",")))
    for name in sorted(names):
        regime_options(registry.get("testbed", name).cls, regime)


def _read_regimes(study: ExpandedStudy, registry: Any) -> None:
    """The regime of every cell (:mod:`harness.experiments.verdict_regime`), for the reports' regime columns."""
    from harness.experiments.verdict_regime import RegimeReader

    reader = RegimeReader(registry)
    for grid in study.grids:
        for cell in grid.cells:
            study.regimes[(grid.plan.name, cell.config_hash)] = reader.describe(cell.config)


def _check_matched_kl(errors: PlanErrors, study: ExpandedStudy) -> None:
    """A matched-KL claim compares two paths: its arms must be two cells, not one run's two iterations."""
    for bound in study.claims:
        if bound.plan.compare != "matched_kl":
            continue
        (ga, ca), (gb, cb) = bound.a, bound.b
        if ga == gb and ca.config_hash == cb.config_hash:
            errors.add(["claim", bound.plan.index, "compare"],
                       "a matched-KL comparison matches two runs' paths, and a and b are the same cell (one run's "
                       "iterations): read at the common KL both are the same point",
                       'compare two cells, or use compare = "matched_steps" for a claim between iterations')


def _bind_matched_steps(errors: PlanErrors, study: ExpandedStudy, registry: Any, *, quick: bool) -> None:
    """Derive a grid with ``trainer.steps`` fixed for every (grid, steps) a matched-steps claim uses, keep the
    cells those claims compare, and rebind each such claim to its derived cells."""
    from harness.experiments.sweep import GridSpec, expand_grid

    wanted: dict[tuple[str, int], list[tuple[int, str]]] = {}  # (grid, steps) -> [(claim position, side)]
    for position, bound in enumerate(study.claims):
        if bound.plan.compare != "matched_steps" or bound.plan.steps is None:
            continue
        bound.steps = quick_steps(bound.plan.steps, study.quick_table) if quick else bound.plan.steps
        for side in ("a", "b"):
            grid = getattr(bound, side)[0]
            wanted.setdefault((grid, bound.steps), []).append((position, side))
    for (name, steps), uses in wanted.items():
        base = study.grid(name)
        claim = study.claims[uses[0][0]].plan
        base_args = study.grid_args(base.plan)
        options = list(base_args.get("options", []))
        if any(o.split("=", 1)[0].strip() == "trainer.steps" for o in options):
            errors.add(["claim", claim.index, "compare"],
                       f"grid {name!r} already sets trainer.steps, which a matched-steps comparison sets to {steps}",
                       "compare that grid's own cells with a plain claim, or drop trainer.steps from the grid")
            continue
        args = {**base_args, "options": [*options, f"trainer.steps={steps}"]}
        if quick:
            args = _apply_quick(args, study.quick_table)
        derived_name = derived_grid_name(name, steps)
        try:
            spec = GridSpec.from_cli(registry, **args)
            cells = expand_grid(registry, spec, first_seed=base.seeds[0])
        except UsageError as exc:
            errors.add(["claim", claim.index, "compare"],
                       f"grid {name!r} with trainer.steps={steps}: " + str(exc).replace("\n", " "),
                       "a matched-steps comparison needs a trainer with a steps option (native, trl)")
            continue
        derived = ExpandedGrid(dataclasses.replace(base.plan, name=derived_name), spec, [], list(base.seeds),
                               study_sweep_id(study.plan.name, cells, spec.world_seed), name, steps)
        fields = [(cell, cell_fields(derived_name, cell)) for cell in cells]
        for position, side in uses:
            bound = study.claims[position]
            grid, cell = getattr(bound, side)
            # the base cell's config, with the steps fixed: the one derived cell that differs from it only there
            want = {k: v for k, v in cell_fields(derived_name, cell).items() if k != "trainer.steps"}
            found = [c for c, f in fields if {k: v for k, v in f.items() if k != "trainer.steps"} == want]
            if len(found) != 1:
                errors.add(["claim", bound.plan.index, side], f"{side} has no single cell in {derived_name}",
                           "report this: a derived grid should copy its grid's cells")
                continue
            if not any(c is found[0] for c in derived.cells):
                derived.cells.append(found[0])
            setattr(study.claims[position], side, (derived_name, found[0]))
        order = {id(c): i for i, c in enumerate(cells)}
        derived.cells.sort(key=lambda c: order[id(c)])
        study.grids.append(derived)


def _derive_tuning(errors: PlanErrors, study: ExpandedStudy, registry: Any, *, quick: bool) -> None:
    """For every grid a tuned claim's arm comes from: ``GRID@tune`` (each arm's cell at every point of the
    claim's ``tune`` grid, on the tuning seeds) and an empty ``GRID@tuned`` (filled by :func:`bind_tuned`)."""
    from harness.experiments.study_plan import tune_seeds_of
    from harness.experiments.sweep import GridSpec, expand_grid
    from harness.experiments.tuned import QUICK_TUNE_SEEDS, TunedArm, tune_options, tune_points

    derived: dict[str, tuple[ExpandedGrid, ExpandedGrid, list[tuple[Any, dict[str, Any]]], Any]] = {}
    for bound in study.claims:
        claim = bound.plan
        if claim.compare != "tuned" or not claim.tune:
            continue
        seeds = tune_seeds_of(claim, study.plan.exploration_seeds)
        seeds = seeds[:QUICK_TUNE_SEEDS] if quick else seeds
        bound.tuning = {}
        for side in ("a", "b"):
            name, cell = getattr(bound, side)
            if name not in derived:
                base = study.grid(name)
                base_args = study.grid_args(base.plan)
                options = list(base_args.get("options", []))
                clash = sorted({o.split("=", 1)[0].strip() for o in options} & set(claim.tune))
                if clash:
                    errors.add(["claim", claim.index, "tune"],
                               f"grid {name!r} already sets {', '.join(clash)}, which tuning varies",
                               "drop that option from the grid, or tune other options")
                    break
                args = {**base_args, "options": [*options, *tune_options(claim.tune)]}
                if quick:
                    args = _apply_quick(args, study.quick_table)
                try:
                    spec = GridSpec.from_cli(registry, **args)
                    cells = expand_grid(registry, spec, first_seed=seeds[0])
                except UsageError as exc:
                    errors.add(["claim", claim.index, "tune"], f"grid {name!r} tuned over "
                               + ", ".join(tune_options(claim.tune)) + ": " + str(exc).replace("\n", " "),
                               "tune options the grid's plugins take (e.g. trainer.lr, trainer.beta)")
                    break
                tuning = ExpandedGrid(dataclasses.replace(base.plan, name=tuning_grid_name(name)), spec, [], seeds,
                                      study_sweep_id(study.plan.name + ":tune", cells, spec.world_seed), name,
                                      tuning="tune")
                tuned = ExpandedGrid(dataclasses.replace(base.plan, name=tuned_grid_name(name)), spec, [],
                                     list(base.seeds), study_sweep_id(study.plan.name + ":tuned", cells,
                                                                      spec.world_seed), name, tuning="tuned")
                fields = [(c, cell_fields(tuning.plan.name, c)) for c in cells]
                derived[name] = (tuning, tuned, fields, claim)
            tuning, tuned, fields, first = derived[name]
            if first.tune != claim.tune or tune_seeds_of(first, study.plan.exploration_seeds) != \
                    tune_seeds_of(claim, study.plan.exploration_seeds):
                errors.add(["claim", claim.index, "tune"],
                           f"claim {first.id!r} tunes grid {name!r} over other options or seeds",
                           "give every tuned claim on one grid the same tune and tune_seeds")
                break
            key = (name, cell.config_hash)
            if key not in study.arms:
                want = {k: v for k, v in cell_fields(tuning.plan.name, cell).items() if k not in claim.tune}
                found = [c for c, f in fields if {k: v for k, v in f.items() if k not in claim.tune} == want]
                points = tune_points(claim.tune)
                if len(found) != len(points):
                    errors.add(["claim", claim.index, side], f"{side} has {len(found)} tuning cells, not {len(points)}",
                               "report this: a tuning grid should copy its grid's cells at every tuning point")
                    break
                study.arms[key] = TunedArm(name, cell, list(seeds), found, points)
                tuning.cells.extend(found)
            bound.tuning[side] = study.arms[key]
    order = {name: i for i, name in enumerate(g.plan.name for g in study.grids)}
    for name in sorted(derived, key=order.get):
        tuning, tuned, fields, _ = derived[name]
        rank = {id(c): i for i, (c, _) in enumerate(fields)}
        tuning.cells.sort(key=lambda c: rank[id(c)])
        study.grids.extend([tuning, tuned])


def bind_tuned(study: ExpandedStudy, registry: Any, db_path: Path) -> int:
    """Read every tuned arm's tuning runs, choose where tuning is complete, put each chosen cell in its
    ``GRID@tuned`` and bind the tuned claims' sides to it. Returns how many chosen cells are new.

    A side whose tuning is not complete keeps its plain cell; :func:`results` then gives that claim no
    values and says how far tuning got."""
    from harness.experiments.tuned import TUNE_METRIC, choose

    if not study.arms:
        return 0
    runs = study_runs(study, db_path)
    new = 0
    for (name, _), arm in study.arms.items():
        tuning = study.grid(tuning_grid_name(name))
        values: dict[str, list[float]] = {}
        for cell in arm.cells:
            got = [float(r[TUNE_METRIC]) for r in runs[tuning.plan.name].get(cell.config_hash, [])
                   if r.get(TUNE_METRIC) is not None]
            values[cell.config_hash] = got
            arm.counts[cell.config_hash] = len(got)
            if got:
                arm.means[cell.config_hash] = sum(got) / len(got)
        arm.chosen = choose(arm.cells, values, len(arm.seeds))
        tuned = study.grid(tuned_grid_name(name))
        if arm.chosen is not None and not any(c is arm.chosen for c in tuned.cells):
            tuned.cells.append(arm.chosen)
            new += 1
    for bound in study.claims:
        for side, arm in (bound.tuning or {}).items():
            setattr(bound, side, (tuned_grid_name(arm.grid), arm.chosen) if arm.chosen is not None else (arm.grid, arm.base))
    for name in {arm.grid for arm in study.arms.values()}:
        grid = study.grid(tuned_grid_name(name))
        rank = {id(c): i for i, c in enumerate(study.grid(tuning_grid_name(name)).cells)}
        grid.cells.sort(key=lambda c: rank[id(c)])
    if new:
        _read_regimes(study, registry)
    return new


def quick_steps(steps: int, quick: Mapping[str, Any]) -> int:
    """A matched-steps claim's steps in the quick variant: scaled by ``budget_scale`` like every budget, so that
    the quick variant stays a miniature of the full one (both arms still run the same steps)."""
    return max(1, int(round(steps * float(quick.get("budget_scale", 1.0)))))


def _apply_quick(args: dict[str, Any], quick: Mapping[str, Any]) -> dict[str, Any]:
    """A grid's arguments in the quick variant: its budget scaled, the quick options added.

    The quick options give way to a grid's own option of the same key, with one exception: a testbed
    section's own ``quick`` table (``SECTION_QUICK`` holds the keys of the options the section and its
    grid tables set) was written beside those options, so its options replace them (e.g. a smaller seed
    round). Any other option of the grid, its plan options and derived ones included, still wins.
    """
    args = dict(args)
    scale = float(quick.get("budget_scale", 1.0))
    if scale != 1.0:
        args["budget"] = max(1, int(round(args.get("budget", 3000) * scale)))
    quick_options = list(quick.get("options", []))
    replaced = {_option_key(o) for o in quick_options} & set(quick.get(SECTION_QUICK, ()))
    if replaced:  # a section's quick options replace the section's own options of those keys, nothing else
        args["options"] = [o for o in args.get("options", []) if _option_key(o) not in replaced]
    own = {_option_key(o) for o in args.get("options", [])}
    extra = [o for o in quick_options if _option_key(o) not in own]
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


def make_plan(study: ExpandedStudy, db_path: Path, *, force: bool = False,
              resumable: bool = True) -> list[StudyPlanItem]:
    """Per grid, :func:`harness.experiments.sweep.make_plan` (skip / busy / resume / redo / new); in grid order.

    ``resumable`` False (an executor whose workers never open the leaderboard): unfinished runs are redone."""
    from harness.experiments.sweep import make_plan as sweep_plan

    items = []
    for grid in study.grids:
        for planned in sweep_plan(grid.cells, grid.seeds, sweep=grid.sweep_id, db_path=db_path,
                                  world_seed=grid.spec.world_seed, force=force, resumable=resumable):
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


# -- results ---------------------------------------------------------------------------------------------


@dataclass
class ClaimResult:
    claim: BoundClaim
    a_values: dict[tuple[int, int], float]
    b_values: dict[tuple[int, int], float]
    stats: dict[str, Any]
    a_mean: float | None = None
    b_mean: float | None = None
    notes: list[str] = field(default_factory=list)
    matched: Any = None  # compare = "matched_kl": the harness.experiments.matched.MatchedKL behind the values
    steps_seen: dict[str, list[int]] | None = None  # compare = "matched_steps": train_steps recorded per arm
    tuning: dict[str, Any] | None = None  # compare = "tuned": side -> its harness.experiments.tuned.TunedArm


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
        metric = claim.metric if study.section is None else study.section.metric(claim.metric)
        values = []
        notes = []
        if metric != claim.metric:
            notes.append(f"read as {metric} on this testbed (the section's `metrics`)")
        matched = steps_seen = None
        pending = [(side, arm) for side, arm in (bound.tuning or {}).items() if arm.chosen is None]
        if claim.compare == "matched_kl":
            matched, values, matched_notes = _matched_kl_values(bound, runs, iterations, metric)
            notes.extend(matched_notes)
        elif claim.compare == "tuned" and pending:
            values = [{}, {}]
            notes.append("tuning not complete, so nothing is compared yet: " + "; ".join(
                f"{side.upper()} {arm.finished} of {arm.wanted} tuning runs finished" for side, arm in pending))
        else:
            for (grid, cell), iteration in ((bound.a, bound.a_iteration), (bound.b, bound.b_iteration)):
                side: dict[tuple[int, int], float] = {}
                for run in runs[grid][cell.config_hash]:
                    value = metric_value(run, iterations.get(run["id"], []), metric, iteration)
                    if value is not None:
                        side[(run["seed"], run["world_seed"])] = value
                if runs[grid][cell.config_hash] and not side:
                    notes.append(f"no run of {grid}: {cell.key or 'its cell'} has {metric}")
                values.append(side)
        if claim.compare == "matched_steps":
            steps_seen = _steps_seen(bound, runs, iterations)
            off = {side: seen for side, seen in steps_seen.items() if seen and seen != [bound.steps]}
            if off:
                notes.append("matched steps: recorded train_steps per iteration "
                             + ", ".join(f"{side.upper()} {seen}" for side, seen in off.items())
                             + f", not only {bound.steps} (an iteration with no pairs trains 0 steps)")
        stats = claim_statistics(values[0], values[1], claim.direction, margin=study.plan.margins.get(metric))
        stats.update(family=claim.family, kind=claim.kind)
        if claim.compare != "final":
            stats["compare"] = claim.compare
        if matched is not None:
            stats["matched_kl"] = matched.summary()
        if bound.tuning:
            stats["tuned"] = {side: tuned_summary(arm) for side, arm in bound.tuning.items()}
        mean = lambda d: sum(d.values()) / len(d) if d else None  # noqa: E731
        claims.append(ClaimResult(bound, values[0], values[1], stats, mean(values[0]), mean(values[1]), notes,
                                  matched, steps_seen, bound.tuning))
    for family in dict.fromkeys(item.claim.plan.family for item in claims):
        adjust_family([item.stats for item in claims if item.claim.plan.family == family], study.plan.correction)
    finished = len(ids)
    return StudyResults(study, runs, iterations, claims, {"finished": finished, "wanted": wanted})


def tuned_summary(arm: Any) -> dict[str, Any]:
    """A tuned arm for JSON: its grid, the chosen point (None until tuning is complete), the tuning seeds and
    every tuning point's mean tuning metric."""
    from harness.experiments.tuned import TUNE_METRIC

    return {"grid": arm.grid, "chosen": arm.chosen_point(), "seeds": list(arm.seeds), "metric": TUNE_METRIC,
            "points": [{**point, "mean": arm.means.get(cell.config_hash), "runs": arm.counts.get(cell.config_hash, 0)}
                       for cell, point in zip(arm.cells, arm.points)]}


def _side_rows(side: tuple[str, Any], runs: Mapping[str, Any],
               iterations: Mapping[str, list[dict[str, Any]]]) -> dict[tuple[int, int], list[dict[str, Any]]]:
    grid, cell = side
    return {(run["seed"], run["world_seed"]): iterations.get(run["id"], []) for run in runs[grid][cell.config_hash]}


def _matched_kl_values(bound: BoundClaim, runs: Mapping[str, Any], iterations: Mapping[str, list[dict[str, Any]]],
                       metric: str):
    """A matched-KL claim's per-seed values of ``metric`` at the common KL
    (:func:`harness.experiments.matched.matched_kl`), and the notes naming every seed that did not reach it."""
    from harness.experiments.matched import matched_kl

    result = matched_kl(_side_rows(bound.a, runs, iterations), _side_rows(bound.b, runs, iterations), metric,
                        a_through=bound.a_iteration, b_through=bound.b_iteration)
    notes = []
    if result.missing:
        shown = "; ".join(f"({s.key[0]},{s.key[1]}): {s.reason}" for s in result.missing)
        notes.append(f"matched KL: {len(result.missing)} seed{'s' if len(result.missing) != 1 else ''} did not "
                     f"reach the common KL and {'are' if len(result.missing) != 1 else 'is'} not in the test: {shown}")
    if result.non_monotone:
        shown = ", ".join(f"({k[0]},{k[1]})" for k in result.non_monotone)
        notes.append(f"matched KL: the KL path is not monotone on seeds {shown}; the metric is read at the first "
                     "crossing of the common KL")
    return result, [result.values("a"), result.values("b")], notes


def _steps_seen(bound: BoundClaim, runs: Mapping[str, Any],
                iterations: Mapping[str, list[dict[str, Any]]]) -> dict[str, list[int]]:
    """The distinct ``train_steps`` each arm's runs recorded over their iterations (pi_0 excluded)."""
    out = {}
    for name, side in (("a", bound.a), ("b", bound.b)):
        seen = {int(row["train_steps"]) for rows in _side_rows(side, runs, iterations).values() for row in rows
                if row.get("iteration") and row.get("train_steps") is not None}
        out[name] = sorted(seen)
    return out


def _marked(name: Any, cell: Any) -> str:
    """A selector's name as the claim names it, with the reference point's mark its cell's key carries."""
    return f"{name}{MARK}" if f"={name}{MARK}" in (getattr(cell, "key", "") or "") else f"{name}"


def contrast_label(bound: BoundClaim) -> str:
    """``A − B`` in words: ``[grid] a-cell − b-cell``, with each side's grid when they differ and its
    iteration when the side overrides the metric's."""
    def side(grid: str, cell: Any, iteration: int | None, filters: Mapping[str, Any], with_grid: bool) -> str:
        shown = {k: v for k, v in filters.items() if k not in ("grid", "iteration")}
        text = "/".join(_marked(v, cell) if k in ("selector", "instance_selector", "corpus_selector", "allocator")
                        else f"{k}={v}" for k, v in shown.items()) or (cell.key or grid)
        marked = [part for part in (getattr(cell, "key", "") or "").split() if part.endswith(MARK)]
        if marked and MARK not in text:  # the claim does not name the reference point its cell runs: say so
            text += f" ({' '.join(marked)})"
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
