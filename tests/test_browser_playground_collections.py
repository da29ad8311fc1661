"""The playground's collections in a real Chromium against a live Engram: two of one name told
apart in the pickers, and a document's upload followed until it is done, failed or gone."""

from __future__ import annotations

import json

from playwright.sync_api import Page, expect

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
