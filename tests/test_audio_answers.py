"""An answer in audio (`modalities: ["text", "audio"]`): its content is null and its words are
the audio's transcript, which memory stores as the answer's text (never the audio's data).

The official `openai` client against Engram and the loopback upstream."""

from __future__ import annotations

import time

import openai
import pytest

from memory.models import Message
from tests.upstream import Reply, openai_completion

DATA = "UklGRiQAAABXQVZFZm10IBAAAAABAAEAgD4AAAB9AAACABAAZGF0YQAAAAA="  # a short WAV, base64
AUDIO = {"modalities": ["text", "audio"], "audio": {"voice": "alloy", "format": "wav"}}


def _client(server, key, conversation: str) -> openai.OpenAI:
    headers = {"x-user-id": "audio-user", "x-conversation-id": conversation}
    return openai.OpenAI(
        base_url=server.url + "/v1", api_key=key, default_headers=headers, max_retries=0
    )


def _spoken() -> dict:
    answer = openai_completion(model="gpt-4o-audio-preview")
    audio = {"id": "audio_1", "data": DATA, "expires_at": 1, "transcript": "Hello there."}
    answer["choices"][0]["message"] = {"role": "assistant", "content": None, "audio": audio}
    return answer


def _spoken_stream() -> list:
    base = {"id": "chatcmpl-a", "object": "chat.completion.chunk", "created": 1, "model": "m"}

    def chunk(delta: dict, finish: str | None = None) -> dict:
        return base | {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    return [
        chunk({"role": "assistant", "content": None, "audio": {"id": "audio_1", "transcript": ""}}),
        chunk({"audio": {"transcript": "Hello"}}),
        chunk({"audio": {"transcript": " there."}}),
        chunk({"audio": {"data": DATA}}),
        chunk({"audio": {"expires_at": 1}}),
        chunk({}, "stop"),
        base | {"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 9}},
        "[DONE]",
    ]


def _stored(conversation: str) -> list[tuple[str, str]]:
    """The turn's rows once its answer is stored: an agent's run stores its tool call and the
    tool's result first, so waiting for any assistant row could read them alone (the suite's
    load once did: the last row was the tool's)."""
    rows = Message.objects.filter(conversation__external_id=conversation).order_by(
        "created_at", "id"
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        last = rows.last()
        if last is not None and last.role == "assistant" and not last.tool_calls:
            break
        time.sleep(0.05)
    return list(rows.values_list("role", "content"))


@pytest.mark.parametrize("stream", [False, True])
def test_an_answer_in_audio_is_stored_as_its_transcript(engram_server, owner, upstream, stream):
    """Its content null, the answer was not stored at all: the next turn's history had two
    user messages in a row, and memory never saw what was said."""
    conversation = f"spoken-{stream}"
    user = _client(engram_server, owner[1], conversation)
    upstream.script(Reply(stream=_spoken_stream()) if stream else Reply(json=_spoken()))
    hello = [{"role": "user", "content": "Say hello."}]
    answer = user.chat.completions.create(
        model="gpt-4o-audio-preview", messages=hello, stream=stream, extra_body=AUDIO
    )
    if stream:
        pieces = [c.choices[0].delta.audio for c in answer if c.choices]
        assert "".join(p.transcript or "" for p in pieces if p) == "Hello there."
    else:
        assert answer.choices[0].message.audio.data == DATA  # the client has it all

    stored = _stored(conversation)
    assert stored == [("user", "Say hello."), ("assistant", "Hello there.")]
    assert not Message.objects.filter(content__contains=DATA[:20]).exists()

    upstream.script(Reply(json=openai_completion("Bye.")))
    user.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "What did you say?"}]
    )
    sent = [m for m in upstream.chat_requests()[-1].body["messages"] if m["role"] != "system"]
    assert sent[:2] == [hello[0], {"role": "assistant", "content": "Hello there."}]


@pytest.mark.parametrize("stream", [False, True])
def test_an_agents_answer_in_audio_after_its_tool_ran_is_stored_as_its_transcript(
    engram_server, owner, http, upstream, tool_server, stream
):
    """An agent with tools runs its own loop (completions.tools.run): its answer in audio,
    content null, was stored as it came, so the conversation held the tool call and its
    result, then an answer with no words (and the run kept the audio's data)."""
    from completions.tools.models import Execution
    from tests.test_tools import make_agent, make_tool
    from tests.upstream import tool_call

    agent = make_agent(http, name=f"speaker-{stream}")
    make_tool(http, agent, tool_server.url + "/weather")
    conversation = f"agent-spoken-{stream}"
    user = _client(engram_server, owner[1], conversation)
    upstream.script(
        Reply(json=openai_completion(tool_calls=[tool_call("call_1", "weather", {"city": "X"})])),
        Reply(stream=_spoken_stream()) if stream else Reply(json=_spoken()),
    )
    answer = user.chat.completions.create(
        model=agent,
        messages=[{"role": "user", "content": "Say hello."}],
        stream=stream,
        extra_body=AUDIO,
    )
    if stream:
        list(answer)
    else:
        assert answer.choices[0].message.audio.data == DATA  # the client has it all
    assert len(tool_server.calls) == 1

    stored = _stored(conversation)
    assert stored[0] == ("user", "Say hello.")
    assert stored[-1] == ("assistant", "Hello there.")
    assert not Message.objects.filter(content__contains=DATA[:20]).exists()
    run = Execution.objects.get(agent_id=agent)
    assert run.messages[-1]["content"] == "Hello there."
    assert DATA not in str(run.messages)


def test_an_agents_step_in_audio_that_pauses_on_an_approval_is_stored_as_its_transcript(
    engram_server, owner, http, upstream, tool_server
):
    """Its words stored with the waiting call (the client still gets the audio); the run's
    state keeps the transcript, not the audio's data."""
    from completions.tools.models import Execution
    from tests.test_tools import make_agent, make_tool
    from tests.upstream import tool_call

    agent = make_agent(http, name="speaker-waits")
    make_tool(http, agent, tool_server.url + "/weather", approval="always")
    spoken = openai_completion(tool_calls=[tool_call("call_1", "weather", {"city": "X"})])
    audio = {"id": "audio_1", "data": DATA, "expires_at": 1, "transcript": "Let me check."}
    spoken["choices"][0]["message"]["audio"] = audio
    upstream.script(Reply(json=spoken))
    user = _client(engram_server, owner[1], "agent-spoken-pause")

    answer = user.chat.completions.create(
        model=agent, messages=[{"role": "user", "content": "Say hello."}], extra_body=AUDIO
    )

    assert answer.choices[0].finish_reason == "tool_calls"
    assert answer.choices[0].message.audio.data == DATA
    assert _stored("agent-spoken-pause") == [
        ("user", "Say hello."),
        ("assistant", "Let me check."),
    ]
    run = Execution.objects.get(agent_id=agent)
    assert run.pending["message"]["content"] == "Let me check."
    assert DATA not in str(run.pending)
