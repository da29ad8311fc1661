"""The framings and shapes of OpenAI-compatible servers (vLLM, Ollama, llama.cpp, LM Studio,
OpenRouter) and Anthropic's streams, through Engram to the official `openai` client: what the
SDK assembles is the upstream's answer, and what Engram stores and records is too."""

from __future__ import annotations

import json

import openai
import pytest

from completions.models import UsageRecord
from completions.usage import buffer
from tests.upstream import Reply, anthropic_message, openai_stream

HI = [{"role": "user", "content": "Hi"}]
HEAD = {"id": "chatcmpl-x", "object": "chat.completion.chunk", "created": 1, "model": "m"}


def _chunk(delta: dict, finish: str | None = None, index: int = 0, **extra) -> dict:
    choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
    return {**HEAD, "choices": [choice], **extra}


USAGE = {
    **HEAD,
    "choices": [],
    "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
}


def _framed(items: list, *, sep: bytes = b"\n", space: bytes = b" ") -> list[bytes]:
    return [
        b"data:" + space + (i if isinstance(i, str) else json.dumps(i)).encode() + sep + sep
        for i in items
    ]


def _text(stream) -> tuple[str, str | None, object]:
    text, finish, usage = [], None, None
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        for choice in chunk.choices:
            text.append(choice.delta.content or "")
            finish = choice.finish_reason or finish
    return "".join(text), finish, usage


PIECES = [
    _chunk({"role": "assistant", "content": ""}),
    _chunk({"content": "Hel"}),
    _chunk({"content": "lo"}),
]


@pytest.mark.parametrize(
    "items",
    [
        # llama.cpp and some proxies: `data:` without its space, CRLF line ends
        _framed([*PIECES, _chunk({}, "stop"), USAGE, "[DONE]"], sep=b"\r\n", space=b""),
        # comments, ids and retry between events (OpenRouter's `: OPENROUTER PROCESSING`)
        [
            b": OPENROUTER PROCESSING\n\n",
            b"retry: 3000\n\n",
            *[b"id: " + str(n).encode() + b"\n" + f for n, f in enumerate(_framed(PIECES))],
            b": keep-alive\n\n",
            *_framed([_chunk({}, "stop"), USAGE, "[DONE]"]),
        ],
        # no [DONE]: the body ends after the usage chunk
        _framed([*PIECES, _chunk({}, "stop"), USAGE]),
        # one read holding every event (a server that buffers)
        [b"".join(_framed([*PIECES, _chunk({}, "stop"), USAGE, "[DONE]"]))],
    ],
    ids=["crlf-no-space", "comments-ids", "no-done", "one-read"],
)
def test_framings_reach_the_sdk_as_the_answer(sdk, upstream, items):
    upstream.script(Reply(stream=items))
    stream = sdk.chat.completions.create(
        model="gpt-4o-mini", messages=HI, stream=True, stream_options={"include_usage": True}
    )
    text, finish, usage = _text(stream)
    assert (text, finish) == ("Hello", "stop")
    assert usage is not None and usage.total_tokens == 7


def test_tool_call_arguments_split_mid_utf8_and_mid_json(sdk, upstream):
    arguments = json.dumps({"city": "Zürich 🐝"}, ensure_ascii=False).encode()
    cut = arguments.index("🐝".encode()) + 2  # inside the emoji's four bytes
    call = {
        "index": 0,
        "id": "call_1",
        "type": "function",
        "function": {"name": "w", "arguments": ""},
    }
    first = json.dumps(
        _chunk({"role": "assistant", "content": None, "tool_calls": [call]})
    ).encode()
    # a delta whose JSON string holds the arguments whole, its bytes cut across two reads
    piece = _chunk({"tool_calls": [{"index": 0, "function": {"arguments": "PLACEHOLDER"}}]})
    raw = json.dumps(piece, ensure_ascii=False).encode()
    raw = raw.replace(b"PLACEHOLDER", arguments.replace(b'"', b'\\"'))
    at = raw.index("🐝".encode()) + 2
    items = [
        b"data: " + first + b"\n\n",
        b"data: " + raw[:at],
        raw[at:] + b"\n\n",
        *_framed([_chunk({}, "tool_calls"), USAGE, "[DONE]"]),
    ]
    assert cut  # the emoji is in the arguments
    upstream.script(Reply(stream=items))
    calls: dict[int, str] = {}
    for chunk in sdk.chat.completions.create(model="gpt-4o-mini", messages=HI, stream=True):
        for choice in chunk.choices:
            for tc in choice.delta.tool_calls or ():
                calls[tc.index] = calls.get(tc.index, "") + (tc.function.arguments or "")
    assert json.loads(calls[0]) == {"city": "Zürich 🐝"}


