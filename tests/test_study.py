"""`harness study`: plan validation, verdict arithmetic, runs tagged and reused, report rebuilt, plugin studies."""

import json
import math
import sqlite3
import textwrap

import pytest

from conftest import TINY_TESTBED
from harness.experiments import study as st
from harness.experiments import study_plan as sp
from harness.experiments import verdicts as vd
from harness.errors import PluginError
from harness.plugins import PluginInfo, load_registry
from leaderboard.stats import t_ppf


@pytest.fixture(scope="module")
def registry():
    return load_registry()


def tiny_plan(grid_extra: str = "", seeds: str = "2") -> str:
    options = ", ".join(f'"{o}"' for o in TINY_TESTBED)
    return textwrap.dedent(f"""\
        [study]
        title = "tiny"
        seeds = {seeds}

        [quick]
        seeds = 2

        [[grid]]
        name = "one"
        selector = ["smallest", "random"]
        iterations = 1
        budget = 80
        options = [{options}]
        {grid_extra}

        [[claim]]
        id = "smallest-vs-random"
        finding = "F1"
        metric = "final_win_rate"
        a = {{grid = "one", selector = "smallest"}}
        b = {{grid = "one", selector = "random"}}
        direction = "a > b"
        source = "made up, Figure 0"

        [[claim]]
        id = "ranking-accuracy"
        metric = {{metric = "sel_ranking_accuracy", iteration = 1}}
        a = {{grid = "one", selector = "smallest"}}
        b = {{grid = "one", selector = "random"}}
        direction = "a < b"
        """)


# -- verdict arithmetic on a hand-made table ---------------------------------------------------------


def table(diffs, base=0.5):
    b = {(seed, seed): base for seed in range(len(diffs))}
    a = {key: base + d for key, d in zip(b, diffs)}
    return a, b


@pytest.mark.parametrize("diffs, direction, expected", [
    ([0.10, 0.12, 0.11, 0.09], "a > b", "reproduced"),
    ([-0.10, -0.12, -0.11, -0.09], "a > b", "reversed"),
    ([0.10, -0.12, 0.11, -0.09], "a > b", "not significant"),
    ([-0.10, -0.12, -0.11, -0.09], "a < b", "reproduced"),
    ([0.10, 0.12, 0.11, 0.09], "a < b", "reversed"),
    ([0.10, -0.12, 0.11, -0.09], "a < b", "not significant"),
    ([0.001, -0.002, 0.0015, -0.001, 0.0005, 0.0], "none", "equivalent within ±0.02"),
    ([0.10, -0.12, 0.11, -0.09], "none", "inconclusive"),
    ([0.10, 0.12, 0.11, 0.09], "none", "different"),
    ([0.10, 0.12, 0.11, 0.09], "a <= b", "better"),
    ([-0.10, -0.12, -0.11, -0.09], "a <= b", "no better (within 0.02)"),
    ([0.001, -0.002, 0.0015, -0.001], "a >= b", "no worse (within 0.02)"),
    ([-0.10, -0.12, -0.11, -0.09], "a >= b", "worse"),
    ([0.10], "a > b", "too few pairs"),
    ([0.0, 0.0, 0.0, 0.0], "a < b", "no difference in any pair"),
    ([0.0, 0.0, 0.0, 0.0], "none", "no difference in any pair"),
    ([0.10, 0.10, 0.10], "a > b", "too few pairs"),
])
def test_verdicts_on_a_hand_made_table(diffs, direction, expected):
    a, b = table(diffs)
    margin = 0.02 if direction in vd.MARGIN_DIRECTIONS else None
    assert vd.claim_statistics(a, b, direction, margin=margin)["verdict"] == expected


