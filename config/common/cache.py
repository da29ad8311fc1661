"""The one in-process cache for what is derived from the database.

Every cache of Engram's request path is one of these: the key check, routing snapshots, a
user's term statistics and speaker names, word lexemes. Each entry lives `ttl` seconds; the
least recently used goes first beyond `max_entries` (and, with `weigh`, beyond `max_weight`);
and loads are single-flight — while a key loads, its other callers wait for that load instead
of starting their own (without it, a busy key's entry expiring sent every request of that
moment to the database: ~20 ms stalls at p99 in bench/bench_gateway.py). With `refresh_after`, a hit older than that starts one background
reload and is served meanwhile, so a busy key never waits at expiry.

Sync callers (ORM code on threads) use `get`, async callers `aget`; both share the entries.
`invalidate` and `clear` also void loads already in flight, so a value read before a change
is never stored after it.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
Seconds = float | Callable[[], float]  # a callable reads a setting at use (tests change them)


@dataclass
class _Entry(Generic[V]):
    value: V
    loaded: float  # time.monotonic() when loaded
    generation: int
    weight: int = 0  # weigh(value), with a max_weight


@dataclass
class _Flight:
    done: threading.Event = field(default_factory=threading.Event)
    value: object = None
    error: BaseException | None = None


def _seconds(value: Seconds | None) -> float | None:
    return value() if callable(value) else value


class TTLCache(Generic[K, V]):
    def __init__(
        self,
        *,
        ttl: Seconds,
        max_entries: int,
        refresh_after: Seconds | None = None,
        weigh: Callable[[V], int] | None = None,
        max_weight: int = 0,
    ) -> None:
        self._ttl = ttl
        self._refresh_after = refresh_after
        self._max = max_entries
        # With `weigh`, the least recently used also go while the entries' weights add up to
        # more than `max_weight` (the newest stays): for values whose size has no bound of
        # their own, as a user's term statistics grow with every word the user says.
        self._weigh = weigh
        self._max_weight = max_weight
        self._weight = 0
        self._entries: OrderedDict[K, _Entry[V]] = OrderedDict()
        self._lock = threading.Lock()
        self._flights: dict[K, _Flight] = {}
        self._async_flights: dict[tuple[asyncio.AbstractEventLoop, K], asyncio.Future[V]] = {}
        self._generation = 0  # bumped by clear(); per key, by invalidate()
        self._voided: dict[K, int] = {}

    # --- plain access ---------------------------------------------------------------------

    def peek(self, key: K) -> tuple[bool, V | None]:
        """(True, value) for a fresh entry, else (False, None); loads nothing."""
        entry = self._entries.get(key)
        if entry is None or time.monotonic() - entry.loaded > _seconds(self._ttl):  # type: ignore[operator]
            return False, None
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
        return True, entry.value

    def put(self, key: K, value: V) -> None:
        self._store(key, value, self._generation_of(key))

    def invalidate(self, key: K) -> None:
        with self._lock:
            dropped = self._entries.pop(key, None)
            if dropped is not None:
                self._weight -= dropped.weight
            self._voided[key] = self._voided.get(key, 0) + 1
            if len(self._voided) > self._max:
                self._voided.clear()
                self._generation += 1

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._weight = 0
            self._voided.clear()
            self._generation += 1

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def weight(self) -> int:
        """The entries' weights added up (0 without `weigh`)."""
        return self._weight

    # --- loading --------------------------------------------------------------------------

    def get(self, key: K, load: Callable[[], V]) -> V:
        """The fresh value, else the result of one `load()` shared by concurrent callers."""
        hit, value = self.peek(key)
        if hit:
            return value  # type: ignore[return-value]
        with self._lock:
            flight = self._flights.get(key)
            leader = flight is None
            if flight is None:
                flight = self._flights[key] = _Flight()
        if not leader:
            flight.done.wait()
            if flight.error is not None:
                raise flight.error
            return flight.value  # type: ignore[return-value]
        generation = self._generation_of(key)
        try:
            value = load()
            flight.value = value
            self._store(key, value, generation)
            return value
        except BaseException as exc:
            flight.error = exc
            raise
        finally:
            with self._lock:
                self._flights.pop(key, None)
            flight.done.set()

    async def aget(self, key: K, load: Callable[[], Awaitable[V]]) -> V:
        """As `get`, for async callers; `refresh_after` reloads a busy entry in the background."""
        entry = self._entries.get(key)
        if entry is not None:
            age = time.monotonic() - entry.loaded
            if age <= _seconds(self._ttl):  # type: ignore[operator]
                refresh = _seconds(self._refresh_after)
                if refresh is not None and age > refresh:
                    self._flight(key, load)  # this caller goes on with the cached value
                return entry.value
        return await asyncio.shield(self._flight(key, load))

    def _flight(self, key: K, load: Callable[[], Awaitable[V]]) -> asyncio.Future[V]:
        loop = asyncio.get_running_loop()
        slot = (loop, key)
        future = self._async_flights.get(slot)
        if future is None:
            future = asyncio.ensure_future(self._load_async(key, load))
            self._async_flights[slot] = future
            future.add_done_callback(lambda done: self._landed(slot, done))
        return future

    async def _load_async(self, key: K, load: Callable[[], Awaitable[V]]) -> V:
        generation = self._generation_of(key)
        value = await load()
        self._store(key, value, generation)
        return value

    def _landed(self, slot: tuple[asyncio.AbstractEventLoop, K], future: asyncio.Future) -> None:
        self._async_flights.pop(slot, None)
        if not future.cancelled():
            future.exception()  # retrieved: a failed background refresh is not "never retrieved"

    # --- internals ------------------------------------------------------------------------

    def _generation_of(self, key: K) -> int:
        return self._generation * 1_000_003 + self._voided.get(key, 0)

    def _store(self, key: K, value: V, generation: int) -> None:
        weight = self._weigh(value) if self._weigh is not None else 0
        with self._lock:
            if generation != self._generation_of(key):
                return  # invalidated while it loaded: the value may predate the change
            replaced = self._entries.get(key)
            if replaced is not None:
                self._weight -= replaced.weight
            self._entries[key] = _Entry(value, time.monotonic(), generation, weight)
            self._entries.move_to_end(key)
            self._weight += weight
            while len(self._entries) > self._max or (
                self._weigh is not None
                and self._weight > self._max_weight
                and len(self._entries) > 1
            ):
                self._weight -= self._entries.popitem(last=False)[1].weight
