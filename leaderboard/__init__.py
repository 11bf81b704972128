"""The leaderboard: a SQLite database of runs (store), its schema (migrations), its table (render).

Browsing and comparing: ``query`` (filters, sort, grouping by strategy),
``compare`` (paired differences to a baseline), ``stats`` (Student t, no
scipy), ``plots`` (matplotlib figures), ``export`` (CSV/JSON files) and
``schema_doc`` (the schema page of the docs, generated).

Importing this package is free: ``Leaderboard`` and ``default_db_path`` load
``leaderboard.store`` (and sqlite-utils) on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from leaderboard.store import Leaderboard, default_db_path

__all__ = ["Leaderboard", "default_db_path"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from leaderboard import store

        return getattr(store, name)
    raise AttributeError(f"module 'leaderboard' has no attribute {name!r}")
