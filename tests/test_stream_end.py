"""Where an OpenAI-compatible stream ends: at its usage chunk once every choice has finished
(by OpenAI's protocol the last chunk before [DONE], which Engram always asks for), not at the
read timeout when the upstream then sends neither [DONE] nor the body's end; and what a stream
of several choices cut before its usage is charged."""

from __future__ import annotations

import asyncio
import json
import threading

import pytest

from completions import charging, pricing
from completions.models import Price, UsageRecord
from completions.usage import buffer
from config.common import tokens as tokenizer
from tests.completions_support import fed_response, stored_answer, wait_for
from tests.test_limits import HI, patch_key, patch_workspace
from tests.upstream import Reply, openai_stream

URL = "/v1/chat/completions"
PRICED = "priced-model"
HEAD = {"id": "chatcmpl-upstream", "object": "chat.completion.chunk", "created": 1}


def _chunk(choices: list, model: str = PRICED, **extra) -> dict:
    return {**HEAD, "model": model, "choices": choices, **extra}


def _choice(index: int, delta: dict, finish: str | None = None) -> dict:
    return {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}


def choices_stream(texts: list[str], *, model: str = PRICED) -> list:
    """A stream of len(texts) choices, as OpenAI sends `n` of them: each choice's text, then
    each one's finish reason, then the usage chunk (no choices), then [DONE]."""
    chunks: list = [
        _chunk([_choice(i, {"role": "assistant", "content": text})], model)
        for i, text in enumerate(texts)
    ]
    chunks += [_chunk([_choice(i, {}, "stop")], model) for i in range(len(texts))]
    usage = {"prompt_tokens": 5, "completion_tokens": 3 * len(texts)}
    chunks.append(_chunk([], model, usage={**usage, "total_tokens": 5 + 3 * len(texts)}))
    return [*chunks, "[DONE]"]


def _frames(resp) -> list[str]:
    return [line for line in resp.iter_lines() if line]


@pytest.mark.parametrize("texts", [["all of it"], ["one", "two", "three"]])
def test_a_stream_that_hangs_after_its_usage_ends_there(http, upstream, owner, texts):
    """An upstream that sent every finish reason and the usage chunk, then neither [DONE] nor
    the body's end: the client's stream ended at the read timeout (minutes), the turn stored
    and charged only then. The client's timeout (10 s) is far below the read timeout (600 s)
    and the upstream's hold (30 s): a stream that waits for either fails here."""
    gate = threading.Event()  # never set before the client has its end: [DONE] is not sent
    chunks = choices_stream(texts)
    upstream.script(Reply(stream=chunks, gate=gate, gate_at=len(chunks) - 1))
    body = {"model": PRICED, "messages": HI, "stream": True, "n": len(texts)}
    body |= {"stream_options": {"include_usage": True}}
    conversation = f"hangs-{len(texts)}"
    headers = {"x-user-id": "u", "x-conversation-id": conversation}
    try:
        with http.stream("POST", URL, json=body, headers=headers, timeout=10) as resp:
            assert resp.status_code == 200
            lines = _frames(resp)
    finally:
        gate.set()
    assert lines[-1] == "data: [DONE]" and not any('"error"' in line for line in lines)
    last = json.loads(lines[-2][6:])
    assert last["usage"]["prompt_tokens"] == 5 and "credits_charged" in last["engram"]
    finishes = [
        c["index"]
        for line in lines[:-1]
        for c in json.loads(line[6:])["choices"]
        if c.get("finish_reason") == "stop"
    ]
    assert sorted(finishes) == list(range(len(texts)))
    answer = stored_answer(http, conversation)
    assert answer["content"] == texts[0] and answer["incomplete"] is False
    buffer.flush()
    record = UsageRecord.objects.get(workspace=owner[0])
    assert (record.status_code, record.incomplete) == (200, False)
    assert (record.prompt_tokens, record.completion_tokens) == (5, 3 * len(texts))
    # its connection was closed, not pooled: the upstream sees it gone once it looks
    wait_for(lambda: upstream.disconnects, timeout=5)


def _read(reads: list[bytes], *, choices: int = 1, more: bytes = b"", ended: bool = False) -> tuple:
    """OpenAIStream.chunks over a body that gives `reads` (then its end if `ended`) and then
    nothing for a while well past DONE_GRACE_SECONDS (made short here); then `more` and the
    body's end. (the chunks' data, whether the stream ended before `more`, its `complete`)."""
    from completions.providers import openai_compatible

    async def main() -> tuple:
        content, response = fed_response(asyncio.get_running_loop())
        stream = openai_compatible.OpenAIStream(response, 1.0, choices=choices)
        for read in reads:
            content.feed_data(read)
        if ended:
            content.feed_eof()
        got: list[dict] = []

        async def take() -> None:
            async for chunk in stream.chunks():
                got.append(chunk.data)

        reading = asyncio.ensure_future(take())
        await asyncio.wait({reading}, timeout=openai_compatible.DONE_GRACE_SECONDS * 10)
        ended_before = reading.done()
        if not ended:
            content.feed_data(more)
            content.feed_eof()
        await asyncio.wait_for(reading, timeout=10)
        return got, ended_before, stream.complete

    return asyncio.run(main())


def _events(chunks: list) -> list[bytes]:
    return [f"data: {c if isinstance(c, str) else json.dumps(c)}\n\n".encode() for c in chunks]


