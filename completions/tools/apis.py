"""Tools, executions and resume over HTTP: thin views over completions.tools' selectors and
services. The tools CRUD lives under /v1/agents/{id}/tools; header values never come back (only
their names, each with the mask, which written back keeps the value)."""

from __future__ import annotations

import time

from django.http import HttpResponseBase
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.utils import OpenApiExample, extend_schema
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.limits.middleware import counts_its_own_limits
from accounts.limits.policy import NO_POLICY
from accounts.requests import ApiRequest
from completions.tools import entry, selectors, services
from completions.tools import openapi as docs
from completions.tools.models import Approval, Execution, Tool
from completions.tools.policy import HEADER_MASK
from config.common.closed import read_only_checked
from config.common.errors import ApiError, Invalid
from config.common.ids import identifier
from config.common.openapi import LIST_PARAMETERS, DeletedSerializer, user_id_query
from config.common.pagination import paginate
from config.common.times import unix_seconds
from memory.serializers import list_user_id


def tool_body(tool: Tool) -> dict:
    http = None
    if tool.kind == Tool.Kind.HTTP:
        http = {
            "url": tool.http_url,
            "method": tool.http_method,
            "headers": {name: HEADER_MASK for name in services.headers_of(tool)},
        }
    return {
        "id": tool.id,
        "object": "agent.tool",
        "agent_id": tool.agent_id,
        "name": tool.name,
        "description": tool.description,
        "parameters": tool.parameters,
        "type": tool.kind,
        "http": http,
        "builtin": tool.builtin or None,
        "approval": tool.approval,
        "approval_ttl_seconds": tool.approval_ttl_seconds,
        "timeout_seconds": tool.timeout_seconds,
        "created_at": unix_seconds(tool.created_at),
        "updated_at": unix_seconds(tool.updated_at),
    }


def execution_body(execution: Execution) -> dict:
    """One run as the API shows it. Its approvals are read with `.all()`, sorted here, so a
    list of runs that prefetched them (a user's export) makes no query per run, as
    selectors.approvals_as_they_read gives them: with the status they read now."""
    approvals = [
        {
            "id": a.id,
            "status": a.current_status,  # type: ignore[attr-defined]  # approvals_as_they_read
            "tool_call_ids": [c.get("id") for c in a.tool_calls],
            "expires_at": unix_seconds(a.expires_at),
            "decided_at": unix_seconds(a.decided_at),
            "reason": a.reason,
        }
        for a in sorted(execution.approvals.all(), key=lambda a: (a.created_at, a.id))
    ]
    return {
        "id": execution.id,
        "object": "execution",
        "agent_id": execution.agent_id,
        "model": execution.model,
        "user_id": execution.user_id or None,
        "request_id": execution.request_id,
        "status": execution.status,
        "error": execution.error or None,
        "steps": execution.steps,
        "approvals": approvals,
        "usage": execution.usage,
        "created_at": unix_seconds(execution.created_at),
        "updated_at": unix_seconds(execution.updated_at),
    }


def approval_body(approval: Approval) -> dict:
    """One approval as a reviewer reads it: the calls it holds (name and arguments, as the
    model sent them) and its run. Its status is the one selectors.approval_list annotates
    (selectors.approval_status): a pending one past its expiry reads as expired, whether or
    not the sweep has resolved it yet."""
    return {
        "id": approval.id,
        "object": "approval",
        "execution_id": approval.execution_id,
        "agent_id": approval.execution.agent_id,
        "model": approval.execution.model,
        "user_id": approval.user_id or None,
        "status": approval.current_status,  # type: ignore[attr-defined]  # approval_list's
        "tool_calls": [
            {
                "id": call.get("id"),
                "name": (call.get("function") or {}).get("name"),
                "arguments": (call.get("function") or {}).get("arguments"),
            }
            for call in approval.tool_calls
            if isinstance(call, dict)
        ],
        "reason": approval.reason,
        "expires_at": unix_seconds(approval.expires_at),
        "decided_at": unix_seconds(approval.decided_at),
        "created_at": unix_seconds(approval.created_at),
    }


def _body(data: object) -> dict:
    if not isinstance(data, dict):
        raise Invalid("The body must be a JSON object.")
    return dict(data)


_EXAMPLE = {
    "name": "refund",
    "description": "Refund an order.",
    "parameters": {
        "type": "object",
        "properties": {"order_id": {"type": "string"}, "amount": {"type": "number"}},
        "required": ["order_id"],
    },
    "type": "http",
    "http": {
        "url": "https://tools.example.com/refund",
        "method": "POST",
        "headers": {"Authorization": "Bearer ..."},
    },
    "approval": {"argument": "amount", "op": "gt", "value": 100},
    "approval_ttl_seconds": 900,
}


