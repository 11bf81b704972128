"""Where the toy predicted the real thing: a plan's claims on its own testbed beside the same claims under
one of its ``[testbed.NAME]`` sections.

The two studies are computed by the study engine as they are (:func:`harness.experiments.study.results`:
paired t interval, exact sign-flip p, adjusted verdicts per family), from runs already in one database;
nothing runs here. For each claim the section carries, :func:`transfer` puts side by side:

* the paired Δ = A − B and its 95 % interval on each testbed, and Δ relative to the baseline arm's (B's)
  gain over pi_0 on that testbed, so that effects on scales as different as a toy's win rate and a
  verifier's pass share can share one axis;
* the mechanism diagnostics of each arm (median β·Δ of the selected pairs, DPO weight, ranking
  accuracy, label noise, selected KL, KL moved from pi_ref), with a flag where the regimes differ;
* the outcome on the real testbed (:data:`OUTCOMES`): **confirmed** or **contradicted** only when both
  sides are decided (adjusted p < 0.05, the interval excluding 0) and the real side has at least
  :data:`MIN_SEEDS` paired seeds; **not separable** (no information) is never counted either way;
* where the section reads a claim's metric as another (its ``metrics`` table, e.g. the win rate as the
  verifier's gold reward), the claim's own metric on the real testbed too: an independent evaluator's
  view, which shows reward hacking if gold improves while it worsens;
* a power estimate from the real side's runs (a pilot): the seeds a design needs to detect the effect
  the toy predicts with 80 % power.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.experiments.verdicts import ALPHA

#: The fewest paired seeds at which the real side may confirm or contradict: an exact sign-flip test over
#: n seeds cannot go below 2 / 2^n, so 5 seeds never reach 0.05; 10 leave room for a family's adjustment.
MIN_SEEDS = 10

OUTCOMES = {
    "confirmed": "the real testbed's verdict is decided in the toy's direction",
    "contradicted": "the real testbed's verdict is decided against the toy's direction",
    "not separable": "the real testbed's interval includes 0 (or its adjusted p ≥ 0.05): no information either way",
    "too few seeds": f"fewer than {MIN_SEEDS} paired seeds on the real testbed (or a quick run): no verdict",
    "no toy direction": "the toy itself did not decide this claim, so there is no prediction to test",
    "not run": "no runs of this claim on one of the testbeds (yet)",
    "not compared": "an equivalence or non-inferiority claim: only direction claims are compared across testbeds",
}

#: The mechanism diagnostics compared, each (iteration-row column, label); ``kl_moved`` is derived.
DIAGNOSTICS = (
    ("sel_beta_margin_q50", "median β·Δ"),
    ("sel_mean_dpo_weight", "DPO weight"),
    ("sel_ranking_accuracy", "ranking accuracy"),
    ("sel_label_noise", "label noise"),
    ("sel_selected_kl", "selected KL"),
    ("kl_moved", "KL moved"),
)

SATURATION = 2.0
"""|median β·Δ| above which DPO's weight σ(−β·Δ) is below 0.12: the pairs are already ordered."""


@dataclass
class Side:
    """One claim on one testbed."""

    label: str  # the study's label, e.g. "yang2024" or "yang2024+hf"
    metric: str  # the metric read there
    stats: dict[str, Any] | None  # the study engine's statistics (None: the claim has no runs there)
    baseline_gain: float | None = None  # mean over B's runs of (metric - its pi_0 value)
    diagnostics: dict[str, dict[str, float | None]] = field(default_factory=dict)  # "a"/"b" -> label -> mean

    @property
    def n(self) -> int:
        return int((self.stats or {}).get("n") or 0)

    @property
    def decided(self) -> int:
        """+1 / -1 when Δ is decided positive / negative (adjusted p < 0.05, interval excludes 0), else 0."""
        s = self.stats or {}
        if s.get("mean") is None or s.get("p_adjusted") is None or s["p_adjusted"] >= ALPHA or not s.get("excludes_zero"):
            return 0
        return 1 if s["mean"] > 0 else -1

    @property
    def saturated(self) -> bool:
        """Either arm's mean median β·Δ beyond :data:`SATURATION`."""
        medians = [self.diagnostics.get(arm, {}).get("median β·Δ") for arm in ("a", "b")]
        return any(m is not None and abs(m) > SATURATION for m in medians)

    def relative(self, value: float | None) -> float | None:
        """``value`` in units of the baseline arm's gain over pi_0 (None when B did not gain)."""
        if value is None or self.baseline_gain is None or self.baseline_gain <= 0:
            return None
        return value / self.baseline_gain


@dataclass
class TransferRow:
    claim: Any  # the ClaimPlan
    toy: Side
    real: Side
    outcome: str
    flags: list[str]
    independent: Side | None = None  # the claim's own metric on the real testbed, when the section maps it
    independence: str = ""  # what the report says of reward hacking
    seeds_needed: int | None = None  # for 80 % power at the toy's predicted effect, from the real pilot
    predicted: float | None = None  # the effect the toy predicts on the real testbed's scale


