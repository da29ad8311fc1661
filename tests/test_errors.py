"""Every error the foundation produces is OpenAI's envelope, with x-request-id."""

import pytest
from django.db import OperationalError


def assert_envelope(resp, status, *, code=None):
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    assert resp.headers.get("x-request-id")
    error = resp.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["type"], str)
    assert error["code"] is None or isinstance(error["code"], str)
    if code:
        assert error["code"] == code
    assert "Traceback" not in resp.text and "<html" not in resp.text.lower()
    return error


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Basic abc"},
        {"Authorization": "Bearer sk-not-a-real-key-000000000000"},
        {"Authorization": "Bearer nonsense"},
    ],
)
@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/unknown/path", "/elsewhere"])
def test_missing_or_bad_key_is_401_before_routing(anon_http, headers, path):
    resp = anon_http.post(path, headers=headers, json={})
    assert_envelope(resp, 401, code="invalid_api_key")


def test_unknown_path_is_404(http):
    assert_envelope(http.get("/v1/does-not-exist"), 404, code="not_found")


def test_wrong_method_is_405(operator_http):
    assert_envelope(operator_http.put("/v1/workspaces", json={}), 405, code="method_not_allowed")


@pytest.mark.parametrize("path", ["/docs", "/v1/schema", "/playground", "/healthz", "/readyz"])
def test_options_on_a_public_page_is_not_a_500(anon_http, path):
    """The Swagger page's OPTIONS once rendered DRF's metadata with an HTML renderer that has
    no template for it: a 500 to anyone, without a key."""
    resp = anon_http.options(path)
    if resp.status_code >= 400:
        assert_envelope(resp, 405, code="method_not_allowed")
        assert "GET" in resp.headers["allow"]
    else:
        assert resp.status_code in (200, 204), resp.text


def test_malformed_json_is_400(operator_http):
    resp = operator_http.post(
        "/v1/workspaces", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert_envelope(resp, 400)


def test_validation_error_names_param(operator_http):
    error = assert_envelope(operator_http.post("/v1/workspaces", json={}), 400)
    assert error["param"] == "name"
    error = assert_envelope(operator_http.get("/v1/workspaces", params={"limit": "0"}), 400)
    assert error["param"] == "limit"


def test_unsupported_media_type_is_415(operator_http):
    resp = operator_http.post(
        "/v1/workspaces", content=b"name=x", headers={"content-type": "text/plain"}
    )
    assert_envelope(resp, 415)


def test_too_large_is_413(operator_http, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    resp = operator_http.post("/v1/workspaces", json={"name": "x" * 5000})
    assert_envelope(resp, 413)


def test_forbidden_is_403(http):
    assert_envelope(http.get("/v1/workspaces"), 403)


def test_unknown_workspace_is_404(operator_http):
    error = assert_envelope(operator_http.get("/v1/workspaces/ws_missing/api_keys"), 404)
    assert error["param"] == "workspace_id"


def test_request_id_is_echoed_or_generated(anon_http):
    resp = anon_http.get("/healthz", headers={"x-request-id": "client-abc-1"})
    assert resp.headers["x-request-id"] == "client-abc-1"
    generated = anon_http.get("/healthz").headers["x-request-id"]
    assert generated.startswith("req_")


def _raising(exc: Exception):
    async def resolve(*args, **kwargs):
        raise exc

    return resolve


@pytest.mark.parametrize(
    ("raised", "status"),
    [
        (RuntimeError("secret detail of a bug"), 500),
        (OperationalError("connection refused, secret"), 503),
    ],
    ids=["bug", "database-down"],
)
def test_a_failing_key_check_on_the_chat_door_is_an_envelope(
    http, settings, monkeypatch, raised, status
):
    # The lean chat door checks the key itself: what escapes that check was uvicorn's
    # plain-text 500 ("Internal Server Error"), which the OpenAI SDKs cannot read.
    settings.ENGRAM_GATEWAY_FAST_PATH = True
    monkeypatch.setattr("completions.asgi.resolve_async", _raising(raised))
    resp = http.post("/v1/chat/completions", json={"model": "local", "messages": []})
    error = assert_envelope(resp, status)
    assert "secret" not in resp.text
    if status == 503:
        assert error["code"] == "database_unavailable"
        assert resp.headers["retry-after"] == "1"
    else:
        assert error["type"] == "server_error"


# Real queries PostgreSQL refuses, by SQLSTATE: the input's fault (no retry helps: a 4xx), a
# value Engram made (a bug: 500), or the connection's (a retry may: 503). Each runs inside a
# request, as a selector's query would.
REFUSED_QUERIES = [
    # 54000: "string is too long for tsvector" (a program limit, psycopg's OperationalError)
    (
        "select string_agg(md5(i::text), ' ')::tsvector from generate_series(1, 40000) i",
        413,
        "too_large",
    ),
    # 22021: "invalid byte sequence for encoding UTF8"; a data exception is no client's input
    # (the doors refuse such input before it is stored) but a value Engram made: a bug, a 500
    ("select convert_from('\\xff'::bytea, 'UTF8')", 500, None),
    # 22P05: "character ... has no equivalent in encoding LATIN1"
    ("select convert_to(chr(20013), 'LATIN1')", 500, None),
    # 57P01: the connection is terminated, a database away: still 503, retried
    ("select pg_terminate_backend(pg_backend_pid())", 503, "database_unavailable"),
]
REFUSED_IDS = ["54000-tsvector", "22021-byte-sequence", "22P05-untranslatable", "57P01-away"]


def _query(sql: str):
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(sql)
        cursor.fetchall()


@pytest.mark.parametrize(("sql", "status", "code"), REFUSED_QUERIES, ids=REFUSED_IDS)
def test_a_query_the_database_refuses_is_the_inputs_4xx_or_a_bugs_500(
    http, monkeypatch, caplog, sql, status, code
):
    """A program limit (class 54) was answered 503 database_unavailable, which the SDKs retry
    though no retry can succeed: it is now the 4xx of the input, in the envelope, with no SQL
    in it, the database's words logged. A data exception (class 22) stays a bug's 500."""
    from memory import selectors

    def refusing(**kwargs):
        _query(sql)

    monkeypatch.setattr(selectors, "conversation_list", refusing)
    with caplog.at_level("WARNING", logger="engram.errors"):
        resp = http.get("/v1/conversations")
    error = assert_envelope(resp, status, code=code)
    assert "select" not in resp.text.lower() and "tsvector" not in resp.text
    assert "sqlstate" not in resp.text.lower()
    if status == 503:
        assert resp.headers["retry-after"] == "1"
    elif status == 500:
        assert error["type"] == "server_error" and "retry-after" not in resp.headers
    else:
        assert error["type"] == "invalid_request_error"
        assert "retry-after" not in resp.headers
        assert any("SQLSTATE" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(("sql", "status", "code"), REFUSED_QUERIES[:2], ids=REFUSED_IDS[:2])
def test_a_query_the_database_refuses_on_the_chat_door_is_answered_alike(
    http, settings, monkeypatch, sql, status, code
):
    """The lean chat door answers the same: its key check's query refused for the input."""
    from asgiref.sync import sync_to_async

    settings.ENGRAM_GATEWAY_FAST_PATH = True

    async def resolve(*args, **kwargs):
        await sync_to_async(_query)(sql)

    monkeypatch.setattr("completions.asgi.resolve_async", resolve)
    resp = http.post("/v1/chat/completions", json={"model": "local", "messages": []})
    assert_envelope(resp, status, code=code)
    assert "select" not in resp.text.lower()
