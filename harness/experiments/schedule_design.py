"""A response-surface design over the budget schedule (L_1, ..., L_K) at a fixed total, and its fit.

Three fixed schedules (increase, constant, decrease) are three points on a line
through the simplex of schedules. This module spreads points over the whole
simplex instead and fits a surface through them, so that a study can say
*where* in the simplex the final gold lies highest and whether the
iterations' shares interact.

- :func:`mixture_design`: a {K, 2} simplex-lattice plus the centroid, in
  pseudo-components: every share keeps at least ``floor`` of the total (an
  iteration with no labels trains nothing), so with K = 3 and floor 0.1 the
  seven points are the three vertices (0.8, 0.1, 0.1), the three edge
  midpoints (0.45, 0.45, 0.1) and the centroid (constant). Each point is a
  ``custom`` allocator's weights: the labels themselves.
- :func:`scheffe_terms`: Scheffé's quadratic mixture model
  y = sum_i b_i z_i + sum_{i<j} b_ij z_i z_j in the pseudo-components z (no
  intercept: the z sum to 1). The b_ij are the interactions: b_ij > 0 means
  splitting labels between iterations i and j ends higher than the straight
  line between giving them all to i or all to j.
- :func:`fit_design`: the model fitted on each seed separately (every seed ran
  every point, so the per-seed coefficients are paired), then each
  coefficient's mean over seeds with the t interval and the sign-flip p
  (exact up to 20 seeds, Monte Carlo above); Holm over the interaction terms'
  t p-values. With K = 3 the seven points leave one degree of freedom per
  seed, reported as lack of fit: the centroid minus the quadratic through the
  other six points (the centroid's residual over one minus its leverage).
  Each point against the centroid (``constant``), paired by seed and
  Holm-adjusted, read without the model. Also the optimum of the mean surface
  on a grid of the design region, and the per-seed predicted gain there over
  the centroid (the optimum is
  chosen on the same seeds, so that gain is optimistic, and the report says so).
- :func:`seeds_needed` and :func:`cost_check`: the power calculation printed
  before a confirmation, from the spread a pilot measured, and the refusal of a
  confirmation that would need more than :data:`CPU_LIMIT_SECONDS` of CPU.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

from harness.budget import split_by_weights
from harness.errors import UsageError
from harness.experiments import statistics

CPU_LIMIT_SECONDS = 2 * 3600
"""A confirmation that would need more CPU than this refuses to start unless told ``--underpowered-ok``."""

ALPHA = 0.05
POWER = 0.8


@dataclass(frozen=True)
class DesignPoint:
    """One schedule of the design: its pseudo-components ``z`` (summing to 1) and the labels per iteration."""

    name: str
    z: tuple[float, ...]
    labels: tuple[int, ...]
    floor: float = 0.0

    @property
    def weights(self) -> str:
        """The ``custom`` allocator's ``-o allocator.weights=`` value for this point."""
        return ",".join(str(n) for n in self.labels)


def mixture_design(total: int, iterations: int = 3, *, floor: float = 0.1) -> list[DesignPoint]:
    """A {K, 2} simplex-lattice and the centroid over K = ``iterations`` shares, each at least ``floor``.

    Points are named by their pseudo-components: ``vertex-1`` (iteration 1 gets
    all labels above the floors), ``edge-1-2`` (iterations 1 and 2 share them),
    ``centroid`` (equal shares: the ``constant`` schedule).
    """
    if iterations < 2:
        raise UsageError(f"a schedule design needs at least 2 iterations, got {iterations}")
    if not 0.0 < floor < 1.0 / iterations:
        raise UsageError(f"floor must lie in (0, 1/{iterations}): every iteration needs labels to train, and the "
                         f"shares must be able to differ; got {floor}")
    unit = [tuple(Fraction(int(i == k)) for i in range(iterations)) for k in range(iterations)]
    lattice: list[tuple[str, tuple[Fraction, ...]]] = [(f"vertex-{k + 1}", v) for k, v in enumerate(unit)]
    for a, b in itertools.combinations(range(iterations), 2):
        lattice.append((f"edge-{a + 1}-{b + 1}", tuple((unit[a][i] + unit[b][i]) / 2 for i in range(iterations))))
    lattice.append(("centroid", tuple(Fraction(1, iterations) for _ in range(iterations))))
    points = []
    for name, z in lattice:
        shares = [floor + (1.0 - iterations * floor) * float(x) for x in z]
        labels = split_by_weights(total, shares)
        if min(labels) < 1:
            raise UsageError(f"budget {total} is too small for floor {floor}: point {name} gives {labels}")
        points.append(DesignPoint(name, tuple(float(x) for x in z), tuple(labels), floor))
    return points


