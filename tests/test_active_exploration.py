"""AE-DPO and US-DPO (Mehta et al., arXiv:2312.00267): the rules, the contract, the label cost, real runs."""

from __future__ import annotations

import json
import sqlite3
from itertools import combinations

import numpy as np
import pytest

from conftest import TINY_RUN
from harness.errors import UsageError
from harness.interfaces import EXPLICIT_REWARD, Pairs, SelectionBatch
from harness.testing import SelectorContract, make_pool
from plugins._columns import STOCHASTIC_LOGPROB_SD, STOCHASTIC_REWARD_MEAN
from plugins.selectors.active_exploration import ActiveExploration, UncertaintySampling

# ------------------------------------------------------------------ the contract (extended to stochastic passes)


class TestAEContract(SelectorContract):
    selector_class = ActiveExploration


class TestAEGammaZeroContract(SelectorContract):
    selector_class = ActiveExploration
    settings = {"gamma": 0.0, "passes": 3}


class TestUSContract(SelectorContract):
    selector_class = UncertaintySampling


def test_the_contract_pool_fills_stochastic_columns_from_the_scorers():
    """K > 0: the sd column comes from the registered scorer, so it is never negative (a plain pool's would be)."""
    pool = make_pool(0, requires=(STOCHASTIC_REWARD_MEAN, STOCHASTIC_LOGPROB_SD), passes=5)
    assert (pool.batch.score(STOCHASTIC_LOGPROB_SD) >= 0).all()
    plain = make_pool(0, requires=(STOCHASTIC_LOGPROB_SD,))
    assert (plain.batch.score(STOCHASTIC_LOGPROB_SD) < 0).any()
    assert TestAEContract().make_pool(0).batch.score(STOCHASTIC_LOGPROB_SD).min() >= 0


# ------------------------------------------------------------------ the rules, against a plain loop


def batch_of(mean, sd, distinct=None, beta=1.0):
    mean, sd = np.asarray(mean, dtype=np.float64), np.asarray(sd, dtype=np.float64)
    distinct = np.ones(mean.shape, dtype=bool) if distinct is None else np.asarray(distinct)
    return SelectionBatch(lengths=np.ones(mean.shape, dtype=np.int64), distinct=distinct,
                          scores={STOCHASTIC_REWARD_MEAN: mean, STOCHASTIC_LOGPROB_SD: sd}, beta=beta)


def ae(mean, sd, a, b, gamma=2.0):
    upper = max(mean[a] + gamma * sd[a], mean[b] + gamma * sd[b])
    lower = max(mean[a] - gamma * sd[a], mean[b] - gamma * sd[b])
    return upper - lower


def us(sd, a, b):
    return (sd[a] ** 2 + sd[b] ** 2) / 2


def loop_instances(batch, score):
    """The rule as written: per prompt, the first pair of usable responses with the highest score."""
    mean, sd = batch.score(STOCHASTIC_REWARD_MEAN), batch.score(STOCHASTIC_LOGPROB_SD)
    prompts, a_list, b_list = [], [], []
    for m in range(batch.n_prompts):
        best = None
        for a, b in combinations(range(batch.n_responses), 2):
            if not (batch.distinct[m, a] and batch.distinct[m, b]):
                continue
            value = score(mean[m], sd[m], a, b)
            if best is None or value > best[0]:
                best = (value, a, b)
        if best is not None:
            prompts.append(m), a_list.append(best[1]), b_list.append(best[2])
    return Pairs(np.array(prompts, dtype=np.int64), np.array(a_list, dtype=np.int64), np.array(b_list, dtype=np.int64))


