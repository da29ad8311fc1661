"""Agents' server-side tools over HTTP: the run loop, approvals and POST /v1/chat/resume.

The official `openai` client talks to Engram; the loopback upstream is scripted to call tools;
a loopback HTTP tool server (tests/tools_support.py, the `tool_server` fixture) records every
call it receives.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletion

from completions.tools import policy, services
from completions.tools.models import Approval, Execution, Tool
from completions.tools.services import approvals_expire
from config.common import crypto
from memory.models import Memory
from memory.services import memory_create
from memory.text import tool_call_ids
from tests.completions_support import wait_for
from tests.test_errors import assert_envelope
from tests.upstream import Reply, openai_completion, openai_stream, openai_tool_stream, tool_call


def make_agent(http, name="helper") -> str:
    resp = http.post("/v1/agents", json={"name": name, "model": "gpt-4o-mini"})
    assert resp.status_code == 201, resp.text
    return resp.json()["id"]


def make_tool(http, agent_id, url, *, name="weather", approval="never", **extra) -> dict:
    body = {
        "name": name,
        "description": "Look something up.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        "type": "http",
        "http": {"url": url, "method": "POST", "headers": {"X-Tool-Secret": "s3cret-value"}},
        "approval": approval,
        **extra,
    }
    resp = http.post(f"/v1/agents/{agent_id}/tools", json=body)
    assert resp.status_code == 201, resp.text
    return resp.json()


def ask(sdk, agent_id, text="Weather in Paris?", **kwargs):
    return sdk.chat.completions.create(
        model=agent_id, messages=[{"role": "user", "content": text}], **kwargs
    )


def resume(sdk, approval_id, decision="approve", **extra):
    return sdk.post(
        "/chat/resume",
        body={"approval_id": approval_id, "decision": decision, **extra},
        cast_to=ChatCompletion,
    )


def engram(obj) -> dict:
    return obj.model_extra["engram"]


def script_call_then_answer(upstream, *calls, answer="It is sunny."):
    upstream.script(
        Reply(json=openai_completion(tool_calls=list(calls))),
        Reply(json=openai_completion(answer)),
    )


# --- never: runs, and the answer arrives in one call ------------------------------------------


def test_never_tool_runs_and_the_answer_comes_in_one_call(sdk, http, upstream, tool_server):
    agent = make_agent(http)
    make_tool(http, agent, tool_server.url + "/weather")
    script_call_then_answer(upstream, tool_call("call_1", "weather", {"city": "Paris"}))

    answer = ask(sdk, agent)

    assert answer.choices[0].message.content == "It is sunny."
    assert answer.choices[0].finish_reason == "stop"
    assert answer.model == agent
    assert len(tool_server.calls) == 1
    call = tool_server.calls[0]
    assert call["body"] == {"city": "Paris"}
    assert call["headers"]["x-tool-secret"] == "s3cret-value"
    assert call["headers"]["idempotency-key"].endswith(":call_1")
    first, second = upstream.chat_requests()
    assert [t["function"]["name"] for t in first.body["tools"]] == ["weather"]
    tool_message = second.body["messages"][-1]
    assert tool_message["role"] == "tool" and tool_message["tool_call_id"] == "call_1"
    assert json.loads(tool_message["content"])["got"] == {"city": "Paris"}
    assert answer.usage.total_tokens == 36  # both upstream calls of the run

    execution = http.get(f"/v1/executions/{engram(answer)['execution_id']}").json()
    assert execution["status"] == "completed"
    assert [s["type"] for s in execution["steps"]] == ["model", "tool", "model"]
    tool_step = execution["steps"][1]
    assert tool_step["name"] == "weather" and tool_step["status"] == "completed"
    assert json.loads(tool_step["arguments"]) == {"city": "Paris"}
    assert "s3cret" not in json.dumps(execution)


def test_several_calls_of_one_step_run_in_parallel(sdk, http, upstream, tool_server):
    agent = make_agent(http)
    make_tool(http, agent, tool_server.url + "/pair")
    script_call_then_answer(
        upstream,
        tool_call("call_a", "weather", {"city": "Paris"}),
        tool_call("call_b", "weather", {"city": "Rome"}),
    )
    answer = ask(sdk, agent)
    assert answer.choices[0].message.content == "It is sunny."
    assert len(tool_server.calls) == 2
    results = [m for m in upstream.chat_requests()[1].body["messages"] if m["role"] == "tool"]
    # /pair answers `together` only when both calls were in flight at once
    assert [json.loads(m["content"])["together"] for m in results] == [True, True]


@pytest.mark.parametrize("stream", [False, True])
def test_calls_without_an_id_of_their_own_get_one(sdk, http, upstream, tool_server, stream):
    """An OpenAI-compatible upstream that sends a call without an id failed the run (a 500);
    one that sends an id twice, in a step or in the next, had both calls share an
    Idempotency-Key, so a tool honouring it answered the second with the first's result."""
    agent = make_agent(http)
    make_tool(http, agent, tool_server.url + "/weather")
    nameless = tool_call("x", "weather", {"city": "Oslo"})
    del nameless["id"]
    steps = [
        [nameless, tool_call("call_0", "weather", {"city": "Rome"})],
        [tool_call("call_0", "weather", {"city": "Lima"}), tool_call("", "weather", {})],
    ]
    replies = [Reply(json=openai_completion(tool_calls=calls)) for calls in steps]
    done = Reply(json=openai_completion("Done."))
    if stream:
        replies = [Reply(stream=openai_tool_stream(calls)) for calls in steps]
        done = Reply(stream=openai_stream(["Done."]))
    upstream.script(*replies, done)

    answer = ask(sdk, agent, stream=stream)
    if stream:
        text = "".join(c.choices[0].delta.content or "" for c in answer if c.choices)
        assert text == "Done."
    else:
        assert answer.choices[0].message.content == "Done."

    keys = [call["headers"]["idempotency-key"] for call in tool_server.calls]
    assert len(keys) == 4 and len(set(keys)) == 4, keys
    sent = upstream.chat_requests()[-1].body["messages"]
    assert_every_call_answered(sent)
    ids = [c["id"] for m in sent for c in m.get("tool_calls") or ()]
    assert len(set(ids)) == 4 and "call_0" in ids, ids


def test_a_failing_tool_is_an_error_result_the_model_answers(sdk, http, upstream, tool_server):
    agent = make_agent(http)
    make_tool(http, agent, tool_server.url + "/fail")
    script_call_then_answer(upstream, tool_call("call_1", "weather", {"city": "Paris"}))
    answer = ask(sdk, agent)
    assert answer.choices[0].message.content == "It is sunny."
    tool_message = upstream.chat_requests()[1].body["messages"][-1]
    assert "HTTP 500" in json.loads(tool_message["content"])["error"]
    execution = Execution.objects.get(id=engram(answer)["execution_id"])
    assert execution.steps[1]["status"] == "failed"


def test_client_declared_tools_come_back_unchanged(sdk, http, upstream, tool_server):
    agent = make_agent(http)
    make_tool(http, agent, tool_server.url + "/weather")
    client_call = tool_call("call_c", "open_map", {"place": "Paris"})
    upstream.script(Reply(json=openai_completion(tool_calls=[client_call])))
    client_tool = {
        "type": "function",
        "function": {"name": "open_map", "parameters": {"type": "object", "properties": {}}},
    }
    answer = ask(sdk, agent, tools=[client_tool])
    assert answer.choices[0].finish_reason == "tool_calls"
    assert answer.choices[0].message.tool_calls[0].function.name == "open_map"
    assert tool_server.calls == []
    names = [t["function"]["name"] for t in upstream.last.body["tools"]]
    assert sorted(names) == ["open_map", "weather"]


@pytest.mark.parametrize("stream", [False, True])
def test_n_over_one_through_an_agent_with_tools_is_a_400_naming_n(
    http, upstream, tool_server, stream
):
    from memory.models import Conversation, Message

    agent = make_agent(http)
    body = {"model": agent, "messages": [{"role": "user", "content": "Hi"}], "n": 2}
    plain = http.post("/v1/chat/completions", json={**body, "stream": False})
    assert plain.status_code == 200 and upstream.last.body["n"] == 2  # no tools: passed on
    upstream.reset()
    make_tool(http, agent, tool_server.url + "/weather")
    conversations, messages = Conversation.objects.count(), Message.objects.count()

    resp = http.post("/v1/chat/completions", json={**body, "stream": stream})

    error = assert_envelope(resp, 400, code="unsupported")
    assert error["param"] == "n" and "n greater than 1" in error["message"]
    assert upstream.chat_requests() == []
    assert not Execution.objects.exists()
    assert (Conversation.objects.count(), Message.objects.count()) == (conversations, messages)


@pytest.mark.parametrize("stream", [False, True])
def test_legacy_functions_through_an_agent_with_tools_is_a_400_naming_functions(
    sdk, http, upstream, tool_server, stream
):
    """OpenAI refuses `functions` beside `tools`, and an agent's tools go upstream as `tools`:
    a 400 naming `functions` before anything is stored, not the upstream's refusal mid-run."""
    from memory.models import Conversation, Message

    agent = make_agent(http)
    legacy = {
        "functions": [{"name": "open_map", "parameters": {"type": "object", "properties": {}}}],
        "function_call": "auto",
    }
    plain = ask(sdk, agent, **legacy)  # no tools: passed on as it came
    assert plain.choices[0].message.content and "tools" not in upstream.last.body
    assert upstream.last.body["functions"] == legacy["functions"]
    upstream.reset()
    make_tool(http, agent, tool_server.url + "/weather")
    conversations, messages = Conversation.objects.count(), Message.objects.count()

    with pytest.raises(openai.BadRequestError) as refused:
        ask(sdk, agent, stream=stream, user="alice", **legacy)

    error = refused.value.body
    assert refused.value.code == "unsupported" and error["param"] == "functions"
    assert "tools" in error["message"]
    assert upstream.chat_requests() == []
    assert not Execution.objects.exists()
    assert (Conversation.objects.count(), Message.objects.count()) == (conversations, messages)


MAP_TOOL = {
    "type": "function",
    "function": {"name": "open_map", "parameters": {"type": "object", "properties": {}}},
}
WEATHER_CALL = tool_call("call_w", "weather", {"city": "Paris"})
MAP_CALL = tool_call("call_m", "open_map", {"place": "Paris"})


def assert_every_call_answered(messages: list[dict]) -> None:
    """What OpenAI checks of a request: each assistant message's tool calls are answered by the
    tool messages right after it, and each tool message answers one of them."""
    for i, message in enumerate(messages):
        if message["role"] == "assistant" and message.get("tool_calls"):
            following = []
            for later in messages[i + 1 :]:
                if later["role"] != "tool":
                    break
                following.append(later["tool_call_id"])
            assert sorted(following) == sorted(c["id"] for c in message["tool_calls"]), messages
        if message["role"] == "tool":
            before = next(m for m in reversed(messages[:i]) if m["role"] != "tool")
            assert message["tool_call_id"] in [c["id"] for c in before.get("tool_calls") or []]


@pytest.mark.parametrize("served", [False, True], ids=["resent", "x-conversation-id"])
@pytest.mark.parametrize("stream", [False, True])
def test_a_step_calling_the_agents_and_the_apps_tools_runs_the_agents_and_hands_back_the_apps(
    sdk, http, upstream, tool_server, stream, served
):
    from memory.models import Conversation, Message

    agent = make_agent(http)
    make_tool(http, agent, tool_server.url + "/weather")
    both = [WEATHER_CALL, MAP_CALL]
    first = (
        Reply(stream=openai_tool_stream(both))
        if stream
        else Reply(json=openai_completion(tool_calls=both))
    )
    upstream.script(first, Reply(json=openai_completion("Here it is.")))
    headers = {"x-user-id": f"mixed-{stream}"}
    if served:  # the history is the conversation's, the app sends only its new messages
        headers["x-conversation-id"] = f"mixed-{stream}"

    if stream:
        with sdk.chat.completions.stream(
            model=agent,
            messages=[{"role": "user", "content": "Weather in Paris?"}],
            tools=[MAP_TOOL],
            extra_headers=headers,
        ) as events:
            chunks = [e.chunk for e in events if e.type == "chunk"]
            answer = events.get_final_completion()
        marks = [c.model_extra["engram"] for c in chunks if c.model_extra.get("engram")]
        running = next(m["tool_call"] for m in marks if "tool_call" in m)
        assert running["id"] == "call_w" and running["status"] == "running"
        assert not next(
            c for c in chunks if "tool_call" in (c.model_extra.get("engram") or {})
        ).choices
        result = next(m["tool_result"] for m in marks if "tool_result" in m)
        assert result["tool_call_id"] == "call_w" and result["status"] == "completed"
        execution_id = marks[-1]["execution_id"]
    else:
        answer = ask(sdk, agent, tools=[MAP_TOOL], extra_headers=headers)
        execution_id = engram(answer)["execution_id"]

    # The agent's call ran; the app gets its own call alone, the model was called once.
    assert [c["body"] for c in tool_server.calls] == [{"city": "Paris"}]
    assert answer.choices[0].finish_reason == "tool_calls"
    assert [c.id for c in answer.choices[0].message.tool_calls] == ["call_m"]
    assert len(upstream.chat_requests()) == 1
    execution = http.get(f"/v1/executions/{execution_id}").json()
    assert execution["status"] == "completed"
    assert [s["type"] for s in execution["steps"]] == ["model", "tool"]

    # What Engram stored is history the upstream takes: every call answered once the app's is.
    conversation = Conversation.objects.get(user_id=headers["x-user-id"])
    wait_for(lambda: Message.objects.filter(conversation=conversation).count() == 4)
    stored = [
        m.raw
        for m in Message.objects.filter(conversation=conversation).order_by("created_at", "id")
    ]
    assert [(m["role"], [c["id"] for c in m.get("tool_calls") or []]) for m in stored] == [
        ("user", []),
        ("assistant", ["call_w"]),
        ("tool", []),
        ("assistant", ["call_m"]),
    ]
    assert_every_call_answered(
        [*stored, {"role": "tool", "tool_call_id": "call_m", "content": "."}]
    )

    # The app's next request (its call answered) is one the upstream takes.
    result = {"role": "tool", "tool_call_id": "call_m", "content": "map shown"}
    transcript = [
        {"role": "user", "content": "Weather in Paris?"},
        answer.choices[0].message.model_dump(exclude_none=True),
        result,
    ]
    sdk.chat.completions.create(
        model=agent,
        messages=[result] if served else transcript,
        tools=[MAP_TOOL],
        extra_headers=headers,
    )
    sent = upstream.chat_requests()[-1].body["messages"]
    assert sent[-1]["tool_call_id"] == "call_m"
    assert_every_call_answered(sent)
    # Served from the conversation, the history holds the agent's result too.
    assert any(m.get("tool_call_id") == "call_w" for m in sent) is served


@pytest.mark.parametrize("stream", [False, True])
def test_a_step_calling_an_approval_tool_and_the_apps_hands_back_the_apps_after_the_resume(
    sdk, http, upstream, tool_server, stream
):
    agent = make_agent(http)
    make_tool(http, agent, tool_server.url + "/weather", approval="always")
    upstream.script(Reply(json=openai_completion(tool_calls=[WEATHER_CALL, MAP_CALL])))
    headers = {"x-user-id": "mixed-approval"}

    paused = ask(sdk, agent, tools=[MAP_TOOL], extra_headers=headers)

    assert [c.id for c in paused.choices[0].message.tool_calls] == ["call_w"]  # to approve
    assert tool_server.calls == []
    body = {"approval_id": engram(paused)["approval_id"], "decision": "approve"}
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
        with http.stream("POST", "/v1/chat/resume", json=body, headers=headers) as resp:
            events = sse(resp)[:-1]
        choices = [ch for e in events for ch in e["choices"]]
        calls = [c["id"] for ch in choices for c in ch["delta"].get("tool_calls") or []]
        finish = [ch["finish_reason"] for ch in choices if ch["finish_reason"]]
        usage = next(e["usage"] for e in events if e.get("usage"))
    else:
        answer = sdk.post(
            "/chat/resume", body=body, cast_to=ChatCompletion, options={"headers": headers}
        )
        calls = [c.id for c in answer.choices[0].message.tool_calls]
        finish = [answer.choices[0].finish_reason]
        usage = answer.usage.model_dump()

    assert [c["body"] for c in tool_server.calls] == [{"city": "Paris"}]
    assert finish == ["tool_calls"] and calls == ["call_m"]  # the agent's call shown apart
    assert len(upstream.chat_requests()) == 1  # the app's call handed back, no model call
    assert usage["total_tokens"] == 0
    execution = Execution.objects.get(id=engram(paused)["execution_id"])
    assert execution.status == "completed"
    assert [s["type"] for s in execution.steps] == ["model", "approval", "tool"]
    assert_every_call_answered(
        [*execution.messages, {"role": "tool", "tool_call_id": "call_m", "content": "."}]
    )


