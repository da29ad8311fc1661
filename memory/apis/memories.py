"""Memory API: list, add, read, edit, delete, history and search memories; erase or export a user."""

from __future__ import annotations

from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import APIView

from config.common.errors import ApiError
from config.common.ids import identifier
from config.common.pagination import paginate
from memory import selectors, services
from memory.models import Memory
from memory.retrieval.search import Found, search
from memory.serializers import (
    MemoryCreateInput,
    MemoryUpdateInput,
    SearchInput,
    event_body,
    memory_body,
)


def _valid(serializer_class, data, **kwargs) -> dict:
    serializer = serializer_class(data=data, **kwargs)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


def _with_sources(workspace, memory: Memory) -> dict:
    sources = selectors.memory_sources(workspace=workspace, memory_ids=[memory.id])
    return memory_body(memory, sources.get(memory.id, []))


class MemoryListCreateApi(APIView):
    def get(self, request):
        user_id = identifier(request.query_params.get("user_id"), "user_id")
        memories = selectors.memory_list(workspace=request.workspace, user_id=user_id)
        page = paginate(memories, request.query_params, memory_body)
        sources = selectors.memory_sources(
            workspace=request.workspace, memory_ids=[m["id"] for m in page["data"]]
        )
        for body in page["data"]:
            body["sources"] = sources.get(body["id"], [])
        return Response(page)

    def post(self, request):
        data = _valid(MemoryCreateInput, request.data)
        memory = services.memory_create(
            workspace=request.workspace,
            user_id=data["user_id"],
            text=data["text"],
            kind=data["kind"],
            event_date=data.get("event_date"),
            metadata=data.get("metadata") or {},
            actor="api",
        )
        return Response(memory_body(memory, []), status=status.HTTP_201_CREATED)


class MemoryDetailApi(APIView):
    def get(self, request, memory_id: str):
        memory = selectors.memory_get(workspace=request.workspace, memory_id=memory_id)
        return Response(_with_sources(request.workspace, memory))

    def patch(self, request, memory_id: str):
        memory = selectors.memory_get(workspace=request.workspace, memory_id=memory_id)
        data = _valid(MemoryUpdateInput, request.data)
        if not data:
            raise ApiError(400, "Nothing to update: give text, kind, event_date or metadata.")
        changes = {k: data[k] for k in ("text", "kind", "metadata") if k in data}
        if "event_date" in data:
            changes["event_date"] = data["event_date"]
        memory = services.memory_update(
            workspace=request.workspace, memory=memory, actor="api", **changes
        )
        return Response(_with_sources(request.workspace, memory))

    def delete(self, request, memory_id: str):
        memory = selectors.memory_get(workspace=request.workspace, memory_id=memory_id)
        services.memory_delete(workspace=request.workspace, memory=memory, actor="api")
        return Response({"id": memory_id, "object": "memory.deleted", "deleted": True})


class MemoryHistoryApi(APIView):
    def get(self, request, memory_id: str):
        events = list(selectors.memory_history(workspace=request.workspace, memory_id=memory_id))
        if not events:  # a memory leaves its history behind: none means it never existed
            raise Memory.DoesNotExist
        return Response(
            {"object": "list", "data": [event_body(e) for e in events], "has_more": False}
        )


class MemorySearchApi(APIView):
    def post(self, request):
        from memory.embeddings import get_embedder

        data = _valid(SearchInput, request.data)
        vector = get_embedder().embed_one(data["query"])
        results = search(
            workspace=request.workspace,
            user_id=data["user_id"],
            query=data["query"],
            vector=vector,
            limit=data["limit"],
        )
        return Response({"object": "list", "data": [search_result(f) for f in results]})


def search_result(found: Found) -> dict:
    if isinstance(found.obj, Memory):
        body = memory_body(found.obj, found.sources)
    else:
        message = found.obj
        body = {
            "id": message.id,
            "object": "message",
            "conversation_id": message.conversation.external_id,
            "role": message.role,
            "name": message.name or None,
            "text": message.content,
            "metadata": message.metadata,
            "created_at": int(message.created_at.timestamp()),
            "sources": found.sources,
        }
    body["score"] = round(found.score, 6)
    body["why"] = found.why()
    return body


class UserApi(APIView):
    def delete(self, request, user_id: str):
        counts = services.user_delete(workspace=request.workspace, user_id=user_id)
        return Response(
            {"id": user_id, "object": "user.deleted", "deleted": True, "counts": counts}
        )


class UserExportApi(APIView):
    def get(self, request, user_id: str):
        return Response(selectors.user_export(workspace=request.workspace, user_id=user_id))
