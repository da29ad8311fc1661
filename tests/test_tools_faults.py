"""Tool runs fed what PostgreSQL and the tokenizer cannot take, and a tool run that fails for
a reason no door expected, over HTTP: a tool's answer or a built-in's argument with a NUL or a
lone surrogate simply works (the NUL dropped, the surrogate replaced); a bug mid-run still
finishes the turn (the usage record, the limits' lease freed, the execution failed) and a
stream ends with the error frame and [DONE]."""

from __future__ import annotations

import json

import openai
import pytest

from completions.tools import builtins, executor
from completions.tools.models import Execution, Tool
from memory.models import Memory
from tests.completions_support import wait_for
from tests.test_limits import _free, patch_key
from tests.test_tools import ask, engram, make_agent, make_tool, script_call_then_answer, sse
from tests.test_tools_limits import record
from tests.upstream import Reply, openai_completion, openai_stream, openai_tool_stream, tool_call

pytestmark = pytest.mark.usefixtures("limiter_awake")


def _tool_result(upstream) -> str:
    return upstream.chat_requests()[1].body["messages"][-1]["content"]


@pytest.mark.parametrize(
    ("path", "received"),
    [
        ("/nul-raw", '{"v": "ab"}'),  # a raw NUL byte: dropped
        ("/nul", '{"v": "a\\u0000b"}'),  # JSON's escape of one: text, kept as it came
    ],
)
def test_a_tool_answer_with_a_nul_reaches_the_model_without_it(
    sdk, http, upstream, tool_server, path, received
):
    agent = make_agent(http)
    make_tool(http, agent, tool_server.url + path)
    script_call_then_answer(upstream, tool_call("call_1", "weather", {"city": "Paris"}))

    answer = ask(sdk, agent)

    assert answer.choices[0].message.content == "It is sunny."
    assert _tool_result(upstream) == received
    execution = Execution.objects.get(id=engram(answer)["execution_id"])
    assert execution.status == "completed" and execution.steps[1]["result"] == received


@pytest.mark.parametrize("bad", ["\x00", "\ud800"])
def test_remember_and_memory_search_take_a_nul_or_a_lone_surrogate(sdk, http, upstream, owner, bad):
    agent = make_agent(http)
    for builtin in ("remember", "memory_search"):
        body = {"name": builtin, "type": "builtin", "builtin": builtin}
        assert http.post(f"/v1/agents/{agent}/tools", json=body).status_code == 201
    call = tool_call("c1", "remember", {"text": f"Likes green{bad} tea"})
    script_call_then_answer(upstream, call)

    answer = ask(sdk, agent, "Remember I like green tea", user="alice")

    assert answer.choices[0].message.content == "It is sunny."
    memory = Memory.objects.get(workspace=owner[0], user_id="alice")
    assert memory.text == ("Likes green tea" if bad == "\x00" else "Likes green\ufffd tea")
    script_call_then_answer(upstream, tool_call("c2", "memory_search", {"query": f"tea{bad}"}))
    ask(sdk, agent, "What do I drink?", user="alice")
    found = json.loads(upstream.chat_requests()[-1].body["messages"][-1]["content"])
    assert memory.id in [m["id"] for m in found]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("bad", ["\x00", "\ud800"])
