# ruff: noqa: F811  (the fixture of tests/test_memory_forgetting.py, imported by name)
"""A memory its user deleted does not reach the model through what was built from the same
messages: the conversation's rolling summary, and its title; nor through the old messages
retrieved for another conversation."""

from __future__ import annotations

import time

import pytest

from memory import tasks
from memory.background.titles import conversation_title_generate
from memory.models import Conversation, ProcessingJob
from tests.test_memory_forgetting import embeddings_under_a_lock  # noqa: F401  (a fixture)
from tests.upstream import Reply, openai_completion

pytestmark = pytest.mark.django_db(transaction=True)

CONVERSATION = "diet"
HEADERS = {"x-user-id": "alice", "x-conversation-id": CONVERSATION}
QUESTION = "What should I avoid eating?"
TURNS = [
    ("I am allergic to peanuts.", "Noted, no peanuts."),
    ("I have a dog named Rex.", "Hello Rex!"),
    ("I live in Paris.", "A lovely city."),
    ("I work as a nurse.", "A demanding job."),
]


@pytest.fixture
def summarized_soon(settings, upstream):
    """A conversation is summarized after a few turns, all but its last two messages."""
    settings.ENGRAM_SUMMARY_TRIGGER_TOKENS = 20
    settings.ENGRAM_SUMMARY_KEEP_MESSAGES = 2
    return upstream


def run_jobs(kind: str) -> None:
    """The conversation's pending jobs of `kind`, run (a turn's are created after its
    response, once its answer is stored)."""
    jobs = ProcessingJob.objects.filter(conversation__external_id=CONVERSATION, kind=kind)
    if kind == "extract":
        deadline = time.monotonic() + 10
        while not jobs.filter(status="pending").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
    for job in jobs.filter(status="pending").order_by("upto_message_id"):
        (tasks.extract if kind == "extract" else tasks.summarize)(job.id)


def turn(http, upstream, text: str, answer: str, *then: Reply) -> None:
    """One turn of alice's in the diet conversation; then its extraction, then its summary
    (`then`: the upstream's replies for those)."""
    upstream_turn(http, upstream, text, answer, *then)
    run_jobs("summarize")


def conversation() -> Conversation:
    return Conversation.objects.get(external_id=CONVERSATION)


def allergy(http) -> list[dict]:
    memories = http.get("/v1/memories", params={"user_id": "alice"}).json()["data"]
    return [m for m in memories if "peanut" in m["text"].lower()]


def summary_seen(http, upstream) -> tuple[str, str]:
    """The summary as /v1/context shows it, and as a chat completion sent it upstream."""
    body = {"model": "m", "messages": [{"role": "user", "content": QUESTION}]}
    context = http.post("/v1/context", json=body, headers=HEADERS)
    assert context.status_code == 200, context.text
    shown = "\n".join(
        m["content"] for m in context.json()["messages"] if "<conversation_summary>" in m["content"]
    )
    upstream.script(Reply(json=openai_completion("Avoid peanuts.")))
    asked = http.post("/v1/chat/completions", json=body, headers=HEADERS)
    assert asked.status_code == 200, asked.text
    sent = upstream.chat_requests()[-1].body["messages"]
    return shown, "\n".join(
        m["content"] for m in sent if "<conversation_summary>" in (m.get("content") or "")
    )


def forget(http, change: str) -> None:
    """alice's allergy forgotten: her memory of it deleted, or edited to another fact."""
    [memory] = allergy(http)
    if change == "delete":
        assert http.delete(f"/v1/memories/{memory['id']}").status_code == 200
    else:
        edited = {"text": "User is allergic to shellfish."}
        assert http.patch(f"/v1/memories/{memory['id']}", json=edited).status_code == 200


def assert_no_peanuts(http, upstream) -> None:
    """Neither /v1/context nor a chat completion's upstream request, nor the conversation as
    the API shows it, says the forgotten fact through its summary; the rest stays."""
    shown, sent = summary_seen(http, upstream)
    detail = http.get(f"/v1/conversations/{CONVERSATION}").json()
    for summary in (shown, sent, detail["summary"]):
        assert "Rex" in summary, summary
        assert "peanut" not in summary.lower(), summary


