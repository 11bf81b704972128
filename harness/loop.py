"""The iterative DPO loop: the only module that knows the order of the steps.

One iteration (DESIGN.md section 1): draw prompts, sample N responses from
pi_{i-1}, score them, select one pair per prompt and a share of those pairs
across the pool, charge the ledger and annotate the kept pairs, train pi_i with
DPO against the reference (pi_ref, or pi_{i-1} with ``--reference previous``), evaluate. Every stage draws from its own
random stream (:mod:`harness.rng`), so runs with one seed share their worlds,
prompts and first samples whatever their strategies.

Model stages (world building, sampling, log-prob forwards, training,
evaluation) are timed separately from the harness's own work, so the overhead
benchmark can report the share of wall time spent outside model compute.
"""

from __future__ import annotations

import gc
import time
import warnings
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from harness import rng as streams
from harness.budget import Ledger, plan_pool
from harness.config import Components, RunConfig
from harness.errors import NonFiniteError, PluginError, UsageError
from harness.diagnostics import pool_margin_diagnostics, selected_pair_diagnostics
from harness.interfaces import (
    EXPLICIT_REWARD,
    IterationRecord,
    Labels,
    Pairs,
    PreferenceData,
    Reporter,
    Responses,
    SelectionBatch,
    winners_and_losers,
)
from harness.labelling import LabelDesk, PendingSelection
from harness.progress import NullReporter
from harness.ranks import SINGLE, Ranks
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
class RunResult:
    """What a finished run returns: one row per evaluated policy and the final summary."""

    iterations: list[dict[str, Any]]
    final: dict[str, Any]


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


