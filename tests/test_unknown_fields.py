"""A field a REST body does not have is a 400 naming it (config.common.closed), on every route
that takes a body, in OpenAI's words: `invalid_request_error`, `code: "unknown_parameter"`. The
collections' `{"name": "x", "descripton": "typo"}` was stored without its description, in
silence; the limits answered `invalid_value` and the agents `unknown_field`."""

from __future__ import annotations

import pytest

from tests.test_errors import assert_envelope

USER = "u_closed"


@pytest.fixture
def world(http, operator_http, owner) -> dict:
    def ok(resp) -> dict:
        assert resp.status_code < 300, resp.text
        return resp.json()

    agent = ok(http.post("/v1/agents", json={"name": "closed", "model": "local"}))["id"]
    tool = {"name": "recall", "type": "builtin", "builtin": "memory_search"}
    return {
        "memory": ok(http.post("/v1/memories", json={"user_id": USER, "text": "likes tea"}))["id"],
        "collection": ok(http.post("/v1/collections", json={"name": "Docs"}))["id"],
        "agent": agent,
        "tool": ok(http.post(f"/v1/agents/{agent}/tools", json=tool))["id"],
        "issuer": ok(
            http.post(
                "/v1/auth/issuers",
                json={
                    "issuer": "https://id.example/",
                    "audiences": ["a"],
                    "hs256_secret": "s" * 32,
                },
            )
        )["id"],
        "workspace": owner[0].id,
        "key": ok(operator_http.post(f"/v1/workspaces/{owner[0].id}/api_keys", json={"name": "k"}))[
            "id"
        ],
    }


# (operator?, method, path, a valid body, the typo added to it, the param named)
BODIES: list[tuple[bool, str, str, dict, dict, str]] = [
    (False, "POST", "/v1/collections", {"name": "x"}, {"descripton": "typo"}, "descripton"),
    (False, "PATCH", "/v1/collections/{collection}", {}, {"descripton": "t"}, "descripton"),
    (
        False,
        "POST",
        "/v1/collections/{collection}/documents",
        {"text": "hello"},
        {"titel": "t"},
        "titel",
    ),
    (
        False,
        "POST",
        "/v1/collections/search",
        {"collection_ids": ["{collection}"], "query": "q"},
        {"limt": 3},
        "limt",
    ),
    (False, "POST", "/v1/memories", {"user_id": USER, "text": "t"}, {"knd": "fact"}, "knd"),
    (False, "PATCH", "/v1/memories/{memory}", {"text": "t"}, {"metdata": {}}, "metdata"),
    (False, "POST", "/v1/memories/search", {"user_id": USER, "query": "q"}, {"top_k": 3}, "top_k"),
    (False, "POST", "/v1/search", {"user_id": USER, "query": "q"}, {"type": ["chunks"]}, "type"),
    (
        False,
        "POST",
        "/v1/embeddings",
        {"model": "all-MiniLM-L6-v2", "input": "q"},
        {"encoding": "float"},
        "encoding",
    ),
    (
        False,
        "POST",
        "/v1/conversations/c1/messages",
        {"user_id": USER, "messages": [{"role": "user", "content": "hi"}]},
        {"session": "s"},
        "session",
    ),
    (
        False,
        "POST",
        "/v1/auth/issuers",
        {"issuer": "https://b.example/", "audiences": ["a"], "hs256_secret": "s" * 32},
        {"audience": "a"},
        "audience",
    ),
    (False, "PATCH", "/v1/auth/issuers/{issuer}", {}, {"leeway": 5}, "leeway"),
    (False, "POST", "/v1/agents", {"name": "a2", "model": "local"}, {"modle": "x"}, "modle"),
    (False, "PATCH", "/v1/agents/{agent}", {}, {"instruction": "x"}, "instruction"),
    # nested objects of a hand-checked body: the same check, the path named
    (False, "PATCH", "/v1/agents/{agent}", {"memory": {"enabld": False}}, {}, "memory.enabld"),
    (
        False,
        "PATCH",
        "/v1/agents/{agent}",
        {"memory": {"budgets": {"memorys": 10}}},
        {},
        "memory.budgets.memorys",
    ),
    (
        False,
        "PATCH",
        "/v1/agents/{agent}",
        {"parameters": {"temprature": 1}},
        {},
        "parameters.temprature",
    ),
    (
        False,
        "POST",
        "/v1/agents/{agent}/tools",
        {"name": "t3", "type": "http", "http": {"url": "https://t.example/x", "metod": "GET"}},
        {},
        "http.metod",
    ),
    # a tool's approval rule: its key named, not the rule's shape said again
    (
        False,
        "PATCH",
        "/v1/agents/{agent}/tools/{tool}",
        {"approval": {"argument": "query", "op": "eq", "vaule": "x"}},
        {},
        "approval.vaule",
    ),
    (
        False,
        "PATCH",
        "/v1/agents/{agent}/tools/{tool}",
        {"approval": {"any": [], "al": 1}},
        {},
        "approval.al",
    ),
    (
        False,
        "PATCH",
        "/v1/agents/{agent}/tools/{tool}",
        {"approval": {"any": [{"argument": "query", "opp": "eq"}]}},
        {},
        "approval.any[0].opp",
    ),
    (
        False,
        "POST",
        "/v1/agents/{agent}/tools",
        {"name": "t2", "type": "builtin", "builtin": "memory_search"},
        {"descripton": "d"},
        "descripton",
    ),
    (False, "PATCH", "/v1/agents/{agent}/tools/{tool}", {}, {"aproval": "always"}, "aproval"),
    (
        False,
        "POST",
        "/v1/chat/resume",
        {"approval_id": "appr_x", "decision": "approve"},
        {"reasn": "r"},
        "reasn",
    ),
    (True, "POST", "/v1/workspaces", {"name": "w"}, {"nmae": "w"}, "nmae"),
    (True, "POST", "/v1/workspaces/{workspace}/api_keys", {"name": "k"}, {"scope": "x"}, "scope"),
    (True, "PATCH", "/v1/workspaces/{workspace}", {}, {"limit": {}}, "limit"),
    (True, "PATCH", "/v1/workspaces/{workspace}", {}, {"limits": {"rpmx": 1}}, "limits.rpmx"),
    (
        True,
        "PATCH",
        "/v1/workspaces/{workspace}/api_keys/{key}",
        {},
        {"budget": {"credit": 1}},
        "budget.credit",
    ),
]


