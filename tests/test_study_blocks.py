"""A claim's `blocks`: the paired verdict per consecutive block of seeds, and its plan validation."""

import random
import textwrap

import pytest

from harness.experiments import study_plan as sp
from harness.experiments import verdicts as vd


def blocked_table():
    """30 seeds: A − B is clearly positive on seeds 0-9, mixed on 10-19 and clearly negative on 20-29.
    Seed 3 is missing on B's side, and the keys are inserted in a shuffled order."""
    diffs = {}
    for seed in range(30):
        if seed < 10:
            diffs[seed] = 0.10 + 0.01 * (seed % 3)
        elif seed < 20:
            diffs[seed] = 0.05 if seed % 2 else -0.05
        else:
            diffs[seed] = -0.10 - 0.01 * (seed % 4)
    order = list(range(30))
    random.Random(7).shuffle(order)
    b = {(s, s): 0.5 for s in order if s != 3}
    a = {(s, s): 0.5 + diffs[s] for s in order}
    return a, b, diffs


def test_block_verdicts_on_a_hand_made_table():
    a, b, diffs = blocked_table()
    blocks = vd.paired_blocks(a, b, "a > b", list(range(30)), 10)
    assert [blk["seeds"] for blk in blocks] == [list(range(0, 10)), list(range(10, 20)), list(range(20, 30))]
    assert [blk["verdict"] for blk in blocks] == ["reproduced", "not separable", "reversed"]
    assert [blk["n"] for blk in blocks] == [9, 10, 10]  # seed 3 is unpaired: block 0 loses it, nothing shifts
    for blk, seeds in zip(blocks, ([s for s in range(10) if s != 3], range(10, 20), range(20, 30))):
        expected = vd.paired_verdict({(s, s): a[(s, s)] for s in seeds}, {(s, s): b[(s, s)] for s in seeds}, "a > b")
        assert blk["mean"] == pytest.approx(sum(diffs[s] for s in seeds) / len(seeds))
        assert (blk["ci_low"], blk["ci_high"]) == (pytest.approx(expected["ci_low"]), pytest.approx(expected["ci_high"]))
        assert blk["pairs"] == [[s, s] for s in seeds]
    pooled = vd.paired_verdict(a, b, "a > b")
    assert pooled["n"] == 29 and pooled["verdict"] == "not separable"


def test_blocks_follow_the_design_seed_list_and_keep_a_short_last_block():
    a, b, _ = blocked_table()
    blocks = vd.paired_blocks(a, b, "a < b", list(range(25)), 10)  # a 25-seed design
    assert [blk["seeds"][0] for blk in blocks] == [0, 10, 20] and [blk["n"] for blk in blocks] == [9, 10, 5]
    assert [blk["verdict"] for blk in blocks] == ["reversed", "not separable", "reproduced"]
    assert vd.seed_blocks([5, 1, 3, 9], 2) == [[1, 3], [5, 9]]  # sorted first, then cut
    one = vd.paired_blocks({(0, 0): 1.0}, {(0, 0): 0.0}, "a > b", [0], 10)
    assert one[0]["verdict"] == "too few pairs"


PLAN = textwrap.dedent("""\
    [study]
    seeds = 4

    [[grid]]
    name = "one"
    selector = ["smallest", "random"]
    iterations = 1
    budget = 80

    [[claim]]
    id = "c1"
    metric = "final_win_rate"
    a = {grid = "one", selector = "smallest"}
    b = {grid = "one", selector = "random"}
    direction = "a > b"
    blocks = BLOCKS
    """)


@pytest.mark.parametrize("value, problem", [
    ("1", "blocks = 1 leaves no spread to build an interval from; write a block size >= 2 seeds"),
    ("0", "blocks = 0 leaves no spread"),
    ('"10"', "blocks '10' is not a number of seeds; write e.g. blocks = 10"),
    ("2.5", "blocks 2.5 is not a number of seeds"),
    ("true", "blocks True is not a number of seeds"),
])
def test_a_bad_blocks_value_names_the_line_and_the_fix(tmp_path, value, problem):
    text = PLAN.replace("BLOCKS", value)
    path = tmp_path / "plan.toml"
    path.write_text(text)
    line = next(i for i, row in enumerate(text.splitlines(), 1) if row.startswith("blocks ="))
    with pytest.raises(sp.PlanError) as info:
        sp.load_plan(path)
    assert f"{path}:{line}: [[claim]] #1 blocks: {problem}" in str(info.value)


def test_a_good_blocks_value_and_a_misspelt_key(tmp_path):
    path = tmp_path / "plan.toml"
    path.write_text(PLAN.replace("BLOCKS", "2"))
    assert sp.load_plan(path).claims[0].blocks == 2
    path.write_text(PLAN.replace("blocks = BLOCKS", "block = 2"))
    with pytest.raises(sp.PlanError, match=r"plan.toml:16: \[\[claim\]\] #1 block: unknown key 'block'; did you mean 'blocks'"):
        sp.load_plan(path)


def test_the_f3_claims_of_yang2024_are_blocked_by_10(tmp_path):
    from harness.plugins import load_registry

    plan = sp.find_plan("yang2024", load_registry())
    blocked = {c.id: c.blocks for c in plan.claims if c.blocks}
    assert set(blocked) == {c.id for c in plan.claims if c.finding == "F3"} and set(blocked.values()) == {10}
