"""End-user tokens at the edges an app's users reach: found by driving a live instance as an
app that gives each user its own token (the HS256 issuer of tests.test_endusers)."""

from __future__ import annotations

import time

import httpx

from accounts.endusers.tokens import MAX_TOKEN_CHARS
from tests.identity import AUD, ISS, JwksServer, SigningKey, hs256, tampered
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


APP = "https://app.example.com"


def test_a_browser_app_on_an_allowed_origin_calls_the_api_with_its_users_token(
    engram_server, http, upstream, settings
):
    """The README offers end-user tokens to browser apps; without CORS a page's preflight was
    a 401 (it carries no key) and the browser blocked every call."""
    settings.ENGRAM_CORS_ALLOWED_ORIGINS = [APP]
    _trust_secret(http)
    asked = "authorization,content-type,x-workspace-id,x-stainless-os"
    with httpx.Client(base_url=engram_server.url, timeout=30) as browser:
        preflight = browser.options(
            "/v1/chat/completions",
            headers={
                "Origin": APP,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": asked,
            },
        )
        assert preflight.status_code == 204, preflight.text
        assert preflight.headers["access-control-allow-origin"] == APP
        assert preflight.headers["access-control-allow-headers"] == asked
        assert "POST" in preflight.headers["access-control-allow-methods"]
        assert "access-control-allow-credentials" not in preflight.headers

        token = {"Authorization": f"Bearer {hs256(SECRET, 'alice')}", "Origin": APP}
        body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]}
        answers = [
            browser.post("/v1/chat/completions", headers=token, json=body),
            browser.get("/v1/memories", headers=token),
            browser.get("/v1/memories", headers={"Origin": APP, "Authorization": "Bearer x"}),
        ]
        assert [a.status_code for a in answers] == [200, 200, 401]
        for answer in answers:  # the page reads answers and refusals alike
            assert answer.headers["access-control-allow-origin"] == APP
            assert answer.headers["access-control-expose-headers"] == "*"

        # another origin, and the admin (a session cookie), are served as before
        other = browser.options(
            "/v1/chat/completions",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
        )
        assert other.status_code == 401 and "access-control-allow-origin" not in other.headers
        admin = browser.get("/admin/login/", headers={"Origin": APP})
        assert "access-control-allow-origin" not in admin.headers


def test_a_signed_token_whose_exp_or_nbf_is_not_a_number_says_so(engram_server, http):
    _trust_secret(http)
    for claims, word in [
        ({"exp": "tomorrow"}, "its exp is not a time"),
        ({"nbf": "now"}, "its nbf is not a time"),
    ]:
        error = refused(chat(engram_server, hs256(SECRET, **claims)), 401, word)
        assert error["code"] == "invalid_api_key"
    # a number in a string is one (PyJWT reads it), and an unsigned token is told nothing
    assert chat(engram_server, hs256(SECRET, exp=str(int(time.time()) + 60))).status_code == 200
    unsigned = tampered(hs256(SECRET), exp="tomorrow")
    refused(chat(engram_server, unsigned), 401, "no issuer trusted here")


def test_keys_of_two_types_sharing_a_kid_each_verify_their_own_tokens(
    engram_server, http, settings
):
    """RFC 7517 lets an RSA and an EC key share a kid (alternatives); the first of them was
    the only one tried, so every token of the other was 401."""
    settings.ENGRAM_JWKS_ALLOW_PRIVATE = True
    rsa_key, ec_key = SigningKey("RS256", "shared"), SigningKey("ES256", "shared")
    server = JwksServer(rsa_key, ec_key)
    try:
        body = {"issuer": ISS, "audiences": [AUD], "jwks_url": server.url}
        assert http.post("/v1/auth/issuers", json=body).status_code == 201
        for key in (rsa_key, ec_key):
            with as_user(engram_server, key.token("alice")) as alice:
                assert alice.get("/v1/memories").status_code == 200, key.algorithm
        # a token of neither key is still refused as any other
        impostor = SigningKey("ES256", "shared")
        refused(chat(engram_server, impostor.token()), 401, "no issuer trusted here")
    finally:
        server.stop()


