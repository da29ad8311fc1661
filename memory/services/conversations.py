"""Conversations, sessions and their messages."""

from __future__ import annotations

import datetime as dt
from typing import Any, TypeVar

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from accounts.models import Workspace
from config.common.errors import Invalid, NotYours
from config.common.ids import new_id
from config.common.jsonbody import storable
from config.common.rows import insert
from memory import selectors
from memory.models import SESSION_CONVERSATION_PREFIX, Conversation, Message, Session
from memory.services.locks import user_lock
from memory.text import content_text, count_message, message_search_text, title_from

STORED_ROLES = {"user", "assistant", "tool", "function"}


Owned = TypeVar("Owned", Conversation, Session)


def _owned(obj: Owned, user_id: str, what: str, external_id: str) -> Owned:
    if obj.user_id and obj.user_id != user_id:
        raise NotYours(
            f"{what} '{external_id}' belongs to another user of this workspace.",
            field=f"{what.lower()}_id",
            noun=what.lower(),
            value=external_id,
        )
    return obj


def conversation_owned(*, conversation: Conversation, user_id: str) -> Conversation:
    """The conversation, when it is `user_id`'s (or nobody's); NotYours naming it: one a
    session names, which the client reached by the session's id, not the conversation's."""
    return _owned(conversation, user_id, "Conversation", conversation.external_id)


# Activity timestamps move at most once a minute: a round trip saved on most turns.
TOUCH_EVERY = dt.timedelta(seconds=60)


def _stale(when: dt.datetime | None) -> bool:
    return when is None or timezone.now() - when > TOUCH_EVERY


def conversation_of_user(
    *, workspace: Workspace, external_id: str, user_id: str
) -> Conversation | None:
    """The user's conversation an id names for a turn (selectors.conversation_find); None: the
    id is free for them, whoever else has a conversation so named. Engram's own conv_ id of
    another user's conversation stays refused (NotYours: a 404 to an end-user token), not
    taken as a new client id: it names that one conversation, and being unguessable it tells
    nobody anything a client's own id would."""
    found = selectors.conversation_find(
        workspace=workspace, conversation_id=external_id, user_id=user_id
    )
    if found is None and external_id.startswith(selectors.ENGRAM_CONVERSATION_PREFIX):
        theirs = Conversation.objects.filter(workspace=workspace, pk=external_id).first()
        if theirs is not None:
            _owned(theirs, user_id, "Conversation", external_id)
    return found


def conversation_get_or_create(
    *,
    workspace: Workspace,
    external_id: str,
    user_id: str,
    metadata: dict | None = None,
    of_session: bool = False,
) -> tuple[Conversation, bool]:
    """The user's conversation `external_id` names as reads find it
    (selectors.conversation_find: the client's id, else Engram's conv_ id), else a new one
    under that client id. Ids are the user's own: another user's conversation under the same
    id is neither read nor revealed (the id behaves as a free one). `of_session`: the id is the
    one Engram names a session's conversation by (Conversation.session_external_id), which no
    client id may take."""
    conversation = conversation_of_user(
        workspace=workspace, external_id=external_id, user_id=user_id
    )
    created = False
    if conversation is None:
        if not of_session and external_id.startswith(SESSION_CONVERSATION_PREFIX):
            # Taken by a client first, the name locked the session's own user out of it
            # (session ids are the client's, often guessable): an existing one is still
            # named so, but a client never makes one.
            raise Invalid(
                f"A conversation id may not start with '{SESSION_CONVERSATION_PREFIX}': "
                "Engram names a session's conversation so.",
                field="conversation_id",
            )
        try:
            with transaction.atomic():
                conversation = Conversation.objects.create(
                    workspace=workspace,
                    external_id=external_id,
                    user_id=user_id,
                    metadata=metadata or {},
                )
                created = True
        except IntegrityError:  # created concurrently by another request
            conversation = Conversation.objects.get(
                workspace=workspace, external_id=external_id, user_id=user_id
            )
    return conversation, created


def conversation_create(*, workspace: Workspace, external_id: str, user_id: str) -> Conversation:
    """A new conversation under an id Engram chose (no lookup: the id is fresh)."""
    return Conversation.objects.create(
        workspace=workspace, external_id=external_id, user_id=user_id
    )


def conversation_fingerprint_set(
    *, conversation: Conversation, fingerprint: str | None, retry_fingerprint: str | None = None
) -> None:
    """The transcript's fingerprint as of the turn just stored, and that turn's request's
    (memory.turn.conversation); None: unchanged."""
    # In SQL written once, as the queryset's update wrote it: every remembered turn's finish
    # sends it (bench/README.md, "Twenty-fourth session").
    sets = ['"updated_at" = %s']
    values: list[Any] = [timezone.now()]
    if fingerprint is not None:
        sets.append('"fingerprint" = %s')
        values.append(fingerprint)
    if retry_fingerprint is not None:
        sets.append('"retry_fingerprint" = %s')
        values.append(retry_fingerprint)
    with connection.cursor() as cursor:
        cursor.execute(
            f'UPDATE memory_conversation SET {", ".join(sets)} WHERE "id" = %s',
            [*values, conversation.pk],
        )


