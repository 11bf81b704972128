"""The hf testbed's vLLM *server* backend (testbed option ``backend=vllm_server``; nothing to install here).

The responses are sampled by a ``vllm serve`` process that may run in another
Python environment or on another machine, over its OpenAI-compatible HTTP API;
everything else (log pi and log pi_ref, training, judges) stays in this
process with transformers, exactly as with the in-process backend
(:mod:`plugins.testbeds.hf.vllm_backend`). Because the server has its own
environment, vLLM's pins on torch and transformers never meet the harness's.

**Policies are LoRA adapters** (``lora_rank`` > 0 is required). The server
holds the base model, pi_ref; a policy pi_i is its adapter, written in PEFT's
layout to ``vllm_server_adapter_dir`` (a folder the server must be able to
read at the same path) and loaded into the running server with
``POST /v1/load_lora_adapter``; the previous policy's adapter is unloaded
(``POST /v1/unload_lora_adapter``) and its folder deleted. A fully
fine-tuned policy has no such route into a running server, hence the
requirement. The server needs ``--enable-lora``, ``--max-lora-rank`` at least
``lora_rank`` and ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True`` in its environment.

**Requests.** One ``POST /v1/completions`` per prompt, ``vllm_server_concurrency``
in flight at once: ``prompt`` is the prompt's token ids (the ids the world
scores), ``n`` = N, ``max_tokens`` = ``max_new_tokens``, the mode's
temperature, top-k (-1 = off) and top-p (those of the in-process backend),
``stop_token_ids`` = every EOS id, ``seed`` one per request from the run's
generator, ``logprobs: 0`` and ``return_token_ids: true`` (the sampled ids;
a server that does not send them back is refused with an upgrade hint). The
responses are cut after their first EOS, as in the in-process backend; the
sum of the returned token log-probs is kept as
``last_cumulative_logprobs`` (inspection only, as there).

**Checks before the run.** ``GET /v1/models`` must answer (else exit 2 naming
the URL and how to start a server), serve ``vllm_server_model`` (default: its
only base model), with a context at least as long as the longest prompt plus
``max_new_tokens``; then one throw-away adapter is loaded and unloaded, so a
server started without runtime LoRA loading, or with too small a
``--max-lora-rank``, stops the run before any training (exit 2). An API key,
where the server was started with one, is read from ``$VLLM_API_KEY``.

Tested against a loopback stand-in server that speaks this part of the API
(``tests/vllm_standin.py``); not yet against a real ``vllm serve``.

**Repeating a run's numbers.** The stand-in answers one request at a time; a
real server batches the requests in flight, and vLLM's numerics depend on the
batch, so the same seeds need not give the same tokens unless the server runs
batch-invariant. Requests to a server on this machine bypass the environment's
proxies.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import urllib.error
import urllib.request
import uuid
import weakref
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from harness.errors import UsageError
from plugins.testbeds.hf.vllm_backend import Completion, cut_at_eos, sampling_shape

API_KEY_ENV = "VLLM_API_KEY"
#: Tries per request when the connection fails or the server answers 502/503/504.
ATTEMPTS = 3


def start_hint(rank: int) -> str:
    return (f"start one in vLLM's own environment with VLLM_ALLOW_RUNTIME_LORA_UPDATING=True vllm serve BASE_MODEL "
            f"--enable-lora --max-lora-rank {max(int(rank), 1)}, where BASE_MODEL is the testbed's `model`, and "
            "point -o testbed.vllm_server_url at it (docs/real-models-extras.md)")


class ServerError(RuntimeError):
    """The server answered with an HTTP error: ``status`` and the message it sent."""

    def __init__(self, status: int, message: str, url: str):
        super().__init__(f"{url} answered HTTP {status}: {message}")
        self.status, self.message, self.url = status, message, url


class ServerUnreachable(RuntimeError):
    """No answer from the server after :data:`ATTEMPTS` tries: ``reason`` is the last connection error."""

    def __init__(self, url: str, reason: object):
        super().__init__(f"the vLLM server did not answer at {url} after {ATTEMPTS} tries ({reason})")
        self.url, self.reason = url, reason


class VLLMServerSampler:
    """Samples from :class:`~plugins._hf.policy.HFPolicy` LoRA policies with a running vLLM server (see the module
    docstring). ``settings`` are the testbed's; ``max_model_len`` is the longest prompt plus ``max_new_tokens``.

    Counters: ``adapters_loaded``, ``requests`` (one per prompt), ``stops_without_eos`` (as the in-process
    backend's).
    """

    def __init__(self, *, settings: Mapping[str, Any], eos_ids: Sequence[int], max_model_len: int):
        self.settings = dict(settings)
        self.url = str(settings["vllm_server_url"]).rstrip("/")
        self.eos_ids = [int(e) for e in eos_ids]
        self.max_model_len = int(max_model_len)
        self.timeout = float(settings["vllm_server_timeout"])
        self.adapters_loaded = 0
        self.requests = 0
        self.stops_without_eos = 0
        self.last_cumulative_logprobs: np.ndarray | None = None
        self._run_tag = uuid.uuid4().hex[:8]
        self._open = _opener(self.url)
        folder = settings.get("vllm_server_adapter_dir") or ""
        self._own_folder = tempfile.TemporaryDirectory(prefix="pairsel-vllm-adapters-") if not folder else None
        self.adapter_root = Path(self._own_folder.name if self._own_folder else folder)
        self._adapter: str | None = None
        self._holds: weakref.ref | None = None
        self.base_model, self.base_root = self.check_server()

    def __repr__(self) -> str:
        return f"<VLLMServerSampler {self.url} model={self.base_model!r} requests={self.requests}>"

    # ------------------------------------------------------------------ HTTP

    def call(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
        """``method`` ``path`` on the server with a JSON ``body``; the decoded JSON answer (or the text, when it is
        not JSON). ServerError on an HTTP error; connection failures are retried, then ServerUnreachable."""
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"}
        if os.environ.get(API_KEY_ENV):
            headers["Authorization"] = f"Bearer {os.environ[API_KEY_ENV]}"
        url = f"{self.url}{path}"
        for attempt in range(ATTEMPTS):
            request = urllib.request.Request(url, data=data, headers=headers, method=method)
            try:
                with self._open(request, timeout=self.timeout) as answer:
                    text = answer.read().decode("utf-8", "replace")
                break
            except urllib.error.HTTPError as exc:
                text = exc.read().decode("utf-8", "replace")
                if exc.code in (502, 503, 504) and attempt + 1 < ATTEMPTS:
                    time.sleep(0.5 * (attempt + 1))
                    continue
                raise ServerError(exc.code, _message(text), url) from None
            except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
                if attempt + 1 == ATTEMPTS:
                    raise ServerUnreachable(url, getattr(exc, "reason", None) or exc) from None
                time.sleep(0.5 * (attempt + 1))
        try:
            return json.loads(text) if text else None
        except json.JSONDecodeError:
            return text

    # ------------------------------------------------------------------ checks

    def check_server(self) -> tuple[str, str]:
        """(served model id, its ``root``) after checking the server answers, serves the model and fits the
        prompts; UsageError (exit 2) naming the fix otherwise."""
        rank = int(self.settings.get("lora_rank", 0))
        try:
            listing = self.call("GET", "/models")
        except ServerError as exc:
            key = (f"; set ${API_KEY_ENV} to the key the server was started with (--api-key)"
                   if exc.status in (401, 403) else "")
            raise UsageError(f"the vLLM server at {self.url} answered HTTP {exc.status} on /models "
                             f"({exc.message}){key}") from None
        except ServerUnreachable as exc:
            raise UsageError(f"testbed option backend=vllm_server: no vLLM server answers at {self.url}/models "
                             f"({exc.reason}); {start_hint(rank)}") from None
        models = listing.get("data", []) if isinstance(listing, dict) else []
        bases = [m for m in models if isinstance(m, dict) and not m.get("parent")]
        wanted = str(self.settings.get("vllm_server_model") or "")
        names = ", ".join(str(m.get("id")) for m in bases) or "none"
        if wanted:
            chosen = [m for m in bases if m.get("id") == wanted]
            if not chosen:
                raise UsageError(f"testbed option vllm_server_model={wanted!r}: the server at {self.url} serves "
                                 f"{names}; name one of them")
        else:
            chosen = bases
            if len(chosen) != 1:
                raise UsageError(f"the vLLM server at {self.url} serves {len(bases)} base models ({names}): name "
                                 "the one that holds the testbed's `model` with -o testbed.vllm_server_model=ID")
        model = chosen[0]
        length = model.get("max_model_len")
        if isinstance(length, int) and length < self.max_model_len:
            raise UsageError(f"the vLLM server's model {model['id']!r} takes {length} tokens, but the longest prompt "
                             f"plus max_new_tokens is {self.max_model_len}: restart it with --max-model-len "
                             f"{self.max_model_len} or more, or lower max_new_tokens")
        return str(model["id"]), str(model.get("root") or model["id"])

    def check_adapters(self, policy) -> None:
        """Load ``policy`` (a LoRA adapter) into the server and unload it again: UsageError (exit 2) when the
        server cannot take adapters at run time, before anything is trained."""
        if not getattr(policy, "is_lora", False) or policy.adapter is None:
            raise ValueError("check_adapters needs a LoRA policy with an adapter")
        name = self._load(policy)
        self._unload(name)

    # ------------------------------------------------------------------ adapters

    def _load(self, policy) -> str:
        """Write ``policy``'s adapter and load it into the server under a new name; the name."""
        self.adapters_loaded += 1
        name = f"pairsel-{self._run_tag}-{self.adapters_loaded}"
        folder = self.adapter_root / name
        policy.save_pretrained(folder, base_model=self.base_root)
        try:
            self.call("POST", "/load_lora_adapter", {"lora_name": name, "lora_path": str(folder.resolve())})
        except ServerError as exc:
            shutil.rmtree(folder, ignore_errors=True)
            rank = int(self.settings.get("lora_rank", 0))
            if exc.status in (404, 405):
                raise UsageError(f"the vLLM server at {self.url} cannot load LoRA adapters at run time (HTTP "
                                 f"{exc.status} on /load_lora_adapter): {start_hint(rank)}") from None
            raise UsageError(f"the vLLM server at {self.url} refused the policy's LoRA adapter ({exc.message}); it "
                             f"must see {folder.parent} at that path and allow rank {rank} "
                             f"(--enable-lora --max-lora-rank {rank})") from None
        return name

    def _unload(self, name: str) -> None:
        try:
            self.call("POST", "/unload_lora_adapter", {"lora_name": name})
        except (ServerError, ServerUnreachable):
            pass  # gone already: nothing to free
        shutil.rmtree(self.adapter_root / name, ignore_errors=True)

    def model_for(self, policy) -> str:
        """The served name that samples ``policy``: the base model for pi_ref, else its adapter (loaded now,
        and the previous one unloaded, when the policy changed)."""
        if not getattr(policy, "is_lora", False):
            raise UsageError("backend=vllm_server samples LoRA policies only (a fully fine-tuned policy cannot be "
                             "loaded into a running server): set -o testbed.lora_rank=16, or use backend=vllm")
        if policy.adapter is None:
            return self.base_model
        if self._adapter is not None and self._holds is not None and self._holds() is policy:
            return self._adapter
        name = self._load(policy)
        if self._adapter is not None:
            self._unload(self._adapter)
        self._adapter, self._holds = name, weakref.ref(policy)
        return name

    def close(self) -> None:
        """Unload the current adapter and delete the adapters this sampler wrote."""
        if self._adapter is not None:
            self._unload(self._adapter)
        self._adapter, self._holds = None, None
        if self._own_folder is not None:
            self._own_folder.cleanup()
            self._own_folder = None

    # ------------------------------------------------------------------ sampling

    def request_body(self, model: str, prompt: Sequence[int], n: int, seed: int, mode: str) -> dict[str, Any]:
        """The ``/v1/completions`` body of one prompt."""
        return {
            "model": model,
            "prompt": [int(t) for t in prompt],
            "n": int(n),
            "max_tokens": int(self.settings["max_new_tokens"]),
            **sampling_shape(self.settings, mode),
            "min_tokens": 0,
            "repetition_penalty": 1.0,
            "stop_token_ids": list(self.eos_ids),
            "ignore_eos": False,
            "seed": int(seed),
            "logprobs": 0,
            "return_token_ids": True,
        }

    def generate(self, policy, prompt_ids: Sequence[Sequence[int]], n: int, seeds: Sequence[int],
                 mode: str) -> list[list[Completion]]:
        """``n`` completions for each prompt (token ids), one request per prompt, in prompt order."""
        if len(seeds) != len(prompt_ids):
            raise ValueError(f"{len(seeds)} seeds for {len(prompt_ids)} prompts")
        if not prompt_ids:
            self.last_cumulative_logprobs = np.zeros((0, int(n)))
            return []
        model = self.model_for(policy)
        bodies = [self.request_body(model, ids, n, seed, mode) for ids, seed in zip(prompt_ids, seeds)]
        workers = max(1, min(int(self.settings["vllm_server_concurrency"]), len(bodies)))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            answers = list(pool.map(lambda body: self.call("POST", "/completions", body), bodies))
        self.requests += len(bodies)
        result: list[list[Completion]] = []
        logprobs = np.full((len(bodies), int(n)), np.nan)
        for i, answer in enumerate(answers):
            choices = sorted(answer.get("choices", []) if isinstance(answer, dict) else [],
                             key=lambda c: int(c.get("index", 0)))
            if len(choices) != n:
                raise RuntimeError(f"the vLLM server returned {len(choices)} completions for a request with n={n}")
            row = []
            for j, choice in enumerate(choices):
                if not isinstance(choice.get("token_ids"), list):
                    raise UsageError(f"the vLLM server at {self.url} sends no token_ids back (return_token_ids): "
                                     "it is older than the harness needs; upgrade vLLM in the server's environment")
                tokens = cut_at_eos(choice["token_ids"], self.eos_ids)
                reason = str(choice.get("finish_reason") or "")
                if reason == "stop" and (not tokens or tokens[-1] not in self.eos_ids):
                    self.stops_without_eos += 1
                values = (choice.get("logprobs") or {}).get("token_logprobs")
                if values:
                    logprobs[i, j] = float(sum(v for v in values[: len(tokens)] if v is not None))
                row.append(Completion(tokens=tokens, cumulative_logprob=logprobs[i, j], finish_reason=reason))
            result.append(row)
        self.last_cumulative_logprobs = logprobs
        return result


def _opener(url: str):
    """``urlopen`` for ``url``: without the environment's proxies for a server on this machine (a proxy would
    see the requests and the API key), with them otherwise."""
    import urllib.parse

    host = urllib.parse.urlsplit(url).hostname or ""
    if host in ("localhost", "127.0.0.1", "::1") or host.startswith("127."):
        return urllib.request.build_opener(urllib.request.ProxyHandler({})).open
    return urllib.request.urlopen


def _message(text: str) -> str:
    """The error message of a server's JSON error body (vLLM's and OpenAI's shapes), else the text itself."""
    try:
        body = json.loads(text)
    except (json.JSONDecodeError, TypeError):
        return text.strip()[:500]
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        if isinstance(body.get("message"), str):
            return body["message"]
        if isinstance(body.get("detail"), str):
            return body["detail"]
    return text.strip()[:500]
