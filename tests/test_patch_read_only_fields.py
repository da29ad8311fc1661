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


def test_an_agent_read_edited_and_sent_back_whole_is_updated(http):
    created = http.post("/v1/agents", json={"name": "support", "model": "gpt-4o-mini"})
    assert created.status_code == 201, created.text
    read = http.get(f"/v1/agents/{created.json()['id']}").json()
    edited = {**read, "instructions": "Answer in French."}
    patched = http.patch(f"/v1/agents/{read['id']}", json=edited)
    assert patched.status_code == 200, patched.text
    assert patched.json()["instructions"] == "Answer in French."
    assert (patched.json()["version"], patched.json()["name"]) == (read["version"] + 1, "support")

    for field, value in (("id", "agt_other"), ("version", 7), ("created_at", 1)):
        changed = {**patched.json(), "instructions": "Answer in German.", field: value}
        error = assert_envelope(http.patch(f"/v1/agents/{read['id']}", json=changed), 400)
        assert (error["param"], error["code"]) == (field, "read_only_field")
    assert http.get(f"/v1/agents/{read['id']}").json()["instructions"] == "Answer in French."


def test_a_tool_read_edited_and_sent_back_whole_is_updated(http):
    from completions.tools import services
    from completions.tools.models import Tool

    agent = http.post("/v1/agents", json={"name": "helper", "model": "gpt-4o-mini"}).json()["id"]
    body = {
        "name": "weather",
        "description": "Look something up.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        "type": "http",
        "http": {
            "url": "https://tools.example.com/weather",
            "method": "POST",
            "headers": {"X-Tool-Secret": "s3cret-value"},
        },
    }
    created = http.post(f"/v1/agents/{agent}/tools", json=body)
    assert created.status_code == 201, created.text
    path = f"/v1/agents/{agent}/tools/{created.json()['id']}"
    read = http.get(path).json()
    patched = http.patch(path, json={**read, "description": "The weather of a city."})
    assert patched.status_code == 200, patched.text
    assert patched.json()["description"] == "The weather of a city."
    tool = Tool.objects.get(id=read["id"])  # the masked header sent back kept its value
    assert services.headers_of(tool) == {"X-Tool-Secret": "s3cret-value"}

    for field, value in (("id", "tool_other"), ("agent_id", "agt_other"), ("created_at", 1)):
        changed = {**patched.json(), "description": "Changed.", field: value}
        error = assert_envelope(http.patch(path, json=changed), 400)
        assert (error["param"], error["code"]) == (field, "read_only_field")
    assert http.get(path).json()["description"] == "The weather of a city."
