"""POST /v1/memories with `memories`: many memories in one request (a restored export, a move
from another memory store), validated all or nothing, de-duplicated as single adds are."""

from __future__ import annotations

import pytest

from memory.models import Memory, MemoryEvent
from memory.serializers import MAX_IMPORT_MEMORIES
from tests.test_errors import assert_envelope

pytestmark = pytest.mark.django_db(transaction=True)


def _texts(http, user: str) -> list[str]:
    response = http.get("/v1/memories", params={"user_id": user, "limit": 100})
    assert response.status_code == 200, response.text
    return sorted(m["text"] for m in response.json()["data"])


def test_an_export_is_restored_in_one_request_with_its_dates(http):
    for text in ("Likes tea.", "Lives in Porto."):
        assert http.post("/v1/memories", json={"user_id": "ann", "text": text}).status_code == 201
    exported = http.get("/v1/users/ann/export").json()["memories"]
    assert len(exported) == 2

    restored = http.post("/v1/memories", json={"user_id": "bea", "memories": exported})
    assert restored.status_code == 201, restored.text
    body = restored.json()
    assert body["object"] == "list" and body["created"] == 2
    assert [m["text"] for m in body["data"]] == [m["text"] for m in exported]
    assert {m["user_id"] for m in body["data"]} == {"bea"}
    assert [m["created_at"] for m in body["data"]] == [m["created_at"] for m in exported]
    assert _texts(http, "bea") == ["Likes tea.", "Lives in Porto."]
    assert MemoryEvent.objects.filter(user_id="bea", event="ADD").count() == 2
    found = http.post("/v1/memories/search", json={"user_id": "bea", "query": "tea"})
    assert found.json()["data"][0]["text"] == "Likes tea."

    # sent again (a retry): nothing stored twice, the same memories answered
    again = http.post("/v1/memories", json={"user_id": "bea", "memories": exported})
    assert again.status_code == 200, again.text
    assert again.json()["created"] == 0
    assert [m["id"] for m in again.json()["data"]] == [m["id"] for m in body["data"]]
    assert Memory.objects.filter(user_id="bea").count() == 2


def test_duplicates_within_one_import_and_of_stored_memories_are_one_memory(http):
    first = http.post("/v1/memories", json={"user_id": "ann", "text": "Likes tea."}).json()
    items = [
        {"text": "likes tea"},  # the stored one, case and end punctuation aside
        {"text": "Owns a bike.", "metadata": {"source": "crm"}},
        {"text": "Owns a bike", "metadata": {"source": "crm"}},  # the one above
        {"text": "Owns a bike.", "kind": "preference"},  # another kind: another memory
    ]
    response = http.post("/v1/memories", json={"user_id": "ann", "memories": items})
    assert response.status_code == 201, response.text
    data = response.json()["data"]
    assert response.json()["created"] == 2
    assert data[0]["id"] == first["id"]
    assert data[1]["id"] == data[2]["id"] != data[3]["id"]
    assert Memory.objects.filter(user_id="ann").count() == 3


@pytest.mark.parametrize(
    "bad, param",
    [
        ({"text": ""}, "memories[2].text"),
        ({"text": "ok", "kind": "nonsense"}, "memories[2].kind"),
        ({"text": "ok", "colour": "red"}, "memories[2].colour"),
        ({"text": "ok", "created_at": "soon"}, "memories[2].created_at"),
        ("just a string", "memories[2]"),
    ],
)
def test_one_bad_item_is_a_400_naming_it_and_nothing_is_stored(http, bad, param):
    items = [{"text": "Likes tea."}, {"text": "Lives in Porto."}, bad]
    error = assert_envelope(
        http.post("/v1/memories", json={"user_id": "ann", "memories": items}), 400
    )
    assert error["param"] == param, error
    assert Memory.objects.filter(user_id="ann").count() == 0


@pytest.mark.parametrize(
    "memories",
    [[], "Likes tea.", [{"text": "x"}] * (MAX_IMPORT_MEMORIES + 1)],
)
def test_an_empty_or_oversized_import_is_a_400_naming_memories(http, memories):
    error = assert_envelope(
        http.post("/v1/memories", json={"user_id": "ann", "memories": memories}), 400
    )
    assert error["param"] == "memories"
    assert Memory.objects.filter(user_id="ann").count() == 0


def test_the_import_is_in_the_openapi_schema(anon_http):
    schema = anon_http.get("/v1/schema", params={"format": "json"}).json()
    body = schema["paths"]["/v1/memories"]["post"]["requestBody"]["content"]["application/json"]
    components = schema["components"]["schemas"]
    either = components[body["schema"]["$ref"].rsplit("/", 1)[-1]]
    names = {ref["$ref"].rsplit("/", 1)[-1] for ref in either["oneOf"]}
    assert names == {"MemoryCreateInputRequest", "MemoryImportInputRequest"}
    imported = components["MemoryImportInputRequest"]["properties"]["memories"]
    assert imported["type"] == "array"
    assert f"At most {MAX_IMPORT_MEMORIES:,} memories" in imported["description"]


def test_a_memory_posted_with_its_past_time_is_indexed_under_that_day(http):
    """A memory's search text (and its vector) carries the day it was learned: its
    `created_at` when the client gives one (a restored export, a move from another store). An
    import and a single add labelled it with the day of the request: "in March" found it not."""
    import numpy as np

    from memory.embeddings import get_embedder

    single = http.post(
        "/v1/memories",
        json={"user_id": "cal", "text": "Moved to Lisbon.", "created_at": "2024-03-05T10:00:00Z"},
    )
    assert single.status_code == 201, single.text
    imported = http.post(
        "/v1/memories",
        json={
            "user_id": "cal",
            "memories": [
                {"text": "Likes figs.", "created_at": "2023-11-20T08:30:00Z"},
                {"text": "Plays oboe.", "created_at": "2022-01-02T23:00:00Z"},
            ],
        },
    )
    assert imported.status_code == 201, imported.text
    labels = {
        "Moved to Lisbon.": "[5 March 2024] Moved to Lisbon.",
        "Likes figs.": "[20 November 2023] Likes figs.",
        "Plays oboe.": "[2 January 2022] Plays oboe.",
    }
    for memory in Memory.objects.filter(user_id="cal"):
        assert memory.search_text == labels[memory.text]
        assert np.allclose(
            np.asarray(memory.embedding), get_embedder().embed_one(memory.search_text), atol=1e-6
        )
    assert Memory.objects.filter(user_id="cal").count() == 3
