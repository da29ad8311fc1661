"""The OpenAPI document: public, complete, and true of the live server's every route.

`test_live_responses_conform_to_the_schema` runs schemathesis against the real server: for
every operation, generated requests (valid-ish, positive data: the schema's types, patterns
and bounds), once with random path ids and once with ids of seeded rows, each response checked
for a 5xx, an undocumented status, a content type and a body the schema does not describe.
"""

from __future__ import annotations

import collections
import re

import pytest
from django.conf import settings
from django.contrib.staticfiles import finders
from django.urls import URLPattern, URLResolver, get_resolver

from memory.models import Session

# Generated requests per operation and per kind (random ids / seeded ids): ~40 operations.
EXAMPLES = 6


def _schema(client) -> dict:
    response = client.get("/v1/schema", params={"format": "json"})
    assert response.status_code == 200, response.text
    return response.json()


def _routes(patterns, prefix=""):
    for pattern in patterns:
        regex = prefix + str(pattern.pattern)
        if isinstance(pattern, URLResolver):
            yield from _routes(pattern.url_patterns, regex)
        elif isinstance(pattern, URLPattern):
            yield regex


def _as_path(regex: str) -> str:
    path = "/" + re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", regex.replace("^", "").replace("$", ""))
    return re.sub(r"\(\?P<(\w+)>[^)]*\)", r"{\1}", path)


PAGES = ("admin", "api/v1/", "v1/schema", "docs", "static/", "playground", "favicon.ico")


def test_schema_is_public_31_and_lists_every_route_once(anon_http):
    schema = _schema(anon_http)
    assert schema["openapi"] == "3.1.0"
    paths = set(schema["paths"])
    served = {
        _as_path(regex)
        for regex in _routes(get_resolver().url_patterns)
        # pages for people (and the browser's own icon request), not API operations
        if not regex.startswith(PAGES)
    }
    assert served - paths == set()  # nothing served is missing
    assert {"/v1/chat/completions", "/v1/context", "/v1/models", "/v1/users"} <= paths
    assert not [p for p in paths if p.startswith("/api/")]  # the alias: described, not listed
    assert "/api/v1/" in schema["info"]["description"]
    assert set(schema["components"]["securitySchemes"]) == {
        "WorkspaceKey",
        "OperatorKey",
        "EndUserToken",
    }
    # an end user's token where it is accepted; a workspace key alone elsewhere
    both = [{"WorkspaceKey": []}, {"EndUserToken": []}]
    assert schema["paths"]["/v1/memories"]["get"]["security"] == both
    assert schema["paths"]["/v1/chat/completions"]["post"]["security"] == both
    # a token searches the collections it names (as its chat's x-collection-ids), manages none
    assert schema["paths"]["/v1/collections/search"]["post"]["security"] == both
    assert schema["paths"]["/v1/collections"]["post"]["security"] == [{"WorkspaceKey": []}]
    assert schema["paths"]["/v1/auth/issuers"]["post"]["security"] == [{"WorkspaceKey": []}]
    assert schema["paths"]["/v1/workspaces"]["post"]["security"] == [{"OperatorKey": []}]


def test_every_path_id_is_documented_by_the_id_rule(anon_http):
    """Every path parameter says the documented id rule, as a body, query or header id does:
    not the URL converter's regex (`\\w`, the internal \\x1f of an encoded slash), and not
    a bare string (a view's own annotation dropped the pattern of a conversation's messages)."""
    schema = _schema(anon_http)
    rule = {
        "type": "string",
        "pattern": "^(?!\\.\\.?$)[A-Za-z0-9_.:@+\\-/=]{1,200}$",  # not "." or ".." alone
        "minLength": 1,
        "maxLength": 200,
    }
    found = {
        (method, path, param["name"]): param["schema"]
        for path, operations in schema["paths"].items()
        for method, operation in operations.items()
        for param in operation.get("parameters", [])
        if param["in"] == "path"
    }
    # every templated segment of every path is a documented parameter
    for path, operations in schema["paths"].items():
        for method in operations:
            for name in re.findall(r"{(\w+)}", path):
                assert (method, path, name) in found, (method, path, name)
    assert ("get", "/v1/conversations/{conversation_id}/messages", "conversation_id") in found
    assert ("get", "/v1/users/{user_id}", "user_id") in found
    assert ("get", "/v1/models/{model_id}", "model_id") in found
    assert {key: s for key, s in found.items() if s != rule} == {}
    assert re.fullmatch(rule["pattern"], "org/alice") and re.fullmatch(rule["pattern"], "msg_01")


