"""An end user's token naming another user's ids, at every door a token reaches: answered as an
id that does not exist (same status, type, code, param and message), so a token cannot tell
which ids its workspace holds; nothing of the other user's changes."""

from __future__ import annotations

import httpx
import pytest

from completions.tools.models import Approval
from memory.models import Conversation, Memory, Message, Session
from tests.factories import paused_tool_run
from tests.identity import AUD, ISS, hs256
from tests.upstream import Reply, openai_completion

SECRET = "an-hs256-secret-of-at-least-32-characters"
MISSING = "zz0000000000000000000000"
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]}


@pytest.fixture
def alices(http, owner, upstream):
    """Alice's things in the owner's workspace, written with the workspace key."""
    issuer = http.post(
        "/v1/auth/issuers",
        json={"issuer": ISS, "audiences": [AUD], "hs256_secret": SECRET, "algorithms": ["HS256"]},
    )
    assert issuer.status_code == 201, issuer.text
    memory = http.post("/v1/memories", json={"user_id": "alice", "text": "Alice lives in Oslo."})
    imported = http.post(
        "/v1/conversations/c-alice/messages",
        json={"user_id": "alice", "messages": [{"role": "user", "content": "I moved to Oslo"}]},
    )
    assert imported.status_code == 201, imported.text
    upstream.script(Reply(json=openai_completion("Hello Alice.")))
    session = http.post(
        "/v1/chat/completions",
        json=CHAT,
        headers={"x-user-id": "alice", "x-session-id": "s-alice"},
    )
    assert session.status_code == 200, session.text
    execution = paused_tool_run(owner[0], agent_name="support", model="gpt-4o-mini")
    return {
        "memory": memory.json()["id"],
        "conversation": "c-alice",
        "conv": Conversation.objects.get(external_id="c-alice").id,
        "message": imported.json()["data"][0]["id"],
        "session": "s-alice",
        "approval": Approval.objects.get(execution=execution).id,
    }


def _unknown(ids: dict) -> dict:
    return {
        name: (f"{value.split('_')[0]}_{MISSING}" if "_" in value else f"{value}-nobody")
        for name, value in ids.items()
    }


def _rest_doors(ids: dict) -> list[tuple[str, str, dict | None, str]]:
    """(method, path, body, the name of the id it names)."""
    m, c = ids["memory"], ids["conversation"]
    return [
        ("GET", f"/v1/memories/{m}", None, "memory"),
        ("PATCH", f"/v1/memories/{m}", {"text": "Bob was here."}, "memory"),
        ("GET", f"/v1/memories/{m}/history", None, "memory"),
        ("DELETE", f"/v1/memories/{m}", None, "memory"),
        ("GET", f"/v1/conversations/{c}", None, "conversation"),
        ("GET", f"/v1/conversations/{ids['conv']}", None, "conv"),
        ("GET", f"/v1/conversations/{c}/messages", None, "conversation"),
        ("GET", f"/v1/messages/{ids['message']}", None, "message"),
        (
            "POST",
            "/v1/chat/resume",
            {"approval_id": ids["approval"], "decision": "reject"},
            "approval",
        ),
        ("DELETE", f"/v1/conversations/{c}", None, "conversation"),
    ]


def _chat_doors(ids: dict) -> list[tuple[str, dict, dict, str]]:
    """(path, headers, body, the param named): a turn into another user's conversation or
    session, by each way a request names one. Not a client's conversation or session id: those
    are each user's own, and name bob's (tests/test_conversation_ids_per_user.py)."""
    doors = []
    for path in ("/v1/chat/completions", "/v1/context"):
        doors += [(path, {"x-conversation-id": ids["conv"]}, CHAT, "x-conversation-id")]
    return doors


def _answer(response: httpx.Response, named: str, unknown: str) -> dict:
    """The error, with the id it names written as the unknown one (the same words otherwise)."""
    error = dict(response.json()["error"])
    error["message"] = error["message"].replace(named, unknown)
    return error | {"status": response.status_code}


def _not_found(noun: str, value: str, param: str) -> dict:
    """What a REST door answers for an id that does not exist (config.common.errors)."""
    return {
        "status": 404,
        "message": f"No {noun} '{value}'.",
        "type": "not_found_error",
        "param": param,
        "code": "not_found",
    }


@pytest.mark.parametrize("fast_path", [True, False], ids=["asgi-door", "django-view"])
def test_another_users_ids_are_answered_as_ids_that_do_not_exist_at_every_door(
    engram_server, alices, upstream, settings, fast_path
):
    settings.ENGRAM_GATEWAY_FAST_PATH = fast_path
    missing = _unknown(alices)
    headers = {"Authorization": f"Bearer {hs256(SECRET, 'bob')}"}
    with httpx.Client(base_url=engram_server.url, headers=headers, timeout=30) as bob:
        for (method, path, body, name), (_, unknown, other, _) in zip(
            _rest_doors(alices), _rest_doors(missing), strict=True
        ):
            theirs = bob.request(method, path, json=body)
            assert theirs.status_code == 404, f"{method} {path}: {theirs.text}"
            nobodys = bob.request(method, unknown, json=other)
            named, stranger = alices[name], missing[name]
            assert _answer(theirs, named, stranger) == _answer(nobodys, stranger, stranger), path

        unknown = _answer(bob.get("/v1/conversations/nobodys"), "", "")
        assert unknown == _not_found("conversation", "nobodys", "conversation_id")
        # The chat doors create a conversation or session an id names when there is none, so
        # "none" has no refusal to copy: another user's is the REST doors' "does not exist".
        for path, sent, body, param in _chat_doors(alices):
            upstream.script(Reply(json=openai_completion("Hi Bob.")))
            response = bob.post(path, json=body, headers=sent)
            value = sent.get(param) or body.get(param)
            noun = "session" if "session" in param else "conversation"
            assert _answer(response, "", "") == _not_found(noun, value, param), (path, sent, body)

    # nothing of alice's was touched, nor bob's turns stored anywhere
    assert Memory.objects.get(id=alices["memory"]).text == "Alice lives in Oslo."
    assert Conversation.objects.filter(external_id="c-alice", user_id="alice").exists()
    assert Session.objects.get(external_id="s-alice").user_id == "alice"
    assert not Message.objects.filter(conversation__user_id="bob").exists()
    assert not Conversation.objects.filter(user_id="bob").exists()
    assert Approval.objects.get(id=alices["approval"]).status == Approval.Status.PENDING
