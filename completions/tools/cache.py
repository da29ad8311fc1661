"""An agent's tools, cached in-process like the agents themselves (completions.agents.cache):
calling an agent costs no query for its tools. A tool write forgets the agent's entry here and
publishes "agents" (config.common.coherence), which clears this cache on every process too."""

from __future__ import annotations

from django.conf import settings
from django.db import transaction

from completions.tools.models import Tool
from config.common import coherence
from config.common.cache import TTLCache
from config.common.orm import on_pool_thread


def _ttl() -> float:
    return settings.ENGRAM_ROUTING_CACHE_SECONDS


# Reloaded in the background once half a TTL old, as the agents are: no request waits on it.
_tools: TTLCache[tuple[str, str], tuple[Tool, ...]] = TTLCache(
    ttl=_ttl, refresh_after=lambda: _ttl() / 2, max_entries=10_000
)
coherence.register("agents", _tools.clear)


def _load(workspace_id: str, agent_id: str) -> tuple[Tool, ...]:
    from completions.tools.selectors import agent_tools

    return tuple(agent_tools(workspace=workspace_id, agent_id=agent_id))


_load_on_worker = on_pool_thread(_load)


async def tools_async(workspace_id: str, agent_id: str) -> tuple[Tool, ...]:
    key = (workspace_id, agent_id)
    return await _tools.aget(key, lambda: _load_on_worker(*key))


def invalidate(workspace_id: str, agent_id: str) -> None:
    def forget() -> None:
        _tools.invalidate((workspace_id, agent_id))

    forget()
    transaction.on_commit(forget)
    coherence.publish("agents")
