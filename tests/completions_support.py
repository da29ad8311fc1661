"""Shared helpers for the gateway's tests."""

import time

from completions import gateway


def spy_on_seam(monkeypatch) -> dict:
    """Wraps the real prepare_turn/finish_turn_soon, recording their arguments; `answer` lets a
    test decide what memory adds to the prepared turn (as memory will)."""
    calls = {"prepare": [], "finish": [], "answer": None}
    real_prepare, real_finish = gateway.prepare_turn, gateway.finish_turn_soon

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
    monkeypatch.setattr(gateway, "finish_turn_soon", finish)
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
