"""The ``openai`` judge inside whole runs, against the local stand-in endpoint (tests/openai_standin.py)."""

from __future__ import annotations

import json
import sqlite3

import pytest

from conftest import TINY_TESTBED
from openai_standin import Reply, StandinServer

TINY = ["--iterations", "2", "--budget", "80", "-o", "trainer.epochs=2",
        *sum((["-o", o] for o in TINY_TESTBED), [])]
KEY = "sk-test-4f1c2b9e-never-stored"


def _rows(db, sql, *params):
    with sqlite3.connect(db) as conn:
        return conn.execute(sql, params).fetchall()


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    with StandinServer() as standin:
        yield standin


def _judge_options(server, role: str) -> list[str]:
    return ["-o", f"{role}.base_url={server.base_url}", "-o", f"{role}.model=standin",
            "-o", f"{role}.retry_delay=0.01", "-o", f"{role}.max_retries=2"]


def test_annotator_and_evaluator_over_http_cached_and_counted(cli, server, tmp_path):
    db = tmp_path / "board.db"
    args = ["run", "--selector", "smallest", "--annotator", "openai", "--evaluator", "openai",
            *_judge_options(server, "annotator"), *_judge_options(server, "evaluator"), "--db", db, *TINY]
    first = cli(*args)
    assert first.exit_code == 0, first.output
    paid = server.n_requests
    assert paid > 0 and all(r.body["temperature"] == 0 for r in server.requests)
    assert all(r.headers.get("Authorization") == f"Bearer {KEY}" for r in server.requests)
    labels = _rows(db, "select source, count(*) from labels group by source")
    assert labels == [("judge:openai/standin", 80)]
    tokens = _rows(db, "select sum(annotator_prompt_tokens), sum(annotator_requests) from iterations")[0]
    assert tokens[0] > 0 and tokens[1] > 0
    assert _rows(db, "select count(*) from judgements")[0][0] > 0
    # the same run again pays for nothing: every question is in the cache
    second = cli(*args)
    assert second.exit_code == 0, second.output
    assert server.n_requests == paid
    runs = _rows(db, "select final_win_rate from runs order by started_at")
    assert runs[0] == runs[1]
    assert KEY.encode() not in db.read_bytes()
    assert KEY not in first.output + second.output


def test_a_500_that_exhausts_retries_fails_the_run_and_keeps_what_was_paid(cli, server, tmp_path):
    db = tmp_path / "board.db"
    args = ["run", "--selector", "smallest", "--annotator", "openai", *_judge_options(server, "annotator"),
            "-o", "annotator.concurrency=1", "--db", db, *TINY]
    calls = {"n": 0}
    policy = server.policy

    def flaky(instruction, first, second):
        calls["n"] += 1
        if calls["n"] > 30:  # the endpoint breaks down after 30 answers
            return Reply.error(500, "overloaded")
        return policy(instruction, first, second)

    server.policy = flaky
    result = cli(*args)
    assert result.exit_code == 1, result.output
    (status, error), = _rows(db, "select status, error from runs")
    assert status == "failed" and "500" in error and KEY not in error
    kept = _rows(db, "select count(*) from judgements")[0][0]
    assert kept == 30
    assert _rows(db, "select count(*) from labels") == [(0,)]  # no label is recorded for a failed annotation step

    server.policy = policy  # the endpoint recovers: the re-run pays only for what it lacks
    before = server.n_requests
    again = cli(*args)
    assert again.exit_code == 0, again.output
    assert _rows(db, "select count(*) from judgements")[0][0] == kept + (server.n_requests - before)
    paid_twice = _rows(db, "select count(*) from (select 1 from judgements group by judge, model, prompt_hash, "
                           "pair_hash, swapped having count(*) > 1)")
    assert paid_twice == [(0,)]


def test_the_run_summary_json_shows_the_tokens_beside_the_labels(cli, server, tmp_path):
    db = tmp_path / "board.db"
    result = cli("run", "--selector", "smallest", "--annotator", "openai", *_judge_options(server, "annotator"),
                 "--db", db, "--json", *TINY)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    iterations = [row for row in data["iterations"] if row["iteration"] > 0]
    assert all(row["labels"] == 40 and row["annotator_prompt_tokens"] > 0 for row in iterations)


def test_the_migration_creates_the_table_the_cache_creates(tmp_path):
    import sqlite3

    from leaderboard.judgements import JudgementCache
    from leaderboard.store import Leaderboard

    Leaderboard(tmp_path / "migrated.db").close()
    JudgementCache(tmp_path / "cache-first.db").close()
    schemas = []
    for name in ("migrated.db", "cache-first.db"):
        with sqlite3.connect(tmp_path / name) as conn:
            schemas.append(conn.execute("select sql from sqlite_master where name = 'judgements'").fetchone())
    assert schemas[0] is not None and schemas[0] == schemas[1]


def test_a_weighted_annotator_over_kept_connections_is_cached(cli, server, tmp_path):
    db = tmp_path / "board.db"
    args = ["run", "--selector", "smallest", "--annotator", "openai", *_judge_options(server, "annotator"),
            "-o", "annotator.verdict=logprobs", "-o", "annotator.concurrency=2", "--db", db, *TINY]
    first = cli(*args)
    assert first.exit_code == 0, first.output
    paid = server.n_requests
    assert paid > 0 and all(r.body["logprobs"] is True and r.body["max_tokens"] == 1 for r in server.requests)
    assert server.connections <= 2  # two workers, kept connections across both iterations
    assert _rows(db, "select count(*) from labels") == [(80,)]
    answers = [json.loads(a) for (a,) in _rows(db, "select answer from judgements")]
    assert len(answers) == paid and all(a["p_first"] in (0.0, 1.0) for a in answers)  # the stand-in is sure
    second = cli(*args)
    assert second.exit_code == 0, second.output
    assert server.n_requests == paid
    runs = _rows(db, "select final_win_rate from runs order by started_at")
    assert runs[0] == runs[1]
