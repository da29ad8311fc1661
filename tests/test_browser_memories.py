"""What a user sees of their memories in the playground, in a real Chromium: every one of them
(past the first page), where each came from, a deletion said wherever the memory is shown,
the keyboard, right-to-left text, a 375 px phone, a failed answer, and a reload mid-answer."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.test_browser_playground import MODEL, ask, open_playground, wait_for_memory
from tests.upstream import Reply, openai_stream

WIDE = "document.documentElement.scrollWidth > window.innerWidth"
FOCUSED = "document.activeElement === document.body ? 'body' : document.activeElement.outerHTML"


@pytest.fixture
def offline_extraction(settings):
    settings.ENGRAM_MEMORY_EXTRACTION = "offline"


def remember(http, user_id: str, *texts: str) -> list[str]:
    ids = []
    for text in texts:
        made = http.post("/v1/memories", json={"user_id": user_id, "text": text})
        assert made.status_code == 201, made.text
        ids.append(made.json()["id"])
    return ids


def test_past_the_first_hundred_memories_show_more_lists_the_rest(
    page, engram_server, owner, http, upstream
):
    """The panel listed a user's first 100 memories and said "100+": the 101st of 1,000 could
    be found by a search only, never seen in the list."""
    _, key = owner
    remember(http, "many", *(f"Memory number {i}: I visited city {i}." for i in range(130)))
    open_playground(page, engram_server, key, "many")
    page.get_by_label("Search memories").focus()  # leaving the user id: its change, a new list
    expect(page.locator("#memory-status")).to_have_text("100+ memories of many.")
    more = page.get_by_role("button", name="Show more memories")
    more.click()
    expect(page.locator("#memory-list > li")).to_have_count(130)
    expect(page.locator("#memory-status")).to_have_text("130 memories of many.")
    expect(more).to_be_hidden()
    # each once, the oldest there too; the focus where the new ones begin
    texts = page.locator("#memory-list .text").all_inner_texts()
    assert len(set(texts)) == 130 and "Memory number 0: I visited city 0." in texts
    expect(page.locator("#memory-list > li").nth(100).get_by_role("button").first).to_be_focused()

    page.get_by_label("Search memories").fill("city 7")
    page.get_by_label("Search memories").press("Enter")
    expect(page.locator("#memory-status")).to_contain_text("results for")
    expect(more).to_be_hidden()


def test_a_memory_shows_its_whole_history(page, engram_server, owner, http, upstream):
    """The history is paged as the other lists, 20 entries unless asked: the panel showed a
    memory's first 20 changes only."""
    _, key = owner
    (memory_id,) = remember(http, "hist", "Edit 0.")
    for i in range(1, 25):
        edited = http.patch(f"/v1/memories/{memory_id}", json={"text": f"Edit {i}."})
        assert edited.status_code == 200, edited.text
    open_playground(page, engram_server, key, "hist")
    page.get_by_label("Search memories").focus()  # leaving the user id: its change, a new list
    expect(page.locator("#memory-status")).to_have_text("1 memory of hist.")
    memory = page.locator("#memory-list > li", has_text="Edit 24.")
    memory.locator("details.history summary").click()
    expect(memory.locator("details.history li")).to_have_count(25)
    expect(memory.locator("details.history li").last).to_contain_text("Edit 23. → Edit 24.")


def test_a_memorys_history_says_what_an_edit_of_its_kind_changed(
    page, engram_server, owner, http, upstream
):
    """An edit of a memory's kind alone showed as "Likes tea. → Likes tea.": nothing said
    what changed."""
    _, key = owner
    (memory_id,) = remember(http, "kinds", "Likes tea.")
    edited = http.patch(f"/v1/memories/{memory_id}", json={"kind": "preference"})
    assert edited.status_code == 200, edited.text
    open_playground(page, engram_server, key, "kinds")
    page.get_by_label("Search memories").focus()  # leaving the user id: its change, a new list
    memory = page.locator("#memory-list > li", has_text="Likes tea.")
    memory.locator("details.history summary").click()
    expect(memory.locator("details.history li")).to_have_count(2)
    expect(memory.locator("details.history li").last).to_contain_text(
        '(kind: "fact" → "preference")'
    )


