"""The checks that need a GPU, in one script: run it once on a lent GPU machine and paste its summary into the docs.

    python scripts/gpu_check.py --out "$OUT" [--wheels DIR] [--device cuda] [--small]

On the lent machine (no package registry; torch, transformers, accelerate and
peft installed, trl not) trl travels with the working tree as a wheel:
``pip download --no-deps -d wheels/ trl==<the version in constraints.txt>``
here, carry ``wheels/``, and ``--wheels wheels`` installs every wheel in it with
``--no-deps`` before anything is imported. Nothing is downloaded at run time:
every model is built in code.

1. **Log-probs in bf16.** A Qwen2-style model built in code, in bf16 on the
   GPU: the harness's log-probs of random responses against TRL's own
   reference pass (``DPOTrainer`` with ``precompute_ref_log_probs``), on the
   same token ids. Tolerance: every sequence within 1% of its |log-prob|
   (bf16 keeps about 3 significant digits, and the two pad differently).
   Then log pi_theta - log pi_ref with theta a copy of pi_ref's weights: it
   must be exactly 0 (same kernels, same batches).
2. **The real-model example with LoRA** on a model of at least 0.5 B
   parameters built in code (Qwen2 shape, random weights, the character
   tokenizer of the tiny models): ``harness run --testbed hf --trainer trl``
   with ``lora_rank=16``, bf16, two iterations; the run must finish and train.
3. **The DPO-epoch benchmark** (``benchmarks/bench_hf_dpo_epoch.py``) on the
   GPU in bf16: the harness's trainer (reused reference log-probs) against
   stock TRL with a live reference model, with the GPU named. The step passes
   when the benchmark ran; whether the speed-up met its target is reported
   beside it (``target_met``), as measured.

vLLM is not checked (it cannot be carried). Each step's output and timing go
to the files gpu_check.json and gpu_check.md under ``--out``; a failing step
does not stop the others; the exit code is 1 when any step failed.
``--small --device cpu`` runs the same steps at toy sizes (how the script is
tested without a GPU).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for _name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "TQDM_DISABLE"):
    os.environ.setdefault(_name, "1")

#: bf16 log-probs of one sequence may differ from TRL's by this share of their magnitude.
RELATIVE_TOLERANCE = 0.01


def install_wheels(folder: Path) -> list[str]:
    """``pip install --no-deps`` every wheel in ``folder`` (trl on the lent machine); the wheels' names."""
    wheels = sorted(str(p) for p in folder.glob("*.whl"))
    if wheels:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", *wheels], check=True)
    return [Path(w).name for w in wheels]


def benchmark_helpers(*names: str) -> tuple:
    """Functions of ``benchmarks/_hf.py`` (loaded from its file: benchmarks/ stays off sys.path)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("pairsel_benchmarks_hf", ROOT / "benchmarks" / "_hf.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return tuple(getattr(module, name) for name in names)


def environment(device: str) -> dict:
    import torch

    found = {"python": platform.python_version(), "torch": torch.__version__, "device": device}
    for name in ("transformers", "accelerate", "peft", "trl"):
        try:
            found[name] = __import__(name).__version__
        except ImportError:
            found[name] = None
    if device.startswith("cuda"):
        found["gpu"] = torch.cuda.get_device_name(0)
        found["gpu_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    return found


def build_qwen(folder: Path, *, layers: int, hidden: int, intermediate: int, heads: int, kv_heads: int) -> int:
    """A Qwen2-shaped causal LM with random weights and the character tokenizer, saved to ``folder``; its
    parameter count."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from plugins.testbeds.hf.tiny import build_tokenizer

    tokenizer = build_tokenizer()
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=intermediate,
                         num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                         max_position_embeddings=1024, tie_word_embeddings=True,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = Qwen2ForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return int(sum(p.numel() for p in model.parameters()))


