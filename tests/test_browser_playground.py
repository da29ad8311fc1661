"""The playground (/playground) in a real Chromium against a live Engram, a real Celery worker
and the loopback upstream as the model: the key, streaming chat, what Engram used, the memory
panel and the collection panel."""

from __future__ import annotations

import re
import time

import pytest
from playwright.sync_api import Page, expect

from tests.upstream import Reply, openai_stream, openai_tool_stream, tool_call

MODEL = "upstream-model-a"  # listed by the loopback upstream's /models, routed to it
KEY_ITEM = "engram.playground.key"
# What the workspace's routes default to with the loopback upstream as OpenAI's (not in its
# /models): completions.providers.llm's small OpenAI model.
DEFAULT_MODEL = "gpt-4o-mini"


@pytest.fixture
def offline_extraction(settings):
    """Memories from the offline extractor: the worker never calls the upstream, so the
    upstream's last recorded chat request is always the playground's."""
    settings.ENGRAM_MEMORY_EXTRACTION = "offline"


def open_playground(page: Page, server, key: str, user_id: str) -> None:
    page.goto(server.url + "/playground")
    page.get_by_label("Workspace key").fill(key)
    page.get_by_role("button", name="Use key").click()
    expect(page.locator(f'#model option[value="{MODEL}"]')).to_be_attached()
    page.get_by_label("Model").select_option(MODEL)
    page.get_by_label("User id").fill(user_id)
    page.get_by_label("User id").dispatch_event("change")


def ask(page: Page, text: str):
    """Send a message; the turn's answer and its 'What Engram did' panel once it is finished."""
    page.get_by_label("Message").fill(text)
    page.get_by_role("button", name="Send").click()
    turn = page.locator("#transcript li.turn:has(aside)").last
    expect(turn.locator(".summary")).to_contain_text("context tokens")
    expect(page.get_by_role("button", name="Send")).to_be_enabled()
    return turn


