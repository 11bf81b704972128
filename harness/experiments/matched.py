"""Fair comparisons at matched KL: each arm's metric at the two arms' common KL from pi_ref.

A strategy that moves the policy further from pi_ref can win on win rate
because it took a bigger step, not because it bought better pairs (the KL
confound, ``docs/internals/pitfalls.md``). A claim with
``compare = "matched_kl"`` (:mod:`harness.experiments.study_plan`) therefore
compares its two arms where they are equally far from pi_ref:

* **the path**: a run's points (KL(pi_i ‖ pi_ref), metric) for i = 0, 1, ..., T,
  read from its iteration rows. Iteration 0 is pi_0, whose KL is above 0 in the
  synthetic world (pi_0 comes from an offline DPO round): its recorded value is
  used, never an assumed (0, ...) point for pi_ref, whose metrics are not
  recorded. T is the arm's last iteration, or the claim's ``iteration`` for that
  side (:func:`path`);
* **the common KL** of one seed, k* = the smaller of the two arms' final KL
  (:func:`matched_kl`);
* **the value at k***: linear interpolation along the path between the two
  points on either side of k* (:func:`value_at`). When a path is not monotone
  in KL (a later iteration closer to pi_ref than an earlier one), several
  segments can cross k*: the **first** crossing from pi_0 on is used, and the
  result counts the seeds where a path was not monotone;
* **seeds that do not reach k***: an arm whose path never crosses k* (only when
  k* is below pi_0's KL, that is when an arm ended closer to pi_ref than pi_0,
  or when a path has a missing value) has no value there. That seed drops out
  of the paired differences and is *reported* (:attr:`MatchedKL.missing`), never
  dropped silently.

When both paths are monotone, the arm whose final KL is k* keeps its final value
and the other is read back along its path to the same KL. The first-crossing
rule applies to both arms alike: an arm whose path passed k* before coming back
to end there is read where it first got to k*, as if each arm had stopped the
first time its KL reached k*. The paired Δ over seeds then goes through the
same tests as any claim (:func:`harness.experiments.verdicts.claim_statistics`).

Besides the per-seed k*, :func:`matched_kl` reports the **design-level**
alternative, one k̄ for every seed (the smaller of the two arms' mean final KL),
as a description only: it is never tested.

Pure Python; no database access here (:func:`harness.experiments.study.results`
hands over the rows).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

#: The claim metrics a matched-KL comparison can read, and the per-iteration column each is on the path.
MATCHED_KL_METRICS = {"final_win_rate": "win_rate", "final_gold_reward": "gold_reward",
                      "win_rate": "win_rate", "gold_reward": "gold_reward"}
#: The policy metrics reported at k* for every matched-KL claim, whatever metric it tests.
PATH_METRICS = ("win_rate", "gold_reward")
#: Relative tolerance when deciding whether k* lies on a segment (k* is an arm's own final KL, so exact in
#: practice; the tolerance only absorbs rounding).
TOLERANCE = 1e-9

Point = tuple[float, float]  # (KL, metric)


def path_column(metric: str) -> str:
    """The per-iteration column a claim metric is read from along a path (``final_win_rate`` -> ``win_rate``)."""
    return MATCHED_KL_METRICS[metric]


def path(rows: Sequence[Mapping[str, Any]], column: str, through: int | None = None) -> list[Point] | None:
    """A run's (KL, ``column``) points from iteration 0 (pi_0) through ``through`` (default: its last row),
    in iteration order; None when an iteration in that range is missing or lacks either value."""
    by_iteration = {int(row["iteration"]): row for row in rows if row.get("iteration") is not None}
    if not by_iteration or 0 not in by_iteration:
        return None
    last = max(by_iteration) if through is None else int(through)
    points = []
    for iteration in range(0, last + 1):
        row = by_iteration.get(iteration)
        if row is None or row.get("kl") is None or row.get(column) is None:
            return None
        points.append((float(row["kl"]), float(row[column])))
    return points


def monotone(points: Sequence[Point]) -> bool:
    """Whether KL never decreases along the path."""
    return all(b[0] >= a[0] for a, b in zip(points, points[1:]))


def value_at(points: Sequence[Point], k: float) -> float | None:
    """The metric at KL ``k`` by linear interpolation along ``points``, at the first crossing of ``k``
    from pi_0 on; None when no point or segment reaches ``k``.

    A recorded point at ``k`` (within :data:`TOLERANCE`) is returned as recorded, so the arm whose final KL
    is k* keeps its final value exactly; a segment whose two ends have the same KL returns its first end.
    """
    if not points:
        return None
    tol = TOLERANCE * max(1.0, abs(k))
    if abs(points[0][0] - k) <= tol:
        return points[0][1]
    for (k0, m0), (k1, m1) in zip(points, points[1:]):
        low, high = min(k0, k1), max(k0, k1)
        if not (low - tol <= k <= high + tol):
            continue
        if abs(k1 - k0) <= tol or abs(k - k0) <= tol:
            return m0
        if abs(k - k1) <= tol:  # a recorded point is returned as recorded (an arm's own final value, exactly)
            return m1
        t = (k - k0) / (k1 - k0)
        return m0 + t * (m1 - m0)
    return None


@dataclass
class MatchedSeed:
    """One seed of a matched-KL claim: its common KL, and each arm's metrics there (None: not reached)."""

    key: tuple[int, int]  # (seed, world_seed)
    k_star: float | None  # None when an arm has no complete path
    final_kl: tuple[float | None, float | None]  # (A, B)
    a: dict[str, float | None]  # column -> value at k*
    b: dict[str, float | None]
    monotone: bool = True  # both paths monotone in KL
    reason: str = ""  # why a value is missing

    @property
    def reached(self) -> bool:
        return self.reason == ""


