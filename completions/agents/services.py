"""Writes for agents: the API and the admin both call these. Every change that alters the
configuration writes the next AgentVersion (a PATCH that changes nothing writes none) and
forgets the workspace's cached agents (completions.agents.cache) here and, through
config.common.coherence, on every process."""

from __future__ import annotations

from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.models import Workspace
from completions.agents import cache, policy
from completions.agents.models import CONFIG_FIELDS, Agent, AgentVersion
from config.common.closed import unknown_fields_check
from config.common.errors import Invalid, NotFound, unknown_id

NOT_FOUND_CODE = "agent_not_found"


def _checked(values: dict[str, Any]) -> dict[str, Any]:
    return {field: policy.CHECKS[field](value) for field, value in values.items()}


def _collections_exist(*, workspace: Workspace, collection_ids: list[str]) -> None:
    from memory.knowledge.search import collections_check

    collections_check(workspace=workspace, collection_ids=collection_ids)


def _name_taken(name: str) -> Invalid:
    return Invalid(
        f"An agent named '{name}' already exists in this workspace.",
        field="name",
        code="agent_name_taken",
    )


def _snapshot(agent: Agent) -> AgentVersion:
    return AgentVersion.objects.create(
        agent=agent,
        workspace_id=agent.workspace_id,
        version=agent.version,
        created_at=agent.updated_at,
        **{field: getattr(agent, field) for field in CONFIG_FIELDS},
    )


def _locked(*, workspace: Workspace, agent_id: str) -> Agent:
    agent = Agent.objects.select_for_update().filter(workspace=workspace, id=agent_id).first()
    if agent is None:
        raise NotFound(unknown_id("agent", agent_id), field="agent_id", code=NOT_FOUND_CODE)
    return agent


def memory_tools_check(*, workspace: Workspace, agent_id: str) -> None:
    """Memory off means nothing stored, nothing recalled: not while the agent has tools that
    read or write memories (completions.tools.services refuses adding one to such an agent)."""
    from completions.tools.selectors import memory_tool_names  # tools build on agents

    names = memory_tool_names(workspace=workspace, agent_id=agent_id)
    if names:
        raise Invalid(
            "memory.enabled cannot be false while the agent has the memory built-in tools "
            f"{', '.join(names)}: delete them first.",
            field="memory",
            code="memory_tools",
        )


def turns_memory_off(before: object, after: dict) -> bool:
    """Whether a change of the memory policy turns memory off. An agent stored with memory
    off beside memory built-ins (made before the rule, or pinned: see memory_tools_check)
    still changes its other memory settings; only the switch from on to off is refused."""
    was_on = not isinstance(before, dict) or before.get("enabled") is not False
    return was_on and after.get("enabled") is False


@transaction.atomic
def agent_create(
    *,
    workspace: Workspace,
    name: str,
    model: str,
    instructions: str = "",
    parameters: dict | None = None,
    memory: dict | None = None,
    collection_ids: list[str] | None = None,
    metadata: dict | None = None,
) -> Agent:
    values = _checked(
        {
            "name": name,
            "instructions": instructions,
            "model": model,
            "parameters": parameters,
            "memory": memory,
            "collection_ids": collection_ids,
            "metadata": metadata,
        }
    )
    _collections_exist(workspace=workspace, collection_ids=values["collection_ids"])
    now = timezone.now()
    try:
        with transaction.atomic():
            agent = Agent.objects.create(
                workspace=workspace, version=1, created_at=now, updated_at=now, **values
            )
    except IntegrityError:
        raise _name_taken(values["name"]) from None
    _snapshot(agent)
    cache.invalidate(workspace.id)
    return agent


@transaction.atomic
def agent_update(
    *, workspace: Workspace, agent_id: str, partial_memory: bool = False, **changes: Any
) -> Agent:
    """Change any of CONFIG_FIELDS (only those given); the next version if anything changed.
    `partial_memory` (the API's PATCH): of `memory`, only the settings given change; the admin
    sends the whole policy, which replaces the stored one."""
    unknown_fields_check(changes, CONFIG_FIELDS)
    agent = _locked(workspace=workspace, agent_id=agent_id)
    if (
        partial_memory
        and isinstance(changes.get("memory"), dict)
        and isinstance(agent.memory, dict)
    ):
        # The settings the PATCH names; the others keep theirs (`budgets`, when given, is
        # replaced whole). Filled in with the defaults, `{"budgets": …}` turned an agent's
        # memory back on: what a user said, stored and recalled again without anyone asking.
        kept = {k: v for k, v in agent.memory.items() if k in (*policy.MEMORY_FLAGS, "budgets")}
        changes = {**changes, "memory": {**kept, **changes["memory"]}}
    values = _checked(changes)
    if "collection_ids" in values:
        _collections_exist(workspace=workspace, collection_ids=values["collection_ids"])
    changed = {f: v for f, v in values.items() if getattr(agent, f) != v}
    if not changed:
        return agent
    if "memory" in changed and turns_memory_off(agent.memory, changed["memory"]):
        memory_tools_check(workspace=workspace, agent_id=agent.id)
    for field, value in changed.items():
        setattr(agent, field, value)
    agent.version += 1
    agent.updated_at = timezone.now()
    try:
        with transaction.atomic():
            agent.save()
    except IntegrityError:
        raise _name_taken(agent.name) from None
    _snapshot(agent)
    cache.invalidate(workspace.id)
    return agent


@transaction.atomic
def agent_delete(*, workspace: Workspace, agent_id: str) -> None:
    """Remove the agent and its versions (NotFound for an unknown or foreign id); its runs
    waiting on an approval end with it (tools' agent_runs_end), in the same transaction."""
    from completions.tools.services.approvals import agent_runs_end  # tools import agents

    agent = _locked(workspace=workspace, agent_id=agent_id)
    agent_runs_end(workspace=workspace, agent_id=agent.id)
    agent.delete()
    cache.invalidate(workspace.id)
