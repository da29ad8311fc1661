"""End-user tokens: an app's own users call Engram with their provider's JWT (RS256 and ES256
from a JWKS served on loopback, HS256 from a secret); each reaches only their own data."""

from __future__ import annotations

import json
import socket
import time

import httpx
import pytest

from accounts.endusers.models import Issuer
from memory.models import Conversation, Memory
from tests.identity import (
    AUD,
    ISS,
    JwksServer,
    RawHttpServer,
    SigningKey,
    forged_hs256,
    hs256,
    tampered,
    unsigned,
)
from tests.upstream import Reply, openai_completion

SECRET = "an-hs256-secret-of-at-least-32-characters"


@pytest.fixture(autouse=True)
def _loopback_jwks(settings):
    settings.ENGRAM_JWKS_ALLOW_PRIVATE = True  # the JWKS below lives on 127.0.0.1
    settings.ENGRAM_JWKS_REFETCH_COOLDOWN_SECONDS = 0.0  # rotations in a test are back to back


@pytest.fixture(scope="module")
def rsa_key():
    return SigningKey("RS256", "rsa-1")


@pytest.fixture(scope="module")
def ec_key():
    return SigningKey("ES256", "ec-1")


@pytest.fixture
def jwks(rsa_key, ec_key):
    server = JwksServer(rsa_key, ec_key)
    yield server
    server.stop()


def trust(http, url, **extra) -> dict:
    body = {"issuer": ISS, "audiences": [AUD], "jwks_url": url, "algorithms": ["RS256", "ES256"]}
    response = http.post("/v1/auth/issuers", json=body | extra)
    assert response.status_code == 201, response.text
    return response.json()


@pytest.fixture
def issuer(http, jwks):
    return trust(http, jwks.url)


def as_user(server, token, **headers) -> httpx.Client:
    return httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {token}", **headers}, timeout=30
    )


def chat(server, token, text="Hi", **headers) -> httpx.Response:
    with as_user(server, token, **headers) as client:
        return client.post(
            "/v1/chat/completions",
            json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]},
        )


def refused(response: httpx.Response, status: int, *words: str) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    for word in words:
        assert word in error["message"], error
    return error


# --- the issuers API ----------------------------------------------------------------------------


def test_issuers_are_managed_with_the_workspace_key_and_secrets_never_come_back(
    http, jwks, rsa_key, engram_server
):
    created = trust(http, jwks.url)
    assert created["object"] == "auth.issuer" and created["user_claim"] == "sub"
    assert created["has_hs256_secret"] is False and created["leeway_seconds"] == 30

    secret_issuer = http.post(
        "/v1/auth/issuers",
        json={"issuer": "https://hs.example.test", "audiences": ["a"], "hs256_secret": SECRET},
    )
    assert secret_issuer.status_code == 201, secret_issuer.text
    body = secret_issuer.json()
    assert body["has_hs256_secret"] is True and body["algorithms"] == ["HS256"]
    assert SECRET not in secret_issuer.text
    stored = Issuer.objects.get(id=body["id"]).hs256_secret_encrypted
    assert stored and SECRET not in stored  # encrypted at rest

    listed = http.get("/v1/auth/issuers").json()
    assert [i["id"] for i in listed["data"]] == [body["id"], created["id"]]
    assert SECRET not in http.get(f"/v1/auth/issuers/{body['id']}").text

    patched = http.patch(
        f"/v1/auth/issuers/{created['id']}", json={"audiences": [AUD, "other"], "user_claim": "uid"}
    ).json()
    assert patched["audiences"] == [AUD, "other"] and patched["user_claim"] == "uid"
    # the field named like the service's own argument (a 500 before: two values for "issuer")
    moved = http.patch(
        f"/v1/auth/issuers/{body['id']}", json={"issuer": "https://hs2.example.test"}
    )
    assert moved.status_code == 200, moved.text
    assert moved.json()["issuer"] == "https://hs2.example.test"
    assert Issuer.objects.get(id=body["id"]).issuer == "https://hs2.example.test"

    # the rules: alg none never, HS and RS never mixed, an audience always, one key source
    bad = [
        ({"algorithms": ["none"]}, "algorithms"),
        ({"algorithms": ["HS256"]}, "algorithms"),
        ({"audiences": []}, "audiences"),
        ({"hs256_secret": SECRET}, "jwks_url"),
    ]
    for change, param in bad:
        response = http.post(
            "/v1/auth/issuers",
            json={"issuer": "https://x.test", "audiences": [AUD], "jwks_url": jwks.url} | change,
        )
        assert response.status_code == 400, (change, response.text)
        assert response.json()["error"]["param"].startswith(param), response.text
    duplicate = http.post(
        "/v1/auth/issuers", json={"issuer": ISS, "audiences": [AUD], "jwks_url": jwks.url}
    )
    refused(duplicate, 400, "already trusts")

    # an end user's token cannot manage issuers (nor keys, collections or users at large)
    http.patch(f"/v1/auth/issuers/{created['id']}", json={"user_claim": "sub"})
    with as_user(engram_server, rsa_key.token("alice")) as alice:
        assert alice.get("/v1/memories").status_code == 200
        for method, path in [
            ("GET", "/v1/auth/issuers"),
            ("POST", "/v1/collections"),
            ("GET", "/v1/users"),
            ("POST", "/v1/conversations/c1/messages"),
        ]:
            assert alice.request(method, path, json={}).status_code == 403, path

    assert http.delete(f"/v1/auth/issuers/{created['id']}").json()["deleted"] is True
    assert http.get(f"/v1/auth/issuers/{created['id']}").status_code == 404
    # its tokens stop at once, even one already verified and cached
    refused(chat(engram_server, rsa_key.token("alice")), 401, "no issuer trusted here")


def test_a_private_jwks_url_is_refused_unless_the_setting_allows_it(http, jwks, settings):
    settings.ENGRAM_JWKS_ALLOW_PRIVATE = False
    response = http.post(
        "/v1/auth/issuers", json={"issuer": ISS, "audiences": [AUD], "jwks_url": jwks.url}
    )
    error = refused(response, 400, "https")
    assert error["param"] == "jwks_url"


