"""The same hostile input gets the same answer from every door that takes a chat request: the lean
ASGI door and the Django view to /v1/chat/completions, and /v1/context. Header rules live in
completions.request; domain errors become envelopes in config.common.errors.api_error."""

import json

import pytest

from memory.models import Collection
from memory.services import conversation_get_or_create
from tests.test_errors import assert_envelope

BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]}


@pytest.fixture(params=["asgi", "django", "context"])
def door(request, settings):
    """A function posting BODY with `headers` through one door."""
    settings.ENGRAM_GATEWAY_FAST_PATH = request.param == "asgi"
    path = "/v1/context" if request.param == "context" else "/v1/chat/completions"

    def post(http, headers, content: bytes | None = None):
        if content is None:
            return http.post(path, json=BODY, headers=headers)
        return http.post(
            path, content=content, headers={"content-type": "application/json", **headers}
        )

    return post


def _ids(ids: list[str]) -> dict[str, str]:
    return {"x-collection-ids": json.dumps(ids)}


HOSTILE = [
    ("long-user-id", lambda ws: {"x-user-id": "u" * 300}, 400, "x-user-id"),
    ("21-collections", lambda ws: _ids([f"col_{i}" for i in range(21)]), 400, "x-collection-ids"),
    ("not-json", lambda ws: {"x-collection-ids": "col_a,col_b"}, 400, "x-collection-ids"),
    ("nul-in-id", lambda ws: _ids(["col_\x00a"]), 400, "x-collection-ids"),
    ("201-char-id", lambda ws: _ids(["c" * 201]), 400, "x-collection-ids"),
    ("foreign-workspace", lambda ws: {"x-workspace-id": ws.id}, 403, "x-workspace-id"),
]


@pytest.mark.parametrize(
    ("headers", "status", "param"), [case[1:] for case in HOSTILE], ids=[c[0] for c in HOSTILE]
)
def test_hostile_headers_get_one_answer(door, http, outsider, upstream, headers, status, param):
    error = assert_envelope(door(http, {"x-user-id": "u", **headers(outsider[0])}), status)
    assert error["param"] == param
    assert upstream.chat_requests() == []


REPEATED = [
    ("x-user-id", [("x-user-id", "alice"), ("x-user-id", "bob")]),
    ("x-conversation-id", [("x-conversation-id", "c1"), ("x-conversation-id", "c2")]),
    ("x-session-id", [("x-session-id", "s1"), ("x-session-id", "s2")]),
    ("x-collection-ids", [("x-collection-ids", "[]"), ("x-collection-ids", "[]")]),
]


@pytest.mark.parametrize(("param", "headers"), REPEATED, ids=[case[0] for case in REPEATED])
def test_a_header_sent_twice_gets_one_answer(door, http, upstream, param, headers):
    """Django joins a repeated header's values with commas (which no id has: a 400); the ASGI
    door kept the last value and answered 200, for another user than the first header named."""
    error = assert_envelope(door(http, headers), 400)
    assert error["param"] == param
    assert upstream.chat_requests() == []


def test_x_collection_ids_sent_twice_says_so(door, http, upstream):
    """Two x-collection-ids headers, each a JSON array, were told "must be a JSON array": the
    answer now says the header was given more than once."""
    headers = [("x-collection-ids", '["col_a"]'), ("x-collection-ids", '["col_b"]')]
    error = assert_envelope(door(http, [("x-user-id", "u"), *headers]), 400, code="invalid_value")
    assert error["param"] == "x-collection-ids"
    assert "more than once" in error["message"], error
    assert upstream.chat_requests() == []
    # one header that is not an array is still told what the header must be
    error = assert_envelope(door(http, {"x-collection-ids": "col_a,col_b"}), 400)
    assert "must be a JSON array" in error["message"], error


def test_a_repeated_collection_id_counts_once(door, http, owner, upstream):
    """20 distinct ids, each sent twice (40 entries): 20 collections, not over the limit of
    20 (the header counted entries, then de-duplicated); 21 distinct ids are still refused."""
    collection = Collection.objects.create(workspace=owner[0], name="Manual")
    ids = [collection.id, *(f"col_{i}" for i in range(19))]
    resp = door(http, {"x-user-id": "u", **_ids(ids + ids)})
    error = assert_envelope(resp, 404, code="collection_not_found")  # looked up, not counted out
    assert "col_0" in error["message"], error
    resp = door(http, {"x-user-id": "u", **_ids([collection.id] * 21)})
    assert resp.status_code == 200, resp.text
    error = assert_envelope(door(http, _ids([*ids, "col_19", "col_19"])), 400)
    assert error["message"].endswith("At most 20 collection ids."), error