def _stored(user: str) -> list[dict]:
    from memory.models import Message

    rows = Message.objects.filter(conversation__user_id=user).order_by("created_at", "id")
    return [m.raw for m in rows]


def _shape(messages: list[dict]) -> list[tuple]:
    return [(m["role"], m.get("tool_call_id"), tool_call_ids(m)) for m in messages]


PAUSE_CASES = {
    # a tool that always waits beside one that never does
    "always-and-never": [WEATHER_CALL, tool_call("call_c", "clock", {})],
    # one tool called twice, only one call holding its rule
    "rule-holds-once": [WEATHER_CALL, tool_call("call_r", "weather", {"city": "Rome"})],
}


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("case", list(PAUSE_CASES))
def test_a_pause_beside_calls_needing_no_approval_stores_history_the_upstream_takes(
    sdk, http, upstream, tool_server, case, stream
):
    agent = make_agent(http)
    if case == "always-and-never":
        make_tool(http, agent, tool_server.url + "/weather", approval="always")
        make_tool(http, agent, tool_server.url + "/clock", name="clock")
    else:
        rule = {"argument": "city", "op": "eq", "value": "Paris"}
        make_tool(http, agent, tool_server.url + "/weather", approval=rule)
    calls = PAUSE_CASES[case]
    ids = [c["id"] for c in calls]
    if stream:
        upstream.script(
            Reply(stream=openai_tool_stream(calls)), Reply(stream=openai_stream(["Sunny."]))
        )
    else:
        upstream.script(
            Reply(json=openai_completion(tool_calls=calls)), Reply(json=openai_completion("Sunny."))
        )
    user = f"pause-{case}-{stream}"
    headers = {"x-user-id": user, "x-conversation-id": user}
    body = {"model": agent, "messages": [{"role": "user", "content": "Weather?"}]}

    if stream:
        with http.stream(
            "POST", "/v1/chat/completions", json={**body, "stream": True}, headers=headers
        ) as resp:
            events = sse(resp)[:-1]
        shown = [
            c["id"]
            for e in events
            for ch in e["choices"]
            for c in ch["delta"].get("tool_calls") or []
        ]
        approval_id = events[-1]["engram"]["approval_id"]
    else:
        paused = http.post("/v1/chat/completions", json=body, headers=headers).json()
        shown = [c["id"] for c in paused["choices"][0]["message"]["tool_calls"]]
        approval_id = paused["engram"]["approval_id"]
    assert shown == ["call_w"]  # the call to approve
    wait_for(lambda: len(_stored(user)) == 2)  # the question, the paused step

    body = {"approval_id": approval_id, "decision": "approve", "stream": stream}
    resp = http.post("/v1/chat/resume", json=body, headers=headers)
    assert resp.status_code == 200, resp.text
    assert len(tool_server.calls) == 2

    # The paused step is stored with every call it made, each answered by its result.
    wait_for(lambda: len(_stored(user)) == 5)
    stored = _stored(user)
    assert _shape(stored) == [
        ("user", None, []),
        ("assistant", None, ids),
        ("tool", ids[0], []),
        ("tool", ids[1], []),
        ("assistant", None, []),
    ]
    assert_every_call_answered(stored)

    # The next turn's history, served by the conversation, is one the upstream takes.
    upstream.script(Reply(json=openai_completion("You are welcome.")))
    reply = sdk.chat.completions.create(
        model=agent, messages=[{"role": "user", "content": "Thanks!"}], extra_headers=headers
    )
    assert reply.choices[0].message.content == "You are welcome."
    sent = upstream.chat_requests()[-1].body["messages"]
    assert [m.get("tool_call_id") for m in sent if m["role"] == "tool"] == ids
    assert_every_call_answered(sent)


def test_a_stored_result_whose_call_the_step_before_lacks_is_left_out_of_the_history(
    sdk, upstream, owner
):
    """A conversation stored before a paused step was kept whole: the waiting call alone, then
    results for every call of the step. Its history still goes upstream as one it takes."""
    from memory.services.conversations import conversation_get_or_create, messages_append

    conversation, _ = conversation_get_or_create(
        workspace=owner[0], external_id="before-the-fix", user_id="old"
    )
    old = [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": None, "tool_calls": [WEATHER_CALL]},
        {"role": "tool", "tool_call_id": "call_w", "content": "sunny"},
        {"role": "tool", "tool_call_id": "call_c", "content": "noon"},  # its call not stored
        {"role": "assistant", "content": "Sunny."},
    ]
    messages_append(workspace=owner[0], conversation=conversation, session=None, messages=old)

    sdk.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "Thanks!"}],
        extra_headers={"x-user-id": "old", "x-conversation-id": "before-the-fix"},
    )

    sent = upstream.chat_requests()[-1].body["messages"]
    assert [m.get("tool_call_id") for m in sent if m["role"] == "tool"] == ["call_w"]
    assert_every_call_answered(sent)


# --- always: pause, resume ----------------------------------------------------------------------


def test_always_pauses_then_approve_runs_the_tool_once(sdk, http, upstream, tool_server, owner):
    from completions import pricing
    from completions.models import Price

    # a price of its own: a flushed table (transactional tests) has lost the default rows
    Price.objects.update_or_create(
        model="gpt-4o-mini", defaults={"input_per_million": 1, "output_per_million": 2}
    )
    pricing.prices_changed()
    agent = make_agent(http)
    make_tool(http, agent, tool_server.url + "/weather", approval="always")
    script_call_then_answer(upstream, tool_call("call_1", "weather", {"city": "Paris"}))

    paused = ask(sdk, agent)

    assert paused.choices[0].finish_reason == "tool_calls"
    assert paused.choices[0].message.tool_calls[0].id == "call_1"
    marks = engram(paused)
    assert {"approval_id", "execution_id", "expires_at", "request_id"} <= set(marks)
    approval = Approval.objects.get(id=marks["approval_id"])
    assert approval.status == "pending" and approval.workspace_id == owner[0].id
    assert int(approval.expires_at.timestamp()) == marks["expires_at"]
    assert tool_server.calls == []

    answer = resume(sdk, marks["approval_id"])

    assert answer.choices[0].message.content == "It is sunny."
    assert engram(answer)["execution_id"] == marks["execution_id"]
    assert len(tool_server.calls) == 1
    # the resume's upstream call is charged like any answer's, and recorded with its credits
    charged = engram(answer)["credits_charged"]
    assert charged > 0 and engram(paused)["credits_charged"] > 0
    from completions.models import UsageRecord
    from completions.usage import buffer

    buffer.flush()
    record = UsageRecord.objects.get(request_id=engram(answer)["request_id"])
    assert record.credits == charged
    with pytest.raises(openai.APIStatusError) as again:
        resume(sdk, marks["approval_id"])
    assert again.value.status_code == 410
    assert again.value.body["code"] == "approval_used"
    assert len(tool_server.calls) == 1
    execution = http.get(f"/v1/executions/{marks['execution_id']}").json()
    assert [s["type"] for s in execution["steps"]] == ["model", "approval", "tool", "model"]
    assert execution["approvals"][0]["status"] == "approved"
    assert execution["status"] == "completed"


def test_reject_answers_without_running_the_tool(sdk, http, upstream, tool_server):
    agent = make_agent(http)
    make_tool(http, agent, tool_server.url + "/weather", approval="always")
    script_call_then_answer(
        upstream, tool_call("call_1", "weather", {"city": "Paris"}), answer="I did not check."
    )
    paused = ask(sdk, agent)
    answer = resume(sdk, engram(paused)["approval_id"], "reject", reason="not now")
    assert answer.choices[0].message.content == "I did not check."
    assert tool_server.calls == []
    tool_message = upstream.chat_requests()[-1].body["messages"][-1]
    assert tool_message["role"] == "tool"
    assert "rejected" in tool_message["content"] and "not now" in tool_message["content"]
    execution = Execution.objects.get(id=engram(paused)["execution_id"])
    assert execution.steps[-2]["status"] == "rejected"


def test_approving_a_call_whose_tool_was_deleted_says_it_no_longer_exists(
    sdk, http, upstream, tool_server
):
    agent = make_agent(http)
    tool = make_tool(http, agent, tool_server.url + "/weather", approval="always")
    script_call_then_answer(upstream, tool_call("call_1", "weather", {"city": "Paris"}))
    marks = engram(ask(sdk, agent))
    assert http.delete(f"/v1/agents/{agent}/tools/{tool['id']}").status_code == 200

    answer = resume(sdk, marks["approval_id"])

    assert answer.choices[0].message.content == "It is sunny."
    assert tool_server.calls == []
    result = upstream.chat_requests()[-1].body["messages"][-1]
    assert result["tool_call_id"] == "call_1"
    error = json.loads(result["content"])["error"]
    assert "no longer exists" in error and "rejected" not in error
    execution = Execution.objects.get(id=marks["execution_id"])
    approval, step = execution.steps[1], execution.steps[2]
    assert approval["decision"] == "approve" and approval["status"] == "approved"
    assert step["status"] == "failed" and step["error"] == error


def test_approving_a_call_whose_tool_changed_since_it_paused_is_410_stale(
    sdk, http, upstream, tool_server
):
    agent = make_agent(http)
    tool = make_tool(http, agent, tool_server.url + "/weather", approval="always")
    url = f"/v1/agents/{agent}/tools/{tool['id']}"
    # A change that does not alter what the call does (its description) keeps the approval.
    script_call_then_answer(upstream, tool_call("call_1", "weather", {"city": "Paris"}))
    marks = engram(ask(sdk, agent))
    assert http.patch(url, json={"description": "Weather, by city."}).status_code == 200
    assert resume(sdk, marks["approval_id"]).choices[0].message.content == "It is sunny."
    assert [c["path"] for c in tool_server.calls] == ["/weather"]

    script_call_then_answer(upstream, tool_call("call_2", "weather", {"city": "Rome"}))
    marks = engram(ask(sdk, agent))
    patched = http.patch(url, json={"http": {"url": tool_server.url + "/elsewhere"}})
    assert patched.status_code == 200
    requests = len(upstream.chat_requests())

    with pytest.raises(openai.APIStatusError) as stale:
        resume(sdk, marks["approval_id"])

    assert stale.value.status_code == 410
    error = stale.value.body
    assert error["code"] == "approval_stale" and error["param"] == "approval_id"
    assert "'weather' was changed" in error["message"]
    assert len(tool_server.calls) == 1 and len(upstream.chat_requests()) == requests
    assert Approval.objects.get(id=marks["approval_id"]).status == "pending"
    # Still rejectable: the run ends with the model's answer, the tool never called.
    answer = resume(sdk, marks["approval_id"], "reject", reason="it changed")
    assert answer.choices[0].message.content == "It is sunny."
    assert len(tool_server.calls) == 1


def test_a_rule_decides_which_calls_wait(sdk, http, upstream, tool_server):
    agent = make_agent(http)
    rule = {"argument": "city", "op": "in", "value": ["Paris"]}
    make_tool(http, agent, tool_server.url + "/weather", approval=rule)
    script_call_then_answer(upstream, tool_call("call_1", "weather", {"city": "Rome"}))
    assert ask(sdk, agent).choices[0].finish_reason == "stop"
    assert len(tool_server.calls) == 1
    script_call_then_answer(upstream, tool_call("call_2", "weather", {"city": "Paris"}))
    assert "approval_id" in engram(ask(sdk, agent))
    assert len(tool_server.calls) == 1


@pytest.mark.parametrize("amount", ["NaN", "-Infinity"])
def test_arguments_that_are_not_json_wait_for_a_human_and_never_reach_the_tool(
    sdk, http, upstream, tool_server, amount
):
    """Python's parser takes NaN, which compares false with everything: a refund of NaN ran
    unapproved under "amount gt 100" (and under "lte" too), the tool sent NaN as JSON."""
    agent = make_agent(http)
    rule = {"any": [{"argument": "amount", "op": "gt", "value": 100}]}
    make_tool(http, agent, tool_server.url + "/refund", name="refund", approval=rule)
    arguments = '{"amount": ' + amount + "}"
    script_call_then_answer(upstream, tool_call("call_1", "refund", arguments))

    paused = ask(sdk, agent)

    assert paused.choices[0].finish_reason == "tool_calls"
    assert "approval_id" in engram(paused) and tool_server.calls == []
    resume(sdk, engram(paused)["approval_id"])  # approved: the call fails, it is not JSON
    assert tool_server.calls == []
    result = json.loads(upstream.chat_requests()[-1].body["messages"][-1]["content"])
    assert result == {"error": "the arguments are not valid JSON"}


def test_an_in_rule_takes_a_list(http, tool_server):
    """{"op": "in", "value": "US"} never held: every call ran unapproved."""
    agent = make_agent(http)
    rule = {"argument": "country", "op": "in", "value": "US"}
    body = {"name": "w", "type": "http", "http": {"url": tool_server.url}, "approval": rule}
    error = assert_envelope(http.post(f"/v1/agents/{agent}/tools", json=body), 400)
    assert error["param"] == "approval" and "list" in error["message"]
    assert policy.needs_approval(rule, '{"country": "US"}')  # stored before the rule


@pytest.mark.parametrize("op", ["gt", "gte", "lt", "lte"])
@pytest.mark.parametrize("amount", ["true", "false", "null", "[500]", '"500"'])
def test_a_value_an_order_rule_cannot_compare_waits_for_a_human(op, amount):
    """JSON's true and false ordered as 1 and 0: under "amount gt 100" a call with
    {"amount": true} ran unapproved."""
    for value in (100, -100):
        rule = {"argument": "amount", "op": op, "value": value}
        assert policy.needs_approval(rule, '{"amount": ' + amount + "}")
    assert not policy.needs_approval(
        {"argument": "amount", "op": "gt", "value": 100}, '{"amount": 5}'
    )


def test_two_concurrent_resumes_one_execution_one_4xx(sdk, http, upstream, tool_server):
    agent = make_agent(http)
    make_tool(http, agent, tool_server.url + "/weather", approval="always")
    script_call_then_answer(upstream, tool_call("call_1", "weather", {"city": "Paris"}))
    approval_id = engram(ask(sdk, agent))["approval_id"]

    def attempt():
        return http.post(
            "/v1/chat/resume", json={"approval_id": approval_id, "decision": "approve"}
        )

    with ThreadPoolExecutor(2) as pool:
        replies = sorted(pool.map(lambda _: attempt(), range(2)), key=lambda r: r.status_code)
    # The loser: 409 while the winner's run goes on (tests/test_tools_resume_retries.py), 410
    # once it answered.
    assert replies[0].status_code == 200
    loser = replies[1].json()["error"]["code"]
    assert (replies[1].status_code, loser) in ((409, "run_in_progress"), (410, "approval_used"))
    assert len(tool_server.calls) == 1


def test_expired_approval_is_410_and_recorded_as_rejected(sdk, http, upstream, tool_server):
    agent = make_agent(http)
    make_tool(http, agent, tool_server.url + "/weather", approval="always", approval_ttl_seconds=60)
    script_call_then_answer(upstream, tool_call("call_1", "weather", {"city": "Paris"}))
    marks = engram(ask(sdk, agent))
    assert Approval.objects.get(id=marks["approval_id"]).expires_at  # 60 s from now
    Approval.objects.filter(id=marks["approval_id"]).update(expires_at="2000-01-01T00:00:00Z")

    resp = http.post(
        "/v1/chat/resume", json={"approval_id": marks["approval_id"], "decision": "approve"}
    )

    assert_envelope(resp, 410, code="approval_expired")
    assert tool_server.calls == []
    assert Approval.objects.get(id=marks["approval_id"]).status == "expired"
    execution = Execution.objects.get(id=marks["execution_id"])
    assert execution.steps[-1]["type"] == "approval" and execution.steps[-1]["decision"] == "reject"
    assert execution.status == "failed"


def test_the_sweep_resolves_expired_approvals_as_rejected(sdk, http, upstream, tool_server):
    from completions.sweep import sweep_jobs

    agent = make_agent(http)
    make_tool(http, agent, tool_server.url + "/weather", approval="always")
    script_call_then_answer(upstream, tool_call("call_1", "weather", {"city": "Paris"}))
    marks = engram(ask(sdk, agent))
    assert approvals_expire() == 0  # not yet due
    Approval.objects.filter(id=marks["approval_id"]).update(expires_at="2000-01-01T00:00:00Z")
    sweep_jobs()
    assert Approval.objects.get(id=marks["approval_id"]).status == "expired"
    resp = http.post(
        "/v1/chat/resume", json={"approval_id": marks["approval_id"], "decision": "approve"}
    )
    assert_envelope(resp, 410, code="approval_expired")


