"""Showing leaderboard runs: a rich table for people, JSON for scripts.

Both take the run dicts that :meth:`leaderboard.store.Leaderboard.runs`
returns, already in rank order (best final win rate first).
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from harness.reference_point import NOTE, recorded_deployable
from harness.table_fit import Column, cut_words, fit_table, print_fitted, widened

CAPTION = (
    "ranked by final win rate vs the testbed's reference outputs; "
    "± is the standard error of one run's win rate, not seed-to-seed spread"
)

_STATUS_STYLE = {
    "finished": "green",
    "running": "yellow",
    "failed": "red",
    "interrupted": "magenta",
}

_MISSING = "—"


def selector_label(run: Mapping[str, Any]) -> str:
    """``smallest`` when both levels use one selector, else ``instance/corpus``; † when not deployable."""
    from leaderboard.query import selector_label as label

    return label(run)


def delta_win_rate(run: Mapping[str, Any]) -> float | None:
    """Final minus initial (pi_0) win rate, or None when either is missing."""
    final, initial = run.get("final_win_rate"), run.get("initial_win_rate")
    if final is None or initial is None:
        return None
    return final - initial


def format_wall(seconds: float | None) -> str:
    """``16.2s``, ``3m12s``, ``1h05m``."""
    if seconds is None:
        return _MISSING
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def format_time(iso: str | None) -> str:
    """An ISO 8601 UTC timestamp as ``2025-06-01 14:03``."""
    if not iso:
        return _MISSING
    try:
        moment = datetime.datetime.fromisoformat(iso)
    except ValueError:
        return iso
    if moment.tzinfo is not None:
        moment = moment.astimezone(datetime.timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M")


def _number(value: float | None, digits: int) -> str:
    return _MISSING if value is None else f"{value:.{digits}f}"


def _count(value: int | float | None) -> str:
    return _MISSING if value is None else f"{int(value):,}"


def ranked(runs: Iterable[Mapping[str, Any]]) -> list[tuple[int | None, Mapping[str, Any]]]:
    """Pair each run with its rank: 1, 2, ... over finished runs in the given order, None otherwise."""
    out, rank = [], 0
    for run in runs:
        if run.get("status", "finished") == "finished":
            rank += 1
            out.append((rank, run))
        else:
            out.append((None, run))
    return out


def _columns(runs: Sequence[Mapping[str, Any]], show_status: bool) -> list[Column]:
    """The run table's columns, each with how it gives way as the terminal narrows (see harness.table_fit):
    run id and selector are names never cut; the win rate is never dropped; the rest go lowest priority first,
    after shared values (testbed, trainer, ...) have moved into the title."""
    rows = ranked(runs)
    win_cells, delta_cells = [], []
    for rank, run in rows:
        win_rate = run.get("final_win_rate")
        if win_rate is None:
            win_cells.append(Text(_MISSING))
        else:
            se = run.get("final_win_rate_se")
            cell = Text(f"{win_rate:.3f}", style="bold" if rank == 1 else "")
            cell.append(f" ± {se:.3f}" if se is not None else " ± ?", style="dim")
            win_cells.append(cell)
        delta = delta_win_rate(run)
        if delta is None:
            delta_cells.append(Text(_MISSING))
        else:
            style = "green" if delta > 0 else "red" if delta < 0 else ""
            delta_cells.append(Text(f"{delta:+.3f}", style=style))
    runs_ = [run for _, run in rows]
    finished = [format_time(run.get("finished_at")) for run in runs_]
    columns = [
        Column("#", [_MISSING if rank is None else str(rank) for rank, _ in rows], required=True),
        Column("run", [run.get("id") or "?" for run in runs_], kind="key", required=True),
    ]
    if show_status:
        statuses = [run.get("status", "finished") for run in runs_]
        columns.append(Column("status", [Text(st, style=_STATUS_STYLE.get(st, "")) for st in statuses],
                              justify="left", priority=9))
    columns += [
        Column("selector", [selector_label(run) for run in runs_], kind="key", required=True),
        Column("allocator", [run.get("allocator") or _MISSING for run in runs_], kind="key", priority=7, hoist=True),
        Column("testbed", [run.get("testbed") or _MISSING for run in runs_], kind="key", priority=3, hoist=True),
        Column("trainer", [run.get("trainer") or _MISSING for run in runs_], kind="key", priority=2, hoist=True),
        Column("seed", [_count(run.get("seed")) for run in runs_], priority=6),
        Column("iter", [_count(run.get("iterations")) for run in runs_], priority=3, hoist=True),
        Column("labels", [_count(run.get("labels_used")) for run in runs_], priority=4, hoist=True),
        *([Column("proxy calls", [_count(run.get("proxy_calls")) for run in runs_], priority=2)]
          if any(run.get("proxy_calls") for run in runs_) else []),
        Column("win rate ± se", win_cells, required=True),
        Column("Δ vs π₀", delta_cells, priority=8),
        Column("gold", [_number(run.get("final_gold_reward"), 3) for run in runs_], priority=5),
        Column("KL", [_number(run.get("final_kl"), 2) for run in runs_], priority=5),
        Column("wall", [format_wall(run.get("wall_seconds")) for run in runs_], priority=1),
        Column("finished (UTC)", finished, justify="left", priority=0,
               narrow=("finished", [cell[:10] if cell != _MISSING else cell for cell in finished])),
    ]
    return columns


def build_table(
    runs: Sequence[Mapping[str, Any]],
    *,
    show_status: bool = False,
    width: int | None = None,
    caption: str | None = None,
    wide: bool = False,
) -> Table:
    """The leaderboard as a rich Table, one row per run in the given order, fitted to ``width`` (the console's;
    see :func:`harness.table_fit.fit_table`); ``wide``: every column."""
    return fit_table(_columns(runs, show_status), width, wide=wide, caption=caption or CAPTION).table


def _print_table(console: Console, columns: list[Column], caption: str | None, *, wide: bool = False,
                 sections: Sequence[int] = ()) -> None:
    print_fitted(console, columns, wide=wide, caption=caption, sections=sections, title_style="")



def notes(runs: Sequence[Mapping[str, Any]]) -> list[str]:
    """Warnings the table alone would hide."""
    out = []
    finished = [run for run in runs if run.get("status", "finished") == "finished"]
    testbeds = sorted({str(run.get("testbed")) for run in finished})
    if len(testbeds) > 1:
        out.append(
            f"rows from {len(testbeds)} testbeds ({', '.join(testbeds)}): win rates are only "
            "comparable within one testbed; filter with --testbed NAME"
        )
    if not all(recorded_deployable(run) for run in runs):
        out.append(NOTE)
    synthetic = {run.get("allocator") for run in finished if run.get("testbed") == "synthetic"}
    if len(synthetic) > 1:
        out.append(
            "budget schedules (allocators) can differ by less than seed noise: compare them paired by seed "
            "(harness leaderboard compare) with the detectable difference in view before reading their "
            "order as an effect; measured schedule verdicts are in docs/reproduction.md"
        )
    return out


def print_leaderboard(
    runs: Sequence[Mapping[str, Any]],
    console: Console,
    *,
    show_status: bool = False,
    title: str | None = None,
    caption: str | None = None,
    wide: bool = False,
) -> None:
    """Print the table (fitted to the console unless ``wide``, then which columns it left out) and its notes."""
    if title:
        console.print(title, style="bold")
    _print_table(console, _columns(runs, show_status), caption or CAPTION, wide=wide)
    for line in notes(runs):
        console.print(f"note: {line}", style="dim", soft_wrap=False)


def to_json_list(runs: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The runs as plain dicts for ``--json``: every stored column, config parsed, plus ``rank``."""
    out = []
    for rank, run in ranked(runs):
        item = {"rank": rank, **run}
        item["delta_win_rate"] = delta_win_rate(run)
        out.append(item)
    return out


