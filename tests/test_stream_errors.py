"""How an upstream's failures reach a streaming client: before anything went out, as the HTTP
status and envelope the same failure has without `stream`; after, as one error frame.

The official `openai` client against Engram and the loopback upstream."""

from __future__ import annotations

import json
import time

import openai
import pytest

from completions.models import UsageRecord
from completions.usage import buffer
from memory.models import Message
from tests.upstream import Reply, openai_stream

HI = [{"role": "user", "content": "Still there?"}]
OLLAMA_ERROR = {"error": {"message": "model runner has unexpectedly stopped", "type": "api_error"}}
# vLLM's older error shape, its fields at the top
VLLM_ERROR = {"object": "error", "message": "engine is dead", "type": "InternalServerError"}


def _client(server, key, conversation: str) -> openai.OpenAI:
    headers = {"x-user-id": "stream-errors", "x-conversation-id": conversation}
    return openai.OpenAI(
        base_url=server.url + "/v1", api_key=key, default_headers=headers, max_retries=0
    )


def _sent(upstream) -> list[dict]:
    return [m for m in upstream.chat_requests()[-1].body["messages"] if m["role"] != "system"]


def _roles(conversation: str, *, answers: int) -> list[str]:
    """The conversation's stored roles, once `answers` answers are stored (off the path)."""
    rows = Message.objects.filter(conversation__external_id=conversation)
    deadline = time.monotonic() + 20
    while rows.filter(role="assistant").count() < answers and time.monotonic() < deadline:
        time.sleep(0.05)
    return list(rows.order_by("created_at", "id").values_list("role", flat=True))


@pytest.mark.parametrize("error", [OLLAMA_ERROR, VLLM_ERROR])
def test_an_error_as_a_streams_first_event_is_a_502_and_keeps_the_question(
    engram_server, owner, upstream, error
):
    """Ollama and vLLM answer a failure before the first token with status 200 and an error as
    the stream's first event: the client got a 200 and an error frame, which its SDK does not
    retry (it retries statuses). Nothing had gone out: it is the 502 the same error is as JSON,
    and the question stays, as after any upstream failure that is not a refusal."""
    user = _client(engram_server, owner[1], "first-event-error")
    upstream.script(Reply(stream=[error]))
    with pytest.raises(openai.APIStatusError) as failed:
        for _ in user.chat.completions.create(model="gpt-4o-mini", messages=HI, stream=True):
            pass
    said = error.get("error", error)["message"]
    assert failed.value.status_code == 502 and said in failed.value.message
    assert failed.value.body["type"] == "upstream_error"

    upstream.script(Reply(stream=openai_stream(["Yes."])))
    hello = [{"role": "user", "content": "Hello?"}]
    answer = user.chat.completions.create(model="gpt-4o-mini", messages=hello, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in answer if c.choices) == "Yes."
    assert _sent(upstream) == [*HI, *hello]  # the question, unanswered, and the new one
    assert _roles("first-event-error", answers=1) == ["user", "user", "assistant"]


def test_an_error_after_the_streams_first_event_is_still_its_error_frame(sdk, upstream):
    """Once a chunk went out, the status has too: the failure is the stream's error frame."""
    upstream.script(Reply(stream=[*openai_stream(["a"])[:2], OLLAMA_ERROR]))
    with pytest.raises(openai.APIError, match="unexpectedly stopped"):
        for _ in sdk.chat.completions.create(model="gpt-4o-mini", messages=HI, stream=True):
            pass


def test_an_error_mid_stream_quoting_engrams_provider_key_is_relayed_without_it(sdk, upstream):
    """A proxy's mid-stream error quoting the request's Authorization: the provider key went
    out in the stream's error frame (an error before the stream, or as its answer, is masked)."""
    from django.conf import settings

    key = settings.OPENAI_API_KEY
    quoted = {"error": {"message": f"upstream reset for Bearer {key}", "type": "api_error"}}
    upstream.script(Reply(stream=[*openai_stream(["a"])[:2], quoted]))
    with pytest.raises(openai.APIError) as failed:
        for _ in sdk.chat.completions.create(model="gpt-4o-mini", messages=HI, stream=True):
            pass
    assert "upstream reset for Bearer ***" in failed.value.message
    assert key not in failed.value.message


def test_a_vllm_error_mid_stream_is_read_as_its_error_answer_is(sdk, upstream):
    """vLLM's error event mid-stream, its numeric code: relayed as a number in the error frame
    (OpenAI's `code` is a string or null), where the same error as an answer is read by
    error_fields into strings."""
    failure = {"object": "error", "message": "engine overloaded", "type": "BadRequestError"}
    upstream.script(Reply(stream=[*openai_stream(["a"])[:2], {**failure, "code": 400}]))
    with pytest.raises(openai.APIError) as failed:
        for _ in sdk.chat.completions.create(model="gpt-4o-mini", messages=HI, stream=True):
            pass
    assert failed.value.message == "engine overloaded"
    assert failed.value.code == "400" and failed.value.type == "BadRequestError"


