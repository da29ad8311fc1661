"""A memory's history says what each edit changed: a change of its kind, date or metadata alone
was recorded as an UPDATE from its text to itself, and the user could not tell what changed."""

from __future__ import annotations

import threading

from memory.models import Memory, MemoryEvent
from memory.services import memory_update


def _history(http, memory_id: str) -> list[dict]:
    resp = http.get(f"/v1/memories/{memory_id}/history")
    assert resp.status_code == 200, resp.text
    return resp.json()["data"]


def test_each_update_names_the_fields_it_changed_old_and_new(http):
    memory = http.post(
        "/v1/memories",
        json={"user_id": "alice", "text": "Alice keeps bees.", "metadata": {"source": "crm"}},
    ).json()
    url = f"/v1/memories/{memory['id']}"
    for patch in (
        {"kind": "preference"},
        {"event_date": "2026-05-01"},
        {"metadata": {"source": "app", "pinned": True}},
        {"text": "Alice keeps two hives.", "event_date": None},
    ):
        resp = http.patch(url, json=patch)
        assert resp.status_code == 200, resp.text

    events = _history(http, memory["id"])
    assert [(e["event"], e["changes"]) for e in events] == [
        ("ADD", {}),
        ("UPDATE", {"kind": {"old": "fact", "new": "preference"}}),
        ("UPDATE", {"event_date": {"old": None, "new": "2026-05-01"}}),
        (
            "UPDATE",
            {"metadata": {"old": {"source": "crm"}, "new": {"source": "app", "pinned": True}}},
        ),
        (
            "UPDATE",
            {
                "text": {"old": "Alice keeps bees.", "new": "Alice keeps two hives."},
                "event_date": {"old": "2026-05-01", "new": None},
            },
        ),
    ]
    # and the user's export carries them as the history does
    exported = http.get("/v1/users/alice/export").json()["memory_events"]
    assert [e["changes"] for e in exported] == [e["changes"] for e in events]


def test_a_patch_that_changes_nothing_writes_no_history_row(http):
    memory = http.post(
        "/v1/memories",
        json={"user_id": "alice", "text": "Alice keeps bees.", "kind": "plan"},
    ).json()
    url = f"/v1/memories/{memory['id']}"
    for same in (
        {"kind": "plan"},
        {"event_date": None},
        {"metadata": {}},
        {"text": "Alice keeps bees."},
    ):
        resp = http.patch(url, json=same)
        assert resp.status_code == 200, resp.text
    assert [e["event"] for e in _history(http, memory["id"])] == ["ADD"]


def test_an_edit_the_row_already_holds_when_it_gets_the_lock_writes_nothing(http, owner):
    """Two PATCHes of the same change at once: the second, which read the row before the
    first's commit, found the change made when it took the row's lock and recorded an UPDATE
    from the memory to itself."""
    memory = http.post("/v1/memories", json={"user_id": "alice", "text": "Alice keeps bees."})
    read = Memory.objects.get(id=memory.json()["id"])  # read before the other edit
    resp = http.patch(f"/v1/memories/{read.id}", json={"kind": "preference"})
    assert resp.status_code == 200, resp.text

    # `read` still says "fact": the edit is not nothing on it, and is on the row it locks
    memory_update(workspace=owner[0], memory=read, kind="preference", actor="api")
    events = MemoryEvent.objects.filter(memory_id=read.id).order_by("created_at", "id")
    assert [e.event for e in events] == ["ADD", "UPDATE"]


def test_concurrent_patches_of_one_memory_last_write_wins_without_a_500(http):
    memory = http.post("/v1/memories", json={"user_id": "alice", "text": "Alice keeps bees."})
    url = f"/v1/memories/{memory.json()['id']}"
    statuses: list[int] = []
    texts = [f"Alice keeps {n} hives." for n in range(6)]

    def patch(text: str) -> None:
        statuses.append(http.patch(url, json={"text": text}).status_code)

    threads = [threading.Thread(target=patch, args=(t,)) for t in texts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [200] * len(texts)
    final = http.get(url).json()["text"]
    events = _history(http, memory.json()["id"])
    # every edit recorded once, in the order they were written, the last one's text stays
    assert [e["event"] for e in events] == ["ADD"] + ["UPDATE"] * len(texts)
    assert events[-1]["new_text"] == final
    assert [e["changes"]["text"]["old"] for e in events[1:]] == [e["new_text"] for e in events[:-1]]


def test_adding_a_fact_whose_metadata_differs_only_as_json_types_do_is_a_new_memory(http):
    """`{"pinned": 1}` is not `{"pinned": true}` (jsonb keeps them apart, and so does an edit):
    the add returned the memory tagged true, with 200, for a client that asked for 1."""
    first = http.post(
        "/v1/memories",
        json={"user_id": "alice", "text": "Alice keeps bees.", "metadata": {"pinned": True}},
    )
    assert first.status_code == 201, first.text
    again = http.post(
        "/v1/memories",
        json={"user_id": "alice", "text": "Alice keeps bees.", "metadata": {"pinned": True}},
    )
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    other = http.post(
        "/v1/memories",
        json={"user_id": "alice", "text": "Alice keeps bees.", "metadata": {"pinned": 1}},
    )
    assert other.status_code == 201, other.text
    assert other.json()["metadata"] == {"pinned": 1}
