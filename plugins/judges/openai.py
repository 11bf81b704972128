"""The ``openai`` judge: an LLM, behind any OpenAI-compatible chat-completions endpoint, picks the better response.

It works with a hosted API or a local server (``vllm serve MODEL`` exposes
the same ``/v1/chat/completions`` route). Each pair is judged pairwise, in the
manner of AlpacaEval's annotators (Li et al. 2023, "AlpacaEval: An Automatic
Evaluator of Instruction-following Models", github.com/tatsu-lab/alpaca_eval;
Dubois et al. 2023, "AlpacaFarm"): the judge model sees an instruction and two
responses and names the better one with a single token, ``A`` or ``B``, at
temperature 0. The prompt text here is our own.

Position bias is cancelled as in Zheng et al. 2023 ("Judging LLM-as-a-Judge
with MT-Bench and Chatbot Arena"): every pair is asked in both orders, (a, b)
and (b, a). When both answers name the same response it wins; when they
disagree, the pair is a tie (paid for like any label, dropped from DPO).

Policies, stated once:

* **Unparseable answer** (neither ``A`` nor ``B`` after trimming spaces,
  quotes and punctuation, e.g. ``"I cannot decide"``): that order counts as
  no preference, so the pair is a tie. The answer was paid for, so it is
  cached (verdict ``invalid``) and counted in ``usage()["invalid_answers"]``.
  If *every* fresh answer of one call (at least 4) is unparseable, the judge
  is misconfigured (too small ``max_tokens`` for a reasoning model, or a
  model that ignores the instruction) and :class:`JudgeResponseError` is
  raised instead of labelling everything a tie.
* **Malformed body** (not JSON, no ``choices``, no ``message``):
  :class:`JudgeResponseError` at once, no retry; answers already received in
  the call stay cached.
* **Identical responses**: a tie, without asking.
* **HTTP 429, 5xx and connection errors** are retried ``max_retries`` times
  with exponential backoff and jitter (``retry_delay`` * 2^attempt, capped at
  60 s), or after the server's ``Retry-After`` when it sends one; then
  :class:`JudgeRequestError`. Other statuses (400, 401, 404, ...) fail at
  once with a message saying what to fix.

Every answer is written to the judgement cache (:meth:`use_cache`, the
leaderboard database's ``judgements`` table) the moment it arrives, so a
failed or resumed run never pays twice; without a cache the judge keeps its
answers in memory. The cache key covers the model, the judge's prompt
template, ``max_tokens`` and the verdict mode, the instruction, and the two
responses.

The API key is read from the environment variable named by ``api_key_env``
when a request is sent. It is never an option and never kept on the judge,
so it cannot reach the run config, the database, ``repr`` or a pickle; error
messages have it (and anything shaped like an ``sk-`` key) masked.

**Connections are kept open** (HTTP/1.1 keep-alive, standard library only):
each worker thread takes an idle connection to the endpoint from the judge's
pool, sends its request and puts the connection back, so ``concurrency`` k
opens at most k connections, and they outlive one :meth:`compare` call. A
kept connection the server has dropped meanwhile (a keep-alive timeout:
``RemoteDisconnected``, a broken pipe or a reset) is reopened once at once,
without counting as a failure; a fresh connection that fails is a
connection error as above. :meth:`close` (or leaving ``with judge:``, or the
judge being garbage-collected, or the interpreter exiting) closes them.
``http_proxy``/``https_proxy``/``no_proxy`` are honoured as urllib did.

**Weighted verdicts** (``verdict=logprobs``): instead of reading the answer
letter, the judge asks for one token with ``logprobs: true, top_logprobs:
5`` and weighs the two labels as AlpacaEval 2's weighted annotators do
(``logprob_parser`` of github.com/tatsu-lab/alpaca_eval): among the top
log-probabilities of the first generated token, the tokens that are ``A`` or
``B`` once stripped of spaces (either case, as the letter parser accepts)
give ``P(first shown better) = pA / (pA + pB)``. The two orders are averaged,
``p(a better) = (P_ab + 1 - P_ba) / 2``; a pair goes to ``a`` above 0.5, to
``b`` below, and is a tie at exactly 0.5 (pure position bias) or when either
order's top tokens hold neither label. The probability is kept in the cached
answer (a JSON object: the answer token, ``p_first`` and the label tokens'
log-probabilities), the verdict mode is part of the cache key, and
:attr:`OpenAIJudge.last_probabilities` holds ``p(a better)`` per pair of the
last :meth:`compare`. An endpoint that sends no ``logprobs`` back is a
:class:`JudgeResponseError` naming ``verdict=letter``.

``score`` is not supported: this judge gives pairwise preferences only, so it
can be an annotator or an evaluator but not a pointwise explicit-score judge.
"""

