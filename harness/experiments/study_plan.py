"""A study plan: the TOML file, its schema, and where in the text a mistake is.

:func:`load_plan` reads and validates a plan. TOML syntax errors come from
:mod:`tomllib`, which already names the line; schema errors (an unknown key,
a missing claim field, a bad direction) are found on the parsed data and then
*located* in the text by :func:`locate`, which scans the file for the
offending table header (``[[claim]]`` number k, ``[quick]`` ...) and then for
``key =`` inside that block. tomllib keeps no positions, so this scan is
deliberately simple: it understands ``[table]``, ``[[array]]`` headers and
``key = value`` lines (inline tables included), which is the plan style the
schema documents; anything it cannot place falls back to the block's header.
The keys of a ``[[grid]]`` are the run options ``harness sweep`` takes
(:func:`harness.run_request.sweep_options`).

A claim's ``compare`` names how its two arms are compared (:data:`COMPARISONS`):
``"final"`` (the default: the metric as recorded), ``"matched_kl"`` (each arm's
metric at the common KL of the two arms, :mod:`harness.experiments.matched`) or
``"matched_steps"`` (both arms re-run with the trainer's ``steps`` fixed to the
claim's ``steps``: extra cells the study derives from the arms' grids) or
``"tuned"`` (each arm at its own best point of the claim's ``tune`` grid, chosen
on the ``tune_seeds``, :mod:`harness.experiments.tuned`). A modified claim may
name the plain claim it modifies with ``of``: it then inherits that claim's
metric, sides, direction, finding, source and kind, and may not change them.
"""

from __future__ import annotations

import difflib
import re
import textwrap
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import UsageError
from harness.experiments.statistics import CORRECTIONS
from harness.experiments.tuned import load_tune
from harness.experiments.verdicts import DIRECTIONS, MARGIN_DIRECTIONS
from harness.run_request import run_option, sweep_options

# -- the schema ------------------------------------------------------------------------------------

STUDY_KEYS = ("title", "source", "description", "seeds", "exploration_seeds", "confirmation_seeds", "correction",
              "margins", "margin_reason", "families")
QUICK_KEYS = ("seeds", "budget_scale", "options", "description")
#: What a ``[testbed.NAME]`` section may set: the testbed, overrides of every grid's run options, options
#: added to every grid, its own quick variant, and per-grid overrides (``[testbed.NAME.grids.GRID]``).
TESTBED_KEYS = ("description", "testbed", "budget", "iterations", "responses", "keep", "trainer", "gold_judge",
                "proxy_judge", "annotator", "evaluator", "options", "quick", "grids", "claims", "metrics")
#: The run options a testbed section (or one of its grid tables) may override, with their types: the shape
#: of every run, and the trainer and judges that testbed needs (e.g. an annotator where it has none).
TESTBED_OVERRIDES = {"budget": int, "iterations": int, "responses": int, "keep": float, "trainer": str,
                     "gold_judge": str, "proxy_judge": str, "annotator": str, "evaluator": str}
CLAIM_KEYS = ("id", "finding", "metric", "a", "b", "direction", "source", "source_value", "note", "blocks", "family",
              "kind", "was", "compare", "steps", "of", "tune", "tune_seeds")
#: How a claim compares its two arms: the metric as recorded ("final", the default), at the arms' common
#: KL from pi_ref ("matched_kl", interpolated along each seed's path), re-run with the same number of
#: optimiser steps per iteration ("matched_steps": the trainer's ``steps`` = the claim's ``steps``) or
#: each at its own tuned options ("tuned": the best point of the claim's ``tune`` grid on its tune seeds).
COMPARISONS = ("final", "matched_kl", "matched_steps", "tuned")
#: How each comparison reads in tables and metric labels.
COMPARISON_LABELS = {"final": "plain", "matched_kl": "matched KL", "matched_steps": "matched steps",
                     "tuned": "tuned"}
#: What a claim with ``of`` inherits from the plain claim it modifies (when it does not write the key itself).
INHERITED_KEYS = ("metric", "a", "b", "direction", "finding", "source", "source_value", "kind")
#: The keys of INHERITED_KEYS a modified claim may not change: the contrast itself.
CONTRAST_KEYS = ("metric", "a", "b", "direction")
#: What a claim is: the paper's own claim, the harness's question, or a contrast whose sides see unequal
#: information (one reads scores the other does not have); only a paper claim can be "reproduced".
CLAIM_KINDS = ("paper", "question", "unequal")
CLAIM_REQUIRED = ("id", "metric", "a", "b", "direction")
FIGURE_KEYS = ("kind", "grid", "metrics", "title")
FIGURE_KINDS = ("curves", "forest")
TOP_KEYS = ("study", "quick", "grid", "claim", "figure", "heterogeneity", "regime_map", "testbed")
HETEROGENEITY_KEYS = ("claims", "title")
_GRID_ALIASES = {"responses": "n_responses"}
#: The family of every claim in a plan that names none.
ALL_CLAIMS = "all claims"


