"""A user's export (memory.export): the same document as the one built whole before, read in
keyset pages (a fixed number of queries however many conversations) in one snapshot, spooled to
a file and sent from it as a streaming response by both doors; a slow client holds the file, not
a database connection nor the snapshot; the file is gone when the body is sent or the client
leaves; an error while reading, a full disk, is an envelope."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import threading
from datetime import timedelta

import pytest
from django.utils import timezone

from completions.tools.models import Execution
from completions.tools.selectors import approvals_as_they_read
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
        .prefetch_related(approvals_as_they_read())
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


def test_an_error_while_the_document_is_read_is_the_envelope(http, alice, monkeypatch, caplog):
    """Over HTTP (the ASGI server): the document is read through before the status is sent,
    so a failure anywhere in it (here in its last part, the sessions) is a 500 envelope, logged;
    it was a 200 whose body stopped short, a document that did not parse."""
    from memory import export

    monkeypatch.setattr(export, "_CHUNK_BYTES", 1)  # every part written on its own

    def broken(session):
        raise RuntimeError("a bug in the sessions' part")

    monkeypatch.setattr(export, "session_body", broken)
    with caplog.at_level(logging.ERROR):
        response = http.get("/v1/users/alice/export")
    assert response.status_code == 500
    assert response.json()["error"]["type"] == "server_error"
    assert "sessions" not in response.text
    assert any(
        "a bug in the sessions' part" in r.getMessage() or r.exc_info for r in caplog.records
    )
    assert spool_files() == []


def test_the_export_stays_in_the_callers_scope(http, outsider_http, alice):
    """A workspace's key reads its own alice, never the other workspace's of the same id."""
    mine, theirs = http.get("/v1/users/alice/export"), outsider_http.get("/v1/users/alice/export")
    assert mine.json() == whole_export(workspace=alice, user_id="alice")
    assert "xalice-c0" in theirs.text and "alice-c0" not in theirs.text.replace("xalice", "")


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


# --- a slow client: the export's connection, snapshot and spool file -----------------------


def spool_files() -> list[str]:
    """This process's open files in the spool folder (unnamed: open means on the disk)."""
    from config.embedded.servers import data_dir

    where = f"{data_dir() / 'spool'}/"
    found = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the listing's own descriptor, closed by now
            if (target := os.readlink(f"/proc/self/fd/{fd}")).startswith(where):
                found.append(target)
    return found


