"""The official `openai` package, unchanged, as the client of Engram in front of the loopback
upstream: what it sees must be what OpenAI would send it."""

import json

import openai
import pytest

from tests.upstream import Reply, openai_completion, openai_stream

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]
TOOL_CALLS = [
    {
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Berlin"}'},
    },
    {
        "id": "call_2",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
    },
]


@pytest.fixture
def client(sdk):
    """conftest's official client, under this file's name for it."""
    return sdk


def _user(text="Hi"):
    return [{"role": "user", "content": text}]


def tool_stream(model="gpt-4o-mini"):
    base = {"id": "chatcmpl-tools", "object": "chat.completion.chunk", "created": 7, "model": model}

    def delta(d, finish=None):
        return base | {"choices": [{"index": 0, "delta": d, "finish_reason": finish}]}

    chunks = [delta({"role": "assistant", "content": None})]
    for i, call in enumerate(TOOL_CALLS):
        args = call["function"]["arguments"]
        head = {"index": i, "id": call["id"], "type": "function"}
        chunks.append(
            delta({"tool_calls": [head | {"function": {"name": "get_weather", "arguments": ""}}]})
        )
        for piece in (args[:5], args[5:11], args[11:]):
            chunks.append(delta({"tool_calls": [{"index": i, "function": {"arguments": piece}}]}))
    chunks.append(delta({}, "tool_calls"))
    chunks.append(
        base
        | {"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13}}
    )
    chunks.append("[DONE]")
    return chunks


def test_non_stream_is_the_upstream_answer(client, upstream):
    scripted = openai_completion("Hello there!", model="gpt-4o-mini-2024-07-18")
    upstream.script(Reply(json=scripted))
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=_user())
    answer = json.loads(raw.text)
    assert set(answer.pop("engram")) == {"credits_charged", "request_id"}  # Engram's one addition
    assert answer == scripted
    completion = raw.parse()
    assert completion.choices[0].message.content == "Hello there!"
    assert completion.usage.total_tokens == 18
    assert upstream.last.path == "/v1/chat/completions"
    assert upstream.last.headers["authorization"] == "Bearer sk-upstream-test"


def test_stream_is_relayed_chunk_for_chunk(client, upstream):
    scripted = openai_stream(["Hel", "lo", " wor", "ld"])
    upstream.script(Reply(stream=scripted))
    stream = client.chat.completions.create(model="gpt-4o-mini", messages=_user(), stream=True)
    received = [chunk.to_dict() for chunk in stream]
    engram = received[-1].pop("engram")  # Engram's one addition, on the finishing chunk
    assert set(engram) == {"credits_charged", "request_id"}
    expected = [c for c in scripted if c != "[DONE]" and c["choices"]]  # no usage: not asked
    assert received == expected
    assert received[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in received)
    assert text == "Hello world"
    # Engram asked the upstream for usage anyway, to account tokens
    assert upstream.last.body["stream_options"] == {"include_usage": True}


def test_include_usage_gives_one_final_usage_chunk(client, upstream):
    upstream.script(Reply(stream=openai_stream(["a", "b"])))
    stream = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=_user(),
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    with_usage = [c for c in chunks if c.usage is not None]
    assert len(with_usage) == 1 and with_usage[0] is chunks[-1]
    assert chunks[-1].choices == [] and chunks[-1].model_extra["engram"]["request_id"]
    assert chunks[-1].usage.completion_tokens == 2 and chunks[-1].usage.total_tokens == 7


def test_no_usage_chunk_when_not_asked(engram_server, owner, upstream):
    upstream.script(Reply(stream=openai_stream(["a", "b"])))
    import httpx

    with httpx.stream(
        "POST",
        engram_server.url + "/v1/chat/completions",
        headers={"Authorization": f"Bearer {owner[1]}"},
        json={"model": "gpt-4o-mini", "messages": _user(), "stream": True},
    ) as resp:
        frames = [line[6:] for line in resp.iter_lines() if line.startswith("data: ")]
    assert frames[-1] == "[DONE]"
    payloads = [json.loads(f) for f in frames[:-1]]
    assert all("usage" not in p for p in payloads)
    assert all(p["choices"] for p in payloads) and "engram" in payloads[-1]