def test_a_memory_shows_the_message_it_came_from(
    page, engram_server, owner, http, upstream, celery_worker, offline_extraction
):
    """A memory showed its text, kind and history, and nothing of where it came from: the
    API's `sources` (the messages it was extracted from) were never shown."""
    _, key = owner
    remember(http, "src", "I like green tea.")
    open_playground(page, engram_server, key, "src")
    ask(page, "I live in Lisbon and I work at Acme.")
    wait_for_memory(http, "src", "Lisbon")
    page.get_by_role("button", name="Show all").click()
    item = page.locator("#memory-list > li", has_text="lives in Lisbon")
    sources = item.locator("details.sources-of")
    expect(sources.locator("summary")).to_have_text("Sources (1)")
    sources.locator("summary").click()
    source = sources.locator("li").first
    expect(source.locator("blockquote")).to_have_text("I live in Lisbon and I work at Acme.")
    conversation = page.locator("#conversation-id").inner_text().removeprefix("conversation ")
    expect(source.locator("small")).to_contain_text(
        f"said by the user in conversation {conversation}"
    )
    by_hand = page.locator("#memory-list > li", has_text="green tea")
    expect(by_hand).to_contain_text("No source message: added by hand, or its messages are gone.")


def test_a_deleted_memory_is_said_deleted_beside_every_answer_that_used_it(
    page, engram_server, owner, http, upstream
):
    """Deleted from the panel, the memory stayed beside the answers with a live Delete (which
    answered 404); deleted beside one answer, the same beside the others. The focus fell to
    the page's top."""
    _, key = owner
    teal, _ = remember(http, "dl", "My favourite colour is teal.", "My favourite food is pasta.")
    open_playground(page, engram_server, key, "dl")
    first = ask(page, "What is my favourite colour?")
    second = ask(page, "Tell me my favourite colour again.")
    for turn in (first, second):
        expect(turn.locator(f'.memories-used li[data-memory-id="{teal}"]')).to_have_count(1)

    item = page.locator("#memory-list > li", has_text="teal")
    item.get_by_role("button", name="Delete memory: My favourite colour is teal.").press("Enter")
    page.get_by_role("button", name="Yes, delete: My favourite colour is teal.").press("Enter")
    expect(item).to_have_count(0)
    for turn in (first, second):
        used = turn.locator(f'.memories-used li[data-memory-id="{teal}"]')
        expect(used).to_have_class("deleted")
        expect(used.get_by_role("button")).to_have_count(0)
        expect(used).to_contain_text("deleted")
    pasta = page.locator("#memory-list > li", has_text="pasta")
    expect(pasta.get_by_role("button", name="Edit memory")).to_be_focused()
    assert http.get(f"/v1/memories/{teal}").status_code == 404


def test_the_keyboard_edits_and_deletes_and_escape_takes_back(
    page, engram_server, owner, http, upstream
):
    """Edit pressed twice opened two forms; Escape closed neither the edit form nor the "Delete
    for good?" question; after Cancel or Save the focus fell to the page's top."""
    _, key = owner
    remember(http, "kb", "My bike is red.")
    open_playground(page, engram_server, key, "kb")
    item = page.locator("#memory-list > li", has_text="bike is red")
    edit = item.get_by_role("button", name="Edit memory: My bike is red.")
    edit.press("Enter")
    edit.press("Enter")
    expect(item.locator("form")).to_have_count(1)
    expect(item.get_by_label("New text of the memory")).to_be_focused()
    page.keyboard.press("Escape")
    expect(item.locator("form")).to_have_count(0)
    expect(edit).to_be_focused()

    delete = item.get_by_role("button", name="Delete memory: My bike is red.")
    delete.press("Enter")
    question = item.get_by_role("group", name="Delete this memory for good?")
    expect(question.get_by_role("button", name="Cancel")).to_be_focused()
    page.keyboard.press("Escape")
    expect(question).to_have_count(0)
    expect(delete).to_be_focused()

    edit.press("Enter")
    item.get_by_label("New text of the memory").fill("My bike is blue.")
    page.keyboard.press("Tab")  # to Save
    page.keyboard.press("Enter")
    expect(page.locator("#memory-status")).to_have_text("Memory saved.")
    saved = page.locator("#memory-list > li", has_text="bike is blue")
    expect(saved.get_by_role("button", name="Edit memory: My bike is blue.")).to_be_focused()
    assert page.evaluate(FOCUSED) != "body"