def scheffe_terms(z: Sequence[float]) -> np.ndarray:
    """The Scheffé quadratic terms of one point: z_1..z_K, then z_i z_j for i < j (in that order)."""
    z = np.asarray(z, dtype=np.float64)
    pairs = [z[i] * z[j] for i, j in itertools.combinations(range(z.size), 2)]
    return np.concatenate([z, np.asarray(pairs, dtype=np.float64)])


def term_names(iterations: int) -> list[str]:
    """``b1..bK`` and ``b12, b13, ...``: the names of :func:`scheffe_terms`."""
    return ([f"b{i + 1}" for i in range(iterations)]
            + [f"b{i + 1}{j + 1}" for i, j in itertools.combinations(range(iterations), 2)])


def _summary(values: Sequence[float]) -> dict[str, Any]:
    t = statistics.t_test(values, alpha=ALPHA)
    return {"mean": t["mean"], "ci_low": t["ci_low"], "ci_high": t["ci_high"], "sd": t["std"], "n": t["n"],
            "p_t": t["p"], "p_sign_flip": statistics.sign_flip_p(values)}


def fit_design(points: Sequence[DesignPoint], values: Mapping[int, Mapping[str, float]],
               *, grid_step: float = 0.02) -> dict[str, Any]:
    """The Scheffé quadratic fitted per seed, summarised over seeds.

    ``values[seed][point name]`` is the response (e.g. final gold reward). A
    seed counts only when it has every point. Returns ``seeds``, ``terms``
    (per term: mean, t interval, sd, sign-flip p; interactions also
    ``p_holm``), ``lack_of_fit`` (the centroid's residual), ``optimum``
    (pseudo-components, labels' shares and the predicted gain over the
    centroid, per-seed summarised) and ``point_means``.
    """
    names = [p.name for p in points]
    seeds = sorted(seed for seed, row in values.items() if all(name in row for name in names))
    if len(seeds) < 2:
        raise UsageError(f"a design fit needs at least 2 seeds with every point; got {len(seeds)}")
    k = len(points[0].z)
    design = np.stack([scheffe_terms(p.z) for p in points])
    responses = np.array([[float(values[s][name]) for name in names] for s in seeds])  # (seeds, points)
    coef, *_ = np.linalg.lstsq(design, responses.T, rcond=None)  # (terms, seeds)
    residuals = responses - (design @ coef).T
    leverage = np.diag(design @ np.linalg.pinv(design.T @ design) @ design.T)
    labels = term_names(k)
    terms = {name: _summary(coef[i]) for i, name in enumerate(labels)}
    interactions = labels[k:]
    for name, p in zip(interactions, statistics.holm([terms[n]["p_t"] for n in interactions])):
        terms[name]["p_holm"] = p
    centroid = names.index("centroid")
    # The centroid's residual over (1 - its leverage): the centroid minus what the other points' quadratic
    # predicts there (the least-squares residual alone shrinks a bump by that factor; the interactions absorb the rest)
    lack = residuals[:, centroid] / (1.0 - leverage[centroid]) if leverage[centroid] < 1 - 1e-9 else residuals[:, centroid]
    grid = [z for z in _simplex_grid(k, grid_step)]
    mean_coef = coef.mean(axis=1)
    surface = np.array([scheffe_terms(z) @ mean_coef for z in grid])
    best = grid[int(np.argmax(surface))]
    floor = points[0].floor
    gain = scheffe_terms(best) @ coef - design[centroid] @ coef
    return {
        "seeds": seeds,
        "terms": terms,
        "interaction_terms": interactions,
        "lack_of_fit": _summary(lack),
        "optimum": {"z": [round(float(x), 4) for x in best],
                    "shares": [round(floor + (1 - k * floor) * float(x), 4) for x in best],
                    "predicted": float(surface.max()),
                    "gain_over_centroid": _summary(gain)},
        "point_means": {name: float(responses[:, i].mean()) for i, name in enumerate(names)},
        "against_centroid": _against_centroid(names, responses, centroid),
    }