def test_a_models_nul_or_lone_surrogate_in_its_calls_and_answer_is_stored_without_it(
    http, upstream, tool_server, bad, stream
):
    """The model's own text: its call's arguments and its answer, which no door checked
    (the client did not send them). Kept as they came, the run's first write of its state
    failed in PostgreSQL: a 500 for the question, its tool never run."""
    agent = make_agent(http)
    make_tool(http, agent, tool_server.url + "/weather")
    call = tool_call("call_1", "weather", '{"city": "Par' + bad + 'is"}')
    upstream.script(
        Reply(stream=openai_tool_stream([call]))
        if stream
        else Reply(json=openai_completion(tool_calls=[call])),
        Reply(stream=openai_stream(["Sunny", bad]))
        if stream
        else Reply(json=openai_completion("Sunny" + bad)),
    )
    body = {"model": agent, "messages": [{"role": "user", "content": "Weather?"}], "stream": stream}

    with http.stream(
        "POST", "/v1/chat/completions", json=body, headers={"x-user-id": "u1"}
    ) as resp:
        assert resp.status_code == 200, resp.read()
        events = sse(resp) if stream else [resp.read()]

    assert "error" not in json.dumps(events[-2] if stream else json.loads(events[0]))
    kept = "Paris" if bad == "\x00" else "Par\ufffdis"
    assert [c["body"] for c in tool_server.calls] == [{"city": kept}]
    execution = Execution.objects.get(agent_id=agent)
    assert execution.status == "completed"
    assert json.loads(execution.steps[0]["tool_calls"][0]["arguments"]) == {"city": kept}
    assert execution.messages[-1]["content"] == ("Sunny" if bad == "\x00" else "Sunny\ufffd")


def _broken(args, scope):
    raise RuntimeError("a bug in a built-in")


def _concurrency_of_one(operator_http, owner, key_id):
    patch_key(operator_http, owner, key_id, {"limits": {"max_concurrent": 1}})


def test_a_bug_mid_run_is_a_500_that_frees_the_lease_and_is_recorded(
    sdk, http, operator_http, owner, key_id, upstream, monkeypatch
):
    _concurrency_of_one(operator_http, owner, key_id)
    agent = make_agent(http)
    assert http.post(
        f"/v1/agents/{agent}/tools",
        json={"name": "remember", "type": "builtin", "builtin": "remember"},
    ).is_success
    monkeypatch.setitem(builtins.RUNNERS, "remember", _broken)
    call = tool_call("c1", "remember", {"text": "x"})
    upstream.script(Reply(json=openai_completion(tool_calls=[call])))

    with pytest.raises(openai.InternalServerError) as info:
        ask(sdk, agent, user="alice")

    assert info.value.status_code == 500 and info.value.body["type"] == "server_error"
    request_id = info.value.response.headers["x-request-id"]
    row = record(request_id)
    assert row.status_code == 500 and row.error_code == "server_error" and row.incomplete
    assert row.total_tokens and row.agent_id == agent  # the model call made before is counted
    execution = Execution.objects.get(request_id=request_id)
    assert execution.status == "failed" and execution.error == "RuntimeError"
    wait_for(lambda: _free(owner, key_id))
    upstream.script(Reply(json=openai_completion("fine")))
    assert ask(sdk, agent).choices[0].message.content == "fine"  # the next one is admitted


def test_a_run_whose_messages_cannot_be_stored_is_still_finished(
    sdk, http, operator_http, owner, key_id, upstream, tool_server, monkeypatch
):
    """A database error storing the run (a NUL that slipped through): the execution is still
    marked failed and the request recorded, its lease freed."""
    _concurrency_of_one(operator_http, owner, key_id)
    agent = make_agent(http)
    make_tool(http, agent, tool_server.url + "/weather")

    def unstorable(call_id, result):
        return {"role": "tool", "tool_call_id": call_id, "content": "a\x00b"}

    monkeypatch.setattr(executor, "tool_message", unstorable)
    script_call_then_answer(upstream, tool_call("call_1", "weather", {"city": "Paris"}))

    with pytest.raises(openai.InternalServerError) as info:
        ask(sdk, agent)

    request_id = info.value.response.headers["x-request-id"]
    assert record(request_id).status_code == 500
    execution = Execution.objects.get(request_id=request_id)
    assert execution.status == "failed" and execution.error == "DataError"
    wait_for(lambda: _free(owner, key_id))


