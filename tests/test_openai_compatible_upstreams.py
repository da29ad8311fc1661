"""vLLM, Ollama, llama.cpp and other OpenAI-compatible servers as the upstream: their quirks in
answers, and the context budget with small windows and model names Engram does not know."""

from __future__ import annotations

import json

import openai
import pytest

from tests.upstream import Reply, openai_completion, openai_stream
from tests.upstream import extra_field_error as upstream_refusal

URL = "/v1/chat/completions"
CALL = {"id": "call_w1", "type": "function", "function": {"name": "get_weather"}}
ARGUMENTS = {"city": "Paris", "unit": "C"}


def _chunk(delta: dict, finish: str | None = None) -> dict:
    return {
        "id": "chatcmpl-q",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "qwen2.5:7b",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def _object_arguments_stream() -> list:
    """A tool call whose arguments come as a JSON object, in one chunk (as some servers send)."""
    call = {"index": 0, **CALL, "function": {**CALL["function"], "arguments": ARGUMENTS}}
    return [
        _chunk({"role": "assistant", "content": None}),
        _chunk({"tool_calls": [call]}),
        _chunk({}, "tool_calls"),
        "[DONE]",
    ]


def _sent_calls(upstream) -> list[dict]:
    """The tool calls of the assistant messages in the last request the upstream received."""
    messages = upstream.chat_requests()[-1].body["messages"]
    return [c for m in messages if m["role"] == "assistant" for c in m.get("tool_calls") or []]


def test_streamed_tool_call_arguments_sent_as_an_object_reach_the_client_as_text(http, upstream):
    upstream.script(Reply(stream=_object_arguments_stream()))
    headers = {"x-user-id": "olga", "x-conversation-id": "weather-stream"}
    body = {
        "model": "qwen2.5:7b",
        "stream": True,
        "messages": [{"role": "user", "content": "Weather in Paris?"}],
    }
    resp = http.post(URL, json=body, headers=headers)
    assert resp.status_code == 200
    events = [line[6:] for line in resp.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert not [c for c in chunks if "error" in c], chunks  # was an "Internal server error" frame
    calls = [t for c in chunks for ch in c["choices"] for t in ch["delta"].get("tool_calls") or []]
    assert [json.loads(c["function"]["arguments"]) for c in calls] == [ARGUMENTS]
    # The answer was stored with its arguments as text: the next turn sends them so.
    upstream.script(Reply(json=openai_completion("Sunny.")))
    result = {"role": "tool", "tool_call_id": "call_w1", "content": "sunny"}
    follow = {"model": "qwen2.5:7b", "messages": [result]}
    assert http.post(URL, json=follow, headers=headers).status_code == 200
    assert [json.loads(c["function"]["arguments"]) for c in _sent_calls(upstream)] == [ARGUMENTS]


def test_tool_call_arguments_sent_as_an_object_come_back_as_text(http, upstream):
    call = {**CALL, "function": {**CALL["function"], "arguments": ARGUMENTS}}
    upstream.script(Reply(json=openai_completion(tool_calls=[call], model="llama3.1:8b")))
    question = {"role": "user", "content": "Weather in Paris?"}
    headers = {"x-user-id": "olga"}
    resp = http.post(URL, json={"model": "llama3.1:8b", "messages": [question]}, headers=headers)
    assert resp.status_code == 200
    message = resp.json()["choices"][0]["message"]
    assert json.loads(message["tool_calls"][0]["function"]["arguments"]) == ARGUMENTS
    # The client sends its transcript back as the SDK keeps it: Engram takes it (the arguments
    # of a client's message must be text, and were an object).
    result = {"role": "tool", "tool_call_id": "call_w1", "content": "sunny"}
    transcript = [question, message, result]
    again = http.post(URL, json={"model": "llama3.1:8b", "messages": transcript}, headers=headers)
    assert again.status_code == 200, again.text


# --- the context budget ------------------------------------------------------------------------


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


def _prompt_tokens(body: dict) -> int:
    """What the upstream reads, counted with tiktoken's cl100k as Engram says it counts."""
    from config.common.tokens import count
    from memory.text import count_messages

    tools = json.dumps({"tools": body["tools"]}, separators=(",", ":")) if "tools" in body else ""
    return count_messages(body["messages"]) + count(tools)


def test_tool_definitions_count_in_the_context_budget(http, upstream, settings):
    settings.ENGRAM_DEFAULT_CONTEXT_WINDOW = 2048
    _import_history(http, "tools-budget", "tess", 60)
    tools = [
        {
            "type": "function",
            "function": {
                "name": f"tool_{i}",
                "description": "Looks something up in the company's records. " * 6,
                "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
            },
        }
        for i in range(8)
    ]
    body = {
        "model": "my-vllm-model",  # unknown: ENGRAM_DEFAULT_CONTEXT_WINDOW
        "max_tokens": 256,
        "tools": tools,
        "messages": [{"role": "user", "content": "What was topic 59 about?"}],
    }
    headers = {"x-user-id": "tess", "x-conversation-id": "tools-budget"}
    preview = http.post("/v1/context", json=body, headers=headers).json()
    resp = http.post(URL, json=body, headers=headers)
    assert resp.status_code == 200
    sent = upstream.chat_requests()[-1].body
    assert sent["tools"] == tools
    assert sent["messages"][-3:-1] == preview["messages"][-3:-1]  # history: the newest turns
    assert _prompt_tokens(sent) <= 2048 - 256  # was ~2,250 with the tools' ~560 tokens
    budget = preview["budget"]
    assert budget["reserved_for_definitions"] > 500
    assert budget["available"] == 2048 - 256 - budget["reserved_for_definitions"]
    assert preview["context_tokens"] <= budget["available"]


def test_an_alias_is_sized_for_the_window_of_the_model_it_names(http, owner, upstream, settings):
    """Apps keep `model: "gpt-4o"` in their code and the operator points it at a local model:
    the budget is the local model's window (unknown: the default), not gpt-4o's 128,000."""
    from completions.services import model_alias_set

    settings.ENGRAM_DEFAULT_CONTEXT_WINDOW = 2048
    model_alias_set(workspace=owner[0], alias="gpt-4o", target_model="tiny-vllm")
    _import_history(http, "aliased", "alia", 80)
    body = {
        "model": "gpt-4o",
        "max_tokens": 200,
        "messages": [{"role": "user", "content": "What was topic 79 about?"}],
    }
    headers = {"x-user-id": "alia", "x-conversation-id": "aliased"}
    preview = http.post("/v1/context", json=body, headers=headers).json()
    assert preview["budget"]["context_window"] == 2048
    resp = http.post(URL, json=body, headers=headers)
    assert resp.status_code == 200
    sent = upstream.chat_requests()[-1].body
    assert sent["model"] == "tiny-vllm"
    assert _prompt_tokens(sent) <= 2048 - 200  # was the whole stored history, ~5,000 tokens
    assert resp.json()["engram"]["context_tokens"] == preview["context_tokens"]


def test_the_operator_names_the_windows_of_the_models_it_serves(http, upstream, settings):
    """vLLM serving Llama 3.1 with --max-model-len 4096: Engram's table says 128,000 for
    llama3.1, ENGRAM_CONTEXT_WINDOWS says what the server takes."""
    settings.ENGRAM_CONTEXT_WINDOWS = {"meta-llama/llama-3.1-8b-instruct": 4096, "tiny": 1024}
    _import_history(http, "served", "vera", 150)
    body = {
        "model": "meta-llama/Llama-3.1-8B-Instruct",
        "max_tokens": 300,
        "messages": [{"role": "user", "content": "What was topic 149 about?"}],
    }
    headers = {"x-user-id": "vera", "x-conversation-id": "served"}
    preview = http.post("/v1/context", json=body, headers=headers).json()
    assert preview["budget"]["context_window"] == 4096
    assert http.post(URL, json=body, headers=headers).status_code == 200
    assert _prompt_tokens(upstream.chat_requests()[-1].body) <= 4096 - 300
    tiny = {**body, "model": "tiny-3b-q4"}  # a prefix
    assert (
        http.post("/v1/context", json=tiny, headers=headers).json()["budget"]["context_window"]
        == 1024
    )


def test_the_windows_setting_is_read_strictly(monkeypatch):
    import pytest
    from django.core.exceptions import ImproperlyConfigured

    from config.env import context_windows

    monkeypatch.setenv("ENGRAM_CONTEXT_WINDOWS", " llama3.1:8b=8192, Qwen/Qwen2.5-7B=4096 ,")
    assert context_windows() == {"llama3.1:8b": 8192, "qwen/qwen2.5-7b": 4096}
    for bad in ("llama3.1:8b", "x=0", "=4096", "x=8k"):
        monkeypatch.setenv("ENGRAM_CONTEXT_WINDOWS", bad)
        with pytest.raises(ImproperlyConfigured, match="ENGRAM_CONTEXT_WINDOWS"):
            context_windows()


def test_history_cut_short_starts_at_a_question(http, upstream, settings):
    """The oldest turns are dropped whole: the history never opens with an answer whose
    question was left out."""
    settings.ENGRAM_DEFAULT_CONTEXT_WINDOW = 2048
    _import_history(http, "cut", "cleo", 60)
    headers = {"x-user-id": "cleo", "x-conversation-id": "cut"}
    firsts = set()
    for max_tokens in range(300, 360, 6):  # cut points across several turns
        body = {
            "model": "my-vllm-model",
            "max_tokens": max_tokens,
            "messages": [{"role": "user", "content": "What was topic 59 about?"}],
        }
        preview = http.post("/v1/context", json=body, headers=headers).json()
        history = preview["messages"][:-1]
        history = [m for m in history if m["role"] != "system"]
        assert history, preview["blocks"]
        firsts.add(history[0]["role"])
        assert len(history) % 2 == 0  # whole turns, question and answer
    assert firsts == {"user"}


def test_one_system_message_for_templates_that_take_one(http, upstream, settings):
    """Mistral's chat template on vLLM refuses a second system message ("Conversation roles
    must alternate"): with ENGRAM_SYSTEM_MESSAGES=one, the request's system prompt and Engram's
    memory block go upstream as one leading system message, and /v1/context shows the same."""
    made = http.post("/v1/memories", json={"user_id": "mo", "text": "Mo lives in Lyon."})
    assert made.status_code == 201, made.text
    body = {
        "model": "mistral-7b",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Where does Mo live?"},
        ],
    }
    headers = {"x-user-id": "mo"}
    assert http.post(URL, json=body, headers=headers).status_code == 200
    separate = upstream.chat_requests()[-1].body["messages"]
    assert [m["role"] for m in separate] == ["system", "system", "user"]

    settings.ENGRAM_SYSTEM_MESSAGES = "one"
    assert http.post(URL, json=body, headers=headers).status_code == 200
    sent = upstream.chat_requests()[-1].body["messages"]
    context = http.post("/v1/context", json=body, headers=headers).json()

    assert [m["role"] for m in sent[:-1]].count("system") == 1 and sent[0]["role"] == "system"
    assert sent[0]["content"].startswith("Be brief.\n\n") and "lives in Lyon" in sent[0]["content"]
    assert context["messages"][:1] == sent[:1]


ANSWER = {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}


@pytest.mark.parametrize(
    "reply",
    [
        {"object": "chat.completion"},  # no choices
        {"choices": "hi"},
        {"choices": [1]},
        {"choices": [{"index": 0, "message": "hi"}]},
        {"choices": [{"index": 0, "message": {"role": "assistant", "tool_calls": "x"}}]},
    ],
)
def test_an_answer_engram_cannot_read_is_a_502_not_a_200_or_a_500(http, upstream, reply):
    """A reply of another shape under status 200 (a proxy's page, a server's bug) came back as
    a "completion" without choices, or failed Engram itself: a 500 saying nothing. Its code
    tells it from the upstream's own errors (it had none)."""
    upstream.script(Reply(json=reply))
    response = http.post(URL, json={"model": "m", "messages": [{"role": "user", "content": "x"}]})
    assert response.status_code == 502, response.text
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("upstream_error", "upstream_bad_reply")


@pytest.mark.parametrize(
    "chunk",
    [
        {"choices": "hi"},
        {"choices": [1]},
        {"choices": [{"index": 0, "delta": "hi"}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": "x"}}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": 3}]}}]},
    ],
)
def test_a_chunk_engram_cannot_read_is_an_upstream_error_frame(http, upstream, chunk):
    """Such a chunk failed the relay: an "Internal server error" frame, or (bad usage counts)
    the connection cut with no frame and no [DONE]."""
    upstream.script(Reply(stream=[_chunk({"role": "assistant", "content": "a"}), chunk, "[DONE]"]))
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": True}
    with http.stream("POST", URL, json=body | {"stream_options": {"include_usage": True}}) as resp:
        frames = [line[6:] for line in resp.iter_lines() if line.startswith("data: ")]
    assert frames[-1] == "[DONE]"
    error = json.loads(frames[-2])["error"]
    assert error["type"] == "upstream_error" and "unexpected" in error["message"]


