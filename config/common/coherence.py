"""In-process caches kept coherent across processes: a change is published, each request checks.

A writer that changes what a cache is derived from calls `publish(name)`: when its transaction
commits, a fresh random token is SET under `engram:coherence:<name>` in Redis. Every door calls
`check_async()` (or `check_sync()`) once per request, before it uses any of these caches: one
MGET of every name's token, started after the request arrived; a token that differs from the
one this process saw last clears the caches registered under that name. So a request that
starts after a change committed — on any process — sees the change: a key revoked through
process A is refused by process B on its very next request.

Cost: a read already sent may have been sent before a request arrived, so the requests that
arrive during one turn of the event loop share one MGET, sent on the next turn (pipelined on
one connection per process): one loopback round trip (~0.1 ms) per request at low load, a
fraction of one per request under load, and no request waits for more than its own read.

A random token rather than a counter: a Redis restart or eviction that loses the key reads as
a change (None) instead of counting up to a value this process already saw.

Redis unreachable (error or RETRY_SECONDS after one): `check_*` return False and the caller
goes to the database (the truth) for that request instead of trusting its cache — a query
per request until Redis answers again, rather than a key that may be revoked; every token
seen is forgotten, so the first good read afterwards clears whatever was cached before. A
publish that fails is logged; other processes then see the change within their cache's TTL.

What each cache of Engram may serve after a change made by another process:

| cache | name | stale after a change in another process |
| --- | --- | --- |
| key check (accounts.authentication) | keys | none; Redis down: none (database per request) |
| routing snapshot (completions.routing) | routing | none on the doors; workers check per LLM call; Redis down: ENGRAM_ROUTING_CACHE_SECONDS (5 s) |
| agents (completions.agents.cache) | agents | as routing |
| upstream model lists (completions.catalogue) | — | 60 s (what the upstream lists; keyed by credential, so a credential change is seen at once) |
| term statistics, speakers, lexemes (memory.retrieval.terms) | — | 60 s per user (600 s per collection): ranking weights only, never access |
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import threading
import time
from collections.abc import Callable

import redis
from django.conf import settings
from django.db import transaction
from redis.asyncio.connection import parse_url

logger = logging.getLogger("engram.coherence")

PREFIX = "engram:coherence:"
# Redis is on the request path: a request waits at most this long before falling back to the
# database, and after a failure Redis is not asked again for RETRY_SECONDS (no timeout each).
TIMEOUT_SECONDS = 0.25
RETRY_SECONDS = 1.0
_UNKNOWN = object()
# What a read from Redis can fail with: the server's errors, the network's, a timeout, a reply
# cut short or garbled.
_FAILURES = (
    redis.RedisError,
    OSError,
    TimeoutError,
    EOFError,
    ValueError,
    asyncio.LimitOverrunError,
)

_clearers: dict[str, list[Callable[[], None]]] = {}
_seen: dict[str, object] = {}  # name -> the token this process saw last
_lock = threading.Lock()
_state = {"down_until": 0.0}
_sync_clients: dict[str, redis.Redis] = {}


def register(name: str, clear: Callable[[], None]) -> None:
    """`clear` empties a cache of this process when `name`'s token changes (at import time)."""
    with _lock:
        _clearers.setdefault(name, []).append(clear)


def publish(name: str) -> None:
    """Tell every process that what `name` caches changed: when the current transaction
    commits (before it, another process could reload the old rows and keep them)."""
    transaction.on_commit(lambda: _publish_now(name))


def _publish_now(name: str) -> None:
    try:
        _sync_client().set(PREFIX + name, secrets.token_hex(8))
    except (redis.RedisError, OSError) as exc:
        logger.warning(
            "could not publish a change of %s (%s): other processes see it "
            "within their cache's TTL",
            name,
            type(exc).__name__,
        )


def check_sync() -> bool:
    """Bring this process's caches up to date; False when Redis cannot say (use the database)."""
    names = _names()
    if not names or _resting():
        return not names
    try:
        tokens = _sync_client().mget([PREFIX + n for n in names])
    except (redis.RedisError, OSError) as exc:
        return _failed(exc)
    _apply(names, tokens)
    return True


async def check_async() -> bool:
    """As `check_sync`, for async doors: concurrent requests share one read (see above)."""
    names = _names()
    if not names or _resting():
        return not names
    try:
        tokens = await _reader().tokens(names)
    except _FAILURES as exc:
        return _failed(exc)
    _apply(names, tokens)
    return True


def reset() -> None:
    """Tests: forget every token seen and any failure."""
    with _lock:
        _seen.clear()
        _state["down_until"] = 0.0


# --- internals ----------------------------------------------------------------------------


def _names() -> list[str]:
    return sorted(_clearers)


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


