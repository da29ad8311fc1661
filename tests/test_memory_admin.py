"""Django admin for memories (search, edit, delete, history, source links) and conversations."""

from __future__ import annotations

import json
from urllib.parse import urlencode

import pytest
from django.contrib.auth.models import User
from django.urls import reverse

from memory.models import Memory, MemoryEvent
from memory.services import (
    conversation_get_or_create,
    memory_create,
    messages_append,
)
from tests.factories import make_workspace

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client):
    user = User.objects.create_superuser("root", "root@example.com", "pw")
    client.force_login(user)
    return client


@pytest.fixture
def memory():
    workspace, _ = make_workspace()
    conversation, _ = conversation_get_or_create(
        workspace=workspace, external_id="c1", user_id="alice"
    )
    [message] = messages_append(
        workspace=workspace,
        conversation=conversation,
        session=None,
        messages=[{"role": "user", "content": "I keep bees on my roof."}],
    )
    memory_create(workspace=workspace, user_id="bob", text="Bob sails.")
    return memory_create(
        workspace=workspace,
        user_id="alice",
        text="Alice keeps bees.",
        source_message_ids=[message.id],
        actor="extractor:offline",
    )


def test_admin_searches_by_user_and_shows_history_and_sources(admin_client, memory):
    listing = admin_client.get(reverse("admin:memory_memory_changelist"), {"q": "alice"})
    assert listing.status_code == 200
    assert b"Alice keeps bees." in listing.content and b"Bob sails." not in listing.content
    page = admin_client.get(reverse("admin:memory_memory_change", args=[memory.pk]))
    assert page.status_code == 200
    source = memory.sources.get()
    assert reverse("admin:memory_message_change", args=[source.pk]).encode() in page.content
    assert b"I keep bees on my roof." in page.content
    assert b"ADD" in page.content and b"extractor:offline" in page.content


def test_admin_edit_and_delete_leave_history(admin_client, memory):
    url = reverse("admin:memory_memory_change", args=[memory.pk])
    response = admin_client.post(
        url,
        {
            "text": "Alice keeps two hives.",
            "kind": "fact",
            "event_date": "",
            "metadata": "{}",
        },
    )
    assert response.status_code == 302, response.content[:2000]
    memory.refresh_from_db()
    assert memory.text == "Alice keeps two hives." and "two hives" in memory.search_text
    update = MemoryEvent.objects.get(memory_id=memory.id, event="UPDATE")
    assert update.actor == "admin" and update.old_text == "Alice keeps bees."

    delete = admin_client.post(
        reverse("admin:memory_memory_delete", args=[memory.pk]), {"post": "yes"}
    )
    assert delete.status_code == 302
    assert not Memory.objects.filter(pk=memory.pk).exists()
    assert MemoryEvent.objects.filter(memory_id=memory.id, event="DELETE", actor="admin").exists()


def test_admin_save_of_an_unchanged_memory_records_nothing(admin_client, memory):
    """Saving the form as it was shown recorded an UPDATE from the text to itself."""
    url = reverse("admin:memory_memory_change", args=[memory.pk])
    form = {
        "text": memory.text,
        "kind": memory.kind,
        "event_date": memory.event_date.isoformat() if memory.event_date else "",
        "metadata": json.dumps(memory.metadata),
    }
    assert admin_client.post(url, form).status_code == 302
    events = MemoryEvent.objects.filter(memory_id=memory.id)
    assert list(events.values_list("event", flat=True)) == ["ADD"]
    assert Memory.objects.get(pk=memory.pk).updated_at == memory.updated_at