def test_a_jwks_url_on_an_ipv6_form_of_a_private_address_is_refused(http, settings):
    settings.ENGRAM_JWKS_ALLOW_PRIVATE = False
    for host in ("[64:ff9b::a9fe:a9fe]", "[2002:7f00:1::]", "[::127.0.0.1]"):
        body = {"issuer": ISS, "audiences": [AUD], "jwks_url": f"https://{host}/jwks.json"}
        error = refused(http.post("/v1/auth/issuers", json=body), 400, "private address")
        assert error["param"] == "jwks_url"


@pytest.mark.parametrize("allow_private", [False, True])
def test_a_jwks_url_with_a_port_out_of_range_is_400_not_500(http, settings, allow_private):
    settings.ENGRAM_JWKS_ALLOW_PRIVATE = allow_private
    body = {"issuer": ISS, "audiences": [AUD], "jwks_url": "https://id.example.test:99999/k"}
    error = refused(http.post("/v1/auth/issuers", json=body), 400, "port")
    assert error["param"] == "jwks_url"


def test_a_jwks_host_that_answers_a_private_address_to_the_connection_is_refused(
    engram_server, http, rsa_key, settings, monkeypatch
):
    """DNS rebinding: the name resolves to a public address when checked and to loopback when
    connected. The fetch connects only to an address it checked itself."""
    settings.ENGRAM_JWKS_ALLOW_PRIVATE = False
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    real = socket.getaddrinfo

    def rebinding(host, *args, **kwargs):
        if host != "jwks.rebind.test":
            return real(host, *args, **kwargs)
        checked = kwargs.get("proto") == socket.IPPROTO_TCP  # check_url's lookup
        address = "93.184.215.14" if checked else "127.0.0.1"
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, port))]

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    try:
        trust(http, f"https://jwks.rebind.test:{port}/jwks.json")
        refused(chat(engram_server, rsa_key.token()), 401, "private address")
        listener.setblocking(False)
        with pytest.raises(BlockingIOError):  # nothing connected to the loopback listener
            listener.accept()
    finally:
        listener.close()


# --- chatting and remembering -------------------------------------------------------------------


@pytest.fixture
def offline_extraction(settings):
    settings.ENGRAM_MEMORY_EXTRACTION = "offline"


def test_a_valid_token_chats_and_remembers_as_its_sub(
    engram_server, http, issuer, rsa_key, upstream, celery_worker, offline_extraction
):
    from openai import OpenAI

    token = rsa_key.token("alice")
    client = OpenAI(base_url=engram_server.url + "/v1", api_key=token, max_retries=0)
    upstream.script(Reply(json=openai_completion("Lisbon is lovely!")))
    answer = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "I live in Lisbon."}],
        extra_headers={"x-conversation-id": "first"},
    )
    assert answer.choices[0].message.content == "Lisbon is lovely!"
    conversation = Conversation.objects.get(external_id="first")
    assert conversation.user_id == "alice"

    with as_user(engram_server, token) as alice:
        deadline = time.monotonic() + 60
        while alice.get("/v1/conversations/first").json()["processing"]["pending"]:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        mine = alice.get("/v1/memories").json()["data"]
    assert mine and all(m["user_id"] == "alice" for m in mine)
    assert any("Lisbon" in m["text"] for m in mine)
    # the workspace key sees the same memories under the token's sub
    assert {m["id"] for m in http.get("/v1/memories?user_id=alice").json()["data"]} == {
        m["id"] for m in mine
    }
    # the next chat of alice (a fresh token, same sub) is given her memory
    client = OpenAI(base_url=engram_server.url + "/v1", api_key=rsa_key.token("alice"))
    client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Where do I live?"}]
    )
    assert "Lisbon" in str(upstream.chat_requests()[-1].body["messages"])


@pytest.mark.parametrize("fast_path", [True, False], ids=["asgi-door", "django-view"])
def test_an_x_user_id_user_or_user_id_that_differs_from_the_token_is_403_naming_it(
    engram_server, issuer, ec_key, upstream, settings, fast_path
):
    settings.ENGRAM_GATEWAY_FAST_PATH = fast_path
    token = ec_key.token("alice")
    error = refused(chat(engram_server, token, **{"x-user-id": "bob"}), 403, "x-user-id")
    assert error["param"] == "x-user-id" and error["code"] == "user_mismatch"
    with as_user(engram_server, token) as alice:
        body = {"model": "m", "user": "bob", "messages": [{"role": "user", "content": "Hi"}]}
        assert refused(alice.post("/v1/chat/completions", json=body), 403)["param"] == "user"
        # the Django door (POST /v1/context) keeps the same rule
        context = alice.post("/v1/context", json=body)
        assert refused(context, 403)["param"] == "user"
        assert alice.post("/v1/context", json=body | {"user": "alice"}).json()["user_id"] == "alice"
        # the memory API's body field names the user at these doors too: the same rule
        mem0 = {**body, "user": "alice", "user_id": "bob"}
        assert refused(alice.post("/v1/chat/completions", json=mem0), 403)["param"] == "user_id"
        assert refused(alice.post("/v1/context", json=mem0), 403)["param"] == "user_id"
    assert chat(engram_server, token, **{"x-user-id": "alice"}).status_code == 200


# --- one user, not another ----------------------------------------------------------------------


