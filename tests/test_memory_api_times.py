"""Times the memory APIs show are Unix seconds rounded down, as every clock reads them: a message
imported at 1969-12-31T23:59:59.5Z said 0 (1970-01-01), a second and a year late."""

from __future__ import annotations

from tests.test_conversations import wait_processed


def test_a_message_said_before_1970_shows_the_second_it_was_said_in(http, celery_worker, settings):
    settings.OPENAI_BASE_URL = ""  # the offline extractor
    said = [
        {"role": "user", "content": "I watched the moon landing in Houston.", "created_at": t}
        for t in ("1969-12-31T23:59:59.5Z", -0.25)
    ]
    imported = http.post(
        "/v1/conversations/c-1969/messages", json={"user_id": "old", "messages": said}
    )
    assert imported.status_code == 201, imported.text
    assert [m["created_at"] for m in imported.json()["data"]] == [-1, -1]
    listed = http.get("/v1/conversations/c-1969/messages").json()["data"]
    assert [m["created_at"] for m in listed] == [-1, -1]
    assert http.get(f"/v1/messages/{listed[0]['id']}").json()["created_at"] == -1

    wait_processed(http, "c-1969")
    found = http.post(
        "/v1/search", json={"user_id": "old", "query": "moon landing Houston"}
    ).json()["data"]
    assert found and all(item["created_at"] == -1 for item in found if item["type"] == "message")
    memories = http.get("/v1/memories", params={"user_id": "old"}).json()["data"]
    sources = [s for m in memories for s in m["sources"]]
    assert sources and all(s["created_at"] == -1 for s in sources)
    exported = http.get("/v1/users/old/export").json()
    assert [m["created_at"] for m in exported["conversations"][0]["messages"]] == [-1, -1]
