"""Anthropic translation, tested against the loopback server speaking the Messages API, with the
official openai package as Engram's client."""

import json
import re

import openai
import pytest

from tests.upstream import Reply, anthropic_message, anthropic_stream, openai_completion

MODEL = "claude-3-5-sonnet-latest"
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]


@pytest.fixture
def client(engram_server, owner, upstream):
    with openai.OpenAI(base_url=engram_server.url + "/v1", api_key=owner[1], max_retries=0) as sdk:
        yield sdk


def test_non_stream_translation_both_ways(client, upstream):
    upstream.script(Reply(json=anthropic_message("Bonjour!", model=MODEL)))
    completion = client.chat.completions.create(
        model=MODEL,
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": "Answer in French."},
            {"role": "user", "content": "Hello"},
        ],
        temperature=1.7,
        top_p=0.9,
        stop="END",
        max_completion_tokens=300,
        user="alice",
    )
    sent = upstream.last
    assert sent.path == "/v1/messages"
    assert sent.headers["x-api-key"] == "sk-ant-upstream-test"
    assert sent.headers["anthropic-version"] == "2023-06-01"
    assert sent.body == {
        "model": MODEL,
        "system": "Be brief.\n\nAnswer in French.",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Hello"}]}],
        "max_tokens": 300,
        "temperature": 1.0,
        "top_p": 0.9,
        "stop_sequences": ["END"],
        "metadata": {"user_id": sent.body["metadata"]["user_id"]},  # opaque: test below
    }
    assert completion.object == "chat.completion" and completion.model == MODEL
    choice = completion.choices[0]
    assert choice.message.role == "assistant" and choice.message.content == "Bonjour!"
    assert choice.finish_reason == "stop"
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (12, 6)
    assert completion.usage.total_tokens == 18


def test_the_user_reaches_anthropic_as_an_opaque_id(client, upstream):
    """Anthropic's metadata.user_id must be opaque, and it refuses one that looks like an email
    address (400): with the common `user` "alice@example.com" every request failed."""
    sent = []
    for user in ("alice@example.com", "alice@example.com", "bob@example.com"):
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "x"}], user=user
        )
        sent.append(upstream.last.body["metadata"]["user_id"])
    assert sent[0] == sent[1] != sent[2]
    assert all(re.fullmatch(r"[0-9a-f]{64}", user_id) for user_id in sent)


@pytest.mark.parametrize(
    "messages",
    [
        [{"role": "system", "content": "You write haiku."}],
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": " "}],
    ],
)
def test_a_request_without_a_turn_claude_can_take_is_a_clear_400(client, upstream, messages):
    """OpenAI answers a system message alone; Anthropic refuses a request without a user or
    assistant turn with "messages: at least one message is required", which named nothing the
    client could find (it had sent messages) and cost an upstream call."""
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=MODEL, messages=messages)
    assert info.value.param == "messages" and "user or assistant message" in info.value.message
    assert upstream.chat_requests() == []


def test_top_p_of_1_is_not_sent_beside_a_temperature(client, upstream):
    """top_p 1 (the default many clients send) restricts nothing, and Claude's newer models
    refuse temperature and top_p together (400): the request failed for a no-op."""
    client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "x"}], temperature=0.7, top_p=1
    )
    assert "top_p" not in upstream.last.body and upstream.last.body["temperature"] == 0.7


def test_images_and_default_max_tokens(client, upstream, settings):
    client.chat.completions.create(
        model=MODEL,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Compare"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
                ],
            }
        ],
    )
    body = upstream.last.body
    assert body["max_tokens"] == settings.ENGRAM_ANTHROPIC_MAX_TOKENS
    assert body["messages"][0]["content"] == [
        {"type": "text", "text": "Compare"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
    ]


def test_tools_tool_calls_and_results(client, upstream):
    content = [
        {"type": "text", "text": "Let me check."},
        {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
    ]
    upstream.script(Reply(json=anthropic_message(content=content, stop_reason="tool_use")))
    completion = client.chat.completions.create(
        model=MODEL,
        messages=[
            {"role": "user", "content": "Weather in Berlin, then Paris?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "toolu_0",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Berlin"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "toolu_0", "content": "Sunny"},
        ],
        tools=TOOLS,
        tool_choice="required",
        parallel_tool_calls=False,
    )
    body = upstream.last.body
    assert body["tools"] == [
        {
            "name": "get_weather",
            "description": "Weather for a city",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
        }
    ]
    assert body["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    assert body["messages"][1] == {
        "role": "assistant",
        "content": [
            {
                "type": "tool_use",
                "id": "toolu_0",
                "name": "get_weather",
                "input": {"city": "Berlin"},
            }
        ],
    }
    assert body["messages"][2] == {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": "toolu_0", "content": "Sunny"}],
    }
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "Let me check."
    call = choice.message.tool_calls[0]
    assert (call.id, call.type, call.function.name) == ("toolu_1", "function", "get_weather")
    assert json.loads(call.function.arguments) == {"city": "Paris"}


def test_cache_control_breakpoints_reach_claude(client, upstream):
    """Anthropic's prompt caching as clients of OpenAI's shape mark it (OpenRouter's, LiteLLM's,
    Portkey's form): `cache_control` on a content part, a message or a tool, and the request's
    own. Left out, Claude cached nothing, and every turn paid its long prompt in full."""
    ephemeral = {"type": "ephemeral"}
    hour = {"type": "ephemeral", "ttl": "1h"}
    upstream.script(Reply(json=anthropic_message("Done.", model=MODEL)))
    tools = [{**TOOLS[0], "cache_control": hour}]
    call = {"id": "toolu_0", "type": "function"}
    call["function"] = {"name": "get_weather", "arguments": '{"city": "Berlin"}'}
    client.chat.completions.create(
        model=MODEL,
        messages=[
            {
                "role": "system",
                "content": [
                    {"type": "text", "text": "You are a weather bot."},
                    {"type": "text", "text": "A long manual.", "cache_control": hour},
                ],
            },
            {"role": "developer", "content": "Be brief."},
            {
                "role": "user",
                "content": [{"type": "text", "text": "Weather?", "cache_control": ephemeral}],
            },
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {
                "role": "tool",
                "tool_call_id": "toolu_0",
                "content": "Sunny",
                "cache_control": ephemeral,
            },
            {"role": "user", "content": "Thanks!"},
        ],
        tools=tools,
    )
    body = upstream.last.body
    assert body["system"] == [
        {"type": "text", "text": "You are a weather bot.\n\nA long manual.", "cache_control": hour},
        {"type": "text", "text": "Be brief."},
    ]
    assert body["tools"][0]["cache_control"] == hour
    assert body["messages"][0]["content"] == [
        {"type": "text", "text": "Weather?", "cache_control": ephemeral}
    ]
    assert body["messages"][2]["content"] == [
        {
            "type": "tool_result",
            "tool_use_id": "toolu_0",
            "content": "Sunny",
            "cache_control": ephemeral,
        },
        {"type": "text", "text": "Thanks!"},
    ]
    # The request's automatic caching (Anthropic's own field, through the SDK's extra_body).
    upstream.script(Reply(json=anthropic_message("Done.", model=MODEL)))
    client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Hi"}],
        extra_body={"cache_control": ephemeral},
    )
    assert upstream.last.body["cache_control"] == ephemeral
    assert upstream.last.body["messages"][0]["content"] == [{"type": "text", "text": "Hi"}]


def test_tool_call_ids_of_another_provider_reach_claude_in_its_pattern(client, upstream):
    """A conversation whose tool calls another provider made (Kimi's "functions.name:0", a
    proxy's "call_x|fc_y") went on with Claude: Anthropic refuses ids out of ^[a-zA-Z0-9_-]+$
    (400), so the whole history failed on every turn. Each id goes in that pattern, the same for
    the call and its result, and two ids that differ only in other characters stay apart."""
    ids = ["functions.get_weather:0", "functions.get_weather:1", "call_9|fc_1"]
    calls = [
        {
            "id": call_id,
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'},
        }
        for call_id in ids
    ]
    results = [{"role": "tool", "tool_call_id": call_id, "content": "Sunny"} for call_id in ids]
    completion = client.chat.completions.create(
        model=MODEL,
        messages=[
            {"role": "user", "content": "Weather?"},
            {"role": "assistant", "content": None, "tool_calls": calls},
            *results,
        ],
        tools=TOOLS,
    )
    assert completion.choices[0].message.content.startswith("echo: ")
    assistant, answers = upstream.last.body["messages"][1:]
    used = [block["id"] for block in assistant["content"]]
    assert used == [block["tool_use_id"] for block in answers["content"]]
    assert len(set(used)) == 3 and all(re.fullmatch(r"[a-zA-Z0-9_-]+", i) for i in used)
    assert used[0].startswith("functions_get_weather_0")


def test_tool_arguments_keep_their_characters_as_openai_and_the_stream_give_them(client, upstream):
    """The arguments of a non-streamed answer came ASCII-escaped ("Z\\u00fcrich"), where OpenAI's
    and a streamed answer's (Anthropic's own JSON text) have the characters."""
    content = [
        {
            "type": "tool_use",
            "id": "toolu_1",
            "name": "get_weather",
            "input": {"city": "Zürich 東京"},
        }
    ]
    upstream.script(Reply(json=anthropic_message(content=content, stop_reason="tool_use")))
    completion = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Weather?"}], tools=TOOLS
    )
    arguments = completion.choices[0].message.tool_calls[0].function.arguments
    assert "Zürich 東京" in arguments and json.loads(arguments) == {"city": "Zürich 東京"}


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("auto", {"type": "auto"}),
        ("none", {"type": "none"}),
        (
            {"type": "function", "function": {"name": "get_weather"}},
            {"type": "tool", "name": "get_weather"},
        ),
    ],
)
def test_tool_choice(client, upstream, choice, expected):
    client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "x"}], tools=TOOLS, tool_choice=choice
    )
    assert upstream.last.body["tool_choice"] == expected