def in_transaction() -> int:
    """Sessions of the test database idle in an open transaction (a snapshot held)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND state LIKE 'idle in transaction%%' AND pid <> pg_backend_pid()"
        )
        return cursor.fetchone()[0]


def pool_in_use() -> int:
    """Connections of this process's pool handed out (the test's own among them)."""
    from django.db import connection

    stats = connection.pool.get_stats()
    return stats["pool_size"] - stats["pool_available"]


class StalledClient:
    """GET `path` on Engram's ASGI app (in a thread and event loop of its own), from a client
    that takes the status and the body's first block, then stops reading, as a slow download
    does (uvicorn's send waits while the client's socket is full): `stalled` is set then.
    `go(leave=False)` reads the rest; `go(leave=True)` disconnects instead."""

    def __init__(self, path: str, key: str):
        self.status = 0
        self.body = b""
        self.stalled, self._resumed, self._leave = threading.Event(), threading.Event(), False
        scope = self.scope(path, key)
        self._thread = threading.Thread(target=asyncio.run, args=(self._run(scope),))
        self._thread.start()
        assert self.stalled.wait(30), "no body"

    @staticmethod
    def scope(path: str, key: str) -> dict:
        return {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [(b"host", b"testserver"), (b"authorization", f"Bearer {key}".encode())],
            "client": ("127.0.0.1", 50000),
            "server": ("testserver", 80),
        }

    async def _run(self, scope) -> None:
        from config.asgi import application

        asked = False

        async def receive():
            nonlocal asked
            if not asked:
                asked = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await asyncio.to_thread(self._resumed.wait, 30)
            if self._leave:
                return {"type": "http.disconnect"}
            await asyncio.Event().wait()  # still there: until the app stops listening

        async def send(message):
            if message["type"] == "http.response.start":
                self.status = message["status"]
                return
            self.body += message.get("body", b"")
            if not self.stalled.is_set():
                self.stalled.set()
                await asyncio.to_thread(self._resumed.wait, 30)
                if self._leave:  # gone: nothing more is taken (the app is told by receive)
                    await asyncio.Event().wait()

        await application(scope, receive, send)

    def go(self, *, leave: bool) -> None:
        self._leave = leave
        self._resumed.set()
        self._thread.join(30)
        assert not self._thread.is_alive()


@pytest.fixture
def slow(alice, owner, monkeypatch):
    """alice's export for a client that stalls after its first bytes: the export written a
    part at a time, the body sent 16 bytes a block (it is ~20 KB, less than a block)."""
    from config.common import streaming
    from memory import export

    monkeypatch.setattr(export, "_CHUNK_BYTES", 1)
    monkeypatch.setattr(streaming, "BLOCK_BYTES", 16, raising=False)
    return lambda: StalledClient("/v1/users/alice/export", owner[1])


def test_a_stalled_download_holds_no_connection_nor_snapshot(slow, alice):
    """While a client has the first bytes and reads no more, the export's transaction is over
    and its connection is back in the pool: the export used to send its parts as it read
    them, in one transaction, so a stalled client kept a connection idle in its snapshot
    (keeping vacuum back) and out of the pool (20 a process) for as long as it liked."""
    before = pool_in_use()
    client = slow()
    try:
        assert client.status == 200
        assert client.body.startswith(b'{"object":"user.')
        assert in_transaction() == 0
        assert pool_in_use() == before
    finally:
        client.go(leave=False)
    assert json.loads(client.body) == whole_export(workspace=alice, user_id="alice")


def test_the_spool_file_is_removed_when_the_body_is_sent(slow):
    client = slow()
    try:
        assert len(spool_files()) == 1  # the export, sent from its file
    finally:
        client.go(leave=False)
    assert json.loads(client.body)["user_id"] == "alice"
    assert spool_files() == []


def test_the_spool_file_is_removed_when_the_client_leaves(slow):
    client = slow()
    try:
        assert len(spool_files()) == 1
    finally:
        client.go(leave=True)
    assert len(client.body) == 16  # the first block, no more
    assert spool_files() == []


@pytest.mark.parametrize("full", ["reserve", "write"])
def test_a_full_disk_is_a_503_and_harms_nothing(http, alice, monkeypatch, caplog, full):
    """A disk left with less than the reserve (which PostgreSQL's WAL in the same data folder
    needs), or a write that finds it full: a 503 envelope, nothing sent but it, the spool
    file gone, the transaction over, the connection back, a warning naming no user."""
    import errno
    import tempfile

    from config.common import streaming

    if full == "reserve":
        monkeypatch.setattr(streaming, "RESERVE_BYTES", 2**62)
    else:
        real = tempfile.TemporaryFile

        class Full:
            def __init__(self, **kwargs):
                self.file = real(**kwargs)

            def write(self, data):
                raise OSError(errno.ENOSPC, "No space left on device")

            def __getattr__(self, name):
                return getattr(self.file, name)

        monkeypatch.setattr(streaming.tempfile, "TemporaryFile", Full)
    before = pool_in_use()
    with caplog.at_level(logging.WARNING, logger="engram.request"):
        response = http.get("/v1/users/alice/export")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "insufficient_storage"
    assert spool_files() == [] and in_transaction() == 0 and pool_in_use() == before
    [warning] = [r.getMessage() for r in caplog.records if r.name == "engram.request"]
    assert "spool" in warning and "alice" not in warning
    # and the next export, with room again, is whole
    monkeypatch.undo()
    assert http.get("/v1/users/alice/export").json() == whole_export(
        workspace=alice, user_id="alice"
    )


def test_the_spool_file_is_removed_when_the_client_leaves_before_the_first_byte(
    alice, owner, monkeypatch
):
    """The client leaves while the document is still being read: Django drops the response
    without closing it; its file goes with it (an unnamed file, closed when collected)."""
    import time

    from memory import export

    monkeypatch.setattr(export, "EXPORT_BATCH", 1)
    paused, resume, read = threading.Event(), threading.Event(), export._pages

    def pages(queryset, keys, size):
        for page in read(queryset, keys, size):
            yield page
            if queryset.model is Memory and not paused.is_set():
                paused.set()
                assert resume.wait(10)

    monkeypatch.setattr(export, "_pages", pages)
    gone = threading.Event()

    async def receive():
        if not gone.is_set():
            gone.set()
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.to_thread(paused.wait, 10)
        return {"type": "http.disconnect"}

    sent = []

    async def send(message):
        sent.append(message)

    from config.asgi import application

    scope = StalledClient.scope("/v1/users/alice/export", owner[1])
    asyncio.run(application(scope, receive, send))  # returns once the client is gone
    assert sent == []
    resume.set()  # the view reads on, into a file nobody will send
    deadline = time.monotonic() + 10
    while (spool_files() or in_transaction()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert spool_files() == [] and in_transaction() == 0


def test_a_spool_file_unreadable_after_the_first_byte_cuts_the_body(
    http, alice, monkeypatch, caplog
):
    """The status is out with the first block: a read error later ends the body short of its
    Content-Length (the client sees an incomplete body), logged; the file is closed."""
    import httpx

    from config.common import streaming

    monkeypatch.setattr(streaming, "BLOCK_BYTES", 16)
    real = streaming.spool

    class Failing:
        def __init__(self, file):
            self.file, self.reads = file, 0

        def read(self, size):
            self.reads += 1
            if self.reads > 1:
                raise OSError(5, "Input/output error")
            return self.file.read(size)

        def __getattr__(self, name):
            return getattr(self.file, name)

    monkeypatch.setattr(streaming, "spool", lambda parts: Failing(real(parts)))
    cut = pytest.raises(httpx.RemoteProtocolError)
    with caplog.at_level(logging.ERROR, logger="engram.request"), cut:
        http.get("/v1/users/alice/export")
    assert any("cut after 16 of" in r.getMessage() for r in caplog.records)
    assert spool_files() == []
