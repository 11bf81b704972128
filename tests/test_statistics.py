"""The study's tests: checked against scipy, brute force and worked examples."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats

from harness.experiments import statistics as st
from leaderboard.stats import paired_interval

DIFFS = [0.031, -0.012, 0.044, 0.020, 0.008, 0.051, -0.003, 0.027, 0.015, 0.036]


def test_t_test_matches_scipy_and_the_leaderboards_pure_python_interval():
    out = st.t_test(DIFFS)
    ref = stats.ttest_1samp(DIFFS, 0.0)
    assert out["p"] == pytest.approx(ref.pvalue, rel=1e-12)
    assert out["t"] == pytest.approx(ref.statistic, rel=1e-12)
    pure = paired_interval(DIFFS)
    assert out["ci_low"] == pytest.approx(pure["ci_low"], rel=1e-9)
    assert out["ci_high"] == pytest.approx(pure["ci_high"], rel=1e-9)
    assert st.t_test([0.1])["p"] is None and st.t_test([0.2, 0.2, 0.2])["p"] is None


def _brute_sign_flip(values):
    observed = abs(sum(values))
    hits = total = 0
    for signs in itertools.product((-1, 1), repeat=len(values)):
        total += 1
        hits += abs(sum(s * abs(v) for s, v in zip(signs, values))) >= observed - 1e-12
    return hits / total


@pytest.mark.parametrize("values", [[1.0, 2.0, 3.0], [0.5, -0.2, 0.1, 0.4, -0.3], DIFFS[:8], [0.0, 0.0, 1.0]])
def test_sign_flip_is_exact_against_brute_force(values):
    assert st.sign_flip_p(values) == pytest.approx(_brute_sign_flip(values), abs=1e-15)


def test_sign_flip_worked_example_and_limits():
    assert st.sign_flip_p([1.0, 2.0, 3.0]) == 2 / 8  # all positive: only the pattern and its mirror
    assert st.sign_flip_p([0.3]) is None
    assert st.sign_flip_p([1.0] * 12) == pytest.approx(2 / 2**12)


def test_sign_flip_draws_agree_with_the_exact_answer(monkeypatch):
    values = list(np.random.default_rng(5).normal(0.01, 0.03, size=14))
    exact = st.sign_flip_p(values)
    monkeypatch.setattr(st, "EXACT_SIGN_FLIP_MAX", 4)
    drawn = st.sign_flip_p(values, draws=60_000)
    assert drawn == pytest.approx(exact, abs=0.01)
    assert drawn == st.sign_flip_p(values, draws=60_000)  # seeded: the same p every time


def test_tost_is_two_one_sided_scipy_tests():
    margin = 0.04
    out = st.tost(DIFFS, margin)
    lower = stats.ttest_1samp(DIFFS, -margin, alternative="greater").pvalue
    upper = stats.ttest_1samp(DIFFS, margin, alternative="less").pvalue
    assert out["p"] == pytest.approx(max(lower, upper), rel=1e-10)
    # equivalence at a margin holds exactly when the 90% interval lies inside it
    assert out["smallest_margin"] == pytest.approx(max(abs(out["ci_low"]), abs(out["ci_high"])))
    just_inside = st.tost(DIFFS, out["smallest_margin"] * 1.0001)
    just_outside = st.tost(DIFFS, out["smallest_margin"] * 0.9999)
    assert just_inside["p"] < 0.05 < just_outside["p"]
    with pytest.raises(ValueError):
        st.tost(DIFFS, 0.0)


def test_non_inferiority_sides():
    no_better = st.non_inferiority(DIFFS, 0.05, "a <= b")
    assert no_better["p"] == pytest.approx(stats.ttest_1samp(DIFFS, 0.05, alternative="less").pvalue, rel=1e-10)
    no_worse = st.non_inferiority(DIFFS, 0.01, "a >= b")
    assert no_worse["p"] == pytest.approx(stats.ttest_1samp(DIFFS, -0.01, alternative="greater").pvalue, rel=1e-10)
    assert no_worse["bound"] < np.mean(DIFFS) < no_better["bound"]


def test_holm_and_bh_worked_examples():
    ps = [0.01, 0.04, 0.03, 0.005, None]
    assert st.holm(ps)[:4] == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert st.holm(ps)[4] is None
    assert st.benjamini_hochberg(ps)[:4] == pytest.approx([0.02, 0.04, 0.04, 0.02])
    assert st.holm([0.2]) == [0.2] and st.holm([]) == []
    assert st.holm([0.6, 0.7]) == [1.0, 1.0]  # capped at 1


def test_holm_controls_the_family_wise_error_under_the_null():
    rng = np.random.default_rng(0)
    rejections = 0
    for _ in range(2000):
        ps = rng.uniform(size=16)
        rejections += any(p < 0.05 for p in st.holm(list(ps)))
    assert rejections / 2000 < 0.06  # raw p at 0.05 would reject in about 56% of families


def test_cochran_q_worked_example():
    same = st.cochran_q([0.1, 0.1], [0.02, 0.03])
    assert same["q"] == pytest.approx(0.0) and same["i2"] == 0.0 and same["p"] == pytest.approx(1.0)
    apart = st.cochran_q([0.0, 0.1], [0.02, 0.02])  # (0.05/0.02)^2 * 2 = 12.5
    assert apart["q"] == pytest.approx(12.5) and apart["df"] == 1
    assert apart["p"] == pytest.approx(stats.chi2.sf(12.5, 1))
    assert apart["i2"] == pytest.approx((12.5 - 1) / 12.5)
    assert apart["pooled_se"] == pytest.approx(math.sqrt(1 / (2 / 0.02**2)))


@pytest.mark.parametrize("df", [1, 2, 3, 4, 9, 29, 100])
def test_the_leaderboards_pure_python_t_distribution_matches_scipy(df):
    from leaderboard.stats import betainc, t_cdf, t_ppf
    from scipy import special

    for t in (-6.0, -2.3, -0.4, 0.0, 0.7, 1.96, 4.5):
        assert t_cdf(t, df) == pytest.approx(stats.t.cdf(t, df), abs=1e-10)
    for p in (0.005, 0.05, 0.5, 0.8, 0.975, 0.995):
        assert t_ppf(p, df) == pytest.approx(stats.t.ppf(p, df), rel=1e-8)
    for x in (0.01, 0.3, 0.77, 0.99):
        assert betainc(df / 2, 0.5, x) == pytest.approx(special.betainc(df / 2, 0.5, x), abs=1e-12)