def test_tool_calls_non_streamed(client, upstream):
    upstream.script(Reply(json=openai_completion(tool_calls=TOOL_CALLS)))
    completion = client.chat.completions.create(
        model="gpt-4o-mini", messages=_user("Weather?"), tools=TOOLS, tool_choice="auto"
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert [c.model_dump() for c in choice.message.tool_calls] == TOOL_CALLS
    assert upstream.last.body["tools"] == TOOLS and upstream.last.body["tool_choice"] == "auto"


def test_tool_calls_streamed_reassemble(client, upstream):
    upstream.script(Reply(stream=tool_stream()))
    with client.chat.completions.stream(
        model="gpt-4o-mini", messages=_user("Weather?"), tools=TOOLS
    ) as stream:
        for _ in stream:
            pass
        final = stream.get_final_completion()
    calls = final.choices[0].message.tool_calls
    assert [(c.id, c.function.name, c.function.arguments) for c in calls] == [
        (c["id"], c["function"]["name"], c["function"]["arguments"]) for c in TOOL_CALLS
    ]
    assert final.choices[0].finish_reason == "tool_calls"


def test_n_2(client, upstream):
    upstream.script(Reply(json=openai_completion("same", n=2)))
    completion = client.chat.completions.create(model="gpt-4o-mini", messages=_user(), n=2)
    assert [c.index for c in completion.choices] == [0, 1]
    assert upstream.last.body["n"] == 2


def test_json_schema_passes_through(client, upstream):
    response_format = {
        "type": "json_schema",
        "json_schema": {
            "name": "person",
            "strict": True,
            "schema": {
                "type": "object",
                "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
                "required": ["name", "age"],
                "additionalProperties": False,
            },
        },
    }
    upstream.script(Reply(json=openai_completion('{"name": "Ada", "age": 36}')))
    completion = client.chat.completions.create(
        model="gpt-4o-mini", messages=_user(), response_format=response_format
    )
    assert json.loads(completion.choices[0].message.content) == {"name": "Ada", "age": 36}
    assert upstream.last.body["response_format"] == response_format


EVERYTHING = {
    "model": "gpt-4o-mini",
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "developer", "content": [{"type": "text", "text": "Answer in English."}]},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is in this image?"},
                {
                    "type": "image_url",
                    "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"},
                },
            ],
        },
        {"role": "assistant", "content": None, "tool_calls": TOOL_CALLS[:1]},
        {"role": "tool", "tool_call_id": "call_1", "content": "Sunny, 21°C"},
        {"role": "function", "name": "legacy_fn", "content": "42"},
        {"role": "user", "content": "Thanks!", "name": "alice"},
    ],
    "temperature": 0.3,
    "top_p": 0.9,
    "n": 1,
    "stop": ["END", "STOP"],
    "max_tokens": 50,
    "max_completion_tokens": 60,
    "presence_penalty": 0.5,
    "frequency_penalty": -0.5,
    "logit_bias": {"50256": -100},
    "logprobs": True,
    "top_logprobs": 2,
    "seed": 42,
    "response_format": {"type": "json_object"},
    "tools": TOOLS,
    "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
    "parallel_tool_calls": False,
    "user": "alice",
    "metadata": {"request_id": "client-req-1", "team": "search"},
    "reasoning_effort": "low",
    "service_tier": "default",
}
UNKNOWN = {"some_future_field": {"nested": [1, 2.5, None]}, "another_one": True}


def test_every_parameter_and_unknown_fields_reach_the_upstream_unchanged(client, upstream):
    params = {k: v for k, v in EVERYTHING.items()}
    client.chat.completions.create(**params, extra_body=UNKNOWN)
    assert upstream.last.body == EVERYTHING | UNKNOWN


def test_every_parameter_streamed(client, upstream):
    params = dict(EVERYTHING)
    stream = client.chat.completions.create(
        **params, stream=True, stream_options={"include_usage": False}, extra_body=UNKNOWN
    )
    list(stream)
    sent = dict(upstream.last.body)
    assert sent.pop("stream_options") == {"include_usage": True}  # Engram always asks
    assert sent == EVERYTHING | UNKNOWN | {"stream": True}


def test_engram_owned_session_id_is_removed(client, upstream):
    client.chat.completions.create(
        model="gpt-4o-mini", messages=_user(), extra_body={"session_id": "s-1", "x_other": 1}
    )
    assert "session_id" not in upstream.last.body
    assert upstream.last.body["x_other"] == 1


def test_400_is_bad_request_error_naming_param(client, upstream):
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="gpt-4o-mini", messages=_user(), temperature=2.5)
    assert info.value.status_code == 400
    assert info.value.param == "temperature"
    assert info.value.type == "invalid_request_error"
    assert upstream.chat_requests() == []


