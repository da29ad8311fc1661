"""Agents over HTTP with the official OpenAI client against the loopback upstream: CRUD and
versions, calling `agent_…` / `agent:<name>[@n]`, the memory policy, collections, /v1/models,
/v1/context, and the _engram… tool calls."""

from __future__ import annotations

import json
import time

import httpx
import openai
import pytest

from completions.models import UsageRecord
from completions.usage import buffer
from tests.test_errors import assert_envelope
from tests.upstream import Reply, openai_completion, openai_stream

ENGRAM_TOOLS = [
    {
        "type": "function",
        "function": {"name": name, "parameters": {"type": "object", "properties": {}}},
    }
    for name in (
        "_engramSearchProgress",
        "_engramSearchSources",
        "_engramAppendConversationMessage",
    )
]


@pytest.fixture
def sdk(engram_server, owner):
    return openai.OpenAI(base_url=engram_server.url + "/v1", api_key=owner[1], max_retries=0)


def _agent(http, **body) -> dict:
    resp = http.post("/v1/agents", json={"name": "helper", "model": "gpt-4o-mini", **body})
    assert resp.status_code == 201, resp.text
    return resp.json()


def _gateway_requests(upstream) -> list:
    """What the gateway relayed (not the worker's JSON-mode memory extraction calls)."""
    return [
        r
        for r in upstream.chat_requests()
        if (r.body or {}).get("response_format", {}).get("type") != "json_object"
    ]


def _sent(upstream) -> dict:
    return _gateway_requests(upstream)[-1].body


def test_crud_and_versions(http, owner, outsider, engram_server):
    agent = _agent(
        http,
        instructions="Be brief.",
        parameters={"temperature": 0.3},
        memory={"extraction": False},
        metadata={"team": "support"},
    )
    assert agent["id"].startswith("agent_") and agent["version"] == 1
    assert agent["memory"] == {
        "enabled": True,
        "extraction": False,
        "retrieve_messages": True,
        "budgets": {},
    }
    assert {"created_at", "updated_at", "collection_ids"} <= set(agent)
    url = f"/v1/agents/{agent['id']}"
    assert http.get(url).json() == agent
    assert [a["id"] for a in http.get("/v1/agents").json()["data"]] == [agent["id"]]

    changed = http.patch(url, json={"instructions": "Be thorough."}).json()
    assert changed["version"] == 2 and changed["instructions"] == "Be thorough."
    assert http.patch(url, json={"instructions": "Be thorough."}).json()["version"] == 2
    versions = http.get(url + "/versions").json()["data"]
    assert [(v["version"], v["instructions"]) for v in versions] == [
        (2, "Be thorough."),
        (1, "Be brief."),
    ]

    # bad input is a 400 naming the field; a second agent of the same name too
    assert_envelope(http.post("/v1/agents", json={"name": "helper", "model": "m"}), 400)
    bad = http.post(
        "/v1/agents", json={"name": "x", "model": "m", "parameters": {"temperature": 9}}
    )
    assert_envelope(bad, 400)
    assert bad.json()["error"]["param"] == "parameters"
    assert (
        http.post("/v1/agents", json={"name": "a b", "model": "m"}).json()["error"]["param"]
        == "name"
    )
    assert_envelope(http.post("/v1/agents", json={"name": "x", "model": "agent:helper"}), 400)
    assert_envelope(http.post("/v1/agents", json={"name": "x"}), 400)
    assert_envelope(http.post("/v1/agents", json={"name": "x", "model": "m", "nope": 1}), 400)
    unknown_col = http.post(
        "/v1/agents", json={"name": "x", "model": "m", "collection_ids": ["col_x"]}
    )
    assert_envelope(unknown_col, 404, code="collection_not_found")

    with httpx.Client(
        base_url=engram_server.url, headers={"Authorization": f"Bearer {outsider[1]}"}
    ) as other:
        assert other.get("/v1/agents").json()["data"] == []
        assert_envelope(other.get(url), 404)
        assert_envelope(other.patch(url, json={"name": "mine"}), 404)
        assert_envelope(other.delete(url), 404)
        assert_envelope(other.get(url + "/versions"), 404)

    assert http.delete(url).json() == {
        "id": agent["id"],
        "object": "agent.deleted",
        "deleted": True,
    }
    assert_envelope(http.get(url), 404, code="agent_not_found")


