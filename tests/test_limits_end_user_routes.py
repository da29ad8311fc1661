"""An end user's rate limits on every route their token reaches (accounts.limits.middleware):
memory read, add and search, /v1/search, /v1/context, collection search. They were counted on
the chat doors only, so a user held to 2 requests a minute searched their memories (an
embedding and a vector query each) without limit."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.identity import AUD, ISS, hs256
from tests.test_limits import ask, patch_workspace

pytestmark = pytest.mark.usefixtures("limiter_awake")

SECRET = "an-end-user-routes-test-secret-of-32-characters"


@pytest.fixture
def token_of(http):
    issuer = {"issuer": ISS, "audiences": [AUD], "hs256_secret": SECRET}
    assert http.post("/v1/auth/issuers", json=issuer).status_code == 201
    return lambda sub: hs256(SECRET, sub=sub)


def as_user(engram_server, token: str) -> httpx.Client:
    return httpx.Client(
        base_url=engram_server.url, headers={"Authorization": f"Bearer {token}"}, timeout=30
    )


ROUTES = [
    ("POST", "/v1/memories/search", {"query": "Where do I live?"}),
    ("GET", "/v1/memories", None),
    ("POST", "/v1/memories", {"text": "I live in Oslo."}),
    ("POST", "/v1/search", {"query": "Where do I live?"}),
    ("POST", "/v1/context", {"messages": [{"role": "user", "content": "Hi"}]}),
]


@pytest.mark.parametrize(("method", "path", "body"), ROUTES, ids=[r[1] + r[0] for r in ROUTES])
def test_an_end_users_rpm_counts_their_requests_on_every_route(
    engram_server, http, operator_http, owner, token_of, method, path, body
):
    patch_workspace(operator_http, owner, {"end_user_limits": {"rpm": 2}})
    with as_user(engram_server, token_of("dana")) as dana:
        answers = [dana.request(method, path, json=body) for _ in range(2)]
        assert all(a.status_code in (200, 201) for a in answers), [a.text for a in answers]
        assert [a.headers["x-ratelimit-remaining-requests"] for a in answers] == ["1", "0"]
        assert answers[0].headers["x-ratelimit-limit-requests"] == "2"
        refused = dana.request(method, path, json=body)
    assert refused.status_code == 429, refused.text
    error = refused.json()["error"]
    assert error["code"] == "rate_limit_exceeded" and error["type"] == "requests"
    assert "end user 'dana'" in error["message"]
    assert int(refused.headers["retry-after"]) >= 1 and refused.headers["retry-after-ms"]
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    with as_user(engram_server, token_of("eli")) as eli:  # another end user: their own count
        assert eli.request(method, path, json=body).status_code in (200, 201)
    # the workspace's own backend, naming dana: not counted against her
    as_key = (body or {}) | {"user_id": "dana"}
    if method == "GET":
        assert http.get(path, params={"user_id": "dana"}).status_code == 200
    else:
        assert http.request(method, path, json=as_key).status_code in (200, 201)


@pytest.mark.parametrize("fast_path", [True, False], ids=["asgi-door", "django-view"])
def test_one_count_of_requests_across_chat_and_memory(
    engram_server, operator_http, owner, token_of, upstream, settings, fast_path
):
    """A chat counts once (the Django view counts its own limits, as the ASGI door does)."""
    settings.ENGRAM_GATEWAY_FAST_PATH = fast_path
    patch_workspace(operator_http, owner, {"end_user_limits": {"rpm": 2}})
    token = token_of("dana")
    sdk = openai.OpenAI(base_url=engram_server.url + "/v1", api_key=token, max_retries=0)
    assert ask(sdk).headers["x-ratelimit-remaining-requests"] == "1"
    with as_user(engram_server, token) as dana:
        assert dana.get("/v1/memories").headers["x-ratelimit-remaining-requests"] == "0"
        assert dana.get("/v1/memories").status_code == 429
    with pytest.raises(openai.RateLimitError):
        ask(sdk)


def test_embeddings_count_their_own_limits_once(engram_server, operator_http, owner, token_of):
    """/v1/embeddings counts an end user's limits itself, with its tokens: not again here."""
    patch_workspace(operator_http, owner, {"end_user_limits": {"rpm": 3}})
    with as_user(engram_server, token_of("dana")) as dana:
        body = {"model": "all-MiniLM-L6-v2", "input": "Oslo"}
        answers = [dana.post("/v1/embeddings", json=body) for _ in range(2)]
    assert [a.status_code for a in answers] == [200, 200], answers[-1].text
    assert [a.headers["x-ratelimit-remaining-requests"] for a in answers] == ["2", "1"]


def test_a_requests_concurrency_slot_is_given_back_when_it_is_answered(
    engram_server, operator_http, owner, token_of
):
    """max_concurrent 1: each request holds the slot only while it is served (a slot kept
    after the answer refused every later request until its lease ended)."""
    patch_workspace(operator_http, owner, {"end_user_limits": {"max_concurrent": 1}})
    with as_user(engram_server, token_of("dana")) as dana:
        for _ in range(4):
            answer = dana.post("/v1/memories/search", json={"query": "Oslo"})
            assert answer.status_code == 200, answer.text


def test_without_an_end_user_rate_nothing_is_counted_or_said(
    engram_server, operator_http, owner, token_of
):
    """An end-user budget or tpm alone: these routes spend no tokens nor credits."""
    patch_workspace(
        operator_http,
        owner,
        {"end_user_limits": {"tpm": 10}, "end_user_budget": {"credits": 0}},
    )
    with as_user(engram_server, token_of("dana")) as dana:
        answer = dana.post("/v1/memories/search", json={"query": "Oslo"})
    assert answer.status_code == 200 and "x-ratelimit-limit-requests" not in answer.headers
