"""Selectors reading explicit scores (M_AP, best-worst, explicit_largest) and the Muldrew et al. ones."""

from __future__ import annotations

import math

import numpy as np
import pluggy
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from harness import hookspecs
from harness.errors import UnknownNameError, UsageError
from harness.interfaces import Pairs, SelectionBatch
from harness.plugins import DEFAULT_PLUGINS, PluginInfo, build_registry
from harness.testing import SelectorContract, check_corpus_pairs, check_instance_pairs, make_pool
from plugins.scorers import implicit as implicit_scorers
from plugins.selectors import explicit, uncertainty
from plugins.selectors._pairs import extreme_score_pairs, zscore
from plugins.selectors.explicit import (
    AlignmentPotential,
    AlignmentPotentialDPO,
    BestWorst,
    ExplicitLargest,
    ImplicitSmallest,
)
from plugins.selectors.margin import LargestMargin, SmallestMargin
from plugins.selectors.random import RandomSelector
from plugins.selectors.uncertainty import Certainty, PredictiveEntropy, Uncertainty, predictive_entropy

E = "explicit_reward"
LPM = "policy_logprob_mean"
RAW = "implicit_reward"
NORM = "implicit_reward_normalized"
RNG = np.random.default_rng(0)
SQRT2 = math.sqrt(2.0)


# ------------------------------------------------------------------ contracts


class TestMapContract(SelectorContract):
    selector_class = AlignmentPotential


class TestMapGoldContract(SelectorContract):
    selector_class = AlignmentPotential
    settings = {"explicit_source": "gold", "w": 2.5}


class TestMapNoImplicitWeightContract(SelectorContract):
    selector_class = AlignmentPotential
    settings = {"w": 0.0}


class TestMapDpoContract(SelectorContract):
    selector_class = AlignmentPotentialDPO


class TestMapDpoNormalizedGoldContract(SelectorContract):
    selector_class = AlignmentPotentialDPO
    settings = {"normalize": True, "explicit_source": "gold"}


class TestBestWorstContract(SelectorContract):
    selector_class = BestWorst


class TestExplicitLargestContract(SelectorContract):
    selector_class = ExplicitLargest


class TestExplicitLargestGoldContract(SelectorContract):
    selector_class = ExplicitLargest
    settings = {"explicit_source": "gold"}


class TestImplicitSmallestContract(SelectorContract):
    selector_class = ImplicitSmallest


class TestImplicitSmallestGoldContract(SelectorContract):
    selector_class = ImplicitSmallest
    settings = {"explicit_source": "gold"}


class TestCertaintyContract(SelectorContract):
    selector_class = Certainty


class TestUncertaintyContract(SelectorContract):
    selector_class = Uncertainty
    settings = {"normalize": True}


class TestEntropyContract(SelectorContract):
    selector_class = PredictiveEntropy


# ------------------------------------------------------------------ helpers


def batch_of(columns: dict, *, distinct=None, lengths=None) -> SelectionBatch:
    columns = {k: np.asarray(v, dtype=np.float64) for k, v in columns.items()}
    shape = next(iter(columns.values())).shape
    distinct = np.ones(shape, bool) if distinct is None else np.asarray(distinct, bool)
    lengths = np.ones(shape, np.int64) if lengths is None else np.asarray(lengths, np.int64)
    return SelectionBatch(lengths=lengths, distinct=distinct, scores=columns)


def triples(pairs: Pairs) -> list[tuple[int, int, int]]:
    return list(zip(pairs.prompt.tolist(), pairs.a.tolist(), pairs.b.tolist()))


