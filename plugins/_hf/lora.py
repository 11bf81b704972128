"""LoRA adapters on one shared base model: pi_ref is the base with its adapters off, every other policy an adapter.

With the hf testbed's ``lora_rank`` > 0 the base model is wrapped once in a
PEFT model (:func:`wrap`). From then on:

* pi_ref is that model with **every adapter layer off** (:func:`activate`
  with ``None``): exactly the base model's outputs, so no second copy of the
  weights is ever held for the reference;
* every trained policy (pi_0 after a seed round, pi_1, ...) is one named
  adapter on the same model; :meth:`plugins._hf.policy.HFPolicy.clone` adds a
  new adapter (a copy of the policy's own, or a fresh one for pi_ref) instead
  of copying the model, so a run holds one base plus a few adapters;
* a policy switches the shared model to its adapter whenever its ``model`` is
  read (:func:`activate`: layers on, that adapter active and the only one
  trainable); the switch is skipped when the model is already in that state;
* adapters whose policies are gone are deleted on the next clone
  (:func:`prune`).

A fresh adapter is PEFT's LoRA initialisation (``B = 0``, so it equals the
base exactly) drawn once, from torch's RNG seeded with the world seed, when
the model is wrapped (:attr:`LoraSpec.fresh`): the same run gives the same
adapters however many were made before.

An adapter's weights are a small state dict (:func:`adapter_state`, keys as
PEFT saves them, without the adapter's name); :func:`write_adapter` writes the
standard PEFT layout (``adapter_config.json`` with the base recorded,
``adapter_model.safetensors``) that ``PeftModel.from_pretrained`` reads, and
:func:`read_adapter` reads it back.

peft is imported inside the functions (the ``peft`` extra); :func:`require`
turns its absence into a UsageError naming the install.
"""

from __future__ import annotations

import warnings
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import UsageError

INSTALL = "pip install -e '.[peft]'"
#: The attribute of the PEFT model that holds its :class:`LoraSpec`.
SPEC_ATTRIBUTE = "_pairsel_lora"
#: The name of the adapter :func:`wrap` must create (PEFT needs one); no policy uses it, so the first clone prunes it.
PLACEHOLDER = "unused"


@dataclass
class LoraSpec:
    """The shared model's LoRA bookkeeping: its config, the seed of fresh adapters and who uses which adapter."""

    config: Any  # peft.LoraConfig
    seed: int
    made: int = 0
    active: tuple[str | None] | None = None  # (adapter,) the model is switched to; None: not switched yet
    users: dict[str, weakref.WeakSet] = field(default_factory=dict)
    kept: set[str] = field(default_factory=set)  # adapters made without a user: never pruned
    fresh: dict = field(default_factory=dict)  # a fresh adapter's weights (adapter_state keys): B = 0, A seeded


def require():
    """The ``peft`` module, or a UsageError naming the install."""
    try:
        import peft
    except ImportError:
        raise UsageError(f"LoRA (testbed option lora_rank > 0) needs peft: {INSTALL}") from None
    return peft


def lora_config(*, rank: int, alpha: float, dropout: float, target_modules: str):
    """PEFT's ``LoraConfig`` for the testbed options (``target_modules``: ``all-linear`` or comma-separated names)."""
    peft = require()
    targets: str | list[str] = str(target_modules).strip()
    if targets != "all-linear":
        targets = [t.strip() for t in targets.split(",") if t.strip()]
        if not targets:
            raise UsageError("testbed option `lora_target_modules` is empty: all-linear, or module names such as "
                             "q_proj,v_proj")
    return peft.LoraConfig(r=int(rank), lora_alpha=float(alpha), lora_dropout=float(dropout), bias="none",
                           target_modules=targets, task_type="CAUSAL_LM")