def _against_centroid(names: Sequence[str], responses: np.ndarray, centroid: int) -> dict[str, dict[str, Any]]:
    """Each point minus the centroid (``constant``), paired by seed, Holm over the points: read without the model."""
    out = {name: _summary(responses[:, i] - responses[:, centroid]) for i, name in enumerate(names) if i != centroid}
    for name, p in zip(out, statistics.holm([out[n]["p_t"] for n in out])):
        out[name]["p_holm"] = p
    return out


def _simplex_grid(k: int, step: float) -> list[tuple[float, ...]]:
    """Every point of the simplex in k components on a lattice of ``step``."""
    m = int(round(1.0 / step))
    return [tuple(c / m for c in combo) + (1.0 - sum(combo) / m,)
            for combo in itertools.product(range(m + 1), repeat=k - 1) if sum(combo) <= m]


# -- power and cost ----------------------------------------------------------------------------------------------


def pilot_spread(points: Sequence[DesignPoint], values: Mapping[int, Mapping[str, float]]) -> float:
    """The spread of a paired difference between two design points: the root mean square of the per-pair sd.

    ``values`` holds the pilot seeds' responses. Every pair of points gives
    one sd of its per-seed differences; their quadratic mean is the spread the
    power calculation uses.
    """
    names = [p.name for p in points]
    seeds = [s for s, row in values.items() if all(n in row for n in names)]
    if len(seeds) < 2:
        raise UsageError(f"the pilot needs at least 2 seeds with every point to measure a spread; got {len(seeds)}")
    variances = []
    for a, b in itertools.combinations(names, 2):
        diffs = np.array([float(values[s][a]) - float(values[s][b]) for s in seeds])
        variances.append(float(diffs.var(ddof=1)))
    return math.sqrt(float(np.mean(variances)))


def power(n: int, effect: float, sd: float, *, alpha: float = ALPHA) -> float:
    """Power of the two-sided paired t test at ``n`` seeds for a true mean difference ``effect`` with spread ``sd``."""
    from scipy import stats

    if n < 2 or sd <= 0:
        return float("nan")
    df = n - 1
    crit = stats.t.ppf(1 - alpha / 2, df)
    nc = effect / sd * math.sqrt(n)
    return float(stats.nct.sf(crit, df, nc) + stats.nct.cdf(-crit, df, nc))


def seeds_needed(effect: float, sd: float, *, alpha: float = ALPHA, target: float = POWER, cap: int = 10_000) -> int:
    """The fewest seeds (at least 2) at which the paired t test detects ``effect`` with ``target`` power."""
    if effect <= 0:
        raise UsageError(f"the stated effect must be above 0, got {effect}")
    if sd <= 0:
        return 2
    for n in range(2, cap + 1):
        if power(n, effect, sd, alpha=alpha) >= target:
            return n
    return cap


