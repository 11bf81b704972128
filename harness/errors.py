"""The harness's own exceptions.

Every error a user can cause by what they typed is a :class:`UsageError`; the
CLI turns it into a message and exit code 2 before anything is written.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class HarnessError(Exception):
    """Base class of every error the harness raises on purpose."""


class UsageError(HarnessError):
    """Bad input from the user: a name, an option value, a budget. CLI exit code 2."""


class UnknownNameError(UsageError):
    """A plugin, option or column name that does not exist; lists close matches."""

    def __init__(
        self, kind: str, name: str, available: Iterable[str], suggest_from: Iterable[str] | None = None
    ):
        self.kind = kind
        self.name = name
        self.available = sorted(available)
        super().__init__(unknown_name_message(kind, name, self.available, suggest_from))


class PluginError(HarnessError):
    """A plugin failed to load, registered something invalid, or collided with another."""


class SelectionError(HarnessError):
    """A selector returned something that breaks the selector contract."""


class CheckpointError(HarnessError):
    """A checkpoint to resume from is missing, truncated or does not match its run."""


class NonFiniteError(HarnessError):
    """A loss, score, log-prob or metric came out NaN or infinite; the run stops at that step."""


class BudgetExceededError(HarnessError):
    """An annotation would take the ledger past its budget; nothing was charged."""


def close_matches(name: str, available: Iterable[str], n: int = 3) -> list[str]:
    """The names in ``available`` that look most like ``name`` (best first)."""
    return difflib.get_close_matches(name, list(available), n=n, cutoff=0.6)


def unknown_name_message(
    kind: str, name: str, available: Iterable[str], suggest_from: Iterable[str] | None = None
) -> str:
    """``unknown KIND 'name'; did you mean ...?`` plus the list of available names.

    Suggestions come from ``suggest_from`` when given (e.g. bare option names
    while the list shows qualified ones), else from ``available``.
    """
    available = sorted(available)
    message = f"unknown {kind} {name!r}"
    matches = close_matches(name, available if suggest_from is None else suggest_from)
    if matches:
        message += f"; did you mean {' or '.join(repr(m) for m in matches)}?"
    if available:
        message += f"\navailable {kind}s: {', '.join(available)}"
    else:
        message += f"\nno {kind}s are available"
    return message
