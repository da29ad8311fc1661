"""Search over HTTP says what it returns: memory search gives memories (with the messages they
came from), the unified search typed items of the sources asked for, in one ranking."""

from __future__ import annotations

import json

from memory.knowledge import services as knowledge

TRIP = [
    {
        "role": "user",
        "name": "Alice",
        "content": "We booked a cabin in Norway for July.",
        "created_at": "2023-05-08T13:56:00Z",
        "metadata": {"dia_id": "D1:1"},
    },
    {
        "role": "user",
        "name": "Alice",
        "content": "My sister makes the best pancakes.",
        "created_at": "2023-05-08T13:57:00Z",
        "metadata": {"dia_id": "D1:2"},
    },
]


def add(http, user_id, text):
    response = http.post("/v1/memories", json={"user_id": user_id, "text": text})
    assert response.status_code == 201, response.text
    return response.json()


def imported(http, user_id="alice"):
    response = http.post(
        "/v1/conversations/trip/messages", json={"user_id": user_id, "messages": TRIP}
    )
    assert response.status_code == 201, response.text
    return response.json()["data"]


def test_memory_search_returns_memories_with_their_sources_never_messages(http):
    messages = imported(http)
    lives = add(http, "alice", "Alice lives in Berlin.")
    add(http, "alice", "Alice is afraid of heights.")
    add(http, "bob", "Bob lives in Berlin too.")
    # a memory whose source message is the best message hit still comes back: it is a memory
    from memory.models import Memory

    cabin = Memory.objects.get(id=add(http, "alice", "Alice booked a cabin in Norway.")["id"])
    cabin.sources.set([messages[0]["id"]])

    found = http.post(
        "/v1/memories/search", json={"user_id": "alice", "query": "cabin in Norway", "limit": 10}
    ).json()["data"]
    assert found and {f["object"] for f in found} == {"memory"}
    assert found[0]["text"] == "Alice booked a cabin in Norway."
    assert found[0]["sources"] == [
        {
            "message_id": messages[0]["id"],
            "conversation_id": "trip",
            "created_at": 1683554160,
            "metadata": {"dia_id": "D1:1"},
        }
    ]
    assert [f["score"] for f in found] == sorted((f["score"] for f in found), reverse=True)
    assert "Bob" not in str(found)

    berlin = http.post(
        "/v1/memories/search", json={"user_id": "alice", "query": "Berlin", "limit": 1}
    ).json()["data"]
    assert [b["id"] for b in berlin] == [lives["id"]] and "vector rank" in berlin[0]["why"]


def test_unified_search_ranks_typed_memories_and_messages(http):
    messages = imported(http)
    heights = add(http, "alice", "Alice is afraid of heights.")
    found = http.post(
        "/v1/search", json={"user_id": "alice", "query": "Where is the cabin trip?", "limit": 5}
    ).json()["data"]
    assert [f["score"] for f in found] == sorted((f["score"] for f in found), reverse=True)
    top = found[0]
    assert top["type"] == "message" and top["id"] == messages[0]["id"]
    assert top["text"] == "We booked a cabin in Norway for July."
    assert top["created_at"] == 1683554160 and top["role"] == "user"
    assert top["sources"] == [
        {
            "message_id": top["id"],
            "conversation_id": "trip",
            "created_at": 1683554160,
            "metadata": {"dia_id": "D1:1"},
        }
    ]
    assert {f["type"] for f in found} <= {"memory", "message"}

    only = http.post(
        "/v1/search",
        json={"user_id": "alice", "query": "afraid of heights", "types": ["memories"]},
    ).json()["data"]
    assert [(f["type"], f["id"]) for f in only] == [("memory", heights["id"])]
    messages_only = http.post(
        "/v1/search",
        json={"user_id": "alice", "query": "afraid of heights", "types": ["messages"]},
    ).json()["data"]
    assert {f["type"] for f in messages_only} <= {"message"}


