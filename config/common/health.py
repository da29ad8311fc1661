"""Liveness (/healthz) and readiness (/readyz: database, Redis, a Celery worker, and the warm-ups).

Ready means ready: what the first request would otherwise load (the embedding model, the
tokenizer) is loaded by /readyz, once, on a thread of its own, and /readyz answers 503 naming
it until it has loaded. Apps register their warm-ups (`register_warmup`); nothing loads at import.

Both are public (no key): a failed check is named with a generic state (`unavailable`,
`timeout`, `loading`); the driver's text (a database's host, user, port) goes to the log only.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import logging
import threading
from collections.abc import Callable

from django.conf import settings
from django.db import connection
from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_safe
from redis.exceptions import TimeoutError as RedisTimeout  # not the builtin TimeoutError

logger = logging.getLogger("engram.health")


# GET and HEAD; anything else is the envelope's 405 (config.common.middleware), not CSRF's 403.
@csrf_exempt
@require_safe
async def healthz(request):
    return JsonResponse({"status": "ok"})


def _check_database() -> None:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    finally:
        connection.close()  # back to the pool: a readiness thread keeps no connection


async def _check_redis() -> None:
    import redis.asyncio as aioredis

    client = aioredis.from_url(settings.REDIS_URL, socket_timeout=1, socket_connect_timeout=1)
    try:
        await client.ping()
    finally:
        await client.aclose()


def _check_worker() -> None:
    from config.celery import app

    replies = app.control.ping(timeout=1.0)
    if not replies:
        raise RuntimeError("no Celery worker answered")


_warmups: dict[str, Callable[[], object]] = {}
_warming: dict[str, concurrent.futures.Future] = {}
_warm_lock = threading.Lock()
# One thread: warm-ups run one after another and never take the request threads' executor.
_warm_pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="warm-up")
WARM_WAIT = 5.0  # seconds one /readyz waits for a warm-up before answering 503


def register_warmup(name: str, load: Callable[[], object]) -> None:
    """`load` runs once per process, at the first /readyz; readiness waits for it."""
    _warmups[name] = load


def _warm(name: str) -> concurrent.futures.Future:
    with _warm_lock:
        future = _warming.get(name)
        if future is None or (future.done() and future.exception() is not None):
            future = _warming[name] = _warm_pool.submit(_warmups[name])  # a failure is retried
        return future


def warm_all() -> None:
    """Start every warm-up now, on the warm-up thread (a web process at its start: each of
    several processes is warm before a chat reaches it, not only the one /readyz reached);
    then freeze what they loaded."""
    for name in sorted(_warmups):
        _warm(name)
    # After the warm-ups (one thread: in order), what they loaded lives as long as the process:
    # out of the cyclic GC's older generations, as completions.asgi does at import. A web
    # process under bench_gateway's load: ~137,000 objects frozen, ~11,000 left to scan.
    _warm_pool.submit(gc.freeze)


class _Loading(Exception):
    """A warm-up that has not finished within WARM_WAIT."""


def _warmup_check(name: str):
    async def check() -> None:
        future = asyncio.wrap_future(_warm(name))
        try:
            await asyncio.wait_for(asyncio.shield(future), timeout=WARM_WAIT)
        except TimeoutError:
            raise _Loading("still loading") from None

    return check


def _tokenizer() -> None:
    from config.common.tokens import encoding

    encoding()


register_warmup("tokenizer", _tokenizer)


# The blocking checks (the database, Celery's ping) run on threads of their own. A server that
# stalls (accepts, then never answers) holds its check's thread until the driver gives up: in
# the request's own thread (sync_to_async's default) the rest of the request, its sync
# middleware, queued behind it and /readyz never answered. Two threads a check: checks queued
# behind stuck ones time out too (and are cancelled) rather than piling up threads, and a stalled
# Redis holding the worker's ping does not make the database's check wait (a false "timeout").
_check_pools: dict[str, concurrent.futures.ThreadPoolExecutor] = {}


def _pool(name: str) -> concurrent.futures.ThreadPoolExecutor:
    with _warm_lock:
        if name not in _check_pools:
            _check_pools[name] = concurrent.futures.ThreadPoolExecutor(
                max_workers=2, thread_name_prefix=f"readiness-{name}"
            )
        return _check_pools[name]


async def _run(name: str, check, timeout: float = 2) -> tuple[str, str]:
    """(name, state): "ok", or a generic state for a public answer; the error is logged."""
    try:
        if asyncio.iscoroutinefunction(check):
            await asyncio.wait_for(check(), timeout=timeout)
        else:
            await asyncio.wait_for(asyncio.wrap_future(_pool(name).submit(check)), timeout)
        return name, "ok"
    except Exception as exc:  # noqa: BLE001 - any failure means "down"
        if isinstance(exc, _Loading):
            state = "loading"
        elif isinstance(exc, TimeoutError | RedisTimeout):
            state = "timeout"
        else:
            state = "unavailable"
        logger.warning("readiness check %s: %s: %s", name, type(exc).__name__, str(exc)[:500])
        return name, state


@csrf_exempt
@require_safe
async def readyz(request):
    results = await asyncio.gather(
        _run("database", _check_database),
        _run("redis", _check_redis),
        _run("worker", _check_worker, 3),  # its ping waits 1 s for the replies
        *(_run(name, _warmup_check(name), WARM_WAIT + 1) for name in sorted(_warmups)),
    )
    checks = dict(results)
    down = {name: state for name, state in results if state != "ok"}
    if down:
        body = {"status": "unavailable", "down": sorted(down), "errors": down, "checks": checks}
        logger.warning("not ready: %s", ", ".join(f"{n} {s}" for n, s in sorted(down.items())))
        unavailable = JsonResponse(body, status=503)
        # The answer a probe asks for, not a fault of the request: Django's request logger
        # wrote it at ERROR ("Service Unavailable: /readyz") on every probe while one was down.
        unavailable._has_been_logged = True  # type: ignore[attr-defined]
        return unavailable
    return JsonResponse({"status": "ok", "checks": checks})