# The hand-computed M_AP example: 4 prompts x 3 responses.
#   explicit:                       max-min pair   explicit margin
#   p0 [1, 5, 3]                    (1, 0)         4
#   p1 [2, 0, 1]                    (0, 1)         2
#   p2 [7, 7, 7]  zero range        (0, 1)         0   (first two distinct responses)
#   p3 [0, 2, 1]                    (1, 0)         2
#   mean-token log-probs of the pair -> implicit margin
#   p0 [-2, -1, -9]   |-1 - -2| = 1
#   p1 [-1, -4,  0]   |-1 - -4| = 3
#   p2 [-3, -2,  5]   |-3 - -2| = 1
#   p3 [-1, -4,  0]   |-4 - -1| = 3
# explicit margins [4, 2, 0, 2]: mean 2, deviations [2, 0, -2, 0], variance (ddof 0) 8/4 = 2
#   -> z = [sqrt2, 0, -sqrt2, 0]
# implicit margins [1, 3, 1, 3]: mean 2, deviations [-1, 1, -1, 1], variance 1 -> z = [-1, 1, -1, 1]
# score (w = 1) = z_e - z_i = [sqrt2 + 1, -1, 1 - sqrt2, -1]
EXAMPLE = {
    E: [[1, 5, 3], [2, 0, 1], [7, 7, 7], [0, 2, 1]],
    LPM: [[-2, -1, -9], [-1, -4, 0], [-3, -2, 5], [-1, -4, 0]],
}
EXAMPLE_PAIRS = [(0, 1, 0), (1, 0, 1), (2, 0, 1), (3, 1, 0)]


# ------------------------------------------------------------------ registration and options


def test_registered_from_their_modules_and_listed_as_builtins():
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    infos = {}
    for module in (explicit, uncertainty, implicit_scorers):
        pm.register(module, name=module.__name__)
        infos[module.__name__] = PluginInfo(module.__name__, "test", "builtin")
    registry = build_registry(pm, infos)
    assert registry.registered_by("plugins.selectors.explicit") == {
        "selector": ["bestworst", "explicit_largest", "implicit_smallest", "map", "map_dpo"]
    }
    assert registry.registered_by("plugins.selectors.uncertainty") == {
        "selector": ["certainty", "entropy", "uncertainty"]
    }
    assert "policy_logprob_mean" in registry.names("scorer")
    assert {"plugins.selectors.explicit", "plugins.selectors.uncertainty"} <= set(DEFAULT_PLUGINS)
    for name in ("map", "map_dpo", "bestworst", "explicit_largest", "implicit_smallest", "certainty", "uncertainty",
                 "entropy"):
        description = registry.get("selector", name).cls.description
        assert description and "\n" not in description


def test_requires_and_explicit_source_follow_the_options():
    assert AlignmentPotential().requires == (E, LPM)
    assert AlignmentPotential().explicit_source == "proxy"
    assert AlignmentPotential({"explicit_source": "gold"}).explicit_source == "gold"
    assert AlignmentPotential.explicit_source == "proxy"  # the class states the default
    assert AlignmentPotentialDPO().requires == (E, RAW)
    assert AlignmentPotentialDPO({"normalize": "true"}).requires == (E, NORM)
    assert AlignmentPotentialDPO({"explicit_source": "gold"}).explicit_source == "gold"
    assert ExplicitLargest().requires == (E,) and ExplicitLargest().explicit_source == "proxy"
    assert ExplicitLargest({"explicit_source": "gold"}).explicit_source == "gold"
    assert BestWorst().requires == (E,) and BestWorst().explicit_source == "gold"
    assert ImplicitSmallest().requires == (E, LPM) and ImplicitSmallest().explicit_source == "proxy"
    assert ImplicitSmallest({"explicit_source": "gold"}).explicit_source == "gold"
    assert PredictiveEntropy().requires == (LPM,) and PredictiveEntropy().explicit_source is None
    assert Certainty().requires == (RAW,) and Uncertainty({"normalize": True}).requires == (NORM,)


