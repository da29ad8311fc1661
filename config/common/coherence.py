"""In-process caches kept coherent across processes: a change is published, each request checks.

A writer that changes what a cache is derived from calls `publish(name)`: when its transaction
commits, a fresh random token is SET under `engram:coherence:<name>` in Redis. Every door calls
`check_async()` (or `check_sync()`) once per request, before it uses any of these caches: one
MGET of every name's token, started after the request arrived; a token that differs from the
one this process saw last clears the caches registered under that name. So a request that
starts after a change committed — on any process — sees the change: a key revoked through
process A is refused by process B on its very next request.

Cost: one MGET per event-loop turn that has requests, sent after they arrived and read in line
(config.common.inline_redis: ≈ 50 µs on loopback, without yielding to the loop); the requests
whose first step runs in that turn share it (`check_async`). Before, an asyncio reader shared
one MGET between the requests of a turn too, but each then waited three or four loop turns for
the reply, ~1 ms each under a burst of 16.

A random token rather than a counter: a Redis restart or eviction that loses the key reads as
a change (None) instead of counting up to a value this process already saw.

Redis unreachable (error or RETRY_SECONDS after one): `check_*` return False and the caller
goes to the database (the truth) for that request instead of trusting its cache — a query
per request until Redis answers again, rather than a key that may be revoked; every token
seen is forgotten, so the first good read afterwards clears whatever was cached before. A
publish that fails is logged and owed: this process sends it again before its next read that
reaches Redis. A process that had no request during the outage never forgot its tokens, and a
Redis that restarted from its append-only file brings back the token they saw: without the
owed publish, nothing would tell it of the change until its cache's TTL.

What each cache of Engram may serve after a change made by another process:

| cache | name | stale after a change in another process |
| --- | --- | --- |
| key check (accounts.authentication) | keys | none; Redis down: none (database per request) |
| routing snapshot (completions.routing) | routing | none on the doors; workers check per LLM call; Redis down: ENGRAM_ROUTING_CACHE_SECONDS (5 s) |
| agents (completions.agents.cache) | agents | as routing |
| upstream model lists (completions.catalogue) | — | 60 s (what the upstream lists; keyed by credential, so a credential change is seen at once) |
| term statistics, speakers, lexemes of a user (memory.retrieval.terms) | — | 60 s: ranking weights only, never access |
| term statistics of collections (memory.retrieval.terms) | collection-terms | none on a request; Redis down: 600 s (ranking weights only) |
"""

from __future__ import annotations

import asyncio
import functools
import logging
import secrets
import threading
import time
import weakref
from collections.abc import Callable

from django.db import transaction

from config.common import inline_redis
from config.common.setting import setting

logger = logging.getLogger("engram.coherence")

PREFIX = "engram:coherence:"
# Redis is on the request path: a request waits at most this long before falling back to the
# database, and after a failure Redis is not asked again for RETRY_SECONDS (no timeout each).
TIMEOUT_SECONDS = 0.25
RETRY_SECONDS = 1.0
_UNKNOWN = object()
_FAILURES = inline_redis.FAILURES

_clearers: dict[str, list[Callable[[], None]]] = {}
# Every name registered, sorted once at registration: every request's check reads them, and
# sorting the registry's keys each time cost ~3,700 instructions a request (callgrind).
_registered: tuple[str, ...] = ()
_seen: dict[str, object] = {}  # name -> the token this process saw last
_owed: set[str] = set()  # names whose publish failed: sent again once Redis answers
_lock = threading.Lock()
_state = {"down_until": 0.0}


def register(name: str, clear: Callable[[], None]) -> None:
    """`clear` empties a cache of this process when `name`'s token changes (at import time)."""
    global _registered
    with _lock:
        _clearers.setdefault(name, []).append(clear)
        _registered = tuple(sorted(_clearers))


def publish(name: str) -> None:
    """Tell every process that what `name` caches changed: when the current transaction
    commits (before it, another process could reload the old rows and keep them)."""
    transaction.on_commit(lambda: _publish_now(name))


