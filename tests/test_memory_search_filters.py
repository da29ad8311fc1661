"""POST /v1/memories/search narrows by kind and by creation time as GET /v1/memories does:
a client moving from mem0 or Zep searches "their plans" or "what was learned this week", and
the search refused `kind`, `created_after` and `created_before` as unknown parameters."""

from __future__ import annotations

import datetime as dt

import pytest

from memory.models import Memory
from tests.test_errors import assert_envelope


def _search(http, **body) -> list[dict]:
    resp = http.post("/v1/memories/search", json={"user_id": "alice", "query": "Peru", **body})
    assert resp.status_code == 200, resp.text
    return resp.json()["data"]


@pytest.fixture
def three(http) -> dict[str, str]:
    ids = {}
    for text, kind in (
        ("Alice plans a trip to Peru.", "plan"),
        ("Alice has been to Peru twice.", "fact"),
        ("Alice prefers Peru in May.", "preference"),
    ):
        memory = http.post("/v1/memories", json={"user_id": "alice", "text": text, "kind": kind})
        ids[kind] = memory.json()["id"]
    # the fact is a year old
    Memory.objects.filter(id=ids["fact"]).update(
        created_at=dt.datetime(2025, 6, 1, 12, 0, 30, tzinfo=dt.UTC)
    )
    return ids


def test_search_narrows_by_kind(http, three):
    assert [m["id"] for m in _search(http, kind="plan")] == [three["plan"]]
    both = _search(http, kind=["plan", "fact"])
    assert {m["id"] for m in both} == {three["plan"], three["fact"]}
    assert {m["id"] for m in _search(http, kind="plan,preference")} == {
        three["plan"],
        three["preference"],
    }
    assert len(_search(http)) == 3


def test_search_narrows_by_creation_time_as_the_list_does(http, three):
    recent = _search(http, created_after="2026-01-01")
    assert {m["id"] for m in recent} == {three["plan"], three["preference"]}
    old = _search(http, created_before=1767225600)  # 2026-01-01 in Unix seconds
    assert [m["id"] for m in old] == [three["fact"]]
    # created_after a memory's own created_at leaves it out, as the list does
    shown = _search(http, created_before="2026-01-01")[0]["created_at"]
    assert _search(http, created_after=shown, created_before="2026-01-01") == []
    listed = http.get(
        "/v1/memories", params={"user_id": "alice", "created_after": shown, "kind": "fact"}
    ).json()["data"]
    assert listed == []


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"kind": "hobby"}, "kind"),
        ({"kind": ["fact", 3]}, "kind"),
        ({"kind": {"in": ["fact"]}}, "kind"),
        ({"created_after": "yesterday"}, "created_after"),
        ({"created_before": True}, "created_before"),
        ({"created_before": 1.5}, "created_before"),
    ],
)
def test_a_bad_filter_is_a_400_naming_it(http, body, param):
    resp = http.post("/v1/memories/search", json={"user_id": "alice", "query": "Peru", **body})
    assert assert_envelope(resp, 400)["param"] == param


def test_unified_search_takes_the_same_filters(http, three):
    """POST /v1/search refused `kind`, `created_after` and `created_before` as unknown
    parameters, where POST /v1/memories/search took them (the same parser now reads both).
    The date range narrows messages too, by their created_at; `kind` the memories only."""
    said = http.post(
        "/v1/conversations/trip/messages",
        json={
            "user_id": "alice",
            "messages": [
                {"role": "user", "content": "I dream of Peru.", "created_at": 1683554160},
                {"role": "user", "content": "Peru again, Peru.", "created_at": 1683554220},
            ],
        },
    )
    assert said.status_code == 201, said.text
    first, second = (m["id"] for m in said.json()["data"])

    def found(**body) -> set[tuple[str, str]]:
        resp = http.post(
            "/v1/search", json={"user_id": "alice", "query": "Peru", "limit": 20, **body}
        )
        assert resp.status_code == 200, resp.text
        return {(f["type"], f["id"]) for f in resp.json()["data"]}

    everything = found()
    assert {("message", first), ("message", second)} <= everything
    assert {("memory", i) for i in three.values()} <= everything
    # kind narrows the memories, not the messages
    assert found(kind="plan") == {
        ("memory", three["plan"]),
        ("message", first),
        ("message", second),
    }
    # the range: the first message only (its second is the range's end, left out)
    assert found(created_before=1683554220) == {("message", first)}
    assert found(created_after="2023-05-08T13:56:00Z", created_before="2024-01-01") == {
        ("message", second)
    }
    assert found(created_after="2025-01-01", kind=["fact", "plan"]) == {
        ("memory", three["fact"]),
        ("memory", three["plan"]),
    }
    for field, value in (("kind", "bogus"), ("created_after", "yesterday"), ("kind", 5)):
        resp = http.post("/v1/search", json={"user_id": "alice", "query": "Peru", field: value})
        assert_envelope(resp, 400)
        assert resp.json()["error"]["param"] == field
