"""Fair comparisons after tuning: each arm at its own best learning rate and beta.

A strategy can look better than another only because the shared training
recipe happens to suit it (a bigger gradient at the same lr, a beta that
saturates the other's margins). A claim with ``compare = "tuned"``
(:mod:`harness.experiments.study_plan`) therefore gives every arm the same
tuning budget before the contrast is measured:

1. **tuning**: each arm's cell is run on a grid of trainer options (the claim's
   ``tune``, e.g. ``{"trainer.lr" = [1e-3, 3e-3, 1e-2], "trainer.beta" = [0.1,
   0.3, 1]}``: 9 cells) on the claim's ``tune_seeds`` (by default the first
   :data:`DEFAULT_TUNE_SEEDS` of the plan's exploration seeds, never a
   confirmation seed);
2. **choice**: the tuning cell with the highest mean :data:`TUNE_METRIC` (the
   final policy's gold reward, which the gold annotator defines and no judge
   approximates) over the tuning seeds; a tie goes to the first cell in the
   grid's order. The choice is made only when every tuning cell has finished on
   every tuning seed (:func:`choose`): a partial tuning chooses nothing;
3. **confirmation**: the chosen cell of each arm is run on the arm's own
   confirmation seeds, and the claim's contrast is tested on those runs exactly
   like a plain claim.

Each arm is tuned on its own, so the two arms of one claim may end at different
options: that is the point. An arm shared by several claims (``smallest`` in
``smallest − random`` and ``smallest − largest``) is tuned once.

This module holds the plan-level reading of ``tune`` / ``tune_seeds`` and the
choice, both pure; :mod:`harness.experiments.study` derives the grids
(``GRID@tune`` on the tuning seeds, ``GRID@tuned`` on the confirmation seeds)
and reads the runs.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

#: What tuning maximises: the final policy's mean gold reward (a runs column).
TUNE_METRIC = "final_gold_reward"
#: How many of the plan's exploration seeds tune an arm when the claim names no ``tune_seeds``.
DEFAULT_TUNE_SEEDS = 5
#: How many tuning seeds the quick variant keeps (it checks the mechanics, not the choice).
QUICK_TUNE_SEEDS = 2
#: An example ``tune`` table, for error messages and the schema.
TUNE_EXAMPLE = 'tune = {"trainer.lr" = [0.001, 0.003, 0.01], "trainer.beta" = [0.1, 0.3, 1]}'


def tuning_grid_name(grid: str) -> str:
    """The grid that tunes the arms of ``grid`` (``@`` is never in a plan's grid names)."""
    return f"{grid}@tune"


def tuned_grid_name(grid: str) -> str:
    """The grid that runs the chosen options of the arms of ``grid`` on its confirmation seeds."""
    return f"{grid}@tuned"


def tune_options(tune: Mapping[str, Sequence[Any]]) -> list[str]:
    """The ``-o`` grid axes of a ``tune`` table: ``["trainer.lr=0.001,0.003,0.01", ...]``."""
    return [f"{key}={','.join(format_value(v) for v in values)}" for key, values in tune.items()]


def format_value(value: Any) -> str:
    """A tuning value as an option string (``0.001``, not ``1e-03``; ``True`` as ``true``)."""
    if isinstance(value, bool):
        return str(value).lower()
    return repr(value) if isinstance(value, float) else str(value)


def tune_points(tune: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Every point of the tuning grid, in the order the grid expands (the first key varies slowest)."""
    keys = list(tune)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(tune[k] for k in keys))]


def load_tune(errors: Any, where: list, item: Mapping[str, Any], compare: str
              ) -> tuple[dict[str, tuple[Any, ...]] | None, str | int | None]:
    """A claim's ``tune`` table and ``tune_seeds``, checked; (None, None) for a claim that is not tuned.

    ``errors`` is the plan's :class:`~harness.experiments.study_plan.PlanErrors`; ``where`` the claim's place.
    """
    from harness.experiments.study_plan import check_seeds

    tune, seeds = item.get("tune"), item.get("tune_seeds")
    if compare != "tuned":
        for key in ("tune", "tune_seeds"):
            if key in item:
                errors.add([*where, key], f'{key} is read only with compare = "tuned" (this claim: {compare!r})',
                           f'drop {key}, or write compare = "tuned"')
        return None, None
    if not isinstance(tune, dict) or not tune:
        errors.add([*where, "compare"], 'compare = "tuned" needs the options each arm is tuned over',
                   f"add {TUNE_EXAMPLE} (a 3 x 3 grid: 9 cells per arm)")
        return None, seeds
    checked: dict[str, tuple[Any, ...]] = {}
    for key, values in tune.items():
        if "." not in key:
            errors.add([*where, "tune"], f"tune key {key!r} is not a plugin option",
                       'name options as with -o: "trainer.lr", "trainer.beta", "testbed.tau"')
            continue
        if (not isinstance(values, list) or len(values) < 2
                or not all(isinstance(v, (int, float, str, bool)) for v in values)):
            errors.add([*where, "tune"], f"tune {key!r} = {values!r} is not a list of at least two values",
                       f'write "{key}" = [value1, value2, value3]')
            continue
        if len(set(map(format_value, values))) != len(values):
            errors.add([*where, "tune"], f"tune {key!r} repeats a value", "list each value once")
            continue
        checked[key] = tuple(values)
    if seeds is not None:
        check_seeds(errors, [*where, "tune_seeds"], seeds)
    return (checked or None), seeds


@dataclass
class TunedArm:
    """One arm of tuned claims: its base cell, its tuning cells and what tuning chose.

    ``means`` / ``counts`` are per tuning cell (by config hash): the mean :data:`TUNE_METRIC` over the
    tuning seeds that finished, and how many did. ``chosen`` is the winning tuning cell, or None while
    tuning is not complete."""

    grid: str  # the plan grid the arm comes from
    base: Any  # its cell there (harness.experiments.sweep.Cell)
    seeds: list[int]  # the tuning seeds
    cells: list[Any] = field(default_factory=list)  # the tuning cells, in grid order
    points: list[dict[str, Any]] = field(default_factory=list)  # each tuning cell's tuned option values
    means: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    chosen: Any = None

    @property
    def finished(self) -> int:
        return sum(self.counts.get(c.config_hash, 0) for c in self.cells)

    @property
    def wanted(self) -> int:
        return len(self.cells) * len(self.seeds)

    def chosen_point(self) -> dict[str, Any] | None:
        if self.chosen is None:
            return None
        return self.points[[c.config_hash for c in self.cells].index(self.chosen.config_hash)]


def choose(cells: Sequence[Any], values: Mapping[str, Sequence[float]], n_seeds: int) -> Any:
    """The tuning cell with the highest mean value, or None unless every cell has ``n_seeds`` values.

    ``values`` maps a cell's config hash to its values on the tuning seeds. Ties go to the first cell in
    ``cells`` (the grid's order), so the choice never depends on the order runs finished in."""
    best, best_mean = None, None
    for cell in cells:
        got = values.get(cell.config_hash, ())
        if len(got) != n_seeds:
            return None
        mean = sum(got) / len(got)
        if best_mean is None or mean > best_mean:
            best, best_mean = cell, mean
    return best


def describe_point(point: Mapping[str, Any] | None) -> str:
    """``lr 0.003, β 0.3``-style text for a tuning point (other options as ``key value``)."""
    if not point:
        return "not chosen yet"
    short = {"trainer.lr": "lr", "trainer.beta": "β"}
    return ", ".join(f"{short.get(k, k)} {format_value(v)}" for k, v in point.items())