from __future__ import annotations

import base64
import email.utils
import http.client
import json
import math
import os
import random
import re
import threading
import time
import urllib.parse
import urllib.request
import weakref
from collections.abc import Iterable, Mapping
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any

import numpy as np

from harness import hookimpl
from harness.errors import PluginError, UsageError
from harness.interfaces import Judge, Labels, pair_texts
from harness.options import Option
from harness.judgements import Judgement, JudgementKey, MemoryJudgementCache, digest

DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_MODEL = "gpt-4o-mini"
BASE_URL_ENV = "OPENAI_BASE_URL"
MODEL_ENV = "HARNESS_OPENAI_MODEL"

SYSTEM_PROMPT = (
    "You are an impartial judge of answers to user instructions. You are shown one instruction and two "
    "responses to it, labelled A and B. Decide which response carries out the instruction better: more "
    "helpful, more accurate, clearer, and honest about what it does not know. Do not let the order of the "
    "responses, their length as such, or their style sway you. Reply with one letter only: A or B."
)

USER_TEMPLATE = (
    "Which response carries out the instruction better?\n\n"
    "<instruction>\n{instruction}\n</instruction>\n\n"
    "<response_a>\n{first}\n</response_a>\n\n"
    "<response_b>\n{second}\n</response_b>\n\n"
    "Reply with exactly one letter: A if response A is better, B if response B is better."
)

#: An answer counts when, trimmed of spaces, quotes and punctuation (and an optional
#: "Response"/"Answer" prefix), it is the letter A or B.
_ANSWER = re.compile(r"^[\W_]*(?:(?:response|answer|output)\s*[:\-]?\s*)?\(?([ab])\)?[\W_]*$", re.IGNORECASE)
#: Something shaped like an OpenAI key, masked in every error message.
_KEY_SHAPE = re.compile(r"sk-[A-Za-z0-9_\-*.]{4,}")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_RETRY_STATUSES = frozenset({408, 409, 429})  # plus every 5xx
_ALL_INVALID_MIN = 4
#: How many top log-probabilities a ``verdict=logprobs`` request asks for (AlpacaEval 2 asks for 5).
TOP_LOGPROBS = 5
VERDICT_MODES = ("letter", "logprobs")
#: A kept-alive connection the server dropped while it sat idle: reopened once before counting as a failure.
_DROPPED = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError, ConnectionAbortedError)


def _env_default(name: str, fallback: str) -> str:
    """``$name`` if set and not empty, else ``fallback`` (read when the plugin is loaded)."""
    return os.environ.get(name, "").strip() or fallback


class JudgeRequestError(PluginError):
    """The endpoint could not be reached or refused the request (after retries where they apply).

    ``status`` is the last HTTP status (None for a connection error), ``url``
    the endpoint and ``attempts`` the number of requests sent.
    """

    def __init__(self, message: str, *, url: str = "", status: int | None = None, attempts: int = 1):
        super().__init__(message)
        self.url = url
        self.status = status
        self.attempts = attempts


class JudgeResponseError(PluginError):
    """The endpoint answered with something that is not a usable chat completion."""


@dataclass(frozen=True)
class _Question:
    """One request: the instruction and two responses in the order shown, and its cache key."""

    key: JudgementKey
    instruction: str
    first: str
    second: str


