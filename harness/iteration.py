"""The steps of one iteration of iterative DPO, each a function over the run and the iteration's context.

:func:`harness.loop.run_experiment` calls them in this order, once per
iteration (:func:`begin` first):

- :func:`draw`: fresh prompts from the world (or, on resume, the pairs that were
  handed out for labelling);
- :func:`sample`: N responses per prompt from pi_{i-1} (or, for a selector
  that steers sampling, each from the source it names);
- :func:`score`: log-probs under pi_{i-1} and the reference, when a selector's
  score column needs them, and K stochastic passes of pi_{i-1} when a
  stochastic scorer (scorer contract 2) is among them;
- :func:`select`: explicit scores when a selector reads them (and, for a
  selector that declares ``needs_exact_gold``, the world's exact gold,
  uncharged, on that selector's batch only; for a selector that names a
  ``feature_source``, the responses' features), one pair per prompt
  (instance level), then the kept share (corpus level);
- :func:`label`: the annotator labels the kept pairs, charged to the ledger;
- :func:`observe`: a stateful selector (selector contract 2) learns from those
  labels;
- :func:`train`: DPO from pi_{i-1} on the labelled pairs (ties dropped), the
  guard against an unchanged policy, KL to pi_{i-1};
- :func:`evaluate`: the metrics of pi_i (the evaluator's win rate);
- :func:`record`: the iteration's row, the checkpoint, then ``on_iteration``.

Each step reads what earlier steps left on the :class:`Iteration` and adds
its own results. Under a multi-process launch (:mod:`harness.ranks`) the main
process alone draws, samples, selects, labels and evaluates, and hands the
results to the others; every process scores and trains. Every step draws from
its own random stream (:mod:`harness.rng`).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from harness import rng as streams
from harness.budget import Ledger, PoolPlan, plan_pool
from harness.config import Components, RunConfig
from harness.diagnostics import pool_gold_diagnostics, pool_margin_diagnostics, selected_pair_diagnostics
from harness.errors import NonFiniteError, PluginError, SelectionError, UsageError
from harness.holdout import agreement, holdout_positions
from harness.interfaces import (
    EXPLICIT_REWARD,
    SAMPLING_SOURCES,
    ExactGold,
    Feedback,
    OBSERVED_FIELDS,
    IterationRecord,
    Labels,
    Pairs,
    PreferenceData,
    Reporter,
    Responses,
    SelectionBatch,
    batch_for,
    check_gold_hand_over,
    stochastic_passes,
    winners_and_losers,
)
from harness.labelling import LabelDesk, PendingSelection
from harness.ranks import Ranks
from harness.static_policy import StaticPolicyError, compare_parameters, static_policy_message
from harness.validation import check_corpus_pairs, check_instance_pairs

MODEL_STAGES = ("setup", "sample", "logprobs", "judge", "annotate", "train", "evaluate")
"""Stages whose time is model compute; everything else counts as harness overhead."""


@dataclass
class StageTimer:
    """Accumulates wall seconds per stage."""

    seconds: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def __call__(self, stage: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - start

    def model_seconds(self) -> float:
        return sum(self.seconds.get(stage, 0.0) for stage in MODEL_STAGES)


@dataclass
class LoopState:
    """Where a run stands after an iteration: enough to continue it exactly.

    ``iteration`` is the last completed one (0: only pi_0 evaluated);
    ``rows`` holds one row per evaluated policy; ``charged`` is the ledger.
    """

    iteration: int
    policy: Any
    rows: list[dict[str, Any]]
    charged: dict[int, int]
    history: list[IterationRecord]
    proxy_calls: dict[int, int] = field(default_factory=dict)
    reference: Any = None  # the policy's DPO reference when it is not the world's pi_ref (--reference previous)
    selector_states: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # stateful selectors, by level


@dataclass
class RunContext:
    """What every iteration of one run shares: the run's parts, and the policy and ledger it carries forward."""

    config: RunConfig
    components: Components
    world: Any
    reporter: Reporter
    timer: StageTimer
    ranks: Ranks
    desk: LabelDesk
    checkpoint: Callable[[Any, LoopState], None] | None
    emit: Callable[[dict[str, Any]], None]
    policy: Any
    reference: Any  # the reference the policy was trained against: selection scores use it
    ledger: Ledger
    rows: list[dict[str, Any]]
    history: list[IterationRecord]


@dataclass
class Iteration:
    """One iteration as the steps build it; each field is set by the step named beside it."""

    number: int
    labels_planned: int  # begin: this iteration's share of the budget
    pool: PoolPlan  # begin: how many prompts to draw and pairs to keep
    title: str  # begin: "iteration i/K", for progress lines
    seconds_before: dict[str, float]  # begin: the stage timings so far
    usage_before: dict[str, int]  # begin: the judges' spending so far
    pending: PendingSelection | None = None  # draw: pairs handed out before the run stopped for labels
    prompts: np.ndarray | None = None  # draw
    responses: Responses | None = None  # sample
    logp_policy: np.ndarray | None = None  # score (or train, for the kept pairs only)
    logp_ref: np.ndarray | None = None  # score (or train)
    logp_samples: np.ndarray | None = None  # score: (K, M, N) stochastic passes of pi_{i-1}, when a scorer reads them
    selection: PendingSelection | None = None  # select
    explicit: np.ndarray | None = None  # select: the judge's explicit rewards, when a selector reads them
    features: dict[str, np.ndarray] = field(default_factory=dict)  # select: (M, N, d) by feature source
    pool_diagnostics: dict[str, Any] = field(default_factory=dict)  # select
    verdict: Labels | None = None  # label (ties dropped by train)
    ties: int = 0  # train
    kept: Pairs | None = None  # train: the pairs trained on
    held_out: tuple[Pairs, np.ndarray] | None = None  # train: pairs and prefer_a kept out (allocator holdout)
    diagnostics: dict[str, Any] = field(default_factory=dict)  # train: of the pairs trained on
    trained: Any = None  # train: the trainer's TrainResult
    trained_fields: dict[str, Any] = field(default_factory=dict)  # train: its log and the guard's verdict
    step_kl: dict[str, float] = field(default_factory=dict)  # train
    metrics: dict[str, Any] = field(default_factory=dict)  # evaluate


def begin(run: RunContext, number: int) -> Iteration:
    """The iteration's share of the budget (the allocator, given the history) and the pool it buys."""
    config, components = run.config, run.components
    plan = components.allocator.allocate(total_labels=config.budget, iterations=config.iterations,
                                         history=tuple(record.for_allocator() for record in run.history))
    labels = min(int(plan[number - 1]), run.ledger.remaining)
    pool = plan_pool(labels, config.keep, *components.pool_costs(config.n_responses))
    return Iteration(number, labels, pool, f"iteration {number}/{config.iterations}", dict(run.timer.seconds),
                     _judge_usage(components))