def test_option_validation():
    assert AlignmentPotential().settings == {"w": 1.0, "explicit_source": "proxy"}
    assert AlignmentPotential({"w": "2.5"}).settings["w"] == 2.5
    with pytest.raises(UsageError, match="w"):
        AlignmentPotential({"w": -1})
    with pytest.raises(UsageError, match="proxy, gold"):
        AlignmentPotential({"explicit_source": "oracle"})
    with pytest.raises(UnknownNameError):
        BestWorst({"explicit_source": "proxy"})  # bestworst is gold by definition: no option
    with pytest.raises(UnknownNameError):
        AlignmentPotential({"normalize": True})  # only map_dpo has an implicit reward to normalise
    help_text = next(o.help for o in AlignmentPotential.options if o.name == "explicit_source")
    assert "N labels per prompt" in help_text
    assert "N gold labels per prompt" in BestWorst.description and "N(N-1)/2" in BestWorst.description
    assert "--keep" in AlignmentPotential.description and "0.4" in AlignmentPotential.description


# ------------------------------------------------------------------ M_AP: the hand-computed example


def test_map_instance_level_is_the_max_min_explicit_pair():
    batch = batch_of(EXAMPLE)
    for selector in (AlignmentPotential(), ExplicitLargest(), BestWorst(), ImplicitSmallest()):
        assert triples(selector.select_instances(batch, RNG)) == EXAMPLE_PAIRS, selector.name


def test_map_scores_match_the_hand_computed_z_scores():
    batch = batch_of(EXAMPLE)
    pairs = AlignmentPotential().select_instances(batch, RNG)
    scores = AlignmentPotential().pair_scores(batch, pairs)
    np.testing.assert_allclose(scores, [SQRT2 + 1, -1.0, 1 - SQRT2, -1.0], rtol=0, atol=1e-12)
    scores = AlignmentPotential({"w": 2.5}).pair_scores(batch, pairs)
    np.testing.assert_allclose(scores, [SQRT2 + 2.5, -2.5, 2.5 - SQRT2, -2.5], rtol=0, atol=1e-12)
    scores = AlignmentPotential({"w": 0}).pair_scores(batch, pairs)
    np.testing.assert_allclose(scores, [SQRT2, 0.0, -SQRT2, 0.0], rtol=0, atol=1e-12)


def test_map_keeps_the_highest_scores_in_the_given_order_ties_to_the_earliest():
    batch = batch_of(EXAMPLE)
    selector = AlignmentPotential()
    pairs = selector.select_instances(batch, RNG)
    # scores [2.41, -1, -0.41, -1]: p0 then p2; p1 and p3 tie, so the third pick is p1.
    assert selector.select_corpus(batch, pairs, 1, RNG).prompt.tolist() == [0]
    assert selector.select_corpus(batch, pairs, 2, RNG).prompt.tolist() == [0, 2]
    assert selector.select_corpus(batch, pairs, 3, RNG).prompt.tolist() == [0, 1, 2]
    assert triples(selector.select_corpus(batch, pairs, 2, RNG)) == [(0, 1, 0), (2, 0, 1)]


def test_w_zero_reduces_to_explicit_largest():
    batch = batch_of(EXAMPLE)
    pairs = AlignmentPotential().select_instances(batch, RNG)
    # explicit margins [4, 2, 0, 2]: the implicit margin no longer rescues the zero-range p2.
    for n_keep in range(5):
        kept = AlignmentPotential({"w": 0}).select_corpus(batch, pairs, n_keep, RNG)
        assert triples(kept) == triples(ExplicitLargest().select_corpus(batch, pairs, n_keep, RNG))
    assert AlignmentPotential({"w": 0}).select_corpus(batch, pairs, 2, RNG).prompt.tolist() == [0, 1]
    # ... and on random pools, for both levels.
    for seed in range(5):
        pool = make_pool(seed, requires=(E, LPM), duplication="none")
        m = AlignmentPotential({"w": 0})
        given = m.select_instances(pool.batch, RNG)
        assert triples(given) == triples(ExplicitLargest().select_instances(pool.batch, RNG))
        for n_keep in (1, 7, 20, 40):
            assert triples(m.select_corpus(pool.batch, given, n_keep, RNG)) == triples(
                ExplicitLargest().select_corpus(pool.batch, given, n_keep, RNG)
            )


