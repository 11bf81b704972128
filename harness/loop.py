"""The iterative DPO loop: the only module that knows the order of the steps.

One iteration: draw prompts, sample N responses from pi_{i-1}, score them,
select one pair per prompt and a share of those pairs across the pool, charge
the ledger and label the kept pairs, train pi_i with DPO against the reference
(pi_ref, or pi_{i-1} with ``--reference previous``), evaluate, record. The
steps live in :mod:`harness.iteration`; :func:`run_iterations` calls them in
that order. Every step draws from its own random stream (:mod:`harness.rng`),
so runs with one seed share their worlds, prompts and first samples whatever
their strategies.

Model stages (world building, sampling, log-prob forwards, training,
evaluation) are timed separately from the harness's own work, so the overhead
benchmark can report the share of wall time spent outside model compute.
"""

from __future__ import annotations

import gc
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from harness.budget import Ledger
from harness.config import Components, RunConfig
from harness.interfaces import Reporter
from harness.iteration import (
    MODEL_STAGES,
    Iteration,
    LoopState,
    RunContext,
    StageTimer,
    evaluate_policy,
    begin,
    draw,
    evaluate,
    idle,
    label,
    observe,
    record,
    restore_selector_states,
    sample,
    save_then_emit,
    score,
    select,
    train,
)
from harness.labelling import LabelDesk, MemoryLabelDesk
from harness.progress import NullReporter
from harness.ranks import SINGLE, Ranks

__all__ = ["MODEL_STAGES", "LoopState", "RunResult", "StageTimer", "build_world", "run_experiment", "run_iterations"]


@dataclass
class RunResult:
    """What a finished run returns: one row per evaluated policy and the final summary."""

    iterations: list[dict[str, Any]]
    final: dict[str, Any]


STEPS: tuple[Callable[[RunContext, Iteration], None], ...] = (
    draw,  # fresh prompts (or the pairs handed out for labelling, on resume)
    sample,  # N responses per prompt from pi_{i-1}
    score,  # log-probs under pi_{i-1} and the reference
    select,  # one pair per prompt, then the kept share of those pairs
    label,  # the annotator labels the kept pairs, charged to the ledger
    observe,  # a stateful selector learns from those labels
    train,  # DPO from pi_{i-1}; the unchanged-policy guard; KL to pi_{i-1}
    evaluate,  # the win rate of pi_i
    record,  # the row, the checkpoint, on_iteration
)
"""The steps of one iteration, in order (:mod:`harness.iteration`), after :func:`~harness.iteration.begin`.

A measurement that needs the iteration's intermediate state passes its own
sequence with a step inserted (:mod:`harness.experiments.label_value`); a
run's own steps are always these."""


IDLE_STEPS: tuple[Callable[[RunContext, Iteration], None], ...] = (idle, evaluate, record)
"""The steps of an iteration granted no labels: pi_i is pi_{i-1}, evaluated and recorded."""


def run_iterations(run: RunContext, done: int, steps: Sequence[Callable[[RunContext, Iteration], None]] = STEPS
                   ) -> None:
    """Every iteration after the ``done`` first ones, step by step (:data:`STEPS`; :data:`IDLE_STEPS` without labels)."""
    for number in range(done + 1, run.config.iterations + 1):
        it = begin(run, number)  # this iteration's share of the budget and the pool it buys
        for step in steps if it.labels_planned else IDLE_STEPS:
            step(run, it)


def run_experiment(
    config: RunConfig,
    components: Components,
    *,
    reporter: Reporter | None = None,
    on_iteration: Callable[[dict[str, Any]], None] | None = None,
    checkpoint: Callable[[Any, LoopState], None] | None = None,
    restore: Callable[[Any], LoopState] | None = None,
    desk: LabelDesk | None = None,
    ranks: Ranks = SINGLE,
    steps: Sequence[Callable[[RunContext, Iteration], None]] = STEPS,
) -> RunResult:
    """Run ``config`` end to end and return per-iteration rows and final metrics.

    ``on_iteration`` receives each row as soon as it is complete (iteration 0
    is the initial policy pi_0), e.g. to record it in the leaderboard.
    ``checkpoint(world, state)`` is called after every completed iteration,
    before its row is emitted; ``restore(world)`` returns the state to continue
    from instead of starting at pi_0 (``harness run --resume``). ``desk``
    keeps every label (the experiment layer's keeps them in the leaderboard;
    default: :class:`~harness.labelling.MemoryLabelDesk`) and runs the external
    annotator's round trip (:mod:`harness.labelling`): with ``--annotator external`` the
    loop raises :class:`~harness.labelling.AwaitingLabels` at the annotation
    step, and on resume continues from the selection it saved there.

    ``ranks``: under a multi-process launch (:mod:`harness.ranks`) only the
    main process samples, selects, annotates, evaluates and calls
    ``checkpoint`` and ``on_iteration``; every process scores and trains, and
    every process returns the same result.

    ``steps``: the steps of each iteration (:data:`STEPS`, the default, for every run).
    """
    reporter = reporter or NullReporter()
    timer = StageTimer()
    wall_start = time.perf_counter()
    emit = on_iteration or (lambda row: None)

    with timer("setup"):
        world = build_world(components, config.world_seed, reporter)
    # Everything alive now (modules, models, the world) lives for the whole run: keep it out of the
    # cyclic collector, whose full passes over it would otherwise stall whichever stage triggers them
    # (freezing is a list splice; the objects go back to the collector when the run ends).
    gc.freeze()
    try:
        return _iterate(config, components, world, reporter, timer, wall_start, emit, checkpoint, restore, desk,
                        ranks, steps)
    finally:
        gc.unfreeze()
        _close(world)


