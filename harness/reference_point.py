"""Reference points: selectors that read what no deployable strategy has, and how every listing marks them.

A selector that declares ``needs_exact_gold = True``
(:class:`harness.interfaces.Selector`) is handed the world's exact gold
reward of its pool, for free. It is a *reference point* to read other
strategies against, not a strategy one could deploy: no real annotation
budget buys the exact gold reward of every sampled response. Deployability is
derived from that one declaration (:func:`is_deployable`), recorded with the
run (``deployable: false`` in its config, :class:`harness.config.RunConfig`),
and every listing marks such a selector with :data:`MARK` and explains the
mark with :data:`NOTE`: ``harness list selectors``, the plan line of
``harness run``, and the run, strategy and compare tables of
``harness leaderboard``.

Standard library only: the leaderboard and ``harness list`` read it without numpy.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

MARK = "†"
"""Appended to the name of a selector that is not a deployable strategy (``gold_gradient†``)."""

NOTE = (f"{MARK} not a deployable strategy: a reference point that reads the world's exact gold reward "
        "(free, never charged) to choose its pairs; its kept pairs still cost 1 label each "
        "(docs/usage/gold-reference.md)")
"""The footnote under every listing that shows :data:`MARK`."""

SHORT_NOTE = f"{MARK} not a deployable strategy: a reference point that reads exact gold"
"""The footnote on one line of 80 columns (``harness list selectors``, whose rows are one line each)."""


def is_deployable(selector: Any) -> bool:
    """False for a selector (class or instance) that declares ``needs_exact_gold``; True for every other."""
    return not bool(getattr(selector, "needs_exact_gold", False))


def recorded_deployable(row: Mapping[str, Any]) -> bool:
    """Whether a leaderboard row is a deployable strategy, from what its run recorded.

    A run row carries its parsed ``config``; a group row carries
    ``deployable`` (set by :func:`leaderboard.query.mark_deployability`). Only
    an explicit ``false`` marks a row: runs recorded before the capability
    existed, and every deployable run, leave the key out.
    """
    if row.get("deployable") is False:
        return False
    config = row.get("config")
    return not (isinstance(config, Mapping) and config.get("deployable") is False)


def marked(name: str, deployable: bool) -> str:
    """``name``, with :data:`MARK` appended when it is not deployable."""
    return name if deployable else f"{name}{MARK}"


__all__ = ["MARK", "NOTE", "SHORT_NOTE", "is_deployable", "marked", "recorded_deployable"]