def test_n_streamed_choices_each_get_their_text_and_finish(sdk, upstream):
    items = [
        _chunk({"role": "assistant", "content": "a"}, index=0),
        _chunk({"role": "assistant", "content": "b"}, index=1),
        _chunk({"content": "A"}, index=0),
        _chunk({"content": "B"}, index=1),
        _chunk({}, "stop", index=0),
        _chunk({}, "length", index=1),
        USAGE,
        "[DONE]",
    ]
    upstream.script(Reply(stream=items))
    texts: dict[int, str] = {}
    finishes: dict[int, str] = {}
    for chunk in sdk.chat.completions.create(model="gpt-4o-mini", messages=HI, stream=True, n=2):
        for choice in chunk.choices:
            texts[choice.index] = texts.get(choice.index, "") + (choice.delta.content or "")
            if choice.finish_reason:
                finishes[choice.index] = choice.finish_reason
    assert texts == {0: "aA", 1: "bB"} and finishes == {0: "stop", 1: "length"}


def test_fields_pass_through_to_the_upstream_and_logprobs_back(sdk, upstream):
    logprobs = {
        "content": [{"token": "Hi", "logprob": -0.1, "bytes": [72, 105], "top_logprobs": []}]
    }
    chunk = _chunk({"role": "assistant", "content": "Hi"})
    chunk["choices"][0]["logprobs"] = logprobs
    upstream.script(Reply(stream=[chunk, _chunk({}, "stop"), USAGE, "[DONE]"]))
    schema = {
        "type": "json_schema",
        "json_schema": {"name": "x", "schema": {"type": "object"}, "strict": True},
    }
    got = list(
        sdk.chat.completions.create(
            model="gpt-4o-mini",
            messages=HI,
            stream=True,
            stop=["END", "\n\n"],
            response_format=schema,
            logprobs=True,
            top_logprobs=2,
            seed=7,
        )
    )
    sent = upstream.chat_requests()[-1].body
    assert sent["stop"] == ["END", "\n\n"] and sent["response_format"] == schema
    assert sent["logprobs"] is True and sent["top_logprobs"] == 2 and sent["seed"] == 7
    with_logprobs = [c for c in got if c.choices and c.choices[0].logprobs]
    assert with_logprobs[0].choices[0].logprobs.content[0].token == "Hi"


def _anthropic(events: list) -> list:
    return [(e["type"], e) for e in events]