def test_a_bug_mid_stream_ends_with_the_error_frame_and_done(
    http, operator_http, owner, key_id, upstream, monkeypatch
):
    _concurrency_of_one(operator_http, owner, key_id)
    agent = make_agent(http)
    assert http.post(
        f"/v1/agents/{agent}/tools",
        json={"name": "remember", "type": "builtin", "builtin": "remember"},
    ).is_success
    monkeypatch.setitem(builtins.RUNNERS, "remember", _broken)
    upstream.script(Reply(stream=openai_tool_stream([tool_call("c1", "remember", {"text": "x"})])))
    body = {"model": agent, "messages": [{"role": "user", "content": "Hi"}], "stream": True}

    with http.stream(
        "POST", "/v1/chat/completions", json=body, headers={"x-user-id": "al"}
    ) as resp:
        assert resp.status_code == 200
        events = sse(resp)

    assert events[-1] == "[DONE]"
    assert events[-2]["error"]["type"] == "server_error"
    assert events[-2]["error"]["message"] == "Internal server error."
    request_id = resp.headers["x-request-id"]
    row = record(request_id)
    assert row.status_code == 500 and row.error_code == "server_error" and row.stream
    wait_for(lambda: Execution.objects.get(request_id=request_id).status == "failed")
    wait_for(lambda: _free(owner, key_id))
    upstream.script(Reply(stream=openai_stream(["fine"])))
    with http.stream("POST", "/v1/chat/completions", json=body) as resp:
        assert resp.status_code == 200 and sse(resp)[-1] == "[DONE]"


def test_a_bug_relaying_a_plain_stream_ends_with_the_error_frame_and_done(
    http, upstream, monkeypatch
):
    """The chat stream without tools: a bug mid-relay was a cut stream (no error frame, no
    [DONE]) recorded as the client's hang-up (499)."""
    from completions import streaming

    real_add = streaming.Assembler.add
    seen = []

    def add(self, data):
        seen.append(data)
        if len(seen) == 2:
            raise RuntimeError("a bug")
        return real_add(self, data)

    monkeypatch.setattr(streaming.Assembler, "add", add)
    upstream.script(Reply(stream=openai_stream(["a", "b", "c"])))
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}], "stream": True}
    with http.stream("POST", "/v1/chat/completions", json=body) as resp:
        assert resp.status_code == 200
        events = sse(resp)
    assert events[-1] == "[DONE]"
    assert events[-2]["error"] == {
        "message": "Internal server error.",
        "type": "server_error",
        "param": None,
        "code": None,
    }
    row = record(resp.headers["x-request-id"])
    assert row.status_code == 500 and row.error_code == "server_error" and row.incomplete


def test_a_tool_answer_that_arrives_in_parts_reaches_the_model_whole(
    sdk, http, upstream, tool_server
):
    agent = make_agent(http)
    make_tool(http, agent, tool_server.url + "/split")
    script_call_then_answer(upstream, tool_call("call_1", "weather", {"city": "Paris"}))

    answer = ask(sdk, agent)

    whole = '{"ok": true, "got": {"city": "Paris"}}'
    assert _tool_result(upstream) == whole
    execution = Execution.objects.get(id=engram(answer)["execution_id"])
    assert execution.steps[1]["result"] == whole


@pytest.mark.parametrize(
    ("path", "mark"),
    [("/long", "[cut: 4,000 more characters left out]"), ("/huge", "[cut: over 48,000 more")],
)
def test_a_tool_answer_over_the_limit_says_it_was_cut(sdk, http, upstream, tool_server, path, mark):
    agent = make_agent(http)
    make_tool(http, agent, tool_server.url + path)
    script_call_then_answer(upstream, tool_call("call_1", "weather", {"city": "Paris"}))

    answer = ask(sdk, agent)

    result = _tool_result(upstream)
    assert result.startswith("x" * 16_000) and "x" * 16_001 not in result
    assert result[16_000:].startswith("\n" + mark), result[16_000:]
    execution = Execution.objects.get(id=engram(answer)["execution_id"])
    assert execution.steps[1]["result"] == result


