"""A stream's usual chunks (the same bytes around a plain text: completions.providers.base's
UsualShape) are relayed and stored without being parsed: what the client receives and what is
stored must be what a parse of every chunk gave, whatever the chunks' bytes."""

from __future__ import annotations

import json

import pytest

from tests.completions_support import stored_answer
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
