"""A very long message (a pasted log or document) is stored and searched like any other, over
HTTP: PostgreSQL refuses a tsvector whose lexemes pass 1 MB, and the generated full-text column
of its row made the turn or the import storing it a 503, which every retry met again."""

from __future__ import annotations

from tests.test_conversations import wait_processed


def _pasted(pairs: int) -> str:
    """CJK characters joined by hyphens: ~5.7 bytes of lexemes a character (each pair is three
    lexemes), the worst ratio measured; 60,000 pairs are 1.37 MB of them."""
    return " ".join(f"{chr(0x4E00 + i % 20000)}-{chr(0x20000 + i)}" for i in range(pairs))


def test_an_imported_message_past_the_full_text_limit_is_stored_and_indexed(
    http, celery_worker, settings
):
    settings.OPENAI_BASE_URL = ""  # the offline extractor
    long = "Lighthouse keepers log. " + _pasted(60_000)  # 1.37 MB of lexemes
    messages = [
        {"role": "user", "content": "I keep a lighthouse on the northern cape."},
        {"role": "user", "content": long},
        {"role": "assistant", "content": "Thanks, I read your log."},
        {"role": "user", "content": "My lighthouse has a red lantern."},
    ]
    response = http.post(
        "/v1/conversations/keeper/messages", json={"user_id": "keeper", "messages": messages}
    )
    assert response.status_code == 201, response.text[:300]
    stored = http.get("/v1/conversations/keeper/messages").json()["data"]
    assert [m["content"] for m in stored] == [m["content"] for m in messages]  # kept whole
    # the worker's indexes (each message with its neighbours) are written too
    assert wait_processed(http, "keeper")["processing"] == {"pending": 0, "done": 1, "failed": 0}
    found = http.post(
        "/v1/search",
        json={"user_id": "keeper", "query": "lighthouse keepers log", "types": ["messages"]},
    ).json()["data"]
    assert stored[1]["id"] in [f["id"] for f in found]  # found by its first words


def test_a_chat_turn_past_the_full_text_limit_is_answered_and_stored(http):
    long = "Here is my build log: " + _pasted(60_000)
    response = http.post(
        "/v1/chat/completions",
        headers={"x-user-id": "paster", "x-conversation-id": "build"},
        json={"model": "local", "messages": [{"role": "user", "content": long}]},
    )
    assert response.status_code == 200, response.text[:300]
    stored = http.get("/v1/conversations/build/messages").json()["data"]
    assert [(m["role"], m["content"] == long) for m in stored] == [
        ("user", True),
        ("assistant", False),
    ]
