"""A study's adjusted verdict, TOST verdict and sign-flip p, recomputed by hand from the runs table."""

import itertools
import json
import sqlite3
import textwrap

import pytest
from scipy import stats

from conftest import TINY_TESTBED


def plan_text() -> str:
    options = ", ".join(f'"{o}"' for o in TINY_TESTBED)
    return textwrap.dedent(f"""\
        [study]
        title = "recompute"
        exploration_seeds = "0-9"
        confirmation_seeds = "1000-1004"
        margins = {{final_win_rate = 0.05}}
        margin_reason = "five points of win rate: a made-up margin for a test"
        families = {{F2 = "one claim: the equivalence question"}}

        [[grid]]
        name = "one"
        selector = ["smallest", "random", "largest"]
        iterations = 1
        budget = 80
        options = [{options}]

        [[claim]]
        id = "smallest-vs-random"
        family = "F1"
        metric = "final_win_rate"
        a = {{grid = "one", selector = "smallest"}}
        b = {{grid = "one", selector = "random"}}
        direction = "a > b"

        [[claim]]
        id = "random-vs-largest"
        family = "F1"
        metric = "final_win_rate"
        a = {{grid = "one", selector = "random"}}
        b = {{grid = "one", selector = "largest"}}
        direction = "a > b"

        [[claim]]
        id = "smallest-equals-largest"
        family = "F2"
        metric = "final_win_rate"
        a = {{grid = "one", selector = "smallest"}}
        b = {{grid = "one", selector = "largest"}}
        direction = "none"
        """)


def test_verdicts_recomputed_by_hand_from_the_runs_table(cli, db_path, tmp_path):
    plan = tmp_path / "recompute.toml"
    plan.write_text(plan_text())
    result = cli("study", "run", plan, "--jobs", "2", "--report-dir", tmp_path / "report", "--json")
    assert result.exit_code == 0, result.output
    claims = {c["claim"]: c for c in json.loads(result.stdout)["claims"]}
    assert json.loads(result.stdout)["confirmatory"] is True

    rows = sqlite3.connect(db_path).execute(
        "select instance_selector, seed, final_win_rate from runs where status = 'finished'").fetchall()
    win = {(selector, seed): value for selector, seed, value in rows}
    seeds = range(1000, 1005)
    assert {seed for _, seed in win} == set(seeds)
    diff = lambda a, b: [win[(a, s)] - win[(b, s)] for s in seeds]  # noqa: E731

    # Holm over family F1 (two claims): the smaller raw p doubled, the larger kept but never below it.
    raw = {name: stats.ttest_1samp(diff(a, b), 0.0).pvalue
           for name, (a, b) in {"smallest-vs-random": ("smallest", "random"),
                                "random-vs-largest": ("random", "largest")}.items()}
    low, high = sorted(raw, key=raw.get)
    holm = {low: min(1.0, 2 * raw[low])}
    holm[high] = max(holm[low], min(1.0, raw[high]))
    for name in raw:
        assert claims[name]["p"] == pytest.approx(raw[name], rel=1e-9)
        assert claims[name]["p_adjusted"] == pytest.approx(holm[name], rel=1e-9)
        assert claims[name]["family_size"] == 2
        expected = ("not significant" if holm[name] >= 0.05
                    else "reproduced" if sum(diff(*name.split("-vs-"))) > 0 else "reversed")
        assert claims[name]["verdict"] == expected

    # TOST at ±0.05 for the F2 claim (a family of one: nothing to adjust).
    d = diff("smallest", "largest")
    tost = max(stats.ttest_1samp(d, -0.05, alternative="greater").pvalue,
               stats.ttest_1samp(d, 0.05, alternative="less").pvalue)
    equivalence = claims["smallest-equals-largest"]
    assert equivalence["p"] == pytest.approx(tost, rel=1e-9) == equivalence["p_adjusted"]
    interval = stats.ttest_1samp(d, 0.0).confidence_interval(0.95)
    expected = ("equivalent within ±0.05" if tost < 0.05
                else "different" if interval.low > 0 or interval.high < 0 else "inconclusive")
    assert equivalence["verdict"] == expected

    # The sign-flip p of the first claim, by enumerating all 2^5 sign patterns.
    d = diff("smallest", "random")
    observed = abs(sum(d))
    patterns = list(itertools.product((-1, 1), repeat=len(d)))
    hits = sum(abs(sum(s * abs(x) for s, x in zip(signs, d))) >= observed - 1e-12 for signs in patterns)
    assert claims["smallest-vs-random"]["p_sign_flip"] == pytest.approx(hits / len(patterns))