def _logprobs(ranks: Ranks, world, policy, prompts, responses: Responses) -> np.ndarray:
    """``world.logprobs`` of every response, the prompts split across the run's processes."""
    def rows(part: slice) -> np.ndarray:
        return world.logprobs(policy, prompts[part], Responses(tokens=responses.tokens[part],
                                                               lengths=responses.lengths[part]))

    return ranks.split(len(prompts), rows)


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
) -> RunResult:
    """Run ``config`` end to end and return per-iteration rows and final metrics.

    ``on_iteration`` receives each row as soon as it is complete (iteration 0
    is the initial policy pi_0), e.g. to record it in the leaderboard.
    ``checkpoint(world, state)`` is called after every completed iteration,
    before its row is emitted; ``restore(world)`` returns the state to continue
    from instead of starting at pi_0 (``harness run --resume``). ``desk``
    keeps every label in the leaderboard and runs the external annotator's
    round trip (:mod:`harness.labelling`): with ``--annotator external`` the
    loop raises :class:`~harness.labelling.AwaitingLabels` at the annotation
    step, and on resume continues from the selection it saved there.

    ``ranks``: under a multi-process launch (:mod:`harness.ranks`) only the
    main process samples, selects, annotates, evaluates and calls
    ``checkpoint`` and ``on_iteration``; every process scores and trains, and
    every process returns the same result.
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
                        ranks)
    finally:
        gc.unfreeze()


def build_world(components: Components, world_seed: int, reporter: Reporter):
    """The testbed's world; its ``build_world`` gets the run's annotator when it takes one (the hf seed round)."""
    import inspect

    build = components.testbed.build_world
    extra = {}
    if "annotator" in inspect.signature(build).parameters:
        extra["annotator"] = components.annotator
    return build(seed=world_seed, reporter=reporter, **extra)


def _iterate(config, components, world, reporter, timer, wall_start, emit, checkpoint, restore, desk,
             ranks: Ranks) -> RunResult:
    """The iterations of :func:`run_experiment`, from pi_0's evaluation (or a restored state) on."""
    seed = config.seed
    trainer, allocator = components.trainer, components.allocator
    if restore is not None:
        state = restore(world)
    else:
        with reporter.stage("evaluate pi_0", total=None), timer("evaluate"):
            initial = ranks.main_only(lambda: _evaluate(world, world.initial_policy, components, seed, 0))
        seed_round = {key: value for key, value in dict(getattr(world, "seed_round", None) or {}).items()
                      if isinstance(value, (bool, int, float, str))}  # the seed ledger, on pi_0's row
        state = LoopState(0, world.initial_policy, [{"iteration": 0, **initial, **seed_round}], {}, [])
        ranks.main_only(lambda: _save_then_emit(checkpoint, emit, world, state, timer))
    policy, rows, history = state.policy, list(state.rows), list(state.history)
    # The reference the current policy was trained against: implicit rewards for
    # selection are computed against it (DESIGN section 3).
    reference = state.reference if state.reference is not None else world.reference_policy
    ledger = Ledger(config.budget, charged=dict(state.charged), proxy_calls=dict(state.proxy_calls))

    for iteration in range(state.iteration + 1, config.iterations + 1):
        before = dict(timer.seconds)
        plan = allocator.allocate(total_labels=config.budget, iterations=config.iterations, history=tuple(history))
        labels = min(int(plan[iteration - 1]), ledger.remaining)
        pool = plan_pool(labels, config.keep, *components.pool_costs(config.n_responses))
        label = f"iteration {iteration}/{config.iterations}"

        # The closures below run at once, on the main process only (harness.ranks); the others get their results.
        def draw() -> PendingSelection | tuple[np.ndarray, Responses]:
            # Pairs out for external labelling when the run stopped: continue from them.
            pending = desk.pending(iteration) if desk is not None and components.external_annotation else None
            if pending is not None:
                return pending
            with timer("prompts"):
                prompts = world.draw_prompts(pool.prompts, streams.stream(seed, iteration, "prompts"))
            with reporter.stage(f"{label}: sample {pool.prompts}×{config.n_responses}"), timer("sample"):
                return prompts, world.sample(policy, prompts, config.n_responses,
                                             streams.stream(seed, iteration, "sample"))

        usage_before = _judge_usage(components)
        drawn = ranks.main_only(draw)
        logp_policy = logp_ref = None
        if not isinstance(drawn, PendingSelection) and components.scorers:  # log-probs only when a column needs them
            prompts, responses = drawn
            with reporter.stage(f"{label}: score {responses.tokens.shape[0] * config.n_responses} responses"), timer("logprobs"):
                logp_policy = _logprobs(ranks, world, policy, prompts, responses)
                logp_ref = _logprobs(ranks, world, reference, prompts, responses)
            require_finite(logp_policy, "logprobs", iteration, "log-probs of the policy")
            require_finite(logp_ref, "logprobs", iteration, "log-probs of the reference")

        def select_and_annotate() -> tuple[PendingSelection, Labels, Ledger]:
            if isinstance(drawn, PendingSelection):
                selection, explicit = drawn, None
                if selection.proxy_calls:
                    ledger.count_proxy(iteration, selection.proxy_calls)  # made before the run stopped for labels
            else:
                selection, explicit = _select(components, config, world, drawn, logp_policy, logp_ref, ledger,
                                              iteration, pool.pairs, timer, desk)
            source = None  # who labelled the pairs, when they are still to be recorded
            with timer("annotate"):
                if components.explicit_source == "gold":
                    verdict = _labels_from_scores(world, selection.prompts, selection.responses, selection.kept,
                                                  explicit)
                else:
                    ledger.charge(iteration, len(selection.kept))
                    verdict, source = _annotate(components, config, world, selection, desk, seed, iteration)
            if desk is not None and source is not None:
                with timer("labels"):  # harness work: keep every label with its text
                    desk.record_pairs(iteration, world, selection.prompts, selection.responses, selection.kept,
                                      verdict, source)
            return selection, verdict, ledger

        selection, verdict, ledger = ranks.main_only(select_and_annotate)  # elsewhere: the main process's ledger
        prompts, responses, distinct, kept = selection.prompts, selection.responses, selection.distinct, selection.kept
        logp_policy, logp_ref = selection.logp_policy, selection.logp_ref
        pool_diagnostics = {} if logp_policy is None else pool_margin_diagnostics(
            reward=logp_policy - logp_ref, distinct=distinct, beta=trainer.beta)

        tie = verdict.tie_mask()
        if tie.any():  # a tie was paid for but says nothing to DPO: drop it from training
            kept = kept.take(np.flatnonzero(~tie))
            verdict = Labels(
                prefer_a=np.asarray(verdict.prefer_a, dtype=bool)[~tie],
                gold_agrees=None if verdict.gold_agrees is None else np.asarray(verdict.gold_agrees)[~tie],
            )
        prefer_a = np.asarray(verdict.prefer_a, dtype=bool)

        # Log-probs of the kept responses: reused from scoring, or computed for just them.
        if logp_policy is None:
            with timer("logprobs"):
                logp_policy, logp_ref = _logprobs_of_pairs(ranks, world, (policy, reference), prompts, responses,
                                                           kept)
            for values, whose in ((logp_policy, "policy"), (logp_ref, "reference")):
                require_finite(values[kept.prompt, kept.a], "logprobs", iteration, f"log-probs of the {whose}")
                require_finite(values[kept.prompt, kept.b], "logprobs", iteration, f"log-probs of the {whose}")

        with timer("select"):
            # fixed: train against pi_ref; previous: against pi_{i-1} itself, whose log-probs are at hand.
            train_ref = logp_ref if config.reference == "fixed" else logp_policy
            data = PreferenceData.from_labels(
                prompts=prompts, responses=responses, pairs=kept, prefer_a=prefer_a, ref_logps=train_ref
            )
            winner, loser = winners_and_losers(kept, prefer_a)
            reward = logp_policy - logp_ref
            diagnostics = selected_pair_diagnostics(
                reward_chosen=reward[kept.prompt, winner],
                reward_rejected=reward[kept.prompt, loser],
                beta=trainer.beta,
                gold_agrees=None if verdict.gold_agrees is None else np.asarray(verdict.gold_agrees),
            )

        with reporter.stage(f"{label}: train on {len(kept)} pairs"), timer("train"):
            try:
                trained = trainer.train(policy=policy, data=data, rng=streams.stream(seed, iteration, "train"))
            except NonFiniteError as exc:
                raise NonFiniteError(f"iteration {iteration}, step 'train' (trainer {trainer.name!r}): {exc}") from None
        require_finite(np.array([trained.loss_first, trained.loss_last], dtype=np.float64), "train", iteration,
                       f"losses of trainer {trainer.name!r}")
        with timer("check"):
            trained_fields = {
                **{f"train_{key}": value for key, value in dict(getattr(trained, "log", None) or {}).items()},
                **ranks.main_only(lambda: _check_training(config, trainer, iteration, policy, trained, len(data))),
            }
        with reporter.stage(f"{label}: KL to the previous policy"), timer("logprobs"):
            step_kl = _kl_to_previous(ranks, world, policy, trained.policy, prompts, responses, logp_policy)
        if config.reference == "previous":
            reference = policy  # pi_i was trained against pi_{i-1}
        policy = trained.policy

        with reporter.stage(f"{label}: evaluate"), timer("evaluate"):
            metrics = ranks.main_only(lambda: _evaluate(world, policy, components, seed, iteration))

        spent = {stage: timer.seconds.get(stage, 0.0) - before.get(stage, 0.0) for stage in timer.seconds}
        row = ranks.share({
            "iteration": iteration,
            **metrics,
            "labels": ledger.charged.get(iteration, 0),
            "labels_planned": labels,
            "labels_pool": pool.prompt_labels if components.explicit_source == "gold" else 0,
            "proxy_calls": ledger.proxy_calls.get(iteration, 0),
            "prompts": pool.prompts,
            "instance_pairs": selection.offered,
            "ties": int(tie.sum()),
            "duplicate_share": float(1.0 - distinct.mean()),
            **pool_diagnostics,
            **_prefixed(diagnostics, "sel_"),
            "train_steps": trained.steps,
            "train_epochs": trained.epochs,
            "loss_first": trained.loss_first,
            "loss_last": trained.loss_last,
            **trained_fields,
            **step_kl,
            **_usage_delta(usage_before, _judge_usage(components)),
            **{f"time_{stage}": round(seconds, 4) for stage, seconds in sorted(spent.items())},
        })  # the main process's row (its judges' spending, its timings) on every process
        rows.append(row)
        history.append(IterationRecord(iteration=iteration, labels=row["labels"], metrics=metrics))
        state = LoopState(
            iteration,
            policy,
            list(rows),
            dict(ledger.charged),
            list(history),
            dict(ledger.proxy_calls),
            None if reference is world.reference_policy else reference,
        )
        ranks.main_only(lambda: _save_then_emit(checkpoint, emit, world, state, timer))

    return RunResult(iterations=rows, final=_final_metrics(rows, ledger, timer, time.perf_counter() - wall_start))