@pytest.mark.parametrize(
    ("reason", "finish"),
    [("max_tokens", "length"), ("stop_sequence", "stop"), ("refusal", "content_filter")],
)
def test_stop_reasons(client, upstream, reason, finish):
    upstream.script(Reply(json=anthropic_message("x", stop_reason=reason)))
    completion = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "x"}]
    )
    assert completion.choices[0].finish_reason == finish


def test_stream(client, upstream):
    upstream.script(Reply(stream=anthropic_stream(["Hel", "lo", "!"], model=MODEL)))
    chunks = list(
        client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "Hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert upstream.last.body["stream"] is True
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello!"
    finishes = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finishes == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage.prompt_tokens == 12
    assert chunks[-1].usage.completion_tokens == 3
    assert all(
        c.id == "chatcmpl-msg_upstream" and c.object == "chat.completion.chunk" for c in chunks
    )


def test_stream_without_usage_when_not_asked(client, upstream):
    upstream.script(Reply(stream=anthropic_stream(["a"], model=MODEL)))
    chunks = list(
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Hi"}], stream=True
        )
    )
    assert all(c.usage is None and c.choices for c in chunks)


def _tool_stream():
    events = anthropic_stream(["Checking."], model=MODEL)
    head, tail = events[:-2], events[-2:]  # before message_delta / message_stop
    block = {"type": "tool_use", "id": "toolu_9", "name": "get_weather", "input": {}}
    head += [
        (
            "content_block_start",
            {"type": "content_block_start", "index": 1, "content_block": block},
        ),
        (
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 1,
                "delta": {"type": "input_json_delta", "partial_json": '{"ci'},
            },
        ),
        ("ping", {"type": "ping"}),
        (
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 1,
                "delta": {"type": "input_json_delta", "partial_json": 'ty": "Rome"}'},
            },
        ),
        ("content_block_stop", {"type": "content_block_stop", "index": 1}),
    ]
    tail[0][1]["delta"]["stop_reason"] = "tool_use"
    return head + tail


def test_stream_tools(client, upstream):
    upstream.script(Reply(stream=_tool_stream()))
    with client.chat.completions.stream(
        model=MODEL, messages=[{"role": "user", "content": "Weather in Rome?"}], tools=TOOLS
    ) as stream:
        for _ in stream:
            pass
        final = stream.get_final_completion()
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content == "Checking."
    call = choice.message.tool_calls[0]
    assert call.id == "toolu_9" and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Rome"}


def test_a_streamed_tool_call_without_arguments_has_an_empty_object(client, upstream):
    """Anthropic streams no input_json_delta with any text for a call without arguments (its
    non-streamed answer says `input: {}`): the client got `arguments: ""`, which is not JSON
    (json.loads fails, as does the SDK's parse of a strict tool), where OpenAI sends "{}"."""
    events = anthropic_stream([], model=MODEL)
    head, tail = events[:-2], events[-2:]
    block = {"type": "tool_use", "id": "toolu_0", "name": "now", "input": {}}
    empty = {"type": "input_json_delta", "partial_json": ""}
    head += [
        (
            "content_block_start",
            {"type": "content_block_start", "index": 1, "content_block": block},
        ),
        ("content_block_delta", {"type": "content_block_delta", "index": 1, "delta": empty}),
        ("content_block_stop", {"type": "content_block_stop", "index": 1}),
    ]
    tail[0][1]["delta"]["stop_reason"] = "tool_use"
    upstream.script(Reply(stream=head + tail))
    tools = [{"type": "function", "function": {"name": "now", "parameters": {"type": "object"}}}]
    with client.chat.completions.stream(
        model=MODEL, messages=[{"role": "user", "content": "Time?"}], tools=tools
    ) as stream:
        for _ in stream:
            pass
        final = stream.get_final_completion()
    [call] = final.choices[0].message.tool_calls
    assert (call.id, call.function.name, call.function.arguments) == ("toolu_0", "now", "{}")


def test_errors_keep_anthropic_messages(client, upstream, settings):
    settings.ENGRAM_UPSTREAM_RETRIES = 0
    upstream.script(
        Reply(
            status=400,
            json={
                "type": "error",
                "error": {"type": "invalid_request_error", "message": "max_tokens: too large"},
            },
        )
    )
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}])
    assert info.value.body["message"] == "max_tokens: too large"
    upstream.script(
        Reply(
            status=529,
            json={"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
        )
    )
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}])
    assert info.value.status_code == 502 and "Overloaded" in info.value.message


