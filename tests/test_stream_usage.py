"""Every stream ends as OpenAI's does: with `stream_options.include_usage`, the usage chunk (no
choices) is the last chunk before `data: [DONE]`, Engram's `engram` object on it; without, no
chunk has usage and `engram` rides on the finishing chunk. The official SDK's stream helper
takes `usage` from the last chunk (`ChatCompletionStreamState`): a run's stream, which sent its
`engram` chunk after the usage chunk, left the final completion's usage None.

Checked with the official `openai` client, its strict validation on (every chunk must parse),
against Engram over HTTP and the loopback upstream: a plain stream, one memory enriched, an
agent's run with its tools, a run that pauses for approval, its resume, and an SDK's retry
answered by a replay."""

from __future__ import annotations

import json

import openai
import pytest
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletionChunk

from completions.charging import prompt_tokens
from config.common import tokens as tokenizer
from memory.services import memory_create
from tests.test_tools import make_agent, make_tool
from tests.upstream import Reply, anthropic_stream, openai_stream, openai_tool_stream, tool_call

QUESTION = [{"role": "user", "content": "Weather in Paris?"}]
WEATHER = tool_call("call_1", "weather", {"city": "Paris"})
RETRY = {"x-stainless-retry-count": "1"}
URL = "/v1/chat/completions"
CLAUDE = "claude-3-5-sonnet-latest"  # what the OpenAI SDKs send on their first retry


@pytest.fixture
def strict(engram_server, owner, upstream):
    """The official client, refusing any chunk that does not parse as OpenAI's."""
    with openai.OpenAI(
        base_url=engram_server.url + "/v1",
        api_key=owner[1],
        max_retries=0,
        timeout=20,
        _strict_response_validation=True,
    ) as client:
        yield client


def streamed(client, *, include_usage: bool, **kwargs):
    """(chunks, final completion) of the SDK's stream helper."""
    options = {"stream_options": {"include_usage": True}} if include_usage else {}
    with client.chat.completions.stream(**kwargs, **options) as stream:
        chunks = [event.chunk for event in stream if event.type == "chunk"]
        final = stream.get_final_completion()
    return chunks, final


def assert_ends_as_openai(chunks: list, final, *, include_usage: bool, total_tokens: int) -> dict:
    """The stream's end, as OpenAI's contract has it; returns the last chunk's `engram`."""
    last = chunks[-1]
    engram = last.model_extra["engram"]
    assert engram["request_id"] and "credits_charged" in engram
    assert [c for c in chunks if "engram" in c.model_extra and _is_end(c)] == [last]
    if include_usage:
        assert last.choices == [] and last.usage is not None
        assert last.usage.total_tokens == total_tokens
        assert final.usage is not None and final.usage.total_tokens == total_tokens
        assert [c for c in chunks if c.usage is not None] == [last]
        assert chunks[-2].choices[0].finish_reason  # the finish, right before
    else:
        assert all(c.usage is None for c in chunks) and final.usage is None
        assert last.choices and last.choices[0].finish_reason
    return engram


def _is_end(chunk) -> bool:
    """A chunk with Engram's end-of-answer `engram` (a run's tool marks are others)."""
    marks = chunk.model_extra.get("engram") or {}
    return "request_id" in marks


@pytest.mark.parametrize("include_usage", [True, False])
def test_a_plain_stream_ends_with_its_usage(strict, upstream, include_usage):
    upstream.script(Reply(stream=openai_stream(["Hel", "lo"])))
    chunks, final = streamed(
        strict, include_usage=include_usage, model="gpt-4o-mini", messages=QUESTION
    )
    assert final.choices[0].message.content == "Hello"
    assert_ends_as_openai(chunks, final, include_usage=include_usage, total_tokens=7)


@pytest.mark.parametrize("include_usage", [True, False])
def test_a_memory_enriched_stream_ends_with_its_usage(strict, owner, upstream, include_usage):
    memory_create(workspace=owner[0], user_id="mia", text="User lives in Paris.")
    upstream.script(Reply(stream=openai_stream(["Sunny."])))
    chunks, final = streamed(
        strict,
        include_usage=include_usage,
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "Where do I live, Paris?"}],
        extra_headers={"x-user-id": "mia"},
    )
    engram = assert_ends_as_openai(chunks, final, include_usage=include_usage, total_tokens=6)
    assert engram["memories_used"] >= 1 and engram["memories"]


