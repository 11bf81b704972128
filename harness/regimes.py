"""Named regimes: a testbed's declared sets of options, so a verdict can name the regime it was measured in.

A regime is a name, the ``-o`` options it stands for and how those values were
chosen. ``harness run --regime NAME`` puts them in front of the run's own
``-o`` options, so an option given on the command line still wins; the run's
config records the regime's name beside the resolved settings.

A testbed declares its regimes in a TOML file next to its module (one table
per regime, :func:`load_regimes`) and returns them from
:meth:`harness.interfaces.Testbed.regimes`. The synthetic testbed's are
``plugins/testbeds/synthetic/regimes.toml``: the design-time default, chosen by
outcome, and the regimes ``harness calibrate`` chose from the papers'
selection diagnostics (docs/usage/regimes.md).

Reading the file costs ``tomllib`` only, so ``harness list`` and ``--help``
stay light.
"""

from __future__ import annotations

import difflib
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import PluginError, UsageError


@dataclass(frozen=True)
class Regime:
    """One named regime of a testbed."""

    name: str
    options: tuple[str, ...]  # -o assignments, "role.key=value"
    description: str
    chosen_by: str  # "outcome" (picked by looking at results) or "calibration" (by diagnostics only)
    provenance: Mapping[str, Any] = field(default_factory=dict)  # how it was chosen: seeds, commit, diagnostics


CHOSEN_BY = ("outcome", "calibration", "declaration")


def load_regimes(path: Path) -> dict[str, Regime]:
    """The regimes declared in the TOML file at ``path``: ``[NAME]`` tables with ``options``, ``description``,
    ``chosen_by`` and an optional ``[NAME.provenance]``. PluginError naming the file on anything malformed."""
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise PluginError(f"regimes file {path} is unreadable: {exc}") from None
    regimes = {}
    for name, table in data.items():
        if not isinstance(table, dict):
            raise PluginError(f"regimes file {path}: {name!r} must be a table [{name}]")
        options = table.get("options", [])
        if not isinstance(options, list) or not all(isinstance(o, str) and "=" in o for o in options):
            raise PluginError(f"regimes file {path}: [{name}] options must be a list of \"role.key=value\" strings")
        chosen_by = table.get("chosen_by")
        if chosen_by not in CHOSEN_BY:
            raise PluginError(f"regimes file {path}: [{name}] chosen_by must be one of {', '.join(CHOSEN_BY)}")
        regimes[name] = Regime(name=name, options=tuple(options), description=str(table.get("description", "")),
                               chosen_by=chosen_by, provenance=dict(table.get("provenance", {})))
    return regimes


def regime_options(testbed_cls: type, name: str) -> tuple[str, ...]:
    """The options of regime ``name`` of a testbed class; UnknownNameError (exit 2) listing its regimes."""
    regimes = testbed_cls.regimes()
    if name not in regimes:
        known = ", ".join(sorted(regimes)) or "none"
        close = difflib.get_close_matches(name, list(regimes), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise UsageError(f"testbed {testbed_cls.name!r} has no regime {name!r}; {hint}its regimes: {known} "
                         f"(harness list testbeds {testbed_cls.name})")
    return regimes[name].options
