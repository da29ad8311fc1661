"""prepare_turn / finish_turn called as the gateway calls them (async, with a TurnContext)."""

from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import async_to_sync

from memory.models import Conversation, Message, ProcessingJob, Session
from memory.services import memory_create
from memory.turn.contract import TurnContext
from memory.turn.pipeline import finish_turn, prepare_turn
from tests.factories import make_workspace

pytestmark = pytest.mark.django_db


def ctx(workspace, messages, **kwargs) -> TurnContext:
    body = {"model": kwargs.pop("model", "gpt-4o-mini"), "messages": messages}
    body.update(kwargs.pop("body", {}))
    return TurnContext(
        workspace=workspace,
        api_key_id=None,
        request_id="req_test",
        body=body,
        model=body["model"],
        **kwargs,
    )


prepare = async_to_sync(prepare_turn)


def finish(context, prepared, content="ok", **kwargs):
    kwargs.setdefault("usage", {"prompt_tokens": 10, "completion_tokens": 2})
    kwargs.setdefault("incomplete", False)
    assistant = kwargs.pop("assistant", {"role": "assistant", "content": content})
    async_to_sync(finish_turn)(context, prepared, assistant=assistant, **kwargs)


def turn(context, content="ok", **kwargs):
    prepared = prepare(context)
    finish(context, prepared, content, **kwargs)
    return prepared


def test_no_user_is_a_pure_pass_through():
    workspace, _ = make_workspace()
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    prepared = prepare(ctx(workspace, messages))
    assert prepared.messages == messages
    assert prepared.engram == {} and prepared.headers == {}
    finish(ctx(workspace, messages), prepared)
    assert not Conversation.objects.exists() and not Message.objects.exists()
    assert not Session.objects.exists() and not ProcessingJob.objects.exists()


