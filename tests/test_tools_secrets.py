"""An agent's tool secrets (its headers' values) never leave Engram but to the tool: a tool
that echoes its request, or an error page quoting the token it refused, handed them to the
model (the next upstream call), the run's record (GET /v1/executions) and the conversation."""

from __future__ import annotations

import json

import pytest

from tests.completions_support import wait_for
from tests.test_tools import _stored, ask, engram, make_agent, script_call_then_answer
from tests.upstream import tool_call

SECRET = "tok-4f9a8c1e77"


@pytest.mark.parametrize("path", ["/echo", "/echo-fail"])
def test_a_tool_echoing_its_headers_never_hands_their_values_on(
    sdk, http, upstream, tool_server, path
):
    agent = make_agent(http)
    body = {
        "name": "weather",
        "type": "http",
        "http": {
            "url": tool_server.url + path,
            "headers": {
                "X-Tool-Secret": f"Bearer {SECRET}",
                "X-Api-Version": "2",
                "Accept": "application/json",
            },
        },
    }
    assert http.post(f"/v1/agents/{agent}/tools", json=body).status_code == 201
    script_call_then_answer(upstream, tool_call("call_1", "weather", {"city": "Paris"}))

    answer = ask(sdk, agent, user="alice")

    assert tool_server.calls[0]["headers"]["x-tool-secret"] == f"Bearer {SECRET}"  # sent
    to_model = upstream.chat_requests()[1].body["messages"][-1]["content"]
    assert SECRET not in to_model and "***" in to_model, to_model
    if path == "/echo":  # the rest of the echo is kept, short values too
        echoed = json.loads(to_model)["headers"]
        assert (echoed["x-api-version"], echoed["accept"]) == ("2", "application/json")
    else:
        assert "HTTP 401" in json.loads(to_model)["error"]
    execution = http.get(f"/v1/executions/{engram(answer)['execution_id']}")
    assert execution.status_code == 200 and SECRET not in execution.text
    assert SECRET not in http.get(f"/v1/agents/{agent}/tools").text
    wait_for(lambda: len(_stored("alice")) >= 4)  # user, call, result, answer
    assert SECRET not in json.dumps(_stored("alice"))


@pytest.mark.parametrize("headers", [[], "", 0, False])
def test_headers_that_are_not_an_object_are_a_400_and_keep_the_stored_ones(
    http, tool_server, headers
):
    from completions.tools.models import Tool
    from completions.tools.services import headers_of
    from tests.test_errors import assert_envelope
    from tests.test_tools import make_tool

    agent = make_agent(http)
    tool = make_tool(http, agent, tool_server.url + "/weather")
    url = f"/v1/agents/{agent}/tools/{tool['id']}"
    body = {"http": {"url": tool_server.url + "/weather", "headers": headers}}

    assert_envelope(http.patch(url, json=body), 400)

    assert headers_of(Tool.objects.get(id=tool["id"])) == {"X-Tool-Secret": "s3cret-value"}
    made = http.post(f"/v1/agents/{agent}/tools", json={"name": "t2", "type": "http", **body})
    assert_envelope(made, 400)


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": "Bearer abc123"},  # a credential after a scheme, in any header
        {"X-Tool-Secret": "token 1234567"},
        {"X-Api-Key": "k3y"},  # a credential header's whole value
        {"Cookie": "sid=1"},
    ],
)
def test_a_credential_too_short_to_mask_is_refused_at_the_tools_creation(
    http, tool_server, headers
):
    """A secret under policy.MIN_SECRET characters was stored and then left unmasked in what
    the tool answered (masking one that short would blank ordinary words of every answer)."""
    from tests.test_errors import assert_envelope

    agent = make_agent(http)
    body = {"name": "weather", "type": "http", "http": {"url": tool_server.url, "headers": headers}}
    error = assert_envelope(http.post(f"/v1/agents/{agent}/tools", json=body), 400)
    assert (error["param"], error["code"]) == ("http.headers", "secret_too_short")
    assert next(iter(headers)) in error["message"]
    assert http.get(f"/v1/agents/{agent}/tools").json()["data"] == []
    # short values that are not credentials stay allowed (and unmasked, as before)
    body["http"]["headers"] = {"X-Api-Version": "2", "Authorization": "Bearer abcdefgh"}
    assert http.post(f"/v1/agents/{agent}/tools", json=body).status_code == 201