def test_another_workspace_or_end_user_gets_404(
    sdk, http, upstream, tool_server, outsider, engram_server
):
    agent = make_agent(http)
    make_tool(http, agent, tool_server.url + "/weather", approval="always")
    script_call_then_answer(upstream, tool_call("call_1", "weather", {"city": "Paris"}))
    marks = engram(ask(sdk, agent, user="alice"))
    body = {"approval_id": marks["approval_id"], "decision": "approve"}
    with httpx.Client(
        base_url=engram_server.url, headers={"Authorization": f"Bearer {outsider[1]}"}
    ) as other:
        assert_envelope(other.post("/v1/chat/resume", json=body), 404, code="approval_not_found")
        assert_envelope(other.get(f"/v1/executions/{marks['execution_id']}"), 404)
    assert_envelope(http.post("/v1/chat/resume", json=body, headers={"x-user-id": "bob"}), 404)
    assert_envelope(http.post("/v1/chat/resume", json={**body, "approval_id": "appr_nope"}), 404)
    assert tool_server.calls == []
    answer = http.post("/v1/chat/resume", json=body, headers={"x-user-id": "alice"})
    assert answer.status_code == 200, answer.text
    assert len(tool_server.calls) == 1


def test_a_reviewer_lists_the_approvals_waiting_for_a_human(
    sdk, http, upstream, tool_server, outsider, engram_server
):
    """A paused run's approval id was in its answer alone: a reviewer (another process, an
    operator's page) had no way to find what waits, short of the admin."""
    refunds, weather = make_agent(http, "refunds"), make_agent(http, "forecasts")
    make_tool(http, refunds, tool_server.url + "/refund", name="refund", approval="always")
    make_tool(http, weather, tool_server.url + "/weather", approval="always")

    def script_call(call):
        upstream.script(Reply(json=openai_completion(tool_calls=[call])))

    script_call(tool_call("call_r", "refund", {"order": 42}))
    refund = engram(ask(sdk, refunds, "Refund order 42", user="alice"))
    script_call(tool_call("call_w", "weather", {"city": "Oslo"}))
    forecast = engram(ask(sdk, weather, user="bob"))
    script_call(tool_call("call_x", "weather", {"city": "Rome"}))
    stale = engram(ask(sdk, weather, user="bob"))
    Approval.objects.filter(id=stale["approval_id"]).update(expires_at="2000-01-01T00:00:00Z")
    upstream.script(Reply(json=openai_completion("No forecast, then.")))
    body = {"approval_id": forecast["approval_id"], "decision": "reject"}
    assert http.post("/v1/chat/resume", json=body, headers={"x-user-id": "bob"}).is_success

    pending = http.get("/v1/approvals", params={"status": "pending"}).json()
    assert [a["id"] for a in pending["data"]] == [refund["approval_id"]]
    [waiting] = pending["data"]
    assert waiting["object"] == "approval" and waiting["status"] == "pending"
    assert waiting["execution_id"] == refund["execution_id"] and waiting["agent_id"] == refunds
    assert waiting["user_id"] == "alice" and waiting["model"] == refunds
    assert waiting["tool_calls"] == [
        {"id": "call_r", "name": "refund", "arguments": json.dumps({"order": 42})}
    ]
    every = http.get("/v1/approvals").json()["data"]  # newest first
    assert [(a["id"], a["status"]) for a in every] == [
        (stale["approval_id"], "expired"),  # past its expiry, not swept yet
        (forecast["approval_id"], "rejected"),
        (refund["approval_id"], "pending"),
    ]
    for params, ids in [
        ({"status": "expired"}, [stale["approval_id"]]),
        ({"user_id": "bob", "status": "rejected"}, [forecast["approval_id"]]),
        ({"agent_id": refunds}, [refund["approval_id"]]),
        ({"limit": 1, "after": stale["approval_id"]}, [forecast["approval_id"]]),
    ]:
        assert [a["id"] for a in http.get("/v1/approvals", params=params).json()["data"]] == ids
    assert http.get("/v1/approvals", params={"limit": 1}).json()["has_more"] is True
    assert_envelope(http.get("/v1/approvals", params={"status": "waiting"}), 400)
    assert_envelope(http.get("/v1/approvals", params={"agent": refunds}), 400)
    with httpx.Client(
        base_url=engram_server.url, headers={"Authorization": f"Bearer {outsider[1]}"}
    ) as other:
        assert other.get("/v1/approvals").json()["data"] == []


def test_a_workspace_lists_its_agent_runs(
    sdk, http, upstream, tool_server, outsider, engram_server
):
    """A run was readable by the id in its answer alone (GET /v1/executions/{id}): nothing
    listed an agent's or a user's runs, a failed or waiting one included."""
    refunds, weather = make_agent(http, "refunds"), make_agent(http, "forecasts")
    make_tool(http, refunds, tool_server.url + "/refund", name="refund", approval="always")
    make_tool(http, weather, tool_server.url + "/weather")
    upstream.script(Reply(json=openai_completion(tool_calls=[tool_call("c_r", "refund", {})])))
    waiting = engram(ask(sdk, refunds, "Refund order 42", user="alice"))["execution_id"]
    script_call_then_answer(upstream, tool_call("c_w", "weather", {"city": "Oslo"}))
    done = engram(ask(sdk, weather, user="bob"))["execution_id"]

    every = http.get("/v1/executions").json()
    assert every["object"] == "list"
    assert [(r["id"], r["status"]) for r in every["data"]] == [  # newest first
        (done, "completed"),
        (waiting, "waiting_approval"),
    ]
    assert every["data"][0] == http.get(f"/v1/executions/{done}").json()
    assert every["data"][1]["approvals"][0]["status"] == "pending"
    for params, ids in [
        ({"agent_id": refunds}, [waiting]),
        ({"user_id": "bob"}, [done]),
        ({"status": "waiting_approval"}, [waiting]),
        ({"status": "completed", "user_id": "alice"}, []),
        ({"limit": 1, "after": done}, [waiting]),
        ({"order": "asc"}, [waiting, done]),
    ]:
        assert [r["id"] for r in http.get("/v1/executions", params=params).json()["data"]] == ids
    assert http.get("/v1/executions", params={"limit": 1}).json()["has_more"] is True
    assert_envelope(http.get("/v1/executions", params={"status": "pending"}), 400)
    assert_envelope(http.get("/v1/executions", params={"agent": refunds}), 400)
    assert_envelope(http.get("/v1/executions", params={"user_id": ""}), 400)
    with httpx.Client(
        base_url=engram_server.url, headers={"Authorization": f"Bearer {outsider[1]}"}
    ) as other:
        assert other.get("/v1/executions").json()["data"] == []


def test_an_unswept_expired_approval_reads_expired_in_its_run_too(sdk, http, upstream, tool_server):
    """Past its expiry, before the sweep resolved it, an approval read "expired" in
    GET /v1/approvals and "pending" in its run's body (one, the list of runs): the same now."""
    from datetime import timedelta

    from django.utils import timezone

    agent = make_agent(http, "refunds")
    make_tool(http, agent, tool_server.url + "/refund", name="refund", approval="always")
    upstream.script(Reply(json=openai_completion(tool_calls=[tool_call("c_r", "refund", {})])))
    run = engram(ask(sdk, agent, "Refund order 42", user="alice"))["execution_id"]
    Approval.objects.filter(execution_id=run).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )

    listed = http.get("/v1/approvals").json()["data"]
    assert [a["status"] for a in listed] == ["expired"]
    assert [a["status"] for a in http.get(f"/v1/executions/{run}").json()["approvals"]] == [
        "expired"
    ]
    [body] = http.get("/v1/executions").json()["data"]
    assert [a["status"] for a in body["approvals"]] == ["expired"]
    assert Approval.objects.get(execution_id=run).status == "pending"  # the sweep's to resolve


def test_erasing_a_user_erases_their_runs_and_approvals(sdk, http, upstream, tool_server):
    """A run holds the user's words and what was recalled for them; erased, it no longer
    answers, and its waiting approval no longer runs a tool for a user who is gone."""
    agent = make_agent(http)
    make_tool(http, agent, tool_server.url + "/weather", approval="always")
    script_call_then_answer(upstream, tool_call("call_1", "weather", {"city": "Paris"}))
    marks = engram(ask(sdk, agent, text="I am allergic to peanuts; weather?", user="alice"))
    assert http.get(f"/v1/executions/{marks['execution_id']}").status_code == 200
    stored = Execution.objects.get(id=marks["execution_id"])
    assert "allergic to peanuts" in json.dumps(stored.messages)

    erased = http.delete("/v1/users/alice")

    assert erased.status_code == 200 and erased.json()["counts"]["executions"] == 1
    assert_envelope(http.get(f"/v1/executions/{marks['execution_id']}"), 404)
    body = {"approval_id": marks["approval_id"], "decision": "approve"}
    gone = http.post("/v1/chat/resume", json=body, headers={"x-user-id": "alice"})
    assert_envelope(gone, 404, code="approval_not_found")
    assert tool_server.calls == []
    assert not Execution.objects.filter(id=marks["execution_id"]).exists()
    assert not Approval.objects.filter(id=marks["approval_id"]).exists()


def test_bad_resume_bodies_are_400(http):
    for body in ({}, {"approval_id": "appr_x"}, {"approval_id": "appr_x", "decision": "maybe"}):
        assert_envelope(http.post("/v1/chat/resume", json=body), 400)
    # The id rule, as for every id: a 400 naming approval_id, not a 404 quoting 5,000 characters
    # or a "required" for an approval_id that was sent.
    for bad in ("a" * 5000, "appr x", 5):
        body = {"approval_id": bad, "decision": "approve"}
        error = assert_envelope(http.post("/v1/chat/resume", json=body), 400, code="invalid_value")
        assert error["param"] == "approval_id" and len(error["message"]) < 300


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"stream_options": 5}, "stream_options"),
        (
            {"stream": True, "stream_options": {"include_usage": "yes"}},
            "stream_options.include_usage",
        ),
        ({"stream_options": {"include_usage": True}}, "stream_options"),  # without stream
    ],
)
def test_a_resume_checks_stream_options_as_chat_does(http, upstream, tool_server, extra, param):
    """Refused in chat's words before the approval is claimed (it was ignored, and the run
    went on): the approval stays pending for a resume that is right."""
    agent = make_agent(http)
    make_tool(http, agent, tool_server.url + "/weather", approval="always")
    script_call_then_answer(upstream, tool_call("call_1", "weather", {"city": "Paris"}))
    body = {"model": agent, "messages": [{"role": "user", "content": "Weather in Paris?"}]}
    marks = http.post("/v1/chat/completions", json=body).json()["engram"]
    resume = {"approval_id": marks["approval_id"], "decision": "approve", **extra}

    error = assert_envelope(http.post("/v1/chat/resume", json=resume), 400)

    assert error["param"] == param
    assert tool_server.calls == []
    assert Approval.objects.get(id=marks["approval_id"]).status == "pending"


# --- streaming ----------------------------------------------------------------------------------


def sse(resp) -> list:
    events = []
    for line in resp.iter_lines():
        if line.startswith("data: "):
            payload = line[len("data: ") :]
            events.append(payload if payload == "[DONE]" else json.loads(payload))
    return events


def test_stream_executed_calls_and_results_are_visible(sdk, http, upstream, tool_server):
    agent = make_agent(http)
    make_tool(http, agent, tool_server.url + "/weather")
    upstream.script(
        Reply(stream=openai_tool_stream([tool_call("call_1", "weather", {"city": "Paris"})])),
        Reply(stream=openai_stream(["It is ", "sunny."])),
    )
    with sdk.chat.completions.stream(
        model=agent, messages=[{"role": "user", "content": "Weather?"}]
    ) as stream:
        chunks = [e.chunk for e in stream if e.type == "chunk"]
        final = stream.get_final_completion()
    assert final.choices[0].message.content == "It is sunny."
    assert final.choices[0].message.tool_calls[0].function.name == "weather"  # shown, marked
    marks = [c.model_extra.get("engram") for c in chunks if c.model_extra.get("engram")]
    assert marks[0]["tool_call"] == {
        "id": "call_1",
        "name": "weather",
        "status": "running",
        "execution_id": marks[-1]["execution_id"],
    }
    assert marks[1]["tool_result"]["status"] == "completed"
    assert json.loads(marks[1]["tool_result"]["content"])["got"] == {"city": "Paris"}
    assert len(tool_server.calls) == 1


def test_a_streamed_run_relays_the_deltas_a_stream_without_tools_relays(
    http, upstream, tool_server
):
    """The agent's stream passed on only `content` and `refusal`: the thinking a reasoning
    upstream streams (`reasoning_content`, DeepSeek's and vLLM's) and the web-search citations
    (`annotations`) reached a chat without an agent, not the same chat through one."""
    agent = make_agent(http)
    make_tool(http, agent, tool_server.url + "/weather")
    citation = {"type": "url_citation", "url_citation": {"url": "https://x.test", "title": "X"}}
    chunks = openai_stream(["It is ", "sunny."])
    pieces = [{"reasoning_content": "Paris, "}, {"reasoning_content": "in June."}]
    chunks[1:1] = [{**chunks[1], "choices": [{"index": 0, "delta": d}]} for d in pieces]
    chunks[-2:-2] = [{**chunks[1], "choices": [{"index": 0, "delta": {"annotations": [citation]}}]}]

    def deltas(model: str) -> list[dict]:
        upstream.script(Reply(stream=chunks))
        body = {"model": model, "messages": [{"role": "user", "content": "Weather?"}]}
        with http.stream("POST", "/v1/chat/completions", json=body | {"stream": True}) as resp:
            assert resp.status_code == 200
            events = sse(resp)
        sent = [c["delta"] for e in events[:-1] for c in e["choices"]]
        return [d for d in ({k: v for k, v in d.items() if k != "role" and v} for d in sent) if d]

    plain = deltas("gpt-4o-mini")
    assert plain[:2] == pieces and {"annotations": [citation]} in plain
    assert deltas(agent) == plain
    assert tool_server.calls == []


def test_a_streamed_runs_chunks_carry_the_upstreams_fingerprint_and_tier_under_one_id(
    http, upstream, tool_server
):
    """The agent's chunks carried neither `system_fingerprint` nor `service_tier`, which a
    stream without an agent relays from the upstream (and an agent's answer not streamed
    carries). Its id stays one for the whole run, over its several model calls."""
    agent = make_agent(http)
    make_tool(http, agent, tool_server.url + "/weather")
    fields = {"system_fingerprint": "fp_abc123", "service_tier": "default"}

    def marked(chunks: list) -> list:
        return [c | fields if isinstance(c, dict) else c for c in chunks]

    def events(model: str, *replies: list) -> list[dict]:
        upstream.script(*(Reply(stream=marked(r)) for r in replies))
        body = {"model": model, "messages": [{"role": "user", "content": "Weather?"}]}
        with http.stream("POST", "/v1/chat/completions", json=body | {"stream": True}) as resp:
            assert resp.status_code == 200
            sent = sse(resp)
        assert sent[-1] == "[DONE]"
        return sent[:-1]

    plain = events("gpt-4o-mini", openai_stream(["Sunny."]))
    assert all({k: e[k] for k in fields} == fields for e in plain if e["choices"])

    call = tool_call("call_1", "weather", {"city": "Paris"})
    run = events(agent, openai_tool_stream([call]), openai_stream(["Sunny."]))
    assert len(upstream.chat_requests()) == 3  # two model calls for the agent
    assert "tool_result" in str(run)
    assert all({k: e.get(k) for k in fields} == fields for e in run), run
    assert len({e["id"] for e in run}) == 1  # one id across both model calls
    assert run[0]["id"].startswith("chatcmpl-")


@pytest.mark.parametrize("status", [500, 400])
def test_a_streamed_run_whose_first_model_call_fails_answers_with_its_status(
    sdk, http, upstream, tool_server, settings, status
):
    """As a stream without tools: a failure before the first byte is the status (502, or the
    upstream's 4xx) in the envelope, which the SDK raises as such and retries, not a 200
    whose only frame is the error; the run is recorded as failed."""
    from tests.test_tools_limits import record

    settings.ENGRAM_UPSTREAM_RETRIES = 0
    agent = make_agent(http)
    make_tool(http, agent, tool_server.url + "/weather")
    upstream.script(Reply(status=status, json={"error": {"message": "no", "type": "x"}}))
    body = {"model": agent, "messages": [{"role": "user", "content": "Hi"}], "stream": True}

    resp = http.post("/v1/chat/completions", json=body, headers={"x-user-id": "al"})

    assert_envelope(resp, 502 if status == 500 else 400)
    request_id = resp.headers["x-request-id"]
    assert record(request_id).status_code == resp.status_code
    assert Execution.objects.get(request_id=request_id).status == "failed"
    upstream.script(Reply(status=status, json={"error": {"message": "no", "type": "x"}}))
    with pytest.raises(openai.APIStatusError):  # the SDK's exception, with its status
        list(ask(sdk, agent, stream=True))
    upstream.script(Reply(stream=openai_stream(["Fine."])))
    with http.stream("POST", "/v1/chat/completions", json=body) as ok:
        assert ok.status_code == 200 and sse(ok)[-1] == "[DONE]"


