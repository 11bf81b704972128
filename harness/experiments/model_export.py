"""``harness export model``: one checkpoint of a run as a directory ``from_pretrained`` loads.

:func:`export_model` finds the run's checkpoint of the asked iteration (the
latest by default), checks its policy file against the sha256 the run recorded,
and has the hf testbed's exporter (:mod:`plugins.testbeds.hf.export`) write the
config, tokenizer, generation config and safetensors weights; this module adds
the model card (``README.md``: the run id, its config hash, budget, strategy and
metrics, with YAML front matter the Hugging Face Hub reads).

Everything is written into a hidden folder beside ``--out`` and renamed to it
only once complete, so a failure leaves nothing under the asked name. Every
refusal is a :class:`~harness.errors.UsageError` (exit 2) that says why: an
iteration whose checkpoint was not kept (``--keep-checkpoints last``), a run of
a testbed whose policy is not a transformers model (the synthetic one), a
policy file whose hash differs from the recorded one, an ``--out`` that exists
and is not empty.

Importing this module is cheap; torch and transformers are imported by the exporter when it runs.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import CheckpointError, UsageError
from harness.experiments import checkpoints

#: The testbeds whose checkpoints hold a transformers causal LM.
MODEL_TESTBEDS = ("hf",)
#: How the exported weights relate to the base model, as the model card says it.
WEIGHTS = {"full": "every weight fine-tuned", "merged": "a LoRA adapter, merged into the base weights",
           "adapter": "a LoRA adapter (load it with peft's PeftModel.from_pretrained on the base model)"}
#: The run-row metrics the model card lists, in this order, where the run has them.
CARD_METRICS = ("final_win_rate", "final_win_rate_se", "initial_win_rate", "final_gold_reward", "final_kl",
                "labels_used")


@dataclass(frozen=True)
class ExportedModel:
    """What :func:`export_model` wrote: the folder, the run, the iteration and the files."""

    out: Path
    run_id: str
    iteration: int
    files: tuple[str, ...]


def check_out(out: Path) -> None:
    """UsageError unless ``out`` is free: absent, or an empty folder."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        what = "is a file" if not out.is_dir() else "exists and is not empty"
        raise UsageError(f"--out {out} {what}; the export writes a new folder: pick another path, or remove it first")


def run_directory(run: Mapping[str, Any], db_path: Path) -> Path:
    """Where ``run`` keeps its checkpoints (the runs root it recorded, else today's beside the database)."""
    from harness.experiments.runner import runs_root

    return Path(run.get("runs_root") or runs_root(db_path)) / str(run["id"])


def find_checkpoint(run: Mapping[str, Any], run_dir: Path, iteration: int | None) -> Path:
    """The checkpoint folder of ``iteration`` (the latest when None); UsageError saying why there is none."""
    run_id = run["id"]
    config = run.get("config") or {}
    kept = checkpoints.kept_iterations(run_dir) if run_dir.is_dir() else []
    if not kept:
        raise UsageError(f"run {run_id} has no checkpoint under {run_dir} (it stopped before pi_0 was evaluated, or "
                         "its run directory was removed or moved: HARNESS_RUNS_DIR)")
    if iteration is None:
        try:
            directory = checkpoints.latest(run_dir)
        except CheckpointError as exc:
            raise UsageError(str(exc)) from None
        return directory if directory is not None else checkpoints.checkpoint_dir(run_dir, kept[-1])
    planned = int(config.get("iterations", kept[-1]))
    if not 0 <= iteration <= planned:
        raise UsageError(f"--iteration {iteration}: run {run_id} has iterations 0 (pi_0) to {planned}")
    directory = checkpoints.checkpoint_dir(run_dir, iteration)
    if iteration in kept:
        return directory
    shown = ", ".join(map(str, kept))
    if config.get("keep_checkpoints", "last") == "last":
        raise UsageError(f"iteration {iteration} of run {run_id} was not kept: the run kept only its last "
                         f"checkpoint (--keep-checkpoints last); kept: {shown}. Export that one, or run again with "
                         "--keep-checkpoints all to keep every iteration's")
    raise UsageError(f"iteration {iteration} of run {run_id} has no checkpoint under {run_dir} (the run has not "
                     f"reached it, or it was removed); kept: {shown}")