def test_interval_and_detectable_difference_arithmetic():
    diffs = [0.02, 0.05, -0.01, 0.04, 0.03]
    a, b = table(diffs)
    a[(99, 99)] = 1.0  # unpaired: ignored
    out = vd.claim_statistics(a, b, "a > b")
    n, mean = 5, sum(diffs) / 5
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / 4)
    half = t_ppf(0.975, 4) * sd / math.sqrt(5)
    assert out["n"] == n and out["mean"] == pytest.approx(mean) and out["std"] == pytest.approx(sd)
    assert out["half_width"] == pytest.approx(half) and half == pytest.approx(2.776445 * sd / math.sqrt(5), rel=1e-6)
    assert (out["ci_low"], out["ci_high"]) == (pytest.approx(mean - half), pytest.approx(mean + half))
    assert out["mde80"] == pytest.approx((t_ppf(0.975, 4) + t_ppf(0.8, 4)) * sd / math.sqrt(5))
    assert out["verdict"] == ("reproduced" if mean - half > 0 else "not significant")
    assert out["p_sign_flip"] == pytest.approx(4 / 32)  # the observed signs, -0.01 flipped, and their mirrors


def test_holm_over_a_family_turns_a_lone_significant_claim_into_not_significant():
    strong, weak = table([0.10, 0.12, 0.11, 0.09, 0.10]), table([0.01, 0.04, 0.005, 0.03, 0.02])  # p = 0.031
    alone = vd.claim_statistics(*weak, "a > b")
    assert alone["p"] < 0.05 and alone["verdict"] == "reproduced"
    family = [vd.claim_statistics(*strong, "a > b"), vd.claim_statistics(*weak, "a > b"),
              vd.claim_statistics(*table([0.02, -0.03, 0.01, -0.01, 0.0]), "a > b")]
    vd.adjust_family(family, "holm")
    assert [s["family_size"] for s in family] == [3, 3, 3]
    assert family[0]["verdict"] == "reproduced"
    assert family[1]["p_adjusted"] > alone["p"] and family[1]["verdict"] == "not significant"
    bh = [dict(s) for s in family]
    vd.adjust_family(bh, "bh")
    assert all(b["p_adjusted"] <= h["p_adjusted"] for b, h in zip(bh, family))


# -- plan validation: the line and the fix ----------------------------------------------------------------


def test_plan_errors_name_the_line_and_the_fix(tmp_path):
    text = tiny_plan().replace('metric = "final_win_rate"', 'metrc = "final_win_rate"')
    text = text.replace('direction = "a < b"', 'direction = "a << b"')
    text = text.replace('[[claim]]\nid = "ranking', '[[claim]]\nfinding = "F5"\nid = "ranking')
    text += '\n[[claim]]\nid = "no-direction"\nmetric = "final_win_rate"\na = {grid = "one", selector = "smallest"}\n' \
            'b = {grid = "one", selector = "random"}\n'
    path = tmp_path / "bad.toml"
    path.write_text(text)
    lines = text.splitlines()
    line_of = lambda needle: next(i for i, line in enumerate(lines, 1) if needle in line)  # noqa: E731
    with pytest.raises(sp.PlanError) as info:
        sp.load_plan(path)
    message = str(info.value)
    assert "has 4 problems" in message  # the typo also leaves claim 1 without its metric
    assert "[[claim]] #1: missing required field 'metric'; add metric = \"final_win_rate\"" in message
    assert f"{path}:{line_of('metrc')}: [[claim]] #1 metrc: unknown key 'metrc'; did you mean 'metric'?" in message
    assert f"{path}:{line_of('a << b')}: [[claim]] #2 direction: direction 'a << b' is not one of" in message
    assert "'a > b'" in message and 'write direction = "a > b" when the source reports A above B' in message
    header = [i for i, line in enumerate(lines, 1) if line == "[[claim]]"][2]
    assert f"{path}:{header}: [[claim]] #3: missing required field 'direction'; add direction = \"a > b\"" in message


