"""Deleting a workspace: every row of it goes (whatever model holds it), none of another
workspace's, nothing is loaded row by row, and an interrupted deletion goes on when called
again."""

from __future__ import annotations

import datetime as dt

import pytest
from django.apps import apps
from django.contrib.auth.models import User
from django.db import connection, models
from django.db.models import Q
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from accounts.models import ApiKey, Workspace
from tests.factories import make_workspace

ZERO = [0.0] * 384


def workspace_lookups() -> dict[type[models.Model], list[str]]:
    """Every model whose rows belong to a workspace, found here on its own (not with the code
    under test): a foreign key to Workspace, or to a model that has one (a link table)."""
    found: dict[type[models.Model], list[str]] = {}
    every = apps.get_models(include_auto_created=True)
    for model in every:
        for field in model._meta.concrete_fields:
            if isinstance(field, models.ForeignKey) and field.related_model is Workspace:
                found.setdefault(model, []).append(field.name)
    for model in every:
        if model in found or model is Workspace:
            continue
        for field in model._meta.concrete_fields:
            if isinstance(field, models.ForeignKey) and field.related_model in found:
                for path in found[field.related_model]:  # type: ignore[index]
                    found.setdefault(model, []).append(f"{field.name}__{path}")
    return found


def rows_of(model: type[models.Model], paths: list[str], workspace_id: str) -> int:
    where = Q()
    for path in paths:
        where |= Q(**{f"{path}_id": workspace_id})
    return model._base_manager.filter(where).count()


def populate(workspace: Workspace) -> None:
    """One row (at least) in every model a workspace owns. A model added later fails
    test_nothing_of_the_workspace_survives until it gets a row here."""
    from accounts.endusers.models import Issuer
    from accounts.limits.models import CreditUnit, Limit
    from completions.agents.services import agent_create
    from completions.models import ModelAlias, ProviderCredential, UsageErasure, UsageRecord
    from completions.tools import services as tools
    from completions.tools.models import Approval
    from memory.models import (
        Chunk,
        Collection,
        Document,
        MemorySuppression,
        Message,
        ProcessingJob,
    )
    from memory.services import conversation_get_or_create, memory_create, messages_append
    from memory.services.conversations import session_resolve

    key = ApiKey.objects.filter(workspace=workspace).first()
    conversation, _ = conversation_get_or_create(
        workspace=workspace, external_id="trip", user_id="alice"
    )
    session = session_resolve(
        workspace=workspace, conversation=conversation, user_id="alice", external_id="s1"
    )
    messages_append(
        workspace=workspace,
        conversation=conversation,
        session=session,
        messages=[{"role": "user", "content": "I cycle."}, {"role": "assistant", "content": "Ok"}],
    )
    source = Message.objects.filter(conversation=conversation).first()
    memory_create(
        workspace=workspace,
        user_id="alice",
        text="Alice cycles.",
        source_message_ids=[source.id],
        embedding=ZERO,
    )
    ProcessingJob.objects.create(
        workspace=workspace,
        conversation=conversation,
        kind=ProcessingJob.Kind.EXTRACT,
        upto_message_id=source.id,
    )
    collection = Collection.objects.create(workspace=workspace, name="Handbook")
    document = Document.objects.create(
        workspace=workspace, collection=collection, title="Leave", content_hash="h"
    )
    Chunk.objects.create(
        workspace=workspace, collection=collection, document=document, chunk_index=0, text="x"
    )
    ProviderCredential.objects.create(workspace=workspace, provider="openai")
    ModelAlias.objects.create(workspace=workspace, alias="fast", target_model="gpt-4o-mini")
    Issuer.objects.create(
        workspace=workspace,
        issuer="https://acme.example/",
        audiences=["app"],
        jwks_url="https://acme.example/jwks.json",
        algorithms=["RS256"],
    )
    Limit.objects.create(workspace=workspace, subject="workspace", rpm=60)
    Limit.objects.create(workspace=workspace, subject="api_key", api_key=key, rpm=30)
    CreditUnit.objects.create(workspace=workspace, name="tokens", per_usd=1000)
    UsageRecord.objects.create(
        workspace=workspace, api_key_id=key.id, request_id="req_1", status_code=200, latency_ms=1
    )
    UsageErasure.objects.create(workspace=workspace, user_id="gone", due_at=timezone.now())
    MemorySuppression.objects.create(
        workspace=workspace,
        user_id="alice",
        memory_id="mem_forgotten",
        normalized="user keeps bees",
        embedding=[0.1] * 384,
        deleted_at=timezone.now(),
    )
    agent = agent_create(workspace=workspace, name="support", model="fast")
    values = {"name": "recall", "type": "builtin", "builtin": "memory_search"}
    tools.tool_create(workspace=workspace, agent_id=agent.id, values=values)
    execution = tools.execution_create(
        workspace=workspace,
        agent_id=agent.id,
        user_id="alice",
        request_id="req_2",
        model="agent:support",
        route_model="gpt-4o-mini",
        stream=False,
        body={},
        collection_ids=[],
    )
    Approval.objects.create(
        workspace=workspace,
        execution=execution,
        user_id="alice",
        expires_at=timezone.now() + dt.timedelta(minutes=5),
    )


