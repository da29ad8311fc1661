"""Anthropic's error event before anything of the answer: a status, retried as that status is,
not a 200 and an error frame. The official `openai` client against Engram and the loopback
upstream."""

from __future__ import annotations

import openai
import pytest

from tests.upstream import Reply, anthropic_stream

MODEL = "claude-3-5-sonnet-latest"
OVERLOADED = (
    "error",
    {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
)
HI = [{"role": "user", "content": "Hi"}]


def _started(block: dict) -> list:
    """message_start, then the start of `block` (index 0)."""
    message_start = anthropic_stream(["unused"], model=MODEL)[0]
    start = {"type": "content_block_start", "index": 0, "content_block": block}
    return [message_start, ("content_block_start", start)]


@pytest.mark.parametrize(
    "block",
    [
        {"type": "text", "text": ""},
        {"type": "thinking", "thinking": "", "signature": ""},
        {"type": "redacted_thinking", "data": "opaque"},
    ],
)
def test_an_overload_after_a_block_start_without_words_is_retried(sdk, upstream, settings, block):
    """Anthropic's stream starts its first text block (empty) before its first words, and an
    overload may come right then: nothing was answered, but the client got a 200 and an error
    frame, which neither Engram nor its SDK retries."""
    settings.ENGRAM_UPSTREAM_RETRY_BACKOFF = 0.01
    upstream.script(Reply(stream=[*_started(block), ("ping", {"type": "ping"}), OVERLOADED]))
    chunks = list(sdk.chat.completions.create(model=MODEL, messages=HI, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "echo: Hi"
    assert len(upstream.chat_requests()) == 2


def test_an_error_after_the_first_words_quoting_the_provider_key_is_relayed_without_it(
    sdk, upstream, settings
):
    """Anthropic's error event mid-stream, quoting the request's key (a proxy's): it went out
    in the error frame as it came."""
    key = settings.ANTHROPIC_API_KEY
    assert len(key) >= 8  # shorter is no secret, and not masked
    quoted = ("error", {"type": "error", "error": {"type": "api_error", "message": f"bad {key}"}})
    upstream.script(Reply(stream=[*_started({"type": "text", "text": "Hel"}), quoted]))
    with pytest.raises(openai.APIError) as failed:
        for _ in sdk.chat.completions.create(model=MODEL, messages=HI, stream=True):
            pass
    assert "bad ***" in failed.value.message and key not in failed.value.message


def test_an_overload_after_the_first_words_is_the_streams_error_frame(sdk, upstream, settings):
    """Once words went out, the status has too: the overload is an error frame, not retried."""
    settings.ENGRAM_UPSTREAM_RETRY_BACKOFF = 0.01
    started = _started({"type": "text", "text": "Hel"})
    upstream.script(Reply(stream=[*started, OVERLOADED]))
    with pytest.raises(openai.APIError, match="Overloaded"):
        for _ in sdk.chat.completions.create(model=MODEL, messages=HI, stream=True):
            pass
    assert len(upstream.chat_requests()) == 1