def grid_keys() -> tuple[str, ...]:
    """The keys a ``[[grid]]`` accepts: ``name``, ``seeds`` and every run option ``harness sweep`` takes
    (:func:`harness.run_request.sweep_options`, so a new run option is a new grid key)."""
    return ("name", "seeds", "confirmation_seeds", *(option.name for option in sweep_options()), *_GRID_ALIASES)


_PLAN_SCHEMA_TEMPLATE = """\
[study]            title, source, description (text)
                   confirmation_seeds = "1000-1009" (or a count): the seeds every grid runs and the only
                   seeds verdicts use; exploration_seeds = "0-9": seeds used to explore (figures, tuning,
                   calibration), never in a verdict; the two must not overlap. (seeds = ...: the older
                   name of confirmation_seeds, for plans that do not separate the two.)
                   correction = "holm" (default) or "bh": the multiplicity correction within a family
                   families = {F1 = "why these claims are one family", ...}: a note per family (required
                   for a family of one claim)
                   margins = {final_win_rate = 0.02, ...}: the equivalence / non-inferiority margin of each
                   metric a claim tests with direction none, a <= b or a >= b; margin_reason (required
                   with margins): why that difference is too small to matter, stated before the runs
[quick]            seeds; budget_scale (multiplies every grid's budget); options = ["k=v", ...]
                   (fixed options added to every grid; a grid's own option of the same key wins)
{grid}
[[claim]]          id, metric, a, b, direction (required); finding, source, source_value, note
                   metric = "final_win_rate" (a runs column) or {metric = "win_rate", iteration = 1}
                   a / b = {grid = "...", instance_selector = "...", "trainer.epochs" = 1, ...}: equality
                   filters on the config (selector = X means both levels; iteration = k overrides the
                   metric's iteration for that side); each must match exactly one cell
                   direction = "a > b" | "a < b" (the source reports a difference) | "none" (no
                   difference: an equivalence test) | "a <= b" / "a >= b" (A no better / no worse than B)
                   family = "F1": the family whose error rate the correction controls (a plan without
                   families puts every claim in one); blocks: deprecated, ignored with a warning
                   kind = "paper" (default: the source's claim, which can be reproduced) | "question" (the
                   harness's own: it holds or not) | "unequal" (the sides see different information)
                   was = "...": the claim's earlier encoding and its published verdict, shown beside it
                   compare = "final" (default: the metric as recorded) | "matched_kl" (each arm's metric at
                   the two arms' common KL, per seed, by linear interpolation along the path from pi_0) |
                   "matched_steps" (the arms re-run with trainer.steps = steps, required: e.g. steps = 128) |
                   "tuned" (each arm at its best point of tune = {"trainer.lr" = [...], "trainer.beta" =
                   [...]} by final gold reward on tune_seeds, default the first 5 exploration seeds);
                   of = "F1-...": the plain claim this one modifies (inherits metric, a, b, direction,
                   finding, source, kind)
[testbed.NAME]     the plan on another testbed (harness study run PLAN --testbed NAME): testbed (default NAME);
                   budget, iterations, responses, keep, trainer, gold_judge, proxy_judge, annotator,
                   evaluator (every grid's, replacing its own); options = ["k=v", ...] (added to every
                   grid: the grids' own testbed.* options, written for their testbed, are dropped, and an
                   option the section names replaces the grid's); quick = {seeds, budget_scale, options}
                   (its quick variant; default the plan's [quick] without its testbed.* options);
                   claims = ["F1-...", ...] (the claims it carries, default all: only their grids run);
                   metrics = {final_win_rate = "final_gold_reward"} (a claim's metric read as another on
                   this testbed); [testbed.NAME.grids.GRID]: the same overrides and options for one grid.
                   A study under a section also writes transfer.md: its claims beside the plan's own
[[heterogeneity]]  claims = ["F3-default-...", "F3-step-limited-..."]: one contrast (same metric and direction)
                   in different regimes or recipes; the report gives Cochran's Q and I² across them (never
                   across blocks of seeds of one design); title
[[figure]]         kind = "curves" (grid, metrics = ["win_rate", ...]) or "forest"; title
[regime_map]       claims = ["F1-...", ...] (plain direction claims); seeds = "0-9" (exploration seeds);
                   slices = [["beta", "training"]]; [regime_map.axes.AXIS]: "label" = {options = ["k=v"]}
                   or a run option (reference, n_responses, keep): every value one at a time around the
                   study's regime, plus every point of each slice (harness study run NAME --regime-map)
"""


