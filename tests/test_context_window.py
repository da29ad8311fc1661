"""A request that cannot fit its model's window, and content parts that have no text to count:
the 400 Engram answers itself, and the room audio and files take in the context budget."""

from __future__ import annotations

import base64

import pytest

from memory.text import count_message, count_messages
from tests.test_errors import assert_envelope
from tests.upstream import Reply, openai_completion

URL = "/v1/chat/completions"
HEADERS = {"x-user-id": "wanda", "x-conversation-id": "too-long"}
# ~9,800 cl100k tokens: past gpt-4's 8,192 (Engram's table) and a served model's 4,096
# (ENGRAM_CONTEXT_WINDOWS), well within gpt-4o's 128,000.
LONG = "The quarterly report lists every warehouse. " * 1_400


def _stored(owner) -> tuple[int, int]:
    """(conversations, messages) stored for the test's user."""
    from memory.models import Conversation, Message

    workspace = owner[0]
    return (
        Conversation.objects.filter(workspace=workspace, user_id="wanda").count(),
        Message.objects.filter(workspace=workspace, user_id="wanda").count(),
    )


def _refused(resp, *, window: int) -> dict:
    error = assert_envelope(resp, 400, code="context_length_exceeded")
    assert error["type"] == "invalid_request_error"
    assert error["param"] == "messages"
    assert f"maximum context length is {window} tokens" in error["message"]
    return error


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    ("model", "window", "served"),
    [
        ("gpt-4", 8_192, {}),  # Engram's table: OpenAI serves gpt-4 with 8 K
        ("my-served-model", 4_096, {"my-served": 4_096}),  # the operator's setting
    ],
)
def test_a_request_past_a_known_window_is_refused_without_calling_the_upstream(
    http, owner, upstream, settings, stream, model, window, served
):
    """It went upstream as it came, was billed, and the upstream's 400 came back; the user's
    message was stored as a turn meanwhile."""
    settings.ENGRAM_CONTEXT_WINDOWS = served
    upstream.script(Reply(json=openai_completion("never")))
    body = {"model": model, "stream": stream, "messages": [{"role": "user", "content": LONG}]}
    resp = http.post(URL, json=body, headers=HEADERS)
    error = _refused(resp, window=window)
    needed = count_messages(body["messages"])
    assert f"you requested {needed} tokens ({needed} in the messages)" in error["message"]
    assert upstream.chat_requests() == []
    assert _stored(owner) == (0, 0)  # refused before anything of the turn was stored
    # the same answer for the preview of that turn
    _refused(http.post("/v1/context", json=body, headers=HEADERS), window=window)