def test_a_credit_balance_too_low_is_a_502_for_the_operator_not_the_clients_400(client, upstream):
    """Anthropic answers an account out of credit with 400 invalid_request_error: relayed, the
    client read it as its own request being wrong (BadRequestError)."""
    low = (
        "Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing."
    )
    error = {"type": "error", "error": {"type": "invalid_request_error", "message": low}}
    upstream.script(Reply(status=400, json=error))
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}])
    assert info.value.status_code == 502 and info.value.code == "upstream_quota_exceeded"
    assert "ANTHROPIC_API_KEY" in info.value.message
    assert info.value.response.headers["x-should-retry"] == "false"


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (402, {"type": "billing_error", "message": "There's an issue with your billing."}),
        (
            400,
            {
                "type": "invalid_request_error",
                "message": "You have reached your specified API usage limits. You will regain "
                "access on 2026-04-01 at 00:00 UTC.",
            },
        ),
    ],
)
def test_the_operators_billing_or_spend_limit_is_a_502_not_the_clients_error(
    client, upstream, status, error
):
    """Anthropic's 402 billing_error and its 400 for an organization's spend limit are about the
    account of Engram's provider key: relayed, the client read them as its own payment failing
    (a 402) or its own request being wrong (BadRequestError)."""
    upstream.script(Reply(status=status, json={"type": "error", "error": error}))
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}])
    assert info.value.status_code == 502 and info.value.code == "upstream_quota_exceeded"
    assert "ANTHROPIC_API_KEY" in info.value.message
    assert info.value.response.headers["x-should-retry"] == "false"
    assert len(upstream.chat_requests()) == 1  # not retried


@pytest.mark.parametrize(
    "message",
    [
        "prompt is too long: 205351 tokens > 200000 maximum",
        "input length and `max_tokens` exceed context limit: 188240 + 21333 > 200000, decrease "
        "input length or `max_tokens` and try again",
    ],
)
def test_a_request_past_claudes_window_is_context_length_exceeded(client, upstream, message):
    """Engram's own check and OpenAI answer a request past the window with the code
    context_length_exceeded, which clients look for to trim the history; Anthropic's 400 for it
    has no code, so the same condition came with code null when Anthropic found it."""
    error = {"type": "error", "error": {"type": "invalid_request_error", "message": message}}
    upstream.script(Reply(status=400, json=error))
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}])
    assert (info.value.code, info.value.param) == ("context_length_exceeded", "messages")
    assert info.value.response.json()["error"]["message"] == message


@pytest.mark.parametrize(
    ("status", "error", "code", "param"),
    [
        (
            404,
            {"type": "not_found_error", "message": "model: claude-x"},
            "model_not_found",
            "model",
        ),
        (429, {"type": "rate_limit_error", "message": "Slow down."}, "rate_limit_exceeded", None),
    ],
)
def test_an_unknown_model_or_a_rate_limit_has_openais_code(
    client, upstream, settings, status, error, code, param
):
    """Anthropic's errors have no code: an unknown model and a rate limit came with code null,
    where OpenAI (and Engram's own limits) give model_not_found and rate_limit_exceeded."""
    settings.ENGRAM_UPSTREAM_RETRIES = 0
    upstream.script(
        Reply(status=status, json={"type": "error", "error": error}, headers={"retry-after": "3"})
    )
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}])
    assert (info.value.status_code, info.value.code, info.value.param) == (status, code, param)
    assert info.value.response.json()["error"]["message"] == error["message"]
    assert info.value.response.headers["retry-after"] == "3"


def test_stream_error_event_becomes_error_frame(client, upstream):
    events = anthropic_stream(["a"], model=MODEL)[:3] + [
        ("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    ]
    upstream.script(Reply(stream=events))
    with pytest.raises(openai.APIError) as info:
        list(
            client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "x"}], stream=True
            )
        )
    assert "Overloaded" in str(info.value)


OVERLOADED = (
    "error",
    {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
)


def test_an_overload_as_the_streams_first_event_is_retried(client, upstream, settings):
    """Anthropic answers an overload with status 200 and an error as the stream's first event
    (before message_start): the client got a 200 and an error frame, retried by neither Engram
    nor its SDK (they retry statuses). Nothing was answered yet: it is retried as a 529 is."""
    settings.ENGRAM_UPSTREAM_RETRY_BACKOFF = 0.01
    upstream.script(Reply(stream=[("ping", {"type": "ping"}), OVERLOADED]))
    chunks = list(
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Hi"}], stream=True
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "echo: Hi"
    assert len(upstream.chat_requests()) == 2


def test_an_overload_right_after_message_start_is_retried(client, upstream, settings):
    """Anthropic's overload may come after message_start (which says only the message's id,
    model and input tokens): nothing was answered yet, but the client got a 200 and an error
    frame, which neither Engram nor its SDK retries."""
    settings.ENGRAM_UPSTREAM_RETRY_BACKOFF = 0.01
    started = anthropic_stream(["unused"], model=MODEL)[0]
    upstream.script(Reply(stream=[started, ("ping", {"type": "ping"}), OVERLOADED]))
    chunks = list(
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Hi"}], stream=True
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "echo: Hi"
    assert len(upstream.chat_requests()) == 2


def test_an_overload_as_the_streams_first_event_is_a_status_the_sdk_retries(
    engram_server, owner, upstream, settings
):
    settings.ENGRAM_UPSTREAM_RETRIES = 0
    upstream.script(Reply(stream=[OVERLOADED]))
    with openai.OpenAI(base_url=engram_server.url + "/v1", api_key=owner[1], max_retries=0) as sdk:
        with pytest.raises(openai.InternalServerError) as info:
            sdk.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "x"}], stream=True
            )
        assert info.value.status_code == 502 and "Overloaded" in info.value.message
        upstream.script(Reply(stream=[OVERLOADED]))
        with sdk.with_options(max_retries=1).chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Hi"}], stream=True
        ) as stream:
            text = "".join(c.choices[0].delta.content or "" for c in stream)
    assert text == "echo: Hi" and len(upstream.chat_requests()) == 3


def test_a_refusal_as_the_streams_first_event_keeps_its_status(client, upstream):
    error = {"type": "invalid_request_error", "message": "max_tokens: too large"}
    upstream.script(Reply(stream=[("error", {"type": "error", "error": error})]))
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "x"}], stream=True
        )
    assert info.value.response.json()["error"]["message"] == "max_tokens: too large"
    assert len(upstream.chat_requests()) == 1


def test_n_above_1_is_rejected(client, upstream):
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "x"}], n=2
        )
    assert info.value.param == "n"
    assert upstream.chat_requests() == []


@pytest.mark.parametrize(
    "event",
    [
        ("message_start", [1, 2]),  # JSON, not an event object
        ("message_start", {"type": "message_start", "message": [1]}),
        ("content_block_start", {"type": "content_block_start", "content_block": "text"}),
    ],
)
def test_a_stream_event_of_the_wrong_shape_is_an_error_frame_not_a_500(client, upstream, event):
    upstream.script(Reply(stream=[event]))
    with pytest.raises(openai.APIError) as info:
        list(
            client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "x"}], stream=True
            )
        )
    assert "Internal server error" not in str(info.value)
    assert info.value.type == "upstream_error"


@pytest.mark.parametrize(
    "reply",
    [
        {"type": "message", "content": "Hello", "stop_reason": "end_turn"},  # not a list
        {"type": "message", "content": ["Hello"]},  # blocks not objects
        {"type": "message", "content": [{"type": "text", "text": ["Hello"]}]},
    ],
)
def test_a_reply_of_the_wrong_shape_is_a_502_not_a_500(client, upstream, reply):
    upstream.script(Reply(json=reply))
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}])
    assert info.value.status_code == 502
    assert (info.value.type, info.value.code) == ("upstream_error", "upstream_bad_reply")