def test_chat_completions_is_documented_in_openais_shapes(anon_http):
    schema = _schema(anon_http)
    chat = schema["paths"]["/v1/chat/completions"]["post"]
    headers = {p["name"] for p in chat["parameters"] if p["in"] == "header"}
    assert {
        "x-user-id",
        "x-conversation-id",
        "x-session-id",
        "x-workspace-id",
        "x-collection-ids",
    } <= headers
    assert set(chat["responses"]["200"]["content"]) == {"application/json", "text/event-stream"}
    assert {"400", "401", "403", "404", "413", "429", "502", "504"} <= set(chat["responses"])
    error = chat["responses"]["429"]["content"]["application/json"]["schema"]
    assert error == {"$ref": "#/components/schemas/Error"}
    components = schema["components"]["schemas"]
    assert set(components["ErrorDetail"]["properties"]) == {"message", "type", "param", "code"}
    for name in ("ChatCompletionRequest", "ChatCompletion", "ChatCompletionChunk", "Engram"):
        assert name in components
    body = chat["requestBody"]["content"]["application/json"]
    assert body["schema"] == {"$ref": "#/components/schemas/ChatCompletionRequest"}
    assert body["examples"]  # the no-LLM example, and a streamed one


def test_docs_are_public_and_offline(anon_http):
    response = anon_http.get("/docs")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    html = response.text
    assert "/v1/schema" in html
    assert not re.search(r"(src|href)=\"https?://", html)  # no CDN
    assets = re.findall(r"/static/(drf_spectacular_sidecar/[^\"']+)", html)
    assert assets and all(finders.find(asset) for asset in assets)


def test_an_agent_naming_another_workspaces_collection_is_a_documented_404(http, anon_http):
    """POST /v1/agents names no object in its path, so its 404 (`collection_ids` naming a
    collection not in the workspace) was not in the document: schemathesis's coverage phase
    found it undocumented."""
    created = http.post(
        "/v1/agents", json={"name": "x", "model": "local", "collection_ids": ["00"]}
    )
    assert created.status_code == 404, created.text
    assert created.json()["error"]["code"] == "collection_not_found"
    documented = _schema(anon_http)["paths"]["/v1/agents"]["post"]["responses"]
    assert "404" in documented


# --- the live run ---------------------------------------------------------------------------


def _tool_rows(http, workspace, agent_id: str) -> tuple[str, str]:
    """A tool of the agent and an execution (completions.tools)."""
    from completions.tools.services import execution_create

    tool = http.post(
        f"/v1/agents/{agent_id}/tools",
        json={"name": "recall", "type": "builtin", "builtin": "memory_search"},
    )
    assert tool.status_code == 201, tool.text
    execution = execution_create(
        workspace=workspace,
        agent_id=agent_id,
        user_id="alice",
        request_id="req_seeded",
        model=agent_id,
        route_model="local",
        stream=False,
        body={},
        collection_ids=[],
    )
    return tool.json()["id"], execution.id