@dataclass
class TransferResults:
    plan: Any
    testbed: str
    quick: bool
    toy_label: str
    real_label: str
    rows: list[TransferRow]
    counts: dict[str, dict[str, int]]  # "toy"/"real" -> finished / wanted runs

    def tally(self) -> dict[str, int]:
        out = {name: 0 for name in OUTCOMES}
        for row in self.rows:
            out[row.outcome] += 1
        return out


def transfer(plan: Any, registry: Any, db_path: Path, testbed: str, *, quick: bool = False,
             seeds: str | None = None, regime: str | None = None) -> TransferResults:
    """The transfer of ``plan``'s claims carried by its ``[testbed.<testbed>]`` section, from ``db_path``.

    The toy is the plan as written, with the same ``quick``, ``seeds`` and ``regime``.
    """
    from harness.experiments import study as st

    real_study = st.expand(plan, registry, quick=quick, seeds=seeds, regime=regime, testbed=testbed)
    toy_study = st.expand(plan, registry, quick=quick, seeds=seeds, regime=regime)
    real = st.results(real_study, db_path)
    toy = st.results(toy_study, db_path)
    toy_by_id = {item.claim.plan.id: item for item in toy.claims}
    section = real_study.section
    rows = []
    for item in real.claims:
        claim = item.claim.plan
        toy_item = toy_by_id[claim.id]
        toy_side = _side(toy, toy_item, toy_study.label, claim.metric)
        real_side = _side(real, item, real_study.label, section.metric(claim.metric))
        independent, independence = _independent(real, item, section, registry)
        row = TransferRow(claim, toy_side, real_side, _outcome(toy_side, real_side, quick), _flags(toy_side, real_side),
                          independent, independence)
        row.predicted, row.seeds_needed = _power(toy_side, real_side)
        rows.append(row)
    return TransferResults(plan, testbed, quick, toy_study.label, real_study.label, rows,
                           {"toy": dict(toy.counts), "real": dict(real.counts)})


# -- one side ----------------------------------------------------------------------------------------


def _pi0_metric(metric: str) -> str:
    """The iteration-row column whose iteration-0 value is pi_0's ``metric`` (``final_X`` -> ``X``)."""
    return metric[len("final_"):] if metric.startswith("final_") else metric


def _side(results: Any, item: Any, label: str, metric: str) -> Side:
    stats = item.stats if item.stats.get("n") else None
    bound = item.claim
    side = Side(label, metric, stats)
    base = _pi0_metric(metric)
    gains = []
    for arm, (grid, cell) in (("a", bound.a), ("b", bound.b)):
        runs = results.runs.get(grid, {}).get(cell.config_hash, [])
        side.diagnostics[arm] = _diagnostics(runs, results.iterations)
        if arm == "b":
            for run in runs:
                value = _final(run, results.iterations.get(run["id"], []), metric, item.claim)
                start = _at(results.iterations.get(run["id"], []), base, 0)
                if value is not None and start is not None:
                    gains.append(value - start)
    side.baseline_gain = sum(gains) / len(gains) if gains else None
    return side


def _final(run: dict[str, Any], rows: list[dict[str, Any]], metric: str, bound: Any) -> float | None:
    from harness.experiments.study import metric_value

    return metric_value(run, rows, metric, bound.b_iteration)


def _at(rows: list[dict[str, Any]], column: str, iteration: int) -> float | None:
    for row in rows:
        if row.get("iteration") == iteration and row.get(column) is not None:
            return float(row[column])
    return None


def _diagnostics(runs: list[dict[str, Any]], iterations: dict[str, list[dict[str, Any]]]) -> dict[str, float | None]:
    """Each diagnostic's mean over the arm's runs of its mean over iterations 1.. (KL moved: last minus pi_0)."""
    out: dict[str, float | None] = {}
    for column, label in DIAGNOSTICS:
        per_run = []
        for run in runs:
            rows = sorted(iterations.get(run["id"], []), key=lambda r: r.get("iteration", 0))
            if column == "kl_moved":
                start, end = _at(rows, "kl", 0), (rows[-1].get("kl") if rows else None)
                if start is not None and end is not None and len(rows) > 1:
                    per_run.append(float(end) - start)
                continue
            values = [float(r[column]) for r in rows if r.get("iteration", 0) >= 1 and r.get(column) is not None]
            if values:
                per_run.append(sum(values) / len(values))
        out[label] = sum(per_run) / len(per_run) if per_run else None
    return out


