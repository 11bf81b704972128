"""Data the package ships, named in options as ``shipped:NAME``, so a plan or a command works from any directory.

``shipped:verifiable`` is the folder ``plugins/testbeds/hf/data/verifiable`` of
the installed package (the verifiable regime's prompts and checks),
``shipped:prompts.jsonl`` the demo prompts beside it. The value stays
``shipped:NAME`` in a run's recorded config, so its config hash is the same in
every clone and installation; the file is found where the package is at the
moment it is read. Everything that reads a data option or a judge's task files
resolves it through :func:`resolve`. Importing this module is cheap.
"""

from __future__ import annotations

from pathlib import Path

from harness.errors import UsageError

PREFIX = "shipped:"
#: Where the shipped data lives.
DATA_DIR = Path(__file__).resolve().parent / "testbeds" / "hf" / "data"


def available() -> list[str]:
    """The names ``shipped:NAME`` accepts."""
    return sorted(p.name for p in DATA_DIR.iterdir() if not p.name.startswith((".", "README")))


def resolve(value):
    """``value`` with a ``shipped:NAME`` turned into the path of that shipped file or folder; anything else as it
    is. UsageError naming what is shipped for a name that is not."""
    if not isinstance(value, str) or not value.startswith(PREFIX):
        return value
    name = value[len(PREFIX):].strip().strip("/")
    path = DATA_DIR / name
    if not name or ".." in Path(name).parts or not path.exists():
        raise UsageError(f"{value!r}: no such shipped data; shipped: {', '.join(PREFIX + n for n in available())}")
    return str(path)