def wait_for_memory(http, user_id: str, word: str, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        memories = http.get("/v1/memories", params={"user_id": user_id}).json()["data"]
        found = [m for m in memories if word in m["text"]]
        if found:
            return found[0]
        assert time.monotonic() < deadline, memories
        time.sleep(0.3)


def test_the_page_needs_no_key_and_loads_nothing_from_another_origin(anon_http):
    response = anon_http.get("/playground")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    policy = dict(
        part.strip().split(" ", 1)
        for part in response.headers["content-security-policy"].split(";")
    )
    for directive in ("default-src", "script-src", "style-src", "connect-src"):
        assert policy[directive] == "'self'", directive
    assert policy["frame-ancestors"] == "'none'"
    html = response.text
    assert "http://" not in html and "https://" not in html and '="//' not in html
    assert "<style" not in html and "<script>" not in html  # nothing inline: the policy forbids it
    for asset, kind in (("playground.js", "javascript"), ("playground.css", "text/css")):
        assert f'/static/playground/{asset}"' in html
        served = anon_http.get(f"/static/playground/{asset}")
        assert served.status_code == 200 and kind in served.headers["content-type"]
        assert "https://" not in served.text and "http://" not in served.text


def test_chat_streams_and_shows_a_memory_an_earlier_conversation_created(
    page, engram_server, owner, http, upstream, celery_worker, offline_extraction
):
    _, key = owner
    open_playground(page, engram_server, key, "ada")
    assert page.get_by_label("Workspace key").input_value() == ""  # not left in the page
    assert page.evaluate(f"sessionStorage.getItem('{KEY_ITEM}')") == key
    assert page.evaluate("localStorage.length") == 0 and page.evaluate("document.cookie") == ""

    upstream.script(Reply(stream=openai_stream(["Lisbon is", " lovely", " in spring."]), delay=0.4))
    page.get_by_label("Message").fill("I live in Lisbon and I work at Acme.")
    page.get_by_role("button", name="Send").click()
    answer = page.locator("#transcript .answer").last
    # Streamed: the first piece is on screen before the last one has been sent.
    page.wait_for_function(
        "() => [...document.querySelectorAll('#transcript .answer')].pop()"
        "?.textContent === 'Lisbon is'"
    )
    expect(answer).to_have_text("Lisbon is lovely in spring.")
    first = upstream.chat_requests()[-1]
    assert first.body["stream"] is True and first.body["model"] == MODEL
    assert first.headers["authorization"] == "Bearer sk-upstream-test"  # never the page's key
    wait_for_memory(http, "ada", "Lisbon")

    page.get_by_role("button", name="New chat").click()
    expect(page.locator("#transcript li")).to_have_count(0)
    turn = ask(page, "Where do I live?")
    expect(turn.locator(".answer")).to_have_text("echo: Where do I live?")
    expect(turn.locator(".memories-used")).to_contain_text("lives in Lisbon")
    expect(turn.locator(".summary")).to_have_text(re.compile(r"^[1-9]\d* memor(y|ies) used"))
    expect(turn.locator(".blocks")).to_contain_text("memories")
    assert "lives in Lisbon" in str(upstream.chat_requests()[-1].body["messages"])
    # "New chat" started a second conversation: the first one's words came back as a memory.
    conversations = http.get("/v1/conversations", params={"user_id": "ada"}).json()["data"]
    assert len({c["external_id"] for c in conversations}) == 2
    expect(page.locator("#memory-list")).to_contain_text("lives in Lisbon")
    assert key not in page.url


def test_deleting_a_memory_in_the_panel_keeps_it_out_of_the_next_answer(
    page, engram_server, owner, http, upstream, celery_worker, offline_extraction
):
    _, key = owner
    for text in ("My favourite colour is teal.", "My favourite food is pasta."):
        assert http.post("/v1/memories", json={"user_id": "bo", "text": text}).status_code == 201
    open_playground(page, engram_server, key, "bo")
    teal = page.locator("#memory-list > li", has_text="teal")
    expect(teal).to_have_count(1)

    turn = ask(page, "What are my favourite colour and favourite food?")
    expect(turn.locator(".memories-used")).to_contain_text("teal")
    expect(turn.locator(".memories-used")).to_contain_text("pasta")

    teal.locator("details.history summary").click()
    expect(teal.locator("details.history li")).to_contain_text("by api")
    page.get_by_role("button", name="Delete memory: My favourite colour is teal.").click()
    page.get_by_role("button", name="Yes, delete: My favourite colour is teal.").click()
    expect(page.locator("#memory-status")).to_contain_text("Deleted: My favourite colour is teal.")
    expect(page.locator("#memory-list > li", has_text="teal")).to_have_count(0)
    expect(page.locator("#memory-list > li", has_text="pasta")).to_have_count(1)

    turn = ask(page, "Again: what are my favourite colour and favourite food?")
    expect(turn.locator(".memories-used")).to_contain_text("pasta")
    expect(turn.locator(".memories-used")).not_to_contain_text("teal")
    sent = str(upstream.chat_requests()[-1].body["messages"])
    assert "pasta" in sent and "teal" not in sent


def test_the_memories_beside_an_answer_are_the_ones_the_answer_was_given(
    page, engram_server, owner, http, upstream
):
    """The list beside an answer comes from the answer itself (engram.memories), not only from
    the /v1/context preview made before it: with the preview failing, the list showed the
    failure and never what the model read."""
    _, key = owner
    made = http.post("/v1/memories", json={"user_id": "cy", "text": "My dog is called Rex."})
    assert made.status_code == 201
    open_playground(page, engram_server, key, "cy")
    page.route("**/v1/context", lambda route: route.fulfill(status=503, body="{}"))

    turn = ask(page, "What is my dog called?")

    used = turn.locator(".memories-used li")
    expect(used).to_have_count(1)
    expect(used).to_contain_text("dog is called Rex")
    assert used.get_attribute("data-memory-id") == made.json()["id"]


def test_a_markdown_upload_reaches_ready_and_its_chunks_are_cited(
    page, engram_server, owner, upstream, celery_worker, offline_extraction
):
    _, key = owner
    open_playground(page, engram_server, key, "cy")
    page.get_by_label("New collection name").fill("Handbook")
    page.get_by_role("button", name="Create").click()
    expect(page.locator("#collection-status")).to_contain_text("Created collection Handbook")
    expect(page.locator("#upload-collection")).to_have_value(
        page.locator("#upload-collection option", has_text="Handbook").get_attribute("value")
    )

    markdown = (
        "# Office\n\nThe office plant is a fiddle-leaf fig named Gustavo.\n\n"
        "## Hours\n\nThe office opens at 8:30 on weekdays.\n"
    )
    page.get_by_label("File (txt, md, html, pdf, docx)").set_input_files(
        {"name": "office.md", "mimeType": "text/markdown", "buffer": markdown.encode()}
    )
    page.get_by_role("button", name="Upload").click()
    row = page.locator("#document-list li", has_text="office.md")
    expect(row.locator(".badge")).to_contain_text("ready", timeout=60_000)
    expect(page.locator("#collection-status")).to_have_text("office.md: ready")

    # "(1 docs)" before; the title and its status apart ("office.mdready" before)
    page.locator("#chat-collections").select_option(label="Handbook (1 doc)")
    assert row.inner_text().startswith("office.md ready")
    turn = ask(page, "What is the office plant called?")
    expect(turn.locator(".sources")).to_contain_text("office.md")
    expect(turn.locator(".sources blockquote").first).to_contain_text("Gustavo")
    expect(turn.locator(".blocks")).to_contain_text("knowledge")
    assert "Gustavo" in str(upstream.chat_requests()[-1].body["messages"])


def test_the_model_picker_lists_agents_and_a_chat_with_one_uses_its_instructions(
    page, engram_server, owner, http, upstream
):
    _, key = owner
    agent = {"name": "concierge", "model": MODEL, "instructions": "Answer as a concierge."}
    assert http.post("/v1/agents", json=agent).status_code == 201
    open_playground(page, engram_server, key, "ada")
    option = page.locator('#model option[value="agent:concierge"]')
    expect(option).to_have_text(f"agent:concierge (agent v1, {MODEL})")
    page.get_by_label("Model").select_option("agent:concierge")

    turn = ask(page, "Where can I eat tonight?")
    expect(turn.locator(".answer")).to_have_text("echo: Where can I eat tonight?")
    sent = upstream.chat_requests()[-1].body
    assert sent["model"] == MODEL  # the agent's model reached the upstream
    assert sent["messages"][0] == {"role": "system", "content": "Answer as a concierge."}


def test_a_new_chat_mid_answer_no_user_and_a_forgotten_key_leave_nothing_behind(
    page, engram_server, owner, http, upstream
):
    """ "New chat" while an answer streamed put that answer at the head of the new chat; a turn
    without a user id read "? context tokens"; another user's memories (or none's) stayed
    listed with live buttons, and so did everything after "Forget key"."""
    _, key = owner
    assert http.post("/v1/memories", json={"user_id": "ada", "text": "Ada keeps bees."}).is_success
    open_playground(page, engram_server, key, "ada")
    expect(page.locator("#memory-list")).to_contain_text("keeps bees")

    upstream.script(Reply(stream=openai_stream(["slow", " answer"]), delay=0.5))
    page.get_by_label("Message").fill("First chat.")
    page.get_by_role("button", name="Send").click()
    page.wait_for_function(
        "() => [...document.querySelectorAll('#transcript .answer')].pop()?.textContent === 'slow'"
    )
    page.get_by_role("button", name="New chat").click()
    expect(page.get_by_role("button", name="Send")).to_be_enabled()  # the first answer ended
    ask(page, "Second chat.")
    sent = upstream.chat_requests()[-1].body["messages"]
    assert [m["content"] for m in sent if m["role"] in ("user", "assistant")] == ["Second chat."]

    page.get_by_label("User id").fill("")
    page.get_by_label("User id").dispatch_event("change")
    expect(page.locator("#memory-list li")).to_have_count(0)
    page.get_by_label("Message").fill("Anyone there?")
    page.get_by_role("button", name="Send").click()
    turn = page.locator("#transcript li.turn:has(aside)").last
    expect(turn.locator(".summary")).to_have_text("No memory for this turn (no user id).")

    conversation = page.locator("#conversation-id").inner_text()
    page.get_by_role("button", name="Forget key").click()
    expect(page.locator("#model option")).to_have_count(0)
    expect(page.locator("#memory-list li")).to_have_count(0)
    # the chat goes too (its answers and their memories stayed on screen), and for good
    expect(page.locator("#transcript li")).to_have_count(0)
    expect(page.locator("#conversation-id")).not_to_have_text(conversation)
    page.reload()
    expect(page.locator("#transcript li")).to_have_count(0)
    expect(page.locator("#conversation-id")).not_to_have_text(conversation)


def test_a_memory_list_asked_for_before_the_user_id_changed_is_not_shown_after(
    page, engram_server, owner, http, upstream
):
    """A turn's refresh of the memory list that answered after the user id was cleared (or
    the key forgotten) filled the emptied list with the previous user's memories."""
    _, key = owner
    assert http.post("/v1/memories", json={"user_id": "ada", "text": "Ada keeps bees."}).is_success
    open_playground(page, engram_server, key, "ada")
    expect(page.locator("#memory-list")).to_contain_text("keeps bees")

    held = []
    page.route("**/v1/memories?*", lambda route: held.append(route))  # requests wait here
    page.get_by_label("User id").fill("ada")
    page.get_by_label("User id").dispatch_event("change")
    for _ in range(50):
        if held:
            break
        page.wait_for_timeout(100)
    assert held, "the playground asked for no memory list"

    page.get_by_label("User id").fill("")
    page.get_by_label("User id").dispatch_event("change")
    expect(page.locator("#memory-list li")).to_have_count(0)
    held[0].continue_()
    page.wait_for_timeout(1000)  # the old answer has arrived
    expect(page.locator("#memory-list li")).to_have_count(0)


def test_the_model_picker_starts_on_a_plain_model_not_the_first_agent(
    page, engram_server, owner, http, upstream
):
    """Agents are listed first: the picker started on `agent:<first>`, whose tools may run or
    wait for approval, when the user had picked nothing."""
    _, key = owner
    agent = {"name": "aardvark", "model": MODEL, "instructions": "Be an agent."}
    assert http.post("/v1/agents", json=agent).status_code == 201
    page.goto(engram_server.url + "/playground")
    page.get_by_label("Workspace key").fill(key)
    page.get_by_role("button", name="Use key").click()
    expect(page.locator('#model option[value="agent:aardvark"]')).to_be_attached()
    assert page.locator("#model option").first.get_attribute("value") == "agent:aardvark"
    expect(page.get_by_label("Model")).to_have_value(DEFAULT_MODEL)
    page.get_by_label("Model").select_option("agent:aardvark")  # still selectable
    expect(page.get_by_label("Model")).to_have_value("agent:aardvark")


def test_without_the_local_model_the_picker_starts_on_the_first_upstream_model(
    page, engram_server, owner
):
    _, key = owner
    listing = {
        "object": "list",
        "data": [
            {
                "id": "agent:a",
                "object": "model",
                "created": 0,
                "owned_by": "ws",
                "agent_id": "x",
                "version": 1,
                "target": MODEL,
            },
            {
                "id": "fast",
                "object": "model",
                "created": 0,
                "owned_by": "engram-alias",
                "target": MODEL,
            },
            {"id": MODEL, "object": "model", "created": 0, "owned_by": "openai"},
        ],
    }
    page.route("**/v1/models", lambda route: route.fulfill(json=listing))
    page.goto(engram_server.url + "/playground")
    page.get_by_label("Workspace key").fill(key)
    page.get_by_role("button", name="Use key").click()
    expect(page.locator("#model option")).to_have_count(3)
    expect(page.get_by_label("Model")).to_have_value(MODEL)


def open_with_key(page: Page, server, key: str) -> None:
    page.goto(server.url + "/playground")
    page.get_by_label("Workspace key").fill(key)
    page.get_by_role("button", name="Use key").click()
    expect(page.locator('#model option[value="local"]')).to_be_attached()


def test_the_model_picker_starts_on_the_workspaces_default_routed_model(
    page, engram_server, owner, upstream, offline_extraction
):
    """With an upstream configured the picker started on `local`, the offline echo: a first
    message in the playground never reached the workspace's model. It starts on the model the
    workspace's routes default to (Engram's own calls use it), and a chat goes there."""
    _, key = owner
    open_with_key(page, engram_server, key)
    expect(page.get_by_label("Model")).to_have_value(DEFAULT_MODEL)
    # the embedding model is listed by /v1/models, but answers no chat: not in the picker
    expect(page.locator('#model option[value="all-MiniLM-L6-v2"]')).to_have_count(0)
    upstream.script(Reply(stream=openai_stream(["Hello ", "from upstream."])))
    page.get_by_label("User id").fill("u_default")
    page.get_by_label("User id").dispatch_event("change")
    turn = ask(page, "Which model is this?")
    expect(turn).to_contain_text("Hello from upstream.")
    assert upstream.chat_requests()[-1].body["model"] == DEFAULT_MODEL


def test_the_default_model_is_the_operators_choice_and_local_without_upstream(
    page, engram_server, owner, settings, upstream
):
    _, key = owner
    settings.ENGRAM_MEMORY_LLM_MODEL = MODEL
    open_with_key(page, engram_server, key)
    expect(page.get_by_label("Model")).to_have_value(MODEL)
    settings.OPENAI_BASE_URL = settings.OPENAI_API_KEY = ""
    settings.ANTHROPIC_BASE_URL = settings.ANTHROPIC_API_KEY = ""
    settings.ENGRAM_MEMORY_LLM_MODEL = ""
    page.evaluate("sessionStorage.clear()")  # no choice kept from the first visit
    open_with_key(page, engram_server, key)
    expect(page.get_by_label("Model")).to_have_value("local")


def approval_agent(http, tool_server) -> None:
    agent = {"name": "booker", "model": MODEL, "instructions": "Book tables."}
    made = http.post("/v1/agents", json=agent)
    assert made.status_code == 201, made.text
    tool = {
        "name": "book_table",
        "description": "Book a table.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        "type": "http",
        "http": {"url": tool_server.url + "/book", "method": "POST"},
        "approval": "always",
    }
    assert http.post(f"/v1/agents/{made.json()['id']}/tools", json=tool).status_code == 201


def ask_the_agent(page, engram_server, key, upstream, answer: str):
    upstream.script(
        Reply(stream=openai_tool_stream([tool_call("call_1", "book_table", {"city": "Paris"})])),
        Reply(stream=openai_stream([answer])),
    )
    open_playground(page, engram_server, key, "ada")
    page.get_by_label("Model").select_option("agent:booker")
    page.get_by_label("Message").fill("Book me a table in Paris.")
    page.get_by_role("button", name="Send").click()
    approval = page.get_by_role("group", name="Tool calls waiting for approval")
    expect(approval).to_contain_text("Waiting for your approval")
    expect(approval).to_contain_text("book_table")
    expect(approval.locator("pre")).to_contain_text('"city": "Paris"')
    return page.locator("#transcript li.turn:has(aside)").last, approval


def test_an_agent_paused_for_approval_shows_the_call_and_goes_on_when_approved(
    page, engram_server, owner, http, upstream, tool_server
):
    """A paused run showed nothing: an empty answer, and its call nowhere."""
    _, key = owner
    approval_agent(http, tool_server)
    turn, approval = ask_the_agent(page, engram_server, key, upstream, "Booked for 8pm.")
    expect(page.locator("#chat-status")).to_have_text("The agent waits for your approval.")
    assert tool_server.calls == []  # nothing runs before the human says so

    approval.get_by_role("button", name="Approve").click()
    expect(turn.locator(".answer")).to_have_text("Booked for 8pm.")
    expect(turn.locator(".tool-calls")).to_contain_text("book_table")
    expect(turn.locator(".tool-calls")).to_contain_text("completed")
    expect(approval.get_by_role("status")).to_have_text("Approved.")
    expect(page.locator("#chat-status")).to_have_text("")
    expect(approval.get_by_role("button", name="Approve")).to_be_disabled()
    assert [c["body"] for c in tool_server.calls] == [{"city": "Paris"}]

    ask(page, "Thanks!")  # the next turn carries the question and the answer after approval
    sent = upstream.chat_requests()[-1].body["messages"]
    said = [m.get("content") for m in sent if m["role"] in ("user", "assistant")]
    assert said[-3:] == ["Book me a table in Paris.", "Booked for 8pm.", "Thanks!"], said


def test_an_agent_paused_for_approval_answers_after_a_rejection(
    page, engram_server, owner, http, upstream, tool_server
):
    _, key = owner
    approval_agent(http, tool_server)
    turn, approval = ask_the_agent(page, engram_server, key, upstream, "I did not book it.")
    approval.get_by_label("Reason (optional, sent with a rejection)").fill("Too expensive")
    approval.get_by_role("button", name="Reject").click()
    expect(turn.locator(".answer")).to_have_text("I did not book it.")
    expect(approval.get_by_role("status")).to_have_text("Rejected.")
    assert tool_server.calls == []
    tool_message = upstream.chat_requests()[-1].body["messages"][-1]
    assert tool_message["role"] == "tool" and "Too expensive" in tool_message["content"]


def test_a_resume_whose_stream_failed_can_be_sent_again(
    page, engram_server, owner, http, upstream, tool_server, settings
):
    """The upstream failed during the resume's model call: the error showed, but Approve and
    Reject stayed disabled, while Engram takes the same decision again and goes on."""
    settings.ENGRAM_UPSTREAM_RETRIES = 0  # the one failure reaches the stream
    _, key = owner
    approval_agent(http, tool_server)
    upstream.script(
        Reply(stream=openai_tool_stream([tool_call("call_1", "book_table", {"city": "Paris"})])),
        Reply(status=500, json={"error": {"message": "down"}}),
        Reply(stream=openai_stream(["Booked for 8pm."])),
    )
    open_playground(page, engram_server, key, "ada")
    page.get_by_label("Model").select_option("agent:booker")
    page.get_by_label("Message").fill("Book me a table in Paris.")
    page.get_by_role("button", name="Send").click()
    approval = page.get_by_role("group", name="Tool calls waiting for approval")
    approve = approval.get_by_role("button", name="Approve")
    expect(approve).to_be_enabled()
    turn = page.locator("#transcript li.turn:has(aside)").last

    approve.click()
    expect(approval.get_by_role("status")).to_have_class(re.compile(r"\berror\b"))
    expect(approval.get_by_role("status")).to_contain_text("status 500")
    expect(approve).to_be_enabled()
    # the decision is sent: the other one would be refused
    expect(approval.get_by_role("button", name="Reject")).to_be_disabled()
    expect(turn.locator(".answer")).to_have_text("")

    approve.click()
    expect(turn.locator(".answer")).to_have_text("Booked for 8pm.")
    expect(approval.get_by_role("status")).to_have_text("Approved.")
    expect(approval.get_by_role("status")).not_to_have_class(re.compile(r"\berror\b"))
    expect(approve).to_be_disabled()
    assert [c["body"] for c in tool_server.calls] == [{"city": "Paris"}]  # ran once


def test_an_approval_is_reached_and_given_by_keyboard(
    page, engram_server, owner, http, upstream, tool_server
):
    """A paused run left the focus in the message box, below the calls it waits on; pressed,
    Approve was disabled and the focus fell to the page's top."""
    _, key = owner
    approval_agent(http, tool_server)
    turn, approval = ask_the_agent(page, engram_server, key, upstream, "Booked for 8pm.")
    approve = approval.get_by_role("button", name="Approve")
    expect(approve).to_be_focused()
    page.keyboard.press("Enter")
    expect(turn.locator(".answer")).to_have_text("Booked for 8pm.")
    expect(page.get_by_label("Message")).to_be_focused()
    assert [c["body"] for c in tool_server.calls] == [{"city": "Paris"}]


def test_a_run_waiting_for_approval_still_waits_after_a_reload(
    page, engram_server, owner, http, upstream, tool_server
):
    """Reloaded while an agent waited for approval, the page lost the calls and their Approve
    and Reject: the run waited unseen until it expired."""
    _, key = owner
    approval_agent(http, tool_server)
    ask_the_agent(page, engram_server, key, upstream, "Booked for 8pm.")
    page.reload()

    approval = page.get_by_role("group", name="Tool calls waiting for approval")
    expect(approval).to_contain_text("book_table")
    expect(approval.locator("pre")).to_contain_text('"city": "Paris"')
    expect(page.locator("#transcript")).to_contain_text("Book me a table in Paris.")
    expect(approval.get_by_role("button", name="Approve")).to_be_focused()
    page.keyboard.press("Enter")
    turn = page.locator("#transcript li.turn:has(aside)").last
    expect(turn.locator(".answer")).to_have_text("Booked for 8pm.")
    assert [c["body"] for c in tool_server.calls] == [{"city": "Paris"}]

    page.reload()  # decided: nothing waits any more
    expect(page.locator("#transcript")).to_contain_text("Booked for 8pm.")
    expect(page.get_by_role("group", name="Tool calls waiting for approval")).to_have_count(0)


def test_a_document_still_being_read_after_a_reload_is_seen_to_get_ready(
    page, engram_server, owner, http, upstream
):
    """Only the upload's own page followed a document to ready: after a reload (or uploaded
    elsewhere) it said "queued" for good."""
    from memory.knowledge.models import Document

    _, key = owner
    collection = http.post("/v1/collections", json={"name": "Handbook"}).json()
    made = http.post(
        f"/v1/collections/{collection['id']}/documents",
        files={
            "file": ("office.md", b"# Office\n\nThe plant is called Gustavo.\n", "text/markdown")
        },
    )
    assert made.status_code in (201, 202), made.text  # no worker here: it stays queued
    open_playground(page, engram_server, key, "dr")
    row = page.locator("#document-list li", has_text="office.md")
    expect(row.locator(".badge")).to_have_text("queued")
    Document.objects.filter(pk=made.json()["id"]).update(status="ready")  # as the worker does
    expect(row.locator(".badge")).to_have_text("ready")


def test_past_the_first_hundred_documents_show_more_lists_the_rest(
    page, engram_server, owner, http, upstream
):
    """A collection's document list showed its first 100 documents and nothing said there
    were more: the 101st of a 130-document collection was never seen."""
    from memory.knowledge.models import Document

    _, key = owner
    collection = http.post("/v1/collections", json={"name": "Archive"}).json()
    for i in range(130):
        made = http.post(
            f"/v1/collections/{collection['id']}/documents",
            files={"file": (f"note-{i:03}.md", f"# Note {i}\n\nNumber {i}.\n".encode())},
        )
        assert made.status_code in (201, 202), made.text
    open_playground(page, engram_server, key, "dm")
    rows = page.locator("#document-list > li")
    expect(rows).to_have_count(100)
    more = page.get_by_role("button", name="Show more documents")
    more.click()
    expect(rows).to_have_count(130)
    expect(more).to_be_hidden()
    titles = rows.locator("span:not(.badge)").all_inner_texts()
    assert sorted(titles) == [f"note-{i:03}.md" for i in range(130)]  # each once, the first too
    expect(rows.nth(100)).to_be_focused()  # where the new ones begin
    # Still being read (no worker here), looked at again: the first page's redrawn in place,
    # the pages past it stay.
    newest = rows.first.get_attribute("data-document-id")
    Document.objects.filter(pk=newest).update(status="ready")  # as the worker does
    expect(rows.first.locator(".badge")).to_have_text("ready")
    expect(rows).to_have_count(130)


def test_another_user_id_starts_another_conversation(page, engram_server, owner, http, upstream):
    """Changing the user id mid-conversation made every next turn a 403 ("Conversation … belongs
    to another user of this workspace") until "New chat" was pressed, which nothing said."""
    _, key = owner
    open_playground(page, engram_server, key, "aa")
    ask(page, "Hello, I am aa.")
    first = page.locator("#conversation-id").inner_text()
    page.get_by_label("User id").fill("bb")
    page.get_by_label("Search memories").focus()  # leaving the field: its change
    expect(page.locator("#chat-status")).to_have_text(
        "New conversation, for bb: a conversation is one user's."
    )
    expect(page.locator("#conversation-id")).not_to_have_text(first)
    turn = ask(page, "Hello, I am bb.")
    expect(turn.locator(".answer")).to_have_text("echo: Hello, I am bb.")
    sent = upstream.chat_requests()[-1].body["messages"]
    assert [m["content"] for m in sent if m["role"] == "user"] == ["Hello, I am bb."]
    assert len(http.get("/v1/conversations", params={"user_id": "bb"}).json()["data"]) == 1


def test_a_failed_answer_still_lists_the_knowledge_its_preview_found(
    page, engram_server, owner, upstream
):
    """With the answer failing (the upstream down), "What Engram did" listed the preview's
    memories and past messages but left "Knowledge sources" empty: the chunks it found were not
    shown, nor even "none"."""
    import json

    _, key = owner
    open_playground(page, engram_server, key, "cy")
    source = {
        "collection_id": "col_1",
        "document_id": "doc_1",
        "title": "bees.md",
        "chunk_index": 0,
        "score": 0.8181,
        "snippet": "Bees make honey.",
        "why": "vector rank 1",
    }
    preview = {
        "object": "chat.context",
        "context_tokens": 40,
        "blocks": [
            {"name": "request", "tokens": 10, "items": []},
            {
                "name": "knowledge",
                "tokens": 30,
                "items": [{"id": "doc_1#0", "type": "knowledge", "sources": [source]}],
            },
        ],
    }
    page.route("**/v1/context", lambda route: route.fulfill(json=preview))
    down = {"error": {"message": "Could not reach the upstream provider.", "type": "api_error"}}
    page.route(
        "**/v1/chat/completions",
        lambda route: route.fulfill(status=502, body=json.dumps(down)),
    )

    page.get_by_label("Message").fill("How do bees make honey?")
    page.get_by_role("button", name="Send").click()
    turn = page.locator("#transcript li.turn:has(aside)").last
    expect(turn.locator(".answer .error")).to_contain_text("Could not reach the upstream")
    expect(turn.locator(".sources li")).to_have_count(1)
    expect(turn.locator(".sources li")).to_contain_text("bees.md")
    expect(turn.locator(".sources li")).to_contain_text("Bees make honey.")


def test_an_error_page_in_place_of_an_answer_is_said_in_words(page, engram_server, owner, upstream):
    """A proxy's error page (nginx's "502 Bad Gateway") was shown as its markup, tags and all,
    under the question and in the status line."""
    _, key = owner
    open_playground(page, engram_server, key, "cy")
    nginx = (
        "<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway"
        "</h1></center><hr><center>nginx</center></body></html>"
    )
    page.route(
        "**/v1/chat/completions",
        lambda route: route.fulfill(status=502, content_type="text/html", body=nginx),
    )
    page.get_by_label("Message").fill("Hello?")
    page.get_by_role("button", name="Send").click()
    turn = page.locator("#transcript li.turn:has(aside)").last
    expect(turn.locator(".answer .error")).to_have_text("502: 502 Bad Gateway")
    expect(page.locator("#chat-status")).to_have_text("502: 502 Bad Gateway")


def test_a_stream_cut_before_its_end_is_said_to_be(page, engram_server, owner, upstream):
    """A stream that closed without its [DONE] (Engram restarted, a proxy's timeout) read as a
    finished turn: the answer empty, and "No memory for this turn (no user id)" under it, with
    a user id set."""
    _, key = owner
    open_playground(page, engram_server, key, "cy")
    page.route(
        "**/v1/chat/completions",
        lambda route: route.fulfill(status=200, content_type="text/event-stream", body=""),
    )
    page.get_by_label("Message").fill("Hello?")
    page.get_by_role("button", name="Send").click()
    turn = page.locator("#transcript li.turn:has(aside)").last
    expect(turn.locator(".answer .error")).to_contain_text("cut off before its end")
    expect(turn.locator(".summary")).not_to_contain_text("no user id")
    expect(page.locator("#chat-status")).to_contain_text("cut off before its end")
