"""config.common.cache.TTLCache: expiry, bound, single flight, invalidation during a load."""

import asyncio
import threading
import time

import pytest

from config.common.cache import TTLCache


def test_entries_expire_after_their_ttl_and_the_oldest_goes_beyond_the_bound():
    cache: TTLCache[str, int] = TTLCache(ttl=0.05, max_entries=2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.peek("a") == (True, 1)  # touched: "b" is now the least recently used
    cache.put("c", 3)
    assert cache.peek("b") == (False, None)
    assert cache.peek("a") == (True, 1) and cache.peek("c") == (True, 3)
    time.sleep(0.08)
    assert cache.peek("a") == (False, None)
    assert cache.get("a", lambda: 10) == 10


def test_concurrent_sync_callers_share_one_load():
    cache: TTLCache[str, int] = TTLCache(ttl=60, max_entries=10)
    calls = []
    gate = threading.Event()

    def load() -> int:
        calls.append(1)
        gate.wait(5)
        return 42

    results: list[int] = []
    threads = [
        threading.Thread(target=lambda: results.append(cache.get("k", load))) for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    time.sleep(0.1)
    gate.set()
    for thread in threads:
        thread.join(5)
    assert results == [42] * 8
    assert len(calls) == 1


def test_a_failed_load_reaches_every_waiter_and_is_not_stored():
    cache: TTLCache[str, int] = TTLCache(ttl=60, max_entries=10)

    def load() -> int:
        raise RuntimeError("database down")

    with pytest.raises(RuntimeError):
        cache.get("k", load)
    assert cache.peek("k") == (False, None)
    assert cache.get("k", lambda: 7) == 7


def test_a_value_loaded_across_an_invalidation_is_not_stored():
    cache: TTLCache[str, str] = TTLCache(ttl=60, max_entries=10)

    def load() -> str:
        cache.invalidate("k")  # the row changed while it was being read
        return "stale"

    assert cache.get("k", load) == "stale"  # this caller gets what it read...
    assert cache.peek("k") == (False, None)  # ...but the next one reads again
    cache.clear()
    assert cache.get("k", lambda: "fresh") == "fresh"
    assert cache.peek("k") == (True, "fresh")


def test_async_callers_share_one_load_and_refresh_ahead_in_the_background():
    cache: TTLCache[str, int] = TTLCache(ttl=60, max_entries=10, refresh_after=0.05)
    calls = []

    async def load() -> int:
        calls.append(1)
        await asyncio.sleep(0.05)
        return len(calls)

    async def scenario() -> None:
        first = await asyncio.gather(*(cache.aget("k", load) for _ in range(20)))
        assert first == [1] * 20 and len(calls) == 1
        await asyncio.sleep(0.06)  # older than refresh_after: served, and reloaded behind
        assert await cache.aget("k", load) == 1
        await asyncio.sleep(0.1)
        assert len(calls) == 2
        assert await cache.aget("k", load) == 2

    asyncio.run(scenario())


def test_with_weigh_the_oldest_go_beyond_the_weight_the_newest_stays():
    cache: TTLCache[str, list[int]] = TTLCache(ttl=60, max_entries=100, weigh=len, max_weight=10)
    cache.put("a", [0] * 4)
    cache.put("b", [0] * 4)
    assert cache.peek("a")[0]  # touched: "b" is now the least recently used
    cache.put("c", [0] * 4)  # 12 > 10: "b" goes
    assert cache.peek("b") == (False, None)
    assert cache.peek("a")[0] and cache.peek("c")[0] and cache.weight == 8
    cache.put("a", [0] * 2)  # replaced: its old weight no longer counts
    assert cache.weight == 6
    cache.invalidate("c")
    assert cache.weight == 2
    cache.put("big", [0] * 50)  # heavier than the bound alone: kept, the rest go
    assert len(cache) == 1 and cache.weight == 50
    cache.clear()
    assert cache.weight == 0


def test_users_term_statistics_stay_under_their_words_however_many_each_user_says(monkeypatch):
    """The users' statistics were bounded by count alone (256), each growing with its user's
    words: 130 users of 8,000 words held 1,040,000 words (~80 MB) where 800,000 is the bound."""
    from memory.retrieval import terms

    words = [f"word{i}" for i in range(8_000)]
    monkeypatch.setattr(
        terms,
        "_load_stats",
        lambda table, workspace, user: terms.TermStats(1, 1.0, dict.fromkeys(words, 1)),
    )
    terms._user_stats.clear()
    try:
        for user in range(130):  # fewer entries than the count's bound
            terms.term_stats(workspace_id="w", user_id=f"u{user}")
        held = sum(len(entry.value.df) for entry in terms._user_stats._entries.values())
        assert held <= terms.USER_STATS_WORDS
        assert len(terms._user_stats) == terms.USER_STATS_WORDS // len(words)
        assert terms.term_stats(workspace_id="w", user_id="u129").df  # the newest is kept
    finally:
        terms._user_stats.clear()
