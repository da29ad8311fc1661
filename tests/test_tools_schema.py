"""The OpenAPI document's shapes of the tools and resume bodies say what the server takes:
each bound the server checks is in the document, and nothing the server takes is out of it."""

from __future__ import annotations

import pytest

from tests.test_errors import assert_envelope
from tests.test_tools import make_agent, make_tool, script_call_then_answer
from tests.upstream import tool_call


def _components(anon_http) -> dict:
    response = anon_http.get("/v1/schema", params={"format": "json"})
    assert response.status_code == 200, response.text
    return response.json()["components"]["schemas"]


def test_a_tools_bounds_are_the_documents(http, anon_http, tool_server):
    tool = _components(anon_http)["ToolInputRequest"]["properties"]
    ttl, timeout = tool["approval_ttl_seconds"], tool["timeout_seconds"]
    assert (ttl["minimum"], ttl["maximum"]) == (1, 604800)
    assert timeout["maximum"] == 120
    assert tool["description"]["maxLength"] == 4000

    agent = make_agent(http)
    made = make_tool(http, agent, tool_server.url + "/w", approval_ttl_seconds=604800)
    url = f"/v1/agents/{agent}/tools/{made['id']}"
    for field, past in [
        ("approval_ttl_seconds", 0),
        ("approval_ttl_seconds", 604801),
        ("timeout_seconds", 120.5),
        ("description", "d" * 4001),
    ]:
        error = assert_envelope(http.patch(url, json={field: past}), 400)
        assert error["param"] == field
    edge = {"timeout_seconds": 120, "description": "d" * 4000, "approval_ttl_seconds": 1}
    assert http.patch(url, json=edge).status_code == 200


@pytest.mark.parametrize("reason", ["", "r" * 2000])
def test_a_resume_reason_the_document_allows_is_taken(http, anon_http, reason):
    """The document said `reason` is at least 1 character (the server takes ""), and gave
    no bound (the server refuses over 2,000)."""
    field = _components(anon_http)["ResumeInputRequest"]["properties"]["reason"]
    assert "minLength" not in field and field["maxLength"] == 2000
    body = {"approval_id": "appr_unknown", "decision": "reject", "reason": reason}
    # Past the body's checks: the unknown approval is what is refused.
    assert_envelope(http.post("/v1/chat/resume", json=body), 404, code="approval_not_found")
    body["reason"] = reason + "r" * (2001 - len(reason))
    error = assert_envelope(http.post("/v1/chat/resume", json=body), 400)
    assert error["param"] == "reason"


def test_a_resume_names_its_end_user_as_the_chat_request_did(
    sdk, http, anon_http, upstream, tool_server
):
    """Chat takes the end user from the body's `user_id`; the resume refused that field
    (400 unknown parameter), so an app naming its users so could not resume their runs."""
    fields = _components(anon_http)["ResumeInputRequest"]["properties"]
    assert {"user_id", "user"} <= set(fields)
    agent = make_agent(http)
    make_tool(http, agent, tool_server.url + "/weather", approval="always")
    script_call_then_answer(upstream, tool_call("call_1", "weather", {"city": "Paris"}))
    asked = http.post(
        "/v1/chat/completions",
        json={"model": agent, "user_id": "carol", "messages": [{"role": "user", "content": "?"}]},
    )
    approval_id = asked.json()["engram"]["approval_id"]
    body = {"approval_id": approval_id, "decision": "approve"}

    other = http.post("/v1/chat/resume", json={**body, "user_id": "dave"})
    assert_envelope(other, 404, code="approval_not_found")
    resumed = http.post("/v1/chat/resume", json={**body, "user_id": "carol"})

    assert resumed.status_code == 200, resumed.text
    assert resumed.json()["choices"][0]["message"]["content"] == "It is sunny."
    assert len(tool_server.calls) == 1


@pytest.mark.parametrize("reason", [False, 0, [], {}])
def test_a_resume_reason_that_is_not_a_string_is_a_400(http, reason):
    """`"reason": false` (or 0, [], {}) was taken as no reason."""
    body = {"approval_id": "appr_unknown", "decision": "reject", "reason": reason}
    error = assert_envelope(http.post("/v1/chat/resume", json=body), 400)
    assert error["param"] == "reason"
