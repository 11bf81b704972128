"""The built-in selectors: the selector contract, then behaviour on hand-built pools."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pluggy
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from harness import hookspecs
from harness.errors import UnknownNameError
from harness.interfaces import Pairs, SelectionBatch
from harness.plugins import PluginInfo, build_registry
from harness.testing import SelectorContract, check_corpus_pairs, check_instance_pairs, make_pool
from plugins.selectors import margin, random as random_selector
from plugins.selectors._pairs import extreme_margin_pairs, keep_by_margin
from plugins.selectors.margin import LargestMargin, NormalizedMargin, SmallestMargin
from plugins.selectors.random import RandomSelector

RAW = "implicit_reward"
NORM = "implicit_reward_normalized"


# ------------------------------------------------------------------ contracts


class TestRandomContract(SelectorContract):
    selector_class = RandomSelector


class TestSmallestContract(SelectorContract):
    selector_class = SmallestMargin


class TestSmallestNormalizedContract(SelectorContract):
    selector_class = SmallestMargin
    settings = {"normalize": True}


class TestLargestContract(SelectorContract):
    selector_class = LargestMargin


class TestLargestNormalizedContract(SelectorContract):
    selector_class = LargestMargin
    settings = {"normalize": "true"}


class TestNormalizedContract(SelectorContract):
    selector_class = NormalizedMargin


class _IgnoresDistinct(SmallestMargin):
    """A broken selector: smallest margin without the distinct mask."""

    name = "broken"

    def select_instances(self, batch, rng):
        return extreme_margin_pairs(batch.score(self.column), np.ones_like(batch.distinct), largest=False)


class _KeepsTooMany(RandomSelector):
    name = "broken2"

    def select_corpus(self, batch, pairs, n_keep, rng):
        return pairs


class _UsesGlobalRng(RandomSelector):
    name = "broken3"

    def select_corpus(self, batch, pairs, n_keep, rng):
        return super().select_corpus(batch, pairs, n_keep, np.random.default_rng(np.random.randint(1 << 30)))


def test_the_contract_catches_broken_selectors():
    """The mixin's checks fail on selectors that break the contract (they can fail)."""

    class A(SelectorContract):
        selector_class = _IgnoresDistinct

    class B(SelectorContract):
        selector_class = _KeepsTooMany

    class C(SelectorContract):
        selector_class = _UsesGlobalRng

    with pytest.raises(AssertionError, match="distinct"):
        A().test_duplicates_are_never_paired()
    with pytest.raises(AssertionError, match="kept"):
        B().test_corpus_keeps_min_of_n_keep_and_pairs()
    with pytest.raises(AssertionError, match="global numpy.random"):
        C().test_does_not_touch_global_rng()
    with pytest.raises(AssertionError, match="global seeds"):
        C().test_does_not_depend_on_global_rng()


# ------------------------------------------------------------------ helpers


def batch_of(scores=None, *, distinct=None, lengths=None, column=RAW) -> SelectionBatch:
    """A batch from nested lists; ``scores`` may be a dict of columns."""
    columns = scores if isinstance(scores, dict) else {column: scores}
    columns = {k: np.asarray(v, dtype=np.float64) for k, v in columns.items()}
    shape = next(iter(columns.values())).shape
    distinct = np.ones(shape, bool) if distinct is None else np.asarray(distinct, bool)
    lengths = np.ones(shape, np.int64) if lengths is None else np.asarray(lengths, np.int64)
    return SelectionBatch(lengths=lengths, distinct=distinct, scores=columns)


def triples(pairs: Pairs) -> list[tuple[int, int, int]]:
    return list(zip(pairs.prompt.tolist(), pairs.a.tolist(), pairs.b.tolist()))


RNG = np.random.default_rng(0)


# ------------------------------------------------------------------ registration


def test_registered_like_third_party_plugins():
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    infos = {}
    for module in (random_selector, margin):
        pm.register(module, name=module.__name__)
        infos[module.__name__] = PluginInfo(module.__name__, "test", "builtin")
    registry = build_registry(pm, infos)
    assert registry.names("selector") == ["largest", "normalized", "random", "smallest"]
    assert registry.get("selector", "smallest").plugin.name == "plugins.selectors.margin"
    assert registry.create("selector", "largest", {"normalize": "yes"}).requires == (NORM,)


