"""The ``harness`` command line: one module per command, composed here.

Plugins add commands through the ``register_commands(app)`` hook, which
receives this Typer application.
"""

from __future__ import annotations

import typer

from harness import __version__

HELP = """\
Benchmark which preference pairs to annotate in iterative DPO.

Each iteration samples N responses per prompt from the current policy, scores
them, selects pairs (one per prompt, then a share across the pool), buys gold
labels for only those pairs, trains with DPO and evaluates. Runs land in a
SQLite leaderboard.

Start with:  harness run --selector smallest --allocator decrease
Then:        harness leaderboard
"""


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"pairsel-harness {__version__}")
        raise typer.Exit()


def build_app() -> typer.Typer:
    """The CLI with built-in commands and every plugin's ``register_commands``."""
    from harness.cli import calibrate, export, label, leaderboard, leaderboard_merge, listing, plugins, run, study, sweep
    from harness.cli import leaderboard_publish, leaderboard_serve
    from harness.cli.common import cli_errors
    from harness.plugins import build_plugin_manager

    app = typer.Typer(
        help=HELP,
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        rich_markup_mode="rich",
        context_settings={"help_option_names": ["-h", "--help"]},
    )

    @app.callback()
    def root(
        version: bool = typer.Option(
            False, "--version", callback=_version_callback, is_eager=True, help="Show the version and exit."
        ),
    ) -> None:
        """Benchmark which preference pairs to annotate in iterative DPO."""

    run.register(app)
    sweep.register(app)
    calibrate.register(app)
    plugins.register(app)
    listing.register(app)
    app.add_typer(leaderboard.leaderboard_app, name="leaderboard")
    leaderboard_merge.register(leaderboard.leaderboard_app, leaderboard.parent_option)
    leaderboard_serve.register(leaderboard.leaderboard_app, leaderboard.parent_option)
    leaderboard_publish.register(leaderboard.leaderboard_app, leaderboard.parent_option)
    app.add_typer(study.study_app, name="study")
    app.add_typer(label.label_app, name="label")
    app.add_typer(export.export_app, name="export")

    with cli_errors():
        pm, _ = build_plugin_manager()
        pm.hook.register_commands(app=app)
    return app


def main() -> None:
    try:
        app = build_app()
    except typer.Exit as exc:
        raise SystemExit(exc.exit_code) from None
    app()