def test_map_corpus_recomputes_both_margins_for_pairs_from_another_selector():
    batch = batch_of(EXAMPLE)
    given = RandomSelector().select_instances(batch, RNG)  # (0, 1) in every prompt
    assert triples(given) == [(0, 0, 1), (1, 0, 1), (2, 0, 1), (3, 0, 1)]
    # explicit |E0 - E1| = [4, 2, 0, 2] and implicit |L0 - L1| = [1, 3, 1, 3]: the example's margins again.
    np.testing.assert_allclose(AlignmentPotential().pair_scores(batch, given), [SQRT2 + 1, -1, 1 - SQRT2, -1])
    # Other pairs, other margins: (0, 2) -> explicit [2, 1, 0, 1], implicit [7, 1, 8, 1].
    other = Pairs([0, 1, 2, 3], [0, 0, 0, 0], [2, 2, 2, 2])
    z_e = (np.array([2, 1, 0, 1]) - 1) / math.sqrt(0.5)
    z_i = (np.array([7, 1, 8, 1]) - 4.25) / math.sqrt(np.mean((np.array([7, 1, 8, 1]) - 4.25) ** 2))
    np.testing.assert_allclose(AlignmentPotential().pair_scores(batch, other), z_e - z_i)


def test_map_on_a_pool_of_one_pair_scores_zero():
    batch = batch_of({E: [[0.0, 3.0]], LPM: [[-1.0, -2.0]]})
    selector = AlignmentPotential()
    pairs = selector.select_instances(batch, RNG)
    assert triples(pairs) == [(0, 1, 0)]
    np.testing.assert_array_equal(selector.pair_scores(batch, pairs), [0.0])
    assert triples(selector.select_corpus(batch, pairs, 1, RNG)) == [(0, 1, 0)]


def test_all_equal_margins_give_zero_not_nan():
    batch = batch_of({E: [[0.1, 0.3]] * 4, LPM: [[-0.7, -0.2]] * 4, RAW: [[0.5, 0.5]] * 4})
    given = Pairs(np.arange(4), np.zeros(4), np.ones(4))
    for selector in (AlignmentPotential(), AlignmentPotentialDPO(), AlignmentPotential({"w": 2.5})):
        scores = selector.pair_scores(batch, given)
        np.testing.assert_array_equal(scores, np.zeros(4))  # 0.3 - 0.1 four times: z = 0, exactly
        assert selector.select_corpus(batch, given, 2, RNG).prompt.tolist() == [0, 1]
    # Every explicit score equal: zero range everywhere, still one pair per prompt, z = 0.
    flat = batch_of({E: np.full((3, 4), 2.0), LPM: np.full((3, 4), -1.0)})
    pairs = AlignmentPotential().select_instances(flat, RNG)
    assert triples(pairs) == [(0, 0, 1), (1, 0, 1), (2, 0, 1)]
    np.testing.assert_array_equal(AlignmentPotential().pair_scores(flat, pairs), np.zeros(3))


def test_zscore_helper():
    np.testing.assert_allclose(zscore(np.array([4.0, 2.0, 0.0, 2.0])), [SQRT2, 0, -SQRT2, 0])
    np.testing.assert_array_equal(zscore(np.array([5.0])), [0.0])
    np.testing.assert_array_equal(zscore(np.array([0.1] * 7)), np.zeros(7))
    assert zscore(np.empty(0)).shape == (0,)
    z = zscore(np.array([1.0, np.nan, 3.0, np.inf]))
    np.testing.assert_allclose(z[[0, 2]], [-1.0, 1.0])
    assert np.isnan(z[[1, 3]]).all()
    big = np.finfo(np.float64).max
    np.testing.assert_allclose(zscore(np.array([big, -big])), [1.0, -1.0])  # no overflow in the squares
    np.testing.assert_allclose(zscore(np.array([0.0, 1e-304])), [-1.0, 1.0])  # nor underflow