def test_an_error_under_status_200_is_a_502_not_an_empty_answer(client, upstream):
    """A proxy in front of Anthropic answering its error with status 200: the client got a
    "success" with no text (id "chatcmpl-", no usage), its message lost."""
    error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    upstream.script(Reply(json=error))
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}])
    assert info.value.status_code == 502 and info.value.type == "upstream_error"
    assert "Overloaded" in info.value.message


def test_an_error_under_status_200_quoting_the_provider_key_is_relayed_without_it(client, upstream):
    """The proxy's page may quote the request's x-api-key: it reached the client."""
    from django.conf import settings

    key = settings.ANTHROPIC_API_KEY
    error = {"type": "error", "error": {"type": "x", "message": f"no access for {key}"}}
    upstream.script(Reply(json=error))
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}])
    assert info.value.status_code == 502 and "no access for ***" in info.value.message
    assert key not in info.value.response.text


def test_a_stop_reason_or_usage_of_the_wrong_type_is_no_500(client, upstream):
    reply = anthropic_message("Hi") | {"stop_reason": ["end_turn"], "usage": "12 tokens"}
    upstream.script(Reply(json=reply))
    completion = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "x"}]
    )
    assert completion.choices[0].message.content == "Hi"
    assert completion.choices[0].finish_reason == "stop"
    # usage not reported: the estimate charged (tests/test_usage_estimate.py)
    assert completion.usage is not None and completion.usage.completion_tokens == 1


def test_token_counts_that_are_not_numbers_are_no_500(client, upstream):
    usage = {"input_tokens": "12", "cache_read_input_tokens": None, "output_tokens": 6}
    upstream.script(Reply(json=anthropic_message("Hi") | {"usage": usage}))
    completion = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "x"}]
    )
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (0, 6)
    events = anthropic_stream(["a"], model=MODEL)
    events[-2][1]["usage"] = {"output_tokens": "3"}
    upstream.script(Reply(stream=events))
    chunks = list(
        client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "x"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[-1].usage.prompt_tokens == 12 and chunks[-1].usage.completion_tokens == 0


def _stream_with(position: int, **fields):
    events = anthropic_stream(["a"], model=MODEL)
    events[position][1].update(fields)
    return events


@pytest.mark.parametrize(
    "events",
    [
        _stream_with(-2, delta={"stop_reason": ["end_turn"]}),  # message_delta
        _stream_with(2, index=[0], delta={"type": "input_json_delta", "partial_json": "{"}),
    ],
)
def test_stream_fields_of_the_wrong_type_are_not_a_500(client, upstream, events):
    upstream.script(Reply(stream=events))
    chunks = list(
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "x"}], stream=True
        )
    )
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_blank_text_is_left_out_and_a_prefill_loses_its_trailing_whitespace(client, upstream):
    """Anthropic refuses blank text blocks and a last assistant turn ending in whitespace
    (400), where OpenAI answers: a history with an empty turn must not fail every later turn."""
    completion = client.chat.completions.create(
        model=MODEL,
        messages=[
            {"role": "user", "content": ""},
            {"role": "assistant", "content": "  "},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": ""},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                    {"type": "text", "text": " \n"},
                    {"type": "text", "text": "What is it?"},
                ],
            },
            {"role": "assistant", "content": "It is a "},
        ],
    )
    assert completion.choices[0].finish_reason == "stop"
    assert upstream.last.body["messages"] == [
        {
            "role": "user",
            "content": [
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": "image/png", "data": PNG},
                },
                {"type": "text", "text": "What is it?"},
            ],
        },
        {"role": "assistant", "content": [{"type": "text", "text": "It is a"}]},
    ]


@pytest.mark.parametrize(
    ("stop", "expected"),
    [("\n", None), (["\n", "", "END", " \t"], ["END"]), (["END", "STOP"], ["END", "STOP"])],
)
def test_blank_stop_sequences_are_left_out(client, upstream, stop, expected):
    """Anthropic refuses a whitespace-only stop sequence with 400; OpenAI takes stop="\\n"."""
    client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "x"}], stop=stop
    )
    assert upstream.last.body.get("stop_sequences") == expected


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"tools": [*TOOLS, {"type": "custom", "custom": {"name": "grep"}}]}, "tools[1].type"),
        (
            {
                "tools": TOOLS,
                "tool_choice": {
                    "type": "allowed_tools",
                    "allowed_tools": {"mode": "auto", "tools": [TOOLS[0]]},
                },
            },
            "tool_choice.type",
        ),
    ],
)
def test_a_tool_anthropic_has_no_equivalent_for_is_a_400_naming_it(client, upstream, fields, param):
    """It reached Anthropic with a null name, and its 400 named a field the client never sent."""
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "x"}], **fields
        )
    assert info.value.param == param and info.value.code == "unsupported"
    assert upstream.chat_requests() == []


def test_default_max_tokens_leaves_room_beyond_a_thinking_budget(client, upstream, settings):
    """Anthropic refuses max_tokens not above thinking.budget_tokens: the client gave no
    max_tokens, so Engram's default must not make its request invalid."""
    budget = settings.ENGRAM_ANTHROPIC_MAX_TOKENS + 1000
    thinking = {"type": "enabled", "budget_tokens": budget}
    client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "x"}], extra_body={"thinking": thinking}
    )
    body = upstream.last.body
    assert body["thinking"] == thinking
    assert body["max_tokens"] == budget + settings.ENGRAM_ANTHROPIC_MAX_TOKENS
    client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "x"}],
        extra_body={"thinking": {"type": "enabled", "budget_tokens": 1024}},
    )
    assert upstream.last.body["max_tokens"] == settings.ENGRAM_ANTHROPIC_MAX_TOKENS


@pytest.mark.parametrize(
    ("effort", "budget"), [("low", 1024), ("medium", 2048), ("high", 4096), ("minimal", None)]
)
def test_reasoning_effort_is_claudes_thinking_budget(client, upstream, settings, effort, budget):
    """It was left out: Claude answered without thinking, however much the client asked for."""
    client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "x"}], reasoning_effort=effort
    )
    body = upstream.last.body
    if budget is None:
        assert "thinking" not in body
        return
    assert body["thinking"] == {"type": "enabled", "budget_tokens": budget}
    assert body["max_tokens"] > budget


@pytest.mark.parametrize(
    ("asked", "budget"), [(3000, 2999), (1025, 1024), (1024, None), (500, None)]
)
def test_reasoning_effort_beside_a_small_max_completion_tokens_thinks_within_it(
    client, upstream, asked, budget
):
    """OpenAI's max_completion_tokens bounds the reasoning and the answer together: with
    reasoning_effort "high" (a budget of 4,096) and max_completion_tokens 3,000 Anthropic
    refused the request (400 "max_tokens must be greater than thinking.budget_tokens"). The
    budget fits below it, or there is no thinking where Claude's least budget does not fit."""
    client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "x"}],
        reasoning_effort="high",
        max_completion_tokens=asked,
    )
    body = upstream.last.body
    assert body["max_tokens"] == asked
    assert body.get("thinking") == (
        {"type": "enabled", "budget_tokens": budget} if budget else None
    )


def test_reasoning_effort_leaves_the_clients_own_thinking_and_names_what_claude_lacks(
    client, upstream
):
    thinking = {"type": "enabled", "budget_tokens": 3000}
    client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "x"}],
        reasoning_effort="high",
        extra_body={"thinking": thinking},
    )
    assert upstream.last.body["thinking"] == thinking
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "x"}], reasoning_effort="ultra"
        )
    assert info.value.param == "reasoning_effort" and info.value.code == "unsupported"
    # Claude refuses thinking where a tool call is forced: the call goes, without thinking
    client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "x"}],
        reasoning_effort="high",
        tools=TOOLS,
        tool_choice="required",
    )
    assert "thinking" not in upstream.last.body
    assert upstream.last.body["tool_choice"] == {"type": "any"}


