"""GET /v1/memories's filters: kind, conversation_id, created_after / created_before, with the
cursors, each user's and workspace's scope, and a 400 naming the parameter for bad input."""

from __future__ import annotations

import datetime as dt
import time

import httpx
import pytest

from memory.models import Conversation, Memory, Message
from tests.identity import AUD, ISS, hs256
from tests.test_memory_api import add

SECRET = "an-hs256-secret-of-at-least-32-characters"
NOON = dt.datetime(2026, 12, 1, 12, 0, 0, 500_000, tzinfo=dt.UTC)  # half a second past noon


def _import(client, conversation_id, user_id, text) -> Message:
    response = client.post(
        f"/v1/conversations/{conversation_id}/messages",
        json={"user_id": user_id, "messages": [{"role": "user", "content": text}]},
    )
    assert response.status_code == 201, response.text
    return Message.objects.get(id=response.json()["data"][0]["id"])


def _extracted(message: Message, text: str, kind: str) -> str:
    """A memory as an extraction leaves it: with the message it came from."""
    time.sleep(0.002)  # ids sort by their millisecond: these are made back to back
    memory = Memory.objects.create(
        workspace=message.workspace, user_id=message.user_id, text=text, kind=kind
    )
    memory.sources.add(message)
    return memory.id


def _created(memory_id: str, at: dt.datetime) -> None:
    Memory.objects.filter(id=memory_id).update(created_at=at)


@pytest.fixture
def memories(http, outsider_http):
    """alice: a preference and a plan by hand, a fact and a preference from conversation c-1,
    a fact from c-2; bob: a preference from his c-bob; the outsider's workspace: its own c-1."""
    ids = {
        "tea": add(http, "alice", "Alice prefers tea.", kind="preference")["id"],
        "trip": add(http, "alice", "Alice flies to Rome in May.", kind="plan")["id"],
    }
    oslo = _import(http, "c-1", "alice", "I live in Oslo and I like window seats.")
    ids["oslo"] = _extracted(oslo, "Alice lives in Oslo.", "fact")
    ids["window"] = _extracted(oslo, "Alice likes window seats.", "preference")
    ids["cat"] = _extracted(_import(http, "c-2", "alice", "My cat is Tom."), "Tom: cat", "fact")
    ids["bob"] = _extracted(
        _import(http, "c-bob", "bob", "I am vegan."), "Bob: vegan", "preference"
    )
    other = _import(outsider_http, "c-1", "alice", "I live in Rome.")
    ids["other"] = _extracted(other, "Other Alice lives in Rome.", "fact")
    for n, name in enumerate(["tea", "trip", "oslo", "window", "cat", "bob"]):
        _created(ids[name], NOON + dt.timedelta(hours=n))
    return ids


def _listed(http, **params) -> list[str]:
    response = http.get("/v1/memories", params={"order": "asc", **params})
    assert response.status_code == 200, response.text
    return [m["id"] for m in response.json()["data"]]


def test_kind_keeps_only_memories_of_those_kinds(http, memories):
    m = memories
    assert _listed(http, kind="preference") == [m["tea"], m["window"], m["bob"]]
    assert _listed(http, user_id="alice", kind="preference") == [m["tea"], m["window"]]
    both = [m["tea"], m["trip"], m["window"], m["bob"]]
    assert _listed(http, kind="preference,plan") == both
    assert _listed(http, kind=["preference", "plan"]) == both
    assert _listed(http, kind="relation") == []
    assert _listed(http, kind="") == _listed(http)  # empty: no filter, as an empty user_id


def test_conversation_id_keeps_the_memories_said_in_it(http, outsider_http, memories):
    m = memories
    assert _listed(http, conversation_id="c-1") == [m["oslo"], m["window"]]
    engram_id = Conversation.objects.get(external_id="c-2", user_id="alice").id
    assert _listed(http, conversation_id=engram_id) == [m["cat"]]  # Engram's conv_ id too
    assert _listed(http, conversation_id="c-1", kind="preference") == [m["window"]]
    assert _listed(http, conversation_id="c-1", user_id="bob") == []  # not bob's conversation
    assert _listed(http, conversation_id="c-unknown") == []
    assert _listed(outsider_http, conversation_id="c-1") == [m["other"]]  # its own c-1 only


