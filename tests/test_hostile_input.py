"""Hostile input on every route gets a 4xx in OpenAI's error envelope: never a 5xx, never a
traceback. The cases are generated: each route's path ids, query ids, headers, and every string,
key and value of a valid body are replaced by NUL bytes, lone surrogates, over-long ids, wrong
types, huge numbers; whole bodies are deeply nested, huge, not UTF-8, not JSON or empty.

Rules under test: a NUL or a lone surrogate anywhere in a JSON body or a query id is a 400
naming the field (config.common.jsonbody); a path id that is not an id (config.common.ids) is
a 404; a body nested deeper than jsonbody.MAX_DEPTH is a 400.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial

import httpx
import pytest

from tests.test_errors import assert_envelope

USER = "u_hostile"
ISSUER = {"issuer": "https://id.example/", "audiences": ["app"], "hs256_secret": "s" * 32}
CHAT = {
    "model": "gpt-4o-mini",
    "messages": [
        {"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
        {"role": "user", "content": "Hi", "name": "ann"},
    ],
    "user": USER,
    "metadata": {"k": "v"},
}

# The tool-call fields, on messages of each role, for the sweep to replace.
CHAT_CALL_FIELDS = {
    "model": "gpt-4o-mini",
    "messages": [
        {"role": "user", "content": "Hi", "tool_calls": [], "tool_call_id": "", "refusal": ""},
        {
            "role": "assistant",
            "content": "Hello",
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
            ],
            "refusal": "",
            "function_call": {"name": "f", "arguments": "{}"},
        },
        {"role": "tool", "content": "done", "tool_call_id": "c1"},
        {"role": "user", "content": "And now?"},
    ],
    "user": USER,
}
EMBEDDINGS = {
    "model": "all-MiniLM-L6-v2",
    "input": ["I keep bees.", "Berlin"],
    "encoding_format": "base64",
    "dimensions": 384,
    "user": USER,
}
CALLS_CONVERSATION = {"x-user-id": USER, "x-conversation-id": "conv_calls"}

TOOL = {
    "name": "recall",
    "description": "Search the user's memories.",
    "parameters": {"type": "object", "properties": {"query": {"type": "string"}}},
    "type": "builtin",
    "builtin": "memory_search",
    "approval": {"argument": "query", "op": "contains", "value": "secret"},
    "approval_ttl_seconds": 600,
}
LIMITS = {
    "limits": {"rpm": 100000, "tpm": 100000000, "max_concurrent": 1000},
    "budget": {"credits": 1000000, "period": "month"},
}

AGENT = {
    "name": "a1",
    "model": "local",
    "instructions": "Help {{user_id}}.",
    "parameters": {"temperature": 0.5, "stop": ["x"]},
    "memory": {"enabled": True, "budgets": {"memories": 100}},
    "collection_ids": [],
    "metadata": {"k": "v"},
}


@dataclass
class Route:
    method: str
    path: str  # with {name} placeholders for path ids
    body: dict | None = None
    operator: bool = False
    query: tuple[str, ...] = ()
    multipart: bool = False
    ids: dict = field(default_factory=dict)
    headers: dict = field(default_factory=dict)  # sent with each body case


def _routes(world: dict) -> list[Route]:
    memory, conv, col, doc = (
        world["memory"],
        world["conversation"],
        world["collection"],
        world["doc"],
    )
    ws, key, agent = world["workspace"], world["key"], world["agent"]
    page = ("limit", "after", "before", "order")
    return [
        Route("GET", "/healthz"),
        Route("GET", "/playground"),
        Route("GET", "/docs"),
        Route("GET", "/v1/schema"),
        Route("GET", "/readyz"),
        Route("POST", "/v1/chat/completions", CHAT),
        # one conversation for all its cases: a value stored by one fails the next, or the
        # turn after the sweep (_afterwards)
        Route("POST", "/v1/chat/completions", CHAT_CALL_FIELDS, headers=CALLS_CONVERSATION),
        Route("POST", "/v1/context", CHAT),
        Route("POST", "/v1/embeddings", EMBEDDINGS, headers={"x-user-id": USER}),
        Route("POST", "/v1/responses", {"model": "gpt-4o-mini", "input": "Hi"}),
        Route("GET", "/v1/models"),
        Route("GET", "/v1/models/{model_id}", ids={"model_id": "gpt-4o-mini"}),
        Route(
            "GET",
            "/v1/memories",
            query=(
                "user_id",
                "kind",
                "conversation_id",
                "created_after",
                "created_before",
                "metadata",
                *page,
            ),
        ),
        Route(
            "POST",
            "/v1/memories",
            {"user_id": USER, "text": "likes tea", "kind": "fact", "metadata": {"k": "v"}},
        ),
        Route(
            "POST",
            "/v1/memories/search",
            {"user_id": USER, "query": "tea", "limit": 5, "metadata": {"k": "v"}},
        ),
        Route("POST", "/v1/search", {"user_id": USER, "query": "tea", "limit": 5, "metadata": {}}),
        # a hostile user_id deletes no one's (USER's memories stay for the routes after)
        Route("DELETE", "/v1/memories", query=("user_id", "kind", "metadata")),
        Route("GET", "/v1/memories/{memory_id}", ids={"memory_id": memory}),
        Route(
            "PATCH",
            "/v1/memories/{memory_id}",
            {"text": "likes coffee", "metadata": {"k": "v"}},
            ids={"memory_id": memory},
        ),
        Route("DELETE", "/v1/memories/{memory_id}", ids={"memory_id": "mem_nope"}),
        Route("GET", "/v1/memories/{memory_id}/history", query=page, ids={"memory_id": memory}),
        Route("GET", "/v1/users", query=page),
        Route("GET", "/v1/users/{user_id}", ids={"user_id": USER}),
        Route("GET", "/v1/users/{user_id}/export", ids={"user_id": USER}),
        Route("DELETE", "/v1/users/{user_id}", ids={"user_id": "u_nobody"}),
        Route("GET", "/v1/conversations", query=("user_id", *page)),
        Route(
            "GET",
            "/v1/conversations/{conversation_id}",
            query=("user_id",),
            ids={"conversation_id": conv},
        ),
        Route(
            "DELETE",
            "/v1/conversations/{conversation_id}",
            query=("user_id",),
            ids={"conversation_id": "c_nope"},
        ),
        Route(
            "GET",
            "/v1/conversations/{conversation_id}/messages",
            query=("user_id", *page),
            ids={"conversation_id": conv},
        ),
        Route(
            "POST",
            "/v1/conversations/{conversation_id}/messages",
            {
                "user_id": USER,
                "messages": [
                    {"role": "user", "content": "hello", "metadata": {"k": "v"}},
                    {"role": "assistant", "content": [{"type": "text", "text": "hi"}]},
                ],
            },
            query=("user_id",),
            ids={"conversation_id": conv},
        ),
        Route("GET", "/v1/messages/{message_id}", ids={"message_id": world["message"]}),
        Route("GET", "/v1/collections", query=page),
        Route("POST", "/v1/collections", {"name": "c", "description": "d", "metadata": {"k": "v"}}),
        Route(
            "POST", "/v1/collections/search", {"collection_ids": [col], "query": "tea", "limit": 3}
        ),
        Route("GET", "/v1/collections/{collection_id}", ids={"collection_id": col}),
        Route(
            "PATCH",
            "/v1/collections/{collection_id}",
            {"name": "c2", "metadata": {"k": "v"}},
            ids={"collection_id": col},
        ),
        Route("DELETE", "/v1/collections/{collection_id}", ids={"collection_id": "col_nope"}),
        Route(
            "GET",
            "/v1/collections/{collection_id}/documents",
            query=("status", "external_id", *page),
            ids={"collection_id": col},
        ),
        Route(
            "POST",
            "/v1/collections/{collection_id}/documents",
            {"text": "hello world", "title": "t", "metadata": {"k": "v"}},
            ids={"collection_id": col},
        ),
        Route(
            "POST",
            "/v1/collections/{collection_id}/documents",
            multipart=True,
            ids={"collection_id": col},
        ),
        Route(
            "GET",
            "/v1/collections/{collection_id}/documents/{document_id}",
            ids={"collection_id": col, "document_id": doc},
        ),
        Route(
            "DELETE",
            "/v1/collections/{collection_id}/documents/{document_id}",
            ids={"collection_id": col, "document_id": "doc_nope"},
        ),
        Route("GET", "/v1/auth/issuers", query=page),
        Route("POST", "/v1/auth/issuers", ISSUER | {"issuer": "https://other.example/"}),
        Route("GET", "/v1/auth/issuers/{issuer_id}", ids={"issuer_id": world["issuer"]}),
        Route(
            "PATCH",
            "/v1/auth/issuers/{issuer_id}",
            {"audiences": ["app", "web"], "user_claim": "email"},
            ids={"issuer_id": world["issuer"]},
        ),
        Route("DELETE", "/v1/auth/issuers/{issuer_id}", ids={"issuer_id": "issuer_nope"}),
        Route("GET", "/v1/agents", query=page),
        Route("POST", "/v1/agents", AGENT),
        Route("GET", "/v1/agents/{agent_id}", ids={"agent_id": agent}),
        Route("PATCH", "/v1/agents/{agent_id}", AGENT, ids={"agent_id": agent}),
        Route("GET", "/v1/agents/{agent_id}/versions", query=page, ids={"agent_id": agent}),
        Route("DELETE", "/v1/agents/{agent_id}", ids={"agent_id": "agent_nope"}),
        Route("POST", "/v1/chat/completions", {**CHAT, "model": "agent:hostile"}),
        Route("GET", "/v1/agents/{agent_id}/tools", query=page, ids={"agent_id": agent}),
        Route("GET", "/v1/approvals", query=("status", "user_id", "agent_id", *page)),
        Route("POST", "/v1/agents/{agent_id}/tools", TOOL, ids={"agent_id": agent}),
        Route(
            "GET",
            "/v1/agents/{agent_id}/tools/{tool_id}",
            ids={"agent_id": agent, "tool_id": world["tool"]},
        ),
        Route(
            "PATCH",
            "/v1/agents/{agent_id}/tools/{tool_id}",
            {"description": "Recall.", "approval": "always"},
            ids={"agent_id": agent, "tool_id": world["tool"]},
        ),
        Route(
            "DELETE",
            "/v1/agents/{agent_id}/tools/{tool_id}",
            ids={"agent_id": agent, "tool_id": "tool_nope"},
        ),
        Route("POST", "/v1/chat/resume", {"approval_id": "appr_nope", "decision": "approve"}),
        Route("GET", "/v1/executions", query=("status", "user_id", "agent_id", *page)),
        Route("GET", "/v1/executions/{execution_id}", ids={"execution_id": "exec_nope"}),
        Route(
            "GET",
            "/v1/usage",
            query=("start", "end", "group_by", "key_id", "user_id", "model", *page),
        ),
        Route("GET", "/metrics", operator=True),
        Route("GET", "/v1/workspaces/{workspace_id}", operator=True, ids={"workspace_id": ws}),
        Route(
            "PATCH",
            "/v1/workspaces/{workspace_id}",
            {**LIMITS, "end_user_limits": {"rpm": 100000}, "credit_unit": {"per_usd": 100}},
            operator=True,
            ids={"workspace_id": ws},
        ),
        Route(
            "PATCH",
            "/v1/workspaces/{workspace_id}/api_keys/{key_id}",
            LIMITS,
            operator=True,
            ids={"workspace_id": ws, "key_id": key},
        ),
        Route("GET", "/v1/workspaces", operator=True, query=page),
        Route(
            "DELETE",
            "/v1/workspaces/{workspace_id}",
            operator=True,
            ids={"workspace_id": "ws_nope"},
        ),
        Route("POST", "/v1/workspaces", {"name": "w"}, operator=True),
        Route(
            "GET",
            "/v1/workspaces/{workspace_id}/api_keys",
            operator=True,
            query=page,
            ids={"workspace_id": ws},
        ),
        Route(
            "POST",
            "/v1/workspaces/{workspace_id}/api_keys",
            {"name": "k"},
            operator=True,
            ids={"workspace_id": ws},
        ),
        Route(
            "DELETE",
            "/v1/workspaces/{workspace_id}/api_keys/{key_id}",
            operator=True,
            ids={"workspace_id": ws, "key_id": key},
        ),
    ]


# --- generated cases ----------------------------------------------------------------------------

# Percent-encoded, as they arrive in a path or a query string.
HOSTILE_IDS = {
    "nul": "%00",
    "nul-inside": "a%00b",
    "201-chars": "x" * 201,
    "10k-chars": "x" * 10_000,
    "invalid-utf8": "%FF%FE",
    "surrogate-utf8": "%ED%A0%80",
    "dot-dot": "%2E%2E",
    "quote": "%27%20OR%201%3D1--",
    "emoji": "%F0%9F%98%80",
    "space": "a%20b",
    "newline": "a%0Ab",
}
HOSTILE_QUERY = {**HOSTILE_IDS, "huge-number": "9" * 40, "negative": "-1", "float": "1e400"}
# Header values (bytes: httpx sends them as they are; NUL and newlines cannot be sent at all).
HOSTILE_HEADERS = {
    "x-user-id": [b"x" * 201, b"x" * 10_000, b"\xff\xfe", b"a b", b"\xed\xa0\x80"],
    "x-conversation-id": [b"x" * 201, b"\xff", b"a\tb"],
    "x-session-id": [b"x" * 201, b"\xff"],
    "x-collection-ids": [
        b"[" * 5_000,
        b'["' + b"x" * 201 + b'"]',
        b'["\\u0000"]',
        b"[1,2]",
        b'["\\ud800"]',
        b"{}",
        b"\xff",
    ],
    "x-workspace-id": [b"x" * 10_000, b"\xff"],
    "x-request-id": [b"x" * 10_000, b"\xff"],
}
NUL, SURROGATE = "a\x00b", "\ud800"
VALUES = {
    "nul": NUL,
    "surrogate": SURROGATE,
    "low-surrogate": "x\udc00",
    "201-chars": "x" * 201,
    "100k-chars": "x" * 100_000,
    "int": 7,
    "huge-int": 10**30,
    "float": 1.5,
    "negative": -1,
    "bool": True,
    "null": None,
    "array": ["a", 1],
    "object": {"a": 1},
    "empty": "",
    "numeric-1e400": "1e400",
    "numeric-nan": "NaN",
    "date-far": "9999-12-31T23:59:59-23:59",
    "200-deep": json.loads('{"a":' * 200 + "1" + "}" * 200),
    "200-deep-array": json.loads("[" * 200 + "]" * 200),
}
# Whole bodies, raw.
RAW_BODIES = {
    "deep-arrays": b"[" * 100_000,
    "deep-arrays-closed": b"[" * 100_000 + b"]" * 100_000,
    "deep-objects": b'{"a":' * 100_000,
    "deep-100": b'{"a":' * 100 + b"1" + b"}" * 100,
    "deep-200": b'{"a":' * 200 + b"1" + b"}" * 200,
    "huge-array": json.dumps(list(range(300_000))).encode(),
    "top-array": b"[1, 2]",
    "top-string": b'"hi"',
    "top-null": b"null",
    "empty": b"",
    "whitespace": b"   ",
    "truncated": b'{"a": ',
    "invalid-utf8": b'{"a": "\xff\xfe"}',
    "utf16": '{"a": 1}'.encode("utf-16"),
    "bom": b'\xef\xbb\xbf{"a": 1}',
    "nan": b'{"a": NaN}',
    "infinity": b'{"a": Infinity}',
    "1e400": b'{"a": 1e400}',
    "5000-digits": b'{"a": ' + b"9" * 5000 + b"}",
    "nul-key": b'{"\\u0000": 1}',
    "surrogate-key": b'{"\\ud800": 1}',
    "raw-nul": b'{"a": "\x00"}',
    "duplicate-keys": b'{"a": 1, "a": 2}',
}


@dataclass
class Case:
    name: str
    method: str
    path: str
    operator: bool = False
    headers: dict = field(default_factory=dict)
    content: bytes | None = None


def _fill(route: Route, **override: str) -> str:
    return route.path.format(**{**route.ids, **override})


def _mutations(value, where: str = "") -> Iterator[tuple[str, object]]:
    """(name, body) for every way to spoil one string, key or value of `value`."""
    if isinstance(value, dict):
        for bad_key in (NUL, SURROGATE, "x" * 10_000, "descripton"):
            yield f"{where}.key[{bad_key[:3]!r}]", {**value, bad_key: "v"}
        for key, item in value.items():
            for name, spoiled in _mutations(item, f"{where}.{key}"):
                yield name, {**value, key: spoiled}
            for name, bad in VALUES.items():
                yield f"{where}.{key}={name}", {**value, key: bad}
    elif isinstance(value, list):
        for i, item in enumerate(value):
            for name, spoiled in _mutations(item, f"{where}[{i}]"):
                yield name, value[:i] + [spoiled] + value[i + 1 :]
        yield f"{where}=100k-items", [value[0]] * 100_000 if value else [0] * 100_000


def _json(body) -> bytes:
    return json.dumps(body).encode()  # ensure_ascii: a lone surrogate goes as "\ud800"


def cases(world: dict) -> Iterator[Case]:
    json_type = {"content-type": "application/json"}
    for route in _routes(world):
        case = partial(Case, method=route.method, operator=route.operator)
        where = f"{route.method} {route.path}"
        for name in route.ids:
            for bad, text in HOSTILE_IDS.items():
                yield case(f"{where} path {name}={bad}", path=_fill(route, **{name: text}))
        for name in route.query:
            for bad, text in HOSTILE_QUERY.items():
                yield case(f"{where} ?{name}={bad}", path=f"{_fill(route)}?{name}={text}")
        if route.path not in ("/v1/chat/completions", "/v1/context"):  # each value, below
            # Engram's headers on every route: the REST APIs read x-user-id (an end user's
            # scope) and x-request-id too; two values of each
            for header, values in HOSTILE_HEADERS.items():
                for i, value in enumerate(values[:2]):
                    yield case(
                        f"{where} header {header}#{i}",
                        path=_fill(route),
                        content=_json(route.body) if route.body is not None else None,
                        headers={**json_type, header: value} if route.body else {header: value},
                    )
        if route.method == "GET":  # once a path: the methods no route of it has (DRF's
            # OPTIONS of the Swagger page rendered a template it does not have: a 500)
            for method in ("OPTIONS", "PUT", "TRACE"):
                yield case(f"{where} method {method}", path=_fill(route), method=method)
        if route.multipart:
            form = {"content-type": "multipart/form-data; boundary=B"}
            for name, raw in _uploads():
                yield case(f"{where} upload {name}", path=_fill(route), content=raw, headers=form)
            continue
        if route.body is None:
            continue
        path = _fill(route)
        body_type = {**json_type, **route.headers}
        for name, raw in RAW_BODIES.items():
            yield case(f"{where} body {name}", path=path, content=raw, headers=body_type)
        for name, body in _mutations(route.body):
            yield case(f"{where} field {name}", path=path, content=_json(body), headers=body_type)
        good = _json(route.body)
        for content_type in (
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data",
            "multipart/form-data; boundary=x",
            "application/json; charset=latin-1",
            "",
        ):
            yield case(
                f"{where} content-type {content_type!r}",
                path=path,
                content=good,
                headers={"content-type": content_type},
            )
        if route.path in ("/v1/chat/completions", "/v1/context"):
            for header, values in HOSTILE_HEADERS.items():
                for i, value in enumerate(values):
                    yield case(
                        f"{where} header {header}#{i}",
                        path=path,
                        content=good,
                        headers={**json_type, header: value},
                    )
    for auth in (
        b"Bearer " + b"x" * 10_000,
        b"Bearer \xff\xfe",
        b"Bearer sk-\xed\xa0\x80",
        b"Basic Og==",
        b"Bearer",
        # JWT-shaped: the end-user token path (accounts.endusers) refuses them as 401s
        b"Bearer eyJ..",
        b"Bearer eyJ" + b"A" * 10_000 + b".e30.x",
        b"Bearer eyJhbGciOiJub25lIn0.eyJpc3MiOlsxXX0.",  # alg none, iss a list
        b"Bearer eyJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJodHRwczovL2lkLmV4YW1wbGUvIn0.c2ln",  # no exp
        b"Bearer eyJ\xff.\xfe.x",
    ):
        yield Case(
            "GET /v1/memories authorization", "GET", "/v1/memories", headers={"authorization": auth}
        )


def _multipart(filename: bytes, payload: bytes, fields: dict[str, str]) -> bytes:
    """A multipart body by hand: httpx will not send a filename that is not UTF-8."""
    parts = [
        b'--B\r\nContent-Disposition: form-data; name="%s"\r\n\r\n%s\r\n'
        % (name.encode(), value.encode("utf-8", "surrogatepass"))
        for name, value in fields.items()
    ]
    parts.append(
        b'--B\r\nContent-Disposition: form-data; name="file"; filename="%s"\r\n'
        b"Content-Type: text/plain\r\n\r\n%s\r\n" % (filename, payload)
    )
    return b"".join(parts) + b"--B--\r\n"


def _uploads() -> Iterator[tuple[str, bytes]]:
    ok = {"title": "t"}
    yield "nul-filename", _multipart(b"a\x00b.txt", b"hello", ok)
    yield "10k-filename", _multipart(b"x" * 10_000 + b".txt", b"hello", ok)
    yield "invalid-utf8-filename", _multipart(b"\xff\xfe.txt", b"hello", ok)
    yield "surrogate-filename", _multipart(b"\xed\xa0\x80.txt", b"hello", ok)
    yield "traversal-filename", _multipart(b"../../etc/passwd", b"hello", ok)
    yield "empty-filename", _multipart(b"", b"hello", ok)
    yield "quote-filename", _multipart(b'a"; name="x', b"hello", ok)
    yield "nul-content", _multipart(b"a.txt", b"a\x00b", ok)
    yield "binary-content", _multipart(b"a.txt", bytes(range(256)), ok)
    yield "nul-title", _multipart(b"a.txt", b"hello", {"title": "a\x00b"})
    yield "surrogate-title", _multipart(b"a.txt", b"hello", {"title": "a\ud800b"})
    yield "long-title", _multipart(b"a.txt", b"hello", {"title": "x" * 10_000})
    yield "nul-metadata", _multipart(b"a.txt", b"hello", {"metadata": '{"\\u0000": "v"}'})
    yield "surrogate-metadata", _multipart(b"a.txt", b"hello", {"metadata": '{"k": "\\ud800"}'})
    yield "deep-metadata", _multipart(b"a.txt", b"hello", {"metadata": "[" * 100_000})
    yield "array-metadata", _multipart(b"a.txt", b"hello", {"metadata": "[1]"})
    yield "bad-metadata", _multipart(b"a.txt", b"hello", {"metadata": "{"})
    yield "no-file", b'--B\r\nContent-Disposition: form-data; name="title"\r\n\r\nt\r\n--B--\r\n'
    yield "truncated", b'--B\r\nContent-Disposition: form-data; name="file"; filename="a"\r\n'
    yield "no-boundary-end", b"--B\r\n"


# --- the test -----------------------------------------------------------------------------------


@pytest.fixture
def world(http, operator_http, owner, upstream, celery_worker) -> dict:
    """One of everything, so a valid id reaches the database on every route."""

    def ok(resp: httpx.Response) -> dict:
        assert resp.status_code < 300, resp.text
        return resp.json()

    memory = ok(http.post("/v1/memories", json={"user_id": USER, "text": "likes tea"}))["id"]
    imported = ok(
        http.post(
            "/v1/conversations/conv_h/messages",
            json={"user_id": USER, "messages": [{"role": "user", "content": "hi"}]},
        )
    )
    col = ok(http.post("/v1/collections", json={"name": "Docs"}))["id"]
    doc = ok(http.post(f"/v1/collections/{col}/documents", json={"text": "tea is good"}))["id"]
    ws = owner[0].id
    agent = ok(http.post("/v1/agents", json={**AGENT, "name": "hostile"}))["id"]
    key = ok(operator_http.post(f"/v1/workspaces/{ws}/api_keys", json={"name": "spare"}))["id"]
    issuer = ok(http.post("/v1/auth/issuers", json=ISSUER))["id"]
    tool = ok(http.post(f"/v1/agents/{agent}/tools", json={**TOOL, "name": "hostile"}))["id"]
    return {
        "tool": tool,
        "issuer": issuer,
        "memory": memory,
        "conversation": "conv_h",
        "message": imported["data"][0]["id"],
        "collection": col,
        "doc": doc,
        "workspace": ws,
        "key": key,
        "agent": agent,
    }


def _afterwards(world: dict) -> Iterator[Case]:
    """Requests that read back what the hostile sweep stored, each as a valid request."""
    remembered = {"x-user-id": USER, "content-type": "application/json"}
    turn = json.dumps({**CHAT, "user": None}).encode()
    streamed = json.dumps({**CHAT, "user": None, "stream": True}).encode()
    agent_turn = json.dumps({**CHAT, "model": "agent:hostile"}).encode()
    # the sweep's conversations of CHAT_CALL_FIELDS, found again by the history resent
    calls_turn = json.dumps({**CHAT_CALL_FIELDS, "user": None}).encode()
    conv, col, agent = world["conversation"], world["collection"], world["agent"]
    for headers, content in (
        (remembered, turn),
        ({**remembered, "x-conversation-id": conv}, turn),
        ({**remembered, "x-conversation-id": conv}, streamed),
        ({"content-type": "application/json"}, agent_turn),
        ({**remembered, **CALLS_CONVERSATION}, calls_turn),
    ):
        yield Case(
            "afterwards chat", "POST", "/v1/chat/completions", headers=headers, content=content
        )
    yield Case("afterwards context", "POST", "/v1/context", headers=remembered, content=turn)
    for path in (
        f"/v1/memories?user_id={USER}",
        f"/v1/conversations?user_id={USER}",
        f"/v1/conversations/{conv}",
        f"/v1/conversations/{conv}/messages",
        f"/v1/users/{USER}",
        f"/v1/users/{USER}/export",
        f"/v1/collections/{col}/documents",
        f"/v1/agents/{agent}",
        f"/v1/agents/{agent}/tools",
        f"/v1/agents/{agent}/versions",
        "/v1/auth/issuers",
        "/v1/usage",
    ):
        yield Case(f"afterwards GET {path}", "GET", path)
    search = json.dumps({"user_id": USER, "query": "tea", "limit": 20}).encode()
    for path in ("/v1/memories/search", "/v1/search"):
        yield Case(f"afterwards {path}", "POST", path, headers=JSON, content=search)


def _send(client: httpx.Client, case: Case, prefix: str = "") -> httpx.Response:
    return client.request(
        case.method,
        prefix + case.path if prefix else case.path,
        headers=case.headers,
        content=case.content,
        timeout=10,
    )


def _check(resp: httpx.Response, case: Case, problems: list[str]) -> None:
    if resp.status_code >= 500:
        problems.append(f"{resp.status_code} {case.name}: {resp.text[:200]}")
        return
    if "Traceback" in resp.text or 'File "/' in resp.text:
        problems.append(f"traceback {case.name}")
    if resp.status_code < 400:
        return
    try:
        error = resp.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert isinstance(error["message"], str) and error["message"]
    except (ValueError, KeyError, TypeError, AssertionError):
        problems.append(f"not an envelope {resp.status_code} {case.name}: {resp.text[:200]}")


# The sweep is a few thousand requests (85-140 s in one test): in shards, each on a world of its
# own, pytest-xdist's workers share it (`make test` runs two).
SHARDS = 4


@pytest.mark.parametrize("shard", range(SHARDS))
def test_hostile_input_on_every_route_is_never_a_5xx(
    world, http, operator_http, settings, capsys, shard
):
    statuses: Counter[int] = Counter()
    problems: list[str] = []
    slow: list[str] = []
    all_cases = list(cases(world))[shard::SHARDS]
    for door in ("asgi", "django"):
        settings.ENGRAM_GATEWAY_FAST_PATH = door == "asgi"
        for case in all_cases:
            if door == "django" and (
                case.path != "/v1/chat/completions" or case.headers.get("x-conversation-id")
            ):
                continue  # the Django view of the chat door; everything else was sent once
            client = operator_http if case.operator else http
            started = time.monotonic()
            try:
                resp = _send(client, case)
            except httpx.TimeoutException:
                problems.append(f"timeout {case.name}")
                continue
            if time.monotonic() - started > 2:
                slow.append(f"{time.monotonic() - started:.1f}s {case.name}")
            statuses[resp.status_code] += 1
            _check(resp, case, problems)
    for case in all_cases[::7]:  # the /api/v1 alias answers as /v1 does
        if case.path.startswith("/v1/"):
            resp = _send(operator_http if case.operator else http, case, prefix="/api")
            statuses[resp.status_code] += 1
            _check(resp, case, problems)
    print("\n".join(slow))
    assert http.get("/readyz").status_code == 200
    # What the sweep stored is read again later: history resent with the next turn, lists,
    # exports, context. A value a door let through must not fail those (a user message stored
    # with "tool_calls": true once made every later turn of its conversation a 500).
    for case in _afterwards(world):
        resp = _send(operator_http if case.operator else http, case)
        statuses[resp.status_code] += 1
        _check(resp, case, problems)
    total = sum(statuses.values())
    with capsys.disabled():
        print("\n".join(slow))
        print(f"\nhostile requests: {total}; by status: {dict(sorted(statuses.items()))}")
    assert not problems, f"{len(problems)} of {total}:\n" + "\n".join(problems[:80])
    assert total >= 500 // SHARDS
    assert sum(n for s, n in statuses.items() if s >= 500) == 0


# --- what each rule answers ---------------------------------------------------------------------

JSON = {"content-type": "application/json"}


def _post(http, path: str, raw: bytes) -> httpx.Response:
    return http.post(path, content=raw, headers=JSON)


@pytest.mark.parametrize(
    ("raw", "param"),
    [
        (b'{"user_id": "u", "text": "a\\u0000b"}', "text"),
        (b'{"user_id": "u", "text": "a\\ud800b"}', "text"),
        (b'{"user_id": "u", "text": "t", "metadata": {"k": "\\u0000"}}', "metadata.k"),
        (b'{"user_id": "u", "text": "t", "metadata": {"\\u0000": "v"}}', 'metadata["\\u0000"]'),
        (b'{"user_id": "u", "text": "t", "metadata": {"k": ["\\udc00"]}}', "metadata.k[0]"),
        (b'{"user_id": "a\\u0000b", "text": "t"}', "user_id"),
    ],
)
def test_nul_and_lone_surrogates_are_400_naming_the_field(http, raw, param):
    error = assert_envelope(_post(http, "/v1/memories", raw), 400, code="invalid_value")
    assert error["param"] == param
    assert "\x00" not in error["message"] and "\\ud800" not in json.dumps(error["message"])
    assert http.get("/v1/memories").json()["data"] == []  # nothing stored


@pytest.mark.parametrize(
    "path",
    [
        "/v1/memories",
        "/v1/collections",
        "/v1/memories/search",
        "/v1/search",
        "/v1/workspaces",
        "/v1/conversations/c1/messages",
        "/v1/chat/completions",
        "/v1/context",
        "/v1/embeddings",
    ],
)
def test_deep_and_huge_json_is_400_on_every_json_door(http, operator_http, path):
    client = operator_http if path == "/v1/workspaces" else http
    for raw in (b"[" * 100_000, b'{"a":' * 100_000, b'{"a":' * 65 + b"1" + b"}" * 65):
        assert_envelope(_post(client, path, raw), 400, code="invalid_json")
    huge = json.dumps({"name": "n", "user_id": "u", "x": [0] * 60_000}).encode()
    assert assert_envelope(_post(client, path, huge), 400, code="invalid_json")["param"] == "x"
    for number in (b"1e400", b"NaN", b"-Infinity", b"9" * 5000):
        assert_envelope(_post(client, path, b'{"name": ' + number + b"}"), 400)


def test_ids_in_path_query_and_body_follow_one_rule(http):
    for bad in ("%00", "a%00b", "x" * 201, "x" * 10_000, "a%20b"):
        for path in (
            f"/v1/memories/{bad}",
            f"/v1/conversations/{bad}/messages",
            f"/v1/users/{bad}/export",
            f"/api/v1/collections/{bad}",
        ):
            error = assert_envelope(http.get(path), 404, code="not_found")
            assert len(error["message"]) < 400
        for name in ("user_id", "after", "before"):
            error = assert_envelope(http.get(f"/v1/memories?{name}={bad}"), 400)
            assert error["param"] == name
    for user_id in ("x" * 201, "a b", 7):
        resp = http.post("/v1/memories", json={"user_id": user_id, "text": "t"})
        assert assert_envelope(resp, 400)["param"] == "user_id"
    assert http.get("/v1/memories?user_id=" + "x" * 200).status_code == 200  # 200 is an id


@pytest.mark.parametrize("model", ["\ud800", "gpt 4o", "x" * 201, "a\x00b", "gpt-4o\n"])
def test_model_names_are_checked_before_the_upstream(http, upstream, model):
    body = {"model": model, "messages": [{"role": "user", "content": "Hi"}]}
    error = assert_envelope(_post(http, "/v1/chat/completions", json.dumps(body).encode()), 400)
    assert error["param"] == "model"
    assert upstream.chat_requests() == []


@pytest.mark.parametrize(
    ("filename", "fields", "param"),
    [
        (b"a.txt", {"metadata": '{"\\u0000": 1}'}, 'metadata["\\u0000"]'),
        (b"a.txt", {"metadata": "[" * 100_000}, "metadata"),
        (b"a.txt", {"title": "a\x00b"}, "title"),
    ],
)
def test_hostile_uploads_are_400_naming_the_field(http, filename, fields, param):
    col = http.post("/v1/collections", json={"name": "Docs"}).json()["id"]
    resp = http.post(
        f"/v1/collections/{col}/documents",
        content=_multipart(filename, b"hello", fields),
        headers={"content-type": "multipart/form-data; boundary=B"},
    )
    assert assert_envelope(resp, 400)["param"] == param
    assert http.get(f"/v1/collections/{col}/documents").json()["data"] == []


def _part(name: str, value: bytes, filename: bytes | None = None) -> bytes:
    disposition = b'form-data; name="%s"' % name.encode()
    if filename is not None:
        disposition += b'; filename="%s"\r\nContent-Type: text/plain' % filename
    return b"--B\r\nContent-Disposition: %s\r\n\r\n%s\r\n" % (disposition, value)


@pytest.mark.parametrize(
    ("parts", "param"),
    [
        ((_part("file", b"one", b"a.txt"), _part("file", b"two", b"b.txt")), "file"),
        ((_part("file", b"one", b"a.txt"), _part("title", b"A"), _part("title", b"B")), "title"),
        (
            (_part("metadata", b'{"k": "1"}'), _part("file", b"one", b"a.txt"))
            + (_part("metadata", b'{"k": "2"}'),),
            "metadata",
        ),
    ],
    ids=["two-files", "two-titles", "two-metadata"],
)
def test_a_field_sent_twice_in_an_upload_is_400_naming_it(http, parts, param):
    """Django's form keeps the last value of each: a second file was stored and the first
    dropped in silence, a 202 for one of the two documents sent."""
    col = http.post("/v1/collections", json={"name": "Docs"}).json()["id"]
    resp = http.post(
        f"/v1/collections/{col}/documents",
        content=b"".join(parts) + b"--B--\r\n",
        headers={"content-type": "multipart/form-data; boundary=B"},
    )
    error = assert_envelope(resp, 400)
    assert (error["param"], error["code"]) == (param, "invalid_value")
    assert http.get(f"/v1/collections/{col}/documents").json()["data"] == []


def test_upload_file_names_are_cleaned_by_django_before_engram(http):
    col = http.post("/v1/collections", json={"name": "Docs"}).json()["id"]
    for filename, stored in ((b"a\x00b.txt", "ab.txt"), (b"../../x" * 100, "x")):
        resp = http.post(
            f"/v1/collections/{col}/documents",
            content=_multipart(filename, b"text " + filename.replace(b"\x00", b"-"), {}),
            headers={"content-type": "multipart/form-data; boundary=B"},
        )
        assert resp.status_code == 202, resp.text
        assert resp.json()["filename"] == stored


def test_import_refuses_content_parts_the_tokenizer_cannot_read(http):
    for part in ({"type": "text", "text": 5}, {"type": "text"}, {"text": "no type"}, "bare"):
        body = {"user_id": "u", "messages": [{"role": "user", "content": [part]}]}
        resp = http.post("/v1/conversations/c1/messages", json=body)
        assert assert_envelope(resp, 400)["param"] == "messages[0].content"


CALL = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
REMEMBERED = {"x-user-id": "u_calls", "x-conversation-id": "c_calls"}


@pytest.mark.parametrize(
    ("bad", "param", "code"),
    [
        ({"role": "user", "content": "Hi", "tool_calls": True}, "tool_calls", "invalid_value"),
        ({"role": "user", "content": "Hi", "tool_calls": [CALL]}, "tool_calls", "invalid_value"),
        ({"role": "system", "content": "Hi", "tool_calls": {}}, "tool_calls", "invalid_type"),
        ({"role": "assistant", "content": "Hi", "tool_calls": {}}, "tool_calls", "invalid_type"),
        ({"role": "assistant", "tool_calls": [{"id": 1}]}, "tool_calls[0].id", "invalid_type"),
        ({"role": "user", "content": "Hi", "tool_call_id": 7}, "tool_call_id", "invalid_type"),
        ({"role": "assistant", "content": "Hi", "refusal": {}}, "refusal", "invalid_type"),
        (
            {"role": "assistant", "content": "Hi", "function_call": {"name": "f"}},
            "function_call.arguments",
            "invalid_type",
        ),
    ],
)
def test_malformed_tool_call_fields_are_400_whatever_the_role(http, upstream, bad, param, code):
    """Stored as it came and sent again as history, a malformed message would fail every later
    turn of its conversation: the door refuses it, and the conversation goes on."""
    messages = [{"role": "user", "content": "Earlier"}, bad, {"role": "user", "content": "Now"}]
    body = {"model": "gpt-4o-mini", "messages": messages}
    refused = http.post("/v1/chat/completions", json=body, headers=REMEMBERED)
    error = assert_envelope(refused, 400, code=code)
    assert error["param"] == f"messages[1].{param}"
    body["messages"] = [{"role": "user", "content": "Hi again"}]
    served = http.post("/v1/chat/completions", json=body, headers=REMEMBERED)
    assert served.status_code == 200, served.text


def test_empty_or_null_tool_calls_on_a_user_message_are_accepted(http, upstream):
    for calls in ([], None):
        body = {
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": "Hi", "tool_calls": calls}],
        }
        served = http.post("/v1/chat/completions", json=body, headers=REMEMBERED)
        assert served.status_code == 200, served.text


def test_a_malformed_message_stored_before_the_door_checked_does_not_fail_the_next_turn(
    http, upstream
):
    from memory.models import Message

    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "I live in Paris."}]}
    first = http.post("/v1/chat/completions", json=body, headers=REMEMBERED)
    assert first.status_code == 200, first.text
    stored = Message.objects.get(conversation__external_id="c_calls", role="user")
    stored.raw = {**stored.raw, "tool_calls": True}  # what an earlier version let through
    stored.save(update_fields=["raw"])
    body["messages"] = [{"role": "user", "content": "Where do I live?"}]
    served = http.post("/v1/chat/completions", json=body, headers=REMEMBERED)
    assert served.status_code == 200, served.text
    sent = upstream.requests[-1].body["messages"]
    assert sent[-1]["content"] == "Where do I live?"
    assert any(m.get("content") == "I live in Paris." for m in sent)  # its history still sent


def test_the_sweep_sends_every_operation_of_the_openapi_document(anon_http):
    """The sweep's routes are written by hand (each needs a valid body and ids to reach the
    database); the served document is the list of what exists. A route added to one and not the
    other is named here, so no operation, or query parameter, goes unswept."""
    from tests.test_openapi import _schema

    world = {
        k: f"{k}_x"
        for k in (
            "memory",
            "conversation",
            "message",
            "collection",
            "doc",
            "workspace",
            "key",
            "agent",
        )
    }
    world |= {"tool": "tool_x", "issuer": "issuer_x"}
    swept: dict[tuple[str, str], set[str]] = {}
    for route in _routes(world):
        swept.setdefault((route.method, route.path), set()).update(route.query)
    documented = {
        (method.upper(), path): {
            p["name"] for p in operation.get("parameters", []) if p["in"] == "query"
        }
        for path, operations in _schema(anon_http)["paths"].items()
        for method, operation in operations.items()
        if method in ("get", "post", "put", "patch", "delete")
    }
    assert sorted(set(documented) - set(swept)) == []
    # and every query parameter each documents
    unswept = {op: sorted(names - swept[op]) for op, names in documented.items()}
    missing = {op: names for op, names in unswept.items() if names}
    assert not missing, missing


@pytest.mark.parametrize(
    ("image", "param", "expected"),
    [
        ("https://example.com/cat.png", "image_url", "expected an object, but got a string"),
        ({"detail": "low"}, "image_url.url", "expected a string, but got null"),
        ({"url": 5}, "image_url.url", "expected a string, but got a number"),
    ],
)
def test_a_malformed_image_part_names_its_field_and_what_it_got(
    http, upstream, image, param, expected
):
    """`"image_url": "https://..."`, an image part's common slip, read "expected a string, but
    got a string instead" naming `image_url.url`: the message said nothing of what was wrong."""
    part = {"type": "image_url", "image_url": image}
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": [part]}]}
    error = assert_envelope(http.post("/v1/chat/completions", json=body), 400, code="invalid_type")
    assert error["param"] == f"messages[0].content[0].{param}"
    assert expected in error["message"]
