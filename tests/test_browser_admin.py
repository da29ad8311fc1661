"""The admin in a real browser, against the ASGI app: sign in with the email, styled pages (the
stylesheets came from the app itself), and from the end-user list to a memory and its history."""

from __future__ import annotations

import json
import time

import pytest
from django.contrib.auth.models import User
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import expect

from completions.models import UsageRecord
from memory.services import memory_create, memory_update
from tests.factories import make_workspace

pytestmark = pytest.mark.django_db(transaction=True)

STYLES = """() => {
  const sheet = [...document.styleSheets].find(s => (s.href || '').endsWith('/admin/css/base.css'));
  return {
    rules: sheet ? sheet.cssRules.length : 0,
    header: getComputedStyle(document.querySelector('#header')).backgroundColor,
  };
}"""


def _sign_in(page, url: str) -> None:
    """The admin's sign-in as the operator the test made (ops@example.com)."""
    page.goto(url + "/admin/")
    page.fill("#id_username", "ops@example.com")
    page.fill("#id_password", "a-long-password")
    page.click("input[type=submit]")
    page.wait_for_url(url + "/admin/")


def _add_key(page, url: str, *, workspace, name: str) -> None:
    """The admin's add-API-key form, filled and saved: the page is its answer."""
    page.goto(url + "/admin/accounts/apikey/add/")
    page.select_option("#id_workspace", label=str(workspace))
    page.fill("#id_name", name)
    page.click("input[name=_save]")


def test_operator_signs_in_sees_styled_pages_and_a_memory_with_its_history(page, engram_server):
    User.objects.create_superuser("ops", "ops@example.com", "a-long-password")
    workspace, _ = make_workspace("acme")
    memory = memory_create(
        workspace=workspace, user_id="alice", text="Alice keeps bees.", actor="extractor:offline"
    )
    memory_update(workspace=workspace, memory=memory, text="Alice keeps two hives.", actor="api")

    page.goto(engram_server.url + "/admin/")
    assert page.locator("label[for=id_username]").inner_text() == "Email:"
    page.fill("#id_username", "ops@example.com")
    page.fill("#id_password", "a-long-password")
    page.click("input[type=submit]")
    page.wait_for_url(engram_server.url + "/admin/")

    assert page.locator("#site-name").inner_text() == "Engram admin"
    assert page.get_by_role("link", name="View site").count() == 0
    styles = page.evaluate(STYLES)
    assert styles["rules"] > 0, "admin/css/base.css did not load"
    assert styles["header"] not in ("rgba(0, 0, 0, 0)", "transparent"), styles

    page.get_by_role("link", name="End users").click()
    page.get_by_role("link", name="alice").click()
    assert page.locator("#memories").inner_text().count("Alice keeps two hives.") == 1
    page.get_by_role("link", name="Alice keeps two hives.").click()

    history = page.locator(".field-history").inner_text()
    assert "ADD" in history and "extractor:offline" in history and "Alice keeps bees." in history
    assert "UPDATE" in history and "Alice keeps two hives." in history
    assert page.evaluate(STYLES)["rules"] > 0


def test_on_a_phone_the_end_user_and_usage_pages_do_not_scroll_sideways(
    page, engram_server, owner, http, upstream
):
    """At 390 px the end-user list, a user's page and the usage totals ran past the screen and
    the whole page scrolled sideways (header, breadcrumbs and all); Django's own lists scroll
    their table only."""
    User.objects.create_superuser("ops", "ops@example.com", "a-long-password")
    workspace, _ = owner
    memory_create(workspace=workspace, user_id="alice", text="Alice keeps bees.", actor="api")
    chat = {"model": "upstream-model-a", "messages": [{"role": "user", "content": "Hello"}]}
    assert http.post("/v1/chat/completions", json=chat, headers={"x-user-id": "alice"}).is_success
    deadline = time.monotonic() + 30
    while not UsageRecord.objects.filter(workspace=workspace).exists():  # written after the answer
        assert time.monotonic() < deadline, "no usage record"
        time.sleep(0.1)

    page.set_viewport_size({"width": 390, "height": 844})
    _sign_in(page, engram_server.url)
    wide = "document.documentElement.scrollWidth > window.innerWidth"
    for path in ("/admin/memory/users/", "/admin/completions/usagerecord/"):
        page.goto(engram_server.url + path)
        assert page.locator("#result_list").is_visible()
        assert not page.evaluate(wide), path
    page.goto(engram_server.url + "/admin/memory/users/")
    page.get_by_role("link", name="alice").click()
    assert page.locator("#memories").inner_text().count("Alice keeps bees.") == 1
    assert not page.evaluate(wide), page.url


