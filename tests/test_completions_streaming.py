"""SSE relay behaviour: no buffering, keep-alives, cut streams, client disconnects."""

import json
import socket
import time

import openai
import pytest

from completions.models import UsageRecord
from completions.usage import buffer
from tests.completions_support import spy_on_seam, wait_for
from tests.test_completions_gateway import BODY, URL
from tests.upstream import Reply, openai_stream

STREAM = {**BODY, "stream": True}


@pytest.fixture
def seam(monkeypatch):
    return spy_on_seam(monkeypatch)


def frames_of(resp):
    return [line for line in resp.iter_lines() if line]


def test_client_disconnect_mid_stream_closes_upstream_within_1s(
    engram_server, owner, upstream, seam
):
    upstream.script(Reply(stream=openai_stream([f"w{i} " for i in range(200)]), delay=0.1))
    host, port = engram_server.url.removeprefix("http://").split(":")
    body = json.dumps(STREAM).encode()
    sock = socket.create_connection((host, int(port)))
    sock.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer {owner[1]}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    received = b""
    while received.count(b"data: ") < 3:  # the stream is flowing
        received += sock.recv(65536)
    sock.close()
    gone = time.monotonic()
    wait_for(lambda: upstream.disconnects, timeout=3)
    assert upstream.disconnects[0] - gone < 1.0
    assert upstream.open_streams == 0
    # memory hears about the cut turn, and the usage record says so
    wait_for(lambda: seam["finish"])
    kwargs = seam["finish"][0][2]
    assert kwargs["incomplete"] is True
    assert kwargs["assistant"]["content"].startswith("w0 ")
    buffer.flush()
    record = UsageRecord.objects.get(workspace=owner[0])
    assert record.incomplete and record.status_code == 499 and record.stream


def test_first_byte_is_not_buffered(http, upstream):
    upstream.script(Reply(stream=openai_stream(["a", "b", "c", "d"]), delay=0.3))
    started = time.monotonic()
    arrivals = []
    with http.stream("POST", URL, json=STREAM) as resp:
        for line in resp.iter_lines():
            if line.startswith("data: {"):
                arrivals.append(time.monotonic() - started)
    assert arrivals[0] < 0.25  # the role chunk left before the next upstream chunk existed
    assert arrivals[-1] > 1.2  # while the stream took its time
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:], strict=False)]
    assert sum(g > 0.2 for g in gaps) >= 4  # chunk by chunk, as the upstream sent them


def test_keepalive_comments_while_the_first_token_is_slow(http, upstream, settings):
    settings.ENGRAM_KEEPALIVE_SECONDS = 0.2
    upstream.script(Reply(stream=openai_stream(["late"]), first_delay=0.9))
    with http.stream("POST", URL, json=STREAM) as resp:
        assert resp.status_code == 200
        lines = frames_of(resp)
    first_data = next(i for i, line in enumerate(lines) if line.startswith("data:"))
    assert first_data >= 3 and all(line == ": keep-alive" for line in lines[:first_data])
    assert lines[-1] == "data: [DONE]"


def test_keepalive_comments_after_a_first_event_that_is_no_chunk(http, upstream, settings):
    """The first event read ahead is JSON but no object (skipped): the first chunk is not in
    hand, so the relay waits for it beside keep-alives rather than blocking without them."""
    settings.ENGRAM_KEEPALIVE_SECONDS = 0.1
    upstream.script(Reply(stream=["5", *openai_stream(["late"])], delay=0.5))
    with http.stream("POST", URL, json=STREAM) as resp:
        assert resp.status_code == 200
        lines = frames_of(resp)
    first_data = next(i for i, line in enumerate(lines) if line.startswith("data:"))
    assert first_data >= 2 and all(line == ": keep-alive" for line in lines[:first_data])
    assert "late" in "".join(lines) and lines[-1] == "data: [DONE]"


def test_a_waking_task_wakes_its_waiter_and_lets_a_cancelled_one_go():
    """done_within on a waking_task: True once it ended, False at the timeout (the task still
    running), and a waiter cancelled while waiting leaves no wake behind; a waking task
    cancelled before its first step closes its coroutine (no 'never awaited')."""
    import asyncio
    import warnings

    from completions.streaming import done_within, waking_task

    async def scenario():
        release = asyncio.Event()

        async def work():
            await release.wait()
            return "answer"

        task = waking_task(work())
        assert await done_within(task, 0.05) is False and not task.done()
        waiting = asyncio.get_running_loop().create_task(done_within(task, 5))
        await asyncio.sleep(0)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert task.engram_wakes == []
        release.set()
        assert await done_within(task, 5) is True and task.result() == "answer"
        unstarted = waking_task(work())
        unstarted.cancel()
        with pytest.raises(asyncio.CancelledError):
            await unstarted

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        asyncio.run(scenario())
        import gc

        gc.collect()
    assert not [w for w in caught if "never awaited" in str(w.message)]


