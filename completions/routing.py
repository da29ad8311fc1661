"""Routing data per workspace (aliases, provider credentials), cached in-process.

The hot path makes no database query: a workspace's snapshot is loaded once, served for
ENGRAM_ROUTING_CACHE_SECONDS, then served stale while one background load refreshes it. Saves
in this process invalidate at once (signals); other processes see a change within the TTL.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time

from asgiref.sync import sync_to_async
from django.conf import settings

from completions.providers.base import Upstream
from completions.providers.registry import AliasTarget, Route, Snapshot, route

logger = logging.getLogger("engram.routing")

_entries: dict[str, tuple[float, Snapshot]] = {}
_refreshing: set[str] = set()
_lock = threading.Lock()
_tasks: set[asyncio.Task] = set()


def load_snapshot(workspace_id: str) -> Snapshot:
    """Read a workspace's routing data from the database (secrets decrypted once, here)."""
    from django.db import close_old_connections

    from completions.crypto import SecretUnreadable
    from completions.selectors import model_alias_list, provider_credential_list

    try:
        aliases = {
            a.alias: AliasTarget(model=a.target_model, provider=a.provider)
            for a in model_alias_list(workspace=workspace_id)
        }
        credentials = {}
        for credential in provider_credential_list(workspace=workspace_id):
            try:
                secret = credential.get_secret()
            except SecretUnreadable:
                logger.error("credential %s cannot be decrypted; ignored", credential.id)
                continue
            credentials[credential.provider] = Upstream(
                provider=credential.provider,
                base_url=credential.base_url or _default_url(credential.provider),
                api_key=secret,
                source=credential.id,
            )
    finally:
        close_old_connections()
    return Snapshot(aliases=aliases, credentials=credentials)


def _default_url(provider: str) -> str:
    from completions.providers.registry import env_upstream

    env = env_upstream(provider)
    if env is not None:
        return env.base_url
    from completions.providers import anthropic, openai_compatible

    return {"anthropic": anthropic.DEFAULT_BASE_URL}.get(
        provider, openai_compatible.DEFAULT_BASE_URL
    )


def _store(workspace_id: str, snapshot: Snapshot) -> None:
    with _lock:
        _entries[workspace_id] = (
            time.monotonic() + settings.ENGRAM_ROUTING_CACHE_SECONDS,
            snapshot,
        )
        _refreshing.discard(workspace_id)


def invalidate(workspace_id: str | None = None) -> None:
    with _lock:
        if workspace_id is None:
            _entries.clear()
        else:
            _entries.pop(workspace_id, None)


async def _refresh(workspace_id: str) -> None:
    try:
        _store(
            workspace_id, await sync_to_async(load_snapshot, thread_sensitive=False)(workspace_id)
        )
    except Exception:
        logger.exception("routing refresh failed; serving the cached routes")
        with _lock:
            _refreshing.discard(workspace_id)


async def snapshot_async(workspace_id: str) -> Snapshot:
    entry = _entries.get(workspace_id)
    if entry is not None:
        if entry[0] < time.monotonic():
            with _lock:
                start = workspace_id not in _refreshing
                _refreshing.add(workspace_id)
            if start:
                task = asyncio.get_running_loop().create_task(_refresh(workspace_id))
                _tasks.add(task)
                task.add_done_callback(_tasks.discard)
        return entry[1]
    snapshot = await sync_to_async(load_snapshot, thread_sensitive=False)(workspace_id)
    _store(workspace_id, snapshot)
    return snapshot


def snapshot_sync(workspace_id: str) -> Snapshot:
    entry = _entries.get(workspace_id)
    if entry is not None and entry[0] >= time.monotonic():
        return entry[1]
    snapshot = load_snapshot(workspace_id)
    _store(workspace_id, snapshot)
    return snapshot


async def resolve_async(workspace_id: str, model: str) -> Route:
    return route(await snapshot_async(workspace_id), model)


def resolve_sync(workspace_id: str, model: str) -> Route:
    return route(snapshot_sync(workspace_id), model)
