"""A memory its user deleted stays deleted: a client resending the old transcript (as a new
conversation) does not bring it back; the user saying it again after the deletion does."""

from __future__ import annotations

import json
import time

import pytest

from memory import tasks
from memory.models import Conversation, Memory, MemorySuppression, ProcessingJob
from memory.services import memory_delete
from tests.upstream import Reply, openai_completion

pytestmark = pytest.mark.django_db(transaction=True)

OLD_SYSTEM = {"role": "system", "content": "You are a helpful assistant."}
NEW_SYSTEM = {"role": "system", "content": "You are a helpful cooking assistant."}
ALLERGY = {"role": "user", "content": "I am allergic to peanuts."}
NOTED = {"role": "assistant", "content": "Noted, no peanuts."}


@pytest.fixture
def offline_memory(settings, upstream):
    """Answers from the scripted upstream, memories from the offline extractor."""
    settings.ENGRAM_MEMORY_EXTRACTION = "offline"
    return upstream


def chat(http, upstream, messages: list[dict], answer: str, *then: Reply) -> str:
    """One turn of alice's without any conversation id (then the upstream's replies `then`:
    the extraction's); extracted; its conversation's id."""
    upstream.script(Reply(json=openai_completion(answer)), *then)
    response = http.post(
        "/v1/chat/completions",
        json={"model": "m", "messages": messages},
        headers={"x-user-id": "alice"},
    )
    assert response.status_code == 200, response.text
    conversation_id = response.json()["engram"]["conversation_id"]
    extract(conversation_id)
    return conversation_id


def extract(conversation_id: str) -> None:
    """Run the turn's extraction job (created once its answer is stored, after the response)."""
    conversation = Conversation.objects.get(external_id=conversation_id)
    jobs = ProcessingJob.objects.filter(conversation=conversation, kind="extract")
    deadline = time.monotonic() + 10
    while not jobs.filter(status="pending").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    for job in jobs.filter(status="pending"):
        tasks.extract(job.id)


def memories(http) -> list[dict]:
    response = http.get("/v1/memories", params={"user_id": "alice"})
    assert response.status_code == 200
    return response.json()["data"]


def allergy(http) -> list[dict]:
    return [m for m in memories(http) if "peanut" in m["text"].lower()]


def remembered_then_deleted(http, upstream) -> str:
    """alice's allergy, extracted from her first chat, then deleted by her; the chat's id."""
    conversation_id = chat(http, upstream, [OLD_SYSTEM, ALLERGY], NOTED["content"])
    [memory] = allergy(http)
    assert http.delete(f"/v1/memories/{memory['id']}").status_code == 200
    assert allergy(http) == []
    return conversation_id


def test_a_deleted_memory_is_not_extracted_again_from_the_old_transcript_resent(
    http, offline_memory
):
    remembered_then_deleted(http, offline_memory)
    # The client changed its system prompt: the same transcript is a new conversation, its
    # messages stored again, the new one after them.
    new = {"role": "user", "content": "I have a dog named Rex."}
    resent = chat(http, offline_memory, [NEW_SYSTEM, ALLERGY, NOTED, new], "Hello Rex!")
    assert Conversation.objects.get(external_id=resent).messages.count() == 4
    assert allergy(http) == []
    assert [m["text"] for m in memories(http)] == ["User has a dog named Rex."]
    assert MemorySuppression.objects.count() == 1


def test_a_deleted_memory_said_again_after_the_deletion_is_remembered_again(http, offline_memory):
    remembered_then_deleted(http, offline_memory)
    # The same words, as the new message of a new chat: said again, not resent.
    chat(http, offline_memory, [OLD_SYSTEM, ALLERGY], "Noted again.")
    assert [m["text"] for m in allergy(http)] == ["User is allergic to peanuts."]
    assert MemorySuppression.objects.count() == 0  # lifted: a later resend restates it


