"""The exact-gold capability (``needs_exact_gold``) and the ``gold_gradient`` reference point.

* the capability: a declaring selector receives the world's exact gold; no other selector (nor the allocator's
  history) ever does; asking without declaring, or handing it to an undeclared selector, raises;
* uncharged: reading the gold changes no charge of the ledger, and the kept pairs cost one label each;
* the criterion: the hand-built ranking, and the central difference against exact per-sample gradients;
* "not a deployable strategy" in ``harness list selectors``, the run's plan line, ``harness leaderboard`` and
  ``compare``; recorded with the run (``deployable: false``), outside the strategy hash;
* a testbed without exact gold refuses it at validation (exit 2), and a tiny end-to-end run.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3

import numpy as np
import pytest

from conftest import TINY_RUN, TINY_TESTBED
from harness import iteration as steps
from harness.budget import Ledger
from harness.config import plan_run
from harness.errors import SelectionError, UsageError
from harness.interfaces import ExactGold, Pairs, SelectionBatch, batch_for, check_gold_hand_over
from harness.loop import run_experiment
from harness.plugins import PluginInfo, load_registry
from harness.reference_point import MARK, NOTE, is_deployable
from harness.run_request import RunRequest
from harness.testing import ToyPolicy, make_pool
from plugins.allocators.schedules import Constant
from plugins.selectors import gold_gradient as gg
from plugins.selectors.gold_gradient import GoldGradient
from plugins.selectors.margin import SmallestMargin

TEST_PLUGIN = PluginInfo("tests.test_gold_reference", "0", "local")
SEEN: list[tuple[str, str, ExactGold | None]] = []  # (selector, level, the exact gold its batch carried)
HISTORIES: list[tuple] = []  # every history an allocator was handed


class RecordsBatches:
    """Mixin: record what each level's batch carried, then select as the selector it is mixed into."""

    def select_instances(self, batch, rng):
        SEEN.append((self.name, "instance", batch.exact_gold))
        return super().select_instances(batch, rng)

    def select_corpus(self, batch, pairs, n_keep, rng):
        SEEN.append((self.name, "corpus", batch.exact_gold))
        return super().select_corpus(batch, pairs, n_keep, rng)


class SpySmallest(RecordsBatches, SmallestMargin):
    """``smallest``, recording what each level's batch carried."""

    name = "spy_smallest"
    description = "smallest, recording its batches (test)"


class SpyGold(RecordsBatches, GoldGradient):
    """``gold_gradient``, recording what each level's batch carried."""

    name = "spy_gold"
    description = "gold_gradient, recording its batches (test)"


class Peeker(SmallestMargin):
    """Asks for the exact gold without declaring ``needs_exact_gold``."""

    name = "peeker"
    description = "reads batch.gold() without declaring it (test)"

    def select_instances(self, batch, rng):
        batch.gold()
        return super().select_instances(batch, rng)


class RecordingConstant(Constant):
    name = "recording_constant"
    description = "constant, recording the history it is handed (test)"

    def allocate(self, *, total_labels, iterations, history):
        HISTORIES.append(tuple(history))
        return super().allocate(total_labels=total_labels, iterations=iterations, history=history)


def registry():
    found = load_registry()
    for cls in (SpySmallest, SpyGold, Peeker):
        found.add("selector", cls, TEST_PLUGIN)
    found.add("allocator", RecordingConstant, TEST_PLUGIN)
    return found


def tiny(selector=None, **given):
    """A validated tiny synthetic run (2 iterations, 80 labels), built once."""
    options = ("trainer.epochs=2", *TINY_TESTBED)
    request = RunRequest.from_values(iterations=2, budget=80, options=options,
                                     **({"selector": selector} if selector else {}), **given)
    return plan_run(registry(), request)


@pytest.fixture(autouse=True)
def _clean():
    SEEN.clear()
    HISTORIES.clear()
    gg._LAST = None
    yield


# ------------------------------------------------------------------ the capability