def draw(run: RunContext, it: Iteration) -> None:
    """Fresh prompts from the world; on resume after external labelling, the pairs handed out instead."""
    def main() -> tuple[PendingSelection | None, np.ndarray | None]:
        pending = run.desk.pending(it.number) if run.components.external_annotation else None
        if pending is not None:
            return pending, None
        with run.timer("prompts"):
            return None, run.world.draw_prompts(it.pool.prompts, streams.stream(run.config.seed, it.number, "prompts"))

    it.pending, it.prompts = run.ranks.main_only(main)


def sample(run: RunContext, it: Iteration) -> None:
    """``--responses`` responses per prompt from pi_{i-1}; each from its source when a selector steers sampling.

    The sources come from the steering selector's ``sampling_sources`` with
    the iteration's own ``sources`` stream; the responses from
    :meth:`World.steered_sample` with the ``sample`` stream. A run without a
    steering selector draws exactly what it drew before selector contract 3.
    Under a multi-process launch the main process samples alone, unless the
    world draws each prompt from a stream of its own (``World.shards_sampling``):
    then every process samples its share of the prompts.
    """
    if it.pending is not None:
        return
    n = run.config.n_responses
    steering = run.components.steering_selector()

    if steering is None and run.ranks.parallel and getattr(run.world, "shards_sampling", False):
        it.responses = _sharded_sample(run, it, n)
        return

    def main() -> Responses:
        rng = streams.stream(run.config.seed, it.number, "sample")
        if steering is None:
            with run.reporter.stage(f"{it.title}: sample {it.pool.prompts}×{n}"), run.timer("sample"):
                return run.world.sample(run.policy, it.prompts, n, rng)
        check_steered_sampling(run.components, run.world)
        sources = _sampling_sources(steering, len(it.prompts), n, streams.stream(run.config.seed, it.number, "sources"))
        counts = ", ".join(f"{int((sources == code).sum())} {name}" for code, name in enumerate(SAMPLING_SOURCES)
                           if (sources == code).any())
        with run.reporter.stage(f"{it.title}: sample {it.pool.prompts}×{n} ({counts})"), run.timer("sample"):
            responses = run.world.steered_sample(run.policy, run.world.reference_policy, it.prompts, sources,
                                                 run.components.trainer.beta, rng)
        if responses.sources is None or not np.array_equal(responses.sources, sources):
            raise PluginError("World.steered_sample must return the responses with `sources` set to the codes it "
                              "was given")
        return responses

    it.responses = run.ranks.main_only(main)


def _sharded_sample(run: RunContext, it: Iteration, n: int) -> Responses:
    """The responses of a world that samples each prompt from a stream of its own (``World.shards_sampling``),
    the prompts split between the processes as in scoring: each process's share is drawn with the iteration's
    ``sample`` stream, so every prompt gets what a one-process run draws for it."""
    def share(part: slice) -> Responses:
        rng = streams.stream(run.config.seed, it.number, "sample")
        return run.world.sample(run.policy, it.prompts[part], n, rng)

    with run.reporter.stage(f"{it.title}: sample {it.pool.prompts}×{n} ({run.ranks.size} processes)"), \
            run.timer("sample"):
        parts = run.ranks.gather(len(it.prompts), share)
    return Responses.concatenate(parts, pad_id=int(getattr(run.world, "pad_id", 0)))


def check_steered_sampling(components: Components, world) -> None:
    """UsageError when a selector steers sampling and the world cannot sample from chosen sources."""
    steering = components.steering_selector()
    if steering is not None and not hasattr(world, "steered_sample"):
        raise UsageError(
            f"selector {steering.name!r} decides where responses are sampled from, but testbed "
            f"{components.testbed.name!r}'s worlds cannot sample from pi_ref or the interpolated policies "
            "(World.steered_sample, selector contract 3); pick another selector or testbed"
        )


def _sampling_sources(selector, n_prompts: int, n_responses: int, rng: np.random.Generator) -> np.ndarray:
    """The selector's ``(M, N)`` source codes, checked (PluginError naming it when they are malformed)."""
    sources = np.asarray(selector.sampling_sources(n_prompts, n_responses, rng))
    if sources.shape != (n_prompts, n_responses) or sources.dtype.kind not in "iu" \
            or (sources.size and not ((sources >= 0) & (sources < len(SAMPLING_SOURCES))).all()):
        raise PluginError(f"selector {selector.name!r}: sampling_sources must return ({n_prompts}, {n_responses}) "
                          f"integer codes in 0..{len(SAMPLING_SOURCES) - 1} (SAMPLING_SOURCES); got "
                          f"{sources.dtype} of shape {sources.shape}")
    return sources.astype(np.int8)


def score(run: RunContext, it: Iteration) -> None:
    """Log-probs of every response under pi_{i-1} and the reference, when a selector's score column needs them.

    When a stochastic scorer is in the run, also K stochastic passes of
    pi_{i-1} (:meth:`World.stochastic_logprobs`), from the iteration's own
    ``stochastic`` stream: no other stream moves, so a run without a
    stochastic scorer draws exactly what it drew before contract 2.
    """
    if it.pending is not None or not run.components.scorers:
        return
    passes = check_stochastic_scoring(run.components, run.world)
    count = it.responses.tokens.shape[0] * run.config.n_responses
    with run.reporter.stage(f"{it.title}: score {count} responses"), run.timer("logprobs"):
        it.logp_policy = _logprobs(run.ranks, run.world, run.policy, it.prompts, it.responses)
        it.logp_ref = _logprobs(run.ranks, run.world, run.reference, it.prompts, it.responses)
    require_finite(it.logp_policy, "logprobs", it.number, "log-probs of the policy")
    require_finite(it.logp_ref, "logprobs", it.number, "log-probs of the reference")
    if passes:
        with run.reporter.stage(f"{it.title}: {passes} stochastic passes over {count} responses"), \
                run.timer("logprobs"):
            it.logp_samples = _stochastic_logprobs(run.ranks, run.world, run.policy, it.prompts, it.responses,
                                                   passes, run.config.seed, it.number)
        require_finite(it.logp_samples, "logprobs", it.number, "stochastic log-probs of the policy")


