"""The Memory API over HTTP: CRUD, history, search with sources, erasure, export, tenancy."""

from __future__ import annotations

import httpx
import pytest

from memory.models import Conversation, Memory, MemoryEvent, Message, Session


def add(http, user_id, text, **extra):
    response = http.post("/v1/memories", json={"user_id": user_id, "text": text, **extra})
    assert response.status_code == 201, response.text
    return response.json()


def test_memory_crud_and_history(http):
    created = add(
        http,
        "alice",
        "Alice prefers window seats.",
        kind="preference",
        event_date="2024-03-01",
        metadata={"origin": "crm"},
    )
    assert created["id"].startswith("mem_") and created["object"] == "memory"
    assert created["kind"] == "preference" and created["event_date"] == "2024-03-01"
    assert created["metadata"] == {"origin": "crm"} and created["sources"] == []
    add(http, "alice", "Alice lives in Lisbon.")
    add(http, "bob", "Bob is vegan.")

    listed = http.get("/v1/memories", params={"user_id": "alice", "limit": 1}).json()
    assert listed["object"] == "list" and len(listed["data"]) == 1 and listed["has_more"] is True
    rest = http.get("/v1/memories", params={"user_id": "alice", "after": listed["last_id"]}).json()
    texts = {m["text"] for m in listed["data"] + rest["data"]}
    assert texts == {"Alice prefers window seats.", "Alice lives in Lisbon."}

    patched = http.patch(
        f"/v1/memories/{created['id']}", json={"text": "Alice prefers aisle seats."}
    )
    assert patched.status_code == 200 and patched.json()["text"] == "Alice prefers aisle seats."
    assert http.get(f"/v1/memories/{created['id']}").json()["text"] == "Alice prefers aisle seats."
    stored = Memory.objects.get(id=created["id"])
    assert "aisle" in stored.search_text and stored.embedding is not None

    deleted = http.delete(f"/v1/memories/{created['id']}")
    assert deleted.json() == {"id": created["id"], "object": "memory.deleted", "deleted": True}
    assert http.get(f"/v1/memories/{created['id']}").status_code == 404
    history = http.get(f"/v1/memories/{created['id']}/history").json()["data"]
    assert [(e["event"], e["old_text"], e["new_text"], e["actor"]) for e in history] == [
        ("ADD", "", "Alice prefers window seats.", "api"),
        ("UPDATE", "Alice prefers window seats.", "Alice prefers aisle seats.", "api"),
        ("DELETE", "Alice prefers aisle seats.", "", "api"),
    ]


def test_adding_what_a_memory_already_says_returns_that_memory(http):
    """A retried POST (or the same fact added twice) stored it twice: both copies were listed,
    searched and read by every chat turn, which spent its memory tokens on the fact twice."""
    first = add(http, "alice", "Alice lives in Lisbon.", metadata={"origin": "crm"})
    again = http.post(
        "/v1/memories",
        json={
            "user_id": "alice",
            "text": "  alice lives in lisbon ",
            "metadata": {"origin": "crm"},
        },
    )
    assert again.status_code == 200, again.text
    assert again.json()["id"] == first["id"] and again.json()["text"] == "Alice lives in Lisbon."
    listed = http.get("/v1/memories", params={"user_id": "alice"}).json()["data"]
    assert [m["id"] for m in listed] == [first["id"]]
    history = http.get(f"/v1/memories/{first['id']}/history").json()["data"]
    assert [e["event"] for e in history] == ["ADD"]

    # What says more is another memory: another kind, another date, metadata it lacks, another
    # user's.
    assert add(http, "alice", "Alice lives in Lisbon.", kind="plan")["id"] != first["id"]
    assert (
        add(http, "alice", "Alice lives in Lisbon.", event_date="2027-01-01")["id"] != first["id"]
    )
    assert (
        add(http, "alice", "Alice lives in Lisbon.", metadata={"origin": "form"})["id"]
        != first["id"]
    )
    assert add(http, "bob", "Alice lives in Lisbon.")["id"] != first["id"]