def test_requires_follows_normalize():
    assert RandomSelector().requires == ()
    assert SmallestMargin().requires == (RAW,)
    assert SmallestMargin({"normalize": True}).requires == (NORM,)
    assert LargestMargin().requires == (RAW,)
    assert LargestMargin({"normalize": "on"}).requires == (NORM,)
    assert NormalizedMargin().requires == (NORM,)
    # The class attribute states the default settings' requirement.
    assert SmallestMargin.requires == (RAW,) and NormalizedMargin.requires == (NORM,)
    # normalized has normalize fixed: it exposes no option to turn it off.
    with pytest.raises(UnknownNameError):
        NormalizedMargin({"normalize": False})


# ------------------------------------------------------------------ instance level


def test_smallest_picks_the_argmin_pair():
    batch = batch_of([[0.0, 10.0, 3.0, 3.5], [5.0, -1.0, 4.0, 20.0]])
    pairs = SmallestMargin().select_instances(batch, RNG)
    # prompt 0: |3 - 3.5| = 0.5; prompt 1: |5 - 4| = 1.
    assert triples(pairs) == [(0, 2, 3), (1, 0, 2)]


def test_largest_picks_the_argmax_pair():
    batch = batch_of([[0.0, 10.0, 3.0, 3.5], [5.0, -1.0, 4.0, 20.0]])
    pairs = LargestMargin().select_instances(batch, RNG)
    assert triples(pairs) == [(0, 0, 1), (1, 1, 3)]


def test_normalized_uses_length_normalised_margins():
    # Raw rewards: the closest pair is (0, 1) (|10 - 10.5| = 0.5).
    # Divided by the lengths [10, 1, 4, 5]: [1.0, 10.5, 1.0, 0.5] -> closest is (0, 2) (margin 0).
    raw = np.array([[10.0, 10.5, 4.0, 2.5]])
    lengths = np.array([[10, 1, 4, 5]])
    batch = batch_of({RAW: raw, NORM: raw / lengths}, lengths=lengths)
    assert triples(SmallestMargin().select_instances(batch, RNG)) == [(0, 0, 1)]
    assert triples(NormalizedMargin().select_instances(batch, RNG)) == [(0, 0, 2)]
    assert triples(SmallestMargin({"normalize": True}).select_instances(batch, RNG)) == [(0, 0, 2)]
    # Largest: raw (1, 3) = 8.0; normalised (1, 3) = 10.0 too, but (0,1) = 9.5 < 10 -> still (1, 3).
    assert triples(LargestMargin({"normalize": True}).select_instances(batch, RNG)) == [(0, 1, 3)]


def test_normalized_reads_only_its_column():
    batch = batch_of({NORM: [[0.0, 1.0, 5.0]]})
    assert triples(NormalizedMargin().select_instances(batch, RNG)) == [(0, 0, 1)]
    with pytest.raises(KeyError, match="requires"):
        SmallestMargin().select_instances(batch, RNG)


def test_duplicates_are_never_paired():
    # Response 1 repeats response 0 (same score: margin 0 would win); response 4 repeats 3.
    batch = batch_of(
        [[0.0, 0.0, 5.0, 9.0, 9.0]],
        distinct=[[True, False, True, True, False]],
    )
    assert triples(SmallestMargin().select_instances(batch, RNG)) == [(0, 2, 3)]
    assert triples(LargestMargin().select_instances(batch, RNG)) == [(0, 0, 3)]
    assert triples(RandomSelector().select_instances(batch, RNG)) == [(0, 0, 2)]


def test_prompts_with_one_distinct_response_drop_out():
    batch = batch_of(
        [[1.0, 1.0, 1.0], [0.0, 2.0, 7.0], [3.0, 3.0, 4.0]],
        distinct=[[True, False, False], [True, True, True], [True, False, True]],
    )
    for selector in (SmallestMargin(), LargestMargin(), RandomSelector()):
        pairs = selector.select_instances(batch, RNG)
        assert pairs.prompt.tolist() == [1, 2], selector.name
    assert triples(RandomSelector().select_instances(batch, RNG)) == [(1, 0, 1), (2, 0, 2)]