def test_keepalive_stream_still_reads_with_the_sdk(engram_server, owner, upstream, settings):
    settings.ENGRAM_KEEPALIVE_SECONDS = 0.1
    upstream.script(Reply(stream=openai_stream(["slow ", "answer"]), first_delay=0.5))
    sdk = openai.OpenAI(base_url=engram_server.url + "/v1", api_key=owner[1], max_retries=0)
    chunks = list(sdk.chat.completions.create(**STREAM))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "slow answer"


def test_error_before_the_stream_is_a_plain_status(http, upstream):
    upstream.script(
        Reply(
            status=400,
            json={"error": {"message": "bad upstream field", "type": "invalid_request_error"}},
        )
    )
    resp = http.post(URL, json=STREAM)
    assert resp.status_code == 400 and resp.json()["error"]["message"] == "bad upstream field"


def test_error_after_first_byte_is_one_error_frame_then_done(http, upstream, engram_server, owner):
    upstream.script(Reply(stream=openai_stream(["a", "b", "c"]), drop_after=3))
    with http.stream("POST", URL, json=STREAM) as resp:
        lines = frames_of(resp)
    assert lines[-1] == "data: [DONE]"
    error = json.loads(lines[-2][6:])["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    assert sum("error" in line for line in lines) == 1
    # the SDK surfaces it as an exception while iterating
    upstream.script(Reply(stream=openai_stream(["a", "b", "c"]), drop_after=3))
    sdk = openai.OpenAI(base_url=engram_server.url + "/v1", api_key=owner[1], max_retries=0)
    with pytest.raises(openai.APIError):
        list(sdk.chat.completions.create(**STREAM))


def test_a_stream_without_done_is_complete_once_its_answer_says_why_it_stopped(http, upstream):
    """llama.cpp's server (before PR 9459) and ik_llama.cpp end a stream at its last chunk,
    with no [DONE]: every such answer ended in an error frame and was stored incomplete."""
    headers = {"x-user-id": "lc", "x-conversation-id": "no-done"}
    upstream.script(Reply(stream=openai_stream(["a", "b"])[:-1]))  # all but [DONE]
    with http.stream("POST", URL, json=STREAM, headers=headers) as resp:
        lines = frames_of(resp)
    assert lines[-1] == "data: [DONE]" and not any('"error"' in line for line in lines)
    assert "engram" in json.loads(lines[-2][6:])
    stored = http.get("/v1/conversations/no-done/messages").json()["data"]
    assert [(m["role"], m["content"], m["incomplete"]) for m in stored][-1] == (
        "assistant",
        "ab",
        False,
    )
    # cut before the answer said why it stopped: still a failure
    upstream.script(Reply(stream=openai_stream(["a", "b"])[:-3]))
    with http.stream("POST", URL, json=STREAM) as resp:
        lines = frames_of(resp)
    assert "ended before it was complete" in json.loads(lines[-2][6:])["error"]["message"]


def test_engrams_own_last_chunk_is_a_whole_chunk_when_the_upstream_sent_none(
    engram_server, owner, upstream
):
    """An upstream stream of only [DONE] (a proxy's empty answer): the chunk Engram adds to
    carry its `engram` block had a null id, created and model, which OpenAI's schema does not
    allow (the SDK's strict validation refused the stream)."""
    upstream.script(Reply(stream=["[DONE]"]))
    strict = openai.OpenAI(
        base_url=engram_server.url + "/v1",
        api_key=owner[1],
        max_retries=0,
        _strict_response_validation=True,
    )
    chunks = list(
        strict.chat.completions.create(model="gpt-4o-mini", messages=BODY["messages"], stream=True)
    )
    (last,) = chunks
    assert last.id.startswith("chatcmpl-") and isinstance(last.created, int)
    assert last.model == "gpt-4o-mini" and last.choices == []
    assert last.model_extra["engram"]["request_id"]


def test_upstream_error_event_is_relayed_as_one_frame(http, upstream):
    chunks = openai_stream(["a"])[:2] + [
        {"error": {"message": "overloaded", "type": "server_error"}}
    ]
    upstream.script(Reply(stream=chunks))
    with http.stream("POST", URL, json=STREAM) as resp:
        lines = frames_of(resp)
    assert json.loads(lines[-2][6:])["error"]["message"] == "overloaded"
    assert lines[-1] == "data: [DONE]"


def test_role_delta_comes_first_even_if_the_upstream_omits_it(http, upstream):
    chunks = [
        c
        for c in openai_stream(["x", "y"])
        if c == "[DONE]" or c["choices"] == [] or "role" not in c["choices"][0]["delta"]
    ]
    upstream.script(Reply(stream=chunks))
    with http.stream("POST", URL, json=STREAM) as resp:
        payloads = [json.loads(line[6:]) for line in frames_of(resp) if line.startswith("data: {")]
    assert payloads[0]["choices"][0]["delta"] == {"role": "assistant", "content": "x"}
    assert all("role" not in p["choices"][0]["delta"] for p in payloads[1:] if p["choices"])


def test_what_orjson_refuses_is_still_written_as_json():
    """An upstream's lone surrogate (escaped in its JSON), an integer past 64 bits and a
    non-string key survive Engram's re-encoding as valid UTF-8 JSON with the same values."""
    import json

    from completions.streaming import dumps

    data = {"text": "caf\u00e9 \ud800", "big": 2**70, "nested": {"n": [1, 2.5, None]}}
    written = dumps(data)
    written.decode("utf-8")  # valid UTF-8, or this raises
    assert json.loads(written) == data
    assert json.loads(dumps({1: "one"})) == {"1": "one"}
    plain = {"text": "caf\u00e9", "n": 1}
    assert dumps(plain) == json.dumps(plain, separators=(",", ":"), ensure_ascii=False).encode()


def test_a_chunk_goes_out_as_the_upstream_wrote_it_without_its_null_usage(http, upstream):
    # OpenAI's chunks carry "usage": null when usage is asked for (Engram always asks); a
    # client that did not ask gets the upstream's own bytes without that member, not the
    # chunk written anew (which would also have lost the upstream's spacing).
    chunks = [
        c if c == "[DONE]" or c["choices"] == [] else {**c, "usage": None}
        for c in openai_stream(["a", "b"])
    ]
    upstream.script(Reply(stream=chunks))
    with http.stream("POST", URL, json=STREAM) as resp:
        lines = [line for line in frames_of(resp) if line.startswith("data: {")]
    expected = [
        "data: " + json.dumps({k: v for k, v in c.items() if k != "usage"}) for c in chunks[:3]
    ]
    assert lines[:3] == expected
    assert not any('"usage"' in line for line in lines)


def test_the_usual_chunk_takes_the_short_way_to_the_same_frames_and_text():
    """Tail.usual relays the usual chunk (one choice, text only) without Assembler.add and
    Tail.take; every chunk, usual or not, must give the same frames, text, usage and head."""
    from completions.providers.base import Chunk
    from completions.providers.wire import loads
    from completions.streaming import Assembler, Tail

    def chunk(choices, **extra) -> bytes:
        head = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m"}
        return json.dumps({**head, "choices": choices, **extra}).encode()

    def choice(delta, index=0, finish=None) -> dict:
        return {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}

    call = {"index": 0, "id": "t1", "function": {"name": "f", "arguments": "{}"}}
    raws = [
        chunk([choice({"role": "assistant", "content": ""})]),
        chunk([choice({"content": "a"})]),
        chunk([choice({"content": "b"})], usage=None),
        chunk([choice({"content": "c"}), choice({"content": "x"}, index=1)]),
        chunk([choice({"content": "d"}, index=1)]),
        chunk([choice({})]),
        chunk([choice(None)]),
        chunk([{"delta": {"content": "e"}}]),
        chunk([{"index": 0}]),
        chunk([choice({"tool_calls": [call]})]),
        chunk([choice({"content": "f"})], usage={"total_tokens": 3}),
        chunk([choice({"content": "g"})]),
        chunk([choice({}, finish="stop")]),
        chunk([], usage={"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}),
    ]
    for include_usage in (False, True):
        results, short = [], 0
        for short_way in (False, True):
            assembler, tail = Assembler(), Tail(include_usage, set(), None)
            frames = []
            for raw in raws:
                data = Chunk(loads(raw), raw)
                sent = tail.usual(data, assembler) if short_way else None
                if sent is None:
                    assembler.add(data.data)
                    sent = tail.take(data)
                else:
                    short += 1
                frames.append(sent)
            frames.append(tail.flush({"credits_charged": 0.5}))
            results.append((frames, assembler.assistant(), assembler.usage, assembler.head))
        assert results[0] == results[1]
        assert short == 5  # a, b (its null usage dropped or kept), the empty delta, e and g
        assert results[1][1]["content"] == "abcefg" and results[1][1]["tool_calls"]


def test_sse_parser_reads_events_cut_anywhere():
    from completions.providers.wire import SseParser

    stream = (
        b': a comment\r\n\r\ndata: {"a": 1}\r\n\r\nevent: delta\ndata: one\ndata:two\n\n'
        b"id: 7\nretry: 10\ndata: [DONE]\n\ndata: tail"
    )
    expected = [(None, b'{"a": 1}'), ("delta", b"one\ntwo"), (None, b"[DONE]"), (None, b"tail")]
    for size in (1, 2, 3, 5, 8, 13, len(stream)):
        parser = SseParser()
        events = []
        for start in range(0, len(stream), size):
            events += parser.feed(stream[start : start + size])
        assert events + parser.end() == expected, size


def test_sse_parser_reads_whole_reads_as_it_reads_them_byte_by_byte():
    """A read that looks like the usual one (`data: ` ... blank line) takes a short way: it
    must give the events the general search gives."""
    from completions.providers.wire import SseParser

    reads = [
        b'data: {"a": 1}\n\n',
        b"data: \n\n",
        b'data: {"a": 1}\n\ndata: {"b": 2}\n\n',
        b"data: one\ndata: two\n\n",
        b"data: one\r\n\n",
        b"data: one\ndata:\n\n",
        b"data: one\nevent: x\n\n",
        b"data: a\rb\n\n",
        b"data:  spaced\n\n",
    ]
    for read in reads:
        by_byte = SseParser()
        expected = [event for byte in range(len(read)) for event in by_byte.feed(read[byte:][:1])]
        whole = SseParser()
        assert whole.feed(read) == expected, read
        assert whole.end() == by_byte.end() and whole.pending == b"", read


def test_the_last_frames_leave_with_the_end_of_the_body():
    import asyncio

    from completions.asgi import send_stream
    from completions.streaming import DONE

    async def parts():
        yield b"data: {}\n\n"
        yield b"data: {}\n\n" + DONE

    messages: list[dict] = []

    async def send(message):
        messages.append(message)

    asyncio.run(send_stream(send, 200, [], parts()))
    bodies = [(m["body"], m.get("more_body", False)) for m in messages[1:]]
    assert bodies == [(b"data: {}\n\n", True), (b"data: {}\n\n" + DONE, False)]


def test_an_upstream_silent_mid_stream_times_out_as_one_error_frame(http, upstream, settings):
    settings.ENGRAM_UPSTREAM_TIMEOUT = 0.3  # between two reads of the upstream's body
    upstream.script(Reply(stream=openai_stream(["a", "late"]), delay=3))
    with http.stream("POST", URL, json=STREAM) as resp:
        assert resp.status_code == 200
        lines = frames_of(resp)
    assert lines[-1] == "data: [DONE]"
    error = json.loads(lines[-2][6:])["error"]
    assert error["type"] == "timeout_error" and "timed out mid-stream" in error["message"]
    assert not any("late" in line for line in lines)
    wait_for(lambda: upstream.disconnects, timeout=5)  # its connection closed, not pooled


def test_the_read_timeout_is_per_read_not_per_stream(http, upstream, settings):
    settings.ENGRAM_UPSTREAM_TIMEOUT = 0.3
    pieces = [f"w{i}" for i in range(6)]  # 0.15 s apart: the stream takes ~1.2 s in all
    upstream.script(Reply(stream=openai_stream(pieces), delay=0.15))
    with http.stream("POST", URL, json=STREAM) as resp:
        lines = frames_of(resp)
    assert lines[-1] == "data: [DONE]" and not any('"error"' in line for line in lines)
    deltas = [json.loads(line[6:])["choices"][0]["delta"] for line in lines[:-1]]
    assert "".join(delta.get("content") or "" for delta in deltas) == "".join(pieces)
    # the pooled connection the stream read still times out the next request's reads
    upstream.script(Reply(json={"id": "x"}, delay=2))
    error = http.post(URL, json=BODY).json()["error"]
    assert error["code"] == "upstream_timeout"


def test_the_read_timeout_lets_a_stream_nobody_holds_go():
    import asyncio
    import gc

    from aiohttp.streams import StreamReader

    from completions.providers.base import HttpStream

    class Protocol:  # what aiohttp's StreamReader and ReadTimeout.take_over ask of it
        connected = True
        _reading_paused = False
        read_timeout: float | None = 60.0

        def pause_reading(self, **_) -> None:
            pass

        def resume_reading(self, **_) -> None:
            pass

    class Response:
        def __init__(self, content, protocol) -> None:
            self.content = content
            self.connection = type("Connection", (), {"protocol": protocol})()

    async def main() -> None:
        protocol = Protocol()
        reader = StreamReader(protocol, 2**16, loop=asyncio.get_running_loop())  # type: ignore[arg-type]
        stream = HttpStream(Response(reader, protocol), 1.0)  # type: ignore[arg-type]
        timer = stream.read_timeout
        assert timer is not None and timer.handle is not None
        assert protocol.read_timeout is None  # aiohttp's timer per read is off for this body
        del stream
        gc.collect()
        timer.check()
        assert timer.handle is None  # no timer left running for a stream that is gone

    asyncio.run(main())


def _openai_chunks(content_of) -> list:
    """What OpenAIStream.chunks gives, or raises, for a response whose body is `content_of()`
    (made in the loop that reads it); a wait past 10 s fails (TimeoutError), not hangs."""
    import asyncio

    from completions.providers.openai_compatible import OpenAIStream

    class Response:
        connection = None  # no read timeout

        def __init__(self, content) -> None:
            self.content = content

    async def read() -> list:
        stream = OpenAIStream(Response(content_of()), 1.0)  # type: ignore[arg-type]
        return [chunk.data async for chunk in stream.chunks()]

    async def main() -> list:
        return await asyncio.wait_for(read(), timeout=10)

    return asyncio.run(main())


def test_an_openai_stream_reads_an_empty_body_as_one_cut_short():
    """aiohttp gives a body it knows is empty its own reader, not a StreamReader (OpenAIStream
    waits on a StreamReader directly, on anything else through readany)."""
    from aiohttp.streams import EmptyStreamReader

    from completions.providers.base import StreamFailed

    with pytest.raises(StreamFailed, match="ended before it was complete"):
        _openai_chunks(EmptyStreamReader)


def test_an_openai_stream_waiting_on_a_closed_connection_fails_as_readany_does():
    """aiohttp's readany refuses to wait for a body whose connection is gone: OpenAIStream,
    which waits on the reader directly, too (it would wait for ever)."""
    import asyncio

    from aiohttp.streams import StreamReader

    class Protocol:
        connected = False
        _reading_paused = False

        def pause_reading(self, **_) -> None:
            pass

        def resume_reading(self, **_) -> None:
            pass

    def reader() -> StreamReader:
        return StreamReader(Protocol(), 2**16, loop=asyncio.get_running_loop())  # type: ignore[arg-type]

    with pytest.raises(RuntimeError, match="Connection closed"):
        _openai_chunks(reader)


def test_the_installed_aiohttp_has_the_reader_fields_the_direct_read_uses():
    """OpenAIStream.chunks reads aiohttp's StreamReader's private fields itself (~3,800
    instructions a relayed frame); an aiohttp without one of them falls back to `readany`
    silently. This says so when an upgrade does that, rather than a slower relay nobody sees."""
    from completions.providers import openai_compatible

    assert openai_compatible._READER_KNOWN, openai_compatible._READER_FIELDS


def test_sse_parser_keeps_a_long_event_in_one_buffer_grown_in_place():
    """An event cut across many reads (a delta holding an image or audio: megabytes) was joined
    to each read anew and searched from its start: the reads' work grew with the square of the
    event's size (8 MB in 64 KB reads: 2 s of the event loop, 32 MB: a minute, every stream of
    the process stalled). The event so far is one buffer, grown in place and searched where it
    grew; it comes out whole, its CRLFs cut between reads read as LF."""
    from completions.providers.wire import SseParser

    text = b"x" * (1 << 20)
    stream = (
        b'event: delta\r\ndata: {"a": "' + text + b'"}\r\ndata: more\r\n\r\ndata: [DONE]\r\n\r\n'
    )
    parser = SseParser()
    events = []
    buffers = set()
    for start in range(0, len(stream), 4093):  # the CRs and LFs fall across reads
        events += parser.feed(stream[start : start + 4093])
        if parser.pending:
            buffers.add(id(parser.pending))
    assert events + parser.end() == [
        ("delta", b'{"a": "' + text + b'"}\nmore'),
        (None, b"[DONE]"),
    ]
    assert len(buffers) == 1  # never copied into a new one
