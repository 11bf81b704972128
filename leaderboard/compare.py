"""Paired differences between strategy groups and a baseline, over common seeds.

Two runs with the same ``seed`` and ``world_seed`` share the world, pi_0, the
iteration-1 prompts and the iteration-1 samples (common random numbers,
docs/internals/definitions.md#common-random-numbers), so the seed-to-seed spread (about 0.05 win rate on the
synthetic testbed, as large as most effects) cancels in their difference.

The baseline rule (:data:`BASELINE_RULE`):

* ``--baseline NAME`` (a selector): each strategy group is compared with the
  group that uses NAME at *both* selection levels and has otherwise the same
  config: the same testbed, allocator and trainer with the same settings, the
  same iterations, budget, keep and responses (the configs are equal once the
  seeds and both selectors are removed). Groups without such a group are
  listed as unmatched.
* ``--baseline HASH`` (a prefix of one group's ``config_hash``): every group on
  that group's testbed is compared with it, whatever their other settings.

Either way the pairs are the (seed, world_seed) values both groups have; a
(seed, world_seed) run twice in one group counts once, with its mean.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any

from harness.errors import UnknownNameError, UsageError
from leaderboard.query import (
    STRATEGY_FIELDS,
    Filters,
    config_settings,
    configs_for,
    group_runs,
    is_numeric,
    mark_deployability,
    select_runs,
    selector_label,
    table_columns,
)
from leaderboard.stats import paired_interval

__all__ = ["BASELINE_RULE", "DERIVED_METRICS", "compare", "metric_names"]

BASELINE_RULE = (
    "a selector name matches, for each group, the group that uses that selector at both levels and "
    "whose config is otherwise equal (testbed, allocator, trainer and their settings, iterations, "
    "budget, keep, responses); a config_hash prefix is compared with every group on its testbed. "
    "Pairs are the (seed, world_seed) values both groups have."
)

#: Metrics computed from two columns: name -> (column, minus column).
DERIVED_METRICS = {"delta_win_rate": ("final_win_rate", "initial_win_rate")}
_SKIP = {"seed", "world_seed", "iterations", "budget", "keep", "n_responses"}


def metric_names(columns: Mapping[str, str]) -> list[str]:
    """The numeric runs columns that ``--metric`` accepts (plus derived ones)."""
    names = [
        name for name, kind in columns.items()
        if is_numeric(kind) and name not in _SKIP
    ]
    return names + [m for m in DERIVED_METRICS if all(c in columns for c in DERIVED_METRICS[m])]


def _context(config: Mapping[str, Any] | None, group: Mapping[str, Any]) -> str:
    """What must be equal for two groups to be compared: the config without seeds, selectors and judges.

    Judges belong with the selectors: which explicit scores a strategy reads is
    part of the strategy, so `map` at any proxy fidelity pairs with `random`.
    """
    if config:
        rest = {k: v for k, v in config.items()
                if k not in ("seed", "world_seed", "instance_selector", "corpus_selector",
                             "gold_judge", "proxy_judge", "deployable")}  # deployable follows the selectors
        return json.dumps(rest, sort_keys=True, default=str)
    # A run without a stored config: fall back on the columns.
    return json.dumps([group.get(k) for k in ("testbed", "allocator", "trainer")])


def _by_seed(rows: Sequence[Mapping[str, Any]], metric: str) -> dict[tuple, float]:
    values: dict[tuple, list[float]] = {}
    for row in rows:
        if row.get(metric) is not None:
            values.setdefault((row.get("seed"), row.get("world_seed")), []).append(row[metric])
    return {key: sum(v) / len(v) for key, v in values.items()}


def _resolve(
    baseline: str, groups: list[dict[str, Any]], selectors: set[str]
) -> tuple[str, list[dict[str, Any]]]:
    """("selector" | "config_hash", the baseline groups), or UsageError/UnknownNameError."""
    if baseline in selectors:
        both = [g for g in groups
                if g.get("instance_selector") == baseline and g.get("corpus_selector") == baseline]
        if not both:
            raise UsageError(
                f"no strategy uses selector {baseline!r} at both levels, so there is no baseline "
                f"group; run `harness run --selector {baseline}` on the same seeds, or pass "
                "--baseline CONFIG_HASH (the config column of `harness leaderboard`)"
            )
        return "selector", both
    hashes = sorted({str(g["config_hash"]) for g in groups if g.get("config_hash")})
    matches = [h for h in hashes if h.startswith(baseline)] if baseline else []
    if len(matches) == 1:
        return "config_hash", [g for g in groups if g.get("config_hash") == matches[0]]
    if len(matches) > 1:
        raise UsageError(
            f"config hash prefix {baseline!r} is ambiguous: {', '.join(m[:12] for m in matches)}; "
            "give more characters"
        )
    raise UnknownNameError(
        "baseline", baseline, sorted(selectors) + [h[:8] for h in hashes],
        suggest_from=sorted(selectors),
    )


def compare(
    conn: sqlite3.Connection,
    filters: Filters,
    *,
    baseline: str,
    metric: str = "final_win_rate",
    confidence: float = 0.95,
) -> dict[str, Any]:
    """Paired differences of ``metric`` between each strategy group and its baseline.

    Returns ``{"baseline", "baseline_kind", "metric", "confidence", "rule",
    "rows", "notes"}``. ``rows`` come in blocks, one per baseline group: the
    baseline's own row (``is_baseline`` True) then its compared groups, largest
    mean difference first; unmatched groups come last with ``n`` 0 and a
    ``reason``. Each row has the group's strategy columns, ``settings`` (the
    options that differ between the groups), ``runs``, ``group_mean``,
    ``baseline_config_hash``, ``baseline_mean`` and the paired summary ``n``,
    ``mean``, ``std``, ``ci_low``, ``ci_high``, ``excludes_zero``, ``pairs``.
    """
    if not 0.0 < confidence < 1.0:
        raise UsageError(f"--confidence must be strictly between 0 and 1, e.g. 0.95; got {confidence}")
    columns = table_columns(conn, "runs")
    metrics = metric_names(columns)
    if metric not in metrics:
        raise UnknownNameError("metric", metric, metrics)
    wanted = ["id", "seed", "world_seed", *STRATEGY_FIELDS]
    wanted += list(DERIVED_METRICS.get(metric, (metric,)))
    # The --selector filter picks the groups to show, never the baseline: read every selector.
    selector = filters.selector
    everything = Filters(filters.status, filters.testbed, filters.sweep, None, filters.allocator)
    rows, notes = select_runs(conn, everything, list(dict.fromkeys(wanted)))
    if metric in DERIVED_METRICS:
        column, minus = DERIVED_METRICS[metric]
        for row in rows:
            row[metric] = (
                None if row[column] is None or row[minus] is None else row[column] - row[minus]
            )
    result: dict[str, Any] = {
        "baseline": baseline, "baseline_kind": None, "metric": metric,
        "confidence": confidence, "rule": BASELINE_RULE, "rows": [], "notes": notes,
    }
    if not rows:
        return result
    groups = group_runs(rows, STRATEGY_FIELDS, metrics=(metric,))
    members: dict[int, list[dict[str, Any]]] = {}
    by_key = {tuple(g[f] for f in STRATEGY_FIELDS): i for i, g in enumerate(groups)}
    for row in rows:
        members.setdefault(by_key[tuple(row[f] for f in STRATEGY_FIELDS)], []).append(row)
    configs = configs_for(conn, [g["run_ids"][0] for g in groups])
    group_configs = [configs.get(g["run_ids"][0]) for g in groups]
    mark_deployability(conn, groups)  # † on a reference point's selector (harness.reference_point)
    for group, config, setting in zip(groups, group_configs, config_settings(group_configs)):
        group["settings"] = setting
        group["_context"] = _context(config, group)
    for index, group in enumerate(groups):
        group["_index"] = index

    selectors = {
        str(v) for g in groups for v in (g.get("instance_selector"), g.get("corpus_selector")) if v
    }
    kind, bases = _resolve(baseline, groups, selectors)
    result["baseline_kind"] = kind

    def base_for(group: dict[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
        if kind == "config_hash":
            base = bases[0]
            if group.get("testbed") != base.get("testbed"):
                return None, f"on testbed {group.get('testbed')}, the baseline is on {base.get('testbed')}"
            return base, None
        candidates = [b for b in bases if b["_context"] == group["_context"]]
        if not candidates:
            return None, f"no {baseline!r} group with the same settings (testbed, allocator, trainer, budget, ...)"
        if len(candidates) > 1:
            hashes = ", ".join(str(c["config_hash"])[:8] for c in candidates)
            return None, (
                f"several {baseline!r} groups with the same settings ({hashes}, differing in the "
                "selector's own options): pass --baseline CONFIG_HASH"
            )
        return candidates[0], None

    def summary(group: dict[str, Any]) -> dict[str, Any]:
        out = {field: group.get(field) for field in STRATEGY_FIELDS}
        out.update(
            settings=group["settings"], runs=group["runs"], deployable=group["deployable"],
            group_mean=group[f"{metric}_mean"], group_std=group[f"{metric}_std"],
        )
        return out

    blocks: dict[int, list[dict[str, Any]]] = {}
    unmatched: list[dict[str, Any]] = []
    for group in groups:
        base, reason = base_for(group)
        row = summary(group)
        if base is None:
            row.update(
                is_baseline=False, baseline_config_hash=None, baseline_mean=None,
                n=0, mean=None, std=None, ci_low=None, ci_high=None, excludes_zero=None,
                pairs=[], reason=reason,
            )
            unmatched.append(row)
            continue
        row["baseline_config_hash"] = base.get("config_hash")
        row["baseline_mean"] = base[f"{metric}_mean"]
        if base is group:
            row.update(is_baseline=True, n=None, mean=None, std=None, ci_low=None, ci_high=None,
                       excludes_zero=None, pairs=[], reason=None)
            blocks.setdefault(base["_index"], []).insert(0, row)
            continue
        mine = _by_seed(members[group["_index"]], metric)
        theirs = _by_seed(members[base["_index"]], metric)
        common = sorted(set(mine) & set(theirs), key=lambda k: tuple(-1 if v is None else v for v in k))
        stats = paired_interval([mine[k] - theirs[k] for k in common], confidence)
        row.update(is_baseline=False, **stats, pairs=[list(k) for k in common],
                   reason=None if common else "no (seed, world_seed) in common with the baseline")
        blocks.setdefault(base["_index"], []).append(row)

    def best_first(i: int) -> tuple[bool, float]:
        mean = groups[i][f"{metric}_mean"]
        return mean is None, -(mean or 0.0)

    ordered: list[dict[str, Any]] = []
    for index in sorted(blocks, key=best_first):
        block = blocks[index]
        rest = [r for r in block if not r["is_baseline"] and _selected(r, selector)]
        if selector is not None and not rest:
            continue
        rest.sort(key=lambda r: (r["mean"] is None, -(r["mean"] or 0.0)))
        ordered += [r for r in block if r["is_baseline"]] + rest
    unmatched = [r for r in unmatched if _selected(r, selector)]
    notes += _reference_shares(ordered)
    result["rows"] = ordered + unmatched
    for row in unmatched:
        notes.append(f"{_label(row)} ({str(row['config_hash'])[:8]}): not compared, {row['reason']}")
    thin = [r for r in ordered if not r["is_baseline"] and 0 < r["n"] < 2]
    if thin:
        notes.append(f"{len(thin)} group(s) share only one seed with the baseline: no interval")
    return result


def _reference_shares(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Set ``reference_share`` on every compared row: its Δ as a share of the reference point's Δ in its block.

    A block's reference is its one compared group that is not a deployable
    strategy (``gold_gradient``: :mod:`harness.reference_point`). The share is
    the row's mean paired difference from the baseline divided by the
    reference's, over their own common seeds: 1 is the reference's gain, above
    1 a gain larger than the reference's (reported as is, never capped: the
    reference is first-order, not an upper bound). It is None where the block
    has no reference, or the reference did not gain on the baseline (mean <= 0),
    and the notes say so.
    """
    notes: list[str] = []
    blocks: dict[Any, list[dict[str, Any]]] = {}
    for row in rows:
        row["reference_share"] = None
        blocks.setdefault(row["baseline_config_hash"], []).append(row)
    for block in blocks.values():
        references = [r for r in block if not r["is_baseline"] and r["deployable"] is False and r["mean"] is not None]
        if len(references) != 1:
            continue
        reference = references[0]
        name = _label(reference)
        if reference["mean"] <= 0:
            notes.append(f"{name} did not gain on the baseline ({reference['mean']:+.4g}): no share of it is given")
            continue
        for row in block:
            if not row["is_baseline"] and row["mean"] is not None:
                row["reference_share"] = row["mean"] / reference["mean"]
        unsure = "" if reference["excludes_zero"] else "; its own interval includes 0, so the shares are unstable"
        notes.append(f"share: each Δ divided by {name}'s Δ ({reference['mean']:+.4g}) over the baseline; above 1 "
                     f"is a larger gain than the reference point's, not an error (it is first-order, not an upper "
                     f"bound){unsure}")
    return notes


def _selected(row: Mapping[str, Any], selector: str | None) -> bool:
    return selector is None or selector in (row.get("instance_selector"), row.get("corpus_selector"))


def _label(row: Mapping[str, Any]) -> str:
    return selector_label(row)
