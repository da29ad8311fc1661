"""An upstream answer whose text PostgreSQL cannot hold as it came (a NUL, a lone UTF-16
surrogate) is stored cleaned, never dropped: NUL removed, a lone surrogate as U+FFFD."""

from __future__ import annotations

import pytest

from tests.completions_support import stored_answer
from tests.upstream import Reply, openai_completion, openai_stream, tool_call

DIRTY = "a\u0000b \ud83d c"
CLEAN = "ab \ufffd c"
TOOLS = [
    {
        "type": "function",
        "function": {"name": "look", "parameters": {"type": "object", "properties": {}}},
    }
]


@pytest.mark.parametrize("streamed", [False, True])
def test_an_answer_with_nul_and_a_lone_surrogate_is_stored_cleaned(http, upstream, streamed):
    upstream.script(
        Reply(stream=openai_stream(["a\u0000b ", "\ud83d c"]))
        if streamed
        else Reply(json=openai_completion(DIRTY))
    )
    response = http.post(
        "/v1/chat/completions",
        json={
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": "say it"}],
            "stream": streamed,
        },
        headers={"x-user-id": "u-dirty", "x-conversation-id": "dirty"},
    )
    assert response.status_code == 200, response.text
    assert stored_answer(http, "dirty")["content"] == CLEAN


def test_tool_call_names_and_arguments_are_stored_cleaned(http, upstream):
    call = tool_call("call_1", "lo\u0000ok", '{"q": "' + DIRTY + '"}')
    upstream.script(Reply(json=openai_completion(tool_calls=[call])))
    response = http.post(
        "/v1/chat/completions",
        json={
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": "look it up"}],
            "tools": TOOLS,
        },
        headers={"x-user-id": "u-dirty", "x-conversation-id": "dirty-calls"},
    )
    assert response.status_code == 200, response.text
    [stored] = stored_answer(http, "dirty-calls")["tool_calls"]
    assert stored["function"] == {"name": "look", "arguments": '{"q": "' + CLEAN + '"}'}


def test_a_stream_of_content_parts_is_relayed_and_stored_as_its_text(http, upstream):
    """Some OpenAI-compatible servers stream a delta's content as a list of parts: the
    assembly of the answer failed on it, and the answer was not stored."""
    parts = [[{"type": "text", "text": "Hel"}], [{"type": "text", "text": "lo."}]]
    upstream.script(Reply(stream=openai_stream(parts)))
    response = http.post(
        "/v1/chat/completions",
        json={
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": "greet"}],
            "stream": True,
        },
        headers={"x-user-id": "u-parts", "x-conversation-id": "parts"},
    )
    assert response.status_code == 200 and response.text.rstrip().endswith("[DONE]")
    assert '"error"' not in response.text
    assert stored_answer(http, "parts")["content"] == "Hello."


