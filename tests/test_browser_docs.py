"""/docs in a real browser: Swagger UI from the app's own static files renders the schema, with
every request the page makes kept to Engram's own origin (nothing from a CDN)."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.django_db(transaction=True)


def test_docs_render_offline_from_engram_alone(page, engram_server):
    origins: set[str] = set()
    page.on("request", lambda request: origins.add(urlsplit(request.url).netloc))
    failed: list[str] = []
    page.on("requestfailed", lambda request: failed.append(request.url))

    page.goto(engram_server.url + "/docs")

    # operations rendered by Swagger UI from /v1/schema: the chat door and the users list
    expect(page.locator(".opblock-summary-path", has_text="/v1/chat/completions")).to_be_visible()
    expect(page.locator(".opblock-summary-path", has_text="/v1/users").first).to_be_visible()
    assert page.locator(".opblock").count() >= 30
    assert origins == {urlsplit(engram_server.url).netloc}, origins
    assert not failed, failed
