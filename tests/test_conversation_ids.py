"""Which conversation a chat turn or an import names, over HTTP: a session's derived
conversation, Engram's conv_ ids, and whose a shared id is."""

from __future__ import annotations

import pytest

from memory.models import Conversation, Message
from tests.upstream import Reply, openai_completion, openai_stream

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}]}


def _chat(http, headers, body=None, stream=False):
    payload = dict(body or CHAT)
    if stream:
        payload["stream"] = True
    return http.post("/v1/chat/completions", json=payload, headers=headers)


@pytest.mark.parametrize("door", ["header", "header-streamed", "body"])
def test_a_session_id_of_the_longest_allowed_length_names_its_conversation(http, upstream, door):
    session_id = "s" * 200  # ids may be 200 characters; its conversation's name is longer
    headers = {"x-user-id": "long-session"}
    body = dict(CHAT)
    if door == "body":
        body["session_id"] = session_id
    else:
        headers["x-session-id"] = session_id
    streamed = door == "header-streamed"
    upstream.script(
        Reply(stream=openai_stream(["Hi"])) if streamed else Reply(json=openai_completion("Hi"))
    )
    response = _chat(http, headers, body, stream=streamed)
    assert response.status_code == 200, response.text
    assert response.headers["x-session-id"] == session_id
    conversation = Conversation.objects.get(user_id="long-session")
    assert conversation.external_id.endswith(session_id)
    # The same session continues the same conversation.
    upstream.script(Reply(json=openai_completion("Again")))
    again = _chat(http, headers, body)
    assert again.status_code == 200, again.text
    assert Conversation.objects.filter(user_id="long-session").count() == 1
    assert Message.objects.filter(conversation=conversation, role="user").count() == 2


def test_context_sees_a_long_sessions_conversation(http, upstream):
    headers = {"x-user-id": "long-session", "x-session-id": "c" * 200}
    upstream.script(Reply(json=openai_completion("Hi")))
    assert _chat(http, headers).status_code == 200
    response = http.post("/v1/context", json=CHAT, headers=headers)
    assert response.status_code == 200, response.text
    stored = Conversation.objects.get(user_id="long-session")
    assert response.headers["x-engram-conversation-id"] == stored.external_id

