"""Memory API: list, add, read, edit, delete, history and search memories."""

from __future__ import annotations

from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    PolymorphicProxySerializer,
    extend_schema,
)
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.authentication import EndUserAllowed
from accounts.endusers.scope import end_user, own_user, with_own_user
from accounts.limits.middleware import counts_workspace_rates
from config.common.closed import read_only_checked, repeated_fields_check, unknown_fields_check
from config.common.errors import ApiError
from config.common.openapi import (
    ID_SCHEMA,
    LIST_PARAMETERS,
    DeletedSerializer,
    user_id_query,
)
from config.common.pagination import paginate
from memory import selectors, services
from memory.apis import openapi as docs
from memory.models import Memory
from memory.retrieval.fusion import shown_score
from memory.retrieval.search import Found, memory_search
from memory.serializers import (
    MAX_IMPORT_MEMORIES,
    MEMORIES_DELETE_QUERY,
    MEMORY_LIST_QUERY,
    MEMORY_LIST_REPEATABLE,
    MemoryCreateInput,
    MemoryImportInput,
    MemoryUpdateInput,
    SearchInput,
    event_body,
    list_user_id,
    memories_delete_user_id,
    memory_body,
    memory_list_filters,
    memory_search_filters,
)


def _valid(serializer_class, data, **kwargs) -> dict:
    serializer = serializer_class(data=data, **kwargs)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


def _with_sources(workspace, memory: Memory) -> dict:
    sources = selectors.memory_sources(workspace=workspace, memory_ids=[memory.id])
    return memory_body(memory, sources.get(memory.id, []))


def _import(request) -> Response:
    """POST /v1/memories with `memories`: every item validated before any is written."""
    data = _valid(MemoryImportInput, with_own_user(request, request.data))
    imported = services.memories_import(
        workspace=request.workspace,
        user_id=own_user(request, data["user_id"]),
        items=data["memories"],
    )
    sources = selectors.memory_sources(
        workspace=request.workspace,
        memory_ids=[i.memory.id for i in imported if not i.created],
    )
    created = sum(i.created for i in imported)
    return Response(
        {
            "object": "list",
            "data": [memory_body(i.memory, sources.get(i.memory.id, [])) for i in imported],
            "created": created,
        },
        status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
    )