def test_a_second_user_cannot_reach_the_first_users_memories_or_conversations(
    engram_server, http, issuer, rsa_key, ec_key
):
    memory = http.post("/v1/memories", json={"user_id": "alice", "text": "Alice lives in Oslo."})
    memory_id = memory.json()["id"]
    imported = http.post(
        "/v1/conversations/c-alice/messages",
        json={"user_id": "alice", "messages": [{"role": "user", "content": "I moved to Oslo"}]},
    )
    assert imported.status_code == 201, imported.text
    conversation_id = Conversation.objects.get(external_id="c-alice").id

    with as_user(engram_server, ec_key.token("bob")) as bob:
        assert bob.get("/v1/memories").json()["data"] == []
        assert refused(bob.get("/v1/memories?user_id=alice"), 403)["param"] == "user_id"
        for path in (f"/v1/memories/{memory_id}", f"/v1/memories/{memory_id}/history"):
            refused(bob.get(path), 404)
        refused(bob.patch(f"/v1/memories/{memory_id}", json={"text": "Bob was here."}), 404)
        refused(bob.delete(f"/v1/memories/{memory_id}"), 404)
        search = {"query": "Where does Alice live?", "user_id": "alice"}
        assert refused(bob.post("/v1/memories/search", json=search), 403)["param"] == "user_id"
        search.pop("user_id")
        assert "Oslo" not in bob.post("/v1/memories/search", json=search).text
        unified = {"query": "Where does Alice live?", "user_id": "alice"}
        assert refused(bob.post("/v1/search", json=unified), 403)["param"] == "user_id"
        unified.pop("user_id")
        assert "Oslo" not in bob.post("/v1/search", json=unified).text
        refused(bob.get("/v1/conversations?user_id=alice"), 403)
        assert bob.get("/v1/conversations").json()["data"] == []
        for path in ("c-alice", conversation_id, "c-alice/messages"):
            refused(bob.get(f"/v1/conversations/{path}"), 404)
        for method in ("GET", "DELETE"):
            refused(bob.request(method, "/v1/users/alice"), 403)
        refused(bob.get("/v1/users/alice/export"), 403)
        # bob's own data is his to manage
        own = bob.post("/v1/memories", json={"text": "Bob likes rain."})
        assert own.status_code == 201 and own.json()["user_id"] == "bob"
        assert bob.get("/v1/users/bob/export").status_code == 200

    assert Memory.objects.get(id=memory_id).text == "Alice lives in Oslo."  # untouched
    with as_user(engram_server, rsa_key.token("alice")) as alice:
        assert alice.get(f"/v1/memories/{memory_id}").json()["user_id"] == "alice"
        assert alice.get("/v1/conversations/c-alice/messages").json()["data"]
        found = alice.post("/v1/search", json={"query": "Where does Alice live?"})
        assert found.status_code == 200 and "Oslo" in found.text
        export = alice.get("/v1/users/alice/export")
        assert export.status_code == 200 and "Oslo" in export.text and "Bob" not in export.text
        assert alice.delete(f"/v1/memories/{memory_id}").json()["deleted"] is True
        assert alice.delete("/v1/users/alice").json()["deleted"] is True
    assert not Conversation.objects.filter(user_id="alice").exists()


def test_another_users_conversation_reads_as_one_that_does_not_exist_at_every_door(
    engram_server, http, issuer, rsa_key, ec_key, upstream
):
    """To an end-user token, another user's conversation (by the client's id or Engram's conv_
    id) is one that does not exist: the same 404, type, code and message as an id nobody
    holds, at the REST routes; at the chat and /v1/context doors (which name the header) too
    for Engram's conv_ id. A client's id is each user's own: a chat naming alice's is bob's
    own conversation (tests/test_conversation_ids_per_user.py)."""
    upstream.script(Reply(json=openai_completion("Mine.")))
    first = chat(engram_server, rsa_key.token("alice"), **{"x-conversation-id": "c-alice"})
    assert first.status_code == 200, first.text
    conv_id = Conversation.objects.get(external_id="c-alice").id
    nobodys = {"c-alice": "c-nobody", conv_id: "conv_" + "0" * 26}

    def answer(response, named, instead) -> tuple[int, dict]:
        return response.status_code, json.loads(response.text.replace(named, instead))

    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]}
    with as_user(engram_server, ec_key.token("bob")) as bob:
        for taken, unknown in nobodys.items():
            for path in ("/v1/conversations/{}", "/v1/conversations/{}/messages"):
                for method in ("GET", "DELETE") if "messages" not in path else ("GET",):
                    theirs = bob.request(method, path.format(taken))
                    none = bob.request(method, path.format(unknown))
                    assert answer(theirs, taken, unknown) == answer(none, unknown, unknown)
                    assert theirs.status_code == 404
            rest = answer(bob.get(f"/v1/conversations/{unknown}"), unknown, unknown)
            if taken == "c-alice":
                continue
            for door in ("/v1/chat/completions", "/v1/context"):
                refused = bob.post(door, json=body, headers={"x-conversation-id": taken})
                status, error = answer(refused, taken, unknown)
                assert (status, error["error"] | {"param": None}) == (
                    rest[0],
                    rest[1]["error"] | {"param": None},
                ), door
                assert error["error"]["param"] == "x-conversation-id"
    assert Conversation.objects.filter(user_id="bob").count() == 0
    assert Conversation.objects.get(id=conv_id).user_id == "alice"


# --- refusals -----------------------------------------------------------------------------------


def test_tokens_that_fail_a_check_are_401_saying_which(engram_server, issuer, rsa_key, ec_key):
    impostor = SigningKey("RS256", "rsa-1")  # same kid, another key
    cases = [
        (rsa_key.token(exp=int(time.time()) - 120), "expired"),
        (rsa_key.token(aud="someone-else"), "audience"),
        # before a signature is found good, one answer (test_tenancy_issuers): iss, alg, key
        (rsa_key.token(iss="https://evil.example.test/"), "no issuer trusted here"),
        (unsigned(), "no issuer trusted here"),
        (forged_hs256(rsa_key.public_pem(), kid="rsa-1"), "no issuer trusted here"),
        (tampered(rsa_key.token("alice"), sub="bob"), "no issuer trusted here"),
        (impostor.token(), "no issuer trusted here"),
        (rsa_key.token(nbf=int(time.time()) + 3600), "not valid yet"),
        (rsa_key.token(exp=None), "exp"),
        (rsa_key.token(aud=None), "aud"),
        (ec_key.token(headers={"kid": "nobody"}), "no issuer trusted here"),
        ("eyJhbGciOi.not-json.x", "malformed"),
    ]
    for token, word in cases:
        error = refused(chat(engram_server, token), 401, word)
        assert error["code"] == "invalid_api_key"
        assert token not in error["message"]
        # the REST door answers the same
        with as_user(engram_server, token) as client:
            assert client.get("/v1/memories").json()["error"]["message"] == error["message"]


