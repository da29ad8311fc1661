"""The admin in a real browser, against the ASGI app: sign in with the email, styled pages (the
stylesheets came from the app itself), and from the end-user list to a memory and its history."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User

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
