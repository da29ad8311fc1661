"""A conversation's client id (x-conversation-id) is its user's, and a session's (x-session-id):
two users of a workspace may each have a conversation "support". An end-user token naming an id
another user holds is answered as for a free id (it was a 404 where a free id was a 200: an oracle of other users'
ids). A workspace key naming an id by itself where several users hold it is told to name the
user (400 `ambiguous_conversation`, param `user_id`)."""

from __future__ import annotations

import httpx
import pytest

from memory.models import Conversation, Message, Session
from tests.identity import AUD, ISS, hs256
from tests.upstream import Reply, openai_completion

SECRET = "an-hs256-secret-of-at-least-32-characters"


def _chat(client, content: str, **headers):
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}]}
    return client.post("/v1/chat/completions", json=body, headers=headers)


@pytest.fixture
def tokens(http, engram_server):
    issuer = http.post(
        "/v1/auth/issuers",
        json={"issuer": ISS, "audiences": [AUD], "hs256_secret": SECRET, "algorithms": ["HS256"]},
    )
    assert issuer.status_code == 201, issuer.text
    clients = {
        user: httpx.Client(
            base_url=engram_server.url,
            headers={"Authorization": f"Bearer {hs256(SECRET, user)}"},
            timeout=30,
        )
        for user in ("alice", "bob")
    }
    yield clients
    for client in clients.values():
        client.close()


def test_an_end_users_chat_naming_an_id_another_user_holds_is_answered_as_a_free_id(
    tokens, upstream
):
    alice, bob = tokens["alice"], tokens["bob"]
    upstream.script(*(Reply(json=openai_completion("Noted.")) for _ in range(4)))
    assert (
        _chat(alice, "My PIN is tangerine-falcon", **{"x-conversation-id": "support"}).status_code
        == 200
    )

    taken = _chat(bob, "Hello", **{"x-conversation-id": "support"})
    free = _chat(bob, "Hello", **{"x-conversation-id": "support-2"})
    assert (taken.status_code, free.status_code) == (200, 200), taken.text
    assert taken.headers["x-engram-conversation-id"] == "support"
    # nothing of alice's reached bob's turn: his request upstream holds his message alone
    sent = upstream.chat_requests()[1].body["messages"]
    assert "tangerine-falcon" not in str(sent)
    for door in ("/v1/context",):
        preview = bob.post(
            door,
            json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]},
            headers={"x-conversation-id": "support"},
        )
        assert preview.status_code == 200, preview.text
        assert "tangerine-falcon" not in preview.text

    # a session id alike (it was a 404 where a free one was created)
    assert (
        _chat(alice, "My PIN is tangerine-falcon", **{"x-session-id": "s-help"}).status_code == 200
    )
    for path in ("/v1/context", "/v1/chat/completions"):
        upstream.script(Reply(json=openai_completion("Hi Bob.")))
        named = bob.post(
            path,
            json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]},
            headers={"x-session-id": "s-help"},
        )
        assert named.status_code == 200, named.text
        assert "tangerine-falcon" not in named.text
    assert Session.objects.filter(external_id="s-help").count() == 2

    # each reads their own "support"
    mine = bob.get("/v1/conversations/support/messages").json()["data"]
    assert [m["content"] for m in mine] == ["Hello", "Noted."]
    assert "tangerine-falcon" in alice.get("/v1/conversations/support/messages").text
    assert Conversation.objects.filter(external_id="support").count() == 2
    assert Message.objects.filter(user_id="alice", conversation__external_id="support").count() == 2


def _two_supports(http, upstream) -> None:
    for user in ("alice", "bob"):
        imported = http.post(
            "/v1/conversations/support/messages",
            json={"user_id": user, "messages": [{"role": "user", "content": f"I am {user}"}]},
        )
        assert imported.status_code == 201, imported.text
        assert imported.json()["conversation"]["user_id"] == user