def test_memory_input_is_validated(http):
    missing = http.post("/v1/memories", json={"text": "x"})
    assert missing.status_code == 400 and missing.json()["error"]["param"] == "user_id"
    bad_kind = http.post("/v1/memories", json={"user_id": "u", "text": "x", "kind": "gossip"})
    assert bad_kind.status_code == 400 and bad_kind.json()["error"]["param"] == "kind"
    memory = add(http, "u", "U likes tea.")
    empty = http.patch(f"/v1/memories/{memory['id']}", json={})
    assert empty.status_code == 400
    search = http.post("/v1/memories/search", json={"user_id": "u", "query": "tea", "limit": 0})
    assert search.status_code == 400 and search.json()["error"]["param"] == "limit"
    assert http.get("/v1/memories/mem_nope").json()["error"]["code"] == "not_found"


def test_a_learned_on_in_the_clients_metadata_that_is_no_date_is_passed_over(http):
    """Engram keeps the day a memory was learned in its metadata (`learned_on`); a client's
    metadata naming it with no ISO date made adding, editing and every later recall a 500."""
    for value in ("soon", 5, "2026-13-45"):
        created = http.post(
            "/v1/memories",
            json={
                "user_id": "ana",
                "text": f"Ana collects stamps ({value}).",
                "metadata": {"learned_on": value},
            },
        )
        assert created.status_code == 201, created.text
        assert created.json()["metadata"] == {"learned_on": value}
    memory = add(http, "ana", "Ana plays the cello.")
    patched = http.patch(f"/v1/memories/{memory['id']}", json={"metadata": {"learned_on": []}})
    assert patched.status_code == 200, patched.text
    renamed = http.patch(f"/v1/memories/{memory['id']}", json={"text": "Ana plays the viola."})
    assert renamed.status_code == 200, renamed.text
    context = http.post(
        "/v1/context",
        json={
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": "Stamps or viola?"}],
        },
        headers={"x-user-id": "ana"},
    )
    assert context.status_code == 200, context.text
    assert "Ana plays the viola." in str(context.json()["messages"])


def test_engrams_metadata_keys_are_strings_or_refused(http):
    """A one-valued fact's slot, value and subject are Engram's: a value of 5 or null was
    stored, and every later extraction of the user's facts of that slot failed on it."""
    memory = add(http, "ana", "Ana lives in Porto.", metadata={"slot": "residence"})
    for metadata in ({"value": 5}, {"value": None}, {"slot": ["residence"]}, {"subject": {}}):
        patched = http.patch(f"/v1/memories/{memory['id']}", json={"metadata": metadata})
        assert patched.status_code == 400, (metadata, patched.text)
        assert patched.json()["error"]["param"] == "metadata"
        created = http.post(
            "/v1/memories", json={"user_id": "ana", "text": "Ana x.", "metadata": metadata}
        )
        assert created.status_code == 400 and created.json()["error"]["param"] == "metadata"
    tagged = http.patch(f"/v1/memories/{memory['id']}", json={"metadata": {"value": "Porto"}})
    assert tagged.json()["metadata"] == {"slot": "residence", "value": "Porto"}


def test_memories_are_invisible_to_other_workspaces(http, outsider_http):
    memory = add(http, "alice", "Alice's locker code is 4312.")
    assert outsider_http.get(f"/v1/memories/{memory['id']}").status_code == 404
    assert (
        outsider_http.patch(f"/v1/memories/{memory['id']}", json={"text": "x"}).status_code == 404
    )
    assert outsider_http.delete(f"/v1/memories/{memory['id']}").status_code == 404
    assert outsider_http.get(f"/v1/memories/{memory['id']}/history").status_code == 404
    assert outsider_http.get("/v1/memories", params={"user_id": "alice"}).json()["data"] == []
    found = outsider_http.post(
        "/v1/memories/search", json={"user_id": "alice", "query": "locker code"}
    ).json()
    assert found["data"] == []
    assert outsider_http.delete("/v1/users/alice").json()["counts"]["memories"] == 0
    assert Memory.objects.filter(id=memory["id"]).exists()


