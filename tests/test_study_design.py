"""A plan's design keys: families, margins, exploration and confirmation seeds, and the retired `blocks`.

Every bad value is a PlanError (exit 2 from the CLI) naming the file, the line and the fix.
"""

import textwrap

import pytest

from harness.experiments import study_plan as sp

PLAN = textwrap.dedent("""\
    [study]
    exploration_seeds = "0-9"
    confirmation_seeds = "1000-1003"
    STUDY_EXTRA

    [[grid]]
    name = "one"
    selector = ["smallest", "random", "largest"]
    iterations = 1
    budget = 80
    GRID_EXTRA

    [[claim]]
    id = "c1"
    metric = "final_win_rate"
    a = {grid = "one", selector = "smallest"}
    b = {grid = "one", selector = "random"}
    direction = "a > b"
    C1_EXTRA

    [[claim]]
    id = "c2"
    metric = "final_win_rate"
    a = {grid = "one", selector = "random"}
    b = {grid = "one", selector = "largest"}
    direction = "DIRECTION"
    C2_EXTRA
    """)


def plan_text(study="", grid="", c1="", c2="", direction="a > b"):
    return (PLAN.replace("STUDY_EXTRA", study).replace("GRID_EXTRA", grid).replace("C1_EXTRA", c1)
            .replace("C2_EXTRA", c2).replace("DIRECTION", direction))


def load(tmp_path, text):
    path = tmp_path / "plan.toml"
    path.write_text(text)
    return path, sp.load_plan(path)


def error(tmp_path, text):
    path = tmp_path / "plan.toml"
    path.write_text(text)
    with pytest.raises(sp.PlanError) as info:
        sp.load_plan(path)
    return path, str(info.value)


def line_of(text, needle):
    return next(i for i, row in enumerate(text.splitlines(), 1) if needle in row)


def test_a_plan_without_families_is_one_family_and_a_good_design_loads(tmp_path):
    _, plan = load(tmp_path, plan_text())
    assert {c.family for c in plan.claims} == {sp.ALL_CLAIMS} and plan.correction == "holm"
    assert plan.seeds == "1000-1003" and plan.exploration_seeds == "0-9" and plan.separates_seeds
    _, plan = load(tmp_path, plan_text(
        study='correction = "bh"\nmargins = {final_win_rate = 0.02}\nmargin_reason = "two points"\n'
              'families = {F1 = "one, because", F9 = "a lone claim, because"}',
        c1='family = "F1"', c2='family = "F9"', direction="none"))
    assert [c.family for c in plan.claims] == ["F1", "F9"] and plan.correction == "bh"
    assert plan.margins == {"final_win_rate": 0.02} and plan.families["F9"] == "a lone claim, because"


@pytest.mark.parametrize("kwargs, needle, problem", [
    ({"c1": 'family = "F1"'}, 'id = "c2"', "claim 'c2' has no family while others do"),
    ({"c1": 'family = "F1"', "c2": 'family = "F2"', "study": 'families = {F1 = "x"}'}, 'family = "F2"',
     "family 'F2' has one claim and no note"),
    ({"c1": 'family = ""'}, 'family = ""', "family '' is not a name"),
    ({"study": 'families = {F7 = "nobody"}'}, "families =", "family 'F7' has a note but no claim"),
    ({"study": 'correction = "bonferroni"'}, "correction =", "correction 'bonferroni' is not one of holm, bh"),
])
def test_a_bad_family_names_the_line(tmp_path, kwargs, needle, problem):
    text = plan_text(**kwargs)
    path, message = error(tmp_path, text)
    assert f"{path}:{line_of(text, needle)}:" in message and problem in message


@pytest.mark.parametrize("direction", ["none", "a <= b", "a >= b"])
def test_a_margin_claim_without_its_margin_names_the_line_and_the_fix(tmp_path, direction):
    text = plan_text(direction=direction)
    path, message = error(tmp_path, text)
    line = line_of(text, f'direction = "{direction}"')
    assert f"{path}:{line}:" in message
    assert "[study] margins has none for 'final_win_rate'" in message and "add margins = {final_win_rate = ...}" in message


