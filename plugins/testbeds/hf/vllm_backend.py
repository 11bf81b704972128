"""The hf testbed's vLLM sampling backend (testbed option ``backend=vllm``; optional extra ``[vllm]``, GPU only).

The loop samples N responses for each of M prompts from pi_{i-1}; with this
backend the world sends them to an in-process ``vllm.LLM``:

* **One request per prompt**, ``SamplingParams(n=N, ...)``: vLLM runs the
  prompt's prefill once and forks its KV cache for the N samples, and the
  engine is built with ``enable_prefix_caching=True`` so a prefix shared by
  many prompts (the chat template's header) is cached across requests too.
  Prompts go in as token ids (``{"prompt_token_ids": ids}``), the exact ids
  the hf world scores, so vLLM never re-tokenizes them.
* **Sampling parameters** are the testbed's: ``temperature``, ``top_k``
  (0 = off, sent as -1), ``top_p``, ``max_tokens = max_new_tokens``,
  ``stop_token_ids`` = every EOS id of the world, one ``seed`` per request
  drawn from the loop's Generator; repetition penalty 1 and no minimum length,
  as in the transformers backend. Greedy evaluation sends ``temperature=0``,
  the KL estimate's pure samples ``temperature=1, top_k=-1, top_p=1``.
  ``detokenize=False``: the harness decodes text itself.
* **Tokens**: each response is vLLM's ``token_ids``, cut after the first EOS
  (vLLM includes the stop token in ``token_ids``); a response stopped by
  ``max_tokens`` (``finish_reason="length"``) has no EOS and all its tokens
  are scored, exactly as in the transformers backend. The world then computes
  log pi and log pi_ref of *those* tokens with transformers, so the implicit
  reward, the trainer's data and the reference log-probs never depend on the
  backend.
* **vLLM's own log-probs** (``logprobs=0``: the sampled token's only) are kept
  as :attr:`VLLMSampler.last_cumulative_logprobs`, ``(M, N)``, and on the world
  as ``HFWorld.last_sampling_logprobs``, for inspection or a ranking of
  one's own. They are **not** used for the implicit reward: they come from
  vLLM's kernels (often bf16, different reductions), and, depending on vLLM's
  ``logprobs_mode`` (testbed option ``vllm_logprobs_mode``), either from the
  raw model distribution (vLLM's default, ``raw_logprobs``) or from the
  sampling distribution after temperature and top-k/top-p
  (``processed_logprobs``). The implicit reward needs log pi_{i-1} and
  log pi_ref of the same tokens computed the same way, and vLLM holds no
  pi_ref, so the world computes both with transformers whatever the backend.

**Getting the current policy into vLLM.** pi_i changes every iteration. The
engine is kept while the policy is the same object (trainers return new
policies and never modify their input), so pi_i is evaluated right after
training and sampled from in iteration i+1 by the same weights. When asked to
sample from another policy, with ``vllm_weight_sync=push`` (the default) the
adapter **pushes the new weights into the running engine**: the policy's
safetensors files (its own directory for pi_ref or a pi_0 loaded unchanged,
else a ``save_pretrained`` dump to a temporary directory, deleted once loaded)
are loaded on every worker by ``LLM.collective_rpc("load_weight_files")``, a
method the engine's workers get from :class:`WeightLoader` (built with
``worker_extension_cls``: vLLM sends a method *name* to its worker processes,
where a function would need its insecure serialization), which hands them to
the worker model's ``load_weights`` (tensor-parallel workers each take their
shard); then ``reset_prefix_cache()`` drops the KV cache computed with the old
weights. The files are those ``model.safetensors.index.json`` lists, else
``model.safetensors``.
This skips the engine start (weight load, memory profiling, CUDA-graph
capture: tens of seconds to minutes for an 8B model) but reaches into vLLM's
worker internals, so it runs behind a check: a vLLM older than
:data:`PUSH_MIN_VERSION` (the V0 engine), an ``LLM`` without
``collective_rpc``/``reset_prefix_cache``, or a push that raises falls back
to rebuilding the engine, with a warning, and ``vllm_weight_sync=rebuild``
always rebuilds: the old engine is shut down and a new ``LLM`` is built on the
policy's directory (or its ``save_pretrained`` dump). ``vllm_tensor_parallel_size``
spreads the engine over that many GPUs.

**LoRA** (``lora_rank`` > 0): the engine is built once, on the base model
(pi_ref) with ``enable_lora=True``, and never changes; each policy's adapter is
written in PEFT's layout to a temporary directory and sent with its requests
as a ``LoRARequest`` (a new id per policy, so vLLM loads it once; the previous
policy's folder is deleted). pi_ref's requests carry no adapter.

**Not verified against a real vLLM**: the tests drive this adapter with a
stand-in class that has ``vllm.LLM``'s call signature
(``tests/test_hf_vllm.py``); no GPU or vLLM was available where it was
written. See ``docs/real-models-extras.md``. A vLLM server (``backend=vllm_server``)
is :mod:`plugins.testbeds.hf.vllm_server`.

vllm and torch are imported inside functions only; :func:`load_engine_api` is
the seam tests replace.
"""

