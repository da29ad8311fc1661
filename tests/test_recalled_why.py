"""Why a memory was used, as the answer says it over HTTP: a memory that shares no word with the
question and is under the similarity floor reaches the context as one of the nearest by meaning
(Semantic recall), and its `why` now says so. It said only "vector rank 1 (similarity 0.07);
recency rank 4; blended score 0.0633", and a negative score read as a mistake."""

from __future__ import annotations

FACTS = [
    "User is allergic to peanuts.",
    "User lives in Berlin.",
    "User loves jazz.",
    "User works at Initech.",
]


def test_a_memory_kept_as_nearest_by_meaning_says_so_in_its_why(http):
    for text in FACTS:
        assert http.post("/v1/memories", json={"user_id": "pat", "text": text}).status_code == 201
    response = http.post(
        "/v1/chat/completions",
        headers={"x-user-id": "pat", "x-conversation-id": "meals"},
        json={
            "model": "local",
            "messages": [{"role": "user", "content": "Which dishes are unsafe for me? Berlin"}],
        },
    )
    assert response.status_code == 200, response.text
    used = {m["line"].split("] ", 1)[1]: m["why"] for m in response.json()["engram"]["memories"]}
    nearest = "nearest by meaning, with no word in common and below the similarity floor"
    assert nearest in used["User is allergic to peanuts."]
    assert "full-text rank 1" in used["User lives in Berlin."]  # a word match: kept for it
    assert nearest not in used["User lives in Berlin."]
    # the stored answer's `recalled` keeps the same reason
    answer = http.get("/v1/conversations/meals/messages").json()["data"][-1]
    by_id = {m["id"]: m for m in response.json()["engram"]["memories"]}
    recalled = {r["id"]: r["why"] for r in answer["recalled"] if r["type"] == "memory"}
    assert {by_id[i]["line"]: why for i, why in recalled.items()} == {
        m["line"]: m["why"] for m in by_id.values()
    }
