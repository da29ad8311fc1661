"""A user's export is streamed (memory.export): the same document as the one built whole
before, read in keyset pages (a fixed number of queries however many conversations), sent as a
streaming response by both doors, cut short (never a 5xx) when it fails after its first byte."""

from __future__ import annotations

import json
import logging
from datetime import timedelta

import pytest
from django.utils import timezone

from completions.tools.models import Execution
from memory.models import Conversation, Memory, MemoryEvent, Message, Session
from tests.factories import runs_with_approvals


def whole_export(*, workspace, user_id: str) -> dict:
    """The export as it was built before it was streamed (memory.selectors.user_export at
    e577951), the document the stream must still be."""
    from completions.tools.apis import execution_body
    from memory.selectors import conversation_list, memory_list, memory_sources
    from memory.serializers import (
        conversation_body,
        event_body,
        memory_body,
        message_body,
        session_body,
    )

    memories = list(memory_list(workspace=workspace, user_id=user_id).order_by("id"))
    sources = memory_sources(workspace=workspace, memory_ids=[m.id for m in memories])
    owned = conversation_list(workspace=workspace, user_id=user_id)
    found = {c.id: c for c in owned.order_by("id")}
    conversations = {key: conversation_body(c) | {"messages": []} for key, c in found.items()}
    messages = (
        Message.objects.filter(workspace=workspace, conversation__in=owned.values("id"))
        .select_related("session")
        .defer("embedding", "context_embedding", "search", "search_text")
        .order_by("conversation_id", "created_at", "id")
        .iterator(chunk_size=2000)
    )
    for message in messages:
        if (body := conversations.get(message.conversation_id)) is not None:
            body["messages"].append(message_body(message, found[message.conversation_id]))
    runs = (
        Execution.objects.filter(workspace=workspace, user_id=user_id)
        .order_by("id")
        .prefetch_related("approvals")
    )
    return {
        "object": "user.export",
        "user_id": user_id,
        "memories": [memory_body(m, sources.get(m.id, [])) for m in memories],
        "executions": [
            execution_body(run)
            | {
                "messages": [
                    m for m in run.messages if m.get("role") in ("user", "assistant", "tool")
                ]
            }
            for run in runs
        ],
        "memory_events": [
            event_body(e) for e in MemoryEvent.objects.filter(workspace=workspace, user_id=user_id)
        ],
        "conversations": list(conversations.values()),
        "sessions": [
            session_body(s)
            for s in Session.objects.filter(workspace=workspace, user_id=user_id).order_by("id")
        ],
    }


def streamed(*, workspace, user_id: str, batch: int | None = None) -> bytes:
    from memory.export import user_export_parts

    sizes = {} if batch is None else {"batch": batch}
    return b"".join(user_export_parts(workspace=workspace, user_id=user_id, **sizes))