def step_logprobs(work: Path, device: str, small: bool) -> dict:
    """Step 1 (see the module docstring)."""
    import copy

    import datasets
    import numpy as np
    from trl import DPOConfig, DPOTrainer

    random_responses, write_prompts = benchmark_helpers("random_responses", "write_prompts")

    from harness.progress import NullReporter
    from plugins.testbeds.hf import HFTestbed

    dtype = "bfloat16" if device.startswith("cuda") else "float32"
    size = dict(layers=2, hidden=64, intermediate=128, heads=2, kv_heads=1) if small else \
        dict(layers=12, hidden=768, intermediate=2048, heads=12, kv_heads=4)
    model_dir = work / "logprob-model"
    n_params = build_qwen(model_dir, **size)
    prompts_file, eval_file = write_prompts(work, 32)
    world = HFTestbed({"model": str(model_dir), "prompts": str(prompts_file), "eval_prompts": str(eval_file),
                       "device": device, "dtype": dtype, "max_new_tokens": 64,
                       "threads": 1}).build_world(seed=0, reporter=NullReporter())
    prompts, responses = random_responses(world, 32, 2, min_length=16, max_length=64)
    # only tokens that survive decode and encode on their own, since TRL tokenizes the text again
    vocab = [t for t in range(len(world.tokenizer)) if t not in {world.pad_id, *world.eos_ids}
             and world.tokenizer.encode(world.tokenizer.decode([t]), add_special_tokens=False) == [t]]
    rng = np.random.default_rng(1)
    for i, j in np.ndindex(*responses.lengths.shape):
        k = int(responses.lengths[i, j])
        responses.tokens[i, j, : k - 1] = rng.choice(vocab, size=k - 1)
    reference = world.reference_policy
    ours = world.logprobs(reference, prompts, responses)
    decode, eos = world.tokenizer.decode, world.tokenizer.eos_token
    texts = {"prompt": [decode(list(world.table.ids[int(r)])) for r in prompts[:, 0]],
             "chosen": [decode(responses.tokens[i, 0, : responses.lengths[i, 0] - 1].tolist()) + eos
                        for i in range(len(prompts))],
             "rejected": [decode(responses.tokens[i, 1, : responses.lengths[i, 1] - 1].tolist()) + eos
                          for i in range(len(prompts))]}
    config = DPOConfig(output_dir=str(work / "trl"), precompute_ref_log_probs=True, report_to="none",
                       use_cpu=device == "cpu", bf16=dtype == "bfloat16", per_device_train_batch_size=8,
                       max_length=None, disable_tqdm=True)
    trainer = DPOTrainer(model=copy.deepcopy(reference.model), ref_model=copy.deepcopy(reference.model),
                         args=config, train_dataset=datasets.Dataset.from_dict(texts),
                         processing_class=world.tokenizer)
    data = trainer.train_dataset
    # TRL tokenizes the text again: compare the sequences whose ids survive the round trip (a random token may not)
    same = np.array([[data[i][key] == responses.tokens[i, j, : responses.lengths[i, j]].tolist()
                      for j, key in enumerate(("chosen_ids", "rejected_ids"))] for i in range(len(prompts))])
    same &= np.array([data[i]["prompt_ids"] == list(world.table.ids[int(prompts[i, 0])])
                      for i in range(len(prompts))])[:, None]
    theirs = np.stack([np.array(data["ref_chosen_logps"]), np.array(data["ref_rejected_logps"])], axis=1)
    difference = np.abs(theirs - ours)[same]
    relative = difference / np.maximum(np.abs(theirs[same]), 1e-9)
    copy_of_reference = reference.clone()
    implicit = world.logprobs(copy_of_reference, prompts, responses) - ours
    return {
        "model": f"Qwen2 shape {size}, {n_params / 1e6:.1f}M parameters, {dtype}",
        "sequences_compared": int(same.sum()), "sequences": int(ours.size),
        "max_abs_difference": float(difference.max()), "max_relative_difference": float(relative.max()),
        "tolerance_relative": RELATIVE_TOLERANCE,
        "implicit_reward_of_a_copy_max_abs": float(np.abs(implicit).max()),
        "passed": bool(same.mean() >= 0.75 and relative.max() <= RELATIVE_TOLERANCE
                       and np.abs(implicit).max() == 0.0),
    }


def step_lora_run(work: Path, device: str, small: bool) -> dict:
    """Step 2 (see the module docstring)."""
    (write_prompts,) = benchmark_helpers("write_prompts")

    size = dict(layers=2, hidden=64, intermediate=128, heads=2, kv_heads=1) if small else \
        dict(layers=30, hidden=1280, intermediate=3456, heads=10, kv_heads=2)
    model_dir = work / "lora-model"
    n_params = build_qwen(model_dir, **size)
    prompts_file, eval_file = write_prompts(work, 256)
    dtype = "bfloat16" if device.startswith("cuda") else "float32"
    options = {"testbed.model": model_dir, "testbed.prompts": prompts_file, "testbed.eval_prompts": eval_file,
               "testbed.device": device, "testbed.dtype": dtype, "testbed.max_new_tokens": 32,
               "testbed.lora_rank": 16, "testbed.lora_alpha": 32, "testbed.temperature": 1.5,
               "trainer.precision": "bf16" if dtype == "bfloat16" else "fp32", "trainer.lr": 1e-4,
               "trainer.batch_size": 8, "annotator.model": model_dir, "evaluator.model": model_dir}
    command = [sys.executable, "-m", "harness", "run", "--testbed", "hf", "--trainer", "trl", "--selector", "smallest",
               "--iterations", "2", "--budget", "64", "--responses", "4", "--db", str(work / "lora.db"), "--json",
               *[arg for key, value in options.items() for arg in ("-o", f"{key}={value}")]]
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, cwd=work)
    seconds = time.perf_counter() - start
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    out = json.loads(lines[-1]) if lines else {}
    rows = out.get("iterations", [])
    return {
        "model": f"Qwen2 shape {size}, {n_params / 1e9:.2f}B parameters, {dtype}, LoRA rank 16",
        "exit_code": result.returncode, "seconds": round(seconds, 1),
        "train_steps": [row.get("train_steps") for row in rows[1:]],
        "kl": [row.get("kl") for row in rows], "labels_used": out.get("labels_used"),
        "stderr_tail": result.stderr[-1500:] if result.returncode else "",
        "passed": result.returncode == 0 and len(rows) == 3 and all((row.get("train_steps") or 0) > 0
                                                                    for row in rows[1:]),
    }