@pytest.mark.parametrize("budgets", [False, 0, [], ""])
def test_memory_budgets_that_are_not_an_object_are_refused(http, budgets):
    """`"budgets": false` (or 0, [], "") was taken as no budgets, a 201 for a typo'd policy,
    while `"budgets": 5` was a 400."""
    resp = http.post("/v1/agents", json={"name": "b", "model": "m", "memory": {"budgets": budgets}})
    assert_envelope(resp, 400)
    assert resp.json()["error"]["param"] == "memory"
    assert (
        http.post(
            "/v1/agents", json={"name": "b", "model": "m", "memory": {"budgets": None}}
        ).json()["memory"]["budgets"]
        == {}
    )


def test_a_patch_of_memory_changes_only_the_settings_it_names(http):
    """`{"memory": {"budgets": …}}` on an agent whose memory is off filled in the other
    settings' defaults: memory on again, the end users' turns stored and recalled."""
    off = _agent(http, memory={"enabled": False, "retrieve_messages": False})
    url = f"/v1/agents/{off['id']}"

    changed = http.patch(url, json={"memory": {"budgets": {"summary": 100}}})

    assert changed.status_code == 200, changed.text
    assert changed.json()["memory"] == {
        "enabled": False,
        "extraction": True,
        "retrieve_messages": False,
        "budgets": {"summary": 100},
    }
    # `budgets` given is replaced whole; a flag given changes that flag alone.
    again = http.patch(url, json={"memory": {"budgets": {"memories": 5}, "extraction": False}})
    assert again.json()["memory"] == {
        "enabled": False,
        "extraction": False,
        "retrieve_messages": False,
        "budgets": {"memories": 5},
    }
    assert http.get(url).json()["version"] == 3
    # What GET shows, sent back, changes nothing (no new version).
    same = http.patch(url, json={"memory": again.json()["memory"]})
    assert same.json()["version"] == 3
    assert assert_envelope(http.patch(url, json={"memory": {"enabled": "no"}}), 400)


def test_versions_are_a_paged_list(http):
    """`GET .../versions` ignored `limit`, `order` and the cursors (even `limit=x`), answering
    every version at once with `first_id` / `last_id` null; it pages as every list now, its
    cursors being version numbers."""
    agent = _agent(http, instructions="v1")
    url = f"/v1/agents/{agent['id']}/versions"
    for n in range(2, 6):
        assert http.patch(f"/v1/agents/{agent['id']}", json={"instructions": f"v{n}"}).is_success

    def page(**params) -> tuple[list[int], dict]:
        body = http.get(url, params=params).json()
        return [v["version"] for v in body["data"]], body

    numbers, body = page(limit=2)
    assert numbers == [5, 4] and body["has_more"] is True
    assert (body["first_id"], body["last_id"]) == ("5", "4")
    assert page(limit=2, after=body["last_id"])[0] == [3, 2]
    numbers, body = page(limit=2, after="2")
    assert numbers == [1] and body["has_more"] is False
    assert page(limit=2, order="asc")[0] == [1, 2]
    assert page(limit=2, before="2")[0] == [4, 3]  # the page just before version 2
    assert page(after="99999999999999999999")[0] == [5, 4, 3, 2, 1]
    assert page()[0] == [5, 4, 3, 2, 1]
    assert_envelope(http.get(url, params={"limit": "x"}), 400)
    bad = http.get(url, params={"after": "agent_x"})
    assert_envelope(bad, 400)
    assert bad.json()["error"]["param"] == "after"


