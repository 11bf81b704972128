"""Fair comparisons (a claim's `compare`): matched KL by interpolation along each seed's path, matched
optimiser steps as derived grid cells, bad modifiers exit 2, and plain claims left exactly as they were."""

import json
import sqlite3
import textwrap

import pytest

from conftest import TINY_TESTBED
from harness.experiments import matched as mt
from harness.experiments import study as st
from harness.experiments import study_plan as sp
from harness.plugins import load_registry


@pytest.fixture(scope="module")
def registry():
    return load_registry()


def rows(*points):
    """Iteration rows from (kl, win_rate[, gold_reward]) points, iteration 0 (pi_0) first."""
    return [{"iteration": i, "kl": p[0], "win_rate": p[1], "gold_reward": p[2] if len(p) > 2 else p[1] * 10}
            for i, p in enumerate(points)]


# -- interpolation on hand-made paths ----------------------------------------------------------------------------


def test_the_common_kl_is_the_smaller_final_kl_and_the_other_arm_is_read_back_along_its_path():
    a = {(0, 0): rows((1.0, 0.4), (3.0, 0.9))}  # ends further from pi_ref
    b = {(0, 0): rows((1.0, 0.4), (2.0, 0.6))}
    out = mt.matched_kl(a, b, "final_win_rate")
    (seed,) = out.seeds
    assert seed.k_star == 2.0 and seed.final_kl == (3.0, 2.0) and seed.reached
    assert seed.a["win_rate"] == pytest.approx(0.65)  # halfway from (1.0, 0.4) to (3.0, 0.9)
    assert seed.b["win_rate"] == 0.6  # B is read at its own end point
    assert out.values("a") == {(0, 0): pytest.approx(0.65)} and out.values("b") == {(0, 0): 0.6}
    assert out.delta("gold_reward") == pytest.approx(0.5)  # the other path metric, at the same k*


def test_pi0_recorded_point_is_the_start_of_the_path():
    # pi_0 is 1.0 away from pi_ref: k* = 2.0 lies on the segment pi_0 -> iteration 1, not on (0, .) -> it1
    a = {(0, 0): rows((1.0, 0.4), (3.0, 0.7), (5.0, 0.9))}
    b = {(0, 0): rows((1.0, 0.4), (2.0, 0.5))}
    assert mt.matched_kl(a, b, "win_rate").values("a") == {(0, 0): pytest.approx(0.55)}
    assert mt.path(a[(0, 0)], "win_rate") == [(1.0, 0.4), (3.0, 0.7), (5.0, 0.9)]
    # without pi_0's row there is no path: the seed is reported, not interpolated from a guessed origin
    out = mt.matched_kl({(0, 0): a[(0, 0)][1:]}, b, "win_rate")
    assert out.values("a") == {} and [s.key for s in out.missing] == [(0, 0)]
    assert "no complete (KL, win_rate) path from pi_0" in out.missing[0].reason


def test_a_side_iteration_ends_the_path_there():
    a = {(0, 0): rows((1.0, 0.4), (3.0, 0.7), (5.0, 0.9))}
    b = {(0, 0): rows((1.0, 0.4), (4.0, 0.6))}
    out = mt.matched_kl(a, b, "win_rate", a_through=1)
    assert out.seeds[0].k_star == 3.0 and out.values("a") == {(0, 0): 0.7}
    assert out.values("b") == {(0, 0): pytest.approx(0.4 + 2 / 3 * 0.2)}


def test_a_non_monotone_path_is_read_at_its_first_crossing():
    points = [(1.0, 0.4), (4.0, 0.7), (2.0, 0.3), (5.0, 0.9)]
    assert not mt.monotone(points) and mt.monotone(points[:2])
    # k = 3 is crossed on 1 -> 4 (0.6), on 4 -> 2 (0.5) and on 2 -> 5 (0.5): the first wins
    assert mt.value_at(points, 3.0) == pytest.approx(0.6)
    assert mt.value_at(points, 1.0) == 0.4 and mt.value_at(points, 5.0) == 0.9
    assert mt.value_at(points, 0.5) is None and mt.value_at(points, 5.5) is None
    out = mt.matched_kl({(0, 0): rows(*points)}, {(0, 0): rows((1.0, 0.4), (3.0, 0.5))}, "win_rate")
    assert out.non_monotone == [(0, 0)] and out.values("a") == {(0, 0): pytest.approx(0.6)}


