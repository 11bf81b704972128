"""Tuned comparisons (compare = "tuned"): each arm tuned on its own over the claim's grid on exploration seeds,
the best point by final gold reward chosen only from complete tuning, and the chosen points compared on the
confirmation seeds."""

import json
import sqlite3
import textwrap
from types import SimpleNamespace

import pytest

from conftest import TINY_TESTBED
from harness.experiments import study as st
from harness.experiments import study_plan as sp
from harness.experiments import tuned as tu
from harness.plugins import load_registry


@pytest.fixture(scope="module")
def registry():
    return load_registry()


def cells(*hashes):
    return [SimpleNamespace(config_hash=h) for h in hashes]


# -- the choice ---------------------------------------------------------------------------------------------------


def test_the_choice_is_the_highest_mean_and_a_tie_goes_to_the_first_point():
    a, b, c = cells("a", "b", "c")
    assert tu.choose([a, b, c], {"a": [0.1, 0.3], "b": [0.4, 0.2], "c": [0.0, 0.5]}, 2) is b  # 0.2, 0.3, 0.25
    tie = {"a": [0.25, 0.25], "b": [0.125, 0.375], "c": [0.5, 0.0]}  # all 0.25 exactly
    assert tu.choose([a, b, c], tie, 2) is a  # the first
    assert tu.choose([c, b, a], tie, 2) is c  # the grid's order decides, not the values' order


def test_incomplete_tuning_chooses_nothing():
    a, b = cells("a", "b")
    assert tu.choose([a, b], {"a": [0.9, 0.9], "b": [0.1]}, 2) is None  # b lacks a seed: no choice yet
    assert tu.choose([a, b], {"a": [0.9, 0.9]}, 2) is None
    assert tu.choose([a, b], {"a": [0.9], "b": [0.1]}, 1) is a


def test_tuning_points_and_options_follow_the_table_order():
    tune = {"trainer.lr": (0.001, 0.01), "trainer.beta": (0.1, 1)}
    assert tu.tune_options(tune) == ["trainer.lr=0.001,0.01", "trainer.beta=0.1,1"]
    assert tu.tune_points(tune) == [{"trainer.lr": 0.001, "trainer.beta": 0.1}, {"trainer.lr": 0.001, "trainer.beta": 1},
                                    {"trainer.lr": 0.01, "trainer.beta": 0.1}, {"trainer.lr": 0.01, "trainer.beta": 1}]
    assert tu.describe_point({"trainer.lr": 0.003, "trainer.beta": 0.3}) == "lr 0.003, β 0.3"
    assert tu.describe_point(None) == "not chosen yet"


# -- expansion -----------------------------------------------------------------------------------------------------


def plan(extra: str = "") -> str:
    """A tiny plan with exploration seeds 0-4, confirmation seeds 100-101, one plain claim and its tuned version."""
    options = ", ".join(f'"{o}"' for o in TINY_TESTBED)
    return textwrap.dedent(f"""\
        [study]
        title = "tuned"
        exploration_seeds = "0-4"
        confirmation_seeds = "100-101"
        families = {{F1 = "plain", F1-tuned = "each arm at its own tuned lr"}}

        [[grid]]
        name = "one"
        selector = ["smallest", "random"]
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
        id = "smallest-vs-random-tuned"
        of = "smallest-vs-random"
        compare = "tuned"
        tune = {{"trainer.lr" = [0.001, 0.01]}}
        tune_seeds = "0-1"
        family = "F1-tuned"
        """) + textwrap.dedent(extra)


def test_tuning_derives_one_grid_on_tuning_seeds_and_an_empty_one_for_the_chosen_points(tmp_path, registry):
    path = tmp_path / "tuned.toml"
    path.write_text(plan())
    study = st.expand(sp.load_plan(path), registry)
    assert [g.plan.name for g in study.grids] == ["one", "one@tune", "one@tuned"]
    tuning, tuned = study.grid("one@tune"), study.grid("one@tuned")
    assert tuning.seeds == [0, 1] and tuned.seeds == [100, 101] and tuned.cells == []
    assert (tuning.tuning, tuned.tuning, tuning.derived_from) == ("tune", "tuned", "one")
    assert tuning.sweep_id != tuned.sweep_id != study.grid("one").sweep_id
    # every arm at every tuning point, nothing else of the plan's grid changed
    assert sorted((c.config.instance_selector.name, c.config.trainer.settings["lr"]) for c in tuning.cells) == [
        ("random", 0.001), ("random", 0.01), ("smallest", 0.001), ("smallest", 0.01)]
    assert study.confirmatory  # tuning on exploration seeds does not make the verdicts exploratory
    bound = next(b for b in study.claims if b.plan.compare == "tuned")
    assert set(bound.tuning) == {"a", "b"} and all(arm.chosen is None for arm in bound.tuning.values())
    # before any run nothing is chosen: the claim has no values and says how far tuning got
    outcome = st.results(study, tmp_path / "empty.db")
    item = next(i for i in outcome.claims if i.claim.plan.compare == "tuned")
    assert item.a_values == {} and item.stats["n"] == 0
    assert "tuning not complete, so nothing is compared yet: A 0 of 4 tuning runs finished" in item.notes[0]