def test_unified_search_adds_knowledge_chunks_with_their_document(http, owner, outsider):
    workspace, _ = owner
    collection = knowledge.collection_create(workspace=workspace, name="handbook")
    document, _ = knowledge.document_create(
        workspace=workspace,
        collection=collection,
        raw=b"Refunds are paid within 14 days of a return reaching the warehouse.",
        title="Refund policy",
    )
    assert knowledge.document_ingest(document_id=document.id) == "ready"
    imported(http)
    body = {
        "user_id": "alice",
        "query": "How long do refunds take?",
        "types": ["memories", "messages", "chunks"],
        "collection_ids": [collection.id],
    }
    found = http.post("/v1/search", json=body).json()["data"]
    chunk = found[0]
    assert chunk["type"] == "chunk" and "14 days" in chunk["text"]
    assert chunk["id"] == f"{document.id}#0" and chunk["created_at"] > 0
    assert chunk["sources"] == [
        {
            "collection_id": collection.id,
            "document_id": document.id,
            "title": "Refund policy",
            "chunk_index": 0,
            "heading": "",
        }
    ]
    # without a user: chunks alone
    alone = http.post("/v1/search", json={**body, "user_id": None, "types": ["chunks"]})
    assert alone.status_code == 400  # null is not an id
    body.pop("user_id")
    alone = http.post("/v1/search", json={**body, "types": ["chunks"]}).json()["data"]
    assert [a["type"] for a in alone] == ["chunk"]
    # another workspace's collection is a 404 naming it
    foreign = knowledge.collection_create(workspace=outsider[0], name="theirs")
    missing = http.post(
        "/v1/search", json={**body, "types": ["chunks"], "collection_ids": [foreign.id]}
    )
    assert missing.status_code == 404
    assert missing.json()["error"]["param"] == "collection_ids"


def test_collections_named_without_types_are_searched(http, owner, outsider):
    """`collection_ids` beside the default `types` were neither searched nor checked: no chunk
    came back and another workspace's collection answered 200; naming only collections was a
    400 asking for a user id."""
    collection = knowledge.collection_create(workspace=owner[0], name="handbook")
    document, _ = knowledge.document_create(
        workspace=owner[0],
        collection=collection,
        raw=b"Refunds are paid within 14 days of a return reaching the warehouse.",
        title="Refund policy",
    )
    assert knowledge.document_ingest(document_id=document.id) == "ready"
    body = {"query": "How long do refunds take?", "collection_ids": [collection.id]}

    found = http.post("/v1/search", json={**body, "user_id": "alice"})
    assert found.status_code == 200, found.text
    assert "chunk" in {item["type"] for item in found.json()["data"]}
    alone = http.post("/v1/search", json=body)
    assert alone.status_code == 200, alone.text
    assert [item["type"] for item in alone.json()["data"]] == ["chunk"]

    foreign = knowledge.collection_create(workspace=outsider[0], name="theirs")
    missing = http.post(
        "/v1/search", json={"user_id": "alice", "query": "refunds", "collection_ids": [foreign.id]}
    )
    assert missing.status_code == 404 and missing.json()["error"]["param"] == "collection_ids"
    # types that leave chunks out say so rather than leave the collections unread
    left_out = http.post("/v1/search", json={**body, "user_id": "alice", "types": ["memories"]})
    assert left_out.status_code == 400
    assert left_out.json()["error"]["param"] == "collection_ids"


def test_unified_search_input_is_validated(http):
    def error(body):
        response = http.post("/v1/search", json=body)
        assert response.status_code == 400, response.text
        return response.json()["error"]["param"]

    assert error({"query": "tea"}) == "user_id"
    assert error({"user_id": "u", "query": "tea", "types": ["chunks"]}) == "collection_ids"
    assert error({"user_id": "u", "query": "tea", "types": ["gossip"]}) == "types[0]"
    assert error({"user_id": "u", "query": "tea", "types": []}) == "types"
    assert error({"user_id": "u", "query": "tea", "limit": 0}) == "limit"
    assert error({"user_id": "u"}) == "query"