def _plan_schema_doc() -> str:
    options = [option for option in sweep_options() if option.kind != "assignments"]
    grid_names = ", ".join(option.name for option in options if option.grid)
    fixed_names = ", ".join("responses" if option.name == "n_responses" else option.name
                            for option in options if not option.grid)
    grid = textwrap.fill(
        f"name (required) plus the run options of `harness sweep`: grid axes {grid_names} (a list or a "
        f'comma string); options = ["k=v1,v2", ...]; one value each: {fixed_names}; confirmation_seeds '
        f"(overrides the study's)",
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
    seeds: int | str | None  # the grid's own confirmation seeds, if it sets them
    index: int
    seeds_key: str = "seeds"  # the key that set them: confirmation_seeds, or the older seeds


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
    blocks: int | None = None  # deprecated: read and ignored (a warning says so)
    family: str = ALL_CLAIMS
    kind: str = "paper"  # one of CLAIM_KINDS
    was: str = ""  # the claim's earlier encoding and its published verdict, shown beside the new one
    compare: str = "final"  # one of COMPARISONS
    steps: int | None = None  # the optimiser steps per iteration of both arms, with compare = "matched_steps"
    of: str | None = None  # the id of the plain claim this one modifies
    tune: dict[str, tuple[Any, ...]] | None = None  # compare = "tuned": option -> the values each arm is tuned over
    tune_seeds: int | str | None = None  # compare = "tuned": the seeds tuning runs on (None: see tune_seeds_of)

    @property
    def metric_label(self) -> str:
        """The metric (and its iteration), with the comparison when it is not the plain one."""
        if self.compare == "final":
            return self.plain_metric_label
        return f"{self.plain_metric_label} · {self.compare_label}"

    @property
    def plain_metric_label(self) -> str:
        return self.metric if self.iteration is None else f"{self.metric} @ it{self.iteration}"

    @property
    def compare_label(self) -> str:
        """The comparison in words: ``plain``, ``matched KL`` or ``matched steps``."""
        return COMPARISON_LABELS[self.compare]


@dataclass(frozen=True)
class FigurePlan:
    kind: str
    grid: str | None = None
    metrics: tuple[str, ...] = ("win_rate",)
    title: str = ""


@dataclass(frozen=True)
class HeterogeneityPlan:
    """Claims that are one contrast measured in different regimes or recipes: Cochran's Q across them."""

    claims: tuple[str, ...]
    title: str = ""


@dataclass(frozen=True)
class TestbedSection:
    """A ``[testbed.NAME]`` section: how the plan's grids run on another testbed (``--testbed NAME``)."""

    __test__ = False  # not a pytest class, whatever its name
    name: str
    testbed: str
    description: str = ""
    overrides: dict[str, Any] = field(default_factory=dict)  # run options of every grid (budget, iterations, ...)
    options: tuple[str, ...] = ()
    quick: dict[str, Any] | None = None
    grids: dict[str, dict[str, Any]] = field(default_factory=dict)  # grid -> {"overrides": {...}, "options": (...)}
    claims: tuple[str, ...] | None = None  # the claims it carries (None: all); only their grids run
    metrics: dict[str, str] = field(default_factory=dict)  # a claim's metric -> the metric read on this testbed

    def metric(self, name: str) -> str:
        """The metric this testbed reads for a claim's ``name`` (the same one unless ``metrics`` maps it)."""
        return self.metrics.get(name, name)


@dataclass(frozen=True)
class StudyPlan:
    name: str
    path: Path
    text: str
    title: str
    source: str
    description: str
    seeds: int | str  # the confirmation seeds (the older key `seeds`, or `confirmation_seeds`)
    quick: dict[str, Any]
    grids: tuple[GridPlan, ...]
    claims: tuple[ClaimPlan, ...]
    figures: tuple[FigurePlan, ...]
    exploration_seeds: int | str | None = None
    correction: str = "holm"
    margins: dict[str, float] = field(default_factory=dict)
    margin_reason: str = ""
    families: dict[str, str] = field(default_factory=dict)  # family -> its note
    warnings: tuple[str, ...] = ()  # deprecated keys and the like: printed, never fatal
    heterogeneity: tuple[HeterogeneityPlan, ...] = ()  # one contrast across regimes or recipes
    regime_map: Any = None  # [regime_map]: a harness.experiments.regime_map.RegimeMapPlan, or None
    testbeds: dict[str, TestbedSection] = field(default_factory=dict)  # [testbed.NAME] sections

    @property
    def separates_seeds(self) -> bool:
        """Whether the plan declares exploration seeds apart from its confirmation seeds."""
        return self.exploration_seeds is not None

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


class PlanErrors:
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
    errors = PlanErrors(path, text)
    errors.unknown([], data, TOP_KEYS)

    study = data.get("study", {})
    if not isinstance(study, dict):
        errors.add(["study"], "must be a table", "write it as a [study] section")
        study = {}
    errors.unknown(["study"], study, STUDY_KEYS)
    if "seeds" in study and "confirmation_seeds" in study:
        errors.add(["study", "seeds"], "seeds and confirmation_seeds name the same thing",
                   "keep confirmation_seeds and drop seeds")
    seeds_key = "confirmation_seeds" if "confirmation_seeds" in study else "seeds"
    seeds = study.get(seeds_key, 10)
    check_seeds(errors, ["study", seeds_key], seeds)
    exploration = study.get("exploration_seeds")
    if exploration is not None:
        check_seeds(errors, ["study", "exploration_seeds"], exploration)
    correction = study.get("correction", "holm")
    if correction not in CORRECTIONS:
        errors.add(["study", "correction"], f"correction {correction!r} is not one of {', '.join(CORRECTIONS)}",
                   'write correction = "holm" (family-wise error) or "bh" (false discovery rate)')
        correction = "holm"
    margins = _load_margins(errors, study)
    families = study.get("families", {})
    if not isinstance(families, dict) or not all(isinstance(v, str) and v.strip() for v in families.values()):
        errors.add(["study", "families"], f"families {families!r} is not a table of notes",
                   'write families = {F1 = "smallest vs the baselines, one iteration", ...}')
        families = {}

    quick = data.get("quick", {})
    if not isinstance(quick, dict):
        errors.add(["quick"], "must be a table", "write it as a [quick] section")
        quick = {}
    errors.unknown(["quick"], quick, QUICK_KEYS)
    if "seeds" in quick:
        check_seeds(errors, ["quick", "seeds"], quick["seeds"])
    scale = quick.get("budget_scale", 1.0)
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 < scale <= 1:
        errors.add(["quick", "budget_scale"], f"budget_scale {scale!r} is not a number in (0, 1]",
                   "write e.g. budget_scale = 0.1")
    _check_strings(errors, ["quick", "options"], quick.get("options", []), 'options = ["testbed.eval_prompts=100"]')

    grids = _load_grids(errors, data.get("grid", []))
    grid_names = [g.name for g in grids]
    claims = _load_claims(errors, data.get("claim", []), grids)
    figures = _load_figures(errors, data.get("figure", []), grid_names)
    heterogeneity = _load_heterogeneity(errors, data.get("heterogeneity", []), claims)
    regime_map = None
    if "regime_map" in data:
        from harness.experiments.regime_map import load_regime_map

        regime_map = load_regime_map(errors, data["regime_map"], claims)
    testbeds = _load_testbeds(errors, data.get("testbed", {}), grid_names, claims, margins)
    _check_seed_sets(errors, seeds, seeds_key, exploration, grids)
    _check_tune_seeds(errors, claims, seeds, exploration, grids)
    _check_claim_margins(errors, claims, margins)
    families = _check_families(errors, claims, families)
    warnings = tuple(f"claim {c.id!r}: blocks = {c.blocks} is deprecated and ignored (blocks of seeds are vote "
                     "counting; verdicts pool every confirmation seed)" for c in claims if c.blocks)
    errors.raise_if_any()
    return StudyPlan(
        name=name or path.stem, path=path, text=text, title=str(study.get("title", name or path.stem)),
        source=str(study.get("source", "")), description=str(study.get("description", "")).strip(),
        seeds=seeds, quick=dict(quick), grids=tuple(grids), claims=tuple(claims), figures=tuple(figures),
        heterogeneity=tuple(heterogeneity), regime_map=regime_map, testbeds=testbeds,
        exploration_seeds=exploration, correction=correction, margins=margins,
        margin_reason=str(study.get("margin_reason", "")).strip(), families=families, warnings=warnings,
    )


def _load_testbeds(errors: PlanErrors, table: Any, grid_names: Sequence[str], claims: Sequence[Any] = (),
                   margins: Mapping[str, float] | None = None) -> dict[str, TestbedSection]:
    """The plan's ``[testbed.NAME]`` sections, checked key by key."""
    claim_ids = [c.id for c in claims]
    if not isinstance(table, dict):
        errors.add(["testbed"], "must be a table of sections", 'write [testbed.hf] sections')
        return {}
    sections = {}
    for name, item in table.items():
        where = ["testbed", name]
        if not isinstance(item, dict):
            errors.add(where, "must be a table", f"write it as a [testbed.{name}] section")
            continue
        errors.unknown(where, item, TESTBED_KEYS)
        testbed = item.get("testbed", name)
        if not isinstance(testbed, str) or not testbed:
            errors.add([*where, "testbed"], f"testbed {testbed!r} is not a testbed name", 'write testbed = "hf"')
            testbed = name
        overrides, options = _testbed_overrides(errors, where, item)
        quick = item.get("quick")
        if quick is not None:
            if not isinstance(quick, dict):
                errors.add([*where, "quick"], "must be a table", "write quick = {seeds = 3, budget_scale = 0.1}")
                quick = None
            else:
                errors.unknown([*where, "quick"], quick, QUICK_KEYS)
                if "seeds" in quick:
                    check_seeds(errors, [*where, "quick", "seeds"], quick["seeds"])
                _check_strings(errors, [*where, "quick", "options"], quick.get("options", []),
                               'options = ["testbed.max_new_tokens=16"]')
        grids = {}
        per_grid = item.get("grids", {})
        if not isinstance(per_grid, dict):
            errors.add([*where, "grids"], "must be a table of grid tables", f"write [testbed.{name}.grids.GRID]")
            per_grid = {}
        for grid, overrides_of_grid in per_grid.items():
            if grid not in grid_names:
                errors.add([*where, "grids", grid], f"names no grid of the plan ({', '.join(grid_names)})",
                           "use a grid's name")
                continue
            if not isinstance(overrides_of_grid, dict):
                errors.add([*where, "grids", grid], "must be a table", f"write [testbed.{name}.grids.{grid}]")
                continue
            errors.unknown([*where, "grids", grid], overrides_of_grid, (*TESTBED_OVERRIDES, "options"))
            values, grid_options = _testbed_overrides(errors, [*where, "grids", grid], overrides_of_grid)
            grids[grid] = {"overrides": values, "options": grid_options}
        carried = item.get("claims")
        if carried is not None:
            if (not isinstance(carried, list) or not carried
                    or not all(isinstance(c, str) for c in carried)):
                errors.add([*where, "claims"], "must be a non-empty list of claim ids",
                           'write claims = ["F1-instance-smallest-vs-random"]')
                carried = None
            else:
                unknown = [c for c in carried if c not in claim_ids]
                if unknown:
                    errors.add([*where, "claims"], f"names no claim of the plan: {', '.join(unknown)}",
                               "use the ids of the plan's [[claim]] tables")
                carried = tuple(dict.fromkeys(carried))
        metrics = item.get("metrics", {})
        if not isinstance(metrics, dict) or not all(isinstance(k, str) and isinstance(v, str) and v
                                                    for k, v in metrics.items()):
            errors.add([*where, "metrics"], "must be a table of metric names",
                       'write metrics = {final_win_rate = "final_gold_reward"}')
            metrics = {}
        read = {c.metric for c in claims}
        for key in sorted(set(metrics) - read):
            errors.add([*where, "metrics", key], f"no claim of the plan reads {key!r} (they read "
                       f"{', '.join(sorted(read))})", "map a metric a claim reads")
        for claim in claims:  # a claim tested against a margin needs one for the metric read here too
            mapped = metrics.get(claim.metric)
            if (mapped and claim.direction in MARGIN_DIRECTIONS and (carried is None or claim.id in carried)
                    and mapped not in (margins or {})):
                errors.add([*where, "metrics", claim.metric],
                           f"claim {claim.id!r} ({claim.direction}) needs a margin, and none is given for {mapped!r}",
                           f"add {mapped} = ... to [study] margins")
        sections[name] = TestbedSection(name=name, testbed=testbed, description=str(item.get("description", "")),
                                        overrides=overrides, options=options, quick=quick, grids=grids,
                                        claims=carried, metrics=dict(metrics))
    return sections


def _testbed_overrides(errors: PlanErrors, where: list, item: Mapping[str, Any]) -> tuple[dict[str, Any], tuple]:
    """The run-option overrides and the options of a testbed section or of one of its grid tables."""
    overrides = {}
    for key, kind in TESTBED_OVERRIDES.items():
        if key not in item:
            continue
        value = item[key]
        if kind is str:
            if not isinstance(value, str) or not value:
                errors.add([*where, key], f"{value!r} is not a component name", f'write e.g. {key} = "name"')
                continue
        elif isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not isinstance(value, int)):
            errors.add([*where, key], f"{value!r} is not {'an integer' if kind is int else 'a number'}",
                       f"write e.g. {key} = {3 if kind is int else 0.5}")
            continue
        overrides[_GRID_ALIASES.get(key, key)] = value
    options = item.get("options", [])
    _check_strings(errors, [*where, "options"], options, 'options = ["testbed.model=/path/to/model"]')
    return overrides, tuple(options) if isinstance(options, list) else ()


