"""Regime maps: a plan's [regime_map] moves one knob at a time (and two along a slice) around the study's regime,
runs only the arms the mapped claims need, shares runs between cells whose configs coincide, and reports each
(cell, claim) as holds / null / reverses, adjusted over the claim's cells; bad maps exit 2 naming the line."""

import json
import textwrap

import pytest

from conftest import TINY_TESTBED
from harness.experiments import regime_map as rm
from harness.experiments import study as st
from harness.experiments import study_plan as sp
from harness.plugins import load_registry


@pytest.fixture(scope="module")
def registry():
    return load_registry()


MAP = """
    [regime_map]
    claims = ["smallest-vs-random"]
    seeds = 2
    slices = [["beta", "training"]]

    [regime_map.axes.beta]
    "0.1" = {options = ["trainer.beta=0.1"]}
    "1" = {options = ["trainer.beta=1"]}

    [regime_map.axes.training]
    "1 epoch" = {options = ["trainer.epochs=1"]}
    "2 epochs" = {options = ["trainer.epochs=2"]}

    [regime_map.axes.reference]
    fixed = {reference = "fixed"}
    previous = {reference = "previous"}
    """


def plan(regime_map: str = MAP) -> str:
    options = ", ".join(f'"{o}"' for o in TINY_TESTBED)
    return textwrap.dedent(f"""\
        [study]
        title = "mapped"
        seeds = 2
        margins = {{final_win_rate = 0.02}}
        margin_reason = "a test plan"

        [[grid]]
        name = "one"
        selector = ["smallest", "random", "largest"]
        iterations = 1
        budget = 80
        options = [{options}, "trainer.epochs=2"]

        [[claim]]
        id = "smallest-vs-random"
        metric = "final_win_rate"
        a = {{grid = "one", selector = "smallest"}}
        b = {{grid = "one", selector = "random"}}
        direction = "a > b"

        [[claim]]
        id = "same"
        metric = "final_win_rate"
        a = {{grid = "one", selector = "smallest"}}
        b = {{grid = "one", selector = "largest"}}
        direction = "none"
        """) + textwrap.dedent(regime_map)


def test_cells_are_each_value_once_then_the_slice_points_not_already_there(tmp_path):
    path = tmp_path / "mapped.toml"
    path.write_text(plan())
    cells = rm.map_cells(sp.load_plan(path).regime_map)
    labels = [c.label for c in cells]
    assert labels[:6] == ["beta = 0.1", "beta = 1", "training = 1 epoch", "training = 2 epochs", "reference = fixed",
                          "reference = previous"]
    assert labels[6:] == ["beta = 0.1 × training = 1 epoch", "beta = 0.1 × training = 2 epochs",
                          "beta = 1 × training = 1 epoch", "beta = 1 × training = 2 epochs"]
    both = next(c for c in cells if c.label == "beta = 0.1 × training = 1 epoch")
    assert both.args == {"options": ["trainer.beta=0.1", "trainer.epochs=1"]}


def test_only_the_claims_arms_run_and_coinciding_cells_share_their_runs(tmp_path, registry):
    path = tmp_path / "mapped.toml"
    path.write_text(plan())
    study = st.expand(sp.load_plan(path), registry)
    mapped = rm.expand_map(study, registry)
    assert len(mapped.studies) == len(mapped.cells) == 10
    for derived in mapped.studies:  # each derived grid keeps smallest and random, never largest
        assert [sorted(c.config.instance_selector.name for c in g.cells) for g in derived.grids] == [["random", "smallest"]]
        assert all(g.seeds == [0, 1] for g in derived.grids)
    # beta 1, 2 epochs, reference fixed and "beta 1 x 2 epochs" are all the grid as written: one grid, run once
    centre = {d.grids[0].sweep_id for c, d in zip(mapped.cells, mapped.studies)
              if c.label in ("beta = 1", "training = 2 epochs", "reference = fixed", "beta = 1 × training = 2 epochs")}
    assert len(centre) == 1
    # distinct: the centre, beta 0.1 (= beta 0.1 x 2 epochs), 1 epoch (= beta 1 x 1 epoch), previous, beta 0.1 x 1 epoch
    assert len(mapped.grids) == 5 and mapped.n_runs == 5 * 2 * 2
    beta = next(d for c, d in zip(mapped.cells, mapped.studies) if c.label == "beta = 0.1")
    assert {c.config.trainer.settings["beta"] for c in beta.grids[0].cells} == {0.1}
    assert {c.config.trainer.settings["epochs"] for c in beta.grids[0].cells} == {2}  # the grid's own recipe stays
    previous = next(d for c, d in zip(mapped.cells, mapped.studies) if c.label == "reference = previous")
    assert {c.config.reference for c in previous.grids[0].cells} == {"previous"}