def session_active_since(now: dt.datetime) -> dt.datetime:
    """A session last active before this has ended (ENGRAM_SESSION_IDLE_MINUTES)."""
    return now - dt.timedelta(minutes=settings.ENGRAM_SESSION_IDLE_MINUTES)


def session_resolve(
    *,
    workspace: Workspace,
    conversation: Conversation,
    user_id: str,
    external_id: str | None,
    current: tuple[Session | None] | None = None,
) -> Session:
    """The named session (created when unknown), else the conversation's current one.

    Without an id, a session idle for longer than ENGRAM_SESSION_IDLE_MINUTES ends and the next
    turn opens a new one, whose id is echoed so the client can keep it. `current`: the current
    one as the caller read it in its transaction, in a one-tuple (None: not read), as
    selectors.conversation_and_current_session reads it with its conversation.
    """
    now = timezone.now()
    if external_id:
        # The user's own session by that id (ids are each user's, as conversations' are).
        mine = Session.objects.filter(workspace=workspace, external_id=external_id, user_id=user_id)
        session = mine.first()
        created = False
        if session is None:
            try:
                with transaction.atomic():
                    session = Session.objects.create(
                        workspace=workspace,
                        external_id=external_id,
                        user_id=user_id,
                        conversation=conversation,
                    )
                    created = True
            except IntegrityError:  # created concurrently by another request
                session = mine.get()
        if not created and (session.conversation_id is None or _stale(session.last_active_at)):
            changes: dict[str, object] = {"last_active_at": now}
            if session.conversation_id is None:
                changes["conversation"] = conversation
            Session.objects.filter(pk=session.pk).update(**changes)
        return session
    if current is not None:
        [session] = current
    else:
        session = selectors.session_active(
            workspace=workspace, conversation=conversation, since=session_active_since(now)
        )
    if session is not None:
        if _stale(session.last_active_at):
            Session.objects.filter(pk=session.pk).update(last_active_at=now)
        return session
    return Session.objects.create(
        workspace=workspace,
        external_id=new_id("sess"),
        user_id=user_id,
        conversation=conversation,
    )


def _row(
    *,
    workspace: Workspace,
    conversation: Conversation,
    session: Session | None,
    message: dict,
    message_id: str,
    created_at: dt.datetime,
    metadata: dict | None = None,
    **extra: Any,
) -> Message:
    # An upstream's answer or a tool's result may hold what PostgreSQL cannot (a NUL, a lone
    # surrogate): cleaned, never refused or dropped (a request's own text was refused at the door).
    message = storable(message)
    role = message.get("role", "user")
    name = str(message.get("name") or "")[:200]
    content = content_text(message.get("content"))
    return Message(
        id=message_id,
        workspace=workspace,
        conversation=conversation,
        session=session,
        user_id=conversation.user_id,
        role=role,
        name=name,
        content=content,
        raw=message,
        tool_calls=message.get("tool_calls") or None,
        metadata=metadata or {},
        token_count=count_message(message),
        created_at=created_at,
        search_text=message_search_text(
            role=role, name=name, content=content, created_at=created_at
        ),
        **extra,
    )


def ordered_ids(count: int) -> list[str]:
    """Ids that sort in creation order even within one millisecond."""
    return sorted(new_id("msg") for _ in range(count))


def messages_append(
    *,
    workspace: Workspace,
    conversation: Conversation,
    session: Session | None,
    messages: list[dict],
    ids: list[str] | None = None,
    at: dt.datetime | None = None,
    **extra: Any,
) -> list[Message]:
    """Store a turn's messages as they arrived (embedded later, in the background); `ids`:
    theirs, chosen by the caller (one that may store them again after a doubtful commit);
    `at`: when the first was said (default now; the others a microsecond apart), for messages
    that belong before what was stored since (an agent run's, decided after a later turn)."""
    now = at or timezone.now()
    ids = ids or ordered_ids(len(messages))
    rows = [
        _row(
            workspace=workspace,
            conversation=conversation,
            session=session,
            message=message,
            message_id=ids[i],
            created_at=now + dt.timedelta(microseconds=i),
            **extra,
        )
        for i, message in enumerate(messages)
    ]
    insert(rows)
    if _stale(conversation.updated_at):
        Conversation.objects.filter(pk=conversation.pk).update(updated_at=now)
    _title_later(conversation, rows)
    return rows