def to_json(runs: Iterable[Mapping[str, Any]], *, indent: int | None = 2) -> str:
    """``to_json_list`` as JSON text."""
    return json.dumps(to_json_list(runs), indent=indent, ensure_ascii=False)


# -- strategy groups ------------------------------------------------------------

GROUP_CAPTION = (
    "one row per strategy, ranked by mean final win rate; ± is the std over seeds "
    "(seed-to-seed spread, about 0.05 win rate on the synthetic testbed, as large as most effects): "
    "compare strategies with paired differences, `harness leaderboard compare --baseline random`"
)


def group_caption(
    by: Sequence[str], sort: str | None = None, descending: bool = True, numeric: bool = True
) -> str:
    """The grouped table's caption: what a row is, its order, what ± means."""
    from leaderboard.query import STRATEGY_FIELDS

    what = "strategy" if tuple(by) == STRATEGY_FIELDS else f"group of runs ({', '.join(by)})"
    if sort is None and descending:
        order = "ranked by mean final win rate"
    elif numeric:
        order = f"sorted by {sort or 'final_win_rate'}, {'high' if descending else 'low'} first"
    else:
        order = f"sorted by {sort}, {'Z-A' if descending else 'A-Z'}"
    return GROUP_CAPTION.replace("one row per strategy, ranked by mean final win rate",
                                 f"one row per {what}, {order}")