@dataclass(frozen=True)
class CostCheck:
    """What a confirmation of the design would need, and what it will run."""

    seeds_needed: int
    seeds_run: int
    points: int
    seconds_per_run: float
    cpu_seconds_needed: float
    underpowered: bool
    power_run: float

    def lines(self, effect: float, sd: float, metric: str) -> list[str]:
        out = power_lines(effect=effect, sd=sd, metric=metric, points=self.points,
                          seconds_per_run=self.seconds_per_run)
        if self.underpowered:
            out.append(f"UNDERPOWERED: running {self.seeds_run} seeds, power {self.power_run:.0%} for that difference")
        return out


def power_lines(*, effect: float, sd: float, metric: str, points: int, seconds_per_run: float) -> list[str]:
    """The power calculation and its cost, as printed before any confirmation run (and before a refusal)."""
    needed = seeds_needed(effect, sd)
    hours = needed * points * seconds_per_run / 3600
    return [
        f"power calculation: to detect a difference of {effect:g} in {metric} between two design points with "
        f"{POWER:.0%} power (two-sided paired t, alpha {ALPHA}) at the pilot's spread sd {sd:.4g}, "
        f"{needed} seeds are needed (the interactions' tests are not what this sizes)",
        f"cost: {needed} seeds x {points} points x {seconds_per_run:.1f} s per run "
        f"= {hours:.2f} h of CPU (limit {CPU_LIMIT_SECONDS / 3600:g} h)",
    ]