def test_admin_adds_a_memory_under_the_apis_rules(admin_client, memory):
    """A user id the API cannot name could not be read, exported or erased there; a kind
    outside the five reached the API and the playground."""
    url = reverse("admin:memory_memory_add")
    form = {
        "workspace": memory.workspace_id,
        "user_id": "bad user <x>",
        "text": "Likes tea.",
        "kind": "bogus-kind",
        "event_date": "",
        "metadata": "{}",
    }
    refused = admin_client.post(url, form)
    assert refused.status_code == 200  # the form again, with its errors
    assert b"A user id is" in refused.content and b"bogus-kind is not one of" in refused.content
    assert not Memory.objects.filter(text="Likes tea.").exists()
    # a one-valued fact's value is a string, as the API takes it
    bad_value = admin_client.post(
        url, form | {"user_id": "carol", "kind": "fact", "metadata": '{"value": 5}'}
    )
    assert bad_value.status_code == 200 and b"metadata.value is Engram" in bad_value.content
    # the API's length cap (4,000 characters: a fact, not a document); the admin took 100,000
    too_long = admin_client.post(
        url, form | {"user_id": "carol", "kind": "fact", "text": "Likes tea. " * 9000}
    )
    assert too_long.status_code == 200 and b"at most 4000 characters" in too_long.content
    # text that shows nothing (zero-width spaces, a BOM), refused as the API refuses it
    invisible = admin_client.post(
        url, form | {"user_id": "carol", "kind": "fact", "text": "\u200b\u200b\ufeff"}
    )
    assert invisible.status_code == 200 and b"shows no character" in invisible.content
    assert not Memory.objects.filter(user_id="carol").exists()
    added = admin_client.post(url, form | {"user_id": "carol", "kind": "preference"})
    assert added.status_code == 302, added.content[:2000]
    assert Memory.objects.get(text="Likes tea.").kind == "preference"


def test_admin_pages_for_conversations_sessions_and_messages(admin_client, memory):
    source = memory.sources.get()
    for name in ("conversation", "session", "message", "memoryevent"):
        assert admin_client.get(reverse(f"admin:memory_{name}_changelist")).status_code == 200
    conversation = admin_client.get(
        reverse("admin:memory_conversation_change", args=[source.conversation_id])
    )
    assert conversation.status_code == 200 and b"I keep bees on my roof." in conversation.content
    message = admin_client.get(reverse("admin:memory_message_change", args=[source.pk]))
    assert message.status_code == 200 and b"Alice keeps bees." in message.content


def test_admin_deletes_a_conversation_with_the_memories_derived_from_it_alone(admin_client, memory):
    """A conversation deleted in the admin left its memories behind, sourceless, still
    recalled into every chat: they go with it, recorded in their history."""
    conversation = memory.sources.get().conversation
    bob = Memory.objects.get(text="Bob sails.")

    delete = admin_client.post(
        reverse("admin:memory_conversation_delete", args=[conversation.pk]), {"post": "yes"}
    )

    assert delete.status_code == 302
    assert not Memory.objects.filter(pk=memory.pk).exists()
    assert MemoryEvent.objects.filter(memory_id=memory.id, event="DELETE", actor="admin").exists()
    assert Memory.objects.filter(pk=bob.pk).exists()


def test_admin_deletions_leave_no_log_entry_with_the_words_deleted(admin_client, memory):
    """Django logged a deletion with the row's str(), and the entries of its edits stayed: a
    memory deleted in the admin kept its text in `django_admin_log`, a conversation its title
    and messages. The deletion is logged by the row's id; its other entries go with it."""
    from django.contrib.admin.models import CHANGE, DELETION, LogEntry

    from memory.models import Conversation, Message

    conversation = memory.sources.get().conversation  # the edit replaces the fact: no source
    url = reverse("admin:memory_memory_change", args=[memory.pk])
    form = {"text": "Alice keeps two hives.", "kind": "fact", "event_date": "", "metadata": "{}"}
    assert admin_client.post(url, form, follow=True).redirect_chain[0][1] == 302
    assert LogEntry.objects.filter(object_repr="Alice keeps two hives.").exists()
    Conversation.objects.filter(pk=conversation.pk).update(title="Bees on the roof")
    conversation.refresh_from_db()
    LogEntry.objects.log_actions(
        User.objects.get().pk, [conversation, *Message.objects.all()], CHANGE
    )

    delete = admin_client.post(
        reverse("admin:memory_memory_delete", args=[memory.pk]), {"post": "yes"}, follow=True
    )
    # nor in its "deleted successfully" message (kept in a cookie until shown)
    assert delete.redirect_chain[0][1] == 302 and memory.pk.encode() in delete.content
    assert b"hives" not in delete.content
    delete = admin_client.post(
        reverse("admin:memory_conversation_delete", args=[conversation.pk]),
        {"post": "yes"},
        follow=True,
    )
    assert delete.redirect_chain[0][1] == 302 and b"Bees" not in delete.content

    entries = {(e.action_flag, e.object_repr) for e in LogEntry.objects.all()}
    assert entries == {(DELETION, memory.pk), (DELETION, conversation.pk)}


