"""A memory's history over HTTP: paged as the other lists are, and an edit that changes nothing
kept out of it."""

from __future__ import annotations

import pytest

from memory.models import Memory
from tests.test_errors import assert_envelope


def _history(http, memory_id: str, **params) -> dict:
    resp = http.get(f"/v1/memories/{memory_id}/history", params=params)
    assert resp.status_code == 200, resp.text
    return resp.json()


def _texts(page: dict) -> list[str]:
    return [e["new_text"] for e in page["data"]]


@pytest.fixture
def changed(http) -> dict:
    """A memory added, reworded three times and deleted: five history entries."""
    memory = http.post("/v1/memories", json={"user_id": "alice", "text": "v0"}).json()
    for text in ("v1", "v2", "v3"):
        resp = http.patch(f"/v1/memories/{memory['id']}", json={"text": text})
        assert resp.status_code == 200, resp.text
    assert http.delete(f"/v1/memories/{memory['id']}").status_code == 200
    return memory


def test_history_pages_as_the_other_lists(http, changed):
    """It answered every entry, whatever `limit`, `after` or `before` said."""
    whole = _history(http, changed["id"])
    assert _texts(whole) == ["v0", "v1", "v2", "v3", ""]  # oldest first; the DELETE has none
    assert whole["has_more"] is False
    assert (whole["first_id"], whole["last_id"]) == (
        whole["data"][0]["id"],
        whole["data"][-1]["id"],
    )
    ids = [e["id"] for e in whole["data"]]

    first = _history(http, changed["id"], limit=2)
    assert _texts(first) == ["v0", "v1"] and first["has_more"] is True
    assert (first["first_id"], first["last_id"]) == (ids[0], ids[1])
    second = _history(http, changed["id"], limit=2, after=first["last_id"])
    assert _texts(second) == ["v2", "v3"] and second["has_more"] is True
    last = _history(http, changed["id"], limit=2, after=second["last_id"])
    assert [e["event"] for e in last["data"]] == ["DELETE"] and last["has_more"] is False

    newest = _history(http, changed["id"], limit=2, order="desc")
    assert [e["id"] for e in newest["data"]] == [ids[4], ids[3]] and newest["has_more"] is True
    before = _history(http, changed["id"], limit=2, before=ids[3])
    assert [e["id"] for e in before["data"]] == [ids[1], ids[2]] and before["has_more"] is True

    past_the_end = _history(http, changed["id"], after=ids[-1])  # the memory's, though empty
    assert past_the_end["data"] == [] and past_the_end["has_more"] is False


@pytest.mark.parametrize(
    ("params", "param", "code"),
    [
        ({"limit": "0"}, "limit", "invalid_value"),
        ({"limit": "101"}, "limit", "invalid_value"),
        ({"limit": "ten"}, "limit", "invalid_value"),
        ({"order": "sideways"}, "order", "invalid_value"),
        ({"after": "a b"}, "after", "invalid_value"),
        ({"limt": "2"}, "limt", "unknown_parameter"),
    ],
)
def test_history_paging_parameters_are_checked(http, changed, params, param, code):
    resp = http.get(f"/v1/memories/{changed['id']}/history", params=params)
    assert assert_envelope(resp, 400, code=code)["param"] == param


def test_a_missing_memorys_history_is_still_404(http, outsider_http, changed):
    assert_envelope(http.get("/v1/memories/mem_nope/history", params={"limit": 2}), 404)
    assert_envelope(outsider_http.get(f"/v1/memories/{changed['id']}/history"), 404)


def test_an_edit_that_changes_nothing_records_nothing(http):
    """A PATCH of what the memory already says recorded an UPDATE from its text to itself (and
    embedded it again)."""
    memory = http.post(
        "/v1/memories",
        json={
            "user_id": "alice",
            "text": "Alice keeps bees.",
            "kind": "fact",
            "event_date": "2026-05-01",
            "metadata": {"pinned": True},
        },
    ).json()
    url = f"/v1/memories/{memory['id']}"
    stored = Memory.objects.get(id=memory["id"])
    for same in (
        {"text": "Alice keeps bees."},
        {"text": "  Alice keeps bees. "},  # stored stripped
        {
            "text": "Alice keeps bees.",
            "kind": "fact",
            "event_date": "2026-05-01",
            "metadata": {"pinned": True},
        },
    ):
        resp = http.patch(url, json=same)
        assert resp.status_code == 200, resp.text
        assert resp.json() == memory  # the memory as it is, its updated_at too
    assert [e["event"] for e in _history(http, memory["id"])["data"]] == ["ADD"]
    assert Memory.objects.get(id=memory["id"]).updated_at == stored.updated_at

    # 1 is not true: jsonb keeps them apart, and so does the edit
    assert http.patch(url, json={"metadata": {"pinned": 1}}).json()["metadata"] == {"pinned": 1}
    reworded = http.patch(url, json={"text": "Alice keeps two hives."})
    assert reworded.status_code == 200 and reworded.json()["text"] == "Alice keeps two hives."
    events = _history(http, memory["id"])["data"]
    assert [(e["event"], e["old_text"], e["new_text"]) for e in events] == [
        ("ADD", "", "Alice keeps bees."),
        ("UPDATE", "Alice keeps bees.", "Alice keeps bees."),  # the metadata's change
        ("UPDATE", "Alice keeps bees.", "Alice keeps two hives."),
    ]
