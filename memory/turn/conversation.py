"""Server-side history: which conversation a turn belongs to, what the client resent, storing.

With an x-conversation-id the client may send only its new messages: the conversation's earlier
turns come back from the store. A client that resends its whole history stores nothing twice.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from django.db import transaction

from memory import selectors
from memory.models import Conversation, Message, Session
from memory.text import content_text
from memory.turn.contract import TurnContext

HISTORY_ROWS = 400  # stored messages considered for de-duplication and server-side history
HEAD_ROLES = ("system", "developer")


def _conversation_key(ctx: TurnContext, conversation_messages: list[dict]) -> tuple[str, bool]:
    """(external id, whether history is served) for the turn's conversation.

    Only an explicit x-conversation-id asks for server-side history. Without one, a session id
    names the conversation; else the first message does, so a client that resends its whole
    history keeps landing in the same conversation and nothing is stored twice.
    """
    if ctx.conversation_id:
        return ctx.conversation_id, True
    if ctx.session_id:
        return f"session:{ctx.session_id}", False
    first = content_text(conversation_messages[0].get("content")) if conversation_messages else ""
    digest = hashlib.sha256(f"{ctx.user_id}\x00{first}".encode()).hexdigest()[:24]
    return f"auto:{digest}", False


def _same(stored: dict, incoming: dict) -> bool:
    if stored.get("role") != incoming.get("role"):
        return False
    if content_text(stored.get("content")).strip() != content_text(incoming.get("content")).strip():
        return False
    if stored.get("tool_call_id") != incoming.get("tool_call_id"):
        return False
    calls = [c.get("id") for c in stored.get("tool_calls") or []]
    return calls == [c.get("id") for c in incoming.get("tool_calls") or []]


def matched_prefix(stored: list[dict], incoming: list[dict], *, truncated: bool = False) -> int:
    """How many leading incoming messages the store already holds (the client resent them).

    The largest k with incoming[:k] ending in the stored messages' tail. When `stored` is only
    the newest window of a longer conversation (`truncated`), a resent history longer than that
    window still matches by its last len(stored) messages.
    """
    longest = len(incoming) if truncated else min(len(stored), len(incoming))
    for k in range(longest, 0, -1):
        m = min(k, len(stored))
        offset = len(stored) - m
        if m and all(_same(stored[offset + i], incoming[k - m + i]) for i in range(m)):
            return k
    return 0


@dataclass
class Loaded:
    conversation: Conversation | None
    session: Session | None
    session_id: str | None
    history: list[dict]  # stored rows before what the request resent (oldest first)
    exclude_ids: list[str]
    stored_ids: list[str]
    serve_history: bool
    # An enclosing transaction (a test's) hides its rows from other connections: then all
    # retrieval stays on this thread's connection instead of running in parallel.
    in_transaction: bool = False


def load_and_store(ctx: TurnContext, messages: list[dict], dry_run: bool) -> Loaded:
    from django.db import connection

    with transaction.atomic():
        if not dry_run:
            relaxed_commit()
        loaded = _load_and_store_in_transaction(ctx, messages, dry_run)
    loaded.in_transaction = connection.in_atomic_block
    return loaded


def relaxed_commit() -> None:
    """One commit per turn, without waiting for its WAL flush (~1-2 ms of fsync here).

    A crash of the database server could lose the last instant of chat history, never its
    consistency; the request path does not wait on the disk for it.
    """
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL synchronous_commit TO OFF")


def _load_and_store_in_transaction(ctx: TurnContext, messages: list[dict], dry_run: bool) -> Loaded:
    from memory.services.conversations import (
        conversation_get_or_create,
        messages_append,
        session_resolve,
    )

    workspace, user_id = ctx.workspace, ctx.memory_user_id
    if ctx.collection_ids:
        from memory.turn.recall import collections_check

        collections_check(ctx)
    conversation_messages = [m for m in messages if m.get("role") not in HEAD_ROLES]
    session = None
    conversation: Conversation | None  # None only in a dry run that found nothing stored
    if ctx.session_id and not ctx.conversation_id:
        session = Session.objects.filter(workspace=workspace, external_id=ctx.session_id).first()
    if session is not None and session.conversation_id:
        conversation = Conversation.objects.get(pk=session.conversation_id)
        serve = False
        if conversation.user_id != user_id:
            conversation_get_or_create(
                workspace=workspace, external_id=conversation.external_id, user_id=user_id
            )  # raises the 403
    else:
        external_id, serve = _conversation_key(ctx, conversation_messages)
        if dry_run:
            conversation = Conversation.objects.filter(
                workspace=workspace, external_id=external_id
            ).first()
            if conversation is not None and conversation.user_id != user_id:
                conversation_get_or_create(
                    workspace=workspace, external_id=external_id, user_id=user_id
                )  # raises the 403
        else:
            conversation, _ = conversation_get_or_create(
                workspace=workspace, external_id=external_id, user_id=user_id
            )
    rows = []
    if conversation is not None:
        rows = list(
            Message.objects.filter(conversation=conversation)
            .exclude(role__in=HEAD_ROLES)
            .order_by("-created_at", "-id")
            .values("id", "raw", "token_count")[:HISTORY_ROWS]
        )
        rows.reverse()
    stored = [r["raw"] for r in rows]
    k = matched_prefix(stored, conversation_messages, truncated=len(rows) == HISTORY_ROWS)
    new = conversation_messages[k:]
    before = rows[: max(0, len(rows) - k)]
    stored_ids: list[str] = []
    session_id = ctx.session_id
    if not dry_run:
        assert conversation is not None  # found or created above
        session = session_resolve(
            workspace=workspace,
            conversation=conversation,
            user_id=user_id,
            external_id=ctx.session_id,
        )
        session_id = session.external_id
        if new:
            stored_ids = [
                m.id
                for m in messages_append(
                    workspace=workspace, conversation=conversation, session=session, messages=new
                )
            ]
    elif conversation is not None and not session_id:
        current = selectors.session_current(workspace=workspace, conversation=conversation)
        session_id = current.external_id if current else None
    resent_ids = [r["id"] for r in rows[max(0, len(rows) - k) :]]
    # Messages already in the request or in the history candidates are not "retrieved" again.
    exclude = stored_ids + resent_ids + ([r["id"] for r in before] if serve else [])
    return Loaded(
        conversation=conversation,
        session=session,
        session_id=session_id,
        history=[{"id": r["id"], "message": r["raw"], "tokens": r["token_count"]} for r in before]
        if serve
        else [],
        exclude_ids=exclude,
        stored_ids=stored_ids,
        serve_history=serve,
    )
