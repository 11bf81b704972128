"""``harness leaderboard serve``: the leaderboard as a local datasette, read-only.

:func:`build_datasette` makes the :class:`datasette.app.Datasette` (usable in-process, e.g.
with ``datasette.client`` in tests); :func:`serve` runs it under uvicorn and calls back with
the URL once the socket listens. The database is always named ``leaderboard`` (URLs do not
depend on the file name) and opened read-only (``mode=ro``: every connection datasette
reads with refuses writes, and a running sweep's new rows still show); datasette's
metadata titles and describes every table and column from the declarations behind
docs/leaderboard/schema.md, and each view of :mod:`leaderboard.views` is a canned query.
The plugin :mod:`leaderboard.datasette_plugin` adds the SQL functions, the charts and hides
the file's path.

Imports datasette and uvicorn only inside the functions (the ``browse`` extra).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["LOCAL_HOSTS", "build_datasette", "datasette_metadata", "serve", "url_for"]

LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
TITLE = "pairsel-harness leaderboard"
#: datasette settings: no database download (every table has its CSV and JSON), room for compare's SQL.
SETTINGS = {"allow_download": False, "sql_time_limit_ms": 30_000, "default_page_size": 100}


def datasette_metadata() -> dict[str, Any]:
    """datasette's metadata: titles and descriptions of the tables, columns and canned queries."""
    import html

    from harness import __version__
    from leaderboard.views import DATABASE_NAME, VIEWS, column_descriptions, table_descriptions

    notes = table_descriptions()
    tables: dict[str, dict[str, Any]] = {}
    for table, columns in column_descriptions().items():
        tables[table] = {"columns": dict(columns)}
        if table in notes:
            tables[table]["description"] = notes[table]
    tables["ranked_runs"] = {"description": "The finished runs, best final win rate first (a SQL view)."}
    queries = {
        view.name: {"sql": view.sql, "title": view.title, "description": view.description,
                    "hide_sql": True,  # the rows first; "Show SQL query" on the page reveals it
                    **({"params": list(view.params)} if view.params else {})}
        for view in VIEWS
    }
    links = "".join(
        f"<li><a href='/{DATABASE_NAME}/{view.name}'>{html.escape(view.title)}</a></li>" for view in VIEWS
    )
    about = (
        "<p>The runs of the leaderboard database, read-only. Views:</p>"
        f"<ul>{links}<li><a href='/-/pairsel/charts'>Charts: win rate against labels, gold against KL</a>"
        "</li></ul><p>The tables and columns are described as in the schema reference "
        f"(docs/leaderboard/schema.md). pairsel-harness {html.escape(__version__)}.</p>"
    )
    return {
        "title": TITLE,
        "description_html": about,
        "source": f"pairsel-harness {__version__}",
        "databases": {DATABASE_NAME: {"description": "The leaderboard: one row per run in runs, "
                                                     "its iterations, the labels it bought.",
                                      "tables": tables, "queries": queries}},
    }


def build_datasette(path: str | Path) -> Any:
    """A datasette serving the leaderboard at ``path`` read-only (the ``browse`` extra must be installed)."""
    from datasette.app import Datasette
    from datasette.database import Database
    from datasette.plugins import pm

    from leaderboard import datasette_plugin
    from leaderboard.views import DATABASE_NAME

    if not pm.is_registered(datasette_plugin):
        pm.register(datasette_plugin, name=datasette_plugin.PLUGIN_NAME)
    class LeaderboardDatasette(Datasette):
        """A datasette that the plugin's hooks act on: it carries their state from the start."""

        def __init__(self, state: datasette_plugin.BrowseState, **options: Any):
            self.pairsel_state = state  # before __init__, which builds the routes of datasette.client
            super().__init__(**options)

    path = Path(path).resolve()
    datasette = LeaderboardDatasette(datasette_plugin.BrowseState(path), metadata=datasette_metadata(),
                                     settings=dict(SETTINGS))
    datasette.remove_database("_memory")
    # is_mutable: connections open with mode=ro (read-only) rather than immutable=1, which would not see
    # the WAL of a sweep still writing.
    datasette.add_database(Database(datasette, str(path), is_mutable=True), name=DATABASE_NAME)
    return datasette


def url_for(host: str, port: int) -> str:
    """The URL a browser opens for ``host`` and ``port``."""
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/"


def serve(path: str | Path, host: str, port: int, on_ready: Callable[[str], None]) -> None:
    """Serve until Ctrl-C; ``on_ready(url)`` once the socket listens (``port`` 0: a free port)."""
    import uvicorn

    datasette = build_datasette(path)
    server = uvicorn.Server(uvicorn.Config(datasette.app(), host=host, port=port, log_level="warning",
                                           lifespan="on"))

    def announce() -> None:
        while not server.started:
            if server.should_exit:
                return
            time.sleep(0.02)
        bound = port
        for listening in server.servers:
            for sock in listening.sockets:
                bound = sock.getsockname()[1]
        on_ready(url_for(host, bound))

    threading.Thread(target=announce, name="pairsel-serve-ready", daemon=True).start()
    server.run()