def test_a_made_up_iss_no_issuer_could_have_is_401_not_500(engram_server, issuer, rsa_key):
    from accounts.endusers import tokens

    # unsigned claims: anyone can send them, and the iss is looked up before any key is
    for iss in ("https://id.example.test/\x00", "\ud800", ISS + "x" * 500):
        token = tampered(rsa_key.token(), iss=iss)
        for path in ("/v1/chat/completions", "/v1/memories"):
            with as_user(engram_server, token) as client:
                response = client.post(path, json={"text": "hi"})
            refused(response, 401, "no issuer trusted here")
    assert tokens.issuer_cache.peek(ISS + "x" * 500) == (False, None)  # not kept either


def test_an_hs256_issuer_accepts_its_secret_only(engram_server, http, rsa_key):
    created = http.post(
        "/v1/auth/issuers",
        json={"issuer": ISS, "audiences": [AUD], "hs256_secret": SECRET, "user_claim": "uid"},
    )
    assert created.status_code == 201, created.text
    with as_user(engram_server, hs256(SECRET, uid="carol")) as carol:
        mine = carol.post("/v1/memories", json={"text": "Carol plays chess."})
        assert mine.status_code == 201 and mine.json()["user_id"] == "carol"
    with as_user(engram_server, hs256(SECRET, uid="auth0|abc")) as auth0_user:
        mine = auth0_user.post("/v1/memories", json={"text": "An Auth0 user."})
        assert mine.json()["user_id"] == "auth0:abc"  # `|` is outside the id rule
    refused(chat(engram_server, hs256(SECRET, uid="has space")), 401, "uid claim")
    refused(chat(engram_server, hs256("another-secret-of-at-least-32-chars!!", uid="c")), 401)
    refused(chat(engram_server, hs256(SECRET)), 401, "uid claim")  # no uid
    refused(chat(engram_server, rsa_key.token(uid="carol")), 401, "no issuer trusted here")


def test_an_issuer_switches_its_key_source_as_documented(engram_server, http, jwks, rsa_key):
    """A new jwks_url with the secret emptied (or the other way) is the switch; the
    algorithms stored for the old source (HS256, given by default) refused it with a 400
    until they were given again, though they could not apply to the new source."""
    created = http.post(
        "/v1/auth/issuers", json={"issuer": ISS, "audiences": [AUD], "hs256_secret": SECRET}
    ).json()
    moved = http.patch(
        f"/v1/auth/issuers/{created['id']}", json={"jwks_url": jwks.url, "hs256_secret": None}
    )
    assert moved.status_code == 200, moved.text
    assert moved.json()["algorithms"] == ["RS256", "ES256"]
    assert moved.json()["has_hs256_secret"] is False
    with as_user(engram_server, rsa_key.token("alice")) as alice:
        assert alice.get("/v1/memories").status_code == 200
    refused(chat(engram_server, hs256(SECRET)), 401)

    back = http.patch(
        f"/v1/auth/issuers/{created['id']}", json={"jwks_url": None, "hs256_secret": SECRET}
    )
    assert back.status_code == 200, back.text
    assert back.json()["algorithms"] == ["HS256"]
    with as_user(engram_server, hs256(SECRET)) as alice:
        assert alice.get("/v1/memories").status_code == 200
    # algorithms given with the switch are kept, and checked against the new source
    wrong = http.patch(
        f"/v1/auth/issuers/{created['id']}",
        json={"jwks_url": jwks.url, "hs256_secret": None, "algorithms": ["HS256"]},
    )
    refused(wrong, 400, "cannot be used with a jwks_url")
    chosen = http.patch(
        f"/v1/auth/issuers/{created['id']}",
        json={"jwks_url": jwks.url, "hs256_secret": None, "algorithms": ["RS256"]},
    )
    assert chosen.status_code == 200 and chosen.json()["algorithms"] == ["RS256"]
    # an edit that keeps the source keeps the algorithms
    kept = http.patch(f"/v1/auth/issuers/{created['id']}", json={"leeway_seconds": 10})
    assert kept.json()["algorithms"] == ["RS256"]


def test_an_auth0_sub_is_one_user_whichever_door_names_it(engram_server, http):
    """A token's `auth0|abc` is kept as `auth0:abc`; x-user-id, a body, a query and a path
    naming `auth0|abc` refused it (400, or 403 beside the user's own token), so the app's
    server could not reach the user its tokens wrote as."""
    created = http.post(
        "/v1/auth/issuers",
        json={"issuer": ISS, "audiences": [AUD], "hs256_secret": SECRET, "user_claim": "uid"},
    )
    assert created.status_code == 201, created.text
    token = hs256(SECRET, uid="auth0|abc")
    answered = chat(engram_server, token, **{"x-user-id": "auth0|abc"})
    assert answered.status_code == 200, answered.text
    with as_user(engram_server, token) as own:
        listed = own.get("/v1/memories", params={"user_id": "auth0|abc"})
        assert listed.status_code == 200, listed.text
    # The workspace's key names the same person the same way.
    added = http.post("/v1/memories", json={"user_id": "auth0|abc", "text": "Likes tea."})
    assert added.status_code == 201 and added.json()["user_id"] == "auth0:abc"
    user = http.get("/v1/users/auth0%7Cabc")
    assert user.status_code == 200 and user.json()["id"] == "auth0:abc", user.text
    listed = http.get("/v1/memories", params={"user_id": "auth0|abc"}).json()["data"]
    assert [m["text"] for m in listed] == ["Likes tea."]


