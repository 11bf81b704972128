"""``harness plugins``: which plugins are installed and what each registered."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from harness.cli.common import JsonOption, PluginOption, cli_errors, stderr_console


def register(app: typer.Typer) -> None:
    app.command(name="plugins")(plugins_command)


def plugins_command(
    all_: Annotated[bool, typer.Option("--all", help="Include the built-in plugins.")] = False,
    as_json: JsonOption = False,
    plugin: PluginOption = None,
) -> None:
    """List installed plugins, their versions and what each registered.

    Third-party plugins come from the `pairsel_harness` entry-point group (set
    HARNESS_LOAD_PLUGINS to a comma-separated list of names to load only those,
    or to '' for none); --plugin loads a file or module for this command only.
    """
    from harness.plugins import load_registry

    with cli_errors():
        registry = load_registry(plugin or ())
    rows = []
    for name, info in registry.plugins.items():
        if info.source == "builtin" and not all_:
            continue
        rows.append({
            "name": name,
            "version": info.version,
            "source": info.source,
            "distribution": info.distribution,
            "hooks": registry.hooks.get(name, []),
            "registered": registry.registered_by(name),
        })
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    console = stderr_console()
    if not rows:
        console.print("No third-party plugins installed. [dim]harness plugins --all[/] shows the built-ins.")
        return
    from rich.table import Table

    table = Table(title="plugins", title_justify="left")
    for header in ("plugin", "version", "source", "registered"):
        table.add_column(header)
    for row in rows:
        registered = "; ".join(f"{_plural(kind)}: {', '.join(names)}" for kind, names in row["registered"].items())
        table.add_row(row["name"], row["version"], row["source"], registered or ", ".join(row["hooks"]))
    console.print(table)


def _plural(kind: str) -> str:
    """``selector`` -> ``selectors``, ``study`` -> ``studies``."""
    return kind[:-1] + "ies" if kind.endswith("y") else kind + "s"