def seed_list(value: int | str) -> list[int]:
    """A seeds value: a count (``10`` -> 0..9) or a list spec (``"0-9"``, ``"1000-1009,1020"``)."""
    from harness.experiments.sweep import parse_seeds

    if isinstance(value, int) and not isinstance(value, bool):
        return list(range(value))
    return parse_seeds(str(value))


def _load_margins(errors: PlanErrors, study: Mapping[str, Any]) -> dict[str, float]:
    margins = study.get("margins", {})
    if not isinstance(margins, dict) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in margins.values()):
        errors.add(["study", "margins"], f"margins {margins!r} is not a table of positive numbers",
                   "write margins = {final_win_rate = 0.02}")
        return {}
    if margins and not str(study.get("margin_reason", "")).strip():
        errors.add(["study", "margins"], "margins need margin_reason: why a difference that small does not matter",
                   'add margin_reason = "..." (stated before the confirmation runs, never from their numbers)')
    return {str(k): float(v) for k, v in margins.items()}


def _check_seed_sets(errors: PlanErrors, seeds: Any, seeds_key: str, exploration: Any,
                     grids: Sequence[GridPlan]) -> None:
    """Exploration seeds never overlap a confirmation seed (the study's or a grid's own)."""
    if exploration is None:
        return
    try:
        explored = set(seed_list(exploration))
    except UsageError:
        return  # reported by check_seeds
    sets = [(["study", seeds_key], seeds)] + [
        (["grid", g.index, "confirmation_seeds" if g.seeds_key == "confirmation_seeds" else "seeds"], g.seeds)
        for g in grids if g.seeds is not None]
    for where, value in sets:
        try:
            shared = sorted(explored & set(seed_list(value)))
        except UsageError:
            continue
        if shared:
            from harness.experiments.sweep import format_seeds

            errors.add(where, f"confirmation seeds {value!r} overlap the exploration seeds in "
                       f"{format_seeds(shared)}", "confirm on seeds no exploration used, e.g. from 1000 up")