@pytest.mark.parametrize(
    "usage", ["12 tokens", {"prompt_tokens": "3", "completion_tokens": 1}, {"total_tokens": -4}]
)
@pytest.mark.parametrize("stream", [False, True])
def test_usage_that_is_no_count_leaves_the_answer_whole(http, upstream, usage, stream):
    """The answer is sound; only its figures are not (completions.usage.count reads them as
    not reported): the client gets the answer, streamed to its [DONE], not a 502 or a cut."""
    if stream:
        chunks = [_chunk({"role": "assistant", "content": "hi"}), {"choices": [], "usage": usage}]
        upstream.script(Reply(stream=[*chunks, "[DONE]"]))
    else:
        upstream.script(Reply(json={"choices": [ANSWER], "usage": usage}))
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": stream}
    if not stream:
        response = http.post(URL, json=body)
        assert response.status_code == 200, response.text
        assert response.json()["choices"][0]["message"]["content"] == "hi"
        return
    with http.stream("POST", URL, json=body | {"stream_options": {"include_usage": True}}) as resp:
        frames = [line[6:] for line in resp.iter_lines() if line.startswith("data: ")]
    assert resp.status_code == 200 and frames[-1] == "[DONE]"
    assert not any('"error"' in frame for frame in frames)
    text = "".join(
        c["delta"].get("content") or ""
        for f in frames[:-1]
        for c in json.loads(f).get("choices", [])
    )
    assert text == "hi"