def test_reasoning_effort_in_a_tool_loop_whose_history_lost_the_thinking_goes_on(client, upstream):
    """A client that builds the history itself sends the calling turn back without its
    signed thinking: with thinking on, Anthropic refuses the tool results (400)."""
    call = {"id": "toolu_1", "type": "function"}
    call["function"] = {"name": "get_weather", "arguments": '{"city": "Rome"}'}
    messages = [
        {"role": "user", "content": "Weather in Rome?"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "toolu_1", "content": "Sunny"},
    ]
    completion = client.chat.completions.create(
        model=MODEL, messages=messages, tools=TOOLS, reasoning_effort="low"
    )
    assert completion.choices[0].message.content
    assert "thinking" not in upstream.last.body
    client.chat.completions.create(  # a new question in the same loop: thinking again
        model=MODEL,
        messages=[
            *messages,
            {"role": "assistant", "content": "Sunny."},
            {"role": "user", "content": "And Oslo?"},
        ],
        tools=TOOLS,
        reasoning_effort="low",
    )
    assert upstream.last.body["thinking"] == {"type": "enabled", "budget_tokens": 1024}


@pytest.mark.parametrize("mime", ["image/jpg", "image/JPEG", "Image/Jpg"])
def test_a_jpeg_data_url_is_sent_as_image_jpeg(client, upstream, mime):
    """Anthropic takes only image/jpeg, image/png, image/gif and image/webp (400 otherwise)."""
    image = {"type": "image_url", "image_url": {"url": f"data:{mime};base64,{PNG}"}}
    client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": [{"type": "text", "text": "?"}, image]}]
    )
    source = upstream.last.body["messages"][0]["content"][1]["source"]
    assert source == {"type": "base64", "media_type": "image/jpeg", "data": PNG}


@pytest.mark.parametrize(
    ("fields", "param"), [({"logprobs": True}, "logprobs"), ({"top_logprobs": 3}, "top_logprobs")]
)
def test_logprobs_are_refused_not_answered_without(client, upstream, fields, param):
    """Anthropic has no log probabilities: the answer's logprobs were null, which a client
    reading choice.logprobs.content fails on."""
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "x"}], **fields
        )
    assert info.value.param == param and info.value.code == "unsupported"
    assert upstream.chat_requests() == []
    client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "x"}], logprobs=False
    )


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"modalities": ["text", "audio"], "audio": {"voice": "alloy", "format": "wav"}}, "audio"),
        ({"modalities": ["text", "audio"]}, "modalities"),
        ({"logit_bias": {"50256": -100}}, "logit_bias"),
        ({"web_search_options": {}}, "web_search_options"),
        (
            {
                "moderation": {
                    "model": "omni-moderation-latest",
                    "policy": {"output": {"mode": "block"}},
                }
            },
            "moderation",
        ),
    ],
)
def test_what_changes_the_answer_is_refused_not_dropped(client, upstream, fields, param):
    """They were left out of the Anthropic request: an answer without the audio asked for
    (`message.audio` None), with the tokens the client banned, unsearched, or unmoderated."""
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "x"}], **fields
        )
    assert info.value.param == param and info.value.code == "unsupported"
    assert upstream.chat_requests() == []
    client.chat.completions.create(  # what asks for nothing Claude cannot do still goes
        model=MODEL, messages=[{"role": "user", "content": "x"}], modalities=["text"], logit_bias={}
    )
    assert upstream.chat_requests()


def test_an_assistant_turn_given_as_openais_audio_id_is_refused_not_dropped(client, upstream):
    """Only OpenAI knows the audio an id names: the turn reached Claude as nothing at all."""
    messages = [
        {"role": "user", "content": "Say hi"},
        {"role": "assistant", "audio": {"id": "audio_abc123"}},
        {"role": "user", "content": "Again"},
    ]
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=MODEL, messages=messages)
    assert info.value.param == "messages[1].audio" and info.value.code == "unsupported"
    assert upstream.chat_requests() == []


def test_legacy_functions_are_refused_not_dropped(client, upstream):
    """They were left out of the Anthropic request: the model answered as if it had none."""
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "Weather in Rome?"}],
            functions=[TOOLS[0]["function"]],
            function_call="auto",
        )
    assert info.value.param == "functions" and info.value.code == "unsupported"
    assert "tools" in info.value.message
    assert upstream.chat_requests() == []


def test_a_file_part_whose_data_is_not_a_string_is_a_400_not_a_500(client, upstream):
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model=MODEL,
            messages=[
                {"role": "user", "content": [{"type": "file", "file": {"file_data": 12345}}]}
            ],
        )
    assert info.value.param == "messages[0].content[0]"
    assert upstream.chat_requests() == []


@pytest.mark.parametrize(
    "call",
    [
        {"id": "c1", "type": "custom", "custom": {"name": "grep", "input": "x"}},
        {"id": "c1", "type": "custom", "function": "grep"},
    ],
)
def test_a_tool_call_of_another_type_in_history_is_a_400_naming_it(client, upstream, call):
    """Validation checks only function calls: another kind reached Anthropic nameless (its 400
    named a field the client never sent), or raised AttributeError (500)."""
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model=MODEL,
            messages=[
                {"role": "user", "content": "x"},
                {"role": "assistant", "content": None, "tool_calls": [call]},
                {"role": "tool", "tool_call_id": "c1", "content": "found"},
            ],
        )
    assert info.value.param == "messages[1].tool_calls[0].type"
    assert upstream.chat_requests() == []


THINKING = {"type": "enabled", "budget_tokens": 1024}
SIGNED = {"type": "thinking", "thinking": "Berlin first.", "signature": "sig-Berlin=="}
REDACTED = {"type": "redacted_thinking", "data": "EncryptedBlob=="}
CALL = {"type": "tool_use", "id": "toolu_7", "name": "get_weather", "input": {"city": "Berlin"}}
DETAILS = [
    {
        "type": "reasoning.text",
        "text": "Berlin first.",
        "signature": "sig-Berlin==",
        "format": "anthropic-claude-v1",
        "index": 0,
    },
    {"type": "reasoning.encrypted", "data": "EncryptedBlob==", "format": "anthropic-claude-v1"}
    | {"index": 1},
]
QUESTION = {"role": "user", "content": "Weather in Berlin?"}
RESULT = {"role": "tool", "tool_call_id": "toolu_7", "content": "Sunny"}


def _thinking_tool_stream(*calls: dict):
    """A streamed answer that thinks (text, then its signature), has a redacted block, then
    calls tools (get_weather unless told), as Anthropic streams it."""
    calls = calls or (CALL,)
    events = anthropic_stream([], model=MODEL)
    head, tail = events[:1], events[-2:]  # message_start / message_delta, message_stop

    def event(kind, **fields):
        return (kind, {"type": kind, **fields})

    head += [
        event("content_block_start", index=0, content_block={"type": "thinking", "thinking": ""}),
        event("content_block_delta", index=0, delta={"type": "thinking_delta", "thinking": "Ber"}),
        event(
            "content_block_delta",
            index=0,
            delta={"type": "thinking_delta", "thinking": "lin first."},
        ),
        event(
            "content_block_delta", index=0, delta={"type": "signature_delta", "signature": "sig-"}
        ),
        event(
            "content_block_delta",
            index=0,
            delta={"type": "signature_delta", "signature": "Berlin=="},
        ),
        event("content_block_stop", index=0),
        event("content_block_start", index=1, content_block=REDACTED),
        event("content_block_stop", index=1),
    ]
    for index, call in enumerate(calls, start=2):
        arguments = json.dumps(call["input"])
        head += [
            event("content_block_start", index=index, content_block=call | {"input": {}}),
            event(
                "content_block_delta",
                index=index,
                delta={"type": "input_json_delta", "partial_json": arguments},
            ),
            event("content_block_stop", index=index),
        ]
    tail[0][1]["delta"]["stop_reason"] = "tool_use"
    return head + tail