def test_stream_pauses_with_the_approval_chunk_last_then_resumes(http, upstream, tool_server):
    agent = make_agent(http)
    make_tool(http, agent, tool_server.url + "/weather", approval="always")
    upstream.script(
        Reply(stream=openai_tool_stream([tool_call("call_1", "weather", {"city": "Paris"})])),
        Reply(stream=openai_stream(["Sunny."])),
    )
    body = {"model": agent, "messages": [{"role": "user", "content": "Weather?"}], "stream": True}
    with http.stream("POST", "/v1/chat/completions", json=body) as resp:
        assert resp.status_code == 200
        events = sse(resp)
    assert events[-1] == "[DONE]"
    last = events[-2]
    assert last["choices"][0]["finish_reason"] == "tool_calls"
    marks = last["engram"]
    assert {"approval_id", "execution_id", "expires_at", "request_id"} <= set(marks)
    assert marks["request_id"] == resp.headers["x-request-id"]
    assert marks["credits_charged"] >= 0  # a streamed run's pause is charged as its answer
    calls = [
        c for e in events[:-1] for ch in e["choices"] for c in ch["delta"].get("tool_calls") or []
    ]
    assert calls[0]["id"] == "call_1" and calls[0]["function"]["name"] == "weather"
    assert all("approval_id" not in (e.get("engram") or {}) for e in events[:-2])
    assert tool_server.calls == []

    resumed_body = {"approval_id": marks["approval_id"], "decision": "approve", "stream": True}
    with http.stream("POST", "/v1/chat/resume", json=resumed_body) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        events = sse(resp)
    assert events[-1] == "[DONE]"
    text = "".join(ch["delta"].get("content") or "" for e in events[:-1] for ch in e["choices"])
    assert text == "Sunny."
    results = [
        e["engram"]["tool_result"] for e in events[:-1] if "tool_result" in (e.get("engram") or {})
    ]
    assert results[0]["tool_call_id"] == "call_1" and results[0]["status"] == "completed"
    assert len(tool_server.calls) == 1
    charged = [e["engram"] for e in events[:-1] if "credits_charged" in (e.get("engram") or {})]
    assert charged == [events[-2]["engram"]]  # the last chunk only
    assert charged[0]["request_id"] == resp.headers["x-request-id"]
    assert charged[0]["execution_id"] == marks["execution_id"]


# --- tools: the address check, CRUD, built-ins --------------------------------------------------


def test_private_addresses_are_refused_unless_allowed(http, settings, upstream, sdk, tool_server):
    agent = make_agent(http)
    settings.ENGRAM_TOOLS_ALLOW_PRIVATE_NETWORKS = False
    for url in (
        "http://127.0.0.1:9/x",
        "http://10.0.0.5/x",
        "http://[::1]/x",
        "http://localhost/x",
    ):
        body = {"name": "t", "type": "http", "http": {"url": url}}
        error = assert_envelope(http.post(f"/v1/agents/{agent}/tools", json=body), 400)
        assert error["param"] == "http.url"
    settings.ENGRAM_TOOLS_ALLOW_PRIVATE_NETWORKS = True
    make_tool(http, agent, tool_server.url + "/weather")
    settings.ENGRAM_TOOLS_ALLOW_PRIVATE_NETWORKS = False  # turned off after the tool was made
    script_call_then_answer(upstream, tool_call("call_1", "weather", {"city": "Paris"}))
    ask(sdk, agent)
    assert tool_server.calls == []
    tool_message = upstream.chat_requests()[1].body["messages"][-1]
    assert "private" in json.loads(tool_message["content"])["error"]


def test_an_address_written_in_full_width_digits_is_refused_as_the_address(
    http, settings, upstream, sdk, tool_server, owner
):
    """urlsplit keeps "１２７.０.０.１" as a name, which is no address (stored), while the
    HTTP client (yarl) maps it to 127.0.0.1 and connects to an address without the
    resolver's check: a tool reached loopback, or 169.254.169.254, so written. Now refused
    when the tool is written, and at the call for a tool stored before."""
    settings.ENGRAM_TOOLS_ALLOW_PRIVATE_NETWORKS = False
    agent = make_agent(http)
    port = tool_server.url.rsplit(":", 1)[1]
    wide = f"http://{'127.0.0.1'.translate(_FULL_WIDTH)}:{port}/weather"
    for url in (wide, "http://１６９.２５４.１６９.２５４/latest", "http://127。0。0。1/x"):
        body = {"name": "t", "type": "http", "http": {"url": url}}
        error = assert_envelope(http.post(f"/v1/agents/{agent}/tools", json=body), 400)
        assert error["param"] == "http.url" and error["code"] == "private_address", url
    Tool.objects.create(
        workspace=owner[0], agent_id=agent, name="weather", kind="http", http_url=wide
    )
    script_call_then_answer(upstream, tool_call("call_1", "weather", {"city": "Paris"}))
    ask(sdk, agent)
    assert tool_server.calls == []
    tool_message = upstream.chat_requests()[1].body["messages"][-1]
    assert "private" in json.loads(tool_message["content"])["error"]


_FULL_WIDTH = str.maketrans("0123456789.", "０１２３４５６７８９．")


def test_stored_header_values_never_follow_the_url_to_another_host(http, tool_server):
    """Write-only secrets: moving a tool to a host of the caller's choosing must not send them
    there (a PATCH of the URL alone, or with the masked values written back)."""
    agent = make_agent(http)
    tool = make_tool(http, agent, tool_server.url + "/weather")
    path = f"/v1/agents/{agent}/tools/{tool['id']}"
    elsewhere = "https://collector.example.test/weather"
    for http_field in (
        {"url": elsewhere},
        {"url": elsewhere, "headers": {"X-Tool-Secret": "***"}},
        {"url": tool_server.url.replace("http://", "https://") + "/weather"},  # another scheme
    ):
        error = assert_envelope(http.patch(path, json={"http": http_field}), 400)
        assert error["param"] == "http.headers", http_field
    assert services.headers_of(Tool.objects.get(id=tool["id"])) == {"X-Tool-Secret": "s3cret-value"}
    # the same host keeps them; another host takes new values, or none
    assert http.patch(path, json={"http": {"url": tool_server.url + "/v2"}}).status_code == 200
    assert services.headers_of(Tool.objects.get(id=tool["id"])) == {"X-Tool-Secret": "s3cret-value"}
    moved = http.patch(path, json={"http": {"url": elsewhere, "headers": {}}})
    assert moved.status_code == 200 and moved.json()["http"]["headers"] == {}
    assert services.headers_of(Tool.objects.get(id=tool["id"])) == {}
    for url in ("http://example.test:99999/", "http://example.test:port/"):
        error = assert_envelope(http.patch(path, json={"http": {"url": url}}), 400)
        assert error["param"] == "http.url", url


def test_ipv6_forms_of_a_private_ipv4_address_are_refused(http, settings):
    """NAT64, 6to4 and IPv4-compatible addresses reach the IPv4 address they carry."""
    agent = make_agent(http)
    settings.ENGRAM_TOOLS_ALLOW_PRIVATE_NETWORKS = False
    for url in (
        "http://[64:ff9b::a9fe:a9fe]/latest/meta-data/",  # NAT64 to 169.254.169.254
        "http://[64:ff9b::7f00:1]:6379/",
        "http://[64:ff9b:1::a00:5]/",  # a network's own NAT64 prefix
        "http://[2002:a00:5::1]/",  # 6to4 of 10.0.0.5
        "http://[::127.0.0.1]/",
    ):
        body = {"name": "t", "type": "http", "http": {"url": url}}
        error = assert_envelope(http.post(f"/v1/agents/{agent}/tools", json=body), 400)
        assert error["param"] == "http.url" and error["code"] == "private_address", url
    public = {"name": "t", "type": "http", "http": {"url": "http://[64:ff9b::808:808]/"}}
    assert http.post(f"/v1/agents/{agent}/tools", json=public).status_code == 201


def test_a_tool_url_holding_credentials_is_refused_they_go_in_the_hidden_headers(http):
    """A tool's URL is shown back on every read; its headers are stored encrypted and shown
    masked. `https://user:s3cret@host/` was stored and read back whole."""
    agent = make_agent(http)
    for url in ("https://svc:s3cret@api.example.com/lookup", "https://token@api.example.com/"):
        body = {"name": "t", "type": "http", "http": {"url": url}}
        error = assert_envelope(http.post(f"/v1/agents/{agent}/tools", json=body), 400)
        assert error["param"] == "http.url" and "s3cret" not in error["message"], error
    plain = {"name": "t", "type": "http", "http": {"url": "https://api.example.com/lookup"}}
    tool = http.post(f"/v1/agents/{agent}/tools", json=plain)
    assert tool.status_code == 201, tool.text
    moved = {"http": {"url": "https://svc:s3cret@api.example.com/lookup", "headers": {}}}
    patched = http.patch(f"/v1/agents/{agent}/tools/{tool.json()['id']}", json=moved)
    assert_envelope(patched, 400)
    assert "s3cret" not in http.get(f"/v1/agents/{agent}/tools").text


def test_tools_crud_hides_header_values(http, engram_server, outsider, tool_server):
    agent = make_agent(http)
    tool = make_tool(http, agent, tool_server.url + "/weather")
    assert tool["http"]["headers"] == {"X-Tool-Secret": "***"}
    stored = Tool.objects.get(id=tool["id"])
    assert "s3cret" not in stored.http_headers_encrypted
    listed = http.get(f"/v1/agents/{agent}/tools").json()
    assert [t["id"] for t in listed["data"]] == [tool["id"]]
    patched = http.patch(f"/v1/agents/{agent}/tools/{tool['id']}", json={"approval": "always"})
    assert patched.json()["approval"] == "always"
    assert_envelope(http.post(f"/v1/agents/{agent}/tools", json={**patched.json(), "id": "x"}), 400)
    dup = {"name": "weather", "type": "builtin", "builtin": "memory_search"}
    assert_envelope(http.post(f"/v1/agents/{agent}/tools", json=dup), 400, code="tool_name_taken")
    bad = {"name": "w2", "type": "http", "http": {"url": tool_server.url}, "approval": {"x": 1}}
    assert_envelope(http.post(f"/v1/agents/{agent}/tools", json=bad), 400)
    with httpx.Client(
        base_url=engram_server.url, headers={"Authorization": f"Bearer {outsider[1]}"}
    ) as other:
        assert_envelope(other.get(f"/v1/agents/{agent}/tools"), 404)
        assert_envelope(other.get(f"/v1/agents/{agent}/tools/{tool['id']}"), 404)
        assert_envelope(other.delete(f"/v1/agents/{agent}/tools/{tool['id']}"), 404)
    assert http.delete(f"/v1/agents/{agent}/tools/{tool['id']}").json()["deleted"] is True
    assert_envelope(http.get(f"/v1/agents/{agent}/tools/{tool['id']}"), 404)


def test_a_tool_is_http_or_builtin_never_both(http, tool_server):
    """A built-in made an HTTP tool kept its built-in: its reads said "builtin": "remember"."""
    agent = make_agent(http)
    made = http.post(
        f"/v1/agents/{agent}/tools",
        json={"name": "b", "type": "builtin", "builtin": "knowledge_search"},
    ).json()
    http_tool = {"type": "http", "http": {"url": tool_server.url + "/weather"}}
    changed = http.patch(f"/v1/agents/{agent}/tools/{made['id']}", json=http_tool).json()
    assert (changed["type"], changed["builtin"]) == ("http", None)
    both = {"name": "c", "builtin": "remember", **http_tool}
    made = http.post(f"/v1/agents/{agent}/tools", json=both).json()
    assert (made["type"], made["builtin"]) == ("http", None)
    assert Tool.objects.get(id=made["id"]).builtin == ""


def test_tool_parameters_must_be_json_schema(http, tool_server):
    """What a strict provider refuses with every call is refused once, when the tool is made;
    a schema without "type" is an object's, as OpenAI needs it said."""
    agent = make_agent(http)
    url = tool_server.url + "/weather"
    for schema in (
        {"type": "object", "properties": "notadict"},
        {"type": "object", "properties": {"city": {"type": "town"}}},
        {"type": "object", "required": "city"},
    ):
        body = {"name": "w", "type": "http", "http": {"url": url}, "parameters": schema}
        error = assert_envelope(http.post(f"/v1/agents/{agent}/tools", json=body), 400)
        assert error["param"] == "parameters" and "JSON Schema" in error["message"], error
    body = {"name": "w", "type": "http", "http": {"url": url}, "parameters": {"properties": {}}}
    made = http.post(f"/v1/agents/{agent}/tools", json=body)
    assert made.status_code == 201 and made.json()["parameters"] == {
        "type": "object",
        "properties": {},
    }


@pytest.mark.parametrize(
    "schema",
    [
        {"$schema": 1},  # jsonschema read it as a URI: AttributeError
        {"$schema": {"a": 1}},  # a dict as a key of its table of meta-schemas: TypeError
        {"properties": {"code": {"type": "string", "pattern": "a{4294967296}"}}},  # Overflow
        {"properties": {"code": {"pattern": "a{1,99999999999}"}}},
        {"properties": {"code": {"pattern": "(" * 1000 + ")" * 1000}}},  # RecursionError
    ],
)
def test_tool_parameters_jsonschema_cannot_read_are_a_400_not_a_500(http, tool_server, schema):
    """A schema the meta-schema check raised on (not SchemaError) was a 500 on the create and
    on the PATCH; now a 400 naming `parameters`, and nothing stored."""
    agent = make_agent(http)
    url = tool_server.url + "/weather"
    body = {"name": "w", "type": "http", "http": {"url": url}, "parameters": schema}
    error = assert_envelope(http.post(f"/v1/agents/{agent}/tools", json=body), 400)
    assert error["param"] == "parameters", error
    tool = make_tool(http, agent, url)
    patched = http.patch(f"/v1/agents/{agent}/tools/{tool['id']}", json={"parameters": schema})
    assert assert_envelope(patched, 400)["param"] == "parameters"
    assert (
        http.get(f"/v1/agents/{agent}/tools").json()["data"][0]["parameters"]
        == (tool["parameters"])
    )


def test_an_agent_has_at_most_the_tools_one_model_call_may_be_sent(http, owner):
    """Every call of an agent sends all its tools, and OpenAI refuses a request of more than
    128 ("array too long"): the 129th tool was stored, and every call of the agent failed.
    Now it is a 400 `too_many_tools`; a tool deleted makes room."""
    agent = make_agent(http)
    Tool.objects.bulk_create(
        Tool(workspace=owner[0], agent_id=agent, name=f"t{i}", kind="builtin", builtin="remember")
        for i in range(127)
    )
    body = {"name": "last", "type": "builtin", "builtin": "knowledge_search"}
    made = http.post(f"/v1/agents/{agent}/tools", json=body)
    assert made.status_code == 201, made.text
    over = http.post(f"/v1/agents/{agent}/tools", json={**body, "name": "over"})
    assert "at most 128 tools" in assert_envelope(over, 400, code="too_many_tools")["message"]
    assert Tool.objects.filter(agent_id=agent).count() == 128
    http.delete(f"/v1/agents/{agent}/tools/{made.json()['id']}")
    assert http.post(f"/v1/agents/{agent}/tools", json={**body, "name": "over"}).status_code == 201


def test_a_read_tools_masked_headers_patched_back_keep_their_values(
    sdk, http, upstream, tool_server
):
    agent = make_agent(http)
    tool = make_tool(http, agent, tool_server.url + "/weather")
    url = f"/v1/agents/{agent}/tools/{tool['id']}"
    read = http.get(url).json()["http"]
    assert read["headers"] == {"X-Tool-Secret": "***"}
    # the read object back, a header added beside it
    read["headers"]["X-Other"] = "plain"
    patched = http.patch(url, json={"http": read})
    assert patched.status_code == 200, patched.text
    assert patched.json()["http"]["headers"] == {"X-Tool-Secret": "***", "X-Other": "***"}
    script_call_then_answer(upstream, tool_call("call_1", "weather", {"city": "Paris"}))
    ask(sdk, agent)
    assert tool_server.calls[0]["headers"]["x-tool-secret"] == "s3cret-value"
    assert tool_server.calls[0]["headers"]["x-other"] == "plain"

    unknown = {**read, "headers": {"X-Tool-Secret": "***", "X-New": "***"}}
    error = assert_envelope(http.patch(url, json={"http": unknown}), 400)
    assert error["param"] == "http.headers" and "X-New" in error["message"]
    created = {"name": "w2", "type": "http", "http": {**unknown, "headers": {"X-A": "***"}}}
    assert_envelope(http.post(f"/v1/agents/{agent}/tools", json=created), 400)
    assert services.headers_of(Tool.objects.get(id=tool["id"]))["X-Tool-Secret"] == "s3cret-value"