def test_a_deleted_conversations_memories_are_not_extracted_again_from_it_resent(
    http, offline_memory
):
    """DELETE /v1/conversations/{id} deletes the memories drawn from it alone, as DELETE
    /v1/memories/{id} does: resent, they stay deleted (the messages they came from are gone,
    their digests kept)."""
    conversation_id = chat(http, offline_memory, [OLD_SYSTEM, ALLERGY], NOTED["content"])
    assert len(allergy(http)) == 1
    assert http.delete(f"/v1/conversations/{conversation_id}").status_code == 200
    assert allergy(http) == []
    question = {"role": "user", "content": "What should I cook tonight?"}
    chat(http, offline_memory, [NEW_SYSTEM, ALLERGY, NOTED, question], "Pasta.")
    assert allergy(http) == []


def test_an_erasure_takes_the_users_suppressions(http, offline_memory, owner):
    remembered_then_deleted(http, offline_memory)
    other = Memory.objects.create(workspace=owner[0], user_id="bob", text="Bob likes tea.")
    memory_delete(workspace=owner[0], memory=other, actor="api")
    assert MemorySuppression.objects.filter(user_id="alice").count() == 1
    assert http.delete("/v1/users/alice").status_code == 200
    assert not MemorySuppression.objects.filter(user_id="alice").exists()
    assert MemorySuppression.objects.filter(user_id="bob").count() == 1


def test_only_a_persons_deletion_is_remembered(owner):
    """The extractor's own DELETE (a contradiction, a merge) forgets nothing on purpose."""
    workspace = owner[0]
    for actor in ("extractor:llm", "extractor:offline"):
        memory = Memory.objects.create(workspace=workspace, user_id="alice", text="A fact.")
        memory_delete(workspace=workspace, memory=memory, actor=actor)
    assert not MemorySuppression.objects.exists()
    memory = Memory.objects.create(workspace=workspace, user_id="alice", text="A fact.")
    memory_delete(workspace=workspace, memory=memory, actor="admin")
    assert MemorySuppression.objects.get().normalized == "a fact"


def test_what_was_said_before_the_deletion_is_not_extracted_again(http, offline_memory):
    """An import of old messages (dated before the deletion) restating it: still deleted."""
    remembered_then_deleted(http, offline_memory)
    response = http.post(
        "/v1/conversations/diary/messages",
        json={
            "user_id": "alice",
            "messages": [
                {
                    "role": "user",
                    "content": "Peanuts again. I am allergic to peanuts!",
                    "created_at": "2026-01-02T10:00:00Z",
                },
            ],
        },
    )
    assert response.status_code == 201, response.text
    extract("diary")
    assert allergy(http) == []


PEANUTS = "Alice is allergic to peanuts."


def facts(*items: tuple[str, int]) -> Reply:
    body = {"facts": [{"text": text, "kind": "fact", "sources": [n]} for text, n in items]}
    return Reply(json=openai_completion(json.dumps(body)))


def test_the_llm_extractor_does_not_write_a_deleted_memory_again_from_a_resend(http, upstream):
    peanuts = "Alice is allergic to peanuts."
    chat(http, upstream, [OLD_SYSTEM, ALLERGY], NOTED["content"], facts((peanuts, 1)))
    [memory] = allergy(http)
    assert http.delete(f"/v1/memories/{memory['id']}").status_code == 200
    new = {"role": "user", "content": "I have a dog named Rex."}
    chat(
        http,
        upstream,
        [NEW_SYSTEM, ALLERGY, NOTED, new],
        "Hello Rex!",
        facts((peanuts, 1), ("Alice has a dog named Rex.", 3)),
    )
    assert [m["text"] for m in memories(http)] == ["Alice has a dog named Rex."]
    # said again, in a new message: remembered again
    add = {"actions": [{"event": "ADD", "text": "Alice is allergic to peanuts", "fact": 0}]}
    chat(
        http,
        upstream,
        [OLD_SYSTEM, ALLERGY],
        "Noted.",
        facts(("Alice is allergic to peanuts", 1)),
        Reply(json=openai_completion(json.dumps(add))),  # decided beside the dog
    )
    assert [m["text"] for m in allergy(http)] == ["Alice is allergic to peanuts"]