def _apply(names: list[str], tokens: list) -> None:
    changed = []
    with _lock:
        for name, token in zip(names, tokens, strict=True):
            if _seen.get(name, _UNKNOWN) != token:
                _seen[name] = token
                changed.extend(_clearers[name])
    for clear in changed:
        clear()


def _sync_client() -> redis.Redis:
    url = settings.REDIS_URL
    client = _sync_clients.get(url)
    if client is None:
        client = _sync_clients[url] = redis.Redis.from_url(
            url, socket_timeout=TIMEOUT_SECONDS, socket_connect_timeout=TIMEOUT_SECONDS
        )
    return client


class _Wire:
    """One connection that speaks just enough of Redis's protocol for MGET (and AUTH / SELECT
    when it connects). redis-py's asyncio client cost 142 µs of CPU per MGET here, this 21 µs
    (measured sequentially on loopback, uvloop): the check runs on every request, and the
    whole gateway costs ~1 ms of CPU per request. Reads are pipelined: each sends its MGET at
    once, then waits for the read before it to take its reply (Redis answers in order). Any
    error closes the connection, failing the reads queued on it, and the next read connects
    again."""

    def __init__(self, url: str) -> None:
        self.options = parse_url(url)
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def mget(self, keys: list[str], after: asyncio.Future | None = None) -> list:
        try:
            async with asyncio.timeout(TIMEOUT_SECONDS):
                if self.writer is None and after is not None and not after.done():
                    await asyncio.wait([after])  # it may be connecting: one connection
                if self.writer is None:
                    await self._connect()
                reader = self._send("MGET", *keys)
                if after is not None and not after.done():
                    await asyncio.wait([after])  # its reply comes first
                return await self._reply(reader)  # type: ignore[return-value]
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def _connect(self) -> None:
        o = self.options
        if "path" in o:
            self.reader, self.writer = await asyncio.open_unix_connection(o["path"])
        else:
            tls = o.get("connection_class") is not None  # rediss://
            self.reader, self.writer = await asyncio.open_connection(
                o.get("host", "localhost"), o.get("port", 6379), ssl=True if tls else None
            )
        if o.get("password"):
            credentials = [o["username"]] if o.get("username") else []
            await self._call("AUTH", *credentials, o["password"])
        if o.get("db"):
            await self._call("SELECT", str(o["db"]))

    async def _call(self, *args: str) -> object:
        return await self._reply(self._send(*args))

    def _send(self, *args: str) -> asyncio.StreamReader:
        """Write one command; the reader its reply will come from."""
        if self.reader is None or self.writer is None:
            raise ConnectionResetError("closed meanwhile")  # an earlier read failed
        parts = [f"*{len(args)}\r\n".encode()]
        for arg in args:
            data = arg.encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
        self.writer.write(b"".join(parts))
        return self.reader

    async def _reply(self, reader: asyncio.StreamReader) -> object:
        line = (await reader.readuntil(b"\r\n"))[:-2]
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest
        if kind == b"-":
            raise redis.ResponseError(rest.decode(errors="replace"))
        if kind == b"$":
            size = int(rest)
            return None if size < 0 else (await reader.readexactly(size + 2))[:-2]
        if kind == b"*":
            return [await self._reply(reader) for _ in range(int(rest))]
        raise redis.ResponseError(f"unexpected reply {line[:40]!r}")


class _Reader:
    """One event loop's reads. `next` is the read that callers arriving now share: it starts
    on the loop's next turn, so it is sent after every one of them arrived; from then on,
    newcomers make the next one (pipelined behind it on the one connection)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.wire = _Wire(url)
        self.current: asyncio.Future | None = None  # the read sent last
        self.next: asyncio.Future | None = None

    async def tokens(self, names: list[str]) -> list:
        if self.next is None:
            self.next = asyncio.ensure_future(self._read(self.current, names))
            self.next.add_done_callback(_retrieved)
        return await asyncio.shield(self.next)

    async def _read(self, before: asyncio.Future | None, names: list[str]) -> list:
        self.current, self.next = self.next, None
        return await self.wire.mget([PREFIX + n for n in names], after=before)


def _retrieved(future: asyncio.Future) -> None:
    if not future.cancelled():
        future.exception()  # a failed read whose callers all left is not "never retrieved"


# One reader per event loop (a process serves on one; tests start many). Not weak: a reader's
# connection refers to its loop. Readers of closed loops are dropped when a new one is made
# (their sockets close when collected).
_readers: dict[asyncio.AbstractEventLoop, _Reader] = {}


def _reader() -> _Reader:
    loop = asyncio.get_running_loop()
    reader = _readers.get(loop)
    if reader is None or reader.url != settings.REDIS_URL:
        for closed in [other for other in _readers if other.is_closed()]:
            del _readers[closed]
        if reader is not None:
            reader.wire.close()
        reader = _readers[loop] = _Reader(settings.REDIS_URL)
    return reader
