"""The staircase world (``-o testbed.world=staircase``): a label's value depends on the policy's state.

Pins: the default world is bit-identical to the code before the ``world`` option existed; the
staircase world with ``state_dependence=false`` is bit-identical to the bigram world through a whole
pipeline; the stairs add exactly their bonuses; the world cache never serves one world for the other;
bad option values exit 2.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3

import numpy as np
import pytest
import torch

from conftest import TINY_RUN
from harness.interfaces import Pairs, PreferenceData, Responses
from harness.progress import NullReporter
from plugins.testbeds.synthetic import SyntheticTestbed
from plugins.testbeds.synthetic import cache as world_cache
from plugins.testbeds.synthetic import staircase
from plugins.testbeds.synthetic.process import gold_rewards
from plugins.testbeds.synthetic.staircase import StaircaseWorld, contains
from plugins.testbeds.synthetic.world import SyntheticWorld, world_class
from plugins.trainers.native import NativeDPOTrainer

torch.set_num_threads(1)

TINY = {"sft_samples": 2000, "sft_epochs": 1, "seed_prompts": 40, "pi0_epochs": 2, "eval_prompts": 100}
BARE = {"sft_samples": 0, "seed_prompts": 0, "eval_prompts": 10}


@pytest.fixture(autouse=True)
def no_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("HARNESS_NO_CACHE", "1")


def build(settings, seed=3):
    return SyntheticTestbed(settings).build_world(seed=seed, reporter=NullReporter())


def digest(policy) -> str:
    h = hashlib.sha256()
    for key, value in sorted(policy.state_dict().items()):
        h.update(key.encode())
        h.update(value.numpy().tobytes())
    return h.hexdigest()[:16]


def pipeline(settings, seed=3):
    """World build (SFT, pi_0's labelled round), a pool, labels, one DPO call and an evaluation."""
    world = build(settings, seed)
    rng = np.random.default_rng(11)
    prompts = world.draw_prompts(120, rng)
    responses = world.sample(world.initial_policy, prompts, 4, rng)
    rows = np.flatnonzero(responses.distinct_mask()[:, 1])
    pairs = Pairs(rows, np.zeros_like(rows), np.ones_like(rows))
    labels = world.annotate(prompts, responses, pairs, rng)
    ref = world.logprobs(world.reference_policy, prompts, responses)
    data = PreferenceData.from_labels(
        prompts=prompts, responses=responses, pairs=pairs, prefer_a=labels.prefer_a, ref_logps=ref
    )
    result = NativeDPOTrainer({"epochs": 2}).train(policy=world.initial_policy, data=data, rng=rng)
    metrics = world.evaluate(result.policy, rng)
    return {
        "pi0": digest(world.initial_policy),
        "trained": digest(result.policy),
        "labels": int(labels.prefer_a.sum()),
        "win_rate": metrics["win_rate"],
        "gold_reward": metrics["gold_reward"],
        "kl": metrics["kl"],
        "reference_gold_reward": metrics["reference_gold_reward"],
    }


# The numbers of pipeline(TINY) from the code at commit 255fce5, before the `world` option existed:
# `git archive 255fce5 plugins harness leaderboard | tar -x -C DIR`, then this same pipeline run with
# PYTHONPATH=DIR (1 torch thread, torch of constraints.txt). A regression pin of the default world.
# Torch's CPU kernels differ between CPUs in the last bits (the KL below differs at 1e-8, so do the
# weights' digests), so each machine the pre-change code was run on has its own pin: the default world
# must equal the pre-change output of one of them. A machine that matches none needs its own pin, made
# as above; the failure message says so.
PRE_CHANGE_PINS = {
    "the machine of 2026-12-05, where the pin was first recorded": {
        "pi0": "2a2c97bf035af483",
        "trained": "46c1276d063ebf89",
        "labels": 64,
        "win_rate": 0.185,
        "gold_reward": 0.02471485833107849,
        "kl": 0.02023622989654541,
        "reference_gold_reward": 0.9716440498159248,
    },
    "AMD EPYC, torch CPU capability AVX2 (recorded 2026-12-06)": {
        "pi0": "aabd0828ab30fd28",
        "trained": "87a34cbbaf726604",
        "labels": 64,
        "win_rate": 0.185,
        "gold_reward": 0.02471485833107849,
        "kl": 0.020236186981201172,
        "reference_gold_reward": 0.9716440498159248,
    },
    "torch CPU capability AVX512 (recorded 2026-12-06, second machine of that day)": {
        "pi0": "b88b138d2fd5e52e",
        "trained": "e6c88a2cab723ee5",
        "labels": 64,
        "win_rate": 0.185,
        "gold_reward": 0.02471485833107849,
        "kl": 0.020236084461212157,
        "reference_gold_reward": 0.9716440498159248,
    },
}


@pytest.fixture(scope="module")
def bigram_numbers():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HARNESS_NO_CACHE", "1")
        return pipeline(TINY)


def test_default_world_is_bit_identical_to_the_code_before_the_option(bigram_numbers):
    assert SyntheticTestbed().settings["world"] == "bigram"
    assert bigram_numbers in PRE_CHANGE_PINS.values(), (
        f"the default world gives {bigram_numbers}, which is no machine's pre-change output. If the code before "
        f"the world option gives the same numbers on this machine (CPU capability "
        f"{torch.backends.cpu.get_cpu_capability()}), add them as this machine's pin (see PRE_CHANGE_PINS); "
        "otherwise the default world changed")


def test_knob_off_is_bit_identical_to_the_bigram_world(bigram_numbers):
    off = pipeline({**TINY, "world": "staircase", "state_dependence": False})
    assert off == bigram_numbers
    on = pipeline({**TINY, "world": "staircase"})
    assert on != bigram_numbers  # the mechanism changes numbers when it is on


def test_world_option_dispatches_the_class():
    assert world_class(SyntheticTestbed().settings) is SyntheticWorld
    world = build({**BARE, "world": "staircase"})
    assert type(world) is StaircaseWorld and world.state_dependence
    assert type(build(BARE)) is SyntheticWorld


def response_rows(world, rows):
    width = world.max_response_length + 1
    tokens = np.full((len(rows), width), world.pad_id, dtype=np.int64)
    lengths = np.zeros(len(rows), dtype=np.int64)
    for i, row in enumerate(rows):
        tokens[i, : len(row)] = row
        tokens[i, len(row)] = world.eos_id
        lengths[i] = len(row) + 1
    return tokens, lengths


def test_contains_reads_content_tokens_only():
    tokens = np.array([[1, 2, 3, 9, 9], [5, 1, 2, 9, 9], [1, 9, 2, 3, 9], [1, 2, 9, 3, 7]])
    lengths = np.array([4, 4, 4, 3])  # row 3: content "1 2", then EOS; the 3 after it is not read
    assert contains(tokens, lengths, (1, 2)).tolist() == [True, True, False, True]
    assert contains(tokens, lengths, (1, 2, 3)).tolist() == [True, False, False, False]
    assert contains(np.zeros((0, 5), dtype=np.int64), np.zeros(0), (1, 2)).shape == (0,)


@pytest.mark.parametrize("dependence", [True, False])
def test_the_stairs_add_exactly_their_bonuses(dependence):
    world = build({**BARE, "world": "staircase", "state_dependence": dependence})
    a, b, c = world.motif
    filler = next(t for t in range(world.vocab.size) if t not in (a, b, c))
    rows = [[filler] * 6, [filler, a, b, filler, filler, filler], [filler, a, b, c, filler, filler], [a, filler, b, c]]
    tokens, lengths = response_rows(world, rows)
    prompts = world.draw_prompts(len(rows), np.random.default_rng(0))
    base = gold_rewards(world.tables, prompts, tokens, lengths)
    gold = world.gold_rewards(prompts, Responses(tokens=tokens[:, None], lengths=lengths[:, None]))[:, 0]
    bonus = np.array([0.0, staircase.LOWER_BONUS, staircase.LOWER_BONUS + staircase.UPPER_BONUS, 0.0])
    np.testing.assert_array_equal(gold, base + bonus if dependence else base)
    assert world.stairs(tokens, lengths).tolist() == [0, 1, 2, 0]
    # the annotator reads the same gold: a stair worth 3 beats an equal response almost surely
    pairs = Pairs(np.zeros(2000, dtype=np.int64), np.zeros(2000, dtype=np.int64), np.ones(2000, dtype=np.int64))
    two = Responses(tokens=np.stack([tokens[2], tokens[0]])[None], lengths=np.array([[lengths[2], lengths[0]]]))
    labels = world.annotate(prompts[:1], two, pairs, np.random.default_rng(1))
    share = labels.prefer_a.mean()
    if dependence:
        assert share > 0.99
    else:
        assert share < 0.99


def test_the_motif_is_rare_under_the_sft_process():
    world = build({**BARE, "world": "staircase"}, seed=0)
    a, b, c = world.motif
    assert len({a, b, c}) == 3
    rng = np.random.default_rng(5)
    from plugins.testbeds.synthetic.process import sample_process

    prompts = world.draw_prompts(20000, rng)
    tokens, lengths = sample_process(world.tables, prompts, rng, max_len=world.max_response_length,
                                     eos_base=1.0, eos_slope=0.5)
    lower = contains(tokens, lengths, (a, b)).mean()
    upper = contains(tokens, lengths, (a, b, c)).mean()
    assert abs(lower - staircase.LOWER_RATE) < 0.01, lower  # chosen at 3% on the world's own draw
    assert upper < lower / 5, (upper, lower)


def test_the_world_cache_keys_on_the_world(monkeypatch, tmp_path):
    monkeypatch.delenv("HARNESS_NO_CACHE")
    settings = {key: SyntheticTestbed(BARE).settings[key] for key in SyntheticTestbed(BARE).settings}
    keys = {world_cache.cache_key("synthetic", {**settings, "world": w, "state_dependence": d}, 0)
            for w in ("bigram", "staircase") for d in (True, False)}
    assert len(keys) == 4
    small = {**BARE, "sft_samples": 200, "seed_prompts": 30}
    first = build({**small, "world": "staircase"}, seed=0)
    assert not first.info["from_cache"]
    bigram = build(small, seed=0)
    assert not bigram.info["from_cache"] and type(bigram) is SyntheticWorld  # not the staircase file
    again = build({**small, "world": "staircase"}, seed=0)
    assert again.info["from_cache"] and type(again) is StaircaseWorld and again.motif == first.motif
    np.testing.assert_array_equal(again.reference_gold, first.reference_gold)
    assert len(list((tmp_path / "cache").rglob("*.safetensors"))) == 2


@pytest.mark.parametrize(("option", "needle"), [
    ("testbed.world=trees", "world"),
    ("testbed.state_dependence=maybe", "state_dependence"),
])
def test_bad_values_exit_2(cli, db_path, option, needle):
    result = cli("run", "--dry-run", "-o", option)
    assert result.exit_code == 2, result.output
    assert needle in result.output


def test_a_staircase_run_records_its_world(cli, db_path):
    result = cli("run", *TINY_RUN, "-o", "testbed.world=staircase", "--selector", "smallest", "--allocator", "decrease")
    assert result.exit_code == 0, result.output
    with sqlite3.connect(db_path) as con:
        (config,) = con.execute("select config_json from runs").fetchone()
    settings = json.loads(config)["testbed"]["settings"]
    # state_dependence holds its default (true), so it is left out of the record (Option.omit_at_default)
    assert settings["world"] == "staircase" and "state_dependence" not in settings
