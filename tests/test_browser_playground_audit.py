"""The playground in a real Chromium with odd answers and failures: text that looks like HTML
or markdown, words too long for the column, an upstream that refuses or breaks off, a wrong
key. What the model or a memory says is shown as text; what fails is said on the page."""

from __future__ import annotations

from playwright.sync_api import expect

from tests.test_browser_playground import (
    MODEL,
    ask,
    open_playground,
    wait_for_memory,
)
from tests.upstream import Reply, openai_stream

INJECTED = '<img src=x onerror="window.__pwned=1"> **bold** [link](javascript:alert(1))'
LONG_WORD = "https://example.com/" + "a" * 600


def _overflowing(page, selector: str) -> list[str]:
    """The elements under `selector` whose text runs out of their box."""
    return page.evaluate(
        """(selector) => [...document.querySelectorAll(selector)]
            .filter((e) => e.scrollWidth > e.clientWidth + 1)
            .map((e) => e.className || e.tagName)""",
        selector,
    )


def test_html_in_answers_and_memories_is_text_and_long_words_stay_in_their_box(
    page, engram_server, owner, http, upstream
):
    _, key = owner
    for text in (f"My note: {INJECTED}", f"My homepage is {LONG_WORD}"):
        assert http.post("/v1/memories", json={"user_id": "hx", "text": text}).status_code == 201
    open_playground(page, engram_server, key, "hx")
    expect(page.locator("#memory-list > li")).to_have_count(2)

    upstream.script(Reply(stream=openai_stream([INJECTED, " ", LONG_WORD])))
    page.get_by_label("Message").fill(f"What is my homepage? {INJECTED}")
    page.get_by_role("button", name="Send").click()
    turn = page.locator("#transcript li.turn:has(aside)").last
    expect(turn.locator(".answer")).to_have_text(f"{INJECTED} {LONG_WORD}")
    expect(turn.locator(".summary")).to_contain_text("context tokens")
    expect(turn.locator(".memories-used")).to_contain_text("homepage")

    assert page.evaluate("window.__pwned") is None
    assert page.locator("#transcript img, #memory-list img, #transcript a").count() == 0
    expect(page.locator("#memory-list")).to_contain_text(INJECTED)
    boxes = ".answer, .message p, .memories-used li, #memory-list .text, .engram"
    assert _overflowing(page, boxes) == []
    # nor does the page itself scroll sideways
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


