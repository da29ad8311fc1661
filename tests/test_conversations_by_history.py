"""Without x-conversation-id, the history a client resends names its conversation: two chats
that both begin with "Hi" stay two conversations, and a client resending its transcript (the
OpenAI SDK's normal use) continues its own, whatever the spacing of the replies it echoes."""

import time

import openai
import pytest

from memory.models import Conversation, Message
from memory.turn.conversation import fingerprint, resent_history
from tests.test_memory_turns import ctx, finish, prepare
from tests.upstream import Reply, openai_completion, openai_stream

SYSTEM = {"role": "system", "content": "You are a helpful assistant."}


@pytest.fixture
def sdk(engram_server, owner, upstream):
    return openai.OpenAI(
        base_url=f"{engram_server.url}/v1",
        api_key=owner[1],
        max_retries=0,
        default_headers={"x-user-id": "alice"},
    )


def _ask(sdk, messages, *, stream=False) -> tuple[str, dict]:
    """(the reply's text, the `engram` object)"""
    if stream:
        chunks = list(sdk.chat.completions.create(model="m", messages=messages, stream=True))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        engram = next(
            c.model_extra["engram"] for c in chunks if (c.model_extra or {}).get("engram")
        )
        return text, engram
    completion = sdk.chat.completions.create(model="m", messages=messages)
    return completion.choices[0].message.content, completion.model_extra["engram"]


def _settled(count: int) -> None:
    """Wait for the replies stored after the responses (so none is written after the test)."""
    deadline = time.monotonic() + 10
    while Message.objects.count() < count and time.monotonic() < deadline:
        time.sleep(0.05)
    assert Message.objects.count() == count


def _transcript(conversation_id: str, length: int) -> list[tuple[str, str]]:
    """The stored messages, once `length` are (the last reply is stored after the response)."""
    conversation = Conversation.objects.get(external_id=conversation_id)
    rows = Message.objects.filter(conversation=conversation).order_by("created_at", "id")
    deadline = time.monotonic() + 10
    while rows.count() < length and time.monotonic() < deadline:
        time.sleep(0.05)
    return [(m.role, m.content) for m in rows]


def test_two_chats_that_begin_with_hi_are_two_conversations(sdk, upstream):
    upstream.script(
        Reply(json=openai_completion("Hello! How can I help?")),
        Reply(json=openai_completion("Hi there, what's up?")),
        Reply(json=openai_completion("Cats are great.")),
        Reply(json=openai_completion("Dogs are loyal.")),
    )
    hi = {"role": "user", "content": "Hi"}
    reply_a, first_a = _ask(sdk, [SYSTEM, hi])
    reply_b, first_b = _ask(sdk, [SYSTEM, hi])
    assert first_a["conversation_id"] != first_b["conversation_id"]
    assert first_a["session_id"] != first_b["session_id"]
    chat_a = [SYSTEM, hi, {"role": "assistant", "content": reply_a}]
    chat_b = [SYSTEM, hi, {"role": "assistant", "content": reply_b}]
    _, second_a = _ask(sdk, [*chat_a, {"role": "user", "content": "Tell me about cats."}])
    _, second_b = _ask(sdk, [*chat_b, {"role": "user", "content": "Tell me about dogs."}])
    assert second_a["conversation_id"] == first_a["conversation_id"]
    assert second_b["conversation_id"] == first_b["conversation_id"]
    assert second_a["session_id"] == first_a["session_id"]
    assert Conversation.objects.count() == 2
    assert _transcript(first_a["conversation_id"], 4) == [
        ("user", "Hi"),
        ("assistant", "Hello! How can I help?"),
        ("user", "Tell me about cats."),
        ("assistant", "Cats are great."),
    ]
    assert _transcript(first_b["conversation_id"], 4) == [
        ("user", "Hi"),
        ("assistant", "Hi there, what's up?"),
        ("user", "Tell me about dogs."),
        ("assistant", "Dogs are loyal."),
    ]