BAD = [
    ('claims = ["nope"]', "claims", "'nope' is not a claim of this plan"),
    ('claims = ["same"]', "claims", "'same' is not a plain direction claim"),
    ('claims = ["smallest-vs-random"]\nslices = [["beta", "gamma"]]\n[regime_map.axes.beta]\n'
     '"0.1" = {options = ["trainer.beta=0.1"]}\n"1" = {options = ["trainer.beta=1"]}', "slices", "is not a list of pairs of this map's axes"),
    ('claims = ["smallest-vs-random"]\n[regime_map.axes.beta]\n"0.1" = {options = ["trainer.beta=0.1"]}', "axes",
     "axis 'beta' needs a table of two or more values"),
    ('claims = ["smallest-vs-random"]\n[regime_map.axes.beta]\n"0.1" = {beta = 0.1}\n"1" = {beta = 1}', "axes",
     "value '0.1' of axis 'beta' is not a table of sweep arguments"),
]


@pytest.mark.parametrize("body, key, problem", BAD)
def test_a_bad_map_exits_2_naming_its_line(cli, db_path, tmp_path, body, key, problem):
    path = tmp_path / "bad.toml"
    path.write_text(plan("\n[regime_map]\n" + body + "\n"))
    result = cli("study", "run", path, "--regime-map", "--dry-run")
    assert result.exit_code == 2, result.output
    message = " ".join(result.output.split())
    assert "bad.toml:" in message and "[regime_map]" in message and problem in message


def test_regime_map_needs_a_map_and_is_never_published(cli, db_path, tmp_path):
    path = tmp_path / "plain.toml"
    path.write_text(plan(""))
    result = cli("study", "run", path, "--regime-map", "--dry-run")
    assert result.exit_code == 2 and "has no [regime_map] table" in " ".join(result.output.split())
    mapped = tmp_path / "mapped.toml"
    mapped.write_text(plan())
    result = cli("study", "run", mapped, "--regime-map", "--publish", tmp_path / "r.md")
    assert result.exit_code == 2 and "never published" in " ".join(result.output.split())
    assert not (tmp_path / "r.md").exists()


def test_a_map_not_run_yet_reads_too_few_pairs_not_null(cli, db_path, tmp_path):
    path = tmp_path / "mapped.toml"
    path.write_text(plan())
    result = cli("study", "report", path, "--regime-map", "--report-dir", tmp_path / "r", "--json")
    assert result.exit_code == 0, result.output
    cells = json.loads(result.stdout)["cells"]
    assert len(cells) == 10 and {c["word"] for c in cells} == {"too few pairs"}  # 10 map cells x 1 claim
    report = (tmp_path / "r" / "regime-map.md").read_text()
    assert "0 hold, 0 null, 0 reverse, 10 have too few pairs." in report and "| too few pairs (n=0) |" in report


def test_a_tiny_map_runs_reports_and_reruns_nothing(cli, db_path, tmp_path):
    path = tmp_path / "mapped.toml"
    path.write_text(plan(MAP.replace('slices = [["beta", "training"]]', "").replace(
        '[regime_map.axes.reference]\n    fixed = {reference = "fixed"}\n    previous = {reference = "previous"}', "")))
    out = tmp_path / "report"
    result = cli("study", "run", path, "--regime-map", "--jobs", "1", "--report-dir", out, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["ran"] == 3 * 2 * 2  # beta 0.1, 1 epoch, and the grid as written (beta 1 = 2 epochs)
    cells = summary["cells"]
    assert [c["cell"] for c in cells] == ["beta = 0.1", "beta = 1", "training = 1 epoch", "training = 2 epochs"]
    assert all(c["word"] in ("holds", "null", "reverses") and c["family_size"] == 4 for c in cells)
    assert cells[1]["mean"] == cells[3]["mean"]  # the same runs
    report = (out / "regime-map.md").read_text()
    assert "# Regime map of study `mapped`: exploratory" in report and "> **Exploratory.**" in report
    assert "| map cell | smallest-vs-random |" in report and "| beta = 0.1 |" in report
    assert "`-o trainer.beta=0.1`" in report and (out / "regime_map.png").stat().st_size > 0
    again = cli("study", "run", path, "--regime-map", "--jobs", "1", "--report-dir", out, "--json")
    assert again.exit_code == 0 and json.loads(again.stdout)["ran"] == 0
    rebuilt = cli("study", "report", path, "--regime-map", "--report-dir", out, "--json")
    assert rebuilt.exit_code == 0 and [c["mean"] for c in json.loads(rebuilt.stdout)["cells"]] == [
        c["mean"] for c in cells]
