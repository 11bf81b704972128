"""``harness leaderboard publish``: write the leaderboard as a static site for any static host.

Registered on the leaderboard sub-app by :func:`register`, like ``merge``. The site is
:mod:`leaderboard.site`; this module checks the options and the database (as ``serve`` does)
and maps errors to exit codes. Importing it costs typer only.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from harness.cli.common import DbOption, JsonOption, cli_errors, stderr_console

PUBLISH_HELP = """\
Write the leaderboard as a static site: HTML pages, JSON and CSV, PNG figures.

The same views as `harness leaderboard serve`: the strategies ranked by gain
per 1,000 labels, the paired comparison against --baseline (as `harness
leaderboard compare` computes it), each run's iterations and labels, and every
table, each with a JSON and a CSV download; plus the figures of `harness
leaderboard plot`. Relative links only, no script and nothing fetched from
elsewhere: put the folder on any static host, or open index.html from disk.
Every page shows the harness version, the database's content hash and when it
was written.

The site is built beside --out and renamed into place when complete: an error
or Ctrl-C leaves --out as it was. --out must be new, empty or an earlier
publish (it has publish.json); --force replaces any other folder. See
docs/leaderboard/browse.md.

[bold]Example[/]

  harness leaderboard publish --out leaderboard-site --baseline random
"""


def register(app: typer.Typer, parent_option: Callable[[typer.Context, str, Any], Any]) -> None:
    """Add ``publish`` to the ``harness leaderboard`` sub-app (``parent_option`` as for ``merge``)."""

    @app.command("publish", help=PUBLISH_HELP, short_help="Write the leaderboard as a static site.")
    def publish(
        ctx: typer.Context,
        out: Annotated[Path, typer.Option("--out", metavar="DIR", file_okay=False,
                                          help="Folder for the site (replaced atomically).")],
        baseline: Annotated[str, typer.Option("--baseline", metavar="SELECTOR_OR_HASH",
                                              help="Baseline of the comparison page, as for compare.")] = "random",
        force: Annotated[bool, typer.Option("--force", help="Replace --out even if it holds something else.")]
        = False,
        db: DbOption = None,
        json_output: JsonOption = False,
    ) -> None:
        run_publish(parent_option(ctx, "db", db), out, baseline, force,
                    parent_option(ctx, "json_output", json_output))


def run_publish(db: Path | None, out: Path, baseline: str, force: bool, json_output: bool) -> None:
    """The ``publish`` command once its options are known."""
    from harness.cli.leaderboard_serve import checked_database, fail
    from harness.errors import UsageError
    from leaderboard.site import check_out, publish

    path = checked_database(db)
    console = stderr_console()
    try:
        check_out(out, force=force, db_path=path)
        with cli_errors():
            written = publish(path, out, baseline=baseline, force=force)
    except UsageError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"writing the site to {out} failed: {exc}; {out} was left as it was", code=1)
    except KeyboardInterrupt:
        fail(f"interrupted: nothing was published, {out} was left as it was", code=130)
    for note in written.notes:
        console.print(f"note: {note}", style="dim", highlight=False, soft_wrap=True)
    console.print(f"published {len(written.files)} file(s) to {written.out} (content hash "
                  f"{written.content_hash}); open {written.out / 'index.html'}", highlight=False, soft_wrap=True)
    if json_output:
        typer.echo(json.dumps({"out": str(written.out), "content_hash": written.content_hash,
                               "written_at": written.written_at, "files": len(written.files)}))