def test_an_error_answered_as_json_to_a_stream_is_its_status_with_its_words(sdk, upstream):
    """A proxy (one-api, new-api) answering a stream request with its error as JSON under
    status 200: the client got a 200 and "The upstream stream ended before it was complete",
    the upstream's words lost and nothing for its SDK to retry."""
    import openai

    said = "quota of channel exhausted"
    upstream.script(Reply(json={"error": {"message": said, "type": "new_api_error"}}))
    with pytest.raises(openai.APIStatusError) as info:
        sdk.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}], stream=True
        )
    assert info.value.status_code == 502 and said in info.value.message


def test_an_answer_to_a_stream_given_whole_is_streamed(sdk, upstream):
    """A server that ignored `stream` (its answer as one JSON): its answer, as chunks."""
    call = {**CALL, "function": {**CALL["function"], "arguments": json.dumps(ARGUMENTS)}}
    whole = openai_completion(tool_calls=[call], usage={"prompt_tokens": 3, "completion_tokens": 2})
    whole["choices"][0]["message"]["content"] = "Looking it up."
    upstream.script(Reply(json=whole))
    with sdk.chat.completions.stream(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        stream_options={"include_usage": True},
    ) as stream:
        final = stream.get_final_completion()
    [choice] = final.choices
    assert choice.message.content == "Looking it up." and choice.finish_reason == "tool_calls"
    assert [(c.id, c.function.arguments) for c in choice.message.tool_calls] == [
        ("call_w1", json.dumps(ARGUMENTS))
    ]
    assert (final.usage.prompt_tokens, final.usage.completion_tokens) == (3, 2)