@pytest.mark.parametrize("seed", range(5))
def test_instances_are_the_best_pair_of_each_prompt(seed):
    rng = np.random.default_rng(seed)
    mean, sd = rng.normal(size=(30, 6)), rng.uniform(0, 2, size=(30, 6))
    distinct = rng.random((30, 6)) > 0.2
    batch = batch_of(mean, sd, distinct)
    got = ActiveExploration().select_instances(batch, rng)
    want = loop_instances(batch, ae)
    assert np.array_equal(got.prompt, want.prompt) and np.array_equal(got.a, want.a)
    assert np.array_equal(got.b, want.b)
    got = UncertaintySampling().select_instances(batch, rng)
    want = loop_instances(batch, lambda m_, s, a, b: us(s, a, b))
    assert np.array_equal(got.prompt, want.prompt) and np.array_equal(got.a, want.a)
    assert np.array_equal(got.b, want.b)
    gamma = ActiveExploration({"gamma": 0.5}).select_instances(batch, rng)
    want = loop_instances(batch, lambda m_, s, a, b: ae(m_, s, a, b, gamma=0.5))
    assert np.array_equal(gamma.a, want.a) and np.array_equal(gamma.b, want.b)


def test_a_worked_example():
    # response 0: r = 1.0 +- 2*0.1; response 1: r = 0.0 +- 2*1.0; response 2: r = 0.9 +- 2*0.05
    mean, sd = np.array([[1.0, 0.0, 0.9]]), np.array([[0.1, 1.0, 0.05]])
    batch = batch_of(mean, sd)
    # AE: (0,1): max(1.2, 2.0) - max(0.8, -2.0) = 1.2; (0,2): 1.2 - 0.8 = 0.4; (1,2): 2.0 - 0.8 = 1.2 -> first: (0,1)
    pairs = ActiveExploration().select_instances(batch, np.random.default_rng(0))
    assert (pairs.a[0], pairs.b[0]) == (0, 1)
    assert np.allclose(ActiveExploration().pair_scores(batch, Pairs([0, 0, 0], [0, 0, 1], [1, 2, 2])), [1.2, 0.4, 1.2])
    # US: the two largest variances, responses 0 and 1
    pairs = UncertaintySampling().select_instances(batch, np.random.default_rng(0))
    assert (pairs.a[0], pairs.b[0]) == (0, 1)
    assert np.allclose(UncertaintySampling().pair_scores(batch, Pairs([0], [0], [1])), [(0.01 + 1.0) / 2])


def test_corpus_keeps_the_highest_scores_nan_last_ties_earliest():
    mean = np.zeros((5, 2))
    sd = np.array([[0.1, 0.1], [1.0, 1.0], [np.nan, 0.5], [0.5, 0.5], [1.0, 1.0]])
    batch = batch_of(mean, sd)
    pairs = Pairs(np.arange(5), np.zeros(5, dtype=np.int64), np.ones(5, dtype=np.int64))
    for selector in (ActiveExploration(), UncertaintySampling()):
        kept = selector.select_corpus(batch, pairs, 2, np.random.default_rng(0))
        assert kept.prompt.tolist() == [1, 4]
        kept = selector.select_corpus(batch, pairs, 5, np.random.default_rng(0))
        assert kept.prompt.tolist() == [0, 1, 2, 3, 4]
        kept = selector.select_corpus(batch, pairs, 4, np.random.default_rng(0))
        assert 2 not in kept.prompt.tolist(), "a pair with a NaN score ranks last"


def test_a_response_with_a_nan_score_is_never_paired():
    mean, sd = np.array([[0.0, 0.0, 0.0]]), np.array([[np.nan, 0.1, 0.2]])
    for selector in (ActiveExploration(), UncertaintySampling()):
        pairs = selector.select_instances(batch_of(mean, sd), np.random.default_rng(0))
        assert (pairs.a[0], pairs.b[0]) == (1, 2)


