"""Ranking on a second database connection, beside the caller's: the one thread pool for it.

A chat turn ranks memories there while its own connection stores the turn and ranks past
messages (memory.turn.pipeline); `/v1/search` ranks memories there while it ranks messages
(memory.retrieval.search). Each pool thread has its own Django connection, checked as a
request's would be. A caller inside a transaction must not use it: another connection cannot
see the transaction's rows.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")
_pool: concurrent.futures.ThreadPoolExecutor | None = None


def parallel() -> concurrent.futures.ThreadPoolExecutor:
    global _pool
    if _pool is None:
        _pool = concurrent.futures.ThreadPoolExecutor(8, thread_name_prefix="engram-memories")
    return _pool


def on_own_connection(fn: Callable[..., T], /, **kwargs: Any) -> T:
    """`fn(**kwargs)` on this pool thread's connection, checked as a request's would be."""
    from django.db import close_old_connections

    close_old_connections()
    return fn(**kwargs)


def submit(fn: Callable[..., T], /, **kwargs: Any) -> concurrent.futures.Future[T]:
    return parallel().submit(on_own_connection, fn, **kwargs)