def wrap(model, config, *, seed: int):
    """``model`` wrapped in a PEFT model with ``config`` (in place: the base weights are not copied), adapters off,
    in eval mode (a trainer switches to train mode for its call only).

    PEFT initialises the first adapter from torch's global RNG, here forked and seeded with ``seed``; its weights
    are kept as every fresh adapter's (:attr:`LoraSpec.fresh`), so fresh adapters are a function of the seed.
    """
    import torch

    peft = require()
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with warnings.catch_warnings(), torch.random.fork_rng(devices=devices):
        warnings.filterwarnings("ignore", message=".*fan_in_fan_out.*")  # GPT-2's Conv1D layers: PEFT handles them
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
        torch.manual_seed(int(seed))
        try:
            wrapped = peft.get_peft_model(model, config, adapter_name=PLACEHOLDER)
        except ValueError as exc:  # e.g. target modules that the model does not have
            raise UsageError(f"LoRA on {type(model).__name__}: {exc}; set the testbed option `lora_target_modules` "
                             "to module names the model has (all-linear works for most)") from None
    found = LoraSpec(config=config, seed=int(seed))
    setattr(wrapped, SPEC_ATTRIBUTE, found)
    found.fresh = adapter_state(wrapped, PLACEHOLDER)
    wrapped.eval()
    activate(wrapped, None)
    return wrapped


def spec(model) -> LoraSpec | None:
    """The model's :class:`LoraSpec`, or None for a model without LoRA adapters (full fine-tuning)."""
    return getattr(model, SPEC_ATTRIBUTE, None)


def unwrap(model):
    """The transformers model inside a PEFT model (LoRA layers in place), or ``model`` itself."""
    return model.get_base_model() if spec(model) is not None else model


def activate(model, adapter: str | None) -> None:
    """Switch the shared model to ``adapter`` (its layers on, it alone trainable) or, for None, every adapter off."""
    found = spec(model)
    if found is None or found.active == (adapter,):
        return
    if adapter is None:
        model.base_model.disable_adapter_layers()
    else:
        model.base_model.enable_adapter_layers()
        model.set_adapter(adapter)  # PEFT: this adapter's weights require grad, every other's do not
    found.active = (adapter,)


def new_adapter(model, source: str | None, user=None) -> str:
    """Add an adapter to the shared model: a copy of ``source``'s weights, or fresh (:attr:`LoraSpec.fresh`,
    equal to the base) for None; the model is left in eval mode.

    ``user`` (the policy that will hold it) is registered, so the adapter is pruned once no policy holds it;
    without one the adapter is kept for good (a one-off model, such as an export's).
    """
    found = spec(model)
    prune(model)
    found.made += 1
    name = f"policy{found.made}"
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*fan_in_fan_out.*")
        model.add_adapter(name, found.config)
    load_adapter_state(model, name, found.fresh if source is None else adapter_state(model, source))
    model.eval()  # PEFT makes the new adapter's dropout modules in train mode
    if user is None:
        found.kept.add(name)
    else:
        found.users[name] = weakref.WeakSet([user])
    found.active = None  # add_adapter may have changed what is active or trainable
    return name


def share(model, adapter: str | None, user) -> None:
    """Register one more ``user`` of ``adapter`` (a policy that reads the same weights through another table)."""
    found = spec(model)
    if found is not None and adapter is not None:
        found.users.setdefault(adapter, weakref.WeakSet()).add(user)


def prune(model) -> list[str]:
    """Delete the adapters no live policy holds; their names."""
    found = spec(model)
    gone = [name for name in list(model.peft_config) if not found.users.get(name) and name not in found.kept]
    for name in gone:
        if len(model.peft_config) == 1:
            break  # PEFT keeps at least one adapter
        with warnings.catch_warnings():  # PEFT notes that it moved the active adapter on: nothing uses it now
            warnings.filterwarnings("ignore", message=".*was active which is now deleted.*")
            model.delete_adapter(name)
        found.users.pop(name, None)
        found.active = None
    return gone


def _owned(key: str, adapter: str) -> bool:
    """Whether the parameter ``key`` is one of ``adapter``'s LoRA weights (linear ``lora_A.NAME.weight``,
    embedding ``lora_embedding_A.NAME``, ...)."""
    parts = key.split(".")
    return adapter in parts and any(part.startswith("lora_") for part in parts)


def trainable_parameters(model, adapter: str) -> list:
    """The parameters of ``adapter`` (what a trainer updates), whatever is active."""
    return [p for key, p in model.named_parameters() if _owned(key, adapter)]