@pytest.mark.parametrize(("path", "read"), [("/long", 20_000), ("/huge", 64_000)])
def test_a_follow_up_call_after_a_long_result_fits_the_window(
    sdk, http, upstream, tool_server, settings, path, read
):
    """A 2,048-token window and a result cut at 16,000 characters: the model's next call is
    fitted to the window (the older turns left out first, then the result cut further, with
    the mark), keeps the system message, the question, the call and its result, and is valid
    tool history. The run's record keeps the result as the tool sent it (cut at 16,000)."""
    from memory.text import count_messages
    from memory.turn.assembly import budget_for
    from tests.test_tools import assert_every_call_answered

    settings.ENGRAM_CONTEXT_WINDOWS = {"gpt-4o-mini": 2048}
    agent = make_agent(http)
    make_tool(http, agent, tool_server.url + path)
    script_call_then_answer(upstream, tool_call("call_1", "weather", {"city": "Paris"}))
    older = " ".join(f"word{i}" for i in range(150))
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": f"Earlier question: {older}"},
        {"role": "assistant", "content": f"Earlier answer: {older}"},
        {"role": "user", "content": "Weather in Paris?"},
    ]

    answer = sdk.chat.completions.create(model=agent, messages=messages)

    first, second = upstream.chat_requests()
    assert [m["content"] for m in first.body["messages"]] == [m["content"] for m in messages]
    sent = second.body["messages"]
    assert count_messages(sent) <= budget_for(second.body, "gpt-4o-mini").total
    assert_every_call_answered(sent)
    assert sent[0] == {"role": "system", "content": "Be brief."}
    assert sent[1] == {"role": "user", "content": "Weather in Paris?"}  # older turns left out
    assert [m["role"] for m in sent[2:]] == ["assistant", "tool"]
    result = sent[-1]["content"]
    assert result.startswith("x" * 200) and len(result) < 16_000
    mark = result[result.index("\n[cut: ") :]  # one mark, counting all that was left out
    over = read > 20_000  # the tool sent more than Engram reads: "over N"
    assert mark.startswith("\n[cut: over " if over else "\n[cut: ") and mark.count("[cut") == 1
    left = int(mark.removeprefix("\n[cut: ").removeprefix("over ").split(" ")[0].replace(",", ""))
    assert mark.endswith(" more characters left out]") and left == read - result.index("\n")
    execution = Execution.objects.get(id=engram(answer)["execution_id"])
    assert execution.steps[1]["result"].startswith("x" * 16_000)


def test_a_tool_answer_its_own_charset_cannot_decode_is_read_as_utf8(
    sdk, http, upstream, tool_server
):
    """charset=idna (or punycode) raises whatever `errors` says: the run answered 500."""
    agent = make_agent(http)
    make_tool(http, agent, tool_server.url + "/idna")
    script_call_then_answer(upstream, tool_call("call_1", "weather", {"city": "Paris"}))

    answer = ask(sdk, agent)

    assert answer.choices[0].message.content == "It is sunny."
    assert _tool_result(upstream) == "café \ufffd"
    execution = Execution.objects.get(id=engram(answer)["execution_id"])
    assert execution.steps[1]["status"] == "completed"


def test_a_tool_whose_host_name_cannot_be_sent_is_refused_and_never_breaks_a_run(
    sdk, http, upstream, tool_server
):
    """A host label over 63 characters (or an empty one) was stored, then raised at every call
    of the tool: the run answered 500. Now refused when written; one stored before is an
    error result the model answers. A bracket left open was a 500 when written."""
    from tests.test_errors import assert_envelope

    agent = make_agent(http)
    for url in ("http://" + "a" * 64 + ".example.com/", "http://a..example.com/", "http://[::1"):
        body = {"name": "t", "type": "http", "http": {"url": url}}
        error = assert_envelope(http.post(f"/v1/agents/{agent}/tools", json=body), 400)
        assert error["param"] == "http.url", url
    tool = make_tool(http, agent, tool_server.url + "/weather")
    Tool.objects.filter(id=tool["id"]).update(http_url="http://" + "a" * 64 + ".example.com/")
    script_call_then_answer(upstream, tool_call("call_1", "weather", {"city": "Paris"}))

    answer = ask(sdk, agent)

    assert answer.choices[0].message.content == "It is sunny."
    assert json.loads(_tool_result(upstream)) == {"error": "the request failed (UnicodeError)"}
