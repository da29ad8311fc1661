"""Reads, always scoped by workspace (and by user where memories are concerned).

Search (ranked memories and past messages) is memory.retrieval.search.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.db.models import QuerySet

from accounts.models import Workspace
from memory.models import Conversation, Memory, MemoryEvent, Message, ProcessingJob, Session

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
