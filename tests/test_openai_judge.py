"""The ``openai`` judge against a scripted stand-in endpoint, and its judgement cache."""

from __future__ import annotations

import json
import math
import socket
import time

import numpy as np
import pytest

from harness.errors import PluginError, UsageError
from harness.interfaces import Pairs, Responses, check_component_class
from leaderboard.judgements import Judgement, JudgementCache, JudgementKey
from plugins.judges.openai import (
    JudgeRequestError,
    JudgeResponseError,
    OpenAIJudge,
    parse_verdict,
    register_judges,
    weighted_preference,
)
from tests.openai_standin import Reply, StandinServer, Tokens, always, prefer_longer, prefer_marker

KEY_ENV = "PAIRSEL_TEST_OPENAI_KEY"
KEY = "sk-test-Zq8vN3kP0wL5rT7yX2c"


class TextWorld:
    """The least a text judge needs of a world: ``texts(prompts, responses)``.

    ``rows`` holds one (prompt text, [response texts]) per prompt; prompt
    ``i`` is the token row ``[i]`` and its responses are indexed as usual.
    """

    def __init__(self, rows):
        self.rows = rows

    def texts(self, prompts, responses):
        picked = [self.rows[int(p[0])] for p in prompts]
        return [text for text, _ in picked], [list(responses) for _, responses in picked]

    def batch(self):
        """(prompts, responses) covering every row: (M, 1) prompts, (M, N, 1) tokens."""
        m, n = len(self.rows), max(len(r) for _, r in self.rows)
        prompts = np.arange(m, dtype=np.int64)[:, None]
        return prompts, Responses(np.zeros((m, n, 1), np.int64), np.ones((m, n), np.int64))


ROWS = [
    ("Name a prime number.", ["7", "Seven is prime: its only divisors are 1 and 7."]),
    ("Say hello in French.", ["Bonjour ! That is hello in French.", "Salut"]),
    ("What is 2 + 2?", ["4", "2 + 2 = 4, since adding two and two gives four."]),
]


def compare(judge, rows=ROWS, pairs=None):
    """The judge's labels on ``pairs`` (default: response 0 vs 1 of every row)."""
    world = TextWorld(rows)
    prompts, responses = world.batch()
    if pairs is None:
        pairs = Pairs(np.arange(len(rows)), np.zeros(len(rows)), np.ones(len(rows)))
    return judge.compare(world=world, prompts=prompts, responses=responses, pairs=pairs,
                         rng=np.random.default_rng(0))