from __future__ import annotations

import gc
import importlib.util
import re
import tempfile
import warnings
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harness.errors import UsageError

FIX = ("install the vLLM extra on a machine with a CUDA GPU (pip install 'pairsel-harness[vllm]'; "
       "see docs/real-models-extras.md), or use the testbed option backend=transformers")


#: The oldest vLLM whose weights are pushed into the running engine (``vllm_weight_sync=push``): the V1 engine,
#: whose ``LLM.collective_rpc`` calls a method of every worker; older releases are rebuilt each iteration.
PUSH_MIN_VERSION = (0, 10)


#: The ``max_lora_rank`` values vLLM accepts; an engine for LoRA rank r gets the smallest one >= r.
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


@dataclass(frozen=True)
class EngineAPI:
    """The vLLM names the adapter uses: ``LLM``, ``SamplingParams`` and ``LoRARequest`` (or stand-ins with their
    signatures), and the installed ``vllm.__version__``."""

    LLM: Any
    SamplingParams: Any
    version: str = ""
    LoRARequest: Any = None


def load_engine_api() -> EngineAPI:
    """``vllm.LLM`` and ``vllm.SamplingParams``; UsageError naming the fix without vllm or without a CUDA GPU."""
    if importlib.util.find_spec("vllm") is None:
        raise UsageError(f"testbed option backend=vllm: vllm is not installed; {FIX}")
    import torch

    if not torch.cuda.is_available():
        raise UsageError(f"testbed option backend=vllm needs a CUDA GPU and torch sees none; {FIX}")
    try:
        import vllm
        from vllm import LLM, SamplingParams
        from vllm.lora.request import LoRARequest
    except Exception as exc:  # a broken install: CUDA/torch mismatch, missing kernels, ...
        raise UsageError(f"testbed option backend=vllm: importing vllm failed ({type(exc).__name__}: {exc}); "
                         f"{FIX}") from None
    return EngineAPI(LLM=LLM, SamplingParams=SamplingParams, version=str(getattr(vllm, "__version__", "")),
                     LoRARequest=LoRARequest)


def check_tensor_parallel(size: int) -> None:
    """UsageError (exit 2) when ``vllm_tensor_parallel_size`` > 1 asks for more GPUs than torch sees (one GPU is
    checked where the engine API is loaded)."""
    import torch

    if int(size) <= 1:
        return
    available = torch.cuda.device_count()
    if int(size) > available:
        raise UsageError(f"testbed option vllm_tensor_parallel_size={size}: this machine has {available} CUDA "
                         "GPU(s); lower it")


def version_tuple(version: str) -> tuple[int, ...]:
    """``"0.31.0rc1+cu128"`` -> ``(0, 31)``: the major and minor numbers of a version string (``()`` if none)."""
    found = re.match(r"\s*(\d+)\.(\d+)", str(version))
    return (int(found.group(1)), int(found.group(2))) if found else ()


class WeightLoader:
    """Mixed into vLLM's workers (``LLM(worker_extension_cls=WORKER_EXTENSION)``), so that
    ``collective_rpc("load_weight_files", args=(files,))`` reaches every worker by name."""

    def load_weight_files(self, files: Sequence[str]) -> int:  # pragma: no cover - runs inside vLLM's workers
        """Load the tensors of the safetensors ``files`` into this worker's model (vLLM's own ``load_weights``
        maps Hugging Face names onto its fused and sharded layers); the number of tensors read."""
        from safetensors import safe_open

        count = 0

        def tensors():
            nonlocal count
            for path in files:
                with safe_open(str(path), framework="pt", device="cpu") as handle:
                    for key in handle.keys():
                        count += 1
                        yield key, handle.get_tensor(key)

        self.model_runner.model.load_weights(weights=tensors())
        return count