def test_right_to_left_text_reads_right_to_left(page, engram_server, owner, http, upstream):
    """Arabic or Hebrew in a memory, a message or an answer was laid out left to right (the
    page's direction): its full stop and its digits on the wrong side."""
    _, key = owner
    arabic = "أعيش في القاهرة منذ 2019."
    remember(http, "rtl", arabic, "私は東京に住んでいます 🍣")
    open_playground(page, engram_server, key, "rtl")
    upstream.script(Reply(stream=openai_stream(["أنت تعيش في ", "القاهرة."])))
    turn = ask(page, "أين أعيش؟")
    direction = "(e) => getComputedStyle(e).direction"
    assert page.locator("#memory-list .text", has_text="القاهرة").evaluate(direction) == "rtl"
    assert page.locator("#memory-list .text", has_text="東京").evaluate(direction) == "ltr"
    assert turn.locator(".answer").evaluate(direction) == "rtl"
    assert page.locator("#transcript .user p").last.evaluate(direction) == "rtl"
    page.get_by_label("Message").fill("مرحبا")
    assert page.get_by_label("Message").evaluate(direction) == "rtl"


def test_on_a_375_px_phone_the_page_does_not_scroll_sideways(page, engram_server, owner, upstream):
    """At 375 px (an iPhone SE, a mini) the side panels' column was as wide as its widest
    content, a file input, and the page was 389 px: it scrolled sideways."""
    _, key = owner
    page.set_viewport_size({"width": 375, "height": 740})
    open_playground(page, engram_server, key, "ph")
    ask(page, "Hello from a small phone")
    assert not page.evaluate(WIDE), page.evaluate("document.documentElement.scrollWidth")


def test_a_failed_answer_says_it_failed_and_a_rate_limit_when_to_try_again(
    page, engram_server, owner, upstream, settings
):
    """An answer that failed kept "Preparing context…" beside it for good; a 429 said nothing
    of its Retry-After."""
    settings.ENGRAM_UPSTREAM_RETRIES = 0
    _, key = owner
    open_playground(page, engram_server, key, "rl")
    limited = {"error": {"message": "Rate limit reached for gpt-4o", "type": "rate_limit_error"}}
    upstream.script(Reply(status=429, headers={"retry-after": "30"}, json=limited))
    page.get_by_label("Message").fill("Hello?")
    page.get_by_role("button", name="Send").click()
    turn = page.locator("#transcript li.turn:has(aside)").last
    expect(page.locator("#chat-status")).to_have_text(
        "429: Rate limit reached for gpt-4o Try again in 30 s."
    )
    expect(turn.locator(".answer .error")).to_have_text(
        "429: Rate limit reached for gpt-4o Try again in 30 s."
    )
    expect(turn.locator(".summary")).to_have_text(
        "No answer: the request failed. Listed below: the preview made before it."
    )
    expect(turn).to_have_attribute("aria-busy", "false")

    upstream.script(Reply(status=500, json={"error": {"message": "boom", "type": "server_error"}}))
    page.get_by_label("Message").fill("And now?")
    page.get_by_role("button", name="Send").click()
    turn = page.locator("#transcript li.turn:has(aside)").last
    expect(turn.locator(".answer .error")).to_contain_text("status 500: boom")
    expect(turn.locator(".summary")).to_contain_text("No answer: the request failed.")