def test_margins_need_a_reason_and_positive_values(tmp_path):
    text = plan_text(study="margins = {final_win_rate = 0.02}", direction="none")
    _, message = error(tmp_path, text)
    assert "margins need margin_reason" in message
    text = plan_text(study='margins = {final_win_rate = -1}\nmargin_reason = "x"', direction="none")
    _, message = error(tmp_path, text)
    assert "is not a table of positive numbers" in message


@pytest.mark.parametrize("study, grid, needle", [
    ('', 'confirmation_seeds = "8-12"', 'confirmation_seeds = "8-12"'),
    ('seeds = 3', '', "seeds = 3"),
])
def test_overlapping_seed_sets_name_the_line(tmp_path, study, grid, needle):
    text = plan_text(study=study, grid=grid)
    if study.startswith("seeds"):  # the study's own seeds: drop confirmation_seeds, keep the older key
        text = text.replace('confirmation_seeds = "1000-1003"\n', "")
    path, message = error(tmp_path, text)
    assert f"{path}:{line_of(text, needle)}:" in message and "overlap the exploration seeds" in message


def test_both_names_of_the_confirmation_seeds_is_an_error(tmp_path):
    _, message = error(tmp_path, plan_text(study="seeds = 4"))
    assert "seeds and confirmation_seeds name the same thing" in message


def test_blocks_is_a_deprecated_no_op_that_warns(tmp_path):
    _, plan = load(tmp_path, plan_text(c1="blocks = 10"))
    assert plan.warnings and "blocks = 10 is deprecated and ignored" in plan.warnings[0]
    _, plain = load(tmp_path, plan_text())
    assert plain.warnings == ()


def test_the_builtin_plans_separate_exploration_from_confirmation():
    from harness.plugins import load_registry

    registry = load_registry()
    for name in ("yang2024", "huang2025"):
        plan = sp.find_plan(name, registry)
        explored = set(sp.seed_list(plan.exploration_seeds))
        confirmed = set(sp.seed_list(plan.seeds)) | {s for g in plan.grids if g.seeds for s in sp.seed_list(g.seeds)}
        assert min(confirmed) >= 1000 and not explored & confirmed and plan.warnings == ()
        assert len({c.family for c in plan.claims}) > 1 and plan.margin_reason


@pytest.mark.parametrize("group, problem", [
    ('claims = ["c1"]', "is not a list of two or more claim ids"),
    ('claims = ["c1", "c9"]', "'c9' is not a claim of this plan"),
    ('claims = ["c1", "c2"]\ncolour = "red"', "unknown key 'colour'"),
])
def test_a_bad_heterogeneity_group_names_the_line(tmp_path, group, problem):
    text = plan_text() + "\n[[heterogeneity]]\n" + group + "\n"
    path, message = error(tmp_path, text)
    assert problem in message and f"{path}:" in message


def test_a_heterogeneity_group_needs_one_contrast(tmp_path):
    text = plan_text().replace('id = "c2"\nmetric = "final_win_rate"', 'id = "c2"\nmetric = "final_gold_reward"')
    text += '\n[[heterogeneity]]\nclaims = ["c1", "c2"]\n'
    _, message = error(tmp_path, text)
    assert "the claims measure different metrics or directions" in message
    _, plan = load(tmp_path, plan_text() + '\n[[heterogeneity]]\ntitle = "t"\nclaims = ["c1", "c2"]\n')
    assert plan.heterogeneity[0].claims == ("c1", "c2") and plan.heterogeneity[0].title == "t"


@pytest.mark.parametrize("kwargs, needle", [
    ({"c1": 'family = "F1"'}, 'id = "c2"'),  # a bad family
    ({"direction": "none"}, 'direction = "none"'),  # a missing margin
    ({"grid": 'confirmation_seeds = "5-8"'}, 'confirmation_seeds = "5-8"'),  # overlapping seed sets
])
def test_the_cli_exits_2_with_the_line_at_fault(cli, tmp_path, db_path, kwargs, needle):
    text = plan_text(**kwargs)
    path = tmp_path / "bad.toml"
    path.write_text(text)
    for command in (("study", "run", path, "--dry-run"), ("study", "report", path)):
        result = cli(*command)
        assert result.exit_code == 2, result.output
        assert f"bad.toml:{line_of(text, needle)}:" in " ".join(result.output.split())
