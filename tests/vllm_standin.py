"""STAND-INS for vLLM, for tests only: neither is vLLM, and no GPU is involved.

* :func:`complete` is what both stand-ins do for one request: ``n`` samples of
  a transformers model on the CPU with vLLM's request parameters (seeded by
  the request's ``seed``), cut after the first stop token as vLLM's
  ``token_ids`` are, with the raw model's cumulative log-probability.
* :class:`StandinVLLMServer` is a small ``http.server`` on 127.0.0.1 (a free
  port) that answers the part of ``vllm serve``'s OpenAI-compatible API the
  ``vllm_server`` backend uses: ``GET /v1/models``, ``POST /v1/completions``
  (token-id prompts, ``n``, ``seed``, ``stop_token_ids``,
  ``return_token_ids``, ``logprobs``) and the runtime LoRA routes
  ``POST /v1/load_lora_adapter`` / ``/v1/unload_lora_adapter``, which load a
  PEFT adapter folder onto a copy of the base model, as a server started with
  ``--enable-lora --max-lora-rank R`` and ``VLLM_ALLOW_RUNTIME_LORA_UPDATING``
  does. It records every request, load and unload. ``runtime_lora=False``
  plays a server without runtime LoRA loading (404 on those routes),
  ``send_token_ids=False`` one too old to return token ids.

Error bodies have vLLM's shape: ``{"error": {"message": ..., "type": ..., "code": ...}}``.
"""

from __future__ import annotations

import copy
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch


def complete(model, ids: list[int], *, n: int, temperature: float, top_k: int, top_p: float, max_tokens: int,
             stop_token_ids: list[int], seed: int, logprobs: bool) -> list[SimpleNamespace]:
    """``n`` completions of ``ids`` by the transformers ``model`` (see the module docstring)."""
    stop = set(stop_token_ids)
    greedy = temperature == 0
    options = dict(do_sample=not greedy, max_new_tokens=max_tokens, num_return_sequences=n,
                   eos_token_id=list(stop_token_ids), pad_token_id=model.config.pad_token_id)
    if not greedy:
        options.update(temperature=temperature, top_k=max(top_k, 0), top_p=top_p)
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        out = model.generate(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                             **options)
    completions = []
    for index, row in enumerate(out[:, len(ids):].tolist()):
        tokens = []
        for token in row:  # vLLM's token_ids: up to and including the stop token
            tokens.append(token)
            if token in stop:
                break
        finish = "stop" if tokens and tokens[-1] in stop else "length"
        token_logprobs = None
        if logprobs:  # the raw model's log-probs of the sampled tokens (vLLM's default mode)
            with torch.no_grad():
                logits = model(input_ids=torch.tensor([ids + tokens])).logits[0, len(ids) - 1 : -1]
            token_logprobs = torch.log_softmax(logits.double(), -1).gather(-1, torch.tensor(tokens)[:, None])[:, 0]
            token_logprobs = [float(v) for v in token_logprobs]
        completions.append(SimpleNamespace(
            index=index, token_ids=tokens, finish_reason=finish, text="", token_logprobs=token_logprobs,
            cumulative_logprob=None if token_logprobs is None else float(sum(token_logprobs))))
    return completions