def tune_seeds_of(claim: ClaimPlan, exploration: int | str | None) -> list[int]:
    """The seeds a tuned claim's arms are tuned on: its ``tune_seeds``, or the first
    :data:`~harness.experiments.tuned.DEFAULT_TUNE_SEEDS` exploration seeds."""
    from harness.experiments.tuned import DEFAULT_TUNE_SEEDS

    if claim.tune_seeds is not None:
        return seed_list(claim.tune_seeds)
    return seed_list(exploration)[:DEFAULT_TUNE_SEEDS] if exploration is not None else []


def _check_tune_seeds(errors: PlanErrors, claims: Sequence[ClaimPlan], seeds: Any, exploration: Any,
                      grids: Sequence[GridPlan]) -> None:
    """A tuned claim tunes on seeds it names or on exploration seeds, and never on a confirmation seed."""
    from harness.experiments.sweep import format_seeds

    confirmation: set[int] = set()
    for value in [seeds, *(g.seeds for g in grids if g.seeds is not None)]:
        try:
            confirmation |= set(seed_list(value))
        except UsageError:
            pass  # reported by check_seeds
    for claim in claims:
        if claim.compare != "tuned":
            continue
        where = ["claim", claim.index]
        if claim.tune_seeds is None and exploration is None:
            errors.add([*where, "compare"], "a tuned claim tunes on seeds no verdict uses, and this plan declares no "
                       "exploration seeds and the claim no tune_seeds",
                       'add tune_seeds = "0-4" to the claim, or exploration_seeds = "0-9" to [study]')
            continue
        try:
            shared = sorted(confirmation & set(tune_seeds_of(claim, exploration)))
        except UsageError:
            continue
        if shared:
            errors.add([*where, "tune_seeds" if claim.tune_seeds is not None else "compare"],
                       f"tuning seeds overlap confirmation seeds in {format_seeds(shared)}",
                       "tune on exploration seeds (e.g. tune_seeds = \"0-4\"), never on a seed a verdict uses")