# numpy's own (x - mean) / std underflows for values below ~1e-154; keep the reference out of that range.
_MODERATE = st.one_of(
    st.integers(-1000, 1000).map(float),
    st.floats(-1e6, 1e6).filter(lambda x: x == 0 or abs(x) > 1e-100),
)


@settings(max_examples=100, deadline=None)
@given(hnp.arrays(np.float64, st.integers(2, 30), elements=_MODERATE))
def test_zscore_matches_numpy_when_not_constant(values):
    if values.max() == values.min():
        np.testing.assert_array_equal(zscore(values), np.zeros_like(values))
    else:
        np.testing.assert_allclose(zscore(values), (values - values.mean()) / values.std(), atol=1e-7)


def test_map_never_selects_nan():
    nan = math.nan
    batch = batch_of({
        E: [[1.0, 5.0, 3.0], [nan, 2.0, 1.0], [0.0, 1.0, 2.0], [4.0, nan, nan]],
        LPM: [[0.0, nan, 0.0], [0.0, 0.0, 0.0], [-1.0, 0.0, -3.0], [0.0, 0.0, 0.0]],
    })
    pairs = AlignmentPotential().select_instances(batch, RNG)
    # p0: response 1 (the max) has no implicit score -> (2, 0); p1: (1, 2); p2: (2, 0); p3: one usable -> none.
    assert triples(pairs) == [(0, 2, 0), (1, 1, 2), (2, 2, 0)]
    # explicit_largest reads only explicit scores, so p0 keeps its max.
    assert triples(ExplicitLargest().select_instances(batch, RNG)) == [(0, 1, 0), (1, 1, 2), (2, 2, 0)]
    # At the corpus level a pair with a NaN margin ranks after every valid pair (and is left out of the z-scores).
    given = Pairs([0, 1, 2], [1, 0, 2], [0, 1, 0])  # (0: implicit NaN), (1: explicit NaN), valid
    scores = AlignmentPotential().pair_scores(batch, given)
    assert np.isnan(scores[:2]).all() and scores[2] == 0.0
    assert AlignmentPotential().select_corpus(batch, given, 1, RNG).prompt.tolist() == [2]
    assert AlignmentPotential().select_corpus(batch, given, 3, RNG).prompt.tolist() == [0, 1, 2]


# ------------------------------------------------------------------ map_dpo


def test_map_dpo_uses_the_dpo_implicit_reward_not_the_reference_free_column():
    # The explicit margins tie (2 everywhere); the implicit margins decide, and the columns disagree.
    columns = {
        E: [[0.0, 2.0], [0.0, 2.0], [0.0, 2.0]],
        LPM: [[0.0, 0.1], [0.0, 5.0], [0.0, 1.0]],  # small implicit margin: prompt 0
        RAW: [[0.0, 4.0], [0.0, 0.2], [0.0, 1.0]],  # small implicit margin: prompt 1
    }
    lengths = [[1, 100], [1, 1], [1, 1]]
    columns[NORM] = (np.array(columns[RAW]) / np.array(lengths)).tolist()  # prompt 0: 0.04, the smallest
    batch = batch_of(columns, lengths=lengths)
    given = Pairs([0, 1, 2], [1, 1, 1], [0, 0, 0])
    assert AlignmentPotential().select_corpus(batch, given, 1, RNG).prompt.tolist() == [0]
    assert AlignmentPotentialDPO().select_corpus(batch, given, 1, RNG).prompt.tolist() == [1]
    assert AlignmentPotentialDPO({"normalize": True}).select_corpus(batch, given, 1, RNG).prompt.tolist() == [0]
    # map_dpo does not read the reference-free column at all.
    without = batch_of({E: columns[E], RAW: columns[RAW]})
    assert AlignmentPotentialDPO().select_corpus(without, given, 1, RNG).prompt.tolist() == [1]
    with pytest.raises(KeyError, match="requires"):
        AlignmentPotential().select_corpus(without, given, 1, RNG)