def test_two_users_each_have_their_conversation_support(http, upstream):
    _two_supports(http, upstream)
    upstream.script(Reply(json=openai_completion("Hi Bob.")))
    chat = _chat(http, "Who am I?", **{"x-user-id": "bob", "x-conversation-id": "support"})
    assert chat.status_code == 200, chat.text
    # bob's turn was served bob's history, not alice's
    assert "I am bob" in str(upstream.chat_requests()[0].body["messages"])
    assert "I am alice" not in str(upstream.chat_requests()[0].body["messages"])
    listed = http.get("/v1/conversations", params={"user_id": "alice"}).json()["data"]
    assert [(c["external_id"], c["user_id"]) for c in listed] == [("support", "alice")]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/conversations/support"),
        ("GET", "/v1/conversations/support/messages"),
        ("DELETE", "/v1/conversations/support"),
        ("GET", "/v1/memories?conversation_id=support"),
    ],
)
def test_a_workspace_key_naming_an_id_several_users_hold_is_told_to_name_the_user(
    http, upstream, method, path
):
    _two_supports(http, upstream)
    refused = http.request(method, path)
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert error["code"] == "ambiguous_conversation"
    assert error["param"] == "user_id"
    assert error["type"] == "invalid_request_error"
    assert "user_id" in error["message"]
    assert Conversation.objects.filter(external_id="support").count() == 2


def test_user_id_names_whose_conversation_and_one_users_id_needs_none(http, upstream):
    _two_supports(http, upstream)
    by_query = http.get("/v1/conversations/support", params={"user_id": "bob"})
    assert by_query.status_code == 200 and by_query.json()["user_id"] == "bob"
    by_header = http.get("/v1/conversations/support/messages", headers={"x-user-id": "alice"})
    assert [m["content"] for m in by_header.json()["data"]] == ["I am alice"]
    both = http.get(
        "/v1/conversations/support", params={"user_id": "bob"}, headers={"x-user-id": "alice"}
    )
    assert both.status_code == 400 and both.json()["error"]["code"] == "user_mismatch"
    nobody = http.get("/v1/conversations/support", params={"user_id": "carol"})
    assert nobody.status_code == 404 and nobody.json()["error"]["code"] == "not_found"

    deleted = http.delete("/v1/conversations/support", params={"user_id": "bob"})
    assert deleted.status_code == 200, deleted.text
    assert list(Conversation.objects.values_list("user_id", flat=True)) == ["alice"]
    # one user's id again: the id alone names it, as before
    alone = http.get("/v1/conversations/support")
    assert alone.status_code == 200 and alone.json()["user_id"] == "alice"
    assert http.delete("/v1/conversations/support").status_code == 200


@pytest.mark.parametrize(
    "header, user_id",
    [("alice", "bob"), ("a b", "bob"), ("alice", "a b"), ("a b", "c d"), ("Alice", "alice ")],
)
def test_the_conversation_routes_and_the_chat_door_read_the_user_alike(
    http, upstream, header, user_id
):
    """One parser names the user (completions.request.caller_user): the query's `user_id` of a
    conversation route is the chat body's, so one mismatch is one error at both doors."""
    _two_supports(http, upstream)

    def error(response):
        return response.status_code, response.json().get("error")

    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]}
    chat = http.post("/v1/context", json=body | {"user_id": user_id}, headers={"x-user-id": header})
    for method in ("GET", "DELETE"):
        route = http.request(
            method,
            "/v1/conversations/support",
            params={"user_id": user_id},
            headers={"x-user-id": header},
        )
        assert error(route) == error(chat)
    assert Conversation.objects.filter(external_id="support").count() == 2


def test_an_end_user_token_naming_another_user_is_one_error_at_both_doors(tokens, upstream):
    alice = tokens["alice"]
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]}
    chat = alice.post("/v1/context", json=body | {"user_id": "bob"})
    route = alice.get("/v1/conversations/support", params={"user_id": "bob"})
    assert chat.status_code == route.status_code == 403
    assert route.json()["error"] == chat.json()["error"]
    assert route.json()["error"]["param"] == "user_id"