def test_the_completion_asked_for_and_the_tools_count_toward_the_window(http, upstream):
    """Messages that fit, with max_tokens that leave too little room: OpenAI's own 400."""
    upstream.script(Reply(json=openai_completion("never")))
    tools = [{"type": "function", "function": {"name": "lookup", "description": "Looks up."}}]
    body = {
        "model": "gpt-4",
        "max_tokens": 2_000,
        "tools": tools,
        "messages": [{"role": "user", "content": LONG[: len(LONG) * 7 // 9]}],
    }
    error = _refused(http.post(URL, json=body, headers=HEADERS), window=8_192)
    assert "in the functions and 2000 in the completion" in error["message"]
    assert upstream.chat_requests() == []
    upstream.script(Reply(json=openai_completion("fits")))
    assert http.post(URL, json={**body, "max_tokens": 100}, headers=HEADERS).status_code == 200


def test_an_agent_past_its_models_window_is_refused(http, owner, upstream):
    resp = http.post(
        "/v1/agents", json={"name": "reader", "model": "gpt-4", "instructions": "Be brief."}
    )
    assert resp.status_code == 201, resp.text
    upstream.script(Reply(json=openai_completion("never")))
    body = {"model": "agent:reader", "messages": [{"role": "user", "content": LONG}]}
    _refused(http.post(URL, json=body, headers=HEADERS), window=8_192)
    assert upstream.chat_requests() == []
    assert _stored(owner) == (0, 0)


@pytest.mark.parametrize("model", ["my-ollama-model", "llama3:8b"])
def test_a_guessed_window_never_refuses(http, upstream, settings, model):
    """ENGRAM_DEFAULT_CONTEXT_WINDOW, or an open-weight family's window (Ollama's num_ctx,
    vLLM's --max-model-len decide): the upstream decides, the request goes as it came."""
    settings.ENGRAM_DEFAULT_CONTEXT_WINDOW = 2_048
    upstream.script(Reply(json=openai_completion("read it")))
    body = {"model": model, "messages": [{"role": "user", "content": LONG}]}
    resp = http.post(URL, json=body, headers=HEADERS)
    assert resp.status_code == 200, resp.text
    assert upstream.chat_requests()[-1].body["messages"] == body["messages"]


def test_estimated_parts_never_refuse_a_request(http, upstream):
    """A file's or an image's tokens are an estimate: the upstream decides on those."""
    upstream.script(Reply(json=openai_completion("read it")))
    pdf = base64.b64encode(b"%PDF-1.7 " * 5_000).decode()  # ~11,000 tokens as estimated
    content = [
        {"type": "text", "text": "Summarize this."},
        {"type": "file", "file": {"filename": "a.pdf", "file_data": f"data:;base64,{pdf}"}},
    ]
    messages: list[dict] = [{"role": "user", "content": content}]
    body = {"model": "gpt-4", "messages": messages}
    assert count_messages(messages) > 8_192
    assert http.post(URL, json=body, headers=HEADERS).status_code == 200


# --- parts without text -------------------------------------------------------------------------


def _import_history(http, conversation_id: str, user_id: str, turns: int) -> None:
    messages = []
    for i in range(turns):
        messages.append({"role": "user", "content": f"Question {i} about topic {i}, in detail."})
        messages.append({"role": "assistant", "content": f"Answer {i}: topic {i} is this. " * 4})
    resp = http.post(
        f"/v1/conversations/{conversation_id}/messages",
        json={"user_id": user_id, "messages": messages},
    )
    assert resp.status_code == 201, resp.text


def _audio(seconds: float) -> dict:
    data = base64.b64encode(b"\xff\xf3" * int(4_000 * seconds / 2)).decode()  # mp3, 32 kbit/s
    return {"type": "input_audio", "input_audio": {"data": data, "format": "mp3"}}


def _file(size: int) -> dict:
    data = base64.b64encode(b"%" * size).decode()
    return {"type": "file", "file": {"filename": "a.pdf", "file_data": f"data:;base64,{data}"}}


@pytest.mark.parametrize(
    "part",
    [_audio(120), _file(4_800)],  # 1,200 tokens each as estimated
    ids=["input_audio", "file"],
)
def test_audio_and_files_push_recent_turns_out_of_the_budget(http, upstream, settings, part):
    """They counted 0 tokens: the history filled the window as if they were not there, and
    the upstream refused the turn (or cut it short)."""
    settings.ENGRAM_CONTEXT_WINDOWS = {"my-served": 2_048}
    _import_history(http, "with-parts", "pat", 60)
    headers = {"x-user-id": "pat", "x-conversation-id": "with-parts"}
    question = {"role": "user", "content": [{"type": "text", "text": "And this?"}, part]}
    body = {"model": "my-served-model", "max_tokens": 128, "messages": [question]}

    upstream.script(Reply(json=openai_completion("ok")), Reply(json=openai_completion("ok")))
    plain = {**body, "messages": [{"role": "user", "content": "And this?"}]}
    assert http.post(URL, json=plain, headers=headers).status_code == 200
    without = upstream.chat_requests()[-1].body["messages"]
    assert http.post(URL, json=body, headers=headers).status_code == 200
    sent = upstream.chat_requests()[-1].body["messages"]

    assert sent[-1] == question
    assert count_messages(sent) <= 2_048 - 128  # was ~1,900 + 1,200
    history = [m for m in sent[:-1] if m["role"] != "system"]
    assert history, "the turns that still fit are sent"
    # As much history left out as the part takes (within a turn's ~50 tokens of slack).
    text_only = [*sent[:-1], {"role": "user", "content": "And this?"}]
    assert count_messages(without) - count_messages(text_only) >= 1_200 - 100


def test_the_estimates_of_parts_without_text():
    """One rule per fact: audio's duration at its format's lowest bitrate, at OpenAI's ~1
    token per 100 ms; a file's decoded size at 4 bytes a token; a file_id an allowance."""
    from memory.text import AUDIO_TOKENS_PER_SECOND, FILE_BYTES_PER_TOKEN, FILE_ID_TOKENS

    def parts(*content) -> int:
        return count_message({"role": "user", "content": list(content)}) - count_message(
            {"role": "user", "content": ""}
        )

    wav = base64.b64encode(b"\0" * 16_000 * 3).decode()  # 3 s of 16-bit 8 kHz mono
    audio = {"type": "input_audio", "input_audio": {"data": wav, "format": "wav"}}
    assert parts(audio) == 3 * AUDIO_TOKENS_PER_SECOND
    assert parts(_audio(10)) == 10 * AUDIO_TOKENS_PER_SECOND
    assert parts(_file(4_000)) == 4_000 // FILE_BYTES_PER_TOKEN
    raw = _file(4_000)["file"]["file_data"].split(",", 1)[1]  # base64 without a data URL
    assert parts({"type": "file", "file": {"file_data": raw}}) == 4_000 // FILE_BYTES_PER_TOKEN
    assert parts({"type": "file", "file": {"file_id": "file-abc"}}) == FILE_ID_TOKENS
    assert parts({"type": "file", "file": "nonsense"}, {"type": "input_audio"}) == 0
    assert parts(audio, audio) == 2 * 3 * AUDIO_TOKENS_PER_SECOND


def test_an_o200k_models_refusal_counts_the_fewest_tokens_it_may_take(settings):
    """GPT-4o counts with o200k, up to 4.4x fewer tokens than cl100k outside ASCII (OpenAI's
    Gujarati sample): a long Gujarati question that gpt-4o takes is never refused."""
    from config.common.errors import Invalid
    from memory.turn.assembly import request_fits

    settings.ENGRAM_CONTEXT_WINDOWS = {}
    english = [{"role": "user", "content": LONG * 16}]  # ~157,000 cl100k tokens
    with pytest.raises(Invalid):
        request_fits(body={"messages": english}, model="gpt-4o")
    request_fits(body={"messages": english[:1]}, model="gpt-4.1")  # a window of 1 M
    gujarati = [{"role": "user", "content": "નમસ્તે, આ અહેવાલ વાંચો. " * 12_000}]
    assert 128_000 < count_messages(gujarati) < 128_000 * 4.4
    request_fits(body={"messages": gujarati}, model="gpt-4o")
    with pytest.raises(Invalid):  # cl100k's own models are counted as cl100k counts
        request_fits(body={"messages": gujarati}, model="gpt-4-turbo")


def test_the_bytes_bound_of_messages_is_count_messages_with_utf8_bytes():
    """utf8_bytes_of_messages counts a role-and-text message in line: the same figure as
    count_message's for every shape, the common one and the others it hands back."""
    from memory.text import utf8_bytes, utf8_bytes_of_messages

    shapes: list[dict] = [
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "system", "content": "Réponds en français, brièvement. 東京 🙂"},
        {"role": "user", "content": "a lone surrogate \ud800 counted as three bytes"},
        {"role": "user", "content": ""},
        {"role": "usér", "content": "a role outside ASCII, as count_message takes it"},
        {"content": "no role"},
        {"role": "user", "content": None},
        {"role": "user", "content": [{"type": "text", "text": "part one"}, "part two"]},
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]},
        {"role": "user", "name": "wanda", "content": "named"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "function": {}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "42"},
        {"role": 7, "content": "a role that is not a string"},
    ]
    assert utf8_bytes_of_messages([]) == count_messages([], estimated=False, counter=utf8_bytes)
    for shape in shapes:
        expected = count_messages([shape], estimated=False, counter=utf8_bytes)
        assert utf8_bytes_of_messages([shape]) == expected, shape
    assert utf8_bytes_of_messages(shapes) == count_messages(
        shapes, estimated=False, counter=utf8_bytes
    )