def test_user_delete_removes_every_trace_in_the_workspace(http, outsider_http, outsider):
    workspace_other, _ = outsider
    http.post(
        "/v1/conversations/c1/messages",
        json={"user_id": "alice", "messages": [{"role": "user", "content": "I live in Oslo."}]},
    )
    add(http, "alice", "Alice lives in Oslo.")
    add(http, "bob", "Bob lives in Bergen.")
    add(outsider_http, "alice", "Other Alice lives in Rome.")
    Session.objects.create(
        workspace=Conversation.objects.get(external_id="c1").workspace,
        external_id="s1",
        user_id="alice",
    )

    response = http.delete("/v1/users/alice")
    assert response.status_code == 200
    counts = response.json()["counts"]
    assert counts["memories"] == 1 and counts["conversations"] == 1 and counts["messages"] == 1
    assert counts["sessions"] == 1 and counts["memory_events"] == 1
    # nothing left to export: nobody, as GET /v1/users/alice says
    assert http.get("/v1/users/alice/export").json()["error"]["code"] == "user_not_found"
    assert http.get("/v1/users/alice").status_code == 404
    assert not Message.objects.filter(user_id="alice", workspace__name="owner").exists()
    assert not MemoryEvent.objects.filter(user_id="alice", workspace__name="owner").exists()
    # bob, and the other workspace's alice, keep theirs
    assert http.get("/v1/memories", params={"user_id": "bob"}).json()["data"]
    assert Memory.objects.filter(workspace=workspace_other, user_id="alice").count() == 1


def test_export_returns_everything_stored_for_the_user(http):
    http.post(
        "/v1/conversations/c1/messages",
        json={
            "user_id": "alice",
            "messages": [
                {"role": "user", "content": "Hello", "metadata": {"k": "v"}},
                {"role": "assistant", "content": "Hi Alice"},
            ],
        },
    )
    memory = add(http, "alice", "Alice says hello a lot.")
    http.patch(f"/v1/memories/{memory['id']}", json={"kind": "preference"})
    add(http, "bob", "Bob is quiet.")
    export = http.get("/v1/users/alice/export").json()
    assert export["object"] == "user.export" and export["user_id"] == "alice"
    assert [m["text"] for m in export["memories"]] == ["Alice says hello a lot."]
    assert [e["event"] for e in export["memory_events"]] == ["ADD", "UPDATE"]
    [conversation] = export["conversations"]
    assert conversation["external_id"] == "c1"
    assert [(m["role"], m["content"], m["metadata"]) for m in conversation["messages"]] == [
        ("user", "Hello", {"k": "v"}),
        ("assistant", "Hi Alice", {}),
    ]
    assert "Bob" not in str(export)


def test_an_update_of_a_memory_deleted_since_it_was_read_does_not_bring_it_back(owner):
    from memory.services import memory_create, memory_update

    workspace, _ = owner
    memory = memory_create(workspace=workspace, user_id="u1", text="likes tea")
    Memory.objects.filter(pk=memory.pk).delete()  # its user deleted it meanwhile
    with pytest.raises(Memory.DoesNotExist):
        memory_update(workspace=workspace, memory=memory, text="likes green tea")
    assert not Memory.objects.filter(pk=memory.pk).exists()


def test_a_memory_deleted_beside_concurrent_patches_stays_deleted(engram_server, owner):
    """Each round: three PATCHes and a DELETE of one memory at once. Before, a PATCH that had
    read the memory before the DELETE saved it again afterwards (13 rounds of 20)."""
    from concurrent.futures import ThreadPoolExecutor

    headers = {"Authorization": f"Bearer {owner[1]}"}
    with httpx.Client(base_url=engram_server.url, headers=headers, timeout=60) as http:
        ids = [
            http.post("/v1/memories", json={"user_id": "u_race", "text": f"likes tea {r}"}).json()[
                "id"
            ]
            for r in range(12)
        ]

    def send(request: tuple[str, str, int]) -> int:
        method, memory_id, i = request
        with httpx.Client(base_url=engram_server.url, headers=headers, timeout=60) as http:
            if method == "DELETE":
                return http.delete(f"/v1/memories/{memory_id}").status_code
            return http.patch(f"/v1/memories/{memory_id}", json={"text": f"tea {i}"}).status_code

    with ThreadPoolExecutor(max_workers=4) as pool:
        for memory_id in ids:
            requests = [("PATCH", memory_id, i) for i in range(3)] + [("DELETE", memory_id, 3)]
            statuses = list(pool.map(send, requests))
            assert set(statuses) <= {200, 404}, statuses
            assert statuses[-1] == 200
            assert not Memory.objects.filter(pk=memory_id).exists()


