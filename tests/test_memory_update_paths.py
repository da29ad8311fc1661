"""memory_update's two paths write the same rows: an extractor's update inside its run's
transaction (statements written once, no savepoint of its own) and the ORM's (a person's
edit, or an update outside a transaction) — the memory, its sources, its history — and the
extractor's keeps unless_changed (MemoryChanged) and a deleted memory (Memory.DoesNotExist)
as they were, its run's transaction usable after either."""

from __future__ import annotations

import datetime as dt
import re

import numpy as np
import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from memory.models import Memory, MemoryEvent
from memory.services import conversation_get_or_create, memory_create, memory_update
from memory.services.conversations import messages_append
from memory.services.memories import MemoryChanged, Supersede, memories_supersede
from tests.factories import make_workspace

SKIP = {"id", "created_at", "updated_at", "search"}

VECTOR_TEXT = re.compile(r"\[-?[0-9.e]+,-?[0-9.e]+,")


def _messages(workspace, user_id: str, count: int) -> list[str]:
    conv, _ = conversation_get_or_create(workspace=workspace, external_id=user_id, user_id=user_id)
    texts = [f"I live in city {i}." for i in range(count)]
    messages = [{"role": "user", "content": text} for text in texts]
    stored = messages_append(
        workspace=workspace, conversation=conv, session=None, messages=messages
    )
    return [m.id for m in stored]


def _memory(workspace, user_id: str, sources: list[str]) -> Memory:
    memory = memory_create(
        workspace=workspace,
        user_id=user_id,
        text="User lives in Paris.",
        metadata={"subject": "User", "slot": "residence", "value": "Paris", "pinned": True},
        source_message_ids=sources,
        learned_on=dt.date(2026, 12, 1),
        actor="extractor:offline",
    )
    # as an extraction run reads it (store.UserMemories: the vector and the tsvector deferred)
    return Memory.objects.defer("search", "embedding").get(pk=memory.pk)


def _written(memory_id: str) -> tuple:
    row = Memory.objects.get(pk=memory_id)
    fields = {
        f.attname: getattr(row, f.attname)
        for f in Memory._meta.concrete_fields
        if f.attname not in SKIP
    }
    fields["embedding"] = np.asarray(fields["embedding"]).round(6).tolist()
    sources = sorted(row.sources.values_list("id", flat=True))
    events = [
        (e.event, e.old_text, e.new_text, e.actor, e.reason, e.changes, e.source_message_ids)
        for e in MemoryEvent.objects.filter(memory_id=memory_id).order_by("created_at", "id")
    ]
    return fields, sources, events


VECTOR = (np.ones(384) / np.sqrt(384)).tolist()
CHANGES = [
    # the offline extractor's supersede: text, slot value, a source, the fact's vector
    {
        "text": "User lives in Lisbon.",
        "metadata": {"subject": "User", "slot": "residence", "value": "Lisbon"},
        "event_date": None,
        "embedding": VECTOR,
        "reason": "residence changed from 'Paris' to 'Lisbon'",
        "sources": [1],
    },
    # the LLM extractor's update: a text, embedded here; two sources, one already linked
    {
        "text": "User lives in Lisbon now.",
        "reason": "the model found newer information",
        "sources": [0, 2],
    },
    # a kind and a date, no text: embedded again as it is
    {"kind": "event", "event_date": dt.date(2026, 11, 30), "sources": []},
]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("change", CHANGES)
def test_an_extractors_update_writes_the_rows_the_orm_path_writes(change):
    workspace, _ = make_workspace()
    written = {}
    sent = {}
    # the offline extractor's supersede is also written with its run's others (Later)
    together = "embedding" in change and "text" in change
    for path in ("orm", "written once", *(("together",) if together else ())):
        user_id = f"u-{path}"
        messages = _messages(workspace, user_id, 3)
        memory = _memory(workspace, user_id, messages[:1])
        kwargs = {k: v for k, v in change.items() if k != "sources"}
        kwargs["source_message_ids"] = [messages[i] for i in change["sources"]]

        def update(memory=memory, kwargs=kwargs):
            return memory_update(
                workspace=workspace,
                memory=memory,
                actor="extractor:offline",
                unless_changed=True,
                **kwargs,
            )

        with CaptureQueriesContext(connection) as queries:
            if path == "orm":  # outside a transaction: its own, through the ORM
                returned = update()
            elif path == "together":  # with other memories' (none here), in a run's
                item = Supersede(
                    memory=memory,
                    text=kwargs["text"],
                    event_date=kwargs["event_date"],
                    metadata=kwargs["metadata"],
                    source_message_ids=kwargs["source_message_ids"],
                    reason=kwargs["reason"],
                    embedding=kwargs["embedding"],
                )
                with transaction.atomic():
                    memories_supersede(
                        workspace=workspace, updates=[item], actor="extractor:offline"
                    )
                assert item.error is None
                returned = item.updated
            else:  # in a run's transaction
                with transaction.atomic():
                    returned = update()
        sent[path] = len(queries)
        assert returned is memory
        fields, sources, events = _written(memory.pk)
        assert returned.text == fields["text"] and returned.metadata == fields["metadata"]
        # the same rows but for the user and their messages' ids
        fields["user_id"] = "u"
        sources = [messages.index(s) for s in sources]
        events = [e[:-1] + ([messages.index(s) for s in e[-1]],) for e in events]
        written[path] = (fields, sources, events)
    assert written["written once"] == written["orm"]
    if together:
        assert written["together"] == written["orm"]
    fields, sources, events = written["orm"]
    # `metadata` replaces the client's keys (Engram's stay); without it, all stay
    assert fields["metadata"].get("pinned") is (None if "metadata" in change else True)
    assert fields["metadata"]["slot"] == "residence"
    assert [e[0] for e in events] == ["ADD", "UPDATE"]
    assert sent["written once"] < sent["orm"]  # the two paths are two


