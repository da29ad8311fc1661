"""The provisioning API, for operators holding ENGRAM_ADMIN_KEY."""

from drf_spectacular.utils import OpenApiExample, extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts import openapi as docs
from accounts import selectors, services
from accounts.authentication import IsOperator
from accounts.limits import apis as limits
from accounts.models import ApiKey, Workspace
from config.common.closed import ClosedSerializer
from config.common.openapi import LIST_PARAMETERS
from config.common.pagination import paginate
from config.common.times import unix_seconds


def workspace_body(workspace: Workspace) -> dict:
    return {
        "id": workspace.id,
        "object": "workspace",
        "name": workspace.name,
        "created_at": unix_seconds(workspace.created_at),
    }


def api_key_body(key: ApiKey) -> dict:
    return {
        "id": key.id,
        "object": "api_key",
        "name": key.name,
        "prefix": key.prefix,
        "created_at": unix_seconds(key.created_at),
        "last_used_at": unix_seconds(key.last_used_at),
        "revoked_at": unix_seconds(key.revoked_at),
    }


class NameInput(ClosedSerializer):
    name = serializers.CharField(max_length=200)


class WorkspaceListCreateApi(APIView):
    permission_classes = [IsOperator]

    @extend_schema(
        summary="List workspaces",
        tags=["operators"],
        parameters=LIST_PARAMETERS,
        responses=docs.WorkspaceListSerializer,
    )
    def get(self, request):
        return Response(paginate(selectors.workspace_list(), request.query_params, workspace_body))

    @extend_schema(
        summary="Create a workspace",
        tags=["operators"],
        request=NameInput,
        responses={201: docs.WorkspaceSerializer},
        examples=[OpenApiExample("Acme", value={"name": "Acme"}, request_only=True)],
    )
    def post(self, request):
        data = NameInput(data=request.data)
        data.is_valid(raise_exception=True)
        workspace = services.workspace_create(name=data.validated_data["name"])
        return Response(workspace_body(workspace), status=status.HTTP_201_CREATED)


class WorkspaceDetailApi(APIView):
    permission_classes = [IsOperator]

    @extend_schema(
        summary="Retrieve a workspace with its limits, budgets and credit unit",
        tags=["operators"],
        responses=docs.WorkspaceDetailSerializer,
    )
    def get(self, request, workspace_id: str):
        workspace = selectors.workspace_get(workspace_id=workspace_id)
        body = workspace_body(workspace) | limits.workspace_limits_body(workspace=workspace)
        return Response(body)

    @extend_schema(
        summary="Update a workspace: name, limits, budget, end users' defaults, credit unit",
        description=(
            "Fields left out are kept; a limit set to null is removed, and a group set to null "
            "(`limits`, `budget`, `end_user_limits`, `end_user_budget`) removes every limit in "
            "it. `end_user_limits` and "
            "`end_user_budget` apply to each end user (`x-user-id`, else the body's `user_id` or "
            "`user`) separately. Changes apply on every process from the next request. A new "
            "`credit_unit.per_usd` counts every budget again in the new unit: what was spent "
            "in the period keeps its value in USD."
        ),
        tags=["operators"],
        request=limits.WorkspaceLimitsInput,
        responses=docs.WorkspaceDetailSerializer,
        examples=[
            OpenApiExample(
                "Limits",
                value={
                    "limits": {"rpm": 600, "tpm": 200000, "max_concurrent": 20},
                    "budget": {"credits": 100, "period": "month"},
                    "end_user_limits": {"rpm": 20},
                    "end_user_budget": {"credits": 1, "period": "day"},
                    "credit_unit": {"name": "credits", "per_usd": 1},
                },
                request_only=True,
            )
        ],
    )
    def patch(self, request, workspace_id: str):
        workspace = selectors.workspace_get(workspace_id=workspace_id)
        data = limits.WorkspaceLimitsInput(data=request.data)
        data.is_valid(raise_exception=True)
        if "name" in data.validated_data:
            workspace = services.workspace_rename(
                workspace=workspace, name=data.validated_data["name"]
            )
        limits.apply_workspace(workspace=workspace, data=data.validated_data)
        body = workspace_body(workspace) | limits.workspace_limits_body(workspace=workspace)
        return Response(body)

    @extend_schema(
        summary="Delete a workspace and everything it owns (in the background)",
        description=(
            "Answers 202 at once: its API keys and token issuers stop working on every process "
            "now, and it is hidden (GET answers 404, it leaves the list, it gets no new keys). "
            "A worker then deletes its conversations, memories, documents, usage records and "
            "the rest, and the workspace itself; a deletion whose worker was lost is sent again "
            "by the sweep within ENGRAM_WORKSPACE_DELETION_RESEND_SECONDS. DELETE again while "
            "it runs answers 202 with the same `deleted_at`; once it is done, 404."
        ),
        tags=["operators"],
        responses={202: docs.WorkspaceDeletingSerializer},
    )
    def delete(self, request, workspace_id: str):
        workspace = selectors.workspace_get_for_deletion(workspace_id=workspace_id)
        workspace = services.workspace_delete_begin(workspace=workspace)
        body = workspace_body(workspace) | {
            "deleted_at": unix_seconds(workspace.deleted_at),
            "deleted": True,
        }
        return Response(body, status=status.HTTP_202_ACCEPTED)


