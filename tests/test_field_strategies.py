"""The field's strategies on the leaderboard: ``sharp``/``wsharp`` (aliases of ``smallest``) and the signed gap.

``sharp`` and ``wsharp`` must keep exactly ``smallest``'s pairs, including where the paper's formulas,
computed from p naively, saturate or give NaN; their reported scores must equal those formulas where
the formulas are accurate. ``signedgap`` (gold) and ``signedgap_proxy`` must keep the most negative
signed gaps and be charged exactly as the other gold- and proxy-fed selectors are.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from harness.interfaces import EXPLICIT_REWARD, Pairs, SelectionBatch
from harness.loop import run_experiment
from harness.plugins import DEFAULT_PLUGINS, load_registry
from harness.testing import SelectorContract, make_pool
from leaderboard.store import Leaderboard
from plugins._columns import IMPLICIT_REWARD
from plugins.selectors.explicit import BestWorst
from plugins.selectors.margin import SmallestMargin
from plugins.selectors.sharp import Sharp, WSharp, sharp_score, wsharp_score
from plugins.selectors.signed_gap import SignedGap, SignedGapProxy, signed_gaps
from tests.conftest import TINY_RUN
from tests.test_loop_explicit import N, calls, gold_of, judged_of, make

RNG = np.random.default_rng(0)


def triples(pairs: Pairs) -> list[tuple[int, int, int]]:
    return list(zip(pairs.prompt.tolist(), pairs.a.tolist(), pairs.b.tolist()))


# ------------------------------------------------------------------ contracts


class TestSharpContract(SelectorContract):
    selector_class = Sharp


class TestSharpNormalizedContract(SelectorContract):
    selector_class = Sharp
    settings = {"normalize": True}


class TestWSharpContract(SelectorContract):
    selector_class = WSharp


class TestSignedGapContract(SelectorContract):
    selector_class = SignedGap


class TestSignedGapProxyContract(SelectorContract):
    selector_class = SignedGapProxy


# ------------------------------------------------------------------ registration


def test_registered_as_builtins_with_their_sources():
    registry = load_registry()
    assert {"plugins.selectors.sharp", "plugins.selectors.signed_gap"} <= set(DEFAULT_PLUGINS)
    assert registry.registered_by("plugins.selectors.sharp") == {"selector": ["sharp", "wsharp"]}
    assert registry.registered_by("plugins.selectors.signed_gap") == {"selector": ["signedgap", "signedgap_proxy"]}
    for name, paper in (("sharp", "2503.22137"), ("wsharp", "2503.22137"), ("signedgap", "2508.04149"),
                        ("signedgap_proxy", "2508.04149")):
        description = registry.get("selector", name).cls.description
        assert paper in description and "\n" not in description
    assert "alias of smallest" in registry.get("selector", "sharp").cls.description
    assert (SignedGap.explicit_source, SignedGapProxy.explicit_source) == ("gold", "proxy")
    assert SignedGap.requires == SignedGapProxy.requires == (EXPLICIT_REWARD, IMPLICIT_REWARD)
    assert SignedGap.options == SignedGapProxy.options == ()  # the source is in the name, never an option


def test_listed_by_the_cli(cli):
    result = cli("list", "selectors")
    assert result.exit_code == 0, result.output
    for name in ("sharp", "wsharp", "signedgap", "signedgap_proxy"):
        assert name in result.output


# ------------------------------------------------------------------ sharp / wsharp


def _scaled_pool(seed: int, scale: float, normalize: bool = False, n_prompts: int = 200):
    """A contract pool whose implicit rewards are multiplied by ``scale`` (large scale: beta|d| far past 17)."""
    column = "implicit_reward_normalized" if normalize else IMPLICIT_REWARD
    pool = make_pool(seed, n_prompts=n_prompts, n_responses=8, requires=(column,))
    batch = pool.batch
    scores = {column: batch.score(column) * scale}
    return SelectionBatch(lengths=batch.lengths, distinct=batch.distinct, scores=scores, beta=batch.beta)


@pytest.mark.parametrize("alias", [Sharp, WSharp], ids=lambda c: c.name)
@pytest.mark.parametrize("scale", [1e-3, 1.0, 30.0, 1e3, 1e6])
@pytest.mark.parametrize("normalize", [False, True])
def test_rankings_equal_smallests(alias, scale, normalize):
    options = {"normalize": normalize}
    for seed in range(4):
        batch = _scaled_pool(seed, scale, normalize)
        selector, original = alias(options), SmallestMargin(options)
        pairs = selector.select_instances(batch, RNG)
        assert triples(pairs) == triples(original.select_instances(batch, RNG))
        foreign = Pairs(pairs.prompt, pairs.b, pairs.a)  # any offered pairs, e.g. from another instance selector
        for given in (pairs, foreign):
            for n_keep in (0, 1, 7, len(given) // 3, len(given), len(given) + 5):
                assert triples(selector.select_corpus(batch, given, n_keep, RNG)) == triples(
                    original.select_corpus(batch, given, n_keep, RNG))


def _naive_sharp(x, dtype):
    """The paper's formulas as written, from p = exp(x) / (1 + exp(x)), in ``dtype``."""
    x = np.asarray(x, dtype=dtype)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        e = np.exp(x)
        p = e / (dtype(1) + e)
        sharp = dtype(1) / np.abs(dtype(2) * p - dtype(1))
        wsharp = dtype(2) * np.sqrt(p * (dtype(1) - p)) / np.abs(dtype(2) * p - dtype(1))
    return sharp, wsharp