def test_an_assistant_echo_of_the_user_is_not_a_second_result(http):
    said = "I live in Berlin since last spring."
    response = http.post(
        "/v1/conversations/echo/messages",
        json={
            "user_id": "eve",
            "messages": [
                {"role": "user", "content": said},
                {
                    "role": "assistant",
                    "content": f"(local model, no LLM configured) You said: {said}",
                },
                {"role": "assistant", "content": "Berlin is lovely in spring."},
            ],
        },
    )
    assert response.status_code == 201, response.text
    found = http.post(
        "/v1/search", json={"user_id": "eve", "query": "Berlin", "types": ["messages"]}
    ).json()["data"]
    texts = [f["text"] for f in found]
    assert said in texts and "Berlin is lovely in spring." in texts
    assert not any("You said" in t for t in texts)


def test_an_echo_is_left_out_when_the_words_it_quotes_do_not_rank(http):
    """The echo's own words ("local model") match where the user's do not: it was the only
    result, the quoted message absent."""
    said = "I have a pet ferret called Biscuit."
    response = http.post(
        "/v1/conversations/echo2/messages",
        json={
            "user_id": "zed",
            "messages": [
                {"role": "user", "content": said},
                {
                    "role": "assistant",
                    "content": f"(local model, no LLM configured) You said: {said}",
                },
                {"role": "user", "content": "My local library has no model trains."},
                {"role": "assistant", "content": "A local model railway club could help."},
            ],
        },
    )
    assert response.status_code == 201, response.text
    found = http.post(
        "/v1/search",
        json={"user_id": "zed", "query": "local model configured", "types": ["messages"]},
    ).json()["data"]
    texts = [f["text"] for f in found]
    assert "A local model railway club could help." in texts  # an answer that quotes no one
    assert not any("You said" in t for t in texts)


def test_an_answer_repeating_the_user_word_for_word_leaves_the_users_message_found(http):
    """An assistant that repeats the user's message exactly ranks above it (the same words,
    said later): it was kept as "the same words said twice", the user's message skipped as its
    duplicate, then left out as the echo of the user message before it. Both went, and the
    search answered with what did not match."""
    said = "The spare key hint is the blue heron by the lake."
    response = http.post(
        "/v1/conversations/heron/messages",
        json={
            "user_id": "hal",
            "messages": [
                {"role": "user", "content": said, "created_at": "2026-03-01T10:00:00Z"},
                {"role": "assistant", "content": said, "created_at": "2026-03-01T10:00:05Z"},
                {"role": "user", "content": "I like trains.", "created_at": "2026-03-01T10:01:00Z"},
            ],
        },
    )
    assert response.status_code == 201, response.text
    user_said = response.json()["data"][0]["id"]
    for types in (["messages"], ["memories", "messages"]):
        found = http.post(
            "/v1/search", json={"user_id": "hal", "query": "blue heron lake", "types": types}
        ).json()["data"]
        assert [(f["id"], f["role"]) for f in found if f["text"] == said] == [(user_said, "user")]


def test_a_malformed_collection_id_is_a_400_on_both_searches(http):
    """As in x-collection-ids: a collection id that breaks the id rule (a number, a space, 201
    characters) is a 400 naming it, not a 404 "No collection '7'"; a well-formed id longer
    than 40 characters is looked up like any other."""
    for path, extra in (("/v1/search", {"types": ["chunks"]}), ("/v1/collections/search", {})):
        for bad in (7, "col one", "c" * 201, ["col_x"]):
            body = {"query": "tea", "collection_ids": [bad], **extra}
            response = http.post(path, json=body)
            assert response.status_code == 400, (path, bad, response.text)
            assert response.json()["error"]["param"] == "collection_ids[0]"
        body = {"query": "tea", "collection_ids": ["org/" + "c" * 60], **extra}
        response = http.post(path, json=body)
        assert response.status_code == 404, response.text
        assert response.json()["error"]["code"] == "collection_not_found"