def test_an_anthropic_stream_with_thinking_and_tool_use(sdk, upstream):
    start = anthropic_message("", model="claude-3-7-sonnet") | {"content": [], "stop_reason": None}
    events = _anthropic(
        [
            {"type": "message_start", "message": start},
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "thinking", "thinking": ""},
            },
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "thinking_delta", "thinking": "Let me"},
            },
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "thinking_delta", "thinking": " think."},
            },
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "signature_delta", "signature": "sig"},
            },
            {"type": "content_block_stop", "index": 0},
            {
                "type": "content_block_start",
                "index": 1,
                "content_block": {"type": "text", "text": ""},
            },
            {
                "type": "content_block_delta",
                "index": 1,
                "delta": {"type": "text_delta", "text": "Checking."},
            },
            {"type": "content_block_stop", "index": 1},
            {
                "type": "content_block_start",
                "index": 2,
                "content_block": {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "weather",
                    "input": {},
                },
            },
            {
                "type": "content_block_delta",
                "index": 2,
                "delta": {"type": "input_json_delta", "partial_json": '{"city": "Z'},
            },
            {
                "type": "content_block_delta",
                "index": 2,
                "delta": {"type": "input_json_delta", "partial_json": 'ürich"}'},
            },
            {"type": "content_block_stop", "index": 2},
            {
                "type": "message_delta",
                "delta": {"stop_reason": "tool_use"},
                "usage": {"output_tokens": 20},
            },
            {"type": "message_stop"},
        ]
    )
    upstream.script(Reply(stream=events))
    text, reasoning, arguments, finish, usage = [], [], "", None, None
    stream = sdk.chat.completions.create(
        model="claude-3-7-sonnet",
        messages=HI,
        stream=True,
        stream_options={"include_usage": True},
        tools=[
            {"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}
        ],
    )
    for chunk in stream:
        usage = chunk.usage or usage
        for choice in chunk.choices:
            text.append(choice.delta.content or "")
            reasoning.append(getattr(choice.delta, "reasoning_content", None) or "")
            for tc in choice.delta.tool_calls or ():
                arguments += tc.function.arguments or ""
            finish = choice.finish_reason or finish
    assert "".join(text) == "Checking." and "".join(reasoning) == "Let me think."
    assert json.loads(arguments) == {"city": "Zürich"} and finish == "tool_calls"
    assert usage is not None and usage.prompt_tokens == 12 and usage.completion_tokens == 20


def test_an_anthropic_overload_mid_stream_is_the_streams_error_frame(sdk, upstream):
    start = anthropic_message("", model="claude-3-5-sonnet") | {"content": [], "stop_reason": None}
    events = _anthropic(
        [
            {"type": "message_start", "message": start},
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": "Half"},
            },
            {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
        ]
    )
    upstream.script(Reply(stream=events))
    seen = []
    with pytest.raises(openai.APIError, match="Overloaded") as failed:
        for chunk in sdk.chat.completions.create(
            model="claude-3-5-sonnet", messages=HI, stream=True
        ):
            seen += [c.delta.content or "" for c in chunk.choices]
    assert "".join(seen) == "Half"
    assert failed.value.type == "overloaded_error"
    buffer.flush()
    record = UsageRecord.objects.get()
    assert record.incomplete and record.status_code == 200 and record.error_code


def test_usage_before_the_finish_reason_still_reaches_the_sdk_last(sdk, upstream):
    """Some servers send the usage chunk before the finish reason (vLLM's continuous stats)."""
    items = [*PIECES, USAGE, _chunk({}, "stop"), "[DONE]"]
    upstream.script(Reply(stream=items))
    stream = sdk.chat.completions.create(
        model="gpt-4o-mini", messages=HI, stream=True, stream_options={"include_usage": True}
    )
    text, finish, usage = _text(stream)
    assert (text, finish) == ("Hello", "stop") and usage is not None


def test_a_plain_stream_still_works(sdk, upstream):
    upstream.script(Reply(stream=openai_stream(["x"])))
    text, finish, _ = _text(
        sdk.chat.completions.create(model="gpt-4o-mini", messages=HI, stream=True)
    )
    assert (text, finish) == ("x", "stop")


def test_openrouters_error_mid_stream_is_the_streams_error_frame(sdk, upstream):
    failed_chunk = _chunk(
        {"content": ""}, "error", error={"code": 502, "message": "Provider disconnected"}
    )
    upstream.script(Reply(stream=[*PIECES, failed_chunk]))
    seen = []
    with pytest.raises(openai.APIError, match="Provider disconnected"):
        for chunk in sdk.chat.completions.create(model="gpt-4o-mini", messages=HI, stream=True):
            seen += [c.delta.content or "" for c in chunk.choices]
    assert "".join(seen) == "Hello"
    buffer.flush()
    record = UsageRecord.objects.get()
    assert record.incomplete and record.credits is not None


@pytest.mark.parametrize("split", [False, True], ids=["one-read", "bom-split-across-reads"])
def test_a_bom_before_the_first_event_is_not_the_events(sdk, upstream, split):
    """WHATWG: one BOM at the stream's start is ignored. Read as the first line's, it made the
    first event's `data:` an unknown field and that event (here one with text) was dropped."""
    items = _framed([_chunk({"role": "assistant", "content": "Hel"}), *PIECES[2:]])
    items += _framed([_chunk({}, "stop"), USAGE, "[DONE]"])
    items[0] = b"\xef\xbb\xbf" + items[0]
    if split:
        items[:1] = [items[0][:1], items[0][1:2], items[0][2:]]
    upstream.script(Reply(stream=items))
    text, finish, _ = _text(
        sdk.chat.completions.create(model="gpt-4o-mini", messages=HI, stream=True)
    )
    assert (text, finish) == ("Hello", "stop")


def test_a_bom_after_the_streams_start_is_the_datas(sdk, upstream):
    """Only the stream's first BOM is not its: one inside a later event's data is text."""
    bom = "\ufeff"
    items = _framed([*PIECES[:2], _chunk({"content": bom + "lo"}), _chunk({}, "stop"), "[DONE]"])
    upstream.script(Reply(stream=items))
    text, finish, _ = _text(
        sdk.chat.completions.create(model="gpt-4o-mini", messages=HI, stream=True)
    )
    assert (text, finish) == ("Hel" + bom + "lo", "stop")


def test_an_event_that_is_no_chunk_does_not_reach_the_sdk_as_one(sdk, upstream):
    """Proxies' named events between the chunks (`event: ping`, a JSON object without choices):
    relayed, the SDK made a chunk of it whose `choices` was None, and the client's loop over
    them raised TypeError."""
    ping = b'event: ping\ndata: {"type": "ping"}\n\n'
    items = _framed(PIECES)
    items = [items[0], ping, *items[1:], *_framed([_chunk({}, "stop"), USAGE, "[DONE]"])]
    upstream.script(Reply(stream=items))
    text, finish, _ = _text(
        sdk.chat.completions.create(model="gpt-4o-mini", messages=HI, stream=True)
    )
    assert (text, finish) == ("Hello", "stop")


def test_a_usage_chunk_without_choices_reaches_the_sdk_as_openais(sdk, upstream):
    """A server whose usage chunk has no `choices` member at all: the SDK's chunk had None."""
    bare = {**HEAD, "usage": USAGE["usage"]}
    upstream.script(Reply(stream=[*PIECES, _chunk({}, "stop"), bare, "[DONE]"]))
    stream = sdk.chat.completions.create(
        model="gpt-4o-mini", messages=HI, stream=True, stream_options={"include_usage": True}
    )
    text, finish, usage = _text(stream)
    assert (text, finish) == ("Hello", "stop") and usage is not None and usage.total_tokens == 7


def test_a_finish_without_a_delta_reaches_the_sdk_with_an_empty_one(sdk, upstream):
    """A server's finishing chunk without `delta`: the SDK's choice had delta None, and a
    client reading `choice.delta.content` raised AttributeError."""
    finish = {**HEAD, "choices": [{"index": 0, "finish_reason": "stop"}]}
    upstream.script(Reply(stream=[*PIECES, finish, USAGE, "[DONE]"]))
    text, reason, _ = _text(
        sdk.chat.completions.create(model="gpt-4o-mini", messages=HI, stream=True)
    )
    assert (text, reason) == ("Hello", "stop")


def test_a_character_split_into_surrogate_halves_across_deltas_is_stored_whole(http, upstream):
    """llama.cpp-style servers may cut an emoji between two deltas, each half a JSON escape of a
    lone UTF-16 surrogate: joined, the answer holds the character."""
    items = [
        b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":"Bee \\ud83d"},"finish_reason":null}]}\n\n',
        b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"\\udc1d!"},"finish_reason":null}]}\n\n',
        *_framed([_chunk({}, "stop"), USAGE, "[DONE]"]),
    ]
    upstream.script(Reply(stream=items))
    body = {"model": "gpt-4o-mini", "messages": HI, "stream": True}
    headers = {"x-user-id": "surrogates", "x-conversation-id": "surrogates"}
    with http.stream("POST", "/v1/chat/completions", json=body, headers=headers) as resp:
        lines = [line for line in resp.iter_lines() if line.startswith("data: {")]
    text = "".join(
        (json.loads(line[6:])["choices"] or [{}])[0].get("delta", {}).get("content") or ""
        for line in lines
    )
    assert text.encode("utf-16", "surrogatepass").decode("utf-16") == "Bee 🐝!"
    from tests.completions_support import stored_answer

    assert stored_answer(http, "surrogates")["content"] == "Bee 🐝!"


