"""Erasure: a user's every trace in one workspace, or one conversation's."""

from __future__ import annotations

from django.db import transaction
from django.db.models import Exists, OuterRef, QuerySet, Subquery

from accounts.models import Workspace
from completions.services import usage_erase
from completions.tools.models import Execution
from config.admin_log import log_entries_delete
from config.common import database
from memory.forgotten import user_subjects
from memory.models import (
    Conversation,
    Memory,
    MemoryEvent,
    MemorySuppression,
    Message,
    Session,
)
from memory.retrieval import terms
from memory.services.forgetting import suppression_vectors
from memory.services.locks import user_lock
from memory.services.memories import memory_delete


@transaction.atomic
def user_delete(*, workspace: Workspace, user_id: str) -> dict[str, int]:
    database.long_statements()  # all the user's rows, however many, in this transaction
    user_lock(workspace_id=workspace.id, user_id=user_id, exclusive=True)
    scope = {"workspace": workspace, "user_id": user_id}
    _log_entries_delete(scope)
    counts = {
        "memories": Memory.objects.filter(**scope).delete()[1].get("memory.Memory", 0),
        "memory_events": MemoryEvent.objects.filter(**scope).delete()[0],
        "messages": Message.objects.filter(**scope).delete()[0],
    }
    # What the user asked to be forgotten goes too (not counted: it is shown nowhere).
    MemorySuppression.objects.filter(**scope).delete()
    deleted = Conversation.objects.filter(**scope).delete()[1]
    counts["conversations"] = deleted.get("memory.Conversation", 0)
    counts["sessions"] = Session.objects.filter(**scope).delete()[0]
    # An agent's runs hold the user's turns, what was recalled into them and the tools'
    # results (GET /v1/executions/{id}); they go with their approvals.
    counts["executions"] = (
        Execution.objects.filter(**scope).delete()[1].get("completions.Execution", 0)
    )
    counts["usage_records_pseudonymized"] = usage_erase(workspace=workspace, user_id=user_id)
    # This process's derived caches (speaker names, word counts) go too; other processes'
    # expire within a minute and only ever ranked the user's own, now deleted, rows.
    transaction.on_commit(lambda: terms.forget_user(workspace_id=workspace.id, user_id=user_id))
    return counts


def _log_entries_delete(scope: dict) -> None:
    """The admin's log entries of the user's rows go first (they keep a memory's text, a
    message's words: config.admin_log), and those of the memories deleted earlier, which
    their MemoryEvents still name."""
    log_entries_delete(model=Memory, rows=MemoryEvent.objects.filter(**scope), field="memory_id")
    for model in (Memory, MemoryEvent, Message, MemorySuppression, Conversation, Session):
        log_entries_delete(model=model, rows=model.objects.filter(**scope))
    log_entries_delete(model=Execution, rows=Execution.objects.filter(**scope))


def conversation_delete(
    *, workspace: Workspace, conversation: Conversation, actor: str = "api"
) -> dict[str, int]:
    """A conversation and what was derived from it alone: its messages, summary, sessions
    (but one that goes on in another conversation), jobs and agent runs, and the memories
    every source of which was one of its messages (each leaves a DELETE in its history, and a
    suppression, as memory_delete). A memory also said elsewhere, or added or reworded by hand
    (`by_hand`, or sourceless), stays (it loses this conversation's sources).

    Under the user's lock, exclusive as for an erasure: a turn storing into the conversation
    finishes first, or finds it gone and is not stored (memory.turn.pipeline), and an
    extraction run over its messages writes nothing (its jobs go with it)."""
    # The memories' suppression vectors in one embedder call, before the lock: one call per
    # memory under it (~5 ms each) held the user's turns. A memory derived from it between
    # this read and the lock is embedded under the lock (memory_delete).
    derived = derived_only_from(workspace=workspace, conversation=conversation)
    subjects = user_subjects(workspace=workspace, user_id=conversation.user_id)
    vectors = suppression_vectors(derived.values_list("text", flat=True), subjects)
    return _conversation_delete(
        workspace=workspace,
        conversation=conversation,
        actor=actor,
        vectors=vectors,
        subjects=subjects,
    )


