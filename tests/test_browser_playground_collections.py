"""The playground's collections in a real Chromium against a live Engram: two of one name told
apart in the pickers, and a document's upload followed until it is done, failed or gone."""

from __future__ import annotations

import json
import re
import time

import pytest
from playwright.sync_api import Page, expect
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from tests.test_browser_playground import ask, open_playground


def _option_of(page: Page, select: str, collection_id: str) -> str:
    """The label of `collection_id`'s option in `select`, as the user reads it."""
    option = page.locator(f"{select} option[value='{collection_id}']")
    expect(option).to_be_attached()
    return option.inner_text()


def test_two_collections_of_one_name_are_told_apart_and_the_one_picked_is_used(
    page, engram_server, owner, http, upstream
):
    """Two collections named "Docs" were listed as "Docs (0 docs)" twice: nothing told the
    user which one an upload would go to, or a chat would search."""
    from memory.knowledge.models import Document

    _, key = owner
    first = http.post("/v1/collections", json={"name": "Docs"}).json()
    second = http.post("/v1/collections", json={"name": "Docs"}).json()
    open_playground(page, engram_server, key, "tw")

    for select in ("#upload-collection", "#chat-collections"):
        labels = {_option_of(page, select, c["id"]) for c in (first, second)}
        assert len(labels) == 2 and all(label.startswith("Docs") for label in labels), labels
    second_label = _option_of(page, "#upload-collection", second["id"])

    page.locator("#upload-collection").select_option(label=second_label)
    page.get_by_label("File (txt, md, html, pdf, docx)").set_input_files(
        {"name": "office.md", "mimeType": "text/markdown", "buffer": b"# Office\n\nHello.\n"}
    )
    page.get_by_role("button", name="Upload").click()
    expect(page.locator("#document-list li", has_text="office.md")).to_be_attached()
    stored = Document.objects.get(title="office.md")
    assert stored.collection_id == second["id"]  # no worker here: it stays queued

    chat_label = _option_of(page, "#chat-collections", second["id"])
    page.locator("#chat-collections").select_option(label=chat_label)
    with page.expect_request("**/v1/chat/completions") as sent:
        ask(page, "What is in the office?")
    assert json.loads(sent.value.headers["x-collection-ids"]) == [second["id"]]


DOCUMENT = re.compile(r"/documents/doc_")  # one document's own URL: the upload's look at it


def _upload(page: Page, server, key: str, http) -> tuple[dict, str]:
    """A collection, the playground open on it with its clock paused (its waits end when the
    test runs the clock), and office.md uploaded there by the page: queued, with no worker here."""
    from memory.knowledge.models import Document

    collection = http.post("/v1/collections", json={"name": "Handbook"}).json()
    page.clock.install()
    open_playground(page, server, key, "up")
    page.clock.pause_at(int(time.time() * 1000) + 1_000)  # from here, no wait ends by itself
    page.get_by_label("File (txt, md, html, pdf, docx)").set_input_files(
        {"name": "office.md", "mimeType": "text/markdown", "buffer": b"# Office\n\nHello.\n"}
    )
    page.get_by_role("button", name="Upload").click()
    expect(page.locator("#document-list li", has_text="office.md")).to_be_attached()
    return collection, Document.objects.get(title="office.md").pk


def _asks_no_more(page: Page, url) -> None:
    """No request to `url` through ten minutes of the page's time (its timers all fire)."""
    with pytest.raises(PlaywrightTimeout), page.expect_request(url, timeout=3_000):
        page.clock.run_for(600_000)


def test_a_document_deleted_while_read_is_said_gone_and_looked_at_no_more(
    page, engram_server, owner, http, upstream
):
    """A document deleted before it was read stayed "queued" on the page, and the list was
    asked for it every 2 s for as long as the page was open."""
    _, key = owner
    collection, document_id = _upload(page, engram_server, key, http)
    gone = http.delete(f"/v1/collections/{collection['id']}/documents/{document_id}")
    assert gone.status_code == 200, gone.text
    page.clock.run_for(1_000)  # the upload's next look

    expect(page.locator("#collection-status")).to_have_class(re.compile("error"))
    _asks_no_more(page, re.compile(r"/documents"))
    row = page.locator("#document-list li", has_text="office.md")
    expect(row.locator(".badge")).to_have_text("deleted")
    expect(page.locator("#collection-status")).to_contain_text("office.md: no longer in the")


def test_a_document_whose_reading_failed_says_why_and_is_looked_at_no_more(
    page, engram_server, owner, http, upstream
):
    from memory.knowledge.models import Document

    _, key = owner
    _, document_id = _upload(page, engram_server, key, http)
    Document.objects.filter(pk=document_id).update(
        status="failed", error="Not a PDF."
    )  # as the worker
    # the upload's next look, then the lists loaded again once (the document count)
    with page.expect_response(re.compile(r"/documents\?")):
        page.clock.run_for(1_000)
    expect(page.locator("#collection-status")).to_have_text("office.md: failed — Not a PDF.")
    expect(page.locator("#collection-status")).to_have_class(re.compile("error"))
    _asks_no_more(page, re.compile(r"/documents"))
    row = page.locator("#document-list li", has_text="office.md")
    expect(row.locator(".badge")).to_have_text("failed")


def test_looks_that_keep_failing_are_given_up_after_a_few_and_said(
    page, engram_server, owner, http, upstream
):
    """A failed look at the uploaded document ended the following at once, on the first
    hiccup (a 503 while Engram restarted): it is tried again, each wait longer, and given up
    after a few failures in a row, said on the page."""
    _, key = owner
    looks: list[str] = []

    def unavailable(route):
        looks.append(route.request.url)
        route.fulfill(
            status=503,
            json={
                "error": {"message": "Down.", "type": "server_error", "param": None, "code": None}
            },
        )

    page.route(DOCUMENT, unavailable)
    _upload(page, engram_server, key, http)
    status = page.locator("#collection-status")
    for failed in range(1, 5):  # each wait (twice the last, at most 15 s) run at once
        with page.expect_request(DOCUMENT):
            page.clock.run_for(20_000)
        # said once the answer is read, the next wait set
        expect(status).to_contain_text(f"{failed} failed look{'s' if failed > 1 else ''} in a")
    with page.expect_request(DOCUMENT):
        page.clock.run_for(20_000)
    expect(page.locator("#collection-status")).to_contain_text(
        "office.md: stopped looking at it (503: Down.)"
    )
    expect(page.locator("#collection-status")).to_have_class(re.compile("error"))
    assert len(looks) == 5
    _asks_no_more(page, DOCUMENT)
    assert len(looks) == 5
