"""`.` and `..` alone are not ids: in a path they are dot segments, which clients and browsers
resolve away (RFC 3986), so a user "..", accepted by x-user-id or a body, could be read,
exported and erased only as %2E%2E (httpx sends /v1/users/.. as /v1/users). Refused by the
one id rule, at every door, as a 400 naming the field and the rule."""

from __future__ import annotations

import pytest

from memory.models import Conversation, Memory
from tests.identity import AUD, ISS, hs256
from tests.upstream import Reply, openai_completion

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]}
SECRET = "an-hs256-secret-of-at-least-32-characters"


@pytest.mark.parametrize("dots", [".", ".."])
def test_dot_ids_are_refused_naming_the_rule(http, upstream, dots):
    upstream.script(*(Reply(json=openai_completion("Hi.")) for _ in range(4)))
    refusals = [
        (http.post("/v1/chat/completions", json=CHAT, headers={"x-user-id": dots}), "x-user-id"),
        (http.post("/v1/chat/completions", json=CHAT | {"user": dots}), "user"),
        (http.post("/v1/memories", json={"user_id": dots, "text": "A fact."}), "user_id"),
        (http.get("/v1/memories", params={"user_id": dots}), "user_id"),
        (
            http.post(
                "/v1/chat/completions",
                json=CHAT,
                headers={"x-user-id": "u", "x-conversation-id": dots},
            ),
            "x-conversation-id",
        ),
        (
            http.post("/v1/context", json=CHAT, headers={"x-user-id": "u", "x-session-id": dots}),
            "x-session-id",
        ),
    ]
    for response, param in refusals:
        assert response.status_code == 400, (param, response.text)
        error = response.json()["error"]
        assert error["param"] == param, error
        assert "other than . or .. alone" in error["message"], error
    assert not Memory.objects.exists() and not Conversation.objects.exists()


@pytest.mark.parametrize("dots", [".", ".."])
def test_an_end_user_token_naming_a_dot_user_is_refused(http, engram_server, dots):
    import httpx

    issuer = http.post(
        "/v1/auth/issuers",
        json={"issuer": ISS, "audiences": [AUD], "hs256_secret": SECRET, "algorithms": ["HS256"]},
    )
    assert issuer.status_code == 201, issuer.text
    token = hs256(SECRET, dots)
    with httpx.Client(
        base_url=engram_server.url, headers={"Authorization": f"Bearer {token}"}, timeout=30
    ) as user:
        refused = user.get("/v1/memories")
    assert refused.status_code == 401, refused.text
    assert refused.json()["error"]["code"] == "invalid_api_key"


def test_a_dot_user_stored_before_the_rule_is_still_reached_encoded(http, owner):
    from memory.services import memory_create

    memory_create(workspace=owner[0], user_id="..", text="Dotted rows.", embedding=[0.0] * 384)
    read = http.get("/v1/users/%2E%2E")
    assert read.status_code == 200 and read.json()["id"] == "..", read.text
    export = http.get("/v1/users/%2E%2E/export")
    assert export.status_code == 200 and "Dotted rows." in export.text
    assert http.delete("/v1/users/%2E%2E").json()["deleted"] is True
    assert not Memory.objects.exists()
