"""GET /v1/models and /v1/models/{id}: what the workspace can use, in OpenAI's shape.

The workspace's agents (`agent:<name>`, owned by the workspace), aliases, `local`, the
embedding model Engram runs (POST /v1/embeddings), and the models each configured upstream lists (its own /models, asked with
a short timeout and cached for a minute per upstream).
"""

from __future__ import annotations

import asyncio
import logging

from completions import routing
from completions.agents import cache as agent_cache
from completions.embeddings import model_name as embedding_model
from completions.providers.base import ListedModel, Upstream
from completions.providers.llm import _default_model
from completions.providers.registry import PROVIDERS, Snapshot, route, upstream_for
from config.common.cache import TTLCache
from config.common.errors import ApiError

logger = logging.getLogger("engram.models")

# Per upstream (provider, base URL, credential): one /models call a minute, shared by callers.
_upstream_names: TTLCache[tuple[str, str, str], list[ListedModel]] = TTLCache(
    ttl=60.0, max_entries=1000
)


def default_model(*, snapshot: Snapshot) -> str:
    """The model a workspace's routes default to (completions.providers.llm's, for Engram's own
    calls), from the snapshot the caller holds: no database query."""
    return _default_model("", snapshot)


def model_body(model_id: str, owned_by: str, created: int = 0) -> dict:
    return {"id": model_id, "object": "model", "created": created, "owned_by": owned_by}


async def _upstream_models(provider: str, upstream: Upstream) -> list[ListedModel]:
    async def load() -> list[ListedModel]:
        try:
            return await PROVIDERS[provider].list_models(upstream)
        except Exception as exc:  # an upstream without /models must not break the listing
            logger.info("upstream %s did not list models: %s", provider, type(exc).__name__)
            return []

    return await _upstream_names.aget((provider, upstream.base_url, upstream.source), load)


async def available_models(workspace_id: str) -> list[dict]:
    snapshot = await routing.snapshot_async(workspace_id)
    models: dict[str, dict] = {}
    # The workspace's agents first, as model pickers call them (agent:<name>).
    for agent in (await agent_cache.agents_async(workspace_id)).by_id.values():
        models[f"agent:{agent.name}"] = model_body(f"agent:{agent.name}", workspace_id) | {
            "agent_id": agent.id,
            "version": agent.version,
            "target": agent.model,
        }
    for alias, target in snapshot.aliases.items():
        models[alias] = model_body(alias, "engram-alias") | {"target": target.model}
    models.setdefault("local", model_body("local", "engram"))
    # The embedding model Engram itself runs (POST /v1/embeddings): Engram's, as `local` is; a
    # model picker tells it from the chat models by its `type`.
    embedder = embedding_model()
    models.setdefault(embedder, model_body(embedder, "engram") | {"type": "embedding"})
    upstreams = [(p, upstream_for(snapshot, p)) for p in ("openai", "anthropic")]
    configured = [(p, u) for p, u in upstreams if u is not None]
    listings = await asyncio.gather(*(_upstream_models(p, u) for p, u in configured))
    for (provider, _), listed in zip(configured, listings, strict=True):
        for model in listed:  # when the upstream says it was made, as OpenAI's list does
            models.setdefault(model.id, model_body(model.id, provider, model.created))
    _mark_default(models, snapshot)
    return list(models.values())


def _mark_default(models: dict[str, dict], snapshot: Snapshot) -> None:
    """`"default": true` on the model the workspace's routes default to (Engram's own calls
    use it: ENGRAM_MEMORY_LLM_MODEL, else a small model of the configured upstream), listed
    under its provider when the upstream's own list does not name it; `local` when that model
    would be answered offline (no upstream configured). The playground starts on it."""
    name = default_model(snapshot=snapshot)
    try:
        served = route(snapshot, name)
    except ApiError:  # an alias to a provider not configured: nothing to start on
        return
    if served.provider.name == "local" and name not in models:
        name = "local"
    elif name not in models:
        models[name] = model_body(name, served.provider.name)
    models[name]["default"] = True