def test_an_issuer_whose_secret_the_key_cannot_decrypt_is_skipped_not_a_500(
    engram_server, http, settings, caplog
):
    created = http.post(
        "/v1/auth/issuers", json={"issuer": ISS, "audiences": [AUD], "hs256_secret": SECRET}
    )
    assert created.status_code == 201, created.text
    settings.ENGRAM_ENCRYPTION_KEY = "a-key-that-did-not-encrypt-it"  # a rotation gone wrong
    refused(chat(engram_server, hs256(SECRET)), 401, "no issuer trusted here")
    assert created.json()["id"] in caplog.text and SECRET not in caplog.text
    # the API says what to do instead of a 500: give the secret again
    issuer_url = f"/v1/auth/issuers/{created.json()['id']}"
    error = refused(http.patch(issuer_url, json={"leeway_seconds": 10}), 400, "decrypt")
    assert error["param"] == "hs256_secret"
    assert http.patch(issuer_url, json={"hs256_secret": SECRET}).status_code == 200
    assert chat(engram_server, hs256(SECRET)).status_code == 200


def test_a_numeric_sub_or_jti_is_a_user_like_any_other(engram_server, http):
    """Laravel's jwt-auth and many in-house issuers put the user's numeric id in `sub` (and a
    number in `jti`): PyJWT refused those tokens whole ('it was refused'), though a number in
    the user's claim is meant to name the user."""
    created = http.post(
        "/v1/auth/issuers", json={"issuer": ISS, "audiences": [AUD], "hs256_secret": SECRET}
    )
    assert created.status_code == 201, created.text
    with as_user(engram_server, hs256(SECRET, 42, jti=7)) as user_42:
        mine = user_42.post("/v1/memories", json={"text": "User 42 plays go."})
        assert mine.status_code == 201, mine.text
        assert mine.json()["user_id"] == "42"


def test_a_required_scope_is_checked(engram_server, http, jwks, rsa_key):
    trust(http, jwks.url, required_scope="engram:chat")
    refused(chat(engram_server, rsa_key.token(scope="openid email")), 403, "engram:chat")
    with as_user(engram_server, rsa_key.token(scope="openid engram:chat")) as ok:
        assert ok.get("/v1/memories").status_code == 200


def test_a_required_scope_of_several_words_needs_each_of_them(engram_server, http, jwks, rsa_key):
    # as OAuth writes scopes: space-separated; pasted with a trailing space, too
    trust(http, jwks.url, required_scope=" engram:chat engram:memories ")
    refused(chat(engram_server, rsa_key.token(scope="openid engram:chat")), 403, "engram:memories")
    both = rsa_key.token(scope="engram:memories openid engram:chat")
    assert chat(engram_server, both).status_code == 200
    assert chat(engram_server, rsa_key.token(scp=["engram:chat", "engram:memories"])).is_success


def test_one_issuer_serving_two_workspaces_needs_x_workspace_id(
    engram_server, http, outsider, jwks, rsa_key
):
    trust(http, jwks.url)
    with httpx.Client(
        base_url=engram_server.url, headers={"Authorization": f"Bearer {outsider[1]}"}
    ) as other:
        trust(other, jwks.url)
    refused(chat(engram_server, rsa_key.token()), 401, "x-workspace-id")
    with as_user(engram_server, rsa_key.token("dan"), **{"x-workspace-id": outsider[0].id}) as dan:
        assert dan.post("/v1/memories", json={"text": "Dan."}).status_code == 201
    assert Memory.objects.get(user_id="dan").workspace_id == outsider[0].id


def test_another_workspace_trusting_the_same_iss_with_its_own_key_stops_nobody(
    engram_server, http, owner, outsider, jwks, rsa_key
):
    """Any workspace key can register any `iss`: another tenant naming this one's issuer with
    a secret of its own refused every token of this one's users that lacked x-workspace-id.
    A token goes to the workspace whose key signed it; each reaches only its own data."""
    trust(http, jwks.url)
    with httpx.Client(
        base_url=engram_server.url, headers={"Authorization": f"Bearer {outsider[1]}"}
    ) as other:
        squatted = other.post(
            "/v1/auth/issuers", json={"issuer": ISS, "audiences": [AUD], "hs256_secret": SECRET}
        )
        assert squatted.status_code == 201, squatted.text

    with as_user(engram_server, rsa_key.token("erin")) as erin:
        assert erin.post("/v1/memories", json={"text": "Erin."}).status_code == 201
    with as_user(engram_server, hs256(SECRET, "mallory")) as mallory:
        assert mallory.post("/v1/memories", json={"text": "Mallory."}).status_code == 201
        assert mallory.get("/v1/memories").json()["data"][0]["text"] == "Mallory."
    assert Memory.objects.get(user_id="erin").workspace_id == owner[0].id
    assert Memory.objects.get(user_id="mallory").workspace_id == outsider[0].id
    # refused by both: the reason is the one of the issuer whose key signed it
    expired = rsa_key.token("erin", exp=int(time.time()) - 3600)
    refused(chat(engram_server, expired), 401, "expired")


# --- the key set: rotation, outages, no kid ------------------------------------------------------


def test_a_rotated_key_is_used_without_restart_and_a_removed_one_stops(
    engram_server, issuer, jwks, rsa_key
):
    assert chat(engram_server, rsa_key.token()).status_code == 200
    fetched = jwks.requests
    rotated = SigningKey("RS256", "rsa-2")
    jwks.keys.append(rotated)  # the provider publishes its next key
    assert chat(engram_server, rotated.token()).status_code == 200  # refetched on the new kid
    assert jwks.requests == fetched + 1
    assert chat(engram_server, rsa_key.token()).status_code == 200  # the old key still holds

    jwks.keys.remove(rsa_key)  # the provider retires the old key
    refused(chat(engram_server, SigningKey("RS256", "rsa-3").token()), 401, "kid")  # refetch
    refused(chat(engram_server, rsa_key.token()), 401, "kid")
    assert chat(engram_server, rotated.token()).status_code == 200


def test_when_the_jwks_is_down_cached_keys_verify_and_a_new_kid_is_401(
    engram_server, http, issuer, jwks, rsa_key
):
    assert chat(engram_server, rsa_key.token()).status_code == 200
    jwks.stop()
    assert chat(engram_server, rsa_key.token("bob")).status_code == 200  # a new token, cached key
    error = refused(chat(engram_server, SigningKey("RS256", "rsa-9").token()), 401, "kid")
    assert "unreachable" in error["message"]

    # an issuer whose JWKS never answered: 401 saying so, never a 5xx
    http.patch(f"/v1/auth/issuers/{issuer['id']}", json={"jwks_url": jwks.url + "?other"})
    refused(chat(engram_server, rsa_key.token()), 401, "unreachable")


