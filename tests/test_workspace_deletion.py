"""Deleting a workspace: every row of it goes (whatever model holds it), none of another
workspace's, nothing is loaded row by row, and an interrupted deletion goes on when called
again."""

from __future__ import annotations

import time

import pytest
from django.apps import apps
from django.contrib.auth.models import User
from django.db import connection, models
from django.db.models import Q
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from accounts.models import ApiKey, Workspace
from tests.factories import make_workspace, paused_tool_run

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
    from completions.models import ModelAlias, ProviderCredential, UsageErasure, UsageRecord
    from memory.models import (
        Chunk,
        Collection,
        Document,
        MemorySuppression,
        Message,
        MessageTokens,
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
    MessageTokens.objects.create(message=source, packed=b"\x01\x00" + bytes(48))
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
    paused_tool_run(workspace, agent_name="support", model="fast")  # with its approval


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


def test_nothing_of_the_workspace_survives_and_nothing_of_another_goes(
    admin_client, two, monkeypatch, django_capture_on_commit_callbacks
):
    """The admin marks it and sends its deletion to a worker (its request used to delete every
    row itself: minutes for a big workspace); the worker's run leaves nothing of it."""
    from accounts import services

    doomed, kept = two
    owned = workspace_lookups()
    missing = [m._meta.label for m, paths in owned.items() if not rows_of(m, paths, doomed.id)]
    assert not missing, f"no row of {missing} in populate(): add one (and check it is deleted)"
    before = {m: rows_of(m, paths, kept.id) for m, paths in owned.items()}
    sent: list[str] = []
    monkeypatch.setattr(services, "_send_deletion", sent.append)

    url = reverse("admin:accounts_workspace_delete", args=[doomed.pk])
    confirm = admin_client.get(url)
    assert confirm.status_code == 200 and b"2 messages" in confirm.content  # counts, not rows
    with django_capture_on_commit_callbacks(execute=True):
        assert admin_client.post(url, {"post": "yes"}, follow=True).status_code == 200
    assert sent == [doomed.pk]
    assert not ApiKey.objects.filter(workspace_id=doomed.pk).exists()  # its keys at once
    listing = admin_client.get(reverse("admin:accounts_workspace_changelist")).content.decode()
    assert "being deleted" in listing

    assert services.workspace_delete_run(workspace_id=doomed.pk)  # the worker's task
    assert not Workspace.objects.filter(pk=doomed.pk).exists()
    left = {m._meta.label: n for m, paths in owned.items() if (n := rows_of(m, paths, doomed.id))}
    assert not left
    assert {m: rows_of(m, paths, kept.id) for m, paths in owned.items()} == before
    assert not services.workspace_delete_run(workspace_id=doomed.pk)  # run twice: nothing to do


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


# --- DELETE /v1/workspaces/{id} ---------------------------------------------------------------


def wait_until_gone(workspace_id: str) -> None:
    """The worker's run, done (a bound, not a timing: it takes well under a second here)."""
    for _ in range(600):
        if not Workspace.objects.filter(pk=workspace_id).exists():
            return
        time.sleep(0.1)
    raise AssertionError(f"workspace {workspace_id} still present")


def test_delete_answers_202_refuses_its_keys_at_once_and_a_worker_deletes_the_rest(
    engram_server, operator_http, http, owner, outsider, celery_worker
):
    doomed, kept = owner[0], outsider[0]
    populate(doomed)
    populate(kept)
    owned = workspace_lookups()
    before = {m: rows_of(m, paths, kept.id) for m, paths in owned.items()}
    assert http.get("/v1/memories", params={"user_id": "alice"}).status_code == 200  # cached

    response = operator_http.delete(f"/v1/workspaces/{doomed.id}")

    assert response.status_code == 202, response.text
    body = response.json()
    assert body["id"] == doomed.id and body["deleted"] is True and body["deleted_at"] > 0
    refused = http.get("/v1/memories", params={"user_id": "alice"})
    assert refused.status_code == 401  # the key was cached: voided on every process
    wait_until_gone(doomed.id)
    left = {m._meta.label: n for m, paths in owned.items() if (n := rows_of(m, paths, doomed.id))}
    assert not left
    assert {m: rows_of(m, paths, kept.id) for m, paths in owned.items()} == before
    gone = operator_http.delete(f"/v1/workspaces/{doomed.id}")
    assert gone.status_code == 404 and gone.json()["error"]["type"] == "not_found_error"


def test_a_workspace_being_deleted_is_hidden_gets_no_key_and_delete_again_is_202(
    engram_server, operator_http, owner, monkeypatch
):
    """No worker here: the workspace stays marked, as while a big one is being deleted."""
    from accounts import services

    monkeypatch.setattr(services, "_send_deletion", lambda workspace_id: None)
    doomed = owner[0]
    first = operator_http.delete(f"/v1/workspaces/{doomed.id}").json()

    again = operator_http.delete(f"/v1/workspaces/{doomed.id}")
    assert again.status_code == 202 and again.json()["deleted_at"] == first["deleted_at"]
    assert operator_http.get(f"/v1/workspaces/{doomed.id}").status_code == 404
    listed = operator_http.get("/v1/workspaces").json()["data"]
    assert doomed.id not in {w["id"] for w in listed}
    assert operator_http.patch(f"/v1/workspaces/{doomed.id}", json={"name": "x"}).status_code == 404
    key = operator_http.post(f"/v1/workspaces/{doomed.id}/api_keys", json={"name": "late"})
    assert key.status_code == 404
    assert not ApiKey.objects.filter(workspace_id=doomed.id).exists()


def test_delete_needs_the_operator_key_and_an_existing_workspace(
    engram_server, operator_http, http, owner, outsider
):
    own = http.delete(f"/v1/workspaces/{owner[0].id}")
    assert own.status_code == 403 and own.json()["error"]["type"] == "permission_error"
    other = http.delete(f"/v1/workspaces/{outsider[0].id}")
    assert other.status_code == 403
    missing = operator_http.delete("/v1/workspaces/ws_nope")
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "not_found_error"
    assert Workspace.objects.filter(pk__in=[owner[0].id, outsider[0].id]).count() == 2


def test_a_deletion_whose_task_was_lost_is_sent_again_by_the_sweep(
    engram_server, operator_http, owner, outsider, settings, monkeypatch, celery_worker
):
    """The database, not Redis, says what is owed: a send that failed (Redis down) leaves the
    workspace marked, and the beat's sweep sends its deletion again once it is old."""
    from kombu.exceptions import OperationalError as BrokerError

    from accounts import services
    from accounts.tasks import workspace_delete_task
    from completions.sweep import sweep_jobs

    def down(*args, **kwargs):
        raise BrokerError("Redis down")

    doomed, kept = owner[0], outsider[0]
    populate(doomed)
    monkeypatch.setattr(workspace_delete_task, "delay", down)
    assert operator_http.delete(f"/v1/workspaces/{doomed.id}").status_code == 202
    monkeypatch.undo()
    assert Workspace.objects.get(pk=doomed.id).deleted_at is not None

    assert services.workspace_deletions_sweep() == 0  # sent just now: not yet owed again
    settings.ENGRAM_WORKSPACE_DELETION_RESEND_SECONDS = 0
    sweep_jobs()  # Celery beat's tick

    wait_until_gone(doomed.id)
    assert not ApiKey.objects.filter(workspace_id=doomed.id).exists()
    assert Workspace.objects.filter(pk=kept.id).exists()
    assert services.workspace_deletions_sweep() == 0


def test_a_deleted_workspace_leaves_no_admin_log_entry_of_its_rows(two, django_user_model):
    """The admin's history kept each edited row's str(): a memory's text outlived its workspace."""
    from django.contrib.admin.models import CHANGE, LogEntry

    from accounts.services import workspace_delete
    from memory.models import Memory

    doomed, kept = two
    user = django_user_model.objects.create_superuser("root", "root@example.com", "pw")
    for memory in Memory.objects.all():
        LogEntry.objects.log_actions(user.pk, [memory], CHANGE, single_object=True)
    assert LogEntry.objects.filter(object_repr="Alice cycles.").count() == 2

    workspace_delete(workspace=doomed)

    entries = LogEntry.objects.filter(object_repr="Alice cycles.")
    assert [e.object_id for e in entries] == [Memory.objects.get(workspace=kept).pk]


def test_make_run_makes_a_new_demo_workspace_when_the_old_one_is_being_deleted(
    db, tmp_path, monkeypatch
):
    """`make run`'s ensuredemo took the first workspace named "demo": one being deleted, which
    gets no key (NotFound), stopped the start."""
    from django.core.management import call_command

    from accounts import services
    from accounts.management.commands import ensuredemo

    monkeypatch.setattr(ensuredemo, "data_dir", lambda: tmp_path)
    monkeypatch.setattr(services, "_send_deletion", lambda workspace_id: None)
    old, _ = make_workspace("demo")
    services.workspace_delete_begin(workspace=old)

    call_command("ensuredemo")

    fresh = Workspace.objects.get(name="demo", deleted_at=None)
    assert fresh.pk != old.pk and ApiKey.objects.filter(workspace=fresh).exists()


def test_a_workspace_being_deleted_gets_no_token_issuer(admin_client, db, monkeypatch):
    """Its issuers went with its keys; one added in the admin meanwhile let its end users'
    tokens in until the worker's last step."""
    from accounts import services
    from accounts.endusers.services import issuer_create
    from config.common.errors import NotFound

    monkeypatch.setattr(services, "_send_deletion", lambda workspace_id: None)
    doomed, _ = make_workspace("doomed")
    services.workspace_delete_begin(workspace=doomed)
    with pytest.raises(NotFound):
        issuer_create(
            workspace=doomed,
            issuer="https://acme.example/",
            audiences=["app"],
            jwks_url="https://acme.example/jwks.json",
            algorithms=["RS256"],
        )
    form = admin_client.get(reverse("admin:accounts_issuer_add")).content.decode()
    assert doomed.pk not in form


@pytest.mark.parametrize("bad", ["%00", "x" * 201, "%FF%FE", "%2E%2E", "a%20b", "%27%20OR%201"])
def test_delete_with_a_hostile_id_is_a_4xx_envelope(engram_server, operator_http, owner, bad):
    response = operator_http.delete(f"/v1/workspaces/{bad}")
    assert 400 <= response.status_code < 500
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    assert Workspace.objects.filter(pk=owner[0].pk, deleted_at=None).exists()


@pytest.mark.parametrize(
    "model",
    [
        "accounts_apikey",
        "accounts_issuer",
        "limits_limit",
        "limits_creditunit",
        "completions_providercredential",
        "completions_modelalias",
        "completions_agent",
        "completions_tool",
        "memory_memory",
        "memory_conversation",
        "memory_session",
        "memory_collection",
    ],
)
def test_the_admins_add_forms_offer_no_workspace_being_deleted(admin_client, db, model):
    """The key and issuer forms left one being deleted out; the others listed it, and a limit,
    an alias, a credential or an agent added there waited for the worker's last step."""
    doomed, _ = make_workspace("doomed")
    live, _ = make_workspace("live")
    Workspace.objects.filter(pk=doomed.pk).update(deleted_at=timezone.now())

    response = admin_client.post(reverse(f"admin:{model}_add"), {"workspace": doomed.pk})

    assert response.status_code == 200  # the form again: nothing added
    form = response.context["adminform"].form
    assert "workspace" in form.errors, form.errors
    assert list(form.fields["workspace"].queryset) == [live]


def test_a_collection_is_added_in_the_admin_to_the_workspace_chosen(admin_client, db):
    """Its add form had no workspace field: adding one failed."""
    from memory.models import Collection

    live, _ = make_workspace("live")
    form = {"workspace": live.pk, "name": "Handbook", "description": "", "metadata": "{}"}

    assert admin_client.post(reverse("admin:memory_collection_add"), form).status_code == 302
    assert Collection.objects.get(name="Handbook").workspace == live


def test_deleting_workspaces_from_the_list_says_their_rows_go_in_the_background(
    admin_client, two, monkeypatch
):
    """ "Delete selected workspaces" said "Successfully deleted 2 workspaces." and nothing more,
    while their rows stayed until a worker's run and the list said "being deleted"."""
    from accounts import services

    monkeypatch.setattr(services, "_send_deletion", lambda workspace_id: None)
    url = reverse("admin:accounts_workspace_changelist")
    selected = {"action": "delete_selected", "_selected_action": [w.pk for w in two]}
    assert admin_client.post(url, selected).status_code == 200  # the confirmation first
    done = admin_client.post(url, {**selected, "post": "yes"}, follow=True)
    said = [str(m) for m in done.context["messages"]]
    assert any("a worker deletes its rows in the background" in m for m in said), said
    assert Workspace.objects.filter(deleted_at__isnull=False).count() == 2
