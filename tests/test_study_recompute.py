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


# -- the built-in studies as published: every verdict recomputes from the runs file beside the report --------


def _published(study: str) -> tuple[dict[str, dict[str, str]], dict]:
    """The verdict table of docs/studies/STUDY/report.md by claim, and runs.csv's values by (grid, cell, seed)."""
    import csv
    import re
    from pathlib import Path

    folder = Path(__file__).resolve().parents[1] / "docs" / "studies" / study
    table, header = {}, None
    for line in (folder / "report.md").read_text(encoding="utf-8").splitlines():
        if not line.startswith("|"):
            header = None if table else header
            continue
        cells = [c.strip().replace("\\|", "|").strip("*") for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
        if cells[:2] == ["claim", "finding"]:
            header = cells
        elif header and not set(cells) <= {"---"} and len(cells) == len(header):
            table[cells[0]] = dict(zip(header, cells))
    with open(folder / "runs.csv", encoding="utf-8") as handle:
        runs = {(r["study_grid"], r["sweep_cell"], int(r["seed"])): r for r in csv.DictReader(handle)}
    return table, runs


def _holm_by_hand(raw: dict[str, float]) -> dict[str, float]:
    """Holm's adjusted p-values: the k-th smallest p times (m - k), never below the one before, at most 1."""
    holm, running = {}, 0.0
    for rank, claim in enumerate(sorted(raw, key=raw.get)):
        running = max(running, min(1.0, (len(raw) - rank) * raw[claim]))
        holm[claim] = running
    return holm


def _fmt(p: float) -> str:
    return "<0.0001" if p < 1e-4 else f"{p:.4f}"


def test_the_published_yang2024_verdicts_recompute_from_its_runs_file():
    table, runs = _published("yang2024")
    seeds = range(1000, 1010)
    value = lambda grid, cell, seed: float(runs[(grid, cell, seed)]["final_win_rate"])  # noqa: E731
    family = {
        "F1-instance-smallest-vs-random": (("one_iteration_instance", "instance=smallest"),
                                           ("one_iteration_instance", "instance=random")),
        "F1-instance-smallest-vs-largest": (("one_iteration_instance", "instance=smallest"),
                                            ("one_iteration_instance", "instance=largest")),
        "F1-corpus-smallest-vs-random": (("one_iteration_corpus", "corpus=smallest"),
                                         ("one_iteration_instance", "instance=random")),
        "F1-corpus-smallest-vs-largest": (("one_iteration_corpus", "corpus=smallest"),
                                          ("one_iteration_corpus", "corpus=largest")),
    }
    diffs = {claim: [value(*a, s) - value(*b, s) for s in seeds] for claim, (a, b) in family.items()}
    raw = {claim: stats.ttest_1samp(d, 0.0).pvalue for claim, d in diffs.items()}
    holm = _holm_by_hand(raw)
    for claim in family:
        row = table[claim]
        assert row["p"] == _fmt(raw[claim]) and row["HOLM p"] == _fmt(holm[claim]), claim
        assert row["family (size)"] == "F1 (4)"
        expected = ("not significant" if holm[claim] >= 0.05 else "reproduced" if sum(diffs[claim]) > 0 else "reversed")
        assert row["verdict"] == expected, claim
    d = diffs["F1-instance-smallest-vs-random"]  # the sign-flip p by enumerating the 2^10 sign patterns
    hits = sum(abs(sum(s * abs(x) for s, x in zip(signs, d))) >= abs(sum(d)) - 1e-12
               for signs in itertools.product((-1, 1), repeat=len(d)))
    assert table["F1-instance-smallest-vs-random"]["sign-flip p"] == _fmt(hits / 2 ** len(d))


def test_the_published_tuned_f1_verdicts_recompute_from_its_runs_file():
    """Each tuned arm's choice (the highest mean final gold over tuning seeds 0-4, ties to the first point in grid
    order) and then each F1-tuned verdict, from runs.csv alone."""
    table, runs = _published("yang2024")
    lrs, betas = ("0.001", "0.003", "0.01"), ("0.1", "0.3", "1")  # as the cell keys write them

    def chosen(grid: str, arm: str) -> str:
        means = {}
        for lr in lrs:
            for beta in betas:  # the grid's order: lr varies slowest
                cell = f"{arm} trainer.beta={beta} trainer.lr={lr}"
                golds = [float(runs[(f"{grid}@tune", cell, seed)]["final_gold_reward"]) for seed in range(5)]
                means[cell] = sum(golds) / len(golds)
        best = max(means.values())
        return next(cell for cell, mean in means.items() if mean == best)

    arms = {"instance=smallest": "one_iteration_instance", "instance=random": "one_iteration_instance",
            "instance=largest": "one_iteration_instance", "corpus=smallest": "one_iteration_corpus",
            "corpus=largest": "one_iteration_corpus"}
    cells = {arm: (grid, chosen(grid, arm)) for arm, grid in arms.items()}
    family = {"F1-instance-smallest-vs-random-tuned": ("instance=smallest", "instance=random"),
              "F1-instance-smallest-vs-largest-tuned": ("instance=smallest", "instance=largest"),
              "F1-corpus-smallest-vs-random-tuned": ("corpus=smallest", "instance=random"),
              "F1-corpus-smallest-vs-largest-tuned": ("corpus=smallest", "corpus=largest")}
    value = lambda arm, seed: float(runs[(cells[arm][0] + "@tuned", cells[arm][1], seed)]["final_win_rate"])  # noqa: E731
    diffs = {claim: [value(a, s) - value(b, s) for s in range(1000, 1010)] for claim, (a, b) in family.items()}
    raw = {claim: stats.ttest_1samp(d, 0.0).pvalue for claim, d in diffs.items()}
    holm = _holm_by_hand(raw)
    for claim in family:
        row = table[claim]
        assert row["p"] == _fmt(raw[claim]) and row["HOLM p"] == _fmt(holm[claim]), claim
        assert row["family (size)"] == "F1-tuned (4)"
        assert row["measured mean Δ ± sd"].startswith(f"{sum(diffs[claim]) / 10:+.3f}"), claim


GOLD_CELL = "selector=map allocator=constant"  # the gold grid's only cell, as runs.csv keys it


def test_the_published_huang2025_equivalence_verdict_recomputes_from_its_runs_file():
    table, runs = _published("huang2025")
    seeds = range(1000, 1010)
    gain = lambda grid, cell, seed: float(runs[(grid, cell, seed)]["win_gain_per_1k_labels"])  # noqa: E731
    d = [gain("gold", GOLD_CELL, s) - gain("implicit", "selector=smallest", s) for s in seeds]
    margin = 0.007  # the plan's margin for win_gain_per_1k_labels
    tost = max(stats.ttest_1samp(d, -margin, alternative="greater").pvalue,
               stats.ttest_1samp(d, margin, alternative="less").pvalue)
    row = table["MAP-gold-vs-smallest-per-1k-labels"]
    assert row["p"] == _fmt(tost) == row["HOLM p"] and row["test"] == "TOST ±0.007"
    interval = stats.ttest_1samp(d, 0.0).confidence_interval(0.95)
    different = interval.low > 0 or interval.high < 0
    assert row["verdict"] == ("equivalent within ±0.007" if tost < 0.05 else "different" if different else "inconclusive")


def test_the_published_heterogeneity_of_the_schedule_effect_recomputes_from_its_runs_file():
    from pathlib import Path

    _, runs = _published("yang2024")
    seeds = range(1000, 1030)
    means, ses = [], []
    for grid in ("schedules_default", "schedules_step_limited"):
        d = [float(runs[(grid, "allocator=increase", s)]["final_win_rate"])
             - float(runs[(grid, "allocator=constant", s)]["final_win_rate"]) for s in seeds]
        means.append(sum(d) / len(d))
        ses.append(stats.tstd(d) / len(d) ** 0.5)
    weights = [1 / se ** 2 for se in ses]
    pooled = sum(w * m for w, m in zip(weights, means)) / sum(weights)
    q = sum(w * (m - pooled) ** 2 for w, m in zip(weights, means))
    i2 = max(0.0, (q - 1) / q) if q > 0 else 0.0
    report = (Path(__file__).resolve().parents[1] / "docs" / "studies" / "yang2024" / "report.md").read_text()
    row = next(line for line in report.splitlines() if line.startswith("| increase − constant, default vs step"))
    assert f"| {q:.2f} | 1 | {stats.chi2.sf(q, 1):.4f} | {100 * i2:.0f}% |" in row