@dataclass
class MatchedKL:
    """A matched-KL claim over its seeds: the values it tests, and what the report shows beside them."""

    column: str  # the claim's metric on the path (win_rate, gold_reward)
    seeds: list[MatchedSeed]
    design_k: float | None = None  # the design-level k̄: the smaller of the arms' mean final KL
    design_delta: dict[str, float | None] = field(default_factory=dict)  # column -> mean Δ at k̄
    design_missing: list[tuple[int, int]] = field(default_factory=list)  # seeds whose path does not reach k̄

    def values(self, side: str) -> dict[tuple[int, int], float]:
        """The claim's metric at k* of arm ``side`` ("a" or "b"), per seed both arms reached."""
        return {s.key: getattr(s, side)[self.column] for s in self.seeds if s.reached}

    @property
    def missing(self) -> list[MatchedSeed]:
        """The seeds where an arm did not reach k* (or had no complete path): reported, not tested."""
        return [s for s in self.seeds if not s.reached]

    @property
    def non_monotone(self) -> list[tuple[int, int]]:
        """Seeds where a path went back towards pi_ref: their value is read at the first crossing."""
        return [s.key for s in self.seeds if not s.monotone]

    def k_stats(self) -> tuple[float | None, float | None, float | None]:
        """(mean, min, max) of k* over the seeds with a k*."""
        ks = [s.k_star for s in self.seeds if s.k_star is not None]
        if not ks:
            return None, None, None
        return sum(ks) / len(ks), min(ks), max(ks)

    def final_kl_means(self) -> tuple[float | None, float | None]:
        out = []
        for index in (0, 1):
            values = [s.final_kl[index] for s in self.seeds if s.final_kl[index] is not None]
            out.append(sum(values) / len(values) if values else None)
        return out[0], out[1]

    def delta(self, column: str) -> float | None:
        """Mean Δ = A − B at k* of ``column`` over the seeds both arms reached."""
        deltas = [s.a[column] - s.b[column] for s in self.seeds
                  if s.reached and s.a.get(column) is not None and s.b.get(column) is not None]
        return sum(deltas) / len(deltas) if deltas else None

    def summary(self) -> dict[str, Any]:
        """The JSON-friendly description the report and ``--json`` show."""
        mean, low, high = self.k_stats()
        final_a, final_b = self.final_kl_means()
        return {
            "column": self.column, "k_mean": mean, "k_min": low, "k_max": high,
            "final_kl_a": final_a, "final_kl_b": final_b,
            "delta_at_k": {c: self.delta(c) for c in PATH_METRICS},
            "not_reached": [{"seed": list(s.key), "reason": s.reason} for s in self.missing],
            "non_monotone": [list(k) for k in self.non_monotone],
            "design_k": self.design_k, "design_delta": dict(self.design_delta),
            "design_not_reached": [list(k) for k in self.design_missing],
        }


