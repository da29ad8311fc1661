"""POST /v1/embeddings over HTTP with the official openai SDK: Engram's own embedding model
(its vectors, float and base64), listed in /v1/models, errors in the envelope, scoped to an
end-user token's user and counted against the limits; and the 404s of OpenAI's APIs Engram does
not serve (the Responses API, the legacy completions), which name the Chat Completions API."""

from __future__ import annotations

import base64

import httpx
import numpy as np
import openai
import pytest

from config.common import tokens
from memory.embeddings import get_embedder
from tests.identity import hs256
from tests.test_errors import assert_envelope

MODEL = "all-MiniLM-L6-v2"
TEXTS = ["I keep bees on my roof.", "Berlin", "Der Hund schläft. 🐝"]
SECRET = "an-hs256-secret-of-at-least-32-characters"


def own_vectors(texts: list[str]) -> np.ndarray:
    """What the model itself gives for the texts, one text at a time."""
    return np.stack([get_embedder().embed([text])[0] for text in texts]).astype(np.float32)


def same_vectors(got: np.ndarray, expected: np.ndarray) -> bool:
    """Equal to float32 noise: the default int8 backend embeds one text a run (equal bit for
    bit); the fp32 one pads a batch, which moves a vector by ~1e-7."""
    return got.shape == expected.shape and np.allclose(got, expected, rtol=0, atol=1e-6)


def test_the_sdk_gets_the_models_own_vectors(sdk):
    # The SDK asks for base64 unless told, and decodes it to floats.
    answer = sdk.embeddings.create(model=MODEL, input=TEXTS)
    assert answer.object == "list" and answer.model == MODEL
    assert [d.index for d in answer.data] == [0, 1, 2]
    assert all(d.object == "embedding" for d in answer.data)
    got = np.array([d.embedding for d in answer.data], dtype=np.float32)
    assert got.shape == (3, 384)
    assert same_vectors(got, own_vectors(TEXTS))
    expected_tokens = sum(tokens.count(t) for t in TEXTS)
    assert answer.usage.prompt_tokens == answer.usage.total_tokens == expected_tokens

    one = sdk.embeddings.create(model=MODEL, input="Berlin", encoding_format="float")
    floats = np.array([one.data[0].embedding], dtype=np.float32)
    assert same_vectors(floats, own_vectors(["Berlin"]))
    assert sdk.embeddings.create(model=MODEL, input="Berlin", dimensions=384).data


def test_float_and_base64_carry_the_same_vectors(http):
    floats = http.post("/v1/embeddings", json={"model": MODEL, "input": TEXTS})
    assert floats.status_code == 200, floats.text
    assert floats.headers["content-type"].startswith("application/json")
    coded = http.post(
        "/v1/embeddings", json={"model": MODEL, "input": TEXTS, "encoding_format": "base64"}
    )
    assert coded.status_code == 200, coded.text
    as_floats = np.array([d["embedding"] for d in floats.json()["data"]], dtype=np.float32)
    decoded = np.stack(
        [np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in coded.json()["data"]]
    )
    assert np.array_equal(as_floats, decoded)
    assert same_vectors(decoded, own_vectors(TEXTS))
    assert np.allclose(np.linalg.norm(decoded, axis=1), 1.0, atol=1e-5)


def test_the_embedding_model_is_listed_as_engrams(sdk, http):
    assert sdk.models.retrieve(MODEL).owned_by == "engram"
    listed = {m["id"]: m for m in http.get("/v1/models").json()["data"]}
    assert listed[MODEL]["owned_by"] == "engram"


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({"input": [1, 2, 3]}, "input", "unsupported_value"),
        ({"input": [[1, 2], [3]]}, "input", "unsupported_value"),
        ({"input": 5}, "input", "invalid_type"),
        ({"input": ""}, "input[0]", "invalid_value"),
        ({"input": []}, "input", "invalid_value"),
        ({"input": ["a", None]}, "input[1]", "invalid_type"),
        ({"input": {"text": "a"}}, "input", "invalid_type"),
        ({"input": ["a"] * 2049}, "input", "invalid_value"),
        ({"input": "word " * 9000}, "input[0]", "invalid_value"),
        ({"input": "a", "dimensions": 256}, "dimensions", "unsupported_value"),
        ({"input": "a", "dimensions": True}, "dimensions", "invalid_type"),
        ({"input": "a", "encoding_format": "int8"}, "encoding_format", "invalid_value"),
        ({"input": "a", "user": 7}, "user", "invalid_type"),
        ({"input": "a", "inputs": "b"}, "inputs", "unknown_parameter"),
        ({"model": None, "input": "a"}, "model", "missing_required_parameter"),
        ({"input": "a\x00b"}, "input", "invalid_value"),
        ({"input": ["ok", "\ud800"]}, "input[1]", "invalid_value"),
    ],
)
def test_bad_bodies_are_400s_naming_the_field(http, body, param, code):
    resp = http.post(
        "/v1/embeddings",
        content=httpx_json({"model": MODEL, **body}),
        headers={"content-type": "application/json"},
    )
    error = assert_envelope(resp, 400, code=code)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param, error