#: Digits shown per metric (default 3).
METRIC_DIGITS = {"final_kl": 2, "kl": 2, "labels_used": 0, "wall_seconds": 1}
#: Short headers for metrics.
METRIC_HEADERS = {
    "final_win_rate": "win rate",
    "final_gold_reward": "gold",
    "final_kl": "KL",
    "labels_used": "labels",
    "initial_win_rate": "π₀ win rate",
    "delta_win_rate": "Δ vs π₀",
    "wall_seconds": "wall s",
}


def _mean_pm_std(mean: float | None, std: float | None, digits: int, bold: bool = False) -> Text:
    if mean is None:
        return Text(_MISSING)
    cell = Text(f"{mean:.{digits}f}", style="bold" if bold else "")
    cell.append(f" ± {std:.{digits}f}" if std is not None else " ± —", style="dim")
    return cell


#: How long a naming field stays as the terminal narrows, when a config column already tells rows apart.
_KEY_PRIORITY = {"allocator": 7, "testbed": 4, "trainer": 3}


def key_columns(rows: Sequence[Mapping[str, Any]], by: Sequence[str]) -> list[Column]:
    """The columns that name a group (or a strategy): selector, allocator, ..., config, settings.

    Names are never cut. With a config column (the config hash's start, which tells strategies apart) the
    fields other than the selector may be dropped or moved into the title; without one, every field of ``by``
    stays. ``settings`` is cut (at a word boundary), then dropped, before any name folds.
    """
    identified = "config_hash" in by
    columns: list[Column] = []
    if "instance_selector" in by and "corpus_selector" in by:
        columns.append(Column("selector", [selector_label(r) for r in rows], kind="key", required=True))
    for field in by:
        if field in ("instance_selector", "corpus_selector") and any(c.header == "selector" for c in columns):
            continue
        if field == "config_hash":
            columns.append(Column("config", [str(r.get(field) or _MISSING)[:8] for r in rows], kind="key",
                                  required=True))
            continue
        kind = "key" if all(isinstance(r.get(field), (str, type(None))) for r in rows) else "num"
        cells = ["—" if r.get(field) is None else str(r.get(field)) for r in rows]
        if identified and field not in ("instance_selector", "corpus_selector"):
            columns.append(Column(field, cells, kind=kind, priority=_KEY_PRIORITY.get(field, 5), hoist=True))
        else:
            columns.append(Column(field, cells, kind=kind, required=True))
    if any(r.get("settings") for r in rows):
        columns.append(Column("settings", [r.get("settings") or "" for r in rows], kind="text", priority=2,
                              floor=16))
    return columns