@pytest.mark.django_db
def test_an_extractors_update_of_a_memory_changed_since_it_was_read_leaves_it():
    workspace, _ = make_workspace()
    messages = _messages(workspace, "u1", 2)
    read = _memory(workspace, "u1", messages[:1])
    memory_update(  # a person's edit meanwhile
        workspace=workspace, memory=Memory.objects.get(pk=read.pk), metadata={"pinned": False}
    )
    with transaction.atomic():
        with pytest.raises(MemoryChanged):
            memory_update(
                workspace=workspace,
                memory=read,
                text="User lives in Lisbon.",
                source_message_ids=[messages[1]],
                actor="extractor:offline",
                embedding=VECTOR,
                unless_changed=True,
            )
        # the run's transaction goes on (it writes its other facts, then commits)
        assert Memory.objects.filter(pk=read.pk).exists()
    row = Memory.objects.get(pk=read.pk)
    assert row.text == "User lives in Paris." and row.metadata["pinned"] is False
    assert list(row.sources.values_list("id", flat=True)) == messages[:1]
    events = MemoryEvent.objects.filter(memory_id=read.pk).order_by("created_at", "id")
    assert [(e.event, e.actor) for e in events] == [("ADD", "extractor:offline"), ("UPDATE", "api")]

    # Without unless_changed: the row as it is now is updated (the person's metadata kept).
    with transaction.atomic():
        updated = memory_update(
            workspace=workspace,
            memory=read,
            text="User lives in Lisbon.",
            actor="extractor:llm",
            embedding=VECTOR,
        )
    assert updated.metadata["pinned"] is False
    assert Memory.objects.get(pk=read.pk).text == "User lives in Lisbon."


@pytest.mark.django_db
@pytest.mark.parametrize("unless_changed", [True, False])
def test_an_extractors_update_of_a_memory_deleted_since_it_was_read_writes_nothing(
    unless_changed,
):
    workspace, _ = make_workspace()
    messages = _messages(workspace, "u1", 2)
    read = _memory(workspace, "u1", messages[:1])
    Memory.objects.filter(pk=read.pk).delete()
    with transaction.atomic():
        with pytest.raises(Memory.DoesNotExist):
            memory_update(
                workspace=workspace,
                memory=read,
                text="User lives in Lisbon.",
                source_message_ids=[messages[1]],
                actor="extractor:offline",
                embedding=VECTOR,
                unless_changed=unless_changed,
            )
        assert not Memory.objects.filter(pk=read.pk).exists()
    assert not Memory.objects.filter(pk=read.pk).exists()
    assert not MemoryEvent.objects.filter(memory_id=read.pk, event="UPDATE").exists()
    assert not Memory.sources.through.objects.filter(memory_id=read.pk).exists()