def httpx_json(body: dict) -> bytes:
    """The body as JSON with lone surrogates escaped (httpx's json= would fail to encode them)."""
    import json

    return json.dumps(body).encode()


def test_the_sdk_raises_on_engrams_errors(sdk):
    with pytest.raises(openai.NotFoundError) as missing:
        sdk.embeddings.create(model="text-embedding-3-small", input="a")
    assert missing.value.code == "model_not_found"
    assert MODEL in missing.value.message and "not proxy" in missing.value.message
    with pytest.raises(openai.BadRequestError) as arrays:
        sdk.embeddings.create(model=MODEL, input=[[1, 2, 3]])
    assert arrays.value.code == "unsupported_value" and "Token arrays" in arrays.value.message
    with pytest.raises(openai.BadRequestError) as shorter:
        sdk.embeddings.create(model=MODEL, input="a", dimensions=128)
    assert shorter.value.param == "dimensions" and "384" in shorter.value.message


def test_keys_and_end_user_tokens(engram_server, http, anon_http, operator_http):
    assert_envelope(anon_http.post("/v1/embeddings", json={"model": MODEL, "input": "a"}), 401)
    refused = operator_http.post("/v1/embeddings", json={"model": MODEL, "input": "a"})
    assert_envelope(refused, 403, code="workspace_key_required")
    created = http.post(
        "/v1/auth/issuers",
        json={"issuer": "https://hs.example.test", "audiences": ["a"], "hs256_secret": SECRET},
    )
    assert created.status_code == 201, created.text
    token = hs256(SECRET, sub="alice", iss="https://hs.example.test", aud="a")
    with httpx.Client(
        base_url=engram_server.url, headers={"Authorization": f"Bearer {token}"}, timeout=30
    ) as alice:
        own = alice.post("/v1/embeddings", json={"model": MODEL, "input": "a", "user": "alice"})
        assert own.status_code == 200, own.text
        other = alice.post("/v1/embeddings", json={"model": MODEL, "input": "a", "user": "bob"})
        assert assert_envelope(other, 403, code="user_mismatch")["param"] == "user"
        header = alice.post(
            "/v1/embeddings", json={"model": MODEL, "input": "a"}, headers={"x-user-id": "bob"}
        )
        assert assert_envelope(header, 403, code="user_mismatch")["param"] == "x-user-id"


@pytest.mark.usefixtures("limiter_awake")
def test_embeddings_count_against_the_keys_rate_limit(sdk, operator_http, owner, key_id):
    resp = operator_http.patch(
        f"/v1/workspaces/{owner[0].id}/api_keys/{key_id}", json={"limits": {"rpm": 1}}
    )
    assert resp.status_code == 200, resp.text
    first = sdk.embeddings.with_raw_response.create(model=MODEL, input="a")
    assert first.headers["x-ratelimit-limit-requests"] == "1"
    with pytest.raises(openai.RateLimitError) as info:
        sdk.embeddings.create(model=MODEL, input="a")
    assert info.value.code == "rate_limit_exceeded"


@pytest.mark.usefixtures("limiter_awake")
def test_embeddings_count_their_tokens_against_an_end_users_tpm(http, operator_http, owner):
    resp = operator_http.patch(
        f"/v1/workspaces/{owner[0].id}", json={"end_user_limits": {"tpm": 10}}
    )
    assert resp.status_code == 200, resp.text
    long = {"model": MODEL, "input": "one two three four five six seven eight nine ten eleven"}
    too_many = http.post("/v1/embeddings", json=long, headers={"x-user-id": "carol"})
    assert assert_envelope(too_many, 429, code="rate_limit_exceeded")
    assert "end user 'carol'" in too_many.json()["error"]["message"]
    # another user's, and a request without a user, are not carol's
    assert http.post("/v1/embeddings", json=long).status_code == 200


# --- APIs Engram does not serve -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/responses"),
        ("GET", "/v1/responses/resp_123"),
        ("POST", "/api/v1/responses/resp_123/cancel"),
        ("POST", "/v1/completions"),
    ],
)
def test_the_responses_and_legacy_completions_apis_name_chat_completions(http, method, path):
    error = assert_envelope(http.request(method, path, json={}), 404, code="not_found")
    assert "Chat Completions API" in error["message"]
    assert "/v1/chat/completions" in error["message"]


def test_the_sdk_is_told_where_to_go(sdk, http):
    with pytest.raises(openai.NotFoundError) as info:
        sdk.responses.create(model="gpt-4o-mini", input="Hi")
    assert "/v1/chat/completions" in info.value.message
    with pytest.raises(openai.NotFoundError) as legacy:
        sdk.completions.create(model="gpt-4o-mini", prompt="Hi")
    assert "legacy Completions API" in legacy.value.message
    # any other unknown path is still "Unknown path"
    other = assert_envelope(http.post("/v1/completions/x", json={}), 404, code="not_found")
    assert other["message"].startswith("Unknown path: POST /v1/completions/x")
