"""LoRA in the hf testbed (testbed option lora_rank): pi_ref is the base with its adapters off, policies are adapters.

Every check runs on the tiny GPT-2 built in code (tests/hf_tiny.py): pi_ref's log-probs equal a full-weights
world's bit for bit and no copy of the base is made; the trl and native trainers change the new adapter only;
fresh adapters are a function of the world seed; checkpoints hold the adapter and resume after SIGKILL to the
numbers of an uninterrupted run; exports merge the adapter or write it as PEFT saves one; pi_0 from an adapter
directory, the seed round and its cache; and the refusals (a full initial_model, no peft) exit 2.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from harness.errors import CheckpointError, UsageError
from harness.interfaces import Pairs, PreferenceData
from tests.extras import skip_unless_extra

skip_unless_extra("hf")
skip_unless_extra("peft")

import torch  # noqa: E402

from plugins._hf import lora  # noqa: E402
from tests.hf_tiny import tiny_paths, tiny_world, world_settings  # noqa: E402

pytestmark = [pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning"),
              pytest.mark.filterwarnings("ignore:.*fan_in_fan_out.*:UserWarning")]

# the default lora_dropout (0.05) on purpose: sampling, scoring and evaluation must run without it
LORA = {"initial_model": None, "lora_rank": 4, "lora_alpha": 8.0}


@pytest.fixture(scope="module")
def worlds():
    """A LoRA world, a full-weights world of the same model, and 6 prompts x 4 responses sampled hot from pi_ref
    (the tiny model is nearly deterministic at temperature 1), each prompt with two distinct responses."""
    lora_world, full_world = tiny_world(**LORA), tiny_world(initial_model=None, temperature=2.0)
    prompts = lora_world.draw_prompts(24, np.random.default_rng(0))
    responses = full_world.sample(full_world.reference_policy, prompts, 4, np.random.default_rng(1))
    keep = np.flatnonzero(responses.distinct_mask().sum(axis=1) >= 2)[:6]
    assert len(keep) == 6
    from harness.interfaces import Responses

    return lora_world, full_world, prompts[keep], Responses(tokens=responses.tokens[keep],
                                                            lengths=responses.lengths[keep])


def _logps(world, policy, prompts, responses) -> np.ndarray:
    with torch.no_grad():
        return world.logprobs(policy, prompts, responses)


def _data(prompts, responses, ref_logps) -> PreferenceData:
    """One pair per prompt of two distinct responses, the first preferred."""
    n = len(prompts)
    firsts = [np.flatnonzero(row)[:2] for row in responses.distinct_mask()]
    pairs = Pairs(prompt=np.arange(n), a=np.array([f[0] for f in firsts]), b=np.array([f[1] for f in firsts]))
    return PreferenceData.from_labels(prompts=prompts, responses=responses, pairs=pairs, prefer_a=np.ones(n, bool),
                                      ref_logps=ref_logps)


def _trainer(name: str):
    from plugins.trainers.native import NativeDPOTrainer
    from plugins.trainers.trl import TRLDPOTrainer

    if name == "trl":
        return TRLDPOTrainer({"lr": 5e-2, "batch_size": 2, "grad_accum": 1, "warmup_ratio": 0.0})
    return NativeDPOTrainer({"lr": 5e-2, "epochs": 2, "batch_size": 3})


def _base_storage(model) -> dict[str, int]:
    from plugins._hf import lora

    return {name: p.data_ptr() for name, p in lora.unwrap(model).named_parameters() if ".lora_" not in name}


def test_pi_ref_is_the_base_model_exactly_and_held_once(worlds):
    lora_world, full_world, prompts, responses = worlds
    reference = lora_world.reference_policy
    assert reference.is_lora and reference.adapter is None and lora_world.initial_policy is reference
    assert np.array_equal(_logps(lora_world, reference, prompts, responses),
                          _logps(full_world, full_world.reference_policy, prompts, responses))
    assert list(reference.parameters()) == []  # nothing of pi_ref is trainable
    assert lora_world.info["parameters"] == full_world.info["parameters"]
    assert lora_world.info["lora_adapter_parameters"] > 0
    before = _base_storage(reference._model)
    clone = reference.clone()
    assert clone._model is reference._model and clone.adapter and _base_storage(clone._model) == before
    assert np.array_equal(_logps(lora_world, clone, prompts, responses),
                          _logps(lora_world, reference, prompts, responses))  # a fresh adapter is the base


@pytest.mark.parametrize("trainer", ["trl", "native"])
def test_training_changes_only_the_new_adapter(worlds, trainer):
    lora_world, _, prompts, responses = worlds
    reference = lora_world.reference_policy
    ref_logps = _logps(lora_world, reference, prompts, responses)
    base = {name: p.detach().clone() for name, p in reference._model.named_parameters() if ".lora_" not in name}
    first = _trainer(trainer).train(policy=reference, data=_data(prompts, responses, ref_logps),
                                    rng=np.random.default_rng(0))
    moved = _logps(lora_world, first.policy, prompts, responses)
    assert first.steps > 0 and not np.allclose(moved, ref_logps)
    trained = list(first.policy.parameters())
    assert trained and sum(p.numel() for p in trained) == lora_world.info["lora_adapter_parameters"]
    second = _trainer(trainer).train(policy=first.policy, data=_data(prompts, responses, ref_logps),
                                     rng=np.random.default_rng(1))
    assert not np.array_equal(_logps(lora_world, second.policy, prompts, responses), moved)
    assert np.array_equal(_logps(lora_world, first.policy, prompts, responses), moved)  # its input: untouched
    assert np.array_equal(_logps(lora_world, reference, prompts, responses), ref_logps)
    for name, p in reference._model.named_parameters():
        if ".lora_" not in name:
            assert torch.equal(p, base[name]), name  # the base never moves
    assert second.policy._model is reference._model


def test_gradient_checkpointing_still_reaches_the_adapter(worlds):
    from plugins.trainers.trl import TRLDPOTrainer

    lora_world, _, prompts, responses = worlds
    reference = lora_world.reference_policy
    ref_logps = _logps(lora_world, reference, prompts, responses)
    trainer = TRLDPOTrainer({"lr": 5e-2, "batch_size": 2, "grad_accum": 1, "warmup_ratio": 0.0,
                             "gradient_checkpointing": True})
    result = trainer.train(policy=reference, data=_data(prompts, responses, ref_logps), rng=np.random.default_rng(0))
    assert not np.allclose(_logps(lora_world, result.policy, prompts, responses), ref_logps)


@pytest.mark.parametrize("trainer", ["trl", "native"])
def test_the_same_seed_gives_the_same_numbers_and_another_seed_other_fresh_adapters(worlds, trainer):
    """Training from pi_ref in another world of the same seed, after other adapters were made and dropped, gives
    the same log-probs (default dropout included); a world of another seed starts from other fresh adapters."""
    from harness.progress import NullReporter
    from plugins._hf import lora
    from plugins.testbeds.hf import HFTestbed

    lora_world, _, prompts, responses = worlds
    ref_logps = _logps(lora_world, lora_world.reference_policy, prompts, responses)
    other = tiny_world(**LORA)
    for _ in range(3):
        other.reference_policy.clone()  # adapters made (and dropped) before do not shift the next one
    results = [_trainer(trainer).train(policy=w.reference_policy, data=_data(prompts, responses, ref_logps),
                                       rng=np.random.default_rng(5)) for w in (lora_world, other)]
    assert np.array_equal(_logps(lora_world, results[0].policy, prompts, responses),
                          _logps(other, results[1].policy, prompts, responses))
    seed_1 = HFTestbed(world_settings(**LORA)).build_world(seed=1, reporter=NullReporter())
    mine, theirs = (lora.spec(w.reference_policy._model).fresh for w in (lora_world, seed_1))
    assert mine.keys() == theirs.keys() and not all(torch.equal(mine[k], theirs[k]) for k in mine)


def test_the_shared_model_stays_in_eval_mode_outside_training(worlds):
    """No dropout (LoRA's or the model's own) while sampling, scoring or evaluating: only the trainer's call trains."""
    lora_world, _, prompts, responses = worlds
    model = lora_world.reference_policy._model
    assert not any(m.training for m in model.modules())
    ref_logps = _logps(lora_world, lora_world.reference_policy, prompts, responses)
    trained = _trainer("trl").train(policy=lora_world.reference_policy, data=_data(prompts, responses, ref_logps),
                                    rng=np.random.default_rng(0)).policy
    trained.clone()
    assert not any(m.training for m in model.modules())
    assert np.array_equal(_logps(lora_world, trained, prompts, responses),
                          _logps(lora_world, trained, prompts, responses))


