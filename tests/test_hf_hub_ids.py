"""Models named by Hugging Face Hub id, found in the local Hugging Face cache (issue 19, item 1).

A temporary cache is laid out the way ``hf download`` leaves it
(``models--ORG--NAME/blobs/<sha256>``, ``snapshots/<commit>/<file>`` as
relative symlinks to the blobs, ``refs/main`` holding the commit) from the
tiny models saved with ``save_pretrained``, and ``HF_HUB_CACHE`` points at
it. Everything stays offline (``tests/conftest.py`` sets ``HF_HUB_OFFLINE``).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.errors import UsageError
from harness.plugins import DEFAULT_PLUGINS
from plugins._hf import hub, loading
from tests.extras import skip_unless_extra
from tests.hf_tiny import tiny_paths, tiny_world

skip_unless_extra("hf")

COMMIT_OLD = "1" * 8 + "a" * 32  # the policy: an older commit, also tagged v1
COMMIT_MAIN = "2" * 8 + "b" * 32  # pi_0: what main points at now
COMMIT_REWARD = "3" * 40
REPO = "tiny-org/tiny-policy"
REWARD_REPO = "tiny-org/tiny-reward"


def lay_out(cache: Path, repo_id: str, source: Path, commit: str, refs: tuple[str, ...] = ("main",)) -> Path:
    """Put the files of ``source`` into ``cache`` as the Hub's snapshot ``commit`` of ``repo_id``."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    for file in sorted(p for p in source.rglob("*") if p.is_file()):
        blob = repo / "blobs" / hashlib.sha256(file.read_bytes()).hexdigest()
        if not blob.exists():
            shutil.copyfile(file, blob)
        link = snapshot / file.relative_to(source)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(exist_ok=True)
    for ref in refs:
        (repo / "refs" / ref).write_text(commit)  # no newline, as huggingface_hub writes it
    return snapshot


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory) -> Path:
    cache = tmp_path_factory.mktemp("hf-cache") / "hub"
    paths = tiny_paths()
    lay_out(cache, REPO, paths.policy, COMMIT_OLD, refs=("v1",))
    lay_out(cache, REPO, paths.initial, COMMIT_MAIN, refs=("main",))
    lay_out(cache, REWARD_REPO, paths.reward, COMMIT_REWARD)
    return cache


@pytest.fixture
def cached(hub_cache, monkeypatch) -> Path:
    monkeypatch.setenv("HF_HUB_CACHE", str(hub_cache))
    return hub_cache


def test_every_test_runs_offline():
    assert os.environ["HF_HUB_OFFLINE"] == "1" and os.environ["TRANSFORMERS_OFFLINE"] == "1"
    assert hub.offline()


@pytest.mark.parametrize("value, commit", [
    (REPO, COMMIT_MAIN),
    (f"{REPO}@main", COMMIT_MAIN),
    (f"{REPO}@v1", COMMIT_OLD),
    (f"{REPO}@{COMMIT_OLD}", COMMIT_OLD),
    (f"{REPO}@{COMMIT_OLD[:10]}", COMMIT_OLD),  # an abbreviated commit in the cache
])
def test_a_hub_id_resolves_to_its_cached_snapshot(cached, value, commit):
    source = loading.resolve_model(value, "testbed option `model`")
    assert source.path == cached / "models--tiny-org--tiny-policy" / "snapshots" / commit
    assert source.repo_id == REPO and source.revision == commit
    assert source.provenance() == {"model_source": REPO, "model_revision": commit}


def test_a_local_directory_is_still_a_local_directory(cached):
    source = loading.resolve_model(str(tiny_paths().policy), "testbed option `model`")
    assert source.path == tiny_paths().policy and source.repo_id is None and source.revision is None
    assert source.provenance()["model_source"] == str(tiny_paths().policy)


def test_the_hf_world_loads_models_by_hub_id(cached):
    world = tiny_world(model=f"{REPO}@{COMMIT_OLD}", initial_model=f"{REPO}@main")
    assert world.info["model_source"] == REPO and world.info["model_revision"] == COMMIT_OLD
    assert world.info["initial_model_source"] == REPO and world.info["initial_model_revision"] == COMMIT_MAIN
    local = tiny_world()  # the same models from their save_pretrained directories
    for by_id, by_path in ((world.reference_policy, local.reference_policy),
                           (world.initial_policy, local.initial_policy)):
        for a, b in zip(by_id.model.state_dict().values(), by_path.model.state_dict().values()):
            assert torch.equal(a, b)
    assert world.table.ids == local.table.ids  # the tokenizer came from the snapshot too


def test_a_judge_model_loads_by_hub_id(cached):
    from plugins.judges.reward_model import RewardModelJudge

    prompts, responses = ["say cat", "upper dog"], ["cat", "DOG"]
    by_id = RewardModelJudge({"model": REWARD_REPO}).score_texts(prompts, responses)
    by_path = RewardModelJudge({"model": str(tiny_paths().reward)}).score_texts(prompts, responses)
    assert np.array_equal(by_id, by_path)