def test_agent_instructions_model_and_parameters_reach_the_upstream(sdk, http, owner, upstream):
    agent = _agent(
        http,
        model="upstream-model-a",
        instructions="You help {{user_id}}. Today is {{date}}.",
        parameters={"temperature": 0.3, "max_tokens": 50},
    )
    messages = [
        {"role": "system", "content": "Client system prompt."},
        {"role": "user", "content": "Hi"},
    ]
    for model in (agent["id"], "agent:helper"):
        answer = sdk.chat.completions.create(
            model=model, messages=messages, extra_headers={"x-user-id": "ann"}
        )
        assert answer.model == model  # as the client sent it
        sent = _sent(upstream)
        assert sent["model"] == "upstream-model-a"
        assert sent["temperature"] == 0.3 and sent["max_tokens"] == 50
        system = [m["content"] for m in sent["messages"] if m["role"] == "system"]
        assert system[0].startswith("You help ann. Today is 20")  # the agent's first, filled in
        assert "Client system prompt." in system  # the client's own kept

    # the request's own values win
    sdk.chat.completions.create(
        model="agent:helper", messages=messages, temperature=1.5, max_completion_tokens=7
    )
    sent = _sent(upstream)
    # (max_completion_tokens as max_tokens, as a server other than OpenAI's reads it)
    assert sent["temperature"] == 1.5 and sent["max_tokens"] == 7
    assert "max_completion_tokens" not in sent

    buffer.flush()
    rows = UsageRecord.objects.filter(workspace=owner[0], agent_id=agent["id"])
    assert rows.count() == 3 and {r.agent_version for r in rows} == {1}
    assert {r.model for r in rows} == {agent["id"], "agent:helper"}
    assert {r.upstream_model for r in rows} == {"upstream-model-a"}


def test_pinned_version_after_an_update(sdk, http, upstream):
    agent = _agent(http, instructions="Version one.", parameters={"temperature": 0.1})
    http.patch(
        f"/v1/agents/{agent['id']}",
        json={"instructions": "Version two.", "parameters": {"temperature": 0.9}},
    )
    hi = [{"role": "user", "content": "Hi"}]
    sdk.chat.completions.create(model="agent:helper@1", messages=hi)
    sent = _sent(upstream)
    assert sent["messages"][0]["content"] == "Version one." and sent["temperature"] == 0.1
    sdk.chat.completions.create(model="agent:helper", messages=hi)
    sent = _sent(upstream)
    assert sent["messages"][0]["content"] == "Version two." and sent["temperature"] == 0.9
    assert sdk.chat.completions.create(model="agent:helper@2", messages=hi).model == (
        "agent:helper@2"
    )
    with pytest.raises(openai.NotFoundError):
        sdk.chat.completions.create(model="agent:helper@3", messages=hi)


def test_a_pinned_version_a_chat_call_takes_is_a_model_retrieve_finds(sdk, http, outsider_http):
    """`agent:<name>@<n>` answered chat and was 404 on GET /v1/models/{id}, where the SDKs'
    `models.retrieve` (and the model pickers that check a name with it) look it up."""
    agent = _agent(http)
    http.patch(f"/v1/agents/{agent['id']}", json={"model": "gpt-4o"})
    pinned = sdk.models.retrieve("agent:helper@1")
    assert pinned.id == "agent:helper@1" and pinned.model_extra["version"] == 1
    assert pinned.model_extra["target"] == "gpt-4o-mini"  # that version's model
    assert pinned.model_extra["agent_id"] == agent["id"]
    assert sdk.models.retrieve("agent:helper").model_extra["target"] == "gpt-4o"
    assert sdk.models.retrieve(agent["id"]).id == "agent:helper"
    for missing in ("agent:helper@3", "agent:helper@0", "agent:nobody"):
        with pytest.raises(openai.NotFoundError) as info:
            sdk.models.retrieve(missing)
        assert info.value.code == "model_not_found"
    foreign = outsider_http.get("/v1/models/agent:helper@1")  # another workspace's
    assert assert_envelope(foreign, 404, code="model_not_found")["param"] == "model"


