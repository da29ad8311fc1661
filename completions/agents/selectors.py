"""Reads for agents: always scoped to a workspace."""

from __future__ import annotations

from django.db.models import QuerySet

from accounts.models import Workspace
from completions.agents.models import Agent, AgentVersion
from config.common.pagination import Cursor


def agent_list(*, workspace: Workspace | str) -> QuerySet[Agent]:
    return Agent.objects.filter(workspace=workspace).order_by("created_at", "id")


def agent_get(*, workspace: Workspace | str, agent_id: str) -> Agent:
    """Raises Agent.DoesNotExist for an unknown id or another workspace's."""
    return agent_list(workspace=workspace).get(id=agent_id)


def agent_version_list(*, workspace: Workspace | str, agent_id: str) -> QuerySet[AgentVersion]:
    return AgentVersion.objects.filter(workspace=workspace, agent_id=agent_id).order_by("-version")


def agent_version_names(*, workspace: Workspace | str) -> list[tuple[str, str]]:
    """(agent id, name) of every name the workspace's agents' versions have had, once each."""
    rows = AgentVersion.objects.filter(workspace=workspace).values_list("agent_id", "name")
    return list(rows.distinct().order_by("agent_id", "name"))


def agent_version_page(
    *, workspace: Workspace | str, agent_id: str, cursor: Cursor
) -> tuple[list[AgentVersion], bool]:
    """One page of an agent's versions by number (the cursors are version numbers), and
    whether more follow."""
    rows = agent_version_list(workspace=workspace, agent_id=agent_id)
    rows = rows.filter(**cursor.bounds("version")).order_by(cursor.order_by("version"))
    return cursor.page(list(rows[: cursor.limit + 1]))


def agent_version_get(
    *, workspace: Workspace | str, agent_id: str, version: int
) -> AgentVersion | None:
    return (
        agent_version_list(workspace=workspace, agent_id=agent_id).filter(version=version).first()
    )
