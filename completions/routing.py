"""Routing data per workspace (aliases, provider credentials), cached in-process.

The hot path makes no database query: a workspace's snapshot lives in the one TTLCache for
ENGRAM_ROUTING_CACHE_SECONDS, and once half that old the request that finds it starts one
background reload and is served the cached snapshot meanwhile, so a busy workspace never waits
on the database. The services that write routing data (completions.services, which the admin
uses too) invalidate this process's entry at once and, on commit, publish the change
(config.common.coherence): every door checks for changes before a request's key lookup, so the
next request on any process routes by the new data. Workers check before each LLM call
(`snapshot_sync`). Only when Redis is unreachable can a snapshot be up to the TTL old.
"""

from __future__ import annotations

import logging

from asgiref.sync import sync_to_async
from django.db import transaction

from completions.providers.base import Upstream
from completions.providers.registry import AliasTarget, Route, Snapshot, route
from config.common import coherence
from config.common.cache import TTLCache
from config.common.setting import setting

logger = logging.getLogger("engram.routing")


def _ttl() -> float:
    return setting("ENGRAM_ROUTING_CACHE_SECONDS")


_snapshots: TTLCache[str, Snapshot] = TTLCache(
    ttl=_ttl, refresh_after=lambda: _ttl() / 2, max_entries=10_000
)
# Another process's change clears every workspace's snapshot here: routing changes are rare
# operator actions, and the next request of each workspace reloads its own.
coherence.register("routing", _snapshots.clear)


def load_snapshot(workspace_id: str) -> Snapshot:
    """Read a workspace's routing data from the database (secrets decrypted once, here)."""
    from django.db import close_old_connections

    from completions.selectors import model_alias_list, provider_credential_list
    from config.common.crypto import SecretUnreadable

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
                dialect=credential.dialect,
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


def invalidate(workspace_id: str | None = None) -> None:
    """Forget a workspace's routes (every workspace's for None): now, and again when the
    writing transaction commits, so a load that read the rows in between is not kept."""

    def forget() -> None:
        if workspace_id is None:
            _snapshots.clear()
        else:
            _snapshots.invalidate(workspace_id)

    forget()
    transaction.on_commit(forget)
    coherence.publish("routing")


_load_on_worker = sync_to_async(load_snapshot, thread_sensitive=False)


async def _load_async(workspace_id: str) -> Snapshot:
    try:
        return await _load_on_worker(workspace_id)
    except Exception:
        # A failed background reload leaves the cached routes in service until they expire.
        logger.exception("loading the routes of workspace %s failed", workspace_id)
        raise


async def snapshot_async(workspace_id: str) -> Snapshot:
    return await _snapshots.aget(workspace_id, lambda: _load_async(workspace_id))


def snapshot_sync(workspace_id: str) -> Snapshot:
    """For workers and sync callers, which pass no door: they check for changes themselves."""
    coherence.check_sync()
    return _snapshots.get(workspace_id, lambda: load_snapshot(workspace_id))


async def resolve_async(workspace_id: str, model: str) -> Route:
    return route(await snapshot_async(workspace_id), model)


def resolve_sync(workspace_id: str, model: str) -> Route:
    return route(snapshot_sync(workspace_id), model)