def _kl_to_previous(ranks: Ranks, world, before, after, prompts, responses: Responses,
                    logp_before: np.ndarray | None) -> dict[str, float]:
    """KL(pi_{i-1} || pi_i) and its standard error, from the first response of every pool prompt.

    Those responses are plain samples of pi_{i-1} (selection never chose
    them), so with r = pi_i(y) / pi_{i-1}(y) the mean of (r - 1) - log r
    over them is an unbiased estimate of the KL of one training step that is
    never negative (Schulman's k3 estimator; the plain mean of -log r has far
    more variance at small steps) and is exactly 0 when the weights did not
    change. It costs one forward of pi_i over one response per prompt (and of
    pi_{i-1} when scoring did not compute it).
    """
    first = Responses(tokens=responses.tokens[:, :1], lengths=responses.lengths[:, :1])
    if logp_before is not None and np.isfinite(logp_before[:, 0]).all():
        old = np.asarray(logp_before[:, 0], dtype=np.float64)
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
            iteration: int, n_pairs: int, timer: StageTimer, desk) -> tuple[PendingSelection, np.ndarray | None]:
    """Explicit scores (when a selector reads them), then both selection levels, as a :class:`PendingSelection`."""
    prompts, responses = drawn
    seed = config.seed
    explicit = _explicit_scores(components, world, prompts, responses, ledger, iteration, seed, timer, desk)
    with timer("select"):
        distinct = responses.distinct_mask()
        scores = _score_columns(components, logp_policy, logp_ref, responses.lengths)
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
        )
        offered, kept = _select_pairs(components, batch, n_pairs, seed, iteration)
    selection = PendingSelection(prompts, responses, distinct, len(offered), kept, logp_policy, logp_ref,
                                 proxy_calls=ledger.proxy_calls.get(iteration, 0))
    return selection, explicit