def test_401_is_authentication_error(engram_server, upstream):
    sdk = openai.OpenAI(
        base_url=engram_server.url + "/v1", api_key="sk-wrong-key-0000000000000", max_retries=0
    )
    with pytest.raises(openai.AuthenticationError) as info:
        sdk.chat.completions.create(model="gpt-4o-mini", messages=_user())
    assert info.value.status_code == 401 and info.value.code == "invalid_api_key"


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("status", [401, 403])
def test_upstream_refusing_engrams_key_is_502_not_the_clients_401(client, upstream, status, stream):
    """The provider refused Engram's key, not the client's: a 401 relayed made the SDK raise
    AuthenticationError (apps sign their user out), and OpenAI's message quotes the provider
    key's last characters."""
    upstream.script(
        Reply(
            status=status,
            json={
                "error": {
                    "message": "Incorrect API key provided: sk-proj-****abcd.",
                    "type": "invalid_request_error",
                    "code": "invalid_api_key",
                }
            },
        )
    )
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(model="gpt-4o-mini", messages=_user(), stream=stream)
    assert info.value.status_code == 502
    assert info.value.code == "upstream_credential_refused"
    assert "OPENAI_API_KEY" in info.value.message
    assert "abcd" not in info.value.message and "sk-proj" not in info.value.response.text


@pytest.mark.parametrize("stream", [False, True])
def test_an_sdk_does_not_retry_a_refused_provider_key(engram_server, owner, upstream, stream):
    """The OpenAI SDKs retry a 502 twice by default: each retry sent the refused key to the
    provider again and tripled the client's wait, for an answer only the operator can change.
    `x-should-retry: false` stops them, as for `insufficient_quota`."""
    refused = {"error": {"message": "Incorrect API key provided.", "code": "invalid_api_key"}}
    upstream.script(Reply(status=401, json=refused))  # a retry would get the default echo
    sdk = openai.OpenAI(base_url=engram_server.url + "/v1", api_key=owner[1], timeout=20)
    with pytest.raises(openai.InternalServerError) as info:
        sdk.chat.completions.create(model="gpt-4o-mini", messages=_user(), stream=stream)
    assert info.value.code == "upstream_credential_refused"
    assert info.value.response.headers["x-should-retry"] == "false"
    assert len(upstream.chat_requests()) == 1


def test_404_is_not_found_error(client, upstream):
    upstream.script(
        Reply(
            status=404,
            json={
                "error": {
                    "message": "The model `gpt-nope` does not exist.",
                    "type": "invalid_request_error",
                    "param": None,
                    "code": "model_not_found",
                }
            },
        )
    )
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="gpt-nope", messages=_user())
    assert info.value.code == "model_not_found"
    assert "gpt-nope" in info.value.message


def test_429_is_rate_limit_error_with_retry_after(client, upstream, settings):
    settings.ENGRAM_UPSTREAM_RETRIES = 1
    limited = Reply(
        status=429,
        headers={"retry-after": "0"},
        json={
            "error": {
                "message": "Rate limit reached.",
                "type": "requests",
                "code": "rate_limit_exceeded",
            }
        },
    )
    upstream.script(limited, limited)
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model="gpt-4o-mini", messages=_user())
    assert info.value.response.headers["retry-after"] == "0"
    assert info.value.body["message"] == "Rate limit reached."
    assert len(upstream.chat_requests()) == 2  # retried once, honouring retry-after


def test_502_is_internal_server_error(client, upstream, settings):
    settings.ENGRAM_UPSTREAM_RETRIES = 0
    upstream.script(Reply(status=500, json={"error": {"message": "boom", "type": "server_error"}}))
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(model="gpt-4o-mini", messages=_user())
    assert info.value.status_code == 502
    assert "500" in info.value.message and "boom" in info.value.message


def test_request_id_is_exposed_as__request_id(client, upstream):
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=_user())
    completion = raw.parse()
    assert completion._request_id == raw.headers["x-request-id"]
    assert completion._request_id.startswith("req_")
    mine = client.chat.completions.create(
        model="gpt-4o-mini", messages=_user(), extra_headers={"x-request-id": "my-trace-123"}
    )
    assert mine._request_id == "my-trace-123"


def test_stream_exposes_request_id(client, upstream):
    stream = client.chat.completions.create(model="gpt-4o-mini", messages=_user(), stream=True)
    assert stream.response.headers["x-request-id"].startswith("req_")
    list(stream)


def test_an_assistant_turn_given_as_its_audio_id_goes_through(client, upstream):
    """OpenAI's multi-turn audio sends a previous answer back as `{"role": "assistant",
    "audio": {"id": ...}}`, without content: that was a 400 missing `content`."""
    messages = [
        {"role": "user", "content": "Say hi"},
        {"role": "assistant", "audio": {"id": "audio_abc123"}},
        {"role": "user", "content": "Again"},
    ]
    client.chat.completions.create(model="gpt-4o-audio-preview", messages=messages)
    assert upstream.last.body["messages"] == messages
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model="gpt-4o-audio-preview",
            messages=[{"role": "user", "content": "x"}, {"role": "assistant", "audio": {}}],
        )
    assert info.value.param == "messages[1].audio.id"


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("model", ["gpt-4o-mini", "claude-3-5-sonnet-latest"])
def test_an_upstream_redirect_is_a_502_naming_the_base_url(client, upstream, model, stream):
    """Redirects are not followed (the body, key and all, would go where the upstream says),
    but a 3xx was taken for success: its body came back as a 200 "completion" without choices
    (an empty answer from Claude), or a stream said 200 and then broke."""
    moved = Reply(
        status=301,
        headers={"location": "https://llm.example.com/v1/chat/completions"},
        json={"moved": True},
    )
    upstream.script(moved)
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(model=model, messages=_user(), stream=stream)
    assert info.value.status_code == 502 and info.value.code == "upstream_redirect"
    setting = "ANTHROPIC_BASE_URL" if model.startswith("claude") else "OPENAI_BASE_URL"
    assert setting in info.value.message and "301" in info.value.message
    assert len(upstream.chat_requests()) == 1  # not retried: only the operator can fix it