def test_a_seed_that_does_not_reach_the_common_kl_is_reported_not_dropped():
    a = {(0, 0): rows((1.0, 0.4), (2.0, 0.6)), (1, 1): rows((1.0, 0.4), (0.5, 0.45)),  # seed 1: A ends below pi_0
         (2, 2): rows((1.5, 0.3), (2.5, 0.5))}
    b = {(0, 0): rows((1.0, 0.4), (3.0, 0.5)), (1, 1): rows((1.0, 0.4), (2.0, 0.5)),
         (2, 2): rows((1.5, 0.3), (3.5, 0.4))}
    out = mt.matched_kl(a, b, "final_win_rate")
    assert [s.key for s in out.missing] == [(1, 1)]
    missed = out.missing[0]
    assert missed.k_star == 0.5 and missed.a["win_rate"] == 0.45 and missed.b["win_rate"] is None
    assert "B never reaches k* = 0.5 (pi_0's KL 1)" in missed.reason
    assert set(out.values("a")) == set(out.values("b")) == {(0, 0), (2, 2)}
    summary = out.summary()
    assert summary["not_reached"] == [{"seed": [1, 1], "reason": missed.reason}]
    assert summary["k_mean"] == pytest.approx((2.0 + 0.5 + 2.5) / 3) and summary["k_min"] == 0.5
    # the design-level k̄: the smaller mean final KL, (2.0 + 0.5 + 2.5) / 3 for A; seed 1's A never gets there;
    # Δ win rate at k̄: seed 0 (0.4 + 2/3·0.2) − (0.4 + 1/3·0.1) = 0.1, seed 2 (0.3 + 1/6·0.2) − (0.3 + 1/12·0.1) = 0.025
    assert out.design_k == pytest.approx(5.0 / 3) and out.design_missing == [(1, 1)]
    assert out.design_delta["win_rate"] == pytest.approx((0.1 + 0.025) / 2)


# -- the plan syntax: bad modifiers exit 2 with the line and the fix -----------------------------------------------


NOTES = {"F1": "smallest against random, plain", "F1-kl": "the same contrast at matched KL",
         "F1-steps": "the same contrast at matched optimiser steps"}


def plan(claims: str = "", iterations: int = 2) -> str:
    """A tiny plan (the test_study tiny world: conftest.TINY_TESTBED) with one plain claim, plus ``claims``;
    every family used gets a note."""
    options = ", ".join(f'"{o}"' for o in TINY_TESTBED)
    notes = ", ".join(f'{name} = "{note}"' for name, note in NOTES.items()
                      if name == "F1" or f'family = "{name}"' in claims)
    return textwrap.dedent(f"""\
        [study]
        title = "fair"
        seeds = 2
        families = {{{notes}}}

        [[grid]]
        name = "one"
        selector = ["smallest", "random"]
        iterations = {iterations}
        budget = 80
        options = [{options}]

        [[claim]]
        id = "smallest-vs-random"
        family = "F1"
        metric = "final_win_rate"
        a = {{grid = "one", selector = "smallest"}}
        b = {{grid = "one", selector = "random"}}
        direction = "a > b"
        source = "made up, Figure 0"
        """) + textwrap.dedent(claims)


MODIFIERS = """
    [[claim]]
    id = "smallest-vs-random-kl"
    of = "smallest-vs-random"
    compare = "matched_kl"
    family = "F1-kl"

    [[claim]]
    id = "smallest-vs-random-steps"
    of = "smallest-vs-random"
    compare = "matched_steps"
    steps = 3
    family = "F1-steps"
    """


def test_a_modified_claim_inherits_the_plain_claims_contrast(tmp_path):
    path = tmp_path / "fair.toml"
    path.write_text(plan(MODIFIERS))
    loaded = sp.load_plan(path)
    plain, kl, steps = loaded.claims
    for claim in (kl, steps):
        assert (claim.metric, claim.a, claim.b, claim.direction, claim.source) == (
            plain.metric, plain.a, plain.b, plain.direction, plain.source)
        assert claim.of == plain.id and claim.family != plain.family
    assert (plain.compare, kl.compare, steps.compare, steps.steps) == ("final", "matched_kl", "matched_steps", 3)
    assert kl.metric_label == "final_win_rate · matched KL" and plain.metric_label == "final_win_rate"