def _final(points: Sequence[Point] | None) -> float | None:
    return None if not points else points[-1][0]


def matched_kl(
    a_rows: Mapping[tuple[int, int], Sequence[Mapping[str, Any]]],
    b_rows: Mapping[tuple[int, int], Sequence[Mapping[str, Any]]],
    metric: str, *, a_through: int | None = None, b_through: int | None = None,
) -> MatchedKL:
    """Each seed's common KL k* and both arms' metrics there, from the runs' iteration rows.

    ``a_rows`` / ``b_rows`` map ``(seed, world_seed)`` to a run's iteration rows; seeds present on one
    side only are not pairs and are left out (as in every claim). ``a_through`` / ``b_through`` end a
    side's path at that iteration (a claim side's ``iteration``). See the module docstring.
    """
    column = path_column(metric)
    columns = list(dict.fromkeys((column, *PATH_METRICS)))
    keys = sorted(set(a_rows) & set(b_rows), key=lambda k: tuple(-1 if v is None else v for v in k))
    seeds: list[MatchedSeed] = []
    paths: dict[tuple[int, int], tuple[dict, dict]] = {}
    for key in keys:
        pa = {c: path(a_rows[key], c, a_through) for c in columns}
        pb = {c: path(b_rows[key], c, b_through) for c in columns}
        paths[key] = (pa, pb)
        ka, kb = _final(pa[column]), _final(pb[column])
        if ka is None or kb is None:
            arm = " and ".join(side for side, k in (("A", ka), ("B", kb)) if k is None)
            seeds.append(MatchedSeed(key, None, (ka, kb), {c: None for c in columns}, {c: None for c in columns},
                                     reason=f"{arm}: no complete (KL, {column}) path from pi_0"))
            continue
        k_star = min(ka, kb)
        a = {c: value_at(pa[c], k_star) if pa[c] else None for c in columns}
        b = {c: value_at(pb[c], k_star) if pb[c] else None for c in columns}
        flat = monotone(pa[column]) and monotone(pb[column])
        short = [side for side, values in (("A", a), ("B", b)) if values[column] is None]
        reason = ""
        if short:
            first = (pa if short[0] == "A" else pb)[column][0][0]
            reason = (f"{' and '.join(short)} never reach{'es' if len(short) == 1 else ''} k* = {k_star:.3g} "
                      f"(pi_0's KL {first:.3g})")
        seeds.append(MatchedSeed(key, k_star, (ka, kb), a, b, flat, reason))
    result = MatchedKL(column, seeds)
    finals = [s for s in seeds if s.final_kl[0] is not None and s.final_kl[1] is not None]
    if finals:  # the design-level alternative: one k̄ for every seed, described, never tested
        k_bar = min(sum(s.final_kl[0] for s in finals) / len(finals), sum(s.final_kl[1] for s in finals) / len(finals))
        result.design_k = k_bar
        deltas: dict[str, list[float]] = {c: [] for c in PATH_METRICS}
        for s in finals:
            pa, pb = paths[s.key]
            values = {c: (value_at(pa[c], k_bar) if pa[c] else None, value_at(pb[c], k_bar) if pb[c] else None)
                      for c in columns}
            if None in values[column]:
                result.design_missing.append(s.key)
                continue
            for c in PATH_METRICS:
                va, vb = values[c]
                if va is not None and vb is not None:
                    deltas[c].append(va - vb)
        result.design_delta = {c: (sum(d) / len(d) if d else None) for c, d in deltas.items()}
    return result
