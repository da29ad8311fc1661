"""A memory's text (and a query) that shows nothing is refused as blank text is: str.strip()
keeps zero-width spaces, joiners and BOMs, and "\\u200b" was stored as a memory every chat turn
of its user then read as an empty line."""

from __future__ import annotations

import pytest

from memory.models import Memory
from tests.test_errors import assert_envelope

INVISIBLE = ["\u200b", "\u200b\u200d \ufeff", " \u2060\n"]


@pytest.mark.parametrize("text", INVISIBLE)
def test_a_memory_that_shows_nothing_is_refused_naming_text(http, text):
    resp = http.post("/v1/memories", json={"user_id": "alice", "text": text})
    assert assert_envelope(resp, 400, code="invalid_value")["param"] == "text"

    memory = http.post("/v1/memories", json={"user_id": "alice", "text": "Alice keeps bees."})
    resp = http.patch(f"/v1/memories/{memory.json()['id']}", json={"text": text})
    assert assert_envelope(resp, 400, code="invalid_value")["param"] == "text"
    assert [m.text for m in Memory.objects.all()] == ["Alice keeps bees."]


@pytest.mark.parametrize("path", ["/v1/memories/search", "/v1/search"])
def test_a_query_that_shows_nothing_is_refused_naming_query(http, path):
    resp = http.post(path, json={"user_id": "alice", "query": "\u200b\ufeff"})
    assert assert_envelope(resp, 400, code="invalid_value")["param"] == "query"


def test_text_with_a_joiner_inside_visible_characters_is_kept(http):
    family = "Alice's family emoji is 👩\u200d👧."
    resp = http.post("/v1/memories", json={"user_id": "alice", "text": family})
    assert resp.status_code == 201, resp.text
    assert resp.json()["text"] == family