@pytest.mark.parametrize("change", ["delete", "edit"])
def test_a_forgotten_memory_leaves_the_summary_made_before(
    http, summarized_soon, settings, change, embeddings_under_a_lock
):
    """The offline summary (the facts of each message) kept "User is allergic to peanuts."
    after the memory was deleted, and the model read it in every turn of the conversation.
    The summary's sentences are embedded before the user's lock (their turns wait for it)."""
    settings.ENGRAM_MEMORY_EXTRACTION = "offline"
    for text, answer in TURNS:
        turn(http, summarized_soon, text, answer)
    assert "peanuts" in conversation().summary and "Rex" in conversation().summary
    embeddings_under_a_lock.clear()
    forget(http, change)
    assert len(embeddings_under_a_lock) >= 2  # the fact's, the summary's
    assert not any(locked for _, locked in embeddings_under_a_lock)
    assert_no_peanuts(http, summarized_soon)
    # the conversation's next summaries fold it into what is left
    turn(http, summarized_soon, "I play the violin.", "Lovely.")
    turn(http, summarized_soon, "I am learning Spanish.", "Muy bien.")
    assert "violin" in conversation().summary
    assert_no_peanuts(http, summarized_soon)


def test_a_deleted_memory_leaves_the_llms_summary(http, summarized_soon, settings):
    """The model that summarizes reads the messages without the sentence that said it, and
    what it writes that still says it is left out (its summary was the memory again)."""
    settings.ENGRAM_MEMORY_EXTRACTION = "offline"
    for text, answer in TURNS[:2]:
        upstream_turn(http, summarized_soon, text, answer)
    forget(http, "delete")
    settings.ENGRAM_MEMORY_EXTRACTION = "llm"
    said = "Alice is allergic to peanuts."  # the model's guess from the assistant's answer
    summarized_soon.script(Reply(json=openai_completion(said)))
    run_jobs("summarize")
    assert conversation().summary == ""
    settings.ENGRAM_MEMORY_EXTRACTION = "offline"
    upstream_turn(http, summarized_soon, *TURNS[2])
    settings.ENGRAM_MEMORY_EXTRACTION = "llm"
    summarized_soon.script(Reply(json=openai_completion(f"{said}\nAlice has a dog named Rex.")))
    run_jobs("summarize")
    asked = [r for r in summarized_soon.chat_requests() if "Previous summary" in str(r.body)]
    transcripts = [r.body["messages"][1]["content"] for r in asked]
    assert len(transcripts) == 2 and "Rex" in transcripts[1]
    # (the assistant's "Noted, no peanuts." stays: it says nothing of the user)
    assert not any("allergic" in t for t in transcripts), transcripts
    assert conversation().summary == "Alice has a dog named Rex."
    assert_no_peanuts(http, summarized_soon)


def upstream_turn(http, upstream, text: str, answer: str, *then: Reply) -> None:
    """A turn and its extraction, its summary left to be made (`then`: the upstream's replies
    after the answer)."""
    upstream.script(Reply(json=openai_completion(answer)), *then)
    response = http.post(
        "/v1/chat/completions",
        json={"model": "m", "messages": [{"role": "user", "content": text}]},
        headers=HEADERS,
    )
    assert response.status_code == 200, response.text
    run_jobs("extract")


def test_a_memory_deleted_while_the_summary_is_written_leaves_it(
    http, summarized_soon, settings, monkeypatch
):
    """The summary job read the user's deletions, then asked the model; the memory was
    deleted meanwhile, when the conversation had no summary yet to rewrite: the job's write
    checks their deletions again."""
    from completions.providers import llm

    settings.ENGRAM_MEMORY_EXTRACTION = "offline"
    for text, answer in TURNS[:2]:
        upstream_turn(http, summarized_soon, text, answer)
    settings.ENGRAM_MEMORY_EXTRACTION = "llm"
    real = llm.chat

    def deleted_meanwhile(*args, **kwargs):
        forget(http, "delete")
        return real(*args, **kwargs)

    monkeypatch.setattr(llm, "chat", deleted_meanwhile)
    summarized_soon.script(
        Reply(json=openai_completion("Alice is allergic to peanuts. Alice has a dog named Rex."))
    )
    run_jobs("summarize")
    monkeypatch.setattr(llm, "chat", real)
    assert conversation().summary == "Alice has a dog named Rex."
    assert ProcessingJob.objects.get(kind="summarize").status == "done"
    assert_no_peanuts(http, summarized_soon)


def test_a_deleted_memory_leaves_the_conversations_title(http, summarized_soon, settings):
    """The title is the first user message's words: "I am allergic to peanuts." listed the
    conversation by the fact deleted. It is made again from the first words left."""
    settings.ENGRAM_MEMORY_EXTRACTION = "offline"
    for text, answer in TURNS[:2]:
        upstream_turn(http, summarized_soon, text, answer)
    conversation_title_generate(conversation_id=conversation().pk)
    assert conversation().title == "I am allergic to peanuts."
    forget(http, "delete")
    listed = http.get("/v1/conversations", params={"user_id": "alice"}).json()["data"]
    assert [c["title"] for c in listed] == [""]
    conversation_title_generate(conversation_id=conversation().pk)  # sent on the deletion's commit
    assert http.get(f"/v1/conversations/{CONVERSATION}").json()["title"] == (
        "I have a dog named Rex."
    )