def test_builtin_remember_and_memory_search(sdk, http, upstream, owner, settings):
    agent = make_agent(http)
    for builtin in ("remember", "memory_search"):
        body = {"name": builtin, "type": "builtin", "builtin": builtin}
        assert http.post(f"/v1/agents/{agent}/tools", json=body).status_code == 201
    script_call_then_answer(upstream, tool_call("c1", "remember", {"text": "Likes green tea"}))
    ask(sdk, agent, "Remember I like green tea", user="alice")
    memory = Memory.objects.get(workspace=owner[0], user_id="alice", text="Likes green tea")
    script_call_then_answer(upstream, tool_call("c2", "memory_search", {"query": "green tea"}))
    ask(sdk, agent, "What do I drink?", user="alice")
    found = json.loads(upstream.chat_requests()[-1].body["messages"][-1]["content"])
    assert memory.id in [m["id"] for m in found]


def test_remember_of_what_is_remembered_already_stores_nothing(sdk, http, upstream, owner):
    """An agent told the same thing twice called `remember` twice: two copies of the fact,
    both read by every later turn."""
    agent = make_agent(http)
    body = {"name": "remember", "type": "builtin", "builtin": "remember"}
    assert http.post(f"/v1/agents/{agent}/tools", json=body).status_code == 201
    for call_id, text in (("c1", "Likes green tea"), ("c2", "likes green tea.")):
        script_call_then_answer(upstream, tool_call(call_id, "remember", {"text": text}))
        ask(sdk, agent, "Remember I like green tea", user="alice")
    memories = Memory.objects.filter(workspace=owner[0], user_id="alice")
    assert list(memories.values_list("text", flat=True)) == ["Likes green tea"]
    result = json.loads(upstream.chat_requests()[-1].body["messages"][-1]["content"])
    assert result == {"id": memories.get().id, "text": "Likes green tea"}


def test_memory_builtins_are_refused_for_an_agent_whose_memory_is_off(http):
    """Memory off means nothing stored, nothing recalled: adding a memory built-in to such an
    agent, making one, or turning memory off beside one is a 400 naming the field."""
    off = http.post(
        "/v1/agents",
        json={"name": "forgetful", "model": "gpt-4o-mini", "memory": {"enabled": False}},
    ).json()["id"]
    for builtin in ("remember", "memory_search"):
        body = {"name": builtin, "type": "builtin", "builtin": builtin}
        error = assert_envelope(
            http.post(f"/v1/agents/{off}/tools", json=body), 400, code="memory_disabled"
        )
        assert error["param"] == "builtin" and builtin in error["message"]
    knowledge = {"name": "docs", "type": "builtin", "builtin": "knowledge_search"}
    created = http.post(f"/v1/agents/{off}/tools", json=knowledge)
    assert created.status_code == 201, created.text  # the agent's collections are not memory
    changed = http.patch(
        f"/v1/agents/{off}/tools/{created.json()['id']}", json={"builtin": "remember"}
    )
    assert assert_envelope(changed, 400, code="memory_disabled")["param"] == "builtin"

    on = make_agent(http, "mindful")
    body = {"name": "remember", "type": "builtin", "builtin": "remember"}
    assert http.post(f"/v1/agents/{on}/tools", json=body).status_code == 201
    turned_off = http.patch(f"/v1/agents/{on}", json={"memory": {"enabled": False}})
    error = assert_envelope(turned_off, 400, code="memory_tools")
    assert error["param"] == "memory" and "remember" in error["message"]
    agent = http.get(f"/v1/agents/{on}").json()
    assert agent["memory"]["enabled"] is True and agent["version"] == 1


def test_an_agent_stored_with_memory_off_beside_memory_builtins_changes_its_memory_settings(
    http, owner
):
    """The rule refuses turning memory off, not any change of an agent whose memory is off
    already: one stored so beside a memory built-in (made before the rule) could not change
    its budgets (400 memory_tools) until the tool was deleted."""
    off = http.post(
        "/v1/agents",
        json={"name": "stored-off", "model": "gpt-4o-mini", "memory": {"enabled": False}},
    ).json()["id"]
    Tool.objects.create(
        workspace=owner[0], agent_id=off, name="remember", kind="builtin", builtin="remember"
    )
    memory = {"enabled": False, "budgets": {"summary": 10}}
    changed = http.patch(f"/v1/agents/{off}", json={"memory": memory})
    assert changed.status_code == 200, changed.text
    agent = http.get(f"/v1/agents/{off}").json()
    assert agent["memory"]["enabled"] is False and agent["version"] == 2
    assert agent["memory"]["budgets"]["summary"] == 10


def test_a_version_pinned_with_memory_off_neither_remembers_nor_recalls(sdk, http, upstream, owner):
    """The backstop at run time: version 1's memory is off, the tools (not versioned) hold
    the memory built-ins added once memory was on; calling version 1 stores and reads
    nothing, and the model is told why."""
    agent = http.post(
        "/v1/agents",
        json={"name": "pinned", "model": "gpt-4o-mini", "memory": {"enabled": False}},
    ).json()["id"]
    assert http.patch(f"/v1/agents/{agent}", json={"memory": {"enabled": True}}).is_success
    for builtin in ("remember", "memory_search"):
        body = {"name": builtin, "type": "builtin", "builtin": builtin}
        assert http.post(f"/v1/agents/{agent}/tools", json=body).status_code == 201
    memory_create(workspace=owner[0], user_id="u9", text="Likes coffee")

    script_call_then_answer(upstream, tool_call("c1", "remember", {"text": "likes tea"}))
    sdk.chat.completions.create(
        model="agent:pinned@1",
        messages=[{"role": "user", "content": "Remember I like tea"}],
        extra_headers={"x-user-id": "u9"},
    )
    told = json.loads(upstream.chat_requests()[-1].body["messages"][-1]["content"])
    assert "memory is off" in told["error"]
    assert not Memory.objects.filter(workspace=owner[0], user_id="u9", text="likes tea").exists()

    script_call_then_answer(upstream, tool_call("c2", "memory_search", {"query": "coffee"}))
    sdk.chat.completions.create(
        model="agent:pinned@1",
        messages=[{"role": "user", "content": "What do I drink?"}],
        extra_headers={"x-user-id": "u9"},
    )
    told = json.loads(upstream.chat_requests()[-1].body["messages"][-1]["content"])
    assert "memory is off" in told["error"] and "coffee" not in json.dumps(told).lower()


def test_admin_adds_a_tool_with_write_only_headers(client, owner, http, tool_server):
    from django.contrib.auth.models import User

    agent = make_agent(http)
    client.force_login(User.objects.create_superuser("root", "root@example.com", "pw"))
    form = {
        "workspace": owner[0].id,
        "agent": agent,
        "name": "lookup",
        "description": "",
        "parameters": "{}",
        "kind": "http",
        "builtin": "",
        "http_url": tool_server.url + "/weather",
        "http_method": "POST",
        "headers": '{"Authorization": "Bearer admin-secret"}',
        "approval": '"always"',
        "approval_ttl_seconds": "900",
        "timeout_seconds": "10",
    }
    resp = client.post("/admin/completions/tool/add/", form)
    assert resp.status_code == 302, resp.content.decode()[:2000]
    tool = Tool.objects.get(agent_id=agent, name="lookup")
    assert tool.approval == "always"
    assert "admin-secret" not in tool.http_headers_encrypted
    page = client.get(f"/admin/completions/tool/{tool.id}/change/").content.decode()
    assert "Authorization" in page and "admin-secret" not in page
    refused = client.post(
        "/admin/completions/tool/add/", {**form, "name": "x", "http_url": "ftp://a"}
    )
    assert refused.status_code == 200  # the form again, with the error
    assert not Tool.objects.filter(name="x").exists()


def test_admin_keeps_memory_builtins_off_an_agent_whose_memory_is_off(client, owner, http):
    """The admin's forms show the services' rule as an error on the page, never a 500."""
    from django.contrib.auth.models import User

    client.force_login(User.objects.create_superuser("root", "root@example.com", "pw"))
    off = http.post(
        "/v1/agents",
        json={"name": "forgetful", "model": "gpt-4o-mini", "memory": {"enabled": False}},
    ).json()["id"]
    form = {
        "workspace": owner[0].id,
        "agent": off,
        "name": "remember",
        "description": "",
        "parameters": "{}",
        "kind": "builtin",
        "builtin": "remember",
        "http_url": "",
        "http_method": "POST",
        "headers": "",
        "approval": '"never"',
        "approval_ttl_seconds": "900",
        "timeout_seconds": "10",
    }
    refused = client.post("/admin/completions/tool/add/", form)
    assert refused.status_code == 200 and "memory is off" in refused.content.decode()
    assert not Tool.objects.filter(agent_id=off).exists()

    on = make_agent(http, "mindful")
    assert client.post("/admin/completions/tool/add/", {**form, "agent": on}).status_code == 302
    agent_form = {
        "name": "mindful",
        "model": "gpt-4o-mini",
        "instructions": "",
        "parameters": "{}",
        "memory": '{"enabled": false}',
        "collection_ids": "[]",
        "metadata": "{}",
        "versions-TOTAL_FORMS": "1",
        "versions-INITIAL_FORMS": "1",
        "versions-MIN_NUM_FORMS": "0",
        "versions-MAX_NUM_FORMS": "1000",
    }
    assert (
        client.post(  # the form is whole: saved with memory on
            f"/admin/completions/agent/{on}/change/", {**agent_form, "memory": "{}"}
        ).status_code
        == 302
    )
    turned_off = client.post(f"/admin/completions/agent/{on}/change/", agent_form)
    assert turned_off.status_code == 200, turned_off.status_code
    assert "delete them first" in turned_off.content.decode()
    assert http.get(f"/v1/agents/{on}").json()["memory"]["enabled"] is True


def test_the_step_limit_ends_the_run_with_an_answer(sdk, http, upstream, tool_server, settings):
    settings.ENGRAM_TOOLS_MAX_STEPS = 2
    agent = make_agent(http)
    make_tool(http, agent, tool_server.url + "/weather")
    script_call_then_answer(upstream, tool_call("call_1", "weather", {"city": "Paris"}))
    answer = ask(sdk, agent)
    assert answer.choices[0].message.content == "It is sunny."
    first, last = upstream.chat_requests()
    assert "tool_choice" not in first.body
    assert last.body["tool_choice"] == "none"  # the last step allowed asks for an answer


@pytest.mark.parametrize("stream", [False, True])
def test_a_model_calling_the_agents_tools_at_the_step_limit_ends_cut_short(
    sdk, http, upstream, tool_server, settings, stream
):
    """Some upstreams ignore the last step's `tool_choice: "none"`: the client was answered
    with calls of the agent's tools, which it does not have, as `finish_reason: "tool_calls"`."""
    settings.ENGRAM_TOOLS_MAX_STEPS = 2
    agent = make_agent(http)
    make_tool(http, agent, tool_server.url + "/weather")
    steps = [
        [tool_call("call_1", "weather", {"city": "Oslo"})],
        [tool_call("call_2", "weather", {"city": "Rome"})],
    ]
    if stream:
        upstream.script(*(Reply(stream=openai_tool_stream(calls)) for calls in steps))
        chunks = list(ask(sdk, agent, stream=True))
        finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
        assert [f for f in finishes if f] == ["length"]
        shown = [t.id for c in chunks if c.choices for t in c.choices[0].delta.tool_calls or ()]
        assert shown == ["call_1"]  # the call that ran, marked so; never the one that did not
    else:
        upstream.script(*(Reply(json=openai_completion(tool_calls=calls)) for calls in steps))
        answer = ask(sdk, agent)
        assert answer.choices[0].finish_reason == "length"
        assert not answer.choices[0].message.tool_calls
    assert len(tool_server.calls) == 1


def test_usage_records_count_every_upstream_call(sdk, http, upstream, tool_server, owner):
    from completions.models import UsageRecord
    from completions.usage import buffer

    agent = make_agent(http)
    make_tool(http, agent, tool_server.url + "/weather", approval="always")
    upstream.script(
        Reply(json=openai_completion(tool_calls=[tool_call("c1", "weather", {"city": "X"})])),
        Reply(json=openai_completion(tool_calls=[tool_call("c2", "weather", {"city": "Y"})])),
        Reply(json=openai_completion("done")),
    )
    first = ask(sdk, agent)
    again = resume(sdk, engram(first)["approval_id"])  # runs c1, pauses again on c2
    assert again.choices[0].finish_reason == "tool_calls"
    answer = resume(sdk, engram(again)["approval_id"])
    assert answer.choices[0].message.content == "done"
    assert answer.usage.total_tokens == 18  # this request's own upstream call
    buffer.flush()
    records = UsageRecord.objects.filter(workspace=owner[0]).order_by("created_at")
    assert [r.total_tokens for r in records] == [18, 18, 18]
    execution = Execution.objects.get(id=engram(answer)["execution_id"])
    assert execution.usage["total_tokens"] == 54
    assert [s["type"] for s in execution.steps] == [
        "model",
        "approval",
        "tool",
        "model",
        "approval",
        "tool",
        "model",
    ]


def test_the_turn_is_stored_in_the_conversation(sdk, http, upstream, tool_server, owner):
    from memory.models import Message, ProcessingJob

    agent = make_agent(http)
    make_tool(http, agent, tool_server.url + "/weather", name="lookup")
    make_tool(http, agent, tool_server.url + "/weather", name="book", approval="always")
    upstream.script(
        Reply(json=openai_completion(tool_calls=[tool_call("c1", "lookup", {"city": "Oslo"})])),
        Reply(json=openai_completion(tool_calls=[tool_call("c2", "book", {"city": "Oslo"})])),
        Reply(json=openai_completion("Booked.")),
    )
    headers = {"x-user-id": "alice", "x-conversation-id": "trip"}
    paused = sdk.chat.completions.create(
        model=agent,
        messages=[{"role": "user", "content": "Book Oslo"}],
        extra_headers=headers,
    )
    answer = sdk.post(
        "/chat/resume",
        body={"approval_id": engram(paused)["approval_id"], "decision": "approve"},
        cast_to=ChatCompletion,
        options={"headers": headers},
    )
    assert answer.choices[0].message.content == "Booked."

    def stored():
        rows = Message.objects.filter(workspace=owner[0], conversation__external_id="trip")
        return [(m.role, m.content, bool(m.tool_calls)) for m in rows.order_by("created_at", "id")]

    wait_for(lambda: len(stored()) == 6)  # finish_turn stores in the background
    roles = [row[0] for row in stored()]
    assert roles == ["user", "assistant", "tool", "assistant", "tool", "assistant"]
    assert stored()[-1] == ("assistant", "Booked.", False)
    assert stored()[3][2] is True  # the call that waited, with its tool_calls
    assert ProcessingJob.objects.filter(conversation__external_id="trip").exists()