BAD = [  # (the claim's extra lines, the key whose line the error names, the problem, the fix)
    ('compare = "matched_KL"', "compare",
     "compare 'matched_KL' is not one of 'final', 'matched_kl', 'matched_steps', 'tuned'", "did you mean 'matched_kl'?"),
    ('compare = "tuned"\ntune_seeds = "0-4"', "compare", 'compare = "tuned" needs the options each arm is tuned over',
     'add tune = {"trainer.lr" = [0.001, 0.003, 0.01]'),
    ('compare = "tuned"\ntune_seeds = "0-4"\ntune = {"trainer.lr" = [0.001]}', "tune",
     "tune 'trainer.lr' = [0.001] is not a list of at least two values", '"trainer.lr" = [value1, value2, value3]'),
    ('compare = "tuned"\ntune_seeds = "0-4"\ntune = {lr = [0.001, 0.01]}', "tune",
     "tune key 'lr' is not a plugin option", '"trainer.lr", "trainer.beta"'),
    ('compare = "tuned"\ntune = {"trainer.lr" = [0.001, 0.01]}', "compare",
     "this plan declares no exploration seeds and the claim no tune_seeds", 'add tune_seeds = "0-4"'),
    ('compare = "tuned"\ntune = {"trainer.lr" = [0.001, 0.01]}\ntune_seeds = "1-3"', "tune_seeds",
     "tuning seeds overlap confirmation seeds in 1", "never on a seed a verdict uses"),
    ('compare = "matched_kl"\ntune_seeds = "0-4"', "tune_seeds", 'tune_seeds is read only with compare = "tuned"',
     'drop tune_seeds, or write compare = "tuned"'),
    ('compare = "matched_steps"', "compare", 'compare = "matched_steps" needs the steps both arms run per iteration',
     "add steps = 128"),
    ('compare = "matched_steps"\nsteps = 0', "steps", "steps 0 is not a number of optimiser steps >= 1",
     "steps = 128"),
    ('compare = "matched_kl"\nsteps = 128', "steps", 'steps is read only with compare = "matched_steps"',
     "drop steps"),
    ('compare = "matched_kl"\nmetric = {metric = "sel_ranking_accuracy", iteration = 1}', "metric",
     "is not recorded per iteration for the policy", "use one of final_win_rate"),
    ('compare = "matched_kl"\ndirection = "a < b"', "direction", "direction differs from that of the plain claim",
     "drop direction to inherit it"),
]


@pytest.mark.parametrize("extra, key, problem, fix", BAD)
def test_a_bad_modifier_exits_2_naming_the_line_and_the_fix(cli, db_path, tmp_path, extra, key, problem, fix):
    text = plan(f'\n[[claim]]\nid = "bad"\nof = "smallest-vs-random"\nfamily = "F1-kl"\n{extra}\n')
    path = tmp_path / "bad.toml"
    path.write_text(text)
    line = max(i for i, row in enumerate(text.splitlines(), 1) if row.startswith(key + " ="))
    for command in (("study", "run", path, "--dry-run"), ("study", "report", path)):
        result = cli(*command)
        assert result.exit_code == 2, result.output
        message = " ".join(result.output.split())
        assert f"bad.toml:{line}: [[claim]] #2 {key}:" in message and problem in message and fix in message


def test_of_must_name_a_plain_claim_of_the_plan(tmp_path):
    text = plan('\n[[claim]]\nid = "bad"\nof = "smallest-vs-randon"\ncompare = "matched_kl"\nfamily = "F1-kl"\n')
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(sp.PlanError, match=r"of = 'smallest-vs-randon' is not a claim of this plan; did you mean "
                                           r"'smallest-vs-random'\?"):
        sp.load_plan(path)


def test_matched_kl_on_one_runs_iterations_is_refused(cli, db_path, tmp_path):
    text = plan(textwrap.dedent("""
        [[claim]]
        id = "improves"
        family = "F1-kl"
        metric = {metric = "win_rate"}
        a = {grid = "one", selector = "smallest", iteration = 2}
        b = {grid = "one", selector = "smallest", iteration = 1}
        direction = "a > b"
        compare = "matched_kl"
        """))
    path = tmp_path / "one_path.toml"
    path.write_text(text)
    result = cli("study", "run", path, "--dry-run")
    assert result.exit_code == 2, result.output
    message = " ".join(result.output.split())
    line = max(i for i, row in enumerate(text.splitlines(), 1) if row.startswith("compare ="))
    assert f"one_path.toml:{line}: [[claim]] #2 compare: a matched-KL comparison matches two runs' paths" in message
    assert 'use compare = "matched_steps" for a claim between iterations' in message