def _filled(value, world: dict):
    if isinstance(value, str):
        return value.format(**world)
    if isinstance(value, list):
        return [_filled(v, world) for v in value]
    if isinstance(value, dict):
        return {k: _filled(v, world) for k, v in value.items()}
    return value


def test_an_unknown_field_is_a_400_naming_it_on_every_body(http, operator_http, world):
    for operator, method, path, body, typo, param in BODIES:
        client = operator_http if operator else http
        url = _filled(path, world)
        resp = client.request(method, url, json={**_filled(body, world), **typo})
        error = assert_envelope(resp, 400, code="unknown_parameter")
        assert error["type"] == "invalid_request_error", (method, path)
        assert error["param"] == param, (method, path, error)
        assert error["message"] == f"Unknown parameter: '{param}'.", error
    # nothing was stored or changed
    collections = http.get("/v1/collections").json()["data"]
    assert [c["name"] for c in collections] == ["Docs"]
    assert collections[0]["description"] == ""
    assert http.get("/v1/agents").json()["data"][0]["version"] == 1


def test_a_typo_in_a_collection_is_refused_and_the_right_field_stored(http):
    """The reported case, end to end: refused, then the spelt-right body is stored whole."""
    bad = http.post("/v1/collections", json={"name": "x", "descripton": "typo"})
    assert assert_envelope(bad, 400, code="unknown_parameter")["param"] == "descripton"
    assert http.get("/v1/collections").json()["data"] == []
    good = http.post("/v1/collections", json={"name": "x", "description": "right"})
    assert good.status_code == 201 and good.json()["description"] == "right"


def test_a_hostile_unknown_key_is_named_without_being_echoed(http):
    resp = http.post("/v1/collections", json={"name": "x", "y" * 10_000: 1})
    error = assert_envelope(resp, 400, code="unknown_parameter")
    assert len(error["param"]) < 100 and len(error["message"]) < 150


def test_chat_completions_still_pass_unknown_fields_through(http, upstream):
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    resp = http.post("/v1/chat/completions", json={**body, "some_vendor_field": 1})
    assert resp.status_code == 200, resp.text