def test_the_static_policy_check_sees_adapters_whatever_is_active(worlds):
    from harness.static_policy import compare_parameters

    lora_world, _, prompts, responses = worlds
    reference = lora_world.reference_policy
    ref_logps = _logps(lora_world, reference, prompts, responses)
    fresh = reference.clone()
    assert compare_parameters(reference, fresh).static  # a fresh adapter is pi_ref
    trained = _trainer("native").train(policy=reference, data=_data(prompts, responses, ref_logps),
                                       rng=np.random.default_rng(0)).policy
    change = compare_parameters(reference, trained)
    assert not change.static and change.total == len(lora.weights(reference._model, trained.adapter))
    copy = trained.clone()
    reference.model  # noqa: B018  (switch the shared model elsewhere: the answer must not depend on it)
    assert compare_parameters(trained, copy).static


def test_adapters_of_dropped_policies_are_deleted(worlds):
    lora_world = worlds[0]
    model = lora_world.reference_policy._model
    kept = lora_world.reference_policy.clone()
    for _ in range(4):
        lora_world.reference_policy.clone()
    gc.collect()
    lora_world.reference_policy.clone()  # pruning happens when an adapter is made
    assert kept.adapter in model.peft_config and len(model.peft_config) <= 3


def test_pi_ref_checkpointed_loads_as_pi_ref_and_still_trains(worlds, tmp_path):
    """Checkpoint 0 of a run whose pi_0 is pi_ref: it must load as pi_ref (adapters off), from which training
    moves the policy (an adapter of zeros would have zero gradients for good)."""
    lora_world, _, prompts, responses = worlds
    reference = lora_world.reference_policy
    lora_world.save_policy(reference, tmp_path / "reference.safetensors")
    loaded = lora_world.load_policy(tmp_path / "reference.safetensors")
    assert loaded.adapter is None and loaded._model is reference._model
    ref_logps = _logps(lora_world, reference, prompts, responses)
    assert np.array_equal(_logps(lora_world, loaded, prompts, responses), ref_logps)
    trained = _trainer("native").train(policy=loaded, data=_data(prompts, responses, ref_logps),
                                       rng=np.random.default_rng(0)).policy
    assert not np.allclose(_logps(lora_world, trained, prompts, responses), ref_logps)