def test_a_reload_mid_answer_comes_back_to_the_same_conversation(
    page, engram_server, owner, http, upstream
):
    """A reload (or Back, then Forward) while an answer streamed came back to a new
    conversation of "playground-user" on the default model: the chat, the user whose
    memories were shown and what each answer had been given were gone from the page."""
    _, key = owner
    [rex] = remember(http, "rl", "My dog is called Rex.")
    open_playground(page, engram_server, key, "rl")
    conversation = page.locator("#conversation-id").inner_text()
    ask(page, "What is my dog called?")

    upstream.script(Reply(stream=openai_stream(["Rex is", " a good", " dog."]), delay=1.0))
    page.get_by_label("Message").fill("Tell me more.")
    page.get_by_role("button", name="Send").click()
    streaming = page.locator("#transcript li.turn:has(aside)").last
    expect(streaming.locator(".answer")).to_have_text("Rex is")
    expect(streaming).to_have_attribute("aria-busy", "true")  # the live region waits for it
    page.reload()

    expect(page.get_by_label("User id")).to_have_value("rl")
    expect(page.get_by_label("Model")).to_have_value(MODEL)
    expect(page.locator("#conversation-id")).to_have_text(conversation)
    transcript = page.locator("#transcript")
    expect(transcript).to_contain_text("What is my dog called?")
    expect(transcript).to_contain_text("echo: What is my dog called?")
    expect(transcript).to_contain_text("Tell me more.")
    answer = page.locator("#transcript li.turn:has(aside)").first
    expect(answer.locator(".summary")).to_have_text("Restored after a reload: 1 memory given.")
    used = answer.locator(f'.memories-used li[data-memory-id="{rex}"]')
    expect(used).to_contain_text("My dog is called Rex.")
    expect(used.locator("small")).to_contain_text("blended score")
    expect(page.locator("#memory-list")).to_contain_text("My dog is called Rex.")

    page.goto(engram_server.url + "/docs")
    page.go_back()
    expect(page.locator("#conversation-id")).to_have_text(conversation)
    expect(page.locator("#transcript")).to_contain_text("What is my dog called?")
    ask(page, "Thanks!")
    said = [
        m["content"]
        for m in upstream.chat_requests()[-1].body["messages"]
        if m["role"] in ("user", "assistant")
    ]
    assert said[:3] == ["What is my dog called?", "echo: What is my dog called?", "Tell me more."]
    assert said[-1] == "Thanks!"


def test_after_a_reload_the_past_messages_beside_an_answer_show_their_text(
    page, engram_server, owner, http, upstream, celery_worker, offline_extraction
):
    """Beside an answer restored after a reload, the past messages it was given read
    "message msg_…": an answer keeps their ids only, and the page showed the ids."""
    _, key = owner
    open_playground(page, engram_server, key, "pm")
    ask(page, "I live in Lisbon and I work at Acme.")
    wait_for_memory(http, "pm", "Lisbon")
    page.get_by_role("button", name="New chat").click()
    turn = ask(page, "Where do I live and where do I work?")
    past = turn.locator(".messages-used li[data-message-id]")
    expect(past.first).to_contain_text("I live in Lisbon and I work at Acme.")
    message_id = past.first.get_attribute("data-message-id")

    page.reload()
    restored = page.locator(f'#transcript .messages-used li[data-message-id="{message_id}"]')
    expect(restored.locator("span")).to_have_text("I live in Lisbon and I work at Acme.")
    expect(restored.locator("small").first).not_to_be_empty()  # why it was found
    expect(restored).not_to_contain_text("msg_")
    expect(restored).not_to_have_class("deleted")


def test_a_conversation_is_deleted_with_what_came_from_it_alone(
    page, engram_server, owner, http, upstream, celery_worker, offline_extraction
):
    """What a user said is remembered too (a past message beside a later answer, the memories
    taken from it), and the playground could delete memories only: the conversation stayed."""
    _, key = owner
    remember(http, "dc", "My favourite food is pasta.")
    open_playground(page, engram_server, key, "dc")
    ask(page, "I live in Lisbon and I work at Acme.")
    wait_for_memory(http, "dc", "Lisbon")
    conversation = page.locator("#conversation-id").inner_text().removeprefix("conversation ")

    page.get_by_role("button", name="Delete this conversation").click()
    question = page.get_by_role("group", name="Delete this conversation for good?")
    question.get_by_role("button", name="Yes, delete").click()
    expect(page.locator("#chat-status")).to_have_text(
        "Deleted the conversation: 2 messages, and 2 memories taken from it alone."
    )
    expect(page.locator("#transcript li")).to_have_count(0)
    expect(page.locator("#conversation-id")).not_to_have_text(f"conversation {conversation}")
    expect(page.locator("#memory-list > li")).to_have_count(1)  # the one added by hand stays
    expect(page.get_by_label("Message")).to_be_focused()
    assert http.get(f"/v1/conversations/{conversation}").status_code == 404

    turn = ask(page, "Where do I live and where do I work?")
    expect(turn.locator(".messages-used")).to_have_text("none")
    expect(turn.locator(".memories-used")).not_to_contain_text("Lisbon")
    assert "Lisbon" not in str(upstream.chat_requests()[-1].body["messages"])


