"""Which tools an agent's run offers the model, and what a call of a tool nobody has gets.

Over HTTP with the official `openai` client; the loopback upstream is scripted to call tools and
the loopback tool server records every call it receives.
"""

from __future__ import annotations

import json

import pytest

from tests.test_tools import (
    ask,
    engram,
    make_agent,
    make_tool,
    resume,
    script_call_then_answer,
    sse,
)
from tests.upstream import Reply, openai_completion, openai_stream, openai_tool_stream, tool_call

APP_TOOL = {
    "type": "function",
    "function": {"name": "open_map", "parameters": {"type": "object", "properties": {}}},
}


def _names(request) -> list[str]:
    return sorted(t["function"]["name"] for t in request.body.get("tools") or ())


@pytest.mark.parametrize("stream", [False, True])
def test_a_call_of_a_tool_nobody_has_is_answered_to_the_model_not_handed_to_the_app(
    sdk, http, upstream, tool_server, stream
):
    """A model's slip (a name neither the agent nor the request has) came back to an app that
    declared no tools as a call it cannot answer, the agent's calls of that step run and their
    results never shown to the model."""
    agent = make_agent(http)
    make_tool(http, agent, tool_server.url + "/weather")
    calls = [
        tool_call("call_1", "weather", {"city": "Paris"}),
        tool_call("call_2", "wether_lookup", {"city": "Paris"}),
    ]
    if stream:
        upstream.script(
            Reply(stream=openai_tool_stream(calls)), Reply(stream=openai_stream(["It is sunny."]))
        )
    else:
        script_call_then_answer(upstream, *calls)

    if stream:
        chunks = list(ask(sdk, agent, stream=True))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        finish = [c.choices[0].finish_reason for c in chunks if c.choices][-1]
        results = [
            c.model_extra["engram"]["tool_result"]
            for c in chunks
            if "tool_result" in (c.model_extra or {}).get("engram", {})
        ]
        assert {r["tool_call_id"]: r["status"] for r in results} == {
            "call_1": "completed",
            "call_2": "failed",
        }
        execution_id = chunks[-1].model_extra["engram"]["execution_id"]
    else:
        answer = ask(sdk, agent)
        text, finish = answer.choices[0].message.content, answer.choices[0].finish_reason
        assert not answer.choices[0].message.tool_calls
        execution_id = engram(answer)["execution_id"]

    assert (text, finish) == ("It is sunny.", "stop")
    assert [c["body"] for c in tool_server.calls] == [{"city": "Paris"}]
    replies = {
        m["tool_call_id"]: m["content"]
        for m in upstream.chat_requests()[-1].body["messages"]
        if m["role"] == "tool"
    }
    assert json.loads(replies["call_2"]) == {"error": "there is no tool named 'wether_lookup'"}
    assert json.loads(replies["call_1"])["got"] == {"city": "Paris"}
    steps = http.get(f"/v1/executions/{execution_id}").json()["steps"]
    slip = next(s for s in steps if s.get("tool_call_id") == "call_2")
    assert slip["status"] == "failed" and "no tool named" in slip["error"]


def test_a_call_of_the_apps_own_tool_still_comes_back_to_it(sdk, http, upstream, tool_server):
    agent = make_agent(http)
    make_tool(http, agent, tool_server.url + "/weather")
    upstream.script(
        Reply(json=openai_completion(tool_calls=[tool_call("call_c", "open_map", {})])),
    )
    answer = ask(sdk, agent, tools=[APP_TOOL])
    assert answer.choices[0].finish_reason == "tool_calls"
    assert [c.function.name for c in answer.choices[0].message.tool_calls] == ["open_map"]
    assert tool_server.calls == []


@pytest.mark.parametrize("stream", [False, True])
def test_a_resumed_run_offers_the_agents_tools_as_they_are_at_the_resume(
    sdk, http, upstream, tool_server, stream
):
    """A tool added, changed or deleted while the run waited for its approval: the model
    called after the resume is offered the tools as they are then (the README's promise),
    beside the app's own; it was offered those the run started with."""
    agent = make_agent(http)
    make_tool(http, agent, tool_server.url + "/weather", approval="always")
    old = make_tool(http, agent, tool_server.url + "/old", name="old_tool")
    changed = make_tool(http, agent, tool_server.url + "/lookup", name="lookup")
    upstream.script(
        Reply(json=openai_completion(tool_calls=[tool_call("call_1", "weather", {"city": "P"})])),
        Reply(stream=openai_stream(["It is sunny."]))
        if stream
        else Reply(json=openai_completion("It is sunny.")),
    )
    marks = engram(ask(sdk, agent, tools=[APP_TOOL]))
    assert _names(upstream.chat_requests()[0]) == ["lookup", "old_tool", "open_map", "weather"]

    assert http.delete(f"/v1/agents/{agent}/tools/{old['id']}").status_code == 200
    make_tool(http, agent, tool_server.url + "/new", name="new_tool")
    patched = http.patch(
        f"/v1/agents/{agent}/tools/{changed['id']}", json={"description": "Look it up, now."}
    )
    assert patched.status_code == 200

    if stream:
        body = {"approval_id": marks["approval_id"], "decision": "approve", "stream": True}
        with http.stream("POST", "/v1/chat/resume", json=body) as resp:
            assert resp.status_code == 200
            events = sse(resp)
        text = "".join(c["delta"].get("content") or "" for e in events[:-1] for c in e["choices"])
        assert text == "It is sunny."
    else:
        assert resume(sdk, marks["approval_id"]).choices[0].message.content == "It is sunny."

    after = upstream.chat_requests()[-1]
    assert _names(after) == ["lookup", "new_tool", "open_map", "weather"]
    descriptions = {
        t["function"]["name"]: t["function"].get("description") for t in after.body["tools"]
    }
    assert descriptions["lookup"] == "Look it up, now."


def test_a_resumed_run_whose_every_tool_was_deleted_sends_no_empty_tools(
    sdk, http, upstream, tool_server
):
    """OpenAI refuses `tools: []` (and a `tool_choice` without tools)."""
    agent = make_agent(http)
    tool = make_tool(http, agent, tool_server.url + "/weather", approval="always")
    script_call_then_answer(upstream, tool_call("call_1", "weather", {"city": "Paris"}))
    marks = engram(ask(sdk, agent, tool_choice="auto"))
    assert http.delete(f"/v1/agents/{agent}/tools/{tool['id']}").status_code == 200

    assert resume(sdk, marks["approval_id"]).choices[0].message.content == "It is sunny."

    body = upstream.chat_requests()[-1].body
    assert "tools" not in body and "tool_choice" not in body
    error = json.loads(body["messages"][-1]["content"])["error"]
    assert "no longer exists" in error