def test_an_import_names_its_user_as_every_conversation_route_does(http):
    """x-user-id or ?user_id= names the import's user, as the other routes naming a
    conversation take it (the import read the body's user_id alone: a 400 "required")."""
    chess = {"messages": [{"role": "user", "content": "I play chess."}]}
    by_header = http.post(
        "/v1/conversations/imp1/messages", json=chess, headers={"x-user-id": "bob"}
    )
    assert by_header.status_code == 201, by_header.text
    assert by_header.json()["conversation"]["user_id"] == "bob"
    by_query = http.post("/v1/conversations/imp1/messages", json=chess, params={"user_id": "carol"})
    assert by_query.status_code == 201, by_query.text
    assert by_query.json()["conversation"]["user_id"] == "carol"
    agreeing = http.post(
        "/v1/conversations/imp1/messages",
        json={"user_id": "bob", **chess},
        headers={"x-user-id": "bob"},
        params={"user_id": "bob"},
    )
    assert agreeing.status_code == 201 and agreeing.json()["conversation"]["user_id"] == "bob"
    assert sorted(Conversation.objects.values_list("user_id", flat=True)) == ["bob", "carol"]
    assert Message.objects.filter(conversation__user_id="bob").count() == 2

    for where in ({"headers": {"x-user-id": "bob"}}, {"params": {"user_id": "bob"}}):
        other = http.post(
            "/v1/conversations/imp1/messages", json={"user_id": "dave", **chess}, **where
        )
        error = other.json()["error"]
        assert (other.status_code, error["code"], error["param"]) == (
            400,
            "user_mismatch",
            "user_id",
        ), other.text
    query_and_header = http.post(
        "/v1/conversations/imp1/messages",
        json=chess,
        headers={"x-user-id": "bob"},
        params={"user_id": "dave"},
    )
    assert query_and_header.json()["error"]["code"] == "user_mismatch"
    nobody = http.post("/v1/conversations/imp1/messages", json=chess)
    assert nobody.status_code == 400 and nobody.json()["error"]["param"] == "user_id"
    assert not Conversation.objects.filter(user_id="dave").exists()


def test_a_user_mismatch_names_the_parameter_the_caller_sent(http, tokens):
    """An import's body `user_id` against the user the caller named: "than x-user-id" answered
    a caller who had sent ?user_id= alone. Every conversation route reads both; each refusal
    names what was sent (OpenAI's envelope: message, type, param, code)."""
    chess = {"messages": [{"role": "user", "content": "I play chess."}]}
    route = "/v1/conversations/imp2/messages"

    def error(response, status):
        assert response.status_code == status, response.text
        body = response.json()["error"]
        assert set(body) >= {"message", "type", "param", "code"}
        assert body["code"] == "user_mismatch"
        return body

    by_query = error(
        http.post(route, json={"user_id": "dave", **chess}, params={"user_id": "bob"}), 400
    )
    assert by_query["param"] == "user_id"
    assert "x-user-id" not in by_query["message"] and "query" in by_query["message"]
    by_header = error(
        http.post(route, json={"user_id": "dave", **chess}, headers={"x-user-id": "bob"}), 400
    )
    assert by_header["param"] == "user_id" and "x-user-id" in by_header["message"]
    both = {"headers": {"x-user-id": "bob"}, "params": {"user_id": "bob"}}
    assert (
        "x-user-id"
        in error(http.post(route, json={"user_id": "dave", **chess}, **both), 400)["message"]
    )
    for method in ("GET", "DELETE", "POST"):
        # x-user-id against ?user_id=: the chat door's words for x-user-id against user_id
        apart = http.request(
            method,
            route if method == "POST" else "/v1/conversations/imp2",
            json=chess if method == "POST" else None,
            headers={"x-user-id": "bob"},
            params={"user_id": "dave"},
        )
        body = error(apart, 400)
        assert body["param"] == "user_id" and "x-user-id" in body["message"]

    alice = tokens["alice"]
    for method in ("GET", "DELETE"):
        queried = error(
            alice.request(method, "/v1/conversations/imp2", params={"user_id": "bob"}), 403
        )
        assert queried["param"] == "user_id" and "x-user-id" not in queried["message"]
        headed = error(
            alice.request(method, "/v1/conversations/imp2", headers={"x-user-id": "bob"}), 403
        )
        assert headed["param"] == "x-user-id" and "x-user-id" in headed["message"]
    assert not Conversation.objects.filter(external_id="imp2").exists()
