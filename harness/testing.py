"""Contract tests that plugin authors subclass.

Write a test class that inherits a contract and names your component; pytest
then runs every ``test_*`` method of the contract against it::

    from harness.testing import SelectorContract
    class TestMySelector(SelectorContract):
        selector_class = MySelector          # settings = {"k": 3} to pass options

and likewise ``AllocatorContract`` with ``allocator_class``. The contracts are
plain classes with plain ``def test_...(self)`` methods (no fixtures, no pytest
import), so they also run under unittest-style callers that instantiate the
class and call the methods. Override the class attributes (``seeds``,
``n_prompts``, ``n_responses``, ``iterations``, ``totals``) to change the
cases, or ``make_selector``/``make_allocator`` when your class needs more than
a settings mapping to be built.

**SelectorContract** builds synthetic pools from a seed: M prompts x N
responses whose tokens repeat within a prompt (some prompts have a single
distinct response, some two, the rest a random number), ``lengths`` and the
``distinct`` mask that :meth:`harness.interfaces.Responses.distinct_mask`
derives from those tokens, and a standard-normal score column for every name
in the *instance's* ``requires`` (identical responses get identical scores, so
a selector that ignores ``distinct`` picks zero-margin duplicates and fails).
``tokens`` are set only when ``needs_tokens`` is true, as the loop does. It
checks that:

* instance pairs are int64 arrays of equal length, 0 <= a, b < N, a != b,
  prompts in range, at most one pair per prompt, both responses marked
  distinct, and never two identical responses;
* the corpus level returns exactly ``min(n_keep, len(pairs))`` of the given
  pairs (also pairs from another instance selector), without repeats, and
  nothing for ``n_keep = 0`` or an empty pool;
* both levels are deterministic for equal Generator seeds, never touch the
  global ``numpy.random`` or ``random`` state, and do not depend on it;
* N = 2, a single prompt, an empty pool, all-equal scores (ties) and heavy
  duplication work, and the batch's arrays are not modified;
* (scorer contract 2) ``stochastic_passes`` is an int, 0 or at least 2. For
  a selector that names K > 0, the columns it requires that registered
  stochastic scorers compute are filled by those scorers from K synthetic
  passes (so a standard deviation is never negative), every other column as
  above;
* (exact gold) ``needs_exact_gold`` is a bool. A selector that declares it
  gets ``batch.exact_gold`` (:class:`~harness.interfaces.ExactGold`: a
  standard-normal gold reward per distinct response, random prompts and a
  :class:`ToyPolicy`), runs every check above with it, must leave the gold
  and the policy's parameters as they were, and must refuse
  (SelectionError) a batch that carries none. A selector that does not
  declare it is never handed exact gold: its batch carries none,
  ``batch.gold()`` refuses, and the loop's hand-over check
  (:func:`~harness.interfaces.check_gold_hand_over`) refuses a batch that
  carries it.
* (selector contract 2) ``feature_source`` is None or one of
  :data:`~harness.interfaces.FEATURE_SOURCES` and ``stateful`` a bool. A
  selector that names a source gets ``batch.features``: :data:`FEATURE_WIDTH`
  standard-normal features per distinct response (identical responses equal),
  and runs every check above with them. A stateless selector's
  ``state_dict()`` is empty. A stateful one is fed two iterations of
  feedback (:func:`make_feedback`: random labels, some ties) and must keep
  its state in numeric numpy arrays that a fresh instance loads back bit for
  bit and then selects and learns exactly as the original; ``observe`` must
  be deterministic for equal Generator seeds, leave the global RNGs and the
  feedback alone; selecting must leave the state alone.
* (selector contract 3) ``steers_sampling`` is a bool. A selector that steers
  gets ``batch.sources`` from its own ``sampling_sources`` (drawn from a fixed
  Generator) and runs every check above with them; ``sampling_sources`` must
  give ``(M, N)`` integer codes into
  :data:`~harness.interfaces.SAMPLING_SOURCES`, deterministic for equal
  Generator seeds, leaving the global RNGs alone.

**AllocatorContract** checks that a plan has one non-negative int per
iteration, that labels already spent plus the plan for the remaining
iterations never exceed the total, and that plans are deterministic and leave
the global RNGs alone.

The other four kinds have a contract each, subclassed the same way:
``ScorerContract`` (``scorer_class``), ``TrainerContract``
(``trainer_class``), ``JudgeContract`` (``judge_class``) and
``TestbedContract`` (``testbed_class``), which also checks the world the
testbed builds, its optional methods included. Each class documents its
checks and the inputs it builds; every one also checks that the class passes
the host's registration checks, that the instance's ``settings`` are exactly
its declared options (defaults, or the contract's ``settings`` coerced) and
that an unknown option is a :class:`~harness.errors.UsageError`.
:data:`CONTRACTS` maps each kind to its contract. A test that needs an
optional method the world does not have raises :class:`unittest.SkipTest`,
which pytest and unittest both report as a skip.
"""

from __future__ import annotations

import copy
import inspect
import math
import numbers
import random
import sys
import tempfile
import unittest
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import numpy as np

from harness import rng as streams
from harness import validation
from harness.errors import CheckpointError, SelectionError, UsageError
from harness.interfaces import (
    Allocator,
    Component,
    ExactGold,
    FEATURE_SOURCES,
    SAMPLING_SOURCES,
    Feedback,
    IterationRecord,
    Judge,
    Labels,
    Pairs,
    Policy,
    PreferenceData,
    Responses,
    Scorer,
    SelectionBatch,
    Selector,
    Testbed,
    Trainer,
    TrainerFactory,
    TrainResult,
    batch_for,
    check_component_class,
    check_gold_hand_over,
)

__all__ = [
    "CONTRACTS",
    "FEATURE_WIDTH",
    "AllocatorContract",
    "JudgeContract",
    "ScorerContract",
    "SelectorContract",
    "SyntheticPool",
    "TestbedContract",
    "TokenTextWorld",
    "ToyPolicy",
    "TrainerContract",
    "check_labels",
    "check_settings",
    "make_feedback",
    "make_pool",
    "scorer_inputs",
    "stochastic_samples",
    "toy_preference_data",
    "world_preference_data",
]


# ----------------------------------------------------------------- synthetic pools


@dataclass(frozen=True)
class SyntheticPool:
    """A synthetic selection pool and the identity of every response in it.

    ``response_id[m, n]`` is equal for two responses of prompt ``m`` exactly
    when their tokens (and lengths) are identical.
    """

    batch: SelectionBatch
    tokens: np.ndarray
    response_id: np.ndarray

    def identical(self, pairs: Pairs) -> np.ndarray:
        """Bool per pair: the two responses are identical."""
        ids = self.response_id
        return ids[pairs.prompt, pairs.a] == ids[pairs.prompt, pairs.b]


def make_pool(
    seed: int,
    *,
    n_prompts: int = 64,
    n_responses: int = 8,
    requires: Sequence[str] = (),
    needs_tokens: bool = False,
    scores: str = "normal",
    duplication: str = "mixed",
    max_length: int = 6,
    passes: int = 0,
    exact_gold: bool = False,
    features: int = 0,
    sources: np.ndarray | None = None,
) -> SyntheticPool:
    """A synthetic pool of ``n_prompts`` x ``n_responses`` responses, a pure function of ``seed``.

    :param requires: score columns to fill.
    :param scores: ``"normal"`` (standard normal per distinct response) or
        ``"equal"`` (every score 0.0: all margins tie).
    :param duplication: ``"mixed"`` (prompts 0, 1, 2 have 1, 2, N distinct
        responses, the rest a random number), ``"heavy"`` (1 to 3 distinct
        responses per prompt) or ``"none"`` (all responses distinct).
    :param passes: K > 0 (scorer contract 2): the columns in ``requires`` that
        a registered stochastic scorer computes come from that scorer, given
        K synthetic stochastic passes (identical responses get identical
        passes) and synthetic log-probs (:func:`scorer_inputs`' scales); with
        ``scores="equal"`` every pass is equal, so every spread is 0.
    :param exact_gold: set ``batch.exact_gold`` (what a selector that declares
        ``needs_exact_gold`` is handed): a standard-normal gold reward per
        distinct response (0 everywhere with ``scores="equal"``), random
        prompts of :data:`GOLD_PROMPT_LENGTH` tokens and a :class:`ToyPolicy`
        of :data:`GOLD_VOCAB` tokens, all from a stream of their own (the rest
        of the pool is the same with or without it).
    :param features: d > 0 (selector contract 2): set ``batch.features``,
        ``(M, N, d)`` standard-normal features per distinct response
        (identical responses equal), from a stream of their own.
    :param sources: ``(M, N)`` codes into
        :data:`~harness.interfaces.SAMPLING_SOURCES` for ``batch.sources``
        (selector contract 3), or None.
    """
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x5E1EC7]))
    m, n = int(n_prompts), int(n_responses)
    if duplication == "none":
        n_unique = np.full(m, n, dtype=np.int64)
    elif duplication == "heavy":
        n_unique = rng.integers(1, min(3, n) + 1, size=m)
    elif duplication == "mixed":
        n_unique = rng.integers(1, n + 1, size=m)
        n_unique[: min(m, 3)] = [1, 2, n][: min(m, 3)]
    else:
        raise ValueError(f"unknown duplication {duplication!r}")
    rows = np.arange(m)[:, None]
    slots = np.arange(n)[None, :]
    ids = np.floor(rng.random((m, n)) * n_unique[:, None]).astype(np.int64)
    # Every id below n_unique appears at least once, at random slots: slot
    # perm[k] gets id k for k < n_unique, the other slots keep their random id.
    perm = np.argsort(rng.random((m, n)), axis=1)
    ids[rows, perm] = np.where(slots < n_unique[:, None], slots, ids[rows, perm])
    # A token row per (prompt, id): the first token encodes the id, so different
    # ids never give identical responses; tokens after the response are padding.
    table = rng.integers(3, 35, size=(m, n, max_length))
    table[:, :, 0] = 3 + np.arange(n)
    table_lengths = rng.integers(1, max_length + 1, size=(m, n))
    tokens = table[rows, ids].astype(np.int64)
    lengths = table_lengths[rows, ids].astype(np.int64)
    tokens[np.arange(max_length)[None, None, :] >= lengths[:, :, None]] = 0
    distinct = Responses(tokens=tokens, lengths=lengths).distinct_mask()
    columns: dict[str, np.ndarray] = {}
    stochastic = _stochastic_scorers(requires) if passes else {}
    if stochastic:
        inputs = _stochastic_inputs(rng, ids, lengths, int(passes), equal=scores == "equal")
        for column, scorer in stochastic.items():
            columns[column] = np.ascontiguousarray(scorer.score(**inputs), dtype=np.float64)
    for column in requires:
        if column in columns:
            continue
        if scores == "normal":
            values = rng.standard_normal((m, n))[rows, ids]
        elif scores == "equal":
            values = np.zeros((m, n))
        else:
            raise ValueError(f"unknown scores {scores!r}")
        columns[column] = np.ascontiguousarray(values, dtype=np.float64)
    batch = SelectionBatch(
        lengths=lengths,
        distinct=distinct,
        scores=columns,
        beta=1.0,
        tokens=tokens if needs_tokens else None,
        exact_gold=_exact_gold(seed, ids, equal=scores == "equal") if exact_gold else None,
        features=_features(seed, ids, int(features)) if features else None,
        sources=None if sources is None else np.asarray(sources, dtype=np.int8),
    )
    return SyntheticPool(batch=batch, tokens=tokens, response_id=ids)


FEATURE_WIDTH = 6
"""d of the features :class:`SelectorContract` hands a selector that names a ``feature_source``."""


def _features(seed: int, ids: np.ndarray, width: int) -> np.ndarray:
    """``(M, N, width)`` standard-normal features, equal for equal ``ids`` of a prompt."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0xFEA7]))
    m, n = ids.shape
    table = rng.standard_normal((m, n, width))
    return np.ascontiguousarray(table[np.arange(m)[:, None], ids], dtype=np.float64)


def make_feedback(pool: SyntheticPool, kept: Pairs, seed: int, iteration: int = 1) -> Feedback:
    """A :class:`~harness.interfaces.Feedback` for ``kept`` pairs of ``pool``: random labels, about one tie in
    ten, and the pool's features; a pure function of ``seed``."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0xFEED]))
    return Feedback(iteration=iteration, kept=kept, prefer_a=rng.random(len(kept)) < 0.5,
                    tie=rng.random(len(kept)) < 0.1, features=pool.batch.features)


GOLD_VOCAB = 64
"""Tokens of the :class:`ToyPolicy` in a pool's exact gold (above every token id :func:`make_pool` writes)."""
GOLD_PROMPT_LENGTH = 3


