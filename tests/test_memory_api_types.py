"""The memory and search bodies take the types the OpenAPI document gives them: a number where a
string is asked (or a string where an integer is) is a 400 naming the field, never converted."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize(
    ("method", "path", "body", "param"),
    [
        ("post", "/v1/memories", {"user_id": "u", "text": 0}, "text"),
        ("post", "/v1/memories", {"user_id": "u", "text": 1.5}, "text"),
        ("post", "/v1/memories/search", {"user_id": "u", "query": 0}, "query"),
        ("post", "/v1/memories/search", {"user_id": "u", "query": "tea", "limit": "10"}, "limit"),
        ("post", "/v1/search", {"user_id": "u", "query": 42}, "query"),
        ("post", "/v1/search", {"user_id": "u", "query": "tea", "limit": "5"}, "limit"),
    ],
)
def test_a_number_is_no_string_and_a_string_no_number(http, method, path, body, param):
    response = http.request(method, path, json=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param
    assert http.get("/v1/memories", params={"user_id": "u"}).json()["data"] == []


def test_an_edit_to_a_number_is_refused_and_the_text_kept(http):
    memory = http.post("/v1/memories", json={"user_id": "u", "text": "U likes tea."}).json()
    response = http.patch(f"/v1/memories/{memory['id']}", json={"text": 7})
    assert response.status_code == 400 and response.json()["error"]["param"] == "text"
    assert http.get(f"/v1/memories/{memory['id']}").json()["text"] == "U likes tea."


def test_an_imported_messages_name_is_a_string(http):
    response = http.post(
        "/v1/conversations/c-types/messages",
        json={"user_id": "u", "messages": [{"role": "user", "content": "Hi", "name": 5}]},
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "messages[0].name"


@pytest.mark.parametrize("path", ["/v1/memories", "/v1/conversations"])
def test_an_empty_user_id_narrows_a_list_to_no_user_rather_than_to_every_user(http, path):
    # `?user_id=` (a client's unset variable) listed every user's memories and conversations,
    # as a misspelt `?userid=` did before it was refused; the OpenAPI id is 1-200 characters.
    for user in ("alice", "bob"):
        http.post("/v1/memories", json={"user_id": user, "text": f"{user} likes tea."})
        http.post(
            f"/v1/conversations/c-{user}/messages",
            json={"user_id": user, "messages": [{"role": "user", "content": "Hi"}]},
        )
    response = http.get(path, params={"user_id": ""})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "user_id"
    assert len(http.get(path).json()["data"]) == 2  # no user_id at all: the workspace's
