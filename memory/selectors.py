"""Reads, always scoped by workspace (and by user where memories are concerned)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from django.db.models import QuerySet

from accounts.models import Workspace
from memory.models import Conversation, Memory, MemoryEvent, Message, ProcessingJob, Session
from memory.retrieval import ranking

# Fusion weights: a small recency term breaks near-ties toward what was said lately.
RECENCY_WEIGHT = 0.2
RRF_K = 60
# Below this, a hit with no word in common with the query is noise, whatever its rank.
MIN_SIMILARITY = 0.15
MEMORY_WEIGHT = 0.85

Recalled = TypeVar("Recalled", Memory, Message)


# --- conversations --------------------------------------------------------------------------


def conversation_get(*, workspace: Workspace, conversation_id: str) -> Conversation:
    """By the client's id (x-conversation-id), or by Engram's conv_ id."""
    found = Conversation.objects.filter(workspace=workspace, external_id=conversation_id).first()
    return found or Conversation.objects.get(workspace=workspace, id=conversation_id)


def conversation_list(*, workspace: Workspace, user_id: str | None = None) -> QuerySet:
    qs = Conversation.objects.filter(workspace=workspace)
    return qs.filter(user_id=user_id) if user_id else qs


def message_list(*, workspace: Workspace, conversation: Conversation) -> QuerySet:
    return Message.objects.filter(workspace=workspace, conversation=conversation).select_related(
        "session"
    )


def session_current(*, workspace: Workspace, conversation: Conversation) -> Session | None:
    return (
        Session.objects.filter(workspace=workspace, conversation=conversation)
        .order_by("-last_active_at")
        .first()
    )


def processing_counts(*, workspace: Workspace, conversation: Conversation) -> dict[str, int]:
    counts = {"pending": 0, "done": 0, "failed": 0}
    statuses = ProcessingJob.objects.filter(
        workspace=workspace, conversation=conversation
    ).values_list("status", flat=True)
    for status in statuses:
        running = status in (ProcessingJob.Status.PENDING, ProcessingJob.Status.RUNNING)
        counts["pending" if running else status] += 1
    return counts


# --- memories -------------------------------------------------------------------------------


def memory_list(*, workspace: Workspace, user_id: str | None = None) -> QuerySet:
    qs = Memory.objects.filter(workspace=workspace).defer("embedding", "search")
    return qs.filter(user_id=user_id) if user_id else qs


def memory_get(*, workspace: Workspace, memory_id: str) -> Memory:
    return Memory.objects.get(workspace=workspace, id=memory_id)


def memory_history(*, workspace: Workspace, memory_id: str) -> QuerySet:
    return MemoryEvent.objects.filter(workspace=workspace, memory_id=memory_id)


def message_source(message: Message | dict) -> dict:
    if isinstance(message, dict):
        return message
    return {
        "message_id": message.id,
        "conversation_id": message.conversation.external_id,
        "created_at": int(message.created_at.timestamp()),
        "metadata": message.metadata,
    }


def memory_sources(*, workspace: Workspace, memory_ids: Iterable[str]) -> dict[str, list[dict]]:
    """The messages each memory came from, oldest first (one query)."""
    through = Memory.sources.through
    rows = (
        through.objects.filter(memory_id__in=list(memory_ids), memory__workspace=workspace)
        .order_by("message__created_at", "message_id")
        .values(
            "memory_id",
            "message_id",
            "message__conversation__external_id",
            "message__created_at",
            "message__metadata",
        )
    )
    found: dict[str, list[dict]] = {}
    for row in rows:
        found.setdefault(row["memory_id"], []).append(
            {
                "message_id": row["message_id"],
                "conversation_id": row["message__conversation__external_id"],
                "created_at": int(row["message__created_at"].timestamp()),
                "metadata": row["message__metadata"],
            }
        )
    return found


# --- retrieval ------------------------------------------------------------------------------


@dataclass
class Found(Generic[Recalled]):
    """A ranked memory or past message, with why it ranked and where it came from."""

    kind: str  # "memory" | "message"
    obj: Recalled
    score: float
    similarity: float | None
    ranks: dict[str, int]
    sources: list[dict] = field(default_factory=list)

    @property
    def id(self) -> str:
        return self.obj.id

    def why(self) -> str:
        parts = []
        if "vector" in self.ranks:
            parts.append(f"vector rank {self.ranks['vector']} (similarity {self.similarity:.2f})")
        if "text" in self.ranks:
            parts.append(f"full-text rank {self.ranks['text']}")
        if "recency" in self.ranks:
            parts.append(f"recency rank {self.ranks['recency']}")
        return "; ".join(parts) + f"; fused score {self.score:.4f}"


def _fuse(hits: list[ranking.Ranked], when: str, min_similarity: float) -> list[ranking.Ranked]:
    """Add the recency term, drop what is neither a word match nor close enough, rank."""
    by_age = sorted(hits, key=lambda h: h.row[when], reverse=True)
    for rank, hit in enumerate(by_age):
        hit.ranks["recency"] = rank + 1
        hit.score += RECENCY_WEIGHT / (RRF_K + rank + 1)
    kept = [h for h in hits if "text" in h.ranks or (h.similarity or 0.0) >= min_similarity]
    return sorted(kept, key=lambda h: h.score, reverse=True)


def memory_search(
    *,
    workspace: Workspace,
    user_id: str,
    query: str,
    vector: list[float] | None,
    limit: int,
    min_similarity: float = 0.0,
    with_sources: bool = False,
) -> list[Found[Memory]]:
    hits = ranking.memories(
        workspace_id=workspace.id,
        user_id=user_id,
        query=query,
        vector=vector,
        with_sources=with_sources,
    )
    found = []
    for hit in _fuse(hits, "updated_at", min_similarity)[:limit]:
        row = dict(hit.row)
        sources = row.pop("sources", [])
        memory = Memory(workspace=workspace, **row)
        memory._state.adding = False
        found.append(Found("memory", memory, hit.score, hit.similarity, hit.ranks, sources))
    return found


def message_search(
    *,
    workspace: Workspace,
    user_id: str,
    query: str,
    vector: list[float] | None,
    limit: int,
    exclude_ids: Iterable[str] = (),
    min_similarity: float = 0.0,
    feedback: bool = False,
) -> list[Found[Message]]:
    hits = ranking.messages(
        workspace_id=workspace.id,
        user_id=user_id,
        query=query,
        vector=vector,
        exclude_ids=list(exclude_ids),
        feedback=feedback,
    )
    found, seen = [], set()
    for hit in _fuse(hits, "created_at", min_similarity):
        row = dict(hit.row)
        conversation = Conversation(
            id=row.pop("conversation_id"),
            external_id=row.pop("conversation_external_id"),
            workspace=workspace,
            user_id=user_id,
        )
        message = Message(workspace=workspace, user_id=user_id, conversation=conversation, **row)
        message._state.adding = False
        key = " ".join(message.content.lower().split())
        if key in seen:
            continue  # the same words said twice are one piece of evidence
        seen.add(key)
        found.append(
            Found(
                "message", message, hit.score, hit.similarity, hit.ranks, [message_source(message)]
            )
        )
        if len(found) == limit:
            break
    return found


def search(
    *, workspace: Workspace, user_id: str, query: str, vector: list[float] | None, limit: int
) -> list[Found[Memory] | Found[Message]]:
    """Memories and past messages in one ranking; an item adds evidence or it is left out."""
    memories = memory_search(
        workspace=workspace,
        user_id=user_id,
        query=query,
        vector=vector,
        limit=limit,
        min_similarity=MIN_SIMILARITY,
        with_sources=True,
    )
    messages = message_search(
        workspace=workspace,
        user_id=user_id,
        query=query,
        vector=vector,
        limit=limit,
        min_similarity=MIN_SIMILARITY,
        feedback=True,
    )
    # A memory restates what its source messages said (offline extraction: nearly word for
    # word); it takes a message's place only when it ranks clearly higher (LoCoMo: +0.8 R@10).
    candidates: list[Found[Memory] | Found[Message]] = [*memories, *messages]
    ranked = sorted(
        candidates,
        key=lambda f: f.score * (MEMORY_WEIGHT if f.kind == "memory" else 1.0),
        reverse=True,
    )
    results: list[Found[Memory] | Found[Message]] = []
    covered: set[str] = set()
    for found in ranked:
        ids = {s["message_id"] for s in found.sources}
        if ids and ids <= covered:
            continue
        covered |= ids
        results.append(found)
        if len(results) == limit:
            break
    return results


# --- users ----------------------------------------------------------------------------------


def user_export(*, workspace: Workspace, user_id: str) -> dict:
    """Everything stored about one user in this workspace."""
    from memory.serializers import (
        conversation_body,
        event_body,
        memory_body,
        message_body,
        session_body,
    )

    memories = list(memory_list(workspace=workspace, user_id=user_id).order_by("id"))
    sources = memory_sources(workspace=workspace, memory_ids=[m.id for m in memories])
    conversations = []
    for conversation in conversation_list(workspace=workspace, user_id=user_id).order_by("id"):
        messages = message_list(workspace=workspace, conversation=conversation)
        conversations.append(
            conversation_body(conversation)
            | {"messages": [message_body(m, conversation) for m in messages]}
        )
    return {
        "object": "user.export",
        "user_id": user_id,
        "memories": [memory_body(m, sources.get(m.id, [])) for m in memories],
        "memory_events": [
            event_body(e) for e in MemoryEvent.objects.filter(workspace=workspace, user_id=user_id)
        ],
        "conversations": conversations,
        "sessions": [
            session_body(s)
            for s in Session.objects.filter(workspace=workspace, user_id=user_id).order_by("id")
        ],
    }