def test_an_upstream_refusal_and_a_wrong_key_are_said_on_the_page(
    page, engram_server, owner, upstream
):
    _, key = owner
    open_playground(page, engram_server, key, "ex")
    refusal = {"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}}
    upstream.script(Reply(json=refusal, status=401))
    page.get_by_label("Message").fill("Hello?")
    page.get_by_role("button", name="Send").click()
    turn = page.locator("#transcript li.turn:has(aside)").last
    expect(turn.locator(".answer .error")).to_be_visible()
    expect(page.locator("#chat-status")).to_have_class("status error")
    expect(page.get_by_role("button", name="Send")).to_be_enabled()

    upstream.script(Reply(stream=openai_stream(["Half an", " answer", " and more"]), drop_after=2))
    page.get_by_label("Message").fill("Tell me more")
    page.get_by_role("button", name="Send").click()
    turn = page.locator("#transcript li.turn:has(aside)").last
    expect(turn.locator(".answer .error")).to_be_visible()
    expect(page.get_by_role("button", name="Send")).to_be_enabled()

    page.get_by_label("Workspace key").fill("sk-not-a-key")
    page.get_by_role("button", name="Use key").click()
    expect(page.locator("#key-status")).to_have_class("status error")
    expect(page.locator("#key-status")).to_contain_text("401")


def test_a_memory_found_by_search_says_why_and_the_box_promises_only_memories(
    page, engram_server, owner, http, upstream
):
    """A search hit came without the reason it was found (the API's `why`), and the box said it
    searched past messages too: /v1/memories/search finds memories only."""
    _, key = owner
    for text in ("My cat is called Miso.", "I play the cello."):
        assert http.post("/v1/memories", json={"user_id": "sw", "text": text}).status_code == 201
    open_playground(page, engram_server, key, "sw")
    expect(page.locator("#memory-list > li")).to_have_count(2)
    box = page.get_by_label("Search memories")
    assert box.get_attribute("placeholder") == "Search memories"
    box.fill("cat Miso")
    page.get_by_role("button", name="Search", exact=True).click()
    expect(page.locator("#memory-status")).to_contain_text("results for")
    hit = page.locator("#memory-list > li", has_text="Miso")
    expect(hit.locator(".why")).to_contain_text("blended score")


def test_a_memory_used_for_an_answer_can_be_deleted_from_beside_it(
    page, engram_server, owner, http, upstream
):
    """A memory shown beside an answer could only be deleted from the panel's list, its first
    100: one further down was there to see and not to delete."""
    _, key = owner
    made = http.post("/v1/memories", json={"user_id": "dz", "text": "My dog is called Rex."})
    assert made.status_code == 201
    open_playground(page, engram_server, key, "dz")
    page.get_by_label("Message").fill("What is my dog called?")
    page.get_by_role("button", name="Send").click()
    turn = page.locator("#transcript li.turn:has(aside)").last
    expect(turn.locator(".summary")).to_contain_text("context tokens")
    used = turn.locator(".memories-used li", has_text="dog is called Rex")
    expect(used).to_have_count(1)

    used.get_by_role("button", name="Delete memory used:").click()
    used.get_by_role("button", name="Yes, delete").click()
    expect(used).to_have_class("deleted")
    expect(page.locator("#memory-status")).to_contain_text("Deleted:")
    expect(page.locator("#memory-list > li", has_text="Rex")).to_have_count(0)
    assert http.get(f"/v1/memories/{made.json()['id']}").status_code == 404


def test_on_a_phone_an_answer_has_the_width_and_what_engram_did_comes_below_it(
    page, engram_server, owner, upstream
):
    """At 390 px the turn kept its two columns: the answer got a third of the width (a word or
    two a line) beside "What Engram did", whose table broke "Tokens" into "Toke / ns"."""
    _, key = owner
    page.set_viewport_size({"width": 390, "height": 844})
    open_playground(page, engram_server, key, "ph")
    turn = ask(page, "Hello from a phone")
    message = turn.locator(".message").bounding_box()
    aside = turn.locator("aside").bounding_box()
    whole = turn.bounding_box()
    assert message and aside and whole
    assert message["width"] >= 0.9 * whole["width"], (message, whole)
    assert aside["y"] >= message["y"] + message["height"], (message, aside)
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


def test_enter_that_ends_an_ime_composition_does_not_send(page, engram_server, owner, upstream):
    """Typing Japanese or Chinese, Enter picks the word the input method offers: that Enter
    sent the half-typed message."""
    _, key = owner
    open_playground(page, engram_server, key, "ime")
    box = page.get_by_label("Message")
    box.fill("にほん")
    box.evaluate(
        """(box) => box.dispatchEvent(new KeyboardEvent("keydown",
            {key: "Enter", isComposing: true, keyCode: 229, bubbles: true, cancelable: true}))"""
    )
    # the send handler adds the turn before its first await: nothing added, nothing sent
    expect(page.locator("#transcript li")).to_have_count(0)
    assert box.input_value() == "にほん"
    box.press("Enter")  # a plain Enter still sends
    expect(page.locator("#transcript li.turn:has(aside) .answer")).to_have_text("echo: にほん")


def test_a_memory_is_deleted_only_once_the_user_confirms(
    page, engram_server, owner, http, upstream
):
    """One click on Delete, in the panel or beside an answer, deleted the memory for good (the
    admin asks first). Now Delete asks in place; Cancel keeps the memory."""
    _, key = owner
    made = http.post("/v1/memories", json={"user_id": "cf", "text": "My bike is red."}).json()
    open_playground(page, engram_server, key, "cf")
    # leaving the user id field is its change event: the list loads again, once, now
    page.get_by_label("Search memories").focus()
    item = page.locator("#memory-list > li", has_text="bike is red")
    expect(item).to_have_count(1)
    item.get_by_role("button", name="Delete memory: My bike is red.").click()
    question = item.get_by_role("group", name="Delete this memory for good?")
    expect(question).to_be_visible()
    expect(question.get_by_role("button", name="Cancel")).to_be_focused()
    question.get_by_role("button", name="Cancel").click()
    expect(question).to_have_count(0)
    expect(item.get_by_role("button", name="Delete memory: My bike is red.")).to_be_focused()
    assert http.get(f"/v1/memories/{made['id']}").status_code == 200

    turn = ask(page, "What colour is my bike?")
    used = turn.locator(".memories-used li", has_text="bike is red")
    used.get_by_role("button", name="Delete memory used:").click()
    used.get_by_role("button", name="Yes, delete").click()
    expect(used).to_have_class("deleted")
    expect(page.locator("#memory-list > li", has_text="bike is red")).to_have_count(0)
    assert http.get(f"/v1/memories/{made['id']}").status_code == 404


def test_the_past_messages_an_answer_was_given_are_shown_with_why(
    page, engram_server, owner, http, upstream, celery_worker, settings
):
    """The summary said "1 past message retrieved" and nothing showed which one, nor why:
    words of an earlier conversation went to the model unseen."""
    settings.ENGRAM_MEMORY_EXTRACTION = "offline"  # the upstream answers the chats only
    _, key = owner
    said = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "I play the cello on Tuesdays."}],
    }
    headers = {"x-user-id": "pm", "x-conversation-id": "earlier"}
    assert http.post("/v1/chat/completions", json=said, headers=headers).is_success
    wait_for_memory(http, "pm", "cello")  # the turn's job ran: its messages are indexed too
    open_playground(page, engram_server, key, "pm")
    turn = ask(page, "On which day do I play the cello?")
    expect(turn.locator(".summary")).to_contain_text("past message")
    past = turn.locator(".messages-used li", has_text="I play the cello on Tuesdays.")
    expect(past).to_have_count(1)
    expect(past.locator("small")).to_contain_text("blended score")


