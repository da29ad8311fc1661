"""DELETE /v1/memories?user_id=: every memory of one user deleted (mem0's
`delete_all(user_id=...)`), their conversations kept, each memory as DELETE /v1/memories/{id}
deletes it: in its history, and not extracted again from what was said before."""

from __future__ import annotations

import pytest

from memory.models import MemoryEvent, MemorySuppression
from memory.services import memories_delete
from tests.identity import hs256
from tests.test_endusers import SECRET, as_user
from tests.test_endusers_edges import _trust_secret
from tests.test_errors import assert_envelope
from tests.test_memory_forgetting import (
    ALLERGY,
    NEW_SYSTEM,
    NOTED,
    OLD_SYSTEM,
    allergy,
    chat,
    memories,
    offline_memory,  # noqa: F401 (a fixture)
)
from tests.test_memory_forgetting_summaries import (
    summarized_soon,  # noqa: F401 (a fixture)
)

pytestmark = pytest.mark.django_db(transaction=True)


def _add(http, user: str, text: str, **extra) -> str:
    response = http.post("/v1/memories", json={"user_id": user, "text": text, **extra})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def _texts(http, user: str) -> list[str]:
    response = http.get("/v1/memories", params={"user_id": user})
    assert response.status_code == 200, response.text
    return sorted(m["text"] for m in response.json()["data"])


def test_deletes_only_that_users_memories_and_keeps_their_conversations(http):
    first = _add(http, "ann", "Likes tea.")
    _add(http, "ann", "Lives in Porto.")
    _add(http, "bob", "Likes coffee.")
    said = http.post(
        "/v1/conversations/c1/messages",
        json={"user_id": "ann", "messages": [{"role": "user", "content": "hello"}]},
    )
    assert said.status_code < 300, said.text

    response = http.delete("/v1/memories", params={"user_id": "ann"})
    assert response.status_code == 200, response.text
    assert response.json() == {"object": "list.deleted", "user_id": "ann", "deleted": 2}
    assert _texts(http, "ann") == []
    assert _texts(http, "bob") == ["Likes coffee."]
    assert http.get("/v1/conversations/c1").status_code == 200
    messages = http.get("/v1/conversations/c1/messages").json()["data"]
    assert [m["content"] for m in messages] == ["hello"]
    # as a single deletion: in the memory's history, by the API
    history = http.get(f"/v1/memories/{first}/history").json()["data"]
    assert [(e["event"], e["actor"]) for e in history][-1] == ("DELETE", "api")
    # called again: nothing left to delete
    again = http.delete("/v1/memories", params={"user_id": "ann"})
    assert again.json()["deleted"] == 0


def test_kind_and_metadata_narrow_it_as_they_narrow_the_list(http):
    _add(http, "ann", "Likes tea.", kind="preference", metadata={"source": "crm"})
    _add(http, "ann", "Lives in Porto.", kind="fact", metadata={"source": "crm"})
    _add(http, "ann", "Has a cat.", kind="fact")
    narrowed = http.delete(
        "/v1/memories", params={"user_id": "ann", "kind": "fact", "metadata": '{"source":"crm"}'}
    )
    assert narrowed.json()["deleted"] == 1
    assert _texts(http, "ann") == ["Has a cat.", "Likes tea."]
    error = assert_envelope(
        http.delete("/v1/memories", params={"user_id": "ann", "metadata": "[1]"}), 400
    )
    assert error["param"] == "metadata"
    error = assert_envelope(http.delete("/v1/memories", params={"user_id": "ann", "kid": "x"}), 400)
    assert error["param"] == "kid"
    assert _texts(http, "ann") == ["Has a cat.", "Likes tea."]


@pytest.mark.parametrize("query", [{}, {"user_id": ""}, {"kind": "fact"}])
def test_without_a_user_id_it_is_a_400_naming_it_and_deletes_nothing(http, query):
    _add(http, "ann", "Likes tea.")
    error = assert_envelope(http.delete("/v1/memories", params=query), 400)
    assert error["param"] == "user_id"
    assert _texts(http, "ann") == ["Likes tea."]


def test_an_end_user_token_deletes_only_its_own_users(engram_server, http):
    _trust_secret(http)
    _add(http, "alice", "Likes tea.")
    _add(http, "bob", "Likes coffee.")
    with as_user(engram_server, hs256(SECRET, "alice")) as alice:
        error = assert_envelope(alice.delete("/v1/memories", params={"user_id": "bob"}), 403)
        assert (error["param"], error["code"]) == ("user_id", "user_mismatch")
        assert _texts(http, "bob") == ["Likes coffee."]
        mine = alice.delete("/v1/memories", params={"user_id": "alice"})
        assert mine.status_code == 200, mine.text
        assert mine.json()["deleted"] == 1
    assert _texts(http, "alice") == []
    assert _texts(http, "bob") == ["Likes coffee."]


def test_a_memory_deleted_so_is_not_extracted_again_from_the_transcript_resent(
    http,
    offline_memory,  # noqa: F811
):
    chat(http, offline_memory, [OLD_SYSTEM, ALLERGY], NOTED["content"])
    assert len(allergy(http)) == 1
    response = http.delete("/v1/memories", params={"user_id": "alice"})
    assert response.json()["deleted"] >= 1
    assert memories(http) == []
    assert MemorySuppression.objects.filter(user_id="alice").exists()
    question = {"role": "user", "content": "What should I cook tonight?"}
    chat(http, offline_memory, [NEW_SYSTEM, ALLERGY, NOTED, question], "Pasta.")
    assert allergy(http) == []


def test_many_memories_go_in_batches_each_as_one_deletion(http, owner):
    for i in range(7):
        _add(http, "ann", f"Fact number {i} about ann.")
    deleted = memories_delete(workspace=owner[0], user_id="ann", batch=3)
    assert deleted == 7
    assert _texts(http, "ann") == []
    assert MemoryEvent.objects.filter(user_id="ann", event=MemoryEvent.Event.DELETE).count() == 7
    assert MemorySuppression.objects.filter(user_id="ann").count() == 7


def test_the_conversations_summary_and_title_lose_the_facts_deleted(
    http,
    summarized_soon,  # noqa: F811
    settings,
):
    """As a single deletion: the summary and the title written from the same messages no longer
    say the facts (rewritten once for each batch)."""
    from memory.background.titles import conversation_title_generate
    from tests.test_memory_forgetting_summaries import TURNS, conversation, turn

    settings.ENGRAM_MEMORY_EXTRACTION = "offline"
    for text, answer in TURNS:
        turn(http, summarized_soon, text, answer)
    conversation_title_generate(conversation_id=conversation().pk)
    assert "peanuts" in conversation().summary and "Rex" in conversation().summary
    assert conversation().title == "I am allergic to peanuts."
    response = http.delete("/v1/memories", params={"user_id": "alice", "kind": "fact"})
    assert response.json()["deleted"] >= 2, response.text
    assert "peanut" not in conversation().summary.lower()
    assert "Rex" not in conversation().summary
    assert conversation().title == ""
