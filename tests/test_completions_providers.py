"""Routing by model name, per-workspace credentials and aliases, the local provider, llm.chat."""

import json

import openai
import pytest
from django.db import connection

from completions.models import ProviderCredential
from completions.providers import llm, local
from completions.services import model_alias_set, provider_credential_set
from config.common.crypto import SecretUnreadable
from tests.upstream import Reply, openai_completion

URL = "/v1/chat/completions"


def ask(http, model, **extra):
    return http.post(
        URL, json={"model": model, "messages": [{"role": "user", "content": "Hi there"}], **extra}
    )


@pytest.fixture
def no_upstream(settings):
    settings.OPENAI_BASE_URL = settings.OPENAI_API_KEY = ""
    settings.ANTHROPIC_BASE_URL = settings.ANTHROPIC_API_KEY = ""


# --- routing -----------------------------------------------------------------------------------


def test_claude_names_go_to_anthropic(http, upstream):
    assert ask(http, "claude-3-5-haiku-latest").status_code == 200
    assert upstream.last.path == "/v1/messages"
    assert upstream.last.body["model"] == "claude-3-5-haiku-latest"


def test_other_names_go_to_the_openai_compatible_upstream(http, upstream):
    for name in ("gpt-4o-mini", "llama3.1:8b", "Qwen/Qwen2.5-7B-Instruct"):
        assert ask(http, name).status_code == 200
        assert upstream.last.path == "/v1/chat/completions"
        assert upstream.last.body["model"] == name


def test_claude_without_anthropic_goes_to_the_openai_compatible_upstream(http, upstream, settings):
    settings.ANTHROPIC_BASE_URL = settings.ANTHROPIC_API_KEY = ""
    assert ask(http, "claude-3-5-sonnet").status_code == 200
    assert upstream.last.path == "/v1/chat/completions"


def test_local_name_stays_local_even_with_an_upstream(http, upstream):
    data = ask(http, "local").json()
    assert data["choices"][0]["message"]["content"].endswith("You said: Hi there")
    assert upstream.chat_requests() == []


def test_nothing_configured_means_local(http, no_upstream):
    resp = ask(http, "gpt-4o")
    assert resp.status_code == 200
    data = resp.json()
    assert data["model"] == "gpt-4o" and data["system_fingerprint"] == "engram-local"
    assert data["usage"]["prompt_tokens"] > 0


def test_local_is_deterministic_and_streams(http, no_upstream):
    one = ask(http, "local", n=2).json()
    two = ask(http, "local", n=2).json()
    assert [c["message"] for c in one["choices"]] == [c["message"] for c in two["choices"]]
    assert len(one["choices"]) == 2
    with http.stream(
        "POST",
        URL,
        json={
            "model": "local",
            "messages": [{"role": "user", "content": "Hi there"}],
            "stream": True,
            "stream_options": {"include_usage": True},
        },
    ) as resp:
        import json

        payloads = [
            json.loads(line[6:]) for line in resp.iter_lines() if line.startswith("data: {")
        ]
    text = "".join(p["choices"][0]["delta"].get("content", "") for p in payloads if p["choices"])
    assert text == one["choices"][0]["message"]["content"]
    assert payloads[0]["choices"][0]["delta"]["role"] == "assistant"
    assert payloads[-1]["choices"] == [] and payloads[-1]["usage"] == one["usage"] | {
        "completion_tokens": one["usage"]["completion_tokens"] // 2,
        "total_tokens": one["usage"]["prompt_tokens"] + one["usage"]["completion_tokens"] // 2,
    }


# --- per-workspace credentials and aliases ---------------------------------------------------


def test_workspace_credential_overrides_the_environment(
    http, owner, outsider, upstream, engram_server
):
    import httpx

    provider_credential_set(
        workspace=owner[0],
        provider="openai",
        secret="sk-owner-own-secret",
        base_url=upstream.url + "/v1",
    )
    assert ask(http, "gpt-4o-mini").status_code == 200
    assert upstream.last.headers["authorization"] == "Bearer sk-owner-own-secret"
    with httpx.Client(
        base_url=engram_server.url, headers={"Authorization": f"Bearer {outsider[1]}"}
    ) as other:
        assert ask(other, "gpt-4o-mini").status_code == 200
    assert upstream.last.headers["authorization"] == "Bearer sk-upstream-test"