def test_a_declaring_selector_receives_the_worlds_exact_gold_and_the_other_level_none():
    plan = tiny(instance_selector="spy_gold", corpus_selector="spy_smallest")
    assert plan.config.deployable is False  # one level reads gold: the run is a reference point
    run_experiment(plan.config, plan.components)
    instance = [gold for name, level, gold in SEEN if level == "instance"]
    corpus = [gold for name, level, gold in SEEN if level == "corpus"]
    assert len(instance) == len(corpus) == 2  # two iterations
    assert all(gold is None for gold in corpus), "the undeclared corpus selector saw exact gold"
    for gold in instance:
        assert isinstance(gold, ExactGold) and gold.rewards.dtype == np.float64
        m = gold.rewards.shape[0]
        assert gold.prompts.shape[0] == m and gold.rewards.shape[1] == 8
        assert gold.policy is not None and hasattr(gold.policy, "sequence_logprobs")


def test_the_gold_is_the_worlds_exact_gold_of_the_pool():
    plan = tiny(instance_selector="spy_gold", corpus_selector="spy_gold")
    captured = {}
    original = steps._exact_gold

    def spy(components, world, prompts, responses, policy, iteration):
        gold = original(components, world, prompts, responses, policy, iteration)
        captured[iteration] = (gold, world.gold_rewards(prompts, responses), policy)
        return gold

    steps._exact_gold = spy
    try:
        run_experiment(plan.config, plan.components)
    finally:
        steps._exact_gold = original
    assert sorted(captured) == [1, 2]
    for gold, exact, policy in captured.values():
        assert np.array_equal(gold.rewards, exact) and gold.policy is policy
    assert {id(gold) for name, level, gold in SEEN} == {id(g) for g, _, _ in captured.values()}