def group_table_columns(groups: Sequence[Mapping[str, Any]], by: Sequence[str]) -> list[Column]:
    """The grouped table's columns: rank, the names, seeds, the metrics' mean ± std, labels, gain per label."""
    columns = [Column("#", [str(rank) for rank in range(1, len(groups) + 1)], required=True)]
    columns += key_columns(groups, by)
    columns.append(Column("seeds", [str(g["seeds"]) for g in groups], priority=8, hoist=True))
    if any(g["runs"] != g["seeds"] for g in groups):
        columns.append(Column("runs", [str(g["runs"]) for g in groups], priority=2, hoist=True))
    for metric, header, priority in (
        ("final_win_rate", "win rate ± std", None),
        ("final_gold_reward", "gold ± std", 6),
        ("final_kl", "KL ± std", 6),
    ):
        digits = METRIC_DIGITS.get(metric, 3)
        columns.append(Column(header, [
            _mean_pm_std(g.get(f"{metric}_mean"), g.get(f"{metric}_std"), digits,
                         bold=(metric == "final_win_rate" and i == 0))
            for i, g in enumerate(groups)
        ], required=priority is None, priority=priority or 0))
    columns.append(Column("labels", [
        _MISSING if g.get("labels_used_mean") is None else f"{g['labels_used_mean']:,.0f}"
        for g in groups
    ], priority=4, hoist=True))
    if any(g.get("proxy_calls_mean") for g in groups):
        columns.append(Column("proxy calls", [
            _MISSING if g.get("proxy_calls_mean") is None else f"{g['proxy_calls_mean']:,.0f}" for g in groups
        ], priority=1))
    columns.append(Column("gain/1k labels", [
        _number(g.get("win_gain_per_1k_labels_mean"), 3) for g in groups
    ], priority=1))
    return columns


def build_group_table(
    groups: Sequence[Mapping[str, Any]],
    by: Sequence[str],
    *,
    width: int | None = None,
    caption: str | None = None,
    wide: bool = False,
) -> Table:
    """The grouped leaderboard as a rich Table, one row per group in the given order, fitted to ``width``."""
    return fit_table(group_table_columns(groups, by), width, wide=wide, caption=caption or group_caption(by),
                     title_style="").table


def group_notes(groups: Sequence[Mapping[str, Any]]) -> list[str]:
    """Warnings for the grouped table: mixed testbeds, allocators, single seeds, reruns."""
    out = notes([{"status": "finished", **g} for g in groups if g.get("testbed") is not None])
    single = sum(1 for g in groups if g["seeds"] < 2)
    if single:
        out.append(
            f"{single} group(s) ran on a single seed: no spread to show; run more seeds "
            "(the built-in studies use >= 10)"
        )
    reruns = sum(1 for g in groups if g["runs"] > g["seeds"])
    if reruns:
        out.append(f"{reruns} group(s) ran a (seed, world_seed) more than once: runs > seeds")
    return out


def print_groups(
    groups: Sequence[Mapping[str, Any]],
    by: Sequence[str],
    console: Console,
    *,
    title: str | None = None,
    caption: str | None = None,
    extra_notes: Sequence[str] = (),
    wide: bool = False,
) -> None:
    if title:
        console.print(title, style="bold")
    _print_table(console, group_table_columns(groups, by), caption or group_caption(by), wide=wide)
    for line in [*group_notes(groups), *extra_notes]:
        console.print(f"note: {line}", style="dim")