def test_anthropic_credential_without_env(http, owner, upstream, settings):
    settings.ANTHROPIC_BASE_URL = settings.ANTHROPIC_API_KEY = ""
    provider_credential_set(
        workspace=owner[0], provider="anthropic", secret="sk-ant-owner", base_url=upstream.url
    )
    assert ask(http, "claude-3-5-sonnet").status_code == 200
    assert upstream.last.path == "/v1/messages"
    assert upstream.last.headers["x-api-key"] == "sk-ant-owner"


def test_alias_routes_for_its_workspace_only(http, owner, outsider, upstream, engram_server):
    import httpx

    model_alias_set(workspace=owner[0], alias="smart", target_model="claude-3-7-sonnet")
    model_alias_set(
        workspace=owner[0], alias="fast", target_model="my-vllm-model", provider="openai"
    )
    model_alias_set(workspace=owner[0], alias="offline", target_model="anything", provider="local")
    assert ask(http, "smart").status_code == 200
    assert (
        upstream.last.path == "/v1/messages" and upstream.last.body["model"] == "claude-3-7-sonnet"
    )
    assert ask(http, "fast").status_code == 200
    assert upstream.last.body["model"] == "my-vllm-model"
    count = len(upstream.chat_requests())
    assert ask(http, "offline").json()["system_fingerprint"] == "engram-local"
    assert len(upstream.chat_requests()) == count
    with httpx.Client(
        base_url=engram_server.url, headers={"Authorization": f"Bearer {outsider[1]}"}
    ) as other:
        ask(other, "smart")
    assert upstream.last.path == "/v1/chat/completions" and upstream.last.body["model"] == "smart"


def test_alias_to_an_unconfigured_provider_is_400(http, owner, no_upstream):
    model_alias_set(
        workspace=owner[0], alias="smart", target_model="claude-x", provider="anthropic"
    )
    resp = ask(http, "smart")
    assert resp.status_code == 400 and resp.json()["error"]["param"] == "model"


def test_routing_changes_apply_without_restart(http, owner, upstream):
    assert ask(http, "fast").status_code == 200
    assert upstream.last.body["model"] == "fast"
    model_alias_set(workspace=owner[0], alias="fast", target_model="gpt-4o-mini")
    ask(http, "fast")
    assert upstream.last.body["model"] == "gpt-4o-mini"


# --- secrets at rest ---------------------------------------------------------------------------


def test_secret_is_encrypted_at_rest(owner, settings):
    credential = provider_credential_set(
        workspace=owner[0], provider="openai", secret="sk-very-secret-123456"
    )
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT * FROM completions_providercredential WHERE id = %s", [credential.id]
        )
        row = " ".join(str(v) for v in cursor.fetchone())
    assert "sk-very-secret" not in row
    fresh = ProviderCredential.objects.get(id=credential.id)
    assert fresh.get_secret() == "sk-very-secret-123456" and fresh.secret_hint == "…3456"
    assert "sk-very-secret" not in repr(fresh) + str(fresh)
    settings.ENGRAM_ENCRYPTION_KEY = "a-different-key"
    with pytest.raises(SecretUnreadable):
        fresh.get_secret()
    settings.ENGRAM_ENCRYPTION_KEY = "a-different-key," + settings.SECRET_KEY
    assert fresh.get_secret() == "sk-very-secret-123456"  # rotation: old keys still decrypt


def test_keeping_the_secret_when_only_the_url_changes(owner):
    provider_credential_set(workspace=owner[0], provider="openai", secret="sk-keep-me-000000")
    credential = provider_credential_set(
        workspace=owner[0], provider="openai", base_url="http://x.invalid/v1"
    )
    assert (
        credential.get_secret() == "sk-keep-me-000000"
        and credential.base_url == "http://x.invalid/v1"
    )


