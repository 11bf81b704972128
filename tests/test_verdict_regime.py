"""Every verdict names its regime: the knobs read off each cell, the declared regime they stand in, a study run
with --regime, and the regime in the report, the published section and the results page's table."""

import textwrap

import pytest

from conftest import TINY_TESTBED
from harness.errors import UsageError
from harness.experiments import study as st
from harness.experiments import study_plan as sp
from harness.experiments import study_report as sr
from harness.experiments.sweep import GridSpec, expand_grid
from harness.experiments.verdict_regime import RegimeReader, knobs
from harness.plugins import load_registry


@pytest.fixture(scope="module")
def registry():
    return load_registry()


def cell(registry, **given):
    return expand_grid(registry, GridSpec.from_cli(registry, selector="smallest", iterations=1, budget=100, **given),
                       first_seed=0)[0]


# -- the knobs of one cell ----------------------------------------------------------------------------------------


def test_knobs_read_the_settings_a_verdict_depends_on():
    flat = {"testbed": "synthetic", "trainer": "native", "trainer.beta": 0.1, "trainer.lr": 0.001,
            "trainer.epochs": 1, "trainer.steps": 0, "trainer.batch_size": 64, "testbed.tau": 0.5,
            "testbed.reference_best_of": 4, "reference": "previous"}
    k = knobs(flat)
    assert k.values() == ("synthetic", "0.1", "1 epoch at lr 0.001, batch 64", "0.5", "previous",
                          "the testbed's gold against best-of-4 outputs")
    assert knobs({**flat, "trainer.steps": 20}).training == "20 steps at lr 0.001, batch 64"  # steps win over epochs
    assert knobs({"testbed": "hf", "evaluator": "pairrm"}).values() == ("hf", "–", "–", "–", "fixed", "pairrm")
    assert knobs({**flat, "trainer.beta": 1.0}).differences(k) == ["β 1"]


def test_the_synthetic_defaults_are_named_outcome_chosen_and_a_grids_own_options_are_shown(registry):
    reader = RegimeReader(registry)
    plain = reader.describe(cell(registry).config)
    assert plain.label == "outcome-chosen" and plain.differs == ()
    assert plain.full == ("synthetic · outcome-chosen · β 1 · training 8 epochs at lr 0.003, batch 64 · τ 0.3 · "
                          "reference fixed · evaluator the testbed's gold against best-of-4 outputs")
    weaker = reader.describe(cell(registry, options=["trainer.epochs=1", "trainer.lr=0.001"]).config)
    assert weaker.label == "outcome-chosen; training 1 epoch at lr 0.001, batch 64"
    moving = reader.describe(cell(registry, reference="previous").config)
    assert moving.label == "outcome-chosen; reference previous"
    staircase = reader.describe(cell(registry, options=["testbed.world=staircase"]).config)
    assert staircase.label == "outcome-chosen; testbed synthetic (world staircase)"  # the default world is unnamed


def test_a_named_regime_is_named_and_its_own_values_are_the_baseline(registry):
    reader = RegimeReader(registry)
    calibrated = reader.describe(cell(registry, regime="calibrated-unscaled").config)
    assert calibrated.label == "calibrated-unscaled"
    assert (calibrated.knobs.beta, calibrated.knobs.tau) == ("0.352", "0.5")
    stepped = reader.describe(cell(registry, regime="calibrated-unscaled", options=["trainer.steps=128"]).config)
    assert stepped.label == "calibrated-unscaled; training 128 steps at lr 0.003, batch 64"


def test_defaults_no_declared_regime_matches_are_called_testbed_defaults(registry, monkeypatch):
    testbed = registry.get("testbed", "synthetic").cls
    monkeypatch.setattr(testbed, "regimes", classmethod(lambda cls: {}))
    assert RegimeReader(registry).describe(cell(registry).config).label == "testbed defaults"


# -- a study run in a regime ----------------------------------------------------------------------------------------


def plan_text(iterations: int = 1, steps_claim: bool = False) -> str:
    options = ", ".join(f'"{o}"' for o in TINY_TESTBED)
    text = textwrap.dedent(f"""\
        [study]
        title = "regimes"
        seeds = 2
        families = {{F1 = "the one contrast, in two recipes"{', steps = "the default recipe at matched steps"' if steps_claim else ''}}}

        [[grid]]
        name = "one"
        selector = ["smallest", "random"]
        iterations = {iterations}
        budget = 80
        options = [{options}]

        [[grid]]
        name = "weak"
        selector = ["smallest", "random"]
        iterations = {iterations}
        budget = 80
        options = [{options}, "trainer.epochs=1", "trainer.lr=0.001"]

        [[claim]]
        id = "default-recipe"
        family = "F1"
        metric = "final_win_rate"
        a = {{grid = "one", selector = "smallest"}}
        b = {{grid = "one", selector = "random"}}
        direction = "a > b"

        [[claim]]
        id = "weak-recipe"
        family = "F1"
        metric = "final_win_rate"
        a = {{grid = "weak", selector = "smallest"}}
        b = {{grid = "weak", selector = "random"}}
        direction = "a > b"
        """)
    if steps_claim:
        text += textwrap.dedent("""
            [[claim]]
            id = "default-recipe-steps"
            of = "default-recipe"
            compare = "matched_steps"
            steps = 3
            family = "steps"
            """)
    return text