def test_created_after_and_before_bound_the_list_in_listed_seconds(http, memories):
    m = memories
    tea = http.get(f"/v1/memories/{m['tea']}").json()["created_at"]
    assert tea == int(NOON.timestamp())
    # after a listed memory's created_at: that memory (created half a second later) is left out
    assert _listed(http, user_id="alice", created_after=tea) == [
        m["trip"],
        m["oslo"],
        m["window"],
        m["cat"],
    ]
    assert _listed(http, created_before=tea + 3600) == [m["tea"]]
    assert _listed(http, created_after=tea, created_before=tea + 3 * 3600) == [
        m["trip"],
        m["oslo"],
    ]
    # ISO 8601, UTC unless it says otherwise
    assert _listed(http, created_after="2026-12-01T14:30:00", kind="fact") == [m["cat"]]
    assert _listed(http, created_before="2026-12-01T14:00:01+01:00") == [m["tea"], m["trip"]]
    assert _listed(http, created_before="2026-12-01") == []
    assert _listed(http, created_after=tea + 3600, created_before=tea) == []


def test_cursors_page_within_the_filters(http, memories):
    m = memories
    first = http.get(
        "/v1/memories", params={"kind": "preference", "order": "asc", "limit": 2}
    ).json()
    assert [x["id"] for x in first["data"]] == [m["tea"], m["window"]] and first["has_more"]
    rest = http.get(
        "/v1/memories",
        params={"kind": "preference", "order": "asc", "limit": 2, "after": first["last_id"]},
    ).json()
    assert [x["id"] for x in rest["data"]] == [m["bob"]] and rest["has_more"] is False
    back = http.get(
        "/v1/memories",
        params={"kind": "preference", "order": "asc", "limit": 1, "before": m["bob"]},
    ).json()
    assert [x["id"] for x in back["data"]] == [m["window"]] and back["has_more"] is True
    # a cursor outside the filtered list still pages it by id
    after_oslo = _listed(http, kind="preference", after=m["oslo"])
    assert after_oslo == [m["window"], m["bob"]]


@pytest.mark.parametrize(
    "params, param",
    [
        ({"kind": "preferences"}, "kind"),
        ({"kind": "fact,nope"}, "kind"),
        ({"kind": ["fact", "nope"]}, "kind"),
        ({"kind": "fact\x00"}, "kind"),
        ({"conversation_id": "c 1"}, "conversation_id"),
        ({"conversation_id": "c-1\x00"}, "conversation_id"),
        ({"conversation_id": "c" * 201}, "conversation_id"),
        ({"created_after": "yesterday"}, "created_after"),
        ({"created_after": "2026-13-01"}, "created_after"),
        ({"created_after": "1\x00"}, "created_after"),
        ({"created_before": "99999999999999999999"}, "created_before"),
        ({"created_before": "1.5"}, "created_before"),
        ({"created_before": "٣"}, "created_before"),
    ],
)
def test_a_filter_no_memory_can_match_is_a_400_naming_it(http, params, param):
    response = http.get("/v1/memories", params=params)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error"
    assert error["code"] == "invalid_value" and "\x00" not in error["message"]


def test_an_end_user_filters_only_their_own_memories(engram_server, http, memories):
    issuer = http.post(
        "/v1/auth/issuers",
        json={"issuer": ISS, "audiences": [AUD], "hs256_secret": SECRET, "user_claim": "uid"},
    )
    assert issuer.status_code == 201, issuer.text
    m = memories
    token = hs256(SECRET, uid="bob")
    with httpx.Client(
        base_url=engram_server.url, headers={"Authorization": f"Bearer {token}"}, timeout=30
    ) as bob:
        assert _listed(bob, kind="preference") == [m["bob"]]
        assert _listed(bob, conversation_id="c-bob") == [m["bob"]]
        assert _listed(bob, conversation_id="c-1") == []  # alice's conversation names nothing
        refused = bob.get("/v1/memories", params={"conversation_id": "c-1", "user_id": "alice"})
        assert refused.status_code == 403, refused.text