def _save_then_emit(checkpoint, emit, world, state: LoopState, timer: StageTimer) -> None:
    """Checkpoint first, then report the row: a recorded row always has a checkpoint to resume from."""
    if checkpoint is not None:
        with timer("checkpoint"):
            checkpoint(world, state)
    emit(state.rows[-1])


def _score_columns(components: Components, logp_policy, logp_ref, lengths) -> dict[str, np.ndarray]:
    """Every scorer column a selector declared, as ``(M, N)`` float64 (explicit scores come from judges)."""
    return {
        column: np.asarray(scorer.score(logp_policy=logp_policy, logp_ref=logp_ref, lengths=lengths), dtype=np.float64)
        for column, scorer in components.scorers.items()
    }


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
    if desk is not None and components.explicit_source == "gold":
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
        if desk is None:
            raise UsageError("--annotator external needs a leaderboard and a run directory: use harness run")
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


def _evaluate(world, policy, components: Components, seed: int, iteration: int) -> dict[str, Any]:
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
    components: Components, batch: SelectionBatch, n_pairs: int, seed: int, iteration: int
) -> tuple[Pairs, Pairs]:
    """Instance level, then corpus level, each checked against the selector contract."""
    instance, corpus = components.instance_selector, components.corpus_selector
    offered = instance.select_instances(batch, streams.stream(seed, iteration, "instance"))
    check_instance_pairs(offered, batch, f"instance selector {instance.name!r}")
    n_keep = min(n_pairs, len(offered))
    kept = corpus.select_corpus(batch, offered, n_keep, streams.stream(seed, iteration, "corpus"))
    check_corpus_pairs(kept, offered, n_keep, f"corpus selector {corpus.name!r}")
    return offered, kept


def _final_metrics(rows: list[dict[str, Any]], ledger: Ledger, timer: StageTimer, wall: float) -> dict[str, Any]:
    """The run's summary: the last policy's metrics, labels spent and where the time went."""
    last = rows[-1]
    model = timer.model_seconds()
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


def _prefixed(values: dict[str, Any], prefix: str) -> dict[str, Any]:
    return {f"{prefix}{key}": value for key, value in values.items()}
