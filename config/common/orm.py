"""The ORM from async code: one way to run a synchronous database function off the loop."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import wraps
from typing import ParamSpec, TypeVar

from asgiref.sync import sync_to_async
from django.db import close_old_connections

P = ParamSpec("P")
R = TypeVar("R")


def on_pool_thread(fn: Callable[P, R]) -> Callable[P, Awaitable[R]]:
    """`fn` as a coroutine function run on a pool thread — not asgiref's one shared thread: a
    slow query must not queue every other sync hop behind it — with a healthy connection
    before and after (a pool thread's connection outlives the request that opened it)."""

    @wraps(fn)
    def healthy(*args: P.args, **kwargs: P.kwargs) -> R:
        close_old_connections()
        try:
            return fn(*args, **kwargs)
        finally:
            close_old_connections()

    return sync_to_async(healthy, thread_sensitive=False)
