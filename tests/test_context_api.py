"""POST /v1/context: the exact messages Engram would send, with tokens and reasons; stores nothing."""

from __future__ import annotations

from memory.models import Conversation, Message, Session
from memory.text import count_messages


def context(http, text, user=None, **headers):
    if user:
        headers["x-user-id"] = user
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]}
    response = http.post("/v1/context", json=body, headers=headers)
    assert response.status_code == 200, response.text
    return response


def memory_block(body) -> str:
    blocks = [m["content"] for m in body["messages"] if "<memories>" in str(m.get("content"))]
    return blocks[0] if blocks else ""


def test_context_lists_the_messages_tokens_and_why(http):
    memory = http.post(
        "/v1/memories",
        json={
            "user_id": "alice",
            "text": "Alice is training for the Berlin marathon.",
            "event_date": "2024-04-02",
        },
    ).json()
    http.post(
        "/v1/conversations/old/messages",
        json={
            "user_id": "alice",
            "messages": [
                {
                    "role": "user",
                    "content": "My marathon shoes are Asics Novablast.",
                    "created_at": "2024-03-30T10:00:00Z",
                    "metadata": {"dia_id": "D9:1"},
                }
            ],
        },
    )
    conversations, messages = Conversation.objects.count(), Message.objects.count()

    response = context(http, "Any tips for my marathon?", user="alice", **{"x-session-id": "s1"})
    body = response.json()
    assert body["object"] == "context"
    assert body["context_tokens"] == count_messages(body["messages"])
    assert response.headers["x-engram-context-tokens"] == str(body["context_tokens"])
    assert response.headers["x-engram-memories-used"] == "1"
    assert body["engram"]["memories_used"] == 1 and body["engram"]["session_id"] == "s1"
    assert body["budget"]["context_window"] == 128_000
    assert "[2 April 2024] Alice is training for the Berlin marathon." in memory_block(body)
    assert body["messages"][-1] == {"role": "user", "content": "Any tips for my marathon?"}
    blocks = {b["name"]: b for b in body["blocks"]}
    assert sum(b["tokens"] for b in body["blocks"]) + 3 == body["context_tokens"]
    [item] = blocks["memories"]["items"]
    assert item["id"] == memory["id"] and item["score"] > 0 and "rank" in item["why"]
    [past] = blocks["retrieved_messages"]["items"]
    assert "Asics Novablast" in past["text"] and past["sources"][0]["metadata"] == {
        "dia_id": "D9:1"
    }
    assert "<past_messages>" in str(body["messages"]) and "[30 March 2024]" in past["text"]
    # which past message it was, beside the memories, as the chat's answer says it
    [said] = body["engram"]["messages"]
    assert said["id"] == past["id"] and "Asics Novablast" in said["line"] and said["why"]
    # a dry run: nothing stored
    assert Conversation.objects.count() == conversations and Message.objects.count() == messages
    assert not Session.objects.exists()


def test_server_side_history_appears_in_the_context(http):
    http.post(
        "/v1/conversations/chat-1/messages",
        json={
            "user_id": "u",
            "messages": [
                {"role": "user", "content": "Let's plan the garden."},
                {"role": "assistant", "content": "Tomatoes by the south wall."},
            ],
        },
    )
    body = context(http, "And the herbs?", user="u", **{"x-conversation-id": "chat-1"}).json()
    convo = [(m["role"], m["content"]) for m in body["messages"] if m["role"] != "system"]
    assert convo == [
        ("user", "Let's plan the garden."),
        ("assistant", "Tomatoes by the south wall."),
        ("user", "And the herbs?"),
    ]
    history = next(b for b in body["blocks"] if b["name"] == "history")
    assert len(history["items"]) == 2 and history["items"][0]["why"]


def test_deleting_a_memory_or_the_user_removes_it_from_later_contexts(http):
    first = http.post(
        "/v1/memories", json={"user_id": "alice", "text": "Alice's dog is named Bruno."}
    ).json()
    http.post("/v1/memories", json={"user_id": "alice", "text": "Alice's cat is named Mochi."})
    assert "Bruno" in memory_block(context(http, "What are my pets called?", user="alice").json())
    http.delete(f"/v1/memories/{first['id']}")
    block = memory_block(context(http, "What are my pets called?", user="alice").json())
    assert "Mochi" in block and "Bruno" not in block
    http.delete("/v1/users/alice")
    after = context(http, "What are my pets called?", user="alice").json()
    assert "Mochi" not in str(after["messages"]) and after["engram"]["memories_used"] == 0


def test_another_user_and_another_workspace_never_see_a_memory(http, outsider_http):
    http.post("/v1/memories", json={"user_id": "alice", "text": "Alice's passport number is X123."})
    assert "X123" in memory_block(context(http, "What is my passport number?", user="alice").json())
    assert "X123" not in str(context(http, "What is my passport number?", user="bob").json())
    stranger = context(outsider_http, "What is my passport number?", user="alice").json()
    assert "X123" not in str(stranger) and stranger["engram"]["memories_used"] == 0