def test_admin_never_shows_the_secret(owner, admin_client):
    credential = provider_credential_set(
        workspace=owner[0], provider="openai", secret="sk-admin-hidden-999"
    )
    page = admin_client.get(f"/admin/completions/providercredential/{credential.id}/change/")
    assert page.status_code == 200
    assert b"sk-admin-hidden" not in page.content and "…-999".encode() in page.content
    listing = admin_client.get("/admin/completions/providercredential/")
    assert listing.status_code == 200 and b"sk-admin-hidden" not in listing.content
    resp = admin_client.post(
        f"/admin/completions/providercredential/{credential.id}/change/",
        {
            "workspace": owner[0].id,
            "provider": "openai",
            "base_url": "",
            "secret": "sk-new-secret-0001",
        },
    )
    assert resp.status_code == 302
    assert ProviderCredential.objects.get(id=credential.id).get_secret() == "sk-new-secret-0001"
    for path in ("modelalias", "usagerecord"):
        assert admin_client.get(f"/admin/completions/{path}/").status_code == 200


def test_the_admin_sets_a_credentials_dialect_and_a_post_without_it_keeps_it(owner, admin_client):
    credential = provider_credential_set(workspace=owner[0], provider="openai", secret="sk-x-0001")
    assert credential.dialect == "auto"
    url = f"/admin/completions/providercredential/{credential.id}/change/"
    form = {"workspace": owner[0].id, "provider": "openai", "base_url": "", "secret": ""}
    assert admin_client.post(url, {**form, "dialect": "openai"}).status_code == 302
    assert ProviderCredential.objects.get(id=credential.id).dialect == "openai"
    assert admin_client.post(url, form).status_code == 302  # a script's post, without it
    assert ProviderCredential.objects.get(id=credential.id).dialect == "openai"
    refused = admin_client.post(url, {**form, "dialect": "mistral"})
    assert refused.status_code == 200 and "dialect" in refused.context["adminform"].form.errors


# --- Engram's own LLM calls (completions.providers.llm.chat, for Celery) ----------------------------------


def test_llm_chat_goes_through_the_routes(owner, upstream):
    upstream.script(Reply(json=openai_completion("extracted")))
    text = llm.chat(
        workspace=owner[0],
        messages=[{"role": "user", "content": "x"}],
        response_format={"type": "json_object"},
    )
    assert text == "extracted"
    assert upstream.last.body["response_format"] == {"type": "json_object"}
    assert upstream.last.body["model"] == "gpt-4o-mini"
    text = llm.chat(
        workspace=owner[0], messages=[{"role": "user", "content": "y"}], model="claude-3-5-haiku"
    )
    assert text == "echo: y" and upstream.last.path == "/v1/messages"


def test_llm_chat_uses_workspace_aliases(owner, upstream, settings):
    settings.ENGRAM_MEMORY_LLM_MODEL = "memory-model"
    model_alias_set(workspace=owner[0], alias="memory-model", target_model="claude-3-5-haiku")
    llm.chat(workspace=owner[0], messages=[{"role": "user", "content": "z"}])
    assert (
        upstream.last.path == "/v1/messages" and upstream.last.body["model"] == "claude-3-5-haiku"
    )


def test_llm_chat_without_an_llm_is_unavailable(owner, no_upstream):
    with pytest.raises(llm.LLMUnavailable):
        llm.chat(workspace=owner[0], messages=[{"role": "user", "content": "x"}])


def test_llm_chat_local_model_is_unavailable(owner, upstream):
    with pytest.raises(llm.LLMUnavailable):
        llm.chat(workspace=owner[0], messages=[{"role": "user", "content": "x"}], model="local")


def test_llm_chat_errors(owner, upstream, settings):
    settings.ENGRAM_UPSTREAM_RETRY_BACKOFF = 0.01
    upstream.script(*[Reply(status=500, json={"error": {"message": "down"}})] * 3)
    with pytest.raises(llm.LLMError):
        llm.chat(workspace=owner[0], messages=[{"role": "user", "content": "x"}])
    upstream.script(Reply(json={"choices": []}))
    with pytest.raises(llm.LLMError):
        llm.chat(workspace=owner[0], messages=[{"role": "user", "content": "x"}])