def fill(workspace, user_id: str, *, conversations: int, messages: int = 3, tag: str = "") -> None:
    """`conversations` conversations (the last one empty) of `messages` messages each, some at
    the same moment (their id breaks the tie), each with a session naming it; memories sourced
    from messages, their history, and agent runs with approvals; unicode and U+2028 in texts."""
    moment = timezone.now()
    said = []
    for i in reversed(range(conversations)):
        conversation = Conversation.objects.create(
            workspace=workspace,
            external_id=f"{tag}{user_id}-c{i}",
            user_id=user_id,
            title=f"Trip {i}",
            summary="Résumé\u2028 of it" if i % 2 else "",
            metadata={"i": i},
        )
        session = Session.objects.create(
            workspace=workspace,
            external_id=f"{tag}{user_id}-s{i}",
            user_id=user_id,
            conversation=conversation,
        )
        for n in range(messages if i < conversations - 1 else 0):
            said.append(
                Message.objects.create(
                    id=f"msg_{tag}{user_id}_{i:03}_{(n * 5) % messages:03}",
                    workspace=workspace,
                    conversation=conversation,
                    session=session if n % 2 else None,
                    user_id=user_id,
                    role="user" if n % 2 else "assistant",
                    content=f"Message {n} of {i}: Ålesund ☃",
                    raw={"role": "user", "content": [{"type": "text", "text": f"raw {n}"}]}
                    if n % 3 == 0
                    else {},
                    metadata={"n": n},
                    created_at=moment + timedelta(seconds=n // 2),  # pairs tied
                )
            )
    for i, message in enumerate(said[:5]):
        memory = Memory.objects.create(
            workspace=workspace, user_id=user_id, text=f"{tag}Fact {i}", metadata={"i": i}
        )
        memory.sources.set(said[i : i + 2])
        for event in ("ADD", "UPDATE"):
            MemoryEvent.objects.create(
                workspace=workspace,
                memory_id=memory.id,
                user_id=user_id,
                event=event,
                new_text=f"Fact {i}",
                source_message_ids=[message.id],
            )
    runs_with_approvals(
        workspace,
        user_id=user_id,
        n=3,
        expires_at=moment + timedelta(minutes=15),
        fields=lambda i: {
            "usage": {"prompt_tokens": 10 + i, "completion_tokens": 2},
            "messages": [
                {"role": "system", "content": "the agent's own"},
                {"role": "user", "content": f"Run {i}"},
                {"role": "assistant", "content": "Done"},
            ],
        },
    )


@pytest.fixture
def alice(owner, outsider):
    """alice with 4 conversations of 7 messages; bob beside her; another workspace's alice."""
    fill(owner[0], "alice", conversations=4, messages=7)
    fill(owner[0], "bob", conversations=2, tag="b")
    fill(outsider[0], "alice", conversations=2, tag="x")
    Session.objects.create(workspace=owner[0], external_id="alone", user_id="alice")
    return owner[0]


@pytest.mark.parametrize("batch", [1, 2, 3, 7, None])
def test_the_streamed_export_is_the_document_built_whole_before(alice, batch):
    """Pages of 1, 2, 3, 7 rows (a conversation's messages cut across pages, a page ending at
    a conversation's last message) and the default: the same keys, lists, order, bodies."""
    whole = whole_export(workspace=alice, user_id="alice")
    assert len(whole["conversations"]) == 4
    assert [len(c["messages"]) for c in whole["conversations"]] == [0, 7, 7, 7]  # time-ordered ids
    assert len(whole["memories"]) == 5 and len(whole["executions"]) == 3
    body = streamed(workspace=alice, user_id="alice", batch=batch)
    assert json.loads(body) == whole
    assert list(json.loads(body)) == list(whole)  # the keys in their order
    assert b"bob" not in body and b"xalice" not in body


def test_the_stream_is_the_api_encoding_of_the_document(alice):
    """Byte for byte what the API answered (DRF's JSONRenderer: UTF-8, compact, U+2028
    escaped)."""
    from rest_framework.renderers import JSONRenderer

    whole = JSONRenderer().render(whole_export(workspace=alice, user_id="alice"))
    assert streamed(workspace=alice, user_id="alice", batch=2) == whole


def test_the_export_reads_in_a_fixed_number_of_queries_however_many_conversations(owner, outsider):
    """3 or 30 conversations (each with its messages and a session naming it), the same
    queries: no query per conversation, per session (session_body read its conversation with
    a query of its own) or per run."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    fill(owner[0], "few", conversations=3)
    fill(owner[0], "many", conversations=30)
    fill(outsider[0], "many", conversations=3, tag="x")

    with CaptureQueriesContext(connection) as few:
        assert len(json.loads(streamed(workspace=owner[0], user_id="few"))["sessions"]) == 3
    with CaptureQueriesContext(connection) as many:
        body = json.loads(streamed(workspace=owner[0], user_id="many"))
    assert len(body["conversations"]) == len(body["sessions"]) == 30
    assert len(many.captured_queries) == len(few.captured_queries)
    assert body == whole_export(workspace=owner[0], user_id="many")


def test_the_export_reads_pages_not_everything_at_once(owner):
    """Pages of 10 rows: 30 conversations of 3 messages are read in a handful of queries
    each bounded by LIMIT 10 (the stream holds a page, not the user's rows)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    fill(owner[0], "many", conversations=30)
    with CaptureQueriesContext(connection) as read:
        streamed(workspace=owner[0], user_id="many", batch=10)
    sql = [q["sql"] for q in read.captured_queries]
    read_rows = [q for q in sql if "FROM" in q]  # not the snapshot's SET TRANSACTION
    paged = [q for q in read_rows if "memory_message" in q.split("FROM", 1)[1][:40]]
    assert paged and all("LIMIT 10" in q for q in paged)
    # 3 pages of 10 conversations, one with the empty one: 30, 30 and 27 messages, read in
    # pages of 10 (and a last, empty one after a full page): 4 + 4 + 3 queries.
    assert len(paged) == 11


def test_both_doors_answer_a_streaming_response(client, admin_client, owner, alice):
    from memory.admin_users import user_url

    api = client.get("/v1/users/alice/export", HTTP_AUTHORIZATION=f"Bearer {owner[1]}")
    admin = admin_client.get(user_url(alice.id, "alice") + "export/")
    whole = whole_export(workspace=alice, user_id="alice")
    for response in (api, admin):
        assert response.status_code == 200 and response.streaming
        assert response["Content-Type"] == "application/json"
        assert json.loads(b"".join(response)) == whole  # the test client's warning: async
    assert "attachment" in admin["Content-Disposition"]


def test_an_error_before_the_first_byte_is_the_envelope(http, alice, monkeypatch):
    """The first part is read in the view: a database away there is still a 503 envelope."""
    from django.db import OperationalError

    from memory import export

    def away(*args, **kwargs):
        raise OperationalError("the database went away")

    monkeypatch.setattr(export, "memory_sources", away)
    response = http.get("/v1/users/alice/export")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "database_unavailable"


def test_an_error_after_the_first_byte_cuts_the_document(http, alice, monkeypatch, caplog):
    """Over HTTP (the ASGI server): the status is out with the first part, so a failure later
    cannot be a 5xx; the body ends where it was, a document that does not parse, and the
    error is logged."""
    from memory import export

    monkeypatch.setattr(export, "_CHUNK_BYTES", 1)  # every part goes out on its own

    def broken(session):
        raise RuntimeError("a bug in the sessions' part")

    monkeypatch.setattr(export, "session_body", broken)
    with caplog.at_level(logging.ERROR, logger="engram.request"):
        response = http.get("/v1/users/alice/export")
    assert response.status_code == 200
    assert response.text.startswith('{"object":"user.export","user_id":"alice"')
    assert '"sessions":[' in response.text
    with pytest.raises(json.JSONDecodeError):
        json.loads(response.text)
    assert any("cut after" in r.getMessage() for r in caplog.records)


def test_the_export_stays_in_the_callers_scope(http, outsider_http, alice):
    """A workspace's key reads its own alice, never the other workspace's of the same id."""
    mine, theirs = http.get("/v1/users/alice/export"), outsider_http.get("/v1/users/alice/export")
    assert mine.json() == whole_export(workspace=alice, user_id="alice")
    assert "xalice-c0" in theirs.text and "alice-c0" not in theirs.text.replace("xalice", "")


def test_between_parts_the_connection_goes_back_to_the_pool(transactional_db):
    """A streamed body read slowly held its pooled connection from the first part to the
    last; it is given back after each part and taken again for the next one's queries."""
    from django.db import connection

    from accounts.models import Workspace
    from config.common.streaming import streaming_response

    held = []

    def parts():
        for n in range(3):
            held.append(connection.connection is not None)
            Workspace.objects.count()
            yield b"%d" % n

    response = streaming_response(parts(), content_type="application/json")
    assert b"".join(response) == b"012"  # the test client's warning: async
    assert held[1:] == [False, False], held  # the first: as the test left it


def test_the_export_is_one_snapshot(http, alice, monkeypatch):
    """Over HTTP, with a page of one row: writes committed between two pages of the export,
    after its first memory was read, are not in it, and nothing it held then is missing: a
    memory deleted, a message added, a conversation renamed. Each page was a transaction of
    its own: the deleted memory was missing from the memories and still in memory_events, the
    message was in its conversation."""
    import threading

    from memory import export

    before = whole_export(workspace=alice, user_id="alice")
    monkeypatch.setattr(export, "EXPORT_BATCH", 1)
    paused, resume = threading.Event(), threading.Event()
    read = export._pages

    def pages(queryset, keys, size):
        for page in read(queryset, keys, size):
            yield page
            if queryset.model is Memory and not paused.is_set():  # the first page read
                paused.set()
                assert resume.wait(10)

    monkeypatch.setattr(export, "_pages", pages)

    def write():
        assert paused.wait(10)
        last = Memory.objects.filter(workspace=alice, user_id="alice").order_by("-id").first()
        assert last is not None and last.id == before["memories"][-1]["id"]
        last.delete()
        conversation = Conversation.objects.get(workspace=alice, external_id="alice-c0")
        Message.objects.create(
            workspace=alice,
            conversation=conversation,
            user_id="alice",
            role="user",
            content="Written while the export ran.",
            created_at=timezone.now(),
        )
        Conversation.objects.filter(pk=conversation.pk).update(title="Renamed meanwhile")
        resume.set()
        written.set()

    written = threading.Event()
    writer = threading.Thread(target=write)
    writer.start()
    try:
        response = http.get("/v1/users/alice/export")
    finally:
        resume.set()
        writer.join()
    assert written.is_set()  # the writes were made, between two pages
    assert response.status_code == 200
    assert response.json() == before


def test_an_export_the_client_leaves_ends_its_transaction(http, alice, monkeypatch):
    """The client goes away mid-export (its snapshot open): the body is closed on the thread
    that read it, and its transaction ends there; no connection is left idle in one."""
    import threading
    import time

    from django.db import connection

    from memory import export

    monkeypatch.setattr(export, "EXPORT_BATCH", 1)
    monkeypatch.setattr(export, "_CHUNK_BYTES", 1)  # every part goes out on its own
    gone, read = threading.Event(), export._pages

    def pages(queryset, keys, size):
        for page in read(queryset, keys, size):
            yield page
            if queryset.model is MemoryEvent:
                gone.wait(10)

    monkeypatch.setattr(export, "_pages", pages)

    def in_transaction() -> int:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND state LIKE 'idle in transaction%%' AND pid <> pg_backend_pid()"
            )
            return cursor.fetchone()[0]

    with http.stream("GET", "/v1/users/alice/export") as response:
        assert response.status_code == 200
        parts = response.iter_bytes()  # held: a reader dropped closes the response
        next(parts)
        deadline = time.monotonic() + 10
        while not in_transaction() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert in_transaction() == 1  # the export's, paused between two pages
    gone.set()
    deadline = time.monotonic() + 10
    while in_transaction() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert in_transaction() == 0
