"""Reads, always scoped by workspace (and by user where memories are concerned).

Search (ranked memories and past messages) is memory.retrieval.search.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from typing import Any

from django.db import connection
from django.db.models import Count, Max, Model, Q, QuerySet

from accounts.models import Workspace
from completions.tools.models import Execution
from config.common.errors import Invalid, NotFound
from config.common.pagination import Cursor
from config.common.rows import columns, instance
from config.common.times import unix_seconds
from memory.models import Conversation, Memory, MemoryEvent, Message, ProcessingJob, Session

# --- conversations --------------------------------------------------------------------------


ENGRAM_CONVERSATION_PREFIX = "conv_"  # Conversation.id's (new_id("conv"))


def conversation_find(
    *, workspace: Workspace, conversation_id: str, user_id: str | None = None
) -> Conversation | None:
    """The conversation an id names, for every door that takes one (reads, chat turns,
    /v1/context, imports): the client's id (x-conversation-id) first, else Engram's conv_ id;
    with `user_id`, only that user's. None: no such conversation.

    A client's id is unique per user (two users may each have a conversation "support"): named
    without a user (a workspace key that names none), the id must be one user's alone, else
    Invalid naming `user_id` (code AMBIGUOUS_CONVERSATION) rather than a guess."""
    found = _conversation_by("external_id", workspace.id, conversation_id, user_id)
    if found is None and conversation_id.startswith(ENGRAM_CONVERSATION_PREFIX):
        # a client's own id costs no 2nd query
        found = _conversation_by("id", workspace.id, conversation_id, user_id)
    return found


AMBIGUOUS_CONVERSATION = "ambiguous_conversation"


def _conversation_by(
    column: str, workspace_id: str, value: str, user_id: str | None
) -> Conversation | None:
    """One of the workspace's conversations by a column unique with the user, in SQL written
    once: every remembered turn looks its conversation up, and building the querysets cost
    ~20,000 interpreter opcodes (bench/README.md, the twenty-third and twenty-fourth
    sessions). Without `user_id`, two rows are read: a second one is another user's under the
    same id (conversation_find)."""
    params = [workspace_id, value]
    scoped, limit = "", 2
    if user_id is not None:
        params.append(user_id)
        scoped, limit = ' AND "user_id" = %s', 1
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {columns(Conversation)} FROM memory_conversation"
            f' WHERE "workspace_id" = %s AND "{column}" = %s{scoped} LIMIT {limit}',
            params,
        )
        rows = cursor.fetchall()
    if len(rows) > 1:
        raise Invalid(
            f"Several users of this workspace have a conversation '{value}': "
            "name the user with user_id (a query parameter) or x-user-id.",
            field="user_id",
            code=AMBIGUOUS_CONVERSATION,
        )
    return instance(Conversation, rows[0]) if rows else None


def conversation_and_current_session(
    *, workspace: Workspace, external_id: str, user_id: str, since: dt.datetime
) -> tuple[Conversation | None, Session | None]:
    """The user's conversation a client's own id names (not Engram's conv_ id:
    conversation_find) and, in the same statement, its session last active since `since`
    (session_active's): a remembered turn's two lookups in one (bench/README.md,
    "Twenty-fourth session")."""
    current = _SESSION_ACTIVE.format(
        columns=columns(Session), conversation='memory_conversation."id"'
    )
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {columns(Conversation)}, s.* FROM memory_conversation"
            f" LEFT JOIN LATERAL ({current}) s ON TRUE"
            ' WHERE memory_conversation."workspace_id" = %s'
            ' AND memory_conversation."external_id" = %s AND memory_conversation."user_id" = %s',
            [since, workspace.id, workspace.id, external_id, user_id],
        )
        row = cursor.fetchone()
    if row is None:
        return None, None
    conversation = instance(Conversation, row)
    rest = row[len(Conversation._meta.concrete_fields) :]
    return conversation, instance(Session, rest) if rest[0] is not None else None


# The conversation's session last active since a time, the newest: its SQL for session_active
# and for conversation_and_current_session's LATERAL, written once.
_SESSION_ACTIVE = (
    'SELECT {columns} FROM memory_session WHERE memory_session."conversation_id" = {conversation}'
    ' AND memory_session."last_active_at" >= %s AND memory_session."workspace_id" = %s'
    ' ORDER BY memory_session."last_active_at" DESC LIMIT 1'
)


def session_active(
    *, workspace: Workspace, conversation: Conversation, since: dt.datetime
) -> Session | None:
    """The conversation's session last active since `since`, the newest; None: none. In SQL
    written once: every remembered turn without a session id asks, and the queryset's building
    cost ~25,000 interpreter opcodes (bench/README.md, "Twenty-fourth session")."""
    with connection.cursor() as cursor:
        cursor.execute(
            _SESSION_ACTIVE.format(columns=columns(Session), conversation="%s"),
            [conversation.pk, since, workspace.id],
        )
        row = cursor.fetchone()
    return instance(Session, row) if row is not None else None


def conversation_get(
    *, workspace: Workspace, conversation_id: str, user_id: str | None = None
) -> Conversation:
    """As conversation_find; Conversation.DoesNotExist (a 404) when there is none."""
    found = conversation_find(workspace=workspace, conversation_id=conversation_id, user_id=user_id)
    if found is None:
        raise Conversation.DoesNotExist
    return found


def conversation_list(*, workspace: Workspace, user_id: str | None = None) -> QuerySet:
    qs = Conversation.objects.filter(workspace=workspace)
    return qs.filter(user_id=user_id) if user_id else qs


def message_list(*, workspace: Workspace, conversation: Conversation) -> QuerySet:
    return Message.objects.filter(workspace=workspace, conversation=conversation).select_related(
        "session"
    )


def message_get(*, workspace: Workspace, message_id: str, user_id: str | None = None) -> Message:
    """One message by Engram's id, in `workspace` (and of `user_id`, for an end user's token);
    Message.DoesNotExist (a 404) when there is none. A recalled message (Message.recalled names
    ids) is read by it."""
    qs = Message.objects.filter(workspace=workspace, id=message_id)
    if user_id is not None:
        qs = qs.filter(user_id=user_id)
    return qs.select_related("conversation", "session").get()


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


def memory_list(
    *,
    workspace: Workspace,
    user_id: str | None = None,
    kinds: Sequence[str] = (),
    conversation_id: str | None = None,
    created_from: dt.datetime | None = None,
    created_until: dt.datetime | None = None,
    metadata: dict | None = None,
) -> QuerySet:
    """The workspace's memories; with `user_id`, that user's (with an end-user token, their
    own, and only their own conversation names one). `kinds`: of these kinds; `conversation_id`
    (as conversation_find reads it): with a source message said in it; created at or after
    `created_from` and before `created_until`; whose metadata contains `metadata`."""
    qs = Memory.objects.filter(workspace=workspace).defer("embedding", "search")
    if user_id:
        qs = qs.filter(user_id=user_id)
    if kinds:
        qs = qs.filter(kind__in=kinds)
    if conversation_id is not None:
        conversation = conversation_find(
            workspace=workspace, conversation_id=conversation_id, user_id=user_id or None
        )
        if conversation is None:
            return qs.none()
        from_it = Memory.sources.through.objects.filter(message__conversation=conversation)
        qs = qs.filter(id__in=from_it.values("memory_id"))
    if created_from is not None:
        qs = qs.filter(created_at__gte=created_from)
    if created_until is not None:
        qs = qs.filter(created_at__lt=created_until)
    if metadata:
        qs = qs.filter(metadata__contains=metadata)
    return qs


def memory_get(*, workspace: Workspace, memory_id: str, user_id: str | None = None) -> Memory:
    """With `user_id`, only that user's (an end-user token)."""
    scope = {"user_id": user_id} if user_id is not None else {}
    return Memory.objects.get(workspace=workspace, id=memory_id, **scope)