# -- expansion: the derived grid of a matched-steps claim ----------------------------------------------------------


def test_matched_steps_derives_a_grid_with_the_same_steps_on_both_arms(tmp_path, registry):
    path = tmp_path / "fair.toml"
    path.write_text(plan(MODIFIERS))
    study = st.expand(sp.load_plan(path), registry)
    plain_path = tmp_path / "plain" / "fair.toml"  # the same study name: the same salt of its sweep ids
    plain_path.parent.mkdir()
    plain_path.write_text(plan())
    plain = st.expand(sp.load_plan(plain_path), registry)
    assert [g.plan.name for g in study.grids] == ["one", "one@steps3"]
    assert study.grid("one").sweep_id == plain.grid("one").sweep_id  # the plain grid is untouched
    derived = study.grid("one@steps3")
    assert derived.derived_from == "one" and derived.steps == 3 and derived.seeds == [0, 1]
    bound = next(b for b in study.claims if b.plan.compare == "matched_steps")
    assert bound.a[0] == bound.b[0] == "one@steps3" and bound.steps == 3
    for _, cell in (bound.a, bound.b):
        assert cell.config.trainer.settings["steps"] == 3
    assert {c.config.instance_selector.name for _, c in (bound.a, bound.b)} == {"smallest", "random"}
    assert all(c.config.trainer.settings["steps"] == 0 for c in study.grid("one").cells)
    quick = st.expand(sp.load_plan(path), registry, quick=True)  # budget_scale 1 here: the same steps
    assert quick.grid("one@steps3").steps == 3
    assert st.quick_steps(128, {"budget_scale": 0.1}) == 13 and st.quick_steps(128, {}) == 128


def test_the_builtin_study_has_fair_versions_of_f1_and_f2(registry):
    plan_ = sp.find_plan("yang2024", registry)
    by_id = {c.id: c for c in plan_.claims}
    modified = [c for c in plan_.claims if c.compare != "final"]
    assert {c.of for c in modified if c.compare == "matched_kl"} >= {
        i for i in by_id if i.startswith("F1-") and by_id[i].compare == "final"}
    assert {c.of for c in modified if c.compare == "matched_steps"} >= {
        i for i in by_id if i.startswith(("F1-", "F2-")) and by_id[i].compare == "final"}
    assert {c.of for c in modified if c.compare == "tuned"} >= {
        i for i in by_id if i.startswith(("F1-", "F2-")) and by_id[i].compare == "final"}
    assert {str(c.tune) for c in modified if c.compare == "tuned"} == {
        "{'trainer.lr': (0.001, 0.003, 0.01), 'trainer.beta': (0.1, 0.3, 1.0)}"}
    for claim in modified:
        base = by_id[claim.of]
        assert (claim.direction, claim.metric, claim.a, claim.b, claim.kind) == (
            base.direction, base.metric, base.a, base.b, base.kind)
        assert claim.family not in {c.family for c in plan_.claims if c.compare == "final"}
    full = st.expand(plan_, registry)
    quick = st.expand(plan_, registry, quick=True)
    assert {g.plan.name for g in full.grids if g.derived_from and g.steps} == {
        "one_iteration_instance@steps128", "one_iteration_corpus@steps128", "three_iterations@steps128"}
    # tuning: the arms of F1 (five strategy cells) and of F2 / the question (two), 9 points on 5 seeds each
    assert {g.plan.name: (len(g.cells), g.seeds) for g in full.grids if g.tuning == "tune"} == {
        "one_iteration_instance@tune": (27, [0, 1, 2, 3, 4]), "one_iteration_corpus@tune": (18, [0, 1, 2, 3, 4]),
        "three_iterations@tune": (18, [0, 1, 2, 3, 4])}
    assert full.confirmatory and len(full.arms) == 7
    assert {g.steps for g in quick.grids if g.derived_from and g.tuning is None} == {13}