def _check_claim_margins(errors: PlanErrors, claims: Sequence[ClaimPlan], margins: Mapping[str, float]) -> None:
    for claim in claims:
        if claim.direction in MARGIN_DIRECTIONS and claim.metric not in margins:
            errors.add(["claim", claim.index, "direction"],
                       f"direction {claim.direction!r} is tested against a margin, and [study] margins has none "
                       f"for {claim.metric!r}",
                       f"add margins = {{{claim.metric} = ...}} and margin_reason to [study], one margin per metric "
                       "for the whole plan, chosen for practical relevance before any confirmation run")


def _check_families(errors: PlanErrors, claims: Sequence[ClaimPlan], notes: Mapping[str, str]) -> dict[str, str]:
    """Every claim in a family, or none (then all in one); a family of one claim needs a note saying why."""
    named = [c for c in claims if c.family != ALL_CLAIMS]
    if named and len(named) != len(claims):
        first = next(c for c in claims if c.family == ALL_CLAIMS)
        errors.add(["claim", first.index, "id"], f"claim {first.id!r} has no family while others do",
                   'give every claim a family = "..." (or none of them, for one family of all claims)')
    sizes: dict[str, int] = {}
    for claim in claims:
        sizes[claim.family] = sizes.get(claim.family, 0) + 1
    for family in notes:
        if family not in sizes:
            errors.add(["study", "families"], f"family {family!r} has a note but no claim",
                       f"families in this plan: {', '.join(sorted(sizes))}")
    for claim in claims:
        if sizes.get(claim.family) == 1 and claim.family != ALL_CLAIMS and not notes.get(claim.family):
            errors.add(["claim", claim.index, "family"], f"family {claim.family!r} has one claim and no note",
                       f'add {claim.family} = "why this claim is a family of its own" to [study] families')
    out = dict(notes)
    if not named:
        out.setdefault(ALL_CLAIMS, "the plan names no families: every claim is in one")
    return out