def check_stochastic_scoring(components: Components, world) -> int:
    """K, the stochastic passes this run's scorers need (0: none); UsageError when the world cannot give them."""
    selectors = (components.instance_selector, components.corpus_selector)
    passes = stochastic_passes(selectors, components.scorers.values())
    if passes and not hasattr(world, "stochastic_logprobs"):
        columns = sorted(column for column, scorer in components.scorers.items() if getattr(scorer, "stochastic", False))
        raise UsageError(
            f"selectors {components.instance_selector.name!r}/{components.corpus_selector.name!r} read the "
            f"stochastic score columns {columns}, but testbed {components.testbed.name!r}'s worlds give no "
            "stochastic log-probs (World.stochastic_logprobs, scorer contract 2); pick another selector or testbed"
        )
    return passes


def select(run: RunContext, it: Iteration) -> None:
    """Explicit scores when a selector reads them, then one pair per prompt and the kept share of those pairs."""
    def main() -> tuple[PendingSelection, np.ndarray | None]:
        if it.pending is not None:
            if it.pending.proxy_calls:
                run.ledger.count_proxy(it.number, it.pending.proxy_calls)  # made before the run stopped for labels
            return it.pending, None
        it.features = _features(run, it, it.prompts, it.responses, feature_sources(run.components))
        return _select(run.components, run.config, run.world, (it.prompts, it.responses), it.logp_policy,
                       it.logp_ref, run.ledger, it.number, it.pool.pairs, run.timer, run.desk, it.logp_samples,
                       policy=run.policy, features=it.features)

    it.selection, it.explicit = run.ranks.main_only(main)
    selection = it.selection
    it.logp_policy, it.logp_ref = selection.logp_policy, selection.logp_ref
    if it.logp_policy is not None:
        it.pool_diagnostics = pool_margin_diagnostics(reward=it.logp_policy - it.logp_ref, distinct=selection.distinct,
                                                      beta=run.components.trainer.beta)
    if hasattr(run.world, "gold_rewards"):  # does gold tell this pool apart? (the selection's pool, resumed too)
        gold = run.ranks.main_only(lambda: run.world.gold_rewards(selection.prompts, selection.responses))
        it.pool_diagnostics.update(pool_gold_diagnostics(gold=gold, distinct=selection.distinct))


def label(run: RunContext, it: Iteration) -> None:
    """The kept pairs' labels: from the gold judge's scores, or bought from the annotator and charged."""
    components, selection = run.components, it.selection

    def main() -> tuple[Labels, Ledger]:
        source = None  # who labelled the pairs, when they are still to be recorded
        with run.timer("annotate"):
            if components.explicit_source == "gold":
                verdict = _labels_from_scores(run.world, selection.prompts, selection.responses, selection.kept,
                                              it.explicit)
            else:
                run.ledger.charge(it.number, len(selection.kept))
                verdict, source = _annotate(components, run.config, run.world, selection, run.desk, run.config.seed,
                                            it.number)
        if source is not None:
            with run.timer("labels"):  # harness work: keep every label with its text
                run.desk.record_pairs(it.number, run.world, selection.prompts, selection.responses, selection.kept,
                                      verdict, source)
        return verdict, run.ledger

    it.verdict, run.ledger = run.ranks.main_only(main)  # elsewhere: the main process's ledger


def observe(run: RunContext, it: Iteration) -> None:
    """A stateful selector (selector contract 2) learns from the pairs this iteration labelled.

    Each level's stateful selector gets a :class:`~harness.interfaces.Feedback`
    (the kept pairs, their labels and ties, its own features of the pool) and
    a Generator of the iteration's own stream for that selector
    (``observe:NAME``), so no other stream moves and a selector used at both
    levels learns exactly the same at each. On resume after external labelling the pool's features are
    computed again from the same policy, so the selector learns what it would
    have learnt without the stop.
    """
    learners = stateful_selectors(run.components)
    if not learners:
        return
    selection, verdict = it.selection, it.verdict

    def main() -> None:
        sources = {getattr(selector, "feature_source", None) for _, selector in learners} - {None}
        missing = sorted(source for source in sources if source not in it.features)
        if missing:  # a selection handed out for labelling before the run stopped: same policy, same features
            it.features.update(_features(run, it, selection.prompts, selection.responses, missing))
        for level, selector in learners:
            source = getattr(selector, "feature_source", None)
            feedback = Feedback(iteration=it.number, kept=selection.kept,
                                prefer_a=np.asarray(verdict.prefer_a, dtype=bool).copy(),
                                tie=verdict.tie_mask().copy(), features=it.features.get(source))
            before = streams.global_rng_state()
            with run.timer("select"):
                selector.observe(feedback, streams.stream(run.config.seed, it.number, f"observe:{selector.name}"))
            _refuse_global_draws(before, f"{level} selector {selector.name!r} (observe)")

    run.ranks.main_only(main)


def stateful_selectors(components: Components) -> list[tuple[str, Any]]:
    """``(level, selector)`` for each level whose selector keeps a memory (selector contract 2)."""
    return [(level, selector) for level, selector in (("instance", components.instance_selector),
                                                      ("corpus", components.corpus_selector))
            if getattr(selector, "stateful", False)]


def selector_states(components: Components) -> dict[str, dict[str, np.ndarray]]:
    """Each stateful level's ``state_dict()``, copied, by level: what a checkpoint keeps."""
    states = {}
    for level, selector in stateful_selectors(components):
        state = selector.state_dict()
        for key, value in state.items():
            if not isinstance(key, str) or not key.isidentifier() or not isinstance(value, np.ndarray) \
                    or value.dtype == object:
                raise PluginError(f"{level} selector {selector.name!r}: state_dict() must map identifiers to "
                                  f"numeric numpy arrays; got {key!r}: {type(value).__name__}")
        states[level] = {key: np.array(value, copy=True) for key, value in state.items()}
    return states


def restore_selector_states(components: Components, states: dict[str, dict[str, np.ndarray]]) -> None:
    """Hand each stateful level its saved state (:func:`selector_states`) back, on resume."""
    for level, selector in stateful_selectors(components):
        selector.load_state_dict(states.get(level, {}))


def feature_sources(components: Components) -> list[str]:
    """The feature sources the run's selectors name, each once, in level order."""
    sources: list[str] = []
    for selector in (components.instance_selector, components.corpus_selector):
        source = getattr(selector, "feature_source", None)
        if source is not None and source not in sources:
            sources.append(source)
    return sources


def check_features(components: Components, world) -> None:
    """UsageError when a selector reads features and the world cannot give them."""
    if feature_sources(components) and not hasattr(world, "features"):
        raise UsageError(
            f"selectors {components.instance_selector.name!r}/{components.corpus_selector.name!r} read the "
            f"responses' features, but testbed {components.testbed.name!r}'s worlds give none (World.features, "
            "selector contract 2); pick another selector or testbed"
        )