def test_a_memory_page_dates_its_history_and_sources_as_the_admin_does(admin_client, memory):
    """History and source messages showed Python's form of a time ("2026-12-06
    05:11:17.464945+00:00") beside the admin's "Dec. 6, 2026, 5:11 a.m." of the same page."""
    from django.utils.dateformat import format as date_format
    from django.utils.timezone import localtime

    page = admin_client.get(reverse("admin:memory_memory_change", args=[memory.pk])).content
    event = MemoryEvent.objects.get(memory_id=memory.pk)
    source = memory.sources.get()
    for moment in (event.created_at, source.created_at):
        assert str(moment).encode() not in page
        assert date_format(localtime(moment), "N j, Y, g:i:s a").encode() in page


def test_a_conversation_delete_page_names_the_memories_that_go_with_it(admin_client, memory):
    """The confirmation counted "Memory-message relationships: 1" ("Memory_sources object
    (7)") and never said that the memory derived from the conversation alone is deleted too."""
    conversation = memory.sources.get().conversation
    url = reverse("admin:memory_conversation_delete", args=[conversation.pk])
    page = admin_client.get(url).content.decode()
    assert "Memory_sources object" not in page and "Memory-message relationship" not in page
    assert "Memories: 1" in page and "Alice keeps bees." in page
    assert "Bob sails." not in page

    gone = admin_client.post(url, {"post": "yes"})
    assert gone.status_code == 302
    assert not Memory.objects.filter(pk=memory.pk).exists()  # what the page said


def test_a_memory_delete_page_lists_the_memory_alone(admin_client, memory):
    page = admin_client.get(reverse("admin:memory_memory_delete", args=[memory.pk]))
    body = page.content.decode()
    assert "Alice keeps bees." in body and "Memories: 1" in body
    assert "Memory_sources object" not in body and "Memory-message relationship" not in body


def _link(page, pattern: str) -> str:
    """The first link on a page whose address matches `pattern`, as a browser would follow it."""
    import html
    import re

    found = re.search(rf'href="({pattern}[^"]*)"', page.content.decode())
    assert found, pattern
    return html.unescape(found.group(1))


@pytest.mark.parametrize("model", ["memory", "conversation"])
def test_a_row_deleted_from_a_users_page_goes_back_to_that_page(admin_client, memory, model):
    """Followed as a browser would: the user's page, the row's page, its Delete link, the
    confirmation. Django went back to the list of every workspace's rows."""
    from memory.admin_users import user_url

    user_page = user_url(memory.workspace_id, "alice")
    page = admin_client.get(user_page)
    assert page.status_code == 200
    row = admin_client.get(_link(page, f"/admin/memory/{model}/[^/]+/change/"))
    assert row.status_code == 200
    delete_url = _link(row, f"/admin/memory/{model}/[^/]+/delete/")
    assert admin_client.get(delete_url).status_code == 200
    deleted = admin_client.post(delete_url, {"post": "yes"})
    assert deleted.status_code == 302
    assert deleted["Location"] == user_page
    back = admin_client.get(deleted["Location"])
    assert back.status_code == 200 and b"deleted successfully" in back.content
    if model == "memory":
        assert not Memory.objects.filter(pk=memory.pk).exists()


def test_a_row_deleted_from_the_models_list_goes_back_to_the_list(admin_client, memory):
    """Elsewhere Django's way stands: back to the list, with its filters."""
    listing = reverse("admin:memory_memory_changelist") + "?kind__exact=fact"
    delete_url = reverse("admin:memory_memory_delete", args=[memory.pk])
    query = {"_changelist_filters": "kind__exact=fact"}
    deleted = admin_client.post(delete_url + "?" + urlencode(query), {"post": "yes"})
    assert deleted.status_code == 302 and deleted["Location"] == listing


def test_a_memory_page_says_what_an_edit_of_its_kind_changed(admin_client, memory):
    """An edit of the kind alone read as "Alice keeps bees. → Alice keeps bees."."""
    url = reverse("admin:memory_memory_change", args=[memory.pk])
    response = admin_client.post(
        url, {"text": "Alice keeps bees.", "kind": "plan", "event_date": "", "metadata": "{}"}
    )
    assert response.status_code == 302, response.content[:2000]
    page = admin_client.get(url).content.decode()
    assert "(kind: &quot;fact&quot; → &quot;plan&quot;)" in page