def test_a_pinned_version_outlives_a_rename(sdk, http, upstream):
    """`agent:<name>@<n>` is pinned ("later edits do not change it"), but a rename, an edit
    that makes a version like any other, turned every pinned call of the old name into a 404."""
    agent = _agent(http, instructions="Version one.")
    url = f"/v1/agents/{agent['id']}"
    http.patch(url, json={"name": "helpdesk", "instructions": "Version two."})
    hi = [{"role": "user", "content": "Hi"}]
    answer = sdk.chat.completions.create(model="agent:helper@1", messages=hi)
    assert answer.model == "agent:helper@1"
    assert _sent(upstream)["messages"][0]["content"] == "Version one."
    sdk.chat.completions.create(model="agent:helpdesk@2", messages=hi)
    assert _sent(upstream)["messages"][0]["content"] == "Version two."
    # the old name pins only its own versions; unpinned, it is gone
    for model in ("agent:helper@2", "agent:helper"):
        with pytest.raises(openai.NotFoundError):
            sdk.chat.completions.create(model=model, messages=hi)
    # a new agent of the old name takes it over
    _agent(http, name="helper", instructions="Another agent.")
    sdk.chat.completions.create(model="agent:helper@1", messages=hi)
    assert _sent(upstream)["messages"][0]["content"] == "Another agent."


def test_unknown_and_foreign_agents_are_model_not_found(http, engram_server, outsider, upstream):
    agent = _agent(http)
    before = len(upstream.chat_requests())
    with httpx.Client(
        base_url=engram_server.url, headers={"Authorization": f"Bearer {outsider[1]}"}
    ) as other:
        for model in (agent["id"], "agent:helper", "agent:helper@1", "agent:nobody"):
            resp = other.post(
                "/v1/chat/completions",
                json={"model": model, "messages": [{"role": "user", "content": "Hi"}]},
            )
            assert_envelope(resp, 404, code="model_not_found")
            assert resp.json()["error"]["param"] == "model"
            assert model in resp.json()["error"]["message"]
            context = other.post(
                "/v1/context",
                json={"model": model, "messages": [{"role": "user", "content": "Hi"}]},
            )
            assert_envelope(context, 404, code="model_not_found")
    assert len(upstream.chat_requests()) == before


def test_models_lists_agents_and_context_shows_them(
    sdk, http, owner, outsider, engram_server, upstream
):
    agent = _agent(http, instructions="Hello {{user_id}}.")
    listed = {m.id: m for m in sdk.models.list()}
    assert listed["agent:helper"].owned_by == owner[0].id
    assert "local" in listed  # beside the models
    assert sdk.models.retrieve(agent["id"]).id == "agent:helper"
    with httpx.Client(
        base_url=engram_server.url, headers={"Authorization": f"Bearer {outsider[1]}"}
    ) as other:
        assert "agent:helper" not in {m["id"] for m in other.get("/v1/models").json()["data"]}

    context = http.post(
        "/v1/context",
        json={"model": "agent:helper", "messages": [{"role": "user", "content": "Hi"}]},
        headers={"x-user-id": "bo"},
    ).json()
    assert context["model"] == "agent:helper"
    assert context["agent"]["id"] == agent["id"] and context["agent"]["version"] == 1
    assert context["agent"]["instructions"] == "Hello bo."
    assert context["messages"][0] == {"role": "system", "content": "Hello bo."}

    # a rename reaches /v1/models at once (the cache was told)
    http.patch(f"/v1/agents/{agent['id']}", json={"name": "renamed"})
    ids = {m.id for m in sdk.models.list()}
    assert "agent:renamed" in ids and "agent:helper" not in ids


