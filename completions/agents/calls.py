"""Calling an agent: `model` is `agent_…`, `agent:<name>` or `agent:<name>@<version>`.

`resolve_async` finds the version from the in-process cache (completions.agents.cache: no
database query per request, except the first call of a pinned version per process); `apply`
turns the client's turn into the agent's: its instructions first (the client's own system
messages kept after them), its parameters where the request has none, its tools beside the
request's, its model for routing and the context window, its memory policy, its collections
before the request's x-collection-ids. What the client sent as `model` is what the answer names.
"""

from __future__ import annotations

import datetime

from completions.agents import cache
from completions.agents.cache import AgentConfig
from config.common.errors import NotFound
from memory.knowledge.search import MAX_COLLECTIONS
from memory.turn.contract import TurnContext

ID_PREFIX = "agent_"
NAME_PREFIX = "agent:"
# Sent as either one of these, the request's own value wins over the agent's value of both.
_TOKEN_LIMITS = ("max_tokens", "max_completion_tokens")


def is_agent(model: str) -> bool:
    return model.startswith((ID_PREFIX, NAME_PREFIX))


def _not_found(model: str) -> NotFound:
    return NotFound(
        f"The model '{model}' does not exist or you do not have access to it.",
        field="model",
        code="model_not_found",
    )


def _parse(model: str) -> tuple[str | None, str | None, int | None]:
    """(agent id, name, pinned version) from `model`; a malformed version is not an agent."""
    if model.startswith(ID_PREFIX):
        return model, None, None
    name, at, version = model[len(NAME_PREFIX) :].partition("@")
    if not at:
        return None, name, None
    if not version.isdigit() or len(version) > 9:
        raise _not_found(model)
    return None, name, int(version)


def _find(agents: cache.Agents, model: str) -> tuple[AgentConfig, int | None, str | None]:
    """(the agent's current version, the version pinned, the name that version must have).

    A pinned call of a name no agent has now calls the agent whose version of that number had
    it: a rename is a later edit, and `agent:<name>@<n>` once answered 404 after one."""
    agent_id, name, version = _parse(model)
    current = agents.by_id.get(agent_id) if agent_id else agents.by_name.get(name or "")
    if current is not None:
        return current, version, None
    former = agents.former_names.get(name or "", ()) if version is not None else ()
    if len(former) == 1 and former[0] in agents.by_id:  # two agents had it: which is unknown
        return agents.by_id[former[0]], version, name
    raise _not_found(model)


def _pinned(model: str, pinned: AgentConfig | None, name: str | None) -> AgentConfig:
    if pinned is None or (name is not None and pinned.name != name):
        raise _not_found(model)
    return pinned


async def resolve_async(workspace_id: str, model: str) -> AgentConfig:
    """The agent version `model` calls in the workspace; NotFound (`model_not_found`) else."""
    current, version, name = _find(await cache.agents_async(workspace_id), model)
    if version is None or (version == current.version and name is None):
        return current
    return _pinned(model, await cache.version_async(workspace_id, current.id, version), name)


def resolve_sync(workspace_id: str, model: str) -> AgentConfig:
    current, version, name = _find(cache.agents_sync(workspace_id), model)
    if version is None or (version == current.version and name is None):
        return current
    return _pinned(model, cache.version_sync(workspace_id, current.id, version), name)


async def model_async(workspace_id: str, model: str) -> dict:
    """`model` (`agent_…`, `agent:<name>` or `agent:<name>@<version>`) as GET /v1/models/{id}
    shows it: what a chat call takes, a retrieve finds (a pinned version answered chat and was
    404 there). NotFound (`model_not_found`) else."""
    from completions.catalogue import model_body  # the catalogue lists agents from the cache

    agent = await resolve_async(workspace_id, model)
    shown = model if model.startswith(NAME_PREFIX) else f"{NAME_PREFIX}{agent.name}"
    return model_body(shown, workspace_id) | {
        "agent_id": agent.id,
        "version": agent.version,
        "target": agent.model,
    }


def instructions(agent: AgentConfig, ctx: TurnContext) -> str:
    """The agent's instructions with {{user_id}} and {{date}} (UTC, ISO) filled in."""
    text = agent.instructions
    if "{{" not in text:
        return text
    return text.replace("{{user_id}}", ctx.user_id or "").replace(
        "{{date}}", datetime.datetime.now(datetime.UTC).date().isoformat()
    )


async def apply(ctx: TurnContext, agent: AgentConfig) -> None:
    """Make `ctx` (and its body, which the upstream receives) the agent's turn. The agent's
    tool definitions join the body's tools here, as its run sends them
    (completions.tools.run.upstream_body): the context budget reserves room for them as for
    the request's own (memory.turn.assembly.definitions_tokens), and the history fits beside."""
    from completions.tools import cache as tool_cache
    from completions.tools.run import with_agent_tools

    _apply(ctx, agent)
    tools = await tool_cache.tools_async(ctx.workspace.id, agent.id)
    if tools:
        ctx.body["tools"] = with_agent_tools(ctx.body.get("tools"), tools)


def _apply(ctx: TurnContext, agent: AgentConfig) -> None:
    body = ctx.body
    asked_limit = any(body.get(name) is not None for name in _TOKEN_LIMITS)
    for name, value in agent.parameters.items():
        if body.get(name) is None and not (asked_limit and name in _TOKEN_LIMITS):
            body[name] = value
    text = instructions(agent, ctx)
    if text:
        body["messages"] = [{"role": "system", "content": text}, *body["messages"]]
    ctx.model = agent.model
    if agent.collection_ids:
        ctx.collection_ids = list(dict.fromkeys([*agent.collection_ids, *ctx.collection_ids]))[
            : MAX_COLLECTIONS * 2
        ]
    policy = agent.memory
    ctx.remember = policy.get("enabled", True)
    ctx.extraction = policy.get("extraction", True)
    ctx.retrieve_messages = policy.get("retrieve_messages", True)
    ctx.budgets = dict(policy.get("budgets") or {})
    ctx.agent = {"id": agent.id, "name": agent.name, "version": agent.version}
