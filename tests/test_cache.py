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