class OpenAIJudge(Judge):
    name = "openai"
    description = ("An LLM behind any OpenAI-compatible chat-completions endpoint (hosted API or vllm serve) "
                   "picks the better response of each pair, asked in both orders (pairwise only)")
    options = (
        Option("base_url", str, _env_default(BASE_URL_ENV, DEFAULT_BASE_URL),
               f"API root, the part before /chat/completions (default: ${BASE_URL_ENV}, else {DEFAULT_BASE_URL}; "
               "a local vllm serve: http://127.0.0.1:8000/v1)"),
        Option("model", str, _env_default(MODEL_ENV, DEFAULT_MODEL),
               f"model name sent to the endpoint (default: ${MODEL_ENV}, else {DEFAULT_MODEL})"),
        Option("api_key_env", str, "OPENAI_API_KEY",
               "NAME of the environment variable holding the API key (never the key itself); "
               "an unset variable sends no key, as a local server needs"),
        Option("concurrency", int, 4, "requests in flight at once (threads)", min=1, max=256),
        Option("max_retries", int, 5, "retries of a request after HTTP 429, 5xx or a connection error",
               min=0, max=50),
        Option("retry_delay", float, 1.0, "seconds before the first retry; doubled each retry, with jitter, "
               "capped at 60 (a Retry-After header overrides it)", min=0.0, max=600.0),
        Option("timeout", float, 60.0, "seconds to wait for the endpoint to connect or send data",
               min=0.0, max=3600.0, min_inclusive=False),
        Option("max_tokens", int, 4, "most tokens of each answer (one letter is asked for; reasoning models "
               "need far more); verdict=logprobs always asks for 1", min=1, max=65536),
        Option("verdict", str, "letter", "letter: the answer's letter decides each order; logprobs: "
               f"P(A) / (P(A) + P(B)) from the first token's top_logprobs ({TOP_LOGPROBS}), the two orders "
               "averaged, as AlpacaEval 2's weighted judges (the endpoint must return logprobs)",
               choices=VERDICT_MODES),
    )

    #: Longest wait between two attempts, Retry-After included (seconds).
    max_delay = 60.0

    def __init__(self, settings: Mapping[str, Any] | None = None):
        super().__init__(settings)
        self._check_settings()
        self._cache: Any = MemoryJudgementCache()
        self._lock = threading.Lock()
        self._jitter = random.Random()
        self._usage = dict.fromkeys(
            ("prompt_tokens", "completion_tokens", "requests", "retries", "judgements", "cached",
             "pairs", "ties", "disagreements", "invalid_answers", "identical"), 0)
        self._connections = _ConnectionPool()
        weakref.finalize(self, self._connections.close)  # also run at interpreter exit
        #: p(a better) per pair of the last compare (verdict=logprobs; NaN where unknown, always NaN for letter).
        self.last_probabilities = np.zeros(0)

    def close(self) -> None:
        """Close the kept-alive connections (a later request opens new ones)."""
        self._connections.close()

    def __enter__(self) -> OpenAIJudge:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- the Judge interface -------------------------------------------------

    def score(self, *, world, prompts, responses, rng):
        """Not supported: raise UsageError (this judge compares pairs; it gives no pointwise score)."""
        raise UsageError(
            f"judge {self.name!r} is pairwise only: it says which of two responses is better and gives no "
            "score per response, so it cannot fill explicit_reward (--gold-judge or --proxy-judge of an "
            "explicit-score selector). Use it as --annotator or --evaluator, or pick a pointwise judge "
            "(harness list judges)"
        )

    def compare(self, *, world, prompts, responses, pairs, rng) -> Labels:
        """Ask the endpoint about every pair in both orders; agreeing answers win, the rest are ties.

        ``rng`` is unused: the judge asks at temperature 0 and its answers are cached.
        """
        instructions, a_texts, b_texts = pair_texts(world, prompts, responses, pairs)
        fingerprint = self._fingerprint()
        plans = [self._plan(fingerprint, i, a, b) for i, a, b in zip(instructions, a_texts, b_texts)]
        questions = {q.key: q for plan in plans if plan is not None for q in plan}
        answers = self._cache.get_many(questions)
        self._count(cached=len(answers))
        missing = [q for key, q in questions.items() if key not in answers]
        if missing:
            self._check_key_present()
            fresh = self._ask_all(missing)
            answers.update(fresh)
            self._check_not_all_invalid(fresh.values())
        return self._labels(plans, answers)

    def use_cache(self, cache: Any) -> None:
        """Keep every answer in ``cache`` (a :class:`harness.judgements.JudgementCache`); None: in memory."""
        self._cache = MemoryJudgementCache() if cache is None else cache

    def usage(self) -> dict[str, int]:
        """Cumulative counters since construction.

        ``requests`` counts HTTP requests sent (retries included), ``retries``
        the retried ones, ``judgements`` the answers paid for and ``cached``
        the answers taken from the cache; ``prompt_tokens`` and
        ``completion_tokens`` are as billed by the endpoint. Per pair:
        ``pairs`` compared, ``ties`` (disagreements, unparseable answers and
        identical responses), ``disagreements`` (the two orders named
        different responses), ``identical`` (tied without asking);
        ``invalid_answers`` counts unparseable answers received.
        """
        with self._lock:
            return dict(self._usage)

    # -- settings --------------------------------------------------------------

    def _check_settings(self) -> None:
        """UsageError for a base_url that is not http(s), an empty model, or a key given as api_key_env."""
        url = urllib.parse.urlsplit(self.settings["base_url"])
        if url.scheme not in ("http", "https") or not url.netloc:
            raise UsageError(f"option 'base_url' of judge {self.name!r} must be an http(s) URL such as "
                             f"{DEFAULT_BASE_URL} or http://127.0.0.1:8000/v1")
        if not self.settings["model"].strip():
            raise UsageError(f"option 'model' of judge {self.name!r} is empty: name the model the endpoint "
                             f"serves (-o annotator.model=NAME or -o evaluator.model=NAME, or set ${MODEL_ENV})")
        if not _ENV_NAME.match(self.settings["api_key_env"]):
            # Never echo the value: it may be the key itself.
            raise UsageError(f"option 'api_key_env' of judge {self.name!r} takes the NAME of the environment "
                             "variable that holds the API key (e.g. OPENAI_API_KEY), not the key; "
                             "export the key in that variable")

    @property
    def endpoint(self) -> str:
        """The chat-completions URL requests go to."""
        return self.settings["base_url"].rstrip("/") + "/chat/completions"

    def _api_key(self) -> str:
        """The key from the environment ('' when unset); read per request, never stored."""
        return os.environ.get(self.settings["api_key_env"], "").strip()

    def _check_key_present(self) -> None:
        """UsageError, before anything is sent, when the OpenAI API itself is used without a key."""
        host = urllib.parse.urlsplit(self.settings["base_url"]).hostname or ""
        if host.endswith("api.openai.com") and not self._api_key():
            variable = self.settings["api_key_env"]
            raise UsageError(f"judge {self.name!r}: ${variable} is not set; export your API key in it "
                             "(or set api_key_env to the variable that holds it)")

    def _redact(self, text: str) -> str:
        """``text`` with the API key and anything shaped like a key masked."""
        key = self._api_key()
        if key:
            text = text.replace(key, "***")
        return _KEY_SHAPE.sub("sk-***", text)

    # -- questions and labels -----------------------------------------------

    @property
    def _weighted(self) -> bool:
        """Whether verdicts come from log-probabilities (``verdict=logprobs``)."""
        return self.settings["verdict"] == "logprobs"

    def _fingerprint(self) -> str:
        """Hash of everything in a request but the instruction and responses (cache key part).

        The letter mode's fingerprint is unchanged from before ``verdict`` existed, so old caches stay
        valid; the logprobs mode's differs, so letter and weighted answers never mix.
        """
        if self._weighted:
            return digest(SYSTEM_PROMPT, USER_TEMPLATE, "temperature=0", "max_tokens=1", "verdict=logprobs",
                          f"top_logprobs={TOP_LOGPROBS}")
        return digest(SYSTEM_PROMPT, USER_TEMPLATE, "temperature=0", f"max_tokens={self.settings['max_tokens']}")

    def _plan(self, fingerprint: str, instruction: str, a: str, b: str) -> tuple[_Question, _Question] | None:
        """The two questions of one pair, (a shown first, b shown first); None for identical responses."""
        if a == b:
            return None
        x, y = sorted((a, b))
        prompt_hash = digest(fingerprint, instruction)
        pair_hash = digest(x, y)

        def question(first: str, second: str) -> _Question:
            key = JudgementKey(self.name, self.settings["model"], prompt_hash, pair_hash, int(first != x))
            return _Question(key, instruction, first, second)

        return question(a, b), question(b, a)

    def _labels(self, plans: list, answers: Mapping) -> Labels:
        """Labels from the answers: a wins when both orders name it, b likewise, else a tie."""
        n = len(plans)
        prefer_a = np.zeros(n, dtype=bool)
        tie = np.zeros(n, dtype=bool)
        probabilities = np.full(n, np.nan)
        disagreements = identical = 0
        for k, plan in enumerate(plans):
            if plan is None:
                tie[k] = True
                identical += 1
                continue
            first_ab, first_ba = (answers[q.key].verdict for q in plan)
            if self._weighted:
                p_ab, p_ba = (first_probability(answers[q.key].answer) for q in plan)
                if p_ab is None or p_ba is None:  # neither label among an order's top tokens: no preference
                    a_wins = b_wins = False
                else:
                    # (p_ab + (1 - p_ba)) / 2 compared with 1/2 is p_ab against p_ba: exact at a pure position bias
                    probabilities[k] = 0.5 + (p_ab - p_ba) / 2
                    a_wins, b_wins = p_ab > p_ba, p_ab < p_ba
            else:
                a_wins = first_ab == "A" and first_ba == "B"
                b_wins = first_ab == "B" and first_ba == "A"
            prefer_a[k] = a_wins
            tie[k] = not (a_wins or b_wins)
            disagreements += int({first_ab, first_ba} == {"A"} or {first_ab, first_ba} == {"B"})
        self._count(pairs=n, ties=int(tie.sum()), disagreements=disagreements, identical=identical)
        self.last_probabilities = probabilities
        return Labels(prefer_a=prefer_a, tie=tie)

    def _check_not_all_invalid(self, fresh: Iterable) -> None:
        """JudgeResponseError when every fresh answer (at least 4) was neither A nor B."""
        fresh = list(fresh)
        if len(fresh) >= _ALL_INVALID_MIN and all(j.verdict == "invalid" for j in fresh):
            sample = self._redact(fresh[0].answer[:80])
            if self._weighted:
                raise JudgeResponseError(
                    f"judge {self.name!r}: in none of the {len(fresh)} answers of model "
                    f"{self.settings['model']!r} were A or B among the first token's top {TOP_LOGPROBS} "
                    f"log-probabilities (e.g. {sample!r}); use a model that answers with the letter at once, "
                    "or verdict=letter")
            raise JudgeResponseError(
                f"judge {self.name!r}: none of the {len(fresh)} answers of model {self.settings['model']!r} "
                f"was A or B (e.g. {sample!r}); raise max_tokens (now {self.settings['max_tokens']}) if the "
                "model thinks before answering, or use a model that follows the instruction"
            )

    # -- asking ---------------------------------------------------------------

    def _ask_all(self, questions: list[_Question]) -> dict:
        """Ask every question, ``concurrency`` at a time; cache each answer the moment it arrives.

        On the first failure no further question is started and questions
        waiting to retry give up; requests already in flight are finished and
        their answers cached, then the error is raised.
        """
        answers: dict = {}
        errors: list[BaseException] = []
        stop = threading.Event()
        workers = min(self.settings["concurrency"], len(questions))
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="openai-judge")
        futures: list[Future] = []
        try:
            futures = [pool.submit(self._ask, q, stop) for q in questions]
            for future in as_completed(futures):
                self._collect(future, answers, errors)
        finally:
            stop.set()
            pool.shutdown(wait=True, cancel_futures=True)
            for future in futures:  # finished while an interrupt was being handled: keep them too
                if future.done() and not future.cancelled() and future.exception() is None:
                    judgement = future.result()
                    if judgement.key not in answers:
                        self._keep(judgement, answers)
        if errors:
            raise errors[0]
        return answers

    def _collect(self, future: Future, answers: dict, errors: list) -> None:
        """Keep a finished request's answer, or note its error."""
        try:
            judgement = future.result()
        except CancelledError:
            return
        except Exception as exc:  # noqa: BLE001 - re-raised by _ask_all once in-flight requests are kept
            errors.append(exc)
            return
        self._keep(judgement, answers)

    def _keep(self, judgement: Judgement, answers: dict) -> None:
        """Write a paid-for answer to the cache and count it."""
        self._cache.put(judgement)
        answers[judgement.key] = judgement
        self._count(judgements=1, prompt_tokens=judgement.prompt_tokens,
                    completion_tokens=judgement.completion_tokens,
                    invalid_answers=int(judgement.verdict == "invalid"))

    def _ask(self, question: _Question, stop: threading.Event) -> Judgement:
        """One question, with retries: the parsed answer. Sets ``stop`` when it fails."""
        if stop.is_set():
            raise CancelledError
        try:
            body = self._post(self._request_body(question), stop)
            content, prompt_tokens, completion_tokens = self._parse_completion(body)
            if self._weighted:
                verdict, content = self._weigh(body, content)
            else:
                verdict = parse_verdict(content)
        except CancelledError:
            raise
        except BaseException:
            stop.set()  # another question failed for good: start nothing new
            raise
        return Judgement(key=question.key, verdict=verdict, answer=content,
                         prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)

    def _weigh(self, body: bytes, content: str) -> tuple[str, str]:
        """(verdict, answer to cache) of a ``verdict=logprobs`` completion; JudgeResponseError without logprobs.

        The verdict is the likelier label (``invalid`` when neither is among the top tokens; the sampled
        letter at an exact 1/2); the answer is JSON holding the token, ``p_first`` and the label log-probs.
        """
        top = _top_logprobs(json.loads(body))
        if top is None:
            raise JudgeResponseError(self._redact(
                f"judge {self.name!r}: {self.endpoint} sent no logprobs (choices[0].logprobs.content[0]"
                f".top_logprobs) for model {self.settings['model']!r}, which verdict=logprobs needs; use an "
                "endpoint and model that return log-probabilities, or set verdict=letter "
                "(-o annotator.verdict=letter or -o evaluator.verdict=letter)"))
        labels: dict[str, list[float]] = {"A": [], "B": []}
        for token, logprob in top:
            label = token.strip().upper()
            if label in labels:
                labels[label].append(logprob)
        lp_a, lp_b = (_logsumexp(labels["A"]), _logsumexp(labels["B"]))
        p_first = weighted_preference(lp_a, lp_b)
        if p_first is None:
            verdict = "invalid"
        elif p_first != 0.5:
            verdict = "A" if p_first > 0.5 else "B"
        else:
            verdict = parse_verdict(content)
        answer = json.dumps({"content": content, "p_first": p_first,
                             "logprobs": {"A": _finite_or_none(lp_a), "B": _finite_or_none(lp_b)}})
        return verdict, answer

    def _request_body(self, question: _Question) -> bytes:
        """The chat-completions request of one question, as JSON bytes."""
        user = USER_TEMPLATE.format(instruction=question.instruction, first=question.first, second=question.second)
        return json.dumps({
            "model": self.settings["model"],
            "messages": [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}],
            "temperature": 0,
            "n": 1,
            **({"max_tokens": 1, "logprobs": True, "top_logprobs": TOP_LOGPROBS} if self._weighted
               else {"max_tokens": self.settings["max_tokens"]}),
        }).encode("utf-8")

    def _post(self, data: bytes, stop: threading.Event) -> bytes:
        """POST ``data`` to the endpoint; retry 429, 5xx and connection errors; the response body.

        Gives up (CancelledError) before a retry once ``stop`` is set.
        """
        attempts = self.settings["max_retries"] + 1
        for attempt in range(attempts):
            if attempt:
                if stop.is_set():
                    raise CancelledError
                self._count(retries=1)
            self._count(requests=1)
            try:
                status, reason, headers, body = self._exchange(data)
            except (http.client.HTTPException, OSError) as exc:
                status, retry_after = None, None
                failure = f"connection failed ({exc})"
            else:
                if 200 <= status <= 299:
                    return body
                detail, retry_after = _error_detail(body, reason), _retry_after(headers)
                if not _retryable(status):
                    raise self._refused(status, detail) from None
                failure = f"HTTP {status}: {detail}"
            if attempt + 1 < attempts:
                self._sleep(self._delay(attempt, retry_after))
        raise self._exhausted(status, failure, attempts)

    def _exchange(self, data: bytes) -> tuple[int, str, Any, bytes]:
        """One POST over a pooled keep-alive connection: (status, reason, headers, body).

        A kept connection that turns out to have been dropped by the server is reopened once.
        """
        route = _route(self.endpoint, self.settings["timeout"])
        headers = self._headers()
        connection, reused = self._connections.take(route)
        try:
            try:
                response = _send(connection, route, data, headers)
            except _DROPPED:
                if not reused:
                    raise
                connection.close()  # the next request on it opens a new socket
                response = _send(connection, route, data, headers)
            body = response.read()
        except BaseException:
            connection.close()
            raise
        self._connections.give(route, connection)
        return response.status, response.reason or "", response.headers, body

    def _headers(self) -> dict[str, str]:
        """The request headers, with the key (if any) in the Authorization header."""
        headers = {"Content-Type": "application/json", "Accept": "application/json",
                   "User-Agent": "pairsel-harness-openai-judge"}
        key = self._api_key()
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        """Seconds to wait before retry ``attempt + 1``: Retry-After if sent, else backoff with jitter."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_delay)
        delay = min(self.settings["retry_delay"] * 2 ** attempt, self.max_delay)
        return delay * (0.5 + 0.5 * self._jitter.random())

    def _sleep(self, seconds: float) -> None:
        """Wait between attempts (tests replace this to run fast and see the delays)."""
        time.sleep(seconds)

    def _refused(self, status: int, detail: str) -> JudgeRequestError:
        """The error for a status that retrying cannot fix, naming the fix."""
        if status in (401, 403):
            fix = (f"check the API key in ${self.settings['api_key_env']} (api_key_env names the variable) "
                   "and that it may use this model")
        elif status == 404:
            fix = (f"check base_url (the API root, usually ending in /v1) and that the endpoint serves model "
                   f"{self.settings['model']!r}")
        else:
            fix = f"check model {self.settings['model']!r} and max_tokens ({self.settings['max_tokens']})"
        message = f"judge {self.name!r}: HTTP {status} from {self.endpoint}: {detail}; {fix}"
        return JudgeRequestError(self._redact(message), url=self.endpoint, status=status)

    def _exhausted(self, status: int | None, failure: str, attempts: int) -> JudgeRequestError:
        """The error once every attempt failed with a retryable status or a connection error."""
        if status is None:
            fix = "is the server running (e.g. vllm serve) and base_url right?"
        else:
            fix = "the endpoint is overloaded or failing; try again later or raise max_retries"
        message = (f"judge {self.name!r}: {failure} from {self.endpoint}, after {attempts} attempt(s) "
                   f"(max_retries={self.settings['max_retries']}); {fix}. Answers received before this are cached")
        return JudgeRequestError(self._redact(message), url=self.endpoint, status=status, attempts=attempts)

    def _parse_completion(self, body: bytes) -> tuple[str, int, int]:
        """The answer text and token counts of a chat-completions body; JudgeResponseError if malformed."""
        def malformed(what: str) -> JudgeResponseError:
            snippet = body[:200].decode("utf-8", "replace")
            return JudgeResponseError(self._redact(
                f"judge {self.name!r}: {self.endpoint} answered with {what}, not a chat completion "
                f"(body starts {snippet!r}); check that base_url is an OpenAI-compatible API root (…/v1)"))

        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise malformed("a body that is not JSON") from None
        if not isinstance(data, dict):
            raise malformed("JSON that is not an object")
        choices = data.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise malformed("no choices")
        message = choices[0].get("message")
        if not isinstance(message, dict):
            raise malformed("a choice without a message")
        content = message.get("content")
        if content is None:  # e.g. a refusal: no answer, counted as unparseable
            content = str(message.get("refusal") or "")
        if not isinstance(content, str):
            raise malformed("a message whose content is not text")
        usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
        return content, _count_of(usage, "prompt_tokens"), _count_of(usage, "completion_tokens")

    def _count(self, **increments: int) -> None:
        """Add to the usage counters (thread-safe)."""
        with self._lock:
            for name, value in increments.items():
                self._usage[name] += int(value)


def parse_verdict(content: str) -> str:
    """``A`` or ``B`` from an answer such as ``"A"``, ``" b."`` or ``"Response (A)"``; else ``invalid``."""
    match = _ANSWER.match(content.strip())
    return match.group(1).upper() if match else "invalid"


def _retryable(status: int) -> bool:
    """Whether a retry may succeed: rate limits, timeouts and server errors."""
    return status in _RETRY_STATUSES or 500 <= status <= 599


def _retry_after(headers: Any) -> float | None:
    """Seconds from a Retry-After header (a number or an HTTP date), or None."""
    value = headers.get("Retry-After") if headers is not None else None
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return when.timestamp() - time.time()


def _error_detail(body: bytes, reason: str) -> str:
    """The server's error message (``error.message`` of a JSON body), else the body's start."""
    try:
        data = json.loads(body)
        error = data.get("error") if isinstance(data, dict) else None
        message = error.get("message") if isinstance(error, dict) else error
        if isinstance(message, str) and message:
            return message[:300]
    except ValueError:
        pass
    return body[:300].decode("utf-8", "replace").strip() or reason or "no body"


def _count_of(usage: Mapping, name: str) -> int:
    """A token count from the ``usage`` object (0 when missing or not a number)."""
    value = usage.get(name)
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0


def weighted_preference(lp_a: float, lp_b: float) -> float | None:
    """``exp(lp_a) / (exp(lp_a) + exp(lp_b))``, computed stably; None when both are -inf (no label seen)."""
    if lp_a == -math.inf and lp_b == -math.inf:
        return None
    if lp_a >= lp_b:
        return 1.0 / (1.0 + math.exp(lp_b - lp_a))
    odds = math.exp(lp_a - lp_b)
    return odds / (1.0 + odds)


def first_probability(answer: str) -> float | None:
    """``p_first`` of a cached ``verdict=logprobs`` answer, or None (no label among the top tokens)."""
    try:
        value = json.loads(answer).get("p_first")
    except (ValueError, AttributeError):
        return None
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _top_logprobs(data: Any) -> list[tuple[str, float]] | None:
    """(token, logprob) of the first generated token's top log-probabilities, or None when not sent."""
    try:
        first = data["choices"][0]["logprobs"]["content"][0]
        top = first.get("top_logprobs") or [first]  # an endpoint may send only the chosen token
        pairs = [(str(t["token"]), float(t["logprob"])) for t in top]
    except (KeyError, IndexError, TypeError, ValueError, AttributeError):
        return None
    return pairs or None