def test_every_door_takes_the_same_number_of_collection_ids(http):
    """The search bodies took up to 100 collection ids where x-collection-ids (and an agent)
    took 20: 21 is now a 400 on every door, in the same words; 20 are looked up."""
    ids = [f"col_{i}" for i in range(21)]
    query = {"query": "tea"}
    chat = {"model": "local", "messages": [{"role": "user", "content": "tea"}]}
    doors = {
        "/v1/search": lambda ids: http.post(
            "/v1/search", json={**query, "types": ["chunks"], "collection_ids": ids}
        ),
        "/v1/collections/search": lambda ids: http.post(
            "/v1/collections/search", json={**query, "collection_ids": ids}
        ),
        "x-collection-ids": lambda ids: http.post(
            "/v1/context", json=chat, headers={"x-collection-ids": json.dumps(ids)}
        ),
        "agent": lambda ids: http.post(
            "/v1/agents", json={"name": "reader", "model": "local", "collection_ids": ids}
        ),
    }
    for door, send in doors.items():
        refused = send(ids)
        assert refused.status_code == 400, (door, refused.text)
        error = refused.json()["error"]
        assert error["code"] == "invalid_value", (door, error)
        assert error["message"].endswith("At most 20 collection ids."), (door, error)
        assert error["param"] in ("collection_ids", "x-collection-ids"), (door, error)
        looked_up = send(ids[:20])
        assert looked_up.status_code == 404, (door, looked_up.text)
        assert looked_up.json()["error"]["code"] == "collection_not_found"


WEAK_CHUNKS = [  # the last ones share no word with "Berlin" and sit far from it
    "Berlin is the capital of Germany and its largest city.",
    "Refunds are paid within 14 days of a return reaching the warehouse.",
    "0x7f 0x45 0x4c 0x46 ELF header bytes, then the section table.",
    "¡Ay, caramba! ¿Qué pasa, amigo? Vámonos a la playa.",
    "lol ok thx bye :) :) :)",
]


def test_every_score_unified_search_shows_is_between_0_and_1_for_every_type(http, owner):
    """The blend ranks on a raw score that leaves [0, 1] (a chunk of negative cosine and no
    shared word: -0.0065 for "Berlin"); /v1/search showed it raw where /v1/collections/search
    clamps the same chunk. Every door shows it through one helper (retrieval.fusion.shown_score)."""
    workspace, _ = owner
    collection = knowledge.collection_create(workspace=workspace, name="mixed")
    for i, text in enumerate(WEAK_CHUNKS):
        document, _ = knowledge.document_create(
            workspace=workspace, collection=collection, raw=text.encode(), title=f"doc {i}"
        )
        assert knowledge.document_ingest(document_id=document.id) == "ready"
    imported(http)
    add(http, "alice", "Alice lives in Berlin.")
    add(http, "alice", "Alice is afraid of heights.")  # a weak match
    add(http, "alice", "lol ok thx bye")
    seen: dict[str, list[float]] = {}
    for query in ("Berlin", "Where does Alice live?", "pancakes", "xyzzy plugh"):
        body = {
            "user_id": "alice",
            "query": query,
            "limit": 20,
            "types": ["memories", "messages", "chunks"],
            "collection_ids": [collection.id],
        }
        found = http.post("/v1/search", json=body)
        assert found.status_code == 200, found.text
        for item in found.json()["data"]:
            seen.setdefault(item["type"], []).append(item["score"])
        shelf = http.post(
            "/v1/collections/search",
            json={"query": query, "collection_ids": [collection.id], "limit": 20},
        )
        assert shelf.status_code == 200, shelf.text
        seen.setdefault("collections/search", []).extend(c["score"] for c in shelf.json()["data"])
        own = http.post(
            "/v1/memories/search", json={"user_id": "alice", "query": query, "limit": 20}
        )
        seen.setdefault("memories/search", []).extend(m["score"] for m in own.json()["data"])
    assert set(seen) == {"memory", "message", "chunk", "collections/search", "memories/search"}
    for kind, scores in seen.items():
        assert all(0.0 <= s <= 1.0 for s in scores), (kind, sorted(scores)[:3], sorted(scores)[-3:])
