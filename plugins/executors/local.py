"""Registers the ``local`` executor: worker processes on this machine
(:class:`harness.experiments.executors.LocalProcessExecutor`)."""

from __future__ import annotations

from harness import hookimpl


@hookimpl
def register_executors(register):
    from harness.experiments.executors import LocalProcessExecutor

    register(LocalProcessExecutor)
