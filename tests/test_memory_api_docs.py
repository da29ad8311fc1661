"""The OpenAPI document says what the memory and conversation lists do."""

from __future__ import annotations


def test_the_messages_order_is_documented_as_said_oldest_first(http):
    # It said "By id (default desc)", the lists' words; a conversation reads oldest first, by
    # the time each message was said (an import's created_at), its id breaking ties.
    schema = http.get("/v1/schema", params={"format": "json"}).json()
    parameters = schema["paths"]["/v1/conversations/{conversation_id}/messages"]["get"]
    order = next(p for p in parameters["parameters"] if p["name"] == "order")
    assert order["schema"]["default"] == "asc" and "created_at" in order["description"]
    said = [
        {"role": "user", "content": text, "created_at": when}
        for text, when in (("second", 1700000100), ("first", 1700000000))
    ]
    http.post("/v1/conversations/c-doc/messages", json={"user_id": "u", "messages": said})
    listed = http.get("/v1/conversations/c-doc/messages").json()["data"]
    assert [m["content"] for m in listed] == ["first", "second"]