def _publish_now(name: str) -> bool:
    try:
        _pool().call_sync("SET", PREFIX + name, secrets.token_hex(8), timeout=TIMEOUT_SECONDS)
    except _FAILURES as exc:
        with _lock:
            _owed.add(name)
        logger.warning(
            "could not publish a change of %s (%s): sent again when Redis answers",
            name,
            type(exc).__name__,
        )
        return False
    with _lock:
        _owed.discard(name)
    return True


def _publish_owed() -> None:
    """Send again the publishes that failed (rare: only after an outage this process saw)."""
    with _lock:
        owed = sorted(_owed)
    for name in owed:
        if not _publish_now(name):
            return  # still unreachable: one timeout, not one per name


def check_sync() -> bool:
    """Bring this process's caches up to date; False when Redis cannot say (use the database)."""
    names = _names()
    if not names or _resting():
        return not names
    if _owed:
        _publish_owed()
    try:
        tokens = _pool().call_sync(_mget(names), timeout=TIMEOUT_SECONDS)
    except _FAILURES as exc:
        return _failed(exc)
    _apply(names, tokens)
    return True


async def check_async() -> bool:
    """As `check_sync`, for async doors: the read in line, or on a thread when Redis is slow.

    Requests whose first step runs in the same event-loop turn as a read that completed in
    line share it: their bytes were read from their sockets before this turn's callbacks ran,
    so before the read was sent (the loop runs callbacks queued during a turn on the next
    one, and the turn's end is itself such a callback). A burst of 16 then costs one read."""
    names = _names()
    if not names or _resting():
        return not names
    loop = asyncio.get_running_loop()
    turn = _turns.get(loop)
    if turn is not None and turn.read_done:
        return True
    if turn is None:
        turn = _turns[loop] = _Turn()
        loop.call_soon(_turns.pop, loop, None)
    if _owed:  # after an outage only: its round trips off the loop
        await asyncio.to_thread(_publish_owed)
    try:
        tokens = await _pool().call(_mget(names), timeout=TIMEOUT_SECONDS)
    except _FAILURES as exc:
        return _failed(exc)
    _apply(names, tokens)
    if _turns.get(loop) is turn:  # still the turn it was sent in: the reply came in line
        turn.read_done = True
    return True


class _Turn:
    read_done = False


# event loop -> its current turn, while that turn has sent a read (tests run many loops)
# Weak: an entry whose loop closed before its call_soon ran (tests start many) goes with it.
_turns: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Turn] = weakref.WeakKeyDictionary()


def reset() -> None:
    """Tests: forget every token seen and any failure."""
    with _lock:
        _seen.clear()
        _owed.clear()
        _state["down_until"] = 0.0


# --- internals ----------------------------------------------------------------------------


def _names() -> tuple[str, ...]:
    return _registered


@functools.lru_cache(maxsize=8)
def _mget(names: tuple[str, ...]) -> bytes:
    """The MGET of every name's token in Redis's wire format. The names are registered at
    import time, so it is encoded once, not per request (~12 µs each in a busy web process)."""
    bulk = inline_redis.bulk
    keys = (bulk(PREFIX + name) for name in names)
    return inline_redis.encoded(len(names) + 1, bulk("MGET"), *keys)


def _resting() -> bool:
    return time.monotonic() < _state["down_until"]


def _failed(exc: BaseException) -> bool:
    with _lock:
        if not _resting():
            logger.warning(
                "Redis unreachable (%s): keys are checked against the database for %.0f s",
                type(exc).__name__,
                RETRY_SECONDS,
            )
        _state["down_until"] = time.monotonic() + RETRY_SECONDS
        _seen.clear()  # the first good read afterwards clears what was cached before
    return False


def _apply(names: tuple[str, ...], tokens) -> None:
    changed = []
    with _lock:
        for name, token in zip(names, tokens, strict=True):
            if _seen.get(name, _UNKNOWN) != token:
                _seen[name] = token
                changed.extend(_clearers[name])
    for clear in changed:
        clear()


def _pool() -> inline_redis.Pool:
    # setting(): every request checks, and `settings.REDIS_URL` costs ~3,300 instructions a read
    return inline_redis.pool(setting("REDIS_URL"))