def _exact_gold(seed: int, ids: np.ndarray, *, equal: bool = False) -> ExactGold:
    """The exact gold of a pool whose response ``[m, n]`` is ``ids[m, n]`` of its prompt (identical: equal gold)."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x601D]))
    m, n = ids.shape
    rows = np.arange(m)[:, None]
    rewards = np.zeros((m, n)) if equal else rng.standard_normal((m, n))[rows, ids]
    prompts = rng.integers(0, GOLD_VOCAB, size=(m, GOLD_PROMPT_LENGTH), dtype=np.int64)
    return ExactGold(rewards=np.ascontiguousarray(rewards, dtype=np.float64), prompts=prompts,
                     policy=ToyPolicy(vocab_size=GOLD_VOCAB, seed=int(seed)))


def _stochastic_scorers(columns: Sequence[str]) -> dict[str, Scorer]:
    """The registered stochastic scorers (scorer contract 2) of ``columns``, by column."""
    from harness.plugins import load_registry

    registry = load_registry()
    names = set(registry.names("scorer"))
    found = {}
    for column in columns:
        if column in names:
            scorer = registry.create("scorer", column)
            if getattr(scorer, "stochastic", False):
                found[column] = scorer
    return found


def _stochastic_inputs(rng: np.random.Generator, ids: np.ndarray, lengths: np.ndarray, passes: int,
                       equal: bool = False) -> dict[str, np.ndarray]:
    """Scorer inputs with ``logp_samples`` for a pool whose response ``[m, n]`` is ``ids[m, n]`` of its prompt."""
    m, n = ids.shape
    if equal:
        return {"logp_policy": np.zeros((m, n)), "logp_ref": np.zeros((m, n)), "lengths": lengths,
                "logp_samples": np.zeros((passes, m, n))}
    rows = np.arange(m)[:, None]
    logp_ref = -lengths * rng.uniform(0.2, 3.0, size=(m, n))[rows, ids]
    logp_policy = np.minimum(logp_ref + rng.standard_normal((m, n))[rows, ids], -1e-3)
    spread = rng.uniform(0.0, 2.0, size=(m, n))[rows, ids]
    samples = logp_policy[None] + spread[None] * rng.standard_normal((passes, m, n))[:, rows, ids]
    return {"logp_policy": logp_policy, "logp_ref": logp_ref, "lengths": lengths, "logp_samples": samples}


# ------------------------------------------------------------------ assertions


def _check_int_array(value: Any, what: str) -> None:
    assert isinstance(value, np.ndarray), f"{what} must be a numpy array, got {type(value).__name__}"
    assert value.dtype == np.int64, f"{what} must be int64, got {value.dtype}"
    assert value.ndim == 1, f"{what} must be 1-d, got shape {value.shape}"


def check_pairs_arrays(pairs: Any, what: str) -> None:
    """``pairs`` is a :class:`Pairs` of three int64 1-d arrays of equal length."""
    assert isinstance(pairs, Pairs), f"{what} must return harness.interfaces.Pairs, got {type(pairs).__name__}"
    for name in ("prompt", "a", "b"):
        _check_int_array(getattr(pairs, name), f"{what}: pairs.{name}")
    assert pairs.prompt.shape == pairs.a.shape == pairs.b.shape, (
        f"{what}: prompt, a and b differ in length: "
        f"{pairs.prompt.shape}, {pairs.a.shape}, {pairs.b.shape}"
    )


def check_instance_pairs(pool: SyntheticPool, pairs: Any) -> None:
    """Everything the instance-level contract promises about ``pairs`` for ``pool``.

    The same checks the loop runs on every selection (:mod:`harness.validation`),
    plus a direct check that no pair joins two identical token sequences.
    """
    check_pairs_arrays(pairs, "select_instances")
    try:
        validation.check_instance_pairs(pairs, pool.batch, "select_instances")
    except SelectionError as exc:
        raise AssertionError(str(exc)) from None
    assert not pool.identical(pairs).any(), "a pair joins two identical responses"


def check_corpus_pairs(given: Pairs, kept: Any, n_keep: int) -> None:
    """``kept`` holds exactly ``min(n_keep, len(given))`` of ``given``, without repeats."""
    check_pairs_arrays(kept, "select_corpus")
    try:
        validation.check_corpus_pairs(kept, given, n_keep, "select_corpus")
    except SelectionError as exc:
        raise AssertionError(str(exc)) from None


def assert_pairs_equal(first: Pairs, second: Pairs, what: str) -> None:
    for name in ("prompt", "a", "b"):
        assert np.array_equal(getattr(first, name), getattr(second, name)), (
            f"{what}: pairs.{name} differ between two calls"
        )


def assert_global_rng_unchanged(before: tuple[Any, Any, Any], what: str) -> None:
    """No global RNG (numpy's, ``random``'s, torch's) moved since ``before`` (:func:`harness.rng.global_rng_state`):
    the loop refuses the same thing at run time."""
    used = streams.global_rngs_used(before)
    assert not used, (f"{what} used the global {' and '.join(used)} RNG; draw from the numpy Generator it is "
                      "passed (for torch, seed a torch.Generator from it)")


def _foreign_pairs(pool: SyntheticPool, seed: int) -> Pairs:
    """One random pair of distinct responses per prompt, in random order (a > b allowed).

    Stands in for another instance selector's output: a corpus selector must
    accept pairs it did not choose itself.
    """
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0xF0E1]))
    distinct = np.asarray(pool.batch.distinct, dtype=bool)
    if distinct.shape[0] == 0 or distinct.shape[1] < 2:
        return Pairs.empty()
    # Random keys, non-distinct responses last: the two smallest keys are a random distinct pair.
    keys = rng.random(distinct.shape) + (~distinct) * 2.0
    order = np.argsort(keys, axis=1, kind="stable")
    prompts = np.flatnonzero(distinct.sum(axis=1) >= 2)
    return Pairs(prompts, order[prompts, 0], order[prompts, 1])


# ------------------------------------------------------------ selector contract


class SelectorContract:
    """Mixin of contract tests for a :class:`~harness.interfaces.Selector`.

    Subclass it in a class whose name starts with ``Test`` and set
    ``selector_class`` (and ``settings`` for non-default options).
    """

    selector_class: ClassVar[type[Selector]]
    settings: ClassVar[Mapping[str, Any]] = {}
    seeds: ClassVar[tuple[int, ...]] = (0, 1, 2)
    n_prompts: ClassVar[int] = 64
    n_responses: ClassVar[int] = 8

    # -- helpers a subclass may override or use in its own tests

    def make_selector(self) -> Selector:
        return self.selector_class(dict(self.settings))

    def make_pool(self, seed: int, **kwargs: Any) -> SyntheticPool:
        selector = kwargs.pop("selector", None) or self.make_selector()
        kwargs.setdefault("n_prompts", self.n_prompts)
        kwargs.setdefault("n_responses", self.n_responses)
        kwargs.setdefault("passes", int(getattr(selector, "stochastic_passes", 0) or 0))
        kwargs.setdefault("exact_gold", bool(getattr(selector, "needs_exact_gold", False)))
        kwargs.setdefault("features", FEATURE_WIDTH if getattr(selector, "feature_source", None) else 0)
        if getattr(selector, "steers_sampling", False) and "sources" not in kwargs:
            kwargs["sources"] = selector.sampling_sources(int(kwargs["n_prompts"]), int(kwargs["n_responses"]),
                                                          np.random.default_rng([seed, 0x5027]))
        return make_pool(
            seed,
            requires=tuple(selector.requires),
            needs_tokens=bool(selector.needs_tokens),
            **kwargs,
        )

    def run_both_levels(
        self, selector: Selector, pool: SyntheticPool, seed: int, n_keep: int | None = None
    ) -> tuple[Pairs, Pairs]:
        """Instance then corpus selection (keeping half by default), each with its own Generator."""
        instance_rng = np.random.default_rng([seed, 1])
        corpus_rng = np.random.default_rng([seed, 2])
        pairs = selector.select_instances(pool.batch, instance_rng)
        if n_keep is None:
            n_keep = len(pairs) // 2
        kept = selector.select_corpus(pool.batch, pairs, n_keep, corpus_rng)
        return pairs, kept

    def check_pool(self, pool: SyntheticPool, seed: int, n_keeps: Sequence[int] | None = None) -> None:
        selector = self.make_selector()
        rng = np.random.default_rng([seed, 1])
        pairs = selector.select_instances(pool.batch, rng)
        check_instance_pairs(pool, pairs)
        for n_keep in n_keeps if n_keeps is not None else (0, 1, len(pairs) // 2, len(pairs), len(pairs) + 3):
            kept = selector.select_corpus(pool.batch, pairs, n_keep, np.random.default_rng([seed, 2]))
            check_corpus_pairs(pairs, kept, n_keep)

    # -- the contract

    def test_class_registers(self):
        check_component_class("selector", self.selector_class)
        selector = self.make_selector()
        assert all(isinstance(c, str) and c for c in selector.requires), "requires must name columns"

    def test_stochastic_passes_is_declared_sensibly(self):
        passes = getattr(self.make_selector(), "stochastic_passes", 0)
        assert isinstance(passes, numbers.Integral) and not isinstance(passes, bool), (
            f"stochastic_passes must be an int, got {passes!r}"
        )
        assert passes == 0 or passes >= 2, f"stochastic_passes must be 0 (none) or at least 2, got {passes}"

    def test_exact_gold_is_declared_sensibly(self):
        declared = getattr(self.make_selector(), "needs_exact_gold", False)
        assert isinstance(declared, bool), f"needs_exact_gold must be True or False, got {declared!r}"

    def test_exact_gold_reaches_only_a_declaring_selector(self):
        selector = self.make_selector()
        with_gold = self.make_pool(self.seeds[0], exact_gold=True).batch
        rng = np.random.default_rng(self.seeds[0])
        if getattr(selector, "needs_exact_gold", False):
            assert batch_for(selector, with_gold) is with_gold, "a declaring selector must be handed its exact gold"
            check_gold_hand_over(selector, with_gold, "selector")
            bare = with_gold.without_gold()
            _raises(SelectionError, lambda: selector.select_instances(bare, rng),
                    "select_instances of a selector that declares needs_exact_gold, on a batch without it,")
            pairs = _foreign_pairs(self.make_pool(self.seeds[0]), self.seeds[0])
            _raises(SelectionError, lambda: selector.select_corpus(bare, pairs, len(pairs), rng),
                    "select_corpus of a selector that declares needs_exact_gold, on a batch without it,")
            return
        pool = self.make_pool(self.seeds[0])
        assert pool.batch.exact_gold is None, "a selector that does not declare needs_exact_gold got exact gold"
        assert batch_for(selector, with_gold).exact_gold is None, "exact gold would reach an undeclared selector"
        _raises(SelectionError, lambda: check_gold_hand_over(selector, with_gold, "selector"),
                "handing exact gold to a selector that does not declare needs_exact_gold")
        _raises(SelectionError, pool.batch.gold, "batch.gold() on an undeclared selector's batch")

    def test_instance_pairs_are_valid(self):
        for seed in self.seeds:
            pool = self.make_pool(seed)
            pairs = self.make_selector().select_instances(pool.batch, np.random.default_rng(seed))
            check_instance_pairs(pool, pairs)

    def test_prompts_without_two_distinct_responses_give_no_pair(self):
        for seed in self.seeds:
            pool = self.make_pool(seed, duplication="heavy")
            pairs = self.make_selector().select_instances(pool.batch, np.random.default_rng(seed))
            check_instance_pairs(pool, pairs)
            n_distinct = np.asarray(pool.batch.distinct, dtype=bool).sum(axis=1)
            assert np.all(n_distinct[pairs.prompt] >= 2)

    def test_corpus_keeps_min_of_n_keep_and_pairs(self):
        for seed in self.seeds:
            self.check_pool(self.make_pool(seed), seed)

    def test_corpus_accepts_pairs_from_another_selector(self):
        selector = self.make_selector()
        for seed in self.seeds:
            pool = self.make_pool(seed)
            given = _foreign_pairs(pool, seed)
            for n_keep in (0, 1, len(given) // 3, len(given), len(given) + 1):
                kept = selector.select_corpus(pool.batch, given, n_keep, np.random.default_rng(seed))
                check_corpus_pairs(given, kept, n_keep)

    def test_corpus_n_keep_zero_is_empty(self):
        pool = self.make_pool(self.seeds[0])
        selector = self.make_selector()
        pairs = selector.select_instances(pool.batch, np.random.default_rng(0))
        kept = selector.select_corpus(pool.batch, pairs, 0, np.random.default_rng(0))
        check_pairs_arrays(kept, "select_corpus")
        assert len(kept) == 0, "n_keep=0 must keep no pair"

    def test_corpus_of_no_pairs_is_empty(self):
        pool = self.make_pool(self.seeds[0])
        kept = self.make_selector().select_corpus(pool.batch, Pairs.empty(), 5, np.random.default_rng(0))
        check_corpus_pairs(Pairs.empty(), kept, 5)

    def test_deterministic_for_equal_seeds(self):
        for seed in self.seeds:
            pool = self.make_pool(seed)
            first = self.run_both_levels(self.make_selector(), pool, seed)
            second = self.run_both_levels(self.make_selector(), pool, seed)
            assert_pairs_equal(first[0], second[0], "select_instances with equal seeds")
            assert_pairs_equal(first[1], second[1], "select_corpus with equal seeds")

    def test_does_not_touch_global_rng(self):
        pool = self.make_pool(self.seeds[0])
        before = streams.global_rng_state()
        self.run_both_levels(self.make_selector(), pool, self.seeds[0])
        assert_global_rng_unchanged(before, "the selector")

    def test_does_not_depend_on_global_rng(self):
        pool = self.make_pool(self.seeds[0])
        saved = streams.global_rng_state()
        try:
            results = []
            for global_seed in (1, 12345):
                np.random.seed(global_seed)
                random.seed(global_seed)
                results.append(self.run_both_levels(self.make_selector(), pool, self.seeds[0]))
        finally:
            np.random.set_state(saved[0])
            random.setstate(saved[1])
        assert_pairs_equal(results[0][0], results[1][0], "select_instances under different global seeds")
        assert_pairs_equal(results[0][1], results[1][1], "select_corpus under different global seeds")

    def test_two_responses(self):
        for seed in self.seeds:
            pool = self.make_pool(seed, n_responses=2)
            self.check_pool(pool, seed)
            pairs = self.make_selector().select_instances(pool.batch, np.random.default_rng(seed))
            # With N = 2 the only possible pair is (0, 1) in either order.
            assert np.all(np.minimum(pairs.a, pairs.b) == 0) and np.all(np.maximum(pairs.a, pairs.b) == 1)

    def test_single_prompt(self):
        for seed in self.seeds:
            pool = self.make_pool(seed, n_prompts=1, duplication="none")
            self.check_pool(pool, seed)

    def test_empty_pool(self):
        pool = self.make_pool(self.seeds[0], n_prompts=0)
        selector = self.make_selector()
        pairs = selector.select_instances(pool.batch, np.random.default_rng(0))
        check_instance_pairs(pool, pairs)
        assert len(pairs) == 0
        kept = selector.select_corpus(pool.batch, pairs, 3, np.random.default_rng(0))
        check_corpus_pairs(pairs, kept, 3)

    def test_all_equal_scores(self):
        for seed in self.seeds:
            pool = self.make_pool(seed, scores="equal")
            self.check_pool(pool, seed)
            first = self.run_both_levels(self.make_selector(), pool, seed)
            second = self.run_both_levels(self.make_selector(), pool, seed)
            assert_pairs_equal(first[0], second[0], "select_instances with tied scores")
            assert_pairs_equal(first[1], second[1], "select_corpus with tied scores")

    def test_duplicates_are_never_paired(self):
        for seed in self.seeds:
            for duplication in ("heavy", "mixed"):
                pool = self.make_pool(seed, duplication=duplication)
                assert not np.asarray(pool.batch.distinct).all(), "the pool should contain duplicates"
                self.check_pool(pool, seed)

    def test_does_not_modify_the_batch(self):
        pool = self.make_pool(self.seeds[0])
        batch = pool.batch
        copies = {
            "lengths": batch.lengths.copy(),
            "distinct": np.asarray(batch.distinct).copy(),
            **{f"scores[{k!r}]": v.copy() for k, v in batch.scores.items()},
            **({} if batch.features is None else {"features": batch.features.copy()}),
            **({} if batch.sources is None else {"sources": batch.sources.copy()}),
        }
        selector = self.make_selector()
        pairs = selector.select_instances(batch, np.random.default_rng(0))
        pairs_copy = Pairs(pairs.prompt.copy(), pairs.a.copy(), pairs.b.copy())
        selector.select_corpus(batch, pairs, len(pairs) // 2, np.random.default_rng(0))
        current = {
            "lengths": batch.lengths,
            "distinct": np.asarray(batch.distinct),
            **{f"scores[{k!r}]": v for k, v in batch.scores.items()},
            **({} if batch.features is None else {"features": batch.features}),
            **({} if batch.sources is None else {"sources": batch.sources}),
        }
        for name, before in copies.items():
            assert np.array_equal(before, current[name], equal_nan=before.dtype.kind == "f"), (
                f"the selector modified batch.{name}"
            )
        assert_pairs_equal(pairs_copy, pairs, "select_corpus modified the pairs it was given;")

    def test_does_not_modify_the_exact_gold(self):
        pool = self.make_pool(self.seeds[0])
        gold = pool.batch.exact_gold
        if gold is None:
            assert not getattr(self.make_selector(), "needs_exact_gold", False)
            return
        rewards, prompts = gold.rewards.copy(), gold.prompts.copy()
        parameters = _parameters(gold.policy)
        grads = [None if p.grad is None else p.grad.detach().clone() for p in gold.policy.parameters()]
        self.run_both_levels(self.make_selector(), pool, self.seeds[0])
        assert np.array_equal(rewards, gold.rewards), "the selector modified batch.exact_gold.rewards"
        assert np.array_equal(prompts, gold.prompts), "the selector modified batch.exact_gold.prompts"
        _assert_parameters_unchanged(parameters, gold.policy, "the selector")
        after = [None if p.grad is None else p.grad.detach() for p in gold.policy.parameters()]
        assert all((a is None and b is None) or (a is not None and b is not None and bool((a == b).all()))
                   for a, b in zip(grads, after)), "the selector changed the policy's .grad"

    # -- selector contract 3: steerable sampling

    def test_sampling_sources_are_valid_codes(self):
        selector = self.make_selector()
        steers = getattr(selector, "steers_sampling", False)
        assert isinstance(steers, bool), f"steers_sampling must be True or False, got {steers!r}"
        if not steers:
            return
        for m, n in ((self.n_prompts, self.n_responses), (1, 2), (0, self.n_responses)):
            before = streams.global_rng_state()
            first = np.asarray(selector.sampling_sources(m, n, np.random.default_rng(4)))
            assert_global_rng_unchanged(before, "sampling_sources")
            assert first.shape == (m, n) and first.dtype.kind in "iu", (
                f"sampling_sources({m}, {n}) must return ({m}, {n}) integer codes, got {first.dtype} {first.shape}")
            assert first.size == 0 or ((first >= 0) & (first < len(SAMPLING_SOURCES))).all(), (
                f"sampling_sources returned codes outside 0..{len(SAMPLING_SOURCES) - 1} (SAMPLING_SOURCES)")
            declared = getattr(selector, "samples_from", ("policy",))
            used = {SAMPLING_SOURCES[int(code)] for code in np.unique(first)}
            assert used <= set(declared), (
                f"sampling_sources used {sorted(used - set(declared))}, which samples_from {declared} does not name")
            again = np.asarray(selector.sampling_sources(m, n, np.random.default_rng(4)))
            assert np.array_equal(first, again), "sampling_sources differs for equal Generator seeds"

    # -- selector contract 2: features and memory

    def feed(self, selector: Selector, seed: int, iteration: int = 1) -> None:
        """One iteration of feedback: select on the pool of ``seed`` at both levels, then observe the kept pairs."""
        pool = self.make_pool(seed, selector=selector)
        _, kept = self.run_both_levels(selector, pool, seed)
        selector.observe(make_feedback(pool, kept, seed, iteration), np.random.default_rng([seed, 3]))

    def test_features_and_memory_are_declared_sensibly(self):
        selector = self.make_selector()
        source = getattr(selector, "feature_source", None)
        assert source is None or source in FEATURE_SOURCES, (
            f"feature_source must be None or one of {FEATURE_SOURCES}, got {source!r}")
        stateful = getattr(selector, "stateful", False)
        assert isinstance(stateful, bool), f"stateful must be True or False, got {stateful!r}"
        batch = self.make_pool(self.seeds[0], features=FEATURE_WIDTH).batch
        by_source = {name: batch.features + k for k, name in enumerate(FEATURE_SOURCES)}  # a different array each
        handed = batch_for(selector, batch, by_source).features
        if source is not None:
            assert handed is by_source[source], f"a selector naming feature_source {source!r} got another's features"
        else:
            assert handed is None, "features would reach a selector that names no feature_source"

    def test_a_stateless_selector_keeps_no_state(self):
        selector = self.make_selector()
        if getattr(selector, "stateful", False):
            return
        assert selector.state_dict() == {}, f"a selector with stateful = False returned state {selector.state_dict()}"
        selector.load_state_dict({})

    def test_state_round_trips_bit_for_bit(self):
        selector = self.make_selector()
        if not getattr(selector, "stateful", False):
            return
        assert selector.state_dict() == {} or all(isinstance(v, np.ndarray) for v in selector.state_dict().values())
        for iteration, seed in enumerate(self.seeds[:2], start=1):
            self.feed(selector, seed, iteration)
        state = selector.state_dict()
        assert state, "a stateful selector kept no state after two iterations of feedback"
        for key, value in state.items():
            assert isinstance(key, str) and key.isidentifier(), f"state key {key!r} must be an identifier"
            assert isinstance(value, np.ndarray) and value.dtype.kind in "biuf", (
                f"state[{key!r}] must be a numeric numpy array, got {type(value).__name__}")
        restored = self.make_selector()
        restored.load_state_dict({key: value.copy() for key, value in state.items()})
        again = restored.state_dict()
        assert sorted(again) == sorted(state), f"a restored selector's state has keys {sorted(again)}"
        for key in state:
            assert again[key].dtype == state[key].dtype and np.array_equal(again[key], state[key]), (
                f"state[{key!r}] did not come back bit for bit")
        seed = self.seeds[-1]
        pool = self.make_pool(seed)
        for first, second, level in zip(self.run_both_levels(selector, pool, seed),
                                        self.run_both_levels(restored, pool, seed), ("instance", "corpus")):
            assert_pairs_equal(first, second, f"the {level} level of a restored selector")
        self.feed(selector, seed, 3)
        self.feed(restored, seed, 3)
        for key, value in selector.state_dict().items():
            assert np.array_equal(value, restored.state_dict()[key]), (
                f"state[{key!r}] differs after a restored selector observed the same feedback")

    def test_observe_is_deterministic_and_leaves_its_inputs_alone(self):
        if not getattr(self.make_selector(), "stateful", False):
            return
        states = []
        for _ in range(2):
            selector = self.make_selector()
            pool = self.make_pool(self.seeds[0], selector=selector)
            _, kept = self.run_both_levels(selector, pool, self.seeds[0])
            feedback = make_feedback(pool, kept, self.seeds[0])
            copies = (feedback.prefer_a.copy(), feedback.tie.copy(), feedback.kept.prompt.copy(),
                      None if feedback.features is None else feedback.features.copy())
            before = streams.global_rng_state()
            selector.observe(feedback, np.random.default_rng(7))
            assert_global_rng_unchanged(before, "observe")
            assert np.array_equal(copies[0], feedback.prefer_a) and np.array_equal(copies[1], feedback.tie) \
                and np.array_equal(copies[2], feedback.kept.prompt), "observe modified the feedback"
            if copies[3] is not None:
                assert np.array_equal(copies[3], feedback.features), "observe modified the features"
            states.append(selector.state_dict())
        assert sorted(states[0]) == sorted(states[1])
        for key in states[0]:
            assert np.array_equal(states[0][key], states[1][key]), f"observe is not deterministic: state[{key!r}]"

    def test_observe_takes_empty_and_all_tie_feedback(self):
        selector = self.make_selector()
        if not getattr(selector, "stateful", False):
            return
        pool = self.make_pool(self.seeds[0], selector=selector)
        empty = Feedback(iteration=1, kept=Pairs.empty(), prefer_a=np.zeros(0, bool), tie=np.zeros(0, bool),
                         features=pool.batch.features)
        selector.observe(empty, np.random.default_rng(0))
        pairs = selector.select_instances(pool.batch, np.random.default_rng(1))
        check_instance_pairs(pool, pairs)
        ties = Feedback(iteration=2, kept=pairs, prefer_a=np.ones(len(pairs), bool), tie=np.ones(len(pairs), bool),
                        features=pool.batch.features)
        selector.observe(ties, np.random.default_rng(2))
        check_instance_pairs(pool, selector.select_instances(pool.batch, np.random.default_rng(3)))
        state = selector.state_dict()
        restored = self.make_selector()
        restored.load_state_dict(state)
        assert sorted(restored.state_dict()) == sorted(state), "a state after empty and all-tie feedback did not load"

    def test_selecting_leaves_the_state_alone(self):
        selector = self.make_selector()
        if not getattr(selector, "stateful", False):
            return
        self.feed(selector, self.seeds[0])
        before = {key: value.copy() for key, value in selector.state_dict().items()}
        self.run_both_levels(selector, self.make_pool(self.seeds[1]), self.seeds[1])
        after = selector.state_dict()
        assert sorted(after) == sorted(before) and all(np.array_equal(before[k], after[k]) for k in before), (
            "select_instances/select_corpus changed the selector's state; only observe may")


# ----------------------------------------------------------- allocator contract


class AllocatorContract:
    """Mixin of contract tests for an :class:`~harness.interfaces.Allocator`.

    Subclass it in a class whose name starts with ``Test`` and set
    ``allocator_class`` (and ``settings``; restrict ``iterations`` when your
    allocator accepts only some counts, e.g. one weight per iteration).
    """

    allocator_class: ClassVar[type[Allocator]]
    settings: ClassVar[Mapping[str, Any]] = {}
    iterations: ClassVar[tuple[int, ...]] = (1, 2, 3, 5)
    totals: ClassVar[tuple[int, ...]] = (0, 1, 2, 7, 100, 3001, 1_000_000)

    def make_allocator(self) -> Allocator:
        return self.allocator_class(dict(self.settings))

    def check_plan(self, plan: Any, total: int, iterations: int, spent: int = 0, done: int = 0) -> None:
        what = f"allocate(total_labels={total}, iterations={iterations}) after {done} iteration(s)"
        assert len(plan) == iterations, f"{what} returned {len(plan)} entries, expected {iterations}"
        for x in plan:
            assert isinstance(x, numbers.Integral) and not isinstance(x, bool), (
                f"{what} returned {x!r} ({type(x).__name__}); entries must be ints"
            )
            assert x >= 0, f"{what} returned a negative entry {x}"
        planned = spent + sum(int(x) for x in list(plan)[done:])
        assert planned <= total, (
            f"{what}: labels spent ({spent}) plus the plan for the remaining iterations "
            f"({planned - spent}) exceed the total {total}"
        )

    def test_class_registers(self):
        check_component_class("allocator", self.allocator_class)

    def test_plan_shape_and_sum(self):
        allocator = self.make_allocator()
        for iterations in self.iterations:
            for total in self.totals:
                plan = allocator.allocate(total_labels=total, iterations=iterations, history=())
                self.check_plan(plan, total, iterations)

    def test_replanning_with_history_stays_within_budget(self):
        allocator = self.make_allocator()
        for iterations in self.iterations:
            for total in self.totals:
                history: list[IterationRecord] = []
                spent = 0
                for done in range(iterations):
                    plan = allocator.allocate(
                        total_labels=total, iterations=iterations, history=tuple(history)
                    )
                    self.check_plan(plan, total, iterations, spent=spent, done=done)
                    labels = int(plan[done])
                    spent += labels
                    history.append(
                        # as the loop hands it (allocator contract 2): observed facts, no evaluator metrics
                        IterationRecord(iteration=done + 1, labels=labels, observed={
                            "labels": labels, "sel_pairs": labels, "holdout_pairs": labels // 5,
                            "holdout_agreement_before": 0.5, "holdout_agreement_after": 0.5 - 0.01 * done})
                    )
                assert spent <= total

    def test_deterministic(self):
        for iterations in self.iterations:
            for total in self.totals:
                first = self.make_allocator().allocate(total_labels=total, iterations=iterations, history=())
                second = self.make_allocator().allocate(total_labels=total, iterations=iterations, history=())
                assert list(first) == list(second), f"two equal calls gave {first} and {second}"

    def test_does_not_touch_global_rng(self):
        before = streams.global_rng_state()
        allocator = self.make_allocator()
        for iterations in self.iterations:
            allocator.allocate(total_labels=self.totals[-1], iterations=iterations, history=())
        assert_global_rng_unchanged(before, "the allocator")


# ------------------------------------------------------------------ shared checks


def _raises(expected: type[BaseException], call: Callable[[], Any], what: str) -> BaseException:
    """Run ``call`` and return the ``expected`` exception it raised; AssertionError otherwise."""
    try:
        call()
    except expected as exc:
        return exc
    except Exception as exc:  # noqa: BLE001 - any other exception breaks the contract
        raise AssertionError(
            f"{what} must raise {expected.__name__}, but raised {type(exc).__name__}: {exc}"
        ) from exc
    raise AssertionError(f"{what} must raise {expected.__name__}, but returned normally")


def check_settings(component: Component, given: Mapping[str, Any]) -> None:
    """``component.settings`` holds exactly its declared options: ``given`` coerced, defaults elsewhere.

    Catches a component whose ``__init__`` skips :class:`~harness.interfaces.Component`'s
    (no settings, or settings that ignore what the user passed).

    Args:
        component: the component built with ``given``.
        given: the option values it was built with (strings are coerced as the host coerces them).

    Raises:
        AssertionError: naming the first option whose value is not the expected one.
    """
    cls = type(component)
    declared = {option.name: option for option in cls.options}
    settings = getattr(component, "settings", None)
    assert isinstance(settings, dict), (
        f"{cls.__name__}.settings must be the dict Component.__init__ builds, got {type(settings).__name__}; "
        "call super().__init__(settings) first"
    )
    assert set(settings) == set(declared), (
        f"{cls.__name__}.settings has keys {sorted(settings)} but the class declares options {sorted(declared)}"
    )
    for name, option in declared.items():
        expected = option.coerce(given[name], owner=cls.__name__) if name in given else option.default
        assert settings[name] == expected, (
            f"{cls.__name__}.settings[{name!r}] is {settings[name]!r}, expected {expected!r}"
        )


class _GlobalSeeds:
    """Context manager: seed the global ``random``, numpy and torch RNGs, then restore them."""

    def __init__(self, seed: int):
        self.seed = int(seed)

    def __enter__(self) -> None:
        self.saved = streams.global_rng_state()
        np.random.seed(self.seed)
        random.seed(self.seed)
        torch = sys.modules.get("torch")
        if torch is not None:
            torch.manual_seed(self.seed)

    def __exit__(self, *exc: Any) -> None:
        np_state, py_state, torch_state = self.saved
        np.random.set_state(np_state)
        random.setstate(py_state)
        torch = sys.modules.get("torch")
        if torch is not None and torch_state is not None:
            torch.set_rng_state(torch_state)


def _parameters(policy: Any) -> list[Any] | None:
    """Detached copies of ``policy.parameters()``, or None when it exposes no torch parameters."""
    get = getattr(policy, "parameters", None)
    if not callable(get):
        return None
    found = list(get())
    if not all(hasattr(p, "detach") for p in found):
        return None
    return [p.detach().clone() for p in found]


def _assert_parameters_unchanged(before: list[Any] | None, policy: Any, what: str) -> None:
    if before is None:
        return
    import torch

    after = list(policy.parameters())
    assert len(after) == len(before), f"{what} changed the number of the policy's parameters"
    for k, (old, new) in enumerate(zip(before, after)):
        assert old.shape == new.shape and torch.equal(old, new.detach()), (
            f"{what} modified the policy it was given (parameter {k}); work on policy.clone()"
        )


def _parameters_equal(first: Any, second: Any) -> bool:
    import torch

    a, b = list(first.parameters()), list(second.parameters())
    return len(a) == len(b) and all(
        x.shape == y.shape and torch.equal(x.detach(), y.detach()) for x, y in zip(a, b)
    )


def _copy_responses(responses: Responses) -> Responses:
    return Responses(tokens=np.array(responses.tokens, copy=True), lengths=np.array(responses.lengths, copy=True))


def _assert_arrays_unchanged(before: Mapping[str, np.ndarray], after: Mapping[str, Any], what: str) -> None:
    for name, old in before.items():
        new = np.asarray(after[name])
        assert old.shape == new.shape and np.array_equal(old, new, equal_nan=old.dtype.kind == "f"), (
            f"{what} modified its input {name}"
        )


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_labels(labels: Any, n_pairs: int, what: str) -> None:
    """``labels`` is a :class:`~harness.interfaces.Labels` with one bool per pair in every field it sets.

    Args:
        labels: what an annotator or a judge returned.
        n_pairs: the number of pairs it was asked about.
        what: the call, for the message (``"compare"``, ``"annotate"``).

    Raises:
        AssertionError: saying which field has the wrong type, dtype or length.
    """
    assert isinstance(labels, Labels), f"{what} must return harness.interfaces.Labels, got {type(labels).__name__}"
    for name in ("prefer_a", "tie", "gold_agrees"):
        values = getattr(labels, name)
        if values is None:
            assert name != "prefer_a", f"{what}: labels.prefer_a is None"
            continue
        values = np.asarray(values)
        assert values.shape == (n_pairs,), (
            f"{what}: labels.{name} has shape {values.shape}, expected ({n_pairs},): one value per pair"
        )
        assert values.dtype == np.bool_, f"{what}: labels.{name} must be a bool array, got {values.dtype}"


def _assert_labels_equal(first: Labels, second: Labels, what: str) -> None:
    for name in ("prefer_a", "tie", "gold_agrees"):
        a, b = getattr(first, name), getattr(second, name)
        assert (a is None) == (b is None) and (a is None or np.array_equal(a, b)), (
            f"{what}: labels.{name} differ between two calls"
        )


def _check_responses(responses: Any, n_prompts: int, n_responses: int, what: str) -> None:
    assert isinstance(responses, Responses), (
        f"{what} must return harness.interfaces.Responses, got {type(responses).__name__}"
    )
    tokens, lengths = responses.tokens, responses.lengths
    assert isinstance(tokens, np.ndarray) and tokens.dtype == np.int64 and tokens.ndim == 3, (
        f"{what}: tokens must be an (M, N, L) int64 array, got {getattr(tokens, 'dtype', type(tokens))} "
        f"of shape {getattr(tokens, 'shape', None)}"
    )
    assert isinstance(lengths, np.ndarray) and lengths.dtype == np.int64, f"{what}: lengths must be int64"
    assert tokens.shape[:2] == (n_prompts, n_responses) and lengths.shape == (n_prompts, n_responses), (
        f"{what}: tokens {tokens.shape} and lengths {lengths.shape} for {n_prompts} prompts x {n_responses} responses"
    )
    if lengths.size:
        assert lengths.min() >= 1, f"{what}: a response has length {lengths.min()}; lengths count EOS, so >= 1"
        assert lengths.max() <= tokens.shape[2], (
            f"{what}: a length ({lengths.max()}) exceeds the token rows' width {tokens.shape[2]}"
        )


def _assert_responses_equal(first: Responses, second: Responses, what: str) -> None:
    assert np.array_equal(first.lengths, second.lengths) and np.array_equal(first.tokens, second.tokens), (
        f"{what}: the responses differ between two calls"
    )


class _ComponentContract:
    """What every component contract checks of the class and its options (see the module docstring)."""

    kind: ClassVar[str]
    settings: ClassVar[Mapping[str, Any]] = {}

    def component_class(self) -> type[Component]:
        return getattr(self, f"{self.kind}_class")

    def make_settings(self) -> dict[str, Any]:
        """The settings the contract builds its component with (override for settings known only at run time)."""
        return dict(self.settings)

    def make_component(self) -> Component:
        return self.component_class()(self.make_settings())

    def test_class_registers(self):
        try:
            check_component_class(self.kind, self.component_class())
        except TypeError as exc:
            raise AssertionError(f"the host would refuse to register it: {exc}") from None

    def test_settings_are_the_declared_options(self):
        check_settings(self.make_component(), self.make_settings())

    def test_an_unknown_option_is_a_usage_error(self):
        cls = self.component_class()
        _raises(UsageError, lambda: cls({**self.make_settings(), "no_such_option_zz": 1}),
                f"{cls.__name__}({{'no_such_option_zz': 1}})")


# ------------------------------------------------------------------ scorer contract


def scorer_inputs(seed: int, n_prompts: int = 16, n_responses: int = 8) -> dict[str, np.ndarray]:
    """Keyword arguments of :meth:`Scorer.score <harness.interfaces.Scorer.score>`, a pure function of ``seed``.

    ``lengths`` in 1..12 (EOS included); ``logp_ref`` a negative per-token
    log-prob times the length; ``logp_policy`` that plus standard-normal
    noise, capped below 0: ``(M, N)`` float64 summed log-probs as the loop
    computes them.

    Args:
        seed: the inputs' seed.
        n_prompts: M.
        n_responses: N.

    Returns:
        ``{"logp_policy": ..., "logp_ref": ..., "lengths": ...}``, each ``(M, N)``.
    """
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x5C0E]))
    shape = (int(n_prompts), int(n_responses))
    lengths = rng.integers(1, 13, size=shape).astype(np.int64)
    logp_ref = -lengths * rng.uniform(0.2, 3.0, size=shape)
    logp_policy = np.minimum(logp_ref + rng.standard_normal(shape), -1e-3)
    return {"logp_policy": logp_policy, "logp_ref": logp_ref, "lengths": lengths}


def stochastic_samples(seed: int, logp_policy: np.ndarray, passes: int = 5) -> np.ndarray:
    """``(passes, M, N)`` synthetic stochastic passes about ``logp_policy`` (scorer contract 2), from ``seed``.

    Each response gets its own spread in [0, 2) nats and standard-normal
    noise per pass; every pass stays below 0.
    """
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x5EED5]))
    logp_policy = np.asarray(logp_policy, dtype=np.float64)
    spread = rng.uniform(0.0, 2.0, size=logp_policy.shape)
    noise = rng.standard_normal((int(passes), *logp_policy.shape))
    return np.minimum(logp_policy[None] + spread[None] * noise, -1e-3)


def _map_inputs(inputs: Mapping[str, np.ndarray], index: Callable[[np.ndarray], np.ndarray]) -> dict[str, np.ndarray]:
    """``index`` applied to every ``(M, N)`` input, and to every pass of ``logp_samples``."""
    return {name: np.stack([index(v) for v in value]) if name == "logp_samples" else index(value)
            for name, value in inputs.items()}


class ScorerContract(_ComponentContract):
    """Mixin of contract tests for a :class:`~harness.interfaces.Scorer`.

    Subclass it in a class whose name starts with ``Test`` and set
    ``scorer_class`` (and ``settings`` for non-default options). Inputs come
    from :func:`scorer_inputs` (override ``make_inputs`` for others). It
    checks that:

    * the column is ``(M, N)``, real and finite, for the shapes in ``shapes``
      (an empty pool and a single prompt included) and for extreme inputs
      (length 1 and very long responses, log-probs of 0 and -1e4);
    * scoring is a pure function of the inputs: equal on a second call and on
      a fresh instance, never touching or depending on the global RNGs, and
      never modifying the input arrays;
    * the order of prompts and of the responses of a prompt carries no
      meaning: permuting either permutes the column the same way, and
      identical inputs give identical scores (selectors rely on identical
      responses tying);
    * a stochastic scorer (``stochastic = True``, scorer contract 2) is
      given ``logp_samples`` too, ``passes`` synthetic passes ``(K, M, N)``
      about ``logp_policy`` (permuted and copied with the other inputs), and
      its column changes when the passes do.
    """

    kind = "scorer"
    scorer_class: ClassVar[type[Scorer]]
    seeds: ClassVar[tuple[int, ...]] = (0, 1, 2)
    shapes: ClassVar[tuple[tuple[int, int], ...]] = ((16, 8), (1, 2), (0, 8), (5, 2))
    passes: ClassVar[int] = 5

    def make_scorer(self) -> Scorer:
        return self.make_component()

    @property
    def stochastic(self) -> bool:
        return bool(getattr(self.scorer_class, "stochastic", False))

    def make_inputs(self, seed: int, n_prompts: int = 16, n_responses: int = 8) -> dict[str, np.ndarray]:
        inputs = scorer_inputs(seed, n_prompts, n_responses)
        if self.stochastic:
            inputs["logp_samples"] = stochastic_samples(seed, inputs["logp_policy"], self.passes)
        return inputs

    def column(self, inputs: Mapping[str, np.ndarray], scorer: Scorer | None = None) -> np.ndarray:
        """The scorer's column for ``inputs``, checked for shape and values."""
        scorer = scorer or self.make_scorer()
        out = scorer.score(**inputs)
        shape = np.shape(inputs["lengths"])
        assert isinstance(out, np.ndarray), f"score must return a numpy array, got {type(out).__name__}"
        assert out.shape == shape, f"score returned shape {out.shape} for inputs of shape {shape}"
        assert out.dtype.kind in "fiu", f"score must return real numbers, got dtype {out.dtype}"
        assert np.isfinite(out).all(), "score returned NaN or infinite values for finite inputs"
        return np.asarray(out, dtype=np.float64)

    def test_column_shape_and_values(self):
        for seed in self.seeds:
            for m, n in self.shapes:
                self.column(self.make_inputs(seed, m, n))

    def test_extreme_inputs_stay_finite(self):
        inputs = self.make_inputs(self.seeds[0], 4, 4)
        inputs["lengths"][0] = 1
        inputs["lengths"][1] = 4096
        inputs["logp_policy"][2] = 0.0
        inputs["logp_ref"][2] = 0.0
        inputs["logp_policy"][3] = -1e4
        inputs["logp_ref"][3] = -1e4 + 3.0
        if "logp_samples" in inputs:
            inputs["logp_samples"][:, 2] = 0.0
            inputs["logp_samples"][:, 3] = -1e4 + np.arange(self.passes)[:, None]
        self.column(inputs)

    def test_deterministic(self):
        for seed in self.seeds:
            inputs = self.make_inputs(seed)
            scorer = self.make_scorer()
            first = self.column(inputs, scorer)
            assert np.array_equal(first, self.column(inputs, scorer)), "a second call on the same instance differs"
            assert np.array_equal(first, self.column(inputs)), "a fresh instance scores differently"

    def test_does_not_modify_its_inputs(self):
        inputs = self.make_inputs(self.seeds[0])
        before = {name: value.copy() for name, value in inputs.items()}
        self.column(inputs)
        _assert_arrays_unchanged(before, inputs, "score")

    def test_does_not_touch_global_rng(self):
        before = streams.global_rng_state()
        self.column(self.make_inputs(self.seeds[0]))
        assert_global_rng_unchanged(before, "the scorer")

    def test_does_not_depend_on_global_rng(self):
        inputs = self.make_inputs(self.seeds[0])
        columns = []
        for global_seed in (1, 12345):
            with _GlobalSeeds(global_seed):
                columns.append(self.column(inputs))
        assert np.array_equal(columns[0], columns[1]), "the column changes with the global RNG seeds"

    def test_permuting_prompts_permutes_the_column(self):
        for seed in self.seeds:
            inputs = self.make_inputs(seed)
            order = np.random.default_rng(seed).permutation(np.shape(inputs["lengths"])[0])
            permuted = _map_inputs(inputs, lambda value: value[order])
            assert np.allclose(self.column(permuted), self.column(inputs)[order], rtol=1e-12, atol=1e-12), (
                "permuting the prompts changed their scores: a score must not depend on a prompt's position"
            )

    def test_permuting_responses_permutes_the_column(self):
        for seed in self.seeds:
            inputs = self.make_inputs(seed)
            m, n = np.shape(inputs["lengths"])
            order = np.argsort(np.random.default_rng(seed).random((m, n)), axis=1)
            rows = np.arange(m)[:, None]
            permuted = _map_inputs(inputs, lambda value: value[rows, order])
            assert np.allclose(self.column(permuted), self.column(inputs)[rows, order], rtol=1e-12, atol=1e-12), (
                "permuting the responses of a prompt changed their scores: a score must not depend on "
                "a response's position"
            )

    def test_identical_responses_score_the_same(self):
        for seed in self.seeds:
            inputs = self.make_inputs(seed)
            for name, value in inputs.items():
                if name == "logp_samples":
                    value[:, :, 1] = value[:, :, 0]
                else:
                    value[:, 1] = value[:, 0]
            column = self.column(inputs)
            assert np.allclose(column[:, 0], column[:, 1], rtol=1e-12, atol=1e-12), (
                "two responses with identical log-probs and lengths got different scores"
            )

    def test_a_stochastic_scorer_reads_its_passes(self):
        if not self.stochastic:
            raise unittest.SkipTest(f"scorer {self.scorer_class.name!r} is not stochastic (scorer contract 1)")
        parameters = inspect.signature(self.make_scorer().score).parameters
        assert "logp_samples" in parameters or any(
            p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()
        ), "a stochastic scorer's score must take the keyword logp_samples"
        for seed in self.seeds:
            inputs = self.make_inputs(seed)
            changed = dict(inputs, logp_samples=stochastic_samples(seed + 1000, inputs["logp_policy"], self.passes))
            assert not np.array_equal(self.column(inputs), self.column(changed)), (
                "the column of a stochastic scorer did not change when its stochastic passes did"
            )


# ------------------------------------------------------------------ trainer contract


class ToyPolicy:
    """A minimal :class:`~harness.interfaces.Policy` for trainer contracts: a few hundred torch parameters.

    Content tokens are ``0 .. vocab_size - 1`` (0 doubles as padding after a
    response's end). The next-token logits are a start row (first response
    token) or a bigram row of the previous token, plus a bias averaged over
    the prompt's tokens. A pure function of ``seed``; torch is imported on
    construction only.
    """

    def __init__(self, vocab_size: int = 16, seed: int = 0):
        import torch

        generator = torch.Generator().manual_seed(int(seed))
        v = self.vocab_size = int(vocab_size)
        self.start = torch.nn.Parameter(0.5 * torch.randn(v, generator=generator))
        self.bigram = torch.nn.Parameter(0.5 * torch.randn(v, v, generator=generator))
        self.prompt_bias = torch.nn.Parameter(0.5 * torch.randn(v, v, generator=generator))

    def clone(self) -> ToyPolicy:
        return copy.deepcopy(self)

    def parameters(self) -> list[Any]:
        return [self.start, self.bigram, self.prompt_bias]

    def sequence_logprobs(self, prompts, responses, lengths):
        import torch

        prompts, responses, lengths = (torch.as_tensor(x, dtype=torch.long) for x in (prompts, responses, lengths))
        b, width = responses.shape
        bias = self.prompt_bias[prompts].mean(dim=1)
        logits = torch.cat([self.start.expand(b, 1, self.vocab_size), self.bigram[responses[:, :-1]]], dim=1)
        logp = torch.log_softmax(logits + bias[:, None, :], dim=-1)
        picked = logp.gather(-1, responses.clamp(0, self.vocab_size - 1).unsqueeze(-1)).squeeze(-1)
        mask = torch.arange(width)[None, :] < lengths[:, None]
        return (picked * mask).sum(dim=1)


def _policy_logps(policy: Any, prompts: np.ndarray, responses: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """``policy.sequence_logprobs`` as float64 numpy, without grad."""
    import torch

    with torch.no_grad():
        values = policy.sequence_logprobs(
            torch.as_tensor(np.ascontiguousarray(prompts), dtype=torch.long),
            torch.as_tensor(np.ascontiguousarray(responses), dtype=torch.long),
            torch.as_tensor(np.ascontiguousarray(lengths), dtype=torch.long),
        )
    return values.detach().double().cpu().numpy()


def toy_preference_data(policy: ToyPolicy, *, n_pairs: int, seed: int, prompt_length: int = 3,
                        max_length: int = 6) -> PreferenceData:
    """``n_pairs`` random preference pairs for a :class:`ToyPolicy`, a pure function of ``seed``.

    Chosen and rejected responses always differ in their first token; the
    reference log-probs are ``policy``'s own, so every DPO margin starts at 0.

    Args:
        policy: the policy the data is for (its vocabulary; its log-probs are the reference).
        n_pairs: K, the number of pairs.
        seed: the data's seed.
        prompt_length: P, tokens per prompt.
        max_length: L, the width of the response rows (lengths are drawn in 1..L).

    Returns:
        :class:`~harness.interfaces.PreferenceData` of K pairs.
    """
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x7A1D]))
    k, v = int(n_pairs), policy.vocab_size
    prompts = rng.integers(0, v, size=(k, prompt_length), dtype=np.int64)

    def responses(first: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        tokens = rng.integers(0, v, size=(k, max_length), dtype=np.int64)
        tokens[:, 0] = first
        lengths = rng.integers(1, max_length + 1, size=k).astype(np.int64)
        tokens[np.arange(max_length)[None, :] >= lengths[:, None]] = 0
        return tokens, lengths

    chosen_first = rng.integers(0, v, size=k)
    chosen, chosen_lengths = responses(chosen_first)
    rejected, rejected_lengths = responses((chosen_first + rng.integers(1, v, size=k)) % v)
    return PreferenceData(
        prompts=prompts,
        chosen=chosen,
        chosen_lengths=chosen_lengths,
        rejected=rejected,
        rejected_lengths=rejected_lengths,
        ref_chosen_logps=_policy_logps(policy, prompts, chosen, chosen_lengths),
        ref_rejected_logps=_policy_logps(policy, prompts, rejected, rejected_lengths),
    )


def world_preference_data(world: Any, *, n_pairs: int, seed: int, policy: Any = None,
                          n_responses: int = 4) -> PreferenceData:
    """Preference data built from a world as the loop builds it (at most ``n_pairs`` pairs).

    ``n_pairs`` prompts, ``n_responses`` samples of ``policy`` (default: the
    world's pi_0) each; each prompt's first two distinct responses make a
    pair, the shorter one chosen; reference log-probs from the world's pi_ref.
    Prompts without two distinct responses are left out.

    Args:
        world: a :class:`~harness.interfaces.World` (``draw_prompts``, ``sample``, ``logprobs``).
        n_pairs: the number of prompts drawn, hence the most pairs.
        seed: the seed of the draws and samples.
        policy: the policy sampled (default: ``world.initial_policy``).
        n_responses: samples per prompt.

    Returns:
        :class:`~harness.interfaces.PreferenceData` of at least one pair.
    """
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0xDA7A]))
    policy = world.initial_policy if policy is None else policy
    prompts = world.draw_prompts(int(n_pairs), rng)
    responses = world.sample(policy, prompts, int(n_responses), rng)
    distinct = responses.distinct_mask()
    rows = [m for m in range(distinct.shape[0]) if distinct[m].sum() >= 2]
    assert rows, "the world sampled no prompt with two distinct responses; raise n_pairs or n_responses"
    a = [int(np.flatnonzero(distinct[m])[0]) for m in rows]
    b = [int(np.flatnonzero(distinct[m])[1]) for m in rows]
    pairs = Pairs(rows, a, b)
    prefer_a = responses.lengths[pairs.prompt, pairs.a] <= responses.lengths[pairs.prompt, pairs.b]
    return PreferenceData.from_labels(prompts=prompts, responses=responses, pairs=pairs, prefer_a=prefer_a,
                                      ref_logps=world.logprobs(world.reference_policy, prompts, responses))