@pytest.mark.parametrize(
    "reply",
    [
        b"not http\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nx-long: " + b"a" * 70_000 + b"\r\n\r\n",
        b'HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n100\r\n{"keys": [',
    ],
    ids=["not-http", "header-too-long", "cut-chunk"],
)
def test_a_jwks_url_that_answers_no_valid_http_is_401_not_500(engram_server, http, rsa_key, reply):
    provider = RawHttpServer(reply)
    trust(http, provider.url)
    try:
        refused(chat(engram_server, rsa_key.token()), 401, "the JWKS URL gave no valid HTTP")
        with as_user(engram_server, rsa_key.token()) as alice:
            refused(alice.get("/v1/memories"), 401, "the JWKS URL gave no valid HTTP")
    finally:
        provider.stop()


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"[" * 100_000, "not JSON"),  # nested past the decoder's recursion limit
        (b"\xff\xfe{}", "not JSON"),
        (b'{"keys": {"kid": "rsa-1"}}', "no `keys` array"),
        (b'{"keys": [1, "a", {"kid": "rsa-1"}]}', "kid"),
    ],
    ids=["deep", "not-utf8", "keys-not-a-list", "keys-not-keys"],
)
def test_a_jwks_that_is_not_a_key_set_is_401_not_500(engram_server, http, rsa_key, body, why):
    reply = b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
    provider = RawHttpServer(reply)
    trust(http, provider.url)
    try:
        refused(chat(engram_server, rsa_key.token()), 401, why)
    finally:
        provider.stop()


def test_a_jwks_url_that_answers_a_byte_at_a_time_fails_at_the_timeout(
    engram_server, http, rsa_key, settings
):
    # each byte well within the socket's timeout, the whole answer ~15 s: the fetch, and the
    # requests waiting for its keys, end at ENGRAM_JWKS_TIMEOUT_SECONDS instead
    settings.ENGRAM_JWKS_TIMEOUT_SECONDS = 1.0
    body = b'{"keys": []}' + b" " * 60
    reply = b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
    provider = RawHttpServer(reply, pause=0.1)
    trust(http, provider.url)
    try:
        refused(chat(engram_server, rsa_key.token()), 401, "did not answer within 1 s")
    finally:
        provider.stop()


def test_a_token_without_kid_verifies_against_a_one_key_set(engram_server, http):
    lone = SigningKey("ES256", None)
    server = JwksServer(lone)
    try:
        trust(http, server.url)
        assert chat(engram_server, lone.token("erin")).status_code == 200
        server.keys.append(SigningKey("ES256", "ec-2"))
        Issuer.objects.update(jwks_url=server.url + "?again")  # a fresh set of two keys
        from accounts.endusers.tokens import clear

        clear()
        refused(chat(engram_server, lone.token("erin")), 401, "no issuer trusted here")
    finally:
        server.stop()


def test_an_aging_key_set_is_refreshed_in_the_background_and_expires_with_its_lifetime(
    settings, jwks, rsa_key
):
    from accounts.endusers import jwks as keysets

    keysets.clear()
    lifetime = settings.ENGRAM_JWKS_CACHE_SECONDS
    assert keysets.signing_key(jwks.url, kid="rsa-1", algorithm="RS256") is not None
    assert jwks.requests == 1
    entry = keysets._sets[jwks.url]
    entry.fetched -= lifetime * 0.75  # past half its life: served now, refreshed behind
    assert keysets.signing_key(jwks.url, kid="rsa-1", algorithm="RS256") is not None
    deadline = time.monotonic() + 10
    while jwks.requests < 2:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    jwks.stop()
    while entry.refreshing:
        time.sleep(0.01)
    entry.fetched -= lifetime * 2  # past its life, and the provider is down
    with pytest.raises(keysets.JwksError, match="unreachable"):
        keysets.signing_key(jwks.url, kid="rsa-1", algorithm="RS256")


def test_the_sync_door_resolves_the_same_principal(transactional_db, owner, jwks, rsa_key):
    from accounts.authentication import resolve_sync
    from accounts.endusers import services

    services.issuer_create(workspace=owner[0], issuer=ISS, audiences=[AUD], jwks_url=jwks.url)
    principal = resolve_sync(rsa_key.token("frank"))
    assert principal is not None
    assert principal.end_user == "frank" and principal.workspace == owner[0]
    assert principal.key_id is None and not principal.is_operator


def test_the_admin_adds_an_issuer_with_a_write_only_secret(admin_client, owner):
    from django.urls import reverse

    add = reverse("admin:accounts_issuer_add")
    form = {
        "workspace": owner[0].pk,
        "issuer": "https://admin.example.test/",
        "audiences": '["app"]',
        "jwks_url": "",
        "algorithms": "[]",
        "user_claim": "sub",
        "required_scope": "",
        "leeway_seconds": "30",
    }
    page = admin_client.post(add, form | {"algorithms": '["RS256"]', "hs256_secret": SECRET})
    assert page.status_code == 200 and b"cannot be used with" in page.content  # the API's rule
    assert not Issuer.objects.exists()
    assert admin_client.post(add, form | {"hs256_secret": SECRET}).status_code == 302
    issuer = Issuer.objects.get()
    assert issuer.get_secret() == SECRET and SECRET not in issuer.hs256_secret_encrypted
    change = admin_client.get(reverse("admin:accounts_issuer_change", args=[issuer.pk]))
    assert SECRET.encode() not in change.content