def step_dpo_benchmark(work: Path, device: str, small: bool) -> dict:
    """Step 3 (see the module docstring)."""
    dtype = "bfloat16" if device.startswith("cuda") else "float32"
    size = ["--pairs", "16", "--layers", "2", "--width", "64", "--repeats", "1"] if small else \
        ["--pairs", "256", "--layers", "12", "--width", "768", "--repeats", "3", "--batch", "16"]
    command = [sys.executable, str(ROOT / "benchmarks" / "bench_hf_dpo_epoch.py"), *size, "--device", device,
               "--dtype", dtype]
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT / "benchmarks")
    # exit 1 is the benchmark's own verdict (speed-up below its target): a measurement, reported as such
    return {"command": " ".join(command[1:]), "exit_code": result.returncode, "output": result.stdout.strip(),
            "target_met": result.returncode == 0,
            "stderr_tail": result.stderr[-1500:] if result.returncode not in (0, 1) else "",
            "passed": result.returncode in (0, 1) and "speed-up" in result.stdout}


STEPS = {"logprobs_bf16_vs_trl": step_logprobs, "lora_run": step_lora_run, "dpo_epoch_benchmark": step_dpo_benchmark}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ".")))
    parser.add_argument("--wheels", type=Path, help="install these wheels with --no-deps first (trl)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--small", action="store_true", help="toy sizes (a CPU run of the script itself)")
    parser.add_argument("--only", choices=sorted(STEPS), action="append", help="run only these steps")
    args = parser.parse_args(argv)
    if str(ROOT) not in sys.path:  # the harness's packages, when run as a script from anywhere
        sys.path.insert(0, str(ROOT))
    report: dict = {"installed_wheels": install_wheels(args.wheels) if args.wheels else []}
    report["environment"] = environment(args.device)
    failed = False
    with tempfile.TemporaryDirectory(prefix="pairsel-gpu-check-") as tmp:
        for name, step in STEPS.items():
            if args.only and name not in args.only:
                continue
            start = time.perf_counter()
            work = Path(tmp) / name
            work.mkdir()
            try:
                report[name] = step(work, args.device, args.small)
            except Exception:
                report[name] = {"passed": False, "error": traceback.format_exc()[-2000:]}
            report[name]["step_seconds"] = round(time.perf_counter() - start, 1)
            failed |= not report[name]["passed"]
            print(f"{name}: {'passed' if report[name]['passed'] else 'FAILED'} ({report[name]['step_seconds']} s)",
                  flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_check.json").write_text(json.dumps(report, indent=2, default=str))
    (args.out / "gpu_check.md").write_text(summary(report))
    print(summary(report))
    return 1 if failed else 0


def summary(report: dict) -> str:
    """The report as the Markdown the docs quote."""
    env = report["environment"]
    lines = [f"GPU check on {env.get('gpu', env['device'])} ({env.get('gpu_memory_gib', '?')} GiB): torch "
             f"{env['torch']}, transformers {env['transformers']}, accelerate {env['accelerate']}, peft {env['peft']}, "
             f"trl {env['trl']}", ""]
    for name in STEPS:
        if name in report:
            values = {k: v for k, v in report[name].items() if k not in ("output", "stderr_tail", "error")}
            lines.append(f"- **{name}**: " + ", ".join(f"{k} = {v}" for k, v in values.items()))
            if report[name].get("output"):
                lines += ["", "```", report[name]["output"], "```", ""]
            if report[name].get("error") or report[name].get("stderr_tail"):
                lines += ["", "```", (report[name].get("error") or report[name]["stderr_tail"]).strip(), "```", ""]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
