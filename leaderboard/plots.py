"""Figures of the leaderboard's strategies, as PNG files (matplotlib's Agg backend).

:func:`collect` reads what the figures need (plain sqlite3, no numpy);
:func:`write_figures` imports matplotlib and numpy, draws, and returns the paths:

* ``win_rate_vs_labels.png`` -- win rate against cumulative gold labels, one
  line per group (mean over its seeds at each iteration) with a ± std band;
  groups without iteration rows show their final point with std error bars;
* ``curves.png`` -- win rate, gold reward and KL(pi || pi_ref) per iteration,
  one panel each, mean ± std band per group;
* ``frontier.png`` -- gold reward against KL: every run's final policy a dot
  coloured by its group, the group's mean ± std a diamond, and its mean path
  over the iterations (pi_0 first) a thin line. Up and to the left is better:
  more gold reward for less drift from pi_ref (docs/internals/pitfalls.md#the-kl-confound).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from leaderboard.query import (
    STRATEGY_FIELDS,
    Filters,
    config_settings,
    configs_for,
    group_labels,
    group_runs,
    mark_deployability,
    select_runs,
    sort_groups,
    table_columns,
)

__all__ = ["FIGURES", "PlotData", "collect", "write_figures"]

#: The files :func:`write_figures` writes, in order.
FIGURES = ("win_rate_vs_labels.png", "curves.png", "frontier.png")
#: Per-iteration columns the figures use.
ITERATION_METRICS = ("win_rate", "gold_reward", "kl", "labels")
_RUN_METRICS = ("final_win_rate", "final_gold_reward", "final_kl", "labels_used")


@dataclass
class PlotData:
    """What the figures show: groups (best first) with labels, their runs, the runs' iterations."""

    by: tuple[str, ...]
    groups: list[dict[str, Any]] = field(default_factory=list)
    runs: list[list[dict[str, Any]]] = field(default_factory=list)  # per group
    iterations: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # per run id
    notes: list[str] = field(default_factory=list)
    source: str = ""

    @property
    def n_runs(self) -> int:
        return sum(len(runs) for runs in self.runs)


def collect(
    conn: sqlite3.Connection, filters: Filters, by: Sequence[str], *, limit: int | None = 10
) -> PlotData:
    """The groups of the runs matching ``filters`` (best mean final win rate first, at most ``limit``)."""
    by = tuple(by)
    wanted = list(dict.fromkeys(["id", "seed", "world_seed", *by, *_RUN_METRICS]))
    rows, notes = select_runs(conn, filters, wanted)
    data = PlotData(by=by, notes=list(notes))
    if not rows:
        return data
    groups = group_runs(rows, by)
    mark_deployability(conn, groups)  # † in the legend on a reference point's selector
    if by == STRATEGY_FIELDS:
        configs = configs_for(conn, [g["run_ids"][0] for g in groups])
        for group, setting in zip(groups, config_settings([configs.get(g["run_ids"][0]) for g in groups])):
            group["settings"] = setting
    groups = sort_groups(groups, "final_win_rate_mean", descending=True)
    if limit is not None and len(groups) > limit:
        data.notes.append(
            f"plotting the best {limit} of {len(groups)} groups by mean final win rate (--limit)"
        )
        groups = groups[:limit]
    for group, label in zip(groups, group_labels(groups, by)):
        group["label"] = label
    by_id = {row["id"]: row for row in rows}
    data.groups = groups
    data.runs = [[by_id[run_id] for run_id in g["run_ids"]] for g in groups]
    present = [c for c in ITERATION_METRICS if c in table_columns(conn, "iterations")]
    ids = [run_id for g in groups for run_id in g["run_ids"]]
    select = ", ".join(["run_id", "iteration", *(f'"{c}"' for c in present)])
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        marks = ", ".join("?" for _ in chunk)
        cursor = conn.execute(
            f"select {select} from iterations where run_id in ({marks}) order by run_id, iteration",
            chunk,
        )
        names = [d[0] for d in cursor.description]
        for row in cursor:
            item = dict(zip(names, row))
            data.iterations.setdefault(item["run_id"], []).append(item)
    return data


def per_iteration(
    runs: Sequence[Mapping[str, Any]], iterations: Mapping[str, list[dict[str, Any]]], metric: str
) -> tuple[list[int], list[float], list[float], list[float]]:
    """(iterations, mean, std, mean cumulative labels) of ``metric`` over a group's runs."""
    import numpy as np

    values: dict[int, list[float]] = {}
    labels: dict[int, list[float]] = {}
    for run in runs:
        spent = 0.0
        for row in iterations.get(run["id"], []):
            spent += row.get("labels") or 0
            if row.get(metric) is not None:
                values.setdefault(row["iteration"], []).append(float(row[metric]))
                labels.setdefault(row["iteration"], []).append(spent)
    steps = sorted(values)
    mean = [float(np.mean(values[k])) for k in steps]
    std = [float(np.std(values[k], ddof=1)) if len(values[k]) > 1 else 0.0 for k in steps]
    cumulative = [float(np.mean(labels[k])) for k in steps]
    return steps, mean, std, cumulative