def test_a_changed_window_setting_is_read_at_once(settings):
    """The windows are cached by model name: a setting changed after a lookup is the one the
    next lookup reads (the operator's window, then the default for an unknown model)."""
    from memory.turn.assembly import window_of

    settings.ENGRAM_CONTEXT_WINDOWS = {}
    settings.ENGRAM_DEFAULT_CONTEXT_WINDOW = 8_192
    assert (window_of("my-served-model").tokens, window_of("my-served-model").known) == (
        8_192,
        False,
    )
    settings.ENGRAM_CONTEXT_WINDOWS = {"my-served": 4_096}
    assert (window_of("my-served-model").tokens, window_of("my-served-model").known) == (
        4_096,
        True,
    )
    settings.ENGRAM_CONTEXT_WINDOWS = {}
    settings.ENGRAM_DEFAULT_CONTEXT_WINDOW = 2_048
    assert window_of("my-served-model").tokens == 2_048


@pytest.mark.parametrize(
    "extra",
    [
        {"max_completion_tokens": 8_190},
        {"max_tokens": 8_190},
        {"max_completion_tokens": None, "max_tokens": 8_190},
        {"tools": [{"type": "function", "function": {"name": "f", "description": " a" * 9_000}}]},
        {"response_format": {"type": "json_schema", "json_schema": {"name": " a" * 9_000}}},
    ],
)
def test_a_short_question_is_refused_when_its_completion_or_definitions_do_not_fit(settings, extra):
    """The bytes bound (a request of fewer bytes than its window fits) counts the completion
    asked for and the tools, functions and schema beside the messages: "Hi" with 8,190 tokens
    asked of gpt-4's 8,192, or with 9,000 tokens of tool description, is refused."""
    from config.common.errors import Invalid
    from memory.turn.assembly import request_fits

    settings.ENGRAM_CONTEXT_WINDOWS = {}
    body = {"messages": [{"role": "user", "content": "Hi"}], **extra}
    with pytest.raises(Invalid):
        request_fits(body=body, model="gpt-4")
    # without them it fits; a flag is not a count of tokens
    request_fits(body={"messages": body["messages"], "max_tokens": True}, model="gpt-4")