@pytest.fixture
def two(db):
    doomed, _ = make_workspace("doomed")
    kept, _ = make_workspace("kept")
    populate(doomed)
    populate(kept)
    return doomed, kept


@pytest.fixture
def admin_client(client, db):
    client.force_login(User.objects.create_superuser("root", "root@example.com", "pw"))
    return client


def test_nothing_of_the_workspace_survives_and_nothing_of_another_goes(admin_client, two):
    doomed, kept = two
    owned = workspace_lookups()
    missing = [m._meta.label for m, paths in owned.items() if not rows_of(m, paths, doomed.id)]
    assert not missing, f"no row of {missing} in populate(): add one (and check it is deleted)"
    before = {m: rows_of(m, paths, kept.id) for m, paths in owned.items()}

    url = reverse("admin:accounts_workspace_delete", args=[doomed.pk])
    confirm = admin_client.get(url)
    assert confirm.status_code == 200 and b"2 messages" in confirm.content  # counts, not rows
    assert admin_client.post(url, {"post": "yes"}).status_code == 302

    assert not Workspace.objects.filter(pk=doomed.pk).exists()
    left = {m._meta.label: n for m, paths in owned.items() if (n := rows_of(m, paths, doomed.id))}
    assert not left
    assert {m: rows_of(m, paths, kept.id) for m, paths in owned.items()} == before


def test_the_deletion_loads_none_of_the_rows_and_deletes_in_batches(two, monkeypatch):
    """DELETE statements only (besides the lock on the workspace's row), a batch at a time:
    Django's cascade read every related row into the process first."""
    from accounts import deletion
    from accounts.services import workspace_delete
    from memory.models import Message

    doomed, kept = two
    conversation = Message.objects.filter(workspace=doomed).first().conversation
    for i in range(5):
        Message.objects.create(
            workspace=doomed,
            conversation=conversation,
            user_id="alice",
            role="user",
            content=f"m{i}",
            created_at=timezone.now(),
        )
    monkeypatch.setattr(deletion, "BATCH_ROWS", 2)
    with CaptureQueriesContext(connection) as queries:
        workspace_delete(workspace=doomed)
    statements = [q["sql"] for q in queries.captured_queries]
    reads = [
        s
        for s in statements
        if s.startswith("SELECT") and not ('"accounts_workspace"' in s and "FOR UPDATE" in s)
    ]
    assert not reads
    batches = [s for s in statements if s.startswith('DELETE FROM "memory_message"')]
    assert len(batches) >= 4  # 7 messages, 2 a batch (and the last, empty, check)
    assert not Message.objects.filter(workspace_id=doomed.id).exists()
    assert Message.objects.filter(workspace=kept).count() == 2


@pytest.mark.django_db(transaction=True)
def test_an_interrupted_deletion_has_closed_the_doors_and_goes_on_when_called_again(monkeypatch):
    """The keys go first, in their own transaction: a deletion cut short (a worker killed, a
    timeout) leaves a workspace nobody can use, and calling it again finishes it."""
    from accounts import deletion
    from accounts.selectors import api_key_authenticate
    from accounts.services import workspace_delete
    from memory.models import Memory, Message

    doomed, raw = make_workspace("doomed")
    populate(doomed)
    real = deletion._delete

    def cut(owned, workspace_id, batch):
        if owned.model is Message:
            raise RuntimeError("worker lost")
        return real(owned, workspace_id, batch)

    monkeypatch.setattr(deletion, "_delete", cut)
    with pytest.raises(RuntimeError):
        workspace_delete(workspace=doomed)
    assert Workspace.objects.filter(pk=doomed.pk).exists()
    assert api_key_authenticate(raw_key=raw) is None
    assert Message.objects.filter(workspace_id=doomed.id).exists()

    monkeypatch.setattr(deletion, "_delete", real)
    workspace_delete(workspace=doomed)
    assert not Workspace.objects.filter(pk=doomed.pk).exists()
    assert not Message.objects.filter(workspace_id=doomed.id).exists()
    assert not Memory.objects.filter(workspace_id=doomed.id).exists()
    workspace_delete(workspace=doomed)  # once more: nothing left to do