def export_model(board: Any, run: Mapping[str, Any], *, db_path: Path, out: Path,
                 iteration: int | None = None, adapter: bool = False) -> ExportedModel:
    """Write ``run``'s policy at ``iteration`` (latest when None) to the new folder ``out``; see the module docstring.

    A LoRA run's adapter is merged into the base weights, or with ``adapter`` written as a PEFT adapter."""
    run_id = str(run["id"])
    config = run.get("config") or {}
    testbed = (config.get("testbed") or {}).get("name") or run.get("testbed")
    if testbed not in MODEL_TESTBEDS:
        raise UsageError(f"run {run_id} ran in the {testbed!r} testbed, whose policy is that world's own small model "
                         "(its policy.safetensors holds no transformers architecture, config or tokenizer), so there "
                         "is nothing from_pretrained could load; only runs of the hf testbed export a model")
    check_out(out)
    directory = find_checkpoint(run, run_directory(run, db_path), iteration)
    try:
        policy_file, state = checkpoints.verified_policy(directory)
    except CheckpointError as exc:
        raise UsageError(f"{exc}; nothing was exported") from None
    from plugins.testbeds.hf.export import write_model

    settings = (config.get("testbed") or {}).get("settings") or {}
    sources = ((run.get("plugins") or {}).get("testbed") or {}).get("sources") or {}
    exported_iteration = int(state["iteration"])
    rows = board.iterations(run_id)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        written = write_model(settings, sources, policy_file, staging, adapter=adapter)
        card = model_card(run, exported_iteration, rows, written, state.get("policy_sha256"))
        (staging / "README.md").write_text(card, encoding="utf-8")
        (staging / "pairsel_export.json").write_text(json.dumps({
            "run_id": run_id, "iteration": exported_iteration, "config_hash": run.get("config_hash"),
            "policy_sha256": state.get("policy_sha256"), "checkpoint": str(directory),
            "base_model": written["base_model"], "weights": written["weights"],
            "generation": written["generation"]}, indent=2) + "\n")
        _usual_permissions(staging)
        check_out(out)  # nothing took the name meanwhile
        if out.exists():
            out.rmdir()
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return ExportedModel(out, run_id, exported_iteration, tuple(sorted(p.name for p in out.iterdir())))


def _usual_permissions(folder: Path) -> None:
    """The modes a plain ``mkdir`` and ``open`` would have given (mkdtemp and some writers make them private)."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for path in folder.rglob("*"):
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "n/a" if value is None else str(value)


def _yaml_string(text: str) -> str:
    return json.dumps(str(text))  # a JSON string is a YAML string


def model_card(run: Mapping[str, Any], iteration: int, rows: Sequence[Mapping[str, Any]],
               written: Mapping[str, Any], policy_sha256: str | None) -> str:
    """The README.md of an exported policy: YAML front matter, then what the run was and what it measured."""
    run_id = run["id"]
    config = run.get("config") or {}
    instance, corpus = run.get("instance_selector"), run.get("corpus_selector")
    selectors = instance if instance == corpus else f"{instance} (instance) / {corpus} (corpus)"
    tags = ["pairsel-harness", "dpo", "iterative-dpo", "trl"] if run.get("trainer") == "trl" else [
        "pairsel-harness", "dpo", "iterative-dpo"]
    library = "peft" if written.get("weights") == "adapter" else "transformers"
    front = ["---", f"library_name: {library}", "pipeline_tag: text-generation"]
    if written.get("base_model_hub_id"):
        front.append(f"base_model: {_yaml_string(written['base_model_hub_id'])}")
    front += ["tags:", *[f"- {_yaml_string(tag)}" for tag in tags], "---", ""]
    row = next((r for r in rows if int(r.get("iteration", -1)) == iteration), {})
    body = [
        f"# Policy of run {run_id}, iteration {iteration}",
        "",
        f"Exported by `harness export model {run_id} --iteration {iteration}"
        f"{' --adapter' if written.get('weights') == 'adapter' else ''}` from the run's checkpoint "
        f"(policy sha256 `{policy_sha256}`). Iteration 0 is pi_0, the policy before any preference labels; "
        f"iteration i is the policy after i rounds of iterative DPO.",
        "",
        "## Run",
        "",
        "| | |",
        "| --- | --- |",
        f"| run id | `{run_id}` |",
        f"| config hash | `{run.get('config_hash')}` |",
        f"| status | {run.get('status')} |",
        f"| budget | {run.get('budget')} gold labels over {run.get('iterations')} iterations |",
        f"| selector | {selectors} |",
        f"| allocator | {run.get('allocator')} |",
        f"| trainer | {run.get('trainer')} |",
        f"| DPO reference | {config.get('reference', 'fixed')} |",
        f"| seed | {run.get('seed')} (world {run.get('world_seed')}) |",
        f"| base model | `{written.get('base_model')}` ({written.get('architecture')}, {written.get('dtype')}) |",
        f"| weights | {WEIGHTS.get(written.get('weights'), WEIGHTS['full'])} |",
        "",
        "## Metrics",
        "",
        "| metric | value |",
        "| --- | --- |",
        *[f"| {name} | {_fmt(run.get(name))} |" for name in CARD_METRICS if run.get(name) is not None],
        *[f"| iteration {iteration}: {name} | {_fmt(row.get(name))} |" for name in ("win_rate", "win_rate_se", "kl",
                                                                                   "gold_reward", "labels")
          if row.get(name) is not None],
        "",
        "## Sampling",
        "",
        "`generation_config.json` holds the settings the run sampled its responses with: "
        + ", ".join(f"{k}={v}" for k, v in written.get("generation", {}).items()) + ".",
    ]
    if (config.get("testbed") or {}).get("settings", {}).get("use_chat_template"):
        body += ["", "The run wrapped every prompt as a user message in the tokenizer's chat template "
                 "(`tokenizer.apply_chat_template(..., add_generation_prompt=True)`); prompt the model the same way."]
    return "\n".join(front + body) + "\n"