def test_an_encrypted_token_is_told_it_is_one_not_to_send_an_sk_key(engram_server, http):
    """Auth0 gives a login that names no audience an encrypted token (JWE): it was answered
    "Pass it as 'Authorization: Bearer sk-...'", as if end-user tokens were not taken."""
    _trust_secret(http)
    header = "eyJhbGciOiJkaXIiLCJlbmMiOiJBMjU2R0NNIiwiaXNzIjoiaHR0cHM6Ly9hY21lLmF1dGgwLmNvbS8ifQ"
    jwe = f"{header}..k3Zl8pQ2bW9x.Y2lwaGVydGV4dA.dGFnMTIzNDU2"
    error = refused(chat(engram_server, jwe), 401, "encrypted (a JWE", "audience")
    assert error["code"] == "invalid_api_key" and "sk-" not in error["message"]
    with as_user(engram_server, jwe) as client:
        assert client.get("/v1/memories").json()["error"] == error


def test_an_x_user_id_naming_another_user_is_403_on_the_rest_routes_too(engram_server, http):
    """The chat doors refused it; GET /v1/memories answered alice's memories under an
    x-user-id that said bob."""
    _trust_secret(http)
    http.post("/v1/memories", json={"user_id": "bob", "text": "Bob keeps bees."})
    with as_user(engram_server, hs256(SECRET, "alice")) as alice:
        assert alice.post("/v1/memories", json={"text": "Alice rows."}).status_code == 201
        for method, path, body in [
            ("GET", "/v1/memories", None),
            ("POST", "/v1/memories/search", {"query": "bees"}),
            ("GET", "/v1/conversations", None),
            ("GET", "/v1/users/alice", None),
        ]:
            response = alice.request(method, path, json=body, headers={"x-user-id": "bob"})
            error = refused(response, 403, "x-user-id names another user")
            assert (error["param"], error["code"]) == ("x-user-id", "user_mismatch")
        # naming its own user is fine, as at the chat doors
        mine = alice.get("/v1/memories", headers={"x-user-id": "alice"})
        assert [m["text"] for m in mine.json()["data"]] == ["Alice rows."]
    # a workspace key's REST calls are unchanged (they name users in the query or body)
    assert http.get("/v1/memories", headers={"x-user-id": "bob"}).status_code == 200


def test_a_new_key_under_the_same_kid_verifies_without_waiting_for_the_refresh(
    engram_server, http, settings
):
    """A provider that rotates the key under one kid (or its only key, tokens without kid):
    the set was kept until its background refresh, half its lifetime, every new token 401."""
    settings.ENGRAM_JWKS_ALLOW_PRIVATE = True
    settings.ENGRAM_JWKS_REFETCH_COOLDOWN_SECONDS = 0.0
    old, new = SigningKey("ES256", "main"), SigningKey("ES256", "main")
    server = JwksServer(old)
    try:
        body = {"issuer": ISS, "audiences": [AUD], "jwks_url": server.url}
        assert http.post("/v1/auth/issuers", json=body).status_code == 201
        assert chat(engram_server, old.token()).status_code == 200
        server.keys = [new]
        assert chat(engram_server, new.token()).status_code == 200
        # the old key is gone from the set this process holds: its tokens stop
        refused(chat(engram_server, old.token()), 401, "no issuer trusted here")
        # within the cool-down a bad signature refetches nothing
        settings.ENGRAM_JWKS_REFETCH_COOLDOWN_SECONDS = 60.0
        fetched = server.requests
        impostor = SigningKey("ES256", "main")
        refused(chat(engram_server, impostor.token()), 401, "no issuer trusted here")
        assert server.requests == fetched
    finally:
        server.stop()
