"""The browsing charts: the PNG figures of :mod:`leaderboard.plots`, drawn in memory.

Both ``harness leaderboard serve`` (a route per figure) and ``harness leaderboard publish``
(files under ``plots/``) show what ``harness leaderboard plot`` draws for the finished runs,
grouped by strategy, the best :data:`LIMIT` by mean final win rate: win rate against the
labels spent, the per-iteration curves, and gold reward against KL.
"""

from __future__ import annotations

import sqlite3
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["CHARTS", "Charts", "draw"]

LIMIT = 10

#: file name -> (title, what it shows), in the order pages show them.
CHARTS: dict[str, tuple[str, str]] = {
    "win_rate_vs_labels.png": (
        "Win rate against labels spent",
        "Each strategy's win rate against the cumulative gold labels it bought (mean over seeds, ± std band).",
    ),
    "frontier.png": (
        "Gold reward against KL",
        "Each run's final policy (dots), each strategy's mean ± std (diamonds) and mean path from pi_0: "
        "up and to the left is better.",
    ),
    "curves.png": (
        "Per-iteration curves",
        "Win rate, gold reward and KL(pi ‖ pi_ref) per iteration, mean ± std over seeds.",
    ),
}


@dataclass
class Charts:
    """The PNG bytes of each figure (empty when there is nothing to draw) and the notes on what is left out."""

    images: dict[str, bytes] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def draw(conn: sqlite3.Connection, *, dpi: int = 100) -> Charts:
    """Draw the figures of the finished runs in ``conn`` (imports matplotlib)."""
    from leaderboard.plots import FIGURES, collect, write_figures
    from leaderboard.query import STRATEGY_FIELDS, Filters

    data = collect(conn, Filters("finished", None, None, None, None), STRATEGY_FIELDS, limit=LIMIT)
    charts = Charts(notes=list(data.notes))
    if not data.groups:
        charts.notes.append("no finished runs yet: nothing to draw")
        return charts
    with tempfile.TemporaryDirectory(prefix="pairsel-charts-") as folder:
        for path in write_figures(data, Path(folder), dpi=dpi):
            charts.images[path.name] = path.read_bytes()
    missing = set(CHARTS) - set(FIGURES)
    assert not missing, f"charts not drawn by leaderboard.plots: {missing}"
    return charts
