"""A checkpointed hf policy as a directory that ``transformers`` loads as it is (``harness export model``).

:func:`write_model` takes the settings the run's hf testbed was built with, the
policy file of one of its checkpoints (written by
:meth:`plugins.testbeds.hf.world.HFWorld.save_policy`) and a folder, and writes
into that folder what ``AutoModelForCausalLM.from_pretrained`` and
``AutoTokenizer.from_pretrained`` read:

* ``config.json`` and the tokenizer's files, from the run's ``model`` (pi_ref: every
  policy of a run has its architecture and tokenizer);
* ``model.safetensors``, the checkpoint's weights (nothing is pickled);
* ``generation_config.json``, the sampling settings the run drew its responses
  with (``temperature``, ``top_k``, ``top_p``, ``max_new_tokens``) and the EOS
  ids it stopped at, so ``model.generate(...)`` samples as the run did.

The run's bookkeeping (which run, which checkpoint, its hash, the model card)
is :mod:`harness.experiments.model_export`'s. Importing this module is cheap:
torch, transformers and safetensors are imported inside the functions.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from harness.errors import UsageError
from plugins._hf import hub, loading, lora

#: safetensors dtype names -> the ``dtype`` option value the model is loaded in, so the weights copy exactly.
_DTYPES = {"F32": "float32", "BF16": "bfloat16", "F16": "float16"}
#: The testbed options that shape sampling, and the generation config field each becomes.
SAMPLING = {"temperature": "temperature", "top_k": "top_k", "top_p": "top_p", "max_new_tokens": "max_new_tokens"}


def policy_metadata(policy_file: Path) -> tuple[dict[str, str], str]:
    """The safetensors metadata of ``policy_file`` and its tensors' dtype (``float32``, ..., or ``auto``)."""
    from safetensors import safe_open

    with safe_open(str(policy_file), framework="pt") as handle:
        metadata = dict(handle.metadata() or {})
        names = list(handle.keys())
        dtypes = {handle.get_slice(name).get_dtype() for name in names}
    dtype = _DTYPES.get(dtypes.pop(), "auto") if len(dtypes) == 1 else "auto"
    return metadata, dtype


def base_model_value(settings: Mapping[str, Any], sources: Mapping[str, Any]) -> str:
    """The run's ``model`` as the run resolved it: a local directory, or ``ORG/NAME@COMMIT`` (the recorded
    commit of a Hub id, so a moved branch does not change what is exported)."""
    value = settings.get("model")
    if not value:
        raise UsageError("the run's hf testbed has no `model` recorded; its architecture and tokenizer are unknown")
    revision = sources.get("model_revision")
    parsed = hub.parse(str(value))
    if revision and parsed is not None and not Path(str(value)).expanduser().exists():
        return f"{parsed[0]}@{revision}"
    return str(value)


def sampling_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The generation settings of the run's training responses, from its testbed settings."""
    found = {field: settings[option] for option, field in SAMPLING.items() if settings.get(option) is not None}
    if "top_k" in found:
        found["top_k"] = int(found["top_k"])  # 0 = off, as in the run
    return found


