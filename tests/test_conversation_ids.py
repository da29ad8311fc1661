"""Which conversation a chat turn or an import names, over HTTP: a session's derived
conversation, Engram's conv_ ids, and whose a shared id is."""

from __future__ import annotations

import pytest

from memory.models import Conversation, Message, Session
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


def _conv_id(http, user_id):
    listed = http.get("/v1/conversations", params={"user_id": user_id}).json()["data"]
    assert len(listed) == 1, listed
    return listed[0]["id"]


@pytest.mark.parametrize("streamed", [False, True])
def test_a_chat_naming_engrams_conv_id_continues_that_conversation(http, upstream, streamed):
    headers = {"x-user-id": "kim", "x-conversation-id": "kims-chat"}
    upstream.script(Reply(json=openai_completion("Hi Kim!")))
    assert _chat(http, headers).status_code == 200
    conv_id = _conv_id(http, "kim")
    assert conv_id.startswith("conv_")

    upstream.script(
        Reply(stream=openai_stream(["Again"])) if streamed else Reply(json=openai_completion("A"))
    )
    by_conv = {"x-user-id": "kim", "x-conversation-id": conv_id}
    response = _chat(http, by_conv, stream=streamed)
    assert response.status_code == 200, response.text
    assert response.headers["x-engram-conversation-id"] == "kims-chat"
    # The stored history reached the upstream: it is the same conversation.
    sent = [m["content"] for m in upstream.chat_requests()[-1].body["messages"]]
    assert "Hi Kim!" in sent
    assert _conv_id(http, "kim") == conv_id  # still one conversation, reachable by its id
    messages = http.get(f"/v1/conversations/{conv_id}/messages").json()["data"]
    assert [m["role"] for m in messages][:3] == ["user", "assistant", "user"]


def test_context_and_import_naming_engrams_conv_id_use_that_conversation(http, upstream):
    upstream.script(Reply(json=openai_completion("Noted.")))
    _chat(http, {"x-user-id": "lee", "x-conversation-id": "lees-chat"})
    conv_id = _conv_id(http, "lee")

    preview = http.post(
        "/v1/context", json=CHAT, headers={"x-user-id": "lee", "x-conversation-id": conv_id}
    )
    assert preview.status_code == 200, preview.text
    assert preview.json()["engram"]["conversation_id"] == "lees-chat"

    imported = http.post(
        f"/v1/conversations/{conv_id}/messages",
        json={"user_id": "lee", "messages": [{"role": "user", "content": "imported"}]},
    )
    assert imported.status_code == 201, imported.text
    assert imported.json()["conversation"]["id"] == conv_id
    assert _conv_id(http, "lee") == conv_id
    contents = [
        m["content"] for m in http.get(f"/v1/conversations/{conv_id}/messages").json()["data"]
    ]
    assert contents[-1] == "imported" and "Noted." in contents


def test_another_users_conv_id_stays_refused(http, upstream):
    upstream.script(Reply(json=openai_completion("Mine.")))
    _chat(http, {"x-user-id": "ann", "x-conversation-id": "anns-chat"})
    conv_id = _conv_id(http, "ann")

    chat = _chat(http, {"x-user-id": "bob", "x-conversation-id": conv_id})
    assert chat.status_code == 403, chat.text
    assert chat.json()["error"]["param"] == "x-conversation-id"
    imported = http.post(
        f"/v1/conversations/{conv_id}/messages",
        json={"user_id": "bob", "messages": [{"role": "user", "content": "mine now"}]},
    )
    assert imported.status_code == 403, imported.text
    assert Conversation.objects.count() == 1