@pytest.mark.parametrize("stream", [False, True])
def test_openais_newer_names_reach_other_servers_as_they_read_them(sdk, upstream, stream):
    """The OpenAI SDK's `max_completion_tokens` and `developer` role, to Ollama, LM Studio or
    a model's chat template: Ollama and LM Studio read only `max_tokens` (the cap was ignored,
    the answer ran to the context's end) and left a developer message out unsaid."""
    reply = Reply(stream=openai_stream(["Hi"], model="qwen2.5:7b")) if stream else None
    upstream.script(reply or Reply(json=openai_completion("Hi", model="qwen2.5:7b")))
    messages = [
        {"role": "developer", "content": "Answer in French."},
        {"role": "user", "content": "Hello"},
    ]
    answer = sdk.chat.completions.create(
        model="qwen2.5:7b", messages=messages, max_completion_tokens=12, stream=stream
    )
    if stream:
        assert [c for c in answer if c.choices and c.choices[0].delta.content]
    sent = upstream.chat_requests()[-1].body
    assert sent["max_tokens"] == 12 and "max_completion_tokens" not in sent
    assert sent["messages"][0] == {"role": "system", "content": "Answer in French."}
    # OpenAI's own models get the body as the client sent it (its newer models refuse
    # max_tokens), and so does a client's own max_tokens.
    upstream.script(Reply(json=openai_completion("Hi", model="gpt-5-mini")))
    sdk.chat.completions.create(model="gpt-5-mini", messages=messages, max_completion_tokens=12)
    sent = upstream.chat_requests()[-1].body
    assert sent["max_completion_tokens"] == 12 and "max_tokens" not in sent
    assert sent["messages"] == messages
    # gpt-oss is OpenAI's open weights, which these servers serve.
    upstream.script(Reply(json=openai_completion("Hi", model="gpt-oss:20b")))
    sdk.chat.completions.create(model="gpt-oss:20b", messages=messages, max_completion_tokens=12)
    assert upstream.chat_requests()[-1].body["max_tokens"] == 12