def test_a_first_event_that_only_mentions_an_error_is_an_answer(sdk, upstream):
    """The read ahead parses a first event only when "error" is in it: an answer whose first
    chunk says the word is an answer all the same."""
    chunks = openai_stream(["An error? ", "None."])
    chunks[0]["choices"][0]["delta"]["content"] = "An error? "
    del chunks[1]
    upstream.script(Reply(stream=chunks))
    answer = sdk.chat.completions.create(model="gpt-4o-mini", messages=HI, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in answer if c.choices) == (
        "An error? None."
    )


@pytest.mark.parametrize(
    ("stream", "said"),
    [
        ([], "ended before it sent anything"),  # an empty body (a proxy's, a crashed server's)
        (["{not json"], "malformed stream chunk"),
        ([{"choices": "none"}], "unexpected stream chunk"),
    ],
)
def test_a_stream_unreadable_from_its_first_event_is_a_502(sdk, upstream, stream, said):
    """Nothing of it could go out: the client got a 200 and an error frame (no SDK retries
    one), where the same reply unstreamed is a 502 upstream_bad_reply."""
    upstream.script(Reply(stream=stream))
    with pytest.raises(openai.APIStatusError) as failed:
        for _ in sdk.chat.completions.create(model="gpt-4o-mini", messages=HI, stream=True):
            pass
    assert failed.value.status_code == 502 and said in failed.value.message
    assert failed.value.body["code"] == "upstream_bad_reply"


# OpenRouter's failure mid-stream: a chunk with the error and a choice finished by "error".
OPENROUTER_ERROR = {
    "id": "gen-1",
    "object": "chat.completion.chunk",
    "created": 1,
    "model": "gpt-4o-mini",
    "provider": "openai",
    "error": {"code": 502, "message": "Provider disconnected unexpectedly"},
    "choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": "error"}],
}


def test_an_error_chunk_with_choices_mid_stream_fails_the_stream(http, owner, upstream):
    """OpenRouter reports a failure mid-stream as a chunk with an `error` and a choice whose
    finish_reason is "error". Relayed as a chunk (Engram's `engram` on it), the client's SDK
    raised on its `error`, but the turn ended as answered: a usage record of a success, the
    words cut short stored as the whole answer. It is the stream's error frame, the turn
    incomplete."""
    upstream.script(Reply(stream=[*openai_stream(["Par", "tial"])[:3], OPENROUTER_ERROR, "[DONE]"]))
    body = {"model": "gpt-4o-mini", "messages": HI, "stream": True}
    lines = http.post("/v1/chat/completions", json=body).text.splitlines()
    events = [line[6:] for line in lines if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[-1] == {
        "error": {
            "message": "Provider disconnected unexpectedly",
            "type": "upstream_error",
            "param": None,
            "code": "502",
        }
    }
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks[:-1]) == "Partial"
    assert not [c for c in chunks[:-1] if c["choices"][0]["finish_reason"]]
    buffer.flush()
    record = UsageRecord.objects.get(workspace=owner[0])
    assert record.incomplete and record.error_code == "stream_failed"


def test_an_error_chunk_with_choices_is_the_sdks_error(sdk, upstream):
    upstream.script(Reply(stream=[*openai_stream(["Par"])[:2], OPENROUTER_ERROR, "[DONE]"]))
    with pytest.raises(openai.APIError, match="Provider disconnected unexpectedly"):
        for _ in sdk.chat.completions.create(model="gpt-4o-mini", messages=HI, stream=True):
            pass


def test_an_event_named_error_mid_stream_is_the_streams_error_frame(http, upstream):
    """An error as SSE names one (`event: error`, its fields at the top of its data), as some
    proxies send it: read as a chunk, it went to the client as one, with no choices and no
    `error` for its SDK to raise, and the turn ended as answered."""
    crashed = ("error", {"message": "worker crashed", "type": "server_error"})
    upstream.script(Reply(stream=[*openai_stream(["Par"])[:2], crashed, "[DONE]"]))
    body = {"model": "gpt-4o-mini", "messages": HI, "stream": True}
    lines = http.post("/v1/chat/completions", json=body).text.splitlines()
    events = [json.loads(line[6:]) for line in lines if line.startswith("data: {")]
    assert events[-1]["error"]["message"] == "worker crashed"
    assert events[-1]["error"]["type"] == "server_error"
    assert all(e.get("choices") for e in events[:-1]), events
