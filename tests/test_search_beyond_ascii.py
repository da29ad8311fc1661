"""Words beyond ASCII match on the full-text side of the ranking, over HTTP: the query's words
were read as runs of ASCII letters, so "café" searched for "caf", "München" for "nchen", and a
Russian, Japanese or Hebrew query for nothing at all; only the English embedder's vectors were
left to rank such memories and messages."""

from __future__ import annotations

import pytest

MEMORIES = [
    "Любит зелёный чай по утрам.",
    "Работает инженером в Москве.",
    "Играет в шахматы по выходным.",
    "Boit son café au lait à München.",
    "寿司 が 好き です。",
    "גר בתל אביב.",
    "User has a dog named Rex.",
]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("Где работает? Москве", "Работает инженером в Москве."),
        ("café", "Boit son café au lait à München."),
        ("München", "Boit son café au lait à München."),
        ("寿司", "寿司 が 好き です。"),
        ("אביב", "גר בתל אביב."),
    ],
)
def test_a_memory_is_found_by_its_words_in_any_script(http, query, expected):
    for text in MEMORIES:
        assert http.post("/v1/memories", json={"user_id": "mira", "text": text}).status_code == 201
    found = http.post(
        "/v1/memories/search", json={"user_id": "mira", "query": query, "limit": 3}
    ).json()["data"]
    assert found[0]["text"] == expected
    assert "full-text rank 1" in found[0]["why"], found[0]["why"]


def test_a_past_message_is_found_by_its_words_in_any_script(http):
    response = http.post(
        "/v1/conversations/reise/messages",
        json={
            "user_id": "jonas",
            "messages": [
                {"role": "user", "content": "Ich fahre nächste Woche nach Zürich."},
                {"role": "user", "content": "Мой брат живёт в Новосибирске."},
                {"role": "user", "content": "I walked the dog this morning."},
            ],
        },
    )
    assert response.status_code == 201, response.text
    for query, expected in (
        ("Zürich", "Ich fahre nächste Woche nach Zürich."),
        ("Новосибирске", "Мой брат живёт в Новосибирске."),
    ):
        found = http.post(
            "/v1/search", json={"user_id": "jonas", "query": query, "types": ["messages"]}
        ).json()["data"]
        assert found[0]["text"] == expected
        assert "full-text rank 1" in found[0]["why"], found[0]["why"]