def test_a_deleted_memory_is_not_read_from_the_old_messages_in_another_conversation(
    http, summarized_soon, settings
):
    """Past messages retrieved for a new conversation still said it: "I am allergic to
    peanuts." was the first past message for "What am I allergic to?" after the deletion."""
    settings.ENGRAM_MEMORY_EXTRACTION = "offline"
    said = "I am allergic to peanuts. I have a dog named Rex."
    upstream_turn(http, summarized_soon, said, "Noted.")
    forget(http, "delete")
    elsewhere = {"x-user-id": "alice", "x-conversation-id": "new"}
    context, answer, _ = _asked_after_the_deletion(http, summarized_soon, elsewhere)
    # nor what explains the context: its items, why each was chosen, engram.messages
    assert "peanut" not in context.text and "peanut" not in str(answer.json()["engram"])
    [past_block] = [b for b in context.json()["blocks"] if b["name"] == "retrieved_messages"]
    assert past_block["items"] and all(item["why"] for item in past_block["items"])


def test_only_the_sentences_that_state_the_forgotten_fact_go(owner):
    """The test the extractor's facts pass, no looser: another person's fact, a relative's,
    another allergy stay; a restatement, and the user's own words, go."""
    from memory.forgotten import forgotten_facts, without_forgotten
    from memory.services import memory_create, memory_delete

    workspace = owner[0]
    memory = memory_create(
        workspace=workspace, user_id="alice", text="User is allergic to peanuts."
    )
    memory_delete(workspace=workspace, memory=memory, actor="api")
    forgotten = forgotten_facts(workspace=workspace, user_id="alice")
    summary = [
        "- (3 May 2026) User: I am allergic to peanuts. I have a dog named Rex.",
        "- (3 May 2026) Assistant: Noted.",
        "Alice is severely allergic to peanuts.",
        "Bob is allergic to peanuts. Alice's daughter is allergic to peanuts.",
        "Alice is allergic to shellfish.",
    ]
    assert without_forgotten(forgotten, ["\n".join(summary)]) == [
        "\n".join(
            [
                "- (3 May 2026) User: I have a dog named Rex.",
                "- (3 May 2026) Assistant: Noted.",
                "Bob is allergic to peanuts. Alice's daughter is allergic to peanuts.",
                "Alice is allergic to shellfish.",
            ]
        )
    ]
    nothing = forgotten_facts(workspace=workspace, user_id="bob")
    assert without_forgotten(nothing, summary) == summary


@pytest.mark.parametrize("named", ["session", "conversation"])
def test_a_deleted_memory_is_not_read_from_its_own_conversations_retrieved_messages(
    http, summarized_soon, settings, monkeypatch, named
):
    """A turn of the same conversation retrieves its older messages like any other past
    messages (a session's turn, which is served no history; a conversation longer than the
    window of stored rows served as its history): those lose the forgotten fact too. The
    window served as the conversation's history is its transcript and stays as it was."""
    from memory.turn import conversation as turns

    settings.ENGRAM_MEMORY_EXTRACTION = "offline"
    monkeypatch.setattr(turns, "HISTORY_ROWS", 2)  # the last turn, the window served
    headers = {"x-user-id": "alice"}
    headers |= {"x-session-id": "s1"} if named == "session" else {"x-conversation-id": "own"}
    said = [
        ("I am allergic to peanuts. I have a dog named Rex.", "Noted."),
        ("I live in Paris.", "A lovely city."),
    ]
    for text, answer in said:
        summarized_soon.script(Reply(json=openai_completion(answer)))
        body = {"model": "m", "messages": [{"role": "user", "content": text}]}
        assert http.post("/v1/chat/completions", json=body, headers=headers).status_code == 200
    deadline = time.monotonic() + 10
    while not allergy(http) and time.monotonic() < deadline:
        for job in ProcessingJob.objects.filter(kind="extract", status="pending"):
            tasks.extract(job.id)
        time.sleep(0.05)
    [memory] = allergy(http)
    assert http.delete(f"/v1/memories/{memory['id']}").status_code == 200
    _, _, seen = _asked_after_the_deletion(http, summarized_soon, headers)
    for messages in seen:
        if named == "conversation":  # the window: its transcript, as it was
            assert {"role": "user", "content": "I live in Paris."} in messages