def memory_history(*, workspace: Workspace, memory_id: str, user_id: str | None = None) -> QuerySet:
    events = MemoryEvent.objects.filter(workspace=workspace, memory_id=memory_id)
    return events.filter(user_id=user_id) if user_id is not None else events


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
                "created_at": unix_seconds(row["message__created_at"]),
                "metadata": row["message__metadata"],
            }
        )
    return found


def recalled_deleted(*, workspace: Workspace, bodies: Iterable[dict]) -> set[str]:
    """The ids named in answers' `recalled` (message bodies) whose memory or past message is
    deleted since: at most one query for each kind."""
    named: dict[str, set[str]] = {"memory": set(), "message": set()}
    for body in bodies:
        for item in body.get("recalled") or ():
            named.setdefault(item["type"], set()).add(item["id"])
    gone: set[str] = set()
    for kind, model in (("memory", Memory), ("message", Message)):
        if named[kind]:
            there = model._default_manager.filter(workspace=workspace, id__in=named[kind])
            gone |= named[kind] - set(there.values_list("id", flat=True))
    return gone


# --- users ----------------------------------------------------------------------------------
# An end user is not a row: it is a `user_id` that memories, their history, conversations (and
# so messages), sessions or agent runs carry in a workspace. Messages always belong to a
# conversation, so five tables name every user. A memory's history outlives it: a user whose
# every memory was deleted by hand still has their facts' texts stored there, until erased. An
# agent with memory off stores no conversation, but its runs keep the user's messages.


