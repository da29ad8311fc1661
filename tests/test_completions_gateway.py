"""The gateway's own behaviour: validation, headers, the memory seam, errors, retries, usage."""

import json
import socket
import threading
import time

import httpx
import pytest

from completions.models import UsageRecord
from completions.usage import buffer
from memory.turn.contract import PreparedTurn
from tests.completions_support import spy_on_seam, wait_for
from tests.test_errors import assert_envelope
from tests.upstream import Reply, anthropic_stream, openai_completion, openai_stream

URL = "/v1/chat/completions"
BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]}


def post(http, body=None, **kwargs):
    return http.post(URL, json=BODY if body is None else body, **kwargs)


# --- validation ---------------------------------------------------------------------------

BAD_BODIES = [
    ({"model": "m"}, "messages"),
    ({"model": "m", "messages": []}, "messages"),
    ({"model": "m", "messages": "hi"}, "messages"),
    ({"messages": [{"role": "user", "content": "x"}]}, "model"),
    ({"model": 3, "messages": [{"role": "user", "content": "x"}]}, "model"),
    ({"model": "m", "messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
    ({"model": "m", "messages": [{"content": "x"}]}, "messages[0].role"),
    ({"model": "m", "messages": ["x"]}, "messages[0]"),
    ({"model": "m", "messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
    ({"model": "m", "messages": [{"role": "user"}]}, "messages[0].content"),
    (
        {"model": "m", "messages": [{"role": "user", "content": [{"type": "video"}]}]},
        "messages[0].content[0].type",
    ),
    ({"model": "m", "messages": [{"role": "tool", "content": "x"}]}, "messages[0].tool_call_id"),
    (
        {"model": "m", "messages": [{"role": "assistant", "tool_calls": [{"id": "c"}]}]},
        "messages[0].tool_calls[0].function",
    ),
    ({**BODY, "temperature": 2.5}, "temperature"),
    ({**BODY, "temperature": -0.1}, "temperature"),
    ({**BODY, "temperature": "hot"}, "temperature"),
    ({**BODY, "top_p": 1.5}, "top_p"),
    ({**BODY, "n": 0}, "n"),
    ({**BODY, "n": 1.5}, "n"),
    ({**BODY, "max_tokens": 0}, "max_tokens"),
    ({**BODY, "max_tokens": 10**30}, "max_tokens"),  # reached the limits' arithmetic
    ({**BODY, "max_completion_tokens": 2**31}, "max_completion_tokens"),
    ({**BODY, "presence_penalty": 3}, "presence_penalty"),
    ({**BODY, "frequency_penalty": -3}, "frequency_penalty"),
    ({**BODY, "stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({**BODY, "stop": 5}, "stop"),
    ({**BODY, "logit_bias": {"1": 500}}, "logit_bias.1"),
    ({**BODY, "top_logprobs": 21}, "top_logprobs"),
    ({**BODY, "stream": "yes"}, "stream"),
    ({**BODY, "stream_options": {"include_usage": True}}, "stream_options"),
    (
        {**BODY, "stream": True, "stream_options": {"include_usage": 1}},
        "stream_options.include_usage",
    ),
    ({**BODY, "tools": {"type": "function"}}, "tools"),
    ({**BODY, "tools": [{"type": "function", "function": {}}]}, "tools[0].function.name"),
    ({**BODY, "tool_choice": "sometimes"}, "tool_choice"),
    ({**BODY, "tool_choice": {"type": "function"}}, "tool_choice.function.name"),
    (
        {**BODY, "tool_choice": {"type": "function", "function": {"name": 3}}},
        "tool_choice.function.name",
    ),
    ({**BODY, "response_format": {"type": "xml"}}, "response_format.type"),
    ({**BODY, "response_format": {"type": "json_schema"}}, "response_format.json_schema"),
    (
        {**BODY, "response_format": {"type": "json_schema", "json_schema": "x"}},
        "response_format.json_schema",
    ),
    (
        {**BODY, "response_format": {"type": "json_schema", "json_schema": {"name": 5}}},
        "response_format.json_schema.name",
    ),
    ({**BODY, "metadata": {"a": 1}}, "metadata.a"),
    ({**BODY, "metadata": ["a"]}, "metadata"),
    ({**BODY, "user": 7}, "user"),
    ({**BODY, "session_id": 7}, "session_id"),
    # a role and a text alone is not enough for these roles
    ({"model": "m", "messages": [{"role": "function", "content": "x"}]}, "messages[0].name"),
    ({**BODY, "seed": 2**63}, "seed"),
    ({**BODY, "store": "yes"}, "store"),
    ({**BODY, "reasoning_effort": 1}, "reasoning_effort"),
    # problems are named in one order, whatever the body's: temperature's before n's
    ({"n": 0, **BODY, "temperature": 5}, "temperature"),
    ({"metadata": {"a": 1}, **BODY, "n": 0}, "n"),
]


@pytest.mark.parametrize(("body", "param"), BAD_BODIES)
def test_bad_input_is_400_naming_param(http, upstream, body, param):
    error = assert_envelope(post(http, body), 400)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param, error
    assert upstream.chat_requests() == []


CALL = {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}
# Each refusal names the field that is wrong and says what that field was: a field checked
# with its container's value read "expected a string, but got a string instead" (tools: ["x"],
# a common slip) or "got an object" for a number, naming a field the body did not have.
MISNAMED_BODIES = [
    ({**BODY, "tools": ["get_weather"]}, "tools[0]", "expected an object, but got a string"),
    ({**BODY, "tools": [{"type": 5}]}, "tools[0].type", "expected a string, but got a number"),
    (
        {**BODY, "tools": [{"type": "function", "function": "f"}]},
        "tools[0].function",
        "expected an object, but got a string",
    ),
    (
        {**BODY, "tools": [{"type": "function", "function": {"name": 5}}]},
        "tools[0].function.name",
        "expected a string, but got a number",
    ),
    (
        {**BODY, "metadata": {"request_id": 5}},
        "metadata.request_id",
        "expected a string, but got a number",
    ),
    (
        {
            "model": "m",
            "messages": [{"role": "assistant", "tool_calls": [{**CALL, "function": {"name": 5}}]}],
        },
        "messages[0].tool_calls[0].function.name",
        "expected a string, but got a number",
    ),
    (
        {
            "model": "m",
            "messages": [{"role": "assistant", "tool_calls": [{**CALL, "function": 5}]}],
        },
        "messages[0].tool_calls[0].function",
        "expected an object, but got a number",
    ),
    (
        {"model": "m", "messages": [{"role": "assistant", "function_call": {"name": 5}}]},
        "messages[0].function_call.name",
        "expected a string, but got a number",
    ),
    (
        {"model": "m", "messages": [{"role": "assistant", "audio": "audio_1"}]},
        "messages[0].audio",
        "expected an object, but got a string",
    ),
    ({**BODY, "model": ""}, "model", "expected a non-empty string, but got an empty string"),
    ({**BODY, "model": " "}, "model", "expected a non-empty string, but got a blank string"),
]


@pytest.mark.parametrize(("body", "param", "said"), MISNAMED_BODIES)
def test_bad_input_names_the_field_and_what_it_was(http, upstream, body, param, said):
    error = assert_envelope(post(http, body), 400)
    assert (error["param"], error["code"]) == (param, "invalid_type"), error
    assert f"Invalid type for '{param}': {said} instead." == error["message"], error


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b"", b'"text"', b"\xff\xfe"])
def test_malformed_body_is_400(http, upstream, raw):
    resp = http.post(URL, content=raw, headers={"content-type": "application/json"})
    error = assert_envelope(resp, 400, code="invalid_json")
    assert error["type"] == "invalid_request_error"


def test_both_paths_and_only_post(http, upstream):
    assert http.post("/api/v1/chat/completions", json=BODY).status_code == 200
    assert_envelope(http.get(URL), 405, code="method_not_allowed")


def test_operator_key_cannot_complete(operator_http, upstream):
    error = assert_envelope(operator_http.post(URL, json=BODY), 403)
    assert error["type"] == "permission_error"


# --- headers -------------------------------------------------------------------------------


def test_an_upstreams_cookie_is_not_sent_on_anyone_elses_request(
    http, outsider_http, upstream, settings
):
    """One pooled client session serves every workspace: a cookie one workspace's upstream
    set must not ride along on the next request to that host (another tenant's, or its own).
    By name, as api.openai.com is: aiohttp's jar ignores cookies of hosts given as IPs."""
    settings.OPENAI_BASE_URL = upstream.url.replace("127.0.0.1", "localhost") + "/v1"
    upstream.script(
        Reply(json=openai_completion(), headers={"set-cookie": "session=alice-secret; Path=/"}),
        Reply(json=openai_completion()),
    )
    assert post(http, BODY).status_code == 200
    assert post(outsider_http, BODY).status_code == 200
    assert "cookie" not in upstream.last.headers


@pytest.mark.parametrize("stream", [False, True])
def test_timing_headers_on_every_completion(http, upstream, stream):
    upstream.script(
        Reply(json=openai_completion(), delay=0.15)
        if not stream
        else Reply(stream=openai_stream(["x"]), first_delay=0.15)
    )
    resp = post(http, {**BODY, "stream": stream})
    assert resp.status_code == 200
    total = int(resp.headers["openai-processing-ms"])
    upstream_ms = int(resp.headers["x-engram-upstream-ms"])
    overhead = int(resp.headers["x-engram-overhead-ms"])
    assert resp.headers["x-request-id"].startswith("req_")
    assert upstream_ms >= 150 and total >= upstream_ms
    assert abs(total - upstream_ms - overhead) <= 1


@pytest.mark.parametrize("model", ["gpt-4o-mini", "claude-3-5-sonnet-latest"])
def test_the_wait_for_a_streams_first_event_is_the_upstreams_time(http, upstream, model):
    """The stream's status line came at once and its first event 0.3 s later: Engram reads
    that event before it answers (an error there is a status), and counted the wait as its own
    overhead (x-engram-overhead-ms ~300, upstream ~0)."""
    gate = threading.Event()
    chunks = openai_stream(["x"]) if model.startswith("gpt") else anthropic_stream(["x"])
    upstream.script(Reply(stream=chunks, gate=gate, gate_at=0))

    def release() -> None:  # 0.3 s after the upstream has the request, however slow the way there
        wait_for(upstream.chat_requests, timeout=30)
        time.sleep(0.3)
        gate.set()

    threading.Thread(target=release, daemon=True).start()
    resp = post(http, {**BODY, "model": model, "stream": True})
    assert resp.status_code == 200
    assert int(resp.headers["x-engram-upstream-ms"]) >= 200  # the request took some of the 0.3 s


def test_timing_headers_on_errors(http, upstream):
    resp = post(http, {**BODY, "temperature": 9})
    assert resp.status_code == 400
    assert {"openai-processing-ms", "x-engram-upstream-ms", "x-engram-overhead-ms"} <= set(
        resp.headers
    )


# --- the memory seam -------------------------------------------------------------------------


@pytest.fixture
def seam(monkeypatch):
    return spy_on_seam(monkeypatch)


def test_turn_context_from_headers(http, owner, upstream, seam):
    from memory.models import Collection

    col_a = Collection.objects.create(workspace=owner[0], name="a").id
    col_b = Collection.objects.create(workspace=owner[0], name="b").id
    headers = {
        "x-user-id": "alice",
        "x-conversation-id": "conv-1",
        "x-session-id": "sess-h",
        "x-workspace-id": owner[0].id,
        "x-collection-ids": json.dumps([col_a, col_b]),
    }
    resp = post(http, {**BODY, "user": "bob", "session_id": "sess-b"}, headers=headers)
    assert resp.status_code == 200
    ctx = seam["prepare"][0]
    assert ctx.workspace.id == owner[0].id and ctx.api_key_id
    assert (ctx.user_id, ctx.conversation_id, ctx.session_id) == ("alice", "conv-1", "sess-h")
    assert ctx.collection_ids == [col_a, col_b]
    assert ctx.request_id == resp.headers["x-request-id"]
    assert ctx.model == "gpt-4o-mini" and "session_id" not in ctx.body


def test_turn_context_from_body(http, upstream, seam):
    post(http, {**BODY, "user": "bob", "session_id": "sess-b"})
    ctx = seam["prepare"][0]
    assert (ctx.user_id, ctx.session_id, ctx.conversation_id) == ("bob", "sess-b", None)
    assert ctx.collection_ids == []


def test_a_body_user_id_names_the_user_and_is_not_sent_upstream(http, upstream, seam):
    """A mem0 client names the user `user_id` in the body, as Engram's memory API does: it
    reached the upstream and the turn had no user (no memory, nothing stored), in silence.
    It is Engram's own field now, as `session_id`; OpenAI's `user` still goes through."""
    resp = post(http, {**BODY, "user_id": "alice", "user": "hashed-42"})
    assert resp.status_code == 200, resp.text
    ctx = seam["prepare"][0]
    assert ctx.user_id == "alice" and "user_id" not in ctx.body
    [sent] = upstream.chat_requests()
    assert sent.body is not None
    assert "user_id" not in sent.body and sent.body["user"] == "hashed-42"
    same = post(http, {**BODY, "user_id": "alice"}, headers={"x-user-id": "alice"})
    assert same.status_code == 200


def test_a_body_user_id_naming_another_user_than_the_header_is_400(http, upstream):
    resp = post(http, {**BODY, "user_id": "bob"}, headers={"x-user-id": "alice"})
    error = assert_envelope(resp, 400, code="user_mismatch")
    assert error["param"] == "user_id"
    assert upstream.chat_requests() == []


@pytest.mark.parametrize("raw", ["col_a", '{"a": 1}', "[1, 2]", "[", '"col_a"'])
def test_malformed_collection_ids_is_400(http, upstream, raw):
    error = assert_envelope(post(http, headers={"x-collection-ids": raw}), 400)
    assert error["param"] == "x-collection-ids"


def test_other_workspace_id_is_403(http, outsider, upstream):
    error = assert_envelope(post(http, headers={"x-workspace-id": outsider[0].id}), 403)
    assert error["type"] == "permission_error" and error["param"] == "x-workspace-id"
    assert upstream.chat_requests() == []


@pytest.mark.parametrize(
    "method,path", [("get", "/v1/memories?user_id=u"), ("get", "/v1/users"), ("get", "/v1/models")]
)
def test_other_workspace_id_is_403_on_the_rest_routes_too(http, outsider, owner, method, path):
    """A workspace key's x-workspace-id naming another workspace was refused by the chat doors
    and ignored by every other route, which answered the key's workspace's data as if the
    client had been told which one it reached."""
    error = assert_envelope(
        http.request(method, path, headers={"x-workspace-id": outsider[0].id}), 403
    )
    assert error["code"] == "workspace_mismatch" and error["param"] == "x-workspace-id"
    assert http.request(method, path, headers={"x-workspace-id": owner[0].id}).status_code == 200


def _memory_answer(ctx, prepared):
    memory = {"role": "system", "content": "The user lives in Berlin."}
    return PreparedTurn(
        messages=[memory, *prepared.messages],
        engram={"session_id": "sess_1", "memories_used": 1, "context_tokens": 42},
        headers={"x-engram-memories-used": "1", "x-engram-context-tokens": "42"},
    )


def test_prepared_turn_shapes_request_and_response(http, upstream, seam):
    seam["answer"] = _memory_answer
    scripted = openai_completion("Berlin it is")
    upstream.script(Reply(json=scripted))
    resp = post(http, headers={"x-user-id": "alice"})
    assert upstream.last.body["messages"][0] == {
        "role": "system",
        "content": "The user lives in Berlin.",
    }
    assert upstream.last.body["messages"][1:] == BODY["messages"]
    data = resp.json()
    assert data["engram"] == {
        "session_id": "sess_1",
        "memories_used": 1,
        "context_tokens": 42,
        "credits_charged": 0.0,  # no price for gpt-4o-mini in this test's table
        "request_id": resp.headers["x-request-id"],
    }
    assert {k: v for k, v in data.items() if k != "engram"} == scripted
    assert resp.headers["x-engram-memories-used"] == "1"
    wait_for(lambda: seam["finish"])
    ctx, prepared, kwargs = seam["finish"][0]
    assert kwargs["assistant"]["content"] == "Berlin it is"
    assert kwargs["usage"]["total_tokens"] == 18 and kwargs["incomplete"] is False
    assert prepared.engram["memories_used"] == 1


def test_only_credits_and_request_id_when_memory_has_nothing(http, upstream, seam):
    scripted = openai_completion("plain")
    upstream.script(Reply(json=scripted))
    resp = post(http)
    data = resp.json()
    assert data.pop("engram") == {
        "credits_charged": 0.0,
        "request_id": resp.headers["x-request-id"],
    }
    assert data == scripted


def test_stream_carries_engram_chunk_before_done(http, upstream, seam):
    seam["answer"] = _memory_answer
    upstream.script(Reply(stream=openai_stream(["Ber", "lin"])))
    with http.stream("POST", URL, json={**BODY, "stream": True}) as resp:
        frames = [line[6:] for line in resp.iter_lines() if line.startswith("data: ")]
        assert resp.headers["x-engram-context-tokens"] == "42"
    assert frames[-1] == "[DONE]"
    last = json.loads(frames[-2])  # the finishing chunk carries it: every chunk has a choice
    assert (
        last["choices"][0]["finish_reason"] == "stop" and last["object"] == "chat.completion.chunk"
    )
    assert last["engram"]["memories_used"] == 1 and last["id"] == "chatcmpl-upstream"
    assert all("engram" not in json.loads(f) for f in frames[:-2])
    wait_for(lambda: seam["finish"])
    kwargs = seam["finish"][0][2]
    assert kwargs["assistant"] == {"role": "assistant", "content": "Berlin"}
    assert kwargs["usage"]["completion_tokens"] == 2 and kwargs["incomplete"] is False


def test_prepare_turn_errors_are_envelopes(http, upstream, seam):
    from config.common.errors import ApiError

    def deny(ctx, prepared):
        raise ApiError(404, "No such conversation.", param="x-conversation-id", code="not_found")

    seam["answer"] = deny
    error = assert_envelope(post(http, headers={"x-conversation-id": "nope"}), 404)
    assert error["param"] == "x-conversation-id"
    assert upstream.chat_requests() == []


# --- upstream errors and retries --------------------------------------------------------------


def test_upstream_4xx_keeps_status_and_message(http, upstream):
    upstream.script(
        Reply(
            status=400,
            json={
                "error": {
                    "message": "This model's maximum context length is 8192 tokens.",
                    "type": "invalid_request_error",
                    "param": "messages",
                    "code": "context_length_exceeded",
                }
            },
        )
    )
    error = assert_envelope(post(http), 400, code="context_length_exceeded")
    assert error["message"].startswith("This model's maximum context length")
    assert error["param"] == "messages"
    assert len(upstream.chat_requests()) == 1  # 4xx are not retried


def test_upstream_5xx_is_retried_then_succeeds(http, upstream, settings):
    settings.ENGRAM_UPSTREAM_RETRY_BACKOFF = 0.01
    upstream.script(
        Reply(status=503, json={"error": {"message": "busy"}}), Reply(json=openai_completion("ok"))
    )
    resp = post(http)
    assert resp.status_code == 200 and resp.json()["choices"][0]["message"]["content"] == "ok"
    assert len(upstream.chat_requests()) == 2


def test_upstream_5xx_exhausted_is_502(http, upstream, settings):
    settings.ENGRAM_UPSTREAM_RETRY_BACKOFF = 0.01
    settings.ENGRAM_UPSTREAM_RETRIES = 2
    upstream.script(*[Reply(status=500, json={"error": {"message": "down"}})] * 3)
    error = assert_envelope(post(http), 502)
    assert "500" in error["message"]
    assert len(upstream.chat_requests()) == 3


def test_retry_after_is_honoured(http, upstream, settings):
    upstream.script(
        Reply(status=429, headers={"retry-after": "0.4"}, json={"error": {"message": "slow down"}}),
        Reply(json=openai_completion("ok")),
    )
    started = time.monotonic()
    assert post(http).status_code == 200
    assert time.monotonic() - started >= 0.4
    assert len(upstream.chat_requests()) == 2


def test_retry_after_too_long_is_passed_through(http, upstream, settings):
    settings.ENGRAM_UPSTREAM_RETRY_MAX_WAIT = 5
    upstream.script(
        Reply(status=429, headers={"retry-after": "60"}, json={"error": {"message": "quota"}})
    )
    resp = post(http)
    assert_envelope(resp, 429)
    assert resp.headers["retry-after"] == "60"
    assert len(upstream.chat_requests()) == 1


@pytest.mark.parametrize(
    ("body", "message", "kind"),
    [
        # vLLM's older shape: the fields at the top, not under "error"
        (
            {"object": "error", "message": "vllm says no", "type": "BadRequestError", "code": 400},
            "vllm says no",
            "BadRequestError",
        ),
        # FastAPI's validation errors: JSON, not Python's repr of it
        (
            {"detail": [{"loc": ["body", "x"], "msg": "field required"}]},
            '[{"loc": ["body", "x"], "msg": "field required"}]',
            "invalid_request_error",
        ),
    ],
)
def test_an_upstreams_own_error_shapes_reach_the_client_as_it_wrote_them(
    http, upstream, body, message, kind
):
    upstream.script(Reply(status=400, json=body))
    error = assert_envelope(post(http), 400)
    assert error["message"] == message and error["type"] == kind


def test_an_error_under_status_200_is_a_502_with_its_message(http, upstream):
    upstream.script(Reply(json={"error": {"message": "model overloaded", "type": "server_error"}}))
    error = assert_envelope(post(http), 502)
    assert "model overloaded" in error["message"] and error["type"] == "upstream_error"


def test_retry_after_ms_is_the_finer_wait(http, upstream, settings):
    """OpenAI sends retry-after-ms beside a retry-after rounded up to whole seconds: a wait
    of 100 ms read as "60" was given up on (past ENGRAM_UPSTREAM_RETRY_MAX_WAIT)."""
    settings.ENGRAM_UPSTREAM_RETRY_MAX_WAIT = 5
    refusal = {"error": {"message": "slow down"}}
    upstream.script(
        Reply(status=429, headers={"retry-after": "60", "retry-after-ms": "100"}, json=refusal),
        Reply(json=openai_completion("after the wait")),
    )
    started = time.monotonic()
    resp = post(http)
    assert resp.status_code == 200 and time.monotonic() - started >= 0.1
    assert len(upstream.chat_requests()) == 2
    # given up on (a wait past the limit): both headers reach the client
    upstream.script(
        Reply(status=429, headers={"retry-after": "60", "retry-after-ms": "60000"}, json=refusal)
    )
    resp = post(http)
    assert_envelope(resp, 429)
    assert resp.headers["retry-after"] == "60" and resp.headers["retry-after-ms"] == "60000"


def test_stream_is_retried_before_the_first_byte_only(http, upstream, settings):
    settings.ENGRAM_UPSTREAM_RETRY_BACKOFF = 0.01
    upstream.script(
        Reply(status=502, json={"error": {"message": "bad gateway"}}),
        Reply(stream=openai_stream(["a", "b", "c"]), drop_after=2),
    )
    with http.stream("POST", URL, json={**BODY, "stream": True}) as resp:
        assert resp.status_code == 200
        frames = [line[6:] for line in resp.iter_lines() if line.startswith("data: ")]
    assert len(upstream.chat_requests()) == 2  # one retry before the stream began, none after
    assert json.loads(frames[-2])["error"]["type"] == "upstream_error"
    assert frames[-1] == "[DONE]"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_upstream_is_502(http, upstream, settings):
    settings.OPENAI_BASE_URL = f"http://127.0.0.1:{_closed_port()}/v1"
    settings.ENGRAM_UPSTREAM_RETRY_BACKOFF = 0.01
    error = assert_envelope(post(http), 502, code="upstream_unreachable")
    assert "reach" in error["message"]


def test_upstream_timeout_is_504(http, upstream, settings):
    settings.ENGRAM_UPSTREAM_TIMEOUT = 0.3
    upstream.script(Reply(json=openai_completion(), delay=2))
    error = assert_envelope(post(http), 504, code="upstream_timeout")
    assert "timed out" in error["message"]
    assert len(upstream.chat_requests()) == 1  # a read timeout is not retried


def test_non_stream_client_disconnect_closes_upstream(engram_server, owner, upstream):
    upstream.script(Reply(json=openai_completion(), delay=10))
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            engram_server.url + URL,
            json=BODY,
            headers={"Authorization": f"Bearer {owner[1]}"},
            timeout=httpx.Timeout(0.5),
        )
    gone = time.monotonic()
    wait_for(lambda: upstream.disconnects, timeout=3)
    assert upstream.disconnects[0] - gone < 1.0


# --- usage records ------------------------------------------------------------------------------


def test_usage_record_for_every_request(http, owner, upstream):
    upstream.script(
        Reply(
            json=openai_completion(
                usage={"prompt_tokens": 30, "completion_tokens": 5, "total_tokens": 35}
            )
        )
    )
    ok = post(http, {**BODY, "metadata": {"request_id": "client-77"}})
    upstream.script(Reply(stream=openai_stream(["a", "b", "c"])))
    streamed = post(http, {**BODY, "stream": True})
    bad = post(http, {**BODY, "n": 0})
    buffer.flush()
    rows = {r.request_id: r for r in UsageRecord.objects.filter(workspace=owner[0])}
    first = rows[ok.headers["x-request-id"]]
    assert (first.prompt_tokens, first.completion_tokens, first.total_tokens) == (30, 5, 35)
    assert first.client_request_id == "client-77" and first.status_code == 200
    assert first.provider == "openai" and first.model == "gpt-4o-mini" and not first.stream
    assert first.api_key_id and first.latency_ms >= first.upstream_ms > 0
    second = rows[streamed.headers["x-request-id"]]
    assert second.stream and second.completion_tokens == 3 and not second.incomplete
    third = rows[bad.headers["x-request-id"]]
    assert third.status_code == 400 and third.prompt_tokens is None


def test_the_usage_record_puts_each_value_in_its_field(monkeypatch):
    """turn._record builds the Usage positionally (a call with 20 keywords costs ~10,000
    instructions more on Python 3.11): every value must land in the field that names it."""
    from dataclasses import asdict
    from decimal import Decimal
    from types import SimpleNamespace

    from accounts.limits.policy import Policy
    from completions import turn as turns
    from completions import usage

    recorded: list = []
    monkeypatch.setattr(usage, "record", recorded.append)
    turn = turns.Turn(
        workspace=SimpleNamespace(id="ws_1"),  # type: ignore[arg-type]
        api_key_id="key_1",
        request_id="req_1",
        started=time.perf_counter() - 1,
    )
    turn.model, turn.stream, turn.client_request_id = "agent:helper", True, "client-1"
    turn.route = SimpleNamespace(model="gpt-x", provider=SimpleNamespace(name="openai"))  # type: ignore[assignment]
    turn.ctx = SimpleNamespace(user_id="alice")  # type: ignore[assignment]
    turn.upstream_ms, turn.credits = 250.0, 0.5
    turn.agent = {"id": "agt_1", "name": "helper", "version": 3}
    turn.charge.limits = Policy(credits_per_usd=Decimal("2.5"))  # the unit of `credits`
    tokens = {
        "prompt_tokens": 1,
        "completion_tokens": 2,
        "total_tokens": 3,
        "prompt_tokens_details": {"cached_tokens": 4, "cache_write_tokens": 5},
    }
    turns._record(turn, 499, tokens, True, "client_closed")
    [record] = recorded
    fields = asdict(record)
    assert 1000 <= fields.pop("latency_ms") < 60_000
    assert fields.pop("created_at").tzinfo is not None  # aware, as timezone.now with USE_TZ
    assert fields == {
        "workspace_id": "ws_1",
        "request_id": "req_1",
        "status_code": 499,
        "api_key_id": "key_1",
        "user_id": "alice",
        "client_request_id": "client-1",
        "model": "agent:helper",
        "upstream_model": "gpt-x",
        "provider": "openai",
        "stream": True,
        "error_code": "client_closed",
        "prompt_tokens": 1,
        "completion_tokens": 2,
        "total_tokens": 3,
        "cached_tokens": 4,
        "cache_write_tokens": 5,
        "upstream_ms": 250.0,
        "incomplete": True,
        "agent_id": "agt_1",
        "agent_version": 3,
        "credits": 0.5,
        "credits_per_usd": Decimal("2.5"),
        "usage_estimated": False,  # the upstream reported its usage
    }


def test_hot_path_makes_no_database_query(http, owner, upstream, monkeypatch):
    import threading

    from django.db.backends.utils import CursorWrapper

    queries = []
    real_execute = CursorWrapper.execute

    def spy(self, sql, params=None):
        if threading.current_thread().name != "engram-usage":  # the flusher is off the path
            queries.append(sql)
        return real_execute(self, sql, params)

    assert post(http).status_code == 200  # warms the key and routing caches
    monkeypatch.setattr(CursorWrapper, "execute", spy)
    resp = post(http)
    streamed = post(http, {**BODY, "stream": True})
    monkeypatch.undo()
    assert resp.status_code == 200 and streamed.status_code == 200
    assert queries == []
    buffer.flush()  # the records were only buffered; they are written now
    ids = set(UsageRecord.objects.filter(workspace=owner[0]).values_list("request_id", flat=True))
    assert {resp.headers["x-request-id"], streamed.headers["x-request-id"]} <= ids


def test_usage_flush_drops_only_the_orphan_row(owner):
    from completions.usage import Usage

    buffer.add(Usage(workspace_id="ws_gone", request_id="orphan", status_code=200, latency_ms=1))
    buffer.add(Usage(workspace_id=owner[0].id, request_id="kept", status_code=200, latency_ms=1))
    assert buffer.flush() == 1
    assert list(UsageRecord.objects.values_list("request_id", flat=True)) == ["kept"]


def test_usage_waits_in_the_buffer_while_the_database_is_down(owner, django_db_blocker):
    from completions.usage import Usage

    buffer.add(Usage(workspace_id=owner[0].id, request_id="later", status_code=200, latency_ms=1))
    with django_db_blocker.block(), pytest.raises(RuntimeError):
        buffer.flush()
    assert buffer.flush() == 1
    assert UsageRecord.objects.filter(request_id="later").exists()


def test_the_workers_upstream_client_keeps_no_cookie_either(upstream):
    """The workers' LLM calls (summaries, extraction) share one httpx client across workspaces."""
    from completions.providers.http import sync_client

    upstream.script(
        Reply(json=openai_completion(), headers={"set-cookie": "session=alice-secret; Path=/"}),
        Reply(json=openai_completion()),
    )
    url = upstream.url.replace("127.0.0.1", "localhost") + "/v1/chat/completions"
    for _ in range(2):
        sync_client().post(url, json=BODY).raise_for_status()
    assert "cookie" not in upstream.last.headers