def write_model(settings: Mapping[str, Any], sources: Mapping[str, Any], policy_file: Path, out: Path, *,
                adapter: bool = False) -> dict[str, Any]:
    """Write the policy in ``policy_file`` into the (existing, empty) folder ``out``; see the module docstring.

    A LoRA run's policy (its checkpoint holds an adapter) is merged into the base weights, so the folder loads
    as a plain model; with ``adapter`` it is written as a PEFT adapter instead (``adapter_config.json`` naming
    the base model, ``adapter_model.safetensors``) for ``PeftModel.from_pretrained``, with the tokenizer and
    generation config beside it.

    Returns what was written: ``base_model`` (the run's ``model`` value), ``base_model_hub_id`` (its Hub id, or
    None for a local directory), ``architecture``, ``dtype``, ``generation`` (the generation config's fields),
    ``weights`` (``full``, ``merged`` LoRA or ``adapter``). UsageError when the file is not an hf policy of that
    model, or the model cannot be loaded.
    """
    import torch
    from safetensors.torch import load_model as load_weights
    from transformers import GenerationConfig

    from plugins.testbeds.hf.world import CHECKPOINT_FORMAT

    metadata, dtype = policy_metadata(policy_file)
    if "lora" in metadata:  # the adapter's tensors may be float32 on a half-precision base: load the base as it ran
        dtype = metadata.get("dtype") or str(settings.get("dtype") or "auto")
    if metadata.get("format") != CHECKPOINT_FORMAT:
        raise UsageError(f"{policy_file} is not an hf policy (format {metadata.get('format')!r}, expected "
                         f"{CHECKPOINT_FORMAT!r}); only the hf testbed's checkpoints hold a transformers model")
    value = base_model_value(settings, sources)
    label = "the run's testbed option `model`"
    base = loading.local_model_dir(value, label)
    trust = bool(settings.get("trust_remote_code"))
    tokenizer = loading.load_tokenizer(base, label, trust_remote_code=trust)
    model = loading.load_model(base, label, auto_class="AutoModelForCausalLM", dtype=dtype,
                               device=torch.device("cpu"), trust_remote_code=trust)
    architecture = type(model).__name__
    if metadata.get("architecture") not in (None, architecture):
        raise UsageError(f"{policy_file} holds a {metadata['architecture']}, but the run's model {value!r} loads as "
                         f"a {architecture}: the model directory changed since the run")
    weights = "full"
    if "lora" in metadata:
        weights = "adapter" if adapter else "merged"
    elif adapter:
        raise UsageError("--adapter: the run fine-tuned every weight (no lora_rank), so its policy has no adapter; "
                         "export it without --adapter")
    try:
        if "lora" in metadata:
            wrapped, name = _with_adapter(model, json.loads(metadata["lora"]), policy_file)
            model = wrapped if adapter else wrapped.merge_and_unload()
        else:
            load_weights(model, str(policy_file), strict=True, device="cpu")
    except Exception as exc:
        raise UsageError(f"{policy_file} does not fit the run's model {value!r}: {type(exc).__name__}: {exc}") from None
    eos = loading.eos_token_ids(model, tokenizer)
    generation = {"do_sample": True, **sampling_settings(settings), "eos_token_id": eos if len(eos) != 1 else eos[0],
                  "pad_token_id": int(tokenizer.pad_token_id)}
    bos = getattr(model.config, "bos_token_id", None)
    if bos is not None:
        generation["bos_token_id"] = bos
    model.generation_config = GenerationConfig(**generation)
    if weights == "adapter":
        hub_id = None if Path(value).expanduser().exists() else hub.parse(value)
        lora.write_adapter(model, name, out, base_model=hub_id[0] if hub_id else value,
                           revision=hub_id[1] if hub_id else None)
        model.generation_config.save_pretrained(str(out))
    else:
        model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    if not (out / "generation_config.json").exists():  # every version writes it; make sure all the same
        model.generation_config.save_pretrained(str(out))
    parsed = hub.parse(value)
    exists = Path(value).expanduser().exists()
    return {"base_model": str(settings.get("model")), "base_model_hub_id": None if exists or parsed is None else parsed[0],
            "architecture": architecture, "dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
            "generation": generation, "weights": weights}


def _with_adapter(model, config: Mapping[str, Any], policy_file: Path):
    """``model`` wrapped with the LoRA config of a checkpoint and its adapter loaded: ``(peft model, adapter name)``."""
    from safetensors.torch import load_file

    targets = config.get("target_modules")
    targets = targets if isinstance(targets, str) else ",".join(targets or [])
    lora_config = lora.lora_config(rank=int(config["r"]), alpha=float(config["lora_alpha"]),
                                   dropout=float(config.get("lora_dropout") or 0.0), target_modules=targets)
    wrapped = lora.wrap(model, lora_config, seed=0)
    name = lora.new_adapter(wrapped, None)
    lora.load_adapter_state(wrapped, name, load_file(str(policy_file)))
    lora.activate(wrapped, name)
    return wrapped, name