def test_map_dpo_is_invariant_to_beta_scaling():
    pool = make_pool(4, requires=(E, RAW))
    scaled = SelectionBatch(
        lengths=pool.batch.lengths, distinct=pool.batch.distinct,
        scores={E: pool.batch.scores[E], RAW: 0.1 * pool.batch.scores[RAW]},
    )
    selector = AlignmentPotentialDPO({"w": 2.5})
    pairs = selector.select_instances(pool.batch, RNG)
    np.testing.assert_allclose(selector.pair_scores(pool.batch, pairs), selector.pair_scores(scaled, pairs), atol=1e-9)
    assert triples(selector.select_corpus(pool.batch, pairs, 20, RNG)) == triples(
        selector.select_corpus(scaled, pairs, 20, RNG)
    )


# ------------------------------------------------------------------ best-worst and explicit_largest


def test_bestworst_pairs_argmax_with_argmin_over_distinct_responses():
    batch = batch_of(
        {E: [
            [3.0, 5.0, 10.0, 1.0, -2.0],
            [4.0, 4.0, 9.0, 4.0, 0.0],
            [2.0, 2.0, 2.0, 2.0, 2.0],
            [1.0, 1.0, 3.0, 3.0, 0.0],
        ]},
        distinct=[
            [True, True, False, True, False],  # the 10 and the -2 are duplicates: (1, 3)
            [True, True, True, True, True],  # max 9 at 2; min 0 at 4
            [True, False, True, False, False],  # zero range: the first two distinct, (0, 2)
            [True, False, False, False, False],  # one distinct response: no pair
        ],
    )
    pairs = BestWorst().select_instances(batch, RNG)
    assert triples(pairs) == [(0, 1, 3), (1, 2, 4), (2, 0, 2)]
    scores = batch.scores[E]
    assert np.all(scores[pairs.prompt, pairs.a] >= scores[pairs.prompt, pairs.b])  # a is the chosen one


def test_ties_for_the_max_and_min_go_to_the_first_response():
    batch = batch_of({E: [[1.0, 3.0, 3.0, 1.0], [0.0, 0.0, 5.0, 5.0]]})
    assert triples(BestWorst().select_instances(batch, RNG)) == [(0, 1, 0), (1, 2, 0)]


def brute_force_max_min(scores, usable):
    out = []
    for p in range(scores.shape[0]):
        ok = [j for j in range(scores.shape[1]) if usable[p, j] and np.isfinite(scores[p, j])]
        if len(ok) < 2:
            continue
        high = max(ok, key=lambda j: (scores[p, j], -j))  # the first of the maxima
        low = min(ok, key=lambda j: (scores[p, j], j))  # the first of the minima
        if high == low:
            high, low = ok[0], ok[1]
        out.append((p, high, low))
    return out


@settings(max_examples=200, deadline=None)
@given(data=st.data(), m=st.integers(0, 6), n=st.integers(2, 6))
def test_max_min_pairs_match_a_plain_loop(data, m, n):
    elements = st.one_of(st.sampled_from([0.0, 1.0, -1.0, math.nan, math.inf]), st.floats(-10, 10))
    scores = data.draw(hnp.arrays(np.float64, (m, n), elements=elements))
    usable = data.draw(hnp.arrays(bool, (m, n)))
    pairs = extreme_score_pairs(scores, usable)
    assert triples(pairs) == brute_force_max_min(scores, usable)
    assert pairs.prompt.dtype == np.int64 and np.all(pairs.a != pairs.b)


def test_bestworst_corpus_is_the_random_selectors_uniform_share():
    pool = make_pool(2, requires=(E,))
    pairs = BestWorst().select_instances(pool.batch, RNG)
    for seed in range(5):
        kept = BestWorst().select_corpus(pool.batch, pairs, 10, np.random.default_rng(seed))
        check_corpus_pairs(pairs, kept, 10)
        same = RandomSelector().select_corpus(pool.batch, pairs, 10, np.random.default_rng(seed))
        assert triples(kept) == triples(same)
    draws = {tuple(BestWorst().select_corpus(pool.batch, pairs, 10, np.random.default_rng(s)).prompt) for s in range(5)}
    assert len(draws) > 1, "the share does not depend on the Generator"
    # --keep 1: every prompt's pair.
    assert triples(BestWorst().select_corpus(pool.batch, pairs, len(pairs), RNG)) == triples(pairs)