def weights(model, adapter: str | None) -> list:
    """``adapter``'s weights in a fixed order, whatever is active; for None (pi_ref) a fresh adapter's, which
    equal the base: what the "did training change anything" check compares (:mod:`harness.static_policy`)."""
    state = spec(model).fresh if adapter is None else adapter_state(model, adapter)
    return [state[key] for key in sorted(state)]


def adapter_state(model, adapter: str) -> dict:
    """``adapter``'s weights as PEFT saves them (keys without the adapter's name), detached copies."""
    from peft import get_peft_model_state_dict

    state = get_peft_model_state_dict(model, adapter_name=adapter)
    return {key: value.detach().clone().contiguous() for key, value in state.items()}


def load_adapter_state(model, adapter: str, state: dict) -> None:
    """Put ``state`` (from :func:`adapter_state`) into ``adapter``; ValueError when it does not fit exactly."""
    from peft import set_peft_model_state_dict

    expected = set(adapter_state(model, adapter))
    if set(state) != expected:
        missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
        raise ValueError(f"adapter weights do not fit this model's LoRA config: {len(missing)} missing "
                         f"(e.g. {missing[:1]}), {len(extra)} unexpected (e.g. {extra[:1]})")
    set_peft_model_state_dict(model, state, adapter_name=adapter)
    spec(model).active = None


def config_dict(model) -> dict[str, Any]:
    """The LoRA config as JSON-ready values (recorded with checkpoints and exports)."""
    config = spec(model).config.to_dict()
    return {key: (sorted(value) if isinstance(value, set) else value) for key, value in config.items()}


def write_adapter(model, adapter: str, out: Path, *, base_model: str, revision: str | None = None) -> None:
    """The standard PEFT adapter layout in ``out``: ``adapter_config.json`` (``base_model_name_or_path`` =
    ``base_model``, ``revision`` its Hub commit when known) and ``adapter_model.safetensors``;
    ``PeftModel.from_pretrained(base, out)`` loads it."""
    import copy

    from safetensors.torch import save_file

    config = copy.deepcopy(spec(model).config)
    config.base_model_name_or_path = str(base_model)
    config.revision = revision
    config.inference_mode = True
    config.save_pretrained(str(out))
    save_file(adapter_state(model, adapter), str(Path(out) / "adapter_model.safetensors"), metadata={"format": "pt"})


def read_adapter(model, adapter: str, folder: Path) -> None:
    """Load the PEFT adapter in ``folder`` (:func:`write_adapter`'s layout) into ``adapter``; ValueError when its
    rank, alpha or target modules differ from the model's LoRA config, or its weights do not fit."""
    import json

    from safetensors.torch import load_file

    folder = Path(folder)
    saved = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
    mine = spec(model).config
    targets = mine.target_modules if isinstance(mine.target_modules, str) else sorted(mine.target_modules)
    theirs = saved.get("target_modules")
    theirs = theirs if isinstance(theirs, str) or theirs is None else sorted(theirs)
    if saved.get("peft_type", "LORA") != "LORA":
        raise ValueError(f"it is a {saved.get('peft_type')} adapter, not LoRA")
    checks = [("r", mine.r, saved.get("r")), ("lora_alpha", mine.lora_alpha, saved.get("lora_alpha")),
              ("target_modules", targets, theirs)]
    # what changes the scaling or the shapes without changing the names of the weights
    for key in ("use_rslora", "use_dora", "rank_pattern", "alpha_pattern", "layers_to_transform", "bias"):
        checks.append((key, getattr(mine, key, None), saved.get(key, getattr(mine, key, None))))
    for key, expected, found in checks:
        if found != expected and not (found in (None, {}, []) and expected in (None, {}, [])):
            raise ValueError(f"its {key} is {found!r}, this run's is {expected!r}")
    weights = folder / "adapter_model.safetensors"
    if not weights.is_file():
        raise ValueError(f"{weights.name} is missing (only safetensors adapters are read)")
    load_adapter_state(model, adapter, load_file(str(weights)))
