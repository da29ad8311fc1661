"""Unified search: a user's memories and past messages and the workspace's knowledge chunks in
one ranking (memory.retrieval.search.search)."""

from __future__ import annotations

import numpy as np
from django.conf import settings
from drf_spectacular.utils import OpenApiExample, extend_schema
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.authentication import EndUserAllowed
from accounts.endusers.scope import own_user, with_own_user
from accounts.limits.middleware import counts_workspace_rates
from config.common.openapi import error
from config.common.times import unix_seconds
from memory.apis import openapi as docs
from memory.embeddings.base import Embedder, Tokens
from memory.models import Memory, Message
from memory.retrieval.fusion import shown_score
from memory.retrieval.search import Found, search
from memory.serializers import UnifiedSearchInput, memory_search_filters


@counts_workspace_rates  # a query embedding and vector queries each, as an embedding's request
class SearchApi(APIView):
    # an end user's token searches only its own memories and messages (and, as in a chat turn,
    # the collections it names)
    permission_classes = [EndUserAllowed]

    @extend_schema(
        summary="Search memories, past messages and knowledge chunks in one ranking",
        description="`types` names what to search: `memories` and `messages` are `user_id`'s, "
        "`chunks` come from `collection_ids` (default: what the body names, memories and "
        "messages with a `user_id`, chunks with `collection_ids`). Every item has "
        "`type`, `id`, `text`, `score` (cosine blended with BM25, on one scale; with token "
        "matching on, the default, the candidates are re-ranked by how their words match the "
        "query's and whether they hold the kind of answer it asks for — a time, a number, a "
        "place, a name — and `score` is the re-ranking's estimate, 0-1, that the item answers "
        "it; `why` says what ranked it), `created_at` "
        "and `sources`: a message's is itself, a memory's the messages it was extracted from, "
        "a chunk's its document. `metadata` narrows the memories (containment, as "
        "`GET /v1/memories?metadata=`), not messages nor chunks, and so does `kind`. "
        "`created_after` / `created_before` narrow memories and messages by their "
        "`created_at` (a message's: when it was said or imported as said), not chunks (the "
        "workspace's knowledge, not a user's history). A memory whose source messages all rank above it is left out: "
        "it would add nothing.",
        tags=["search"],
        request=UnifiedSearchInput,
        responses={
            200: docs.UnifiedSearchResultsSerializer,
            404: error(404, "A collection that is not the workspace's (`collection_not_found`)."),
        },
        examples=[
            OpenApiExample(
                "Memories and messages",
                value={"user_id": "alice", "query": "Where does Alice live?", "limit": 5},
                request_only=True,
            ),
            OpenApiExample(
                "Everything",
                value={
                    "user_id": "alice",
                    "query": "What is the refund policy?",
                    "types": ["memories", "messages", "chunks"],
                    "collection_ids": ["col_..."],
                },
                request_only=True,
            ),
        ],
    )
    def post(self, request):
        from memory.embeddings import get_embedder
        from memory.knowledge.search import collections_check

        serializer = UnifiedSearchInput(data=with_own_user(request, request.data))
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        filters = memory_search_filters(data)
        collection_ids = data["collection_ids"] if "chunks" in data["types"] else []
        if collection_ids:
            collections_check(workspace=request.workspace, collection_ids=collection_ids)
        vectors, tokens = query_embedding(get_embedder(), data["query"])
        found = search(
            workspace=request.workspace,
            user_id=own_user(request, data.get("user_id")),
            query=data["query"],
            vector=vectors[0].tolist(),
            query_tokens=tokens[0],
            limit=data["limit"],
            types=data["types"],
            collection_ids=collection_ids,
            metadata=filters.metadata,
            kinds=filters.kinds,
            created_from=filters.created_from,
            created_until=filters.created_until,
        )
        return Response({"object": "list", "data": [search_item(f) for f in found]})


def query_embedding(embedder: Embedder, query: str) -> tuple[np.ndarray, list[Tokens | None]]:
    """The query's vector, and its token vectors when searches use them."""
    if settings.ENGRAM_SEARCH_TOKEN_MATCH:
        return embedder.embed_with_tokens([query])
    return embedder.embed([query]), [None]


def search_item(found: Found) -> dict:
    """One typed item: what every type shares, then the type's own fields."""
    obj = found.obj
    item_id = found.id
    if isinstance(obj, Memory):
        own = {
            "user_id": obj.user_id,
            "kind": obj.kind,
            "event_date": obj.event_date.isoformat() if obj.event_date else None,
            "metadata": obj.metadata,
        }
        text, created_at = obj.text, obj.created_at
    elif isinstance(obj, Message):
        own = {
            "conversation_id": obj.conversation.external_id,
            "role": obj.role,
            "name": obj.name or None,
            "metadata": obj.metadata,
        }
        text, created_at = obj.content, obj.created_at
    else:
        own = {k: obj[k] for k in ("collection_id", "document_id", "title", "chunk_index")}
        text, created_at = obj["text"], obj["created_at"]
        item_id = f"{obj['document_id']}#{obj['chunk_index']}"
    return {
        "object": "search.result",
        "type": found.kind,
        "id": item_id,
        "text": text,
        "score": shown_score(found.score),
        "created_at": unix_seconds(created_at),
        "sources": found.sources,
        "why": found.why(),
        **own,
    }