def test_an_answers_page_shows_what_it_was_given_and_why(page, engram_server):
    """The admin's page of an answer: each memory it was given, linked as it is now with the
    ranking's reasons, and one deleted since said to be (Message.recalled)."""
    from memory.services.conversations import conversation_get_or_create, messages_append

    User.objects.create_superuser("ops", "ops@example.com", "a-long-password")
    workspace, _ = make_workspace("acme")
    kept = memory_create(
        workspace=workspace, user_id="alice", text="Alice keeps bees.", actor="extractor:offline"
    )
    conversation, _ = conversation_get_or_create(
        workspace=workspace, external_id="c1", user_id="alice"
    )
    why = "vector rank 1 (similarity 0.61); blended score 0.6100"
    [answer] = messages_append(
        workspace=workspace,
        conversation=conversation,
        session=None,
        messages=[{"role": "assistant", "content": "Bees it is."}],
        recalled=[
            {"type": "memory", "id": kept.id, "why": why, "score": 0.61},
            {"type": "memory", "id": "mem_gone", "why": "full-text rank 1", "score": 0.2},
        ],
    )

    _sign_in(page, engram_server.url)
    page.goto(engram_server.url + f"/admin/memory/message/{answer.id}/change/")

    recalled = page.locator(".field-recalled_for_this_answer").inner_text()
    assert "Alice keeps bees." in recalled and why in recalled
    assert "mem_gone (deleted since)" in recalled
    page.get_by_role("link", name="Alice keeps bees.").click()
    page.wait_for_url(f"**/admin/memory/memory/{kept.id}/change/")


def test_an_add_form_shows_no_id_the_row_will_not_get(page, engram_server):
    """The add forms of a memory, a key, a collection, a tool, an issuer and a session showed
    "Id: mem_01…", the model's default made for that page: the row saved got another id."""
    from django.contrib.admin.utils import quote

    from memory.models import Memory

    User.objects.create_superuser("ops", "ops@example.com", "a-long-password")
    workspace, _ = make_workspace("acme")
    _sign_in(page, engram_server.url)

    for path in ("accounts/apikey", "memory/collection", "completions/tool", "memory/session"):
        page.goto(f"{engram_server.url}/admin/{path}/add/")
        assert page.locator("#content-main form").is_visible(), path
        assert page.locator(".field-id").count() == 0, path

    page.goto(engram_server.url + "/admin/memory/memory/add/")
    assert page.locator(".field-id").count() == 0
    page.select_option("#id_workspace", label=str(workspace))
    page.fill("#id_user_id", "alice")
    page.fill("#id_text", "Alice keeps bees.")
    page.click("input[name=_continue]")
    made = Memory.objects.get(workspace=workspace, user_id="alice")
    page.wait_for_url(f"**/admin/memory/memory/{quote(made.pk)}/change/**")
    assert page.locator(".field-id .readonly").inner_text() == made.pk


def test_a_new_key_is_selected_whole_and_leads_to_the_playground(page, engram_server):
    """A double-click on the new key selected it without its "sk-" (a word break): pasted, a
    401. The page did not say where to try it."""
    User.objects.create_superuser("ops", "ops@example.com", "a-long-password")
    workspace, _ = make_workspace("acme")
    _sign_in(page, engram_server.url)
    _add_key(page, engram_server.url, workspace=workspace, name="laptop")

    key = page.locator("#new-api-key")
    raw = key.inner_text()
    assert raw.startswith("sk-")
    key.dblclick()
    assert page.evaluate("getSelection().toString()") == raw
    page.get_by_role("link", name="Try it in the playground").click()
    page.wait_for_url(engram_server.url + "/playground")
    page.get_by_label("Workspace key").fill(raw)
    page.get_by_role("button", name="Use key").click()
    expect(page.locator("#key-status")).to_have_text(
        "A key is set for this tab (sessionStorage; gone when the tab closes)."
    )
    expect(page.locator('#model option[value="local"]')).to_be_attached()


