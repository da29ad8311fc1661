"""The Conversations API over HTTP: bulk import, listing, processing counts, tenancy."""

from __future__ import annotations

import time

import pytest


def wait_processed(http, conversation_id, timeout=60.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        body = http.get(f"/v1/conversations/{conversation_id}").json()
        if body["processing"]["pending"] == 0:
            return body
        assert time.monotonic() < deadline, body
        time.sleep(0.2)


LOCOMO_LIKE = [
    {
        "role": "user",
        "name": "Caroline",
        "content": "I went to a LGBTQ support group yesterday.",
        "created_at": "2023-05-08T13:56:00Z",
        "metadata": {"dia_id": "D1:3"},
    },
    {
        "role": "user",
        "name": "Melanie",
        "content": "That sounds powerful! How was it?",
        "created_at": "2023-05-08T13:56:00Z",
        "metadata": {"dia_id": "D1:4"},
    },
    {
        "role": "user",
        "name": "Caroline",
        "content": "I'm researching adoption agencies for my future kids.",
        "created_at": "2023-05-08T13:56:00Z",
        "metadata": {"dia_id": "D1:5"},
    },
]


def test_import_keeps_order_names_dates_and_metadata(http):
    response = http.post(
        "/v1/conversations/conv-26/messages", json={"user_id": "locomo-26", "messages": LOCOMO_LIKE}
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert [m["metadata"]["dia_id"] for m in body["data"]] == ["D1:3", "D1:4", "D1:5"]
    assert body["conversation"]["external_id"] == "conv-26"
    assert body["conversation"]["processing"] == {"pending": 1, "done": 0, "failed": 0}
    listed = http.get("/v1/conversations/conv-26/messages").json()
    assert listed["object"] == "list"
    assert [(m["name"], m["metadata"]["dia_id"]) for m in listed["data"]] == [
        ("Caroline", "D1:3"),
        ("Melanie", "D1:4"),
        ("Caroline", "D1:5"),
    ]
    assert all(m["created_at"] == 1683554160 for m in listed["data"])
    page = http.get("/v1/conversations/conv-26/messages", params={"limit": 2}).json()
    assert len(page["data"]) == 2 and page["has_more"] is True
    # the same conversation is reachable by Engram's own id
    own_id = body["conversation"]["id"]
    assert http.get(f"/v1/conversations/{own_id}").json()["external_id"] == "conv-26"


def test_imported_messages_go_through_extraction(http, celery_worker, settings):
    settings.OPENAI_BASE_URL = ""  # the offline extractor
    http.post(
        "/v1/conversations/conv-26/messages", json={"user_id": "locomo-26", "messages": LOCOMO_LIKE}
    )
    body = wait_processed(http, "conv-26")
    assert body["processing"] == {"pending": 0, "done": 1, "failed": 0}
    memories = http.get("/v1/memories", params={"user_id": "locomo-26"}).json()["data"]
    by_text = {m["text"]: m for m in memories}
    support = by_text["Caroline went to a LGBTQ support group on 7 May 2023."]
    assert support["event_date"] == "2023-05-07"
    assert [s["metadata"]["dia_id"] for s in support["sources"]] == ["D1:3"]
    found = http.post(
        "/v1/search",
        json={
            "user_id": "locomo-26",
            "query": "When did Caroline go to the support group?",
            "limit": 20,
        },
    ).json()["data"]
    dia_ids = [s["metadata"].get("dia_id") for r in found for s in r["sources"]]
    assert dia_ids[0] == "D1:3"
    assert "D1:5" in dia_ids  # the rest of the conversation is searchable too


def test_list_conversations_by_user_and_validation(http):
    for conversation, user in [("a1", "alice"), ("a2", "alice"), ("b1", "bob")]:
        http.post(
            f"/v1/conversations/{conversation}/messages",
            json={"user_id": user, "messages": [{"role": "user", "content": "hi"}]},
        )
    alice = http.get("/v1/conversations", params={"user_id": "alice"}).json()
    assert sorted(c["external_id"] for c in alice["data"]) == ["a1", "a2"]
    first = http.get("/v1/conversations", params={"user_id": "alice", "limit": 1}).json()
    assert first["has_more"] is True and len(first["data"]) == 1

    # ids are each user's: bob's own "a1" (tests/test_conversation_ids_per_user.py)
    bobs = http.post(
        "/v1/conversations/a1/messages",
        json={"user_id": "bob", "messages": [{"role": "user", "content": "mine now"}]},
    )
    assert bobs.status_code == 201 and bobs.json()["conversation"]["user_id"] == "bob"
    bad_role = http.post(
        "/v1/conversations/x/messages",
        json={"user_id": "u", "messages": [{"role": "wizard", "content": "hi"}]},
    )
    assert bad_role.status_code == 400 and "role" in bad_role.json()["error"]["param"]
    empty = http.post("/v1/conversations/x/messages", json={"user_id": "u", "messages": []})
    assert empty.status_code == 400 and empty.json()["error"]["param"] == "messages"
    bad_date = http.post(
        "/v1/conversations/x/messages",
        json={
            "user_id": "u",
            "messages": [{"role": "user", "content": "hi", "created_at": "yesterday"}],
        },
    )
    assert bad_date.status_code == 400
    assert http.get("/v1/conversations/nope").status_code == 404


CALL = {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{}"}}


def test_import_takes_tool_calls_as_openai_writes_them_and_refuses_what_chat_refuses(http):
    """An assistant message that only calls tools has `content: null` (or none) in OpenAI's
    transcripts: the import refused it (400 "may not be null"), while it stored tool calls the
    chat doors refuse (a name that is a number, arguments that are an object), sent again as
    history with every later turn of the conversation."""
    transcript = [
        {"role": "user", "content": "Weather in Oslo?"},
        {"role": "assistant", "content": None, "tool_calls": [CALL]},
        {"role": "tool", "tool_call_id": "call_1", "content": "4 degrees, rain"},
        {"role": "assistant", "tool_calls": [{**CALL, "id": "call_2"}]},
        {"role": "tool", "tool_call_id": "call_2", "content": "still rain"},
        {"role": "assistant", "content": "4 degrees and rain in Oslo."},
    ]
    imported = http.post(
        "/v1/conversations/oslo/messages", json={"user_id": "ola", "messages": transcript}
    )
    assert imported.status_code == 201, imported.text
    listed = http.get("/v1/conversations/oslo/messages").json()["data"]
    assert [(m["role"], m["content"]) for m in listed] == [
        ("user", "Weather in Oslo?"),
        ("assistant", None),
        ("tool", "4 degrees, rain"),
        ("assistant", None),
        ("tool", "still rain"),
        ("assistant", "4 degrees and rain in Oslo."),
    ]
    assert listed[1]["tool_calls"] == [CALL]

    bad_call = {**CALL, "function": {"name": 5, "arguments": {"city": "Oslo"}}}
    for bad, param in [
        ({"role": "assistant", "content": "On it.", "tool_calls": [bad_call]}, "tool_calls[0]"),
        ({"role": "user", "content": "Hi", "tool_calls": [CALL]}, "tool_calls"),
        ({"role": "tool", "content": "rain"}, "tool_call_id"),
        ({"role": "user"}, "content"),
        ({"role": "assistant", "content": None}, "content"),
    ]:
        refused = http.post(
            "/v1/conversations/oslo/messages",
            json={"user_id": "ola", "messages": [{"role": "user", "content": "Again?"}, bad]},
        )
        assert refused.status_code == 400, (bad, refused.text)
        assert refused.json()["error"]["param"].startswith(f"messages[1].{param}"), refused.text
    assert len(http.get("/v1/conversations/oslo/messages").json()["data"]) == len(transcript)


def test_conversations_are_invisible_to_other_workspaces(http, outsider_http):
    http.post(
        "/v1/conversations/secret/messages",
        json={"user_id": "alice", "messages": [{"role": "user", "content": "my PIN is 1234"}]},
    )
    assert outsider_http.get("/v1/conversations/secret").status_code == 404
    assert outsider_http.get("/v1/conversations/secret/messages").status_code == 404
    assert outsider_http.get("/v1/conversations", params={"user_id": "alice"}).json()["data"] == []
    # the outsider can use the same conversation id for its own, separate conversation
    own = outsider_http.post(
        "/v1/conversations/secret/messages",
        json={"user_id": "alice", "messages": [{"role": "user", "content": "hello"}]},
    )
    assert own.status_code == 201
    assert [m["content"] for m in http.get("/v1/conversations/secret/messages").json()["data"]] == [
        "my PIN is 1234"
    ]


def test_a_message_from_the_future_is_refused(http):
    """created_at 9999-12-31 was stored, and the user's last_active_at became year 9999. A time
    more than a day past the server's clock is a 400 naming the message's field; a little ahead
    (a client's clock running fast) is taken."""
    soon = int(time.time()) + 3600
    imported = http.post(
        "/v1/conversations/clock/messages",
        json={
            "user_id": "tick",
            "messages": [{"role": "user", "content": "hi", "created_at": soon}],
        },
    )
    assert imported.status_code == 201, imported.text
    for future in ("9999-12-31T00:00:00Z", int(time.time()) + 2 * 86400):
        refused = http.post(
            "/v1/conversations/clock/messages",
            json={
                "user_id": "tick",
                "messages": [
                    {"role": "user", "content": "hello"},
                    {"role": "user", "content": "from the future", "created_at": future},
                ],
            },
        )
        assert refused.status_code == 400, refused.text
        error = refused.json()["error"]
        assert error["param"] == "messages[1].created_at", error
        assert "future" in error["message"] and error["type"] == "invalid_request_error"
    assert len(http.get("/v1/conversations/clock/messages").json()["data"]) == 1
    assert http.get("/v1/users/tick").json()["last_active_at"] == soon


@pytest.mark.parametrize(
    "when", ["0001-01-01T00:00:00Z", -62135596800, "1969-07-20T20:17:00Z", "2023-05-08T13:56:00Z"]
)
def test_a_message_dated_long_ago_is_imported_and_extracted(http, celery_worker, settings, when):
    """A message dated in year 1 that said "yesterday" failed its extraction (the day before
    1 January of year 1 is off the calendar), as did any that spoke of "5000 years ago": such a
    phrase now stays as written. Before 1970 is a negative Unix time, everywhere it is shown."""
    settings.OPENAI_BASE_URL = ""  # the offline extractor
    message = {
        "role": "user",
        "content": "I went to a pottery class yesterday. I moved to Lisbon 3 years ago. "
        "I collect pottery shards from 5000 years ago.",
        "created_at": when,
    }
    imported = http.post(
        "/v1/conversations/ancient/messages", json={"user_id": "old", "messages": [message]}
    )
    assert imported.status_code == 201, imported.text
    assert (imported.json()["data"][0]["created_at"] < 0) == (when != "2023-05-08T13:56:00Z")
    assert wait_processed(http, "ancient")["processing"] == {"pending": 0, "done": 1, "failed": 0}
    texts = [m["text"] for m in http.get("/v1/memories", params={"user_id": "old"}).json()["data"]]
    assert any("pottery" in t for t in texts), texts
    for path in ("/v1/users/old", "/v1/users/old/export", "/v1/conversations/ancient/messages"):
        response = http.get(path)
        assert response.status_code == 200, (path, response.text)
    found = http.post(
        "/v1/search",
        json={"user_id": "old", "query": "pottery class", "types": ["messages", "memories"]},
    )
    assert found.status_code == 200 and found.json()["data"], found.text


def _said(http, conversation_id, user_id, *texts):
    response = http.post(
        f"/v1/conversations/{conversation_id}/messages",
        json={"user_id": user_id, "messages": [{"role": "user", "content": t} for t in texts]},
    )
    assert response.status_code == 201, response.text
    wait_processed(http, conversation_id)


def test_deleting_a_conversation_deletes_what_was_derived_from_it_alone(
    http, outsider_http, celery_worker, settings
):
    settings.OPENAI_BASE_URL = ""  # the offline extractor
    _said(http, "trip", "alice", "I am allergic to peanuts.", "I live in Berlin.")
    _said(http, "home", "alice", "I live in Berlin.")
    http.post("/v1/memories", json={"user_id": "alice", "text": "Alice likes tea."})
    by_text = {m["text"]: m for m in http.get("/v1/memories?user_id=alice").json()["data"]}
    peanuts = by_text["User is allergic to peanuts."]
    assert {s["conversation_id"] for s in by_text["User lives in Berlin."]["sources"]} == {
        "trip",
        "home",
    }
    assert outsider_http.delete("/v1/conversations/trip").status_code == 404

    deleted = http.delete("/v1/conversations/trip")

    assert deleted.status_code == 200, deleted.text
    assert deleted.json()["object"] == "conversation.deleted"
    assert deleted.json()["counts"]["memories"] == 1 and deleted.json()["counts"]["messages"] == 2
    assert http.get("/v1/conversations/trip").status_code == 404
    left = {m["text"]: m for m in http.get("/v1/memories?user_id=alice").json()["data"]}
    assert set(left) == {"User lives in Berlin.", "Alice likes tea."}
    assert [s["conversation_id"] for s in left["User lives in Berlin."]["sources"]] == ["home"]
    history = http.get(f"/v1/memories/{peanuts['id']}/history").json()["data"]
    assert history[-1]["event"] == "DELETE" and "trip" in history[-1]["reason"]
    # nowhere to be found: search (memories and messages) and the context of a chat turn
    found = http.post("/v1/search", json={"user_id": "alice", "query": "allergic to peanuts"})
    assert "peanut" not in found.text.lower()
    context = http.post(
        "/v1/context",
        headers={"x-user-id": "alice"},
        json={"model": "local", "messages": [{"role": "user", "content": "Any allergies?"}]},
    )
    assert context.status_code == 200 and "peanut" not in context.text.lower()
    assert http.delete("/v1/conversations/trip").status_code == 404


def test_a_memory_a_person_added_too_outlives_the_conversation_it_was_extracted_from(
    http, celery_worker, settings
):
    """POST /v1/memories of a fact already extracted is that memory (200, not a copy): it
    then went with its conversation's deletion, the person's own fact too. The other way
    round as well: added by hand, then said in a conversation (a source linked to it)."""
    settings.OPENAI_BASE_URL = ""  # the offline extractor
    _said(http, "trip", "alice", "I am allergic to peanuts.")
    [extracted] = http.get("/v1/memories?user_id=alice").json()["data"]
    assert extracted["text"] == "User is allergic to peanuts."
    added = http.post("/v1/memories", json={"user_id": "alice", "text": extracted["text"]})
    assert added.status_code == 200 and added.json()["id"] == extracted["id"], added.text

    by_hand = http.post("/v1/memories", json={"user_id": "alice", "text": "User lives in Oslo."})
    assert by_hand.status_code == 201, by_hand.text
    _said(http, "home", "alice", "I live in Oslo.")
    oslo = http.get(f"/v1/memories/{by_hand.json()['id']}").json()
    assert [s["conversation_id"] for s in oslo["sources"]] == ["home"]  # said there too

    for conversation_id in ("trip", "home"):
        deleted = http.delete(f"/v1/conversations/{conversation_id}")
        assert deleted.status_code == 200, deleted.text
        assert deleted.json()["counts"]["memories"] == 0, conversation_id
    for memory_id in (extracted["id"], by_hand.json()["id"]):
        kept = http.get(f"/v1/memories/{memory_id}")
        assert kept.status_code == 200 and kept.json()["sources"] == [], kept.text


def test_deleting_a_conversation_keeps_a_session_another_conversation_goes_on_in(http):
    """One session (an app launch) over two conversations: deleting one deleted the session,
    and the other's messages lost their session id (the user's count of sessions with it)."""
    for conversation_id in ("first", "second", "first"):
        said = http.post(
            "/v1/chat/completions",
            headers={
                "x-user-id": "alice",
                "x-conversation-id": conversation_id,
                "x-session-id": "launch-1",
            },
            json={"model": "local", "messages": [{"role": "user", "content": "Hello."}]},
        )
        assert said.status_code == 200, said.text
    deleted = http.delete("/v1/conversations/first")
    assert deleted.status_code == 200 and deleted.json()["counts"]["sessions"] == 0
    messages = http.get("/v1/conversations/second/messages").json()["data"]
    assert [m["session_id"] for m in messages] == ["launch-1", "launch-1"]
    assert http.get("/v1/users/alice").json()["counts"]["sessions"] == 1
    [session] = http.get("/v1/users/alice/export").json()["sessions"]
    assert session["id"] == "launch-1" and session["conversation_id"] == "second"
    # a session of the deleted conversation alone goes with it
    http.post(
        "/v1/chat/completions",
        headers={"x-user-id": "alice", "x-conversation-id": "third", "x-session-id": "launch-2"},
        json={"model": "local", "messages": [{"role": "user", "content": "Hi."}]},
    )
    assert http.delete("/v1/conversations/third").json()["counts"]["sessions"] == 1
    assert [s["id"] for s in http.get("/v1/users/alice/export").json()["sessions"]] == ["launch-1"]
    # and the kept one goes with the last conversation it was used in
    assert http.delete("/v1/conversations/second").json()["counts"]["sessions"] == 1
    assert http.get("/v1/users/alice/export").status_code == 404  # nothing left of alice


def test_messages_list_in_the_order_they_were_said_page_by_page(http):
    """A conversation's messages were listed, and paged, in the order they were stored: an
    import of earlier messages into a conversation came after its later turns ("oldest first"
    said otherwise), unlike the history the model reads (by date)."""
    import_ = "/v1/conversations/said/messages"
    later = [
        {"role": "user", "content": "later question", "created_at": "2024-05-01T10:00:00Z"},
        {"role": "assistant", "content": "later answer", "created_at": "2024-05-01T10:00:05Z"},
    ]
    earlier = [
        {"role": "user", "content": "earlier question", "created_at": "2023-01-01T10:00:00Z"},
        {"role": "assistant", "content": "earlier answer", "created_at": "2023-01-01T10:00:05Z"},
    ]
    for messages in (later, earlier):
        response = http.post(import_, json={"user_id": "said", "messages": messages})
        assert response.status_code == 201, response.text
    said = ["earlier question", "earlier answer", "later question", "later answer"]

    def pages(**params):
        seen, params = [], {"limit": 1, **params}
        while True:
            page = http.get(import_, params=params).json()
            seen += [m["content"] for m in page["data"]]
            if not page["has_more"]:
                return seen
            params["after"] = page["last_id"]

    assert [m["content"] for m in http.get(import_).json()["data"]] == said
    assert pages() == said
    assert pages(order="desc") == said[::-1]
    ids = [m["id"] for m in http.get(import_).json()["data"]]
    before = http.get(import_, params={"before": ids[2], "limit": 1}).json()
    assert [m["content"] for m in before["data"]] == ["earlier answer"] and before["has_more"]
    window = http.get(import_, params={"after": ids[0], "before": ids[3]}).json()
    assert [m["content"] for m in window["data"]] == said[1:3]


def _title_when_made(http, conversation_id, timeout=30.0, not_this=None) -> str:
    deadline = time.monotonic() + timeout
    while True:
        title = http.get(f"/v1/conversations/{conversation_id}").json()["title"]
        if title and title != not_this:
            return title
        assert time.monotonic() < deadline, title
        time.sleep(0.1)


def test_a_history_imported_newest_first_is_titled_by_its_earliest_message(http, celery_worker):
    """The title is the first user message's words: a history imported in pieces, the newest
    piece first, kept the title of that piece, not its earliest message's."""

    def one(content, created_at):
        message = {"role": "user", "content": content, "created_at": created_at}
        response = http.post(
            "/v1/conversations/pieces/messages", json={"user_id": "u", "messages": [message]}
        )
        assert response.status_code == 201, response.text

    one("What should I pack for Lisbon?", "2024-03-01T10:00:00Z")
    assert _title_when_made(http, "pieces") == "What should I pack for Lisbon?"
    one("I am planning a trip to Portugal.", "2024-02-01T10:00:00Z")
    title = _title_when_made(http, "pieces", not_this="What should I pack for Lisbon?")
    assert title == "I am planning a trip to Portugal."
    # a later message changes nothing; an operator's title is kept even for an older one
    one("Any museums?", "2024-04-01T10:00:00Z")
    from memory.models import Conversation

    Conversation.objects.filter(external_id="pieces").update(title="Typed by an operator")
    one("Hello!", "2024-01-01T10:00:00Z")
    assert http.get("/v1/conversations/pieces").json()["title"] == "Typed by an operator"


def test_an_import_retried_under_its_idempotency_key_is_stored_once(http):
    """A client that never got an import's answer (a 503 after a commit whose acknowledgement
    was lost, a web process killed after the commit, a timeout) sends it again: under the same
    Idempotency-Key the retry stores nothing and answers the first import's messages, whose
    extraction is the one job. Without it every message was stored twice."""
    from concurrent.futures import ThreadPoolExecutor

    from memory.models import ProcessingJob

    batch = {
        "user_id": "ret",
        "messages": [
            {"role": "user", "content": "I keep bees on my roof."},
            {"role": "assistant", "content": "How many hives?"},
        ],
    }
    url = "/v1/conversations/retried/messages"
    with ThreadPoolExecutor(4) as pool:  # the import and its retries, at once
        answers = list(
            pool.map(
                lambda _: http.post(url, json=batch, headers={"Idempotency-Key": "batch-1"}),
                range(4),
            )
        )
    for answer in answers:
        assert answer.status_code == 201, answer.text
        assert [m["id"] for m in answer.json()["data"]] == [
            m["id"] for m in answers[0].json()["data"]
        ]
    again = http.post(url, json=batch, headers={"Idempotency-Key": "batch-1"})
    assert [m["id"] for m in again.json()["data"]] == [m["id"] for m in answers[0].json()["data"]]
    stored = http.get(url).json()["data"]
    assert [m["content"] for m in stored] == ["I keep bees on my roof.", "How many hives?"]
    jobs = ProcessingJob.objects.filter(conversation__external_id="retried", kind="extract")
    assert jobs.count() == 1

    # another key, or none, is another import
    assert http.post(url, json=batch, headers={"Idempotency-Key": "batch-2"}).status_code == 201
    assert http.post(url, json=batch).status_code == 201
    assert len(http.get(url).json()["data"]) == 6
    # a key of another conversation names nothing here
    other = http.post(
        "/v1/conversations/elsewhere/messages", json=batch, headers={"Idempotency-Key": "batch-1"}
    )
    assert other.status_code == 201
    assert len(http.get("/v1/conversations/elsewhere/messages").json()["data"]) == 2

    for bad in ("k" * 201, "caf\u00e9"):
        refused = http.post(url, json=batch, headers={"Idempotency-Key": bad.encode()})
        assert refused.status_code == 400, refused.text
        assert refused.json()["error"]["param"] == "Idempotency-Key"
    assert len(http.get(url).json()["data"]) == 6
