"""A first turn the upstream refuses for what it holds leaves no conversation behind: its
messages are taken out (memory.turn.pipeline._forget_request), and the conversation it made
with them; kept, it was listed empty in GET /v1/conversations (and titled by the refused words).

The official `openai` client against Engram and the loopback upstream."""

from __future__ import annotations

import time

import openai
import pytest

from memory.models import Conversation, Message
from tests.upstream import Reply, openai_completion

REFUSED = {
    "error": {
        "message": "Unsupported parameter: 'temperature' is not supported with this model.",
        "type": "invalid_request_error",
        "param": "temperature",
        "code": "unsupported_parameter",
    }
}


def _client(server, key, user: str, conversation: str) -> openai.OpenAI:
    headers = {"x-user-id": user, "x-conversation-id": conversation}
    return openai.OpenAI(
        base_url=server.url + "/v1", api_key=key, default_headers=headers, max_retries=0
    )


def _forgotten(conversation: str) -> None:
    """Once the refused turn's messages are taken out again (off the path)."""
    deadline = time.monotonic() + 20
    rows = Message.objects.filter(conversation__external_id=conversation)
    while rows.exists() and time.monotonic() < deadline:
        time.sleep(0.05)


@pytest.mark.parametrize("stream", [False, True])
def test_a_refused_first_turn_leaves_no_conversation(engram_server, owner, upstream, http, stream):
    user = _client(engram_server, owner[1], "refused-first", f"refused-first-{stream}")
    upstream.script(Reply(json=REFUSED, status=400))
    with pytest.raises(openai.BadRequestError) as refused:
        user.chat.completions.create(
            model="o3-mini",
            messages=[{"role": "user", "content": "Plan my week."}],
            temperature=0.2,
            stream=stream,
        )
    assert refused.value.body["code"] == "unsupported_parameter"
    _forgotten(f"refused-first-{stream}")
    listed = http.get("/v1/conversations", params={"user_id": "refused-first"}).json()
    assert listed["data"] == []
    assert not Conversation.objects.filter(external_id=f"refused-first-{stream}").exists()


def test_a_refused_later_turn_keeps_its_conversation(engram_server, owner, upstream, http):
    """A conversation with turns before the refused one keeps them."""
    user = _client(engram_server, owner[1], "refused-later", "refused-later")
    upstream.script(Reply(json=openai_completion("Sure.")))
    user.chat.completions.create(model="o3-mini", messages=[{"role": "user", "content": "Hi."}])
    deadline = time.monotonic() + 20
    answers = Message.objects.filter(conversation__external_id="refused-later", role="assistant")
    while not answers.exists() and time.monotonic() < deadline:
        time.sleep(0.05)

    upstream.script(Reply(json=REFUSED, status=400))
    with pytest.raises(openai.BadRequestError):
        user.chat.completions.create(
            model="o3-mini", messages=[{"role": "user", "content": "Again."}], temperature=0.2
        )
    deadline = time.monotonic() + 20
    rows = Message.objects.filter(conversation__external_id="refused-later")
    while rows.count() > 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    listed = http.get("/v1/conversations", params={"user_id": "refused-later"}).json()
    assert [c["external_id"] for c in listed["data"]] == ["refused-later"]
    assert list(rows.order_by("created_at", "id").values_list("content", flat=True)) == [
        "Hi.",
        "Sure.",
    ]
