"""A scripted STAND-IN for an OpenAI-compatible chat-completions endpoint, for tests only.

This is not an implementation of OpenAI's API and no model runs here: it is a
small ``http.server`` on 127.0.0.1 (a free port) that answers
``POST /v1/chat/completions`` in the chat-completion response format, so that
the ``openai`` judge can be tested without a network or a key. A test scripts
it:

* ``policy(instruction, first, second) -> str`` decides the answer content
  from the texts the judge showed (parsed from the judge's
  ``<instruction>``/``<response_a>``/``<response_b>`` tags); it may also
  return a :class:`Reply` to answer with an error for that question;
* :meth:`StandinServer.fail_next` queues replies (429 with Retry-After, 500,
  a malformed body, ...) used, one per request, before the policy is asked;
* :attr:`StandinServer.requests` records every request (headers, JSON body,
  and the status sent back), so a test can check the key header, the
  temperature and how many calls were made;
* :attr:`StandinServer.connections` counts the TCP connections it accepted
  (``open_connections`` those still open); it speaks HTTP/1.1 with
  keep-alive, and ``close_connections`` makes it close each connection
  after one response, ``"announced"`` (``Connection: close``) or
  ``"silent"`` (as a server whose keep-alive timeout ran out);
  :meth:`Reply.drop` closes the connection without answering;
* log-probabilities: when a request asks for ``logprobs``, the answer
  carries ``choices[0].logprobs.content[0].top_logprobs`` in the
  chat-completions format. A policy may return :class:`Tokens` (candidate
  first tokens with their log-probabilities: the likeliest is the content);
  a plain answer gets itself as the only top token, at log-probability 0.
  ``send_logprobs = False`` plays an endpoint that ignores the request.

Token counts are made up but deterministic: ``prompt_tokens`` is the number
of whitespace-separated words in the messages, ``completion_tokens`` 1.
"""

from __future__ import annotations

import collections
import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

ROUTE = "/v1/chat/completions"
_TAGS = {name: re.compile(rf"<{name}>\n(.*?)\n</{name}>", re.DOTALL)
         for name in ("instruction", "response_a", "response_b")}


@dataclass(frozen=True)
class Reply:
    """A scripted HTTP reply: status, headers and a raw body (bytes or text)."""

    status: int = 200
    body: bytes | str = b""
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def drop(cls) -> Reply:
        """Close the connection without answering (status 0 in the record)."""
        return cls(0)

    @classmethod
    def error(cls, status: int, message: str = "scripted failure", **headers: str) -> Reply:
        """An error reply with an OpenAI-style ``{"error": {"message": ...}}`` body."""
        body = json.dumps({"error": {"message": message, "type": "standin_error"}})
        return cls(status, body, {k.replace("_", "-"): v for k, v in headers.items()})


@dataclass(frozen=True)
class Tokens:
    """A policy's answer as candidate first tokens: ``((token, logprob), ...)``; the likeliest is the content."""

    top: tuple[tuple[str, float], ...]

    @property
    def content(self) -> str:
        return max(self.top, key=lambda pair: pair[1])[0]


@dataclass(frozen=True)
class Recorded:
    """One request the stand-in received, and the status it answered with."""

    path: str
    headers: dict[str, str]
    body: Any  # the parsed JSON, or the raw text when it was not JSON
    status: int

    @property
    def texts(self) -> tuple[str, str, str] | None:
        """(instruction, first response, second response) as the judge showed them, if parseable."""
        return _question(self.body)


# ------------------------------------------------------------------ policies


def prefer_longer(instruction: str, first: str, second: str) -> str:
    """Name the longer response (the first on equal length)."""
    return "A" if len(first) >= len(second) else "B"


def prefer_marker(marker: str) -> Callable[[str, str, str], str]:
    """A policy naming the response that contains ``marker`` (else the first shown: a position bias)."""

    def policy(instruction: str, first: str, second: str) -> str:
        return "B" if marker in second and marker not in first else "A"

    return policy


def always(content: str) -> Callable[[str, str, str], str]:
    """A policy answering ``content`` whatever it is shown (e.g. "A": pure position bias)."""
    return lambda instruction, first, second: content


# ------------------------------------------------------------------- server