def test_an_anthropic_stream_that_ends_without_message_stop_after_its_stop_reason(sdk, upstream):
    """Proxies in front of Anthropic (and Bedrock's translation) may end the body after
    message_delta, without message_stop: the answer said why it stopped, as an OpenAI stream
    without [DONE] whose finish reason came, and is whole."""
    from tests.upstream import anthropic_stream

    events = [e for e in anthropic_stream(["Hel", "lo"]) if e[0] != "message_stop"]
    upstream.script(Reply(stream=events))
    stream = sdk.chat.completions.create(
        model="claude-3-5-sonnet",
        messages=HI,
        stream=True,
        stream_options={"include_usage": True},
    )
    text, finish, usage = _text(stream)
    assert (text, finish) == ("Hello", "stop") and usage is not None
    assert usage.prompt_tokens == 12


def test_the_parser_drops_one_bom_only_at_the_start_even_split_across_reads():
    from completions.providers.wire import SseParser

    parser = SseParser()
    reads = [b"\xef", b"\xbb", b"\xbfdata: a\n\n", b"\xef\xbb\xbfdata: b\n\n", b"data: c\n\n"]
    events = [event for read in reads for event in parser.feed(read)]
    # the later BOM starts an unknown field's line: that event has no data (WHATWG)
    assert events == [(None, b"a"), (None, b"c")]