def test_a_server_that_refuses_stream_options_streams_without_them(sdk, upstream):
    """Mistral's API refuses `stream_options` (422 "Extra inputs are not permitted"), which
    Engram adds to every stream to read its usage: every stream to it failed, the client's own
    without the field too. Asked again without it, the stream comes (its usage sent unasked);
    and `max_completion_tokens`, which it refuses too, goes as its `max_tokens`."""
    upstream.refuses_extra_fields = True
    upstream.script(Reply(stream=openai_stream(["Bon", "jour"], model="mistral-small-latest")))
    stream = sdk.chat.completions.create(
        model="mistral-small-latest",
        messages=[{"role": "user", "content": "Hello"}],
        max_completion_tokens=20,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Bonjour"
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0
    first, second = upstream.chat_requests()
    assert first.body["stream_options"] == {"include_usage": True}
    assert "stream_options" not in second.body and second.body["max_tokens"] == 20


@pytest.mark.parametrize("stream", [False, True])
def test_a_server_that_refuses_openais_optional_fields_answers_without_them(sdk, upstream, stream):
    """Mistral's API refuses `metadata` and `store` too (422 extra_forbidden, every extra field
    named in one answer): the client's request failed with it, streamed or not. Asked once
    more without the fields it named, the answer comes; the fields Engram needs stay."""
    upstream.refuses_extra_fields = True
    model = "mistral-small-latest"
    if stream:
        upstream.script(Reply(stream=openai_stream(["Bon", "jour"], model=model)))
    else:
        upstream.script(Reply(json=openai_completion("Bonjour", model=model)))
    answer = sdk.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Hello"}],
        metadata={"team": "search"},
        store=False,
        temperature=0.2,
        stream=stream,
    )
    if stream:
        text = "".join(c.choices[0].delta.content or "" for c in answer if c.choices)
    else:
        text = answer.choices[0].message.content
    assert text == "Bonjour"
    first, second = upstream.chat_requests()  # one retry, all the named fields out at once
    assert first.body["metadata"] == {"team": "search"} and first.body["store"] is False
    dropped = {"metadata", "store", "stream_options"}
    assert not dropped & set(second.body)
    assert second.body["temperature"] == 0.2 and second.body["messages"] == first.body["messages"]


@pytest.mark.parametrize(
    ("model", "said"),
    [
        ("mistral-small-latest", "'temperature' must be at most 1."),
        ("gpt-4o-mini", "'metadata' is only allowed when 'store' is enabled."),
    ],
    ids=["not-droppable", "openais-own"],
)
def test_a_refusal_that_is_the_clients_is_not_asked_again(sdk, upstream, model, said):
    """Only the optional fields a server does not have are dropped: a refusal of anything else,
    or OpenAI's own refusal of one (a rule of its own), is the client's, after one request."""
    upstream.script(Reply(json={"error": {"message": said, "type": "invalid"}}, status=400))
    with pytest.raises(openai.BadRequestError) as info:
        sdk.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "Hello"}],
            metadata={"team": "search"},
            temperature=1.5,
        )
    assert said in info.value.message
    assert len(upstream.chat_requests()) == 1


