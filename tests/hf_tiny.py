"""Shared helpers of the hf tests: the tiny offline models, built once per session, and a tiny world."""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import tempfile

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TQDM_DISABLE", "1")


@functools.lru_cache(maxsize=None)
def tiny_paths():
    """The tiny policy, pi_0, reward model and data files (:func:`plugins.testbeds.hf.tiny.build_tiny_models`)."""
    import torch

    torch.set_num_threads(1)
    from plugins.testbeds.hf.tiny import build_tiny_models

    root = tempfile.mkdtemp(prefix="pairsel-tiny-")
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    return build_tiny_models(root, seed=0)


def world_settings(**overrides) -> dict:
    paths = tiny_paths()
    settings = {
        "model": str(paths.policy),
        "initial_model": str(paths.initial),
        "prompts": str(paths.prompts),
        "eval_prompts": str(paths.eval),
        "max_new_tokens": 16,
        "threads": 1,
    }
    settings.update(overrides)
    return settings


def tiny_world(**overrides):
    from harness.progress import NullReporter
    from plugins.testbeds.hf import HFTestbed

    return HFTestbed(world_settings(**overrides)).build_world(seed=0, reporter=NullReporter())