def test_explicit_largest_keeps_the_largest_explicit_margins():
    batch = batch_of(EXAMPLE)
    pairs = ExplicitLargest().select_instances(batch, RNG)
    # margins [4, 2, 0, 2]: p0, then p1 and p3 tie (earliest first), p2 last.
    assert ExplicitLargest().select_corpus(batch, pairs, 3, RNG).prompt.tolist() == [0, 1, 3]
    given = Pairs([0, 1, 2, 3], [0, 0, 0, 0], [2, 2, 2, 2])  # margins [2, 1, 0, 1]
    assert ExplicitLargest().select_corpus(batch, given, 2, RNG).prompt.tolist() == [0, 1]


def test_implicit_smallest_keeps_the_smallest_implicit_margins():
    batch = batch_of(EXAMPLE)
    pairs = ImplicitSmallest().select_instances(batch, RNG)
    # implicit margins of the max-min pairs [1, 3, 1, 3]: p0 and p2 tie (earliest first), then p1, p3.
    assert ImplicitSmallest().select_corpus(batch, pairs, 1, RNG).prompt.tolist() == [0]
    assert ImplicitSmallest().select_corpus(batch, pairs, 2, RNG).prompt.tolist() == [0, 2]
    assert ImplicitSmallest().select_corpus(batch, pairs, 3, RNG).prompt.tolist() == [0, 1, 2]
    # Pairs offered by another selector get their own margins: (0, 2) in every prompt gives |L0 - L2|
    # = [7, 1, 8, 1], so p1 and p3 first.
    given = Pairs([0, 1, 2, 3], [0, 0, 0, 0], [2, 2, 2, 2])
    assert ImplicitSmallest().select_corpus(batch, given, 2, RNG).prompt.tolist() == [1, 3]


def test_implicit_smallest_is_the_second_term_of_map_alone():
    # On random pools M- keeps the pairs M_AP would keep if its explicit term were constant: the pairs
    # with the lowest z(implicit margin), i.e. the smallest implicit margins.
    for seed in range(5):
        pool = make_pool(seed, requires=(E, LPM), duplication="none")
        pairs = ImplicitSmallest().select_instances(pool.batch, RNG)
        assert triples(pairs) == triples(AlignmentPotential().select_instances(pool.batch, RNG))
        margins = np.abs(pool.batch.score(LPM)[pairs.prompt, pairs.a] - pool.batch.score(LPM)[pairs.prompt, pairs.b])
        for n_keep in (1, 7, 20):
            kept = ImplicitSmallest().select_corpus(pool.batch, pairs, n_keep, RNG)
            expected = np.sort(np.argsort(margins, kind="stable")[:n_keep])
            assert triples(kept) == triples(pairs.take(expected))


# ------------------------------------------------------------------ Muldrew et al. 2024