@pytest.fixture
def seeded(http, owner, operator_http):
    """Rows for the generated requests to find: each path id names one of them."""
    memory = http.post("/v1/memories", json={"user_id": "alice", "text": "Alice lives in Oslo."})
    imported = http.post(
        "/v1/conversations/c1/messages",
        json={"user_id": "alice", "messages": [{"role": "user", "content": "I like tea."}]},
    )
    collection = http.post("/v1/collections", json={"name": "Handbook"})
    document = http.post(
        f"/v1/collections/{collection.json()['id']}/documents",
        json={"text": "# Returns\nWithin 30 days.", "title": "Returns"},
    )
    spare = operator_http.post(f"/v1/workspaces/{owner[0].id}/api_keys", json={"name": "spare"})
    issuer = http.post(
        "/v1/auth/issuers",
        json={"issuer": "https://id.example/", "audiences": ["app"], "hs256_secret": "s" * 32},
    )
    agent = http.post("/v1/agents", json={"name": "helper", "model": "local"})
    for response in (memory, imported, collection, document, spare, issuer, agent):
        assert response.status_code in (201, 202), response.text
    Session.objects.create(workspace=owner[0], external_id="s1", user_id="alice")
    tool, execution = _tool_rows(http, owner[0], agent.json()["id"])
    return {
        "tool_id": tool,
        "execution_id": execution,
        "memory_id": memory.json()["id"],
        "conversation_id": "c1",
        "message_id": imported.json()["data"][0]["id"],
        "user_id": "alice",
        "collection_id": collection.json()["id"],
        "document_id": document.json()["id"],
        "model_id": "local",
        "workspace_id": owner[0].id,
        "key_id": spare.json()["id"],
        "issuer_id": issuer.json()["id"],  # revoking it leaves the caller's key working
        "agent_id": agent.json()["id"],
    }


def _live_schema(client, *, mode: str):
    """The served document for schemathesis: `mode` "positive" (valid data) or "all" (invalid
    too, NUL bytes included)."""
    import schemathesis
    from schemathesis.config import SchemathesisConfig

    config = SchemathesisConfig.from_dict(
        {
            "generation": {
                "mode": mode,
                "allow-x00": mode != "positive",
                "with-security-parameters": False,
            }
        }
    )
    return schemathesis.openapi.from_dict(_schema(client), config=config)


def _generated(strategy, examples: int, send) -> None:
    """`send` each of `examples` cases generated from `strategy` (the same cases every run)."""
    from hypothesis import HealthCheck, Phase, given
    from hypothesis import settings as hypothesis_settings

    @hypothesis_settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def probe(case) -> None:
        send(case)

    probe()


def test_live_responses_conform_to_the_schema(engram_server, anon_http, owner, seeded):
    from schemathesis.checks import not_a_server_error
    from schemathesis.core.result import Ok
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
    ]
    # NUL bytes and lone surrogates are hostile-input parsing, tested where it is handled.
    schema = _live_schema(anon_http, mode="positive")
    keys = {"WorkspaceKey": owner[1], "OperatorKey": settings.ENGRAM_ADMIN_KEY}
    statuses: collections.Counter = collections.Counter()
    failures: list[str] = []
    results = list(schema.get_all_operations())
    operations = [result.ok() for result in results if isinstance(result, Ok)]
    assert len(operations) == len(results)  # every operation of the document loads
    # Deletions last, the seeded rows' deletions after every read of them.
    operations.sort(key=lambda op: op.method.upper() == "DELETE")

    def run(operation, strategy, *, key: str | None = "", examples: int = EXAMPLES) -> None:
        """`key`: "" for the key the operation's scheme names, None for none, or this key."""
        security = operation.definition.raw.get("security") or [{}]
        scheme = next(iter(security[0]), None)
        if key == "":
            key = keys[scheme] if scheme else None
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        # /readyz's documented 503 (no worker in this test) is its answer, not a server error.
        operation_checks = checks[1:] if operation.path == "/readyz" else checks

        def send(case) -> None:
            response = case.call(base_url=engram_server.url, headers=headers, timeout=30)
            statuses[response.status_code] += 1
            try:
                case.validate_response(response, checks=operation_checks, headers=headers)
            except (Exception, BaseExceptionGroup) as exc:  # recorded, asserted at the end
                failures.append(f"{operation.label} -> {response.status_code}: {exc}"[:1500])

        _generated(strategy, examples, send)

    for operation in operations:
        if operation.definition.raw.get("security"):  # no key: 401; the other kind: 403
            scheme = next(iter(operation.definition.raw["security"][0]))
            other = keys["OperatorKey" if scheme == "WorkspaceKey" else "WorkspaceKey"]
            run(operation, operation.as_strategy(), key=None, examples=1)
            run(operation, operation.as_strategy(), key=other, examples=1)
        run(operation, operation.as_strategy())
        fixed = {p.name: seeded[p.name] for p in operation.path_parameters}
        if fixed:
            run(operation, operation.as_strategy(path_parameters=fixed))

    server_errors = sum(n for status, n in statuses.items() if status >= 500) - statuses[503]
    undocumented = sum("Undocumented status code" in failure for failure in failures)
    print(
        f"\nschemathesis: {len(operations)} operations, {sum(statuses.values())} requests, "
        f"statuses {dict(sorted(statuses.items()))}, {server_errors} server errors, "
        f"{undocumented} undocumented statuses, {len(failures)} failed checks"
    )
    for failure in failures[:20]:
        print(failure)
    assert len(operations) >= 35
    assert statuses[200] + statuses[201] + statuses[202] > 0
    assert statuses[401] >= 34 and statuses[403] >= 34
    assert server_errors == 0 and undocumented == 0
    assert failures == []