def test_ties_go_to_the_first_pair_in_index_order():
    batch = batch_of([[2.0, 2.0, 2.0, 2.0], [0.0, 1.0, 2.0, 3.0]])
    # prompt 1: the margins (0,1), (1,2), (2,3) tie at 1; the first is (0,1).
    assert triples(SmallestMargin().select_instances(batch, RNG)) == [(0, 0, 1), (1, 0, 1)]
    assert triples(LargestMargin().select_instances(batch, RNG)) == [(0, 0, 1), (1, 0, 3)]


def test_nan_scores_are_never_selected():
    nan = math.nan
    batch = batch_of(
        [
            [0.0, nan, 0.1, 5.0],  # NaN response 1 skipped: smallest is (0, 2)
            [nan, nan, 1.0, nan],  # one finite response: no pair
            [nan, 3.0, 9.0, 4.0],  # smallest (1, 3), largest (1, 2)
        ]
    )
    assert triples(SmallestMargin().select_instances(batch, RNG)) == [(0, 0, 2), (2, 1, 3)]
    assert triples(LargestMargin().select_instances(batch, RNG)) == [(0, 0, 3), (2, 1, 2)]


def test_infinite_scores_are_invalid_and_overflow_is_handled():
    big = np.finfo(np.float64).max
    batch = batch_of([[np.inf, 0.0, 1.0], [big, -big, big / 2], [big, -big, np.nan]])
    # prompt 1: (0,1) and (1,2) overflow to inf, (0,2) = big/2; prompt 2: only (0,1), margin inf.
    assert triples(SmallestMargin().select_instances(batch, RNG)) == [(0, 1, 2), (1, 0, 2), (2, 0, 1)]
    assert triples(LargestMargin().select_instances(batch, RNG)) == [(0, 1, 2), (1, 0, 1), (2, 0, 1)]


def brute_force(scores, distinct, largest):
    """One pair per prompt by a plain loop: the reference the vectorised code must match."""
    out = []
    for p in range(scores.shape[0]):
        best = None
        for a, b in itertools.combinations(range(scores.shape[1]), 2):
            ok = distinct[p, a] and distinct[p, b] and np.isfinite(scores[p, a]) and np.isfinite(scores[p, b])
            if not ok:
                continue
            m = abs(scores[p, a] - scores[p, b])
            if best is None or (m > best[0] if largest else m < best[0]):
                best = (m, a, b)
        if best is not None:
            out.append((p, best[1], best[2]))
    return out


@settings(max_examples=200, deadline=None)
@given(
    data=st.data(),
    m=st.integers(0, 6),
    n=st.integers(2, 6),
    largest=st.booleans(),
)
def test_vectorised_selection_matches_a_plain_loop(data, m, n, largest):
    elements = st.one_of(st.sampled_from([0.0, 1.0, -1.0, math.nan]), st.floats(-10, 10))
    scores = data.draw(hnp.arrays(np.float64, (m, n), elements=elements))
    distinct = data.draw(hnp.arrays(bool, (m, n)))
    pairs = extreme_margin_pairs(scores, distinct, largest=largest)
    assert triples(pairs) == brute_force(scores, distinct, largest)
    assert pairs.prompt.dtype == np.int64


def test_on_a_synthetic_pool_smallest_and_largest_bracket_every_candidate():
    pool = make_pool(3, n_prompts=200, requires=(RAW,))
    scores = pool.batch.scores[RAW]
    small = SmallestMargin().select_instances(pool.batch, RNG)
    large = LargestMargin().select_instances(pool.batch, RNG)
    check_instance_pairs(pool, small)
    assert small.prompt.tolist() == large.prompt.tolist()
    assert triples(small) == brute_force(scores, pool.batch.distinct, False)
    assert triples(large) == brute_force(scores, pool.batch.distinct, True)


# ------------------------------------------------------------------ corpus level


