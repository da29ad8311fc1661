"""Every route that takes an id, with another workspace's ids: answered as an id that does not
exist (same status, same code), and nothing of the owner's changes; and the workspace-level
routes an end user's token does not reach."""

from __future__ import annotations

import httpx
import pytest

from accounts.endusers.models import Issuer
from completions.agents.models import Agent
from completions.tools.models import Approval, Tool
from memory.models import Collection, Conversation, Document, Memory
from tests.factories import paused_tool_run
from tests.identity import AUD, ISS, hs256

SECRET = "an-hs256-secret-of-at-least-32-characters"
MISSING = "zz0000000000000000000000"


@pytest.fixture
def owned(http, owner):
    """One of each thing the owner's workspace holds, by its ids."""
    memory = http.post("/v1/memories", json={"user_id": "alice", "text": "Alice lives in Oslo."})
    imported = http.post(
        "/v1/conversations/c-alice/messages",
        json={"user_id": "alice", "messages": [{"role": "user", "content": "I moved to Oslo"}]},
    )
    assert imported.status_code == 201, imported.text
    collection = http.post("/v1/collections", json={"name": "Handbook"}).json()
    document = http.post(
        f"/v1/collections/{collection['id']}/documents",
        json={"text": "# Notes\n\nThe gate code is 4471.", "title": "Notes"},
    ).json()
    issuer = http.post(
        "/v1/auth/issuers",
        json={"issuer": ISS, "audiences": [AUD], "hs256_secret": SECRET, "algorithms": ["HS256"]},
    )
    assert issuer.status_code == 201, issuer.text
    execution = paused_tool_run(owner[0], agent_name="support", model="gpt-4o-mini")
    return {
        "memory": memory.json()["id"],
        "conversation": Conversation.objects.get(external_id="c-alice").id,
        "message": imported.json()["data"][0]["id"],
        "collection": collection["id"],
        "document": document["id"],
        "issuer": issuer.json()["id"],
        "agent": execution.agent_id,
        "tool": Tool.objects.get(agent_id=execution.agent_id).id,
        "execution": execution.id,
        "approval": Approval.objects.get(execution=execution).id,
    }


def _routes(ids: dict) -> list[tuple[str, str, dict | None]]:
    m, c, col, doc = ids["memory"], ids["conversation"], ids["collection"], ids["document"]
    agent, tool = ids["agent"], ids["tool"]
    return [
        ("GET", f"/v1/memories/{m}", None),
        ("PATCH", f"/v1/memories/{m}", {"text": "Changed."}),
        ("GET", f"/v1/memories/{m}/history", None),
        ("DELETE", f"/v1/memories/{m}", None),
        ("GET", f"/v1/conversations/{c}", None),
        ("GET", f"/v1/conversations/{c}/messages", None),
        ("GET", f"/v1/messages/{ids['message']}", None),
        ("DELETE", f"/v1/conversations/{c}", None),
        ("GET", f"/v1/collections/{col}", None),
        ("PATCH", f"/v1/collections/{col}", {"name": "Changed"}),
        ("GET", f"/v1/collections/{col}/documents", None),
        ("POST", f"/v1/collections/{col}/documents", {"text": "Added."}),
        ("GET", f"/v1/collections/{col}/documents/{doc}", None),
        ("DELETE", f"/v1/collections/{col}/documents/{doc}", None),
        ("GET", f"/v1/agents/{agent}", None),
        ("PATCH", f"/v1/agents/{agent}", {"instructions": "Changed."}),
        ("GET", f"/v1/agents/{agent}/versions", None),
        ("GET", f"/v1/agents/{agent}/tools", None),
        (
            "POST",
            f"/v1/agents/{agent}/tools",
            {"name": "r2", "type": "builtin", "builtin": "memory_search"},
        ),
        ("GET", f"/v1/agents/{agent}/tools/{tool}", None),
        ("PATCH", f"/v1/agents/{agent}/tools/{tool}", {"description": "Changed."}),
        ("DELETE", f"/v1/agents/{agent}/tools/{tool}", None),
        ("GET", f"/v1/executions/{ids['execution']}", None),
        ("POST", "/v1/chat/resume", {"approval_id": ids["approval"], "decision": "reject"}),
        ("GET", f"/v1/auth/issuers/{ids['issuer']}", None),
        ("PATCH", f"/v1/auth/issuers/{ids['issuer']}", {"leeway_seconds": 5}),
        ("DELETE", f"/v1/auth/issuers/{ids['issuer']}", None),
        ("GET", "/v1/users/alice", None),
        ("DELETE", f"/v1/agents/{agent}", None),
        ("DELETE", f"/v1/collections/{col}", None),
    ]