@pytest.mark.parametrize("stream", [False, True])
def test_the_providers_quota_is_a_502_for_the_operator_not_the_clients_budget(
    client, upstream, settings, stream
):
    """OpenAI's 429 insufficient_quota is about the deployment's OpenAI account: relayed, the
    client read it as its own Engram budget spent (Engram's code for that), and Engram and the
    SDK retried it, each time in vain."""
    settings.ENGRAM_UPSTREAM_RETRIES = 2
    settings.ENGRAM_UPSTREAM_RETRY_BACKOFF = 0.01
    quota = {
        "error": {
            "message": "You exceeded your current quota, please check your plan and billing.",
            "type": "insufficient_quota",
            "param": None,
            "code": "insufficient_quota",
        }
    }
    upstream.script(*[Reply(status=429, json=quota)] * 3)
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(model="gpt-4o-mini", messages=_user(), stream=stream)
    assert info.value.status_code == 502 and info.value.code == "upstream_quota_exceeded"
    assert "OPENAI_API_KEY" in info.value.message
    assert info.value.response.headers["x-should-retry"] == "false"
    assert len(upstream.chat_requests()) == 1


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("status", [400, 429, 500])
def test_an_upstream_error_quoting_engrams_provider_key_is_relayed_without_it(
    client, upstream, caplog, status, stream
):
    """Some upstreams (proxies, self-hosted servers) quote the request's Authorization in
    their error message: Engram relayed the message to the client, provider key and all (the
    deployment's OPENAI_API_KEY to every tenant), and logged it (out of quota)."""
    from django.conf import settings

    key = settings.OPENAI_API_KEY
    code = "insufficient_quota" if status == 429 else None
    echo = {"error": {"message": f"bad request from Bearer {key}", "type": "x", "code": code}}
    upstream.script(*[Reply(status=status, json=echo)] * 5)  # and the retries'
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model="gpt-4o-mini", messages=_user(), stream=stream)
    # the upstream's words stay: relayed, or logged for the operator (out of quota)
    assert "bad request from Bearer ***" in (caplog.text if code else info.value.response.text)
    assert key not in info.value.response.text
    assert key not in caplog.text


def test_an_error_under_status_200_quoting_engrams_provider_key_is_relayed_without_it(
    client, upstream
):
    """A proxy's error page under status 200 quoting the request's Authorization: the
    provider key reached the client in the 502's message."""
    from django.conf import settings

    key = settings.OPENAI_API_KEY
    upstream.script(Reply(json={"error": {"message": f"denied for Bearer {key}", "type": "x"}}))
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model="gpt-4o-mini", messages=_user())
    assert info.value.status_code == 502 and "denied for Bearer ***" in info.value.message
    assert key not in info.value.response.text


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("status", [429, 503])
def test_an_upstreams_x_should_retry_false_is_obeyed_and_passed_on(
    engram_server, owner, upstream, settings, status, stream
):
    """OpenAI's servers say `x-should-retry: false` where a retry cannot help, and the SDKs obey
    it: Engram dropped the header, retried the refusal itself, and the client's SDK retried the
    502 or 429 again (nine requests for one refusal)."""
    settings.ENGRAM_UPSTREAM_RETRIES = 2
    settings.ENGRAM_UPSTREAM_RETRY_BACKOFF = 0.01
    refusal = Reply(
        status=status,
        headers={"x-should-retry": "false"},
        json={"error": {"message": "Do not ask again.", "type": "server_error"}},
    )
    upstream.script(*[refusal] * 9)
    sdk = openai.OpenAI(base_url=engram_server.url + "/v1", api_key=owner[1], timeout=20)
    with pytest.raises(openai.APIStatusError) as info:
        sdk.chat.completions.create(model="gpt-4o-mini", messages=_user(), stream=stream)
    assert info.value.status_code == (502 if status >= 500 else status)
    assert info.value.response.headers["x-should-retry"] == "false"
    assert len(upstream.chat_requests()) == 1
