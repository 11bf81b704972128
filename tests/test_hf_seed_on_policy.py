"""The on-policy seed round: pi_0 from pi_ref's own samples labelled by the run's annotator, cached, on a seed ledger."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

from harness.errors import UsageError
from harness.plugins import DEFAULT_PLUGINS
from tests.extras import skip_unless_extra
from tests.hf_tiny import tiny_paths, world_settings

skip_unless_extra("hf")

pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")

# The tiny SFT policy is nearly deterministic at temperature 1: sample hotter so seed prompts give distinct pairs.
SEED = {"initial_model": None, "seed_prompt_share": 0.25, "seed_responses": 4, "temperature": 2.0}


def _annotator(**settings):
    from plugins.judges.reward_model import RewardModelJudge

    return RewardModelJudge({"model": str(tiny_paths().reward), **settings})


def _world(annotator=None, **overrides):
    from harness.progress import NullReporter
    from plugins.testbeds.hf import HFTestbed

    settings = world_settings(**{**SEED, **overrides})
    return HFTestbed(settings).build_world(seed=0, reporter=NullReporter(),
                                           annotator=annotator if annotator is not None else _annotator())


def _parameters(policy):
    return [p.detach().clone() for p in policy.model.parameters()]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "pi0"


def test_the_round_holds_out_seed_prompts_and_trains_pi0(cache):
    world = _world()
    info = world.info
    assert info["seed_round"] == "on_policy" and info["seed_cache"] == "miss"
    assert info["seed_prompts"] == 15 and world.n_train == 60 - 15  # a quarter of the pool, held out of it
    seed_texts = set(world.table.texts[: world.n_train])
    assert len(seed_texts) == 45
    assert 0 < info["seed_labels"] == info["seed_labels_paid"] <= 15
    assert info["seed_pairs"] == info["seed_labels"] - info["seed_label_ties"]
    assert info["seed_train_steps"] >= 2 and info["seed_lr_first"] > 0  # no step at learning rate 0
    pi0, ref = _parameters(world.initial_policy), _parameters(world.reference_policy)
    assert any(not torch.equal(a, b) for a, b in zip(pi0, ref))
    assert world.seed_round["seed_labels"] == info["seed_labels"]


def test_the_held_out_prompts_depend_on_the_world_seed_only():
    from plugins.testbeds.hf.seed import seed_prompt_rows

    a = seed_prompt_rows(60, 0.25, 0)
    assert a.tolist() == seed_prompt_rows(60, 0.25, 0).tolist() and len(a) == 15
    assert a.tolist() != seed_prompt_rows(60, 0.25, 1).tolist()
    assert len(seed_prompt_rows(3, 0.99, 0)) == 2  # the pool always keeps a prompt


@pytest.mark.parametrize("epochs, steps", [(1.0, 1), (2.0, 2), (3.0, 3)])
def test_every_seed_step_runs_at_a_positive_rate(cache, epochs, steps):
    """The seed round is a trl call too: 1, 2 and 3 steps, each moving pi_0 (one batch holds every seed pair)."""
    world = _world(seed_epochs=epochs, seed_batch_size=64, seed_cache=False)
    assert world.info["seed_train_steps"] == steps and world.info["seed_cache"] == "off"
    assert world.info["seed_lr_first"] > 0
    pi0, ref = _parameters(world.initial_policy), _parameters(world.reference_policy)
    assert any(not torch.equal(a, b) for a, b in zip(pi0, ref))


def test_a_second_build_hits_the_cache_and_gets_the_same_pi0(cache):
    first = _world()
    second = _world()
    assert second.info["seed_cache"] == "hit" and second.info["seed_labels_paid"] == 0
    assert second.info["seed_labels"] == first.info["seed_labels"]  # what pi_0 cost, still on the seed ledger
    for a, b in zip(_parameters(first.initial_policy), _parameters(second.initial_policy)):
        assert torch.equal(a, b)


def test_a_corrupt_entry_is_rebuilt_never_loaded(cache):
    first = _world()
    (entry,) = [p for p in cache.iterdir() if not p.name.startswith(".")]
    weights = entry / "model.safetensors"
    blob = bytearray(weights.read_bytes())
    blob[-1] ^= 0xFF
    weights.write_bytes(bytes(blob))
    with pytest.warns(RuntimeWarning, match="damaged"):
        again = _world()
    assert again.info["seed_cache"] == "rebuilt" and again.info["seed_labels_paid"] > 0
    for a, b in zip(_parameters(first.initial_policy), _parameters(again.initial_policy)):
        assert torch.equal(a, b)
    (entry / "manifest.json").unlink()
    with pytest.warns(RuntimeWarning, match="damaged"):
        assert _world().info["seed_cache"] == "rebuilt"


def test_the_key_follows_what_pi0_depends_on(tmp_path):
    from plugins.testbeds.hf import HFTestbed
    from plugins.testbeds.hf.seed import trainer_settings
    from plugins.testbeds.hf.seed_cache import cache_key

    settings = HFTestbed(world_settings(**SEED)).settings

    def key(settings=settings, judge=None, seed=0, **trainer):
        options = {**trainer_settings(settings), **trainer}
        return cache_key(settings=settings, judge=judge or _annotator(), world_seed=seed, trainer="trl",
                         trainer_settings=options)

    base = key()
    assert key() == base
    assert key(seed=1) != base
    assert key(judge=_annotator(batch_size=3)) != base
    assert key(lr=2e-5) != base
    assert key(settings={**settings, "temperature": 1.5}) != base
    assert key(settings={**settings, "eval_limit": 3, "threads": 2}) == base  # evaluation-only options
    copied = tmp_path / "prompts.jsonl"  # the same contents elsewhere: the same pi_0
    copied.write_bytes(tiny_paths().prompts.read_bytes())
    assert key(settings={**settings, "prompts": str(copied)}) == base
    copied.write_text(copied.read_text() + json.dumps({"prompt": "say hello"}) + "\n")
    assert key(settings={**settings, "prompts": str(copied)}) != base


def test_seed_prompts_from_a_file(cache, tmp_path):
    path = tmp_path / "seed.jsonl"
    train = [json.loads(line)["prompt"] for line in tiny_paths().prompts.read_text().splitlines()]
    path.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in train[:10]))
    world = _world(seed_prompt_share=0.0, seed_prompts=str(path))
    assert world.info["seed_prompts"] == 10 and world.n_train == 60  # a file holds nothing out of the pool
    assert world.info["seed_prompts_source"] == f"file {path}"


@pytest.mark.parametrize("overrides, message", [
    ({"seed_prompts": "EVAL"}, "also an evaluation prompt"),
    ({"seed_prompts": "TRAIN"}, "set one of them"),  # with seed_prompt_share still set
    ({"initial_model": "INITIAL"}, "both give pi_0"),
])
def test_conflicting_or_bad_seed_options_are_usage_errors(cache, tmp_path, overrides, message):
    paths = tiny_paths()
    values = {"EVAL": str(paths.eval), "TRAIN": str(paths.prompts), "INITIAL": str(paths.initial)}
    resolved = {k: values.get(v, v) for k, v in overrides.items()}
    if message == "also an evaluation prompt":
        resolved["seed_prompt_share"] = 0.0
    with pytest.raises(UsageError, match=message):
        _world(**resolved)


def test_people_and_missing_judges_cannot_label_a_seed_round(cache):
    class People:
        name = "external"
        external = True

    from harness.progress import NullReporter
    from plugins.testbeds.hf import HFTestbed

    with pytest.raises(UsageError, match="cannot wait for people"):
        _world(annotator=People())
    with pytest.raises(UsageError, match="--annotator"):
        HFTestbed(world_settings(**SEED)).build_world(seed=0, reporter=NullReporter(), annotator=None)


def test_a_multi_process_launch_needs_a_cached_pi0(cache, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(UsageError, match="one process only"):
        _world()
    monkeypatch.delenv("WORLD_SIZE")
    _world()  # fills the cache
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert _world().info["seed_cache"] == "hit"


# ---------------------------------------------------------------- whole runs: the seed ledger and the margins

MODULES = ("plugins.testbeds.hf", "plugins.trainers.trl", "plugins.judges.reward_model")


def _run(cli, db, selector, *extra):
    paths = tiny_paths()
    options = {
        "testbed.model": paths.policy, "testbed.prompts": paths.prompts, "testbed.eval_prompts": paths.eval,
        "testbed.max_new_tokens": 16, "testbed.threads": 1, "testbed.seed_responses": 4,
        "testbed.temperature": 2.0, "annotator.model": paths.reward, "evaluator.model": paths.reward,
    }
    args = [a for k, v in options.items() for a in ("-o", f"{k}={v}")]
    plugins = [a for m in MODULES if m not in DEFAULT_PLUGINS for a in ("--plugin", m)]
    result = cli("run", *plugins, "--testbed", "hf", "--trainer", "trl", "--selector", selector, "--iterations", "1",
                 "--budget", "8", "--responses", "4", "--db", db, *args, *extra, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


def _bought(db, run_id):
    from leaderboard.store import Leaderboard

    rows = Leaderboard(db, create=False).conn.execute(
        "select prompt_hash, a_hash, b_hash from labels where run_id = ? and iteration = 1 and kind = 'pair'",
        [run_id]).fetchall()
    return {r[0]: frozenset(r[1:]) for r in rows}


def test_runs_on_one_seed_share_pi0_and_the_margins_tell_pairs_apart(cli, cache, tmp_path):
    db = tmp_path / "board.db"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        small = _run(cli, db, "smallest", "-o", "testbed.seed_prompt_share=0.25")
        large = _run(cli, db, "largest", "-o", "testbed.seed_prompt_share=0.25")
    pi0_small, pi0_large = small["iterations"][0], large["iterations"][0]
    assert pi0_small["seed_cache"] == "miss" and pi0_large["seed_cache"] == "hit"
    assert pi0_small["seed_cache_key"] == pi0_large["seed_cache_key"]
    # the seed ledger: shown on pi_0's row and in the final metrics, never in the strategy's budget
    assert small["seed_labels"] == pi0_small["seed_labels"] > 0 and small["labels_used"] <= 8
    assert small["iterations"][1]["labels"] == small["labels_used"]
    # margins that mean something at iteration 1 (identical pools: same pi_0, same draws)
    row = small["iterations"][1]
    assert row["pool_tiny_margin_share"] < 0.01
    assert row["pool_beta_margin_median"] == large["iterations"][1]["pool_beta_margin_median"] > 0
    assert row["pool_extremes_differ_share"] >= 0.5
    a, b = _bought(db, small["run_id"]), _bought(db, large["run_id"])
    shared = set(a) & set(b)
    assert shared and sum(a[p] != b[p] for p in shared) >= len(shared) / 2  # the two strategies buy different pairs


def test_without_a_seed_round_every_margin_is_zero(cli, cache, tmp_path):
    """The failure the bootstrap fixes, seen by the same diagnostics: pi_0 = pi_ref."""
    out = _run(cli, tmp_path / "board.db", "smallest")
    row = out["iterations"][1]
    assert row["pool_tiny_margin_share"] == 1.0 and row["pool_beta_margin_median"] == 0.0
    assert row["pool_extremes_differ_share"] == 0.0 and "seed_labels" not in out
