"""Shared helpers for the gateway's tests."""

import time

from completions import gateway
from completions import turn as turns


def spy_on_seam(monkeypatch) -> dict:
    """Wraps the real prepare_turn/finish_turn_soon, recording their arguments; `answer` lets a
    test decide what memory adds to the prepared turn (as memory will)."""
    calls = {"prepare": [], "finish": [], "answer": None}
    real_prepare, real_finish = gateway.prepare_turn, turns.finish_turn_soon

    async def prepare(ctx, **kwargs):
        calls["prepare"].append(ctx)
        prepared = await real_prepare(ctx, **kwargs)
        if calls["answer"]:
            return calls["answer"](ctx, prepared)
        return prepared

    def finish(ctx, prepared, **kwargs):
        calls["finish"].append((ctx, prepared, kwargs))
        return real_finish(ctx, prepared, **kwargs)

    monkeypatch.setattr(gateway, "prepare_turn", prepare)
    monkeypatch.setattr(turns, "finish_turn_soon", finish)
    return calls


def wait_for(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def stored_answer(http, conversation_id: str) -> dict:
    """The conversation's one assistant message, once stored (off the request path)."""
    deadline = time.monotonic() + 20
    while True:
        messages = http.get(f"/v1/conversations/{conversation_id}/messages").json()["data"]
        answers = [m for m in messages if m["role"] == "assistant"]
        if answers or time.monotonic() > deadline:
            assert len(answers) == 1, messages
            return answers[0]
        time.sleep(0.05)


def fed_response(loop) -> tuple:
    """aiohttp's StreamReader with nothing below it, and a response holding it as its body:
    a test feeds the reader (feed_data, feed_eof) and an OpenAIStream reads the response as
    the one a real connection gives. (reader, response)"""
    from aiohttp.streams import StreamReader

    class Protocol:  # what aiohttp's StreamReader asks of its connection
        connected = True
        _reading_paused = False

        def pause_reading(self, **_) -> None:
            pass

        def resume_reading(self, **_) -> None:
            pass

    class Response:
        connection = None  # no read timeout

        def __init__(self, content) -> None:
            self.content = content

        def close(self) -> None:
            pass

        def release(self) -> None:
            pass

    reader = StreamReader(Protocol(), 2**16, loop=loop)  # type: ignore[arg-type]
    return reader, Response(reader)