def _thinking_reply(stream: bool, *calls: dict) -> Reply:
    calls = calls or (CALL,)
    if stream:
        return Reply(stream=_thinking_tool_stream(*calls))
    content = [SIGNED, REDACTED, *calls]
    return Reply(json=anthropic_message(content=content, stop_reason="tool_use"))


def _answer(client, stream: bool, **headers) -> dict:
    """The assistant message of a thinking turn that calls get_weather, as a client keeps it
    (from the JSON answer, or put together from the chunks as the SDK's stream helper does)."""
    fields = {"model": MODEL, "tools": TOOLS, "extra_body": {"thinking": THINKING}}
    if not stream:
        completion = client.chat.completions.create(
            messages=[QUESTION], extra_headers=headers, **fields
        )
        return completion.choices[0].message.model_dump(exclude_none=True)
    with client.chat.completions.stream(
        messages=[QUESTION], extra_headers=headers, **fields
    ) as events:
        reasoning = [
            e.chunk.choices[0].delta.model_extra.get("reasoning_content")
            for e in events
            if e.type == "chunk" and e.chunk.choices
        ]
        final = events.get_final_completion()
    assert "".join(r for r in reasoning if r) == "Berlin first."
    return final.choices[0].message.model_dump(exclude_none=True, exclude={"parsed"})


@pytest.mark.parametrize("stream", [False, True])
def test_thinking_before_a_tool_call_goes_back_to_anthropic_with_its_result(
    client, upstream, stream
):
    """With thinking on, Anthropic refuses (400) a tool_result turn whose tool_use turn lost
    its signed thinking blocks, and OpenAI's shape has no field for them: the answer carries
    them as `reasoning_details` (the text also as `reasoning_content`), and the client's
    assistant message, sent back as it came, puts them back first, unchanged."""
    upstream.script(_thinking_reply(stream))
    assistant = _answer(client, stream)
    assert assistant["reasoning_content"] == "Berlin first."
    assert assistant["reasoning_details"] == DETAILS
    assert assistant["tool_calls"][0]["id"] == "toolu_7"
    upstream.script(Reply(json=anthropic_message("Sunny in Berlin.")))
    completion = client.chat.completions.create(
        model=MODEL,
        messages=[QUESTION, assistant, RESULT],
        tools=TOOLS,
        extra_body={"thinking": THINKING},
    )
    assert completion.choices[0].message.content == "Sunny in Berlin."
    assert upstream.last.body["messages"][1]["content"] == [SIGNED, REDACTED, CALL]


@pytest.mark.parametrize("stream", [False, True])
def test_history_served_from_the_store_keeps_the_signed_thinking(client, upstream, stream):
    """A client that sends only its new messages (x-conversation-id): the tool-calling answer
    Engram stored keeps its thinking blocks, so the tool result's turn is not refused."""
    conversation = {"x-conversation-id": f"think-{stream}", "x-user-id": "tina"}
    upstream.script(_thinking_reply(stream))
    _answer(client, stream, **conversation)
    upstream.script(Reply(json=anthropic_message("Sunny in Berlin.")))
    completion = client.chat.completions.create(
        model=MODEL,
        messages=[RESULT],
        tools=TOOLS,
        extra_body={"thinking": THINKING},
        extra_headers=conversation,
    )
    assert completion.choices[0].message.content == "Sunny in Berlin."
    sent = upstream.last.body["messages"]
    assert sent[-2]["content"] == [SIGNED, REDACTED, CALL]


def test_reasoning_details_anthropic_did_not_sign_are_not_sent(client, upstream):
    """Another provider's details (a conversation that changed model), or any with thinking
    off, are left out: Anthropic would refuse them."""
    other = {"type": "reasoning.summary", "summary": "s", "format": "openai-responses-v1"}
    earlier = {"role": "assistant", "content": "Hi.", "reasoning_details": [*DETAILS, other]}
    messages = [{"role": "user", "content": "Hello"}, earlier, QUESTION]
    client.chat.completions.create(
        model=MODEL, messages=messages, extra_body={"thinking": THINKING}
    )
    assert upstream.last.body["messages"][1]["content"] == [
        SIGNED,
        REDACTED,
        {"type": "text", "text": "Hi."},
    ]
    client.chat.completions.create(model=MODEL, messages=messages)
    assert upstream.last.body["messages"][1]["content"] == [{"type": "text", "text": "Hi."}]


@pytest.mark.parametrize("stream", [False, True])
def test_a_conversation_that_moves_from_claude_to_a_strict_upstream_goes_on(
    client, upstream, stream
):
    """The tool-calling Claude turn Engram stored keeps its signed thinking; the tool result's
    turn, sent to an OpenAI-compatible upstream, carried it as `reasoning_details`, which a
    strict server (Mistral) refuses, 422 "Extra inputs are not permitted". Only Anthropic can
    use those blocks: they are not sent elsewhere."""
    conversation = {"x-conversation-id": f"switch-{stream}", "x-user-id": "tina"}
    upstream.script(_thinking_reply(stream))
    _answer(client, stream, **conversation)
    upstream.refuses_extra_fields = True
    upstream.script(Reply(json=openai_completion("Sunny in Berlin.")))
    completion = client.chat.completions.create(
        model="gpt-4o-mini", messages=[RESULT], tools=TOOLS, extra_headers=conversation
    )
    assert completion.choices[0].message.content == "Sunny in Berlin."
    sent = upstream.last
    assert sent.path == "/v1/chat/completions"
    [turn] = [m for m in sent.body["messages"] if m["role"] == "assistant"]
    assert "reasoning_details" not in turn and turn["tool_calls"][0]["id"] == "toolu_7"
    # Back to Claude: the stored turn still has its blocks for Anthropic.
    upstream.script(Reply(json=anthropic_message("Cloudy in Paris.")))
    client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "And Paris?"}],
        extra_body={"thinking": THINKING},
        extra_headers=conversation,
    )
    calls = [m for m in upstream.last.body["messages"] if m["role"] == "assistant"][0]
    assert calls["content"] == [SIGNED, REDACTED, CALL]


def test_only_anthropics_reasoning_details_are_kept_from_other_upstreams(client, upstream):
    """Other formats (OpenRouter's own) go as the client sent them; a message whose details
    were all Anthropic's loses the field."""
    other = {"type": "reasoning.summary", "summary": "s", "format": "openai-responses-v1"}
    messages = [
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": "Hi.", "reasoning_details": [*DETAILS, other]},
        {"role": "user", "content": "Hello again"},
        {"role": "assistant", "content": "Hi again.", "reasoning_details": DETAILS},
        QUESTION,
    ]
    for stream in (False, True):
        answer = client.chat.completions.create(
            model="gpt-4o-mini", messages=messages, stream=stream
        )
        if stream:
            list(answer)
        sent = upstream.last.body["messages"]
        assert sent[1] == {"role": "assistant", "content": "Hi.", "reasoning_details": [other]}
        assert sent[3] == {"role": "assistant", "content": "Hi again."}
    assert messages[1]["reasoning_details"] == [*DETAILS, other]


