"""The built-in tools: the called agent's end user's memories and the agent's collections,
through memory's own search functions and services (sync: run on a worker thread)."""

from __future__ import annotations

import json
from typing import Any

from django.db import close_old_connections

from config.common.jsonbody import storable


class Refused(Exception):
    pass


def _text(args: dict, name: str) -> object:
    """An argument as the model sent it, a string made storable: the model's arguments are not
    a client's body, so a NUL or a lone surrogate in them is cleaned, not refused (PostgreSQL
    and the tokenizer take neither)."""
    value = args.get(name)
    return storable(value) if isinstance(value, str) else value


def _query(args: dict) -> tuple[str, int]:
    query = _text(args, "query")
    if not isinstance(query, str) or not query.strip():
        raise Refused('"query" (a non-empty string) is required')
    limit = args.get("limit", 5)
    if not isinstance(limit, int) or isinstance(limit, bool):
        limit = 5
    return query.strip()[:4000], max(1, min(limit, 20))


def _user(scope: Any) -> str:
    """The end user whose memories a built-in reads or writes."""
    if not scope.memory:  # a tool stored before the rule, or a version pinned with memory off
        raise Refused("memory is off for this agent: nothing is stored or read")
    if not scope.user_id:
        raise Refused("this call has no end user (send x-user-id or `user`)")
    return scope.user_id


def memory_search(args: dict, scope: Any) -> list[dict]:
    from memory.embeddings import get_embedder
    from memory.retrieval.search import memory_search as search

    query, limit = _query(args)
    found = search(
        workspace=scope.workspace,
        user_id=_user(scope),
        query=query,
        vector=get_embedder().embed_one(query),
        limit=limit,
    )
    return [
        {"id": f.id, "text": getattr(f.obj, "text", ""), "score": round(f.score, 4)} for f in found
    ]


def knowledge_search(args: dict, scope: Any) -> list[dict]:
    from memory.knowledge.search import knowledge_search as search

    query, limit = _query(args)
    hits = search(
        workspace=scope.workspace,
        collection_ids=list(scope.collection_ids),
        query=query,
        limit=limit,
    )
    keys = ("collection_id", "document_id", "title", "heading", "score", "snippet")
    return [{k: hit[k] for k in keys} for hit in hits]


def remember(args: dict, scope: Any) -> dict:
    from memory.services.memories import memory_add

    text = _text(args, "text")
    if not isinstance(text, str) or not text.strip() or len(text) > 2000:
        raise Refused('"text" (1-2,000 characters) is required')
    memory, _ = memory_add(
        workspace=scope.workspace,
        user_id=_user(scope),
        text=text,
        actor="agent",
        reason="remember tool",
    )
    return {"id": memory.id, "text": memory.text}


RUNNERS = {
    "memory_search": memory_search,
    "knowledge_search": knowledge_search,
    "remember": remember,
}


def run(name: str, args: dict, scope: Any) -> str:
    try:
        return json.dumps(RUNNERS[name](args, scope), ensure_ascii=False)
    finally:
        close_old_connections()
