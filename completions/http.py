"""One pooled httpx client per process and event loop (tests run servers on their own loops)."""

from __future__ import annotations

import asyncio
import threading
import weakref

import httpx
from django.conf import settings

_async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient] = (
    weakref.WeakKeyDictionary()
)
_sync_client: httpx.Client | None = None
_lock = threading.Lock()


def _timeout() -> httpx.Timeout:
    return httpx.Timeout(
        settings.ENGRAM_UPSTREAM_TIMEOUT, connect=settings.ENGRAM_UPSTREAM_CONNECT_TIMEOUT
    )


def _limits() -> httpx.Limits:
    # No cap on connections: a slow upstream must not queue requests inside Engram.
    return httpx.Limits(max_connections=None, max_keepalive_connections=256, keepalive_expiry=30)


def async_client() -> httpx.AsyncClient:
    loop = asyncio.get_running_loop()
    client = _async_clients.get(loop)
    if client is None or client.is_closed:
        client = httpx.AsyncClient(timeout=_timeout(), limits=_limits(), follow_redirects=False)
        _async_clients[loop] = client
    return client


def sync_client() -> httpx.Client:
    """For Engram's own LLM calls from Celery workers (threads share it; httpx is thread-safe)."""
    global _sync_client
    with _lock:
        if _sync_client is None or _sync_client.is_closed:
            _sync_client = httpx.Client(timeout=_timeout(), limits=_limits())
        return _sync_client
