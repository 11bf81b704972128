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
  duplication work, and the batch's arrays are not modified.

**AllocatorContract** checks that a plan has one non-negative int per
iteration, that labels already spent plus the plan for the remaining
iterations never exceed the total, and that plans are deterministic and leave
the global RNGs alone.
"""

from __future__ import annotations

import numbers
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from harness import validation
from harness.errors import SelectionError
from harness.interfaces import (
    Allocator,
    IterationRecord,
    Pairs,
    Responses,
    SelectionBatch,
    Selector,
    check_component_class,
)

__all__ = ["AllocatorContract", "SelectorContract", "SyntheticPool", "make_pool"]


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
) -> SyntheticPool:
    """A synthetic pool of ``n_prompts`` x ``n_responses`` responses, a pure function of ``seed``.

    :param requires: score columns to fill.
    :param scores: ``"normal"`` (standard normal per distinct response) or
        ``"equal"`` (every score 0.0: all margins tie).
    :param duplication: ``"mixed"`` (prompts 0, 1, 2 have 1, 2, N distinct
        responses, the rest a random number), ``"heavy"`` (1 to 3 distinct
        responses per prompt) or ``"none"`` (all responses distinct).
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
    for column in requires:
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
    )
    return SyntheticPool(batch=batch, tokens=tokens, response_id=ids)


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


def _global_rng_state() -> tuple[Any, Any]:
    return np.random.get_state(), random.getstate()


def assert_global_rng_unchanged(before: tuple[Any, Any], what: str) -> None:
    np_before, py_before = before
    np_after, py_after = _global_rng_state()
    same_np = (
        np_before[0] == np_after[0]
        and np.array_equal(np_before[1], np_after[1])
        and tuple(np_before[2:]) == tuple(np_after[2:])
    )
    assert same_np, f"{what} used the global numpy.random state; use the Generator it is passed"
    assert py_before == py_after, f"{what} used the global `random` state; use the Generator it is passed"


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
        before = _global_rng_state()
        self.run_both_levels(self.make_selector(), pool, self.seeds[0])
        assert_global_rng_unchanged(before, "the selector")

    def test_does_not_depend_on_global_rng(self):
        pool = self.make_pool(self.seeds[0])
        saved = _global_rng_state()
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
        }
        selector = self.make_selector()
        pairs = selector.select_instances(batch, np.random.default_rng(0))
        pairs_copy = Pairs(pairs.prompt.copy(), pairs.a.copy(), pairs.b.copy())
        selector.select_corpus(batch, pairs, len(pairs) // 2, np.random.default_rng(0))
        current = {
            "lengths": batch.lengths,
            "distinct": np.asarray(batch.distinct),
            **{f"scores[{k!r}]": v for k, v in batch.scores.items()},
        }
        for name, before in copies.items():
            assert np.array_equal(before, current[name], equal_nan=before.dtype.kind == "f"), (
                f"the selector modified batch.{name}"
            )
        assert_pairs_equal(pairs_copy, pairs, "select_corpus modified the pairs it was given;")


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
                        IterationRecord(iteration=done + 1, labels=labels, metrics={"win_rate": 0.5})
                    )
                assert spent <= total

    def test_deterministic(self):
        for iterations in self.iterations:
            for total in self.totals:
                first = self.make_allocator().allocate(total_labels=total, iterations=iterations, history=())
                second = self.make_allocator().allocate(total_labels=total, iterations=iterations, history=())
                assert list(first) == list(second), f"two equal calls gave {first} and {second}"

    def test_does_not_touch_global_rng(self):
        before = _global_rng_state()
        allocator = self.make_allocator()
        for iterations in self.iterations:
            allocator.allocate(total_labels=self.totals[-1], iterations=iterations, history=())
        assert_global_rng_unchanged(before, "the allocator")