class StandinServer:
    """The stand-in endpoint; use as a context manager, or call :meth:`start` and :meth:`stop`.

    ``require_key``: when set, a request without ``Authorization: Bearer
    <require_key>`` gets a 401 whose message quotes the key it received
    (as a careless server might), to test that the judge masks it.
    """

    def __init__(self, policy: Callable[[str, str, str], Any] = prefer_longer, *, require_key: str | None = None,
                 port: int = 0):
        self.policy = policy
        self.require_key = require_key
        self.port = port
        self.requests: list[Recorded] = []
        self.connections = 0  # TCP connections accepted
        self.open_connections = 0  # of those, not yet closed
        self.close_connections: str | None = None  # None (keep-alive), "announced" or "silent"
        self.send_logprobs = True
        self._failures: collections.deque[Reply] = collections.deque()
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> StandinServer:
        handler = type("Handler", (_Handler,), {"standin": self})
        self._server = _Server(("127.0.0.1", self.port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02},
                                        name="openai-standin", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5)
            self._server = None

    def __enter__(self) -> StandinServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """The API root to give the judge (``http://127.0.0.1:PORT/v1``)."""
        assert self._server is not None, "start the stand-in first"
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    # -- scripting -----------------------------------------------------------

    def fail_next(self, *replies: Reply) -> None:
        """Answer the next ``len(replies)`` requests with these replies, in order."""
        with self._lock:
            self._failures.extend(replies)

    def clear(self) -> None:
        """Forget the recorded requests."""
        with self._lock:
            self.requests.clear()

    @property
    def n_requests(self) -> int:
        with self._lock:
            return len(self.requests)

    def _reply(self, path: str, headers: dict[str, str], raw: bytes) -> Reply:
        """Decide the reply to one request and record it."""
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = raw.decode("utf-8", "replace")
        with self._lock:
            forced = self._failures.popleft() if self._failures else None
        reply = forced or self._answer(path, headers, body)
        with self._lock:
            self.requests.append(Recorded(path, headers, body, reply.status))
        return reply

    def _answer(self, path: str, headers: dict[str, str], body: Any) -> Reply:
        """The policy's answer, or the error a real endpoint would give for this request."""
        if path != ROUTE:
            return Reply.error(404, f"no route {path}")
        if self.require_key is not None:
            sent = headers.get("Authorization", "")
            if sent != f"Bearer {self.require_key}":
                return Reply.error(401, f"Incorrect API key provided: {sent.removeprefix('Bearer ')}")
        question = _question(body)
        if question is None:
            return Reply.error(400, "the stand-in could not find the instruction and responses")
        outcome = self.policy(*question)
        if isinstance(outcome, Reply):
            return outcome
        tokens = outcome if isinstance(outcome, Tokens) else Tokens(((str(outcome), 0.0),))
        logprobs = tokens if self.send_logprobs and isinstance(body, dict) and body.get("logprobs") else None
        return Reply(200, json.dumps(_completion(body, tokens.content, logprobs)),
                     {"Content-Type": "application/json"})

    def _opened(self, change: int) -> None:
        with self._lock:
            self.connections += max(change, 0)
            self.open_connections += change


class _Server(ThreadingHTTPServer):
    """Quiet about clients that hang up first (a judge that timed out, or closed its kept connections)."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    """Routes every POST through the owning :class:`StandinServer`."""

    standin: StandinServer
    protocol_version = "HTTP/1.1"  # keep-alive: one connection serves many requests
    # Headers and body go out in two writes: with Nagle's algorithm on, the body waits for the client's
    # delayed ACK (~40 ms a request on a kept connection). Real servers (uvicorn, ...) set TCP_NODELAY too.
    disable_nagle_algorithm = True

    def setup(self) -> None:
        super().setup()
        self.standin._opened(1)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.standin._opened(-1)

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        reply = self.standin._reply(self.path, dict(self.headers.items()), raw)
        if reply.status == 0:  # Reply.drop(): hang up without a word
            self.close_connection = True
            return
        body = reply.body.encode("utf-8") if isinstance(reply.body, str) else reply.body
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        if self.standin.close_connections == "announced":
            self.send_header("Connection", "close")  # also sets close_connection
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()
        if self.standin.close_connections == "silent":
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - silence the access log
        pass


def _question(body: Any) -> tuple[str, str, str] | None:
    """(instruction, first, second) from the judge's user message, or None."""
    try:
        user = next(m["content"] for m in body["messages"] if m["role"] == "user")
    except (TypeError, KeyError, StopIteration):
        return None
    found = [pattern.search(user) for pattern in _TAGS.values()]
    if not all(found):
        return None
    return tuple(match.group(1) for match in found)


def _completion(request: Any, content: str, tokens: Tokens | None = None) -> dict[str, Any]:
    """A chat-completion response body answering ``content`` (with ``tokens``' log-probabilities, if given)."""
    words = sum(len(str(m.get("content", "")).split()) for m in request.get("messages", []))
    choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": content},
                              "finish_reason": "stop"}
    if tokens is not None:
        wanted = int(request.get("top_logprobs") or 0)
        ranked = sorted(tokens.top, key=lambda pair: -pair[1])[:wanted]
        chosen = max(tokens.top, key=lambda pair: pair[1])
        choice["logprobs"] = {"content": [{
            "token": chosen[0], "logprob": chosen[1], "bytes": list(chosen[0].encode()),
            "top_logprobs": [{"token": t, "logprob": lp, "bytes": list(t.encode())} for t, lp in ranked],
        }], "refusal": None}
    return {
        "id": "chatcmpl-standin",
        "object": "chat.completion",
        "created": 0,
        "model": request.get("model", ""),
        "choices": [choice],
        "usage": {"prompt_tokens": words, "completion_tokens": 1, "total_tokens": words + 1},
    }


def main(argv: list[str] | None = None) -> int:
    """Serve the stand-in from the command line (the docs' walk-through): prefers the longer response."""
    import argparse
    import time

    parser = argparse.ArgumentParser(description="A stand-in chat-completions endpoint on 127.0.0.1 (tests only).")
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args(argv)
    with StandinServer(port=args.port) as server:
        print(f"stand-in chat-completions endpoint (prefers the longer response) at {server.base_url}", flush=True)
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