def test_before_is_the_page_just_before_the_cursor(http):
    ids = sorted(add(http, "pager", f"Pager fact {n}.")["id"] for n in range(5))
    page = http.get("/v1/memories", params={"user_id": "pager", "limit": 2, "before": ids[1]})
    assert [m["id"] for m in page.json()["data"]] == [ids[3], ids[2]]  # newest first
    assert page.json()["has_more"] is True  # ids[4] precedes them
    page = http.get(
        "/v1/memories",
        params={"user_id": "pager", "limit": 2, "order": "asc", "before": ids[3]},
    )
    assert [m["id"] for m in page.json()["data"]] == [ids[1], ids[2]]
    assert page.json()["has_more"] is True
    window = {"user_id": "pager", "order": "asc", "after": ids[0], "before": ids[4]}
    assert [m["id"] for m in http.get("/v1/memories", params=window).json()["data"]] == ids[1:4]


def test_exported_memories_post_back_as_they_are_for_another_user(http):
    """A restore or a migration (mem0's and Zep's habit) posts the memory objects it got: the
    export's `id`, `created_at` and the other fields Engram wrote were a 400 each."""
    add(
        http,
        "alice",
        "Alice flew to Oslo.",
        kind="event",
        event_date="2024-03-01",
        metadata={"origin": "crm", "learned_on": "2024-03-02"},
    )
    add(http, "alice", "Alice prefers tea.", kind="preference")
    Memory.objects.filter(user_id="alice").update(
        created_at=Memory.objects.get(text="Alice prefers tea.").created_at.replace(year=2020)
    )
    exported = http.get("/v1/users/alice/export").json()["memories"]
    listed = http.get("/v1/memories", params={"user_id": "alice"}).json()["data"]
    searched = http.post(
        "/v1/memories/search", json={"user_id": "alice", "query": "tea", "limit": 1}
    ).json()["data"]
    assert searched and {"score", "why", "sources"} <= set(searched[0])
    for who, memories in (("bob", exported), ("carol", listed), ("dave", searched)):
        for memory in memories:
            posted = http.post("/v1/memories", json=memory | {"user_id": who})
            assert posted.status_code == 201, posted.text
            assert posted.json()["id"] != memory["id"]

        def shape(ms):
            return sorted(
                (m["text"], m["kind"], m["event_date"], m["metadata"], m["created_at"]) for m in ms
            )

        copied = http.get("/v1/memories", params={"user_id": who}).json()["data"]
        assert shape(copied) == shape(memories)
        assert all(m["sources"] == [] for m in copied)
    # posted again: the memory that says it, as it is (200), not a second copy
    again = http.post("/v1/memories", json=exported[0] | {"user_id": "bob"})
    assert again.status_code == 200
    # a field Engram never wrote is still refused, and so is a time far ahead
    unknown = http.post("/v1/memories", json=exported[0] | {"user_id": "erin", "score2": 1})
    assert unknown.status_code == 400 and unknown.json()["error"]["param"] == "score2"
    ahead = http.post("/v1/memories", json=exported[0] | {"user_id": "erin", "created_at": 2**33})
    assert ahead.status_code == 400 and ahead.json()["error"]["param"] == "created_at"
    wrong = http.post("/v1/memories", json=exported[0] | {"user_id": "erin", "object": "user"})
    assert wrong.status_code == 400 and wrong.json()["error"]["param"] == "object"
    assert not Memory.objects.filter(user_id="erin").exists()