def test_the_usage_chunk_after_every_finish_ends_the_stream_after_a_short_wait(monkeypatch):
    from completions.providers import openai_compatible

    monkeypatch.setattr(openai_compatible, "DONE_GRACE_SECONDS", 0.05)
    chunks = openai_stream(["a", "b"])[:-1]  # all but [DONE]
    got, ended_before, complete = _read(_events(chunks), more=b"data: [DONE]\n\n")
    assert ended_before and not complete  # not complete: its connection is closed
    assert got == chunks
    # [DONE] within the wait: complete, its connection kept for the next request
    got, ended_before, complete = _read(_events([*chunks, "[DONE]"]))
    assert ended_before and complete and got == chunks
    # the body's end within the wait: complete too
    got, ended_before, complete = _read(_events(chunks), ended=True)
    assert ended_before and complete and got == chunks
    n3 = choices_stream(["x", "y", "z"])[:-1]
    got, ended_before, complete = _read(_events(n3), choices=3, more=b"data: [DONE]\n\n")
    assert ended_before and not complete and got == n3


@pytest.mark.parametrize(
    "case",
    ["usage on the finishing chunk", "usage on every chunk", "a choice not finished"],
)
def test_usage_that_is_not_the_protocols_last_chunk_ends_nothing(monkeypatch, case):
    """Only the usage chunk (no choices) after every choice's finish reason is the end: usage
    on the finishing chunk (some servers), on every chunk (vLLM's continuous_usage_stats), or
    a usage chunk while a choice of `n` has not finished, and the stream waits for its end."""
    from completions.providers import openai_compatible

    monkeypatch.setattr(openai_compatible, "DONE_GRACE_SECONDS", 0.05)
    usage = {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
    text = _chunk([_choice(0, {"role": "assistant", "content": "a"})])
    finish = _chunk([_choice(0, {}, "stop")])
    choices = 1
    if case == "usage on the finishing chunk":
        chunks = [text, {**finish, "usage": usage}]
    elif case == "usage on every chunk":
        chunks = [{**text, "usage": usage}, {**finish, "usage": usage}]
    else:
        chunks, choices = [text, finish, _chunk([], usage=usage)], 2
    late = _chunk([_choice(1, {"content": "late"}, "stop")]) if choices == 2 else None
    more = b"".join(_events([late] if late else [])) + b"data: [DONE]\n\n"
    got, ended_before, complete = _read(_events(chunks), choices=choices, more=more)
    assert not ended_before and complete
    assert got == chunks + ([late] if late else [])


def _priced(operator_http, owner, key_id) -> None:
    """1 credit a token, prompt or completion."""
    Price.objects.create(model=PRICED, input_per_million=1, output_per_million=1)
    pricing.prices_changed()
    patch_workspace(operator_http, owner, {"credit_unit": {"per_usd": 1_000_000}})
    patch_key(operator_http, owner, key_id, {"budget": {"credits": 100_000, "period": "day"}})


@pytest.mark.usefixtures("limiter_awake")
def test_a_stream_of_several_choices_cut_before_its_usage_is_charged_every_choice(
    http, operator_http, owner, key_id, upstream
):
    """Choice 0's words alone were counted: `n` 3 cut before its usage cost what `n` 1 did,
    however much the other choices wrote (text, a refusal, a tool call, reasoning)."""
    _priced(operator_http, owner, key_id)
    text = "the first answer, of a few words"
    refusal = "I can't help with that, as the second choice says at some length"
    arguments = '{"text": "' + "a note the third choice writes " * 10 + '"}'
    thought = "the third choice thinks it over before it calls the tool"
    call = {"index": 0, "id": "call_1", "type": "function"}
    call["function"] = {"name": "save_note", "arguments": arguments}
    deltas = [
        {"role": "assistant", "content": text},
        {"role": "assistant", "content": None, "refusal": refusal},
        {
            "role": "assistant",
            "content": None,
            "reasoning_details": [{"type": "reasoning.text", "text": thought, "index": 0}],
            "tool_calls": [call],
        },
    ]
    prompt = charging.prompt_tokens({"messages": HI})

    def charged(n: int) -> float:
        # each choice's words, then the upstream goes away before any finish reason or usage
        chunks = [_chunk([_choice(i, delta)]) for i, delta in enumerate(deltas[:n])]
        upstream.script(Reply(stream=[*chunks, _chunk([_choice(0, {}, "stop")])], drop_after=n))
        body = {"model": PRICED, "messages": HI, "stream": True, "n": n}
        with http.stream("POST", URL, json=body) as resp:
            received = b"".join(resp.iter_bytes())
        assert b'"error"' in received  # the upstream went away mid-stream
        buffer.flush()
        request_id = resp.headers["x-request-id"]
        record = UsageRecord.objects.get(workspace=owner[0], request_id=request_id)
        # The tokens its credits were computed from (1 credit a token), marked estimated:
        # stored null, /v1/usage showed these credits against 0 tokens.
        assert record.incomplete and record.usage_estimated
        assert record.total_tokens == record.prompt_tokens + record.completion_tokens
        assert record.credits == record.total_tokens
        return record.credits

    one, three = charged(1), charged(3)
    words = [text, refusal, "save_note", arguments, thought]
    assert one == prompt + tokenizer.count(text)
    assert three == prompt + sum(tokenizer.count(w) for w in words)
    assert three > one
    totals = http.get("/v1/usage").json()["totals"]
    assert totals["total_tokens"] == totals["credits"] == one + three
    assert totals["estimated_requests"] == 2
