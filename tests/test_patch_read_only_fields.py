"""A client that GETs an object, edits a field and PATCHes the whole object back: the read-only
fields it sends back as read are ignored, one it changed is a 400 naming it."""

from __future__ import annotations

import pytest

from tests.test_errors import assert_envelope

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_memory_read_edited_and_sent_back_whole_is_updated(http):
    created = http.post("/v1/memories", json={"user_id": "ann", "text": "Likes tea."})
    assert created.status_code == 201, created.text
    read = http.get(f"/v1/memories/{created.json()['id']}").json()

    patched = http.patch(f"/v1/memories/{read['id']}", json={**read, "text": "Likes green tea."})
    assert patched.status_code == 200, patched.text
    assert patched.json()["text"] == "Likes green tea."
    assert patched.json()["created_at"] == read["created_at"]
    # updated_at and sources change by themselves: a stale one is ignored, not refused
    stale = {**patched.json(), "updated_at": 1, "sources": [], "kind": "preference"}
    assert http.patch(f"/v1/memories/{read['id']}", json=stale).status_code == 200


@pytest.mark.parametrize(
    "field, value",
    [("id", "mem_other"), ("user_id", "bob"), ("created_at", 1), ("object", "memory.event")],
)
def test_a_changed_read_only_memory_field_is_a_400_naming_it(http, field, value):
    created = http.post("/v1/memories", json={"user_id": "ann", "text": "Likes tea."}).json()
    read = http.get(f"/v1/memories/{created['id']}").json()
    changed = {**read, "text": "Likes coffee.", field: value}
    error = assert_envelope(http.patch(f"/v1/memories/{read['id']}", json=changed), 400)
    assert (error["param"], error["code"]) == (field, "read_only_field")
    assert http.get(f"/v1/memories/{read['id']}").json()["text"] == "Likes tea."


def test_a_collection_read_edited_and_sent_back_whole_is_updated(http):
    created = http.post("/v1/collections", json={"name": "Handbook"})
    assert created.status_code == 201, created.text
    read = http.get(f"/v1/collections/{created.json()['id']}").json()
    patched = http.patch(f"/v1/collections/{read['id']}", json={**read, "name": "Manual"})
    assert patched.status_code == 200, patched.text
    assert patched.json()["name"] == "Manual"

    moved = {**read, "name": "Other", "created_at": read["created_at"] + 60}
    error = assert_envelope(http.patch(f"/v1/collections/{read['id']}", json=moved), 400)
    assert (error["param"], error["code"]) == ("created_at", "read_only_field")
    assert http.get(f"/v1/collections/{read['id']}").json()["name"] == "Manual"