@pytest.mark.parametrize(
    ("field", "value", "why"),
    [
        # a JSON string, not a list: each of its characters was an accepted `aud` (refused
        # by the admin's JSON field, config.admin_save, before the service's rule)
        ("audiences", '"app"', "Give a list"),
        ("audiences", "[1]", "list of strings"),
        ("audiences", '["app", ""]', "list of strings"),
        ("algorithms", '"HS256"', "Give a list"),
        ("algorithms", "[5]", "a list of algorithm names"),
        # the API's limit: a day's leeway keeps an expired token working for a day
        ("leeway_seconds", "86400", "300"),
        # the API's 32: a short HS256 secret can be guessed offline from one token
        ("hs256_secret", "secret", "From 32 to 500 characters"),
        # and its 500: the admin took 100,000 characters
        ("hs256_secret", "s" * 501, "From 32 to 500 characters"),
    ],
)
def test_the_admin_keeps_the_api_s_rules_for_audiences_algorithms_and_leeway(
    admin_client, owner, field, value, why
):
    from django.urls import reverse

    form = {
        "workspace": owner[0].pk,
        "issuer": "https://admin.example.test/",
        "audiences": '["app"]',
        "jwks_url": "",
        "algorithms": '["HS256"]',
        "user_claim": "sub",
        "required_scope": "",
        "leeway_seconds": "30",
        "hs256_secret": SECRET,
    }
    page = admin_client.post(reverse("admin:accounts_issuer_add"), form | {field: value})
    assert page.status_code == 200 and why.encode() in page.content
    assert not Issuer.objects.exists()


def test_a_deleted_workspace_s_tokens_stop_at_once(engram_server, owner, issuer, rsa_key):
    from accounts.services import workspace_delete

    token = rsa_key.token("gina")
    with as_user(engram_server, token) as gina:
        assert gina.get("/v1/memories").status_code == 200  # verified, cached
        workspace_delete(workspace=owner[0])
        refused(gina.get("/v1/memories"), 401, "no issuer trusted here")


def test_made_up_kids_do_not_refetch_within_the_cool_down(settings, jwks):
    from accounts.endusers import jwks as keysets

    keysets.clear()
    settings.ENGRAM_JWKS_REFETCH_COOLDOWN_SECONDS = 60.0
    assert keysets.signing_key(jwks.url, kid="ec-1", algorithm="ES256") is not None
    for n in range(5):
        with pytest.raises(keysets.JwksError, match="kid"):
            keysets.signing_key(jwks.url, kid=f"made-up-{n}", algorithm="RS256")
    assert jwks.requests == 1  # one fetch, however many unknown kids
    with pytest.raises(keysets.JwksError, match="ES256"):
        keysets.signing_key(jwks.url, kid="ec-1", algorithm="RS256")  # an EC key, an RS alg
    settings.ENGRAM_JWKS_REFETCH_COOLDOWN_SECONDS = 0.0
    with pytest.raises(keysets.JwksError):
        keysets.signing_key(jwks.url, kid="made-up-again", algorithm="RS256")
    assert jwks.requests == 2


def test_a_key_that_is_not_a_workspace_key_is_one_refusal_at_every_door(
    engram_server, http, operator_http, issuer, rsa_key
):
    """The REST views refused an end-user token (or the operator key) with `forbidden` and the
    chat doors with `workspace_key_required`, in three messages, for the same refusal."""
    http.post(
        "/v1/conversations/c1/messages",
        json={"user_id": "alice", "messages": [{"role": "user", "content": "hi"}]},
    )
    answers = []
    with as_user(engram_server, rsa_key.token("alice")) as alice:
        for method, path in [
            ("GET", "/v1/auth/issuers"),
            ("POST", "/v1/collections"),
            ("GET", "/v1/users"),
            ("GET", "/v1/agents"),
            ("POST", "/v1/conversations/c1/messages"),  # a method the route's GET allows
        ]:
            answers.append((path, alice.request(method, path, json={})))
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]}
    for method, path in [
        ("POST", "/v1/chat/completions"),
        ("POST", "/v1/context"),
        ("GET", "/v1/models"),
        ("GET", "/v1/models/gpt-4o-mini"),
        ("POST", "/v1/chat/resume"),
        ("GET", "/v1/memories"),
        ("GET", "/v1/agents"),
        ("POST", "/v1/collections"),
    ]:
        answers.append((path, operator_http.request(method, path, json=body)))
    errors = set()
    for path, response in answers:
        assert response.status_code == 403, (path, response.text)
        error = response.json()["error"]
        assert (error["type"], error["code"]) == ("permission_error", "workspace_key_required"), (
            path,
            error,
        )
        errors.add(error["message"])
    assert errors == {"This endpoint needs a workspace API key."}


def test_a_token_searches_the_collections_it_names_at_every_door_and_manages_none(
    engram_server, http, owner, outsider, issuer, rsa_key
):
    """One rule for a token and the workspace's collections, as its chat's x-collection-ids
    has it: it may search those it names, at every door, and manage none of them.
    `POST /v1/collections/search` was a 403 while `POST /v1/search` with `types: ["chunks"]`
    (and a chat, and `/v1/context`) gave the same token the same chunks."""
    from memory.knowledge import services as knowledge

    workspace, _ = owner
    collection = knowledge.collection_create(workspace=workspace, name="handbook")
    document, _ = knowledge.document_create(
        workspace=workspace,
        collection=collection,
        raw=b"Refunds are paid within 14 days of a return reaching the warehouse.",
        title="Refund policy",
    )
    assert knowledge.document_ingest(document_id=document.id) == "ready"
    foreign = knowledge.collection_create(workspace=outsider[0], name="theirs")
    query = "How long do refunds take?"
    chat_body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": query}]}

    def doors(alice, ids):
        return {
            "collections/search": alice.post(
                "/v1/collections/search", json={"query": query, "collection_ids": ids}
            ),
            "search": alice.post(
                "/v1/search", json={"query": query, "types": ["chunks"], "collection_ids": ids}
            ),
            "context": alice.post(
                "/v1/context", json=chat_body, headers={"x-collection-ids": json.dumps(ids)}
            ),
        }

    with as_user(engram_server, rsa_key.token("alice")) as alice:
        found = doors(alice, [collection.id])
        for door, response in found.items():
            assert response.status_code == 200, (door, response.text)
            assert "14 days" in response.text, door
        direct = found["collections/search"].json()["data"]
        unified = found["search"].json()["data"]
        assert [(h["document_id"], h["chunk_index"]) for h in direct] == [
            (u["document_id"], u["chunk_index"]) for u in unified
        ]
        # another workspace's collection: the same 404 at every door
        for door, response in doors(alice, [foreign.id]).items():
            assert response.status_code == 404, (door, response.text)
            assert response.json()["error"]["code"] == "collection_not_found", door
        # managing them needs a workspace key, as before
        for method, path in [
            ("GET", "/v1/collections"),
            ("POST", "/v1/collections"),
            ("GET", f"/v1/collections/{collection.id}"),
            ("DELETE", f"/v1/collections/{collection.id}"),
            ("GET", f"/v1/collections/{collection.id}/documents"),
            ("GET", f"/v1/collections/{collection.id}/documents/{document.id}"),
        ]:
            response = alice.request(method, path, json={"name": "x"})
            assert response.status_code == 403, (method, path, response.text)
            assert response.json()["error"]["code"] == "workspace_key_required"