@pytest.mark.django_db
def test_an_extractions_memory_writes_bind_their_vectors_instead_of_writing_them_as_text():
    """memories_create's insert and an extractor's update (config.common.rows) send the vector
    as a binary parameter, not as pgvector's 384-float text (formatted here, parsed by
    PostgreSQL): the statements stay short, and the stored vector is the one the ORM's text
    stores, float32 for float32."""
    from memory.services.memories import NewMemory, memories_create

    workspace, _ = make_workspace()
    messages = _messages(workspace, "u", 2)
    rng = np.random.default_rng(3)
    vectors = [v / np.linalg.norm(v) for v in rng.standard_normal((2, 384)).astype(np.float32)]
    new = NewMemory(
        text="User loves jazz.",
        kind="fact",
        event_date=None,
        metadata={},
        source_message_ids=messages[:1],
        learned_on=None,
        embedding=vectors[0].tolist(),
    )
    with transaction.atomic(), CaptureQueriesContext(connection) as queries:
        [created] = memories_create(
            workspace=workspace, user_id="u", new=[new], actor="extractor:offline"
        )
        read = Memory.objects.defer("search", "embedding").get(pk=created.pk)
        memory_update(
            workspace=workspace,
            memory=read,
            actor="extractor:offline",
            unless_changed=True,
            text="User loves bebop.",
            embedding=vectors[1],
            source_message_ids=messages[1:],
        )
    writes = [
        q["sql"]
        for q in queries.captured_queries
        if q["sql"].startswith(('INSERT INTO "memory_memory"', 'UPDATE "memory_memory"'))
    ]
    assert len(writes) == 2, [q["sql"][:80] for q in queries.captured_queries]
    for sql in writes:
        # Django's log writes bound parameters into the text (as bytea here): no vector as
        # pgvector's text ('[0.0123,...]') in it
        assert "::vector" in sql and not VECTOR_TEXT.search(sql), sql[:300]
    by_text = Memory.objects.create(
        workspace=workspace, user_id="u", text="t", embedding=vectors[1].tolist()
    )
    stored = Memory.objects.get(pk=created.pk).embedding
    assert np.array_equal(
        np.asarray(stored), np.asarray(Memory.objects.get(pk=by_text.pk).embedding)
    )
    assert np.array_equal(np.asarray(stored, dtype=np.float32), vectors[1])


@pytest.mark.django_db
def test_a_runs_supersedes_together_leave_a_memory_changed_or_deleted_since_it_was_read():
    """memories_supersede: what memory_update(unless_changed=True) did for each memory, in
    four statements for all: a memory a person edited since the run read it keeps the edit
    (MemoryChanged), one deleted stays deleted (Memory.DoesNotExist), the others are written
    (the vector bound in binary), and the run's transaction goes on."""
    workspace, _ = make_workspace()
    users = ["u-edited", "u-deleted", "u-a", "u-b"]
    messages = {user: _messages(workspace, user, 2) for user in users}
    read = {user: _memory(workspace, user, messages[user][:1]) for user in users}
    memory_update(  # a person's edit meanwhile
        workspace=workspace,
        memory=Memory.objects.get(pk=read["u-edited"].pk),
        metadata={"pinned": False},
    )
    Memory.objects.filter(pk=read["u-deleted"].pk).delete()
    items = [
        Supersede(
            memory=read[user],
            text=f"User lives in Lisbon ({user}).",
            event_date=None,
            metadata=read[user].metadata | {"value": "Lisbon"},
            source_message_ids=messages[user][1:],
            reason="residence changed from 'Paris' to 'Lisbon'",
            embedding=VECTOR,
        )
        for user in users
    ]
    with transaction.atomic():
        with CaptureQueriesContext(connection) as queries:
            memories_supersede(workspace=workspace, updates=items, actor="extractor:offline")
        assert Memory.objects.filter(pk=read["u-edited"].pk).exists()  # still usable
    # lock and read, which are gone or changed, the update, the sources, the history
    assert len(queries) == 5, [q["sql"][:80] for q in queries.captured_queries]
    update = [q["sql"] for q in queries if q["sql"].startswith("\nUPDATE memory_memory")]
    assert len(update) == 1 and "::vector" in update[0] and not VECTOR_TEXT.search(update[0])
    assert isinstance(items[0].error, MemoryChanged) and items[0].updated is None
    assert isinstance(items[1].error, Memory.DoesNotExist) and items[1].updated is None
    assert [i.error for i in items[2:]] == [None, None]
    row = Memory.objects.get(pk=read["u-edited"].pk)
    assert row.text == "User lives in Paris." and row.metadata["pinned"] is False
    assert list(row.sources.values_list("id", flat=True)) == messages["u-edited"][:1]
    assert not Memory.objects.filter(pk=read["u-deleted"].pk).exists()
    assert not Memory.sources.through.objects.filter(memory_id=read["u-deleted"].pk).exists()
    events = MemoryEvent.objects.filter(memory_id__in=[read[u].pk for u in users[:2]])
    assert sorted(events.values_list("event", "actor")) == [
        ("ADD", "extractor:offline"),
        ("ADD", "extractor:offline"),
        ("UPDATE", "api"),
    ]
    for user, item in zip(users[2:], items[2:], strict=True):
        row = Memory.objects.get(pk=read[user].pk)
        assert row.text == f"User lives in Lisbon ({user})." == item.updated.text
        assert row.metadata["value"] == "Lisbon" and row.metadata["pinned"] is True
        assert np.allclose(np.asarray(row.embedding), VECTOR, atol=1e-6)
        assert sorted(row.sources.values_list("id", flat=True)) == sorted(messages[user])
        (event,) = MemoryEvent.objects.filter(memory_id=row.pk, event="UPDATE")
        assert event.source_message_ids == messages[user][1:] and event.user_id == user