def check_seeds(errors: PlanErrors, where: list, value: Any) -> None:
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


def _check_strings(errors: PlanErrors, where: list, value: Any, example: str) -> None:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        errors.add(where, f"{value!r} is not a list of strings", f"write e.g. {example}")


def _load_grids(errors: PlanErrors, items: Any) -> list[GridPlan]:
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
            if key in ("name", "seeds", "confirmation_seeds") or key not in allowed:
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
        if "seeds" in item and "confirmation_seeds" in item:
            errors.add([*where, "seeds"], "seeds and confirmation_seeds name the same thing",
                       "keep confirmation_seeds and drop seeds")
        seeds_key = "confirmation_seeds" if "confirmation_seeds" in item else "seeds"
        seeds = item.get(seeds_key)
        if seeds is not None:
            check_seeds(errors, [*where, seeds_key], seeds)
        grids.append(GridPlan(name, args, seeds, index, seeds_key))
    return grids


def _load_claims(errors: PlanErrors, items: Any, grids: Sequence[GridPlan]) -> list[ClaimPlan]:
    if not isinstance(items, list) or not items:
        errors.add(["claim"], "a plan needs at least one [[claim]]",
                   'add [[claim]] with id, metric, a, b and direction')
        return []
    claims, seen = [], set()
    names = [g.name for g in grids]
    items = _inherit(errors, items)
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
                       '"none" when it reports no difference, "a <= b" / "a >= b" for no better / no worse')
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
        for key in ("source", "source_value", "finding", "note", "was"):
            if key in item and not isinstance(item[key], (str, int, float)):
                errors.add([*where, key], f"{key} must be text or a number", f'write {key} = "..."')
        blocks = _check_blocks(errors, [*where, "blocks"], item.get("blocks"))
        family = item.get("family", ALL_CLAIMS)
        if not isinstance(family, str) or not family.strip():
            errors.add([*where, "family"], f"family {family!r} is not a name", 'write family = "F1"')
            family = ALL_CLAIMS
        kind = item.get("kind", "paper")
        if kind not in CLAIM_KINDS:
            errors.add([*where, "kind"], f"kind {kind!r} is not one of {', '.join(CLAIM_KINDS)}",
                       'write kind = "paper" (the source\'s claim), "question" (the harness\'s own) or "unequal" '
                       "(the two sides see different information)")
            kind = "paper"
        compare, steps = _load_compare(errors, where, item, metric)
        tune, tune_seeds = load_tune(errors, where, item, compare)
        claims.append(ClaimPlan(
            id=claim_id, finding=str(item.get("finding", "")), metric=metric, iteration=iteration,
            a=sides["a"], b=sides["b"], direction=direction if direction in DIRECTIONS else "a > b",
            source=str(item.get("source", "")), source_value=str(item.get("source_value", "")),
            note=str(item.get("note", "")), index=index, blocks=blocks, family=family, kind=kind,
            was=str(item.get("was", "")), compare=compare, steps=steps, tune=tune, tune_seeds=tune_seeds,
            of=str(item["of"]) if isinstance(item.get("of"), str) else None,
        ))
    return claims


