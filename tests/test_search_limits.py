"""/v1/search under the workspace's and the key's rates (accounts.limits.middleware,
`counts_workspace_rates`): each search embeds its query and runs vector queries, and a
workspace key searched without limit while its chat was held to its rpm. Counted in the same
requests per minute as chat, with chat's 429 and headers; so are /v1/memories/search,
/v1/collections/search, /v1/context and a knowledge upload. Routes that embed nothing are not."""

from __future__ import annotations

import pytest

from tests.test_errors import assert_envelope
from tests.test_limits_end_user_routes import as_user, token_of  # noqa: F401 - a fixture

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("limiter_awake")]

SEARCH = {"user_id": "alice", "query": "Where does Alice live?"}
CHAT = {"model": "local", "messages": [{"role": "user", "content": "Hi"}]}


def _patch(operator_http, path: str, body: dict) -> None:
    resp = operator_http.patch(path, json=body)
    assert resp.status_code == 200, resp.text


def test_a_workspace_keys_searches_count_against_the_workspaces_rpm(http, operator_http, owner):
    _patch(operator_http, f"/v1/workspaces/{owner[0].id}", {"limits": {"rpm": 3}})
    first = http.post("/v1/search", json=SEARCH)
    assert first.status_code == 200, first.text
    assert first.headers["x-ratelimit-limit-requests"] == "3"
    assert first.headers["x-ratelimit-remaining-requests"] == "2"
    assert http.post("/v1/chat/completions", json=CHAT).status_code == 200  # one count
    assert http.post("/api/v1/search", json=SEARCH).status_code == 200
    refused = http.post("/v1/search", json=SEARCH)
    error = assert_envelope(refused, 429, code="rate_limit_exceeded")
    assert "workspace" in error["message"]
    assert int(refused.headers["retry-after"]) >= 1
    assert http.post("/v1/chat/completions", json=CHAT).status_code == 429  # spent by searches


def test_the_keys_own_rpm_counts_its_searches(http, operator_http, owner, key_id):
    _patch(operator_http, f"/v1/workspaces/{owner[0].id}/api_keys/{key_id}", {"limits": {"rpm": 1}})
    assert http.post("/v1/search", json=SEARCH).status_code == 200
    refused = http.post("/v1/search", json=SEARCH)
    assert "API key" in assert_envelope(refused, 429, code="rate_limit_exceeded")["message"]


def test_routes_that_embed_nothing_are_not_counted(http, operator_http, owner):
    _patch(operator_http, f"/v1/workspaces/{owner[0].id}", {"limits": {"rpm": 1}})
    for _ in range(3):
        listed = http.get("/v1/memories", params={"user_id": "alice"})
        assert listed.status_code == 200 and "x-ratelimit-limit-requests" not in listed.headers
    assert http.post("/v1/search", json=SEARCH).status_code == 200  # the minute's one request


def test_an_end_users_search_counts_against_the_workspace_too(
    engram_server,
    http,
    operator_http,
    owner,
    token_of,  # noqa: F811 - the fixture
):
    _patch(operator_http, f"/v1/workspaces/{owner[0].id}", {"limits": {"rpm": 1}})
    with as_user(engram_server, token_of("dana")) as dana:
        assert dana.post("/v1/search", json={"query": "Where do I live?"}).status_code == 200
        refused = dana.post("/v1/search", json={"query": "Where do I live?"})
    assert "workspace" in assert_envelope(refused, 429, code="rate_limit_exceeded")["message"]


# Every other door that embeds a query (or a document) counts the same way: each was open to
# a workspace key held to its rpm at the chat door.
DOORS = {
    "memories_search": ("/v1/memories/search", lambda col: SEARCH),
    "collections_search": (
        "/v1/collections/search",
        lambda col: {"query": "Where does Alice live?", "collection_ids": [col]},
    ),
    "context": (
        "/v1/context",
        lambda col: {"model": "local", "user_id": "alice", "messages": CHAT["messages"]},
    ),
    "upload": ("/v1/collections/{col}/documents", lambda col: {"text": "Alice lives in Oslo."}),
}


@pytest.mark.parametrize("door", sorted(DOORS))
def test_every_door_that_embeds_counts_against_the_workspaces_rpm(http, operator_http, owner, door):
    created = http.post("/v1/collections", json={"name": "handbook"})
    assert created.status_code == 201, created.text
    col = created.json()["id"]
    path, body = DOORS[door]
    path = path.format(col=col)
    _patch(operator_http, f"/v1/workspaces/{owner[0].id}", {"limits": {"rpm": 2}})
    first = http.post(path, json=body(col))
    assert first.status_code in (200, 201, 202), first.text
    assert first.headers["x-ratelimit-limit-requests"] == "2"
    assert first.headers["x-ratelimit-remaining-requests"] == "1"
    assert http.post(path, json=body(col)).status_code in (200, 201, 202)
    refused = http.post(path, json=body(col))
    assert "workspace" in assert_envelope(refused, 429, code="rate_limit_exceeded")["message"]
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    if door == "upload":  # the list embeds nothing: not counted
        listed = http.get(path)
        assert listed.status_code == 200 and "x-ratelimit-limit-requests" not in listed.headers