def test_a_fact_deleted_as_the_offline_extractor_wrote_it_stays_deleted_for_the_model(
    http, upstream, settings
):
    """The offline extractor calls the user "User"; the model calls them by the name it read
    (their id, a message's `name`): "Alice is allergic to peanuts" scored 0.738 against the
    deleted "User is allergic to peanuts." and came back from the resent transcript. The
    user's subject is compared as one; another person's fact is not theirs."""
    settings.ENGRAM_MEMORY_EXTRACTION = "offline"
    chat(http, upstream, [OLD_SYSTEM, ALLERGY], NOTED["content"])
    [memory] = allergy(http)
    assert memory["text"] == "User is allergic to peanuts."
    assert http.delete(f"/v1/memories/{memory['id']}").status_code == 200

    settings.ENGRAM_MEMORY_EXTRACTION = "llm"
    new = {
        "role": "user",
        "name": "Ally",
        "content": "I have a dog named Rex, and Bob is allergic to peanuts.",
    }
    chat(
        http,
        upstream,
        [NEW_SYSTEM, ALLERGY, NOTED, new],
        "Hello Rex!",
        facts(
            ("Alice is allergic to peanuts.", 1),  # by the user's id
            ("Ally is allergic to peanuts", 1),  # by the name her messages are sent with
            ("The user is allergic to peanuts.", 1),
            ("Alice has a dog named Rex.", 3),
            ("Bob is allergic to peanuts.", 3),
        ),
    )
    assert sorted(m["text"] for m in memories(http)) == [
        "Alice has a dog named Rex.",
        "Bob is allergic to peanuts.",
    ]


def test_a_fact_the_model_gives_no_source_for_stays_forgotten_if_an_old_message_may_say_it(
    http, upstream
):
    """Without sources the fact may come from any user message of the chunk: the resent old
    one may be what says it, so the deletion holds; in a chunk of new messages only, it is
    said again."""
    peanuts = "Alice is allergic to peanuts."
    chat(http, upstream, [OLD_SYSTEM, ALLERGY], NOTED["content"], facts((peanuts, 1)))
    [memory] = allergy(http)
    assert http.delete(f"/v1/memories/{memory['id']}").status_code == 200
    unsourced = {"facts": [{"text": peanuts, "kind": "fact"}]}
    question = {"role": "user", "content": "What should I cook tonight?"}
    chat(
        http,
        upstream,
        [NEW_SYSTEM, ALLERGY, NOTED, question],
        "Pasta.",
        Reply(json=openai_completion(json.dumps(unsourced))),
    )
    assert allergy(http) == []
    chat(
        http,
        upstream,
        [OLD_SYSTEM, {"role": "user", "content": "Peanuts make me ill, I'm allergic."}],
        "Noted.",
        Reply(json=openai_completion(json.dumps(unsourced))),
    )
    assert [m["text"] for m in allergy(http)] == [peanuts]


def test_an_edited_memorys_old_text_is_not_extracted_again_from_the_old_transcript_resent(
    http, offline_memory
):
    """A person's edit replaces the fact: the old text, resent, stays replaced. It came back
    as a second memory beside the edited one."""
    chat(http, offline_memory, [OLD_SYSTEM, ALLERGY], NOTED["content"])
    [memory] = allergy(http)
    edited = http.patch(
        f"/v1/memories/{memory['id']}", json={"text": "User is allergic to tree nuts."}
    )
    assert edited.status_code == 200, edited.text
    new = {"role": "user", "content": "I have a dog named Rex."}
    chat(http, offline_memory, [NEW_SYSTEM, ALLERGY, NOTED, new], "Hello Rex!")
    assert sorted(m["text"] for m in memories(http)) == [
        "User has a dog named Rex.",
        "User is allergic to tree nuts.",
    ]
    # said again, in a new message: remembered again
    chat(http, offline_memory, [OLD_SYSTEM, ALLERGY], "Noted again.")
    assert [m["text"] for m in allergy(http)] == ["User is allergic to peanuts."]
    assert not MemorySuppression.objects.exists()