@pytest.mark.parametrize("stream", [False, True])
def test_a_run_that_fails_after_its_tools_ran_keeps_them_in_the_conversation(
    sdk, http, upstream, tool_server, owner, stream
):
    """The upstream refuses the call after the tool's result: the tool ran (a refund made), so
    the conversation holds its call and result, streamed or not (not streamed, they were in
    the execution alone), and the next turn's history sends them, every call answered."""
    from memory.models import Message

    agent = make_agent(http)
    make_tool(http, agent, tool_server.url + "/weather", name="lookup")
    call = tool_call("c1", "lookup", {"city": "Oslo"})
    refused = Reply(status=400, json={"error": {"message": "no", "type": "invalid_request_error"}})
    first = (
        Reply(stream=openai_tool_stream([call]))
        if stream
        else Reply(json=openai_completion(tool_calls=[call]))
    )
    upstream.script(first, refused)
    headers = {"x-user-id": "alice", "x-conversation-id": "trip"}
    with pytest.raises(openai.APIError):
        answer = ask(sdk, agent, "Book Oslo", extra_headers=headers, stream=stream)
        list(answer)

    def stored():
        rows = Message.objects.filter(workspace=owner[0], conversation__external_id="trip")
        return [(m.role, bool(m.tool_calls)) for m in rows.order_by("created_at", "id")]

    wait_for(lambda: len(stored()) == 3)
    assert stored() == [("user", False), ("assistant", True), ("tool", False)]
    assert len(tool_server.calls) == 1
    ask(sdk, agent, "And now?", extra_headers=headers)
    sent = upstream.chat_requests()[-1].body["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "tool", "user"]
    assert_every_call_answered(sent)


def test_a_waiting_run_does_not_block_the_conversation(sdk, http, upstream, tool_server):
    agent = make_agent(http)
    make_tool(http, agent, tool_server.url + "/weather", approval="always")
    script_call_then_answer(upstream, tool_call("call_1", "weather", {"city": "Paris"}))
    headers = {"x-user-id": "alice", "x-conversation-id": "c1"}
    paused = ask(sdk, agent, extra_headers=headers)
    upstream.reset()
    upstream.script(Reply(json=openai_completion("Something else.")))
    other = ask(sdk, agent, "Never mind, tell me a joke", extra_headers=headers)
    assert other.choices[0].message.content == "Something else."
    assert engram(other)["execution_id"] != engram(paused)["execution_id"]
    assert Approval.objects.get(id=engram(paused)["approval_id"]).status == "pending"


def test_an_approval_decided_after_a_later_turn_keeps_its_result_after_its_call(
    sdk, http, upstream, tool_server
):
    """A resume stored its tool result (and answer) after the turn that came while the run
    waited: the history then held the call with no result after it and a result after
    another turn, and left both out, so the model never saw what the approved tool did."""
    agent = make_agent(http)
    make_tool(http, agent, tool_server.url + "/weather", approval="always")
    user = "decided-late"
    headers = {"x-user-id": user, "x-conversation-id": user}
    upstream.script(Reply(json=openai_completion(tool_calls=[WEATHER_CALL])))
    paused = engram(ask(sdk, agent, extra_headers=headers))
    wait_for(lambda: len(_stored(user)) == 2)  # the question, the paused step
    upstream.script(Reply(json=openai_completion("Why did the chicken...")))
    ask(sdk, agent, "Meanwhile, tell me a joke", extra_headers=headers)
    wait_for(lambda: len(_stored(user)) == 4)

    upstream.script(Reply(json=openai_completion("It is sunny in Paris.")))
    body = {"approval_id": paused["approval_id"], "decision": "approve"}
    assert http.post("/v1/chat/resume", json=body, headers=headers).is_success
    wait_for(lambda: len(_stored(user)) == 6)
    assert _shape(_stored(user)) == [
        ("user", None, []),
        ("assistant", None, ["call_w"]),
        ("tool", "call_w", []),  # right after its call, before the later turn
        ("assistant", None, []),
        ("user", None, []),
        ("assistant", None, []),
    ]

    upstream.script(Reply(json=openai_completion("You are welcome.")))
    ask(sdk, agent, "Thanks!", extra_headers=headers)
    sent = upstream.chat_requests()[-1].body["messages"]
    assert [m.get("tool_call_id") for m in sent if m["role"] == "tool"] == ["call_w"]
    assert any(m.get("content") == "It is sunny in Paris." for m in sent)
    assert_every_call_answered(sent)


def test_redirects_are_not_followed(sdk, http, upstream, tool_server):
    agent = make_agent(http)
    make_tool(http, agent, tool_server.url + "/redirect")
    script_call_then_answer(upstream, tool_call("call_1", "weather", {"city": "Paris"}))
    ask(sdk, agent)
    assert [c["path"] for c in tool_server.calls] == ["/redirect"]
    error = json.loads(upstream.chat_requests()[1].body["messages"][-1]["content"])["error"]
    assert "302" in error and "redirect" in error


def test_engram_calls_lead_a_tool_run_when_declared(sdk, http, upstream, tool_server):
    agent = make_agent(http)
    make_tool(http, agent, tool_server.url + "/weather")
    script_call_then_answer(upstream, tool_call("call_1", "weather", {"city": "Paris"}))
    sources = {
        "type": "function",
        "function": {"name": "_engramSearchSources", "parameters": {"type": "object"}},
    }
    answer = ask(sdk, agent, tools=[sources])
    names = [c.function.name for c in answer.choices[0].message.tool_calls]
    assert names == ["_engramSearchSources"]
    assert answer.choices[0].message.content == "It is sunny."
    for request in upstream.chat_requests():
        assert [t["function"]["name"] for t in request.body["tools"]] == ["weather"]

    upstream.script(
        Reply(stream=openai_tool_stream([tool_call("call_2", "weather", {"city": "Oslo"})])),
        Reply(stream=openai_stream(["Cold."])),
    )
    with sdk.chat.completions.stream(
        model=agent, messages=[{"role": "user", "content": "Oslo?"}], tools=[sources]
    ) as stream:
        final = stream.get_final_completion()
    names = [c.function.name for c in final.choices[0].message.tool_calls]
    assert names == ["_engramSearchSources", "weather"]  # Engram's first, then the executed
    assert final.choices[0].message.content == "Cold."


def test_the_sweep_ends_runs_whose_process_was_lost(sdk, http, upstream, tool_server):
    agent = make_agent(http)
    make_tool(http, agent, tool_server.url + "/weather")
    script_call_then_answer(upstream, tool_call("call_1", "weather", {"city": "Paris"}))
    execution_id = engram(ask(sdk, agent))["execution_id"]
    Execution.objects.filter(id=execution_id).update(status="running")
    approvals_expire()
    assert Execution.objects.get(id=execution_id).status == "running"  # recent: maybe alive
    Execution.objects.filter(id=execution_id).update(updated_at="2000-01-01T00:00:00Z")
    approvals_expire()
    assert Execution.objects.get(id=execution_id).status == "failed"


def test_get_tools_take_a_query_string_and_slow_tools_time_out(sdk, http, upstream, tool_server):
    agent = make_agent(http)
    http.post(
        f"/v1/agents/{agent}/tools",
        json={
            "name": "find",
            "type": "http",
            "http": {"url": tool_server.url + "/find", "method": "GET"},
        },
    )
    make_tool(http, agent, tool_server.url + "/slow", name="slow", timeout_seconds=0.5)
    script_call_then_answer(
        upstream,
        tool_call("c1", "find", {"q": "tea", "n": 2}),
        tool_call("c2", "slow", {"city": "Oslo"}),
    )
    ask(sdk, agent)
    found = next(c for c in tool_server.calls if c["path"] == "/find")
    assert found["body"] is None and found["query"] == "q=tea&n=2"
    results = [m for m in upstream.chat_requests()[1].body["messages"] if m["role"] == "tool"]
    assert json.loads(results[0]["content"])["ok"] is True
    assert "timed out" in json.loads(results[1]["content"])["error"]


def test_a_get_tools_fixed_query_parameters_win_over_the_models_arguments(
    sdk, http, upstream, tool_server
):
    """The URL's own parameters (an operator's key) are sent once, as written: an argument of
    the same name is left out, not sent beside them for the tool's server to pick."""
    agent = make_agent(http)
    resp = http.post(
        f"/v1/agents/{agent}/tools",
        json={
            "name": "find",
            "type": "http",
            "http": {"url": tool_server.url + "/find?key=abc&fixed=1&flag", "method": "GET"},
        },
    )
    assert resp.status_code == 201, resp.text
    script_call_then_answer(
        upstream, tool_call("c1", "find", {"key": "evil", "flag": "on", "q": "tea"})
    )
    ask(sdk, agent)
    (found,) = [c for c in tool_server.calls if c["path"] == "/find"]
    assert found["query"] == "key=abc&fixed=1&flag&q=tea"


def test_an_agent_whose_tool_calls_itself_stops_at_the_hop_limit(
    sdk, http, upstream, owner, engram_server, settings
):
    """A tool whose URL is this Engram's own chat, calling the agent again: every level's tool
    request carries the hop marks, so the nested calls go through (an agent may call an
    agent) until the loop guard's limit, where the deepest call gets `engram_loop` as its
    result and every level answers, instead of nesting without end."""
    from completions.providers import hops

    settings.ENGRAM_TOOLS_ALLOW_PRIVATE_NETWORKS = True  # Engram itself, on loopback
    agent = make_agent(http)
    resp = http.post(
        f"/v1/agents/{agent}/tools",
        json={
            "name": "ask_agent",
            "type": "http",
            "http": {
                "url": engram_server.url + "/v1/chat/completions",
                "method": "POST",
                "headers": {"Authorization": f"Bearer {owner[1]}"},
            },
            "timeout_seconds": 60,
        },
    )
    assert resp.status_code == 201, resp.text
    again = {"model": agent, "messages": [{"role": "user", "content": "again"}]}
    # More tool-calling answers than the limit allows levels; the rest are echoes.
    upstream.script(
        *(Reply(json=openai_completion(tool_calls=[tool_call("c1", "ask_agent", again)])),)
        * (hops.MAX_HOPS + 4)
    )

    answer = ask(sdk, agent)

    assert answer.choices[0].finish_reason == "stop"
    assert Execution.objects.count() == hops.MAX_HOPS  # the first run and 7 nested ones
    chains = {r.headers[hops.HEADER] for r in upstream.chat_requests()}
    assert max(len(chain.split(", ")) for chain in chains) == hops.MAX_HOPS
    results = [
        m["content"]
        for r in upstream.chat_requests()
        for m in r.body["messages"]
        if m["role"] == "tool"
    ]
    assert any("engram_loop" in content for content in results)


def test_an_end_user_token_resumes_only_its_own_approvals(
    sdk, http, upstream, tool_server, engram_server
):
    from tests.identity import AUD, ISS, hs256

    secret = "a-tools-test-secret-of-at-least-32-characters"
    issuer = {"issuer": ISS, "audiences": [AUD], "hs256_secret": secret}
    assert http.post("/v1/auth/issuers", json=issuer).status_code == 201
    agent = make_agent(http)
    make_tool(http, agent, tool_server.url + "/weather", approval="always")
    script_call_then_answer(upstream, tool_call("call_1", "weather", {"city": "Paris"}))
    marks = engram(ask(sdk, agent, user="alice"))
    body = {"approval_id": marks["approval_id"], "decision": "approve"}

    def as_user(sub: str) -> httpx.Client:
        token = hs256(secret, sub=sub)
        return httpx.Client(
            base_url=engram_server.url, headers={"Authorization": f"Bearer {token}"}
        )

    with as_user("bob") as bob:
        refused = bob.post("/v1/chat/resume", json=body, headers={"x-user-id": "alice"})
        assert_envelope(refused, 403, code="user_mismatch")  # a token cannot claim alice
        assert_envelope(bob.post("/v1/chat/resume", json=body), 404)  # bob's own: not his
    assert tool_server.calls == []
    with as_user("alice") as alice:
        answer = alice.post("/v1/chat/resume", json=body)
        assert answer.status_code == 200, answer.text
    assert len(tool_server.calls) == 1


def test_an_approval_without_an_end_user_is_the_workspace_keys_only(
    sdk, http, upstream, tool_server, engram_server
):
    from tests.identity import AUD, ISS, hs256

    secret = "a-tools-test-secret-of-at-least-32-characters"
    issuer = {"issuer": ISS, "audiences": [AUD], "hs256_secret": secret}
    assert http.post("/v1/auth/issuers", json=issuer).status_code == 201
    agent = make_agent(http)
    make_tool(http, agent, tool_server.url + "/weather", approval="always")
    script_call_then_answer(upstream, tool_call("call_1", "weather", {"city": "Paris"}))
    marks = engram(ask(sdk, agent))  # a workspace key, no end user
    body = {"approval_id": marks["approval_id"], "decision": "approve"}

    token = hs256(secret, sub="mallory")
    with httpx.Client(
        base_url=engram_server.url, headers={"Authorization": f"Bearer {token}"}
    ) as mallory:
        refused = mallory.post("/v1/chat/resume", json=body)
    assert_envelope(refused, 404, code="approval_not_found")
    assert tool_server.calls == []
    assert Approval.objects.get(id=marks["approval_id"]).status == "pending"
    answer = http.post("/v1/chat/resume", json=body)
    assert answer.status_code == 200, answer.text
    assert len(tool_server.calls) == 1


# --- a resume sent again after its run failed ------------------------------------------------


def test_a_resume_retried_after_an_upstream_failure_answers_without_rerunning_the_tool(
    engram_server, owner, http, upstream, tool_server, settings
):
    from memory.models import Message

    settings.ENGRAM_UPSTREAM_RETRIES = 0  # the upstream's 500 reaches the client as a 502
    agent = make_agent(http)
    make_tool(http, agent, tool_server.url + "/weather", approval="always")
    upstream.script(
        Reply(json=openai_completion(tool_calls=[tool_call("call_1", "weather", {"c": "x"})])),
        Reply(status=500, json={"error": {"message": "down"}}),
        Reply(json=openai_completion("It is sunny.")),
    )
    headers = {"x-user-id": "alice", "x-conversation-id": "retry"}
    # The SDK's own retries: the 502 of the first resume is replayed with the same body.
    retrying = openai.OpenAI(
        base_url=engram_server.url + "/v1", api_key=owner[1], max_retries=2
    ).with_options(default_headers=headers)
    paused = ask(retrying, agent)
    marks = engram(paused)

    answer = resume(retrying, marks["approval_id"])

    assert answer.choices[0].message.content == "It is sunny."
    assert len(tool_server.calls) == 1  # the retry used the recorded result
    last = upstream.chat_requests()[-1].body["messages"]
    assert last[-1]["role"] == "tool" and json.loads(last[-1]["content"])["ok"] is True
    with pytest.raises(openai.APIStatusError) as again:  # the run answered: used
        resume(retrying, marks["approval_id"])
    assert again.value.status_code == 410 and again.value.body["code"] == "approval_used"
    execution = http.get(f"/v1/executions/{marks['execution_id']}").json()
    assert execution["status"] == "completed"
    assert [s["type"] for s in execution["steps"]] == [
        "model",
        "approval",
        "tool",
        "approval",
        "model",
    ]
    assert execution["steps"][3]["status"] == "retried"

    def roles():
        rows = Message.objects.filter(workspace=owner[0], conversation__external_id="retry")
        return [m.role for m in rows.order_by("created_at", "id")]

    wait_for(lambda: len(roles()) == 4)
    assert roles() == ["user", "assistant", "tool", "assistant"]  # the tool's result once


def test_a_broken_resume_stream_is_resumed_again_once(http, upstream, tool_server, sdk):
    agent = make_agent(http)
    make_tool(http, agent, tool_server.url + "/weather", approval="always")
    upstream.script(
        Reply(json=openai_completion(tool_calls=[tool_call("call_1", "weather", {"c": "x"})])),
        Reply(stream=openai_stream(["Sun", "ny", "."]), drop_after=2),
        Reply(stream=openai_stream(["Sunny."])),
    )
    marks = engram(ask(sdk, agent))
    body = {"approval_id": marks["approval_id"], "decision": "approve", "stream": True}
    with http.stream("POST", "/v1/chat/resume", json=body) as resp:
        broken = sse(resp)
    assert broken[-2]["error"]["type"] == "upstream_error"
    assert len(tool_server.calls) == 1

    with http.stream("POST", "/v1/chat/resume", json=body) as resp:
        assert resp.status_code == 200
        events = sse(resp)

    assert events[-1] == "[DONE]"
    text = "".join(ch["delta"].get("content") or "" for e in events[:-1] for ch in e["choices"])
    assert text == "Sunny."
    assert len(tool_server.calls) == 1
    assert http.post("/v1/chat/resume", json=body).status_code == 410
    rejected = {**body, "decision": "reject"}  # another decision than the one taken: used
    assert http.post("/v1/chat/resume", json=rejected).status_code == 410


def test_a_retried_resume_that_paused_again_leaves_the_old_approval_used(
    sdk, http, upstream, tool_server, settings
):
    settings.ENGRAM_UPSTREAM_RETRIES = 0
    agent = make_agent(http)
    make_tool(http, agent, tool_server.url + "/weather", approval="always")
    upstream.script(
        Reply(json=openai_completion(tool_calls=[tool_call("c1", "weather", {"c": "x"})])),
        Reply(status=500, json={"error": {"message": "down"}}),
        Reply(json=openai_completion(tool_calls=[tool_call("c2", "weather", {"c": "y"})])),
    )
    first = engram(ask(sdk, agent))["approval_id"]
    with pytest.raises(openai.APIStatusError) as failed:
        resume(sdk, first)
    assert failed.value.status_code == 502

    again = resume(sdk, first)  # goes on, and pauses on the next call

    second = engram(again)["approval_id"]
    assert second != first and again.choices[0].finish_reason == "tool_calls"
    with pytest.raises(openai.APIStatusError) as used:
        resume(sdk, first)
    assert used.value.status_code == 410
    assert len(tool_server.calls) == 1


@pytest.mark.parametrize("edited", [False, True])
def test_a_resume_retried_before_its_calls_started_is_checked_for_a_changed_tool(
    sdk, http, upstream, tool_server, monkeypatch, edited
):
    """The first resume fails before the approved call started (the database away as the run
    began): its retry runs it then, so a tool changed meanwhile makes the retry 410 stale as
    the first try would have been; the call never runs against the new URL."""
    from django.db import OperationalError

    agent = make_agent(http)
    tool = make_tool(http, agent, tool_server.url + "/weather", approval="always")
    script_call_then_answer(upstream, tool_call("call_1", "weather", {"city": "Paris"}))
    marks = engram(ask(sdk, agent))
    saving = services.execution_save

    def database_away(**kwargs):
        raise OperationalError("the database went away")

    monkeypatch.setattr(services, "execution_save", database_away)
    with pytest.raises(openai.APIStatusError) as failed:
        resume(sdk, marks["approval_id"])
    assert failed.value.status_code == 503
    monkeypatch.setattr(services, "execution_save", saving)
    assert Execution.objects.get(id=marks["execution_id"]).status == "failed"
    assert tool_server.calls == []
    if edited:
        url = f"/v1/agents/{agent}/tools/{tool['id']}"
        moved = http.patch(url, json={"http": {"url": tool_server.url + "/elsewhere"}})
        assert moved.status_code == 200

    if not edited:  # the retry runs the approved call, once
        assert resume(sdk, marks["approval_id"]).choices[0].message.content == "It is sunny."
        assert [c["path"] for c in tool_server.calls] == ["/weather"]
        return
    with pytest.raises(openai.APIStatusError) as stale:
        resume(sdk, marks["approval_id"])

    assert stale.value.status_code == 410
    assert stale.value.body["code"] == "approval_stale"
    assert "'weather' was changed" in stale.value.body["message"]
    assert tool_server.calls == []
    assert len(upstream.chat_requests()) == 1
    assert Execution.objects.get(id=marks["execution_id"]).status == "failed"


def test_a_resume_retried_after_its_calls_ran_goes_on_though_the_tool_changed(
    sdk, http, upstream, tool_server, settings
):
    """The approved call ran, then the model's call failed: the retry sends the recorded
    result to the model and runs nothing, so a tool changed meanwhile does not make it stale
    (a 410 would leave a run nobody can resume)."""
    settings.ENGRAM_UPSTREAM_RETRIES = 0
    agent = make_agent(http)
    tool = make_tool(http, agent, tool_server.url + "/weather", approval="always")
    upstream.script(
        Reply(json=openai_completion(tool_calls=[tool_call("call_1", "weather", {"c": "x"})])),
        Reply(status=500, json={"error": {"message": "down"}}),
        Reply(json=openai_completion("It is sunny.")),
    )
    marks = engram(ask(sdk, agent))
    with pytest.raises(openai.APIStatusError) as failed:
        resume(sdk, marks["approval_id"])
    assert failed.value.status_code == 502
    url = f"/v1/agents/{agent}/tools/{tool['id']}"
    assert http.patch(url, json={"http": {"url": tool_server.url + "/elsewhere"}}).is_success

    answer = resume(sdk, marks["approval_id"])

    assert answer.choices[0].message.content == "It is sunny."
    assert [c["path"] for c in tool_server.calls] == ["/weather"]


def test_a_call_interrupted_mid_run_is_never_run_again(sdk, http, upstream, tool_server):
    agent = make_agent(http)
    make_tool(http, agent, tool_server.url + "/weather", approval="always")
    upstream.script(
        Reply(json=openai_completion(tool_calls=[tool_call("call_1", "weather", {"c": "x"})])),
        Reply(json=openai_completion("Could not tell.")),
    )
    marks = engram(ask(sdk, agent))
    pending = Execution.objects.get(id=marks["execution_id"]).pending
    resume(sdk, marks["approval_id"])  # the run, as a lost process would leave it:
    execution = Execution.objects.get(id=marks["execution_id"])
    at = next(i for i, m in enumerate(execution.messages) if m.get("tool_calls"))
    Execution.objects.filter(id=execution.id).update(
        status="failed",
        error="interrupted: its process was lost",
        messages=execution.messages[: at + 1],  # the call started, its outcome unrecorded
        steps=execution.steps[:2],
        pending=pending,
    )
    upstream.script(Reply(json=openai_completion("Could not tell.")))

    answer = resume(sdk, marks["approval_id"])

    assert answer.choices[0].message.content == "Could not tell."
    assert len(tool_server.calls) == 1
    sent = upstream.chat_requests()[-1].body["messages"][-1]
    assert sent["tool_call_id"] == "call_1" and "interrupted" in sent["content"]


def test_a_run_that_lost_its_process_keeps_what_its_tools_did_in_the_conversation(
    sdk, http, upstream, tool_server
):
    """The process is lost while a tool runs (no approval): the sweep that fails the run an
    hour later stores in its conversation the call the run made, answered as interrupted (its
    outcome was never recorded), as the door would have stored it: the user's next turn knows
    a tool was called, and its history pairs every call with a result."""
    import datetime as dt

    from django.utils import timezone

    agent = make_agent(http)
    make_tool(http, agent, tool_server.url + "/slow")
    script_call_then_answer(upstream, tool_call("call_1", "weather", {"city": "Oslo"}))
    user = "lost-process"
    headers = {"x-user-id": user, "x-conversation-id": user}

    # As if the process had died an hour ago: the sweep's hour is past.
    stale = timezone.now() - services.STALE_RUN - dt.timedelta(minutes=1)
    lost, _ = lost_mid_call(sdk, agent, headers, updated_at=stale)

    approvals_expire()

    run = Execution.objects.get(id=lost.id)
    assert run.status == "failed" and run.error == "interrupted: its process was lost"
    assert run.steps[-1]["type"] == "tool" and run.steps[-1]["status"] == "failed"
    stored = _stored(user)
    assert _shape(stored) == [
        ("user", None, []),
        ("assistant", None, ["call_1"]),
        ("tool", "call_1", []),
    ]
    assert "interrupted" in json.loads(stored[-1]["content"])["error"]
    approvals_expire()  # a second sweep finds nothing more to store
    assert len(_stored(user)) == 3


def test_a_resume_that_lost_its_process_keeps_its_call_in_the_conversation_once(
    sdk, http, upstream, tool_server
):
    """The process is lost while an approved call runs: the sweep stores its interrupted
    result after the paused step; the resume sent again then runs nothing and stores only its
    answer, not the result a second time."""
    import datetime as dt

    from django.utils import timezone

    from memory.models import Message

    agent = make_agent(http)
    make_tool(http, agent, tool_server.url + "/weather", approval="always")
    upstream.script(
        Reply(json=openai_completion(tool_calls=[tool_call("call_1", "weather", {"c": "x"})])),
        Reply(json=openai_completion("Could not tell.")),
    )
    user = "lost-resume"
    headers = {"x-user-id": user, "x-conversation-id": user}
    marks = engram(ask(sdk, agent, extra_headers=headers))
    wait_for(lambda: len(_stored(user)) == 2)  # the question, the paused step
    pending = Execution.objects.get(id=marks["execution_id"]).pending
    resume(sdk, marks["approval_id"], user=user)
    wait_for(lambda: len(_stored(user)) == 4)
    execution = Execution.objects.get(id=marks["execution_id"])
    at = next(i for i, m in enumerate(execution.messages) if m.get("tool_calls"))
    rows = Message.objects.filter(conversation__user_id=user).order_by("created_at", "id")
    Message.objects.filter(id__in=[m.id for m in rows[2:]]).delete()
    Execution.objects.filter(id=execution.id).update(  # as a process lost mid-call leaves it
        status="running",
        messages=execution.messages[: at + 1],
        steps=execution.steps[:2],
        pending=pending,
        updated_at=timezone.now() - services.STALE_RUN - dt.timedelta(minutes=1),
    )

    approvals_expire()

    assert _shape(_stored(user))[2:] == [("tool", "call_1", [])]
    upstream.script(Reply(json=openai_completion("Could not tell.")))
    answer = resume(sdk, marks["approval_id"], user=user)
    assert answer.choices[0].message.content == "Could not tell."
    assert len(tool_server.calls) == 1
    wait_for(lambda: len(_stored(user)) == 4)
    assert _shape(_stored(user))[2:] == [("tool", "call_1", []), ("assistant", None, [])]


@pytest.mark.parametrize("stream", [False, True])
def test_a_chat_sent_again_after_its_run_lost_its_process_never_runs_its_tool_twice(
    sdk, http, upstream, tool_server, stream
):
    """The process is lost while a tool runs (a POST: side effects), the sweep fails the run
    and stores its call; the app's SDK sends the same request again (no Idempotency-Key):
    it started a new run and called the tool a second time. Now the run goes on from what it
    recorded: the call in flight is answered as interrupted, the model answers, and the
    conversation the first try opened (no x-conversation-id) holds the turn once."""
    import datetime as dt

    from django.utils import timezone

    from memory.models import Conversation

    agent = make_agent(http)
    make_tool(http, agent, tool_server.url + "/slow")
    script_call_then_answer(upstream, tool_call("call_1", "weather", {"city": "Oslo"}))
    user = "lost-then-retried"
    headers = {"x-user-id": user}

    # As if the process had died an hour ago: the sweep's hour is past.
    stale = timezone.now() - services.STALE_RUN - dt.timedelta(minutes=1)
    lost, first = lost_mid_call(sdk, agent, headers, updated_at=stale)
    approvals_expire()  # the sweep: failed, its call stored with an interrupted result
    assert len(_stored(user)) == 3
    text = "I could not check the weather."
    if stream:
        upstream.script(Reply(stream=openai_stream([text])))
        chunks = list(ask(sdk, agent, extra_headers=headers, stream=True))
        content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        marks = next(c.model_extra["engram"] for c in reversed(chunks) if "engram" in c.model_extra)
    else:
        upstream.script(Reply(json=openai_completion(text)))
        again = ask(sdk, agent, extra_headers=headers)
        content, marks = again.choices[0].message.content, engram(again)

    assert len(tool_server.calls) == 1  # the first try's call only
    assert content == text
    assert marks["execution_id"] == lost.id
    assert marks["conversation_id"] == engram(first)["conversation_id"]
    sent = upstream.chat_requests()[-1].body["messages"]
    assert sent[-1]["tool_call_id"] == "call_1" and "interrupted" in sent[-1]["content"]
    assert_every_call_answered(sent)
    wait_for(lambda: len(_stored(user)) == 4)
    assert _shape(_stored(user)) == [
        ("user", None, []),  # once
        ("assistant", None, ["call_1"]),
        ("tool", "call_1", []),  # once
        ("assistant", None, []),
    ]
    assert Conversation.objects.filter(user_id=user).count() == 1
    assert Execution.objects.get(id=lost.id).status == "completed"


def test_a_chat_sent_again_while_its_run_is_running_is_a_409_that_runs_nothing(
    sdk, http, upstream, tool_server
):
    """The same request while its run still runs: a 409 in the envelope, and no tool runs a
    second time (when the SDKs retry it: tests/test_tools_retries.py)."""
    agent = make_agent(http)
    make_tool(http, agent, tool_server.url + "/weather")
    script_call_then_answer(upstream, tool_call("call_1", "weather", {"city": "Oslo"}))
    headers = {"x-user-id": "alice", "x-conversation-id": "trip"}
    execution_id = engram(ask(sdk, agent, extra_headers=headers))["execution_id"]
    Execution.objects.filter(id=execution_id).update(status="running")  # as if still running
    body = {"model": agent, "messages": [{"role": "user", "content": "Weather in Paris?"}]}

    resp = http.post("/v1/chat/completions", json=body, headers=headers)

    assert_envelope(resp, 409, code="run_in_progress")
    assert execution_id in resp.json()["error"]["message"]
    assert len(tool_server.calls) == 1
    assert len(upstream.chat_requests()) == 2  # the first run's two model calls only
    # another user's same request, or another message, is not that run's
    other = http.post("/v1/chat/completions", json=body, headers={"x-user-id": "bob"})
    assert other.status_code == 200, other.text


# --- a client without x-conversation-id resends the transcript of a tool run -----------------


def _next_turn(sdk, agent, user, messages) -> str:
    """The conversation the client's next turn (its transcript resent) lands in."""
    reply = sdk.chat.completions.create(
        model=agent,
        messages=[*messages, {"role": "user", "content": "And tomorrow?"}],
        extra_headers={"x-user-id": user},
    )
    return engram(reply)["conversation_id"]


def test_resent_transcripts_of_a_paused_run_continue_its_conversation(
    sdk, http, upstream, tool_server
):
    from memory.models import Conversation

    # Which conversation a transcript lands in, whatever its shape: the plain and merged ones
    # leave a call unanswered, which OpenAI itself would refuse.
    upstream.checks_tool_history = False
    agent = make_agent(http)
    make_tool(http, agent, tool_server.url + "/weather", approval="always")
    user_text = {"role": "user", "content": "Weather in Paris?"}
    # The shapes a client may resend: the answer after the call it approved; the result it
    # put in between (here what the stream showed); the stream's calls merged into the answer.
    shapes = {
        "plain": lambda pending, result: [user_text, pending, ANSWER],
        "with-result": lambda pending, result: [user_text, pending, result, ANSWER],
        "merged": lambda pending, result: [
            user_text,
            pending,
            result,
            {**ANSWER, "tool_calls": pending["tool_calls"]},
        ],
    }
    for user, shape in shapes.items():
        script_call_then_answer(upstream, tool_call("call_1", "weather", {"city": "Paris"}))
        headers = {"x-user-id": user}
        paused = ask(sdk, agent, extra_headers=headers)
        conversation = engram(paused)["conversation_id"]
        sdk.post(
            "/chat/resume",
            body={"approval_id": engram(paused)["approval_id"], "decision": "approve"},
            cast_to=ChatCompletion,
            options={"headers": headers},
        )
        pending = paused.choices[0].message.model_dump(exclude_none=True)
        result = {"role": "tool", "tool_call_id": "call_1", "content": "as the client saw it"}

        assert _next_turn(sdk, agent, user, shape(pending, result)) == conversation, user
        assert Conversation.objects.filter(user_id=user).count() == 1


ANSWER = {"role": "assistant", "content": "It is sunny."}


@pytest.mark.parametrize("stream", [False, True])
def test_a_failed_resume_keeps_what_it_ran_in_the_conversation(
    sdk, http, upstream, tool_server, owner, stream
):
    """The approved call ran (a refund made), then the upstream refused the next model call:
    the conversation held the paused call alone, so a client that never sent the resume again
    lost the result (the next turn's history left the unanswered call out). Sent again, the
    resume stores only what follows, and the transcript resent lands in the same conversation."""
    from memory.models import Conversation, Message

    agent = make_agent(http)
    make_tool(http, agent, tool_server.url + "/weather", approval="always")
    refused = Reply(status=400, json={"error": {"message": "no", "type": "invalid_request_error"}})
    upstream.script(
        Reply(json=openai_completion(tool_calls=[tool_call("call_1", "weather", {"c": "x"})])),
        refused,
        Reply(stream=openai_stream(["It is sunny."])) if stream else Reply(json=ANSWER_JSON()),
    )
    headers = {"x-user-id": "alice"}
    paused = ask(sdk, agent, extra_headers=headers)
    marks = engram(paused)

    def roles():
        rows = Message.objects.filter(workspace=owner[0], conversation__user_id="alice")
        return [m.role for m in rows.order_by("created_at", "id")]

    body = {"approval_id": marks["approval_id"], "decision": "approve", "stream": stream}

    def send_resume():
        if not stream:
            return http.post("/v1/chat/resume", json=body, headers=headers)
        with http.stream("POST", "/v1/chat/resume", json=body, headers=headers) as resp:
            return sse(resp)

    failed = send_resume()
    if stream:
        assert "error" in failed[-2] and failed[-1] == "[DONE]"
    else:
        assert failed.status_code == 400
    wait_for(lambda: len(roles()) == 3)
    assert roles() == ["user", "assistant", "tool"]

    send_resume()
    wait_for(lambda: len(roles()) == 4)
    assert roles() == ["user", "assistant", "tool", "assistant"]  # the tool's result once
    assert len(tool_server.calls) == 1
    transcript = [{"role": "user", "content": "Weather in Paris?"}, ANSWER]
    assert _next_turn(sdk, agent, "alice", transcript) == marks["conversation_id"]
    assert Conversation.objects.filter(user_id="alice").count() == 1


def ANSWER_JSON() -> dict:  # noqa: N802 - the ANSWER, as the upstream's JSON
    return openai_completion(ANSWER["content"])


def test_resent_transcripts_of_a_run_continue_its_conversation(sdk, http, upstream, tool_server):
    agent = make_agent(http)
    make_tool(http, agent, tool_server.url + "/weather")
    call = tool_call("call_1", "weather", {"city": "Paris"})
    user_text = {"role": "user", "content": "Weather in Paris?"}
    shapes = {
        "answer-only": [user_text, ANSWER],  # what the JSON answer shows
        "stream": [  # the stream's calls merged into the answer, its results after
            user_text,
            {**ANSWER, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_1", "content": '{"ok": true}'},
        ],
        "canonical": [
            user_text,
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_1", "content": '{"ok": true}'},
            ANSWER,
        ],
    }
    for user, messages in shapes.items():
        script_call_then_answer(upstream, call)
        first = ask(sdk, agent, extra_headers={"x-user-id": user})
        assert first.choices[0].message.content == "It is sunny."

        assert _next_turn(sdk, agent, user, messages) == engram(first)["conversation_id"], user


CALL = tool_call("call_1", "weather", {"city": "Paris"})
QUESTION = {"role": "user", "content": "Weather in Paris?"}
RESENT = {  # what a client resends of a run, as it saw it
    "answer-only": [QUESTION, ANSWER],
    "stream": [
        QUESTION,
        {**ANSWER, "tool_calls": [CALL]},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"ok": true}'},
    ],
    "canonical": [
        QUESTION,
        {"role": "assistant", "content": None, "tool_calls": [CALL]},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"ok": true}'},
        ANSWER,
    ],
    "paused": [  # the call it approved, the result the resumed stream showed, the answer
        QUESTION,
        {"role": "assistant", "content": None, "tool_calls": [CALL]},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"ok": true}'},
        ANSWER,
    ],
}


