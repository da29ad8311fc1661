# ruff: noqa: F811  (the fixtures of tests/test_admin_pages.py, imported by name)
"""The ids an operator types in the admin (a conversation's or a session's client id, a
session's user) follow the API's rule and stay unique in their workspace: a taken one was a
500, one outside the rule left a row the API could never name again."""

from __future__ import annotations

import pytest
from django.urls import reverse

from memory.models import Conversation, Session
from tests.test_admin_pages import _change_form_data, admin_client, world  # noqa: F401  (fixtures)


def _refused(page, field: str) -> str:
    assert page.status_code == 200, page.content[:300]
    errors = page.context["adminform"].form.errors
    return " ".join(errors.get(field, []) + errors.get("__all__", []))


@pytest.mark.parametrize("model", [Conversation, Session])
def test_renaming_to_an_id_its_workspace_has_is_refused_on_the_form(admin_client, world, model):
    workspace = world["workspace"]
    alices = model.objects.get(workspace=workspace, user_id="alice")
    bobs = model.objects.get(workspace=workspace, user_id="bob")
    url = reverse(f"admin:memory_{model._meta.model_name}_change", args=[alices.pk])
    data = _change_form_data(admin_client.get(url))
    # A client's id is unique per user: bob's id is alice's to take, her own other one's is not.
    saved = admin_client.post(url, {**data, "external_id": bobs.external_id})
    assert saved.status_code == 302, saved.context["adminform"].form.errors
    bobs = model.objects.create(workspace=workspace, user_id="alice", external_id="alices-other")
    page = admin_client.post(url, {**data, "external_id": bobs.external_id})
    assert "already exists" in _refused(page, "external_id")
    alices.refresh_from_db()
    assert alices.external_id != bobs.external_id
    # an id another workspace has is this workspace's to take
    theirs = model.objects.get(workspace=world["other"], user_id="alice")
    saved = admin_client.post(url, {**data, "external_id": theirs.external_id})
    assert saved.status_code == 302, saved.context["adminform"].form.errors
    alices.refresh_from_db()
    assert alices.external_id == theirs.external_id


@pytest.mark.parametrize("model", [Conversation, Session])
def test_a_client_id_outside_the_apis_rule_is_refused_on_the_form(admin_client, world, model):
    row = model.objects.get(workspace=world["workspace"], user_id="alice")
    url = reverse(f"admin:memory_{model._meta.model_name}_change", args=[row.pk])
    data = _change_form_data(admin_client.get(url))
    for bad in ("has space", "ünïcode", "session:has space"):
        assert "An id is" in _refused(
            admin_client.post(url, {**data, "external_id": bad}), "external_id"
        )
    if model is Conversation:  # a session's conversation is named by its session's id
        saved = admin_client.post(url, {**data, "external_id": "session:s-1"})
        assert saved.status_code == 302


def test_a_session_added_for_a_user_outside_the_apis_rule_is_refused(admin_client, world):
    form = {"workspace": world["workspace"].pk, "external_id": "s-new", "conversation": ""}
    page = admin_client.post(reverse("admin:memory_session_add"), {**form, "user_id": "a b"})
    assert "An id is" in _refused(page, "user_id")
    assert not Session.objects.filter(external_id="s-new").exists()
    for user_id, kept in (("", ""), ("auth0|7", "auth0:7")):
        external_id = f"s-new-{kept or 'none'}"
        saved = admin_client.post(
            reverse("admin:memory_session_add"),
            {**form, "external_id": external_id, "user_id": user_id},
        )
        assert saved.status_code == 302, saved.context["adminform"].form.errors
        assert Session.objects.get(external_id=external_id).user_id == kept


def test_an_end_users_export_names_its_file_whatever_the_id(admin_client, world):
    """A user id beyond Latin-1 (stored before the rule) MIME-encoded the whole header
    (`=?utf-8?q?attachment=3B...`), which no browser reads as a file name; a line break in
    the URL's id was a 500 (BadHeaderError)."""
    from memory.admin_users import user_url
    from memory.services import memory_create

    workspace = world["workspace"]
    for stored in ("中文", "a\r\nb"):  # somebody: a user with nothing stored is a 404
        memory_create(workspace=workspace, user_id=stored, text="Rows.", embedding=[0.0] * 384)
    for user_id, named in [
        ("中文", "filename*=utf-8''engram-{}-%E4%B8%AD%E6%96%87.json"),
        ("a\r\nb", "filename*=utf-8''engram-{}-a%0D_0Ab.json"),  # admin's quote() has \n
        ("alice", 'filename="engram-{}-alice.json"'),
    ]:
        response = admin_client.get(user_url(workspace.pk, user_id) + "export/")
        assert response.status_code == 200, user_id
        assert response["Content-Disposition"] == f"attachment; {named.format(workspace.pk)}"
        b"".join(response)  # read through (streamed)