def test_memory_off_stores_and_retrieves_nothing(sdk, http, owner, upstream):
    made = http.post(
        "/v1/memories", json={"user_id": "cy", "text": "Cy's favourite colour is teal."}
    )
    assert made.status_code == 201, made.text
    _agent(http, name="forgetful", memory={"enabled": False})
    _agent(http, name="mindful")
    question = [{"role": "user", "content": "What is my favourite colour?"}]
    headers = {"x-user-id": "cy"}

    sdk.chat.completions.create(model="agent:mindful", messages=question, extra_headers=headers)
    assert "teal" in json.dumps(_sent(upstream)["messages"])  # the control: memory on recalls
    conversations = http.get("/v1/conversations", params={"user_id": "cy"}).json()["data"]

    answer = sdk.chat.completions.create(
        model="agent:forgetful", messages=question, extra_headers=headers
    )
    assert "teal" not in json.dumps(_sent(upstream)["messages"])
    engram = (answer.model_extra or {}).get("engram") or {}
    # what every answer carries (credits, request id), and nothing of memory's
    assert set(engram) <= {"credits_charged", "request_id"}, engram
    time.sleep(0.5)  # what would be stored is stored before the answer's last bytes anyway
    after = http.get("/v1/conversations", params={"user_id": "cy"}).json()["data"]
    assert len(after) == len(conversations)