LABEL_GAPS = """() => [...document.querySelectorAll('#usage-totals thead th')].map((th) => {
  const range = document.createRange();
  const text = document.createTreeWalker(th, NodeFilter.SHOW_TEXT);
  while (text.nextNode() && !text.currentNode.textContent.trim());
  range.selectNodeContents(text.currentNode);
  return range.getBoundingClientRect();
}).map((box, i, boxes) => i + 1 < boxes.length ? boxes[i + 1].left - box.right : null)
  .filter((gap) => gap !== null)"""


def test_the_usage_totals_labels_stand_apart(page, engram_server, owner, http, upstream):
    """The totals' column labels had no padding (Django's changelist gives its header cells
    none, their inner span has it): they read "REQUESTSPROMPT TOKENSCOMPLETION TOKENS"."""
    User.objects.create_superuser("ops", "ops@example.com", "a-long-password")
    workspace, _ = owner
    chat = {"model": "upstream-model-a", "messages": [{"role": "user", "content": "Hello"}]}
    assert http.post("/v1/chat/completions", json=chat, headers={"x-user-id": "al"}).is_success
    deadline = time.monotonic() + 30
    while not UsageRecord.objects.filter(workspace=workspace).exists():  # written after the answer
        assert time.monotonic() < deadline, "no usage record"
        time.sleep(0.1)
    _sign_in(page, engram_server.url)
    page.goto(engram_server.url + "/admin/completions/usagerecord/")
    expect(page.locator("#usage-totals")).to_contain_text("Prompt tokens")
    gaps = page.evaluate(LABEL_GAPS)
    assert len(gaps) == 8 and min(gaps) >= 8, gaps


def test_a_new_key_page_reloaded_makes_no_second_key_and_hides_the_secret(page, engram_server):
    """The new key was shown on the answer to the add form's POST: a reload (which sends the
    form again), or Back then Forward, made a second key, its secret shown on the page. Kept
    for a redirect's GET instead, the secret lay in the session's row in the database."""
    from django.contrib.sessions.models import Session as WebSession

    from accounts.models import ApiKey

    User.objects.create_superuser("ops", "ops@example.com", "a-long-password")
    workspace, _ = make_workspace("acme")
    _sign_in(page, engram_server.url)
    _add_key(page, engram_server.url, workspace=workspace, name="laptop")
    raw = page.locator("#new-api-key").inner_text()
    made = ApiKey.objects.filter(workspace=workspace, name="laptop")
    assert raw.startswith("sk-") and made.count() == 1 and raw.startswith(made.get().prefix)
    sessions = [
        json.dumps(row.get_decoded()) + row.session_data for row in WebSession.objects.all()
    ]
    assert sessions and not any(raw[3:15] in text for text in sessions), "the secret was kept"

    sent = []
    page.on("request", lambda request: sent.append(request.method))
    page.on("dialog", lambda dialog: dialog.accept())  # "send the form again?"
    page.reload()
    assert made.count() == 1, "the reload made a second key"
    assert raw not in page.content()
    expect(page.locator("#new-api-key-gone")).to_contain_text("shown once")
    expect(page.get_by_role("link", name="This key's page")).to_have_attribute(
        "href", f"/admin/accounts/apikey/{made.get().pk}/change/"
    )
    assert sent[:1] == ["POST"]  # the reload sent the form again (it made nothing)
    page.go_back()  # the add form
    try:  # no-store: the answer is not kept to show again, the browser offers to send again
        page.go_forward()
    except PlaywrightError as refused:
        assert "ERR_CACHE_MISS" in str(refused)
        # the browser's own page ("Confirm Form Resubmission"), once it is drawn
        expect(page.locator("body")).to_contain_text("ERR_CACHE_MISS")
    assert raw not in page.content()
    page.reload()  # "Confirm Form Resubmission": sent
    expect(page.locator("#new-api-key-gone")).to_contain_text("shown once")
    assert raw not in page.content()
    assert made.count() == 1
    sessions = [
        json.dumps(row.get_decoded()) + row.session_data for row in WebSession.objects.all()
    ]
    assert not any(raw[3:15] in text for text in sessions)