def test_scores_equal_the_formulas_where_those_are_accurate():
    beta = 0.1
    rng = np.random.default_rng(7)
    d = rng.uniform(1e-2, 100.0, size=500) * rng.choice([-1.0, 1.0], size=500)  # beta|d| in [1e-3, 10]
    naive_sharp, naive_wsharp = _naive_sharp(beta * d, np.float64)
    np.testing.assert_allclose(sharp_score(d, beta), naive_sharp, rtol=1e-9)
    np.testing.assert_allclose(wsharp_score(d, beta), naive_wsharp, rtol=1e-9)
    # a hand value: beta d = 2 -> p = sigmoid(2)
    p = 1 / (1 + math.exp(-2.0))
    assert sharp_score(np.array([20.0]), beta)[0] == pytest.approx(1 / abs(2 * p - 1), rel=1e-12)
    assert wsharp_score(np.array([-20.0]), beta)[0] == pytest.approx(2 * math.sqrt(p * (1 - p)) / abs(2 * p - 1),
                                                                   rel=1e-12)


def test_naive_float32_formulas_lose_the_order_the_selectors_keep():
    x = np.array([18.0, 25.0, 40.0, 60.0, 90.0, 200.0])  # beta|d|, strictly increasing
    naive_sharp, naive_wsharp = _naive_sharp(x, np.float32)
    # p rounds to 1: every W-SHARP is 0 (or 0/0 = NaN once exp overflows), every SHARP 1 (or NaN)
    assert set(np.unique(naive_wsharp[np.isfinite(naive_wsharp)])) <= {0.0}
    assert np.isnan(naive_wsharp[-2:]).all() and np.isnan(naive_sharp[-2:]).all()
    # the stable scores stay finite and strictly decreasing for W-SHARP here
    stable = wsharp_score(x, 1.0)
    assert np.all(np.isfinite(stable)) and np.all(np.diff(stable) < 0)
    # and the selectors rank these pairs by margin: exactly smallest's order
    scores = {IMPLICIT_REWARD: np.stack([np.zeros_like(x), x], axis=1)}
    batch = SelectionBatch(lengths=np.full((6, 2), 3), distinct=np.ones((6, 2), bool), scores=scores, beta=1.0)
    given = Pairs(np.arange(6)[::-1].copy(), np.zeros(6, np.int64), np.ones(6, np.int64))
    for alias in (Sharp(), WSharp()):
        for n_keep in range(7):
            kept = alias.select_corpus(batch, given, n_keep, RNG)
            assert sorted(kept.prompt.tolist()) == list(range(n_keep))  # the n_keep smallest x
            assert triples(kept) == triples(SmallestMargin().select_corpus(batch, given, n_keep, RNG))