def palette(n: int) -> list[Any]:
    """``n`` distinct line colours (tab10, or tab20 past ten)."""
    import matplotlib

    cmap = matplotlib.colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def _legend_columns(labels: Sequence[str], width_inches: float) -> int:
    """As many legend columns as fit the figure's width (about 0.075 in per character at 9 pt)."""
    longest = max((len(label) for label in labels), default=1)
    fit = int(width_inches // (0.075 * longest + 0.7))
    return max(1, min(len(labels), fit, 4))


def figure_legend(fig: Any, handles: list[Any], labels: list[str]) -> None:
    """One legend under the figure's axes, in as many columns as fit."""
    columns = _legend_columns(labels, fig.get_figwidth())
    fig.legend(handles, labels, loc="outside lower center", ncols=columns, frameon=False, fontsize=9)


def write_figures(data: PlotData, out_dir: Path, *, dpi: int = 120) -> list[Path]:
    """Draw the three figures of ``data`` into ``out_dir`` (created); return their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    colors = palette(len(data.groups))
    labels = [f"{g['label']} (n={g['seeds']})" for g in data.groups]
    handles = [Line2D([], [], color=c, marker="o", linewidth=2) for c in colors]
    n_groups = len(data.groups)

    def extra(width: float) -> float:  # height for the legend under the axes
        return 0.22 * -(-n_groups // _legend_columns(labels, width)) + 0.3

    paths = []

    # (a) win rate against cumulative labels
    fig, ax = plt.subplots(figsize=(8, 5 + extra(8)), layout="constrained")
    for group, runs, color in zip(data.groups, data.runs, colors):
        steps, mean, std, spent = per_iteration(runs, data.iterations, "win_rate")
        if steps:
            lo = [m - s for m, s in zip(mean, std)]
            hi = [m + s for m, s in zip(mean, std)]
            ax.plot(spent, mean, marker="o", color=color, linewidth=2)
            ax.fill_between(spent, lo, hi, color=color, alpha=0.18, linewidth=0)
        elif group.get("final_win_rate_mean") is not None:
            ax.errorbar(
                group.get("labels_used_mean") or 0, group["final_win_rate_mean"],
                yerr=group.get("final_win_rate_std") or 0, marker="o", color=color, capsize=4,
            )
    ax.set_xlabel("gold labels used (cumulative; 0 = π₀)")
    ax.set_ylabel("win rate vs reference outputs")
    ax.set_title("Win rate against labels used (mean ± std over seeds)")
    ax.grid(alpha=0.3)
    figure_legend(fig, handles, labels)
    paths.append(out_dir / FIGURES[0])
    fig.savefig(paths[-1], dpi=dpi)
    plt.close(fig)

    # (b) per-iteration curves, one panel per metric
    panels = (("win_rate", "win rate"), ("gold_reward", "gold reward"), ("kl", "KL(π ‖ π_ref)"))
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.2 + extra(13)), layout="constrained")
    for ax, (metric, title) in zip(axes, panels):
        drawn = False
        for runs, color in zip(data.runs, colors):
            steps, mean, std, _ = per_iteration(runs, data.iterations, metric)
            if not steps:
                continue
            drawn = True
            ax.plot(steps, mean, marker="o", color=color, linewidth=2)
            ax.fill_between(
                steps, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)],
                color=color, alpha=0.18, linewidth=0,
            )
        if not drawn:
            ax.text(0.5, 0.5, f"no per-iteration {metric}", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(title)
        ax.set_xlabel("iteration (0 = π₀)")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
    fig.suptitle("Per-iteration metrics (mean ± std over seeds)")
    figure_legend(fig, handles, labels)
    paths.append(out_dir / FIGURES[1])
    fig.savefig(paths[-1], dpi=dpi)
    plt.close(fig)

    # (c) frontier: gold reward against KL
    fig, ax = plt.subplots(figsize=(8, 5.5 + extra(8)), layout="constrained")
    drawn = False
    for group, runs, color in zip(data.groups, data.runs, colors):
        points = [(r["final_kl"], r["final_gold_reward"]) for r in runs
                  if r.get("final_kl") is not None and r.get("final_gold_reward") is not None]
        _, gold, _, _ = per_iteration(runs, data.iterations, "gold_reward")
        _, kl, _, _ = per_iteration(runs, data.iterations, "kl")
        if len(gold) == len(kl) and len(gold) > 1:
            ax.plot(kl, gold, color=color, linewidth=1, alpha=0.6, linestyle="--")
            ax.plot(kl[0], gold[0], color=color, marker="x", markersize=6, alpha=0.8)
        if points:
            drawn = True
            ax.scatter([p[0] for p in points], [p[1] for p in points], color=color, alpha=0.6, s=22,
                       edgecolors="none")
            ax.errorbar(
                group["final_kl_mean"], group["final_gold_reward_mean"],
                xerr=group.get("final_kl_std") or 0, yerr=group.get("final_gold_reward_std") or 0,
                marker="D", markersize=8, color=color, markeredgecolor="black", capsize=3, linewidth=1.2,
            )
    if not drawn:
        ax.text(0.5, 0.5, "no run has both final KL and final gold reward",
                ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("KL(π ‖ π_ref)")
    ax.set_ylabel("gold reward")
    ax.set_title(
        "Gold reward against KL (up and left is better)\n"
        "dots: final policy of each run · ◆: mean ± std over seeds · dashed: mean path over iterations from π₀ (×)",
        fontsize=10,
    )
    ax.grid(alpha=0.3)
    figure_legend(fig, handles, labels)
    paths.append(out_dir / FIGURES[2])
    fig.savefig(paths[-1], dpi=dpi)
    plt.close(fig)
    return paths