def test_a_reasoning_model_under_a_proxys_name_gets_its_cap_as_max_completion_tokens(sdk, upstream):
    """An OpenAI reasoning model behind a proxy under a name of the operator's: Engram took it
    for another server and sent `max_completion_tokens` as `max_tokens`, which OpenAI's
    reasoning models refuse (400 "Unsupported parameter: 'max_tokens'"). Asked once more
    with the cap under the name the refusal asks for, it answers."""
    refusal = {
        "error": {
            "message": "Unsupported parameter: 'max_tokens' is not supported with this model. "
            "Use 'max_completion_tokens' instead.",
            "type": "invalid_request_error",
            "param": "max_tokens",
            "code": "unsupported_parameter",
        }
    }
    upstream.script(
        Reply(json=refusal, status=400), Reply(json=openai_completion("Hi", model="o3-mini"))
    )
    answer = sdk.chat.completions.create(
        model="corp-reasoner",
        messages=[{"role": "user", "content": "Hello"}],
        max_completion_tokens=300,
    )
    assert answer.choices[0].message.content == "Hi"
    first, second = upstream.chat_requests()
    assert first.body["max_tokens"] == 300 and "max_completion_tokens" not in first.body
    assert second.body["max_completion_tokens"] == 300 and "max_tokens" not in second.body


REASONER_ASK = [
    {"role": "developer", "content": "Answer in French."},
    {"role": "user", "content": "Hello"},
]


def test_a_credential_that_says_its_upstream_is_openais_gets_the_body_as_sent(sdk, owner, upstream):
    """A proxy in front of OpenAI under names of its own (`corp-reasoner`) was taken for
    another server by its host and name: `max_completion_tokens` went as `max_tokens` (which
    OpenAI's reasoning models refuse) and `developer` as `system`. The workspace's credential
    says the upstream is OpenAI's (its dialect): the body goes as the client sent it."""
    from completions.services import provider_credential_set

    provider_credential_set(
        workspace=owner[0],
        provider="openai",
        secret="sk-proxy-key-0001",
        base_url=upstream.url + "/v1",
        dialect="openai",
    )
    upstream.script(Reply(json=openai_completion("Bonjour", model="o3-mini")))
    sdk.chat.completions.create(
        model="corp-reasoner", messages=REASONER_ASK, max_completion_tokens=300
    )
    sent = upstream.chat_requests()[-1].body
    assert sent["max_completion_tokens"] == 300 and "max_tokens" not in sent
    assert sent["messages"] == REASONER_ASK


def test_a_deployment_whose_upstream_is_generic_gets_the_older_names(sdk, upstream, settings):
    """OPENAI_DIALECT=generic: a server that serves models under OpenAI's names (a local
    `gpt-4o-mini`, an alias of Ollama's) reads the older names, whatever the model's name."""
    settings.OPENAI_DIALECT = "generic"
    upstream.script(Reply(json=openai_completion("Bonjour", model="gpt-5-mini")))
    sdk.chat.completions.create(model="gpt-5-mini", messages=REASONER_ASK, max_completion_tokens=30)
    sent = upstream.chat_requests()[-1].body
    assert sent["max_tokens"] == 30 and "max_completion_tokens" not in sent
    assert sent["messages"][0] == {"role": "system", "content": "Answer in French."}


def test_a_refusal_naming_a_field_past_its_first_500_characters_drops_it_too(sdk, upstream):
    """Mistral's 422 lists every refused field with its input: a long `metadata` pushed the
    next one (`store`) past the 500 characters of the message the client reads, which is all
    the mend read: one retry without `metadata` alone, refused again for `store`, and the
    client got that 422. The refusal is read whole: both go in the one retry."""
    upstream.refuses_extra_fields = True
    model = "mistral-small-latest"
    upstream.script(Reply(json=openai_completion("Bonjour", model=model)))
    metadata = {"notes": "n" * 400, "trace": "t" * 400}
    answer = sdk.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Hello"}],
        metadata=metadata,
        store=False,
    )
    assert answer.choices[0].message.content == "Bonjour"
    first, second = upstream.chat_requests()
    refused = json.dumps(upstream_refusal(first.body))
    assert refused.index('"store"') > 500  # named past the part the client's message keeps
    assert first.body["metadata"] == metadata and "store" in first.body
    assert not {"metadata", "store"} & set(second.body)