@pytest.fixture(autouse=True)
def _environment(monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


@pytest.fixture
def server():
    with StandinServer(prefer_longer) as standin:
        yield standin


@pytest.fixture
def make_judge(server):
    """A judge pointed at the stand-in, retrying without waiting; its waits are recorded in ``.sleeps``."""

    def make(**settings):
        judge = OpenAIJudge({"base_url": server.base_url, "model": "standin-judge", "api_key_env": KEY_ENV,
                             "retry_delay": 0.0, **settings})
        judge.sleeps = []
        judge._sleep = judge.sleeps.append
        return judge

    return make


def longer_wins(rows=ROWS):
    return np.array([len(r[0]) > len(r[1]) for _, r in rows])


# ---------------------------------------------------------------- a normal round


def test_labels_follow_the_scripted_preference_asked_in_both_orders(server, make_judge):
    judge = make_judge()
    labels = compare(judge)
    np.testing.assert_array_equal(labels.prefer_a, longer_wins())
    np.testing.assert_array_equal(labels.tie_mask(), [False, False, False])
    assert server.n_requests == 2 * len(ROWS)
    shown = {r.texts[1:] for r in server.requests}
    for _, (a, b) in ROWS:
        assert (a, b) in shown and (b, a) in shown
    for request in server.requests:
        assert request.path == "/v1/chat/completions"
        assert request.headers["Authorization"] == f"Bearer {KEY}"
        assert request.body["temperature"] == 0 and request.body["model"] == "standin-judge"
        assert [m["role"] for m in request.body["messages"]] == ["system", "user"]


def test_usage_counts_tokens_requests_and_is_cumulative(server, make_judge):
    judge = make_judge()
    compare(judge)
    words = sum(len(m["content"].split()) for r in server.requests for m in r.body["messages"])
    usage = judge.usage()
    assert usage["prompt_tokens"] == words and usage["completion_tokens"] == 6
    assert usage["requests"] == usage["judgements"] == 6 and usage["cached"] == usage["retries"] == 0
    assert usage["pairs"] == 3 and usage["ties"] == usage["disagreements"] == 0
    compare(judge)  # same questions: answered from the (in-memory) cache
    usage = judge.usage()
    assert usage["requests"] == 6 and usage["cached"] == 6 and usage["pairs"] == 6
    assert server.n_requests == 6


def test_a_marker_policy_picks_the_marked_response_in_either_position(server, make_judge):
    server.policy = prefer_marker("[good]")
    rows = [("p0", ["plain", "[good] answer"]), ("p1", ["[good] one", "other"])]
    labels = compare(make_judge(), rows)
    np.testing.assert_array_equal(labels.prefer_a, [False, True])
    np.testing.assert_array_equal(labels.tie_mask(), [False, False])


def test_position_swapped_disagreement_is_a_tie(server, make_judge):
    server.policy = always("A")  # always the first shown: the two orders disagree
    judge = make_judge()
    labels = compare(judge)
    np.testing.assert_array_equal(labels.tie_mask(), [True, True, True])
    assert not labels.prefer_a.any()
    assert judge.usage()["disagreements"] == 3 and judge.usage()["ties"] == 3


def test_identical_responses_tie_without_a_request(server, make_judge):
    judge = make_judge()
    labels = compare(judge, [("p", ["same text", "same text"])])
    assert labels.tie_mask().tolist() == [True]
    assert server.n_requests == 0 and judge.usage()["identical"] == 1


def test_a_reversed_pair_reuses_the_same_questions(server, make_judge):
    judge = make_judge()
    first = compare(judge)
    reversed_pairs = Pairs(np.arange(3), np.ones(3), np.zeros(3))
    second = compare(judge, pairs=reversed_pairs)
    np.testing.assert_array_equal(second.prefer_a, ~first.prefer_a)
    assert server.n_requests == 6


# ---------------------------------------------------------------------- retries


def test_a_429_is_retried_after_its_retry_after(server, make_judge):
    server.fail_next(Reply.error(429, "slow down", Retry_After="7"))
    judge = make_judge(concurrency=1)
    labels = compare(judge)
    np.testing.assert_array_equal(labels.prefer_a, longer_wins())
    assert server.n_requests == 7 and [r.status for r in server.requests].count(429) == 1
    assert judge.sleeps == [7.0]
    assert judge.usage()["retries"] == 1 and judge.usage()["requests"] == 7 and judge.usage()["judgements"] == 6


def test_backoff_doubles_with_jitter_without_retry_after(server, make_judge):
    server.fail_next(Reply.error(503), Reply.error(502), Reply.error(500))
    judge = make_judge(concurrency=1, retry_delay=0.1)
    compare(judge)
    assert len(judge.sleeps) == 3
    for attempt, slept in enumerate(judge.sleeps):
        assert 0.05 * 2 ** attempt <= slept <= 0.1 * 2 ** attempt


def poisoned(instruction, first, second):
    """Answer like prefer_longer, but fail every question about the response "POISON"."""
    if "POISON" in (first, second):
        return Reply.error(500, "internal error")
    return prefer_longer(instruction, first, second)


POISONED_ROWS = [*ROWS, ("Last one.", ["POISON", "fine"])]


def test_a_500_that_exhausts_retries_raises_and_keeps_what_was_paid(server, make_judge, tmp_path):
    server.policy = poisoned
    db = tmp_path / "board.db"
    judge = make_judge(concurrency=1, max_retries=2)
    judge.use_cache(JudgementCache(db))
    with pytest.raises(JudgeRequestError) as caught:
        compare(judge, POISONED_ROWS)
    error = caught.value
    assert isinstance(error, PluginError) and error.status == 500 and error.attempts == 3
    message = str(error)
    assert "HTTP 500" in message and f"{server.base_url}/chat/completions" in message
    assert "after 3 attempt" in message and "max_retries" in message and KEY not in message
    assert server.n_requests == 6 + 3  # three rows in both orders, then the poisoned question 3 times
    assert len(JudgementCache(db)) == 6

    server.policy = prefer_longer  # the server recovers
    server.clear()
    again = make_judge()
    again.use_cache(JudgementCache(db))
    labels = compare(again, POISONED_ROWS)
    assert server.n_requests == 2  # only the failed pair is asked again
    np.testing.assert_array_equal(labels.prefer_a, longer_wins(POISONED_ROWS))


def test_answers_in_flight_when_a_request_fails_are_cached_too(server, make_judge, tmp_path):
    server.policy = poisoned
    rows = [(f"prompt {i}", [f"short {i}", f"a longer answer {i}"]) for i in range(12)]
    rows.insert(5, ("poisoned", ["POISON", "fine"]))
    cache = JudgementCache(tmp_path / "board.db")
    judge = make_judge(concurrency=4, max_retries=1)
    judge.use_cache(cache)
    with pytest.raises(JudgeRequestError):
        compare(judge, rows)
    paid = judge.usage()["judgements"]
    assert len(cache) == paid == sum(r.status == 200 for r in server.requests)

    server.policy = prefer_longer
    server.clear()
    compare(judge, rows)
    assert server.n_requests == 2 * len(rows) - paid


def test_connection_refused_is_retried_then_explained(make_judge):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    judge = make_judge(base_url=f"http://127.0.0.1:{port}/v1", max_retries=2, concurrency=1)
    with pytest.raises(JudgeRequestError) as caught:
        compare(judge, ROWS[:1])
    assert caught.value.status is None and caught.value.attempts == 3
    assert "server running" in str(caught.value) and f"127.0.0.1:{port}" in str(caught.value)
    assert judge.usage()["requests"] == 3 and len(judge.sleeps) == 2


def test_a_wrong_base_url_fails_at_once_naming_the_fix(server, make_judge):
    judge = make_judge(base_url=server.base_url.removesuffix("/v1"), concurrency=1)
    with pytest.raises(JudgeRequestError) as caught:
        compare(judge)
    assert caught.value.status == 404 and "base_url" in str(caught.value)
    assert server.n_requests == 1


# ------------------------------------------------------------ malformed answers


@pytest.mark.parametrize(
    "body, said",
    [
        ("<html>Bad gateway</html>", "not JSON"),
        ('{"id": "x", "object": "chat.completion", "choices": []}', "no choices"),
        ('{"choices": [{"index": 0}]}', "without a message"),
        ('[1, 2]', "not an object"),
    ],
)
def test_a_malformed_body_is_a_clear_error(server, make_judge, body, said):
    server.fail_next(Reply(200, body, {"Content-Type": "application/json"}))
    judge = make_judge(concurrency=1)
    with pytest.raises(JudgeResponseError) as caught:
        compare(judge)
    message = str(caught.value)
    assert said in message and server.base_url in message and "base_url" in message
    assert server.n_requests == 1  # not retried


def test_an_unparseable_answer_makes_its_pair_a_tie_and_is_counted(server, make_judge, tmp_path):
    def policy(instruction, first, second):
        return "Both are fine." if instruction == "What is 2 + 2?" else prefer_longer(instruction, first, second)

    server.policy = policy
    cache = JudgementCache(tmp_path / "board.db")
    judge = make_judge()
    judge.use_cache(cache)
    labels = compare(judge)
    np.testing.assert_array_equal(labels.tie_mask(), [False, False, True])
    assert judge.usage()["invalid_answers"] == 2 and judge.usage()["ties"] == 1
    verdicts = [row[0] for row in cache.conn.execute("select verdict from judgements")]
    assert sorted(verdicts).count("invalid") == 2


def test_answers_that_are_never_a_or_b_are_an_error(server, make_judge):
    server.policy = always("Let me think step by step")
    with pytest.raises(JudgeResponseError, match="max_tokens"):
        compare(make_judge())


@pytest.mark.parametrize(
    "content, verdict",
    [("A", "A"), ("b", "B"), (" B.\n", "B"), ('"A"', "A"), ("**A**", "A"), ("Response (B)", "B"),
     ("Answer: A", "A"), ("AB", "invalid"), ("", "invalid"), ("Neither", "invalid"), ("A or B", "invalid")],
)
def test_parse_verdict(content, verdict):
    assert parse_verdict(content) == verdict


# ------------------------------------------------------------------------ cache


def test_a_cached_judgement_costs_no_request_across_cache_instances(server, make_judge, tmp_path):
    db = tmp_path / "board.db"
    judge = make_judge()
    judge.use_cache(JudgementCache(db))
    first = compare(judge)
    assert server.n_requests == 6
    compare(judge)
    assert server.n_requests == 6 and judge.usage()["cached"] == 6

    fresh = make_judge()  # a new process, in effect: new judge, new cache object, same file
    fresh.use_cache(JudgementCache(db))
    again = compare(fresh)
    assert server.n_requests == 6 and fresh.usage()["cached"] == 6 and fresh.usage()["requests"] == 0
    np.testing.assert_array_equal(again.prefer_a, first.prefer_a)


def test_the_cache_key_includes_the_model(server, make_judge, tmp_path):
    db = tmp_path / "board.db"
    for model in ("model-one", "model-two"):
        judge = make_judge(model=model)
        judge.use_cache(JudgementCache(db))
        compare(judge)
    assert server.n_requests == 12 and len(JudgementCache(db)) == 12


def test_judgement_cache_round_trip(tmp_path):
    cache = JudgementCache(tmp_path / "board.db")
    key = JudgementKey("openai", "m", "p" * 64, "q" * 64, 1)
    assert cache.get(key) is None
    assert cache.put(Judgement(key, "B", " B", prompt_tokens=12, completion_tokens=1))
    assert not cache.put(Judgement(key, "A", "A"))  # the first answer stays
    got = cache.get_many([key, key._replace(swapped=0)])
    assert list(got) == [key]
    assert (got[key].verdict, got[key].answer, got[key].prompt_tokens, got[key].completion_tokens) == ("B", " B", 12, 1)
    assert got[key].created_at.endswith("+00:00")
    with pytest.raises(ValueError, match="verdict"):
        Judgement(key, "C", "C")


def test_the_cache_shares_its_file_with_the_leaderboard(tmp_path):
    from leaderboard.store import Leaderboard

    db = tmp_path / "board.db"
    JudgementCache(db).put(Judgement(JudgementKey("openai", "m", "p", "q", 0), "A", "A"))
    with Leaderboard(db) as board:  # migrations apply to a file the cache created
        assert board.conn.execute("select count(*) from judgements").fetchone()[0] == 1
    assert len(JudgementCache(db)) == 1  # and the cache opens a migrated leaderboard


def test_a_file_that_is_not_a_database_is_refused(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("not a database " * 100)
    with pytest.raises(ValueError, match="not a SQLite database"):
        JudgementCache(path)


# ---------------------------------------------------------------- the API key


def test_the_key_never_leaves_the_request(server, make_judge, tmp_path):
    db = tmp_path / "board.db"
    judge = make_judge()
    judge.use_cache(JudgementCache(db))
    compare(judge)
    assert KEY not in repr(judge) and KEY not in str(judge.settings) and KEY not in str(vars(judge))
    for path in tmp_path.iterdir():  # the database, its WAL and shared-memory files
        assert KEY.encode() not in path.read_bytes(), path.name


def test_a_rejected_key_is_masked_in_the_error(make_judge):
    with StandinServer(require_key="sk-the-right-key-000") as strict:  # its 401 quotes the key it got
        judge = make_judge(base_url=strict.base_url)
        with pytest.raises(JudgeRequestError) as caught:
            compare(judge)
        assert strict.n_requests >= 1
    message = str(caught.value)
    assert caught.value.status == 401 and KEY_ENV in message and "Incorrect API key" in message
    assert KEY not in message and KEY[:12] not in message


def test_the_openai_api_without_a_key_is_refused_before_any_request(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    judge = OpenAIJudge({"base_url": "https://api.openai.com/v1"})
    with pytest.raises(UsageError, match=r"\$OPENAI_API_KEY is not set"):
        compare(judge)
    assert judge.usage()["requests"] == 0


def test_a_local_server_needs_no_key(server, make_judge, monkeypatch):
    monkeypatch.delenv(KEY_ENV)
    compare(make_judge())
    assert server.n_requests == 6 and all("Authorization" not in r.headers for r in server.requests)


def test_a_key_given_as_api_key_env_is_refused_without_echoing_it():
    with pytest.raises(UsageError) as caught:
        OpenAIJudge({"api_key_env": KEY})
    assert "NAME of the environment variable" in str(caught.value) and KEY not in str(caught.value)


# --------------------------------------------------------------- the plugin


def test_score_explains_that_the_judge_is_pairwise_only(make_judge):
    world = TextWorld(ROWS)
    prompts, responses = world.batch()
    with pytest.raises(UsageError, match="pairwise only"):
        make_judge().score(world=world, prompts=prompts, responses=responses, rng=np.random.default_rng(0))


def test_the_plugin_registers_a_valid_judge():
    registered = []
    register_judges(registered.append)
    assert registered == [OpenAIJudge]
    check_component_class("judge", OpenAIJudge)
    defaults = OpenAIJudge().settings
    assert defaults["api_key_env"] == "OPENAI_API_KEY" and defaults["concurrency"] == 4
    assert defaults["max_retries"] == 5 and defaults["base_url"].startswith("http")


@pytest.mark.parametrize("settings, said", [({"base_url": "api.example.com/v1"}, r"http\(s\) URL"),
                                            ({"model": " "}, "model")])
def test_bad_settings_name_the_fix(settings, said):
    with pytest.raises(UsageError, match=said):
        OpenAIJudge(settings)


# ------------------------------------------------------------ kept-alive connections


MANY_ROWS = [(f"prompt {i}", [f"short {i}", f"a longer answer {i}"]) for i in range(12)]


def test_one_worker_sends_every_request_over_one_connection(server, make_judge):
    judge = make_judge(concurrency=1)
    np.testing.assert_array_equal(compare(judge).prefer_a, longer_wins())
    assert server.n_requests == 6 and server.connections == 1
    compare(judge, MANY_ROWS)  # a later call (new worker threads) reuses the kept connection
    assert server.n_requests == 6 + 24 and server.connections == 1
    assert judge.usage()["retries"] == 0


def test_k_workers_open_at_most_k_connections(server, make_judge):
    judge = make_judge(concurrency=3)
    labels = compare(judge, MANY_ROWS)
    np.testing.assert_array_equal(labels.prefer_a, longer_wins(MANY_ROWS))
    assert server.n_requests == 24 and 1 <= server.connections <= 3


def wait_until(condition, seconds=5.0):
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    return condition()


@pytest.mark.parametrize("how", ["announced", "silent"])
def test_a_server_that_closes_after_each_response_still_works(server, make_judge, how):
    server.close_connections = how  # "silent": the next request finds the kept connection dead
    judge = make_judge(concurrency=1)
    labels = compare(judge)
    np.testing.assert_array_equal(labels.prefer_a, longer_wins())
    assert server.n_requests == 6 and server.connections == 6
    usage = judge.usage()
    assert usage["requests"] == 6 and usage["retries"] == 0 and judge.sleeps == []


def test_a_dropped_kept_connection_is_reopened_once_then_counts_as_a_failure(server, make_judge):
    judge = make_judge(concurrency=1, max_retries=3)
    compare(judge, ROWS[:1])  # the judge now keeps one open connection
    server.clear()
    server.fail_next(Reply.drop())  # dropped on the kept connection: reopened at once, no retry
    compare(judge, ROWS[1:2])
    assert [r.status for r in server.requests] == [0, 200, 200]
    assert judge.usage()["retries"] == 0 and judge.sleeps == []
    server.clear()
    server.fail_next(Reply.drop(), Reply.drop())  # dropped again on the reopened one: a connection failure
    compare(judge, ROWS[2:3])
    assert [r.status for r in server.requests] == [0, 0, 200, 200]
    assert judge.usage()["retries"] == 1 and len(judge.sleeps) == 1


def test_close_and_with_close_the_kept_connections(server, make_judge):
    judge = make_judge(concurrency=2)
    compare(judge)
    assert len(judge._connections) >= 1 and server.open_connections >= 1
    judge.close()
    assert len(judge._connections) == 0 and wait_until(lambda: server.open_connections == 0)
    with make_judge() as again:
        compare(again, MANY_ROWS)
        assert server.open_connections >= 1
    assert wait_until(lambda: server.open_connections == 0)


def test_the_timeout_applies_to_kept_connections(make_judge):
    def slow(instruction, first, second):
        time.sleep(0.5)
        return "A"

    with StandinServer(slow) as sluggish:
        judge = make_judge(base_url=sluggish.base_url, timeout=0.1, max_retries=1, concurrency=1)
        with pytest.raises(JudgeRequestError, match="timed out"):
            compare(judge, ROWS[:1])


# ---------------------------------------------------------- weighted verdicts (logprobs)


def confident_about_the_first(sure: float, unsure: float):
    """Always answers A (the first shown: a position bias), surer when the longer response is first."""

    def policy(instruction, first, second):
        p = sure if len(first) > len(second) else unsure
        return Tokens((("A", math.log(p)), ("B", math.log(1 - p))))

    return policy


def test_a_weighted_verdict_is_the_hand_computed_probability(server, make_judge):
    tops = {True: (("A", -0.2), (" B", -1.9), ("a", -4.0), ("The", -3.0), ("b ", -6.0), ("Both", -7.0)),
            False: (("B", -0.5), ("A", -1.2), ("I", -2.5))}
    server.policy = lambda instruction, first, second: Tokens(tops[len(first) > len(second)])
    judge = make_judge(verdict="logprobs")
    labels = compare(judge, ROWS[:1])  # a = "7" (short), b = the long answer
    for request in server.requests:
        assert request.body["logprobs"] is True and request.body["top_logprobs"] == 5
        assert request.body["max_tokens"] == 1
    e = math.exp
    # "A" and "a" are A, " B" and "b " are B; "Both" is sixth, so not among the top 5 sent
    p_long_first = (e(-0.2) + e(-4.0)) / (e(-0.2) + e(-4.0) + e(-1.9) + e(-6.0))
    p_short_first = e(-1.2) / (e(-1.2) + e(-0.5))
    p_a = (p_short_first + (1 - p_long_first)) / 2
    assert judge.last_probabilities[0] == pytest.approx(p_a, abs=1e-12)
    assert p_a < 0.5 and not labels.prefer_a[0] and not labels.tie_mask()[0]


def test_both_orders_are_averaged_where_letters_would_tie(server, make_judge):
    server.policy = confident_about_the_first(0.9, 0.6)  # always "A": the letter mode ties every pair
    assert compare(make_judge()).tie_mask().all()
    judge = make_judge(verdict="logprobs")
    labels = compare(judge)
    longer = longer_wins()
    np.testing.assert_array_equal(labels.prefer_a, longer)
    assert not labels.tie_mask().any()
    expected = np.where(longer, (0.9 + 1 - 0.6) / 2, (0.6 + 1 - 0.9) / 2)
    np.testing.assert_allclose(judge.last_probabilities, expected, atol=1e-12)


def test_an_equally_sure_position_bias_is_an_exact_tie(server, make_judge):
    server.policy = confident_about_the_first(0.7, 0.7)
    judge = make_judge(verdict="logprobs")
    labels = compare(judge)
    assert labels.tie_mask().all() and not labels.prefer_a.any()
    assert (judge.last_probabilities == 0.5).all()


def test_weighted_answers_are_cached_apart_from_letters(server, make_judge, tmp_path):
    server.policy = confident_about_the_first(0.9, 0.6)
    db = tmp_path / "board.db"
    judge = make_judge(verdict="logprobs")
    judge.use_cache(JudgementCache(db))
    first = compare(judge)
    assert server.n_requests == 6
    stored = [json.loads(row[0]) for row in JudgementCache(db).conn.execute("select answer from judgements")]
    assert sorted(round(a["p_first"], 12) for a in stored) == [0.6] * 3 + [0.9] * 3

    again = make_judge(verdict="logprobs")  # a new process, in effect
    again.use_cache(JudgementCache(db))
    second = compare(again)
    assert server.n_requests == 6 and again.usage()["requests"] == 0 and again.usage()["cached"] == 6
    np.testing.assert_array_equal(second.prefer_a, first.prefer_a)
    np.testing.assert_array_equal(again.last_probabilities, judge.last_probabilities)

    letters = make_judge()  # the letter mode never reads a weighted answer, nor the reverse
    letters.use_cache(JudgementCache(db))
    assert compare(letters).tie_mask().all()
    assert server.n_requests == 12 and len(JudgementCache(db)) == 12


def test_an_endpoint_without_logprobs_is_a_clear_error(server, make_judge):
    server.send_logprobs = False
    judge = make_judge(verdict="logprobs", concurrency=1)
    with pytest.raises(JudgeResponseError) as caught:
        compare(judge)
    message = str(caught.value)
    assert "no logprobs" in message and "verdict=letter" in message and KEY not in message
    assert server.n_requests == 1  # not retried


def test_neither_label_among_the_top_tokens_makes_a_tie(server, make_judge):
    def policy(instruction, first, second):
        if instruction == "What is 2 + 2?":
            return Tokens((("Let", -0.1), ("I", -2.0)))
        return Tokens((("A", -0.1), ("B", -2.4))) if len(first) > len(second) else Tokens((("B", -0.1),))

    server.policy = policy
    judge = make_judge(verdict="logprobs")
    labels = compare(judge)
    np.testing.assert_array_equal(labels.tie_mask(), [False, False, True])
    np.testing.assert_array_equal(labels.prefer_a[:2], longer_wins()[:2])
    assert math.isnan(judge.last_probabilities[2]) and judge.usage()["invalid_answers"] == 2


def test_weighted_answers_that_never_hold_a_label_are_an_error(server, make_judge):
    server.policy = lambda instruction, first, second: Tokens((("Let", -0.1),))
    with pytest.raises(JudgeResponseError, match="verdict=letter"):
        compare(make_judge(verdict="logprobs"))


def test_weighted_preference_is_stable():
    assert weighted_preference(math.log(0.3), math.log(0.1)) == pytest.approx(0.75)
    assert weighted_preference(-1000.0, 0.0) == pytest.approx(0.0) and weighted_preference(0.0, -1000.0) == 1.0
    assert weighted_preference(-math.inf, -0.5) == 0.0 and weighted_preference(-0.5, -math.inf) == 1.0
    assert weighted_preference(-math.inf, -math.inf) is None


def test_an_unknown_verdict_mode_is_refused():
    with pytest.raises(UsageError, match="verdict"):
        OpenAIJudge({"verdict": "probabilities"})