def test_llm_chat_leaves_out_a_reasoning_models_thinking(owner, upstream):
    """DeepSeek-R1 / Qwen3 on Ollama put "<think>...</think>" before the answer: summaries and
    extraction read the answer, not the reasoning (whose drafts hold braces and fences)."""
    thought = '<think>\nThe user wants JSON. Draft: ```json\n{"facts": [}\n```\n</think>\n\n'
    upstream.script(Reply(json=openai_completion(thought + '{"facts": ["lives in Berlin"]}')))
    text = llm.chat(workspace=owner[0], messages=[{"role": "user", "content": "x"}])
    assert text == '{"facts": ["lives in Berlin"]}'
    upstream.script(Reply(json=openai_completion("<think>\nStill thinking when max_tokens ran")))
    with pytest.raises(llm.LLMError, match="all thinking"):
        llm.chat(workspace=owner[0], messages=[{"role": "user", "content": "x"}])


# --- the local provider keeps OpenAI's parameters (or refuses them by name) ---------------------


def _local(sdk, stream: bool = False, **fields):
    """One local answer through the official SDK: (text, finish_reason, usage)."""
    messages = [{"role": "user", "content": "Hi there, tell me about Berlin and Paris please"}]
    if not stream:
        answer = sdk.chat.completions.create(model="local", messages=messages, **fields)
        choice = answer.choices[0]
        return choice.message.content, choice.finish_reason, answer.usage
    chunks = list(
        sdk.chat.completions.create(
            model="local",
            messages=messages,
            stream=True,
            stream_options={"include_usage": True},
            **fields,
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finish = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    return text, finish[-1], chunks[-1].usage


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("cap", ["max_completion_tokens", "max_tokens"])
def test_local_stops_at_the_token_cap_with_finish_reason_length(sdk, stream, cap):
    whole, _, _ = _local(sdk)
    text, finish, usage = _local(sdk, stream, **{cap: 3})
    # "(local model": three of the local model's tokens; the answer before was the whole quote
    assert (text, finish, usage.completion_tokens) == ("(local model", "length", 3)
    assert whole.startswith(text) and len(whole) > len(text)
    text, finish, _ = _local(sdk, stream, **{cap: 1000})
    assert (text, finish) == (whole, "stop")


@pytest.mark.parametrize("stream", [False, True])
def test_local_stops_before_the_first_stop_sequence(sdk, stream):
    text, finish, usage = _local(sdk, stream, stop=["Paris", "Berlin"])
    assert text == "(local model, no LLM configured) You said: Hi there, tell me about "
    assert finish == "stop" and usage.completion_tokens == local.count_tokens(text)
    # a stop past the token cap: the cap comes first
    text, finish, _ = _local(sdk, stream, stop="Paris", max_completion_tokens=2)
    assert (text, finish) == ("(local", "length")


@pytest.mark.parametrize("stream", [False, True])
def test_local_answers_json_when_asked_for_a_json_object(sdk, stream):
    text, finish, _ = _local(sdk, stream, response_format={"type": "json_object"})
    assert finish == "stop"
    assert json.loads(text) == {"reply": _local(sdk)[0]}


TOOLS = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"logprobs": True}, "logprobs"),
        ({"logprobs": True, "top_logprobs": 2}, "logprobs"),
        ({"tools": TOOLS, "tool_choice": "required"}, "tool_choice"),
        (
            {"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "lookup"}}},
            "tool_choice",
        ),
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "x", "schema": {"type": "object"}},
                }
            },
            "response_format",
        ),
        ({"modalities": ["text", "audio"], "audio": {"voice": "alloy"}}, "modalities"),
    ],
)
@pytest.mark.parametrize("fast_path", [True, False], ids=["asgi", "django"])
def test_what_the_local_model_cannot_do_is_a_400_naming_it(
    sdk, settings, fast_path, stream, fields, param
):
    settings.ENGRAM_GATEWAY_FAST_PATH = fast_path
    with pytest.raises(openai.BadRequestError) as refused:
        _local(sdk, stream, **fields)
    error = refused.value.body
    assert (error["param"], error["code"]) == (param, "unsupported")
    assert "local" in error["message"]


def test_what_the_local_model_can_do_stays_a_200(sdk):
    # no logprobs asked, tools the model may leave uncalled, a plain text format
    text, finish, _ = _local(
        sdk,
        logprobs=False,
        tools=TOOLS,
        tool_choice="auto",
        response_format={"type": "text"},
        modalities=["text"],
        seed=7,
    )
    assert text.endswith("You said: Hi there, tell me about Berlin and Paris please")
    assert finish == "stop"
