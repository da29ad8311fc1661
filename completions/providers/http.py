"""Pooled HTTP clients: one aiohttp session per process and event loop for the gateway's hot
path (tests run servers on their own loops), one httpx client for Engram's own sync calls.

aiohttp rather than httpx on the hot path: at 16 concurrent upstream connections httpx spent
~2.3 ms of CPU per request against ~0.4 ms for aiohttp (measured on this machine; see
bench/README.md), which alone exceeded the gateway's latency budget.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Callable
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import TYPE_CHECKING

import aiohttp
import httpx
from django.conf import settings

if TYPE_CHECKING:
    from completions.conf import Conf

_sessions: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aiohttp.ClientSession] = (
    weakref.WeakKeyDictionary()
)
_sync_client: httpx.Client | None = None
_lock = threading.Lock()


_last: tuple[asyncio.AbstractEventLoop | None, aiohttp.ClientSession | None] = (None, None)


def session() -> aiohttp.ClientSession:
    global _last
    loop = asyncio.get_running_loop()
    last_loop, pooled = _last
    if last_loop is loop and pooled is not None and not pooled.closed:
        return pooled
    pooled = _sessions.get(loop)
    if pooled is None or pooled.closed:
        # No connection cap: a slow upstream must not queue requests inside Engram.
        connector = aiohttp.TCPConnector(
            limit=0, keepalive_timeout=30, ttl_dns_cache=300, enable_cleanup_closed=True
        )
        # No cookie jar: this one session serves every workspace, and a cookie one tenant's
        # upstream set (a CDN's, a proxy's session) would ride on the next tenant's request.
        pooled = aiohttp.ClientSession(
            connector=connector, trust_env=False, cookie_jar=aiohttp.DummyCookieJar()
        )
        _sessions[loop] = pooled
    _last = (loop, pooled)
    return pooled


_conf: Callable[[], Conf] | None = None  # completions.conf.conf, once loaded


def timeout(*, read: float | None = None) -> aiohttp.ClientTimeout:
    """Connect, then each read: ENGRAM_UPSTREAM_CONNECT_TIMEOUT / ENGRAM_UPSTREAM_TIMEOUT."""
    global _conf
    if _conf is None:  # completions.conf imports providers.base, which imports this module;
        # an import statement run per request cost ~7,000 instructions (callgrind)
        from completions.conf import conf

        _conf = conf
    configured = _conf().timeout
    if read is None:
        return configured
    return aiohttp.ClientTimeout(sock_connect=configured.sock_connect, sock_read=read)


def sync_client() -> httpx.Client:
    """For Engram's own LLM calls from Celery workers (threads share it; httpx is thread-safe)."""
    global _sync_client
    with _lock:
        if _sync_client is None or _sync_client.is_closed:
            _sync_client = httpx.Client(
                timeout=httpx.Timeout(
                    settings.ENGRAM_UPSTREAM_TIMEOUT,
                    connect=settings.ENGRAM_UPSTREAM_CONNECT_TIMEOUT,
                ),
                limits=httpx.Limits(max_connections=None, max_keepalive_connections=32),
                # every workspace's calls share it: keep no upstream's cookie (as session())
                cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),
            )
        return _sync_client


async def close_session() -> None:
    """Close this loop's session (a server that stops while the process goes on: tests)."""
    global _last
    pooled = _sessions.pop(asyncio.get_running_loop(), None)
    _last = (None, None)
    if pooled is not None:
        await pooled.close()
