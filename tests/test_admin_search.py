# ruff: noqa: F811  (the fixtures of tests/test_admin_pages.py, imported by name)
"""An admin list's search box bounds the words it sends the database: each is an OR over the
list's search fields, ANDed with the others, and a few thousand words held a web process until
the statement timeout (a 503) or the client gave up."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from config.admin_save import MAX_SEARCH_TERMS
from tests.test_admin_pages import admin_client, world  # noqa: F401  (fixtures)


def _likes(queries) -> int:
    """The most LIKE conditions one statement had."""
    return max((q["sql"].count("LIKE") for q in queries), default=0)


@pytest.mark.parametrize(
    "page", ["memory_message", "memory_memory", "memory_conversation", "completions_usagerecord"]
)
def test_a_search_of_thousands_of_words_is_refused_with_a_message(admin_client, world, page):
    url = reverse(f"admin:{page}_changelist")
    with CaptureQueriesContext(connection) as queries:
        response = admin_client.get(url, {"q": "w " * 2000})
    assert response.status_code == 200
    assert response.context["cl"].result_count == 0
    assert f"at most {MAX_SEARCH_TERMS} words" in response.content.decode()
    assert _likes(queries) == 0  # 2,000 words x the search fields before


def test_a_search_within_the_bound_still_finds_rows(admin_client, world):
    url = reverse("admin:memory_message_changelist")
    words = " ".join(["cycling", "Pyrenees", '"three week"'] + ["trip"] * (MAX_SEARCH_TERMS - 3))
    response = admin_client.get(url, {"q": words})
    assert response.status_code == 200
    assert response.context["cl"].result_count == 1
    assert "at most" not in response.content.decode()