class MemoryListCreateApi(APIView):
    permission_classes = [EndUserAllowed]

    @extend_schema(
        summary="List memories",
        description="Newest first by default; the filters combine, and the cursors page "
        "within them.",
        tags=["memories"],
        parameters=[user_id_query(), *docs.MEMORY_LIST_FILTERS, *LIST_PARAMETERS],
        responses=docs.MemoryListSerializer,
    )
    def get(self, request):
        user_id = own_user(request, list_user_id(request.query_params))
        filters = memory_list_filters(request.query_params)
        memories = selectors.memory_list(
            workspace=request.workspace,
            user_id=user_id,
            kinds=filters.kinds,
            conversation_id=filters.conversation_id,
            created_from=filters.created_from,
            created_until=filters.created_until,
            metadata=filters.metadata,
        )
        page = paginate(
            memories,
            request.query_params,
            memory_body,
            filters=MEMORY_LIST_QUERY,
            repeatable=MEMORY_LIST_REPEATABLE,
        )
        sources = selectors.memory_sources(
            workspace=request.workspace, memory_ids=[m["id"] for m in page["data"]]
        )
        for body in page["data"]:
            body["sources"] = sources.get(body["id"], [])
        return Response(page)

    @extend_schema(
        summary="Add a memory by hand",
        tags=["memories"],
        description="A memory of the user's that already says it (the same text, case, "
        "spacing and end punctuation aside, the same `kind` and `event_date`, and the given "
        "`metadata` keys alike) is returned as it is with 200, nothing recorded (but that a person "
        "said it: it then outlives the conversations it was extracted from): a retried "
        "POST stores the fact once. A memory as Engram answers it (listed, read, exported by "
        "`GET /v1/users/{id}/export`, a memory search's hit) may be posted back as it is, for a "
        "restore or for another user: `id`, `object`, `updated_at`, `sources`, `score` and "
        "`why` are Engram's output and ignored (the new memory has its own id and no sources), "
        "`created_at` is kept as the new memory's original time; any other field is a 400.\n\n"
        '**Import**: `{"user_id", "memories": [...]}` adds up to '
        f"{MAX_IMPORT_MEMORIES:,} memories at once (a restored export's `memories`, a move "
        "from another memory store), each as the body above (its own `user_id` ignored). "
        "All or nothing: one invalid item is a 400 naming it (`memories[3].text`) and nothing "
        "is stored; more items is a 400 naming `memories`. Each is de-duplicated as a single "
        "add is (against the user's memories and the import's earlier items), so a retried "
        "import stores nothing twice. Answers the memories in the items' order, with how many "
        "were `created` (201 when any was, else 200).",
        request=PolymorphicProxySerializer(
            component_name="MemoryCreateOrImport",
            serializers=[MemoryCreateInput, MemoryImportInput],
            resource_type_field_name=None,
        ),
        responses={
            201: PolymorphicProxySerializer(
                component_name="MemoryCreatedOrImported",
                serializers=[docs.MemorySerializer, docs.MemoryImportedSerializer],
                resource_type_field_name=None,
            ),
            200: PolymorphicProxySerializer(
                component_name="MemoryFoundOrImported",
                serializers=[docs.MemorySerializer, docs.MemoryImportedSerializer],
                resource_type_field_name=None,
            ),
        },
        examples=[
            OpenApiExample(
                "A preference",
                value={"user_id": "alice", "text": "Alice prefers tea.", "kind": "preference"},
                request_only=True,
            ),
            OpenApiExample(
                "An import (an export's memories)",
                value={
                    "user_id": "alice",
                    "memories": [
                        {"text": "Alice prefers tea.", "kind": "preference"},
                        {"text": "Alice lives in Porto.", "created_at": 1735689600},
                    ],
                },
                request_only=True,
            ),
        ],
    )
    def post(self, request):
        if isinstance(request.data, dict) and "memories" in request.data:
            return _import(request)
        data = _valid(MemoryCreateInput, with_own_user(request, request.data))
        memory, created = services.memory_add(
            workspace=request.workspace,
            user_id=own_user(request, data["user_id"]),
            text=data["text"],
            kind=data["kind"],
            event_date=data.get("event_date"),
            metadata=data.get("metadata") or {},
            actor="api",
            created_at=data.get("created_at"),
        )
        if not created:  # the memory that already says it, as it is (200, as a GET)
            return Response(_with_sources(request.workspace, memory))
        return Response(memory_body(memory, []), status=status.HTTP_201_CREATED)

    @extend_schema(
        summary="Delete every memory of one user (their conversations kept)",
        description="mem0's `delete_all(user_id=...)`: each memory deleted as "
        "`DELETE /v1/memories/{id}` deletes it (a `delete` in its history, not extracted again "
        "from what was said before, its conversations' summaries and titles without it), in "
        "batches. `user_id` is required (400 naming it): never every user's memories. `kind` "
        "and `metadata` narrow it as they narrow the list. Conversations and messages stay: "
        "`DELETE /v1/users/{id}` erases everything. Answers how many were deleted (0 the "
        "second time).",
        tags=["memories"],
        parameters=[
            OpenApiParameter("user_id", ID_SCHEMA, description="Whose memories.", required=True),
            *[p for p in docs.MEMORY_LIST_FILTERS if p.name in MEMORIES_DELETE_QUERY],
        ],
        responses={200: docs.MemoriesDeletedSerializer},
    )
    def delete(self, request):
        unknown_fields_check(request.query_params, MEMORIES_DELETE_QUERY)
        repeated_fields_check(request.query_params, repeatable=MEMORY_LIST_REPEATABLE)
        user_id = own_user(request, memories_delete_user_id(request.query_params))
        filters = memory_list_filters(request.query_params)
        deleted = services.memories_delete(
            workspace=request.workspace,
            user_id=user_id,
            kinds=filters.kinds,
            metadata=filters.metadata,
            actor="api",
        )
        return Response({"object": "list.deleted", "user_id": user_id, "deleted": deleted})