def test_an_edited_memory_is_no_longer_sourced_from_the_messages_of_the_text_it_replaced(
    http, offline_memory
):
    """The messages said the text replaced, not the person's: they were still the edited
    memory's `sources`, so /v1/search left it out wherever the old message ranked above it
    (the stale "I am allergic to peanuts." shown, the correction hidden), and deleting that
    conversation deleted the person's own fact as one derived from it alone."""
    conversation_id = chat(http, offline_memory, [OLD_SYSTEM, ALLERGY], NOTED["content"])
    [memory] = allergy(http)
    assert memory["sources"] != []
    edited = http.patch(
        f"/v1/memories/{memory['id']}", json={"text": "User is allergic to tree nuts."}
    )
    assert edited.status_code == 200, edited.text
    assert edited.json()["sources"] == []
    found = http.post(
        "/v1/search", json={"user_id": "alice", "query": "What am I allergic to?"}
    ).json()["data"]
    assert "User is allergic to tree nuts." in [item["text"] for item in found]
    deleted = http.delete(f"/v1/conversations/{conversation_id}")
    assert deleted.status_code == 200 and deleted.json()["counts"]["memories"] == 0
    assert [m["text"] for m in memories(http)] == ["User is allergic to tree nuts."]


def test_an_edit_that_keeps_the_facts_text_forgets_nothing(http, offline_memory):
    chat(http, offline_memory, [OLD_SYSTEM, ALLERGY], NOTED["content"])
    [memory] = allergy(http)
    for change in ({"text": "user is allergic to  peanuts!"}, {"metadata": {"checked": "yes"}}):
        assert http.patch(f"/v1/memories/{memory['id']}", json=change).status_code == 200
    assert not MemorySuppression.objects.exists()


@pytest.fixture
def embeddings_under_a_lock(monkeypatch):
    """Per embedder call: how many texts, and whether its connection held an advisory lock
    (a user's) meanwhile."""
    from django.db import connection

    from memory.embeddings import get_embedder

    embedder = get_embedder()
    real, calls = embedder.embed, []

    def embed(texts):
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_locks"
                " WHERE pid = pg_backend_pid() AND locktype = 'advisory'"
            )
            calls.append((len(texts), cursor.fetchone()[0] > 0))
        return real(texts)

    monkeypatch.setattr(embedder, "embed", embed)
    return calls


def test_a_persons_deletion_embeds_nothing_under_the_users_lock(
    http, offline_memory, embeddings_under_a_lock
):
    """Deleting a conversation embedded each deleted memory's text in a call of its own, under
    the user's lock, which their turns wait for: now in one call, before it."""
    said = {"role": "user", "content": "I am allergic to peanuts. I have a dog named Rex."}
    conversation_id = chat(http, offline_memory, [OLD_SYSTEM, said], NOTED["content"])
    assert len(memories(http)) == 2
    embeddings_under_a_lock.clear()
    assert http.delete(f"/v1/conversations/{conversation_id}").status_code == 200
    assert embeddings_under_a_lock == [(2, False)]
    assert MemorySuppression.objects.count() == 2

    chat(http, offline_memory, [OLD_SYSTEM, {"role": "user", "content": "I live in Paris."}], "Ok.")
    [memory] = memories(http)
    embeddings_under_a_lock.clear()
    edited = http.patch(f"/v1/memories/{memory['id']}", json={"text": "User lives in Lyon."})
    assert edited.status_code == 200
    assert embeddings_under_a_lock == [(2, False)]  # the new text's, the replaced one's
    embeddings_under_a_lock.clear()
    assert http.delete(f"/v1/memories/{memory['id']}").status_code == 200
    assert embeddings_under_a_lock == [(1, False)]


def _deleted_while_the_model_decides(http, upstream, monkeypatch) -> None:
    """The peanut allergy remembered; the person deletes it while the next run's model decides
    (after the run checked their deletions, before its write)."""
    from memory.background.extraction import llm

    chat(http, upstream, [OLD_SYSTEM, ALLERGY], NOTED["content"], facts((PEANUTS, 1)))
    [memory] = allergy(http)
    real = llm.ask_json

    def deleted_meanwhile(*args, **kwargs):
        if kwargs.get("system") == llm.UPDATE_PROMPT:
            assert http.delete(f"/v1/memories/{memory['id']}").status_code == 200
        return real(*args, **kwargs)

    monkeypatch.setattr(llm, "ask_json", deleted_meanwhile)


