"""Everything stored about one user, as one JSON document: the API's GET /v1/users/{id}/export
and the admin's export both send `user_export_response`.

The document was built whole (every row, then every body, then the encoded text) before its
first byte went out: a user with 100,000 messages held hundreds of MB in a web process. Now each
table is read in keyset pages of `batch` rows (a fixed number of queries a page, none per row),
each page is encoded and written out before the next is read. The document is the one built
whole before: the same keys in the same order, each list in the same order, the same bodies.

All pages are read in one REPEATABLE READ, READ ONLY transaction (`_snapshot`): the document is
the user's data as of its first query. Read in a transaction per page, a memory deleted while
the memories were read was missing from them yet still in the memory_events that follow, and a
message added meanwhile was in one conversation's list and not in its summary's.

The pages were sent as they were read, so the export held its pooled connection and its
snapshot (which keeps the rows it may read from being vacuumed) for as long as its client took
to download it: a slow client, or a few, could starve the web process's pool. Now the document
is written to a spool file as fast as the database gives it (config.common.streaming), the
transaction ends and the connection goes back to the pool before the first byte is sent, and the
file is sent at the client's pace and removed when it is done or the client leaves. An error
while the document is read is the view's envelope (nothing was sent yet); a disk too full to
hold it is a 503.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from django.db import connection, transaction
from django.db.models import F, QuerySet
from django.db.models.fields.tuple_lookups import (  # type: ignore[import-untyped]
    Tuple,
    TupleGreaterThan,
)
from django.http import StreamingHttpResponse
from rest_framework.renderers import JSONRenderer

from accounts.models import Workspace
from completions.tools.models import Execution
from completions.tools.selectors import approvals_as_they_read
from config.common.streaming import spooled_response
from memory.models import Conversation, MemoryEvent, Message, Session
from memory.selectors import (
    memory_list,
    memory_sources,
    recalled_deleted,
    user_exists,
    user_not_found,
)
from memory.serializers import (
    conversation_body,
    event_body,
    memory_body,
    message_body,
    recalled_marked,
    session_body,
)

# Rows a query reads. A page of messages (the biggest rows: text and raw JSON) is a few MB of
# Python objects at most; the document's other parts are smaller.
EXPORT_BATCH = 500
# Parts are gathered up to this size before they are written: a conversation's head or a short
# page is not a write of its own.
_CHUNK_BYTES = 64 * 1024

# What a user's agent runs hold of theirs: their turns, the answers and the tools' results
# (the agent's instructions and what was recalled into the system turn are the workspace's).
_EXPORTED_ROLES = ("user", "assistant", "tool")

_renderer = JSONRenderer()  # the API's own encoding (UTF-8, compact): the bytes it answered


def _json(value: Any) -> bytes:
    return _renderer.render(value)


def user_export_response(*, workspace: Workspace, user_id: str) -> StreamingHttpResponse:
    """The export, read through into a spool file, then sent from it (config.common.streaming):
    an error while it is read is the view's envelope."""
    return spooled_response(
        user_export_parts(workspace=workspace, user_id=user_id), content_type="application/json"
    )


def user_export_parts(
    *, workspace: Workspace, user_id: str, batch: int | None = None
) -> Iterator[bytes]:
    """The document's bytes, in parts of about 64 KB, read as they are asked for, all from one
    snapshot. Read through, or closed on the thread that read it (its transaction's)."""
    document = _document(workspace=workspace, user_id=user_id, batch=batch or EXPORT_BATCH)
    return _snapshot(_chunked(document))


def _snapshot(parts: Iterator[bytes]) -> Iterator[bytes]:
    """`parts`, read in one REPEATABLE READ transaction: every query sees the database as the
    first one did. Inside a caller's transaction (a test's), that one's."""
    if connection.in_atomic_block:
        yield from parts
        return
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        yield from parts


def _document(*, workspace: Workspace, user_id: str, batch: int) -> Iterator[bytes]:
    scope = {"workspace": workspace, "user_id": user_id}
    # In the snapshot, before the first byte: a 404 as GET /v1/users/{id} answers (an empty
    # document was a 200, as if the user existed with nothing stored).
    if not user_exists(workspace=workspace, user_id=user_id):
        raise user_not_found(user_id)
    yield b'{"object":"user.export","user_id":' + _json(user_id)
    yield b',"memories":'
    yield from _list(_memories(workspace=workspace, user_id=user_id, batch=batch))
    yield b',"executions":'
    runs = Execution.objects.filter(**scope).prefetch_related(approvals_as_they_read())
    yield from _list(_json_pages(_pages(runs, ("id",), batch), _execution_body))
    yield b',"memory_events":'
    events = MemoryEvent.objects.filter(**scope)
    yield from _list(_json_pages(_pages(events, ("created_at", "id"), batch), event_body))
    yield b',"conversations":'
    yield from _conversations(workspace=workspace, user_id=user_id, batch=batch)
    yield b',"sessions":'
    # The conversation joined: session_body reads its external id (a query per session before).
    sessions = Session.objects.filter(**scope).select_related("conversation")
    yield from _list(_json_pages(_pages(sessions, ("id",), batch), session_body))
    yield b"}"