def _data_arrays(data: PreferenceData) -> dict[str, np.ndarray]:
    return {f.name: np.array(getattr(data, f.name), copy=True) for f in fields(PreferenceData)
            if getattr(data, f.name) is not None}


class TrainerContract(_ComponentContract):
    """Mixin of contract tests for a :class:`~harness.interfaces.Trainer`.

    Subclass it in a class whose name starts with ``Test`` and set
    ``trainer_class`` (and ``settings``: keep training short). By default it
    trains a :class:`ToyPolicy` on :func:`toy_preference_data`; a trainer of
    one testbed's policies overrides ``make_policy`` and ``make_data`` (e.g.
    with :func:`world_preference_data`). It checks that:

    * ``beta`` is a positive finite float (the option's value when the
      trainer declares a ``beta`` option);
    * ``train`` returns a :class:`~harness.interfaces.TrainResult`: ``steps``
      a non-negative int, ``epochs`` a non-negative real, finite losses, and
      a ``log`` of finite numbers by name;
    * it trains a clone: the returned policy is another object, the input
      policy and the data arrays are unchanged bit for bit, and with pairs to
      train on at least one step runs and the trainable parameters change
      (the loop's static-policy guard fails a run otherwise);
    * training raises the DPO margin of the chosen over the rejected
      responses on the training pairs, and the trained policy still is a
      :class:`~harness.interfaces.Policy` with finite log-probs;
    * training is deterministic for equal Generator seeds (equal losses and
      bit-identical parameters), never touches the global ``random``, numpy
      or torch RNGs and does not depend on them;
    * no pairs train nothing (``steps`` 0, finite losses), one pair trains;
    * a trainer that declares an int option ``steps`` runs exactly that many
      optimiser steps (the built-ins' convention for an exact budget).
    """

    kind = "trainer"
    trainer_class: ClassVar[type[Trainer]]
    seeds: ClassVar[tuple[int, ...]] = (0, 1)
    n_pairs: ClassVar[int] = 16

    def make_trainer(self, **overrides: Any) -> Trainer:
        return self.trainer_class({**self.make_settings(), **overrides})

    def make_policy(self) -> Any:
        """The policy every test trains (it must not be modified by training)."""
        return ToyPolicy(seed=0)

    def make_data(self, policy: Any, n_pairs: int, seed: int) -> PreferenceData:
        """Preference data for ``policy``, a pure function of ``seed``."""
        return toy_preference_data(policy, n_pairs=n_pairs, seed=seed)

    def train(self, trainer: Trainer, policy: Any, data: PreferenceData, seed: int) -> TrainResult:
        result = trainer.train(policy=policy, data=data, rng=np.random.default_rng(seed))
        self.check_result(result)
        return result

    def check_result(self, result: Any) -> None:
        assert isinstance(result, TrainResult), (
            f"train must return harness.interfaces.TrainResult, got {type(result).__name__}"
        )
        assert isinstance(result.steps, numbers.Integral) and not isinstance(result.steps, bool), (
            f"TrainResult.steps must be an int, got {result.steps!r}"
        )
        assert result.steps >= 0, f"TrainResult.steps is negative: {result.steps}"
        assert _is_real(result.epochs) and math.isfinite(result.epochs) and result.epochs >= 0, (
            f"TrainResult.epochs must be a finite real >= 0, got {result.epochs!r}"
        )
        for name in ("loss_first", "loss_last"):
            value = getattr(result, name)
            assert _is_real(value) and math.isfinite(value), f"TrainResult.{name} must be a finite real, got {value!r}"
        log = result.log if result.log is not None else {}
        assert isinstance(log, Mapping), f"TrainResult.log must be a mapping, got {type(log).__name__}"
        for key, value in log.items():
            assert isinstance(key, str) and key, f"TrainResult.log has a key {key!r}; keys must be names"
            assert _is_real(value) and math.isfinite(value), f"TrainResult.log[{key!r}] = {value!r} is not finite"

    def margin(self, policy: Any, data: PreferenceData) -> float:
        """Mean DPO margin (log-ratio of chosen minus rejected, against the data's reference)."""
        chosen = _policy_logps(policy, data.prompts, data.chosen, data.chosen_lengths)
        rejected = _policy_logps(policy, data.prompts, data.rejected, data.rejected_lengths)
        return float(np.mean((chosen - data.ref_chosen_logps) - (rejected - data.ref_rejected_logps)))

    def test_beta_is_a_positive_float(self):
        trainer = self.make_trainer()
        beta = trainer.beta
        assert _is_real(beta) and math.isfinite(beta) and beta > 0, f"beta must be a positive float, got {beta!r}"
        if any(option.name == "beta" for option in self.trainer_class.options):
            assert beta == trainer.settings["beta"], f"beta is {beta} but the beta option is {trainer.settings['beta']}"
            other = self.make_trainer(beta=0.37)
            assert other.beta == 0.37, f"with beta=0.37 the trainer reports beta {other.beta}"

    def test_trains_a_clone_and_leaves_its_inputs_alone(self):
        policy = self.make_policy()
        data = self.make_data(policy, self.n_pairs, self.seeds[0])
        assert len(data) > 0, "make_data returned no pairs"
        before, arrays = _parameters(policy), _data_arrays(data)
        result = self.train(self.make_trainer(), policy, data, self.seeds[0])
        assert result.policy is not policy, "train returned the policy it was given; train and return a clone"
        _assert_parameters_unchanged(before, policy, "train")
        _assert_arrays_unchanged(arrays, {f.name: getattr(data, f.name) for f in fields(PreferenceData)}, "train")
        assert result.steps >= 1, f"training on {len(data)} pairs ran {result.steps} steps"
        if before is not None:
            assert not _parameters_equal(policy, result.policy), (
                f"training on {len(data)} pairs in {result.steps} step(s) changed no parameter"
            )

    def test_training_raises_the_margin_of_the_chosen(self):
        policy = self.make_policy()
        for seed in self.seeds:
            data = self.make_data(policy, self.n_pairs, seed)
            result = self.train(self.make_trainer(), policy, data, seed)
            before, after = self.margin(policy, data), self.margin(result.policy, data)
            assert after > before, (
                f"the mean DPO margin of chosen over rejected went from {before:.6g} to {after:.6g}: "
                "training did not prefer the chosen responses"
            )

    def test_trained_policy_is_a_policy(self):
        policy = self.make_policy()
        data = self.make_data(policy, self.n_pairs, self.seeds[0])
        trained = self.train(self.make_trainer(), policy, data, self.seeds[0]).policy
        assert isinstance(trained, Policy), "the trained policy lacks clone, parameters or sequence_logprobs"
        values = _policy_logps(trained, data.prompts, data.chosen, data.chosen_lengths)
        assert values.shape == (len(data),) and np.isfinite(values).all(), (
            "the trained policy's sequence_logprobs are not one finite value per response"
        )

    def test_deterministic_for_equal_seeds(self):
        policy = self.make_policy()
        for seed in self.seeds:
            data = self.make_data(policy, self.n_pairs, seed)
            first = self.train(self.make_trainer(), policy, data, seed)
            second = self.train(self.make_trainer(), policy, data, seed)
            assert (first.steps, first.loss_first, first.loss_last) == (second.steps, second.loss_first,
                                                                        second.loss_last), (
                "two trainings with equal seeds gave different steps or losses: "
                f"{(first.steps, first.loss_first, first.loss_last)} and "
                f"{(second.steps, second.loss_first, second.loss_last)}"
            )
            assert _parameters_equal(first.policy, second.policy), (
                "two trainings with equal seeds gave different parameters"
            )

    def test_does_not_touch_global_rng(self):
        policy = self.make_policy()
        data = self.make_data(policy, self.n_pairs, self.seeds[0])
        trainer = self.make_trainer()
        before = streams.global_rng_state()
        self.train(trainer, policy, data, self.seeds[0])
        assert_global_rng_unchanged(before, "the trainer")

    def test_does_not_depend_on_global_rng(self):
        policy = self.make_policy()
        data = self.make_data(policy, self.n_pairs, self.seeds[0])
        results = []
        for global_seed in (1, 12345):
            with _GlobalSeeds(global_seed):
                results.append(self.train(self.make_trainer(), policy, data, self.seeds[0]))
        assert results[0].loss_last == results[1].loss_last and _parameters_equal(
            results[0].policy, results[1].policy
        ), "the trained policy changes with the global RNG seeds"

    def test_no_pairs_train_nothing(self):
        policy = self.make_policy()
        data = self.make_data(policy, self.n_pairs, self.seeds[0]).take(slice(0, 0))
        before = _parameters(policy)
        result = self.train(self.make_trainer(), policy, data, self.seeds[0])
        assert result.steps == 0, f"training on no pairs ran {result.steps} steps"
        _assert_parameters_unchanged(before, policy, "train on no pairs")

    def test_one_pair_trains(self):
        policy = self.make_policy()
        data = self.make_data(policy, self.n_pairs, self.seeds[0]).take(slice(0, 1))
        result = self.train(self.make_trainer(), policy, data, self.seeds[0])
        assert result.steps >= 1, "training on one pair ran no step"

    def test_steps_option_is_honoured(self):
        option = next((o for o in self.trainer_class.options if o.name == "steps"), None)
        if option is None or option.type is not int:
            raise unittest.SkipTest(f"{self.trainer_class.__name__} declares no int option 'steps'")
        policy = self.make_policy()
        data = self.make_data(policy, self.n_pairs, self.seeds[0])
        for steps in (1, 3):
            result = self.train(self.make_trainer(steps=steps), policy, data, self.seeds[0])
            assert result.steps == steps, f"with steps={steps} the trainer ran {result.steps} steps"