def test_resending_the_full_history_continues_one_conversation(sdk, upstream):
    upstream.script(
        Reply(json=openai_completion("Nice to meet you,  Alice.\n")),
        Reply(stream=openai_stream(["Paris ", "is lovely ", "in spring."])),
        Reply(json=openai_completion("You said Paris.")),
    )
    history = [SYSTEM, {"role": "user", "content": "My name is Alice."}]
    conversation_ids, session_ids = set(), set()
    for turn, question in enumerate([None, "I am going to Paris.", "Where am I going?"]):
        if question:
            history.append({"role": "user", "content": question})
        text, engram = _ask(sdk, history, stream=turn == 1)
        conversation_ids.add(engram["conversation_id"])
        session_ids.add(engram["session_id"])
        # a client may echo the reply with its spacing changed (stripped, re-wrapped)
        history.append({"role": "assistant", "content": " ".join(text.split())})
    assert len(conversation_ids) == len(session_ids) == 1
    assert Conversation.objects.count() == 1
    transcript = _transcript(conversation_ids.pop(), 6)
    assert [role for role, _ in transcript] == ["user", "assistant"] * 3
    assert Message.objects.count() == 6  # what each turn resent was not stored again


def test_a_first_message_alone_is_a_new_chat_each_time(sdk, upstream):
    hi = [{"role": "user", "content": "Hi"}]
    ids = {_ask(sdk, hi)[1]["conversation_id"] for _ in range(2)}
    assert len(ids) == 2  # OpenAI's semantics: a request without an assistant turn starts a chat
    _settled(4)


def test_a_different_system_prompt_or_branch_is_another_conversation(sdk, upstream):
    hi = {"role": "user", "content": "Hi"}
    reply, first = _ask(sdk, [SYSTEM, hi])
    answered = [hi, {"role": "assistant", "content": reply}, {"role": "user", "content": "More"}]
    _, other = _ask(sdk, [{"role": "system", "content": "Answer in French."}, *answered])
    assert other["conversation_id"] != first["conversation_id"]
    _, same = _ask(sdk, [SYSTEM, *answered])
    assert same["conversation_id"] == first["conversation_id"]
    _settled(8)  # 2 + 4 in the French chat (all new to it) + 2 continuing the first


def test_an_explicit_conversation_id_still_wins(sdk, upstream):
    hi = {"role": "user", "content": "Hi"}
    reply, _ = _ask(sdk, [hi])
    named = sdk.chat.completions.create(
        model="m",
        messages=[hi, {"role": "assistant", "content": reply}, {"role": "user", "content": "x"}],
        extra_headers={"x-conversation-id": "my-chat"},
    )
    assert named.model_extra["engram"]["conversation_id"] == "my-chat"
    _settled(6)