def test_a_keys_own_page_revokes_it(page, engram_server):
    """A leaked key's page offered Delete only: revoking (which keeps the key's row and its
    usage) was a list action that an operator on the key's page did not see."""
    import httpx

    from accounts.models import ApiKey

    User.objects.create_superuser("ops", "ops@example.com", "a-long-password")
    workspace, _ = make_workspace("acme")
    _sign_in(page, engram_server.url)
    _add_key(page, engram_server.url, workspace=workspace, name="leaked")
    raw = page.locator("#new-api-key").inner_text()
    models = httpx.get(engram_server.url + "/v1/models", headers={"Authorization": f"Bearer {raw}"})
    assert models.status_code == 200
    page.get_by_role("link", name="This key's page").click()

    page.get_by_role("button", name="Revoke this key").click()
    expect(page.locator(".messagelist")).to_contain_text("Revoked leaked")
    key = ApiKey.objects.get(workspace=workspace, name="leaked")
    assert key.revoked_at is not None
    expect(page.locator(".field-revoked_at .readonly")).not_to_have_text("-")
    expect(page.get_by_role("button", name="Revoke this key")).to_have_count(0)
    models = httpx.get(engram_server.url + "/v1/models", headers={"Authorization": f"Bearer {raw}"})
    assert models.status_code == 401


def test_a_new_key_can_be_copied_from_the_keyboard(page, engram_server):
    """The new key could be selected with the mouse only: it took no focus, and Ctrl+A took the
    whole page. It is selected on arrival, and again whenever Tab comes back to it."""
    User.objects.create_superuser("ops", "ops@example.com", "a-long-password")
    workspace, _ = make_workspace("acme")
    _sign_in(page, engram_server.url)
    _add_key(page, engram_server.url, workspace=workspace, name="laptop")
    raw = page.locator("#new-api-key").inner_text()
    assert raw.startswith("sk-")
    selected = "getSelection().toString()"
    assert page.evaluate(selected) == raw
    page.keyboard.press("Tab")  # on to the next link
    page.evaluate("getSelection().removeAllRanges()")
    page.keyboard.press("Shift+Tab")
    expect(page.locator("#new-api-key")).to_be_focused()
    assert page.evaluate(selected) == raw


def test_a_workspaces_page_adds_its_first_key(page, engram_server):
    """A new workspace's page said nothing of its keys but an empty table: the operator had to
    find API keys, Add, and pick the workspace out of every one. Its page adds one to it."""
    User.objects.create_superuser("ops", "ops@example.com", "a-long-password")
    make_workspace("other")
    workspace, _ = make_workspace("acme")
    _sign_in(page, engram_server.url)
    page.goto(engram_server.url + "/admin/accounts/workspace/")
    page.get_by_role("link", name="acme").click()

    page.get_by_role("link", name="Add an API key").click()
    expect(page.locator("#id_workspace")).to_have_value(workspace.pk)
    page.fill("#id_name", "first")
    page.click("input[name=_save]")
    expect(page.locator("#content-main")).to_contain_text(f"The new API key of {workspace}")
    assert page.locator("#new-api-key").inner_text().startswith("sk-")


def test_the_collection_list_counts_a_rebuild_once_in_the_browser(page, engram_server):
    """The collection list's documents cell, as an operator sees it: the ready documents, a
    document being re-ingested from scratch (its rebuild) counted once, a queued one not."""
    from memory.models import Collection, Document

    User.objects.create_superuser("ops", "ops@example.com", "a-long-password")
    workspace, _ = make_workspace("acme")
    collection = Collection.objects.create(workspace=workspace, name="Handbook")
    ready = Document.objects.create(
        workspace=workspace,
        collection=collection,
        title="Leave policy",
        content_hash="h1",
        status=Document.Status.READY,
    )
    for title, digest, replaces, status in (
        ("Leave policy", "h1", ready, Document.Status.PROCESSING),
        ("Travel", "h2", None, Document.Status.QUEUED),
    ):
        Document.objects.create(
            workspace=workspace,
            collection=collection,
            title=title,
            content_hash=digest,
            replaces=replaces,
            status=status,
        )
    _sign_in(page, engram_server.url)
    page.goto(engram_server.url + "/admin/memory/collection/")
    row = page.locator("#result_list tbody tr", has_text="Handbook")
    expect(row.locator("td.field-documents")).to_have_text("1")