class ApiKeyListCreateApi(APIView):
    permission_classes = [IsOperator]

    @extend_schema(
        summary="List a workspace's API keys",
        tags=["operators"],
        parameters=LIST_PARAMETERS,
        responses=docs.ApiKeyListSerializer,
    )
    def get(self, request, workspace_id: str):
        workspace = selectors.workspace_get(workspace_id=workspace_id)
        keys = selectors.api_key_list(workspace=workspace)
        return Response(paginate(keys, request.query_params, api_key_body))

    @extend_schema(
        summary="Create an API key (the raw key is shown once)",
        tags=["operators"],
        request=NameInput,
        responses={201: docs.ApiKeyCreatedSerializer},
        examples=[OpenApiExample("prod", value={"name": "prod"}, request_only=True)],
    )
    def post(self, request, workspace_id: str):
        workspace = selectors.workspace_get(workspace_id=workspace_id)
        data = NameInput(data=request.data)
        data.is_valid(raise_exception=True)
        created = services.api_key_create(workspace=workspace, name=data.validated_data["name"])
        body = api_key_body(created.api_key) | {"key": created.raw_key}
        return Response(body, status=status.HTTP_201_CREATED)


class ApiKeyRevokeApi(APIView):
    permission_classes = [IsOperator]

    @extend_schema(
        summary="Revoke an API key (at once here, within a second elsewhere)",
        tags=["operators"],
        responses={200: docs.ApiKeyRevokedSerializer},
    )
    def delete(self, request, workspace_id: str, key_id: str):
        workspace = selectors.workspace_get(workspace_id=workspace_id)
        key = services.api_key_revoke(workspace=workspace, key_id=key_id)
        return Response(api_key_body(key) | {"deleted": True})

    @extend_schema(
        summary="Set an API key's limits and budget",
        description="Fields left out are kept; a limit set to null is removed.",
        tags=["operators"],
        request=limits.KeyLimitsInput,
        responses=docs.ApiKeyLimitsSerializer,
        examples=[
            OpenApiExample(
                "Limits",
                value={"limits": {"rpm": 60, "tpm": 40000}, "budget": {"credits": 5}},
                request_only=True,
            )
        ],
    )
    def patch(self, request, workspace_id: str, key_id: str):
        workspace = selectors.workspace_get(workspace_id=workspace_id)
        key = selectors.api_key_get(workspace=workspace, key_id=key_id)
        data = limits.KeyLimitsInput(data=request.data)
        data.is_valid(raise_exception=True)
        limits.apply_key(workspace=workspace, key_id=key.id, data=data.validated_data)
        body = limits.key_limits_body(workspace=workspace, key_id=key.id)
        return Response(api_key_body(key) | body)