def _logsumexp(values: list[float]) -> float:
    """log(sum(exp(values))); -inf for none."""
    if not values:
        return -math.inf
    top = max(values)
    if top == -math.inf:
        return top
    return top + math.log(sum(math.exp(v - top) for v in values))


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


# ------------------------------------------------------------------ connections


@dataclass(frozen=True)
class _Route:
    """Where a request goes: the endpoint's scheme, host and port, and the proxy (if any) in between."""

    scheme: str
    host: str
    port: int
    target: str  # the request target: the path, or the whole URL through an http proxy
    timeout: float
    proxy: tuple[str, int] | None = None
    proxy_auth: str | None = None

    def connect(self) -> http.client.HTTPConnection:
        """A new connection (opened lazily by its first request)."""
        host, port = self.proxy or (self.host, self.port)
        if self.scheme == "https":
            connection: http.client.HTTPConnection = http.client.HTTPSConnection(host, port, timeout=self.timeout)
            if self.proxy:
                tunnel = {"Proxy-Authorization": self.proxy_auth} if self.proxy_auth else None
                connection.set_tunnel(self.host, self.port, headers=tunnel)
            return connection
        return http.client.HTTPConnection(host, port, timeout=self.timeout)


def _route(url: str, timeout: float) -> _Route:
    """The route of ``url``, through ``$http_proxy``/``$https_proxy`` unless ``$no_proxy`` excludes the host."""
    parts = urllib.parse.urlsplit(url)
    scheme, host = parts.scheme, parts.hostname or ""
    port = parts.port or (443 if scheme == "https" else 80)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    proxy_url = urllib.request.getproxies().get(scheme)
    if not proxy_url or urllib.request.proxy_bypass(host):
        return _Route(scheme, host, port, target, timeout)
    if "://" not in proxy_url:
        proxy_url = f"http://{proxy_url}"
    proxy = urllib.parse.urlsplit(proxy_url)
    auth = None
    if proxy.username is not None:
        pair = f"{urllib.parse.unquote(proxy.username)}:{urllib.parse.unquote(proxy.password or '')}"
        auth = "Basic " + base64.b64encode(pair.encode()).decode("ascii")
    return _Route(scheme, host, port, url if scheme == "http" else target, timeout,
                  (proxy.hostname or "", proxy.port or 80), auth)