def test_an_arm_shared_by_two_claims_is_tuned_once(tmp_path, registry):
    path = tmp_path / "tuned.toml"
    path.write_text(plan("""
        [[claim]]
        id = "random-vs-smallest-tuned"
        family = "F1-tuned"
        metric = "final_win_rate"
        a = {grid = "one", selector = "random"}
        b = {grid = "one", selector = "smallest"}
        direction = "a < b"
        compare = "tuned"
        tune = {"trainer.lr" = [0.001, 0.01]}
        tune_seeds = "0-1"
        """))
    study = st.expand(sp.load_plan(path), registry)
    assert len(study.arms) == 2 and len(study.grid("one@tune").cells) == 4
    first, second = [b for b in study.claims if b.plan.compare == "tuned"]
    assert first.tuning["a"] is second.tuning["b"] and first.tuning["b"] is second.tuning["a"]


def test_two_tuned_claims_that_tune_one_grid_differently_are_refused(tmp_path, registry):
    path = tmp_path / "tuned.toml"
    path.write_text(plan("""
        [[claim]]
        id = "other-tuning"
        of = "smallest-vs-random"
        family = "F1-tuned"
        compare = "tuned"
        tune = {"trainer.lr" = [0.003, 0.03]}
        tune_seeds = "0-1"
        """))
    with pytest.raises(sp.PlanError, match="tunes grid 'one' over other options or seeds; give every tuned claim "
                                           "on one grid the same tune and tune_seeds"):
        st.expand(sp.load_plan(path), registry)


def test_a_grid_that_fixes_a_tuned_option_is_refused(tmp_path, registry):
    path = tmp_path / "tuned.toml"
    path.write_text(plan().replace('"testbed.sft_samples=2000"', '"trainer.lr=0.003", "testbed.sft_samples=2000"'))
    with pytest.raises(sp.PlanError, match="grid 'one' already sets trainer.lr, which tuning varies"):
        st.expand(sp.load_plan(path), registry)


# -- end to end ------------------------------------------------------------------------------------------------------


def test_a_tiny_tuned_study_chooses_from_its_tuning_runs_and_compares_the_chosen_points(cli, db_path, tmp_path,
                                                                                      registry):
    path = tmp_path / "tuned.toml"
    path.write_text(plan())
    out = tmp_path / "report"
    result = cli("study", "run", path, "--jobs", "1", "--report-dir", out, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    # 2 plain cells x 2 seeds, 2 arms x 2 lr x 2 tuning seeds, then 2 chosen points x 2 confirmation seeds
    assert summary["ran"] == 4 + 8 + 4 and summary["runs"] == {"finished": 16, "wanted": 16}
    assert summary["confirmatory"] is True

    conn = sqlite3.connect(db_path)
    runs = conn.execute("select study_grid, instance_selector, seed, final_gold_reward, final_win_rate, config_json "
                        "from runs").fetchall()
    conn.close()
    tuning = [r for r in runs if r[0] == "one@tune"]
    assert {r[2] for r in tuning} == {0, 1}
    # the choice, recomputed from the tuning runs: per arm, the lr with the highest mean final gold reward
    expected = {}
    for selector in ("smallest", "random"):
        means = {}
        for lr in (0.001, 0.01):
            golds = [r[3] for r in tuning if r[1] == selector and json.loads(r[5])["trainer"]["settings"]["lr"] == lr]
            assert len(golds) == 2
            means[lr] = sum(golds) / 2
        expected[selector] = max(means, key=lambda lr: (means[lr], -[0.001, 0.01].index(lr)))
    tuned_runs = [r for r in runs if r[0] == "one@tuned"]
    assert {(r[1], json.loads(r[5])["trainer"]["settings"]["lr"]) for r in tuned_runs} == set(expected.items())
    assert {r[2] for r in tuned_runs} == {100, 101}

    claims = {c["claim"]: c for c in summary["claims"]}
    tuned = claims["smallest-vs-random-tuned"]
    assert tuned["compare"] == "tuned" and tuned["n"] == 2
    win = {(r[1], r[2]): r[4] for r in tuned_runs}
    assert tuned["mean"] == pytest.approx(sum(win[("smallest", s)] - win[("random", s)] for s in (100, 101)) / 2)

    # the plain claim is exactly what a plan without the tuned claim gives on the same runs
    plain_path = tmp_path / "plain" / "tuned.toml"
    plain_path.parent.mkdir()
    plain_path.write_text(plan().split("[[claim]]\nid = \"smallest-vs-random-tuned\"")[0]
                          .replace(', F1-tuned = "each arm at its own tuned lr"', ""))
    plain = st.results(st.expand(sp.load_plan(plain_path), registry), db_path)
    assert plain.claims[0].stats["mean"] == claims["smallest-vs-random"]["mean"]

    report = (out / "report.md").read_text()
    for phrase in ("| contrast (plain claim) | metric | regime | plain | matched KL | matched steps | tuned |",
                   f"(A: lr {expected['smallest']}; B: lr {expected['random']})",
                   "| arm | tuning seeds | point: mean | chosen |", "| one / selector=smallest | 0-1 |",
                   "`GRID@tune` holds tuned claims' arms", "**Tuned:** each arm is run at every point"):
        assert phrase in report, phrase

    # a report rebuilt from the leaderboard binds the same choice and gives the same numbers; nothing new runs
    again = cli("study", "run", path, "--jobs", "1", "--report-dir", tmp_path / "again", "--json")
    assert again.exit_code == 0, again.output
    second = json.loads(again.stdout)
    assert second["ran"] == 0
    assert {c["claim"]: c["mean"] for c in second["claims"]} == {c["claim"]: c["mean"] for c in summary["claims"]}
