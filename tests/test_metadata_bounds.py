"""A client's metadata is tags, not documents: at most jsonbody.MAX_METADATA_BYTES as JSON at
every door that stores one (a memory, an imported message, a collection, a document).
Uncapped, an end user's token stored 20 MB on each memory (the request's limit), and every list
page, search and chat turn of that user read it back."""

from __future__ import annotations

import pytest

from config.common.jsonbody import MAX_METADATA_BYTES
from memory.models import Memory, Message
from tests.identity import AUD, ISS, hs256

SECRET = "an-hs256-secret-of-at-least-32-characters"
TOO_BIG = {"blob": "x" * MAX_METADATA_BYTES}
FITS = {"blob": "x" * (MAX_METADATA_BYTES - 100)}


def _refused(response, param: str) -> None:
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and str(MAX_METADATA_BYTES) in error["message"], error


@pytest.fixture
def token(http) -> str:
    body = {"issuer": ISS, "audiences": [AUD], "hs256_secret": SECRET}
    assert http.post("/v1/auth/issuers", json=body).status_code == 201
    return hs256(SECRET, "mona")


def test_a_memory_s_metadata_is_bounded_for_a_key_and_an_end_user(http, engram_server, token):
    import httpx

    _refused(
        http.post("/v1/memories", json={"user_id": "mona", "text": "A", "metadata": TOO_BIG}),
        "metadata",
    )
    with httpx.Client(
        base_url=engram_server.url, headers={"Authorization": f"Bearer {token}"}, timeout=30
    ) as mona:
        _refused(mona.post("/v1/memories", json={"text": "B", "metadata": TOO_BIG}), "metadata")
        created = mona.post("/v1/memories", json={"text": "C", "metadata": FITS})
        assert created.status_code == 201, created.text
        memory_id = created.json()["id"]
        _refused(mona.patch(f"/v1/memories/{memory_id}", json={"metadata": TOO_BIG}), "metadata")
    assert Memory.objects.get(id=memory_id).metadata == FITS


def test_an_imported_message_s_metadata_is_bounded(http):
    message = {"role": "user", "content": "hi", "metadata": TOO_BIG}
    response = http.post(
        "/v1/conversations/c-meta/messages", json={"user_id": "mona", "messages": [message]}
    )
    assert response.status_code == 400, response.text
    assert "metadata" in response.json()["error"]["param"]
    assert str(MAX_METADATA_BYTES) in response.json()["error"]["message"]
    assert not Message.objects.exists()


def test_collections_keep_the_same_bound(http):
    _refused(http.post("/v1/collections", json={"name": "c", "metadata": TOO_BIG}), "metadata")
    assert http.post("/v1/collections", json={"name": "c", "metadata": FITS}).status_code == 201