def test_a_memory_deleted_while_the_model_decides_is_not_written_again(http, upstream, monkeypatch):
    """The run checked the user's deletions before asking the model; the deletion came while
    it waited: the run wrote the fact again (once) in its write, after the deletion."""
    _deleted_while_the_model_decides(http, upstream, monkeypatch)
    new = {"role": "user", "content": "I have a dog named Rex."}
    actions = {
        "actions": [
            {"event": "ADD", "text": "Alice is allergic to peanuts", "fact": 0},
            {"event": "ADD", "text": "Alice has a dog named Rex.", "fact": 1},
        ]
    }
    chat(
        http,
        upstream,
        [NEW_SYSTEM, ALLERGY, NOTED, new],
        "Hello Rex!",
        facts(("Alice is allergic to peanuts", 1), ("Alice has a dog named Rex.", 3)),
        Reply(json=openai_completion(json.dumps(actions))),
    )
    assert [m["text"] for m in memories(http)] == ["Alice has a dog named Rex."]


@pytest.mark.parametrize("change", ["delete", "edit"])
def test_a_persons_deletion_waits_for_an_extraction_runs_write(owner, change):
    """A run's write holds the user's lock (shared) from its check of their deletions to its
    commit; a deletion (or edit) made then did not wait, and the run, which had not seen it,
    wrote the fact again. Now it waits for the write, and the next run sees it."""
    import threading

    import psycopg
    from django.db import connection

    from memory.services import memory_create, memory_update
    from memory.services.locks import _lock_key

    workspace = owner[0]
    memory = memory_create(workspace=workspace, user_id="alice", text=PEANUTS)
    db = connection.settings_dict
    url = f"postgresql://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
    done: list[BaseException | None] = []

    def person() -> None:
        try:
            if change == "delete":
                memory_delete(workspace=workspace, memory=memory, actor="api")
            else:
                memory_update(workspace=workspace, memory=memory, text="Alice likes tea.")
            done.append(None)
        except BaseException as exc:
            done.append(exc)
        finally:
            connection.close()

    with psycopg.connect(url) as run:  # an extraction run's write transaction
        run.execute(
            "SELECT pg_advisory_xact_lock_shared(hashtextextended(%s, 0))",
            [_lock_key(workspace.id, "alice")],
        )
        thread = threading.Thread(target=person)
        thread.start()
        waiting = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        deadline, waited = time.monotonic() + 10, False
        while not done and not waited and time.monotonic() < deadline:
            waited = run.execute(waiting).fetchone()[0] > 0
            time.sleep(0.01)
        assert waited and not done, "the deletion did not wait for the run's write"
        run.commit()
    thread.join(timeout=30)
    assert done == [None]
    # the user's subject as one ("alice", their id): memory.forgotten.SUBJECT
    assert MemorySuppression.objects.get().normalized == "user is allergic to peanuts"


def test_a_memory_deleted_while_the_model_finds_it_restated_fails_nothing(
    http, upstream, monkeypatch
):
    """The model's NONE (already known) for a memory deleted while it decided linked the new
    source to a row gone: the chunk's commit failed, the run's other facts with it (retried)."""
    _deleted_while_the_model_decides(http, upstream, monkeypatch)
    new = {"role": "user", "content": "I have a dog named Rex."}
    actions = {
        "actions": [
            {"event": "NONE", "id": "0", "fact": 0},
            {"event": "ADD", "text": "Alice has a dog named Rex.", "fact": 1},
        ]
    }
    resent = chat(
        http,
        upstream,
        [NEW_SYSTEM, ALLERGY, NOTED, new],
        "Hello Rex!",
        facts((PEANUTS, 1), ("Alice has a dog named Rex.", 3)),
        Reply(json=openai_completion(json.dumps(actions))),
    )
    assert [m["text"] for m in memories(http)] == ["Alice has a dog named Rex."]
    jobs = ProcessingJob.objects.filter(conversation__external_id=resent, kind="extract")
    assert [(job.status, job.error) for job in jobs] == [("done", "")]
