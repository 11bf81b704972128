"""The datasette plugin behind ``harness leaderboard serve``: SQL functions, charts, and what must not leak.

Registered once per process by :func:`leaderboard.serve.build_datasette`; every hook acts only on
a :class:`datasette.app.Datasette` that build_datasette made (it carries a :class:`BrowseState`),
so another datasette in the same process is left alone. The hooks:

* ``prepare_connection``: adds ``pairsel_compare`` and ``pairsel_stdev``
  (:mod:`leaderboard.sql_functions`) to the leaderboard's connections, for the canned queries;
* ``register_routes``: ``/-/pairsel/charts`` (a page of the figures) and
  ``/-/pairsel/NAME.png`` (the figures of :mod:`leaderboard.charts`, drawn on first request and
  again when the file changes); ``/-/databases`` without the database's absolute path; and
  ``/-/threads``, whose task list names source files, answered 404;
* ``permission_allowed``: refuses every writing action, whatever other plugins add;
* ``menu_links``: a link to the charts.
"""

from __future__ import annotations

import asyncio
import html
import sqlite3
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datasette import hookimpl
from datasette.utils.asgi import Response

from leaderboard.charts import CHARTS
from leaderboard.views import DATABASE_NAME

PLUGIN_NAME = "pairsel-leaderboard"
CHARTS_PATH = "/-/pairsel/charts"
WRITE_ACTIONS = frozenset({
    "insert-row", "delete-row", "update-row", "create-table", "alter-table", "drop-table",
    "upsert-row", "set-column-type",
})


@dataclass
class BrowseState:
    """What the plugin knows of the database it serves, and the charts drawn for it."""

    path: Path
    lock: threading.Lock = field(default_factory=threading.Lock)
    drawn_for: tuple | None = None
    images: dict[str, bytes] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def file_signature(self) -> tuple:
        """Size and modification time of the file and its WAL: changes when a run is written."""
        parts = []
        for candidate in (self.path, self.path.with_name(self.path.name + "-wal")):
            try:
                stat = candidate.stat()
                parts.append((stat.st_size, stat.st_mtime_ns))
            except FileNotFoundError:
                parts.append(None)
        return tuple(parts)

    def charts(self) -> tuple[dict[str, bytes], list[str]]:
        """The figures of the database as it is now (redrawn only when the file changed)."""
        from leaderboard.charts import draw

        with self.lock:
            signature = self.file_signature()
            if signature != self.drawn_for:
                conn = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True)
                try:
                    drawn = draw(conn)
                finally:
                    conn.close()
                self.images, self.notes, self.drawn_for = drawn.images, drawn.notes, signature
            return self.images, self.notes


def state_of(datasette: Any) -> BrowseState | None:
    """The plugin's state on a datasette that :func:`leaderboard.serve.build_datasette` made, else None."""
    return getattr(datasette, "pairsel_state", None)


@hookimpl
def prepare_connection(conn, database, datasette):
    if state_of(datasette) is not None and database == DATABASE_NAME:
        from leaderboard.sql_functions import register

        register(conn)


@hookimpl
def render_cell(value, database, datasette):
    """Floats at 4 significant digits in the HTML pages; the JSON and CSV downloads keep every digit."""
    if state_of(datasette) is not None and database == DATABASE_NAME and isinstance(value, float):
        from leaderboard.site_html import cell_text  # the published pages' rule, so both read alike

        return cell_text(value)
    return None


@hookimpl
def permission_allowed(datasette, actor, action, resource):
    if state_of(datasette) is not None and action in WRITE_ACTIONS:
        return False
    return None


@hookimpl
def menu_links(datasette, actor, request):
    if state_of(datasette) is None:
        return None
    return [{"href": datasette.urls.path(CHARTS_PATH), "label": "Leaderboard charts"}]


@hookimpl
def register_routes(datasette):
    if state_of(datasette) is None:
        return []
    names = "|".join(name.removesuffix(".png") for name in CHARTS)
    return [
        (r"^/-/pairsel/charts$", charts_page),
        (rf"^/-/pairsel/(?P<name>{names})\.png$", chart_image),
        (r"^/-/databases(\.(?P<format>json))?$", databases_without_paths),
        (r"^/-/threads(\.(?P<format>json))?$", not_served),
    ]


async def _charts(datasette) -> tuple[dict[str, bytes], list[str]]:
    return await asyncio.get_running_loop().run_in_executor(None, state_of(datasette).charts)


async def chart_image(request, datasette):
    images, notes = await _charts(datasette)
    name = request.url_vars["name"] + ".png"
    if name not in images:
        return Response.text("; ".join(notes) or "no chart", status=404)
    return Response(images[name], content_type="image/png", headers={"Cache-Control": "no-cache"})


async def charts_page(request, datasette):
    images, notes = await _charts(datasette)
    from harness import __version__

    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>Leaderboard charts</title>",
        "<link rel='stylesheet' href='", html.escape(datasette.urls.static("app.css")), "'></head>",
        "<body><section class='content'>",
        f"<p><a href='{html.escape(datasette.urls.instance())}'>home</a></p>",
        "<h1>Leaderboard charts</h1>",
        "<p>The finished runs, grouped by strategy (what <code>harness leaderboard plot</code> draws).</p>",
    ]
    for note in notes:
        parts.append(f"<p class='note'>{html.escape(note)}</p>")
    for name, (title, description) in CHARTS.items():
        if name not in images:
            continue
        source = html.escape(datasette.urls.path(f"/-/pairsel/{name}"))
        parts += [f"<h2>{html.escape(title)}</h2><p>{html.escape(description)}</p>",
                  f"<img src='{source}' alt='{html.escape(title)}' style='max-width:100%'>"]
    parts.append(f"<p><small>pairsel-harness {html.escape(__version__)}</small></p></section></body></html>")
    return Response.html("".join(parts))


async def databases_without_paths(request, datasette):
    listed = [
        {"name": db.name, "route": db.route, "read_only": True, "is_memory": db.is_memory}
        for name, db in datasette.databases.items() if name != "_internal"
    ]
    return Response.json(listed)


async def not_served(request, datasette):
    return Response.text("not served by harness leaderboard serve", status=404)
