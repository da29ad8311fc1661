"""A workspace's agents, cached in-process like its routes (completions.routing): no database
query per request. The current version of every agent of a workspace is one TTLCache entry
(reloaded in the background once half ENGRAM_ROUTING_CACHE_SECONDS old); a pinned version
(`agent:<name>@<n>`) is read once and kept, since versions never change. completions.agents.
services forgets a workspace's entry at once and publishes "agents" (config.common.coherence),
so every door's per-request check clears the entries of every process before the next request.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from django.conf import settings
from django.db import transaction

from config.common import coherence
from config.common.cache import TTLCache
from config.common.orm import on_pool_thread

logger = logging.getLogger("engram.agents")


@dataclass(frozen=True)
class AgentConfig:
    """What a call of one agent version applies (read-only: shared by concurrent requests)."""

    id: str
    version: int
    name: str
    instructions: str
    model: str
    parameters: MappingProxyType[str, Any]
    memory: MappingProxyType[str, Any]
    collection_ids: tuple[str, ...]


@dataclass(frozen=True)
class Agents:
    by_id: dict[str, AgentConfig] = field(default_factory=dict)
    by_name: dict[str, AgentConfig] = field(default_factory=dict)
    # A name an agent's earlier version had and no agent has now -> the ids of the agents that
    # had it: `agent:<old name>@<n>` keeps calling the version pinned before a rename.
    former_names: dict[str, tuple[str, ...]] = field(default_factory=dict)


def config_of(row: Any, agent_id: str) -> AgentConfig:
    """An Agent or AgentVersion row as an AgentConfig."""
    return AgentConfig(
        id=agent_id,
        version=row.version,
        name=row.name,
        instructions=row.instructions,
        model=row.model,
        parameters=MappingProxyType(dict(row.parameters or {})),
        memory=MappingProxyType(dict(row.memory or {})),
        collection_ids=tuple(row.collection_ids or ()),
    )


def _ttl() -> float:
    return settings.ENGRAM_ROUTING_CACHE_SECONDS


_current: TTLCache[str, Agents] = TTLCache(
    ttl=_ttl, refresh_after=lambda: _ttl() / 2, max_entries=10_000
)
# (workspace id, agent id, version) -> that version, or None when there is none. Versions never
# change; a deleted agent's are forgotten with everything else (below).
_pinned: TTLCache[tuple[str, str, int], AgentConfig | None] = TTLCache(
    ttl=3600.0, max_entries=10_000
)


def _clear() -> None:
    _current.clear()
    _pinned.clear()


coherence.register("agents", _clear)


def _existing_collections(workspace_id: str, rows: list) -> set[str]:
    """Which of the agents' collections still exist: a deleted one is no longer searched
    (rather than every call of the agent being a 404 naming it)."""
    from memory.knowledge.selectors import collection_ids_existing

    named = {cid for row in rows for cid in row.collection_ids or ()}
    return collection_ids_existing(workspace=workspace_id, collection_ids=named)


def config_existing(row: Any, agent_id: str, existing: set[str]) -> AgentConfig:
    config = config_of(row, agent_id)
    kept = tuple(c for c in config.collection_ids if c in existing)
    if kept == config.collection_ids:
        return config
    return dataclasses.replace(config, collection_ids=kept)


def load(workspace_id: str) -> Agents:
    from completions.agents.selectors import agent_list, agent_version_names

    rows = list(agent_list(workspace=workspace_id))
    existing = _existing_collections(workspace_id, rows)
    configs = [config_existing(a, a.id, existing) for a in rows]
    by_name = {c.name: c for c in configs}
    former: dict[str, list[str]] = {}
    for agent_id, name in agent_version_names(workspace=workspace_id):
        if name not in by_name:
            former.setdefault(name, []).append(agent_id)
    return Agents(
        by_id={c.id: c for c in configs},
        by_name=by_name,
        former_names={name: tuple(ids) for name, ids in former.items()},
    )


def load_version(workspace_id: str, agent_id: str, version: int) -> AgentConfig | None:
    from completions.agents.selectors import agent_version_get

    row = agent_version_get(workspace=workspace_id, agent_id=agent_id, version=version)
    if row is None:
        return None
    return config_existing(row, agent_id, _existing_collections(workspace_id, [row]))


def invalidate(workspace_id: str) -> None:
    """Forget a workspace's agents now and when the writing transaction commits (a load that
    read the rows in between is not kept), and tell every other process."""

    def forget() -> None:
        _current.invalidate(workspace_id)
        _pinned.clear()  # rare (an operator's edit): simpler than indexing pins by workspace

    forget()
    transaction.on_commit(forget)
    coherence.publish("agents")


_load_on_worker = on_pool_thread(load)
_load_version_on_worker = on_pool_thread(load_version)


async def agents_async(workspace_id: str) -> Agents:
    return await _current.aget(workspace_id, lambda: _load_on_worker(workspace_id))


def agents_sync(workspace_id: str) -> Agents:
    coherence.check_sync()
    return _current.get(workspace_id, lambda: load(workspace_id))


async def version_async(workspace_id: str, agent_id: str, version: int) -> AgentConfig | None:
    key = (workspace_id, agent_id, version)
    return await _pinned.aget(key, lambda: _load_version_on_worker(*key))


def version_sync(workspace_id: str, agent_id: str, version: int) -> AgentConfig | None:
    key = (workspace_id, agent_id, version)
    return _pinned.get(key, lambda: load_version(*key))