def derived_only_from(*, workspace: Workspace, conversation: Conversation) -> QuerySet[Memory]:
    """The user's memories every source of which is one of the conversation's messages, and
    that no person added (`by_hand`: also said by hand, it is theirs): those
    conversation_delete deletes with it (the admin's confirmation page lists them)."""
    # Sources are memory.sources' rows: a memory is derived only from here when none of its
    # sources is a message of another conversation.
    through = Memory.sources.through
    here = through.objects.filter(message__conversation=conversation)
    elsewhere = through.objects.filter(memory_id=OuterRef("memory_id")).exclude(
        message__conversation=conversation
    )
    only_here = here.filter(~Exists(elsewhere)).values_list("memory_id", flat=True).distinct()
    return Memory.objects.filter(
        workspace=workspace, user_id=conversation.user_id, id__in=list(only_here), by_hand=False
    )


@transaction.atomic
def _conversation_delete(
    *,
    workspace: Workspace,
    conversation: Conversation,
    actor: str,
    vectors: dict[str, list[float]],
    subjects: frozenset[str],
) -> dict[str, int]:
    user_id = conversation.user_id
    database.long_statements()  # all its messages, however many, in this transaction
    user_lock(workspace_id=workspace.id, user_id=user_id, exclusive=True)
    memories = list(derived_only_from(workspace=workspace, conversation=conversation))
    for memory in memories:
        memory_delete(
            workspace=workspace,
            memory=memory,
            actor=actor,
            reason=f"its conversation '{conversation.external_id}' was deleted",
            vectors=vectors,
            subjects=subjects,
            conversations=False,  # its summary and title go with it
        )
    counts = {"memories": len(memories)}
    _conversation_log_entries_delete(workspace=workspace, conversation=conversation)
    counts["executions"] = (
        Execution.objects.filter(workspace=workspace, conversation_pk=conversation.pk)
        .delete()[1]
        .get("completions.Execution", 0)
    )
    counts["messages"] = (
        Message.objects.filter(workspace=workspace, conversation=conversation)
        .delete()[1]
        .get("memory.Message", 0)
    )
    only_here = _sessions_only_of(workspace=workspace, conversation=conversation)
    counts["sessions"] = only_here.delete()[0]
    # The others go on in another conversation: attached to the one they last spoke in (left
    # unattached, deleting that one later kept them, named by nothing).
    last_spoken_in = Message.objects.filter(session=OuterRef("pk")).order_by("-created_at")
    Session.objects.filter(workspace=workspace, conversation=conversation).update(
        conversation=Subquery(last_spoken_in.values("conversation_id")[:1])
    )
    conversation.delete()
    # Word counts of the user's rows (BM25) are cached a minute: dropped here at once.
    transaction.on_commit(lambda: terms.forget_user(workspace_id=workspace.id, user_id=user_id))
    return counts


def _sessions_only_of(*, workspace: Workspace, conversation: Conversation) -> QuerySet[Session]:
    """The sessions attached to the conversation that no message of another one names: a
    session (an app launch, say) may go on in several conversations, and deleting the one it
    was attached to deleted it under the others' messages."""
    elsewhere = Message.objects.filter(session=OuterRef("pk")).exclude(conversation=conversation)
    return Session.objects.filter(workspace=workspace, conversation=conversation).filter(
        ~Exists(elsewhere)
    )


def _conversation_log_entries_delete(*, workspace: Workspace, conversation: Conversation) -> None:
    """The admin's log entries of the conversation's rows (its title, its messages' words:
    config.admin_log), but the admin's record of this deletion, which names it by its id."""
    log_entries_delete(
        model=Message,
        rows=Message.objects.filter(workspace=workspace, conversation=conversation),
    )
    log_entries_delete(
        model=Session, rows=_sessions_only_of(workspace=workspace, conversation=conversation)
    )
    executions = Execution.objects.filter(workspace=workspace, conversation_pk=conversation.pk)
    log_entries_delete(model=Execution, rows=executions)
    log_entries_delete(
        model=Conversation, rows=Conversation.objects.filter(pk=conversation.pk), keep_deletion=True
    )