# -- end to end: a tiny study with both modifiers -------------------------------------------------------------------


def test_a_tiny_study_with_both_modifiers_runs_reports_and_leaves_plain_claims_alone(cli, db_path, tmp_path,
                                                                                     registry):
    path = tmp_path / "fair.toml"
    path.write_text(plan(MODIFIERS))
    out = tmp_path / "report"
    result = cli("study", "run", path, "--jobs", "1", "--report-dir", out, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["ran"] == 8 and summary["runs"] == {"finished": 8, "wanted": 8}
    claims = {c["claim"]: c for c in summary["claims"]}
    assert [claims[c]["compare"] for c in ("smallest-vs-random", "smallest-vs-random-kl",
                                           "smallest-vs-random-steps")] == ["plain", "matched KL", "matched steps"]

    conn = sqlite3.connect(db_path)
    runs = conn.execute("select id, study_grid, instance_selector, seed, world_seed, config_json from runs").fetchall()
    derived = [r for r in runs if r[1] == "one@steps3"]
    assert len(derived) == 4 and {r[2] for r in derived} == {"smallest", "random"}
    # both arms recorded the same fixed steps in their config, and trained exactly that many each iteration
    assert {json.loads(r[5])["trainer"]["settings"]["steps"] for r in derived} == {3}
    assert {json.loads(r[5])["trainer"]["settings"]["steps"] for r in runs if r[1] == "one"} == {0}
    steps = conn.execute(f"select distinct train_steps from iterations where iteration > 0 and run_id in "
                         f"({', '.join('?' for _ in derived)})", [r[0] for r in derived]).fetchall()
    assert steps == [(3,)]

    # the matched-KL values are each seed's paths (pi_0 included) read at the smaller final KL
    loaded = st.expand(sp.load_plan(path), registry)
    outcome = st.results(loaded, db_path)
    item = next(i for i in outcome.claims if i.claim.plan.compare == "matched_kl")
    by_key = {}
    for run_id, grid, selector, seed, world, _ in runs:
        if grid == "one":
            rows_ = conn.execute("select iteration, kl, win_rate from iterations where run_id = ? order by iteration",
                                 [run_id]).fetchall()
            by_key[(selector, seed, world)] = [(kl, win) for _, kl, win in rows_]
    assert all(len(p) == 3 for p in by_key.values())  # pi_0 and two iterations
    for seed in (0, 1):
        a, b = by_key[("smallest", seed, seed)], by_key[("random", seed, seed)]
        k = min(a[-1][0], b[-1][0])
        if item.matched.seeds[seed].reached:
            assert item.a_values[(seed, seed)] == pytest.approx(mt.value_at(a, k))
            assert item.b_values[(seed, seed)] == pytest.approx(mt.value_at(b, k))
        assert item.matched.seeds[seed].k_star == pytest.approx(k)
    assert item.stats["n"] + len(item.matched.missing) == 2
    conn.close()

    report = (out / "report.md").read_text()
    for phrase in ("## Fair comparisons", "| contrast (plain claim) | metric | regime | plain | matched KL | "
                   "matched steps |", "| smallest-vs-random | final_win_rate | outcome-chosen |", "(3 steps)",
                   "k* mean (min–max)", "| smallest-vs-random-steps | 3 | one@steps3 / selector=smallest | 3 |",
                   "Grids named `GRID@stepsS` are derived"):
        assert phrase in report, phrase

    # the plain plan on the same database: the same runs, the same statistics, no trace of the modifiers
    plain_path = tmp_path / "plain" / "fair.toml"  # the same study name, so the same sweep ids and runs
    plain_path.parent.mkdir()
    plain_path.write_text(plan())
    plain_study = st.expand(sp.load_plan(plain_path), registry)
    plain = st.results(plain_study, db_path)
    assert plain.claims[0].stats == outcome.claims[0].stats
    assert plain.claims[0].a_values == outcome.claims[0].a_values
    assert plain.counts == {"finished": 4, "wanted": 4}
    plain_out = tmp_path / "plain-report"
    again = cli("study", "report", plain_path, "--report-dir", plain_out, "--json")
    assert again.exit_code == 0, again.output
    text = (plain_out / "report.md").read_text()
    assert "Fair comparisons" not in text and "@steps" not in text and "matched" not in text