# Generated requests per operation and per kind in the server-error sweep: any data, valid or
# not (~40 operations x 2 kinds x 20: ~30 s). A longer run (250 each, 12,000 requests) found
# one 500: a PATCH of an issuer's own "issuer" field.
SWEEP_EXAMPLES = 20


def test_no_generated_request_gets_a_server_error(engram_server, anon_http, owner, seeded):
    """Invalid data too (negative mode: wrong types, unknown fields, NUL bytes), with the
    operation's own key: whatever comes, a 4xx or a success, never a 5xx."""
    from schemathesis.core.result import Ok

    schema = _live_schema(anon_http, mode="all")
    keys = {"WorkspaceKey": owner[1], "OperatorKey": settings.ENGRAM_ADMIN_KEY}
    statuses: collections.Counter = collections.Counter()
    errors: list[str] = []
    operations = [r.ok() for r in schema.get_all_operations() if isinstance(r, Ok)]
    operations.sort(key=lambda op: op.method.upper() == "DELETE")

    def sweep(strategy, label: str, headers: dict) -> None:
        def send(case) -> None:
            response = case.call(base_url=engram_server.url, headers=headers, timeout=30)
            statuses[response.status_code] += 1
            if response.status_code >= 500:
                errors.append(f"{label} -> {response.status_code}: {case.body!r}"[:500])

        _generated(strategy, SWEEP_EXAMPLES, send)

    for operation in operations:
        if operation.path == "/readyz":  # its documented 503: no worker in this test
            continue
        security = operation.definition.raw.get("security") or [{}]
        scheme = next(iter(security[0]), None)
        headers = {"Authorization": f"Bearer {keys[scheme]}"} if scheme else {}
        sweep(operation.as_strategy(), operation.label, headers)
        if operation.path_parameters:
            fixed = {p.name: seeded[p.name] for p in operation.path_parameters}
            sweep(operation.as_strategy(path_parameters=fixed), operation.label, headers)
    print(f"\nserver-error sweep: statuses {dict(sorted(statuses.items()))}")
    assert statuses[400] > 100 and statuses[200] > 100  # both kinds of data were sent
    assert errors == []


def test_a_stream_and_a_context_preview_conform_to_the_schema(engram_server, anon_http, owner):
    """Two answers the generated requests reach only now and then: a streamed completion (each
    event read as the document's event schema) and /v1/context's `engram`, which has no charge."""
    from schemathesis.specs.openapi.checks import response_schema_conformance

    schema = _live_schema(anon_http, mode="positive")
    headers = {"Authorization": f"Bearer {owner[1]}", "x-user-id": "alice"}
    message = [{"role": "user", "content": "Hi, I live in Berlin."}]
    for path, body in [
        ("/v1/chat/completions", {"model": "local", "messages": message, "stream": True}),
        ("/v1/context", {"model": "local", "messages": message}),
    ]:
        case = schema[path]["POST"].Case(body=body, headers=headers)
        response = case.call(base_url=engram_server.url, timeout=30)
        assert response.status_code == 200, response.text
        case.validate_response(response, checks=[response_schema_conformance])