def test_tool_results_and_a_failed_turn_stay_in_the_conversation(owner):
    """In-process: a tool call's results continue the chat; a retried turn is stored once."""
    workspace = owner[0]
    u1 = {"role": "user", "content": "Weather in Oslo?"}
    first = prepare(ctx(workspace, [u1], user_id="u"))
    call = {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{}"}}
    called = {"role": "assistant", "content": None, "tool_calls": [call]}
    finish(ctx(workspace, [u1], user_id="u"), first, assistant=called)
    result = {"role": "tool", "tool_call_id": "call_1", "content": "12 C, rain"}
    second_messages = [u1, called, result]
    second = prepare(ctx(workspace, second_messages, user_id="u"))
    finish(ctx(workspace, second_messages, user_id="u"), second, "It rains, 12 C.")
    assert second.engram["conversation_id"] == first.engram["conversation_id"]
    # a turn whose upstream call failed (no reply stored), then retried with the same messages
    failed_messages = [
        *second_messages,
        {"role": "assistant", "content": "It rains,  12 C."},
        {"role": "user", "content": "And tomorrow?"},
    ]
    failed = prepare(ctx(workspace, failed_messages, user_id="u"))
    finish(ctx(workspace, failed_messages, user_id="u"), failed, assistant=None)
    retried = prepare(ctx(workspace, failed_messages, user_id="u"))
    assert retried.engram["conversation_id"] == first.engram["conversation_id"]
    assert Conversation.objects.count() == 1
    contents = list(Message.objects.order_by("created_at", "id").values_list("content", flat=True))
    assert contents.count("And tomorrow?") == 1


def test_the_fingerprint_rolls_and_ignores_spacing():
    a = [SYSTEM, {"role": "user", "content": "Hi"}]
    b = [{"role": "assistant", "content": "Hello  there.\n"}]
    assert fingerprint(a + b) == fingerprint(b, fingerprint(a)) != fingerprint(a)
    spaced = [{"role": "assistant", "content": " Hello there. "}]
    assert fingerprint(a + spaced) == fingerprint(a + b)
    assert fingerprint([{"role": "user", "content": "Hello there."}]) != fingerprint(b)
    assert resent_history([*a, *b, {"role": "user", "content": "?"}]) == a + b
    assert resent_history(a) == [] and fingerprint([]) == ""


def test_the_lookup_is_one_query_on_the_fingerprint_index(owner):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from memory.turn.conversation import _found_by_history

    # A workspace of some size, its statistics fresh: with a handful of rows the planner's
    # choice between two indexes is a coin toss that depends on what earlier tests left.
    Conversation.objects.bulk_create(
        Conversation(
            workspace=owner[0], external_id=f"c{i}", user_id=f"u{i % 50}", fingerprint=f"{i:032x}"
        )
        for i in range(2000)
    )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE memory_conversation")
    hi = {"role": "user", "content": "Hi"}
    context = ctx(owner[0], [hi, {"role": "assistant", "content": "Hello"}, hi], user_id="u")
    with CaptureQueriesContext(connection) as queries:
        found = _found_by_history(context, context.body["messages"])
    assert found.conversation is None and len(queries) == 1
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        sql = queries[0]["sql"]
        cursor.execute(f"EXPLAIN {sql}")
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "conversation_fingerprint" in plan, plan


def test_a_conversation_id_sent_on_some_turns_only_keeps_one_conversation(sdk, upstream):
    """The auto: id echoed back on one turn and left out on the next: the transcript, resent
    whole, still names the conversation (it is not copied into a new one)."""
    upstream.script(
        Reply(json=openai_completion("Hello Alice.")),
        Reply(json=openai_completion("Paris is lovely.")),
        Reply(json=openai_completion("You said Paris.")),
    )
    history = [SYSTEM, {"role": "user", "content": "My name is Alice."}]
    reply, first = _ask(sdk, history)
    history += [
        {"role": "assistant", "content": reply},
        {"role": "user", "content": "I am going to Paris."},
    ]
    named = sdk.chat.completions.create(
        model="m",
        messages=history,
        extra_headers={"x-conversation-id": first["conversation_id"]},
    )
    assert named.model_extra["engram"]["conversation_id"] == first["conversation_id"]
    _settled(4)
    history += [
        {"role": "assistant", "content": named.choices[0].message.content},
        {"role": "user", "content": "Where am I going?"},
    ]
    _, third = _ask(sdk, history)
    assert third["conversation_id"] == first["conversation_id"]
    _settled(6)  # nothing the client resent was stored again
    assert Conversation.objects.count() == 1


def test_a_conversation_begun_with_an_id_is_continued_without_it(sdk, upstream):
    """Turns sent with only their new message under an id, then the whole transcript without:
    the stored transcript (the client's system prompt before it) names the conversation."""
    upstream.script(
        Reply(json=openai_completion("Hello Alice.")),
        Reply(json=openai_completion("Paris is lovely.")),
        Reply(json=openai_completion("You said Paris.")),
    )
    hi = {"role": "user", "content": "My name is Alice."}
    paris = {"role": "user", "content": "I am going to Paris."}
    named = {"x-conversation-id": "my-chat"}
    first = sdk.chat.completions.create(model="m", messages=[SYSTEM, hi], extra_headers=named)
    second = sdk.chat.completions.create(model="m", messages=[SYSTEM, paris], extra_headers=named)
    _settled(4)
    history = [
        SYSTEM,
        hi,
        {"role": "assistant", "content": first.choices[0].message.content},
        paris,
        {"role": "assistant", "content": second.choices[0].message.content},
        {"role": "user", "content": "Where am I going?"},
    ]
    _, third = _ask(sdk, history)
    assert third["conversation_id"] == "my-chat"
    _settled(6)
    assert Conversation.objects.count() == 1


def test_a_retry_after_an_answer_cut_mid_stream_continues_the_conversation(owner):
    """A stream cut (the client gone, the upstream failed): the client holds no answer and
    resends the same transcript; it stays in its conversation, its question stored once."""
    workspace = owner[0]
    first_messages = [SYSTEM, {"role": "user", "content": "My name is Alice."}]
    first = prepare(ctx(workspace, first_messages, user_id="u"))
    finish(ctx(workspace, first_messages, user_id="u"), first, "Hello Alice.")
    question = [
        *first_messages,
        {"role": "assistant", "content": "Hello Alice."},
        {"role": "user", "content": "Plan my trip to Paris."},
    ]
    cut = prepare(ctx(workspace, question, user_id="u"))
    finish(ctx(workspace, question, user_id="u"), cut, "Day one: the Lou", incomplete=True)
    retried = prepare(ctx(workspace, question, user_id="u"))
    assert retried.engram["conversation_id"] == first.engram["conversation_id"]
    finish(ctx(workspace, question, user_id="u"), retried, "Day one: the Louvre.")
    assert Conversation.objects.count() == 1
    contents = list(Message.objects.order_by("created_at", "id").values_list("content", flat=True))
    assert contents.count("Plan my trip to Paris.") == 1
    # the answer the client received continues it
    going_on = [
        *question,
        {"role": "assistant", "content": "Day one: the Louvre."},
        {"role": "user", "content": "And day two?"},
    ]
    assert (
        prepare(ctx(workspace, going_on, user_id="u")).engram["conversation_id"]
        == (first.engram["conversation_id"])
    )


def test_a_turn_sent_again_after_its_answer_was_stored_stays_in_its_conversation(sdk, upstream):
    """An SDK's timeout retry (or a regenerate) without x-conversation-id, after Engram stored
    the answer the client never received: the same transcript again lands in its conversation
    (it forked a new one, the whole transcript copied into it and its memories extracted
    twice); the new answer is stored after the one it replaces, as a regenerate with an id."""
    upstream.script(
        Reply(json=openai_completion("Hello Alice.")),
        Reply(json=openai_completion("Paris is lovely.")),
        Reply(json=openai_completion("Paris is lovely in spring.")),
        Reply(json=openai_completion("You said Paris.")),
    )
    hi = {"role": "user", "content": "My name is Alice."}
    reply, first = _ask(sdk, [SYSTEM, hi])
    question = [
        SYSTEM,
        hi,
        {"role": "assistant", "content": reply},
        {"role": "user", "content": "I am going to Paris."},
    ]
    _, second = _ask(sdk, question)
    _settled(4)  # the answer the client is taken never to have received is stored

    again, retried = _ask(sdk, question)

    assert retried["conversation_id"] == first["conversation_id"] == second["conversation_id"]
    assert Conversation.objects.count() == 1
    assert _transcript(first["conversation_id"], 5) == [
        ("user", "My name is Alice."),
        ("assistant", "Hello Alice."),
        ("user", "I am going to Paris."),  # once
        ("assistant", "Paris is lovely."),
        ("assistant", "Paris is lovely in spring."),  # the answer it replaces kept before it
    ]
    # the model read the client's transcript once, not the stored turns again before it
    sent = upstream.chat_requests()[-1].body["messages"]
    assert [m["content"] for m in sent if m["role"] == "user"] == [
        "My name is Alice.",
        "I am going to Paris.",
    ]
    # the client goes on from the answer it received
    _, third = _ask(
        sdk,
        [*question, {"role": "assistant", "content": again}, {"role": "user", "content": "Where?"}],
    )
    assert third["conversation_id"] == first["conversation_id"]
    _settled(7)


def test_an_sdk_retry_of_a_first_message_stays_in_its_conversation(sdk, upstream):
    """A first message alone is a new chat each time, but the SDK's retry of it (it says so:
    x-stainless-retry-count) after its answer was stored is that chat, within RETRY_WINDOW."""
    import datetime as dt

    from django.utils import timezone

    from memory.turn.conversation import RETRY_WINDOW

    hi = [SYSTEM, {"role": "user", "content": "Book me a table."}]
    _, first = _ask(sdk, hi)
    _settled(2)
    retry = {"x-stainless-retry-count": "1"}
    retried = sdk.chat.completions.create(model="m", messages=hi, extra_headers=retry)
    assert retried.model_extra["engram"]["conversation_id"] == first["conversation_id"]
    _settled(3)  # the answer again, the question once
    assert Conversation.objects.count() == 1

    Conversation.objects.update(updated_at=timezone.now() - RETRY_WINDOW - dt.timedelta(minutes=1))
    late = sdk.chat.completions.create(model="m", messages=hi, extra_headers=retry)
    assert late.model_extra["engram"]["conversation_id"] != first["conversation_id"]
    _settled(5)