def test_on_a_phone_a_long_model_name_does_not_widen_the_page(page, engram_server, owner, upstream):
    """A select is as wide as its longest option: a workspace's alias of 60 characters made the
    model picker 560 px wide and the whole page scrolled sideways at 390 px."""
    from completions.models import ModelAlias

    workspace, key = owner
    long_name = "accounts/fireworks/models/llama-v3p1-405b-instruct-long-context"
    ModelAlias.objects.create(workspace=workspace, alias=long_name, target_model=MODEL)
    page.set_viewport_size({"width": 390, "height": 844})
    open_playground(page, engram_server, key, "wide")
    expect(page.locator("#model option", has_text=long_name)).to_be_attached()
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


def test_engram_out_of_reach_and_a_user_id_no_header_takes_are_said_plainly(
    page, engram_server, owner, upstream
):
    """Engram out of reach read "Failed to fetch"; a user id with an emoji read "Failed to
    execute 'fetch' on 'Window': … non ISO-8859-1 code point" (the browser's refusal of the
    header)."""
    _, key = owner
    open_playground(page, engram_server, key, "net")
    page.route("**/v1/chat/completions", lambda route: route.abort())
    page.get_by_label("Message").fill("Anyone there?")
    page.get_by_role("button", name="Send").click()
    expect(page.locator("#chat-status")).to_have_text(
        "Engram could not be reached (Failed to fetch): check that it runs, then try again."
    )
    page.unroute("**/v1/chat/completions")

    page.get_by_label("User id").fill("ana🎉")
    page.get_by_label("Message").fill("Hello")
    page.get_by_role("button", name="Send").click()
    expect(page.locator("#chat-status")).to_have_text(
        "The user id goes in the x-user-id header, which takes ASCII only: use another id."
    )
    assert upstream.chat_requests() == []  # nothing went out


CONTRAST = """(node) => {
  const rgb = (css) => css.match(/\\d+(\\.\\d+)?/g).slice(0, 3).map(Number);
  const lum = ([r, g, b]) => {
    const c = [r, g, b].map((v) => v / 255).map((v) => v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4);
    return 0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2];
  };
  const ring = lum(rgb(getComputedStyle(node).outlineColor));
  const page = lum(rgb(getComputedStyle(node.closest('.panel, .bar, .settings, body')).backgroundColor));
  return (Math.max(ring, page) + 0.05) / (Math.min(ring, page) + 0.05);
}"""


def test_the_keyboard_focus_ring_is_seen(page, engram_server, owner, upstream):
    """The focus ring was #9bb4f5 on white, 2.1:1: under the 3:1 WCAG asks of it, and hard to
    tell from the blue buttons it rings."""
    _, key = owner
    open_playground(page, engram_server, key, "fr")
    page.get_by_label("Message").focus()
    page.keyboard.press("Tab")  # a keyboard focus: :focus-visible
    expect(page.get_by_role("button", name="Send")).to_be_focused()
    ratio = page.get_by_role("button", name="Send").evaluate(CONTRAST)
    assert ratio >= 3, ratio