def test_a_deleted_memory_leaves_the_summary_that_says_it_in_other_words(
    http, summarized_soon, settings
):
    """The model's summary said the fact its own way: "They mentioned a peanut allergy."
    (0.83 from "User is allergic to peanuts.", below the 0.92 a restatement reaches) stayed
    in the summary after the deletion. It goes; a relative's allergy, in the same words,
    stays."""
    settings.ENGRAM_MEMORY_EXTRACTION = "offline"
    for text, answer in TURNS[:2]:
        upstream_turn(http, summarized_soon, text, answer)
    settings.ENGRAM_MEMORY_EXTRACTION = "llm"
    written = [
        "They mentioned a peanut allergy.",
        "Alice has a dog named Rex.",
        "Her daughter has a peanut allergy too.",
    ]
    summarized_soon.script(Reply(json=openai_completion("\n".join(written))))
    run_jobs("summarize")
    assert conversation().summary == "\n".join(written)
    settings.ENGRAM_MEMORY_EXTRACTION = "offline"
    forget(http, "delete")
    shown, sent = summary_seen(http, summarized_soon)
    detail = http.get(f"/v1/conversations/{CONVERSATION}").json()
    for summary in (shown, sent, detail["summary"]):
        assert "Alice has a dog named Rex." in summary, summary
        assert "Her daughter has a peanut allergy too." in summary, summary
        assert "mentioned" not in summary, summary


def _asked_after_the_deletion(http, upstream, headers: dict) -> tuple:
    """The question "What am I allergic to? Rex?" at /v1/context and as a chat: the context and
    the answer, and the messages each showed the model, whose past messages say the dog and not
    the deleted allergy."""
    body = {"model": "m", "messages": [{"role": "user", "content": "What am I allergic to? Rex?"}]}
    context = http.post("/v1/context", json=body, headers=headers)
    assert context.status_code == 200, context.text
    upstream.script(Reply(json=openai_completion("I do not know.")))
    answer = http.post("/v1/chat/completions", json=body, headers=headers)
    assert answer.status_code == 200, answer.text
    seen = [context.json()["messages"], upstream.chat_requests()[-1].body["messages"]]
    for messages in seen:
        [past] = [m["content"] for m in messages if "<past_messages>" in m["content"]]
        assert "User: I have a dog named Rex." in past, past
        assert "peanut" not in past, past
    return context, answer, seen


def _without(owner, fact: str, summary: list[str]) -> list[str]:
    """The summary's lines after the user alice deleted the memory `fact`."""
    from memory.forgotten import forgotten_facts, without_forgotten
    from memory.services import memory_create, memory_delete

    workspace = owner[0]
    memory = memory_create(workspace=workspace, user_id="alice", text=fact)
    memory_delete(workspace=workspace, memory=memory, actor="api")
    forgotten = forgotten_facts(workspace=workspace, user_id="alice")
    return without_forgotten(forgotten, ["\n".join(summary)])[0].split("\n")


def test_a_name_the_forgotten_fact_shares_says_it_only_through_the_same_relation(owner):
    """Deleting "User is married to Tom." took "Alice is friends with Tom." with it (0.797, the
    name shared): it stays, as does a coworker Tom's wedding; the user's husband Tom, the
    same fact from his side, goes."""
    summary = [
        "Alice is friends with Tom.",
        "Alice's husband is Tom.",
        "Alice's coworker Tom got married.",
        "Tom is the user's husband.",
    ]
    assert _without(owner, "User is married to Tom.", summary) == [
        "Alice is friends with Tom.",
        "Alice's coworker Tom got married.",
    ]


def test_she_after_someone_elses_sentence_is_that_person(owner):
    """A leading "She" was read as the user's always: Mia's allergy went with the user's. It
    names the previous sentence's person when that is someone else who may be called so; a
    brother is not a "she", and the user's own sentence before it makes it hers."""
    summary = [
        "Her sister Mia visited. She is allergic to peanuts.",
        "Alice's cousin Eva came over; she is allergic to peanuts too.",
        "Her brother Jon visited. She is allergic to peanuts.",
        "Alice moved to Porto. She is allergic to peanuts.",
        "The user's mother is allergic to peanuts.",
    ]
    assert _without(owner, "User is allergic to peanuts.", summary) == [
        "Her sister Mia visited. She is allergic to peanuts.",
        "Alice's cousin Eva came over; she is allergic to peanuts too.",
        "Her brother Jon visited.",
        "Alice moved to Porto.",
        "The user's mother is allergic to peanuts.",
    ]


def test_a_fact_after_a_semicolon_goes_alone(owner):
    """The sentence went whole: the tea went with the peanuts. Only the clause goes, the one
    before it ending the sentence; a clause of the user's own words too."""
    summary = [
        "User likes tea; she is allergic to peanuts.",
        "She is allergic to peanuts; she likes tea.",
        "- (3 May 2026) User: I like tea; I am allergic to peanuts.",
    ]
    assert _without(owner, "User is allergic to peanuts.", summary) == [
        "User likes tea.",
        "She likes tea.",
        "- (3 May 2026) User: I like tea.",
    ]