def test_first_turn_stores_messages_and_creates_a_session(django_capture_on_commit_callbacks):
    workspace, _ = make_workspace()
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"}]
    context = ctx(workspace, messages, user_id="u1", conversation_id="c1", session_id="s-new")
    prepared = prepare(context)
    assert prepared.engram["session_id"] == "s-new"
    assert prepared.headers["x-session-id"] == "s-new"
    assert prepared.engram["conversation_id"] == "c1"
    assert int(prepared.headers["x-engram-context-tokens"]) == prepared.engram["context_tokens"] > 0
    session = Session.objects.get(workspace=workspace, external_id="s-new")
    assert session.user_id == "u1" and session.conversation.external_id == "c1"
    stored = list(Message.objects.filter(conversation__external_id="c1"))
    assert [(m.role, m.content) for m in stored] == [("user", "Hi there")]  # system not stored
    assert stored[0].session_id == session.pk and stored[0].token_count > 0
    assert "User: Hi there" in stored[0].search_text

    tool_calls = [
        {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    ]
    with django_capture_on_commit_callbacks() as callbacks:
        finish(
            context,
            prepared,
            assistant={"role": "assistant", "content": None, "tool_calls": tool_calls},
            usage={"prompt_tokens": 31, "completion_tokens": 9},
        )
    reply = Message.objects.filter(role="assistant").get()
    assert reply.tool_calls == tool_calls and reply.raw["tool_calls"] == tool_calls
    assert (reply.prompt_tokens, reply.completion_tokens, reply.incomplete) == (31, 9, False)
    job = ProcessingJob.objects.get(kind="extract")
    assert job.status == "pending" and job.upto_message_id == reply.id
    assert len(callbacks) == 1  # the extraction task is sent on commit


def test_without_a_session_id_one_is_made_and_reused_while_active():
    workspace, _ = make_workspace()
    first = turn(
        ctx(workspace, [{"role": "user", "content": "one"}], user_id="u", conversation_id="c")
    )
    sid = first.engram["session_id"]
    assert sid and sid.startswith("sess_") and first.headers["x-session-id"] == sid
    second = prepare(
        ctx(workspace, [{"role": "user", "content": "two"}], user_id="u", conversation_id="c")
    )
    assert second.engram["session_id"] == sid


# Statements a remembered turn sends (x-user-id and x-conversation-id, a conversation that
# goes on: the soak's turn), prepare and finish together, the test's savepoints and the two
# rankings (on another connection outside a test) included. Each statement is CPU in the web
# process and in PostgreSQL on every such turn (bench/README.md, "Twenty-fourth session").
REMEMBERED_TURN_STATEMENTS = 15


def test_a_remembered_turn_sends_no_more_statements_than_it_did(django_capture_on_commit_callbacks):
    """A guard, not a target: a statement added to every remembered turn fails it (lower the
    count when one goes)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    workspace, _ = make_workspace()
    text = "I moved to Lisbon last spring and I sail on weekends. What should I pack?"
    context = ctx(workspace, [{"role": "user", "content": text}], user_id="u", conversation_id="c")
    with django_capture_on_commit_callbacks():
        turn(context, "Pack a jacket.")
        with CaptureQueriesContext(connection) as statements:
            prepared = turn(context, "Pack a jacket.")
        with connection.cursor() as cursor:
            cursor.execute("SHOW synchronous_commit")  # the first commit's, still the test's
            relaxed = cursor.fetchone()[0]
    sent = "\n".join(q["sql"][:120] for q in statements)
    assert len(statements) <= REMEMBERED_TURN_STATEMENTS, sent
    assert relaxed == "off"
    assert prepared.engram["conversation_id"] == "c" and prepared.state.stored_ids
    stored = Message.objects.filter(conversation__external_id="c").values_list("role", flat=True)
    assert list(stored) == ["user", "assistant"] * 2
    assert ProcessingJob.objects.filter(kind="extract").count() == 2


@pytest.mark.parametrize("short", [0, 1])
def test_the_answer_counts_toward_the_summary_trigger(
    settings, django_capture_on_commit_callbacks, short
):
    """The finish counts the unsummarized tokens before it stores the answer (one statement
    with the conversation's read): the answer's own tokens must still count, so a trigger
    that only the answer reaches folds the turn into a summary, and one token more does not."""
    from memory.text import count_message

    settings.ENGRAM_SUMMARY_KEEP_MESSAGES = 0
    workspace, _ = make_workspace()
    context = ctx(
        workspace,
        [{"role": "user", "content": "Tell me about Lisbon."}],
        user_id="u",
        conversation_id="c",
    )
    answer = "Lisbon is the hilly, sunny capital of Portugal."
    with django_capture_on_commit_callbacks():
        prepared = prepare(context)
        request = Message.objects.get(role="user").token_count
        reply = count_message({"role": "assistant", "content": answer})
        settings.ENGRAM_SUMMARY_TRIGGER_TOKENS = request + reply + short
        finish(context, prepared, answer)
    summaries = ProcessingJob.objects.filter(kind="summarize")
    if short:
        assert not summaries.exists()
    else:
        assert summaries.get().upto_message_id == Message.objects.get(role="assistant").id


def test_an_idle_session_ends_and_the_next_turn_opens_another(settings):
    """The current session is read with the conversation (one statement): one idle past
    ENGRAM_SESSION_IDLE_MINUTES is not it, nor another conversation's."""
    import datetime as dt

    from django.utils import timezone

    workspace, _ = make_workspace()

    def asked(conversation_id, text):
        context = ctx(
            workspace,
            [{"role": "user", "content": text}],
            user_id="u",
            conversation_id=conversation_id,
        )
        return turn(context).engram["session_id"]

    first = asked("c", "one")
    elsewhere = asked("other", "two")
    idle = dt.timedelta(minutes=settings.ENGRAM_SESSION_IDLE_MINUTES, seconds=5)
    Session.objects.filter(external_id=first).update(last_active_at=timezone.now() - idle)
    second = asked("c", "three")
    assert second not in (first, elsewhere)
    assert asked("c", "four") == second
    sessions = Message.objects.filter(conversation__external_id="c").values_list(
        "session__external_id", flat=True
    )
    assert list(sessions.order_by("created_at")) == [first] * 2 + [second] * 4


def test_a_stream_cut_midway_is_stored_incomplete():
    workspace, _ = make_workspace()
    context = ctx(
        workspace, [{"role": "user", "content": "tell me"}], user_id="u", conversation_id="c"
    )
    prepared = prepare(context)
    finish(context, prepared, "Once upon a", incomplete=True, usage=None)
    reply = Message.objects.get(role="assistant")
    assert reply.incomplete and reply.content == "Once upon a"


def test_server_side_history_puts_earlier_turns_back():
    workspace, _ = make_workspace()
    system = {"role": "system", "content": "You are helpful."}
    turn(
        ctx(
            workspace,
            [system, {"role": "user", "content": "My cat is called Miso."}],
            user_id="u",
            conversation_id="c",
        ),
        "Nice name!",
    )
    second = prepare(
        ctx(
            workspace,
            [system, {"role": "user", "content": "What is my cat's name?"}],
            user_id="u",
            conversation_id="c",
        )
    )
    roles_contents = [(m["role"], m.get("content")) for m in second.messages]
    assert roles_contents[0] == ("system", "You are helpful.")
    conversation = [rc for rc in roles_contents if rc[0] != "system"]
    assert conversation == [
        ("user", "My cat is called Miso."),
        ("assistant", "Nice name!"),
        ("user", "What is my cat's name?"),
    ]
    assert second.engram["history_messages"] == 2


def test_resending_the_full_history_stores_no_duplicates():
    workspace, _ = make_workspace()
    u1 = {"role": "user", "content": "I play the cello."}
    turn(ctx(workspace, [u1], user_id="u", conversation_id="c"), "Lovely.")
    a1 = {"role": "assistant", "content": "Lovely."}
    u2 = {"role": "user", "content": "And the piano."}
    prepared = turn(ctx(workspace, [u1, a1, u2], user_id="u", conversation_id="c"), "Great.")
    stored = [(m.role, m.content) for m in Message.objects.order_by("created_at", "id")]
    assert stored == [
        ("user", "I play the cello."),
        ("assistant", "Lovely."),
        ("user", "And the piano."),
        ("assistant", "Great."),
    ]
    # what the client resent is sent once, not doubled by history
    assert [m["content"] for m in prepared.messages if m["role"] != "system"] == [
        "I play the cello.",
        "Lovely.",
        "And the piano.",
    ]


def test_without_conversation_id_a_resent_history_lands_in_one_conversation():
    workspace, _ = make_workspace()
    u1 = {"role": "user", "content": "hello from a stateless client"}
    turn(ctx(workspace, [u1], user_id="u"), "hi!")
    turn(
        ctx(
            workspace,
            [u1, {"role": "assistant", "content": "hi!"}, {"role": "user", "content": "second"}],
            user_id="u",
        ),
        "yes",
    )
    assert Conversation.objects.count() == 1
    assert Message.objects.count() == 4


def test_next_prepare_waits_for_an_in_flight_finish():
    workspace, _ = make_workspace()

    async def scenario():
        first_ctx = ctx(
            workspace,
            [{"role": "user", "content": "Remember: blue door."}],
            user_id="u",
            conversation_id="c",
        )
        prepared = await prepare_turn(first_ctx)
        # the gateway schedules finish_turn and answers; the next request arrives at once
        asyncio.get_running_loop().create_task(
            finish_turn(
                first_ctx,
                prepared,
                assistant={"role": "assistant", "content": "Noted."},
                usage=None,
                incomplete=False,
            )
        )
        await asyncio.sleep(0)
        second = await prepare_turn(
            ctx(
                workspace,
                [{"role": "user", "content": "Which door?"}],
                user_id="u",
                conversation_id="c",
            )
        )
        return second

    second = async_to_sync(scenario)()
    contents = [m["content"] for m in second.messages]
    assert contents[-3:] == ["Remember: blue door.", "Noted.", "Which door?"]


def test_dry_run_stores_nothing():
    workspace, _ = make_workspace()
    prepared = prepare_turn_dry(
        ctx(
            workspace,
            [{"role": "user", "content": "hi"}],
            user_id="u",
            conversation_id="c",
            session_id="s",
        )
    )
    assert prepared.state is None and prepared.explain["context_tokens"] > 0
    assert not Conversation.objects.exists() and not Session.objects.exists()
    assert not Message.objects.exists()


def prepare_turn_dry(context):
    return async_to_sync(prepare_turn)(context, dry_run=True)


def test_memories_reach_the_context_in_a_dated_block_for_that_user_only():
    workspace, _ = make_workspace()
    other_ws, _ = make_workspace("other")
    memory_create(workspace=workspace, user_id="alice", text="Alice is allergic to peanuts.")
    memory_create(workspace=workspace, user_id="bob", text="Bob is allergic to shellfish.")
    memory_create(workspace=other_ws, user_id="alice", text="Alice is allergic to kiwis.")
    question = [{"role": "user", "content": "Which food allergy do I have?"}]
    prepared = prepare(ctx(workspace, question, user_id="alice"))
    blocks = [m["content"] for m in prepared.messages if m["role"] == "system"]
    assert len(blocks) == 1 and "<memories>" in blocks[0] and "</memories>" in blocks[0]
    assert "Alice is allergic to peanuts." in blocks[0]
    assert "shellfish" not in str(prepared.messages) and "kiwis" not in str(prepared.messages)
    assert (
        prepared.engram["memories_used"] == 1 and prepared.headers["x-engram-memories-used"] == "1"
    )


def test_another_users_conversation_is_forbidden():
    from completions.request import api_error
    from config.common.errors import Forbidden
    from memory.models import Conversation

    workspace, _ = make_workspace()
    turn(
        ctx(workspace, [{"role": "user", "content": "mine"}], user_id="alice", conversation_id="c")
    )
    # By Engram's conv_ id: a client's id is each user's ("c" names bob's own).
    alices = Conversation.objects.get(external_id="c").id
    with pytest.raises(Forbidden) as error:
        prepare(
            ctx(
                workspace,
                [{"role": "user", "content": "peek"}],
                user_id="bob",
                conversation_id=alices,
            )
        )
    assert api_error(error.value).status == 403


def test_max_tokens_shrinks_the_budget(settings):
    settings.ENGRAM_DEFAULT_CONTEXT_WINDOW = 600
    workspace, _ = make_workspace()
    for i in range(12):
        turn(
            ctx(
                workspace,
                [{"role": "user", "content": f"Fact number {i}: " + "words " * 20}],
                model="unknown-model",
                user_id="u",
                conversation_id="c",
            ),
            "ok " * 10,
        )
    question = [{"role": "user", "content": "summarize"}]
    roomy = prepare_turn_dry(
        ctx(
            workspace,
            question,
            model="unknown-model",
            user_id="u",
            conversation_id="c",
            body={"max_tokens": 100},
        )
    )
    tight = prepare_turn_dry(
        ctx(
            workspace,
            question,
            model="unknown-model",
            user_id="u",
            conversation_id="c",
            body={"max_completion_tokens": 400},
        )
    )
    assert roomy.explain["context_tokens"] <= 500
    assert tight.explain["context_tokens"] <= 200
    assert roomy.engram["history_messages"] > tight.engram["history_messages"]


def test_collection_chunks_get_a_delimited_block_and_are_listed_as_sources():
    from memory.embeddings import get_embedder
    from memory.models import Chunk, Collection, Document

    workspace, _ = make_workspace()
    collection = Collection.objects.create(workspace=workspace, name="handbook")
    document = Document.objects.create(
        workspace=workspace,
        collection=collection,
        title="Travel policy",
        content_hash="h",
        raw=b"",
        status="ready",
    )
    text = "Economy class is required for flights shorter than six hours."
    Chunk.objects.create(
        workspace=workspace,
        collection=collection,
        document=document,
        chunk_index=0,
        text=text,
        search_text=text,
        embedding=get_embedder().embed_one(text),
    )
    prepared = prepare(
        ctx(
            workspace,
            [{"role": "user", "content": "Which class for short flights?"}],
            user_id="u",
            collection_ids=[collection.id],
        )
    )
    block = next(m["content"] for m in prepared.messages if "<knowledge>" in str(m.get("content")))
    assert "Travel policy" in block and text in block
    assert prepared.engram["sources"][0]["document_id"] == document.id


def test_tool_results_sent_alone_travel_with_their_stored_call():
    workspace, _ = make_workspace()
    call = {
        "id": "call_9",
        "type": "function",
        "function": {"name": "weather", "arguments": '{"city":"Oslo"}'},
    }
    context = ctx(
        workspace,
        [{"role": "user", "content": "Weather in Oslo?"}],
        user_id="u",
        conversation_id="tools",
    )
    prepared = prepare(context)
    finish(
        context, prepared, assistant={"role": "assistant", "content": None, "tool_calls": [call]}
    )
    result = {"role": "tool", "tool_call_id": "call_9", "content": "4°C, snow"}
    second = prepare(ctx(workspace, [result], user_id="u", conversation_id="tools"))
    assert [m["role"] for m in second.messages] == ["user", "assistant", "tool"]
    assert second.messages[1]["tool_calls"] == [call] and second.messages[2] == result


def test_matching_what_a_client_resent():
    from memory.turn.conversation import matched_prefix

    def m(*texts):
        return [
            {"role": "user" if i % 2 == 0 else "assistant", "content": t}
            for i, t in enumerate(texts)
        ]

    stored = m("a", "b", "c", "d")
    assert (
        matched_prefix(stored, m("a", "b", "c", "d") + [{"role": "user", "content": "e"}]).incoming
        == 4
    )
    assert matched_prefix(stored, m("c", "d")).incoming == 2  # a sliding window of the history
    assert (
        matched_prefix(stored, [{"role": "user", "content": "e"}]).incoming == 0
    )  # only the new one
    assert matched_prefix([], m("a", "b")).incoming == 0
    # a resent history longer than the loaded window of a long conversation
    long = m(*[str(i) for i in range(10)])
    window = long[-4:]
    assert (
        matched_prefix(window, long + [{"role": "user", "content": "new"}], truncated=True).incoming
        == 10
    )
    assert matched_prefix(window, long, truncated=False).incoming == 0


def test_matching_a_resent_transcript_skips_the_tool_steps_the_store_holds():
    from memory.turn.conversation import Match, matched_prefix

    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    question = {"role": "user", "content": "Weather?"}
    answer = {"role": "assistant", "content": "Sunny."}
    stored = [
        question,
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 21°C"},
        answer,
    ]
    new = {"role": "user", "content": "And tomorrow?"}
    for shown in (
        [answer],  # the JSON answer
        [
            {**answer, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_1", "content": "?"},
        ],
        stored[1:],  # calls and results as their own messages
    ):
        assert matched_prefix(stored, [question, *shown, new]) == Match(len(shown) + 1, 4)
    # Only the newest turn resent: the stored rows before it stay history.
    assert matched_prefix(stored, [answer, new]) == Match(1, 1)
    # A call the store does not hold, or a result it has not stored, is the client's, new.
    mine = {"id": "call_2", "type": "function", "function": {"name": "g", "arguments": "{}"}}
    ask = {"role": "assistant", "content": None, "tool_calls": [mine]}
    assert matched_prefix(stored, [question, answer, ask]) == Match(2, 4)
    waiting = [question, {"role": "assistant", "content": None, "tool_calls": [call]}]
    result = {"role": "tool", "tool_call_id": "call_1", "content": "done by the client"}
    assert matched_prefix(waiting, [question, waiting[1], result]) == Match(2, 2)
    # Different tool traffic is no match: a call the store lacks, inside the history.
    assert matched_prefix(stored, [question, ask, answer, new]).incoming == 0


def test_text_matching_ignores_words_most_of_the_users_rows_contain():
    from memory.retrieval import messages as message_ranking
    from memory.retrieval import terms
    from memory.services import conversation_get_or_create, messages_import

    workspace, _ = make_workspace()
    conversation, _ = conversation_get_or_create(workspace=workspace, external_id="c", user_id="u")
    said = [f"Caroline talked about topic number {i}." for i in range(29)]
    said.append("Caroline started a pottery class.")
    messages_import(
        workspace=workspace,
        conversation=conversation,
        messages=[{"role": "user", "content": t} for t in said],
    )
    stats = terms.term_stats(workspace_id=workspace.id, user_id="u")
    kept = terms.selective("caroline | pottery | nothing", stats=stats)
    # The name is in every row; a word in none is kept (a row newer than the cached statistics
    # may hold it) but matches nothing.
    assert kept == "pottery | nothing"
    hits = message_ranking.ranked(
        workspace_id=workspace.id,
        user_id="u",
        query="Caroline pottery?",
        vector=None,
        exclude_ids=[],
    )
    # Past messages rank by BM25: a word in every row carries no weight, the rare one decides.
    ranked = sorted(hits, key=lambda h: h.score, reverse=True)
    assert ranked[0].row["content"] == "Caroline started a pottery class."
    assert ranked[0].ranks["text"] == 1 and ranked[0].score > ranked[1].score


def test_finishing_a_turn_takes_the_same_few_queries_however_long_the_conversation(
    django_assert_max_num_queries,
):
    """The answer, its extraction job and the summary check: no query per stored message."""
    workspace, _ = make_workspace()
    context = ctx(
        workspace,
        [{"role": "user", "content": "I live in Oslo."}],
        user_id="u1",
        conversation_id="c1",
    )
    for _ in range(6):
        prepared = prepare(context)
        # the conversation and its session (1), SET LOCAL (1), the user's lock against an
        # erasure (1), the answer (1), the last extraction job's range (1), the new job in a
        # savepoint (3), the summary's tokens (1), and the test's savepoint for the finish's
        # transaction (2); 15 before
        with django_assert_max_num_queries(11):
            finish(context, prepared)
    assert Message.objects.filter(conversation__external_id="c1").count() == 12
    assert ProcessingJob.objects.filter(kind="extract").count() == 6


def test_an_answer_whose_user_was_erased_meanwhile_is_not_stored():
    from memory.services import user_delete

    workspace, _ = make_workspace()
    context = ctx(
        workspace, [{"role": "user", "content": "Hi"}], user_id="u1", conversation_id="c1"
    )
    prepared = prepare(context)
    assert Message.objects.filter(user_id="u1").count() == 1
    user_delete(workspace=workspace, user_id="u1")  # during the upstream call
    finish(context, prepared, "Hello")  # no error: the answer has nowhere to go
    assert not Message.objects.filter(user_id="u1").exists()
    assert not Conversation.objects.filter(user_id="u1").exists()


def test_an_erased_user_s_answer_is_not_stored_with_the_web_clock_behind_the_database_s(
    monkeypatch,
):
    """A web process whose clock runs behind the database host's by more than the database
    server has been up (a server restarted a few seconds ago, a clock a few seconds behind):
    the conversation its first turn created looked older than the server's start, and its
    erasure during the upstream call was taken for a crash that lost it — the erased user's
    turn was stored again. The conversation's time is the database's."""
    import datetime as dt

    from django.db import connection
    from django.utils import timezone

    from memory.services import user_delete

    with connection.cursor() as cursor:
        cursor.execute("SELECT now() - pg_postmaster_start_time()")
        [(uptime,)] = cursor.fetchall()
    behind = uptime + dt.timedelta(minutes=1)
    real_now = timezone.now
    monkeypatch.setattr(timezone, "now", lambda: real_now() - behind)
    workspace, _ = make_workspace()
    context = ctx(
        workspace, [{"role": "user", "content": "Hi"}], user_id="u1", conversation_id="c1"
    )
    prepared = prepare(context)  # the conversation's first turn: created by its request
    user_delete(workspace=workspace, user_id="u1")  # during the upstream call
    finish(context, prepared, "Hello")
    assert not Message.objects.filter(user_id="u1").exists()
    assert not Conversation.objects.filter(user_id="u1").exists()


def test_an_answer_whose_session_was_deleted_meanwhile_is_stored_without_one():
    workspace, _ = make_workspace()
    messages = [{"role": "user", "content": "Hi there"}]
    context = ctx(workspace, messages, user_id="u1", conversation_id="c1", session_id="s1")
    prepared = prepare(context)
    Session.objects.filter(external_id="s1").delete()
    finish(context, prepared, "Hello")
    answer = Message.objects.get(conversation__external_id="c1", role="assistant")
    assert answer.content == "Hello" and answer.session_id is None


def test_matching_a_regenerated_answer():
    from memory.turn.conversation import Match, matched_prefix

    def m(*texts):
        return [
            {"role": "user" if i % 2 == 0 else "assistant", "content": t}
            for i, t in enumerate(texts)
        ]

    stored = m("a", "b", "c", "d")
    # Resent without its last answer: asks for it again; the answer is not history before it.
    assert matched_prefix(stored, m("a", "b", "c")) == Match(3, 4)
    # A client sending only its new message, the same as its last one: new, stored.
    assert matched_prefix(stored, m("c")).incoming == 0
    again = [*stored, {"role": "assistant", "content": "d2"}]
    # Either answer may be the one the client kept.
    for kept in ("d", "d2"):
        resent = [*m("a", "b", "c"), {"role": "assistant", "content": kept}]
        assert matched_prefix(again, [*resent, {"role": "user", "content": "e"}]) == Match(4, 5)
    assert matched_prefix(again, m("a", "b", "c")) == Match(3, 5)  # a second regenerate


def test_matching_a_transcript_resent_from_the_start_that_leaves_out_stored_messages():
    from memory.turn.conversation import Match, matched_prefix

    def m(*texts):
        return [
            {"role": "user" if i % 2 == 0 else "assistant", "content": t}
            for i, t in enumerate(texts)
        ]

    stored = m("a", "b", "c", "d")
    assert matched_prefix(stored, m("a", "b", "c2")) == Match(2, 4)  # c edited: c2 is new
    assert matched_prefix(stored, m("a")).incoming == 0  # only a new message, as the first
    assert matched_prefix(stored, m("b", "c2")).incoming == 0  # not from the start
    window = m("x", "y", *[t for t in "abcd"])[2:]
    assert matched_prefix(window, m("a", "b", "c2"), truncated=True).incoming == 0