def test_the_document_says_which_bodies_are_closed(anon_http):
    """`additionalProperties: false` on each closed body, nested ones too; the chat body and an
    imported message (OpenAI's shapes, which grow) stay open."""
    from tests.test_openapi import _schema

    schema = _schema(anon_http)
    components = schema["components"]["schemas"]

    def body(path: str, method: str) -> dict:
        content = schema["paths"][path][method]["requestBody"]["content"]
        ref = content["application/json"]["schema"]["$ref"]
        return components[ref.rsplit("/", 1)[-1]]

    for path, method in [
        ("/v1/collections", "post"),
        ("/v1/memories", "post"),
        ("/v1/agents", "post"),
        ("/v1/agents/{agent_id}/tools", "post"),
        ("/v1/chat/resume", "post"),
        ("/v1/workspaces/{workspace_id}", "patch"),
        ("/v1/auth/issuers", "post"),
    ]:
        found = body(path, method)
        # a body of several shapes (POST /v1/memories: one memory, or an import of many)
        forms = [components[part["$ref"].rsplit("/", 1)[-1]] for part in found.get("oneOf", [])]
        for form in forms or [found]:
            assert form.get("additionalProperties") is False, (method, path)
    limits = body("/v1/workspaces/{workspace_id}", "patch")["properties"]["limits"]
    # nullable (null removes every limit in it): the reference is one of its forms
    refs = [part["$ref"] for part in limits.get("oneOf", [limits]) if "$ref" in part]
    assert components[refs[0].rsplit("/", 1)[-1]]["additionalProperties"] is False
    chat = schema["paths"]["/v1/chat/completions"]["post"]["requestBody"]["content"]
    chat_ref = chat["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
    assert components[chat_ref].get("additionalProperties") is not False
    imported = body("/v1/conversations/{conversation_id}/messages", "post")
    message = imported["properties"]["messages"]["items"]["$ref"].rsplit("/", 1)[-1]
    assert components[message].get("additionalProperties") is not False


def _a_memory(http) -> str:
    """A memory's id, for the lists under one (its history)."""
    created = http.post("/v1/memories", json={"user_id": USER, "text": "likes green tea"})
    assert created.status_code == 201, created.text
    return created.json()["id"]


def test_an_unknown_query_parameter_on_every_list_is_a_400_naming_it(
    http, operator_http, anon_http, world
):
    """Every list in the document (its GET with `limit`), with a query parameter it does not
    have: `?userid=alice` listed every user's memories, the misspelt filter ignored."""
    from tests.test_openapi import _schema

    http.post(
        "/v1/conversations/c1/messages",
        json={"user_id": USER, "messages": [{"role": "user", "content": "hi"}]},
    )
    ids = {
        "agent_id": world["agent"],
        "collection_id": world["collection"],
        "conversation_id": "c1",
        "memory_id": _a_memory(http),
        "workspace_id": world["workspace"],
    }
    lists = []
    for path, operations in _schema(anon_http)["paths"].items():
        parameters = operations.get("get", {}).get("parameters", [])
        names = [p["name"] for p in parameters if p["in"] == "query"]
        if "limit" in names:
            lists.append((path.format(**ids), names))
    assert len(lists) >= 14
    for path, names in lists:
        client = operator_http if path.startswith("/v1/workspaces") else http
        for typo in ("userid", "limt", "status_"):
            error = assert_envelope(client.get(path, params={typo: "1"}), 400)
            assert (error["param"], error["code"]) == (typo, "unknown_parameter"), path
        error = assert_envelope(client.get(path, params={"x" * 10_000: "1"}), 400)
        assert error["code"] == "unknown_parameter" and len(error["param"]) < 100, path
        # the document's own parameters are read, not refused
        known = {"limit": "5", "order": "asc"}
        assert client.get(path, params=known).status_code == 200, path
        assert set(names) <= {*known, "after", "before", "user_id", "kind", "status"} | {
            "conversation_id",
            "created_after",
            "created_before",
            "metadata",
            "start",
            "end",
            "group_by",
            "agent_id",
            "key_id",
            "model",
            "external_id",
        }, path
    # the reported case: a misspelt filter no longer lists every user's memories
    http.post("/v1/memories", json={"user_id": "someone_else", "text": "likes coffee"})
    assert assert_envelope(http.get("/v1/memories?userid=u_closed"), 400)["param"] == "userid"


def test_a_repeated_query_parameter_on_every_list_is_a_400_naming_it(
    http, operator_http, anon_http, world
):
    """Every list in the document, with one of its own single-valued parameters given twice:
    `GET /v1/memories?user_id=a&user_id=b` answered for b, the first value dropped in silence.
    `kind`, the one filter that takes several values, still takes them."""
    from tests.test_openapi import _schema

    ids = {
        "agent_id": world["agent"],
        "collection_id": world["collection"],
        "conversation_id": "c1",
        "memory_id": _a_memory(http),
        "workspace_id": world["workspace"],
    }
    http.post(
        "/v1/conversations/c1/messages",
        json={"user_id": USER, "messages": [{"role": "user", "content": "hi"}]},
    )
    lists = []
    for path, operations in _schema(anon_http)["paths"].items():
        parameters = operations.get("get", {}).get("parameters", [])
        names = [p["name"] for p in parameters if p["in"] == "query"]
        if "limit" in names:
            lists.append((path.format(**ids), names))
    assert len(lists) >= 14
    for path, _names in lists:
        client = operator_http if path.startswith("/v1/workspaces") else http
        for name, values in (("limit", ["5", "6"]), ("order", ["asc", "desc"])):
            error = assert_envelope(client.get(path, params={name: values}), 400)
            assert (error["param"], error["code"]) == (name, "invalid_value"), path
            assert "more than once" in error["message"], path
    # the reported case
    http.post("/v1/memories", json={"user_id": "someone_else", "text": "likes coffee"})
    error = assert_envelope(http.get(f"/v1/memories?user_id={USER}&user_id=someone_else"), 400)
    assert error["param"] == "user_id" and "more than once" in error["message"]
    error = assert_envelope(http.get("/v1/conversations?user_id=a&user_id=b"), 400)
    assert error["param"] == "user_id"
    # `kind` is a list: repeated, as documented, it is read whole
    both = http.get(f"/v1/memories?user_id={USER}&kind=fact&kind=preference")
    assert both.status_code == 200, both.text
