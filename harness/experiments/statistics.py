"""The tests behind a study's verdicts, on paired differences Δ = A − B (one per seed).

- :func:`t_test`: the one-sample Student-t test of mean Δ = 0 and its interval;
- :func:`sign_flip_p`: the exact sign-flip permutation test of the same null, free of the normality
  assumption (every one of the 2^n sign patterns for n ≤ 20, else seeded random draws);
- :func:`tost`: two one-sided tests of equivalence, |mean Δ| < m, for claims of "no difference";
- :func:`non_inferiority`: one one-sided test, mean Δ < m ("A is no better than B by m or more") or
  mean Δ > −m ("A is no worse");
- :func:`holm` and :func:`benjamini_hochberg`: p-values adjusted over a family of claims;
- :func:`cochran_q`: heterogeneity of one contrast across regimes or recipes (never across
  exchangeable seed blocks).

Distributions come from :mod:`scipy.stats`, imported here only: the leaderboard's own
statistics stay pure Python (:mod:`leaderboard.stats`), and ``harness --help``, ``list`` and
``leaderboard`` never import this module.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

#: Up to this many pairs the sign-flip test enumerates every sign pattern (2^20 ≈ 1M).
EXACT_SIGN_FLIP_MAX = 20
#: Random sign patterns drawn above that, from a fixed seed (the p-value is reproducible).
SIGN_FLIP_DRAWS = 100_000
SIGN_FLIP_SEED = 20240601


def _diffs(values: Sequence[float]) -> np.ndarray:
    diffs = np.asarray([float(v) for v in values], dtype=np.float64)
    if not np.isfinite(diffs).all():
        raise ValueError("paired differences must be finite")
    return diffs


def _std(d: np.ndarray) -> float:
    """The sample std (ddof 1), or 0.0 when the spread is rounding noise (identical values)."""
    std = float(d.std(ddof=1))
    return 0.0 if std <= 1e-12 * max(1.0, float(np.abs(d).max())) else std


def t_test(values: Sequence[float], *, alpha: float = 0.05) -> dict[str, Any]:
    """``n, mean, std, se, df, t, p`` (two-sided), the ``1 − alpha`` interval ``ci_low, ci_high`` and its
    ``half_width`` t_{1−alpha/2, n−1}·se.

    Below two pairs, or with no spread, the test is undefined: ``p`` and the
    interval are None (with no spread and a nonzero mean every test would be
    certain; the harness reports that as undefined rather than p = 0).
    """
    from scipy import stats

    d = _diffs(values)
    n = int(d.size)
    out: dict[str, Any] = {"n": n, "mean": float(d.mean()) if n else None, "std": None, "se": None,
                           "df": n - 1 if n else None, "t": None, "p": None, "ci_low": None, "ci_high": None,
                           "half_width": None}
    if n < 2:
        return out
    std = _std(d)
    out["std"] = std
    if std == 0.0:
        return out
    se = std / math.sqrt(n)
    t = out["mean"] / se
    half = float(stats.t.ppf(1.0 - alpha / 2.0, n - 1)) * se
    out.update(se=se, t=t, p=float(2.0 * stats.t.sf(abs(t), n - 1)),
               ci_low=out["mean"] - half, ci_high=out["mean"] + half, half_width=half)
    return out


def sign_flip_p(values: Sequence[float], *, draws: int = SIGN_FLIP_DRAWS, seed: int = SIGN_FLIP_SEED) -> float | None:
    """Two-sided sign-flip permutation p of mean Δ = 0: the share of sign patterns whose |mean| is at
    least the observed one.

    Under the null each Δ is symmetric about 0, so flipping signs gives its
    distribution. Exact for n ≤ :data:`EXACT_SIGN_FLIP_MAX` (all 2^n patterns;
    the smallest attainable p is 2/2^n); above, ``draws`` random patterns from
    ``seed`` plus the observed one ((hits + 1) / (draws + 1), never 0). None
    below two pairs.
    """
    d = _diffs(values)
    n = int(d.size)
    if n < 2:
        return None
    observed = abs(float(d.sum()))
    tolerance = 1e-12 * max(1.0, float(np.abs(d).sum()))
    magnitudes = np.abs(d)
    if n <= EXACT_SIGN_FLIP_MAX:
        hits, total = 0, 1 << n
        bits = np.arange(n, dtype=np.int64)
        chunk = 1 << 16
        for start in range(0, total, chunk):
            patterns = np.arange(start, min(total, start + chunk), dtype=np.int64)
            signs = ((patterns[:, None] >> bits) & 1) * 2 - 1
            hits += int((np.abs(signs @ magnitudes) >= observed - tolerance).sum())
        return hits / total
    rng = np.random.default_rng(seed)
    hits = 0
    for start in range(0, draws, 10_000):
        size = min(10_000, draws - start)
        signs = rng.integers(0, 2, size=(size, n)) * 2 - 1
        hits += int((np.abs(signs @ magnitudes) >= observed - tolerance).sum())
    return (hits + 1) / (draws + 1)


def tost(values: Sequence[float], margin: float, *, alpha: float = 0.05) -> dict[str, Any]:
    """Two one-sided t-tests of equivalence: H0 |mean Δ| ≥ ``margin`` against H1 |mean Δ| < ``margin``.

    Returns ``p`` (the larger of the two one-sided p-values; equivalence is
    shown when ``p < alpha``), ``ci_low, ci_high`` (the ``1 − 2·alpha``
    interval, which lies inside ±margin exactly when equivalence is shown)
    and ``smallest_margin``: the smallest margin at which equivalence would be
    shown at this n and spread (max |bound| of that interval). None below two
    pairs or with no spread.
    """
    from scipy import stats

    if not margin > 0:
        raise ValueError(f"an equivalence margin must be > 0; got {margin}")
    d = _diffs(values)
    n = int(d.size)
    out: dict[str, Any] = {"margin": float(margin), "p": None, "ci_low": None, "ci_high": None,
                           "smallest_margin": None}
    if n < 2 or _std(d) == 0.0:
        return out
    mean, se = float(d.mean()), _std(d) / math.sqrt(n)
    p_lower = float(stats.t.sf((mean + margin) / se, n - 1))  # H0: mean <= -margin
    p_upper = float(stats.t.cdf((mean - margin) / se, n - 1))  # H0: mean >= +margin
    half = float(stats.t.ppf(1.0 - alpha, n - 1)) * se
    out.update(p=max(p_lower, p_upper), ci_low=mean - half, ci_high=mean + half,
               smallest_margin=max(abs(mean - half), abs(mean + half)))
    return out


def non_inferiority(values: Sequence[float], margin: float, side: str, *, alpha: float = 0.05) -> dict[str, Any]:
    """One one-sided t-test with a margin.

    ``side`` ``"a <= b"`` ("A is no better than B"): H0 mean Δ ≥ ``margin``
    against H1 mean Δ < ``margin``. ``"a >= b"`` ("A is no worse"): H0 mean Δ ≤
    −``margin`` against H1 mean Δ > −``margin``. Returns ``p`` and the one-sided
    ``1 − alpha`` bound (``bound``: the upper bound for ``a <= b``, the lower for
    ``a >= b``); None below two pairs or with no spread.
    """
    from scipy import stats

    if side not in ("a <= b", "a >= b"):
        raise ValueError(f"side must be 'a <= b' or 'a >= b'; got {side!r}")
    if not margin > 0:
        raise ValueError(f"a non-inferiority margin must be > 0; got {margin}")
    d = _diffs(values)
    n = int(d.size)
    out: dict[str, Any] = {"margin": float(margin), "p": None, "bound": None}
    if n < 2 or _std(d) == 0.0:
        return out
    mean, se = float(d.mean()), _std(d) / math.sqrt(n)
    q = float(stats.t.ppf(1.0 - alpha, n - 1)) * se
    if side == "a <= b":
        out.update(p=float(stats.t.cdf((mean - margin) / se, n - 1)), bound=mean + q)
    else:
        out.update(p=float(stats.t.sf((mean + margin) / se, n - 1)), bound=mean - q)
    return out


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjusted p-values (family-wise error), in the given order; None stays None.

    The i-th smallest of m p-values becomes max over j ≤ i of min(1, (m − j + 1)·p_(j)).
    """
    present = [(p, i) for i, p in enumerate(pvalues) if p is not None]
    m = len(present)
    out: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for rank, (p, i) in enumerate(sorted(present)):
        running = max(running, min(1.0, (m - rank) * float(p)))
        out[i] = running
    return out


