"""Erasure: a user's every trace in one workspace."""

from __future__ import annotations

from django.db import transaction

from accounts.models import Workspace
from memory.models import Conversation, Memory, MemoryEvent, Message, Session
from memory.retrieval import terms


@transaction.atomic
def user_delete(*, workspace: Workspace, user_id: str) -> dict[str, int]:
    scope = {"workspace": workspace, "user_id": user_id}
    counts = {
        "memories": Memory.objects.filter(**scope).delete()[1].get("memory.Memory", 0),
        "memory_events": MemoryEvent.objects.filter(**scope).delete()[0],
        "messages": Message.objects.filter(**scope).delete()[0],
    }
    deleted = Conversation.objects.filter(**scope).delete()[1]
    counts["conversations"] = deleted.get("memory.Conversation", 0)
    counts["sessions"] = Session.objects.filter(**scope).delete()[0]
    # This process's derived caches (speaker names, word counts) go too; other processes'
    # expire within a minute and only ever ranked the user's own, now deleted, rows.
    transaction.on_commit(lambda: terms.forget_user(workspace_id=workspace.id, user_id=user_id))
    return counts