#: :class:`WeightLoader`'s qualified name, as vLLM's ``worker_extension_cls`` takes it.
WORKER_EXTENSION = f"{WeightLoader.__module__}.{WeightLoader.__qualname__}"


def weight_files(folder: Path) -> list[Path]:
    """The safetensors files of a ``save_pretrained`` folder: those its index lists, else ``model.safetensors``
    (other ``*.safetensors`` files, e.g. a consolidated copy in another layout, are not the model's weights)."""
    folder = Path(folder)
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        import json

        return [folder / name for name in sorted(set(json.loads(index.read_text())["weight_map"].values()))]
    single = folder / "model.safetensors"
    return [single] if single.is_file() else []


def sampling_shape(settings: Mapping[str, Any], mode: str) -> dict[str, float | int]:
    """Temperature, top-k (-1 = off, vLLM's convention) and top-p of ``mode``: the testbed's options for
    ``sample``, the model's own distribution for ``pure``, temperature 0 for ``greedy``."""
    if mode == "greedy":
        return {"temperature": 0.0, "top_k": -1, "top_p": 1.0}
    if mode == "pure":
        return {"temperature": 1.0, "top_k": -1, "top_p": 1.0}
    top_k = int(settings["top_k"])
    return {"temperature": float(settings["temperature"]), "top_k": top_k if top_k > 0 else -1,
            "top_p": float(settings["top_p"])}


@dataclass(frozen=True)
class Completion:
    """One sampled response as the world needs it: tokens cut after the first EOS, and vLLM's own numbers."""

    tokens: list[int]
    cumulative_logprob: float
    finish_reason: str


def cut_at_eos(tokens: Sequence[int], eos_ids: Sequence[int]) -> list[int]:
    """``tokens`` up to and including the first EOS (all of them when there is none)."""
    array = np.asarray(tokens, dtype=np.int64).reshape(-1)
    hits = np.flatnonzero(np.isin(array, np.asarray(list(eos_ids), dtype=np.int64)))
    return array[: int(hits[0]) + 1 if hits.size else array.size].tolist()