def _independent(real: Any, item: Any, section: Any, registry: Any) -> tuple[Side | None, str]:
    """The claim's own metric on the real testbed when the section reads another one; what it says of reward
    hacking. The claim's own metric is then the evaluator's, and it checks gold only when the evaluator is
    not the gold judge, not the annotator, not the testbed's own gold judge, and not exact (an exact judge
    is a gold itself)."""
    claim = item.claim.plan
    mapped = section.metric(claim.metric)
    if mapped == claim.metric:
        return None, "reward hacking not checked: the section reads the claim's own metric, no second evaluator"
    config = item.claim.a[1].config

    def name(role: str) -> str | None:
        choice = getattr(config, role, None)
        return None if choice is None else choice.name

    evaluator, gold = name("evaluator"), name("gold_judge")
    if evaluator is None:
        return None, "reward hacking not checked: the runs have no evaluator judge"
    testbed = registry.get("testbed", config.testbed.name).cls
    related = {gold, name("annotator"), testbed.default_judges.get("gold")} - {None}
    if evaluator in related or getattr(registry.get("judge", evaluator).cls, "exact", False):
        return None, (f"reward hacking not checked: the evaluator {evaluator!r} is not independent of the gold "
                      "(it is the gold judge, the annotator, the testbed's own gold, or exact)")
    from harness.experiments.study import metric_value
    from harness.experiments.verdicts import claim_statistics

    values = []
    for (grid, cell), iteration in ((item.claim.a, item.claim.a_iteration), (item.claim.b, item.claim.b_iteration)):
        side = {}
        for run in real.runs.get(grid, {}).get(cell.config_hash, []):
            value = metric_value(run, real.iterations.get(run["id"], []), claim.metric, iteration)
            if value is not None:
                side[(run["seed"], run["world_seed"])] = value
        values.append(side)
    # described, not decided: the interval of Δ on the evaluator's metric (the direction only selects the test)
    stats = claim_statistics(values[0], values[1], "a > b")
    independent = Side(f"{real.study.label} (evaluator)", claim.metric, stats if stats.get("n") else None)
    return independent, (f"checked by the evaluator {evaluator!r}, independent of the gold judge {gold!r}: its "
                         f"{claim.metric}")


# -- outcome, flags, power -------------------------------------------------------------------------


def _outcome(toy: Side, real: Side, quick: bool) -> str:
    if toy.stats is None or real.stats is None:
        return "not run"
    if toy.stats.get("direction") not in ("a > b", "a < b"):
        return "not compared"
    if quick or real.n < MIN_SEEDS:
        return "too few seeds"
    predicted = toy.decided
    if predicted == 0:
        return "no toy direction"
    found = real.decided
    if found == 0:
        return "not separable"
    return "confirmed" if found == predicted else "contradicted"


def _flags(toy: Side, real: Side) -> list[str]:
    """Where the two regimes differ in mechanism, not in outcome."""
    flags = []
    if toy.saturated != real.saturated:
        which = "toy" if toy.saturated else "real"
        flags.append(f"β·Δ saturated on the {which} testbed only (|median β·Δ| > {SATURATION:g}: pairs already ordered)")
    noise = [[s.diagnostics.get(arm, {}).get("label noise") for arm in ("a", "b")] for s in (toy, real)]
    noise = [max(v for v in values if v is not None) if any(v is not None for v in values) else None
             for values in noise]
    if None not in noise and (noise[0] > 0.05) != (noise[1] > 0.05):
        flags.append(f"label noise differs: toy {noise[0]:.2f}, real {noise[1]:.2f}")
    gains = [s.baseline_gain for s in (toy, real)]
    if all(g is not None for g in gains) and (gains[0] > 0) != (gains[1] > 0):
        flags.append(f"the baseline arm gained over pi_0 on one testbed only (toy {gains[0]:+.3f}, real {gains[1]:+.3f})")
    return flags


def _power(toy: Side, real: Side) -> tuple[float | None, int | None]:
    """The effect the toy predicts on the real scale, and the seeds needed to detect it 80 % of the time.

    The prediction is the toy's Δ in units of its baseline's gain, times the real baseline's gain (the
    toy's raw Δ where either gain is missing or not positive and both testbeds read the same metric; no
    prediction when they read different ones). The real side's runs are the pilot: their
    sd of paired Δ, with the study engine's MDE rule ((t₀.₉₇₅,ₙ₋₁ + t₀.₈,ₙ₋₁)·sd/√n ≤ |prediction|).
    """
    from scipy import stats as scipy_stats

    if toy.stats is None or real.stats is None or toy.stats.get("mean") is None:
        return None, None
    relative = toy.relative(toy.stats["mean"])
    if relative is not None and real.baseline_gain and real.baseline_gain > 0:
        predicted = relative * real.baseline_gain
    elif toy.metric == real.metric:
        predicted = toy.stats["mean"]
    else:  # the toy's raw delta is on another metric's scale: nothing to predict
        return None, None
    sd = real.stats.get("std")
    if sd is None or real.n < 2 or not predicted:
        return predicted, None
    if sd == 0:
        return predicted, 2
    for n in range(2, 1001):
        mde = (scipy_stats.t.ppf(0.975, n - 1) + scipy_stats.t.ppf(0.8, n - 1)) * sd / math.sqrt(n)
        if mde <= abs(predicted):
            return predicted, n
    return predicted, None