@pytest.mark.parametrize("include_usage", [True, False])
def test_an_agents_run_with_its_tools_ends_with_its_usage(
    strict, http, upstream, tool_server, include_usage
):
    agent = make_agent(http)
    make_tool(http, agent, tool_server.url + "/weather")
    upstream.script(
        Reply(stream=openai_tool_stream([WEATHER])), Reply(stream=openai_stream(["Sunny."]))
    )
    chunks, final = streamed(strict, include_usage=include_usage, model=agent, messages=QUESTION)
    assert final.choices[0].message.content == "Sunny."
    assert final.choices[0].finish_reason == "stop"
    # both model calls of the run: 13 + 6
    engram = assert_ends_as_openai(chunks, final, include_usage=include_usage, total_tokens=19)
    assert engram["execution_id"]
    marks = [c.model_extra.get("engram") or {} for c in chunks]
    assert [m["tool_result"]["status"] for m in marks if "tool_result" in m] == ["completed"]


@pytest.mark.parametrize("include_usage", [True, False])
def test_a_paused_run_and_its_resume_end_with_their_usage(
    strict, http, upstream, tool_server, include_usage
):
    agent = make_agent(http)
    make_tool(http, agent, tool_server.url + "/weather", approval="always")
    upstream.script(
        Reply(stream=openai_tool_stream([WEATHER])), Reply(stream=openai_stream(["Sunny."]))
    )
    chunks, final = streamed(strict, include_usage=include_usage, model=agent, messages=QUESTION)
    assert final.choices[0].finish_reason == "tool_calls"
    assert [c.id for c in final.choices[0].message.tool_calls] == ["call_1"]
    paused = assert_ends_as_openai(chunks, final, include_usage=include_usage, total_tokens=13)
    assert paused["approval_id"]

    # The resume's stream, read as the SDK's stream helper reads a chat stream.
    body = {"approval_id": paused["approval_id"], "decision": "approve", "stream": True}
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    events = strict.post(
        "/chat/resume",
        body=body,
        cast_to=ChatCompletionChunk,
        stream=True,
        stream_cls=openai.Stream[ChatCompletionChunk],
    )
    state = ChatCompletionStreamState()
    chunks = []
    for chunk in events:
        state.handle_chunk(chunk)
        chunks.append(chunk)
    final = state.get_final_completion()
    assert final.choices[0].message.content == "Sunny." and len(tool_server.calls) == 1
    assert_ends_as_openai(chunks, final, include_usage=include_usage, total_tokens=6)


@pytest.mark.parametrize("include_usage", [True, False])
def test_a_replayed_run_ends_with_its_usage(strict, http, upstream, tool_server, include_usage):
    agent = make_agent(http)
    make_tool(http, agent, tool_server.url + "/weather")
    upstream.script(
        Reply(stream=openai_tool_stream([WEATHER])), Reply(stream=openai_stream(["Sunny."]))
    )
    headers = {"x-user-id": f"replay-{include_usage}"}
    first = strict.chat.completions.create(
        model=agent, messages=QUESTION, stream=True, extra_headers=headers
    )
    assert "".join(c.choices[0].delta.content or "" for c in first if c.choices) == "Sunny."

    chunks, final = streamed(
        strict,
        include_usage=include_usage,
        model=agent,
        messages=QUESTION,
        extra_headers=headers | RETRY,
    )
    assert final.choices[0].message.content == "Sunny." and len(tool_server.calls) == 1
    # the run's usage (both its model calls), nothing charged again
    engram = assert_ends_as_openai(chunks, final, include_usage=include_usage, total_tokens=19)
    assert engram["replayed"] is True and engram["credits_charged"] == 0