@pytest.mark.parametrize("shape", list(RESENT))
def test_a_transcript_resent_with_a_conversation_id_after_a_tool_run_is_stored_once(
    sdk, http, upstream, tool_server, shape
):
    agent = make_agent(http)
    make_tool(
        http,
        agent,
        tool_server.url + "/weather",
        approval="always" if shape == "paused" else "never",
    )
    user = f"resend-{shape}"
    headers = {"x-user-id": user, "x-conversation-id": user}
    script_call_then_answer(upstream, CALL)
    first = ask(sdk, agent, extra_headers=headers)
    if shape == "paused":
        resume_body = {"approval_id": engram(first)["approval_id"], "decision": "approve"}
        http.post("/v1/chat/resume", json=resume_body, headers=headers).raise_for_status()
    wait_for(lambda: len(_stored(user)) == 4)

    upstream.script(Reply(json=openai_completion("Rain tomorrow.")))
    new = {"role": "user", "content": "And tomorrow?"}
    sdk.chat.completions.create(model=agent, messages=[*RESENT[shape], new], extra_headers=headers)

    wait_for(lambda: _stored(user)[-1].get("content") == "Rain tomorrow.")
    assert _shape(_stored(user)) == [
        ("user", None, []),
        ("assistant", None, ["call_1"]),
        ("tool", "call_1", []),
        ("assistant", None, []),
        ("user", None, []),  # the new message alone
        ("assistant", None, []),
    ]
    sent = upstream.chat_requests()[-1].body["messages"]
    assert [m["content"] for m in sent if m["role"] == "user"] == [
        "Weather in Paris?",
        "And tomorrow?",
    ]  # what the client resent, not the stored history again before it
    assert_every_call_answered(sent)


