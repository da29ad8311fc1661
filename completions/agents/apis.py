"""Agents over HTTP: thin views over completions.agents' selectors and services."""

from __future__ import annotations

from dataclasses import replace

from drf_spectacular.utils import OpenApiExample, extend_schema
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.models import Workspace
from completions.agents import openapi as docs
from completions.agents import selectors, services
from completions.agents.models import CONFIG_FIELDS, Agent, AgentVersion
from config.common.closed import read_only_checked, unknown_fields_check
from config.common.errors import ApiError, Invalid
from config.common.openapi import LIST_PARAMETERS, DeletedSerializer, error
from config.common.pagination import Cursor, list_body, paginate, parse_cursor
from config.common.times import unix_seconds
from memory.knowledge.selectors import collection_ids_existing


def _config(row: Agent | AgentVersion) -> dict:
    return {field: getattr(row, field) for field in CONFIG_FIELDS}


def agent_body(agent: Agent) -> dict:
    return {
        "id": agent.id,
        "object": "agent",
        **_config(agent),
        "version": agent.version,
        "created_at": unix_seconds(agent.created_at),
        "updated_at": unix_seconds(agent.updated_at),
    }


def version_body(version: AgentVersion) -> dict:
    return {
        "object": "agent.version",
        "agent_id": version.agent_id,
        "version": version.version,
        **_config(version),
        "created_at": unix_seconds(version.created_at),
    }


def _without_deleted_collections(*, workspace: Workspace, bodies: list[dict]) -> list[dict]:
    """The agent or version bodies with `collection_ids` cut to the collections that exist: a
    deleted collection is no longer searched (completions.agents.cache drops it from every call,
    pinned or not), so its id, never reused, is shown nowhere. What is stored is not rewritten:
    a version is never changed once written, and a deletion is no edit of the agent."""
    named = {cid for body in bodies for cid in body["collection_ids"]}
    existing = collection_ids_existing(workspace=workspace, collection_ids=named)
    for body in bodies:
        body["collection_ids"] = [cid for cid in body["collection_ids"] if cid in existing]
    return bodies


def _body(workspace: Workspace, agent: Agent) -> dict:
    return _without_deleted_collections(workspace=workspace, bodies=[agent_body(agent)])[0]


def _fields(data: object, *, required: tuple[str, ...] = ()) -> dict:
    """The body's agent fields (the services check each); an unknown field is a 400."""
    if not isinstance(data, dict):
        raise Invalid("The body must be a JSON object.")
    unknown_fields_check(data, CONFIG_FIELDS)
    for name in required:
        if name not in data:
            raise Invalid(
                f"Missing required field '{name}'.", field=name, code="missing_required_parameter"
            )
    return dict(data)


_EXAMPLE = {
    "name": "support",
    "model": "gpt-4o-mini",
    "instructions": "You help {{user_id}} with our product. Today is {{date}}.",
    "parameters": {"temperature": 0.2},
    "memory": {"enabled": True, "extraction": True},
    "collection_ids": [],
    "metadata": {},
}


class AgentListCreateApi(APIView):
    @extend_schema(
        summary="List agents",
        tags=["agents"],
        parameters=LIST_PARAMETERS,
        responses=docs.AgentListSerializer,
    )
    def get(self, request):
        agents = selectors.agent_list(workspace=request.workspace)
        body = paginate(agents, request.query_params, agent_body)
        _without_deleted_collections(workspace=request.workspace, bodies=body["data"])
        return Response(body)

    @extend_schema(
        summary="Create an agent (version 1)",
        tags=["agents"],
        request=docs.AgentInputSerializer,
        # The path names no object, so the default documents no 404: schemathesis's
        # collection_ids ["00"] got an undocumented one.
        responses={
            201: docs.AgentSerializer,
            404: error(
                404,
                "A collection in `collection_ids` that is not the workspace's "
                "(`collection_not_found`).",
            ),
        },
        examples=[OpenApiExample("Support", value=_EXAMPLE, request_only=True)],
    )
    def post(self, request):
        fields = _fields(request.data, required=("name", "model"))
        agent = services.agent_create(workspace=request.workspace, **fields)
        return Response(_body(request.workspace, agent), status=status.HTTP_201_CREATED)


class AgentDetailApi(APIView):
    @extend_schema(summary="One agent", tags=["agents"], responses=docs.AgentSerializer)
    def get(self, request, agent_id: str):
        agent = selectors.agent_get(workspace=request.workspace, agent_id=agent_id)
        return Response(_body(request.workspace, agent))

    @extend_schema(
        summary="Edit an agent (a change makes the next version)",
        tags=["agents"],
        request=docs.AgentInputSerializer(partial=True),
        responses=docs.AgentSerializer,
    )
    def patch(self, request, agent_id: str):
        agent = selectors.agent_get(workspace=request.workspace, agent_id=agent_id)  # 404 first
        body = read_only_checked(  # an agent read, edited and sent back whole
            request.data,
            stored=_body(request.workspace, agent),
            writable=CONFIG_FIELDS,
            ignored=("updated_at",),  # `version` is checked: another's edit since the read
        )
        fields = _fields(body)
        agent = services.agent_update(
            workspace=request.workspace, agent_id=agent_id, partial_memory=True, **fields
        )
        return Response(_body(request.workspace, agent))

    @extend_schema(
        summary="Delete an agent and its versions",
        tags=["agents"],
        responses={200: DeletedSerializer},
    )
    def delete(self, request, agent_id: str):
        selectors.agent_get(workspace=request.workspace, agent_id=agent_id)
        services.agent_delete(workspace=request.workspace, agent_id=agent_id)
        return Response({"id": agent_id, "object": "agent.deleted", "deleted": True})


# A version number past PostgreSQL's integer (an agent never gets there) failed the query
_MAX_VERSION = 2**31 - 1


def _version_cursor(query_params) -> Cursor:
    """The list parameters, `after` and `before` being version numbers."""
    cursor = parse_cursor(query_params)
    bounds: dict[str, str | None] = {"after": cursor.after, "before": cursor.before}
    for param in ("after", "before"):
        value = getattr(cursor, param)
        if value is None:
            continue
        if not (value.isascii() and value.isdigit()):
            raise ApiError(
                400, f"{param} must be a version number.", param=param, code="invalid_value"
            )
        bounds[param] = str(min(int(value), _MAX_VERSION))
    return replace(cursor, after=bounds["after"], before=bounds["before"])


class AgentVersionListApi(APIView):
    @extend_schema(
        summary="An agent's versions, newest first",
        description="Paged as every list; `after` and `before` take a version number "
        "(`first_id` and `last_id` are the page's first and last).",
        tags=["agents"],
        parameters=LIST_PARAMETERS,
        responses=docs.AgentVersionListSerializer,
    )
    def get(self, request, agent_id: str):
        selectors.agent_get(workspace=request.workspace, agent_id=agent_id)
        cursor = _version_cursor(request.query_params)
        versions, has_more = selectors.agent_version_page(
            workspace=request.workspace, agent_id=agent_id, cursor=cursor
        )
        body = list_body(versions, version_body, has_more=has_more)
        _without_deleted_collections(workspace=request.workspace, bodies=body["data"])
        # A version has no id of its own: its number is the cursor
        numbers = [str(v.version) for v in versions]
        return Response(
            body
            | {
                "first_id": numbers[0] if numbers else None,
                "last_id": numbers[-1] if numbers else None,
            }
        )
