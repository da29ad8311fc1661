"""The loop guard: an upstream base URL pointing back at Engram is a quick 400 naming the
configuration to fix, on every door, and /v1/models does not recurse."""

import time

import httpx
import openai
import pytest

from completions.providers import hops
from completions.services import provider_credential_set


@pytest.fixture(autouse=True)
def _fresh_model_listings():
    """Upstream /models listings are cached a minute per base URL: none leaks into other tests."""
    from completions import catalogue

    catalogue._upstream_names.clear()
    yield
    catalogue._upstream_names.clear()


@pytest.fixture
def looped(engram_server, settings):
    """OPENAI_BASE_URL points at the live Engram under test (and its key is no Engram key)."""
    settings.OPENAI_BASE_URL = engram_server.url + "/v1"
    settings.OPENAI_API_KEY = "sk-not-an-engram-key"
    settings.ANTHROPIC_BASE_URL = engram_server.url
    settings.ANTHROPIC_API_KEY = "sk-ant-not-an-engram-key"
    return engram_server


def _sdk(server, key):
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0, timeout=20)


@pytest.mark.parametrize("fast_path", [True, False])
@pytest.mark.parametrize("stream", [False, True])
def test_a_chat_through_an_upstream_pointing_at_engram_is_a_quick_400(
    looped, owner, settings, fast_path, stream
):
    settings.ENGRAM_GATEWAY_FAST_PATH = fast_path
    started = time.monotonic()
    with pytest.raises(openai.BadRequestError) as caught:
        _sdk(looped, owner[1]).chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "hello"}],
            stream=stream,
        )
    assert time.monotonic() - started < 5  # one nested call, refused at its door
    error = caught.value.response.json()["error"]
    assert error["code"] == "engram_loop"
    assert "OPENAI_BASE_URL" in error["message"] and "openai provider" in error["message"]


def test_anthropic_and_workspace_credentials_are_named(looped, owner, settings):
    sdk = _sdk(looped, owner[1])
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.chat.completions.create(
            model="claude-3-5-sonnet", messages=[{"role": "user", "content": "hello"}]
        )
    assert "ANTHROPIC_BASE_URL" in caught.value.response.json()["error"]["message"]

    settings.OPENAI_BASE_URL = settings.OPENAI_API_KEY = ""
    provider_credential_set(
        workspace=owner[0], provider="openai", secret="sk-x", base_url=looped.url + "/v1"
    )
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hello"}]
        )
    message = caught.value.response.json()["error"]["message"]
    assert message == (
        "The upstream base URL of the openai provider points at this Engram, so Engram would "
        "call itself. Fix the base URL of the workspace's openai provider credential, in the "
        "admin: point it at the real LLM provider."
    )  # one sentence a person reads through, no parentheses nested in parentheses


def test_models_listing_does_not_recurse(looped, owner):
    started = time.monotonic()
    ids = [m.id for m in _sdk(looped, owner[1]).models.list()]
    assert time.monotonic() - started < 2.5  # the nested /models is refused, not timed out
    assert "local" in ids


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/context", "/v1/models"])
def test_every_door_refuses_its_own_mark_before_the_key(engram_server, path):
    """Even without a key: the looping Engram sends its upstream's key, not one of ours."""
    with httpx.Client(base_url=engram_server.url) as client:
        method = client.get if path == "/v1/models" else client.post
        kwargs = {} if path == "/v1/models" else {"json": {"model": "m", "messages": []}}
        response = method(path, headers={hops.HEADER: f"0123abcd, {hops.mark()}"}, **kwargs)
        assert response.status_code == 400, response.text
        assert response.json()["error"]["code"] == "engram_loop"
        # another Engram's mark alone is a chain, not a loop: the request goes on (to the key)
        other = method(path, headers={hops.HEADER: "0123abcd"}, **kwargs)
        assert other.status_code == 401


def test_hops_through_agents_tools_are_counted_up_to_the_limit(engram_server):
    """A tool's request carries the tool mark, not this Engram's: an agent calling an agent
    through a tool goes on (to the key), and a chain at the limit is a loop."""
    body = {"model": "m", "messages": []}
    with httpx.Client(base_url=engram_server.url) as client:
        under = ", ".join([hops.tool_mark()] * (hops.MAX_HOPS - 1))
        assert (
            client.post("/v1/chat/completions", json=body, headers={hops.HEADER: under}).status_code
            == 401
        )
        at = ", ".join([hops.tool_mark()] * hops.MAX_HOPS)
        response = client.post("/v1/chat/completions", json=body, headers={hops.HEADER: at})
        assert response.status_code == 400
        error = response.json()["error"]
        assert error["code"] == "engram_loop" and "agent's tool" in error["message"]


def test_upstream_requests_carry_the_marks(http, upstream):
    response = http.post(
        "/v1/chat/completions",
        json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
        headers={hops.HEADER: "0123abcd"},
    )
    assert response.status_code == 200
    assert upstream.last.headers[hops.HEADER] == f"0123abcd, {hops.mark()}"
    http.get("/v1/models")
    listing = [r for r in upstream.requests if r.path.endswith("/models")]
    assert listing and listing[-1].headers[hops.HEADER] == hops.mark()
