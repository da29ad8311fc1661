# ruff: noqa: F811  (the fixtures of tests/test_admin_pages.py, imported by name)
"""The admin's JSON fields (metadata, an issuer's audiences) take what the API takes: JSON that
PostgreSQL's jsonb can store, in the column's shape. Hostile input is an error on the form,
never a 500, and nothing is saved."""

from __future__ import annotations

import pytest
from django.urls import reverse

from accounts.endusers.models import Issuer
from memory.models import Collection, Conversation, Memory
from tests.test_admin_pages import _change_form_data, admin_client, world  # noqa: F401  (fixtures)

# Each of these made the admin answer 500: jsonb refuses the first five (the INSERT failed),
# and a memory's metadata that is not an object failed memory_create (dict([1, 2])).
UNSTORABLE = [
    '{"a": NaN}',
    '{"a": Infinity}',
    '{"a": 1e400}',
    '{"a": "\\u0000"}',
    '{"a": "\\ud800"}',
    '{"a": ' * 200 + "1" + "}" * 200,
]
NOT_AN_OBJECT = ["[1, 2]", '"text"', "5"]


def _form_error(page, field: str) -> str:
    assert page.status_code == 200, page.content[:300]
    return " ".join(page.context["adminform"].form.errors.get(field, []))


@pytest.mark.parametrize("metadata", UNSTORABLE + NOT_AN_OBJECT)
def test_a_memory_or_collection_with_metadata_jsonb_cannot_hold_is_refused_on_the_form(
    admin_client, world, metadata
):
    workspace = world["workspace"]
    before = (Memory.objects.count(), Collection.objects.count())
    memory = admin_client.post(
        reverse("admin:memory_memory_add"),
        {
            "workspace": workspace.pk,
            "user_id": "zed",
            "text": "Zed likes forms.",
            "kind": "fact",
            "event_date": "",
            "metadata": metadata,
        },
    )
    assert _form_error(memory, "metadata")
    collection = admin_client.post(
        reverse("admin:memory_collection_add"),
        {"workspace": workspace.pk, "name": "c", "description": "", "metadata": metadata},
    )
    assert _form_error(collection, "metadata")
    assert (Memory.objects.count(), Collection.objects.count()) == before


@pytest.mark.parametrize("metadata", ["[1, 2]", "null", ""])
def test_metadata_edited_in_the_admin_stays_an_object(admin_client, world, metadata):
    """`[1, 2]` was saved on a conversation and answered by the API as its metadata; `null`
    was a 500 (the column has no NULL). Left empty, or null, it is no metadata: {}."""
    conversation = world["conversation"]
    url = reverse("admin:memory_conversation_change", args=[conversation.pk])
    data = _change_form_data(admin_client.get(url))
    page = admin_client.post(url, {**data, "metadata": metadata})
    conversation.refresh_from_db()
    if metadata == "[1, 2]":
        assert "JSON object" in _form_error(page, "metadata")
        assert conversation.metadata == {}
    else:
        assert page.status_code == 302, page.content[:300]
        assert conversation.metadata == {}
    memory = world["memory"]
    url = reverse("admin:memory_memory_change", args=[memory.pk])
    data = _change_form_data(admin_client.get(url))
    page = admin_client.post(url, {**data, "metadata": metadata})
    assert page.status_code in (200, 302), page.content[:300]
    memory.refresh_from_db()
    assert isinstance(memory.metadata, dict)


def test_an_issuers_audiences_jsonb_cannot_hold_are_refused_on_the_form(admin_client, world):
    form = {
        "workspace": world["workspace"].pk,
        "issuer": "https://json.example/",
        "jwks_url": "",
        "hs256_secret": "s" * 40,
        "algorithms": "[]",
        "user_claim": "sub",
        "required_scope": "",
        "leeway_seconds": "0",
    }
    for audiences in ('["\\u0000"]', '["\\ud800"]', "[" * 200 + "]" * 200):
        page = admin_client.post(
            reverse("admin:accounts_issuer_add"), {**form, "audiences": audiences}
        )
        assert _form_error(page, "audiences"), audiences
    assert not Issuer.objects.filter(issuer="https://json.example/").exists()
    saved = admin_client.post(reverse("admin:accounts_issuer_add"), {**form, "audiences": '["a"]'})
    assert saved.status_code == 302
    assert Issuer.objects.get(issuer="https://json.example/").audiences == ["a"]


def test_conversations_keep_their_metadata_when_the_form_is_saved_unchanged(admin_client, world):
    conversation: Conversation = world["conversation"]
    Conversation.objects.filter(pk=conversation.pk).update(metadata={"tag": "x", "n": [1, 2]})
    url = reverse("admin:memory_conversation_change", args=[conversation.pk])
    page = admin_client.post(url, _change_form_data(admin_client.get(url)))
    assert page.status_code == 302, page.content[:300]
    conversation.refresh_from_db()
    assert conversation.metadata == {"tag": "x", "n": [1, 2]}