def test_a_checkpoint_holds_the_adapter_and_loads_back_exactly(worlds, tmp_path):
    lora_world, full_world, prompts, responses = worlds
    ref_logps = _logps(lora_world, lora_world.reference_policy, prompts, responses)
    policy = _trainer("native").train(policy=lora_world.reference_policy, data=_data(prompts, responses, ref_logps),
                                      rng=np.random.default_rng(0)).policy
    path = tmp_path / "policy.safetensors"
    lora_world.save_policy(policy, path)
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        assert "lora" in handle.metadata() and all(".lora_" in key for key in handle.keys())
    assert path.stat().st_size < 0.5 * sum(p.numel() * 4 for p in full_world.reference_policy.parameters())
    loaded = lora_world.load_policy(path)
    assert np.array_equal(_logps(lora_world, loaded, prompts, responses),
                          _logps(lora_world, policy, prompts, responses))
    full_world.save_policy(full_world.reference_policy, tmp_path / "full.safetensors")
    with pytest.raises(CheckpointError, match="full weights, but this run trains LoRA"):
        lora_world.load_policy(tmp_path / "full.safetensors")
    with pytest.raises(CheckpointError, match="LoRA adapter, but this run fine-tunes every weight"):
        full_world.load_policy(path)


def test_only_a_lora_checkpoint_exports_as_an_adapter(worlds, tmp_path):
    from plugins.testbeds.hf.export import write_model

    full_world = worlds[1]
    path = tmp_path / "policy.safetensors"
    full_world.save_policy(full_world.reference_policy, path)
    (tmp_path / "out").mkdir()
    with pytest.raises(UsageError, match="fine-tuned every weight .* has no adapter"):
        write_model(world_settings(initial_model=None), {}, path, tmp_path / "out", adapter=True)
    assert not any((tmp_path / "out").iterdir())


