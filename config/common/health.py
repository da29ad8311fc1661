"""Liveness (/healthz) and readiness (/readyz: database, Redis, a Celery worker)."""

from __future__ import annotations

import asyncio

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connection
from django.http import JsonResponse


async def healthz(request):
    return JsonResponse({"status": "ok"})


def _check_database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


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


async def _run(name: str, check) -> tuple[str, str | None]:
    try:
        if asyncio.iscoroutinefunction(check):
            await asyncio.wait_for(check(), timeout=2)
        else:
            await asyncio.wait_for(sync_to_async(check, thread_sensitive=False)(), timeout=3)
        return name, None
    except Exception as exc:  # noqa: BLE001 - any failure means "down"
        return name, f"{type(exc).__name__}: {exc}"[:200]


async def readyz(request):
    results = await asyncio.gather(
        _run("database", sync_to_async(_check_database)),
        _run("redis", _check_redis),
        _run("worker", _check_worker),
    )
    down = {name: error for name, error in results if error}
    if down:
        return JsonResponse(
            {"status": "unavailable", "down": sorted(down), "errors": down}, status=503
        )
    return JsonResponse({"status": "ok", "checks": {name: "ok" for name, _ in results}})