USER_TABLES: tuple[type[Model], ...] = (Memory, MemoryEvent, Conversation, Session, Execution)


def user_not_found(user_id: str) -> NotFound:
    """The one answer for a user with nothing stored, wherever they are read."""
    return NotFound(f"No user '{user_id}'.", field="user_id", code="user_not_found")


def user_exists(*, workspace: Workspace, user_id: str) -> bool:
    """Is anything stored for the user (what makes them listed)? One EXISTS per table, along
    its (workspace, user_id) index, stopping at the first that has a row."""
    return bool(user_id) and any(
        model._default_manager.filter(workspace=workspace, user_id=user_id).exists()
        for model in USER_TABLES
    )


def user_id_page(*, workspace: Workspace, cursor: Cursor) -> tuple[list[str], bool]:
    """One page of the workspace's user ids in `user_id` order, and whether more follow."""
    bounds = cursor.bounds("user_id")
    order, wanted = cursor.order_by("user_id"), cursor.limit + 1
    # The page's ids are among each table's first `wanted` ids in its order: each part reads
    # only those, along its (workspace, user_id) index, rather than every row of the workspace
    # (an agent's runs and a user's memories are many per user). Each part's own order also
    # replaces its model's default one, which sorted every run of the workspace by date.
    parts = []
    for model in USER_TABLES:
        rows = model._default_manager.filter(workspace=workspace, **bounds)
        if model in (Session, Execution):
            rows = rows.exclude(user_id="")  # these may be anonymous
        parts.append(rows.values_list("user_id", flat=True).distinct().order_by(order)[:wanted])
    ids = parts[0].union(*parts[1:])  # UNION: each id once
    return cursor.page(list(ids.order_by(order)[:wanted]))


def user_stats(
    *, workspace: Workspace, user_ids: list[str], detail: bool = False
) -> dict[str, dict]:
    """Per user: counts of what is stored and `last_active_at` (one grouped query per table).

    `detail` adds sessions, conversation summaries, memory history entries and agent runs. A
    user id with nothing stored is absent.
    """
    scope = {"workspace": workspace, "user_id__in": user_ids}
    found: dict[str, dict] = {}

    def merge(rows: Iterable[dict], counts: dict[str, str]) -> None:
        for row in rows:
            user = found.setdefault(
                row["user_id"],
                {"memories": 0, "conversations": 0, "messages": 0}
                | (
                    {"sessions": 0, "summaries": 0, "memory_events": 0, "executions": 0}
                    if detail
                    else {}
                )
                | {"last_active_at": None},
            )
            for name, column in counts.items():
                user[name] = row[column]
            last: dt.datetime | None = row["last"]
            if last is not None and (
                user["last_active_at"] is None or last > user["last_active_at"]
            ):
                user["last_active_at"] = last

    def grouped(model: type[Model], last: str, **extra: Any) -> Iterable[dict]:
        rows = model._default_manager.filter(**scope).values("user_id")
        return rows.annotate(n=Count("id"), last=Max(last), **extra).order_by()

    merge(grouped(Memory, "updated_at"), {"memories": "n"})
    summaries = {"summaries": Count("id", filter=~Q(summary=""))} if detail else {}
    merge(
        grouped(Conversation, "updated_at", **summaries),
        {"conversations": "n"} | ({"summaries": "summaries"} if detail else {}),
    )
    merge(grouped(Message, "created_at"), {"messages": "n"})
    # Sessions and memory history still count as activity, and name users who have only them
    # (a user whose memories were all deleted was "No user" while their texts were kept).
    merge(grouped(Session, "last_active_at"), {"sessions": "n"} if detail else {})
    merge(grouped(MemoryEvent, "created_at"), {"memory_events": "n"} if detail else {})
    # An agent's runs hold the user's messages even with memory off (no conversation stored).
    merge(grouped(Execution, "updated_at"), {"executions": "n"} if detail else {})
    return found


def user_get(*, workspace: Workspace, user_id: str) -> dict:
    """One user's counts (with sessions, summaries, memory history entries and agent runs);
    NotFound when nothing is stored."""
    found = user_stats(workspace=workspace, user_ids=[user_id], detail=True)
    if user_id not in found:
        raise user_not_found(user_id)
    return found[user_id]