def _send(connection: http.client.HTTPConnection, route: _Route, data: bytes,
          headers: dict[str, str]) -> http.client.HTTPResponse:
    """Send one POST on ``connection`` and read the response's head."""
    if route.proxy_auth and route.scheme == "http":
        headers = {**headers, "Proxy-Authorization": route.proxy_auth}
    connection.request("POST", route.target, body=data, headers=headers)
    return connection.getresponse()


class _ConnectionPool:
    """Idle keep-alive connections per route (scheme, host, port, proxy, timeout).

    A worker takes one for a request and gives it back after reading the response, so no two threads
    share one and k concurrent workers open at most k; the connections outlive the worker threads.
    """

    def __init__(self) -> None:
        self._idle: dict[_Route, list[http.client.HTTPConnection]] = {}
        self._lock = threading.Lock()

    def take(self, route: _Route) -> tuple[http.client.HTTPConnection, bool]:
        """An idle connection of ``route`` (reused: True while its socket is open) or a new one."""
        with self._lock:
            idle = self._idle.get(route)
            connection = idle.pop() if idle else None
        if connection is None:
            return route.connect(), False
        return connection, connection.sock is not None

    def give(self, route: _Route, connection: http.client.HTTPConnection) -> None:
        """Keep ``connection`` for the next request of ``route``."""
        with self._lock:
            self._idle.setdefault(route, []).append(connection)

    def close(self) -> None:
        """Close every idle connection."""
        with self._lock:
            idle, self._idle = self._idle, {}
        for connections in idle.values():
            for connection in connections:
                connection.close()

    def __len__(self) -> int:
        """How many idle connections are kept."""
        with self._lock:
            return sum(len(c) for c in self._idle.values())


@hookimpl
def register_judges(register):
    register(OpenAIJudge)
