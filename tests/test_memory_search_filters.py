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
