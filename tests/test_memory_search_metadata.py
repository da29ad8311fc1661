"""POST /v1/memories/search and POST /v1/search take `metadata`, as GET /v1/memories does: the
memories whose metadata holds its keys and values, in the SQL of both sides of the ranking (a
memory it keeps that ranked below the candidates it leaves out is still found); a value that is
no JSON object is a 400 naming `metadata`."""

from __future__ import annotations

import pytest

from tests.test_errors import assert_envelope

pytestmark = pytest.mark.django_db(transaction=True)


def _add(http, text, metadata, user="mo"):
    body = {"user_id": user, "text": text, "metadata": metadata}
    response = http.post("/v1/memories", json=body)
    assert response.status_code == 201, response.text


@pytest.fixture
def tagged(http):
    # many memories about tea from the chat, one from the crm that ranks below all of them
    for i in range(60):
        _add(http, f"Drinks green tea number {i} with tea friends.", {"source": "chat"})
    _add(http, "Ordered a tea kettle.", {"source": "crm", "tier": 2})
    _add(http, "Ordered a tea set.", {"source": "crm", "tier": 1}, user="other")


@pytest.mark.parametrize("path", ["/v1/memories/search", "/v1/search"])
def test_metadata_keeps_the_memories_holding_it_however_they_rank(http, tagged, path):
    body = {"user_id": "mo", "query": "green tea with friends", "limit": 5}
    unfiltered = http.post(path, json=body).json()["data"]
    assert "Ordered a tea kettle." not in [r["text"] for r in unfiltered]
    response = http.post(path, json={**body, "metadata": {"source": "crm"}})
    assert response.status_code == 200, response.text
    found = [r for r in response.json()["data"] if r.get("type", "memory") == "memory"]
    assert [r["text"] for r in found] == ["Ordered a tea kettle."]
    none = http.post(path, json={**body, "metadata": {"source": "crm", "tier": 1}}).json()
    assert [r for r in none["data"] if r.get("type", "memory") == "memory"] == []
    every = http.post(path, json={**body, "metadata": {}}).json()["data"]
    assert [r["id"] for r in every] == [r["id"] for r in unfiltered]


@pytest.mark.parametrize("path", ["/v1/memories/search", "/v1/search"])
@pytest.mark.parametrize("value", ["crm", ["crm"], 5, True])
def test_metadata_that_is_no_json_object_is_a_400_naming_it(http, path, value):
    body = {"user_id": "mo", "query": "tea", "metadata": value}
    error = assert_envelope(http.post(path, json=body), 400)
    assert error["param"].startswith("metadata")