def test_without_a_user_the_request_passes_through(http):
    body = {
        "model": "m",
        "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "hi"}],
    }
    response = http.post("/v1/context", json=body)
    assert response.status_code == 200
    assert response.json()["messages"] == body["messages"]
    assert response.json()["context_tokens"] == count_messages(body["messages"])
    # the budget the request is measured against, as with a user (it was null)
    budget = response.json()["budget"]
    assert budget["context_window"] == 8192 and budget["reserved_for_completion"] == 2048
    assert budget["available"] == 8192 - 2048


def test_context_validates_headers_and_body(http, operator_http, owner):
    workspace, _ = owner
    ok = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    mismatch = http.post(
        "/v1/context", json=ok, headers={"x-workspace-id": "ws_other", "x-user-id": "u"}
    )
    assert mismatch.status_code == 403 and mismatch.json()["error"]["param"] == "x-workspace-id"
    same = http.post(
        "/v1/context", json=ok, headers={"x-workspace-id": workspace.id, "x-user-id": "u"}
    )
    assert same.status_code == 200
    for bad in ("not json", '{"a": 1}', "[1, 2]", "[]x"):
        response = http.post(
            "/v1/context", json=ok, headers={"x-collection-ids": bad, "x-user-id": "u"}
        )
        assert (
            response.status_code == 400 and response.json()["error"]["param"] == "x-collection-ids"
        )
    no_messages = http.post("/v1/context", json={"model": "m", "messages": []})
    assert no_messages.status_code == 400 and no_messages.json()["error"]["param"] == "messages"
    bad_role = http.post("/v1/context", json={"messages": [{"role": "robot", "content": "x"}]})
    assert bad_role.status_code == 400 and bad_role.json()["error"]["param"] == "messages[0].role"
    bad_user = http.post("/v1/context", json=ok, headers={"x-user-id": "a" * 300})
    assert bad_user.status_code == 400 and bad_user.json()["error"]["param"] == "x-user-id"
    assert http.post("/v1/context", content=b"{nope").status_code == 400
    assert http.get("/v1/context").status_code == 405
    assert operator_http.post("/v1/context", json=ok).status_code == 403
    body_user = http.post("/v1/context", json=ok | {"user": "from-body", "session_id": "sess-body"})
    assert body_user.json()["user_id"] == "from-body"
    assert body_user.json()["engram"]["session_id"] == "sess-body"


def test_a_body_user_id_is_the_user_as_on_the_memory_api(http):
    """`{"user_id": "alice", "messages": [...]}`, the memory API's way (and mem0's) to name the
    user: the context came back with no user and none of Alice's memories, a 200 in silence.
    With x-user-id naming another user it is a 400 naming `user_id`."""
    http.post("/v1/memories", json={"user_id": "alice", "text": "Alice keeps bees."})
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Bees?"}]}
    response = http.post("/v1/context", json=body | {"user_id": "alice"})
    assert response.status_code == 200, response.text
    assert response.json()["user_id"] == "alice"
    assert "Alice keeps bees." in memory_block(response.json())
    conflict = http.post("/v1/context", json=body | {"user_id": "bob"}, headers={"x-user-id": "a"})
    assert conflict.status_code == 400, conflict.text
    error = conflict.json()["error"]
    assert (error["param"], error["code"]) == ("user_id", "user_mismatch")
    bad = http.post("/v1/context", json=body | {"user_id": "a b"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "user_id"


def test_a_summary_longer_than_its_share_keeps_its_end(http, settings):
    """A small window (a 2,048-token local model) gives the rolling summary a share smaller
    than the summaries Engram writes (up to ENGRAM_SUMMARY_MAX_TOKENS): the whole summary was
    left out of every turn, and the model lost the earlier conversation it stood for. Its end
    (the most recent part) is kept instead, within the share."""
    settings.ENGRAM_CONTEXT_WINDOWS = {"tiny": 2048}
    http.post(
        "/v1/conversations/chat-s/messages",
        json={"user_id": "u", "messages": [{"role": "user", "content": "Hello there."}]},
    )
    summary = " ".join(f"Point {i}: the user chose plan {i}." for i in range(60))
    summary += " Finally the user picked the blue tent."
    Conversation.objects.filter(external_id="chat-s").update(summary=summary)
    body = {"model": "tiny", "messages": [{"role": "user", "content": "Which tent?"}]}
    response = http.post(
        "/v1/context", json=body, headers={"x-user-id": "u", "x-conversation-id": "chat-s"}
    )
    assert response.status_code == 200, response.text
    out = response.json()
    block = next(b for b in out["blocks"] if b["name"] == "summary")
    cap = (2048 - 512) // 6
    assert block["tokens"] <= cap and out["context_tokens"] <= out["budget"]["available"]
    [message] = [m for m in out["messages"] if "<conversation_summary>" in m["content"]]
    assert "Finally the user picked the blue tent." in message["content"]
    assert count_messages(out["messages"]) == out["context_tokens"]
