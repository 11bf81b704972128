"""The judgement-cache protocol: the store's cache and the in-memory default behave alike."""

from __future__ import annotations

import pytest

from harness.judgements import Judgement, JudgementCache, JudgementKey, MemoryJudgementCache


@pytest.fixture(params=["memory", "sqlite"])
def cache(request, tmp_path):
    if request.param == "memory":
        yield MemoryJudgementCache()
        return
    from leaderboard.judgements import JudgementCache as StoreCache

    with StoreCache(tmp_path / "board.db") as store:
        yield store


def _judgement(pair: str, verdict: str = "A", swapped: int = 0) -> Judgement:
    return Judgement(JudgementKey("openai", "gpt-x", "p" * 64, pair * 64, swapped), verdict, f"answer {verdict}", 3, 1)


def test_both_caches_follow_the_protocol(cache):
    assert isinstance(cache, JudgementCache)
    first, other = _judgement("a"), _judgement("b", "B")
    assert cache.get_many([first.key]) == {}
    assert cache.put(first) is True
    assert cache.put(_judgement("a", "B")) is False  # the first answer to a key stays
    assert cache.put(other) is True
    found = cache.get_many([first.key, other.key, _judgement("c").key, tuple(first.key)])
    assert set(found) == {first.key, other.key}
    assert found[first.key].verdict == "A" and found[first.key].prompt_tokens == 3
    assert found[other.key].verdict == "B"
    assert cache.get_many([_judgement("a", swapped=1).key]) == {}  # the shown order is part of the key


def test_a_judge_without_a_cache_keeps_answers_in_memory():
    from plugins.judges.openai import OpenAIJudge

    judge = OpenAIJudge()
    assert isinstance(judge._cache, MemoryJudgementCache)
    store = MemoryJudgementCache()
    judge.use_cache(store)
    assert judge._cache is store