def test_syntax_errors_and_unbound_claims_name_the_line(tmp_path, registry):
    broken = tmp_path / "broken.toml"
    broken.write_text('[study]\ntitle = "x"\nseeds = \n')
    with pytest.raises(sp.PlanError, match=r"not valid TOML: .*line 3"):
        sp.load_plan(broken)
    ambiguous = tmp_path / "ambiguous.toml"
    text = tiny_plan().replace('b = {grid = "one", selector = "random"}\ndirection = "a > b"',
                               'b = {grid = "one"}\ndirection = "a > b"')
    ambiguous.write_text(text)
    plan = sp.load_plan(ambiguous)
    line = next(i for i, l in enumerate(text.splitlines(), 1) if l == 'b = {grid = "one"}')
    with pytest.raises(sp.PlanError, match=rf"ambiguous.toml:{line}: \[\[claim\]\] #1 b: b = .* matches 2 cells .*add filters"):
        st.expand(plan, registry)
    grid_typo = tmp_path / "typo.toml"
    typo = tiny_plan().replace('selector = ["smallest", "random"]', 'selectr = ["smallest"]')
    grid_typo.write_text(typo)
    line = next(i for i, l in enumerate(typo.splitlines(), 1) if l.startswith("selectr"))
    with pytest.raises(sp.PlanError, match=rf"typo.toml:{line}: \[\[grid\]\] #1 selectr: unknown key 'selectr'; did you mean 'selector'"):
        sp.load_plan(grid_typo)


def test_the_builtin_study_is_registered_and_expands(registry):
    path, plugin = registry.studies["yang2024"]
    assert plugin.name == "plugins.studies.builtin" and path.name == "yang2024.toml"
    plan = sp.find_plan("yang2024", registry)
    assert {c.family for c in plan.claims if c.compare == "final"} == {"F1", "F2", "F3", "F4", "F5", "questions"}
    assert all(c.finding.startswith("Yang et al. 2024, ") for c in plan.claims if c.kind == "paper")
    quick = st.expand(plan, registry, quick=True)
    assert all(g.seeds == [0, 1, 2] for g in quick.grids if g.tuning != "tune") and len(quick.claims) == len(plan.claims)
    assert {g.seeds == [0, 1] for g in quick.grids if g.tuning == "tune"} == {True}  # quick tuning: 2 seeds
    full = st.expand(plan, registry)
    assert full.grid("schedules_default").seeds == list(range(1000, 1030))
    assert full.grid("three_iterations").seeds == list(range(1000, 1010))
    assert full.confirmatory and not quick.confirmatory
    assert not st.expand(plan, registry, seeds="0-9").confirmatory  # exploration seeds: exploratory
    assert plan.margins == {"final_win_rate": 0.02, "win_rate": 0.02} and plan.margin_reason
    assert {g.sweep_id for g in quick.grids}.isdisjoint({g.sweep_id for g in full.grids})
    f3 = [c for c in plan.claims if c.family == "F3"]
    assert len(f3) == 4 and all(c.direction == "a < b" for c in f3)
    moving = full.grid("three_iterations_previous")
    assert {cell.config.reference for cell in moving.cells} == {"previous"}


# -- running: tagged runs, reuse, report --------------------------------------------------------------------


