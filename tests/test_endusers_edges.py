"""End-user tokens at the edges an app's users reach: found by driving a live instance as an
app that gives each user its own token (the HS256 issuer of tests.test_endusers)."""

from __future__ import annotations

from accounts.endusers.tokens import MAX_TOKEN_CHARS
from tests.identity import AUD, ISS, hs256, tampered
from tests.test_endusers import SECRET, as_user, chat, refused


def _trust_secret(http) -> None:
    created = http.post(
        "/v1/auth/issuers", json={"issuer": ISS, "audiences": [AUD], "hs256_secret": SECRET}
    )
    assert created.status_code == 201, created.text


def test_an_oversized_token_is_401_before_it_is_read(engram_server, http, upstream):
    """A 12 MB token, signed, was verified and served (13 s); unsigned, anyone's megabyte cost
    the web process ~0.2 s of CPU to parse before its refusal."""
    _trust_secret(http)
    fits = hs256(SECRET, pad="x" * (MAX_TOKEN_CHARS * 3 // 4 - 400))  # base64: 4/3
    assert len(fits) <= MAX_TOKEN_CHARS
    assert chat(engram_server, fits).status_code == 200

    signed = hs256(SECRET, pad="x" * MAX_TOKEN_CHARS)
    for token in (signed, tampered(signed, sub="bob")):
        assert len(token) > MAX_TOKEN_CHARS
        error = refused(chat(engram_server, token), 401, f"longer than {MAX_TOKEN_CHARS}")
        assert error["code"] == "invalid_api_key" and token[:40] not in error["message"]
        with as_user(engram_server, token) as client:  # the REST door answers the same
            assert client.get("/v1/memories").json()["error"] == error


def test_an_end_user_token_on_the_provisioning_api_is_not_called_a_workspace_key(
    engram_server, http, owner
):
    _trust_secret(http)
    with as_user(engram_server, hs256(SECRET, "alice")) as alice:
        for method, path in [("GET", "/v1/workspaces"), ("PATCH", f"/v1/workspaces/{owner[0].id}")]:
            error = refused(alice.request(method, path, json={}), 403, "operator key")
            assert "end-user token" in error["message"], error
            assert "workspace key" not in error["message"], error
    # a workspace key is still told it is one
    assert "not a workspace key" in http.get("/v1/workspaces").json()["error"]["message"]
