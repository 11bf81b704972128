"""``harness leaderboard serve``: browse the leaderboard in a web browser (datasette, read-only).

Registered on the leaderboard sub-app by :func:`register`, like ``merge``. The app itself is
:mod:`leaderboard.serve`; this module checks the options, the extra and the database, and
prints the URL. :func:`checked_database` is shared with ``publish``. Importing it costs typer only.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from harness.cli.common import DbOption, resolve_db, stderr_console

EXTRA_MESSAGE = "harness leaderboard serve needs datasette: pip install 'pairsel-harness[browse]'"

SERVE_HELP = """\
Browse the leaderboard in a web browser: a local datasette, read-only.

Every table and column is titled and described (as in the schema reference),
and four views are ready: the strategies ranked by gain per 1,000 labels, the
paired comparison against a baseline (the numbers of `harness leaderboard
compare`), one run's iterations and the labels a run bought; /-/pairsel/charts
shows win rate against labels and gold reward against KL per strategy.

The database is opened read-only and nothing can be written through the
server. It listens on 127.0.0.1 (this machine only) unless --host says
otherwise. The URL is printed on stdout once the server accepts connections;
--port 0 picks a free port. Ctrl-C stops it. Needs the browse extra:
pip install 'pairsel-harness[browse]'. See docs/leaderboard/browse.md.

[bold]Example[/]

  harness leaderboard serve --db leaderboard.db --port 8001
"""


def register(app: typer.Typer, parent_option: Callable[[typer.Context, str, Any], Any]) -> None:
    """Add ``serve`` to the ``harness leaderboard`` sub-app (``parent_option`` as for ``merge``)."""

    @app.command("serve", help=SERVE_HELP, short_help="Browse the leaderboard in a web browser (read-only).")
    def serve(
        ctx: typer.Context,
        db: DbOption = None,
        host: Annotated[str, typer.Option("--host", metavar="ADDRESS",
                                          help="Address to listen on; other than 127.0.0.1, others can read it.")]
        = "127.0.0.1",
        port: Annotated[int, typer.Option("--port", metavar="N", min=0, max=65535,
                                          help="Port to listen on; 0 picks a free one.")] = 8001,
        open_browser: Annotated[bool, typer.Option("--open/--no-open",
                                                   help="Open the URL in the default web browser.")] = False,
    ) -> None:
        run_serve(parent_option(ctx, "db", db), host, port, open_browser)


def fail(message: str, code: int = 2) -> None:
    """Print ``message`` as an error on stderr and exit with ``code``."""
    from rich.markup import escape

    stderr_console().print(f"[bold red]Error:[/] {escape(message)}", soft_wrap=True)
    raise typer.Exit(code)


def checked_database(db: Path | None) -> Path:
    """``--db`` resolved and checked for reading: exit 2 naming the fix when it is missing, a folder,
    not SQLite, another program's database or one from a newer harness (the checks of the other
    leaderboard commands: :func:`leaderboard.store.check_database_file`, then opening it)."""
    import sqlite3

    from leaderboard.store import Leaderboard, check_database_file

    path = resolve_db(db)
    if not path.exists():
        fail(f"no leaderboard database at {path}: run `harness run` first, or pass --db PATH "
             "(or set $HARNESS_DB)")
    if path.is_dir():
        fail(f"{path} is a directory, not a leaderboard database: pass --db FILE")
    try:
        check_database_file(path)
        Leaderboard(path, create=False).close()  # applies pending migrations, as every leaderboard command does
    except (ValueError, OSError, sqlite3.Error) as exc:
        fail(str(exc))
    return path


def _require_extra() -> None:
    try:
        import datasette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        fail(f"{EXTRA_MESSAGE} ({exc})")


def _check_port(host: str, port: int) -> None:
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    except OSError as exc:
        fail(f"cannot listen on {host} port {port} ({exc.strerror or exc}): pass another --port, "
             "or --port 0 for a free one")


def run_serve(db: Path | None, host: str, port: int, open_browser: bool) -> None:
    """The ``serve`` command once its options are known."""
    from leaderboard.serve import LOCAL_HOSTS, serve

    _require_extra()
    path = checked_database(db)
    _check_port(host, port)
    if host not in LOCAL_HOSTS:
        stderr_console().print(
            f"[bold yellow]Warning:[/] listening on {host}: anyone who can reach this machine can read the "
            "leaderboard (every run record, label and text); the default --host 127.0.0.1 keeps it to this "
            "machine", soft_wrap=True, highlight=False)

    def ready(url: str) -> None:
        typer.echo(f"Serving the leaderboard at {url} (read-only; Ctrl-C to stop)")
        sys.stdout.flush()
        if open_browser:
            import webbrowser

            webbrowser.open(url)

    try:
        serve(path, host, port, ready)
    except KeyboardInterrupt:  # uvicorn stops cleanly on Ctrl-C, then raises it again
        pass
    stderr_console().print("stopped", style="dim")
