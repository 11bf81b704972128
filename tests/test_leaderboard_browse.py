"""Browsing and comparing runs: grouping by strategy, filters, sort, compare, show, plot, export,
the schema documentation, and the safety of reading (newer schemas, foreign files, parallel writers)."""

from __future__ import annotations

import concurrent.futures
import csv
import hashlib
import io
import json
import math
import os
import re
import sqlite3
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from harness.cli.leaderboard import leaderboard_app
from harness.errors import UnknownNameError, UsageError
from leaderboard import query, schema_doc, stats
from leaderboard.compare import compare
from leaderboard.store import Leaderboard, NewerSchemaError

REPO = Path(__file__).resolve().parents[1]
T975_DF4 = 2.7764451051977987  # Student t, 97.5% quantile, 4 degrees of freedom

# -- building a realistic database ----------------------------------------------------


def make_config(instance, corpus, allocator="constant", beta=1.0, testbed="synthetic", seed=0):
    def selector(name):
        return {"name": name, "settings": {} if name == "random" else {"normalize": False}}

    return {
        "testbed": {"name": testbed, "settings": {"tau": 0.3, "eval_prompts": 1000}},
        "instance_selector": selector(instance),
        "corpus_selector": selector(corpus),
        "allocator": {"name": allocator, "settings": {}},
        "trainer": {"name": "native", "settings": {"beta": beta, "lr": 0.003, "epochs": 8}},
        "iterations": 2, "budget": 2000, "keep": 0.5, "n_responses": 8,
        "seed": seed, "world_seed": seed,
    }


def strategy_hash(config):
    data = {k: v for k, v in config.items() if k not in ("seed", "world_seed")}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def add_run(board, instance, corpus=None, *, seed, win, allocator="constant", beta=1.0,
            testbed="synthetic", world_seed=None, finish=True, **extra):
    corpus = corpus or instance
    world_seed = seed if world_seed is None else world_seed
    config = make_config(instance, corpus, allocator, beta, testbed, seed)
    config["world_seed"] = world_seed
    run_id = board.start_run({
        "config": config, "config_hash": strategy_hash(config), "seed": seed, "world_seed": world_seed,
        "testbed": testbed, "instance_selector": instance, "corpus_selector": corpus,
        "allocator": allocator, "trainer": "native", "scorer_columns": "implicit_reward",
        "plugins": {"instance_selector": {"name": instance, "plugin": "plugins.selectors.margin",
                                          "version": "0.1.0"}},
        "versions": {"python": "3.11.7", "torch": "2.13.0+cpu"},
        "git_commit": "abc1234def", "command": f"harness run --selector {instance} --seed {seed}",
        "iterations": 2, "budget": 2000, "keep": 0.5, "n_responses": 8, "harness_version": "0.1.0",
        **extra,
    })
    pi0 = 0.4 + 0.01 * seed
    for iteration in range(3):
        step = pi0 + (win - pi0) * iteration / 2
        row = {"iteration": iteration, "win_rate": step, "gold_reward": 1.0 + step, "kl": 1.5 + iteration}
        if iteration:
            row.update(labels=1000, sel_mean_abs_margin=0.04, sel_beta_margin_q10=-0.06,
                       sel_beta_margin_q50=0.001, sel_beta_margin_q90=0.07, sel_mean_dpo_weight=0.5,
                       sel_ranking_accuracy=0.51, sel_label_noise=0.19, sel_selected_kl=1.7,
                       time_train=1.05, time_sample=0.19)
        board.record_iteration(run_id, row)
    if finish:
        board.finish_run(run_id, {
            "final_win_rate": win, "final_win_rate_se": 0.01, "initial_win_rate": pi0,
            "final_gold_reward": 1.0 + win, "final_kl": 1.5 + 2 + (win - 0.5), "labels_used": 2000,
            "wall_seconds": 6.0,
        })
    return run_id


BASE = [0.40, 0.50, 0.45, 0.55, 0.60]  # per seed: the world's difficulty, shared by strategies
NOISE = [-0.02, -0.01, 0.0, 0.01, 0.02]


def smallest_win(seed):
    return BASE[seed] + 0.2 + NOISE[seed]


def random_win(seed):
    return BASE[seed]


def largest_win(seed):
    return BASE[seed] - 0.1 + NOISE[seed] / 2


@pytest.fixture
def strategies_db(tmp_path):
    """3 strategies x 5 seeds (constant), a mixed selector on 3 seeds, an `increase` strategy
    with no random baseline, a beta-0.5 pair, and one failed run."""
    path = tmp_path / "lb.db"
    ids = {}
    with Leaderboard(path) as board:
        for seed in range(5):
            ids[("smallest", seed)] = add_run(board, "smallest", seed=seed, win=smallest_win(seed))
            ids[("random", seed)] = add_run(board, "random", seed=seed, win=random_win(seed))
            ids[("largest", seed)] = add_run(board, "largest", seed=seed, win=largest_win(seed))
        for seed in range(3):
            ids[("mixed", seed)] = add_run(board, "smallest", "random", seed=seed, win=BASE[seed] + 0.05)
        for seed in range(2):
            ids[("increase", seed)] = add_run(board, "smallest", seed=seed, win=0.75, allocator="increase")
        for seed in range(3):
            add_run(board, "random", seed=seed, win=BASE[seed] - 0.05, beta=0.5)
            add_run(board, "smallest", seed=seed, win=BASE[seed] + 0.1, beta=0.5)
        ids["failed"] = add_run(board, "largest", seed=9, win=0.1, finish=False)
        board.fail_run(ids["failed"], "failed", "RuntimeError: boom")
    return path, ids