def _features(run: RunContext, it: Iteration, prompts, responses: Responses, sources) -> dict[str, np.ndarray]:
    """``(M, N, d)`` float64 features of the pool by source (pi_ref's, pi_{i-1}'s), timed as model compute."""
    if not sources:
        return {}
    check_features(run.components, run.world)
    policies = {"reference": run.world.reference_policy, "policy": run.policy}
    found = {}
    for source in sources:
        with run.reporter.stage(f"{it.title}: features of {responses.lengths.size} responses ({source})"), \
                run.timer("logprobs"):
            values = np.asarray(run.world.features(policies[source], prompts, responses), dtype=np.float64)
        if values.ndim != 3 or values.shape[:2] != responses.lengths.shape:
            raise PluginError(f"World.features returned shape {values.shape} for a pool of shape "
                              f"{responses.lengths.shape}; expected (M, N, d)")
        require_finite(values, "select", it.number, f"features ({source})")
        found[source] = values
    return found


def training_data(run: RunContext, it: Iteration) -> PreferenceData:
    """The labelled pairs as DPO data (a tie teaches nothing: dropped), and their diagnostics before training.

    Sets ``it.ties``, ``it.kept``, the kept responses' log-probs (reused from
    scoring, or computed for just them) and ``it.diagnostics``. Nothing is
    trained: a calibration reads these diagnostics of iteration 1 and stops
    here (:mod:`harness.experiments.calibration`).
    """
    config, trainer, world, timer, ranks = run.config, run.components.trainer, run.world, run.timer, run.ranks
    selection, verdict, kept = it.selection, it.verdict, it.selection.kept
    tie = verdict.tie_mask()
    it.ties = int(tie.sum())
    if tie.any():  # a tie was paid for but says nothing to DPO: drop it from training
        kept = kept.take(np.flatnonzero(~tie))
        verdict = Labels(
            prefer_a=np.asarray(verdict.prefer_a, dtype=bool)[~tie],
            gold_agrees=None if verdict.gold_agrees is None else np.asarray(verdict.gold_agrees)[~tie],
        )
    prefer_a = np.asarray(verdict.prefer_a, dtype=bool)
    kept, prefer_a, verdict = _hold_out(run, it, kept, prefer_a, verdict)
    it.kept = kept
    prompts, responses = selection.prompts, selection.responses

    # Log-probs of the kept responses: reused from scoring, or computed for just them.
    if it.logp_policy is None:
        with timer("logprobs"):
            it.logp_policy, it.logp_ref = _logprobs_of_pairs(ranks, world, (run.policy, run.reference), prompts,
                                                             responses, kept)
        for values, whose in ((it.logp_policy, "policy"), (it.logp_ref, "reference")):
            require_finite(values[kept.prompt, kept.a], "logprobs", it.number, f"log-probs of the {whose}")
            require_finite(values[kept.prompt, kept.b], "logprobs", it.number, f"log-probs of the {whose}")

    with timer("select"):
        # fixed: train against pi_ref; previous: against pi_{i-1} itself, whose log-probs are at hand.
        train_ref = it.logp_ref if config.reference == "fixed" else it.logp_policy
        data = PreferenceData.from_labels(prompts=prompts, responses=responses, pairs=kept, prefer_a=prefer_a,
                                          ref_logps=train_ref)
        winner, loser = winners_and_losers(kept, prefer_a)
        reward = it.logp_policy - it.logp_ref
        it.diagnostics = selected_pair_diagnostics(
            reward_chosen=reward[kept.prompt, winner],
            reward_rejected=reward[kept.prompt, loser],
            beta=trainer.beta,
            gold_agrees=None if verdict.gold_agrees is None else np.asarray(verdict.gold_agrees),
        )
    return data


def _hold_out(run: RunContext, it: Iteration, kept: Pairs, prefer_a: np.ndarray,
              verdict: Labels) -> tuple[Pairs, np.ndarray, Labels]:
    """The allocator's ``holdout`` share of the pairs set aside in ``it.held_out`` (not in the last iteration).

    The positions come from the iteration's own ``holdout`` stream, so no other
    stream moves; with no holdout the pairs come back as they went in.
    """
    share = float(getattr(run.components.allocator, "holdout", 0.0) or 0.0)
    if share <= 0.0 or it.number >= run.config.iterations:
        return kept, prefer_a, verdict
    held = holdout_positions(len(kept), share, streams.stream(run.config.seed, it.number, "holdout"))
    if held.size == 0:  # too few pairs for one to be held out: the iteration trains on all of them
        return kept, prefer_a, verdict
    trained = np.setdiff1d(np.arange(len(kept)), held)
    it.held_out = (kept.take(held), prefer_a[held])
    gold_agrees = None if verdict.gold_agrees is None else np.asarray(verdict.gold_agrees)[trained]
    return kept.take(trained), prefer_a[trained], Labels(prefer_a=prefer_a[trained], gold_agrees=gold_agrees)


def _holdout_agreement(run: RunContext, it: Iteration, trained_policy) -> dict[str, Any]:
    """Agreement of pi_{i-1} and of pi_i with the held-out labels (implicit rewards against the run's reference)."""
    if it.held_out is None:
        return {}
    pairs, prefer_a = it.held_out
    prompts, responses = it.selection.prompts, it.selection.responses
    before = it.logp_policy
    if len(pairs) and not np.isfinite(before[pairs.prompt, pairs.a]).all():  # scoring skipped: kept pairs only
        before, = _logprobs_of_pairs(run.ranks, run.world, (run.policy,), prompts, responses, pairs)
    reference = it.logp_ref
    if len(pairs) and not np.isfinite(reference[pairs.prompt, pairs.a]).all():
        reference, = _logprobs_of_pairs(run.ranks, run.world, (run.reference,), prompts, responses, pairs)
    after, = _logprobs_of_pairs(run.ranks, run.world, (trained_policy,), prompts, responses, pairs)
    return {"holdout_pairs": len(pairs),
            "holdout_agreement_before": agreement(before - reference, pairs, prefer_a),
            "holdout_agreement_after": agreement(after - reference, pairs, prefer_a)}