def benjamini_hochberg(pvalues: Sequence[float | None]) -> list[float | None]:
    """Benjamini-Hochberg adjusted p-values (false discovery rate), in the given order; None stays None.

    The i-th smallest of m p-values becomes min over j ≥ i of min(1, m·p_(j)/j).
    """
    present = [(p, i) for i, p in enumerate(pvalues) if p is not None]
    m = len(present)
    out: list[float | None] = [None] * len(pvalues)
    running = 1.0
    for rank, (p, i) in reversed(list(enumerate(sorted(present), 1))):
        running = min(running, min(1.0, m * float(p) / rank))
        out[i] = running
    return out


CORRECTIONS = {"holm": holm, "bh": benjamini_hochberg}
"""Multiplicity corrections a plan may name (``correction = "holm"``, the default, or ``"bh"``)."""


def cochran_q(means: Sequence[float], ses: Sequence[float]) -> dict[str, Any]:
    """Heterogeneity of k estimates of one contrast (e.g. one claim under two recipes).

    Inverse-variance weights w = 1/se²; Q = Σ w (x − x̄_w)², df = k − 1,
    p = P(χ²_df ≥ Q), I² = max(0, (Q − df)/Q). Use it across regimes or
    recipes, never across exchangeable blocks of seeds of one design.
    """
    from scipy import stats

    x = np.asarray(means, dtype=np.float64)
    se = np.asarray(ses, dtype=np.float64)
    if x.size < 2 or x.size != se.size or not (se > 0).all():
        raise ValueError("cochran_q needs at least two estimates, each with a positive standard error")
    w = 1.0 / se**2
    pooled = float((w * x).sum() / w.sum())
    q = float((w * (x - pooled) ** 2).sum())
    df = int(x.size - 1)
    return {"q": q, "df": df, "p": float(stats.chi2.sf(q, df)), "i2": max(0.0, (q - df) / q) if q > 0 else 0.0,
            "pooled": pooled, "pooled_se": float(math.sqrt(1.0 / w.sum()))}
