"""The hooks a plugin can implement.

Every hook is called with keyword arguments only, once per command, in no
guaranteed order between plugins. A hook implementation must accept exactly the
argument names below (it may accept fewer) and must not rely on default values:
pluggy never passes them.

The ``register_*`` hooks follow one pattern: the host passes a ``register``
callable and the plugin calls it once per component class it provides::

    from harness import hookimpl

    @hookimpl
    def register_selectors(register):
        register(MySelector)

The host checks every registration: the class must subclass the matching base
in :mod:`harness.interfaces`, have a non-empty ``name`` and ``description``, and
declare valid options. Two plugins registering the same name is an error that
names both.
"""

from __future__ import annotations

import pluggy

PROJECT_NAME = "pairsel_harness"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def register_scorers(register):
    """Register scorers: components that compute one score column for every response.

    Called when the host builds its registry, before any command runs.

    :param register: call ``register(cls)`` with a subclass of
        :class:`harness.interfaces.Scorer`; ``cls.name`` is the column name
        that selectors list in ``requires``.
    :return: ignored.
    """


@hookspec
def register_selectors(register):
    """Register selectors: strategies that choose which pairs to annotate.

    Called when the host builds its registry, before any command runs.

    :param register: call ``register(cls)`` with a subclass of
        :class:`harness.interfaces.Selector`. The same class serves
        ``--selector``, ``--instance-selector`` and ``--corpus-selector``.
        What the class declares (``requires``, ``needs_tokens``,
        ``explicit_source``, ``stochastic_passes``, ``needs_exact_gold``) is
        all the loop computes for it. ``needs_exact_gold = True`` hands the
        selector the world's exact gold reward (``batch.gold()``, free); it
        makes the selector a reference point, marked "not a deployable
        strategy" wherever strategies are listed, and runs only on a testbed
        that declares ``exact_gold = True``.
    :return: ignored.
    """


@hookspec
def register_allocators(register):
    """Register allocators: schedules that spread the label budget over iterations.

    Called when the host builds its registry, before any command runs.

    :param register: call ``register(cls)`` with a subclass of
        :class:`harness.interfaces.Allocator`.
    :return: ignored.
    """


@hookspec
def register_trainers(register):
    """Register trainers: preference optimisers that turn pi_{i-1} into pi_i.

    Called when the host builds its registry, before any command runs.

    :param register: call ``register(cls)`` with a subclass of
        :class:`harness.interfaces.Trainer`.
    :return: ignored.
    """


@hookspec
def register_testbeds(register):
    """Register testbeds: worlds with models, prompts, an annotator and an evaluator.

    Called when the host builds its registry, before any command runs.

    :param register: call ``register(cls)`` with a subclass of
        :class:`harness.interfaces.Testbed`.
    :return: ignored.
    """


@hookspec
def register_judges(register):
    """Register judges: explicit reward models, gold or proxy, that score responses.

    Called when the host builds its registry, before any command runs. A run
    uses one judge as its gold scorer (``--gold-judge``, charged one label per
    response scored) and one as its proxy (``--proxy-judge``, counted but not
    charged); selectors that declare ``explicit_reward`` in ``requires`` read
    the scores of the source they name.

    :param register: call ``register(cls)`` with a subclass of
        :class:`harness.interfaces.Judge`.
    :return: ignored.
    """


@hookspec
def register_studies(register):
    """Register studies: plan files that run a grid and give each of their claims a verdict.

    Called when the host builds its registry, before any command runs (so
    ``harness study list`` and ``harness study run NAME`` see every study).
    Unlike the other ``register_*`` hooks this one registers a *file*, not a
    component class: a study is data (a TOML plan, its schema in
    docs/experiments/plans.md), validated when it is loaded.

    :param register: call ``register(path)`` with the path (``str`` or
        ``pathlib.Path``) of a plan file ending in ``.toml``; the study's name is
        the file name without ``.toml`` (``yang2024.toml`` -> ``yang2024``). A name
        registered by two plugins is an error that names both.
    :return: ignored.
    """


@hookspec
def register_executors(register):
    """Register executors: where the runs of a sweep or a study execute (``--executor NAME``).

    Called when the host builds its registry. An executor takes planned
    runs, runs them somewhere (worker processes, a Ray cluster, a batch
    scheduler) and reports how each ended; the interface is small and
    described in ``harness/experiments/executors.py``. One whose workers
    cannot reach the leaderboard database sets ``workers_record = False``,
    sends each task with no database path (the worker then journals its run
    and returns the journal with its result) and hands every result to
    :func:`harness.experiments.executors.record_returned`, so the driver
    alone writes the database.

    :param register: call ``register(cls)`` with a subclass of
        :class:`harness.experiments.executors.Executor` whose ``name`` is
        unique. A name registered by two plugins is an error that names both.
    :return: ignored.
    """


@hookspec
def register_commands(app):
    """Add commands to the ``harness`` command line.

    Called once when the CLI is assembled, after the built-in commands exist.

    :param app: the root ``typer.Typer`` application. Add a command with
        ``@app.command()`` or a group with ``app.add_typer(sub_app, name=...)``.
        (Typer vendors Click; the host never hands out a Click group.)
    :return: ignored.
    """