@pytest.mark.parametrize("value, command", [
    ("tiny-org/absent", "`hf download tiny-org/absent`"),
    (f"{REPO}@no-such-branch", f"`hf download {REPO} --revision no-such-branch`"),
    (f"{REPO}@{'9' * 40}", f"`hf download {REPO} --revision {'9' * 40}`"),
])
def test_a_model_neither_cached_nor_allowed_names_hf_download(cached, value, command):
    with pytest.raises(UsageError) as caught:
        tiny_world(model=value)
    message = str(caught.value)
    assert command in message and "-o testbed.allow_download=true" in message and str(cached) in message
    assert "huggingface-cli" not in message


def test_a_judge_with_an_uncached_model_fails_at_construction(cached):
    from plugins.judges.reward_model import RewardModelJudge

    with pytest.raises(UsageError, match=r"`hf download tiny-org/absent-rm`.*allow_download=true"):
        RewardModelJudge({"model": "tiny-org/absent-rm"})


def test_allow_download_with_hf_hub_offline_says_so(cached):
    with pytest.raises(UsageError, match="HF_HUB_OFFLINE"):
        tiny_world(model="tiny-org/absent", allow_download=True)


def test_allow_download_lets_huggingface_hub_download(tmp_path, monkeypatch):
    """With the opt-in (and HF_HUB_OFFLINE unset) snapshot_download is asked to fetch; here it is a stand-in."""
    import huggingface_hub

    calls = []

    def fake_snapshot_download(repo_id, **kwargs):
        calls.append((repo_id, kwargs))
        return str(lay_out(Path(kwargs["cache_dir"]), repo_id, tiny_paths().policy, "4" * 40))

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    source = loading.resolve_model("tiny-org/fetched", "testbed option `model`", allow_download=True)
    assert source.revision == "4" * 40 and (source.path / "config.json").is_file()
    assert source.path.is_relative_to(tmp_path)
    loading.resolve_model("tiny-org/other", "testbed option `model`")  # no opt-in: a cache look-up only
    (first, kwargs), (second, local) = calls
    assert first == "tiny-org/fetched" and kwargs["local_files_only"] is False
    assert kwargs["cache_dir"] == str(tmp_path) and "*.onnx" in kwargs["ignore_patterns"]
    assert second == "tiny-org/other" and local["local_files_only"] is True


def test_the_seed_cache_keys_a_hub_id_by_its_snapshot_contents(cached):
    from harness.cache import content_sha256
    from plugins.testbeds.hf.seed_cache import _contents

    assert _contents(f"{REPO}@v1") == {"path_sha256": content_sha256(tiny_paths().policy)}
    assert _contents(REPO) == {"path_sha256": content_sha256(tiny_paths().initial)}
    assert _contents("tiny-org/absent") == "tiny-org/absent"


def test_the_cli_refuses_an_uncached_model_with_exit_2(cli, db_path, cached):
    modules = ("plugins.testbeds.hf", "plugins.judges.reward_model")
    plugin_args = [arg for module in modules if module not in DEFAULT_PLUGINS for arg in ("--plugin", module)]
    paths = tiny_paths()
    result = cli("run", *plugin_args, "--testbed", "hf", "--iterations", "1", "--budget", "4", "--responses", "2",
                 "-o", "testbed.model=HuggingFaceTB/SmolLM2-135M-Instruct", "-o", f"testbed.prompts={paths.prompts}",
                 "-o", f"testbed.eval_prompts={paths.eval}", "-o", f"annotator.model={paths.reward}",
                 "-o", f"evaluator.model={paths.reward}")
    assert result.exit_code == 2, result.output
    assert "hf download HuggingFaceTB/SmolLM2-135M-Instruct" in result.output


def test_the_run_records_the_commit_each_hub_id_resolved_to(cached):
    from harness.config import plan_run
    from harness.experiments.runner import run_record
    from harness.plugins import load_registry

    paths = tiny_paths()
    registry = load_registry([])
    plan = plan_run(registry, testbed="hf", iterations=1, budget=4, n_responses=2, options=(
        f"testbed.model={REPO}@{COMMIT_OLD}", f"testbed.initial_model={REPO}", f"testbed.prompts={paths.prompts}",
        f"testbed.eval_prompts={paths.eval}", f"annotator.model={REWARD_REPO}", f"evaluator.model={paths.reward}"))
    plugins = run_record(plan.config, plan.components, registry)["plugins"]
    sources = plugins["testbed"]["sources"]
    assert {key: sources[key] for key in sources if "model" in key} == {
        "model_source": REPO, "model_revision": COMMIT_OLD,
        "initial_model_source": REPO, "initial_model_revision": COMMIT_MAIN}
    # the data options' provenance beside them (tests/test_hf_datasets_prompts.py)
    assert sources["prompts_source"] == str(paths.prompts) and sources["prompts_fingerprint"]
    assert plugins["annotator"]["sources"]["model_source"] == REWARD_REPO
    assert len(plugins["annotator"]["sources"]["model_revision"]) == 40
    assert plugins["evaluator"]["sources"] == {"model_source": str(paths.reward), "model_revision": None}
    assert "sources" not in plugins["trainer"]  # nothing named outside the harness