def test_corpus_smallest_after_instance_random():
    scores = [
        [0.0, 5.0, 0.1],  # random pair (0,1): margin 5
        [1.0, 1.5, 9.0],  # (0,1): 0.5
        [2.0, 2.0, 3.0],  # 1 repeats 0 -> (0,2): 1.0
        [0.0, 0.2, 0.0],  # (0,1): 0.2
    ]
    distinct = [[True] * 3, [True] * 3, [True, False, True], [True] * 3]
    batch = batch_of(scores, distinct=distinct)
    given = RandomSelector().select_instances(batch, RNG)
    assert triples(given) == [(0, 0, 1), (1, 0, 1), (2, 0, 2), (3, 0, 1)]
    kept = SmallestMargin().select_corpus(batch, given, 2, RNG)
    assert triples(kept) == [(1, 0, 1), (3, 0, 1)]  # margins 0.5 and 0.2, in the given order
    kept = LargestMargin().select_corpus(batch, given, 2, RNG)
    assert triples(kept) == [(0, 0, 1), (2, 0, 2)]  # margins 5 and 1


def test_corpus_margin_is_recomputed_from_the_selectors_own_column():
    raw = np.array([[0.0, 4.0], [0.0, 1.0]])
    lengths = np.array([[1, 8], [1, 1]])  # normalised: [[0, 0.5], [0, 1]]
    batch = batch_of({RAW: raw, NORM: raw / lengths}, lengths=lengths)
    given = Pairs([0, 1], [0, 0], [1, 1])
    assert triples(SmallestMargin().select_corpus(batch, given, 1, RNG)) == [(1, 0, 1)]
    assert triples(NormalizedMargin().select_corpus(batch, given, 1, RNG)) == [(0, 0, 1)]


def test_corpus_ties_keep_the_earliest_pairs():
    batch = batch_of([[0.0, 1.0]] * 5)
    given = Pairs(np.arange(5), np.zeros(5), np.ones(5))
    for selector in (SmallestMargin(), LargestMargin()):
        assert selector.select_corpus(batch, given, 3, RNG).prompt.tolist() == [0, 1, 2]


def test_corpus_nan_margins_rank_last():
    nan = math.nan
    batch = batch_of([[0.0, nan], [0.0, 3.0], [0.0, 1.0], [nan, nan]])
    given = Pairs(np.arange(4), np.zeros(4), np.ones(4))
    assert SmallestMargin().select_corpus(batch, given, 1, RNG).prompt.tolist() == [2]
    assert LargestMargin().select_corpus(batch, given, 2, RNG).prompt.tolist() == [1, 2]
    # Only when n_keep exceeds the valid pairs are NaN pairs kept (earliest first).
    assert LargestMargin().select_corpus(batch, given, 3, RNG).prompt.tolist() == [0, 1, 2]
    assert SmallestMargin().select_corpus(batch, given, 4, RNG).prompt.tolist() == [0, 1, 2, 3]


def test_keep_by_margin_rejects_negative_n_keep():
    with pytest.raises(ValueError, match="n_keep"):
        keep_by_margin(np.zeros(3), -1, largest=False)


def test_random_corpus_is_a_uniform_sample():
    batch = batch_of([[0.0, 1.0]] * 10)
    given = Pairs(np.arange(10), np.zeros(10), np.ones(10))
    counts = np.zeros(10)
    for seed in range(2000):
        kept = RandomSelector().select_corpus(batch, given, 3, np.random.default_rng(seed))
        check_corpus_pairs(given, kept, 3)
        counts[kept.prompt] += 1
    # Each pair is kept with probability 3/10: 600 of 2000 expected, sd ~ 20.5.
    assert np.all(np.abs(counts - 600) < 100), counts
    first = RandomSelector().select_corpus(batch, given, 5, np.random.default_rng(1))
    others = [RandomSelector().select_corpus(batch, given, 5, np.random.default_rng(s)) for s in range(2, 6)]
    assert any(triples(first) != triples(o) for o in others), "the sample does not depend on the seed"


def test_random_instance_is_responses_0_and_1_without_duplicates():
    pool = make_pool(0, n_prompts=50, duplication="none")
    pairs = RandomSelector().select_instances(pool.batch, RNG)
    assert pairs.prompt.tolist() == list(range(50))
    assert set(pairs.a.tolist()) == {0} and set(pairs.b.tolist()) == {1}