def train(run: RunContext, it: Iteration) -> None:
    """DPO from pi_{i-1} on the labelled pairs (:func:`training_data`), checked, with KL to pi_{i-1}."""
    config, trainer, world, timer, ranks = run.config, run.components.trainer, run.world, run.timer, run.ranks
    data = training_data(run, it)
    kept, prompts, responses = it.kept, it.selection.prompts, it.selection.responses
    with run.reporter.stage(f"{it.title}: train on {len(kept)} pairs"), timer("train"):
        try:
            trained = trainer.train(policy=run.policy, data=data, rng=streams.stream(config.seed, it.number, "train"))
        except NonFiniteError as exc:
            raise NonFiniteError(f"iteration {it.number}, step 'train' (trainer {trainer.name!r}): {exc}") from None
    require_finite(np.array([trained.loss_first, trained.loss_last], dtype=np.float64), "train", it.number,
                   f"losses of trainer {trainer.name!r}")
    with timer("check"):
        it.trained_fields = {
            **{f"train_{key}": value for key, value in dict(getattr(trained, "log", None) or {}).items()},
            **ranks.main_only(lambda: _check_training(config, trainer, it.number, run.policy, trained, len(data))),
        }
    with run.reporter.stage(f"{it.title}: KL to the previous policy"), timer("logprobs"):
        it.step_kl = _kl_to_previous(ranks, world, run.policy, trained.policy, prompts, responses, it.logp_policy)
    if it.held_out is not None:
        with run.reporter.stage(f"{it.title}: agreement with {len(it.held_out[0])} held-out labels"), \
                timer("logprobs"):
            it.trained_fields.update(_holdout_agreement(run, it, trained.policy))
    if config.reference == "previous":
        run.reference = run.policy  # pi_i was trained against pi_{i-1}
    run.policy, it.trained = trained.policy, trained


def evaluate(run: RunContext, it: Iteration) -> None:
    """The metrics of pi_i: the testbed's, and the evaluator's win rate."""
    with run.reporter.stage(f"{it.title}: evaluate"), run.timer("evaluate"):
        it.metrics = run.ranks.main_only(
            lambda: evaluate_policy(run.world, run.policy, run.components, run.config.seed, it.number))


def idle(run: RunContext, it: Iteration) -> None:
    """An iteration granted no labels buys nothing and trains nothing: pi_i is pi_{i-1}.

    :func:`harness.loop.run_iterations` runs it in place of the steps from
    ``draw`` to ``train``; ``evaluate`` and ``record`` follow as in every
    iteration. An adaptive allocator that stops buying (``plateau``) leaves
    such iterations, and so can a fixed schedule with fewer labels than
    iterations.
    """
    with run.reporter.stage(f"{it.title}: no labels granted; the policy stays as it is"):
        pass


def _purchase_fields(it: Iteration) -> dict[str, Any]:
    """The row's fields about what an iteration bought and trained (absent from an :func:`idle` one)."""
    selection, trained = it.selection, it.trained
    return {
        "instance_pairs": selection.offered,
        "ties": it.ties,
        "duplicate_share": float(1.0 - selection.distinct.mean()),
        **it.pool_diagnostics,
        **_prefixed(it.diagnostics, "sel_"),
        "train_steps": trained.steps,
        "train_epochs": trained.epochs,
        "loss_first": trained.loss_first,
        "loss_last": trained.loss_last,
        **it.trained_fields,
    }


def record(run: RunContext, it: Iteration) -> None:
    """The iteration's row (the main process's, on every process), then the checkpoint, then ``on_iteration``."""
    timer, ledger = run.timer, run.ledger
    spent = {stage: timer.seconds.get(stage, 0.0) - it.seconds_before.get(stage, 0.0) for stage in timer.seconds}
    row = run.ranks.share({
        "iteration": it.number,
        **it.metrics,
        "labels": ledger.charged.get(it.number, 0),
        "labels_planned": it.labels_planned,
        "labels_pool": it.pool.prompt_labels if run.components.explicit_source == "gold" else 0,
        "proxy_calls": ledger.proxy_calls.get(it.number, 0),
        "prompts": it.pool.prompts,
        **(_purchase_fields(it) if it.labels_planned else {"instance_pairs": 0, "train_steps": 0}),
        **it.step_kl,
        **_usage_delta(it.usage_before, _judge_usage(run.components)),
        **{f"time_{stage}": round(seconds, 4) for stage, seconds in sorted(spent.items())},
    })  # the main process's row (its judges' spending, its timings) on every process
    run.rows.append(row)
    observed = {key: row[key] for key in OBSERVED_FIELDS  # never a value the evaluator gave, whatever its name
                if key not in it.metrics and row.get(key) is not None}
    run.history.append(IterationRecord(iteration=it.number, labels=row["labels"], metrics=it.metrics,
                                       observed=observed))
    state = LoopState(it.number, run.policy, list(run.rows), dict(ledger.charged), list(run.history),
                      dict(ledger.proxy_calls), None if run.reference is run.world.reference_policy else run.reference)
    # the selectors' memory lives on the main process, which alone selects: read there, never broadcast
    run.ranks.main_only(lambda: save_then_emit(run, replace(state, selector_states=selector_states(run.components))))


def save_then_emit(run: RunContext, state: LoopState) -> None:
    """Checkpoint first, then report the row: a recorded row always has a checkpoint to resume from."""
    if run.checkpoint is not None:
        with run.timer("checkpoint"):
            run.checkpoint(run.world, state)
    run.emit(state.rows[-1])


# -- the steps' parts ------------------------------------------------------------------------------


def _logprobs(ranks: Ranks, world, policy, prompts, responses: Responses) -> np.ndarray:
    """``world.logprobs`` of every response, the prompts split across the run's processes."""
    def rows(part: slice) -> np.ndarray:
        return world.logprobs(policy, prompts[part], Responses(tokens=responses.tokens[part],
                                                               lengths=responses.lengths[part]))

    return ranks.split(len(prompts), rows)


def _stochastic_logprobs(ranks: Ranks, world, policy, prompts, responses: Responses, passes: int, seed: int,
                         iteration: int) -> np.ndarray:
    """``world.stochastic_logprobs``, ``(K, M, N)``, the prompts split across the run's processes.

    Each process's share draws its noise from the ``stochastic`` stream of the
    iteration, keyed also by the share's first row, so two processes never
    reuse one draw.
    """
    m, n = responses.lengths.shape

    def rows(part: slice) -> np.ndarray:
        rng = streams.stream(seed, iteration, f"stochastic/{part.start}")
        values = world.stochastic_logprobs(policy, prompts[part], Responses(tokens=responses.tokens[part],
                                                                           lengths=responses.lengths[part]),
                                           int(passes), rng)
        values = np.asarray(values, dtype=np.float64)
        rows_here = part.stop - part.start
        if values.shape != (int(passes), rows_here, n):
            raise PluginError(f"World.stochastic_logprobs returned shape {values.shape} for {passes} passes over "
                              f"{rows_here} prompts x {n} responses; expected {(int(passes), rows_here, n)}")
        return np.moveaxis(values, 1, 0)  # prompts first, so the processes' shares concatenate by rows

    if m == 0:
        return np.empty((int(passes), 0, n), dtype=np.float64)
    return np.moveaxis(ranks.split(m, rows), 0, 1)