def _close(world) -> None:
    """``world.close()`` where the world has one (optional, World.close): an engine, a server's adapters. A
    failure there is a warning, so it never hides how the run itself ended."""
    close = getattr(world, "close", None)
    if not callable(close):
        return
    try:
        close()
    except Exception as exc:
        warnings.warn(f"closing the world failed ({type(exc).__name__}: {exc}); the run's result stands",
                      RuntimeWarning, stacklevel=2)


def build_world(components: Components, world_seed: int, reporter: Reporter):
    """The testbed's world, with the optional keywords its ``build_world`` declares
    (:meth:`harness.interfaces.Testbed.build_world`): the run's annotator, the registry's trainers.

    The annotator is whoever labels the run's pairs: the run's annotator, or, when the pairs are labelled by
    the gold judge's scores (a selector that reads gold explicit scores), the gold judge. A testbed that
    labels a seed round when it builds the world (the hf testbed's on-policy pi_0) asks it. An exact gold
    judge (:attr:`harness.interfaces.Judge.exact`, a verifier) is offered as ``gold``, for a world without a
    gold reward of its own to take as one.
    """
    import inspect

    build = components.testbed.build_world
    declared = inspect.signature(build).parameters
    labeller = components.annotator
    if labeller is None and getattr(components, "explicit_source", None) == "gold":
        labeller = components.gold_judge
    gold = getattr(components, "gold_judge", None)
    offered = {"annotator": labeller, "trainers": components.trainers,
               "gold": gold if gold is not None and gold.exact else None}
    extra = {name: value for name, value in offered.items() if name in declared}
    return build(seed=world_seed, reporter=reporter, **extra)


def _iterate(config, components, world, reporter, timer, wall_start, emit, checkpoint, restore, desk,
             ranks: Ranks, steps: Sequence[Callable[[RunContext, Iteration], None]]) -> RunResult:
    """pi_0's evaluation (or a restored state), then :func:`run_iterations`, then the final summary."""
    if restore is not None:
        state = restore(world)
        restore_selector_states(components, state.selector_states)
    else:
        with reporter.stage("evaluate pi_0", total=None), timer("evaluate"):
            initial = ranks.main_only(
                lambda: evaluate_policy(world, world.initial_policy, components, config.seed, 0))
        seed_round = {key: value for key, value in dict(getattr(world, "seed_round", None) or {}).items()
                      if isinstance(value, (bool, int, float, str))}  # the seed ledger, on pi_0's row
        state = LoopState(0, world.initial_policy, [{"iteration": 0, **initial, **seed_round}], {}, [])
    run = RunContext(
        config, components, world, reporter, timer, ranks, desk if desk is not None else MemoryLabelDesk(),
        checkpoint, emit,
        policy=state.policy,
        # the reference the current policy was trained against: implicit rewards for selection use it
        reference=state.reference if state.reference is not None else world.reference_policy,
        ledger=Ledger(config.budget, charged=dict(state.charged), proxy_calls=dict(state.proxy_calls)),
        rows=list(state.rows),
        history=list(state.history),
    )
    if restore is None:
        ranks.main_only(lambda: save_then_emit(run, state))
    run_iterations(run, state.iteration, steps)
    return RunResult(iterations=run.rows,
                     final=_final_metrics(run.rows, run.ledger, timer, time.perf_counter() - wall_start))


def _final_metrics(rows: list[dict[str, Any]], ledger: Ledger, timer: StageTimer, wall: float) -> dict[str, Any]:
    """The run's summary: the last policy's metrics, labels spent and where the time went."""
    last = rows[-1]
    # building (or loading) the world is the testbed's cost, not the strategy's: the first run on a new world
    # would otherwise look slower than the rest; it stays on the row as time_setup
    setup = timer.seconds.get("setup", 0.0)
    wall, model = max(0.0, wall - setup), max(0.0, timer.model_seconds() - setup)
    gain = last["win_rate"] - rows[0]["win_rate"]
    return {
        "final_win_rate": last["win_rate"],
        "final_win_rate_se": last.get("win_rate_se"),
        "final_gold_reward": last.get("gold_reward"),
        "final_kl": last.get("kl"),
        "initial_win_rate": rows[0]["win_rate"],
        "labels_used": ledger.spent,
        **({"seed_labels": rows[0]["seed_labels"]} if "seed_labels" in rows[0] else {}),  # the seed ledger
        "proxy_calls": sum(ledger.proxy_calls.values()),
        # win-rate gain over pi_0 per 1,000 gold labels: what a label bought, comparable across budgets
        "win_gain_per_1k_labels": round(1000.0 * gain / ledger.spent, 6) if ledger.spent else None,
        "wall_seconds": round(wall, 3),
        "model_seconds": round(model, 3),
        "overhead_share": round(max(0.0, wall - model) / wall, 5) if wall > 0 else 0.0,
        **{f"time_{stage}": round(seconds, 4) for stage, seconds in sorted(timer.seconds.items())},
    }