def test_beta_changes_nothing():
    rng = np.random.default_rng(4)
    mean, sd = rng.normal(size=(20, 5)), rng.uniform(0, 1, size=(20, 5))
    for selector in (ActiveExploration(), UncertaintySampling()):
        one = selector.select_instances(batch_of(mean, sd, beta=1.0), rng)
        other = selector.select_instances(batch_of(mean, sd, beta=0.05), rng)
        assert np.array_equal(one.a, other.a) and np.array_equal(one.b, other.b)
        kept = [selector.select_corpus(batch_of(mean, sd, beta=b), one, 7, rng).prompt for b in (1.0, 0.05)]
        assert np.array_equal(*kept)


def test_gamma_zero_makes_every_ae_score_zero():
    """With gamma = 0 the interval is a point: every pair scores 0 and the first candidate pair wins."""
    rng = np.random.default_rng(0)
    batch = batch_of(rng.normal(size=(4, 4)), rng.uniform(0, 1, size=(4, 4)))
    pairs = ActiveExploration({"gamma": 0.0}).select_instances(batch, rng)
    assert pairs.a.tolist() == [0] * 4 and pairs.b.tolist() == [1] * 4


# ------------------------------------------------------------------ options, gold and cost


def test_options_and_what_they_declare():
    selector = ActiveExploration()
    assert selector.settings == {"passes": 5, "gamma": 2.0}
    assert selector.stochastic_passes == 5 and ActiveExploration({"passes": 3}).stochastic_passes == 3
    assert UncertaintySampling().settings == {"passes": 5}
    with pytest.raises(UsageError):
        ActiveExploration({"passes": 1})  # a spread needs two passes
    with pytest.raises(UsageError):
        ActiveExploration({"gamma": -1.0})
    for cls in (ActiveExploration, UncertaintySampling):
        assert EXPLICIT_REWARD not in cls.requires and cls.explicit_source is None, "no gold, no proxy scores"
        assert not cls.needs_tokens


def test_label_plan_is_one_gold_label_per_kept_pair():
    from harness.config import plan_run
    from harness.plugins import load_registry

    registry = load_registry()
    for name in ("ae_dpo", "us_dpo"):
        plan = plan_run(registry, selector=name, budget=400, iterations=2)
        assert plan.components.pool_costs(8) == (0, 1)
        assert plan.components.explicit_source is None and plan.components.explicit_judge() is None
        assert STOCHASTIC_LOGPROB_SD in plan.components.scorers
        assert plan.labels == [200, 200]


# ------------------------------------------------------------------ runs on the synthetic testbed


@pytest.mark.parametrize("name", ["ae_dpo", "us_dpo"])
def test_runs_on_the_synthetic_testbed_and_records_k(cli, db_path, name):
    result = cli("run", *TINY_RUN, "--selector", name, "-o", "passes=3")
    assert result.exit_code == 0, result.output
    conn = sqlite3.connect(db_path)
    config, labels, columns = conn.execute(
        "select config_json, labels_used, scorer_columns from runs order by rowid desc limit 1").fetchone()
    config = json.loads(config)
    assert config["instance_selector"]["settings"]["passes"] == 3
    assert config["corpus_selector"]["settings"]["passes"] == 3
    assert labels == 80, "the K passes cost no label: the budget is spent on kept pairs only"
    assert STOCHASTIC_LOGPROB_SD in columns.split(",")


def test_world_passes_reach_the_selector(monkeypatch, cli, db_path):
    """The loop asks the world for exactly K passes of the current policy, once per iteration."""
    from plugins.testbeds.synthetic.world import SyntheticWorld

    asked = []
    real = SyntheticWorld.stochastic_logprobs

    def spy(self, policy, prompts, responses, passes, rng):
        asked.append((passes, responses.lengths.shape))
        return real(self, policy, prompts, responses, passes, rng)

    monkeypatch.setattr(SyntheticWorld, "stochastic_logprobs", spy)
    result = cli("run", *TINY_RUN, "--selector", "ae_dpo", "-o", "passes=4")
    assert result.exit_code == 0, result.output
    assert [k for k, _ in asked] == [4, 4]