def test_create_with_include_usage_ends_with_the_usage_chunk(strict, http, upstream, tool_server):
    """`create(stream=True)`, read chunk by chunk as a client without the helper reads it."""
    agent = make_agent(http)
    make_tool(http, agent, tool_server.url + "/weather")
    upstream.script(
        Reply(stream=openai_tool_stream([WEATHER])), Reply(stream=openai_stream(["Sunny."]))
    )
    chunks = list(
        strict.chat.completions.create(
            model=agent,
            messages=QUESTION,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    last = chunks[-1]
    assert last.choices == [] and last.usage.total_tokens == 19
    assert last.model_extra["engram"]["execution_id"]
    assert all(c.usage is None for c in chunks[:-1])


def _usage_first(pieces: list[str], *, before: int) -> list:
    """openai_stream's chunks with its usage chunk moved to `before` (an index among the
    chunks): upstreams that send the usage before the chunk with the finish reason."""
    chunks = openai_stream(pieces)
    usage = chunks.pop(-2)  # [..., finish, usage, "[DONE]"]
    assert usage["choices"] == [] and usage["usage"]
    chunks.insert(before, usage)
    return chunks


@pytest.mark.parametrize("include_usage", [True, False])
@pytest.mark.parametrize("before", [-2, 2], ids=["before-the-finish", "before-the-content"])
def test_a_usage_chunk_sent_before_the_finish_still_ends_the_stream(
    strict, upstream, include_usage, before
):
    """An upstream whose usage chunk comes before the chunk with the finish reason (or before
    more text): the usage chunk went out at once, ahead of the finish, so the stream ended
    with the finishing chunk carrying `engram` and the SDK's final completion had no usage."""
    upstream.script(Reply(stream=_usage_first(["Hel", "lo", "!"], before=before)))
    chunks, final = streamed(
        strict, include_usage=include_usage, model="gpt-4o-mini", messages=QUESTION
    )
    assert final.choices[0].message.content == "Hello!"
    assert final.choices[0].finish_reason == "stop"
    assert_ends_as_openai(chunks, final, include_usage=include_usage, total_tokens=8)


def _estimate(messages: list[dict], *answers: str) -> dict:
    """The usage Engram charges an answer the upstream reported none for: the prompt as the
    client sent it and every choice's words, tiktoken-counted (completions.charging)."""
    prompt = prompt_tokens({"messages": messages})
    completion = sum(tokenizer.count(text) for text in answers)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _usage_of(chunk) -> dict:
    return chunk.usage.model_dump(exclude_none=True)


@pytest.mark.parametrize("include_usage", [True, False])
def test_a_stream_whose_upstream_reports_no_usage_ends_with_the_usage_charged(
    strict, upstream, include_usage
):
    """llama.cpp's server and older vLLM send no usage chunk, asked or not: Engram charged its
    estimate, and a client that asked for usage got none (the SDK's final completion had
    `usage` None). It gets the figures charged, in the usage chunk OpenAI's stream ends with."""
    upstream.script(Reply(stream=openai_stream(["Hel", "lo there"], usage=False)))
    chunks, final = streamed(
        strict, include_usage=include_usage, model="gpt-4o-mini", messages=QUESTION
    )
    assert final.choices[0].message.content == "Hello there"
    expected = _estimate(QUESTION, "Hello there")
    engram = assert_ends_as_openai(
        chunks, final, include_usage=include_usage, total_tokens=expected["total_tokens"]
    )
    assert engram["credits_charged"] is not None
    if include_usage:
        assert _usage_of(chunks[-1]) == expected


def test_a_raw_stream_without_upstream_usage_ends_as_openais(http, upstream):
    """Over plain HTTP: the usage chunk last before [DONE], no choices, once."""
    upstream.script(Reply(stream=openai_stream(["Hi"], usage=False)))
    body = {
        "model": "gpt-4o-mini",
        "messages": QUESTION,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    events = [
        line[6:] for line in http.post(URL, json=body).text.splitlines() if line[:6] == "data: "
    ]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert [c for c in chunks if c.get("usage")] == [chunks[-1]]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == _estimate(QUESTION, "Hi")
    assert chunks[-1]["id"] == chunks[0]["id"] and chunks[-1]["model"] == "gpt-4o-mini"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"


def test_n_choices_without_upstream_usage_end_with_every_choices_words(strict, upstream):
    """n=2 and no usage from the upstream: the usage charged counts both choices' words."""
    base = {"id": "chatcmpl-n", "object": "chat.completion.chunk", "created": 1}
    base["model"] = "gpt-4o-mini"

    def chunk(index: int, delta: dict, finish: str | None = None) -> dict:
        return base | {"choices": [{"index": index, "delta": delta, "finish_reason": finish}]}

    upstream.script(
        Reply(
            stream=[
                chunk(0, {"role": "assistant", "content": "Sunny"}),
                chunk(1, {"role": "assistant", "content": "Rain all day"}),
                chunk(0, {}, "stop"),
                chunk(1, {}, "stop"),
                "[DONE]",
            ]
        )
    )
    chunks = list(
        strict.chat.completions.create(
            model="gpt-4o-mini",
            messages=QUESTION,
            n=2,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[-1].choices == [] and [c for c in chunks if c.usage] == [chunks[-1]]
    assert _usage_of(chunks[-1]) == _estimate(QUESTION, "Sunny", "Rain all day")


def test_an_anthropic_stream_without_usage_ends_with_the_usage_charged(strict, upstream):
    """An Anthropic-compatible proxy that reports no usage in its events: Engram's translation
    sent a chunk of no choices and `usage: null` mid-stream and the stream ended without
    usage; now it ends as OpenAI's, with the usage charged."""
    events = anthropic_stream(["Bonjour", " Paris"], model=CLAUDE)
    for _name, event in events:
        event.pop("usage", None)
        if isinstance(event.get("message"), dict):
            event["message"].pop("usage", None)
    upstream.script(Reply(stream=events))
    chunks, final = streamed(strict, include_usage=True, model=CLAUDE, messages=QUESTION)
    assert final.choices[0].message.content == "Bonjour Paris"
    expected = _estimate(QUESTION, "Bonjour Paris")
    assert_ends_as_openai(chunks, final, include_usage=True, total_tokens=expected["total_tokens"])
    assert _usage_of(chunks[-1]) == expected
    # Not asked for: no chunk without choices at all (the one of `usage: null` went out).
    upstream.script(Reply(stream=events))
    chunks, final = streamed(strict, include_usage=False, model=CLAUDE, messages=QUESTION)
    assert all(c.choices for c in chunks)
    assert_ends_as_openai(chunks, final, include_usage=False, total_tokens=0)


def test_an_anthropic_stream_with_usage_ends_with_its_own(strict, upstream):
    upstream.script(Reply(stream=anthropic_stream(["Bonjour"], model=CLAUDE)))
    chunks, final = streamed(strict, include_usage=True, model=CLAUDE, messages=QUESTION)
    assert_ends_as_openai(chunks, final, include_usage=True, total_tokens=13)  # 12 in, 1 out


def _without_usage(chunks: list) -> list:
    return [c for c in chunks if not (isinstance(c, dict) and "usage" in c)]


def test_a_memory_enriched_stream_without_upstream_usage_is_charged_its_whole_prompt(
    strict, owner, upstream
):
    """The estimate counted the client's messages alone: the memories Engram put before them,
    which the upstream read, were neither charged nor in the usage the client got."""
    memory_create(workspace=owner[0], user_id="noor", text="User lives in Paris near the Seine.")
    question = [{"role": "user", "content": "Where do I live, Paris?"}]
    upstream.script(Reply(stream=openai_stream(["Paris."], usage=False)))
    chunks, _final = streamed(
        strict,
        include_usage=True,
        model="gpt-4o-mini",
        messages=question,
        extra_headers={"x-user-id": "noor"},
    )
    assert chunks[-1].model_extra["engram"]["memories_used"] >= 1
    sent = upstream.chat_requests()[-1].body["messages"]
    assert "Seine" in json.dumps(sent)
    expected = _estimate(sent, "Paris.")
    assert _usage_of(chunks[-1]) == expected
    assert expected["prompt_tokens"] > _estimate(question)["prompt_tokens"]
