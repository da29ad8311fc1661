"""End users of a workspace: list and read (counts, last activity), erase, export."""

from __future__ import annotations

from rest_framework.response import Response
from rest_framework.views import APIView

from config.common.pagination import list_body, parse_cursor
from memory import selectors, services


def user_body(user_id: str, stats: dict) -> dict:
    last = stats["last_active_at"]
    return {
        "id": user_id,
        "object": "user",
        "counts": {k: v for k, v in stats.items() if k != "last_active_at"},
        "last_active_at": int(last.timestamp()) if last else None,
    }


class UserListApi(APIView):
    def get(self, request):
        cursor = parse_cursor(request.query_params)
        ids, has_more = selectors.user_id_page(workspace=request.workspace, cursor=cursor)
        stats = selectors.user_stats(workspace=request.workspace, user_ids=ids)
        return Response(
            list_body(ids, lambda user_id: user_body(user_id, stats[user_id]), has_more=has_more)
        )


class UserApi(APIView):
    def get(self, request, user_id: str):
        stats = selectors.user_get(workspace=request.workspace, user_id=user_id)
        return Response(user_body(user_id, stats))

    def delete(self, request, user_id: str):
        counts = services.user_delete(workspace=request.workspace, user_id=user_id)
        return Response(
            {"id": user_id, "object": "user.deleted", "deleted": True, "counts": counts}
        )


class UserExportApi(APIView):
    def get(self, request, user_id: str):
        return Response(selectors.user_export(workspace=request.workspace, user_id=user_id))