def _memories(*, workspace: Workspace, user_id: str, batch: int) -> Iterator[bytes]:
    # memory_list reads user_id "" as every user's: the filter keeps the export to this one.
    memories = memory_list(workspace=workspace, user_id=user_id).filter(user_id=user_id)
    for page in _pages(memories, ("id",), batch):
        sources = memory_sources(workspace=workspace, memory_ids=[m.id for m in page])
        yield _items([memory_body(m, sources.get(m.id, [])) for m in page])


def _execution_body(run: Execution) -> dict:
    from completions.tools.apis import execution_body  # its approvals: prefetched a page at once

    messages = [m for m in run.messages if m.get("role") in _EXPORTED_ROLES]
    return execution_body(run) | {"messages": messages}


def _conversations(*, workspace: Workspace, user_id: str, batch: int) -> Iterator[bytes]:
    """The user's conversations in id order, each with its messages in their order (created_at,
    then id): a page of conversations, then their messages a page at a time, in the same order
    by conversation, so each conversation's are read after its head is written. Messages of a
    conversation with 100,000 of them are pages like any others."""
    yield b"["
    first = True
    owned = Conversation.objects.filter(workspace=workspace, user_id=user_id)
    for conversations in _pages(owned, ("id",), batch):
        found = (
            Message.objects.filter(
                workspace=workspace, conversation_id__in=[c.id for c in conversations]
            )
            .select_related("session")
            # The vectors and the search columns, which no body shows, stay in the database.
            .defer("embedding", "context_embedding", "search", "search_text")
        )
        gone: set[str] = set()  # what the answers recalled and is deleted since
        messages = _rows(
            _recalled_read(
                _pages(found, ("conversation_id", "created_at", "id"), batch), workspace, gone
            )
        )
        message = next(messages, None)
        for conversation in conversations:
            head = _json(conversation_body(conversation) | {"messages": []})
            yield (b"" if first else b",") + head.removesuffix(b"]}")  # ..."messages":[
            first = False
            said: list[dict] = []
            empty = True
            while message is not None and message.conversation_id == conversation.id:
                said.append(message_body(message, conversation))
                message = next(messages, None)
                if (
                    len(said) == batch
                    or message is None
                    or message.conversation_id != conversation.id
                ):
                    yield (b"" if empty else b",") + _items(recalled_marked(said, gone))
                    said, empty = [], False
            yield b"]}"
        if message is not None:  # both lists are in the database's order of the same ids
            raise RuntimeError(f"message {message.id} of no conversation of this page")
    yield b"]"


# --- reading in pages, writing in parts ----------------------------------------------------


def _pages(queryset: QuerySet, keys: Sequence[str], size: int) -> Iterator[list[Any]]:
    """`queryset` in `keys` order (the last key unique), `size` rows a query: each query
    starts after the last row read (keyset), along the order rather than past an OFFSET."""
    queryset = queryset.order_by(*keys)
    page = list(queryset[:size])
    while page:
        yield page
        if len(page) < size:
            return
        last = [getattr(page[-1], key) for key in keys]
        page = list(queryset.filter(_after(keys, last))[:size])


def _after(keys: Sequence[str], values: Sequence[Any]) -> TupleGreaterThan:
    """(k1, k2, ...) > (v1, v2, ...) as SQL's row comparison, which PostgreSQL starts an index
    scan at (the messages' (conversation, created_at) index): the same condition spelt
    k1 > v1 OR (k1 = v1 AND ...) is a filter over every row before it (measured on a page of
    50,000 messages halfway through: 74 ms against 5.7 ms; a whole export, 17 s against 7.4)."""
    return TupleGreaterThan(Tuple(*(F(key) for key in keys)), tuple(values))


def _recalled_read(
    pages: Iterable[list[Message]], workspace: Workspace, gone: set[str]
) -> Iterator[list[Message]]:
    """`pages` of messages, each adding to `gone` what its answers recalled and is deleted
    since (a query or two a page, none a conversation)."""
    for page in pages:
        recalled = [{"recalled": m.recalled} for m in page if m.recalled]
        gone |= recalled_deleted(workspace=workspace, bodies=recalled)
        yield page


def _rows(pages: Iterable[list[Any]]) -> Iterator[Any]:
    for page in pages:
        yield from page


def _json_pages(pages: Iterable[list[Any]], body: Callable[[Any], dict]) -> Iterator[bytes]:
    for page in pages:
        yield _items([body(row) for row in page])


def _items(bodies: list[dict]) -> bytes:
    """The bodies' JSON, comma-separated, without the list's brackets."""
    return _json(bodies)[1:-1]


def _list(items: Iterable[bytes]) -> Iterator[bytes]:
    """A JSON list of parts each holding one or more comma-separated items."""
    yield b"["
    first = True
    for part in items:
        if part:
            yield part if first else b"," + part
            first = False
    yield b"]"


def _chunked(parts: Iterable[bytes]) -> Iterator[bytes]:
    buffer: list[bytes] = []
    size = 0
    for part in parts:
        buffer.append(part)
        size += len(part)
        if size >= _CHUNK_BYTES:
            yield b"".join(buffer)
            buffer, size = [], 0
    if buffer:
        yield b"".join(buffer)
