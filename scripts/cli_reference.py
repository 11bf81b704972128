"""The CLI reference page: every ``harness`` command's ``--help``, generated from the Typer application.

    python scripts/cli_reference.py        # print the Markdown of the reference

The docs build runs this script (``scripts/docs_hooks.py``) and puts its output into
``docs/reference/cli.md``, so the published page always shows the help texts of the
code it was built from; nothing generated is committed. Only the built-in commands are
listed: entry-point plugins are not loaded, so a plugin installed on the machine that
builds the docs cannot add its commands to the page.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WIDTH = 100

#: The environment the help texts are rendered in: a fixed width, no colour, no plugins.
ENV = {"TERMINAL_WIDTH": str(WIDTH), "COLUMNS": str(WIDTH), "NO_COLOR": "1", "_TYPER_FORCE_DISABLE_TERMINAL": "1",
       "HARNESS_LOAD_PLUGINS": ""}


def _commands(command, path):
    """(path, click command) for ``command`` and every command below it, in the order ``--help`` lists them."""
    yield path, command
    if hasattr(command, "list_commands"):  # a group (Typer vendors Click: duck-type, no isinstance)
        context = command.context_class(command, info_name=path[-1])
        for name in command.list_commands(context):
            sub = command.get_command(context, name)
            if sub is not None and not getattr(sub, "hidden", False):
                yield from _commands(sub, [*path, name])


def generate() -> str:
    """The Markdown of the reference (rendered in this process: call it with :data:`ENV` set)."""
    import typer
    from typer.testing import CliRunner

    from harness.cli import build_app

    app = build_app()
    root = typer.main.get_command(app)
    runner = CliRunner()
    lines = []
    for path, _ in _commands(root, ["harness"]):
        result = runner.invoke(app, [*path[1:], "--help"], prog_name="harness", terminal_width=WIDTH)
        if result.exit_code != 0:
            raise RuntimeError(f"{' '.join(path)} --help exited {result.exit_code}: {result.output}")
        text = "\n".join(line.rstrip() for line in result.output.strip("\n").splitlines())
        depth = min(len(path) + 1, 4)
        lines += [f"{'#' * depth} `{' '.join(path)}`", "", "```text", text, "```", ""]
    return "\n".join(lines)


def render() -> str:
    """:func:`generate` in a fresh interpreter with :data:`ENV` (Typer reads its settings at import)."""
    done = subprocess.run([sys.executable, __file__], cwd=ROOT, env={**os.environ, **ENV, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"scripts/cli_reference.py failed:\n{done.stderr[-3000:]}")
    return done.stdout


if __name__ == "__main__":
    if any(os.environ.get(key) != value for key, value in ENV.items()):
        sys.stdout.write(render())
    else:
        sys.stdout.write(generate())