def test_a_second_authorization_header_is_no_way_around_the_first(door, http, owner, upstream):
    """A proxy that checks the first Authorization header saw a bad key; the ASGI door used
    the last, the Django doors refused: every door refuses the pair."""
    headers = [("authorization", "Bearer sk-not-a-key"), ("authorization", f"Bearer {owner[1]}")]
    assert_envelope(door(http, headers), 401, code="invalid_api_key")
    assert upstream.chat_requests() == []


def test_unknown_or_foreign_collection_is_one_404(door, http, outsider, upstream):
    theirs = Collection.objects.create(workspace=outsider[0], name="Theirs")
    for cid in ("col_nope", theirs.id):
        resp = door(http, {"x-user-id": "u", **_ids([cid])})
        error = assert_envelope(resp, 404, code="collection_not_found")
        assert error["param"] == "x-collection-ids" and cid in error["message"]
    assert upstream.chat_requests() == []


def test_another_users_conversation_is_403_naming_the_header(door, http, owner, upstream):
    # by Engram's conv_ id: a client's own id is each user's (bob's "alices" is his own)
    alices, _ = conversation_get_or_create(
        workspace=owner[0], external_id="alices", user_id="alice"
    )
    resp = door(http, {"x-user-id": "bob", "x-conversation-id": alices.id})
    error = assert_envelope(resp, 403, code="forbidden")
    assert error["type"] == "permission_error" and error["param"] == "x-conversation-id"
    assert upstream.chat_requests() == []


@pytest.mark.parametrize(
    ("path", "param", "code"),
    [
        ("/v1/memories/mem_nope", "memory_id", "not_found"),
        ("/v1/memories/mem_nope/history", "memory_id", "not_found"),
        ("/v1/conversations/conv_nope", "conversation_id", "not_found"),
        ("/v1/collections/col_nope", "collection_id", "collection_not_found"),
    ],
)
def test_rest_apis_name_the_missing_url_id(http, path, param, code):
    error = assert_envelope(http.get(path), 404, code=code)
    assert error["param"] == param and "_nope" in error["message"]


def test_rest_apis_name_the_domain_field(http, owner):
    alices, _ = conversation_get_or_create(
        workspace=owner[0], external_id="alices", user_id="alice"
    )
    resp = http.post(
        f"/v1/conversations/{alices.id}/messages",
        json={"user_id": "bob", "messages": [{"role": "user", "content": "mine now"}]},
    )
    error = assert_envelope(resp, 403, code="forbidden")
    assert error["param"] == "conversation_id"
    col = http.post("/v1/collections", json={"name": "c"}).json()
    resp = http.get(f"/v1/collections/{col['id']}/documents/doc_nope")
    error = assert_envelope(resp, 404, code="document_not_found")
    assert error["param"] == "document_id"


HOSTILE_BODIES = [
    (
        "nul-in-content",
        rb'{"model":"m","messages":[{"role":"user","content":"a\u0000b"}]}',
        "messages[0].content",
    ),
    (
        "lone-surrogate",
        rb'{"model":"m","messages":[{"role":"user","content":"\ud800x"}]}',
        "messages[0].content",
    ),
    (
        "surrogate-model",
        rb'{"model":"\udc00","messages":[{"role":"user","content":"hi"}]}',
        "model",
    ),
    (
        "nul-in-metadata-key",
        rb'{"model":"m","messages":[{"role":"user","content":"hi"}],"metadata":{"k\u0000":"v"}}',
        'metadata["k\\u0000"]',  # escaped: the envelope never echoes a NUL back
    ),
    ("deep-json", b"[" * 100_000 + b"]" * 100_000, None),
]


@pytest.mark.parametrize(
    ("content", "param"), [c[1:] for c in HOSTILE_BODIES], ids=[c[0] for c in HOSTILE_BODIES]
)
@pytest.mark.parametrize("user", [{"x-user-id": "u"}, {}], ids=["with-user", "no-user"])
def test_unstorable_bodies_are_400_naming_the_field(door, http, upstream, content, param, user):
    error = assert_envelope(door(http, user, content), 400)
    assert error["param"] == param
    assert upstream.chat_requests() == []


def test_an_escaped_surrogate_pair_is_an_ordinary_character(door, http, upstream):
    content = rb'{"model":"local","messages":[{"role":"user","content":"smile \ud83d\ude00"}]}'
    resp = door(http, {"x-user-id": "u"}, content)
    assert resp.status_code == 200, resp.text