def cost_check(*, effect: float, sd: float, points: int, seconds_per_run: float, underpowered_ok: bool,
               cap_seeds: int | None = None) -> CostCheck:
    """The seeds a confirmation needs and whether it may run; UsageError when it needs more than the CPU limit.

    With ``underpowered_ok`` an unaffordable confirmation runs as many seeds
    as fit in the limit (``cap_seeds`` lowers that further) and is marked
    underpowered; fewer than 2 is refused even then. "CPU" is the seconds per
    run the pilot measured (each run's wall time with one torch thread) times
    the runs.
    """
    needed = seeds_needed(effect, sd)
    cpu = needed * points * seconds_per_run
    affordable = int(CPU_LIMIT_SECONDS // max(points * seconds_per_run, 1e-9))
    if cpu <= CPU_LIMIT_SECONDS and (cap_seeds is None or needed <= cap_seeds):
        return CostCheck(needed, needed, points, seconds_per_run, cpu, False, power(needed, effect, sd))
    if underpowered_ok and min(affordable, cap_seeds if cap_seeds is not None else affordable) < 2:
        raise UsageError(f"even 2 seeds x {points} points x {seconds_per_run:.1f} s exceed the "
                         f"{CPU_LIMIT_SECONDS / 3600:g} h limit (or --max-seeds is below 2): nothing to run")
    if not underpowered_ok:
        raise UsageError(
            f"the confirmation needs {needed} seeds x {points} points x {seconds_per_run:.1f} s = "
            f"{cpu / 3600:.1f} h of CPU, more than {CPU_LIMIT_SECONDS / 3600:g} h"
            + (f" or the {cap_seeds} seeds allowed" if cap_seeds is not None and needed > cap_seeds else "")
            + ". State a larger effect worth detecting, or pass --underpowered-ok to run the seeds that fit "
              "and have the report say 'underpowered'")
    run = min(affordable, needed, cap_seeds if cap_seeds is not None else needed)
    return CostCheck(needed, run, points, seconds_per_run, cpu, True, power(run, effect, sd))


# -- the report --------------------------------------------------------------------------------------------------


def _interval(term: Mapping[str, Any]) -> str:
    if term.get("ci_low") is None:
        return "–"
    return f"[{term['ci_low']:+.3f}, {term['ci_high']:+.3f}]"


def _p(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}"


def report_lines(result: Mapping[str, Any]) -> list[str]:
    """A markdown report of one design's result (the JSON ``scripts/schedule_design.py`` writes)."""
    power_ = result["power"]
    confirmation = result.get("confirmation")
    fit = (confirmation or result["pilot"])["fit"]
    underpowered = bool(power_["underpowered"]) and confirmation is not None
    lines = [f"# Schedule design: world={result['world']}, {result['budget']} labels over "
             f"{result['iterations']} iterations, selector {result['selector']}", ""]
    if underpowered:
        lines += [f"> **Underpowered:** {power_['seeds_run']} seeds were run where {power_['seeds_needed']} were "
                  f"needed; the power for the stated difference is {power_['power_run']:.0%}, not "
                  f"{power_['target']:.0%}. A null here says little.", ""]
    if confirmation is None:
        lines += ["> **Pilot only:** exploration seeds; nothing below is a verdict.", ""]
    lines += [
        f"- **Command:** `{result['command']}`",
        f"- **Git commit:** `{result['git_commit']}`",
        f"- **Metric:** `{result['metric']}`; stated effect worth detecting {result['effect']:g} between two points",
        f"- **Pilot:** seeds {', '.join(str(s) for s in result['pilot']['seeds'])}; spread of a paired difference "
        f"between two points sd {result['pilot']['spread']:.4g}; {result['pilot']['seconds_per_run']:.1f} s per run",
        f"- **Power calculation (printed before the confirmation):** {power_['seeds_needed']} seeds for "
        f"{power_['target']:.0%} power (two-sided paired t, alpha {power_['alpha']}), "
        f"{power_['cpu_seconds_needed'] / 3600:.2f} h of CPU against a limit of "
        f"{power_['cpu_limit_seconds'] / 3600:g} h",
        "- **Confirmation:** " + (f"seeds {confirmation['seeds'][0]}–{confirmation['seeds'][-1]} "
                                   f"({len(fit['seeds'])} with every point)" if confirmation else "not run"),
        f"- **Wall time:** {result.get('wall_seconds', 0) / 60:.1f} min",
        "",
        "## The points", "",
        "| point | labels per iteration | mean " + result["metric"] + " |",
        "| --- | --- | --- |",
    ]
    for point in result["points"]:
        lines.append(f"| `{point['name']}` | {'/'.join(str(n) for n in point['labels'])} | "
                     f"{fit['point_means'][point['name']]:.4f} |")
    lines += ["", "## The fitted surface (Scheffé quadratic, per seed; mean over seeds)", "",
              "| term | mean | 95% CI | t p | sign-flip p | Holm p (of the interactions' t p) |",
              "| --- | --- | --- | --- | --- | --- |"]
    for name, term in fit["terms"].items():
        lines.append(f"| {name} | {term['mean']:+.4f} | {_interval(term)} | {_p(term['p_t'])} | "
                     f"{_p(term['p_sign_flip'])} | {_p(term.get('p_holm'))} |")
    lines += ["", "The sign-flip p is exact up to 20 seeds and Monte Carlo (100,000 draws) above. The power "
              "calculation sized a difference between two points, not these coefficients' tests."]
    if "against_centroid" in fit:
        lines += ["", "## Each point against the centroid (constant), without the model", "",
                  "| point | mean Δ | 95% CI | sign-flip p | Holm p (over the points) |", "| --- | --- | --- | --- | --- |"]
        for name, diff in fit["against_centroid"].items():
            lines.append(f"| `{name}` − `centroid` | {diff['mean']:+.4f} | {_interval(diff)} | "
                         f"{_p(diff['p_sign_flip'])} | {_p(diff.get('p_holm'))} |")
    lack, gain = fit["lack_of_fit"], fit["optimum"]["gain_over_centroid"]
    lines += ["", f"- **Lack of fit** (the centroid minus the quadratic through the other six points): "
                  f"{lack['mean']:+.4f} {_interval(lack)}",
              f"- **Optimum of the mean surface:** shares {fit['optimum']['shares']}, predicted "
              f"{fit['optimum']['predicted']:.4f}; its gain over the centroid (constant) {gain['mean']:+.4f} "
              f"{_interval(gain)}. The optimum was chosen on these seeds, so this gain is optimistic.", ""]
    return lines
