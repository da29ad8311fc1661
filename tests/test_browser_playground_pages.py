"""The playground's lists past their first page, in a real Chromium against a live Engram: a
collection's documents still being read are followed to ready wherever they are listed."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.test_browser_playground import open_playground


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