def test_no_builtin_selector_nor_the_allocator_ever_sees_exact_gold():
    found = load_registry()
    pool = make_pool(0, n_prompts=8, n_responses=4, requires=("implicit_reward",), exact_gold=True)
    undeclared = [name for name in found.names("selector") if is_deployable(found.create("selector", name))]
    assert "smallest" in undeclared and "gold_gradient" not in undeclared and len(undeclared) >= 15
    for name in undeclared:
        selector = found.create("selector", name)
        assert batch_for(selector, pool.batch).exact_gold is None, name
        with pytest.raises(SelectionError, match="does not declare"):
            check_gold_hand_over(selector, pool.batch, "selector")
    # in the loop: smallest's run and gold_gradient's run hand the allocator histories with the same keys
    for selector in ("spy_smallest", "spy_gold"):
        plan = tiny(selector=selector, allocator="recording_constant")
        run_experiment(plan.config, plan.components)
    smallest, gold = HISTORIES[: len(HISTORIES) // 2], HISTORIES[len(HISTORIES) // 2:]
    assert len(smallest) == len(gold) >= 2

    def keys(histories):
        return [[(type(r).__name__, sorted(r.metrics), r.labels) for r in history] for history in histories]

    assert keys(gold) == keys(smallest)  # nothing about the exact gold was added to what an allocator reads
    assert all(not isinstance(value, (np.ndarray, ExactGold))
               for history in gold for record in history for value in record.metrics.values())
    assert [gold for name, level, gold in SEEN if name == "spy_smallest"] == [None] * 4


def test_a_selector_that_asks_for_gold_without_declaring_it_raises():
    plan = tiny(selector="peeker")
    assert plan.config.deployable is True
    with pytest.raises(SelectionError, match="needs_exact_gold"):
        run_experiment(plan.config, plan.components)


def test_the_loop_refuses_to_hand_gold_to_an_undeclared_selector():
    plan = tiny(selector="spy_smallest")
    pool = make_pool(1, n_prompts=6, n_responses=4, requires=("implicit_reward",), exact_gold=True)
    with pytest.raises(SelectionError, match="spy_smallest.*does not declare `needs_exact_gold"):
        steps._select_pairs(plan.components, pool.batch, 3, 0, 1)
    assert SEEN == [], "the selector was called with the gold before the refusal"
    # the corpus level is checked as well, and a declaring selector is handed it
    plan = tiny(instance_selector="spy_gold", corpus_selector="spy_smallest")
    with pytest.raises(SelectionError, match="corpus selector 'spy_smallest'"):
        steps._select_pairs(plan.components, pool.batch, 3, 0, 1)


def test_a_selector_declaring_it_refuses_a_batch_without_gold():
    pool = make_pool(2, n_prompts=6, n_responses=4, requires=("implicit_reward",), needs_tokens=True)
    with pytest.raises(SelectionError, match="carries no exact gold"):
        GoldGradient().select_instances(pool.batch, np.random.default_rng(0))


# ------------------------------------------------------------------ uncharged


def test_reading_the_gold_charges_nothing_and_kept_pairs_cost_one_label_each(monkeypatch):
    charges: list[tuple[str, int, int]] = []
    original = Ledger.charge

    def charge(self, iteration, n):
        charges.append((current[0], int(iteration), int(n)))
        return original(self, iteration, n)

    monkeypatch.setattr(Ledger, "charge", charge)
    current = [""]
    results = {}
    for selector in ("smallest", "gold_gradient"):
        current[0] = selector
        plan = tiny(selector=selector)
        results[selector] = run_experiment(plan.config, plan.components)
    by = {name: [(i, n) for who, i, n in charges if who == name] for name in results}
    assert by["gold_gradient"] == by["smallest"] and sum(n for _, n in by["smallest"]) == 80
    for name, result in results.items():
        rows = result.iterations[1:]
        assert [row["labels"] for row in rows] == [n for _, n in by[name]]
        assert all(row["labels"] == row["sel_pairs"] + row["ties"] for row in rows), name  # 1 label per kept pair
        assert all(row["proxy_calls"] == 0 and row["labels_pool"] == 0 for row in rows), name


# ------------------------------------------------------------------ the criterion


def test_a_larger_gold_gap_with_a_larger_dpo_weight_ranks_first(monkeypatch):
    # Two prompts, four responses. With s(y) proportional to the centred gold (orthogonal per-sample
    # gradients of equal norm), the score is beta * sigmoid(-beta * Delta) * k * (gold_w - gold_l).
    gold = np.array([[2.0, -2.0, 0.5, -0.5], [1.0, 0.0, 0.2, 0.1]])
    implicit = np.array([[-1.0, 1.0, 0.0, 0.0],  # (0, 1): gap 4, the policy prefers the loser: weight ~0.88
                         [3.0, 0.0, 0.0, 0.0]])  # (0, 1): gap 1 and already learnt: weight ~0.05
    alignment = gold - gold.mean(axis=1, keepdims=True)
    monkeypatch.setattr(gg, "response_alignment", lambda exact, tokens, lengths: alignment)
    batch = SelectionBatch(lengths=np.full((2, 4), 3), distinct=np.ones((2, 4), bool),
                           scores={"implicit_reward": implicit}, beta=1.0, tokens=np.zeros((2, 4, 3), np.int64),
                           exact_gold=ExactGold(rewards=gold, prompts=np.zeros((2, 2), np.int64), policy=None))
    selector = GoldGradient()
    pairs = Pairs(np.array([1, 0, 0]), np.array([0, 2, 1]), np.array([1, 3, 0]))
    scores = selector.pair_scores(batch, pairs)
    weight = 1 / (1 + np.exp(np.array([3.0, 0.0, -2.0])))  # sigmoid(-beta * Delta), Delta of the gold winner
    assert np.allclose(scores, weight * np.array([1.0, 1.0, 4.0]))
    # the pair with the larger gold gap and DPO weight ranks first; (1, 0) is the same pair as (0, 1)
    kept = selector.select_corpus(batch, pairs, 1, np.random.default_rng(0))
    assert (kept.prompt.tolist(), kept.a.tolist(), kept.b.tolist()) == ([0], [1], [0])
    # per prompt: prompt 0's (0, 1) (gap 4, weight 0.88); in prompt 1 the largest gap (0, 1) is already learnt
    # (weight 0.05: score 0.05), so (1, 2) wins, gap 0.2 at weight 0.5 (score 0.1): the weight trades off the gap
    chosen = selector.select_instances(batch, np.random.default_rng(0))
    assert chosen.prompt.tolist() == [0, 1] and (chosen.a.tolist(), chosen.b.tolist()) == ([0, 1], [1, 2])
    # a gold order the other way round makes the same pair's score negative: it would teach the wrong way
    flipped = dataclasses.replace(batch, exact_gold=ExactGold(rewards=-gold, prompts=batch.exact_gold.prompts,
                                                              policy=None))
    assert selector.pair_scores(flipped, pairs.take(np.array([2])))[0] < 0


def test_the_alignment_is_the_inner_product_with_the_cross_fitted_gold_gradient():
    import torch

    m, n, length = 6, 4, 5
    rng = np.random.default_rng(3)
    policy = ToyPolicy(vocab_size=12, seed=3)
    prompts = rng.integers(0, 12, size=(m, 3))
    tokens = rng.integers(1, 12, size=(m, n, length))
    lengths = rng.integers(2, length + 1, size=(m, n))
    gold = rng.standard_normal((m, n))
    before = [p.detach().clone() for p in policy.parameters()]
    got = gg.response_alignment(ExactGold(rewards=gold, prompts=prompts, policy=policy), tokens, lengths)
    assert all(torch.equal(a, b) for a, b in zip(before, policy.parameters()))  # pi itself never moved
    assert all(p.grad is None for p in policy.parameters())

    def grad(i, j):  # the per-sample gradient of log pi(y_ij | x_i), exactly
        logp = policy.sequence_logprobs(prompts[i:i + 1], tokens[i, j:j + 1], lengths[i, j:j + 1])[0]
        return torch.cat([g.reshape(-1) for g in torch.autograd.grad(logp, policy.parameters())]).double()

    grads = {(i, j): grad(i, j) for i in range(m) for j in range(n)}
    centred = gold - gold.mean(axis=1, keepdims=True)
    halves = [[i for i in range(m) if i % 2 == h] for h in (0, 1)]
    gradient = [sum(centred[i, j] * grads[i, j] for i in half for j in range(n)) / (len(half) * n) for half in halves]
    expected = np.array([[float(grads[i, j] @ gradient[1 - i % 2]) for j in range(n)] for i in range(m)])
    assert np.abs(expected).mean() > 1e-3
    # a central difference of float32 forwards: within 1% of the scores' mean magnitude (measured 0.2%)
    assert np.allclose(got, expected, rtol=0, atol=1e-2 * np.abs(expected).mean()), np.abs(got - expected).max()
    # no gold difference within any prompt: no gradient of expected gold, every score 0
    flat = np.repeat(gold[:, :1], n, axis=1)
    assert not gg.response_alignment(ExactGold(rewards=flat, prompts=prompts, policy=policy), tokens, lengths).any()


# ------------------------------------------------------------------ validation and recording


def test_a_testbed_without_exact_gold_refuses_it_at_validation(cli, db_path):
    result = cli("run", "--selector", "gold_gradient", "--testbed", "hf", "--dry-run")
    assert result.exit_code == 2
    assert "reads the world's exact gold reward" in result.output and "testbed 'hf'" in result.output
    result = cli("run", "--instance-selector", "smallest", "--corpus-selector", "gold_gradient", "--testbed", "hf",
                 "--dry-run")
    assert result.exit_code == 2 and "'gold_gradient'" in result.output
    assert not db_path.exists()
    # a testbed that declares exact gold but builds a world without it stops at the selection step
    plan = tiny(selector="gold_gradient")
    with pytest.raises(UsageError, match="worlds have none"):
        steps._exact_gold(plan.components, object(), np.zeros((1, 2)), None, None, 1)


def test_deployable_false_is_recorded_outside_the_strategy_hash():
    gold, smallest = tiny(selector="gold_gradient").config, tiny(selector="smallest").config
    assert gold.to_dict()["deployable"] is False and "deployable" not in smallest.to_dict()
    assert dataclasses.replace(gold, deployable=True).strategy_hash() == gold.strategy_hash()
    assert type(gold).from_dict(json.loads(gold.to_json())) == gold


# ------------------------------------------------------------------ "not a deployable strategy" wherever listed


def test_harness_list_selectors_marks_it(cli):
    result = cli("list", "selectors")
    assert result.exit_code == 0
    rows = {line.split()[0]: line for line in result.output.splitlines() if line.split()}
    assert f"{MARK} NOT a deployable strategy" in rows["gold_gradient"] and MARK not in rows["smallest"]
    assert f"{MARK} not a deployable strategy" in " ".join(result.output.split())  # the footnote explains it
    entries = {e["name"]: e for e in json.loads(cli("list", "selectors", "--json").stdout)}
    assert entries["gold_gradient"]["deployable"] is False
    assert [name for name, e in entries.items() if not e["deployable"]] == ["gold_gradient"]
    one = " ".join(cli("list", "selectors", "gold_gradient").output.split())
    assert f"gold_gradient{MARK}" in one and NOTE.split(":")[0] in one


def test_a_tiny_run_and_the_leaderboard_mark_it(cli, db_path):
    result = cli("run", "--selector", "gold_gradient", *TINY_RUN)
    assert result.exit_code == 0, result.output
    assert f"gold_gradient{MARK}" in result.output and "recorded as run" in result.output
    assert cli("run", "--selector", "smallest", *TINY_RUN).exit_code == 0
    with sqlite3.connect(db_path) as conn:
        rows = {name: (json.loads(config), labels) for name, config, labels in conn.execute(
            "select instance_selector, config_json, labels_used from runs where status = 'finished'")}
        counted = dict(conn.execute("select r.instance_selector, count(*) from labels l join runs r "
                                    "on l.run_id = r.id group by r.instance_selector"))
    assert rows["gold_gradient"][0]["deployable"] is False and "deployable" not in rows["smallest"][0]
    assert rows["gold_gradient"][1] == rows["smallest"][1] == 80 == counted["gold_gradient"] == counted["smallest"]
    for args in ((), ("--by", "run"), ("compare", "--baseline", "smallest")):
        shown = cli("leaderboard", *args)
        assert shown.exit_code == 0, shown.output
        text = " ".join(shown.output.split())
        assert f"gold_gradient{MARK}" in text and f"smallest{MARK}" not in text, args
        assert "not a deployable strategy" in text, args
    compared = json.loads(cli("leaderboard", "compare", "--baseline", "smallest", "--json").stdout)
    marks = {row["instance_selector"]: row["deployable"] for row in compared["rows"]}
    assert marks == {"smallest": True, "gold_gradient": False}
    assert any(row["n"] == 1 for row in compared["rows"] if row["instance_selector"] == "gold_gradient")
    groups = json.loads(cli("leaderboard", "--json").stdout)
    assert {g["instance_selector"]: g["deployable"] for g in groups} == {"smallest": True, "gold_gradient": False}


def test_compare_gives_each_gain_as_a_share_of_the_reference_points(cli, db_path):
    for seed in ("1", "2"):
        for selector in ("random", "smallest", "gold_gradient"):
            assert cli("run", "--selector", selector, "--seed", seed, *TINY_RUN).exit_code == 0
    result = json.loads(cli("leaderboard", "compare", "--baseline", "random", "--metric", "final_gold_reward",
                            "--json").stdout)
    rows = {r["instance_selector"]: r for r in result["rows"]}
    reference, smallest = rows["gold_gradient"], rows["smallest"]
    assert rows["random"]["is_baseline"] and rows["random"]["reference_share"] is None
    assert reference["mean"] > 0  # on these seeds the reference gains on random (+0.038)
    assert reference["reference_share"] == pytest.approx(1.0)
    assert smallest["reference_share"] == pytest.approx(smallest["mean"] / reference["mean"])  # never capped
    assert any("not an error" in note for note in result["notes"])
    table = " ".join(cli("leaderboard", "compare", "--baseline", "random", "--metric",
                         "final_gold_reward").output.split())
    assert "share of †" in table and f"{smallest['reference_share']:.2f}" in table
    # the browser's views (harness leaderboard serve / publish) carry the mark and the share
    from leaderboard import sql_functions, views

    with sqlite3.connect(db_path) as conn:
        sql_functions.register(conn)
        conn.row_factory = sqlite3.Row
        shown = {r["instance_selector"]: dict(r) for r in conn.execute(
            views.COMPARE.sql, {"baseline": "random", "metric": "final_gold_reward", "confidence": 0.95})}
        ranked = {r["instance_selector"]: r["deployable"] for r in conn.execute(views.STRATEGIES.sql)}
    assert shown["gold_gradient"]["deployable"] == 0 and shown["smallest"]["deployable"] == 1
    assert shown["smallest"]["share_of_reference"] == pytest.approx(smallest["reference_share"])
    assert ranked == {"random": 1, "smallest": 1, "gold_gradient": 0}


def test_no_share_when_the_reference_did_not_gain_on_the_baseline():
    from leaderboard.compare import _reference_shares

    def row(selector, mean, *, baseline=False, deployable=True):
        return {"instance_selector": selector, "corpus_selector": selector, "is_baseline": baseline,
                "deployable": deployable, "mean": mean, "excludes_zero": False, "baseline_config_hash": "b"}

    rows = [row("random", None, baseline=True), row("gold_gradient", -0.01, deployable=False), row("smallest", 0.02)]
    notes = _reference_shares(rows)
    assert [r["reference_share"] for r in rows] == [None, None, None]
    assert any("did not gain on the baseline" in note for note in notes)
    rows[1]["mean"] = 0.04
    _reference_shares(rows)
    assert [r["reference_share"] for r in rows] == [None, 1.0, 0.5]


def test_sweep_cells_and_study_reports_mark_the_reference_point(cli, db_path, tmp_path):
    planned = cli("sweep", "--selector", "random,gold_gradient", "--seeds", "0", "--dry-run", *TINY_RUN)
    assert planned.exit_code == 0, planned.output
    text = " ".join(planned.output.split())
    assert f"selector=gold_gradient{MARK}" in text and f"selector=random{MARK}" not in text
    assert "not a deployable strategy" in text
    alone = cli("sweep", "--selector", "gold_gradient", "--allocator", "constant,increase", "--seeds", "0",
                "--dry-run", *TINY_RUN)  # every cell runs the reference point: the keys still name and mark it
    assert alone.exit_code == 0, alone.output
    assert " ".join(alone.output.split()).count(f"selector=gold_gradient{MARK} allocator=") == 4  # cells, plan lines
    options = ", ".join(f'"{o}"' for o in TINY_TESTBED)
    plan = tmp_path / "ref.toml"
    plan.write_text(f"""\
[study]
title = "a reference point in a study"
seeds = 2

[[grid]]
name = "one"
selector = ["random", "gold_gradient"]
iterations = 1
budget = 80
options = [{options}]

[[claim]]
id = "reference-vs-random"
kind = "unequal"
metric = "final_gold_reward"
a = {{grid = "one", selector = "gold_gradient"}}
b = {{grid = "one", selector = "random"}}
direction = "a > b"
""")
    out = tmp_path / "report"
    ran = cli("study", "run", plan, "--jobs", "2", "--report-dir", out)
    assert ran.exit_code == 0, ran.output
    report = (out / "report.md").read_text()
    assert f"selector=gold_gradient{MARK}" in report and f"selector=random{MARK}" not in report
    assert NOTE in report and "share of †" in report