def _title_later(conversation: Conversation, rows: list[Message]) -> None:
    """An untitled conversation that now has a user message gets a title in the background:
    one task at a time (config.coalesce), which reads the messages after it starts — every turn
    of a lag sent its own, and all but the first found the title written."""
    if conversation.title or not any(row.role == Message.Role.USER for row in rows):
        return
    from config.coalesce import send_once
    from memory.background.titles import title_conversation

    transaction.on_commit(
        lambda: send_once(
            title_conversation,
            conversation.pk,
            unit=conversation.pk,
            then="the next turn asks again",
        )
    )


def _untitle_for_older(conversation: Conversation, rows: list[Message]) -> None:
    """Imported user messages older than the conversation's first one: its title, made from
    that first one (memory.background.titles), is made again from the earliest. A history
    imported in pieces, newest first, kept the title of the first piece imported. A title that
    is not one made from the conversation's first messages (an operator's) is kept."""
    dated = [r.created_at for r in rows if r.role == Message.Role.USER and r.content.strip()]
    title = Conversation.objects.filter(pk=conversation.pk).values_list("title", flat=True)[0]
    if not dated or not title:
        return  # nothing to title from, or untitled still: _title_later
    firsts = list(
        Message.objects.filter(conversation=conversation, role=Message.Role.USER)
        .exclude(content="")
        .order_by("created_at", "id")
        .values_list("content", "created_at")[:5]  # what the title is made from
    )
    if not firsts or min(dated) >= firsts[0][1]:
        return
    if title not in {title_from(content) for content, _ in firsts}:
        return  # typed by an operator (or a forgotten fact's words left out): kept
    Conversation.objects.filter(pk=conversation.pk, title=title).update(title="")
    conversation.title = ""  # _title_later asks for it again


@transaction.atomic
def conversation_import(
    *,
    workspace: Workspace,
    external_id: str,
    user_id: str,
    messages: list[dict],
    idempotency_key: str = "",
) -> tuple[Conversation, list[Message]]:
    """Messages imported into a conversation (found as conversation_get_or_create finds it,
    else created), under the user's lock: an erasure of the user runs wholly before or after
    (memory.services.locks.user_lock).

    `idempotency_key` (the request's Idempotency-Key) names the batch: an import under a key
    the conversation already stored returns that import's messages (those still stored) and
    stores nothing (one whose messages were all deleted since imports again). A client
    retries an import whose answer it never got (a 503 after a commit whose acknowledgement
    was lost with the database's connection, a web process killed after the commit, a
    timeout) — the OpenAI SDKs retry a 503 by themselves —, and without a key that retry
    stored every message a second time, their extraction run again. Two imports under one
    key at once take turns (a lock of the key, held to the commit)."""
    user_lock(workspace_id=workspace.id, user_id=user_id)
    conversation, _ = conversation_get_or_create(
        workspace=workspace, external_id=external_id, user_id=user_id
    )
    if idempotency_key:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                [f"import:{conversation.pk}:{idempotency_key}"],
            )
        stored = list(
            Message.objects.filter(conversation=conversation, import_key=idempotency_key).order_by(
                "id"  # ordered_ids: the order imported
            )
        )
        if stored:
            return conversation, stored
    return conversation, messages_import(
        workspace=workspace,
        conversation=conversation,
        messages=messages,
        import_key=idempotency_key,
    )


@transaction.atomic
def messages_import(
    *,
    workspace: Workspace,
    conversation: Conversation,
    messages: list[dict],
    import_key: str = "",
) -> list[Message]:
    """Bulk history: each item {role, content, name?, created_at?, metadata?} (validated);
    `import_key` marks the rows (conversation_import)."""
    from memory.services.processing import extraction_enqueue

    now = timezone.now()
    ids = ordered_ids(len(messages))
    rows = []
    for i, item in enumerate(messages):
        message = {"role": item["role"], "content": item.get("content")}
        if item.get("name"):
            message["name"] = item["name"]
        for key in ("tool_calls", "tool_call_id"):
            if item.get(key):
                message[key] = item[key]
        rows.append(
            _row(
                workspace=workspace,
                conversation=conversation,
                session=None,
                message=message,
                message_id=ids[i],
                created_at=item.get("created_at") or now + dt.timedelta(microseconds=i),
                metadata=item.get("metadata") or {},
                import_key=import_key,
            )
        )
    _untitle_for_older(conversation, rows)
    Message.objects.bulk_create(rows, batch_size=500)
    Conversation.objects.filter(pk=conversation.pk).update(updated_at=now)
    _title_later(conversation, rows)
    extraction_enqueue(workspace=workspace, conversation=conversation)
    return rows