@pytest.mark.parametrize("door", ["header", "body"])
@pytest.mark.parametrize("beside", [None, "bobs-chat"])
def test_a_session_id_another_user_has_is_ones_own_session(http, upstream, door, beside):
    """Session ids are each user's, as conversation ids are: bob naming ann's "s-shared" (alone,
    or beside a conversation of his own) is his own session, as a free id is; nothing of ann's
    is read (it was a 403 naming the session where a free id was created: an oracle)."""
    upstream.script(*(Reply(json=openai_completion("Mine.")) for _ in range(3)))
    ann = _chat(
        http,
        {"x-user-id": "ann", "x-session-id": "s-shared"},
        {
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": "Ann's secret zebra-quartz"}],
        },
    )
    assert ann.status_code == 200

    headers, body = {"x-user-id": "bob"}, dict(CHAT)
    if beside:
        headers["x-conversation-id"] = beside
    if door == "header":
        headers["x-session-id"] = "s-shared"
    else:
        body["session_id"] = "s-shared"
    for path in ("/v1/context", "/v1/chat/completions"):
        response = http.post(path, json=body, headers=headers)
        assert response.status_code == 200, f"{path}: {response.text}"
        # a word no id can hold: "77" once stood in a generated hex id by chance
        assert "zebra-quartz" not in response.text
    assert "zebra-quartz" not in str(upstream.chat_requests()[-1].body)
    assert Session.objects.filter(external_id="s-shared").count() == 2
    assert Session.objects.get(external_id="s-shared", user_id="ann").conversation.user_id == "ann"


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/context"])
def test_a_session_linked_to_another_workspaces_conversation_never_reaches_it(
    http, outsider_http, owner, upstream, path
):
    """A session row naming another workspace's conversation (saved in the admin before its
    form refused one) took its turns there: the other tenant's history was read into the
    prompt, and the turn was stored in their conversation."""
    from memory.models import Session

    imported = outsider_http.post(
        "/v1/conversations/their-chat/messages",
        json={
            "user_id": "alice",
            "messages": [
                {"role": "user", "content": "My door code is 4242-QX."},
                {"role": "assistant", "content": "Noted."},
            ],
        },
    )
    assert imported.status_code == 201, imported.text
    theirs = Conversation.objects.get(external_id="their-chat")
    Session.objects.create(
        workspace=owner[0], external_id="s-linked", user_id="alice", conversation=theirs
    )

    upstream.script(Reply(json=openai_completion("Hi.")))
    response = http.post(
        path, json=CHAT, headers={"x-user-id": "alice", "x-session-id": "s-linked"}
    )
    assert response.status_code == 200, response.text
    # A word no timestamp or id holds ("4242" alone matched a `created` of 1796524242).
    assert "4242-QX" not in response.text and "their-chat" not in response.text
    assert all("4242-QX" not in str(r.body) for r in upstream.chat_requests())
    assert Message.objects.filter(conversation=theirs).count() == 2
    assert not Message.objects.filter(workspace=owner[0], conversation__workspace=theirs.workspace)


def test_a_client_cannot_take_the_name_of_a_sessions_conversation(http, upstream):
    """Engram names a session's conversation session:<id>; a client that named a conversation
    so first locked the session's own user out of it (session ids are often guessable)."""
    squat = {"x-user-id": "mallory", "x-conversation-id": "session:s-victim"}
    for streamed in (False, True):
        refused = _chat(http, squat, stream=streamed)
        assert refused.status_code == 400, refused.text
        error = refused.json()["error"]
        assert error["param"] == "x-conversation-id"
        assert "session:" in error["message"]
    imported = http.post(
        "/v1/conversations/session:s-victim/messages",
        json={"user_id": "mallory", "messages": [{"role": "user", "content": "mine now"}]},
    )
    assert imported.status_code == 400, imported.text
    assert not Conversation.objects.exists()

    # The session's user begins it, and may then name it as Engram does.
    upstream.script(Reply(json=openai_completion("Hi")), Reply(json=openai_completion("Again")))
    assert _chat(http, {"x-user-id": "vic", "x-session-id": "s-victim"}).status_code == 200
    named = _chat(http, {"x-user-id": "vic", "x-conversation-id": "session:s-victim"})
    assert named.status_code == 200, named.text
    assert list(Conversation.objects.values_list("external_id", "user_id")) == [
        ("session:s-victim", "vic")
    ]