def test_adapters_on_embeddings_are_copied_trained_and_seeded(worlds):
    lora_world, _, prompts, responses = worlds
    world = tiny_world(**{**LORA, "lora_target_modules": "c_attn,wte"})
    reference = world.reference_policy
    assert any("lora_embedding_A" in key for key in lora.spec(reference._model).fresh)
    ref_logps = _logps(world, reference, prompts, responses)
    trained = _trainer("native").train(policy=reference, data=_data(prompts, responses, ref_logps),
                                       rng=np.random.default_rng(0)).policy
    assert len(list(trained.parameters())) == len(lora.spec(reference._model).fresh)
    moved = {k: v for k, v in zip(sorted(lora.spec(reference._model).fresh), trained.trainable_weights())
             if not torch.equal(v, lora.spec(reference._model).fresh[k])}
    assert any("lora_embedding" in key for key in moved)  # the embedding adapter was trained too
    assert np.array_equal(_logps(world, trained.clone(), prompts, responses),
                          _logps(world, trained, prompts, responses))  # and copied with the rest


def test_a_bf16_run_exports_merged_in_bf16(worlds, tmp_path):
    from plugins.testbeds.hf.export import write_model

    _, _, prompts, responses = worlds
    world = tiny_world(**{**LORA, "dtype": "bfloat16"})
    ref_logps = _logps(world, world.reference_policy, prompts, responses)
    policy = _trainer("native").train(policy=world.reference_policy, data=_data(prompts, responses, ref_logps),
                                      rng=np.random.default_rng(0)).policy
    world.save_policy(policy, tmp_path / "policy.safetensors")
    (tmp_path / "out").mkdir()
    written = write_model(world_settings(**{**LORA, "dtype": "bfloat16"}), {}, tmp_path / "policy.safetensors",
                          tmp_path / "out")
    assert written["weights"] == "merged" and written["dtype"] == "bfloat16"


def test_an_adapter_with_another_scaling_is_refused_as_initial_model(worlds, tmp_path):
    lora_world = worlds[0]
    folder = tmp_path / "adapter"
    lora.write_adapter(lora_world.reference_policy._model, lora_world.reference_policy.clone().adapter, folder,
                       base_model="base")
    config = json.loads((folder / "adapter_config.json").read_text())
    (folder / "adapter_config.json").write_text(json.dumps({**config, "use_rslora": True}))
    with pytest.raises(UsageError, match="its use_rslora is True"):
        tiny_world(**{**LORA, "initial_model": str(folder)})
    with pytest.raises(UsageError, match="is a PEFT adapter, not a model"):
        tiny_world(**{**LORA, "model": str(folder)})