class MemoryDetailApi(APIView):
    permission_classes = [EndUserAllowed]

    @extend_schema(summary="One memory", tags=["memories"], responses=docs.MemorySerializer)
    def get(self, request, memory_id: str):
        memory = selectors.memory_get(
            workspace=request.workspace, memory_id=memory_id, user_id=end_user(request)
        )
        return Response(_with_sources(request.workspace, memory))

    @extend_schema(
        summary="Edit a memory (kept in its history)",
        tags=["memories"],
        request=MemoryUpdateInput,
        responses=docs.MemorySerializer,
    )
    def patch(self, request, memory_id: str):
        memory = selectors.memory_get(
            workspace=request.workspace, memory_id=memory_id, user_id=end_user(request)
        )
        body = read_only_checked(
            request.data,
            stored=memory_body(memory, []),
            writable=MemoryUpdateInput().fields,
            # Engram's output that changes by itself (a search hit's score and why too)
            ignored=("updated_at", "sources", "score", "why"),
        )
        data = _valid(MemoryUpdateInput, body)
        if not data:
            raise ApiError(400, "Nothing to update: give text, kind, event_date or metadata.")
        changes = {k: data[k] for k in ("text", "kind", "metadata") if k in data}
        if "event_date" in data:
            changes["event_date"] = data["event_date"]
        memory = services.memory_update(
            workspace=request.workspace, memory=memory, actor="api", **changes
        )
        return Response(_with_sources(request.workspace, memory))

    @extend_schema(summary="Delete a memory", tags=["memories"], responses={200: DeletedSerializer})
    def delete(self, request, memory_id: str):
        memory = selectors.memory_get(
            workspace=request.workspace, memory_id=memory_id, user_id=end_user(request)
        )
        services.memory_delete(workspace=request.workspace, memory=memory, actor="api")
        return Response({"id": memory_id, "object": "memory.deleted", "deleted": True})


class MemoryHistoryApi(APIView):
    permission_classes = [EndUserAllowed]

    @extend_schema(
        summary="A memory's changes, oldest first unless `order` says (kept after it is deleted)",
        tags=["memories"],
        parameters=docs.MEMORY_HISTORY_PARAMETERS,
        responses=docs.MemoryEventListSerializer,
    )
    def get(self, request, memory_id: str):
        events = selectors.memory_history(
            workspace=request.workspace, memory_id=memory_id, user_id=end_user(request)
        )
        # a memory leaves its history behind: none means it never existed (a page past the
        # last entry is empty, the memory's history not)
        if not events.exists():
            raise Memory.DoesNotExist
        return Response(
            paginate(events, request.query_params, event_body, by="created_at", default_order="asc")
        )


@counts_workspace_rates  # a query embedding and a vector query each, as /v1/search
class MemorySearchApi(APIView):
    permission_classes = [EndUserAllowed]

    @extend_schema(
        summary="Search a user's memories",
        description="Memories only (facts, preferences, plans, events), best first: cosine "
        "similarity blended with BM25. Each has `score`, `why` and `sources`, the messages it was "
        "extracted from. `metadata` keeps the memories whose metadata holds its keys and values "
        "(containment, as `GET /v1/memories?metadata=`). Past messages and knowledge chunks: "
        "`POST /v1/search`.",
        tags=["memories"],
        request=SearchInput,
        responses=docs.MemorySearchResultsSerializer,
        examples=[
            OpenApiExample(
                "A question",
                value={"user_id": "alice", "query": "Where does Alice live?", "limit": 5},
                request_only=True,
            )
        ],
    )
    def post(self, request):
        from memory.embeddings import get_embedder

        data = _valid(SearchInput, with_own_user(request, request.data))
        filters = memory_search_filters(data)
        vector = get_embedder().embed_one(data["query"])
        found = memory_search(
            workspace=request.workspace,
            user_id=own_user(request, data["user_id"]),
            query=data["query"],
            vector=vector,
            limit=data["limit"],
            with_sources=True,
            metadata=filters.metadata,
            kinds=filters.kinds,
            created_from=filters.created_from,
            created_until=filters.created_until,
        )
        return Response({"object": "list", "data": [memory_hit(f) for f in found]})


def memory_hit(found: Found) -> dict:
    assert isinstance(found.obj, Memory)
    body = memory_body(found.obj, found.sources)
    body["score"] = shown_score(found.score)
    body["why"] = found.why()
    return body
