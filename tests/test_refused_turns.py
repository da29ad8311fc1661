"""A request refused for what it holds leaves no turn behind: with x-conversation-id an SDK
sends its new message alone, and a message kept after its refusal was history that every later
turn of the conversation carried to the same refusal.

The official `openai` client against Engram and the loopback upstream."""

from __future__ import annotations

import time

import openai
import pytest

from memory.models import Message
from tests.upstream import Reply, anthropic_message, anthropic_stream, openai_completion

AUDIO = [{"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}]
BAD_IMAGE = [{"type": "image_url", "image_url": {"url": "https://example.invalid/cat.png"}}]
IMAGE_REFUSED = {
    "error": {
        "message": "Invalid image URL: unable to download.",
        "type": "invalid_request_error",
        "param": "messages[0].content[0].image_url",
        "code": "invalid_image_url",
    }
}


def _client(server, key, conversation: str) -> openai.OpenAI:
    headers = {"x-user-id": "refused-user", "x-conversation-id": conversation}
    return openai.OpenAI(
        base_url=server.url + "/v1", api_key=key, default_headers=headers, max_retries=0
    )


def _stored(conversation: str) -> list[tuple[str, str]]:
    """The conversation's messages, once the turns before have finished (off the path)."""
    rows = Message.objects.filter(conversation__external_id=conversation)
    deadline = time.monotonic() + 20
    while rows.filter(role="assistant").count() < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    return list(rows.order_by("created_at", "id").values_list("role", "content"))


def _sent(upstream) -> list[dict]:
    return [m for m in upstream.chat_requests()[-1].body["messages"] if m["role"] != "system"]


@pytest.mark.parametrize("stream", [False, True])
def test_a_part_claude_cannot_read_does_not_refuse_the_conversations_later_turns(
    engram_server, owner, upstream, stream
):
    """An audio part sent to Claude is a 400; kept, every later turn of the conversation
    resent it and was refused the same way, naming a message the client never sent."""
    user = _client(engram_server, owner[1], "audio-then-text")
    with pytest.raises(openai.BadRequestError) as refused:
        user.chat.completions.create(
            model="claude-sonnet-4-5", messages=[{"role": "user", "content": AUDIO}]
        )
    assert refused.value.body["code"] == "unsupported"

    reply = Reply(stream=anthropic_stream(["Hello."])) if stream else None
    upstream.script(reply or Reply(json=anthropic_message("Hello.")))
    answer = user.chat.completions.create(
        model="claude-sonnet-4-5",
        messages=[{"role": "user", "content": "Hello?"}],
        stream=stream,
    )
    if stream:
        assert "".join(c.choices[0].delta.content or "" for c in answer if c.choices) == "Hello."
    else:
        assert answer.choices[0].message.content == "Hello."
    sent = upstream.chat_requests()[-1].body["messages"]
    assert sent == [{"role": "user", "content": [{"type": "text", "text": "Hello?"}]}]
    assert [role for role, _ in _stored("audio-then-text")] == ["user", "assistant"]


@pytest.mark.parametrize("stream", [False, True])
def test_a_message_the_upstream_refused_is_not_history(engram_server, owner, upstream, stream):
    """OpenAI refuses an image it cannot download (400 invalid_image_url): the next turn of the
    conversation sent that image again, and was refused again, for good."""
    user = _client(engram_server, owner[1], "bad-image")
    upstream.script(Reply(json=IMAGE_REFUSED, status=400))
    with pytest.raises(openai.BadRequestError) as refused:
        user.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": BAD_IMAGE}], stream=stream
        )
    assert refused.value.body["code"] == "invalid_image_url"

    upstream.script(Reply(json=openai_completion("A cat, I suppose.")))
    user.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "What was it?"}]
    )
    assert _sent(upstream) == [{"role": "user", "content": "What was it?"}]
    assert _stored("bad-image") == [("user", "What was it?"), ("assistant", "A cat, I suppose.")]


def test_a_failure_that_is_not_a_refusal_keeps_the_question(
    engram_server, owner, upstream, settings
):
    """An upstream down (502) or busy (429) says nothing of the message: it stays, as the
    question of a turn that got no answer (a retry finds it; the sweep extracts it)."""
    settings.ENGRAM_UPSTREAM_RETRIES = 0
    user = _client(engram_server, owner[1], "down-then-up")
    upstream.script(Reply(json={"error": {"message": "down"}}, status=503))
    with pytest.raises(openai.InternalServerError):
        user.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "Still there?"}]
        )
    upstream.script(Reply(json=openai_completion("Yes.")))
    user.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Hello?"}]
    )
    assert _sent(upstream) == [
        {"role": "user", "content": "Still there?"},
        {"role": "user", "content": "Hello?"},
    ]


def test_a_refusal_after_the_keep_alives_began_is_not_history(
    engram_server, owner, upstream, settings
):
    """An upstream slower to refuse than the first keep-alive: the stream's 200 has gone out
    and the refusal is its error frame; the message it refused is taken out all the same."""
    settings.ENGRAM_KEEPALIVE_SECONDS = 0.1
    user = _client(engram_server, owner[1], "slow-refusal")
    upstream.script(Reply(json=IMAGE_REFUSED, status=400, first_delay=0.5))
    with pytest.raises(openai.APIError, match="Invalid image URL"):
        for _ in user.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": BAD_IMAGE}], stream=True
        ):
            pass

    upstream.script(Reply(json=openai_completion("A cat, I suppose.")))
    user.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "What was it?"}]
    )
    assert _sent(upstream) == [{"role": "user", "content": "What was it?"}]