@pytest.mark.parametrize("normalize", [False, True])
def test_certainty_and_uncertainty_are_largest_and_smallest(normalize):
    options = {"normalize": normalize}
    for seed in range(4):
        pool = make_pool(seed, requires=(RAW, NORM))
        aliases = ((Certainty(options), LargestMargin(options)), (Uncertainty(options), SmallestMargin(options)))
        for alias, original in aliases:
            pairs = alias.select_instances(pool.batch, RNG)
            assert triples(pairs) == triples(original.select_instances(pool.batch, RNG))
            foreign = RandomSelector().select_instances(pool.batch, RNG)
            for given in (pairs, foreign):
                for n_keep in (0, 1, len(given) // 2, len(given)):
                    assert triples(alias.select_corpus(pool.batch, given, n_keep, RNG)) == triples(
                        original.select_corpus(pool.batch, given, n_keep, RNG)
                    )
    assert "identical to largest" in Certainty.description
    assert "identical to smallest" in Uncertainty.description


def test_entropy_ranks_prompts_by_minus_the_mean_token_logprob():
    nan = math.nan
    batch = batch_of(
        {LPM: [[-1.0, -3.0, nan], [-0.5, -0.5, -0.5], [-4.0, -2.0, -3.0], [nan, nan, nan], [-1.0, -1.0, -4.0]]},
        distinct=[[True] * 3, [True] * 3, [True] * 3, [True] * 3, [True, False, True]],
    )
    # entropy = -mean of the finite scores, duplicates included (they are i.i.d. samples): [2, 0.5, 3, nan, 2]
    np.testing.assert_allclose(predictive_entropy(batch.scores[LPM]), [2.0, 0.5, 3.0, nan, 2.0])
    selector = PredictiveEntropy()
    pairs = selector.select_instances(batch, RNG)
    # the first two distinct, finitely scored responses; prompt 3 has none.
    assert triples(pairs) == [(0, 0, 1), (1, 0, 1), (2, 0, 1), (4, 0, 2)]
    assert selector.select_corpus(batch, pairs, 1, RNG).prompt.tolist() == [2]
    assert selector.select_corpus(batch, pairs, 2, RNG).prompt.tolist() == [0, 2]  # 0 and 4 tie: the earlier
    assert selector.select_corpus(batch, pairs, 3, RNG).prompt.tolist() == [0, 2, 4]
    # Pairs of a prompt with no finite score rank last.
    given = Pairs([3, 1], [0, 0], [1, 1])
    assert selector.select_corpus(batch, given, 1, RNG).prompt.tolist() == [1]


def test_entropy_on_a_pool_matches_a_plain_loop():
    pool = make_pool(5, n_prompts=100, requires=(LPM,))
    column = pool.batch.scores[LPM]
    pairs = PredictiveEntropy().select_instances(pool.batch, RNG)
    check_instance_pairs(pool, pairs)
    kept = PredictiveEntropy().select_corpus(pool.batch, pairs, 20, RNG)
    entropy = {p: -float(np.mean(column[p])) for p in pairs.prompt.tolist()}
    ranked = sorted(entropy, key=lambda p: (-entropy[p], p))[:20]
    assert kept.prompt.tolist() == sorted(ranked)


def test_the_brute_force_reference_is_itself_right():
    """The plain-loop reference picks what the docstring says, on a case worked by hand."""
    scores = np.array([[2.0, 2.0, 1.0, 1.0]])
    assert brute_force_max_min(scores, np.ones_like(scores, bool)) == [(0, 0, 2)]
    assert brute_force_max_min(np.full((1, 3), 4.0), np.ones((1, 3), bool)) == [(0, 0, 1)]


# ------------------------------------------------------------------ the scorer M_AP reads


def test_policy_logprob_mean_is_the_reference_free_mean_token_logprob():
    from plugins.scorers.implicit import PolicyLogprobMean

    logp = np.array([[-10.0, -4.0, -7.5], [-1.0, -20.0, -3.0]])
    lengths = np.array([[4, 2, 3], [1, 10, 6]])
    column = PolicyLogprobMean().score(logp_policy=logp, logp_ref=logp * 0 + 99.0, lengths=lengths)
    np.testing.assert_allclose(column, [[-2.5, -2.0, -2.5], [-1.0, -2.0, -0.5]])  # the reference is ignored
    assert column.dtype == np.float64
    with pytest.raises(ValueError, match="EOS"):
        PolicyLogprobMean().score(logp_policy=logp, logp_ref=logp, lengths=lengths * 0)
    with pytest.raises(ValueError, match="lengths"):
        PolicyLogprobMean().score(logp_policy=logp, logp_ref=logp, lengths=lengths[:, :2])
