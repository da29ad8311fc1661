# ruff: noqa: F811  (the fixtures of tests/test_admin_pages.py, imported by name)
"""The admin at volume: a list page costs the same queries whatever the number of rows (no
query per row, no count of every row above a few thousand)."""

from __future__ import annotations

import copy

import pytest
from django.contrib import admin
from django.db import IntegrityError, connection, models, transaction
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from memory.models import Memory, Message
from tests.test_admin_pages import admin_client, world  # noqa: F401  (fixtures)

COPIES = 6


def _changelist(meta) -> str:
    return reverse(f"admin:{meta.app_label}_{meta.model_name}_changelist")


def _clone(obj: models.Model, i: int) -> models.Model | None:
    """A copy of `obj` as a new row (its unique text fields suffixed), or None when its model
    allows no second such row (one per workspace)."""
    twin = copy.copy(obj)
    twin._state = copy.copy(obj._state)
    twin._state.adding = True
    meta = obj._meta
    pk = meta.pk
    setattr(twin, pk.attname, pk.get_default() if pk.has_default() else None)
    unique = [f for f in meta.concrete_fields if f.unique and not f.primary_key]
    for constraint in meta.constraints:
        if isinstance(constraint, models.UniqueConstraint):
            unique += [meta.get_field(name) for name in constraint.fields]
    for field in unique:
        if isinstance(field, models.CharField):
            value = f"{getattr(obj, field.attname)}-{i}"
            setattr(twin, field.attname, value[-(field.max_length or 40) :])
    try:
        with transaction.atomic():
            twin.save(force_insert=True)
    except (IntegrityError, ValueError):
        return None
    return twin


def _queries(client, url: str) -> list[str]:
    with CaptureQueriesContext(connection) as captured:
        page = client.get(url)
    assert page.status_code == 200, url
    return [q["sql"] for q in captured.captured_queries]


@pytest.mark.parametrize("model", list(admin.site._registry), ids=lambda m: m._meta.label)
def test_a_list_page_costs_the_same_queries_for_many_rows_as_for_one(admin_client, world, model):
    url = _changelist(model._meta)
    few = _queries(admin_client, url)
    rows = list(model._default_manager.all())
    added = [_clone(obj, i) for obj in rows for i in range(COPIES)]
    if not any(added):
        pytest.skip(f"one {model._meta.label} a workspace at most")
    many = _queries(admin_client, url)
    assert len(many) == len(few), "\n".join(many)


def test_the_big_lists_count_nothing_above_the_threshold(admin_client, world, monkeypatch):
    """Above EXACT_UP_TO the page shows the planner's estimate: no COUNT of the table, and no
    second one for "N total"."""
    from config import admin_paging

    monkeypatch.setattr(admin_paging, "EXACT_UP_TO", 0)
    for model in (Message, Memory):
        sql = _queries(admin_client, _changelist(model._meta))
        assert not [s for s in sql if "COUNT(" in s.upper()], model._meta.label
    page = admin_client.get(_changelist(Message._meta))
    assert page.context["cl"].result_list  # the rows are listed


def test_the_end_user_list_counts_nobody_above_the_threshold(admin_client, world, monkeypatch):
    """It counted every (workspace, user) pair on each page: 0.4 s at 51,000 users. Above the
    threshold it shows a page and whether there is a next one, without a total."""
    from memory import admin_users

    monkeypatch.setattr(admin_users, "EXACT_UP_TO", 0)
    monkeypatch.setattr(admin_users, "PER_PAGE", 2)
    url = reverse("admin:memory_enduser_changelist")
    with CaptureQueriesContext(connection) as captured:
        first = admin_client.get(url)
    assert first.status_code == 200
    assert not [q for q in captured.captured_queries if "count(DISTINCT" in q["sql"]]
    assert b"page 1" in first.content and b"p=2" in first.content  # a next page, no total
    second = admin_client.get(url, {"p": "2"})
    listed = [u["user_id"] for p in (first, second) for u in p.context["page"]]
    assert sorted(listed) == ["alice", "alice", "bob"]  # the other workspace's alice too
    assert not second.context["page"].has_next and b"p=1" in second.content