def test_a_refused_edit_is_said_by_the_memory_not_a_hundred_memories_up(
    page, engram_server, owner, http, upstream
):
    """The API's refusal of an edit (an empty text) went to the panel's status line, above the
    list: with the memory far down, nothing on screen said the edit was not saved."""
    _, key = owner
    remember(http, "ed", *(f"Memory number {i}." for i in range(40)))
    open_playground(page, engram_server, key, "ed")
    page.get_by_label("Search memories").focus()  # leaving the user id: its change, a new list
    expect(page.locator("#memory-status")).to_have_text("40 memories of ed.")
    item = page.locator("#memory-list > li", has_text="Memory number 0.")
    item.get_by_role("button", name="Edit memory: Memory number 0.").click()
    item.get_by_label("New text of the memory").fill("   ")
    item.get_by_role("button", name="Save").click()
    alert = item.get_by_role("alert")
    expect(alert).to_contain_text("400")
    expect(alert).to_be_in_viewport()
    expect(item.get_by_label("New text of the memory")).to_have_attribute("aria-invalid", "true")
    assert (
        http.get("/v1/memories", params={"user_id": "ed", "limit": 100}).json()["data"][-1]["text"]
        == "Memory number 0."
    )


def test_a_memory_deleted_elsewhere_goes_from_the_list_when_deleted_here(
    page, engram_server, owner, http, upstream
):
    """Deleted meanwhile in another tab (or the admin), a memory's Delete answered "404: …" as
    an error and the memory stayed listed, its Delete answering 404 again."""
    _, key = owner
    [gone] = remember(http, "el", "My bike is red.")
    open_playground(page, engram_server, key, "el")
    turn = ask(page, "What colour is my bike?")
    item = page.locator("#memory-list > li", has_text="bike is red")
    expect(item).to_have_count(1)
    assert http.delete(f"/v1/memories/{gone}").status_code == 200

    item.get_by_role("button", name="Delete memory: My bike is red.").click()
    page.get_by_role("button", name="Yes, delete: My bike is red.").click()
    expect(page.locator("#memory-status")).to_have_text("Already deleted: My bike is red.")
    expect(page.locator("#memory-status")).not_to_have_class("status error")
    expect(item).to_have_count(0)
    expect(turn.locator(f'.memories-used li[data-memory-id="{gone}"]')).to_have_class("deleted")


def test_a_long_memory_names_its_controls_briefly(page, engram_server, owner, http, upstream):
    """Each control of a memory was named with its whole text: a screen reader read a
    2,000-character memory out in full for Edit, Delete, Sources and History, and again for
    the Delete beside an answer."""
    _, key = owner
    long = "🎉 I keep a diary about my garden. " + "The roses bloomed again. " * 78
    remember(http, "lg", long[:2000])
    open_playground(page, engram_server, key, "lg")
    turn = ask(page, "What do I keep a diary about?")
    labelled = "#memory-list [aria-label], .memories-used [aria-label]"
    # the list is loaded again after the turn: its controls once it is back (waited for with
    # wait_for_function and an expression, it failed 2 runs in 3 here with "EvalError: ...
    # violates ... script-src 'self'": the page's CSP)
    expect(page.locator(labelled)).to_have_count(4)
    names = page.evaluate(
        f"[...document.querySelectorAll({labelled!r})].map((e) => e.getAttribute('aria-label'))"
    )
    assert len(names) == 4, names  # Edit, Delete, History; Delete beside the answer
    assert all(len(name) <= 100 for name in names), [len(name) for name in names]
    start = "Delete memory: 🎉 I keep a diary about my garden."
    delete = page.get_by_role("button", name=start)
    expect(delete).to_have_count(1)
    assert delete.get_attribute("aria-label").endswith("…")
    expect(turn.get_by_role("button", name="Delete memory used: ")).to_have_count(1)