class VLLMSampler:
    """Samples from :class:`~plugins._hf.policy.HFPolicy` objects with one vLLM engine (see the module docstring).

    ``settings`` are the testbed's; ``tokenizer_dir`` is pi_ref's directory
    (every policy shares its tokenizer); ``max_model_len`` bounds prompt plus
    response; ``seed`` is the engine's seed (each request carries its own).
    Counters: ``engines_built``, ``weight_pushes`` (policies pushed into a
    running engine), ``requests`` (one per prompt), ``stops_without_eos``
    (responses vLLM reported as stopped whose last token is none of the
    world's EOS ids; should stay 0).
    """

    def __init__(self, *, api: EngineAPI, settings: Mapping[str, Any], tokenizer_dir: Path, eos_ids: Sequence[int],
                 max_model_len: int, seed: int):
        self.api = api
        self.settings = dict(settings)
        self.tokenizer_dir = Path(tokenizer_dir)
        self.eos_ids = [int(e) for e in eos_ids]
        self.max_model_len = int(max_model_len)
        self.seed = int(seed)
        self.engines_built = 0
        self.weight_pushes = 0
        self.requests = 0
        self.stops_without_eos = 0
        self.last_cumulative_logprobs: np.ndarray | None = None
        self._llm: Any = None
        self._holds: weakref.ref | None = None
        self._weights_dir: tempfile.TemporaryDirectory | None = None  # removed at close(), or at exit
        self.lora_rank = int(self.settings.get("lora_rank", 0) or 0)
        self.adapters_written = 0
        self._adapter: tuple[weakref.ref, Any, tempfile.TemporaryDirectory] | None = None

    def __repr__(self) -> str:
        return f"<VLLMSampler engines_built={self.engines_built} requests={self.requests}>"

    # ------------------------------------------------------------------ engine

    def engine_kwargs(self, model_dir: str) -> dict[str, Any]:
        """What ``LLM(...)`` is built with for the weights in ``model_dir``."""
        s = self.settings
        kwargs: dict[str, Any] = {
            "model": str(model_dir),
            "tokenizer": str(self.tokenizer_dir),
            "dtype": str(s["dtype"]),
            "seed": self.seed,
            "enable_prefix_caching": True,
            "gpu_memory_utilization": float(s["vllm_gpu_memory_utilization"]),
            "max_model_len": self.max_model_len,
            "enforce_eager": bool(s["vllm_enforce_eager"]),
            "tensor_parallel_size": int(s.get("vllm_tensor_parallel_size", 1)),
            "trust_remote_code": False,
        }
        if s.get("vllm_weight_sync", "push") == "push" and self.lora_rank <= 0:
            kwargs["worker_extension_cls"] = WORKER_EXTENSION  # collective_rpc("load_weight_files")
        if s["vllm_logprobs_mode"]:
            kwargs["logprobs_mode"] = str(s["vllm_logprobs_mode"])
        if self.lora_rank > 0:
            kwargs.update(enable_lora=True, max_loras=1,
                          max_lora_rank=next((r for r in VLLM_LORA_RANKS if r >= self.lora_rank), self.lora_rank))
        return kwargs

    def engine_for(self, policy) -> Any:
        """The engine holding ``policy``'s weights: the current one, the current one with ``policy``'s weights
        pushed into it, or a new one built on them. With LoRA: the one engine on the base model."""
        if self.lora_rank > 0:
            if self._llm is None:
                self._llm = self.api.LLM(**self.engine_kwargs(str(self.tokenizer_dir)))
                self.engines_built += 1
            return self._llm
        if self._llm is not None and self._holds is not None and self._holds() is policy:
            return self._llm
        if self._llm is not None and self.settings.get("vllm_weight_sync", "push") == "push" and self._push(policy):
            return self._llm
        self.close()
        model_dir = getattr(policy, "source_dir", None)
        if model_dir is None:  # trained weights: write them where vLLM can read them
            self._weights_dir = tempfile.TemporaryDirectory(prefix="pairsel-vllm-")
            policy.model.save_pretrained(self._weights_dir.name)
            model_dir = self._weights_dir.name
        self._llm = self.api.LLM(**self.engine_kwargs(str(model_dir)))
        self._holds = weakref.ref(policy)
        self.engines_built += 1
        return self._llm

    def push_unavailable(self) -> str | None:
        """Why weights cannot be pushed into this engine (None: they can): an old vLLM or a missing method."""
        version = version_tuple(self.api.version)
        if version and version < PUSH_MIN_VERSION:
            return (f"vLLM {self.api.version} is older than {'.'.join(map(str, PUSH_MIN_VERSION))} (no V1 "
                    "engine)")
        missing = [name for name in ("collective_rpc", "reset_prefix_cache")
                   if not callable(getattr(self._llm, name, None))]
        if missing:
            return f"this vLLM's LLM has no {' or '.join(missing)}"
        return None

    def _push(self, policy) -> bool:
        """Load ``policy``'s weights into the running engine; False (with a warning) when that is not possible
        here or fails, so the caller rebuilds the engine."""
        reason = self.push_unavailable()
        if reason is None:
            dump = None
            try:
                source = getattr(policy, "source_dir", None)
                files = weight_files(source) if source is not None else []
                if not files:
                    dump = tempfile.TemporaryDirectory(prefix="pairsel-vllm-push-")
                    policy.model.save_pretrained(dump.name)
                    files = weight_files(Path(dump.name))
                self._llm.collective_rpc("load_weight_files", args=([str(f) for f in files],))
                self._llm.reset_prefix_cache()  # its KV blocks were computed with the old weights
            except Exception as exc:  # vLLM's internals moved: rebuild instead
                reason = f"the push failed ({type(exc).__name__}: {exc})"
            finally:
                if dump is not None:
                    dump.cleanup()
        if reason is not None:
            warnings.warn(f"vLLM backend: cannot push the new policy's weights into the running engine: {reason}; "
                          "rebuilding the engine instead (slower; -o testbed.vllm_weight_sync=rebuild silences "
                          "this)", RuntimeWarning, stacklevel=3)
            return False
        self._holds = weakref.ref(policy)
        self.weight_pushes += 1
        return True

    def lora_request(self, policy) -> Any:
        """The ``LoRARequest`` of ``policy``'s adapter (None: pi_ref, or no LoRA): the current one, or a new one
        on the adapter written now (the previous policy's folder is deleted)."""
        if self.lora_rank <= 0 or getattr(policy, "adapter", None) is None:
            return None
        if self._adapter is not None and self._adapter[0]() is policy:
            return self._adapter[1]
        folder = tempfile.TemporaryDirectory(prefix="pairsel-vllm-lora-")
        policy.save_pretrained(Path(folder.name) / "adapter", base_model=str(self.tokenizer_dir))
        self.adapters_written += 1
        request = self.api.LoRARequest(f"pairsel-{self.adapters_written}", self.adapters_written,
                                       str(Path(folder.name) / "adapter"))
        if self._adapter is not None:
            self._adapter[2].cleanup()
        self._adapter = (weakref.ref(policy), request, folder)
        return request

    def close(self) -> None:
        """Shut the engine down, free its GPU memory and delete the weights it was built from."""
        llm, self._llm, self._holds = self._llm, None, None
        if llm is not None:
            core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
            shutdown = getattr(core, "shutdown", None)
            if callable(shutdown):  # vLLM V1 runs the engine in a child process: stop it
                try:
                    shutdown()
                except Exception:  # already gone
                    pass
            del llm
            gc.collect()
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        if self._weights_dir is not None:
            self._weights_dir.cleanup()
            self._weights_dir = None
        if self._adapter is not None:
            self._adapter[2].cleanup()
            self._adapter = None

    # ------------------------------------------------------------------ sampling

    def sampling_params(self, n: int, seed: int, mode: str):
        """``SamplingParams`` of one request: ``mode`` is sample, pure (temperature 1, no truncation) or greedy."""
        s = self.settings
        shape = sampling_shape(s, mode)
        return self.api.SamplingParams(
            n=int(n),
            max_tokens=int(s["max_new_tokens"]),
            min_tokens=0,
            repetition_penalty=1.0,
            stop_token_ids=list(self.eos_ids),
            ignore_eos=False,
            seed=int(seed),
            logprobs=0,
            detokenize=False,
            **shape,
        )

    def generate(self, policy, prompt_ids: Sequence[Sequence[int]], n: int, seeds: Sequence[int],
                 mode: str) -> list[list[Completion]]:
        """``n`` completions for each prompt (given as token ids), one request per prompt, in prompt order."""
        if len(seeds) != len(prompt_ids):
            raise ValueError(f"{len(seeds)} seeds for {len(prompt_ids)} prompts")
        if not prompt_ids:
            self.last_cumulative_logprobs = np.zeros((0, int(n)))
            return []
        llm = self.engine_for(policy)
        requests = [{"prompt_token_ids": [int(t) for t in ids]} for ids in prompt_ids]
        params = [self.sampling_params(n, seed, mode) for seed in seeds]
        adapter = self.lora_request(policy)
        extra = {"lora_request": adapter} if adapter is not None else {}
        outputs = list(llm.generate(requests, sampling_params=params, use_tqdm=False, **extra))
        self.requests += len(requests)
        if len(outputs) != len(requests):
            raise RuntimeError(f"vLLM returned {len(outputs)} results for {len(requests)} requests")
        result: list[list[Completion]] = []
        logprobs = np.full((len(requests), int(n)), np.nan)
        for i, output in enumerate(outputs):
            completions = list(output.outputs)
            if len(completions) != n:
                raise RuntimeError(f"vLLM returned {len(completions)} completions for a request with n={n}")
            completions.sort(key=lambda c: int(getattr(c, "index", 0)))
            row = []
            for j, completion in enumerate(completions):
                tokens = cut_at_eos(list(completion.token_ids), self.eos_ids)
                reason = str(getattr(completion, "finish_reason", "") or "")
                if reason == "stop" and (not tokens or tokens[-1] not in self.eos_ids):
                    self.stops_without_eos += 1
                value = getattr(completion, "cumulative_logprob", None)
                if value is not None:
                    logprobs[i, j] = float(value)
                row.append(Completion(tokens=tokens, cumulative_logprob=logprobs[i, j], finish_reason=reason))
            result.append(row)
        self.last_cumulative_logprobs = logprobs
        return result