def cli_app():
    app = typer.Typer()

    @app.command()
    def run():  # a stand-in for the core CLI's other commands
        pass

    app.add_typer(leaderboard_app, name="leaderboard")
    return app


def invoke(args, columns=140):
    return CliRunner().invoke(cli_app(), ["leaderboard", *args], env={"COLUMNS": str(columns)})


def groups_json(path, *args):
    result = invoke(["--db", str(path), "--json", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def by_selectors(payload, allocator="constant", beta_settings=""):
    return {
        (g["instance_selector"], g["corpus_selector"]): g
        for g in payload
        if g.get("allocator") == allocator and beta_settings in (g.get("settings") or "")
    }


# -- statistics ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "p, df, expected",
    [  # printed t tables (3 decimals)
        (0.975, 1, 12.706), (0.975, 2, 4.303), (0.975, 3, 3.182), (0.975, 4, 2.776),
        (0.975, 5, 2.571), (0.975, 9, 2.262), (0.975, 10, 2.228), (0.975, 29, 2.045),
        (0.975, 30, 2.042), (0.975, 100, 1.984), (0.95, 5, 2.015), (0.95, 20, 1.725),
        (0.995, 10, 3.169), (0.995, 2, 9.925), (0.9995, 1, 636.619), (0.9, 7, 1.415),
    ],
)
def test_t_quantiles_match_the_tables(p, df, expected):
    assert stats.t_ppf(p, df) == pytest.approx(expected, abs=1e-3)
    assert stats.t_ppf(1 - p, df) == pytest.approx(-expected, abs=1e-3)


@pytest.mark.parametrize("p", [0.6, 0.9, 0.975, 0.999])
def test_t_quantiles_match_closed_forms(p):
    assert stats.t_ppf(p, 1) == pytest.approx(math.tan(math.pi * (p - 0.5)), rel=1e-9)
    assert stats.t_ppf(p, 2) == pytest.approx((2 * p - 1) / math.sqrt(2 * p * (1 - p)), rel=1e-9)
    normal = statistics.NormalDist().inv_cdf(p)
    assert stats.t_ppf(p, 1e7) == pytest.approx(normal, abs=1e-5)


def test_t_cdf_and_incomplete_beta():
    assert stats.t_cdf(0.0, 3) == pytest.approx(0.5)
    assert stats.t_cdf(2.776445105, 4) == pytest.approx(0.975, abs=1e-9)
    assert stats.t_cdf(-2.776445105, 4) == pytest.approx(0.025, abs=1e-9)
    assert stats.betainc(1, 1, 0.3) == pytest.approx(0.3)  # uniform
    assert stats.betainc(2, 3, 0.4) == pytest.approx(0.5248, abs=1e-12)  # 1 - sum of binomials
    assert stats.betainc(0.5, 0.5, 0.5) == pytest.approx(0.5)
    for bad in ((0, 1, 0.5), (1, 1, 1.5)):
        with pytest.raises(ValueError):
            stats.betainc(*bad)
    for bad in ((0.0, 3), (1.0, 3), (0.5, 0)):
        with pytest.raises(ValueError):
            stats.t_ppf(*bad)


def test_paired_interval():
    diffs = [0.18, 0.19, 0.2, 0.21, 0.22]
    out = stats.paired_interval(diffs)
    std = statistics.stdev(diffs)
    half = T975_DF4 * std / math.sqrt(5)
    assert out["n"] == 5 and out["mean"] == pytest.approx(0.2) and out["std"] == pytest.approx(std)
    assert out["ci_low"] == pytest.approx(0.2 - half) and out["ci_high"] == pytest.approx(0.2 + half)
    assert out["excludes_zero"] is True
    assert stats.paired_interval([0.1, -0.1, 0.05])["excludes_zero"] is False
    one = stats.paired_interval([0.3])
    assert one["n"] == 1 and one["std"] is None and one["ci_low"] is None and one["excludes_zero"] is None
    assert stats.paired_interval([])["mean"] is None
    assert stats.mean_std([1.0, None, 3.0]) == (2, 2.0, pytest.approx(math.sqrt(2)))


# -- query helpers -----------------------------------------------------------------------


def test_parse_by():
    columns = ["id", "instance_selector", "corpus_selector", "allocator", "seed"]
    assert query.parse_by(None, columns) == query.STRATEGY_FIELDS
    assert query.parse_by("run", columns) is None
    assert query.parse_by("selector, allocator", columns) == ("instance_selector", "corpus_selector", "allocator")
    with pytest.raises(UnknownNameError) as caught:
        query.parse_by("instance_selectr,allocator", columns)
    assert "did you mean 'instance_selector'" in str(caught.value)
    for bad in ("run,seed", "seed,,allocator", ""):
        with pytest.raises(UsageError):
            query.parse_by(bad, columns)


def test_group_runs_and_sort():
    rows = [
        {"id": "a", "seed": 0, "world_seed": 0, "k": "x", "final_win_rate": 0.5, "labels_used": 10},
        {"id": "b", "seed": 1, "world_seed": 1, "k": "x", "final_win_rate": 0.7, "labels_used": 10},
        {"id": "c", "seed": 1, "world_seed": 1, "k": "x", "final_win_rate": 0.6, "labels_used": None},
        {"id": "d", "seed": 0, "world_seed": 0, "k": "y", "final_win_rate": None},
    ]
    x, y = query.group_runs(rows, ["k"])
    assert x["runs"] == 3 and x["seeds"] == 2 and x["run_ids"] == ["a", "b", "c"]
    assert x["final_win_rate_mean"] == pytest.approx(0.6) and x["final_win_rate_std"] == pytest.approx(0.1)
    assert x["labels_used_n"] == 2 and y["final_win_rate_mean"] is None and y["final_win_rate_std"] is None
    assert [g["k"] for g in query.sort_groups([y, x], "final_win_rate_mean")] == ["x", "y"]
    assert [g["k"] for g in query.sort_groups([x, y], "k", descending=True)] == ["y", "x"]


def test_config_settings_lists_only_real_differences():
    configs = [
        make_config("smallest", "smallest"),
        make_config("random", "random"),
        make_config("smallest", "smallest", beta=0.5),
        {**make_config("smallest", "smallest"), "budget": 4000},
    ]
    configs[0]["instance_selector"]["settings"]["normalize"] = True
    configs[0]["corpus_selector"]["settings"]["normalize"] = True
    settings = query.config_settings(configs)
    # random has no normalize option: that is not a difference; beta and budget are.
    assert settings[1] == "beta=1.0 budget=2000"  # short names where unambiguous
    assert "instance.normalize=true" in settings[0] and "corpus.normalize=true" in settings[0]
    assert "beta=1.0" in settings[0]
    assert "beta=0.5" in settings[2] and "instance.normalize=false" in settings[2]
    assert "budget=4000" in settings[3]
    assert query.config_settings([configs[1], configs[1]]) == ["", ""]


def test_group_labels_show_what_varies():
    groups = [
        {"instance_selector": "smallest", "corpus_selector": "smallest", "allocator": "constant", "config_hash": "aa"},
        {"instance_selector": "random", "corpus_selector": "smallest", "allocator": "constant", "config_hash": "bb"},
        {"instance_selector": "random", "corpus_selector": "smallest", "allocator": "constant", "config_hash": "cc"},
    ]
    labels = query.group_labels(groups, ("instance_selector", "corpus_selector", "allocator", "config_hash"))
    assert labels == ["smallest", "random/smallest [bb]", "random/smallest [cc]"]


# -- the grouped table --------------------------------------------------------------------


def test_default_view_groups_runs_by_strategy(strategies_db):
    path, _ = strategies_db
    payload = groups_json(path)
    constant = by_selectors(payload, beta_settings="beta=1.0")
    smallest = constant[("smallest", "smallest")]
    wins = [smallest_win(s) for s in range(5)]
    assert smallest["runs"] == 5 and smallest["seeds"] == 5
    assert smallest["final_win_rate_mean"] == pytest.approx(statistics.mean(wins))
    assert smallest["final_win_rate_std"] == pytest.approx(statistics.stdev(wins))
    assert smallest["final_gold_reward_mean"] == pytest.approx(1 + statistics.mean(wins))
    assert smallest["labels_used_mean"] == 2000 and smallest["config_hash"]
    assert constant[("smallest", "random")]["seeds"] == 3
    # ranked by mean final win rate, best first, rank 1..n
    means = [g["final_win_rate_mean"] for g in payload]
    assert means == sorted(means, reverse=True)
    assert [g["rank"] for g in payload] == list(range(1, len(payload) + 1))
    # 3 constant + mixed + increase + 2 beta-0.5 groups; the failed run is not in any group
    assert len(payload) == 7 and sum(g["runs"] for g in payload) == 26


def test_grouped_table_goes_to_stderr(strategies_db):
    path, _ = strategies_db
    result = invoke(["--db", str(path)])
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    text = result.stderr
    for header in ("selector", "allocator", "config", "settings", "seeds", "win rate ± std",
                   "gold ± std", "KL ± std", "labels"):
        assert header in text
    rows = [line for line in text.splitlines() if re.match(r"\s*\d+\s+\S", line)]
    assert rows[0].split()[1] == "smallest" and "increase" in rows[0]  # 0.750 is the best mean
    assert re.search(r"0\.750 ± 0\.000", rows[0])
    assert "beta=0.5" in text
    assert "1 unfinished run(s) not shown" in text
    assert "paired differences" in " ".join(text.split())


@pytest.mark.parametrize("width", [100, 120, 140])
def test_grouped_and_compare_tables_fit_without_cutting_numbers(strategies_db, width):
    path, _ = strategies_db
    for args in ([], ["compare"]):
        text = invoke(["--db", str(path), *args], columns=width).stderr
        lines = text.splitlines()
        assert all(len(line.rstrip()) <= width for line in lines), (width, args)
        rows = [line for line in lines if re.search(r"\d\.\d{3} ± \d\.\d{3}", line)]
        assert len(rows) == 7
        for row in rows:
            assert re.search(r"\b(smallest|random|largest)(/\w+)?\b", row)  # selectors never cut
        if not args:
            assert all(len(re.findall(r"\d\.\d{2,3} ± \d\.\d{2,3}", row)) == 3 for row in rows)
        else:
            assert sum("[+" in row or "[-" in row for row in rows) >= 3  # intervals shown whole


@pytest.mark.parametrize("width", [100, 120])
def test_long_settings_are_cut_or_dropped_never_the_numbers(width):
    from rich.console import Console

    from leaderboard import render

    groups = []
    for k in range(3):
        group = {"instance_selector": "normalized", "corpus_selector": "smallest", "allocator": "decrease",
                 "testbed": "synthetic", "trainer": "native", "config_hash": f"{k}" * 16,
                 "settings": " ".join(f"option_{j}={k}" for j in range(12)), "runs": 5, "seeds": 5,
                 "final_win_rate_mean": 0.5 + k / 10, "final_win_rate_std": 0.05,
                 "final_gold_reward_mean": 1.2, "final_gold_reward_std": 0.1,
                 "final_kl_mean": 3.0, "final_kl_std": 0.4, "labels_used_mean": 3000}
        groups.append(group)
    console = Console(width=width, record=True, color_system=None, file=open(os.devnull, "w"))
    render.print_groups(groups, query.STRATEGY_FIELDS, console)
    lines = console.export_text().splitlines()
    rows = [line for line in lines if "normalized/smallest" in line]
    assert len(rows) == 3 and all(len(line.rstrip()) <= width for line in lines)
    for row in rows:
        assert len(re.findall(r"\d\.\d{2,3} ± \d\.\d{2,3}", row)) == 3
    assert ("…" in rows[0]) or ("option_0" not in rows[0])  # settings cut or dropped


def test_by_run_gives_one_row_per_run(strategies_db):
    path, ids = strategies_db
    payload = groups_json(path, "--by", "run")
    assert len(payload) == 26 and "config" in payload[0] and payload[0]["rank"] == 1
    assert payload[0]["final_win_rate"] == max(p["final_win_rate"] for p in payload)
    payload = groups_json(path, "--by", "run", "--status", "failed")
    assert [p["id"] for p in payload] == [ids["failed"]]


def test_by_fields(strategies_db):
    path, _ = strategies_db
    payload = groups_json(path, "--by", "instance_selector,allocator")
    keys = {(g["instance_selector"], g["allocator"]): g for g in payload}
    assert set(keys) == {("smallest", "constant"), ("random", "constant"), ("largest", "constant"),
                         ("smallest", "increase")}
    assert keys[("smallest", "constant")]["runs"] == 5 + 3 + 3
    assert keys[("smallest", "constant")]["seeds"] == 5  # runs > seeds: seeds 0-2 three times
    assert "config_hash" not in payload[0]
    text = invoke(["--db", str(path), "--by", "instance_selector,allocator"]).stderr
    assert "instance_selector" in text and "runs > seeds" in text


def test_sort_and_reverse(strategies_db):
    path, _ = strategies_db
    payload = groups_json(path, "--sort", "final_kl", "--reverse")
    kls = [g["final_kl_mean"] for g in payload]
    assert kls == sorted(kls)
    payload = groups_json(path, "--sort", "seeds")
    assert payload[0]["seeds"] == 5
    payload = groups_json(path, "--by", "instance_selector", "--sort", "instance_selector")
    assert [g["instance_selector"] for g in payload] == ["largest", "random", "smallest"]
    payload = groups_json(path, "--by", "run", "--sort", "seed", "--reverse", "--limit", "3")
    assert [p["seed"] for p in payload] == [0, 0, 0]
    payload = groups_json(path, "--limit", "2")
    assert len(payload) == 2


@pytest.mark.parametrize(
    "args, fix",
    [
        (["--sort", "final_winrate"], "did you mean 'final_win_rate'"),
        (["--by", "run", "--sort", "final_kll"], "did you mean 'final_kl'"),
        (["--by", "allocatr"], "did you mean 'allocator'"),
        (["--status", "finised"], "did you mean 'finished'"),
    ],
)
def test_unknown_columns_exit_2_naming_the_fix(strategies_db, args, fix):
    path, _ = strategies_db
    result = invoke(["--db", str(path), *args])
    assert result.exit_code == 2, result.output
    text = " ".join(result.stderr.split())
    assert fix in text and "available" in text and "Traceback" not in result.output
    assert result.stdout == ""


@pytest.mark.parametrize(
    "args",
    [
        ["--testbed", "synthetic' or '1'='1"],
        ["--selector", "x') or 1=1 --"],
        ["--sort", "final_win_rate; drop table runs"],
        ["--by", "instance_selector) from runs; drop table runs; --"],
        ["--by", "run", "--sort", 'final_win_rate" desc, "id'],
        ["compare", "--metric", "final_win_rate from runs; --"],
        ["compare", "--baseline", "random' or 1=1 --"],
    ],
)
def test_user_strings_never_reach_sql(strategies_db, args):
    path, _ = strategies_db
    result = invoke(["--db", str(path), "--json", *args] if args[0] != "compare" else ["--db", str(path), *args])
    assert result.exit_code in (0, 2), result.output
    if result.exit_code == 0:
        assert json.loads(result.stdout) == []  # a value that matches nothing
    with sqlite3.connect(path) as conn:
        assert conn.execute("select count(*) from runs").fetchone()[0] == 27


def test_filters(strategies_db):
    path, ids = strategies_db
    selector = groups_json(path, "--selector", "random")
    assert {(g["instance_selector"], g["corpus_selector"]) for g in selector} == {
        ("random", "random"), ("smallest", "random")}  # either level
    allocator = groups_json(path, "--allocator", "increase")
    assert len(allocator) == 1 and allocator[0]["runs"] == 2
    assert groups_json(path, "--testbed", "hf") == []
    failed = groups_json(path, "--status", "failed")
    assert failed[0]["runs"] == 1 and failed[0]["final_win_rate_mean"] is None
    everything = groups_json(path, "--all")
    assert sum(g["runs"] for g in everything) == 27
    result = invoke(["--db", str(path), "--selector", "smalest"])
    assert result.exit_code == 0
    assert "no run uses selector 'smalest'; did you mean 'smallest'?" in result.stderr
    assert invoke(["--db", str(path), "--all", "--status", "failed"]).exit_code == 2


def test_sweep_filter_with_and_without_the_column(strategies_db, tmp_path):
    path, _ = strategies_db
    result = invoke(["--db", str(path), "--sweep", "s1"])
    assert result.exit_code == 0 and "no sweep_id column" in result.stderr
    assert groups_json(path, "--sweep", "s1") == []
    swept = tmp_path / "swept.db"
    with Leaderboard(swept) as board:
        for seed in range(2):
            add_run(board, "smallest", seed=seed, win=0.7, sweep_id="s1")
            add_run(board, "random", seed=seed, win=0.5, sweep_id="s2")
        add_run(board, "largest", seed=0, win=0.3)
    payload = groups_json(swept, "--sweep", "s1")
    assert len(payload) == 1 and payload[0]["instance_selector"] == "smallest" and payload[0]["runs"] == 2
    payload = groups_json(swept, "--by", "sweep_id")
    assert {g["sweep_id"]: g["runs"] for g in payload} == {"s1": 2, "s2": 2, None: 1}


def test_csv_output(strategies_db):
    path, _ = strategies_db
    result = invoke(["--db", str(path), "--csv"])
    assert result.exit_code == 0 and result.stderr == ""
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert len(rows) == 7 and rows[0]["rank"] == "1"
    assert {"instance_selector", "config_hash", "seeds", "final_win_rate_mean", "final_win_rate_std"} <= set(rows[0])
    assert float(rows[0]["final_win_rate_mean"]) == pytest.approx(0.75)
    assert len(rows[0]["run_ids"].split()) == 2
    result = invoke(["--db", str(path), "--csv", "--by", "run", "--limit", "2"])
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert len(rows) == 2 and json.loads(rows[0]["config_json"])["iterations"] == 2
    assert invoke(["--db", str(path), "--csv", "--json"]).exit_code == 2


def test_missing_database_creates_nothing(tmp_path):
    path = tmp_path / "none.db"
    for args in ([], ["--json"], ["compare"], ["compare", "--json"]):
        result = invoke(["--db", str(path), *args])
        assert result.exit_code == 0, (args, result.output)
    for args in (["plot", "--out", str(tmp_path / "p")], ["export", "--out", str(tmp_path / "x.csv")]):
        assert invoke(["--db", str(path), *args]).exit_code == 1
    assert not path.exists()


# -- compare ------------------------------------------------------------------------------


def test_compare_pairs_on_common_seeds(strategies_db):
    path, _ = strategies_db
    with Leaderboard(path, create=False) as board:
        result = compare(board.conn, query.Filters(), baseline="random")
    rows = {(r["instance_selector"], r["corpus_selector"], r["allocator"], "0.5" in r["settings"]): r
            for r in result["rows"]}
    smallest = rows[("smallest", "smallest", "constant", False)]
    diffs = [smallest_win(s) - random_win(s) for s in range(5)]
    half = T975_DF4 * statistics.stdev(diffs) / math.sqrt(5)
    assert smallest["n"] == 5 and smallest["pairs"] == [[s, s] for s in range(5)]
    assert smallest["mean"] == pytest.approx(0.2) and smallest["std"] == pytest.approx(statistics.stdev(diffs))
    assert smallest["ci_low"] == pytest.approx(0.2 - half) and smallest["ci_high"] == pytest.approx(0.2 + half)
    assert smallest["excludes_zero"] is True
    baseline = rows[("random", "random", "constant", False)]
    assert baseline["is_baseline"] and smallest["baseline_config_hash"] == baseline["config_hash"]
    largest = rows[("largest", "largest", "constant", False)]
    assert largest["mean"] == pytest.approx(-0.1) and largest["ci_high"] < 0
    mixed = rows[("smallest", "random", "constant", False)]
    assert mixed["n"] == 3 and mixed["mean"] == pytest.approx(0.05)
    # the beta-0.5 smallest is compared with the beta-0.5 random, not the beta-1 one
    low_beta = rows[("smallest", "smallest", "constant", True)]
    assert low_beta["n"] == 3 and low_beta["mean"] == pytest.approx(0.15)
    assert low_beta["baseline_config_hash"] == rows[("random", "random", "constant", True)]["config_hash"]
    # the increase strategy has no random baseline with the same settings
    increase = rows[("smallest", "smallest", "increase", False)]
    assert increase["n"] == 0 and increase["baseline_config_hash"] is None
    assert "no 'random' group with the same settings" in increase["reason"]
    assert result["rows"][-1] is increase and any("not compared" in note for note in result["notes"])
    assert result["baseline_kind"] == "selector" and "both levels" in result["rule"]


def test_compare_pairs_on_seed_and_world_seed(tmp_path):
    path = tmp_path / "worlds.db"
    with Leaderboard(path) as board:
        for seed in range(4):
            add_run(board, "random", seed=seed, win=0.5)
            # same seeds, but seed 3 ran in another world: only 0-2 pair up
            add_run(board, "smallest", seed=seed, win=0.6 + 0.01 * seed, world_seed=seed if seed < 3 else 7)
        add_run(board, "random", seed=0, win=0.52)  # a rerun: the baseline's seed 0 is the mean, 0.51
    with Leaderboard(path, create=False) as board:
        rows = compare(board.conn, query.Filters(), baseline="random")["rows"]
    smallest = next(r for r in rows if r["instance_selector"] == "smallest")
    assert smallest["pairs"] == [[0, 0], [1, 1], [2, 2]]
    assert smallest["mean"] == pytest.approx(statistics.mean([0.6 - 0.51, 0.61 - 0.5, 0.62 - 0.5]))


def test_compare_by_config_hash_prefix(strategies_db):
    path, _ = strategies_db
    payload = groups_json(path, "--selector", "largest")
    prefix = payload[0]["config_hash"][:6]
    result = invoke(["--db", str(path), "compare", "--baseline", prefix, "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["baseline_kind"] == "config_hash"
    assert data["rows"][0]["is_baseline"] and data["rows"][0]["instance_selector"] == "largest"
    # every other strategy on the testbed is compared with it, whatever its settings
    assert all(r["n"] >= 2 for r in data["rows"][1:]) and len(data["rows"]) == 7


def test_compare_cli_table_and_json(strategies_db):
    path, _ = strategies_db
    result = invoke(["--db", str(path), "compare", "--baseline", "random"])
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    text = result.stderr
    for header in ("pairs", "Δ mean ± std", "95% CI", "excludes 0", "baseline"):
        assert header in text
    row = next(line for line in text.splitlines() if re.search(r"^smallest\s+constant", line.strip())
               and "+0.200" in line)
    assert "[+0.180, +0.220]" in row and row.rstrip().endswith("yes")
    assert "not compared" in text
    data = json.loads(invoke(["--db", str(path), "compare", "--json", "--confidence", "0.9"]).stdout)
    assert data["confidence"] == 0.9 and data["metric"] == "final_win_rate"
    kl = json.loads(invoke(["--db", str(path), "compare", "--json", "--metric", "final_kl"]).stdout)
    smallest = next(r for r in kl["rows"] if r["instance_selector"] == "smallest" and r["n"] == 5
                    and r["corpus_selector"] == "smallest")
    assert smallest["mean"] == pytest.approx(0.2)
    delta = json.loads(invoke(["--db", str(path), "compare", "--json", "--metric", "delta_win_rate"]).stdout)
    assert any(r["mean"] is not None for r in delta["rows"])


def test_compare_selector_filter_keeps_the_baseline(strategies_db):
    path, _ = strategies_db
    data = json.loads(invoke(["--db", str(path), "compare", "--json", "--selector", "largest"]).stdout)
    assert [(r["instance_selector"], r["is_baseline"]) for r in data["rows"]] == [
        ("random", True), ("largest", False)]


@pytest.mark.parametrize(
    "args, fix",
    [
        (["--baseline", "randm"], "did you mean 'random'"),
        (["--baseline", "0000000000"], "unknown baseline"),
        (["--metric", "final_winrate"], "did you mean 'final_win_rate'"),
        (["--confidence", "1.5"], "between 0 and 1"),
    ],
)
def test_compare_bad_input_exits_2(strategies_db, args, fix):
    path, _ = strategies_db
    result = invoke(["--db", str(path), "compare", *args])
    assert result.exit_code == 2, result.output
    assert fix in " ".join(result.stderr.split()) and result.stdout == ""


def test_compare_baseline_used_only_at_one_level(tmp_path):
    path = tmp_path / "one.db"
    with Leaderboard(path) as board:
        add_run(board, "smallest", "random", seed=0, win=0.6)
        add_run(board, "smallest", seed=0, win=0.7)
    result = invoke(["--db", str(path), "compare", "--baseline", "random"])
    assert result.exit_code == 2 and "at both levels" in result.stderr


def test_compare_help_explains_pairing():
    text = " ".join(invoke(["compare", "--help"], columns=200).output.split())
    assert "seed-to-seed spread" in text and "0.05" in text and "as large as most effects" in text
    assert "Baseline rule" in text and "config hash" in text


# -- show ---------------------------------------------------------------------------------


def test_show_has_config_provenance_and_diagnostics(strategies_db):
    path, ids = strategies_db
    result = invoke(["--db", str(path), "show", ids[("smallest", 0)]])
    assert result.exit_code == 0, result.output
    text = result.stderr
    for section in ("setup", "final metrics", "provenance", "config (-o style", "per iteration",
                    "evaluation", "selected pairs", "time (s)"):
        assert section in text
    for item in ("abc1234def", "plugins.selectors.margin 0.1.0", "torch 2.13.0+cpu",
                 "harness run --selector smallest --seed 0", "trainer native", "beta=1.0",
                 "sel_mean_abs_margin", "sel_beta_margin_q10", "sel_beta_margin_q50", "sel_beta_margin_q90",
                 "sel_mean_dpo_weight", "sel_ranking_accuracy", "sel_label_noise", "sel_selected_kl",
                 "kl", "time_train", "mean DPO weight"):
        assert item in text, item
    row = next(line for line in text.splitlines() if "sel_ranking_accuracy" in line)
    assert row.split()[1:4] == ["—", "0.51", "0.51"]
    assert all(len(line.rstrip()) <= 140 for line in text.splitlines())


# -- plot ---------------------------------------------------------------------------------


def test_plot_writes_three_pngs(strategies_db, tmp_path):
    path, _ = strategies_db
    out = tmp_path / "figures"
    result = invoke(["--db", str(path), "plot", "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    paths = [Path(p) for p in json.loads(result.stdout)]
    assert [p.name for p in paths] == ["win_rate_vs_labels.png", "curves.png", "frontier.png"]
    for png in paths:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
        assert str(png) in result.stderr
    import matplotlib.image

    height, width = matplotlib.image.imread(paths[1]).shape[:2]
    assert width > 2 * height  # three panels side by side


def test_plot_data_bands_and_labels(strategies_db):
    from leaderboard.plots import collect, per_iteration

    path, _ = strategies_db
    with Leaderboard(path, create=False) as board:
        data = collect(board.conn, query.Filters(allocator="constant"), query.STRATEGY_FIELDS, limit=3)
    assert len(data.groups) == 3 and "best 3 of 6" in data.notes[0]
    assert data.groups[0]["label"].startswith("smallest")
    steps, mean, std, spent = per_iteration(data.runs[0], data.iterations, "win_rate")
    assert steps == [0, 1, 2] and spent == [0.0, 1000.0, 2000.0]
    assert mean[-1] == pytest.approx(data.groups[0]["final_win_rate_mean"])
    assert std[-1] == pytest.approx(data.groups[0]["final_win_rate_std"])


def test_plot_refuses_by_run(strategies_db, tmp_path):
    path, _ = strategies_db
    result = invoke(["--db", str(path), "plot", "--by", "run", "--out", str(tmp_path / "p")])
    assert result.exit_code == 2 and "--by run" in result.stderr


# -- export -------------------------------------------------------------------------------


def test_export_csv_writes_runs_and_iterations(strategies_db, tmp_path):
    path, ids = strategies_db
    out = tmp_path / "out" / "results.csv"
    result = invoke(["--db", str(path), "export", "--out", str(out)])
    assert result.exit_code == 0, result.output
    runs_csv, iterations_csv = out.with_name("results-runs.csv"), out.with_name("results-iterations.csv")
    assert not out.exists() and runs_csv.exists() and iterations_csv.exists()
    runs = list(csv.DictReader(runs_csv.open()))
    iterations = list(csv.DictReader(iterations_csv.open()))
    assert len(runs) == 27 and len(iterations) == 27 * 3  # every status by default
    assert {"id", "status", "config_json", "final_win_rate"} <= set(runs[0])
    assert {"run_id", "iteration", "sel_mean_dpo_weight", "time_train"} <= set(iterations[0])
    assert iterations[0]["run_id"] == runs[0]["id"] and iterations[0]["iteration"] == "0"
    assert json.loads(runs[0]["config_json"])["budget"] == 2000


def test_export_json_with_filters(strategies_db, tmp_path):
    path, _ = strategies_db
    out = tmp_path / "results.json"
    result = invoke(["--db", str(path), "export", "--out", str(out), "--selector", "largest",
                     "--status", "finished"])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert len(data["runs"]) == 5 and all(r["instance_selector"] == "largest" for r in data["runs"])
    assert data["runs"][0]["config"]["budget"] == 2000 and "config_json" not in data["runs"][0]
    assert {i["run_id"] for i in data["iterations"]} == {r["id"] for r in data["runs"]}
    assert data["filters"] == {"status": "finished", "selector": "largest"}


@pytest.mark.parametrize("args", [["--out", "x.txt"], ["--out", "x.csv", "--format", "xml"]])
def test_export_format_errors_exit_2(strategies_db, tmp_path, args):
    path, _ = strategies_db
    args = [a if not a.startswith("x.") else str(tmp_path / a) for a in args]
    result = invoke(["--db", str(path), "export", *args])
    assert result.exit_code == 2 and "--format" in result.stderr
    assert list(tmp_path.glob("x*")) == []


# -- schema documentation -------------------------------------------------------------------


# (the check that docs/leaderboard/schema.md is generated lives in tests/test_docs_generated.py)


def test_schema_doc_check_and_write(tmp_path):
    target = tmp_path / "README.md"
    target.write_text(f"# x\n\n{schema_doc.START}\nold\n{schema_doc.END}\n\nafter\n")
    command = [sys.executable, "-m", "leaderboard.schema_doc"]
    check = subprocess.run([*command, "--check", str(target)], cwd=REPO, capture_output=True, text=True)
    assert check.returncode == 1 and schema_doc.REFRESH_COMMAND in check.stderr
    subprocess.run([*command, "--write", str(target)], cwd=REPO, check=True, capture_output=True)
    text = target.read_text()
    assert text.startswith("# x\n") and text.endswith("\n\nafter\n")
    assert schema_doc.section(text) == schema_doc.generate()
    assert subprocess.run([*command, "--check", str(target)], cwd=REPO).returncode == 0


# -- safety ---------------------------------------------------------------------------------


def _fingerprint(path):
    return path.read_bytes(), os.stat(path).st_mtime_ns


def _newer_database(path):
    with Leaderboard(path) as board:
        add_run(board, "random", seed=0, win=0.5)
        board.conn.execute(
            "insert into _sqlite_migrations (migration_set, name, applied_at) values (?, ?, ?)",
            ["pairsel_harness.leaderboard", "m999_from_the_future", "2030-01-01"],
        )
        board.conn.commit()
    os.utime(path, ns=(1_000_000_000_000_000_000, 1_000_000_000_000_000_000))


COMMANDS = [[], ["--by", "run"], ["show", "r"], ["compare"], ["plot", "--out", "P"], ["export", "--out", "E.csv"]]


@pytest.mark.parametrize("args", COMMANDS)
def test_a_newer_schema_is_refused_and_never_modified(tmp_path, args):
    path = tmp_path / "newer.db"
    _newer_database(path)
    before = _fingerprint(path)
    args = [str(tmp_path / a) if a in ("P", "E.csv") else a for a in args]
    result = invoke(["--db", str(path), *args])
    assert result.exit_code == 2, result.output
    text = " ".join(result.stderr.split())
    assert "newer pairsel-harness" in text and "m999_from_the_future" in text and "Upgrade" in text
    assert _fingerprint(path) == before
    with pytest.raises(NewerSchemaError):
        Leaderboard(path)
    assert _fingerprint(path) == before
    assert not (tmp_path / "P").exists() and not list(tmp_path.glob("E*.csv"))


@pytest.mark.parametrize("args", COMMANDS)
def test_a_file_that_is_not_a_database_is_refused_and_never_modified(tmp_path, args):
    path = tmp_path / "notes.db"
    path.write_bytes(b"these are my notes, not a database\n" * 100)
    os.utime(path, ns=(1_000_000_000_000_000_000, 1_000_000_000_000_000_000))
    before = _fingerprint(path)
    args = [str(tmp_path / a) if a in ("P", "E.csv") else a for a in args]
    result = invoke(["--db", str(path), *args])
    assert result.exit_code == 2, result.output
    assert "not a SQLite database" in result.stderr and "Traceback" not in result.output
    assert _fingerprint(path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.db"]


def _writer(path, worker, n_runs, start_at):
    import time

    while time.time() < start_at:  # all four start together
        time.sleep(0.001)
    with Leaderboard(path) as board:
        for k in range(n_runs):
            add_run(board, ("smallest", "random", "largest", "normalized")[worker], seed=k, win=0.5 + k / 100)
    return worker


def test_four_writers_and_a_reader_lose_no_row(tmp_path):
    import time

    path = tmp_path / "shared.db"
    Leaderboard(path).close()
    start_at = time.time() + 1.0
    with concurrent.futures.ProcessPoolExecutor(max_workers=4) as pool:
        futures = [pool.submit(_writer, path, worker, 6, start_at) for worker in range(4)]
        seen = []
        while not all(f.done() for f in futures):  # read the grouped view while they write
            result = invoke(["--db", str(path), "--json"])
            assert result.exit_code == 0, result.output
            seen.append(sum(g["runs"] for g in json.loads(result.stdout)))
        assert sorted(f.result() for f in futures) == [0, 1, 2, 3]
    assert seen == sorted(seen)  # a reader never sees rows disappear
    with sqlite3.connect(path) as conn:
        assert conn.execute("select count(*) from runs where status = 'finished'").fetchone()[0] == 24
        assert conn.execute("select count(*) from iterations").fetchone()[0] == 24 * 3
    payload = groups_json(path)
    assert sorted(g["runs"] for g in payload) == [6, 6, 6, 6]


# -- import cost and the benchmark ---------------------------------------------------------


def _modules_after(statement):
    code = f"import sys; {statement}; print(' '.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, capture_output=True, text=True)
    return set(out.stdout.split())


def test_browsing_modules_import_neither_numpy_nor_matplotlib():
    modules = _modules_after(
        "import harness.cli.leaderboard, leaderboard.query, leaderboard.compare, leaderboard.stats, "
        "leaderboard.export, leaderboard.schema_doc, leaderboard.plots"
    )
    for heavy in ("numpy", "matplotlib", "torch", "sqlite_utils", "rich"):
        assert heavy not in modules, heavy


def test_benchmark_builds_the_database_it_times(tmp_path):
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import bench_leaderboard
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    path = tmp_path / "bench.db"
    bench_leaderboard.build(path, 250)
    with Leaderboard(path, create=False) as board:
        assert board.conn.execute("select count(*) from runs where status = 'finished'").fetchone()[0] == 250
        assert board.conn.execute("select count(*) from iterations").fetchone()[0] == 1000
        payload = groups_json(path)
        assert sum(g["runs"] for g in payload) == 250
        assert any(g["settings"] for g in payload)
