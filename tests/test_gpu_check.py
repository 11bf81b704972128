"""scripts/gpu_check.py, the one script a lent GPU machine runs, at toy sizes on the CPU (``--small --device cpu``).

This checks that the script runs its steps and reports them as the docs quote them; what it measures on a GPU is
only known once a GPU has run it (docs/real-models/processes.md lists those checks as unverified until then).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.extras import skip_unless_extra

skip_unless_extra("hf")
skip_unless_extra("peft")

ROOT = Path(__file__).resolve().parent.parent


def _load_script():
    """scripts/gpu_check.py as a module (scripts/ is not put on sys.path: its names would shadow the tests')."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "scripts" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gpu_check = _load_script()


@pytest.mark.slow
def test_the_gpu_check_runs_every_step_at_toy_sizes_and_writes_its_report(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    code = gpu_check.main(["--device", "cpu", "--small", "--out", str(tmp_path)])
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert code == 0, json.dumps(report, indent=1)[-3000:]
    logprobs = report["logprobs_bf16_vs_trl"]
    assert logprobs["sequences_compared"] == logprobs["sequences"] == 64
    assert logprobs["max_relative_difference"] < 1e-5  # float32 on the CPU: the harness's numbers are TRL's
    assert logprobs["implicit_reward_of_a_copy_max_abs"] == 0.0
    run = report["lora_run"]
    assert run["exit_code"] == 0 and len(run["train_steps"]) == 2 and all(s > 0 for s in run["train_steps"])
    assert "speed-up stock/harness" in report["dpo_epoch_benchmark"]["output"]
    markdown = (tmp_path / "gpu_check.md").read_text()
    assert markdown.startswith("GPU check on cpu") and "**lora_run**" in markdown


def test_a_failing_step_is_reported_and_the_others_still_run(tmp_path, monkeypatch):
    def broken(work, device, small):
        raise RuntimeError("no such kernel")

    monkeypatch.setitem(gpu_check.STEPS, "logprobs_bf16_vs_trl", broken)
    monkeypatch.setitem(gpu_check.STEPS, "lora_run", lambda work, device, small: {"passed": True, "seconds": 1})
    monkeypatch.delitem(gpu_check.STEPS, "dpo_epoch_benchmark")
    assert gpu_check.main(["--device", "cpu", "--out", str(tmp_path)]) == 1
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert "RuntimeError: no such kernel" in report["logprobs_bf16_vs_trl"]["error"]
    assert report["lora_run"]["passed"] is True