class ToolListCreateApi(APIView):
    @extend_schema(
        summary="List an agent's tools",
        tags=["agents"],
        parameters=LIST_PARAMETERS,
        responses=docs.ToolListSerializer,
    )
    def get(self, request, agent_id: str):
        tools = selectors.tool_list(workspace=request.workspace, agent_id=agent_id)
        return Response(paginate(tools, request.query_params, tool_body))

    @extend_schema(
        summary="Add a tool to an agent",
        tags=["agents"],
        request=docs.ToolInputSerializer,
        responses={201: docs.ToolSerializer},
        examples=[OpenApiExample("HTTP tool", value=_EXAMPLE, request_only=True)],
    )
    def post(self, request, agent_id: str):
        tool = services.tool_create(
            workspace=request.workspace, agent_id=agent_id, values=_body(request.data)
        )
        return Response(tool_body(tool), status=status.HTTP_201_CREATED)


class ToolDetailApi(APIView):
    @extend_schema(summary="One tool", tags=["agents"], responses=docs.ToolSerializer)
    def get(self, request, agent_id: str, tool_id: str):
        return Response(
            tool_body(
                selectors.tool_get(workspace=request.workspace, agent_id=agent_id, tool_id=tool_id)
            )
        )

    @extend_schema(
        summary="Edit a tool",
        tags=["agents"],
        request=docs.ToolInputSerializer(partial=True),
        responses=docs.ToolSerializer,
    )
    def patch(self, request, agent_id: str, tool_id: str):
        tool = selectors.tool_get(workspace=request.workspace, agent_id=agent_id, tool_id=tool_id)
        body = read_only_checked(  # a tool read, edited and sent back whole (headers masked)
            request.data, stored=tool_body(tool), writable=services.FIELDS, ignored=("updated_at",)
        )
        tool = services.tool_update(workspace=request.workspace, tool=tool, values=_body(body))
        return Response(tool_body(tool))

    @extend_schema(summary="Delete a tool", tags=["agents"], responses={200: DeletedSerializer})
    def delete(self, request, agent_id: str, tool_id: str):
        tool = selectors.tool_get(workspace=request.workspace, agent_id=agent_id, tool_id=tool_id)
        services.tool_delete(workspace=request.workspace, tool=tool)
        return Response({"id": tool_id, "object": "agent.tool.deleted", "deleted": True})


class ExecutionDetailApi(APIView):
    @extend_schema(
        summary="One execution of an agent's tools: every step",
        tags=["agents"],
        responses=docs.ExecutionSerializer,
    )
    def get(self, request, execution_id: str):
        return Response(
            execution_body(
                selectors.execution_get(workspace=request.workspace, execution_id=execution_id)
            )
        )


def _run_filters(params, *, statuses: list[str]) -> dict[str, str | None]:
    """A list of runs' or approvals' filters (`status` one of `statuses`, `user_id`,
    `agent_id`), read one way for both."""
    status_filter = params.get("status")
    if status_filter is not None and status_filter not in statuses:
        raise Invalid(f"status must be one of {', '.join(statuses)}.", field="status")
    return {
        "status": status_filter,
        "user_id": list_user_id(params),
        "agent_id": identifier(params.get("agent_id"), "agent_id"),
    }


_RUN_FILTERS = ("status", "user_id", "agent_id")


class ExecutionListApi(APIView):
    @extend_schema(
        summary="List agent runs (executions), newest first",
        tags=["agents"],
        parameters=[*docs.EXECUTION_LIST_PARAMETERS, user_id_query(), *LIST_PARAMETERS],
        responses=docs.ExecutionListSerializer,
    )
    def get(self, request):
        params = request.query_params
        runs = selectors.execution_list(
            workspace=request.workspace, **_run_filters(params, statuses=Execution.Status.values)
        )
        # In created_at order (ties by id), as the workspace's index of its runs reads them.
        return Response(
            paginate(runs, params, execution_body, by="created_at", filters=_RUN_FILTERS)
        )


class ApprovalListApi(APIView):
    @extend_schema(
        summary="List approvals (pending: the calls waiting for a human)",
        tags=["agents"],
        parameters=[*docs.APPROVAL_LIST_PARAMETERS, user_id_query(), *LIST_PARAMETERS],
        responses=docs.ApprovalListSerializer,
    )
    def get(self, request):
        params = request.query_params
        approvals = selectors.approval_list(
            workspace=request.workspace, **_run_filters(params, statuses=Approval.Status.values)
        )
        return Response(paginate(approvals, params, approval_body, filters=_RUN_FILTERS))


@counts_its_own_limits  # with its tokens and credits (completions.charging)
@csrf_exempt
async def chat_resume(request: ApiRequest) -> HttpResponseBase:
    from completions.apis import to_django

    started = time.perf_counter()
    if request.method != "POST":
        response = ApiError(405, "Method not allowed.", code="method_not_allowed").response()
        response["Allow"] = "POST"
        return response
    reply = await entry.resume(
        workspace=request.workspace,
        api_key_id=request.api_key_id,
        request_id=request.request_id,
        headers=request.headers,
        raw_body=request.body,
        started=started,
        end_user=request.principal.end_user if request.principal else None,
        limits=request.principal.limits if request.principal else NO_POLICY,
    )
    return to_django(reply)
