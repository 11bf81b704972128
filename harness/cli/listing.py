"""``harness list KIND``: the components of one kind, what they do and their options."""

from __future__ import annotations

import json
from enum import Enum
from typing import Annotated

import typer

from harness.cli.common import JsonOption, PluginOption, cli_errors, stderr_console


class Kind(str, Enum):
    selectors = "selectors"
    allocators = "allocators"
    scorers = "scorers"
    trainers = "trainers"
    testbeds = "testbeds"
    judges = "judges"


def register(app: typer.Typer) -> None:
    app.command(name="list")(list_command)
    for kind in Kind:
        app.command(name=kind.value, help=f"Shortcut for `harness list {kind.value}`.", hidden=False)(
            _shortcut(kind)
        )


def _shortcut(kind: Kind):
    def command(as_json: JsonOption = False, plugin: PluginOption = None) -> None:
        list_command(kind, as_json, plugin)

    return command


def list_command(
    kind: Annotated[Kind, typer.Argument(help="Which components to list.")],
    as_json: JsonOption = False,
    plugin: PluginOption = None,
) -> None:
    """List the components of KIND with a one-line description, their plugin and their options.

    Set an option on a run with -o NAME=VALUE (or -o ROLE.NAME=VALUE).
    """
    from harness.plugins import load_registry

    with cli_errors():
        registry = load_registry(plugin or ())
    singular = kind.value[:-1]
    entries = []
    for name in registry.names(singular):
        registered = registry.get(singular, name)
        cls = registered.cls
        entries.append({
            "name": name,
            "description": cls.description,
            "plugin": registered.plugin.name,
            "version": registered.plugin.version,
            # requires may depend on settings; show it for the defaults.
            "requires": list(registered.create().requires) if singular == "selector" else [],
            "options": [
                {"name": o.name, "type": o.type_name, "default": o.default, "range": o.range_text(), "help": o.help}
                for o in cls.options
            ],
        })
    if as_json:
        typer.echo(json.dumps(entries, indent=2, default=list))
        return
    from rich.table import Table

    console = stderr_console()
    table = Table(title=kind.value, title_justify="left", show_lines=True)
    table.add_column("name", style="bold", no_wrap=True)
    table.add_column("description")
    table.add_column("options (default, range)")
    table.add_column("plugin", style="dim")
    for entry in entries:
        options = "\n".join(
            f"{o['name']} = {o['default']!r}" + (f"  {o['range']}" if o["range"] else "") + f"\n  [dim]{o['help']}[/]"
            for o in entry["options"]
        )
        table.add_row(entry["name"], entry["description"], options or "–", entry["plugin"])
    console.print(table)