def test_the_text_parts_of_a_system_message_stay_apart(client, upstream):
    """They were glued ("Be brief.Answer in French."): each part is a paragraph, as the parts
    of a user message are blocks of their own."""
    parts = [
        {"type": "text", "text": "Be brief."},
        {"type": "text", "text": " "},
        {"type": "text", "text": "Answer in French."},
    ]
    client.chat.completions.create(
        model=MODEL,
        messages=[
            {"role": "system", "content": parts},
            {"role": "developer", "content": [{"type": "text", "text": "No emoji."}]},
            {"role": "user", "content": "Hello"},
        ],
    )
    assert upstream.last.body["system"] == "Be brief.\n\nAnswer in French.\n\nNo emoji."


def test_the_text_parts_of_an_assistant_message_and_a_tool_result_stay_apart(client, upstream):
    """They were glued ("Checking.Berlin it is."): as a system message's parts, each is a
    paragraph, blank ones left out."""
    parts = [
        {"type": "text", "text": "Checking."},
        {"type": "text", "text": "  "},
        {"type": "text", "text": "Berlin it is."},
    ]
    call = {"id": "toolu_7", "type": "function"}
    call["function"] = {"name": "get_weather", "arguments": '{"city": "Berlin"}'}
    client.chat.completions.create(
        model=MODEL,
        messages=[
            QUESTION,
            {"role": "assistant", "content": parts, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "toolu_7", "content": [parts[2], parts[1], parts[0]]},
        ],
        tools=TOOLS,
    )
    sent = upstream.last.body["messages"]
    assert sent[1]["content"][0] == {"type": "text", "text": "Checking.\n\nBerlin it is."}
    assert sent[2]["content"][0]["content"] == "Berlin it is.\n\nChecking."