def test_a_token_of_a_key_the_issuer_retired_stops_once_engram_has_seen_it_gone(
    engram_server, issuer, jwks, rsa_key
):
    """A verified token was kept for ENGRAM_TOKEN_CACHE_SECONDS whatever happened to its key:
    retired by the provider (a leak is how keys are retired) and seen gone by Engram's own
    refetch, the very token verified before went on working for up to 5 minutes."""
    token = rsa_key.token()
    assert chat(engram_server, token).status_code == 200  # verified, cached
    rotated = SigningKey("RS256", "rsa-2")
    jwks.keys[:] = [rotated]  # the provider retires the key
    assert chat(engram_server, rotated.token()).status_code == 200  # Engram refetches, sees it
    refused(chat(engram_server, token), 401, "kid")
    assert chat(engram_server, rotated.token()).status_code == 200


def test_a_cached_token_stops_with_its_key_set_s_lifetime_and_renews_it(
    transactional_db, owner, settings, jwks, rsa_key
):
    """As a token's first verification: its key set is never trusted past its lifetime, even
    for a token verified while it was fresh (it worked on for the token cache's 5 minutes with
    the provider down); and a set past half its life is renewed behind a cached token, as
    behind a verification, so nobody waits for the fetch at its expiry."""
    from accounts.authentication import resolve_sync
    from accounts.endusers import jwks as keysets
    from accounts.endusers import services
    from config.common.errors import ApiError

    keysets.clear()
    services.issuer_create(workspace=owner[0], issuer=ISS, audiences=[AUD], jwks_url=jwks.url)
    token = rsa_key.token("gus")
    assert resolve_sync(token).end_user == "gus"  # verified, cached
    lifetime = settings.ENGRAM_JWKS_CACHE_SECONDS
    entry = keysets._sets[jwks.url]
    entry.fetched -= lifetime * 0.75
    assert resolve_sync(token).end_user == "gus"  # the cached token, and a refresh behind it
    deadline = time.monotonic() + 10
    while jwks.requests < 2 or entry.refreshing:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    jwks.stop()
    entry.fetched -= lifetime * 2  # past its life, and the provider is down
    with pytest.raises(ApiError, match="unreachable"):
        resolve_sync(token)


def test_an_issuer_with_a_secret_moves_to_a_jwks_in_the_admin(admin_client, owner, jwks):
    """The secret is write-only in the admin, so it could never be emptied: an issuer made
    with one could not be moved to keys at a URL ("exactly one" on every try)."""
    from django.urls import reverse

    from accounts.endusers import services

    issuer = services.issuer_create(
        workspace=owner[0], issuer=ISS, audiences=[AUD], hs256_secret=SECRET
    )
    form = {
        "issuer": ISS,
        "audiences": json.dumps([AUD]),
        "jwks_url": jwks.url,
        "algorithms": '["RS256"]',
        "user_claim": "sub",
        "required_scope": "",
        "leeway_seconds": "30",
        "hs256_secret": "",
    }
    url = reverse("admin:accounts_issuer_change", args=[issuer.pk])
    page = admin_client.post(url, form)
    assert page.status_code == 302, page.context["adminform"].form.errors
    issuer.refresh_from_db()
    assert issuer.jwks_url == jwks.url and not issuer.uses_secret
    # without a URL, an empty secret field still keeps the stored one
    issuer = services.issuer_create(
        workspace=owner[0], issuer=ISS + "2", audiences=[AUD], hs256_secret=SECRET
    )
    url = reverse("admin:accounts_issuer_change", args=[issuer.pk])
    kept = admin_client.post(url, form | {"issuer": ISS + "2", "jwks_url": "", "algorithms": "[]"})
    assert kept.status_code == 302, kept.context["adminform"].form.errors
    issuer.refresh_from_db()
    assert issuer.get_secret() == SECRET


@pytest.mark.parametrize("stream", [False, True])
def test_a_tokens_chat_naming_another_workspaces_collection_is_answered_as_an_unknown_one(
    engram_server, owner, outsider, issuer, rsa_key, upstream, stream
):
    """No oracle across workspaces: the status, code, param and words of x-collection-ids
    naming another workspace's collection are those of an id no workspace has."""
    from config.common.ids import new_id
    from memory.knowledge import services as knowledge

    knowledge.collection_create(workspace=owner[0], name="ours")
    foreign = knowledge.collection_create(workspace=outsider[0], name="theirs").id
    unknown = new_id("col")
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]}
    body["stream"] = stream

    def refusal(cid: str) -> tuple:
        with as_user(engram_server, rsa_key.token("alice")) as alice:
            headers = {"x-collection-ids": json.dumps([cid])}
            response = alice.post("/v1/chat/completions", json=body, headers=headers)
        error = response.json()["error"]
        return response.status_code, {**error, "message": error["message"].replace(cid, "ID")}

    assert refusal(foreign) == refusal(unknown)
    status, error = refusal(unknown)
    assert (status, error["code"], error["param"]) == (
        404,
        "collection_not_found",
        "x-collection-ids",
    )
    assert upstream.chat_requests() == []