def groups_to_json_list(groups: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Groups as plain dicts for ``--json``/``--csv``: ``rank`` first, private keys dropped."""
    return [
        {"rank": rank, **{k: v for k, v in g.items() if not k.startswith("_")}}
        for rank, g in enumerate(groups, start=1)
    ]


# -- compare ------------------------------------------------------------------


def compare_columns(result: Mapping[str, Any]) -> list[Column]:
    """compare's columns: the strategy's names, its runs and mean ± std, then the paired difference (pairs,
    Δ mean ± std, the interval and whether it excludes 0), which stay longest."""
    rows = result["rows"]
    metric = result["metric"]
    digits = METRIC_DIGITS.get(metric, 3)
    level = f"{round(result['confidence'] * 100, 1):g}% CI"
    from leaderboard.query import STRATEGY_FIELDS

    columns = key_columns(rows, STRATEGY_FIELDS)
    columns.append(Column("runs", [str(r["runs"]) for r in rows], priority=1, hoist=True))
    columns.append(Column(f"{METRIC_HEADERS.get(metric, metric)} ± std", [
        _mean_pm_std(r.get("group_mean"), r.get("group_std"), digits) for r in rows
    ], priority=5))
    pairs, deltas, intervals, verdicts = [], [], [], []
    for r in rows:
        if r["is_baseline"]:
            pairs.append("")
            deltas.append(Text("baseline", style="bold"))
            intervals.append("")
            verdicts.append("")
            continue
        pairs.append(str(r["n"]) if r["n"] else _MISSING)
        if r["mean"] is None:
            deltas.append(Text(_MISSING))
        else:
            cell = Text(f"{r['mean']:+.{digits}f}")
            cell.append(f" ± {r['std']:.{digits}f}" if r["std"] is not None else " ± —", style="dim")
            deltas.append(cell)
        if r["ci_low"] is None:
            intervals.append(_MISSING)
            verdicts.append(Text(_MISSING))
        else:
            intervals.append(f"[{r['ci_low']:+.{digits}f}, {r['ci_high']:+.{digits}f}]")
            if r["excludes_zero"]:
                verdicts.append(Text("yes", style="green" if r["mean"] > 0 else "red"))
            else:
                verdicts.append(Text("no", style="dim"))
    columns += [
        Column("pairs", pairs, priority=6),
        Column("Δ mean ± std", deltas, required=True),
        Column(level, intervals, required=True),
        Column("excludes 0", verdicts, priority=8),
    ]
    if any(r.get("reference_share") is not None for r in rows):  # a block holds a reference point (notes say whose)
        columns.append(Column("share of †", [
            "" if r.get("reference_share") is None else f"{r['reference_share']:.2f}" for r in rows
        ], priority=7))
    return columns


def compare_caption(result: Mapping[str, Any]) -> str:
    return (
        f"Δ = {result['metric']} minus the baseline's on the same (seed, world_seed), "
        "mean ± std over the pairs, with a t-interval of the mean; each block is one baseline "
        "group (the row marked baseline) and the groups compared with it"
    )


def print_compare(result: Mapping[str, Any], console: Console, *, title: str | None = None,
                  wide: bool = False) -> None:
    rows = result["rows"]
    if title:
        console.print(title, style="bold")
    sections = [i for i, r in enumerate(rows) if r["is_baseline"] or (
        i > 0 and r["baseline_config_hash"] is None and rows[i - 1]["baseline_config_hash"] is not None
    )]
    _print_table(console, compare_columns(result), compare_caption(result), wide=wide, sections=sections)
    extra = [NOTE] if not all(recorded_deployable(r) for r in rows) else []
    for line in [*extra, *result.get("notes", ())]:
        console.print(f"note: {line}", style="dim")


# -- one run ----------------------------------------------------------------------

_SETUP_KEYS = (
    "status", "testbed", "instance_selector", "corpus_selector", "allocator", "trainer",
    "scorer_columns", "seed", "world_seed", "iterations", "budget", "keep", "n_responses",
    "config_hash", "started_at", "finished_at",
)
_PROVENANCE_KEYS = ("git_commit", "harness_version", "command")
_FINAL_KEYS = (
    "initial_win_rate", "final_win_rate", "final_win_rate_se", "final_gold_reward", "final_kl",
    "labels_used", "proxy_calls", "win_gain_per_1k_labels", "wall_seconds", "model_seconds", "overhead_share",
)
_HIDDEN_KEYS = {"id", "config", "plugins", "versions", "error"}

#: Per-iteration metrics in sections, with what each means (shown beside the numbers).
ITERATION_SECTIONS: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    ("evaluation", (
        ("win_rate", "win rate vs the reference outputs (ties ½)"),
        ("win_rate_se", "its standard error"),
        ("gold_reward", "mean gold reward of the policy's samples"),
        ("kl", "KL(π_i ‖ π_ref) of the trained policy"),
        ("kl_se", "its standard error"),
        ("mean_length", "mean response length (tokens)"),
        ("greedy_win_rate", "win rate of greedy decoding"),
        ("reference_gold_reward", "gold reward of the reference outputs"),
    )),
    ("budget", (
        ("labels", "gold labels bought"),
        ("labels_planned", "labels the allocator planned"),
        ("prompts", "prompts drawn"),
        ("instance_pairs", "pairs after instance-level selection"),
        ("duplicate_share", "share of duplicate responses"),
    )),
    ("selected pairs", (
        ("sel_pairs", "pairs trained on (kept and labelled, ties and an allocator's held-out pairs left out)"),
        ("sel_mean_abs_margin", "mean |implicit margin|"),
        ("sel_beta_margin_q10", "β·Δ of the labelled pairs, 10% quantile"),
        ("sel_beta_margin_q50", "β·Δ median (≈0: DPO far from saturation)"),
        ("sel_beta_margin_q90", "β·Δ, 90% quantile"),
        ("sel_mean_dpo_weight", "mean DPO weight σ(−β·Δ)"),
        ("sel_ranking_accuracy", "π_{i-1} already agreed with the label"),
        ("sel_label_noise", "labels against the exact gold order"),
        ("sel_selected_kl", "selected-data KL: log π_{i-1} − log π_ref"),
    )),
    ("training", (
        ("train_steps", "optimiser steps"),
        ("train_epochs", "epochs"),
        ("loss_first", "DPO loss, first batch"),
        ("loss_last", "DPO loss, last batch"),
    )),
)


def _cell(value: Any) -> str:
    if value is None:
        return _MISSING
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


def config_lines(config: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The config in ``-o`` style, one (name, settings) per component, seeds left out.

    ``("trainer native", "beta=1.0 lr=0.003 ...")``; the plain keys come last
    as ``("run", "iterations=3 budget=3000 ...")``.
    """
    from leaderboard.query import format_setting

    lines, plain = [], []
    for key, value in config.items():
        if isinstance(value, Mapping) and "name" in value and isinstance(value.get("settings"), Mapping):
            role = {"instance_selector": "instance", "corpus_selector": "corpus"}.get(key, key)
            settings = " ".join(f"{k}={format_setting(v)}" for k, v in value["settings"].items())
            lines.append((f"{role} {value['name']}", settings))
        elif key not in ("seed", "world_seed"):
            plain.append(f"{key}={format_setting(value)}")
    if plain:
        lines.append(("run", " ".join(plain)))
    return lines


def print_run(run: Mapping[str, Any], iterations: Sequence[Mapping[str, Any]], console: Console, *,
              wide: bool = False) -> None:
    """One run: setup, final metrics, provenance, config, then one column per iteration (``wide``: with every
    metric's meaning whole, however wide that makes it)."""

    def facts_table(title: str) -> Table:
        table = Table(box=None, show_header=False, pad_edge=False, title=title,
                      title_justify="left", title_style="bold")
        table.add_column(style="dim", no_wrap=True, min_width=18)
        table.add_column(overflow="fold")
        return table

    status = run.get("status") or "?"
    head = Text(f"run {run['id']}", style="bold")
    head.append(f"  {selector_label(run)} · {run.get('allocator')} · {run.get('testbed')} · "
                f"{run.get('trainer')} · seed {run.get('seed')} (world {run.get('world_seed')}) · ")
    head.append(status, style=_STATUS_STYLE.get(status, ""))
    console.print(head)

    setup = facts_table("setup")
    for key in _SETUP_KEYS:
        if run.get(key) is not None:
            setup.add_row(key, str(run[key]))
    console.print(setup)

    final = facts_table("final metrics")
    shown = set(_SETUP_KEYS) | set(_PROVENANCE_KEYS) | _HIDDEN_KEYS
    later = [k for k in run if k not in shown and k not in _FINAL_KEYS and run[k] is not None]
    for key in (*_FINAL_KEYS, *later):
        value = run.get(key)
        if value is None:
            continue
        if key == "wall_seconds":
            final.add_row(key, format_wall(value))
        elif key == "final_win_rate" and run.get("initial_win_rate") is not None:
            final.add_row(key, f"{_cell(value)}  (Δ vs π₀ {delta_win_rate(run):+.3f})")
        else:
            final.add_row(key, _cell(value))
    if final.row_count:
        console.print(final)

    provenance = facts_table("provenance")
    for key in _PROVENANCE_KEYS:
        if run.get(key) is not None:
            provenance.add_row(key, str(run[key]))
    for role, info in (run.get("plugins") or {}).items():
        if isinstance(info, Mapping):
            where = " ".join(str(info[k]) for k in ("plugin", "version") if info.get(k))
            provenance.add_row(f"plugin {role}", f"{info.get('name', '')}  ← {where}".strip())
        else:
            provenance.add_row(f"plugin {role}", _cell(info))
    if run.get("versions"):
        provenance.add_row(
            "versions", " · ".join(f"{k} {v}" for k, v in sorted(run["versions"].items()))
        )
    if provenance.row_count:
        console.print(provenance)

    if run.get("config"):
        config = facts_table("config (-o style; seeds under setup)")
        for name, settings in config_lines(run["config"]):
            config.add_row(name, settings)
        console.print(config)

    if run.get("error"):
        console.print("error:", style="bold red")
        console.print(run["error"], markup=False, highlight=False)
    if not iterations:
        console.print("no iterations recorded", style="dim")
        return
    print_iterations(iterations, console, wide=wide)


def print_iterations(iterations: Sequence[Mapping[str, Any]], console: Console, *, wide: bool = False) -> None:
    """One row per metric (in sections), one column per iteration, and what each metric means."""
    present = [
        key for key in iterations[0]
        if key not in ("run_id", "recorded_at", "iteration")
        and any(row.get(key) is not None for row in iterations)
    ]
    for row in iterations[1:]:
        present += [k for k in row if k not in present and k not in ("run_id", "recorded_at", "iteration")
                    and row.get(k) is not None]
    sections: list[tuple[str, list[tuple[str, str]]]] = []
    placed: set[str] = set()
    for name, metrics in ITERATION_SECTIONS:
        found = [(key, meaning) for key, meaning in metrics if key in present]
        placed |= {key for key, _ in found}
        if found:
            sections.append((name, found))
    times = [(key, "seconds in this stage") for key in present if key.startswith("time_")]
    placed |= {key for key, _ in times}
    other = [(key, "") for key in present if key not in placed]
    if other:
        sections.append(("other", other))
    if times:
        sections.append(("time (s)", times))
    # The numbers and names are never cut; the meanings get what room is left.
    def build(room: int) -> Table:
        table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False,
                      title="per iteration (0 = π₀)", title_justify="left", title_style="bold")
        table.add_column("metric", no_wrap=True)
        for row in iterations:
            table.add_column(str(row["iteration"]), justify="right", no_wrap=True)
        if room:
            table.add_column("meaning", style="dim", no_wrap=True)
        for index, (name, metrics) in enumerate(sections):
            if index:
                table.add_section()
            table.add_row(Text(name, style="italic cyan"), *("" for _ in iterations), *([""] if room else []))
            for key, meaning in metrics:
                cells = [_cell(row.get(key)) for row in iterations]
                table.add_row(f"  {key}", *cells, *([cut_words(meaning, room)] if room else []))
        return table

    if wide:  # every meaning whole, the terminal wrapping what is longer than its lines
        room = max(len(meaning) for _, metrics in sections for _, meaning in metrics) or 0
        table = build(room)
        with widened(console, console.measure(table, options=console.options.update_width(10_000)).maximum):
            console.print(table)
        return
    room = console.width - console.measure(build(0)).maximum - 3
    console.print(build(room if room >= 16 else 0))
