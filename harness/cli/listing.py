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
    def command(name: NameArgument = None, as_json: JsonOption = False, plugin: PluginOption = None,
                wide: WideOption = False) -> None:
        list_command(kind, name, as_json, plugin, wide)

    return command


#: The package of the built-in plugins, whose name the summary leaves out.
BUILTIN_PREFIX = "plugins."

WideOption = Annotated[
    bool, typer.Option("--wide", help="Every description and column whole, however wide the terminal (by default "
                                      "one line per component, its description cut at a word).")
]
NameArgument = Annotated[
    str | None, typer.Argument(help="One component: show each of its options with its type, default, range and help.")
]


def list_command(
    kind: Annotated[Kind, typer.Argument(help="Which components to list.")],
    name: NameArgument = None,
    as_json: JsonOption = False,
    plugin: PluginOption = None,
    wide: WideOption = False,
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
    from harness.reference_point import is_deployable

    entries = []
    for each in names:
        registered = registry.get(singular, each)
        cls = registered.cls
        # requires (and the capabilities) may depend on settings; show them for the defaults.
        default = registered.create() if singular == "selector" else None
        entries.append({
            "name": each,
            "description": cls.description,
            "plugin": registered.plugin.name,
            "version": registered.plugin.version,
            "requires": list(default.requires) if default is not None else [],
            # False: a reference point that reads the world's exact gold (needs_exact_gold), not a strategy
            **({"deployable": is_deployable(default)} if default is not None else {}),
            "options": [
                {"name": o.name, "type": o.type_name, "default": o.default, "range": o.range_text(), "help": o.help}
                for o in cls.options
            ],
            **({"regimes": [{"name": r.name, "options": list(r.options), "chosen_by": r.chosen_by,
                             "description": r.description} for r in cls.regimes().values()]}
               if singular == "testbed" else {}),
        })
    if as_json:
        typer.echo(json.dumps(entries, indent=2, default=list))
        return
    console = stderr_console()
    if name is None:
        _print_summary(console, kind.value, entries, wide=wide)
    else:
        _print_one(console, singular, entries[0], wide=wide)


def _print_summary(console, title: str, entries: list[dict], *, wide: bool = False) -> None:
    """One line per component, its options by name and its description cut at a word to fit the terminal; the
    whole description and the help of each option are one `harness list KIND NAME` (or --wide) away."""
    from rich.text import Text

    from harness.reference_point import MARK, SHORT_NOTE
    from harness.table_fit import Column, print_fitted

    options, descriptions = [], []
    for entry in entries:
        names = [o["name"] for o in entry["options"]]
        options.append((", ".join(names) if len(names) <= 4 else f"{len(names)} options") or "–")
        description = Text(" ".join(entry["description"].split()))
        if not entry.get("deployable", True):  # the mark leads, so no cut hides it (NOTE explains it below)
            description = Text(f"{MARK} ", style="bold") + description
        if not entry["plugin"].startswith(BUILTIN_PREFIX):
            description.append(f" ({entry['plugin']})", style="dim")
        descriptions.append(description)
    print_fitted(console, [
        Column("name", [e["name"] for e in entries], kind="key", required=True, style="bold"),
        Column("options", options, kind="text", priority=1, floor=10),
        Column("description (plugin, when not built in)", descriptions, kind="text", required=True, floor=30),
    ], wide=wide, title=title, title_style="")
    if not all(e.get("deployable", True) for e in entries):
        console.print(SHORT_NOTE, style="dim")  # one line; `harness list selectors NAME` has the whole NOTE
    if entries:
        console.print(f"whole descriptions, and each option's type, default, range and help: [bold]harness list "
                      f"{title} NAME[/] (e.g. harness list {title} {entries[0]['name']})", style="dim")


def _print_one(console, kind: str, entry: dict, *, wide: bool = False) -> None:
    """One component: its description, then a row per option (names and defaults never cut; the help wraps)."""
    from rich.markup import escape

    from harness.table_fit import Column, print_fitted

    from harness.reference_point import marked

    console.print(f"[bold]{marked(entry['name'], entry.get('deployable', True))}[/] ({kind}, plugin {entry['plugin']} {entry['version']}): "
                  f"{escape(entry['description'])}")
    if entry["requires"]:
        console.print(f"reads: {', '.join(entry['requires'])}")
    if not entry.get("deployable", True):
        from harness.reference_point import NOTE

        console.print(escape(NOTE), style="bold")
    if not entry["options"]:
        console.print("no options")
        return
    options = entry["options"]
    print_fitted(console, [
        Column("option", [o["name"] for o in options], kind="key", required=True),
        Column("type", [o["type"] for o in options], kind="key", priority=3),
        Column("default", [repr(o["default"]) for o in options], kind="wrap", priority=4),
        Column("range", [o["range"] or "–" for o in options], kind="wrap", priority=2),
        Column("what it sets", [o["help"] for o in options], kind="wrap", required=True, floor=24),
    ], wide=wide)
    console.print(f"set one on a run with -o {kind}.OPTION=VALUE", style="dim")
    if entry.get("regimes"):
        regimes = entry["regimes"]
        print_fitted(console, [
            Column("regime", [r["name"] for r in regimes], kind="key", required=True),
            Column("chosen by", [r["chosen_by"] for r in regimes], kind="key", priority=3),
            Column("options", [" ".join(r["options"]) for r in regimes], kind="wrap", required=True, floor=20),
            Column("what it is", [r["description"] for r in regimes], kind="wrap", priority=2, floor=24),
        ], wide=wide)
        console.print("run in one with --regime NAME (docs/usage/regimes.md)", style="dim")
