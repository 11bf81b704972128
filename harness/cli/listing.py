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
    def command(name: NameArgument = None, as_json: JsonOption = False, plugin: PluginOption = None) -> None:
        list_command(kind, name, as_json, plugin)

    return command


#: The package of the built-in plugins, whose name the summary leaves out.
BUILTIN_PREFIX = "plugins."

NameArgument = Annotated[
    str | None, typer.Argument(help="One component: show each of its options with its type, default, range and help.")
]


def list_command(
    kind: Annotated[Kind, typer.Argument(help="Which components to list.")],
    name: NameArgument = None,
    as_json: JsonOption = False,
    plugin: PluginOption = None,
) -> None:
    """List the components of KIND: what each does, its options and its plugin; NAME shows one in full.

    Set an option on a run with -o NAME=VALUE (or -o ROLE.NAME=VALUE), e.g.
    `harness list trainers native` then `harness run -o trainer.epochs=4`.
    """
    from harness.errors import UnknownNameError
    from harness.plugins import load_registry

    with cli_errors():
        registry = load_registry(plugin or ())
        singular = kind.value[:-1]
        names = registry.names(singular)
        if name is not None:
            if name not in names:
                raise UnknownNameError(singular, name, sorted(names))
            names = [name]
    entries = []
    for each in names:
        registered = registry.get(singular, each)
        cls = registered.cls
        entries.append({
            "name": each,
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
    console = stderr_console()
    if name is None:
        _print_summary(console, kind.value, entries)
    else:
        _print_one(console, singular, entries[0])


def _print_summary(console, title: str, entries: list[dict]) -> None:
    """One row per component, its options by name; the help of each is one `harness list KIND NAME` away."""
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("name", style="bold", no_wrap=True)
    table.add_column("options", max_width=24, overflow="fold")
    table.add_column("description (plugin, when not built in)")
    for entry in entries:
        names = [o["name"] for o in entry["options"]]
        options = ", ".join(names) if len(names) <= 4 else f"{len(names)} options"
        plugin = "" if entry["plugin"].startswith(BUILTIN_PREFIX) else f" [dim]({escape(entry['plugin'])})[/]"
        table.add_row(entry["name"], options or "–", escape(entry["description"]) + plugin)
    console.print(table)
    if entries:
        console.print(f"each option's type, default, range and help: [bold]harness list {title} NAME[/] "
                      f"(e.g. harness list {title} {entries[0]['name']})", style="dim")


def _print_one(console, kind: str, entry: dict) -> None:
    """One component: its description, then a row per option."""
    from rich.markup import escape
    from rich.table import Table

    console.print(f"[bold]{entry['name']}[/] ({kind}, plugin {entry['plugin']} {entry['version']}): "
                  f"{escape(entry['description'])}", soft_wrap=True)
    if entry["requires"]:
        console.print(f"reads: {', '.join(entry['requires'])}")
    if not entry["options"]:
        console.print("no options")
        return
    table = Table(title_justify="left")
    for header in ("option", "type", "default", "range"):
        table.add_column(header, no_wrap=header != "range", overflow="fold")
    table.add_column("what it sets")
    for o in entry["options"]:
        table.add_row(o["name"], o["type"], escape(repr(o["default"])), o["range"] or "–", escape(o["help"]))
    console.print(table)
    console.print(f"set one on a run with -o {kind}.OPTION=VALUE", style="dim")