def test_expand_with_a_regime_runs_every_grid_in_it_and_a_grid_option_still_wins(tmp_path, registry):
    path = tmp_path / "regimes.toml"
    path.write_text(plan_text(steps_claim=True))
    study = st.expand(sp.load_plan(path), registry, regime="calibrated-unscaled")
    assert study.label == "regimes@calibrated-unscaled"
    assert [g.plan.name for g in study.grids] == ["one", "weak", "one@steps3"]
    for grid in study.grids:
        for c in grid.cells:
            assert c.config.regime == "calibrated-unscaled" and c.config.trainer.settings["beta"] == 0.352
    assert {c.config.trainer.settings["epochs"] for c in study.grid("weak").cells} == {1}  # the grid's own -o
    plain = st.expand(sp.load_plan(path), registry)
    assert plain.label == "regimes" and plain.grid("one").sweep_id != study.grid("one").sweep_id
    labels = {b.plan.id: st.ExpandedStudy.regime_of(study, b.a).label for b in study.claims}
    assert labels == {"default-recipe": "calibrated-unscaled",
                      "weak-recipe": "calibrated-unscaled; training 1 epoch at lr 0.001, batch 64",
                      "default-recipe-steps": "calibrated-unscaled; training 3 steps at lr 0.003, batch 64"}


def test_an_unknown_regime_exits_2_listing_the_testbeds_regimes(cli, db_path, tmp_path, registry):
    path = tmp_path / "regimes.toml"
    path.write_text(plan_text())
    with pytest.raises(UsageError, match="testbed 'synthetic' has no regime 'calibrated'"):
        st.expand(sp.load_plan(path), registry, regime="calibrated")
    result = cli("study", "run", path, "--regime", "calibrated-unscald", "--dry-run")
    assert result.exit_code == 2, result.output
    message = " ".join(result.output.split())
    assert "did you mean 'calibrated-unscaled'?" in message and "outcome-chosen" in message
    assert not (tmp_path / "study-reports").exists()


def test_a_study_in_a_regime_names_it_in_the_report_the_published_section_and_the_results_table(
        cli, db_path, tmp_path):
    path = tmp_path / "regimes.toml"
    path.write_text(plan_text())
    published = tmp_path / "docs" / "reproduction.md"
    result = cli("study", "run", path, "--jobs", "1", "--regime", "calibrated-unscaled", "--publish", published)
    assert result.exit_code == 0, result.output
    report = (tmp_path / "docs" / "studies" / "regimes@calibrated-unscaled" / "report.md").read_text()
    assert "This study ran with `--regime calibrated-unscaled`" in report
    assert ("| calibrated-unscaled | synthetic | 0.352 | 8 epochs at lr 0.003, batch 64 | 0.5 | fixed | "
            "the testbed's gold against best-of-4 outputs | default-recipe |") in report
    assert "| calibrated-unscaled; training 1 epoch at lr 0.001, batch 64 | synthetic | 0.352 |" in report
    assert "`harness study run " in report and "--regime calibrated-unscaled" in report  # the command to rerun it

    # the same plan without --regime lands in its own section of the same file; both keep their regimes
    again = cli("study", "run", path, "--jobs", "1", "--publish", published)
    assert again.exit_code == 0, again.output
    text = published.read_text()
    assert "<!-- study:regimes@calibrated-unscaled start -->" in text and "<!-- study:regimes start -->" in text
    assert ("- **calibrated-unscaled**: synthetic · calibrated-unscaled · β 0.352 · training 8 epochs at lr 0.003, "
            "batch 64 · τ 0.5 · reference fixed · evaluator the testbed's gold against best-of-4 outputs") in text
    verdicts = sr.published_verdicts(text)
    assert {r["claim"]: r["regime"] for r in verdicts["regimes@calibrated-unscaled"]} == {
        "default-recipe": "calibrated-unscaled",
        "weak-recipe": "calibrated-unscaled; training 1 epoch at lr 0.001, batch 64"}
    assert {r["claim"]: r["regime"] for r in verdicts["regimes"]} == {
        "default-recipe": "outcome-chosen", "weak-recipe": "outcome-chosen; training 1 epoch at lr 0.001, batch 64"}
    table = sr.readme_table(text)
    assert "| study | claim | regime | measured Δ (A − B) |" in table
    assert "| regimes@calibrated-unscaled | weak-recipe | calibrated-unscaled; training 1 epoch at lr 0.001, batch 64 |" \
        in table


def test_a_section_published_before_regimes_were_named_reads_as_not_named():
    text = textwrap.dedent("""\
        <!-- study:old start -->
        | claim | measured Δ ± sd | 95% CI | verdict |
        | --- | --- | --- | --- |
        | c1 | +0.1 ± 0.2 | [0, 0.2] | **reproduced** |
        <!-- study:old end -->
        <!-- study:new start -->
        | claim | regime | measured Δ ± sd | 95% CI | verdict |
        | --- | --- | --- | --- | --- |
        | c2 | outcome-chosen | +0.1 ± 0.2 | [0, 0.2] | **reproduced** |
        <!-- study:new end -->
        """)
    table = sr.readme_table(text)
    assert "| old | c1 | not named |" in table and "| new | c2 | outcome-chosen |" in table
