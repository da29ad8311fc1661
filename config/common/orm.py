"""The ORM from async code: the ways a synchronous database function runs off the loop, on a
connection that is still alive."""

from __future__ import annotations

import select
from collections.abc import Awaitable, Callable
from functools import wraps
from typing import ParamSpec, TypeVar

from asgiref.sync import sync_to_async
from django.db import close_old_connections, connection
from psycopg import pq

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


def drop_connection_closed_by_server() -> None:
    """Hand this thread's connection back to the pool if the server has closed it.

    A connection Django keeps on a thread across requests (asgiref's shared thread: the chat
    path has no request signals to return it) is never checked by the pool, so after a
    PostgreSQL restart (or `pg_terminate_backend`) the next turn on it failed. A server that
    closes a connection first sends the reason and its FIN: an idle connection whose socket is
    readable is gone (or holds an asynchronous notice, when the pool's check keeps it). One
    poll, no round trip; as go-sql-driver/mysql's connCheck. A crashed host sends nothing: that
    query fails, and the next hop finds the connection broken.
    """
    held = connection.connection
    if held is None or connection.in_atomic_block:
        return
    if held.closed or held.pgconn.status != pq.ConnStatus.OK or _readable(held.pgconn.socket):
        connection.close()  # the pool discards a broken connection, checks one it takes out


def _readable(fd: int) -> bool:
    poller = select.poll()  # not select(): a descriptor past 1,024 is valid here
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))


def on_request_thread(fn: Callable[P, R]) -> Callable[P, Awaitable[R]]:
    """`fn` as a coroutine function on asgiref's shared thread (the request's database work in
    order, on one connection), that connection dropped first if the server has closed it."""

    @wraps(fn)
    def checked(*args: P.args, **kwargs: P.kwargs) -> R:
        drop_connection_closed_by_server()
        return fn(*args, **kwargs)

    return sync_to_async(checked)