def test_seed_save_dir_writes_an_adapter_that_a_later_run_loads_as_pi0(worlds, tmp_path, monkeypatch):
    from harness.progress import NullReporter
    from plugins._hf import lora
    from plugins.judges.reward_model import RewardModelJudge
    from plugins.testbeds.hf import HFTestbed

    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    _, _, prompts, responses = worlds
    saved = tmp_path / "pi0"
    seeded = {**LORA, "seed_prompt_share": 0.25, "seed_responses": 4, "temperature": 2.0, "seed_lr": 5e-2,
              "seed_save_dir": str(saved)}
    annotator = RewardModelJudge({"model": str(tiny_paths().reward)})

    def build(**overrides):
        return HFTestbed(world_settings(**overrides)).build_world(seed=0, reporter=NullReporter(), annotator=annotator)

    first = build(**seeded)
    assert first.info["seed_cache"] == "miss" and first.initial_policy.adapter
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in saved.iterdir()}
    recorded = json.loads((saved / "adapter_config.json").read_text())
    assert recorded["base_model_name_or_path"] == str(tiny_paths().policy)
    pi0 = _logps(first, first.initial_policy, prompts, responses)
    assert not np.array_equal(pi0, _logps(first, first.reference_policy, prompts, responses))
    again = build(**seeded)  # the cache holds the adapter
    assert again.info["seed_cache"] == "hit"
    assert np.array_equal(_logps(again, again.initial_policy, prompts, responses), pi0)
    later = build(**{**LORA, "initial_model": str(saved)})  # no seed prompts held out: another prompt table
    mine, theirs = (lora.adapter_state(w.reference_policy._model, w.initial_policy.adapter) for w in (first, later))
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)
    with pytest.raises(UsageError, match="does not fit `model` with this run's LoRA options"):
        build(**{**LORA, "lora_rank": 8, "initial_model": str(saved)})
    with pytest.raises(UsageError, match="is a PEFT adapter; set lora_rank"):
        build(initial_model=str(saved))


@pytest.mark.parametrize("overrides, message", [
    ({"lora_target_modules": " , "}, "lora_target_modules` is empty"),
])
def test_lora_options_that_cannot_run_are_usage_errors(overrides, message):
    from plugins.testbeds.hf import HFTestbed

    with pytest.raises(UsageError, match=message):
        HFTestbed(world_settings(**{**LORA, **overrides}))


def test_a_full_initial_model_and_unknown_target_modules_are_usage_errors():
    with pytest.raises(UsageError, match="with LoRA .* pi_0 is an adapter on `model`"):
        tiny_world(**{**LORA, "initial_model": str(tiny_paths().initial)})
    with pytest.raises(UsageError, match="lora_target_modules` to module names the model has"):
        tiny_world(**{**LORA, "lora_target_modules": "q_proj"})


def test_without_peft_lora_names_the_install(monkeypatch):
    from plugins.testbeds.hf import HFTestbed

    monkeypatch.setitem(sys.modules, "peft", None)
    with pytest.raises(UsageError, match=r"pip install -e '\.\[peft\]'"):
        HFTestbed(world_settings(**LORA))


# ---------------------------------------------------------------- whole runs: resume and export

MODULES = ("plugins.testbeds.hf", "plugins.judges.reward_model")


def _run_args() -> list[str]:
    from harness.plugins import DEFAULT_PLUGINS

    paths = tiny_paths()
    options = {"testbed.model": paths.policy, "testbed.prompts": paths.prompts, "testbed.eval_prompts": paths.eval,
               "testbed.eval_limit": 8, "testbed.threads": 1, "testbed.max_new_tokens": 8, "testbed.temperature": 2.0,
               "testbed.lora_rank": 4,
               "annotator.model": paths.reward, "evaluator.model": paths.reward}
    plugins = [arg for module in MODULES if module not in DEFAULT_PLUGINS for arg in ("--plugin", module)]
    return ["run", *plugins, "--testbed", "hf", "--selector", "smallest", "--responses", "4", "--iterations", "2",
            "--budget", "16", "--seed", "3", *[a for k, v in options.items() for a in ("-o", f"{k}={v}")]]


def _harness(*args, db: Path, kill_at: int | None = None, runs: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "HARNESS_DB": str(db), "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}
    env.pop("KILL_AT_ITERATION", None)
    if kill_at is not None:
        env["KILL_AT_ITERATION"] = str(kill_at)
    if runs is not None:
        env["HARNESS_RUNS_DIR"] = str(runs)
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True, env=env,
                          timeout=900)