def test_reported_scores_agree_with_the_kept_order_and_non_finite_ranks_last():
    # margins: 0 (score +inf, first), 0.5, 3, a NaN reward (NaN score, last), 1
    rewards = np.array([[1.0, 1.0], [0.0, 0.5], [0.0, 3.0], [0.0, np.nan], [2.0, 1.0]])
    batch = SelectionBatch(lengths=np.full((5, 2), 3), distinct=np.ones((5, 2), bool),
                           scores={IMPLICIT_REWARD: rewards}, beta=0.5)
    given = Pairs(np.arange(5), np.zeros(5, np.int64), np.ones(5, np.int64))
    for alias, formula in ((Sharp(), sharp_score), (WSharp(), wsharp_score)):
        scores = alias.pair_scores(batch, given)
        assert scores[0] == np.inf and np.isnan(scores[3])
        np.testing.assert_allclose(scores[[1, 2, 4]], formula(np.array([0.5, 3.0, 1.0]), 0.5))
        order = [0, 1, 4, 2, 3]  # score descending, NaN last
        for n_keep in range(6):
            kept = alias.select_corpus(batch, given, n_keep, RNG)
            assert kept.prompt.tolist() == sorted(order[:n_keep])
        # on a random pool: sorting the reported scores (descending, NaN last) keeps the same pairs
        pool = _scaled_pool(3, 1.0)
        pairs = alias.select_instances(pool, RNG)
        s = alias.pair_scores(pool, pairs)
        by_score = np.argsort(np.where(np.isnan(s), -np.inf, -s), kind="stable")
        for n_keep in (1, 10, len(pairs) // 2):
            assert sorted(by_score[:n_keep].tolist()) == sorted(
                np.flatnonzero(np.isin(pairs.prompt, alias.select_corpus(pool, pairs, n_keep, RNG).prompt)).tolist())


# ------------------------------------------------------------------ the signed gap


def _gap_batch(beta: float = 0.5) -> SelectionBatch:
    explicit = np.array([
        [0.0, 2.0, 1.0],   # best 1, worst 0: gap = beta (r1 - r0)
        [5.0, 1.0, 3.0],   # best 0, worst 1
        [1.0, 1.0, 0.0],   # best 0 (first max), worst 2
        [0.0, 9.0, 4.0],   # best 1, worst 0
    ])
    implicit = np.array([
        [3.0, 1.0, 0.0],   # r(best) - r(worst) = -2
        [0.5, 0.0, 9.0],   # +0.5
        [0.0, 7.0, 4.0],   # -4
        [1.0, 1.0, 1.0],   # 0
    ])
    return SelectionBatch(lengths=np.full((4, 3), 3), distinct=np.ones((4, 3), bool),
                          scores={EXPLICIT_REWARD: explicit, IMPLICIT_REWARD: implicit}, beta=beta)


@pytest.mark.parametrize("cls", [SignedGap, SignedGapProxy], ids=lambda c: c.name)
def test_signed_gap_keeps_the_most_negative_gaps(cls):
    batch, selector = _gap_batch(), cls()
    pairs = selector.select_instances(batch, RNG)
    assert triples(pairs) == [(0, 1, 0), (1, 0, 1), (2, 0, 2), (3, 1, 0)]  # (prompt, best, worst)
    np.testing.assert_allclose(selector.pair_scores(batch, pairs), [-1.0, 0.25, -2.0, 0.0])
    expected = {0: [], 1: [2], 2: [0, 2], 3: [0, 2, 3], 4: [0, 1, 2, 3], 9: [0, 1, 2, 3]}
    for n_keep, prompts in expected.items():
        assert selector.select_corpus(batch, pairs, n_keep, RNG).prompt.tolist() == prompts


def test_signed_gap_orients_offered_pairs_by_the_explicit_scores_and_ranks_nan_last():
    batch = _gap_batch(beta=2.0)
    # the same pairs offered reversed (b, a): orientation comes from the explicit scores, not from a/b
    reversed_pairs = Pairs(np.arange(4), np.array([0, 1, 2, 0]), np.array([1, 0, 0, 1]))
    np.testing.assert_allclose(SignedGap().pair_scores(batch, reversed_pairs), [-4.0, 1.0, -8.0, 0.0])
    # an explicit tie: a counts as chosen, as the loop labels a tie of gold scores
    tie = Pairs(np.array([2, 2]), np.array([0, 1]), np.array([1, 0]))
    np.testing.assert_allclose(signed_gaps(batch.score(EXPLICIT_REWARD), batch.score(IMPLICIT_REWARD), tie, 2.0),
                               [-14.0, 14.0])
    implicit = batch.score(IMPLICIT_REWARD).copy()
    implicit[2, 0] = np.nan
    nan_batch = SelectionBatch(lengths=batch.lengths, distinct=batch.distinct, beta=2.0,
                               scores={EXPLICIT_REWARD: batch.score(EXPLICIT_REWARD), IMPLICIT_REWARD: implicit})
    given = Pairs(np.arange(4), np.array([1, 0, 0, 1]), np.array([0, 1, 2, 0]))
    assert np.isnan(SignedGap().pair_scores(nan_batch, given)[2])
    assert SignedGap().select_corpus(nan_batch, given, 3, RNG).prompt.tolist() == [0, 1, 3]
    assert SignedGap().select_corpus(nan_batch, given, 4, RNG).prompt.tolist() == [0, 1, 2, 3]
    # the instance level never pairs a response whose implicit reward is NaN
    assert triples(SignedGap().select_instances(nan_batch, RNG))[2] == (2, 1, 2)


def test_signed_gap_matches_a_plain_loop_on_random_pools():
    for seed in range(5):
        pool = make_pool(seed, n_prompts=120, n_responses=6, requires=(EXPLICIT_REWARD, IMPLICIT_REWARD))
        batch = pool.batch
        pairs = SignedGap().select_instances(batch, RNG)
        explicit, implicit = batch.score(EXPLICIT_REWARD), batch.score(IMPLICIT_REWARD)
        gaps = []
        for m, a, b in triples(pairs):
            chosen, rejected = (a, b) if explicit[m, a] >= explicit[m, b] else (b, a)
            gaps.append(batch.beta * (implicit[m, chosen] - implicit[m, rejected]))
        order = sorted(range(len(gaps)), key=lambda i: (gaps[i], i))
        for n_keep in (1, 12, len(pairs) // 10, len(pairs) // 2):
            kept = SignedGap().select_corpus(batch, pairs, n_keep, RNG)
            assert kept.prompt.tolist() == sorted(pairs.prompt[order[:n_keep]].tolist())


# ------------------------------------------------------------------ the ledger


@pytest.mark.parametrize("budget", [300, 97])
def test_signedgap_is_charged_as_bestworst_is(budget):
    config, components = make(SignedGap(), budget=budget)
    assert components.explicit_source == "gold" and components.pool_costs(N) == (N, 0)
    result = run_experiment(config, components)
    base_config, base_components = make(BestWorst(), budget=budget)
    baseline = run_experiment(base_config, base_components)
    fields = ("labels", "labels_planned", "labels_pool", "prompts", "sel_pairs", "proxy_calls")
    assert [[row[f] for f in fields] for row in result.iterations[1:]] == [
        [row[f] for f in fields] for row in baseline.iterations[1:]]
    for row in result.iterations[1:]:
        assert row["labels"] == row["labels_pool"] == row["prompts"] * N and row["proxy_calls"] == 0
    assert result.final["labels_used"] == baseline.final["labels_used"] <= budget
    assert calls(components, "annotate") == []  # the gold scores label the kept pairs: nothing more is bought
    assert [c[1] for c in calls(components, "judge")] == ["fake_gold"] * config.iterations
    for data in components.trainer.data:  # labelled by the judged (gold) scores the gap was signed by
        assert np.all(judged_of(data.chosen) >= judged_of(data.rejected))


def test_signedgap_proxy_is_charged_one_gold_label_per_kept_pair():
    config, components = make(SignedGapProxy())
    assert components.explicit_source == "proxy" and components.pool_costs(N) == (0, 1)
    result = run_experiment(config, components)
    rows = result.iterations[1:]
    assert [row["labels"] for row in rows] == [row["sel_pairs"] for row in rows] == [150, 100, 50]
    assert [row["proxy_calls"] for row in rows] == [row["prompts"] * N for row in rows]
    assert all(row["labels_pool"] == 0 for row in rows)
    assert calls(components, "annotate") == [("annotate", n) for n in (150, 100, 50)]
    assert [c[1] for c in calls(components, "judge")] == ["fake_proxy"] * 3  # the gold judge is never read
    assert result.final["labels_used"] == config.budget
    for data in components.trainer.data:  # labelled by the gold annotator, not by the (backwards) proxy
        assert np.all(gold_of(data.chosen) >= gold_of(data.rejected))


# ------------------------------------------------------------------ end to end


@pytest.mark.parametrize("name, source, per_prompt", [
    ("sharp", "none", 0), ("wsharp", "none", 0), ("signedgap", "gold", 8), ("signedgap_proxy", "proxy", 0)])
def test_harness_run_end_to_end(cli, db_path, name, source, per_prompt):
    result = cli("run", *TINY_RUN, "--selector", name, "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout.strip().splitlines()[-1])
    (run,) = Leaderboard(db_path).runs(status=None)
    assert run["status"] == "finished" and run["id"] == out["run_id"]
    assert run["explicit_source"] == source
    assert 0 < run["labels_used"] <= run["budget"] == 80
    rows = Leaderboard(db_path).iterations(run["id"])[1:]
    if per_prompt:
        assert [row["labels"] for row in rows] == [row["prompts"] * per_prompt for row in rows]
    else:  # one gold label per kept pair: the whole budget is spent on pairs
        assert run["labels_used"] == 80 and all(row["labels_pool"] == 0 for row in rows)
    assert all((row["proxy_calls"] > 0) == (source == "proxy") for row in rows)
