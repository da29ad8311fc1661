"""A stream's usual chunks (the same bytes around a plain text: completions.providers.base's
UsualShape) are relayed and stored without being parsed: what the client receives and what is
stored must be what a parse of every chunk gave, whatever the chunks' bytes."""

from __future__ import annotations

import json

import pytest

from tests.completions_support import fed_response, stored_answer
from tests.upstream import Reply

URL = "/v1/chat/completions"
USAGE = {"prompt_tokens": 9, "completion_tokens": 7, "total_tokens": 16}


def _raw(delta: dict | None, *, finish: str | None = None, created: int = 1, **top) -> str:
    """A chunk as OpenAI writes it when usage is asked for: compact, `"usage":null` on each,
    non-ASCII as itself (UTF-8)."""
    data: dict = {"id": "chatcmpl-u", "object": "chat.completion.chunk", "created": created}
    data |= {"model": "gpt-4o-mini", "system_fingerprint": "fp_1"}
    choices = [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
    data |= {"choices": choices if delta is not None else [], "usage": None} | top
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


# The pieces as the client must see them, and the bytes the upstream wrote them in: plainly
# (the usual shape), with escapes (parsed), in a chunk whose `created` differs (parsed).
PIECES = [
    ("Hello", _raw({"content": "Hello"})),
    (" wörld", _raw({"content": " wörld"})),
    (' "quoted"', _raw({"content": ' "quoted"'})),
    ("\nnext line", _raw({"content": "\nnext line"})),
    (" caf\u00e9", _raw({"content": " caf\u00e9"}).replace("é", "\\u00e9")),
    (" later", _raw({"content": " later"}, created=2)),
    (" usual", _raw({"content": " usual"})),
    (" again.", _raw({"content": " again."})),
]
TEXT = "".join(text for text, _ in PIECES)


def _stream() -> list:
    return [
        _raw({"role": "assistant", "content": ""}),
        *(raw for _, raw in PIECES),
        _raw({}, finish="stop"),
        _raw(None, usage=USAGE),
        "[DONE]",
    ]


def _frames(text: str) -> list[str]:
    return [line[6:] for line in text.splitlines() if line.startswith("data: ")]


@pytest.mark.parametrize(
    ("include_usage", "usage_first"), [(False, False), (True, False), (False, True)]
)
def test_usual_chunks_reach_the_client_as_sent_and_the_answer_is_stored_whole(
    http, upstream, include_usage, usage_first
):
    stream = _stream()
    if usage_first:  # the same chunks, `"usage":null` before the choices
        stream = [
            item.replace(',"usage":null', "").replace(
                '"system_fingerprint":"fp_1",', '"system_fingerprint":"fp_1","usage":null,'
            )
            for item in stream
        ]
    upstream.script(Reply(stream=stream))
    conversation = f"usual-{include_usage}-{usage_first}"
    body = {
        "model": "gpt-4o-mini",
        "stream": True,
        "messages": [{"role": "user", "content": "Say it in pieces."}],
    }
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    headers = {"x-user-id": "u-usual", "x-conversation-id": conversation}
    response = http.post(URL, json=body, headers=headers)
    assert response.status_code == 200, response.text
    frames = _frames(response.text)
    assert frames[-1] == "[DONE]"
    chunks = [json.loads(frame) for frame in frames[:-1]]
    assert not [c for c in chunks if "error" in c], chunks
    texts = [c["choices"][0]["delta"].get("content") for c in chunks if c["choices"]]
    assert "".join(t for t in texts if t) == TEXT
    assert texts[1 : 1 + len(PIECES)] == [text for text, _ in PIECES]  # one frame each
    # The upstream's own bytes, less `"usage":null` for a client that did not ask for usage.
    sent = stream[1 : 1 + len(PIECES)]
    relayed = frames[1 : 1 + len(PIECES)]
    if include_usage:
        assert relayed == sent
        assert chunks[-1]["usage"] == USAGE and not chunks[-1]["choices"]  # the usage chunk last
        assert "engram" in chunks[-1]
    else:
        member = '"usage":null,' if usage_first else ',"usage":null'
        assert relayed == [raw.replace(member, "") for raw in sent]
        assert all(member in raw for raw in sent)
        assert not [c for c in chunks if "usage" in c], chunks
        assert chunks[-1]["choices"][0]["finish_reason"] == "stop" and "engram" in chunks[-1]
    assert stored_answer(http, conversation)["content"] == TEXT


def test_a_usual_chunk_with_a_raw_control_character_fails_the_stream_as_before(http, upstream):
    """JSON refuses a control character unescaped in a string (orjson and the stdlib both): the
    chunk is malformed, though its bytes around the text are the usual ones."""
    broken = _raw({"content": "tab\there"})  # json.dumps escapes it: unescape it
    assert "\\t" in broken
    stream = _stream()
    stream.insert(4, broken.replace("\\t", "\t"))
    upstream.script(Reply(stream=stream))
    body = {"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "x"}]}
    response = http.post(URL, json=body)
    assert response.status_code == 200
    frames = _frames(response.text)
    assert frames[-1] == "[DONE]"
    error = json.loads(frames[-2])["error"]
    assert error["message"] == "The upstream provider sent a malformed stream chunk."
    texts = [json.loads(f)["choices"][0]["delta"].get("content") for f in frames[1:4]]
    assert texts == ["Hello", " wörld", ' "quoted"']  # what came before it went out


def _relayed(reads: list[bytes], *, include_usage: bool = True) -> tuple[list[str], dict | None]:
    """The frames a client receives for an OpenAI stream whose body comes in `reads` (one read
    of aiohttp's reader each), and the answer the turn is finished with: the relay below HTTP,
    so each read is the reader's read, not the socket's."""
    import asyncio

    from completions.asgi import send_stream
    from completions.providers.openai_compatible import OpenAIStream
    from completions.streaming import relay

    finished: dict = {}

    class Turn:
        engram = {"request_id": "req_1"}

        def stream_opened(self, stream) -> None:
            pass

        def finish(self, **kwargs) -> None:
            finished.update(kwargs)

        async def reply_committed(self) -> None:
            pass

        def usage_charged(self) -> dict | None:
            return None

    sent: list[bytes] = []

    async def send(message: dict) -> None:
        sent.append(message.get("body", b""))

    async def main() -> None:
        loop = asyncio.get_running_loop()
        reader, response = fed_response(loop)
        opened = loop.create_future()
        opened.set_result(OpenAIStream(response, 1.0))
        stream = relay(Turn(), opened, include_usage=include_usage, keepalive=15)  # type: ignore[arg-type]
        task = asyncio.ensure_future(send_stream(send, 200, [], stream))
        for read in reads:  # each its own read: the relay takes it before the next comes
            for _ in range(5):
                await asyncio.sleep(0)
            reader.feed_data(read)
        reader.feed_eof()
        await task

    asyncio.run(main())
    return _frames(b"".join(sent).decode()), finished.get("assistant")


def _events(stream: list[str]) -> list[bytes]:
    return [f"data: {item}\n\n".encode() for item in stream]


def test_a_stream_relays_the_same_whatever_its_reads():
    """A read that is one whole usual event goes out as it came, not split or written
    (UsualShape.read_event); two events in one read, or an event cut across reads, are the
    SSE parser's to split: the client's frames and the answer are the same either way."""
    events = _events(_stream())
    body = b"".join(events)
    one_each, answer = _relayed(events)
    assert one_each[1 : 1 + len(PIECES)] == [raw for _, raw in PIECES]  # as the upstream sent
    assert answer is not None and answer["content"] == TEXT
    pairs = [b"".join(events[i : i + 2]) for i in range(0, len(events), 2)]
    cut = [body[i : i + 97] for i in range(0, len(body), 97)]
    shifted = [events[0][:-1], *(b"\n" + e[:-1] for e in events[1:]), b"\n"]  # blank line late
    for reads in (pairs, cut, shifted):
        assert _relayed(reads) == (one_each, answer), reads


def test_a_usual_read_after_an_unfinished_event_is_that_events_next_line():
    """An event's `data:` line without its blank line, then a read that alone would be a usual
    event: the parser joins them into one event (not JSON: the stream fails), as it did before
    the usual read's short way."""
    events = _events(_stream())
    assert PIECES[1][0] == " wörld" and PIECES[6][0] == " usual"  # both usual chunks
    reads = [*events[:2], events[2][:-1], events[7], *events[8:]]  # " wörld" ends late
    frames, answer = _relayed(reads)
    error = json.loads(frames[-2])["error"]
    assert error["message"] == "The upstream provider sent a malformed stream chunk."
    assert answer is not None and answer["content"] == "Hello"


def test_a_usual_chunk_sent_in_two_lines_keeps_its_reads_to_the_parser():
    """A usual chunk whose JSON came in two `data:` lines (joined by a line end): a later read
    with the same bytes, the second line without its `data:`, is no such event (the parser
    reads its first line alone: not JSON, the stream fails), though its bytes around the text
    are the shape's."""
    stream = _stream()
    hello, world = stream[1], stream[2]
    at = hello.index(',"model"') + 1
    assert world.index(',"model"') + 1 == at
    reads = [
        *_events(stream[:1]),
        f"data: {hello[:at]}\ndata: {hello[at:]}\n\n".encode(),  # two lines: one event
        f"data: {world[:at]}\n{world[at:]}\n\n".encode(),  # the second line no data line
        *_events(stream[3:]),
    ]
    frames, answer = _relayed(reads)
    error = json.loads(frames[-2])["error"]
    assert error["message"] == "The upstream provider sent a malformed stream chunk."
    assert answer is not None and answer["content"] == "Hello"