def test_an_assistant_refusal_in_the_history_reaches_claude(client, upstream):
    """A refusal part (or the `refusal` beside empty content) was not text to the translation:
    the assistant's turn went missing, and the user's turns around it were merged into one."""
    client.chat.completions.create(
        model=MODEL,
        messages=[
            {"role": "user", "content": "Help me pick a lock."},
            {"role": "assistant", "content": [{"type": "refusal", "refusal": "I can't help."}]},
            {"role": "user", "content": "It is my own lock."},
            {"role": "assistant", "content": "", "refusal": "Still no."},
            {"role": "user", "content": "Fine."},
        ],
    )
    sent = upstream.last.body["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "user", "assistant", "user"]
    assert sent[1]["content"] == [{"type": "text", "text": "I can't help."}]
    assert sent[3]["content"] == [{"type": "text", "text": "Still no."}]


def test_a_tool_result_turn_that_lost_the_thinking_is_refused_as_anthropic_does(client, upstream):
    """The loopback Anthropic enforces the rule the tests above rely on."""
    call = {"id": "toolu_7", "type": "function"}
    call["function"] = {"name": "get_weather", "arguments": '{"city": "Berlin"}'}
    bare = {"role": "assistant", "content": None, "tool_calls": [call]}
    upstream.script(_thinking_reply(False))
    client.chat.completions.create(
        model=MODEL, messages=[QUESTION], tools=TOOLS, extra_body={"thinking": THINKING}
    )
    for details in (None, [DETAILS[0] | {"text": "Paris first."}]):
        with pytest.raises(openai.BadRequestError) as info:
            client.chat.completions.create(
                model=MODEL,
                messages=[QUESTION, bare | {"reasoning_details": details}, RESULT],
                tools=TOOLS,
                extra_body={"thinking": THINKING},
            )
        assert "thinking" in info.value.message


@pytest.mark.parametrize("stream", [False, True])
def test_an_agents_tool_run_sends_the_thinking_back_with_the_result(
    client, http, upstream, tool_server, stream
):
    """An agent's server-side tool run on Claude with thinking: its second step carries the
    first step's signed thinking before the call it answers (Anthropic refused it, 400)."""
    from tests.test_tools import make_tool

    agent = http.post("/v1/agents", json={"name": "thinker", "model": MODEL}).json()["id"]
    make_tool(http, agent, tool_server.url + "/weather", name="get_weather")
    upstream.script(_thinking_reply(stream), Reply(json=anthropic_message("Sunny in Berlin.")))
    if stream:
        upstream.replies[-1] = Reply(stream=anthropic_stream(["Sunny in Berlin."], model=MODEL))
    answer = client.chat.completions.create(
        model=agent, messages=[QUESTION], extra_body={"thinking": THINKING}, stream=stream
    )
    if stream:
        text = "".join(c.choices[0].delta.content or "" for c in answer if c.choices)
    else:
        text = answer.choices[0].message.content
    assert text == "Sunny in Berlin."
    assert len(tool_server.calls) == 1
    assert upstream.last.body["messages"][1]["content"] == [SIGNED, REDACTED, CALL]


def _thinking_text_stream(text: str):
    """A streamed answer that thinks as _thinking_tool_stream's does, then answers `text`."""
    events = [e for e in _thinking_tool_stream(CALL) if e[1].get("index") != 2]  # not the call

    def event(kind, **fields):
        return (kind, {"type": kind, **fields})

    block = [
        event("content_block_start", index=2, content_block={"type": "text", "text": ""}),
        event("content_block_delta", index=2, delta={"type": "text_delta", "text": text}),
        event("content_block_stop", index=2),
    ]
    events[-2][1]["delta"]["stop_reason"] = "end_turn"
    return events[:-2] + block + events[-2:]


@pytest.mark.parametrize("stream", [False, True])
def test_an_agents_answer_carries_its_thinking_streamed_or_not(
    client, http, upstream, tool_server, stream
):
    """A streamed agent (one with tools) on Claude with thinking sent no `reasoning_content`
    delta and no `reasoning_details`, which the same answer not streamed carries, as a chat
    without an agent does streamed: the thinking goes out as it comes, the signed details with
    the last chunk."""
    from tests.test_tools import make_tool

    agent = http.post("/v1/agents", json={"name": "thinker", "model": MODEL}).json()["id"]
    make_tool(http, agent, tool_server.url + "/weather", name="get_weather")
    if stream:
        upstream.script(Reply(stream=_thinking_text_stream("Sunny, I think.")))
    else:
        content = [SIGNED, REDACTED, {"type": "text", "text": "Sunny, I think."}]
        upstream.script(Reply(json=anthropic_message(content=content)))
    fields = {"model": agent, "messages": [QUESTION], "extra_body": {"thinking": THINKING}}
    if stream:
        with client.chat.completions.stream(**fields) as events:
            chunks = [e.chunk for e in events if e.type == "chunk" and e.chunk.choices]
            final = events.get_final_completion()
        thoughts = [c.choices[0].delta.model_extra.get("reasoning_content") for c in chunks]
        assert "".join(t for t in thoughts if t) == "Berlin first."  # as it came
        message = final.choices[0].message.model_dump(exclude_none=True, exclude={"parsed"})
    else:
        answer = client.chat.completions.create(**fields)
        message = answer.choices[0].message.model_dump(exclude_none=True)
    assert message["content"] == "Sunny, I think."
    assert message["reasoning_content"] == "Berlin first."
    assert message["reasoning_details"] == DETAILS
    assert tool_server.calls == []


def test_an_answer_whose_thinking_is_all_redacted_has_no_empty_reasoning_text(client, upstream):
    upstream.script(
        Reply(json=anthropic_message(content=[REDACTED, {"type": "text", "text": "Hi"}]))
    )
    message = (
        client.chat.completions.create(
            model=MODEL, messages=[QUESTION], extra_body={"thinking": THINKING}
        )
        .choices[0]
        .message
    )
    assert "reasoning_content" not in message.model_extra
    assert message.model_extra["reasoning_details"] == [DETAILS[1] | {"index": 0}]


TIME_TOOL = {
    "type": "function",
    "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}},
}
TIME_CALL = {"type": "tool_use", "id": "toolu_8", "name": "get_time", "input": {}}


@pytest.mark.parametrize("served", [False, True], ids=["resent", "x-conversation-id"])
@pytest.mark.parametrize("stream", [False, True])
def test_the_clients_calls_an_agent_hands_back_keep_the_signed_thinking(
    client, http, upstream, tool_server, stream, served
):
    """A Claude step with thinking calls the agent's tool and the client's: the agent's runs,
    the client's are handed back as the answer. Its result, sent alone (x-conversation-id),
    followed that handed-back turn, which lost its thinking when stored; sent with the
    transcript, streamed, the client never had it: Anthropic refused both (400)."""
    from memory.models import Message
    from tests.completions_support import wait_for
    from tests.test_tools import make_tool

    agent = http.post("/v1/agents", json={"name": "thinker", "model": MODEL}).json()["id"]
    make_tool(http, agent, tool_server.url + "/weather", name="get_weather")
    conversation = {"x-conversation-id": f"handback-{stream}-{served}", "x-user-id": "tina"}
    fields = {
        "model": agent,
        "tools": [TIME_TOOL],
        "extra_body": {"thinking": THINKING},
        "extra_headers": conversation if served else {"x-user-id": "tina"},
    }
    upstream.script(_thinking_reply(stream, CALL, TIME_CALL))
    if stream:
        with client.chat.completions.stream(messages=[QUESTION], **fields) as events:
            answer = events.get_final_completion()
        handed = answer.choices[0].message.model_dump(exclude_none=True, exclude={"parsed"})
    else:
        answer = client.chat.completions.create(messages=[QUESTION], **fields)
        handed = answer.choices[0].message.model_dump(exclude_none=True)
    assert handed["reasoning_details"] == DETAILS  # the client can send it back too
    assert [c.id for c in answer.choices[0].message.tool_calls] == ["toolu_8"]
    assert len(tool_server.calls) == 1 and len(upstream.chat_requests()) == 1
    if served:
        stored = Message.objects.filter(conversation__external_id=f"handback-{stream}-{served}")
        wait_for(lambda: stored.count() == 4)  # the question, the agent's step, the answer

    upstream.script(Reply(json=anthropic_message("Sunny in Berlin at noon.")))
    result = {"role": "tool", "tool_call_id": "toolu_8", "content": "noon"}
    messages = [result] if served else [QUESTION, handed, result]
    completion = client.chat.completions.create(messages=messages, **fields)
    assert completion.choices[0].message.content == "Sunny in Berlin at noon."
    sent = upstream.last.body["messages"]
    assert sent[-2]["content"] == [SIGNED, REDACTED, TIME_CALL]
    if served:  # the agent's step too, from the store
        assert [m["role"] for m in sent] == ["user", "assistant", "user", "assistant", "user"]
        assert sent[1]["content"] == [SIGNED, REDACTED, CALL]


def _sent_tokens(body: dict) -> int:
    """The text a Messages API request carries (thinking and signatures included), counted as
    Engram counts: fewer than Engram's count of the same messages, which adds their framing."""
    from config.common.tokens import count

    fields = ("text", "thinking", "signature", "data", "content")
    texts = [body.get("system") or "", json.dumps(body.get("tools") or [])]
    for message in body["messages"]:
        for block in message["content"]:
            texts += [block[f] for f in fields if isinstance(block.get(f), str)]
            texts.append(json.dumps(block["input"]) if "input" in block else "")
    return sum(count(t) for t in texts)


def test_the_reasoning_details_a_turn_carries_count_in_the_context_budget(
    client, http, upstream, settings
):
    """A stored tool-calling turn's signed thinking goes back to Claude with its result: it
    was counted as nothing, so the history put beside it overflowed the window by its size."""
    from tests.test_openai_compatible_upstreams import _import_history

    settings.ENGRAM_CONTEXT_WINDOWS = {MODEL: 8192}
    conversation = {"x-conversation-id": "long-thought", "x-user-id": "theo"}
    _import_history(http, "long-thought", "theo", 150)  # ~8,000 tokens of history
    thought = "Berlin is in Germany, so the weather tool wants the city alone. " * 150
    signed = {"type": "thinking", "thinking": thought, "signature": "sig-" + "Qm9" * 300}
    reply = anthropic_message(content=[signed, CALL], stop_reason="tool_use")
    upstream.script(Reply(json=reply), Reply(json=anthropic_message("Sunny in Berlin.")))
    fields = {
        "model": MODEL,
        "tools": TOOLS,
        "max_tokens": 2048,
        "extra_body": {"thinking": THINKING},
        "extra_headers": conversation,
    }
    client.chat.completions.create(messages=[QUESTION], **fields)
    client.chat.completions.create(messages=[RESULT], **fields)
    sent = upstream.last.body
    assert sent["messages"][-2]["content"][0] == signed
    assert _sent_tokens(sent) <= 8192 - 2048  # was ~8,000: the thinking's ~2,000 on top


@pytest.mark.parametrize(
    "usage, details",
    [
        (  # both: the hour's are a share of the writes
            {
                "cache_creation_input_tokens": 30,
                "cache_creation": {
                    "ephemeral_5m_input_tokens": 10,
                    "ephemeral_1h_input_tokens": 20,
                },
            },
            {"cached_tokens": 0, "cache_write_tokens": 30, "cache_write_1h_tokens": 20},
        ),
        (  # the breakdown alone: its sum is the writes
            {"cache_creation": {"ephemeral_5m_input_tokens": 10, "ephemeral_1h_input_tokens": 20}},
            {"cached_tokens": 0, "cache_write_tokens": 30, "cache_write_1h_tokens": 20},
        ),
        (  # no hour's writes, or a figure that is no count: as before
            {
                "cache_creation_input_tokens": 30,
                "cache_creation": {"ephemeral_1h_input_tokens": "x"},
            },
            {"cached_tokens": 0, "cache_write_tokens": 30},
        ),
        (  # never more of the hour's than the writes
            {"cache_creation_input_tokens": 5, "cache_creation": {"ephemeral_1h_input_tokens": 9}},
            {"cached_tokens": 0, "cache_write_tokens": 5, "cache_write_1h_tokens": 5},
        ),
    ],
)
def test_usage_passes_the_one_hour_cache_writes_on(usage, details):
    """Anthropic's cache_creation breakdown (5-minute and 1-hour writes, billed 1.25x and 2x the
    input) was dropped: every write was charged as a 5-minute one."""
    from completions.providers.anthropic_translate import usage_from

    translated = usage_from({"input_tokens": 1, "output_tokens": 2, **usage})
    assert translated["prompt_tokens_details"] == details
    assert translated["prompt_tokens"] == 1 + details["cache_write_tokens"]