def test_agent_collections_without_the_header(sdk, http, owner, upstream, celery_worker):
    col = http.post("/v1/collections", json={"name": "Manual"}).json()
    doc = http.post(
        f"/v1/collections/{col['id']}/documents",
        json={"title": "Lamp manual", "text": "The Fresnel lens is polished every Tuesday."},
    ).json()
    deadline = time.monotonic() + 120
    while (
        http.get(f"/v1/collections/{col['id']}/documents/{doc['id']}").json()["status"] != "ready"
    ):
        assert time.monotonic() < deadline
        time.sleep(0.25)
    _agent(http, name="keeper", collection_ids=[col["id"]])
    question = [{"role": "user", "content": "When is the Fresnel lens polished?"}]
    answer = sdk.chat.completions.create(model="agent:keeper", messages=question)
    assert "every Tuesday" in json.dumps(_sent(upstream)["messages"])
    assert answer.model_extra["engram"]["sources"][0]["document_id"] == doc["id"]

    # streaming works unchanged: the content, the model as sent, the engram chunk last
    upstream.script(Reply(stream=openai_stream(["Tues", "day"])))
    chunks = list(sdk.chat.completions.create(model="agent:keeper", messages=question, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Tuesday"
    assert {c.model for c in chunks} == {"agent:keeper"}
    assert chunks[-1].model_extra["engram"]["sources"][0]["document_id"] == doc["id"]
    assert not any(c.choices and c.choices[0].delta.tool_calls for c in chunks)

    # the stream helper reassembles Engram's tool calls, all before the first content token
    upstream.script(Reply(stream=openai_stream(["Tues", "day"])))
    with sdk.chat.completions.stream(
        model="agent:keeper", messages=question, tools=ENGRAM_TOOLS
    ) as stream:
        events = list(stream)
        final = stream.get_final_completion()
    first_content = next(i for i, e in enumerate(events) if e.type == "content.delta" and e.delta)
    arrived = {}  # each call's first arguments delta
    for i, e in enumerate(events):
        if e.type == "tool_calls.function.arguments.delta":
            arrived.setdefault(e.name, i)
    assert arrived["_engramSearchProgress"] < first_content
    assert arrived["_engramSearchSources"] < first_content
    calls = {
        c.function.name: json.loads(c.function.arguments)
        for c in final.choices[0].message.tool_calls
    }
    progress, sources = calls["_engramSearchProgress"], calls["_engramSearchSources"]
    assert progress["search"] == "knowledge" and progress["hits"] >= 1
    assert progress["collection_ids"] == [col["id"]]
    assert sources["sources"][0]["document_id"] == doc["id"]
    assert sources["sources"][0]["title"] == "Lamp manual"
    message = final.choices[0].message
    assert message.content == "Tuesday"
    assert [c.function.name for c in message.tool_calls] == [
        "_engramSearchProgress",
        "_engramSearchSources",
    ]  # no user id: nothing stored, nothing to append to
    sent = _sent(upstream)
    assert "tools" not in sent and "tool_choice" not in sent  # the upstream never saw them


def test_a_stream_with_engram_tools_has_one_id(sdk, upstream):
    """Engram's tool calls go out before the upstream answers, under Engram's id: the
    model's chunks after them kept the upstream's, so one stream had two ids (OpenAI's chunks
    share one, which clients key the answer by)."""
    upstream.script(Reply(stream=openai_stream(["Hel", "lo"])))
    chunks = list(
        sdk.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "Hi"}],
            tools=ENGRAM_TOOLS,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello"
    assert chunks[0].choices[0].delta.tool_calls and chunks[-1].usage is not None
    assert len({c.id for c in chunks}) == 1, [c.id for c in chunks]


def test_engram_tools_in_json_answers_only_when_declared(sdk, http, upstream):
    weather = {
        "type": "function",
        "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}},
    }
    hi = [{"role": "user", "content": "Hi"}]
    upstream.script(Reply(json=openai_completion("plain")))
    plain = sdk.chat.completions.create(model="gpt-4o-mini", messages=hi, tools=[weather])
    assert plain.choices[0].message.tool_calls is None
    assert _sent(upstream)["tools"] == [weather]

    upstream.script(Reply(json=openai_completion("with tools")))
    answer = sdk.chat.completions.create(
        model="gpt-4o-mini",
        messages=hi,
        tools=[weather, *ENGRAM_TOOLS],
        extra_headers={"x-user-id": "dee"},
    )
    calls = answer.choices[0].message.tool_calls
    assert [c.function.name for c in calls] == [
        "_engramSearchProgress",
        "_engramSearchProgress",
        "_engramSearchSources",
        "_engramAppendConversationMessage",
    ]
    assert json.loads(calls[0].function.arguments)["search"] == "memories"
    appended = json.loads(calls[-1].function.arguments)
    assert appended["conversation_id"] == answer.model_extra["engram"]["conversation_id"]
    assert answer.choices[0].message.content == "with tools"
    assert _sent(upstream)["tools"] == [weather]  # only the client's own tool went upstream

    # the client resends its transcript with Engram's calls in it: they do not go upstream,
    # and the history still names the same conversation
    transcript = [
        *hi,
        answer.choices[0].message.model_dump(exclude_none=True),
        {"role": "user", "content": "And now?"},
    ]
    again = sdk.chat.completions.create(
        model="gpt-4o-mini",
        messages=transcript,
        tools=[weather, *ENGRAM_TOOLS],
        extra_headers={"x-user-id": "dee"},
    )
    assert not any(m.get("tool_calls") for m in _sent(upstream)["messages"])
    assert again.model_extra["engram"]["conversation_id"] == appended["conversation_id"]

    # the model's own tool calls keep their place after Engram's in a stream
    model_call = [
        {
            "index": 0,
            "id": "call_w",
            "type": "function",
            "function": {"name": "get_weather", "arguments": "{}"},
        }
    ]
    base = {
        "id": "chatcmpl-upstream",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-4o-mini",
    }
    upstream.script(
        Reply(
            stream=[
                base
                | {
                    "choices": [
                        {
                            "index": 0,
                            "delta": {"role": "assistant", "tool_calls": model_call},
                            "finish_reason": None,
                        }
                    ]
                },
                base | {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
                "[DONE]",
            ]
        )
    )
    with sdk.chat.completions.stream(
        model="gpt-4o-mini", messages=hi, tools=[weather, ENGRAM_TOOLS[1]]
    ) as stream:
        final = stream.get_final_completion()
    names = [c.function.name for c in final.choices[0].message.tool_calls]
    assert names == ["_engramSearchSources", "get_weather"]


def test_an_agent_change_published_elsewhere_reaches_the_next_call(sdk, http, owner, upstream):
    """What another process's services do: change the rows, publish "agents" on commit."""
    from completions.agents.models import Agent
    from config.common import coherence

    agent = _agent(http, instructions="Old.")
    hi = [{"role": "user", "content": "Hi"}]
    sdk.chat.completions.create(model="agent:helper", messages=hi)
    assert _sent(upstream)["messages"][0]["content"] == "Old."
    Agent.objects.filter(id=agent["id"]).update(instructions="New.", version=2)
    sdk.chat.completions.create(model="agent:helper", messages=hi)
    assert _sent(upstream)["messages"][0]["content"] == "Old."  # cached, unpublished
    coherence._publish_now("agents")
    sdk.chat.completions.create(model="agent:helper", messages=hi)
    assert _sent(upstream)["messages"][0]["content"] == "New."


def test_a_deleted_collection_is_no_longer_searched(sdk, http, upstream):
    col = http.post("/v1/collections", json={"name": "Gone soon"}).json()
    _agent(http, name="reader", collection_ids=[col["id"]])
    hi = [{"role": "user", "content": "Hi"}]
    sdk.chat.completions.create(model="agent:reader", messages=hi)  # cached with the collection
    assert http.delete(f"/v1/collections/{col['id']}").status_code == 200
    answer = sdk.chat.completions.create(model="agent:reader", messages=hi)  # not a 404
    assert answer.choices[0].message.content


def test_a_deleted_collections_id_leaves_the_agents_body(http, owner):
    """A deleted collection is no longer searched, and no body shows its id any more: not the
    agent's (GET, the list, a PATCH's answer) nor its versions'. Nothing stored is rewritten:
    the deletion makes no version."""
    kept = http.post("/v1/collections", json={"name": "Kept"}).json()["id"]
    gone = http.post("/v1/collections", json={"name": "Gone soon"}).json()["id"]
    agent = _agent(http, name="reader", collection_ids=[gone, kept])
    assert agent["collection_ids"] == [gone, kept]
    assert http.delete(f"/v1/collections/{gone}").status_code == 200

    shown = http.get(f"/v1/agents/{agent['id']}").json()
    assert shown["collection_ids"] == [kept]
    assert shown["version"] == 1
    listed = http.get("/v1/agents").json()["data"]
    assert [a["collection_ids"] for a in listed] == [[kept]]
    versions = http.get(f"/v1/agents/{agent['id']}/versions").json()["data"]
    assert [v["collection_ids"] for v in versions] == [[kept]]

    edited = http.patch(f"/v1/agents/{agent['id']}", json={"instructions": "Be brief."}).json()
    assert (edited["version"], edited["collection_ids"]) == (2, [kept])
    # Sending back what the body shows is accepted (the deleted id is not asked for again).
    resent = http.patch(f"/v1/agents/{agent['id']}", json={"collection_ids": [kept]})
    assert resent.status_code == 200, resent.text
    assert resent.json()["collection_ids"] == [kept]


def test_another_workspaces_agent_is_the_same_404_on_every_route(http, outsider_http):
    """Adding a tool to an agent of another workspace answered `param: null` and its own
    message, where reading that agent's tools named `agent_id`."""
    agent = _agent(http)["id"]
    tool = {"name": "docs", "type": "builtin", "builtin": "knowledge_search"}
    for method, path, body in [
        ("GET", f"/v1/agents/{agent}", None),
        ("PATCH", f"/v1/agents/{agent}", {"instructions": "x"}),
        ("GET", f"/v1/agents/{agent}/versions", None),
        ("GET", f"/v1/agents/{agent}/tools", None),
        ("POST", f"/v1/agents/{agent}/tools", tool),
        ("DELETE", f"/v1/agents/{agent}", None),
    ]:
        resp = outsider_http.request(method, path, json=body)
        error = assert_envelope(resp, 404, code="agent_not_found")
        assert (error["param"], error["message"]) == ("agent_id", f"No agent '{agent}'."), path
    assert http.get(f"/v1/agents/{agent}").status_code == 200