def _logprobs_of_pairs(ranks: Ranks, world, policies, prompts, responses: Responses, pairs: Pairs) -> list[np.ndarray]:
    """``(M, N)`` log-probs under each policy, computed for the paired responses only (NaN elsewhere)."""
    tokens = np.stack([responses.tokens[pairs.prompt, pairs.a], responses.tokens[pairs.prompt, pairs.b]], axis=1)
    lengths = np.stack([responses.lengths[pairs.prompt, pairs.a], responses.lengths[pairs.prompt, pairs.b]], axis=1)
    both = Responses(tokens=tokens, lengths=lengths)
    filled = []
    for policy in policies:
        full = np.full(responses.lengths.shape, np.nan)
        if len(pairs) == 0:
            filled.append(full)
            continue
        pair_logps = _logprobs(ranks, world, policy, prompts[pairs.prompt], both)
        full[pairs.prompt, pairs.a] = pair_logps[:, 0]
        full[pairs.prompt, pairs.b] = pair_logps[:, 1]
        filled.append(full)
    return filled


def _kl_to_previous(ranks: Ranks, world, before, after, prompts, responses: Responses,
                    logp_before: np.ndarray | None) -> dict[str, float]:
    """KL(pi_{i-1} || pi_i) and its standard error, from the first plain sample of pi_{i-1} of every pool prompt.

    That is the prompt's first response, or, when a selector steered
    sampling, its first response drawn from pi_{i-1} itself (prompts with
    none are left out). Those responses are plain samples of pi_{i-1}
    (selection never chose them), so with r = pi_i(y) / pi_{i-1}(y) the mean of (r - 1) - log r
    over them is an unbiased estimate of the KL of one training step that is
    never negative (Schulman's k3 estimator; the plain mean of -log r has far
    more variance at small steps) and is exactly 0 when the weights did not
    change. It costs one forward of pi_i over one response per prompt (and of
    pi_{i-1} when scoring did not compute it).
    """
    rows = np.arange(responses.n_prompts)
    column = np.zeros(responses.n_prompts, dtype=np.int64)
    if responses.sources is not None:  # steered sampling: only pi_{i-1}'s own samples estimate its KL
        own = responses.sources == SAMPLING_SOURCES.index("policy")
        rows, column = np.flatnonzero(own.any(axis=1)), own.argmax(axis=1)[own.any(axis=1)]
        prompts = np.asarray(prompts)[rows]
        if logp_before is not None:
            logp_before = logp_before[rows]
    first = Responses(tokens=responses.tokens[rows, column][:, None], lengths=responses.lengths[rows, column][:, None])
    before_values = None if logp_before is None else logp_before[np.arange(len(rows)), column]
    if before_values is not None and np.isfinite(before_values).all():
        old = np.asarray(before_values, dtype=np.float64)
    else:
        old = _logprobs(ranks, world, before, prompts, first)[:, 0]
    new = _logprobs(ranks, world, after, prompts, first)[:, 0]
    log_ratio = new - old
    with np.errstate(over="ignore"):
        gap = np.expm1(log_ratio) - log_ratio
    if not np.isfinite(gap).all() or gap.size == 0:
        return {}
    return {"kl_prev": float(gap.mean()),
            "kl_prev_se": float(gap.std(ddof=1) / np.sqrt(gap.size)) if gap.size > 1 else 0.0}


def _check_training(config: RunConfig, trainer, iteration: int, before, trained, pairs: int) -> dict[str, Any]:
    """Row fields saying whether training changed pi_{i-1}; StaticPolicyError when it changed nothing.

    Skipped (no fields) for policies without torch parameters. With no
    trainable pairs an unchanged policy is expected and recorded as such;
    ``--allow-static-policy`` turns the failure into a warning on the row.
    """
    change = compare_parameters(before, trained.policy)
    if change is None:
        return {}
    fields: dict[str, Any] = {"policy_changed": int(not change.static), "params_changed": change.changed,
                              "params_trainable": change.total}
    if change.static and pairs > 0:
        message = static_policy_message(iteration=iteration, trainer=trainer.name, pairs=pairs, steps=trained.steps,
                                        log=dict(getattr(trained, "log", None) or {}), change=change,
                                        same_object=trained.policy is before)
        if not config.allow_static_policy:
            raise StaticPolicyError(message)
        warnings.warn(message, RuntimeWarning, stacklevel=2)
        fields["warning"] = message
    return fields


def _select(components: Components, config: RunConfig, world, drawn, logp_policy, logp_ref, ledger: Ledger,
            iteration: int, n_pairs: int, timer: StageTimer, desk,
            logp_samples: np.ndarray | None = None, *, policy: Any = None,
            features: dict[str, np.ndarray] | None = None) -> tuple[PendingSelection, np.ndarray | None]:
    """Explicit scores (when a selector reads them), then both selection levels, as a :class:`PendingSelection`.

    ``policy`` is pi_{i-1}, handed (with the exact gold) only to a selector that declares ``needs_exact_gold``;
    ``features`` (by source) go each to the selector that names that ``feature_source``.
    """
    prompts, responses = drawn
    seed = config.seed
    explicit = _explicit_scores(components, world, prompts, responses, ledger, iteration, seed, timer, desk)
    with timer("select"):
        distinct = responses.distinct_mask()
        scores = _score_columns(components, logp_policy, logp_ref, responses.lengths, logp_samples)
        for column, values in scores.items():
            require_finite(values, "score", iteration, f"score column {column!r}")
        if explicit is not None:
            scores[EXPLICIT_REWARD] = explicit
        instance, corpus = components.instance_selector, components.corpus_selector
        batch = SelectionBatch(
            lengths=responses.lengths,
            distinct=distinct,
            scores=scores,
            beta=components.trainer.beta,
            tokens=responses.tokens if (instance.needs_tokens or corpus.needs_tokens) else None,
            sources=responses.sources,
            exact_gold=_exact_gold(components, world, prompts, responses, policy, iteration),
        )
        # exact gold only on the batch of a selector that declared it (never charged to the ledger)
        offered, kept = _select_pairs(components, batch_for(instance, batch, features), n_pairs, seed, iteration,
                                      corpus_batch=batch_for(corpus, batch, features))
    selection = PendingSelection(prompts, responses, distinct, len(offered), kept, logp_policy, logp_ref,
                                 proxy_calls=ledger.proxy_calls.get(iteration, 0))
    return selection, explicit


