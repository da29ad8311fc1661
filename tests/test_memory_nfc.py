"""Text typed with combining accents (NFD: macOS, some keyboards, PDF extractors) is the text
typed composed (NFC): a memory saying "café" was not found by a query typed "cafe" + U+0301 on
the full-text side, and the same fact added in each form was stored twice."""

from __future__ import annotations

import unicodedata

NFC = "Alice loves the café on Rue Cler."
NFD = unicodedata.normalize("NFD", NFC)
assert NFC != NFD


def _search(http, query: str, **body) -> list[dict]:
    resp = http.post("/v1/memories/search", json={"user_id": "alice", "query": query, **body})
    assert resp.status_code == 200, resp.text
    return resp.json()["data"]


def test_a_decomposed_query_finds_a_composed_memory_by_its_words(http):
    added = http.post("/v1/memories", json={"user_id": "alice", "text": NFC})
    assert added.status_code == 201, added.text
    http.post("/v1/memories", json={"user_id": "alice", "text": "Alice owns a red bicycle."})

    for query in (unicodedata.normalize("NFD", "café"), "café"):
        hits = _search(http, query)
        assert hits[0]["id"] == added.json()["id"]
        assert "full-text rank 1" in hits[0]["why"], hits[0]["why"]

    unified = http.post(
        "/v1/search",
        json={
            "user_id": "alice",
            "query": unicodedata.normalize("NFD", "café"),
            "types": ["memories"],
        },
    ).json()["data"]
    assert unified[0]["id"] == added.json()["id"] and "full-text rank" in unified[0]["why"]


def test_a_decomposed_memory_is_stored_composed_and_found_by_a_composed_query(http):
    added = http.post("/v1/memories", json={"user_id": "alice", "text": NFD})
    assert added.status_code == 201, added.text
    assert added.json()["text"] == NFC
    assert http.get(f"/v1/memories/{added.json()['id']}").json()["text"] == NFC

    hits = _search(http, "café")
    assert hits[0]["id"] == added.json()["id"] and "full-text rank 1" in hits[0]["why"]


def test_the_same_fact_in_either_form_is_one_memory(http):
    first = http.post("/v1/memories", json={"user_id": "alice", "text": NFC})
    assert first.status_code == 201, first.text
    again = http.post("/v1/memories", json={"user_id": "alice", "text": NFD})
    assert again.status_code == 200, again.text  # the memory that already says it
    assert again.json()["id"] == first.json()["id"]

    # an edit to the same text typed decomposed changes nothing and records nothing
    url = f"/v1/memories/{first.json()['id']}"
    assert http.patch(url, json={"text": NFD}).json()["text"] == NFC
    history = http.get(f"{url}/history").json()["data"]
    assert [e["event"] for e in history] == ["ADD"]
    listed = http.get("/v1/memories", params={"user_id": "alice"}).json()["data"]
    assert [m["text"] for m in listed] == [NFC]


def test_a_decomposed_message_is_found_by_its_composed_words(http):
    stored = http.post(
        "/v1/conversations/trip/messages",
        json={
            "user_id": "alice",
            "messages": [
                {
                    "role": "user",
                    "content": unicodedata.normalize("NFD", "Meet me at the café in München."),
                }
            ],
        },
    )
    assert stored.status_code == 201, stored.text
    found = http.post(
        "/v1/search",
        json={"user_id": "alice", "query": "München", "types": ["messages"]},
    ).json()["data"]
    assert found and "full-text rank 1" in found[0]["why"], found
    # the transcript stays as it was sent
    listed = http.get("/v1/conversations/trip/messages").json()["data"]
    assert listed[0]["content"] == unicodedata.normalize("NFD", "Meet me at the café in München.")


def test_the_length_limit_holds_for_the_text_as_stored(http):
    """U+0958 composes to two code points (it is excluded from composition): 4,000 of them were
    accepted under the 4,000-character limit and stored as 8,000."""
    text = "\u0958" * 4000
    assert len(unicodedata.normalize("NFC", text)) == 8000
    resp = http.post("/v1/memories", json={"user_id": "alice", "text": text})
    assert resp.status_code == 400 and resp.json()["error"]["param"] == "text", resp.text
    fits = http.post("/v1/memories", json={"user_id": "alice", "text": "\u0958" * 2000})
    assert fits.status_code == 201 and len(fits.json()["text"]) == 4000