def test_study_run_tags_runs_reuses_them_and_report_rebuilds(cli, db_path, tmp_path):
    plan = tmp_path / "tiny.toml"
    plan.write_text(tiny_plan())
    out = tmp_path / "report"
    first = cli("study", "run", plan, "--jobs", "2", "--report-dir", out, "--json")
    assert first.exit_code == 0, first.output
    summary = json.loads(first.stdout)
    assert summary["ran"] == 4 and summary["runs"] == {"finished": 4, "wanted": 4}
    conn = sqlite3.connect(db_path)
    rows = conn.execute("select study, study_grid, study_variant, sweep_id, status from runs").fetchall()
    assert len(rows) == 4 and {r[:3] for r in rows} == {("tiny", "one", "full")}
    assert all(r[3].startswith("s") and r[4] == "finished" for r in rows)
    report = (out / "report.md").read_text()
    for phrase in ("harness study run", "git commit", "## Verdict rule", "reproduced", "smallest-vs-random",
                   "95% CI", "detectable", "![forest](forest.png)"):
        assert phrase in report, phrase
    assert (out / "forest.png").stat().st_size > 1000
    assert {c["claim"] for c in summary["claims"]} == {"smallest-vs-random", "ranking-accuracy"}
    assert all(c["n"] == 2 for c in summary["claims"])
    assert "study tiny (full) · 4/4 runs finished" in " ".join(first.stderr.split())  # the verdict table

    again = cli("study", "run", plan, "--jobs", "2", "--report-dir", out, "--json")
    assert json.loads(again.stdout)["ran"] == 0

    (out / "report.md").unlink()
    rebuilt = cli("study", "report", plan, "--report-dir", out, "--json")
    assert rebuilt.exit_code == 0 and (out / "report.md").exists()
    assert json.loads(rebuilt.stdout)["runs"]["finished"] == 4
    assert conn.execute("select count(*) from runs").fetchone()[0] == 4

    more = cli("study", "run", plan, "--seeds", "0-2", "--jobs", "2", "--report-dir", out, "--json")
    assert json.loads(more.stdout)["ran"] == 2  # only the new seed's runs
    assert conn.execute("select count(*) from runs").fetchone()[0] == 6
    conn.close()


# -- third-party studies ------------------------------------------------------------------------------------


def test_a_third_party_study_shows_in_study_list(cli, tmp_path):
    (tmp_path / "theirs.toml").write_text(tiny_plan())
    plugin = tmp_path / "study_plugin.py"
    plugin.write_text(textwrap.dedent("""\
        from pathlib import Path
        from harness import hookimpl

        @hookimpl
        def register_studies(register):
            register(Path(__file__).parent / "theirs.toml")
        """))
    result = cli("study", "list", "--plugin", plugin, "--json")
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert rows["theirs"]["plugin"] == "study_plugin" and rows["theirs"]["claims"] == 2
    assert "yang2024" in rows
    plugins = {row["name"]: row for row in json.loads(cli("plugins", "--plugin", plugin, "--json").stdout)}
    assert plugins["study_plugin"]["registered"] == {"study": ["theirs"]}


def test_two_plugins_registering_one_study_name_is_an_error(tmp_path, registry):
    other = tmp_path / "yang2024.toml"
    other.write_text(tiny_plan())
    with pytest.raises(PluginError, match="'yang2024' is registered by two plugins: 'plugins.studies.builtin' and 'mine'"):
        registry.add_study(other, PluginInfo("mine", "1", "local"))
    with pytest.raises(PluginError, match="takes the path of a .toml plan file"):
        registry.add_study(tmp_path / "plan.txt", PluginInfo("mine", "1", "local"))


def test_the_huang2025_study_is_registered_and_its_claims_resolve(registry):
    path, plugin = registry.studies["huang2025"]
    assert plugin.name == "plugins.studies.builtin" and path.name == "huang2025.toml"
    plan = sp.find_plan("huang2025", registry)
    full = st.expand(plan, registry)
    assert all(g.seeds == list(range(1000, 1010)) for g in full.grids)
    assert {cell.config.keep for g in full.grids for cell in g.cells} == {0.4}  # the paper's kept share
    gold = full.grid("gold")
    assert {cell.config.instance_selector.settings["explicit_source"] for cell in gold.cells} == {"gold"}
    fidelities = {cell.config.proxy_judge.settings["fidelity"] for cell in full.grid("proxy").cells}
    assert fidelities == {0.9, 0.5}
    assert len(plan.claims) == 13
    offline = full.grid("offline")
    assert {(c.config.iterations, c.config.n_responses, c.config.keep) for c in offline.cells} == {(1, 5, 0.4)}
    assert {cell.config.instance_selector.name for cell in full.grid("proxy").cells} == {
        "map", "explicit_largest", "implicit_smallest"}