class StandinVLLMServer:
    """A loopback stand-in for ``vllm serve BASE --enable-lora`` (see the module docstring)."""

    def __init__(self, base_dir: str | Path, *, served_name: str = "base", max_model_len: int = 4096,
                 max_lora_rank: int = 16, runtime_lora: bool = True, send_token_ids: bool = True,
                 api_key: str | None = None):
        from transformers import AutoModelForCausalLM

        self.base_dir = str(base_dir)
        self.served_name = served_name
        self.max_model_len = max_model_len
        self.max_lora_rank = max_lora_rank
        self.runtime_lora = runtime_lora
        self.send_token_ids = send_token_ids
        self.api_key = api_key
        self.base = AutoModelForCausalLM.from_pretrained(self.base_dir, local_files_only=True).eval()
        self.adapters: dict[str, Any] = {}  # name -> the base with that adapter
        self.requests: list[dict[str, Any]] = []  # POST /v1/completions bodies
        self.loads: list[tuple[str, str]] = []  # (name, path)
        self.unloads: list[str] = []
        self.adapter_weights: dict[str, dict[str, torch.Tensor]] = {}  # name -> its lora tensors, as loaded
        self._lock = threading.Lock()
        self._server: _Server | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> StandinVLLMServer:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.standin = self
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> StandinVLLMServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    # ------------------------------------------------------------------ routes

    def answer(self, method: str, path: str, headers: dict[str, str], body: Any) -> tuple[int, Any]:
        if self.api_key is not None and headers.get("authorization") != f"Bearer {self.api_key}":
            return 401, _error("Unauthorized", 401)
        if method == "GET" and path == "/v1/models":
            data = [{"id": self.served_name, "object": "model", "root": self.base_dir, "parent": None,
                     "max_model_len": self.max_model_len}]
            data += [{"id": name, "object": "model", "root": path, "parent": self.served_name}
                     for name, path in self.loads if name in self.adapters]
            return 200, {"object": "list", "data": data}
        if method == "POST" and path in ("/v1/load_lora_adapter", "/v1/unload_lora_adapter"):
            if not self.runtime_lora:
                return 404, {"detail": "Not Found"}
            return self._load(body) if path.endswith("/load_lora_adapter") else self._unload(body)
        if method == "POST" and path == "/v1/completions":
            return self._complete(body)
        return 404, {"detail": "Not Found"}

    def _load(self, body: dict[str, Any]) -> tuple[int, Any]:
        import peft

        name, path = body.get("lora_name"), body.get("lora_path")
        if not name or not path:
            return 400, _error("Both 'lora_name' and 'lora_path' must be provided.", 400)
        if name in self.adapters:
            return 400, _error(f"The lora adapter '{name}' has already been loaded.", 400)
        try:
            config = json.loads((Path(path) / "adapter_config.json").read_text())
        except OSError as exc:
            return 400, _error(f"Loading lora {name} failed: {exc}", 400)
        if int(config["r"]) > self.max_lora_rank:
            return 400, _error(f"LoRA rank {config['r']} is greater than max_lora_rank {self.max_lora_rank}.", 400)
        model = peft.PeftModel.from_pretrained(copy.deepcopy(self.base), path).eval()
        with self._lock:
            self.adapters[name] = model
            self.loads.append((name, str(path)))
            self.adapter_weights[name] = {k: v.detach().clone() for k, v in model.state_dict().items() if "lora_" in k}
        return 200, f"Success: LoRA adapter '{name}' added successfully."

    def _unload(self, body: dict[str, Any]) -> tuple[int, Any]:
        name = body.get("lora_name")
        with self._lock:
            if name not in self.adapters:
                return 404, _error(f"The lora adapter '{name}' cannot be found.", 404)
            del self.adapters[name]
            self.unloads.append(name)
        return 200, f"Success: LoRA adapter '{name}' removed successfully."

    def _complete(self, body: dict[str, Any]) -> tuple[int, Any]:
        with self._lock:
            self.requests.append(body)
            name = body.get("model")
            model = self.base if name == self.served_name else self.adapters.get(name)
        if model is None:
            return 404, _error(f"The model `{name}` does not exist.", 404)
        prompt = body.get("prompt")
        if not (isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt)):
            return 400, _error("this stand-in takes one prompt as a list of token ids", 400)
        top_k = int(body.get("top_k", -1))
        if not (top_k == -1 or top_k >= 1):
            return 400, _error(f"top_k must be -1 (disable) or at least 1, got {top_k}.", 400)
        logprobs = body.get("logprobs") is not None
        with self._lock:  # one generation at a time: the models are shared
            outputs = complete(model, prompt, n=int(body.get("n", 1)), temperature=float(body.get("temperature", 1)),
                               top_k=top_k, top_p=float(body.get("top_p", 1)), max_tokens=int(body["max_tokens"]),
                               stop_token_ids=list(body.get("stop_token_ids") or []), seed=int(body["seed"]),
                               logprobs=logprobs)
        choices = []
        for out in outputs:
            choice = {"index": out.index, "text": "", "finish_reason": out.finish_reason, "stop_reason": None}
            if logprobs:
                choice["logprobs"] = {"tokens": [f"token_id:{t}" for t in out.token_ids],
                                      "token_logprobs": out.token_logprobs, "top_logprobs": None,
                                      "text_offset": [0] * len(out.token_ids)}
            if self.send_token_ids and body.get("return_token_ids"):
                choice["token_ids"] = list(out.token_ids)
                choice["prompt_token_ids"] = None
            choices.append(choice)
        return 200, {"id": f"cmpl-{len(self.requests)}", "object": "text_completion", "model": name,
                     "choices": choices, "usage": {"prompt_tokens": len(prompt),
                                                   "completion_tokens": sum(len(o.token_ids) for o in outputs)}}


def _error(message: str, code: int) -> dict[str, Any]:
    return {"error": {"message": message, "type": "BadRequestError" if code == 400 else "NotFoundError",
                      "param": None, "code": code}}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    standin: StandinVLLMServer


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _serve(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except json.JSONDecodeError:
            status, answer = 400, _error("malformed JSON", 400)
        else:
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, answer = self.server.standin.answer(method, self.path, headers, body)
        data = (answer if isinstance(answer, str) else json.dumps(answer)).encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain" if isinstance(answer, str) else "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._serve("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._serve("POST")

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - silence the access log
        pass