@pytest.mark.fault
@pytest.mark.parametrize("kill_at", [1, 2])
def test_a_lora_run_killed_then_resumed_ends_with_the_numbers_of_an_uninterrupted_run(tmp_path, kill_at):
    """Killed in iteration 1 it resumes from checkpoint 0 (pi_0 = pi_ref), in iteration 2 from an adapter."""
    from killer_plugin import KILLER
    from leaderboard.store import Leaderboard

    killer = tmp_path / "killer.py"
    killer.write_text(KILLER)
    db = tmp_path / "board.db"
    args = [*_run_args(), "--trainer", "native_killer", "-o", "trainer.lr=0.05", "--plugin", str(killer)]
    killed = _harness(*args, db=db, kill_at=kill_at)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    (run,) = Leaderboard(db).runs(status=None)
    resumed = _harness("run", "--resume", run["id"], "--plugin", str(killer), "--json", db=db)
    assert resumed.returncode == 0, resumed.stderr
    whole = _harness(*args, "--json", db=db)
    assert whole.returncode == 0, whole.stderr
    other = json.loads(whole.stdout.strip().splitlines()[-1])["run_id"]
    board = Leaderboard(db)
    after, uninterrupted = board.get_run(run["id"]), board.get_run(other)
    assert after["status"] == "finished"
    assert all(row["train_steps"] > 0 for row in board.iterations(other)[1:])  # both iterations trained the adapter
    for key in ("final_win_rate", "final_kl", "labels_used"):
        assert after[key] == uninterrupted[key], key
    assert [r["kl"] for r in board.iterations(run["id"])] == [r["kl"] for r in board.iterations(other)]
    assert after["config"]["testbed"]["settings"]["lora_rank"] == 4


def test_export_merges_the_adapter_or_writes_it_for_peft(tmp_path):
    db = tmp_path / "board.db"
    done = _harness(*_run_args(), "--trainer", "native", "-o", "trainer.lr=0.05", "--json", db=db,
                    runs=tmp_path / "runs")
    assert done.returncode == 0, done.stderr
    run_id = json.loads(done.stdout.strip().splitlines()[-1])["run_id"]
    merged, adapter = tmp_path / "merged", tmp_path / "adapter"
    assert _harness("export", "model", run_id, "--out", str(merged), db=db).returncode == 0
    assert _harness("export", "model", run_id, "--adapter", "--out", str(adapter), db=db).returncode == 0
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in merged.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "generation_config.json"} <= {
        p.name for p in adapter.iterdir()}
    assert "config.json" not in {p.name for p in adapter.iterdir()}
    assert "merged into the base weights" in (merged / "README.md").read_text()
    assert (adapter / "README.md").read_text().startswith("---\nlibrary_name: peft\n")
    # both load in a fresh process and give the run's policy: the same log-probs either way
    process = subprocess.run([sys.executable, "-c", COMPARE, str(tiny_paths().policy), str(merged), str(adapter)],
                             capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert process.returncode == 0, process.stderr
    found = json.loads(process.stdout.strip().splitlines()[-1])
    assert found["merged_vs_adapter"] < 1e-4 and found["merged_vs_base"] > 1e-4


COMPARE = r"""
import json, sys, torch
from transformers import AutoModelForCausalLM
from peft import PeftModel
base_dir, merged_dir, adapter_dir = sys.argv[1:]
ids = torch.tensor([[5, 6, 7, 8, 9, 10, 11]])
merged = AutoModelForCausalLM.from_pretrained(merged_dir).eval()
adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir), adapter_dir).eval()
base = AutoModelForCausalLM.from_pretrained(base_dir).eval()
with torch.no_grad():
    a, b, c = (m(ids).logits for m in (merged, adapted, base))
print(json.dumps({"merged_vs_adapter": float((a - b).abs().max()), "merged_vs_base": float((a - c).abs().max())}))
"""