def test_a_streamed_run_keeps_alive_until_the_models_first_token(
    http, upstream, tool_server, settings
):
    settings.ENGRAM_KEEPALIVE_SECONDS = 0.1
    agent = make_agent(http)
    make_tool(http, agent, tool_server.url + "/weather")
    upstream.script(
        Reply(stream=openai_tool_stream([tool_call("call_1", "weather", {"city": "Paris"})])),
        Reply(stream=openai_stream(["Sunny."]), first_delay=0.6),  # thinks after the tool
    )
    body = {"model": agent, "messages": [{"role": "user", "content": "Weather?"}], "stream": True}
    with http.stream("POST", "/v1/chat/completions", json=body) as resp:
        lines = [line for line in resp.iter_lines() if line]
    result = next(i for i, line in enumerate(lines) if "tool_result" in line)
    text = next(i for i, line in enumerate(lines) if "Sunny." in line)
    assert ": keep-alive" in lines[result + 1 : text]
    assert lines[-1] == "data: [DONE]"


def test_a_client_gone_mid_tool_resumes_again_without_a_second_call(
    engram_server, owner, http, upstream, tool_server, sdk, settings
):
    import socket

    settings.ENGRAM_KEEPALIVE_SECONDS = 0.1  # writes that find the client gone
    agent = make_agent(http)
    make_tool(http, agent, tool_server.url + "/slow", approval="always")
    upstream.script(
        Reply(json=openai_completion(tool_calls=[tool_call("call_1", "weather", {"c": "x"})])),
        Reply(json=openai_completion("Could not tell.")),
    )
    marks = engram(ask(sdk, agent))
    body = json.dumps({"approval_id": marks["approval_id"], "decision": "approve", "stream": True})
    host, port = engram_server.url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)))
    sock.sendall(
        b"POST /v1/chat/resume HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer {owner[1]}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body.encode()
    )
    received = b""
    while b"tool_call" not in received:
        received += sock.recv(65536)
    wait_for(lambda: len(tool_server.calls) == 1)
    sock.close()  # while the slow tool runs: the client goes away
    execution = Execution.objects.filter(id=marks["execution_id"])
    wait_for(lambda: execution.get().status == "failed", timeout=10)
    assert execution.get().error == "interrupted: the client went away"

    answer = resume(sdk, marks["approval_id"])

    assert answer.choices[0].message.content == "Could not tell."
    assert len(tool_server.calls) == 1
    sent = upstream.chat_requests()[-1].body["messages"][-1]
    assert sent["tool_call_id"] == "call_1" and "interrupted" in sent["content"]


def test_a_header_value_with_a_carriage_return_is_refused_and_never_breaks_a_run(
    http, sdk, upstream, tool_server
):
    agent = make_agent(http)
    body = {
        "name": "w",
        "type": "http",
        "http": {"url": tool_server.url, "headers": {"X-A": "a\rb"}},
    }
    error = assert_envelope(http.post(f"/v1/agents/{agent}/tools", json=body), 400)
    assert error["param"] == "http.headers" and "X-A" in error["message"]
    tool = make_tool(http, agent, tool_server.url + "/weather")
    # A tool stored before the check: its call is a failed result the model reads, not a 500.
    stored = Tool.objects.get(id=tool["id"])
    stored.http_headers_encrypted = crypto.encrypt(json.dumps({"X-A": "a\rb"}))
    services.tool_update(workspace=stored.workspace, tool=stored, values={})
    script_call_then_answer(upstream, tool_call("call_1", "weather", {"city": "Paris"}))

    answer = ask(sdk, agent)

    assert answer.choices[0].message.content == "It is sunny."
    assert tool_server.calls == []
    tool_message = upstream.chat_requests()[1].body["messages"][-1]
    assert "control character" in json.loads(tool_message["content"])["error"]


@pytest.mark.parametrize(
    "header",
    [
        "Host",
        "content-length",
        "Transfer-Encoding",
        "Connection",
        "Upgrade",
        "TE",
        "Trailer",
        "Proxy-Authorization",
        "Keep-Alive",
        "Idempotency-Key",
        "X-Engram-Hop",
    ],
)
def test_framing_and_hop_by_hop_headers_are_refused_and_never_sent(
    http, sdk, upstream, tool_server, header
):
    agent = make_agent(http)
    body = {"name": "w", "type": "http", "http": {"url": tool_server.url, "headers": {header: "x"}}}
    error = assert_envelope(http.post(f"/v1/agents/{agent}/tools", json=body), 400)
    assert error["param"] == "http.headers" and header in error["message"]
    tool = make_tool(http, agent, tool_server.url + "/weather")
    patch = {"http": {"url": tool_server.url + "/weather", "headers": {header: "x"}}}
    error = assert_envelope(http.patch(f"/v1/agents/{agent}/tools/{tool['id']}", json=patch), 400)
    assert error["param"] == "http.headers"
    # A tool stored before the rule: the header is left out, the call goes as it should.
    stored = Tool.objects.get(id=tool["id"])
    value = "999" if header.lower() == "content-length" else "evil.example"
    secret = {"X-Tool-Secret": "s3cret-value", header: value}
    stored.http_headers_encrypted = crypto.encrypt(json.dumps(secret))
    services.tool_update(workspace=stored.workspace, tool=stored, values={})
    script_call_then_answer(upstream, tool_call("call_1", "weather", {"city": "Paris"}))

    answer = ask(sdk, agent)

    assert answer.choices[0].message.content == "It is sunny."
    (call,) = tool_server.calls
    assert call["body"] == {"city": "Paris"} and call["headers"]["x-tool-secret"] == "s3cret-value"
    assert value not in call["headers"].values()
    assert call["headers"]["idempotency-key"].endswith(":call_1")


def test_a_stream_keeps_the_models_finish_reason_refusal_and_logprobs(
    sdk, http, upstream, tool_server
):
    agent = make_agent(http)
    make_tool(http, agent, tool_server.url + "/weather")
    logprobs = {
        "content": [{"token": "It", "logprob": -0.1, "bytes": [73, 116], "top_logprobs": []}]
    }
    head = {
        "id": "chatcmpl-upstream",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
    }
    upstream.script(
        Reply(
            stream=[
                head
                | {
                    "choices": [
                        {
                            "index": 0,
                            "delta": {"role": "assistant", "content": "It"},
                            "logprobs": logprobs,
                            "finish_reason": None,
                        }
                    ]
                },
                head
                | {"choices": [{"index": 0, "delta": {"refusal": "No."}, "finish_reason": None}]},
                head | {"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]},
                "[DONE]",
            ]
        )
    )

    chunks = list(
        sdk.chat.completions.create(
            model=agent,
            messages=[{"role": "user", "content": "Weather?"}],
            stream=True,
            logprobs=True,
            max_tokens=1,
        )
    )

    choices = [c.choices[0] for c in chunks if c.choices]
    assert [c.finish_reason for c in choices if c.finish_reason] == ["length"]  # not "stop"
    assert choices[0].delta.content == "It"
    assert choices[0].logprobs.content[0].token == "It"
    assert [c.delta.refusal for c in choices if c.delta.refusal] == ["No."]


@pytest.mark.parametrize(
    "choice", ["required", {"type": "function", "function": {"name": "weather"}}]
)
def test_a_forced_tool_choice_forces_the_first_call_only(sdk, http, upstream, tool_server, choice):
    agent = make_agent(http)
    make_tool(http, agent, tool_server.url + "/weather")
    script_call_then_answer(upstream, tool_call("call_1", "weather", {"city": "Paris"}))

    answer = ask(sdk, agent, tool_choice=choice)

    assert answer.choices[0].message.content == "It is sunny."
    first, second = (r.body for r in upstream.chat_requests())
    assert first["tool_choice"] == choice
    # Forced again, a model calls the tool after every result, up to ENGRAM_TOOLS_MAX_STEPS.
    assert second["tool_choice"] == "auto"
    assert len(tool_server.calls) == 1


# --- the agent's tool definitions in the context budget ----------------------------------------


def test_an_agents_tool_definitions_are_reserved_in_the_context_budget(
    sdk, http, upstream, tool_server, settings
):
    """The upstream reads the agent's tool definitions beside the messages: the history sent
    with them fits the model's window (it overflowed it by the definitions' ~600 tokens)."""
    from tests.test_openai_compatible_upstreams import _import_history, _prompt_tokens

    settings.ENGRAM_CONTEXT_WINDOWS = {"gpt-4o-mini": 2048}
    agent = make_agent(http)
    for i in range(6):
        make_tool(
            http,
            agent,
            tool_server.url + "/weather",
            name=f"lookup_{i}",
            description="Looks something up in the company's records. " * 8,
        )
    _import_history(http, "agent-budget", "tess", 60)
    body = {
        "model": agent,
        "max_tokens": 256,
        "messages": [{"role": "user", "content": "What was topic 59 about?"}],
    }
    headers = {"x-user-id": "tess", "x-conversation-id": "agent-budget"}
    preview = http.post("/v1/context", json=body, headers=headers).json()
    upstream.script(Reply(json=openai_completion("Topic 59 is this.")))

    answer = ask(
        sdk,
        agent,
        "What was topic 59 about?",
        max_tokens=256,
        extra_headers=headers,
    )

    assert answer.choices[0].message.content == "Topic 59 is this."
    sent = upstream.chat_requests()[-1].body
    assert [t["function"]["name"] for t in sent["tools"]] == [f"lookup_{i}" for i in range(6)]
    assert len(sent["messages"]) > 10  # history went with them, as much as fits
    assert _prompt_tokens(sent) <= 2048 - 256
    budget = preview["budget"]
    assert budget["reserved_for_definitions"] > 500
    assert budget["available"] == 2048 - 256 - budget["reserved_for_definitions"]
    assert sent["messages"][-3:-1] == preview["messages"][-3:-1]


def test_a_tool_made_without_parameters_answers_the_schema_the_model_is_sent(http, upstream, sdk):
    """Left out, `parameters` is an empty object schema (README): the answer said `{}` while
    the model was sent `{"type": "object", "properties": {}}`."""
    agent = make_agent(http)
    body = {"name": "recall", "type": "builtin", "builtin": "memory_search"}
    made = http.post(f"/v1/agents/{agent}/tools", json=body).json()
    empty = {"type": "object", "properties": {}}
    assert made["parameters"] == empty
    assert http.get(f"/v1/agents/{agent}/tools/{made['id']}").json()["parameters"] == empty
    ask(sdk, agent)
    (sent,) = upstream.chat_requests()[0].body["tools"]
    assert sent["function"]["parameters"] == empty


def lost_mid_call(
    sdk, agent: str, headers: dict, *, updated_at, heartbeat_at=None
) -> tuple[Execution, object]:
    """Run a request whose tool is slow, and leave its run as a process that died while the
    tool ran leaves it: `running`, the call started and no result, nothing after the question
    in the conversation, its last write at `updated_at` and its heartbeat at `heartbeat_at`.
    Returns the run and the first answer."""
    from django.utils import timezone

    from memory.models import Message

    user = headers["x-user-id"]

    def started() -> bool:
        run = Execution.objects.first()
        return run is not None and any(m.get("tool_calls") for m in run.messages)

    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(ask, sdk, agent, extra_headers=headers)
        wait_for(started)
        lost = Execution.objects.get()  # what a process lost now leaves: the call started
        first = running.result()
    wait_for(lambda: len(_stored(user)) == 4)
    question = Message.objects.filter(conversation__user_id=user).order_by("created_at", "id")[0]
    Message.objects.filter(conversation__user_id=user).exclude(id=question.id).delete()
    Execution.objects.filter(id=lost.id).update(
        status="running",
        messages=lost.messages,
        steps=lost.steps,
        pending=lost.pending,
        updated_at=updated_at or timezone.now(),
        heartbeat_at=heartbeat_at,
    )
    return lost, first


def test_a_header_name_or_value_past_its_cap_is_a_400_naming_it(http, tool_server):
    """A value had no cap: 100,000 characters were stored and sent with every call (the number
    of headers was capped, not their size)."""
    from completions.tools.policy import MAX_HEADER_NAME, MAX_HEADER_VALUE

    agent = make_agent(http)

    def body(headers: dict) -> dict:
        return {"name": "w", "type": "http", "http": {"url": tool_server.url, "headers": headers}}

    for headers in ({"X-Big": "v" * 100_000}, {"X-Big": "v" * (MAX_HEADER_VALUE + 1)}):
        error = assert_envelope(http.post(f"/v1/agents/{agent}/tools", json=body(headers)), 400)
        assert error["param"] == "http.headers" and "X-Big" in error["message"]
        assert f"{MAX_HEADER_VALUE} at most" in error["message"]
    long_name = "X" * (MAX_HEADER_NAME + 1)
    error = assert_envelope(
        http.post(f"/v1/agents/{agent}/tools", json=body({long_name: "v"})), 400
    )
    assert error["param"] == "http.headers" and f"{MAX_HEADER_NAME} at most" in error["message"]
    assert long_name not in error["message"]
    # at the caps: stored; a PATCH past them is refused as a creation is
    at_caps = {"X" * MAX_HEADER_NAME: "v" * MAX_HEADER_VALUE}
    created = http.post(f"/v1/agents/{agent}/tools", json=body(at_caps))
    assert created.status_code == 201, created.text
    patch = {"http": {"url": tool_server.url, "headers": {"X-Big": "v" * (MAX_HEADER_VALUE + 1)}}}
    path = f"/v1/agents/{agent}/tools/{created.json()['id']}"
    error = assert_envelope(http.patch(path, json=patch), 400)
    assert error["param"] == "http.headers" and "X-Big" in error["message"]
