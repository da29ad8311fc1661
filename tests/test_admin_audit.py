# ruff: noqa: F811  (the fixtures of tests/test_admin_pages.py, imported by name)
"""What an operator sees in the admin when a form is refused, an action does nothing, or the
operator may look at memories but not at end users."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from accounts.endusers.models import Issuer
from accounts.models import ApiKey
from completions.agents.models import Agent
from completions.agents.services import agent_create
from completions.tools import services as tools
from tests.test_admin_pages import _change_form_data, admin_client, world  # noqa: F401  (fixtures)


def _messages(response) -> list[str]:
    return [str(m) for m in response.wsgi_request._messages]


def _rename(client, url: str, field: str, value: str):
    data = _change_form_data(client.get(url))
    data[field] = value
    return client.post(url, data, follow=True)


def test_renaming_to_a_taken_name_is_refused_on_the_form(admin_client, world):
    """The workspace (a tool's agent) is read-only on a change form, so Django skipped the
    constraints naming it: an agent or a tool renamed to a taken name got the service's bare
    JSON 400, and an issuer got "changed successfully" while nothing was saved."""
    workspace = world["workspace"]
    taken = Issuer.objects.get(workspace=workspace)
    issuer = Issuer(workspace=workspace, issuer="https://b.example/", audiences=["b"])
    issuer.algorithms = ["HS256"]
    issuer.set_secret("s" * 40)
    issuer.save()
    agent = Agent.objects.get(workspace=workspace)
    other = agent_create(workspace=workspace, name="other", model="fast")
    builtin = {"type": "builtin", "builtin": "memory_search"}
    tools.tool_create(workspace=workspace, agent_id=agent.id, values={"name": "a", **builtin})
    tool = tools.tool_create(
        workspace=workspace, agent_id=agent.id, values={"name": "b", **builtin}
    )
    cases = [
        ("accounts_issuer", issuer, "issuer", taken.issuer),
        ("completions_agent", other, "name", agent.name),
        ("completions_tool", tool, "name", "a"),
    ]
    for page, row, field, value in cases:
        url = reverse(f"admin:{page}_change", args=[row.pk])
        answer = _rename(admin_client, url, field, value)
        assert answer.status_code == 200, page
        assert answer.redirect_chain == [], page  # the form again, not the list
        assert b"already exists" in answer.content, page
        assert not any("successfully" in m for m in _messages(answer)), page
        row.refresh_from_db()
        assert getattr(row, field) != value, page


def test_revoking_keys_that_were_revoked_already_says_so(admin_client, world):
    """The action said "Revoked at <now>" whatever it did: keys revoked last week were
    reported revoked just now."""
    key = world["key"]
    last_week = timezone.now() - timezone.timedelta(days=7)
    ApiKey.objects.filter(pk=key.pk).update(revoked_at=last_week)
    url = reverse("admin:accounts_apikey_changelist")
    post = {"action": "revoke", "_selected_action": [key.pk], "index": "0"}
    answer = admin_client.post(url, post, follow=True)
    assert _messages(answer) == ["The selected keys were already revoked."]
    key.refresh_from_db()
    assert key.revoked_at == last_week

    ApiKey.objects.filter(pk=key.pk).update(revoked_at=None)
    answer = admin_client.post(url, post, follow=True)
    assert _messages(answer)[0].startswith("Revoked 1 key at ")
    key.refresh_from_db()
    assert key.revoked_at is not None


@pytest.fixture
def memory_viewer(world):
    """A staff user who may view memories and nothing else."""
    viewer = User.objects.create_user("viewer", "viewer@example.com", "pw", is_staff=True)
    viewer.user_permissions.set(
        Permission.objects.filter(content_type__app_label="memory", codename="view_memory")
    )
    client = Client()
    client.force_login(viewer)
    return client


def test_the_end_user_pages_are_offered_only_to_those_who_may_open_them(
    memory_viewer,
    world,
    db,
):
    """The index listed "End users" to a staff user allowed to see memories alone: a link to a
    403."""
    index = memory_viewer.get(reverse("admin:index")).content.decode()
    assert "Memories" in index
    assert reverse("admin:memory_enduser_changelist") not in index
    assert memory_viewer.get(reverse("admin:memory_enduser_changelist")).status_code == 403


def test_erasing_an_end_user_is_offered_only_to_those_who_may(memory_viewer, world, db):
    """One who may view everything a user has but delete nothing was offered "Delete all their
    data": a link to a 403."""
    viewer = User.objects.get(username="viewer")
    viewer.user_permissions.set(
        Permission.objects.filter(
            content_type__app_label="memory",
            codename__in=["view_memory", "view_conversation", "view_message", "view_session"],
        )
    )
    index = memory_viewer.get(reverse("admin:index")).content.decode()
    assert reverse("admin:memory_enduser_changelist") in index
    page = memory_viewer.get(
        reverse("admin:memory_enduser_change", args=[world["workspace"].pk, "alice"])
    )
    assert page.status_code == 200
    delete_url = reverse("admin:memory_enduser_delete", args=[world["workspace"].pk, "alice"])
    assert delete_url not in page.content.decode()
    assert memory_viewer.get(delete_url).status_code == 403


@pytest.mark.parametrize(
    "path",
    [
        "/admin/memory/memory/mem_%00/change/",
        "/admin/accounts/apikey/key_%00/delete/",
        "/admin/memory/memory/?workspace__id__exact=ws_%00",
        "/admin/completions/usagerecord/?workspace__id__exact=ws_%00",
        "/admin/memory/users/ws_%00/alice/",
    ],
)
def test_a_nul_in_an_admin_url_is_a_400_not_a_500(admin_client, world, path):
    """PostgreSQL refuses a NUL in a query: a row's page or a list filter with one was a 500."""
    assert admin_client.get(path).status_code == 400


@pytest.mark.parametrize(
    ("path", "form"),
    [
        ("/admin/limits/limit/add/", {"scope": "workspace", "workspace": "ws_\x00"}),
        ("/admin/limits/creditunit/add/", {"workspace": "ws_\x00", "name": "credit"}),
        ("/admin/memory/session/add/", {"conversation": "conv_\x00"}),
        (
            "/admin/accounts/apikey/",
            {"action": "delete_selected", "_selected_action": "key_\x00", "index": "0"},
        ),
    ],
)
def test_a_nul_in_an_admin_form_is_a_400_not_a_500(admin_client, world, path, form):
    """A raw-id box (a limit's workspace, a session's conversation) with a NUL: the form shown
    again looked the row up, and PostgreSQL's refusal was a 500; so was a list action on a row
    id with one."""
    assert admin_client.post(path, form).status_code == 400


def test_a_provider_key_does_not_follow_its_base_url_to_another_host(admin_client, world):
    """The key is write-only on the page, but a blank key field kept it whatever the base URL:
    whoever could edit the credential pointed it at their own host and read the key from the
    next request's Authorization header (a tool's headers were already kept from this)."""
    from completions.models import ProviderCredential

    credential = ProviderCredential.objects.get(workspace=world["workspace"], provider="openai")
    credential.base_url = "https://api.openai.com/v1"
    credential.set_secret("sk-provider-secret-1234")
    credential.save()
    url = reverse("admin:completions_providercredential_change", args=[credential.pk])
    form = {"base_url": "https://collector.example/v1", "secret": ""}

    refused = admin_client.post(url, form)
    assert refused.status_code == 200
    assert "enter the key again" in str(refused.context["adminform"].form.errors)
    credential.refresh_from_db()
    assert credential.base_url == "https://api.openai.com/v1"

    same_host = admin_client.post(url, {"base_url": "https://api.openai.com/v2", "secret": ""})
    assert same_host.status_code == 302
    credential.refresh_from_db()
    assert credential.get_secret() == "sk-provider-secret-1234"

    rekeyed = admin_client.post(url, {**form, "secret": "sk-collector-key-5678"})
    assert rekeyed.status_code == 302
    credential.refresh_from_db()
    assert credential.base_url == "https://collector.example/v1"
    assert credential.get_secret() == "sk-collector-key-5678"
    page = admin_client.get(url).content.decode()
    assert "sk-collector-key-5678" not in page and "…5678" in page  # the hint only