def exact_gold_readers(components: Components) -> list[str]:
    """The names of the run's selectors that declare ``needs_exact_gold`` (each level once)."""
    names: list[str] = []
    for selector in (components.instance_selector, components.corpus_selector):
        if getattr(selector, "needs_exact_gold", False) and selector.name not in names:
            names.append(selector.name)
    return names


def _exact_gold(components: Components, world, prompts, responses: Responses, policy, iteration: int
                ) -> ExactGold | None:
    """The pool's exact gold for a selector that declares ``needs_exact_gold``; None when no selector does.

    Read from :meth:`World.gold_rewards` and never charged: it is a reference
    point's free information, not a purchase (the kept pairs are still labelled,
    and charged, by the annotator). UsageError when the world has no exact gold.
    """
    readers = exact_gold_readers(components)
    if not readers:
        return None
    if not hasattr(world, "gold_rewards"):
        raise UsageError(
            f"selector {readers[0]!r} reads the world's exact gold reward, but testbed "
            f"{components.testbed.name!r}'s worlds have none (World.gold_rewards): its gold is a judge's "
            "labels, paid per call. Run it on a testbed with a known gold reward (synthetic)"
        )
    rewards = np.asarray(world.gold_rewards(prompts, responses), dtype=np.float64)
    if rewards.shape != responses.lengths.shape:
        raise PluginError(f"World.gold_rewards returned shape {rewards.shape} for a pool of shape "
                          f"{responses.lengths.shape}")
    require_finite(rewards, "select", iteration, "exact gold rewards")
    return ExactGold(rewards=rewards, prompts=np.asarray(prompts), policy=policy)


