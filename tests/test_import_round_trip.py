"""Messages as Engram lists and exports them, and as the OpenAI SDK dumps its message objects,
import as they are: their `"name": null`, `"tool_calls": null` (and a null `metadata` or
`tool_call_id`) mean none, as the chat doors read them. The import refused each with a 400
"may not be null", so a conversation could not be moved from one user or workspace to another
without rewriting every message."""

from __future__ import annotations

from openai.types.chat import ChatCompletionMessage


def test_a_conversation_listed_by_engram_imports_again_as_it_is(http):
    first = http.post(
        "/v1/conversations/trip/messages",
        json={
            "user_id": "ana",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "I am flying to Oslo 🇳🇴 on Friday.", "name": "ana"},
                {"role": "assistant", "content": "Have a good flight!"},
            ],
        },
    )
    assert first.status_code == 201, first.text
    listed = http.get("/v1/conversations/trip/messages").json()["data"]
    assert listed[0]["name"] is None and listed[0]["tool_calls"] is None  # as Engram lists them

    again = http.post(
        "/v1/conversations/trip-copy/messages", json={"user_id": "bo", "messages": listed}
    )
    assert again.status_code == 201, again.text
    copied = http.get("/v1/conversations/trip-copy/messages").json()["data"]
    fields = ("role", "name", "content", "tool_calls", "metadata", "created_at")
    assert [{k: m[k] for k in fields} for m in copied] == [
        {k: m[k] for k in fields} for m in listed
    ]

    exported = http.get("/v1/users/ana/export").json()["conversations"][0]["messages"]
    from_export = http.post(
        "/v1/conversations/trip-export/messages", json={"user_id": "cy", "messages": exported}
    )
    assert from_export.status_code == 201, from_export.text


def test_openai_sdk_message_objects_dumped_whole_import(http):
    answer = ChatCompletionMessage(role="assistant", content="Noted.").model_dump()
    assert answer["tool_calls"] is None and answer["function_call"] is None
    response = http.post(
        "/v1/conversations/sdk/messages",
        json={
            "user_id": "dee",
            "messages": [
                {"role": "user", "content": "My cat is Miso.", "name": None, "metadata": None},
                answer,
                {"role": "user", "content": "ok", "tool_call_id": None},
            ],
        },
    )
    assert response.status_code == 201, response.text
    assert [(m["role"], m["name"], m["metadata"]) for m in response.json()["data"]] == [
        ("user", None, {}),
        ("assistant", None, {}),
        ("user", None, {}),
    ]


def test_null_does_not_stand_for_what_a_message_needs(http):
    """A tool result still needs its call's id, an assistant message without content still
    needs its calls: null is absent, and absent is refused there as before."""
    tool = http.post(
        "/v1/conversations/t/messages",
        json={"user_id": "e", "messages": [{"role": "tool", "content": "4", "tool_call_id": None}]},
    )
    assert tool.status_code == 400 and tool.json()["error"]["param"] == "messages[0].tool_call_id"
    bare = http.post(
        "/v1/conversations/t/messages",
        json={
            "user_id": "e",
            "messages": [{"role": "assistant", "content": None, "tool_calls": None}],
        },
    )
    assert bare.status_code == 400 and bare.json()["error"]["param"] == "messages[0].content"