def _error(response: httpx.Response) -> tuple[int, str | None, str | None]:
    error = response.json()["error"]
    return response.status_code, error["type"], error["code"]


def test_another_workspaces_ids_are_answered_as_ids_that_do_not_exist(outsider_http, owned, owner):
    missing = {name: f"{value.split('_')[0]}_{MISSING}" for name, value in owned.items()}
    for (method, path, body), (_, unknown, _) in zip(_routes(owned), _routes(missing), strict=True):
        foreign = outsider_http.request(method, path, json=body)
        assert foreign.status_code == 404, f"{method} {path}: {foreign.text}"
        # the same answer as for an id nobody has: the outsider learns nothing of the owner's
        assert _error(foreign) == _error(outsider_http.request(method, unknown, json=body)), path

    workspace = owner[0]
    assert Memory.objects.get(id=owned["memory"]).text == "Alice lives in Oslo."
    assert Conversation.objects.filter(id=owned["conversation"], workspace=workspace).exists()
    assert Collection.objects.get(id=owned["collection"]).name == "Handbook"
    assert list(Document.objects.filter(collection_id=owned["collection"])) == [
        Document.objects.get(id=owned["document"])
    ]
    agent = Agent.objects.get(id=owned["agent"])
    assert agent.instructions == "" and agent.workspace == workspace
    tool = Tool.objects.get(id=owned["tool"])
    assert tool.description == "" and Tool.objects.filter(agent=agent).count() == 1
    assert Approval.objects.get(id=owned["approval"]).status == Approval.Status.PENDING
    assert Issuer.objects.get(id=owned["issuer"]).leeway_seconds != 5


def test_an_end_user_token_reaches_none_of_the_workspace_level_routes(
    engram_server, owned, settings
):
    headers = {"Authorization": f"Bearer {hs256(SECRET, 'alice')}"}
    with httpx.Client(base_url=engram_server.url, headers=headers, timeout=30) as alice:
        assert alice.get("/v1/memories").status_code == 200  # the token works
        for method, path, body in [
            ("GET", f"/v1/executions/{owned['execution']}", None),  # alice's own run, too
            ("GET", "/v1/agents", None),
            ("GET", f"/v1/agents/{owned['agent']}", None),
            ("GET", f"/v1/agents/{owned['agent']}/tools", None),
            ("GET", "/v1/usage", None),
            ("GET", "/v1/collections", None),
            ("GET", f"/v1/collections/{owned['collection']}/documents", None),
            ("GET", "/v1/auth/issuers", None),
            ("GET", "/v1/users", None),
            ("GET", "/v1/workspaces", None),
            ("GET", "/metrics", None),
        ]:
            response = alice.request(method, path, json=body)
            assert response.status_code == 403, f"{method} {path}: {response.text}"
            assert response.json()["error"]["type"] == "permission_error"
        # Searching the workspace's collections it names is a token's, as in chat's
        # x-collection-ids and /v1/search's chunks (README, End users); managing them is not.
        search = {"query": "gate", "collection_ids": [owned["collection"]]}
        assert alice.post("/v1/collections/search", json=search).status_code == 200


def test_a_message_is_read_by_its_id_by_its_workspace_and_its_own_user_only(
    http, engram_server, owned
):
    """GET /v1/messages/{id}: what an answer's `recalled` names, read back (the playground
    shows the text of the past messages an answer was given). A token reads its own user's
    messages only; another user's is answered as an id that does not exist."""
    message = owned["message"]
    read = http.get(f"/v1/messages/{message}")
    assert read.status_code == 200, read.text
    assert read.json()["content"] == "I moved to Oslo"
    assert read.json()["conversation_id"] == "c-alice"
    for user, status in (("alice", 200), ("bob", 404)):
        headers = {"Authorization": f"Bearer {hs256(SECRET, user)}"}
        with httpx.Client(base_url=engram_server.url, headers=headers, timeout=30) as token:
            response = token.get(f"/v1/messages/{message}")
            assert response.status_code == status, f"{user}: {response.text}"
            if status == 404:
                unknown = token.get(f"/v1/messages/msg_{MISSING}")
                assert _error(response) == _error(unknown)