def _score_columns(components: Components, logp_policy, logp_ref, lengths,
                   logp_samples: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Every scorer column a selector declared, as ``(M, N)`` float64 (explicit scores come from judges).

    A stochastic scorer (contract 2) gets ``logp_samples`` too; every other
    scorer is called with the three keywords of contract 1, exactly as before.
    """
    columns = {}
    for column, scorer in components.scorers.items():
        inputs = {"logp_policy": logp_policy, "logp_ref": logp_ref, "lengths": lengths}
        if getattr(scorer, "stochastic", False):
            if logp_samples is None:
                raise PluginError(f"scorer {column!r} is stochastic but no stochastic passes were computed")
            inputs["logp_samples"] = logp_samples
        columns[column] = np.asarray(scorer.score(**inputs), dtype=np.float64)
    return columns


def _explicit_scores(components, world, prompts, responses, ledger, iteration, seed, timer, desk) -> np.ndarray | None:
    """The judge's explicit reward of every response, charged (gold) or counted (proxy); None if unused."""
    judge = components.explicit_judge()
    if judge is None:
        return None
    calls = int(responses.lengths.size)
    if components.explicit_source == "gold":
        ledger.charge(iteration, calls)  # one label per response scored, before anything is selected
    else:
        ledger.count_proxy(iteration, calls)
    with timer("judge"):
        scores = judge.score(world=world, prompts=prompts, responses=responses,
                             rng=streams.stream(seed, iteration, "judge"))
    scores = np.asarray(scores, dtype=np.float64)
    require_finite(scores, "judge", iteration, f"explicit scores of the {components.explicit_source} judge {judge.name!r}")
    if components.explicit_source == "gold":
        desk.record_scores(iteration, world, prompts, responses, scores, source=f"gold_judge:{judge_source(judge)}")
    return scores


def judge_source(judge) -> str:
    """How a judge is named in the labels table: its name, and its model when it has one."""
    model = judge.settings.get("model") if isinstance(getattr(judge, "settings", None), dict) else None
    return f"{judge.name}/{model}" if model else judge.name


def _annotate(components: Components, config: RunConfig, world, selection: PendingSelection, desk,
              seed: int, iteration: int) -> tuple[Labels, str | None]:
    """Labels of the kept pairs from the run's annotator, and its name for the labels table.

    External: the imported labels (already in the table: no name), or the
    pairs handed out (AwaitingLabels). A judge: its ``compare``. None named:
    the testbed's own annotator.
    """
    prompts, responses, kept = selection.prompts, selection.responses, selection.kept
    annotator = components.annotator
    if components.external_annotation:
        labels = desk.collect(iteration, world, selection)
        if labels is None:
            desk.request(iteration, world, selection, streams.stream(seed, iteration, "display"))
        return _with_gold_agreement(world, prompts, responses, kept, labels), None
    rng = streams.stream(seed, iteration, "annotate")
    if annotator is None:
        labels, source = world.annotate(prompts, responses, kept, rng), f"testbed:{config.testbed.name}"
    else:
        labels, source = annotator.compare(world=world, prompts=prompts, responses=responses, pairs=kept, rng=rng), \
            f"judge:{judge_source(annotator)}"
    name = annotator.name if annotator is not None else config.testbed.name
    for field_name in ("prefer_a", "tie", "gold_agrees"):
        values = getattr(labels, field_name)
        if values is not None and len(values) != len(kept):
            raise PluginError(f"annotator {name!r} returned {len(values)} values of {field_name} for {len(kept)} pairs")
    if annotator is not None:
        labels = _with_gold_agreement(world, prompts, responses, kept, labels)
    return labels, source


def _with_gold_agreement(world, prompts, responses: Responses, pairs: Pairs, labels: Labels) -> Labels:
    """``labels`` with ``gold_agrees`` filled in when the world knows its gold reward (label-noise diagnostics)."""
    if labels.gold_agrees is not None or not hasattr(world, "gold_rewards") or len(pairs) == 0:
        return labels
    gold = world.gold_rewards(prompts, responses)
    diff = gold[pairs.prompt, pairs.a] - gold[pairs.prompt, pairs.b]
    agrees = np.where(diff == 0, True, np.asarray(labels.prefer_a, dtype=bool) == (diff > 0))
    return Labels(prefer_a=labels.prefer_a, gold_agrees=agrees, tie=labels.tie)


def evaluate_policy(world, policy, components: Components, seed: int, iteration: int) -> dict[str, Any]:
    """The testbed's metrics of ``policy``; with ``--evaluator``, the judge's win rate is ``win_rate``.

    The evaluator compares the policy's greedy output with the reference
    output on every evaluation prompt (a tie counts 1/2); the testbed's own
    win rate, if it has one, stays as ``testbed_win_rate``.
    """
    metrics = dict(world.evaluate(policy, streams.stream(seed, iteration, "evaluate")))
    _require_finite_metrics(metrics, iteration)
    judge = components.evaluator
    if judge is None:
        if "win_rate" not in metrics:
            raise UsageError(f"testbed {components.testbed.name!r} reports no win rate of its own: pass "
                             "--evaluator JUDGE (harness list judges) to judge the policy against the reference outputs")
        return metrics
    if not hasattr(world, "evaluation_pairs"):
        raise UsageError(f"--evaluator {judge.name!r}: this testbed's worlds give no evaluation pairs "
                         "(World.evaluation_pairs); drop --evaluator")
    prompts, pair_responses = world.evaluation_pairs(policy, streams.stream(seed, iteration, "evaluation-pairs"))
    e = len(prompts)
    pairs = Pairs(prompt=np.arange(e), a=np.zeros(e, dtype=np.int64), b=np.ones(e, dtype=np.int64))
    labels = judge.compare(world=world, prompts=prompts, responses=pair_responses, pairs=pairs,
                           rng=streams.stream(seed, iteration, "evaluator"))
    tie = labels.tie_mask()
    wins = np.where(tie, 0.5, np.asarray(labels.prefer_a, dtype=np.float64))
    for key in ("win_rate", "win_rate_se"):
        if key in metrics:
            metrics[f"testbed_{key}"] = metrics.pop(key)
    metrics["win_rate"] = float(wins.mean()) if e else 0.0
    metrics["win_rate_se"] = float(wins.std(ddof=1) / np.sqrt(e)) if e > 1 else 0.0
    metrics["evaluator_tie_share"] = float(tie.mean()) if e else 0.0
    if hasattr(world, "gold_rewards") and e:  # gold of the very outputs the evaluator judged (greedy)
        metrics["greedy_gold_reward"] = float(np.mean(world.gold_rewards(prompts, pair_responses)[:, 0]))
    _require_finite_metrics(metrics, iteration)
    if hasattr(world, "evaluation_report"):  # testbed extras from the verdicts (hf: AlpacaEval's win rate)
        metrics.update(world.evaluation_report(iteration=iteration, seed=seed, prompts=prompts,
                                               responses=pair_responses, labels=labels, annotator=judge.name))
    return metrics


def require_finite(values: np.ndarray, step: str, iteration: int, what: str) -> None:
    """NonFiniteError naming the step and iteration if any of ``values`` is NaN or infinite.

    Checked where each number first appears (log-probs, scores, losses,
    metrics), so a bad value stops the run at its source, long before a NaN
    could reach a selector's ranking or the leaderboard.
    """
    values = np.asarray(values, dtype=np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        nan = int(np.isnan(values).sum())
        raise NonFiniteError(
            f"iteration {iteration}, step {step!r}: {int(bad.sum())} of {values.size} {what} are not finite "
            f"({nan} NaN, {int(bad.sum()) - nan} infinite); the run stops here so that nothing NaN is recorded"
        )


def _require_finite_metrics(metrics: dict[str, Any], iteration: int) -> None:
    for key, value in metrics.items():
        if isinstance(value, float) and not np.isfinite(value):
            require_finite(np.array([value]), "evaluate", iteration, f"evaluation metric {key!r}")


def _judge_usage(components: Components) -> dict[str, int]:
    """Every judge's spending counters, as ``<role>_<counter>``."""
    usage: dict[str, int] = {}
    for role, judge in components.judges().items():
        for key, value in judge.usage().items():
            usage[f"{role}_{key}"] = int(value)
    return usage


def _usage_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """What the judges spent between two readings of :func:`_judge_usage`."""
    return {key: value - before.get(key, 0) for key, value in after.items()}


def _labels_from_scores(world, prompts, responses: Responses, pairs: Pairs, explicit: np.ndarray) -> Labels:
    """Labels of pairs whose responses were already scored by the gold judge: the higher score wins."""
    prefer_a = explicit[pairs.prompt, pairs.a] >= explicit[pairs.prompt, pairs.b]
    agrees = None
    if hasattr(world, "gold_rewards"):  # a testbed with a known gold reward: report label noise
        gold = world.gold_rewards(prompts, responses)
        exact_a = gold[pairs.prompt, pairs.a] >= gold[pairs.prompt, pairs.b]
        agrees = exact_a == prefer_a
    return Labels(prefer_a=prefer_a, gold_agrees=agrees)


def _select_pairs(
    components: Components, batch: SelectionBatch, n_pairs: int, seed: int, iteration: int,
    corpus_batch: SelectionBatch | None = None,
) -> tuple[Pairs, Pairs]:
    """Instance level, then corpus level, each checked against the selector contract.

    ``batch`` goes to the instance selector, ``corpus_batch`` (default: the
    same) to the corpus selector; a batch that carries exact gold for a
    selector that did not declare ``needs_exact_gold`` is refused
    (SelectionError) before that selector is called.
    """
    instance, corpus = components.instance_selector, components.corpus_selector
    corpus_batch = batch if corpus_batch is None else corpus_batch
    check_gold_hand_over(instance, batch, "instance selector")
    check_gold_hand_over(corpus, corpus_batch, "corpus selector")
    before = streams.global_rng_state()
    offered = instance.select_instances(batch, streams.stream(seed, iteration, "instance"))
    _refuse_global_draws(before, f"instance selector {instance.name!r}")
    check_instance_pairs(offered, batch, f"instance selector {instance.name!r}")
    n_keep = min(n_pairs, len(offered))
    kept = corpus.select_corpus(corpus_batch, offered, n_keep, streams.stream(seed, iteration, "corpus"))
    _refuse_global_draws(before, f"corpus selector {corpus.name!r}")
    check_corpus_pairs(kept, offered, n_keep, f"corpus selector {corpus.name!r}")
    return offered, kept


def _refuse_global_draws(before: tuple, selector: str) -> None:
    """SelectionError when a selector drew from a global RNG: the same seed would not give the same pairs."""
    used = streams.global_rngs_used(before)
    if used:
        raise SelectionError(
            f"{selector} drew from the global {' and '.join(used)} RNG, so the same seed would not select the "
            "same pairs; draw from the numpy Generator it is passed (`rng`), e.g. rng.permutation(n)"
        )


def _prefixed(values: dict[str, Any], prefix: str) -> dict[str, Any]:
    return {f"{prefix}{key}": value for key, value in values.items()}