def _inherit(errors: PlanErrors, items: list) -> list:
    """The claims with ``of`` completed from the plain claim they modify (:data:`INHERITED_KEYS`); a
    modified claim that writes a contrast key (:data:`CONTRAST_KEYS`) must write the plain claim's value."""
    by_id = {str(item.get("id")): item for item in items if isinstance(item, dict) and "id" in item}
    out = []
    for index, item in enumerate(items):
        if not isinstance(item, dict) or "of" not in item:
            out.append(item)
            continue
        where = ["claim", index, "of"]
        base_id = item["of"]
        base = by_id.get(base_id) if isinstance(base_id, str) else None
        if base is None:
            close = difflib.get_close_matches(str(base_id), list(by_id), n=1)
            errors.add(where, f"of = {base_id!r} is not a claim of this plan",
                       (f"did you mean {close[0]!r}? " if close else "") + "name the id of the plain claim this "
                       "claim compares fairly")
            out.append(item)
            continue
        if base is item:
            errors.add(where, "a claim cannot modify itself", "name the plain claim this claim compares fairly")
            out.append(item)
            continue
        if base.get("compare", "final") != "final" or "of" in base:
            errors.add(where, f"of = {base_id!r} names a claim that is itself a modified comparison",
                       "name the plain claim (compare = \"final\"), not another modifier of it")
            out.append(item)
            continue
        if item.get("compare", "final") == "final":
            errors.add(where, "of names the plain claim a fair comparison modifies, and this claim has no compare",
                       'add compare = "matched_kl", "matched_steps" or "tuned", or drop of')
        for key in CONTRAST_KEYS:
            if key in item and key in base and item[key] != base[key]:
                errors.add(["claim", index, key], f"{key} differs from that of the plain claim {base_id!r}",
                           f"a fair comparison tests the plain claim's own contrast: drop {key} to inherit it")
        out.append({**{k: base[k] for k in INHERITED_KEYS if k in base}, **item})
    return out


def _load_compare(errors: PlanErrors, where: list, item: Mapping[str, Any], metric: str) -> tuple[str, int | None]:
    """A claim's ``compare`` and, with ``matched_steps``, its ``steps``; defaults ("final", None)."""
    from harness.experiments.matched import MATCHED_KL_METRICS

    compare = item.get("compare", "final")
    steps = item.get("steps")
    if compare not in COMPARISONS:
        close = difflib.get_close_matches(str(compare), COMPARISONS, n=1, cutoff=0.6)
        errors.add([*where, "compare"], f"compare {compare!r} is not one of {', '.join(map(repr, COMPARISONS))}",
                   (f"did you mean {close[0]!r}? " if close else "") + 'write compare = "matched_kl" (the arms at '
                   'their common KL), "matched_steps" with steps = N (the same optimiser steps) or "tuned" with '
                   'tune = {...} (each arm at its own best options), or drop it')
        return "final", None
    if compare == "matched_steps":
        if "steps" not in item:
            errors.add([*where, "compare"], 'compare = "matched_steps" needs the steps both arms run per iteration',
                       "add steps = 128 (e.g. what a 1,000-label iteration gets at 8 epochs of batch 64)")
            steps = None
        elif isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            errors.add([*where, "steps"], f"steps {steps!r} is not a number of optimiser steps >= 1",
                       "write e.g. steps = 128")
            steps = None
    elif "steps" in item:
        errors.add([*where, "steps"], f'steps is read only with compare = "matched_steps" (this claim: {compare!r})',
                   'drop steps, or write compare = "matched_steps"')
        steps = None
    if compare == "matched_kl" and metric not in MATCHED_KL_METRICS:
        errors.add([*where, "metric"], f"a matched-KL comparison reads its metric along each run's KL path, and "
                   f"{metric!r} is not recorded per iteration for the policy",
                   f"use one of {', '.join(MATCHED_KL_METRICS)}, or drop compare")
    return compare, steps


def _check_blocks(errors: PlanErrors, where: list, value: Any) -> int | None:
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


def _load_heterogeneity(errors: PlanErrors, items: Any, claims: Sequence[ClaimPlan]) -> list[HeterogeneityPlan]:
    if not isinstance(items, list):
        errors.add(["heterogeneity"], "must be an array of tables", "write each group as [[heterogeneity]]")
        return []
    by_id = {c.id: c for c in claims}
    groups = []
    for index, item in enumerate(items):
        where = ["heterogeneity", index]
        errors.unknown(where, item, HETEROGENEITY_KEYS)
        ids = item.get("claims")
        if not isinstance(ids, list) or len(ids) < 2 or not all(isinstance(i, str) for i in ids):
            errors.add([*where, "claims"], f"claims {ids!r} is not a list of two or more claim ids",
                       'write claims = ["F3-default-increase-vs-constant", "F3-step-limited-increase-vs-constant"]')
            continue
        unknown = [i for i in ids if i not in by_id]
        if unknown:
            errors.add([*where, "claims"], f"{unknown[0]!r} is not a claim of this plan",
                       "list claim ids from the plan's [[claim]] tables")
            continue
        kinds = {(by_id[i].metric_label, by_id[i].direction) for i in ids}
        if len(kinds) > 1:
            errors.add([*where, "claims"], "the claims measure different metrics or directions",
                       "group only one contrast measured in different regimes or recipes")
            continue
        groups.append(HeterogeneityPlan(tuple(ids), str(item.get("title", ""))))
    return groups


def _load_figures(errors: PlanErrors, items: Any, grid_names: Sequence[str]) -> list[FigurePlan]:
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