@pytest.mark.parametrize(
    "model_label, column",
    [
        ("memory.Message", '"embedding"'),
        ("memory.Message", '"raw"'),
        ("memory.Memory", '"embedding"'),
        ("completions.Execution", '"messages"'),
        ("completions.Approval", '"messages"'),
    ],
)
def test_a_list_page_reads_no_embedding_or_request_body(admin_client, world, model_label, column):
    """A page of 100 messages decoded 200 vectors; a page of executions read every prompt."""
    from django.apps import apps

    from tests.factories import paused_tool_run

    # An execution waiting for its approval.
    paused_tool_run(world["workspace"], agent_name="tools-agent", model="gpt-4o-mini")
    model = apps.get_model(model_label)
    sql = _queries(admin_client, _changelist(model._meta))
    table = f'"{model._meta.db_table}"'
    listing = [s for s in sql if s.startswith("SELECT") and f"FROM {table}" in s]
    assert listing and not [s for s in listing if column in s]


@pytest.mark.parametrize(
    "model, column", [(Memory, "kind"), ("completions.UsageRecord", "provider")]
)
def test_a_list_filter_of_fixed_choices_reads_no_distinct_values(
    admin_client, world, model, column
):
    """Django's filter of a field without declared choices read its every distinct value on
    each page: a scan of the table."""
    from django.apps import apps

    model = apps.get_model(model) if isinstance(model, str) else model
    url = _changelist(model._meta)
    sql = _queries(admin_client, url)
    assert not [s for s in sql if f'DISTINCT "{model._meta.db_table}"."{column}"' in s]
    first = model._default_manager.first()
    value = getattr(first, column)
    filtered = admin_client.get(url, {column: value})
    assert filtered.status_code == 200
    listed = {obj.pk for obj in filtered.context["cl"].result_list}
    assert listed == set(
        model._default_manager.filter(**{column: value}).values_list("pk", flat=True)
    )


def test_a_document_page_shows_its_first_chunks_not_all(admin_client, world):
    """A long document's thousands of chunks made a page of thousands of rows."""
    from memory.knowledge.admin import CHUNKS_SHOWN
    from memory.models import Chunk

    document = world["document"]
    Chunk.objects.bulk_create(
        Chunk(
            workspace=document.workspace,
            collection=document.collection,
            document=document,
            chunk_index=i,
            text=f"Paragraph {i}.",
        )
        for i in range(2, CHUNKS_SHOWN + 50)
    )
    page = admin_client.get(reverse("admin:memory_document_change", args=[document.pk]))
    assert page.status_code == 200
    (chunks,) = page.context["inline_admin_formsets"]
    shown = [form.original.chunk_index for form in chunks]
    assert shown == list(range(CHUNKS_SHOWN))


def test_a_conversation_page_shows_its_first_messages_not_all(admin_client, world):
    """A long conversation's thousands of messages made a page of thousands of rows, each
    message read with its vectors."""
    from django.utils import timezone

    from memory.admin import INLINE_SHOWN
    from memory.models import Conversation

    conversation: Conversation = world["conversation"]
    Message.objects.bulk_create(
        Message(
            workspace=conversation.workspace,
            conversation=conversation,
            user_id="alice",
            role="user",
            content=f"Message {i}.",
            created_at=timezone.now(),
        )
        for i in range(INLINE_SHOWN + 20)
    )
    url = reverse("admin:memory_conversation_change", args=[conversation.pk])
    with CaptureQueriesContext(connection) as captured:
        page = admin_client.get(url)
    assert page.status_code == 200
    messages = page.context["inline_admin_formsets"][0]
    shown = [form.original.pk for form in messages]
    first = Message.objects.filter(conversation=conversation).order_by("created_at", "id")
    assert shown == list(first.values_list("pk", flat=True)[:INLINE_SHOWN])
    reads = [q["sql"] for q in captured.captured_queries if 'FROM "memory_message"' in q["sql"]]
    assert not [s for s in reads if '"embedding"' in s]
