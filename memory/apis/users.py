"""End users of a workspace: list and read (counts, last activity), erase, export."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.authentication import EndUserAllowed
from accounts.endusers.scope import own_user
from config.common.openapi import LIST_PARAMETERS
from config.common.pagination import list_body, parse_cursor
from config.common.times import unix_seconds
from memory import selectors, services
from memory.apis import openapi as docs
from memory.export import user_export_response


def user_body(user_id: str, stats: dict) -> dict:
    return {
        "id": user_id,
        "object": "user",
        "counts": {k: v for k, v in stats.items() if k != "last_active_at"},
        "last_active_at": unix_seconds(stats["last_active_at"]),
    }


class UserListApi(APIView):
    @extend_schema(
        summary="The workspace's end users",
        description="Everyone with a memory, a memory's history, a conversation, a session or "
        "an agent run here, by user id "
        "(`after` / `before` take a user id), with counts and the last activity.",
        tags=["users"],
        parameters=LIST_PARAMETERS,
        responses=docs.UserListSerializer,
    )
    def get(self, request):
        cursor = parse_cursor(request.query_params)
        ids, has_more = selectors.user_id_page(workspace=request.workspace, cursor=cursor)
        stats = selectors.user_stats(workspace=request.workspace, user_ids=ids)
        return Response(
            list_body(ids, lambda user_id: user_body(user_id, stats[user_id]), has_more=has_more)
        )


class UserApi(APIView):
    permission_classes = [EndUserAllowed]  # an end user: only their own id (own_user)

    @extend_schema(
        summary="One end user: counts (with sessions, summaries, memory history entries and "
        "agent runs) and last activity",
        tags=["users"],
        responses=docs.UserDetailSerializer,
    )
    def get(self, request, user_id: str):
        own_user(request, user_id)
        stats = selectors.user_get(workspace=request.workspace, user_id=user_id)
        return Response(user_body(user_id, stats))

    @extend_schema(
        summary="Erase every trace of a user in this workspace",
        tags=["users"],
        responses={200: docs.UserDeletedSerializer},
    )
    def delete(self, request, user_id: str):
        own_user(request, user_id)
        counts = services.user_delete(workspace=request.workspace, user_id=user_id)
        return Response(
            {"id": user_id, "object": "user.deleted", "deleted": True, "counts": counts}
        )


class UserExportApi(APIView):
    permission_classes = [EndUserAllowed]  # an end user: only their own id (own_user)

    @extend_schema(
        summary="Export everything stored about a user",
        tags=["users"],
        responses=docs.UserExportSerializer,
    )
    def get(self, request, user_id: str):
        own_user(request, user_id)
        return user_export_response(workspace=request.workspace, user_id=user_id)
