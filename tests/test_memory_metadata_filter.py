"""GET /v1/memories?metadata=: the memories whose metadata holds the given keys and values, as
mem0's and Zep's metadata filters select a user's facts by the client's own tags (a client
moving over had to list every memory and filter them itself). Combined with the other filters
and paged by the same cursors; a value that is no JSON object is a 400 naming `metadata`."""

from __future__ import annotations

import json

import pytest


def _add(http, text, metadata, user="mo"):
    body = {"user_id": user, "text": text, "metadata": metadata}
    response = http.post("/v1/memories", json=body)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def _listed(http, **params) -> list[str]:
    response = http.get("/v1/memories", params={"user_id": "mo", **params})
    assert response.status_code == 200, response.text
    return [m["text"] for m in response.json()["data"]]


def test_metadata_keeps_the_memories_holding_those_keys_and_values(http):
    _add(http, "Prefers window seats.", {"source": "crm", "tier": 2, "tags": ["travel", "vip"]})
    _add(http, "Is vegetarian.", {"source": "crm", "tier": 1})
    _add(http, "Lives in Porto.", {"source": "chat", "place": {"city": "Porto", "cc": "PT"}})
    _add(http, "Has a cat.", {})
    _add(http, "Works in Porto too.", {"source": "crm"}, user="other")

    assert _listed(http, metadata=json.dumps({"source": "crm"})) == [
        "Is vegetarian.",
        "Prefers window seats.",
    ]
    assert _listed(http, metadata='{"source": "crm", "tier": 2}') == ["Prefers window seats."]
    assert _listed(http, metadata='{"tags": ["vip"]}') == ["Prefers window seats."]
    assert _listed(http, metadata='{"place": {"city": "Porto"}}') == ["Lives in Porto."]
    assert _listed(http, metadata='{"tier": "2"}') == []  # a string is not the number
    assert _listed(http, metadata="{}") == _listed(http)  # no condition
    assert _listed(http, metadata='{"source": "crm"}', kind="preference") == []
    page = http.get(
        "/v1/memories", params={"user_id": "mo", "metadata": '{"source":"crm"}', "limit": 1}
    ).json()
    assert [m["text"] for m in page["data"]] == ["Is vegetarian."] and page["has_more"]
    rest = _listed(http, metadata='{"source":"crm"}', after=page["last_id"])
    assert rest == ["Prefers window seats."]


@pytest.mark.parametrize(
    "raw", ["crm", '["crm"]', '"crm"', "{bad json", '{"a": NaN}', '{"a": "\\u0000"}']
)
def test_metadata_that_is_no_json_object_is_a_400_naming_it(http, raw):
    response = http.get("/v1/memories", params={"user_id": "mo", "metadata": raw})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"].startswith("metadata")
