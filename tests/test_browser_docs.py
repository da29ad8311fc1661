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


def test_a_key_given_to_docs_stays_out_of_local_storage(page, engram_server, owner):
    """Swagger UI's persistAuthorization kept the pasted key in localStorage, past the tab and
    readable by any page of the origin. And no page load logs an error (the browser's own
    request for /favicon.ico was a 401)."""
    errors: list[str] = []
    page.on(
        "console", lambda message: errors.append(message.text) if message.type == "error" else None
    )
    page.goto(engram_server.url + "/docs")
    page.locator("button.authorize").first.click()
    page.locator(".modal-ux input").first.fill(owner[1])
    page.locator(".modal-ux button.authorize").first.click()
    expect(page.locator(".modal-ux button", has_text="Logout").first).to_be_visible()
    stored = page.evaluate("JSON.stringify(Object.assign({}, localStorage))")
    assert owner[1] not in stored, stored
    page.goto(engram_server.url + "/docs")
    assert owner[1] not in page.evaluate("JSON.stringify(Object.assign({}, localStorage))")
    assert not errors, errors