def _refusal_stream(pieces: list[str]) -> list:
    """A structured output's refusal streamed as OpenAI streams it: `delta.refusal` pieces,
    content null."""
    base = {"id": "chatcmpl-refused", "object": "chat.completion.chunk", "created": 1}
    base["model"] = "gpt-4o-mini"

    def chunk(delta: dict, finish: str | None = None) -> dict:
        return base | {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    usage = {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13}
    return [
        chunk({"role": "assistant", "content": None, "refusal": ""}),
        *(chunk({"refusal": piece}) for piece in pieces),
        chunk({}, "stop"),
        base | {"choices": [], "usage": usage},
        "[DONE]",
    ]


@pytest.mark.parametrize("streamed", [False, True])
def test_a_refusal_is_stored_as_the_answer_and_sent_as_history(sdk, upstream, streamed):
    """A model's refusal (content null, `refusal` its words) was stored as no answer at all:
    the conversation went on as two user messages in a row (which alternating chat templates
    refuse), and the model no longer knew it had refused."""
    said = "I can't help with that."
    if streamed:
        upstream.script(Reply(stream=_refusal_stream(["I can't ", "help with that."])))
    else:
        refused = openai_completion()
        refused["choices"][0]["message"] = {"role": "assistant", "content": None, "refusal": said}
        upstream.script(Reply(json=refused))
    headers = {"x-user-id": "u-refused", "x-conversation-id": "refused"}
    question = [{"role": "user", "content": "Help me with something bad."}]
    if streamed:
        with sdk.chat.completions.stream(
            model="gpt-4o-mini", messages=question, extra_headers=headers
        ) as stream:
            answer = stream.get_final_completion().choices[0].message
    else:
        answer = (
            sdk.chat.completions.create(
                model="gpt-4o-mini", messages=question, extra_headers=headers
            )
            .choices[0]
            .message
        )
    assert answer.refusal == said and answer.content is None

    sdk.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Why?"}], extra_headers=headers
    )
    sent = [m for m in upstream.chat_requests()[-1].body["messages"] if m["role"] != "system"]
    assert sent == [
        *question,
        {"role": "assistant", "content": None, "refusal": said},
        {"role": "user", "content": "Why?"},
    ]


def _sent_to(upstream) -> list[dict]:
    return [m for m in upstream.chat_requests()[-1].body["messages"] if m["role"] != "system"]


def test_a_stream_stopped_before_its_first_word_leaves_no_empty_answer(
    engram_server, owner, upstream
):
    """A user who stops the answer before its first word (the client closes the stream after
    the role chunk): `{"role": "assistant", "content": null}` was stored, and every later turn
    of the conversation sent it as history, which OpenAI refuses (and Engram's own door, from a
    client): the conversation was over."""
    import openai

    headers = {"x-user-id": "u-stopped", "x-conversation-id": "stopped"}
    user = openai.OpenAI(
        base_url=engram_server.url + "/v1", api_key=owner[1], max_retries=0, default_headers=headers
    )
    upstream.script(Reply(stream=openai_stream(["Once", " upon"]), delay=1.0))
    stream = user.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "A story?"}], stream=True
    )
    first = next(iter(stream))
    assert first.choices[0].delta.role == "assistant" and not first.choices[0].delta.content
    stream.close()  # the user pressed stop

    upstream.script(Reply(json=openai_completion("Here is one.")))
    user.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Go on, then."}]
    )
    assert _sent_to(upstream) == [
        {"role": "user", "content": "A story?"},
        {"role": "user", "content": "Go on, then."},
    ]


def test_an_empty_answer_stored_by_an_earlier_version_is_not_sent_as_history(http, upstream):
    from memory.models import Message

    headers = {"x-user-id": "u-empty", "x-conversation-id": "empty-before"}
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "First."}]}
    assert http.post("/v1/chat/completions", json=body, headers=headers).status_code == 200
    answer = Message.objects.get(conversation__external_id="empty-before", role="assistant")
    answer.raw, answer.content, answer.incomplete = {"role": "assistant", "content": None}, "", True
    answer.save(update_fields=["raw", "content", "incomplete"])

    body["messages"] = [{"role": "user", "content": "Second."}]
    assert http.post("/v1/chat/completions", json=body, headers=headers).status_code == 200
    assert _sent_to(upstream) == [
        {"role": "user", "content": "First."},
        {"role": "user", "content": "Second."},
    ]


def test_a_refusal_sent_back_as_the_sdk_gives_it_is_accepted(sdk, upstream):
    """`messages.append(completion.choices[0].message)` after a refusal sends content null and
    the refusal: the door asked for its content (400), where OpenAI takes it."""
    refused = {"role": "assistant", "content": None, "refusal": "I can't help with that."}
    messages = [{"role": "user", "content": "Something bad."}, refused]
    messages.append({"role": "user", "content": "Something else, then."})
    sdk.chat.completions.create(model="gpt-4o-mini", messages=messages)
    assert _sent_to(upstream) == messages
