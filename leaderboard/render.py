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
    """``smallest`` when both levels use one selector, else ``instance/corpus``."""
    instance = run.get("instance_selector") or "?"
    corpus = run.get("corpus_selector") or "?"
    return instance if instance == corpus else f"{instance}/{corpus}"


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


# Columns that may move into the line above the table when every row shares
# their value and the table is too wide for the terminal, in this order.
_HOISTABLE = ("testbed", "trainer", "iter", "labels", "allocator")


def _columns(
    runs: Sequence[Mapping[str, Any]], show_status: bool
) -> list[tuple[str, str, list[Any]]]:
    """(header, kind, cells) per column; kind is "num" (right, never cut) or "text"."""
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
    columns: list[tuple[str, str, list[Any]]] = [
        ("#", "num", [_MISSING if rank is None else str(rank) for rank, _ in rows]),
        ("run", "num", [run.get("id") or "?" for run in runs_]),
    ]
    if show_status:
        statuses = [run.get("status", "finished") for run in runs_]
        columns.append(
            ("status", "num", [Text(st, style=_STATUS_STYLE.get(st, "")) for st in statuses])
        )
    columns += [
        ("selector", "text", [selector_label(run) for run in runs_]),
        ("allocator", "text", [run.get("allocator") or _MISSING for run in runs_]),
        ("testbed", "text", [run.get("testbed") or _MISSING for run in runs_]),
        ("trainer", "text", [run.get("trainer") or _MISSING for run in runs_]),
        ("seed", "num", [_count(run.get("seed")) for run in runs_]),
        ("iter", "num", [_count(run.get("iterations")) for run in runs_]),
        ("labels", "num", [_count(run.get("labels_used")) for run in runs_]),
        ("win rate ± se", "num", win_cells),
        ("Δ vs π₀", "num", delta_cells),
        ("gold", "num", [_number(run.get("final_gold_reward"), 3) for run in runs_]),
        ("KL", "num", [_number(run.get("final_kl"), 2) for run in runs_]),
        ("wall", "num", [format_wall(run.get("wall_seconds")) for run in runs_]),
        ("finished (UTC)", "num", [format_time(run.get("finished_at")) for run in runs_]),
    ]
    return columns


def _width(header: str, cells: list[Any]) -> int:
    return max([len(header)] + [len(cell.plain if isinstance(cell, Text) else cell) for cell in cells])


def _spacious(columns: list[tuple[str, str, list[Any]]], width: int | None) -> bool:
    """Whether two spaces between columns still fit ``width``."""
    return width is None or sum(_width(h, c) + 2 for h, _, c in columns) - 2 <= width


def _fit(
    columns: list[tuple[str, str, list[Any]]], width: int | None
) -> tuple[list[tuple[str, str, list[Any]]], list[str]]:
    """Make the table fit ``width``: hoist shared values, then shorten dates.

    Returns the columns to draw and the ``name value`` facts moved above the
    table. What still does not fit is cut (with …) in the text columns only.
    """
    hoisted: list[str] = []

    def total(gap: int = 1) -> int:
        return sum(_width(h, c) + gap for h, _, c in columns) - gap

    if width is None or total() <= width:
        return columns, hoisted
    for name in _HOISTABLE:
        if total() <= width:
            break
        for index, (header, _kind, cells) in enumerate(columns):
            plain = {cell.plain if isinstance(cell, Text) else cell for cell in cells}
            if header == name and len(plain) == 1 and cells:
                hoisted.append(f"{header} {plain.pop()}")
                del columns[index]
                break
    if total() > width:
        columns = [
            (h, k, [c[:10] if isinstance(c, str) else c for c in cells])
            if h == "finished (UTC)"
            else (h, k, cells)
            for h, k, cells in columns
        ]
        columns = [("finished" if h == "finished (UTC)" else h, k, c) for h, k, c in columns]
    return columns, hoisted


def build_table(
    runs: Sequence[Mapping[str, Any]], *, show_status: bool = False, width: int | None = None
) -> Table:
    """The leaderboard as a rich Table, one row per run in the given order.

    With ``width`` (the console's), columns whose value every row shares are
    moved into the table's title when the full table would not fit.
    """
    columns, hoisted = _fit(_columns(runs, show_status), width)
    table = Table(
        title=" · ".join(hoisted) or None,
        title_justify="left",
        title_style="",
        box=box.SIMPLE_HEAD,
        caption=CAPTION,
        caption_justify="left",
        pad_edge=False,
        # The box draws one space between columns; one more of padding when it fits.
        padding=(0, 1, 0, 0) if _spacious(columns, width) else 0,
        show_edge=False,
        header_style="bold",
    )
    for header, kind, cells in columns:
        if kind == "num":
            justify = "left" if header in ("run", "status", "finished", "finished (UTC)") else "right"
            table.add_column(header, justify=justify, no_wrap=True, min_width=_width(header, cells))
        else:
            table.add_column(header, no_wrap=True, overflow="ellipsis", min_width=min(6, _width(header, cells)))
    for row in zip(*(cells for _, _, cells in columns)):
        table.add_row(*row)
    return table


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
    synthetic = {run.get("allocator") for run in finished if run.get("testbed") == "synthetic"}
    if len(synthetic) > 1:
        out.append(
            "budget schedules (allocators) were not distinguishable on the synthetic testbed "
            "in any design tried (notes/testbed-schedules.md): do not read their order here as an effect"
        )
    return out


def print_leaderboard(
    runs: Sequence[Mapping[str, Any]],
    console: Console,
    *,
    show_status: bool = False,
    title: str | None = None,
) -> None:
    """Print the table (and its notes) on ``console``."""
    if title:
        console.print(title, style="bold")
    console.print(build_table(runs, show_status=show_status, width=console.width))
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
