"""The key check for the ASGI door: accounts' key cache and lookup (the one door for tenancy),
with one lookup in flight per key and a refresh ahead of the cache's expiry.

Without this, every second (ENGRAM_KEY_CACHE_SECONDS) the entry of a busy key expired and every
request arriving meanwhile made its own database lookup through the thread pool: a stall of
~20 ms at p99 in the benchmark. Now a request waits only when its key is not cached at all,
and then shares one lookup; a revocation still takes effect within the cache's TTL.
"""

from __future__ import annotations

import asyncio
import time

from asgiref.sync import sync_to_async

from accounts.authentication import Principal, is_operator_key, key_cache
from completions.conf import conf

_inflight: dict[tuple[asyncio.AbstractEventLoop, str], asyncio.Future] = {}
_refreshed: dict[str, float] = {}
_MAX_TRACKED = 10_000


def _lookup_blocking(raw_key: str) -> Principal | None:
    """On a worker thread, with a healthy database connection before and after."""
    from django.db import close_old_connections

    from accounts.authentication import refresh_sync

    close_old_connections()
    try:
        return refresh_sync(raw_key)
    finally:
        close_old_connections()


def _lookup(raw_key: str) -> asyncio.Future:
    """The in-flight lookup of this key, started if there is none."""
    loop = asyncio.get_running_loop()
    slot = (loop, raw_key)
    future = _inflight.get(slot)
    if future is None:
        if len(_refreshed) > _MAX_TRACKED:
            _refreshed.clear()
        _refreshed[raw_key] = time.monotonic()
        future = asyncio.ensure_future(
            sync_to_async(_lookup_blocking, thread_sensitive=False)(raw_key)
        )
        _inflight[slot] = future
        future.add_done_callback(lambda done: _settled(slot, done))
    return future


def _settled(slot, future: asyncio.Future) -> None:
    _inflight.pop(slot, None)
    if not future.cancelled():
        future.exception()  # retrieved: a failed background refresh is not an unhandled error


async def principal_for(raw_key: str) -> Principal | None:
    hit, principal = key_cache.get(raw_key)  # never holds the operator key (see accounts)
    if hit:
        if time.monotonic() - _refreshed.get(raw_key, 0.0) > conf().key_ttl / 2:
            _lookup(raw_key)  # refresh ahead, in the background; this request goes on
        return principal
    if is_operator_key(raw_key):
        return Principal(workspace=None, key_id=None, is_operator=True)
    return await asyncio.shield(_lookup(raw_key))
