"""Token issuers across workspaces: another workspace registering the owner's issuer (its `iss`,
key set and audience) squats nothing and stops none of the owner's users who name their
workspace; and no refusal tells an outsider which issuers any workspace trusts."""

from __future__ import annotations

import httpx
import pytest

from memory.models import Memory
from tests.identity import AUD, ISS, JwksServer, SigningKey, forged_hs256, tampered, unsigned

WORKSPACE = "x-workspace-id"


@pytest.fixture(autouse=True)
def _loopback_jwks(settings):
    settings.ENGRAM_JWKS_ALLOW_PRIVATE = True  # the JWKS below lives on 127.0.0.1
    settings.ENGRAM_JWKS_REFETCH_COOLDOWN_SECONDS = 0.0


@pytest.fixture(scope="module")
def rsa_key():
    return SigningKey("RS256", "rsa-1")


@pytest.fixture
def jwks(rsa_key):
    server = JwksServer(rsa_key)
    yield server
    server.stop()


def _register(client: httpx.Client, url: str) -> httpx.Response:
    body = {"issuer": ISS, "audiences": [AUD], "jwks_url": url, "algorithms": ["RS256"]}
    return client.post("/v1/auth/issuers", json=body)


def _as(server, token: str, **headers: str) -> httpx.Client:
    return httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {token}", **headers}, timeout=30
    )


def _remember(server, token: str, text: str, **headers: str) -> httpx.Response:
    with _as(server, token, **headers) as client:
        return client.post("/v1/memories", json={"text": text})


def test_no_refusal_says_which_issuers_or_workspaces_trust_a_tokens_iss(
    engram_server, http, outsider, owner, jwks, rsa_key
):
    """An unsigned token naming any `iss` (and any workspace) was told "no workspace trusts this
    token's issuer", "the workspace in x-workspace-id does not trust this token's issuer", "its
    algorithm is not allowed", "bad signature" or "no key with this kid": which `iss` Engram's
    workspaces trust, and which workspace trusts which, learned with no key at all."""
    assert _register(http, jwks.url).status_code == 201
    impostor = SigningKey("RS256", "rsa-1")  # the owner's kid, another key
    cases = [
        ("an iss nobody trusts", tampered(rsa_key.token(), iss="https://nobody.example.test/"), {}),
        ("the owner's iss, unsigned", unsigned(), {}),
        ("the owner's iss, HS256 with its public key", forged_hs256(rsa_key.public_pem()), {}),
        ("the owner's iss, another key", impostor.token(), {}),
        ("the owner's iss, a kid it lacks", SigningKey("RS256", "rsa-9").token(), {}),
        ("the owner's iss, tampered", tampered(rsa_key.token("alice"), sub="bob"), {}),
        ("a workspace that does not trust it", rsa_key.token(), {WORKSPACE: outsider[0].id}),
        ("a workspace that does not exist", rsa_key.token(), {WORKSPACE: "ws_nobody"}),
        ("the owner's workspace, unsigned", unsigned(), {WORKSPACE: owner[0].id}),
    ]
    answers = {}
    for name, token, headers in cases:
        with _as(engram_server, token, **headers) as client:
            response = client.get("/v1/memories")
        assert response.status_code == 401, (name, response.text)
        answers[name] = response.json()["error"]
    assert len({str(a) for a in answers.values()}) == 1, answers
    assert answers["an iss nobody trusts"]["code"] == "invalid_api_key"
    # what the owner's own users are told still names the check a signed token failed
    with _as(engram_server, rsa_key.token(aud="another-api")) as client:
        assert "audience" in client.get("/v1/memories").json()["error"]["message"]


def test_another_workspace_registering_the_owners_issuer_squats_nothing(
    engram_server, http, outsider_http, owner, outsider, jwks, rsa_key
):
    """The outsider registers the owner's issuer as it is (its `iss`, public key set and
    audience are no secret), before and after the owner: each registration is answered as any
    other, the owner's users who send x-workspace-id are the owner's whatever the outsider
    registers, and a token naming no workspace is never guessed to be the outsider's."""
    first = _register(outsider_http, jwks.url)  # before the owner: answered as any registration
    assert first.status_code == 201, first.text
    mine = _register(http, jwks.url)
    assert mine.status_code == 201, mine.text
    assert set(first.json()) == set(mine.json())  # nothing says another workspace has it

    ours = {WORKSPACE: owner[0].id}
    added = _remember(engram_server, rsa_key.token("alice"), "Alice lives in Oslo.", **ours)
    assert added.status_code == 201, added.text
    assert Memory.objects.get(id=added.json()["id"]).workspace_id == owner[0].id

    # a token naming no workspace, valid for both: refused, never put in either at a guess
    unnamed = _remember(engram_server, rsa_key.token("alice"), "Alice likes tea.")
    assert unnamed.status_code == 401 and WORKSPACE in unnamed.json()["error"]["message"]
    assert not Memory.objects.filter(workspace=outsider[0]).exists()

    # the outsider deletes its registration, or registers again: the owner's users go on
    issuer_id = first.json()["id"]
    assert outsider_http.delete(f"/v1/auth/issuers/{issuer_id}").status_code == 200
    assert _remember(engram_server, rsa_key.token("alice"), "Alice likes tea.").status_code == 201
    assert _register(outsider_http, jwks.url).status_code == 201
    again = _remember(engram_server, rsa_key.token("alice"), "Alice reads.", **ours)
    assert again.status_code == 201, again.text
    assert not Memory.objects.filter(workspace=outsider[0]).exists()
    with _as(engram_server, rsa_key.token("alice"), **ours) as alice:
        texts = {m["text"] for m in alice.get("/v1/memories").json()["data"]}
    assert texts == {"Alice lives in Oslo.", "Alice likes tea.", "Alice reads."}
