"""The playground's lists past their first page, in a real Chromium against a live Engram: a
collection's documents still being read are followed to ready wherever they are listed."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.test_browser_playground import ask, open_playground
from tests.upstream import Reply, openai_stream


def _documents(owner, count: int, *, status: str):
    from memory.knowledge.models import Collection, Document

    workspace, _ = owner
    collection = Collection.objects.create(workspace=workspace, name="Archive")
    Document.objects.bulk_create(
        Document(
            workspace=workspace,
            collection=collection,
            title=f"note-{i:03}.md",
            content_hash=f"{i:064x}",
            status=status,
        )
        for i in range(count)
    )
    return collection


@pytest.mark.parametrize("first_page", ["queued", "ready"])
def test_a_document_past_the_first_page_is_seen_to_get_ready(
    page, engram_server, owner, upstream, first_page
):
    """Opened (or reloaded) while documents were still being read, the page read its first 100
    again until they were done and never the pages past it: a document shown by "Show more
    documents" said "queued" for good, and nothing was followed at all when the first page's
    were done."""
    from memory.knowledge.models import Document

    collection = _documents(owner, 130, status="queued")
    _, key = owner
    open_playground(page, engram_server, key, "dm")
    rows = page.locator("#document-list > li")
    expect(rows).to_have_count(100)
    first = [rows.nth(i).get_attribute("data-document-id") for i in range(100)]
    Document.objects.filter(pk__in=first).update(status=first_page)
    page.reload()  # as a user coming back to the tab
    expect(rows).to_have_count(100)
    page.get_by_role("button", name="Show more documents").click()
    expect(rows).to_have_count(130)
    late = rows.nth(120)
    expect(late.locator(".badge")).to_have_text("queued")

    Document.objects.filter(pk=late.get_attribute("data-document-id")).update(status="ready")
    expect(late.locator(".badge")).to_have_text("ready")
    assert Document.objects.filter(collection=collection).count() == 130


def test_an_answer_is_stopped_mid_stream_and_what_came_is_kept(
    page, engram_server, owner, http, upstream
):
    """Nothing stopped a long or runaway answer: it streamed on to its end (or until a reload),
    Send disabled meanwhile."""
    _, key = owner
    open_playground(page, engram_server, key, "st")
    pieces = ["Once upon", " a time"] + [" and then"] * 30
    upstream.script(Reply(stream=openai_stream(pieces), delay=0.5))
    page.get_by_label("Message").fill("Tell me a very long story.")
    page.get_by_role("button", name="Send").click()
    turn = page.locator("#transcript li.turn:has(aside)").last
    expect(turn.locator(".answer")).to_contain_text("Once upon a time")

    page.get_by_role("button", name="Stop").click()
    expect(turn.locator(".answer .cut")).to_have_text("(stopped)")
    expect(page.locator("#chat-status")).to_have_text("Stopped: the answer so far is kept.")
    expect(page.get_by_role("button", name="Send")).to_be_enabled()
    expect(page.get_by_role("button", name="Stop")).to_be_hidden()
    expect(page.get_by_label("Message")).to_be_focused()
    for _ in range(100):  # Engram hung up on the upstream too
        if upstream.disconnects:
            break
        page.wait_for_timeout(100)
    assert upstream.disconnects
    said = turn.locator(".answer").inner_text()
    assert said.startswith("Once upon a time") and "and then" * 30 not in said

    ask(page, "Go on.")  # the part that came is the conversation's answer
    sent = upstream.chat_requests()[-1].body["messages"]
    assistant = [m["content"] for m in sent if m["role"] == "assistant"]
    assert len(assistant) == 1 and assistant[0].startswith("Once upon a time"), sent


def test_a_click_below_the_memories_right_after_a_new_user_id_is_not_lost(
    page, engram_server, owner, http, upstream
):
    """Typing a user id and then pressing "Create": leaving the field reloads the memories, the
    list was emptied at once, the Collections panel moved up from under the pointer between the
    press and the release, and the click did nothing."""
    for i in range(4):
        made = http.post("/v1/memories", json={"user_id": "ada", "text": f"Ada fact {i}."})
        assert made.status_code == 201
    _, key = owner
    open_playground(page, engram_server, key, "ada")
    page.get_by_label("New collection name").fill("Handbook")
    expect(page.locator("#memory-list > li")).to_have_count(4)

    page.get_by_label("User id").fill("bo")  # the focus stays in the field
    page.get_by_role("button", name="Create").click()
    expect(page.locator("#collection-status")).to_have_text("Created collection Handbook.")
    expect(page.locator("#memory-status")).to_have_text("0 memories of bo.")
    expect(page.locator("#memory-list > li")).to_have_count(0)
    assert (
        page.evaluate("document.querySelector('#memory-list').closest('.panel').style.minHeight")
        == ""
    )


def test_another_user_id_while_an_answer_streams_starts_another_conversation(
    page, engram_server, owner, http, upstream
):
    """The user id changed while an answer streamed kept the conversation (another user's only
    when nothing was being streamed): every next turn was refused, 403 "belongs to another
    user", until "New chat"."""
    _, key = owner
    open_playground(page, engram_server, key, "aa")
    upstream.script(Reply(stream=openai_stream(["slow", " answer"]), delay=0.5))
    page.get_by_label("Message").fill("Hello, I am aa.")
    page.get_by_role("button", name="Send").click()
    page.wait_for_function(
        "() => [...document.querySelectorAll('#transcript .answer')].pop()?.textContent === 'slow'"
    )
    page.get_by_label("User id").fill("bb")
    page.get_by_label("Search memories").focus()  # leaving the field: its change
    expect(page.get_by_role("button", name="Send")).to_be_enabled()

    turn = ask(page, "Hello, I am bb.")
    expect(turn.locator(".answer")).to_have_text("echo: Hello, I am bb.")
    sent = upstream.chat_requests()[-1].body["messages"]
    assert [m["content"] for m in sent if m["role"] == "user"] == ["Hello, I am bb."]


def test_escape_in_the_message_box_stops_the_answer(page, engram_server, owner, upstream):
    _, key = owner
    open_playground(page, engram_server, key, "st")
    upstream.script(Reply(stream=openai_stream(["Once upon"] + [" and then"] * 30), delay=0.5))
    page.get_by_label("Message").fill("Tell me a very long story.")
    page.get_by_label("Message").press("Enter")
    turn = page.locator("#transcript li.turn:has(aside)").last
    expect(turn.locator(".answer")).to_contain_text("Once upon")
    expect(page.get_by_label("Message")).to_be_focused()
    page.get_by_label("Message").press("Escape")
    expect(turn.locator(".answer .cut")).to_have_text("(stopped)")
    expect(page.get_by_role("button", name="Send")).to_be_enabled()


def test_one_memory_is_counted_in_the_singular(page, engram_server, owner, http, upstream):
    """A user with one memory read "1 memories of ada." and a search with one hit "1 results
    for …"."""
    made = http.post("/v1/memories", json={"user_id": "ada", "text": "Ada keeps bees."})
    assert made.status_code == 201
    _, key = owner
    open_playground(page, engram_server, key, "ada")
    expect(page.locator("#memory-status")).to_have_text("1 memory of ada.")

    page.get_by_label("Search memories").fill("bees")
    page.get_by_label("Search memories").press("Enter")
    expect(page.locator("#memory-status")).to_have_text("1 result for “bees”.")