# ------------------------------------------------------------------ judge contract


class TokenTextWorld:
    """The least a text judge reads of a world: :meth:`texts`, rendering token ids as words ``t<id>``.

    A response's text stops at its length. It has no models; judges that
    need a testbed's world (a gold reward, a tokenizer) override
    ``JudgeContract.make_world``.
    """

    def texts(self, prompts: np.ndarray, responses: Responses) -> tuple[list[str], list[list[str]]]:
        prompt_texts = [" ".join(f"t{int(t)}" for t in row) for row in np.asarray(prompts).reshape(len(prompts), -1)]
        response_texts = [
            [" ".join(f"t{int(t)}" for t in row[: int(length)]) for row, length in zip(rows, lengths)]
            for rows, lengths in zip(responses.tokens, responses.lengths)
        ]
        return prompt_texts, response_texts


class _AlienWorld:
    """A world no judge can read: no text, no gold reward, no tables, nothing."""


def _judge_batch(world: Any, seed: int, n_prompts: int, n_responses: int) -> tuple[np.ndarray, Responses, Pairs]:
    """Prompts, responses and pairs for a judge: from the world's own models when it has them."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x1D6E]))
    if hasattr(world, "draw_prompts") and hasattr(world, "sample"):
        prompts = world.draw_prompts(n_prompts, rng)
        responses = world.sample(world.initial_policy, prompts, n_responses, rng)
    else:
        pool = make_pool(seed, n_prompts=n_prompts, n_responses=n_responses, duplication="mixed")
        prompts = rng.integers(0, 30, size=(n_prompts, 3), dtype=np.int64)
        responses = Responses(tokens=pool.tokens, lengths=pool.batch.lengths)
    m = np.arange(n_prompts)
    pairs = Pairs(np.concatenate([m, m]), np.concatenate([np.zeros(n_prompts), np.full(n_prompts, n_responses - 1)]),
                  np.concatenate([np.ones(n_prompts), np.zeros(n_prompts)]))
    return prompts, responses, pairs


class JudgeContract(_ComponentContract):
    """Mixin of contract tests for a :class:`~harness.interfaces.Judge`.

    Subclass it in a class whose name starts with ``Test`` and set
    ``judge_class`` (and ``settings``). ``make_world`` gives the world the
    judge reads (default: a :class:`TokenTextWorld`); prompts and responses
    come from the world's own ``draw_prompts`` and ``sample`` when it has
    them, else they are synthetic token rows with repeated responses. Pairs
    are responses (0, 1) and (N-1, 0) of every prompt, so some join two
    identical responses. Set ``pointwise = False`` for a judge that gives no
    score per response and ``pairwise = False`` for one that gives no
    verdicts (the external annotator): the contract then checks that the
    method raises :class:`~harness.errors.UsageError`. It checks that:

    * ``score`` returns an ``(M, N)`` array of finite reals, equal for equal
      Generator seeds; ``compare`` returns :class:`~harness.interfaces.Labels`
      with one bool per pair in ``prefer_a`` (and in ``tie`` and
      ``gold_agrees`` when set), equal for equal seeds, and empty labels for
      no pairs;
    * neither method modifies its inputs or touches the global RNGs;
    * on a world the judge cannot read (one with no method at all) both
      methods raise UsageError or work, never another exception;
    * ``usage`` returns non-negative int counters by name that never
      decrease;
    * after ``use_cache`` with a :class:`~harness.judgements.MemoryJudgementCache`
      the verdicts are unchanged, also for a second judge reading the same
      cache.
    """

    kind = "judge"
    judge_class: ClassVar[type[Judge]]
    pointwise: ClassVar[bool] = True
    pairwise: ClassVar[bool] = True
    seeds: ClassVar[tuple[int, ...]] = (0, 1)
    n_prompts: ClassVar[int] = 6
    n_responses: ClassVar[int] = 3

    def make_judge(self) -> Judge:
        return self.make_component()

    def make_world(self) -> Any:
        return TokenTextWorld()

    def make_batch(self, world: Any, seed: int) -> tuple[np.ndarray, Responses, Pairs]:
        return _judge_batch(world, seed, self.n_prompts, self.n_responses)

    def score(self, judge: Judge, world: Any, batch: tuple[np.ndarray, Responses, Pairs], seed: int) -> np.ndarray:
        prompts, responses, _ = batch
        out = judge.score(world=world, prompts=prompts, responses=responses, rng=np.random.default_rng(seed))
        assert isinstance(out, np.ndarray), f"score must return a numpy array, got {type(out).__name__}"
        assert out.shape == responses.lengths.shape, (
            f"score returned shape {out.shape} for {responses.lengths.shape} responses"
        )
        assert out.dtype.kind in "fiu", f"score must return real numbers, got dtype {out.dtype}"
        assert np.isfinite(out).all(), "score returned NaN or infinite values"
        return out

    def compare(self, judge: Judge, world: Any, batch: tuple[np.ndarray, Responses, Pairs], seed: int,
                pairs: Pairs | None = None) -> Labels:
        prompts, responses, default_pairs = batch
        pairs = default_pairs if pairs is None else pairs
        labels = judge.compare(world=world, prompts=prompts, responses=responses, pairs=pairs,
                               rng=np.random.default_rng(seed))
        check_labels(labels, len(pairs), "compare")
        return labels

    def _batch(self, seed: int | None = None) -> tuple[Any, tuple[np.ndarray, Responses, Pairs]]:
        world = self.make_world()
        return world, self.make_batch(world, self.seeds[0] if seed is None else seed)

    def test_score(self):
        world, batch = self._batch()
        if not self.pointwise:
            _raises(UsageError, lambda: self.make_judge().score(world=world, prompts=batch[0], responses=batch[1],
                                                                rng=np.random.default_rng(0)),
                    "score of a judge declared pointwise = False")
            return
        for seed in self.seeds:
            world, batch = self._batch(seed)
            first = self.score(self.make_judge(), world, batch, seed)
            second = self.score(self.make_judge(), world, batch, seed)
            assert np.array_equal(first, second), "two score calls with equal seeds differ"

    def test_compare(self):
        world, batch = self._batch()
        if not self.pairwise:
            _raises(UsageError, lambda: self.make_judge().compare(world=world, prompts=batch[0], responses=batch[1],
                                                                  pairs=batch[2], rng=np.random.default_rng(0)),
                    "compare of a judge declared pairwise = False")
            return
        for seed in self.seeds:
            world, batch = self._batch(seed)
            first = self.compare(self.make_judge(), world, batch, seed)
            second = self.compare(self.make_judge(), world, batch, seed)
            _assert_labels_equal(first, second, "compare with equal seeds")

    def test_compare_of_no_pairs(self):
        if not self.pairwise:
            raise unittest.SkipTest("the judge gives no verdicts (pairwise = False)")
        world, batch = self._batch()
        self.compare(self.make_judge(), world, batch, self.seeds[0], pairs=Pairs.empty())

    def test_does_not_modify_its_inputs(self):
        world, batch = self._batch()
        prompts, responses, pairs = batch
        before = {"prompts": np.array(prompts, copy=True), "tokens": responses.tokens.copy(),
                  "lengths": responses.lengths.copy(), "pairs.prompt": pairs.prompt.copy(),
                  "pairs.a": pairs.a.copy(), "pairs.b": pairs.b.copy()}
        judge = self.make_judge()
        if self.pointwise:
            self.score(judge, world, batch, 0)
        if self.pairwise:
            self.compare(judge, world, batch, 0)
        _assert_arrays_unchanged(before, {"prompts": prompts, "tokens": responses.tokens, "lengths": responses.lengths,
                                          "pairs.prompt": pairs.prompt, "pairs.a": pairs.a, "pairs.b": pairs.b},
                                 "the judge")

    def test_does_not_touch_global_rng(self):
        world, batch = self._batch()
        judge = self.make_judge()
        before = streams.global_rng_state()
        if self.pointwise:
            self.score(judge, world, batch, 0)
        if self.pairwise:
            self.compare(judge, world, batch, 0)
        assert_global_rng_unchanged(before, "the judge")

    def test_a_world_it_cannot_read_is_a_usage_error(self):
        _, batch = self._batch()
        prompts, responses, pairs = batch
        judge = self.make_judge()
        for method, call in (
            ("score", lambda: judge.score(world=_AlienWorld(), prompts=prompts, responses=responses,
                                          rng=np.random.default_rng(0))),
            ("compare", lambda: judge.compare(world=_AlienWorld(), prompts=prompts, responses=responses, pairs=pairs,
                                              rng=np.random.default_rng(0))),
        ):
            try:
                call()
            except UsageError:
                pass
            except Exception as exc:  # noqa: BLE001 - anything but UsageError breaks the contract
                raise AssertionError(
                    f"{method} on a world the judge cannot read raised {type(exc).__name__}: {exc}; "
                    "a judge raises UsageError for worlds it does not know"
                ) from exc

    def test_usage_counters_never_decrease(self):
        world, batch = self._batch()
        judge = self.make_judge()
        readings = [judge.usage()]
        for calls in (2, 1):  # less work in the second round: a counter of the last round's work goes down
            for _ in range(calls):
                if self.pointwise:
                    self.score(judge, world, batch, 0)
                if self.pairwise:
                    self.compare(judge, world, batch, 0)
            readings.append(judge.usage())
        for reading in readings:
            assert isinstance(reading, dict), f"usage must return a dict, got {type(reading).__name__}"
            for key, value in reading.items():
                assert isinstance(key, str) and key, f"usage has a key {key!r}; keys must be names"
                assert isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 0, (
                    f"usage()[{key!r}] = {value!r}; counters are non-negative ints"
                )
        for earlier, later in zip(readings, readings[1:]):
            for key, value in earlier.items():
                assert key in later and later[key] >= value, f"usage counter {key!r} went down or disappeared"

    def test_a_judgement_cache_changes_no_verdict(self):
        from harness.judgements import MemoryJudgementCache

        cache = MemoryJudgementCache()
        judge = self.make_judge()
        judge.use_cache(cache)
        if not self.pairwise:
            return
        world, batch = self._batch()
        plain = self.compare(self.make_judge(), world, batch, 0)
        _assert_labels_equal(plain, self.compare(judge, world, batch, 0), "compare with a judgement cache")
        second = self.make_judge()
        second.use_cache(cache)
        _assert_labels_equal(plain, self.compare(second, world, batch, 0), "compare reading a filled cache")


# ------------------------------------------------------------------ testbed contract


_METRIC_ROLES = ("gold", "proxy", "annotator", "evaluator")


class TestbedContract(_ComponentContract):
    """Mixin of contract tests for a :class:`~harness.interfaces.Testbed` and the world it builds.

    Subclass it in a class whose name starts with ``Test`` and set
    ``testbed_class`` and ``settings`` (a tiny world: every test reads it,
    and it is built once per class, as :func:`harness.loop.build_world`
    builds it, with ``make_annotator`` and ``make_trainers``). Set
    ``annotates = False`` for a world without an annotator of its own,
    ``required_metrics`` to the metric names your ``evaluate`` promises, and
    ``tolerance`` (absolute and relative) for log-probs recomputed in other
    batches. It checks:

    * the testbed: ``default_judges`` maps roles (``gold``, ``proxy``,
      ``annotator``, ``evaluator``) to registered judges; ``build_world``
      takes ``seed`` and ``reporter`` by keyword and every other parameter is
      an optional keyword the loop knows or has a default;
    * a world is a pure function of the options and the seed: built again,
      directly (without the optional keywords), it draws, samples, scores and
      evaluates the same;
    * the world has ``reference_policy`` and ``initial_policy`` (both
      :class:`~harness.interfaces.Policy`) and ``draw_prompts``, ``sample``,
      ``logprobs``, ``annotate`` and ``evaluate``: ``(n, P)`` int64 prompts;
      :class:`~harness.interfaces.Responses` of ``(M, N, L)`` int64 tokens
      with lengths in ``1..L``; ``(M, N)`` finite log-probs <= 0 that do not
      depend on which other prompts or responses share the call (the loop
      splits and regroups them); labels with one bool per pair (or
      UsageError with ``annotates = False``); metrics of finite numbers with
      ``win_rate`` in [0, 1] and ``win_rate_se`` >= 0, or no ``win_rate`` and
      an ``evaluation_pairs`` method for an evaluator judge; a KL of 0 for
      pi_ref itself. Each is deterministic for equal Generator seeds and
      leaves the policy and the input arrays unchanged;
    * the optional methods, each when the world has it (else the test is
      skipped): ``save_policy``/``load_policy`` (both or neither; a round
      trip keeps the log-probs, a corrupt or truncated file is a
      :class:`~harness.errors.CheckpointError`); ``texts`` (one string per
      prompt and response, identical responses read the same);
      ``evaluation_pairs`` (``(E, 2)`` responses whose second column, the
      reference output, does not depend on the policy); ``gold_rewards``
      (``(M, N)`` finite, identical responses equal; required, not optional,
      when the testbed declares ``exact_gold = True``); ``seed_round``
      (``seed_*`` keys with bool, int, float or str values, which is what the
      loop records); ``evaluation_report`` (finite numbers by name);
      ``close`` (callable twice; the world still scores afterwards);
      ``shards_sampling`` (when True: a prompt's responses are the same
      whichever other prompts share the ``sample`` call);
      ``stochastic_logprobs`` (scorer contract 2: ``(K, M, N)`` finite
      float64 log-probs <= 0, equal for equal Generator seeds, a spread
      somewhere, the policy, its ``logprobs`` and the global RNGs unchanged);
      ``features`` (selector contract 2: ``(M, N, d)`` finite float64,
      deterministic, equal for identical responses, the same whichever
      prompts share the call, the policy and the global RNGs unchanged);
      ``steered_sample`` (selector contract 3: responses of every source with
      ``sources`` set, lengths in ``1..L``, scorable by ``logprobs``,
      deterministic, the policy and the global RNGs unchanged).
    """

    kind = "testbed"
    __test__ = False  # its name starts with "Test", but only its subclasses are test classes
    testbed_class: ClassVar[type[Testbed]]
    seed: ClassVar[int] = 0
    n_prompts: ClassVar[int] = 4
    n_responses: ClassVar[int] = 3
    annotates: ClassVar[bool] = True
    required_metrics: ClassVar[tuple[str, ...]] = ()
    tolerance: ClassVar[float] = 1e-4

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__test__" not in cls.__dict__:
            cls.__test__ = True

    # -- helpers a subclass may override or use in its own tests

    def make_testbed(self) -> Testbed:
        return self.make_component()

    def make_annotator(self) -> Judge | None:
        """The run's annotator handed to a ``build_world`` that declares ``annotator`` (default: none)."""
        return None

    def make_trainers(self) -> TrainerFactory:
        """The trainer factory handed to a ``build_world`` that declares ``trainers``: the registry's."""
        from harness.plugins import default_trainers

        return default_trainers()

    def judge_names(self) -> set[str]:
        """The judges ``default_judges`` may name: the default registry's."""
        from harness.plugins import load_registry

        return set(load_registry().names("judge"))

    def build(self) -> Any:
        """The world of ``seed``, built as the loop builds it; once per contract class."""
        cls = type(self)
        worlds = cls.__dict__.get("_contract_worlds")
        if worlds is None:
            worlds = {}
            cls._contract_worlds = worlds
        if self.seed not in worlds:
            from harness.loop import build_world
            from harness.progress import NullReporter

            components = SimpleNamespace(testbed=self.make_testbed(), annotator=self.make_annotator(),
                                         trainers=self.make_trainers())
            worlds[self.seed] = build_world(components, self.seed, NullReporter())
        return worlds[self.seed]

    def batch(self, world: Any, seed: int, policy: Any = None) -> tuple[np.ndarray, Responses]:
        """``n_prompts`` prompts and ``n_responses`` samples of ``policy`` (default pi_0) each."""
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x7E57]))
        prompts = world.draw_prompts(self.n_prompts, rng)
        policy = world.initial_policy if policy is None else policy
        return prompts, world.sample(policy, prompts, self.n_responses, rng)

    def logprobs(self, world: Any, policy: Any, prompts: np.ndarray, responses: Responses) -> np.ndarray:
        out = world.logprobs(policy, prompts, responses)
        shape = responses.lengths.shape
        assert isinstance(out, np.ndarray) and out.dtype == np.float64, (
            f"logprobs must return a float64 numpy array, got {getattr(out, 'dtype', type(out).__name__)}"
        )
        assert out.shape == shape, f"logprobs returned shape {out.shape} for {shape} responses"
        assert np.isfinite(out).all(), "logprobs returned NaN or infinite values"
        assert (out <= self.tolerance).all(), f"a summed log-prob is positive ({out.max():.6g})"
        return out

    def evaluate(self, world: Any, policy: Any, seed: int) -> dict[str, Any]:
        metrics = world.evaluate(policy, np.random.default_rng(seed))
        assert isinstance(metrics, Mapping), f"evaluate must return a dict, got {type(metrics).__name__}"
        for key, value in metrics.items():
            assert isinstance(key, str) and key, f"evaluate returned a metric named {key!r}"
            assert _is_real(value) and math.isfinite(value), f"metric {key!r} = {value!r} is not a finite number"
        missing = [name for name in self.required_metrics if name not in metrics]
        assert not missing, f"evaluate reports no {missing}"
        if "win_rate" in metrics:
            assert 0.0 <= metrics["win_rate"] <= 1.0, f"win_rate {metrics['win_rate']} is outside [0, 1]"
            assert metrics.get("win_rate_se", -1.0) >= 0.0, "a world reporting win_rate reports win_rate_se >= 0 too"
        else:
            assert hasattr(world, "evaluation_pairs"), (
                "evaluate reports no win_rate and the world has no evaluation_pairs: no run could evaluate it"
            )
        return dict(metrics)

    def _close(self, first: np.ndarray, second: np.ndarray) -> bool:
        return np.allclose(first, second, rtol=self.tolerance, atol=self.tolerance)

    def _optional(self, world: Any, name: str) -> None:
        if not hasattr(world, name):
            raise unittest.SkipTest(f"{type(world).__name__} has no optional {name}")

    # -- the testbed

    def test_default_judges_are_registered_judges(self):
        defaults = self.testbed_class.default_judges
        assert isinstance(defaults, Mapping), "default_judges must be a dict {role: judge name}"
        unknown_roles = sorted(set(defaults) - set(_METRIC_ROLES))
        assert not unknown_roles, f"default_judges has roles {unknown_roles}; the roles are {list(_METRIC_ROLES)}"
        if defaults:
            names = self.judge_names()
            unknown = sorted(str(name) for name in defaults.values() if name not in names)
            assert not unknown, f"default_judges names judges that are not registered: {unknown}"

    def test_build_world_takes_the_loops_keywords(self):
        parameters = inspect.signature(self.make_testbed().build_world).parameters
        kinds = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        for name in ("seed", "reporter"):
            assert name in parameters and parameters[name].kind in kinds, (
                f"build_world must take {name!r} by keyword"
            )
        for name, parameter in parameters.items():
            if name in ("seed", "reporter", "annotator", "trainers") or parameter.kind in (
                inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL
            ):
                continue
            assert parameter.default is not inspect.Parameter.empty, (
                f"build_world's parameter {name!r} has no default, and the loop never passes it"
            )

    # -- the world

    def test_world_has_the_loops_attributes(self):
        world = self.build()
        for name in ("reference_policy", "initial_policy"):
            policy = getattr(world, name, None)
            assert isinstance(policy, Policy), f"world.{name} must be a Policy (clone, parameters, sequence_logprobs)"
        for name in ("draw_prompts", "sample", "logprobs", "annotate", "evaluate"):
            assert callable(getattr(world, name, None)), f"the world has no method {name}"
        assert hasattr(world, "save_policy") == hasattr(world, "load_policy"), (
            "a world has both save_policy and load_policy or neither (resume needs both)"
        )

    def test_world_is_a_function_of_its_seed(self):
        from harness.progress import NullReporter

        world = self.build()
        again = self.make_testbed().build_world(seed=self.seed, reporter=NullReporter())
        prompts, responses = self.batch(world, 1)
        prompts_again, responses_again = self.batch(again, 1)
        assert np.array_equal(prompts, prompts_again), "a world built again draws other prompts"
        _assert_responses_equal(responses, responses_again, "the initial policy of a world built again")
        for name in ("initial_policy", "reference_policy"):
            assert self._close(self.logprobs(world, getattr(world, name), prompts, responses),
                               self.logprobs(again, getattr(again, name), prompts, responses)), (
                f"the {name} of a world built again scores the same responses differently"
            )
        first, second = self.evaluate(world, world.initial_policy, 3), self.evaluate(again, again.initial_policy, 3)
        assert first.keys() == second.keys() and all(self._close(first[k], second[k]) for k in first), (
            f"a world built again evaluates pi_0 differently: {first} and {second}"
        )

    def test_draw_prompts(self):
        world = self.build()
        width = None
        for n in (0, 1, self.n_prompts):
            prompts = world.draw_prompts(n, np.random.default_rng(5))
            assert isinstance(prompts, np.ndarray) and prompts.dtype == np.int64 and prompts.ndim == 2, (
                f"draw_prompts must return an (n, P) int64 array, got {getattr(prompts, 'dtype', type(prompts))} "
                f"of shape {getattr(prompts, 'shape', None)}"
            )
            assert prompts.shape[0] == n, f"draw_prompts({n}) returned {prompts.shape[0]} prompts"
            width = prompts.shape[1] if width is None else width
            assert prompts.shape[1] == width, "draw_prompts returned prompts of another width"
            assert np.array_equal(prompts, world.draw_prompts(n, np.random.default_rng(5))), (
                "draw_prompts differs for equal seeds"
            )

    def test_sample(self):
        world = self.build()
        prompts = world.draw_prompts(self.n_prompts, np.random.default_rng(2))
        prompts_before = prompts.copy()
        for name in ("initial_policy", "reference_policy"):
            policy = getattr(world, name)
            before = _parameters(policy)
            first = world.sample(policy, prompts, self.n_responses, np.random.default_rng(4))
            _check_responses(first, self.n_prompts, self.n_responses, f"sample from {name}")
            second = world.sample(policy, prompts, self.n_responses, np.random.default_rng(4))
            _assert_responses_equal(first, second, f"sample from {name} with equal seeds")
            _assert_parameters_unchanged(before, policy, "sample")
        assert np.array_equal(prompts, prompts_before), "sample modified the prompts"

    def test_logprobs(self):
        world = self.build()
        prompts, responses = self.batch(world, 6)
        kept = _copy_responses(responses)
        prompts_before = np.array(prompts, copy=True)
        for name in ("initial_policy", "reference_policy"):
            policy = getattr(world, name)
            before = _parameters(policy)
            first = self.logprobs(world, policy, prompts, responses)
            assert np.array_equal(first, self.logprobs(world, policy, prompts, responses)), (
                f"logprobs under {name} differ between two calls"
            )
            _assert_parameters_unchanged(before, policy, "logprobs")
        _assert_responses_equal(kept, responses, "logprobs modified its responses;")
        assert np.array_equal(prompts, prompts_before), "logprobs modified the prompts"

    def test_logprobs_do_not_depend_on_the_batch(self):
        world = self.build()
        policy = world.initial_policy
        prompts, responses = self.batch(world, 7)
        full = self.logprobs(world, policy, prompts, responses)
        rows = slice(1, 3)
        part = Responses(tokens=responses.tokens[rows], lengths=responses.lengths[rows])
        assert self._close(self.logprobs(world, policy, prompts[rows], part), full[rows]), (
            "log-probs of some of the prompts differ from the same rows scored with all of them"
        )
        columns = [0, self.n_responses - 1]
        part = Responses(tokens=responses.tokens[:, columns], lengths=responses.lengths[:, columns])
        assert self._close(self.logprobs(world, policy, prompts, part), full[:, columns]), (
            "log-probs of some of the responses differ from the same responses scored with all of them"
        )

    def test_annotate(self):
        world = self.build()
        prompts, responses = self.batch(world, 8)
        _, _, pairs = _judge_batch(TokenTextWorld(), 0, self.n_prompts, self.n_responses)
        if not self.annotates:
            _raises(UsageError, lambda: world.annotate(prompts, responses, pairs, np.random.default_rng(0)),
                    "annotate of a world declared annotates = False")
            return
        kept = _copy_responses(responses)
        first = world.annotate(prompts, responses, pairs, np.random.default_rng(9))
        check_labels(first, len(pairs), "annotate")
        _assert_labels_equal(first, world.annotate(prompts, responses, pairs, np.random.default_rng(9)),
                             "annotate with equal seeds")
        check_labels(world.annotate(prompts, responses, Pairs.empty(), np.random.default_rng(9)), 0,
                     "annotate of no pairs")
        _assert_responses_equal(kept, responses, "annotate modified its responses;")

    def test_evaluate(self):
        world = self.build()
        policy = world.initial_policy
        before = _parameters(policy)
        first = self.evaluate(world, policy, 11)
        assert first == self.evaluate(world, policy, 11), "evaluate differs for equal seeds"
        _assert_parameters_unchanged(before, policy, "evaluate")

    def test_evaluating_the_reference_reports_no_kl(self):
        world = self.build()
        metrics = self.evaluate(world, world.reference_policy, 12)
        if "kl" not in metrics:
            raise unittest.SkipTest("evaluate reports no kl")
        assert abs(metrics["kl"]) <= self.tolerance, f"KL(pi_ref || pi_ref) is reported as {metrics['kl']}"

    # -- the world's optional methods

    def test_checkpoints(self):
        world = self.build()
        self._optional(world, "save_policy")
        self._optional(world, "load_policy")
        prompts, responses = self.batch(world, 13)
        expected = self.logprobs(world, world.initial_policy, prompts, responses)
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "policy.ckpt"
            world.save_policy(world.initial_policy, path)
            assert path.is_file(), "save_policy wrote no file at the path it was given"
            loaded = world.load_policy(path)
            assert isinstance(loaded, Policy), "load_policy must return a Policy"
            assert self._close(self.logprobs(world, loaded, prompts, responses), expected), (
                "the policy loaded back scores responses differently"
            )
            data = path.read_bytes()
            corrupt = Path(folder) / "corrupt.ckpt"
            corrupt.write_bytes(b"not a checkpoint" * 8)
            _raises(CheckpointError, lambda: world.load_policy(corrupt), "load_policy of a corrupt file")
            truncated = Path(folder) / "truncated.ckpt"
            truncated.write_bytes(data[: len(data) // 2])
            _raises(CheckpointError, lambda: world.load_policy(truncated), "load_policy of a truncated file")

    def test_texts(self):
        world = self.build()
        self._optional(world, "texts")
        prompts, responses = self.batch(world, 14)
        tokens, lengths = responses.tokens.copy(), responses.lengths.copy()
        tokens[:, 1], lengths[:, 1] = tokens[:, 0], lengths[:, 0]
        twins = Responses(tokens=tokens, lengths=lengths)
        prompt_texts, response_texts = world.texts(prompts, twins)
        assert isinstance(prompt_texts, list) and len(prompt_texts) == self.n_prompts, (
            "texts must return a list of one prompt text per prompt"
        )
        assert all(isinstance(t, str) for t in prompt_texts), "prompt texts must be str"
        assert isinstance(response_texts, list) and len(response_texts) == self.n_prompts and all(
            isinstance(row, list) and len(row) == self.n_responses and all(isinstance(t, str) for t in row)
            for row in response_texts
        ), "texts must return an (M, N) list of lists of str for the responses"
        assert all(row[0] == row[1] for row in response_texts), "two identical responses read differently"
        assert world.texts(prompts, twins) == (prompt_texts, response_texts), "texts differs between two calls"

    def test_evaluation_pairs(self):
        world = self.build()
        self._optional(world, "evaluation_pairs")
        by_policy = {}
        for name in ("initial_policy", "reference_policy"):
            policy = getattr(world, name)
            before = _parameters(policy)
            prompts, pairs = world.evaluation_pairs(policy, np.random.default_rng(15))
            assert isinstance(prompts, np.ndarray) and prompts.dtype == np.int64 and prompts.ndim == 2, (
                "evaluation_pairs must return (E, P) int64 prompts"
            )
            _check_responses(pairs, len(prompts), 2, "evaluation_pairs")
            again = world.evaluation_pairs(policy, np.random.default_rng(15))
            assert np.array_equal(prompts, again[0]), "evaluation_pairs gives other prompts for equal seeds"
            _assert_responses_equal(pairs, again[1], "evaluation_pairs with equal seeds")
            _assert_parameters_unchanged(before, policy, "evaluation_pairs")
            if hasattr(world, "texts"):
                world.texts(prompts, pairs)
            by_policy[name] = prompts, pairs
        (prompts, first), (other_prompts, second) = by_policy.values()
        assert np.array_equal(prompts, other_prompts), "the evaluation prompts depend on the policy"
        lengths = first.lengths[:, 1]
        assert np.array_equal(lengths, second.lengths[:, 1]) and all(
            np.array_equal(first.tokens[e, 1, :n], second.tokens[e, 1, :n]) for e, n in enumerate(lengths)
        ), "the reference output (response 1) depends on the policy evaluated"

    def test_gold_rewards(self):
        world = self.build()
        if getattr(self.testbed_class, "exact_gold", False):  # it promised exact gold to reference-point selectors
            assert hasattr(world, "gold_rewards"), (
                f"testbed {self.testbed_class.name!r} declares exact_gold = True, but its world has no gold_rewards")
        self._optional(world, "gold_rewards")
        prompts, responses = self.batch(world, 16)
        tokens, lengths = responses.tokens.copy(), responses.lengths.copy()
        tokens[:, 1], lengths[:, 1] = tokens[:, 0], lengths[:, 0]
        twins = Responses(tokens=tokens, lengths=lengths)
        gold = np.asarray(world.gold_rewards(prompts, twins))
        assert gold.shape == lengths.shape and gold.dtype.kind == "f" and np.isfinite(gold).all(), (
            f"gold_rewards must return an (M, N) array of finite floats, got {gold.dtype} {gold.shape}"
        )
        assert np.array_equal(gold[:, 0], gold[:, 1]), "two identical responses have different gold rewards"
        assert np.array_equal(gold, np.asarray(world.gold_rewards(prompts, twins))), "gold_rewards is not deterministic"

    def test_stochastic_logprobs(self):
        world = self.build()
        self._optional(world, "stochastic_logprobs")
        prompts, responses = self.batch(world, 18)
        kept, prompts_before = _copy_responses(responses), np.array(prompts, copy=True)
        policy = world.initial_policy
        plain = self.logprobs(world, policy, prompts, responses)
        before, rngs = _parameters(policy), streams.global_rng_state()
        passes = 3
        first = world.stochastic_logprobs(policy, prompts, responses, passes, np.random.default_rng(5))
        shape = (passes, *responses.lengths.shape)
        assert isinstance(first, np.ndarray) and first.dtype == np.float64 and first.shape == shape, (
            f"stochastic_logprobs must return a float64 array of shape {shape}, got "
            f"{getattr(first, 'dtype', type(first).__name__)} {getattr(first, 'shape', '')}"
        )
        assert np.isfinite(first).all(), "stochastic_logprobs returned NaN or infinite values"
        assert (first <= self.tolerance).all(), f"a stochastic summed log-prob is positive ({first.max():.6g})"
        assert_global_rng_unchanged(rngs, "stochastic_logprobs")
        second = world.stochastic_logprobs(policy, prompts, responses, passes, np.random.default_rng(5))
        assert np.array_equal(first, second), "stochastic_logprobs differs for equal Generator seeds"
        assert (first.std(axis=0) > 0).any(), "stochastic_logprobs gave the same log-probs in every pass"
        _assert_parameters_unchanged(before, policy, "stochastic_logprobs")
        _assert_responses_equal(kept, responses, "stochastic_logprobs modified its responses;")
        assert np.array_equal(prompts, prompts_before), "stochastic_logprobs modified the prompts"
        assert np.array_equal(plain, self.logprobs(world, policy, prompts, responses)), (
            "logprobs changed after stochastic_logprobs: it must leave the policy as it found it"
        )

    def test_features(self):
        world = self.build()
        self._optional(world, "features")
        prompts, responses = self.batch(world, 19)
        tokens, lengths = responses.tokens.copy(), responses.lengths.copy()
        tokens[:, 1], lengths[:, 1] = tokens[:, 0], lengths[:, 0]  # response 1 repeats response 0
        responses = Responses(tokens=tokens, lengths=lengths)
        kept, policy = _copy_responses(responses), world.initial_policy
        before, rngs = _parameters(policy), streams.global_rng_state()
        first = world.features(policy, prompts, responses)
        m, n = responses.lengths.shape
        assert isinstance(first, np.ndarray) and first.dtype == np.float64 and first.ndim == 3 \
            and first.shape[:2] == (m, n) and first.shape[2] >= 1, (
                f"features must return a float64 array of shape ({m}, {n}, d), got "
                f"{getattr(first, 'dtype', type(first).__name__)} {getattr(first, 'shape', '')}")
        assert np.isfinite(first).all(), "features returned NaN or infinite values"
        assert_global_rng_unchanged(rngs, "features")
        _assert_parameters_unchanged(before, policy, "features")
        _assert_responses_equal(kept, responses, "features modified its responses;")
        assert np.array_equal(first, world.features(policy, prompts, responses)), "features is not deterministic"
        assert np.allclose(first[:, 0], first[:, 1], rtol=self.tolerance, atol=self.tolerance), (
            "identical responses got different features")
        half = max(1, m // 2)
        parts = [world.features(policy, prompts[part], Responses(tokens=tokens[part], lengths=lengths[part]))
                 for part in (slice(0, half), slice(half, m))]
        assert np.allclose(np.concatenate(parts), first, rtol=self.tolerance, atol=self.tolerance), (
            "features depend on which other prompts share the call")

    def test_steered_sample(self):
        world = self.build()
        self._optional(world, "steered_sample")
        prompts, _ = self.batch(world, 20)
        m, n = len(prompts), max(self.n_responses, len(SAMPLING_SOURCES))
        sources = (np.arange(m * n).reshape(m, n) % len(SAMPLING_SOURCES)).astype(np.int8)
        policy, reference = world.initial_policy, world.reference_policy
        before, rngs = _parameters(policy), streams.global_rng_state()
        first = world.steered_sample(policy, reference, prompts, sources, 0.5, np.random.default_rng(3))
        assert_global_rng_unchanged(rngs, "steered_sample")
        _assert_parameters_unchanged(before, policy, "steered_sample")
        assert isinstance(first, Responses) and first.lengths.shape == (m, n), (
            f"steered_sample must return Responses of shape ({m}, {n})")
        assert first.sources is not None and np.array_equal(first.sources, sources), (
            "steered_sample must return the responses with `sources` set to the codes it was given")
        width = first.tokens.shape[2]
        assert ((first.lengths >= 1) & (first.lengths <= width)).all(), "a response length is outside 1..L"
        again = world.steered_sample(policy, reference, prompts, sources, 0.5, np.random.default_rng(3))
        assert np.array_equal(first.tokens, again.tokens) and np.array_equal(first.lengths, again.lengths), (
            "steered_sample differs for equal Generator seeds")
        self.logprobs(world, policy, prompts, first)  # every response scores as a response of the world

    def test_seed_round(self):
        world = self.build()
        self._optional(world, "seed_round")
        seed_round = world.seed_round
        assert isinstance(seed_round, Mapping), f"seed_round must be a mapping, got {type(seed_round).__name__}"
        for key, value in seed_round.items():
            assert isinstance(key, str) and key.startswith("seed_"), f"seed_round key {key!r} does not start with seed_"
            assert isinstance(value, (bool, int, float, str)), (
                f"seed_round[{key!r}] is a {type(value).__name__}; the loop records only bool, int, float and str"
            )

    def test_evaluation_report(self):
        world = self.build()
        self._optional(world, "evaluation_report")
        assert hasattr(world, "evaluation_pairs"), "evaluation_report reads evaluation_pairs, which the world lacks"
        prompts, pairs = world.evaluation_pairs(world.initial_policy, np.random.default_rng(17))
        e = len(prompts)
        labels = Labels(prefer_a=np.arange(e) % 2 == 0, tie=np.arange(e) % 3 == 0)
        report = world.evaluation_report(iteration=1, seed=0, prompts=prompts, responses=pairs, labels=labels,
                                         annotator="contract")
        assert isinstance(report, Mapping), "evaluation_report must return a dict"
        for key, value in report.items():
            assert isinstance(key, str) and _is_real(value) and math.isfinite(value), (
                f"evaluation_report[{key!r}] = {value!r} is not a finite number"
            )

    def test_shards_sampling(self):
        world = self.build()
        if not getattr(world, "shards_sampling", False):
            raise unittest.SkipTest(f"{type(world).__name__} does not declare shards_sampling")
        prompts = world.draw_prompts(5, np.random.default_rng(23))
        whole = world.sample(world.initial_policy, prompts, 2, np.random.default_rng(29))
        parts = [world.sample(world.initial_policy, prompts[part], 2, np.random.default_rng(29))
                 for part in (slice(0, 2), slice(2, 5))]
        joined = Responses.concatenate(parts, pad_id=int(getattr(world, "pad_id", 0)))
        assert np.array_equal(joined.lengths, whole.lengths) and np.array_equal(joined.tokens, whole.tokens), (
            "shards_sampling is True but a prompt's responses change with the other prompts of the sample call")

    def test_close(self):
        world = self.build()
        self._optional(world, "close")
        rng = np.random.default_rng(19)
        prompts = world.draw_prompts(2, rng)
        responses = world.sample(world.initial_policy, prompts, 2, rng)
        before = world.logprobs(world.initial_policy, prompts, responses)
        world.close()
        world.close()  # the loop calls it once, but a second call must not fail
        after = world.logprobs(world.initial_policy, prompts, responses)
        assert np.allclose(before, after), "close changed what the world computes for its policies"


CONTRACTS: dict[str, type] = {
    "scorer": ScorerContract,
    "selector": SelectorContract,
    "allocator": AllocatorContract,
    "trainer": TrainerContract,
    "testbed": TestbedContract,
    "judge": JudgeContract,
}
"""The contract of each component kind; a contract class names its component in ``<kind>_class``."""
