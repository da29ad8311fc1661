"""A conversation's stored rows as a turn reads them: each row's token count is kept per
process (memory.turn.rows) and the stored transcript's fingerprint extended from what was
hashed before (memory.turn.conversation._rows_fingerprint); the database stays the truth."""

from __future__ import annotations

import json

import pytest

from memory.models import Message
from memory.text import count_messages
from memory.turn.conversation import _matched_rows, fingerprint, matched_prefix
from memory.turn.rows import StoredRow, seen
from tests.factories import make_workspace
from tests.test_memory_turns import ctx, finish, prepare, turn

pytestmark = pytest.mark.django_db

SYSTEM = {"role": "system", "content": "You are terse."}


def _user(text: str) -> dict:
    return {"role": "user", "content": text}


def _stored(conversation: str) -> list[dict]:
    """The conversation's stored messages but its head's (the turn just prepared stored its
    request's: the transcript is these)."""
    return [
        m.raw
        for m in Message.objects.filter(conversation__external_id=conversation)
        .exclude(role__in=("system", "developer"))
        .order_by("created_at", "id")
    ]


def _talk(workspace, turns: int) -> None:
    for number in range(turns):
        turn(
            ctx(workspace, [SYSTEM, _user(f"fact {number}")], user_id="u", conversation_id="c"),
            f"noted {number}",
        )


def test_a_turn_s_fingerprint_is_its_stored_transcript_s_whatever_was_hashed_before():
    workspace, _ = make_workspace()
    _talk(workspace, 3)
    new = _user("what do you know?")
    prepared = prepare(ctx(workspace, [SYSTEM, new], user_id="u", conversation_id="c"))
    assert prepared.state.fingerprint == fingerprint([SYSTEM, *_stored("c")])
    finish(ctx(workspace, [SYSTEM, new], user_id="u", conversation_id="c"), prepared, "all")
    # Another process (or the API) took a message out of the middle: the rows are hashed again.
    Message.objects.filter(conversation__external_id="c", content="fact 1").delete()
    again = _user("and now?")
    prepared = prepare(ctx(workspace, [SYSTEM, again], user_id="u", conversation_id="c"))
    assert prepared.state.fingerprint == fingerprint([SYSTEM, *_stored("c")])
    # Another system prompt starts the digest elsewhere.
    other = {"role": "system", "content": "You are verbose."}
    prepared = prepare(ctx(workspace, [other, again], user_id="u", conversation_id="c"))
    assert prepared.state.fingerprint == fingerprint([other, *_stored("c")])


def test_history_served_from_kept_rows_is_the_stored_message_whatever_a_turn_did_with_it():
    workspace, _ = make_workspace()
    _talk(workspace, 1)
    prepared = turn(ctx(workspace, [SYSTEM, _user("next")], user_id="u", conversation_id="c"))
    served = [m for m in prepared.messages if m.get("content") == "fact 0"]
    assert served
    served[0]["content"] = "changed on its way upstream"  # e.g. a provider's own edit
    prepared = prepare(ctx(workspace, [SYSTEM, _user("again")], user_id="u", conversation_id="c"))
    contents = [m.get("content") for m in prepared.messages]
    assert "fact 0" in contents and "changed on its way upstream" not in contents


def test_a_row_read_again_with_another_message_is_worked_out_again():
    workspace, _ = make_workspace()
    _talk(workspace, 2)
    prepare(ctx(workspace, [SYSTEM, _user("first look")], user_id="u", conversation_id="c"))
    # The store is the truth: a row's message that changed under its id is read as it is now.
    Message.objects.filter(conversation__external_id="c", content="fact 0").update(
        raw={"role": "user", "content": "fact zero, rewritten"}
    )
    new = _user("second look")
    prepared = prepare(ctx(workspace, [SYSTEM, new], user_id="u", conversation_id="c"))
    contents = [m.get("content") for m in prepared.messages]
    assert "fact zero, rewritten" in contents and "fact 0" not in contents
    assert prepared.state.fingerprint == fingerprint([SYSTEM, *_stored("c")])


def test_the_context_tokens_are_the_assembled_messages_count_whatever_the_rows_say():
    workspace, _ = make_workspace()
    _talk(workspace, 3)
    # A row's stored count may be another version's: the total is the messages' exact count.
    Message.objects.filter(conversation__external_id="c").update(token_count=1)
    prepared = prepare(ctx(workspace, [SYSTEM, _user("count")], user_id="u", conversation_id="c"))
    assert prepared.engram["history_messages"] == 6
    assert prepared.engram["context_tokens"] == count_messages(prepared.messages)


def _rows(messages: list[dict]) -> list[StoredRow]:
    return [
        StoredRow(
            id=f"msg_rows_{i}",
            seen=seen(f"msg_rows_{i}", json.dumps(m)),
            token_count=0,
            incomplete=False,
        )
        for i, m in enumerate(messages)
    ]


def test_stored_rows_match_as_their_messages_do():
    def m(*texts):
        return [
            {"role": "user" if i % 2 == 0 else "assistant", "content": t}
            for i, t in enumerate(texts)
        ]

    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    mine = {"id": "call_2", "type": "function", "function": {"name": "g", "arguments": "{}"}}
    question, answer = _user("Weather?"), {"role": "assistant", "content": "Sunny."}
    tools = [
        question,
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 21°C"},
        answer,
    ]
    again = [*m("a", "b", "c", "d"), {"role": "assistant", "content": "d2"}]
    cases = [
        (m("a", "b", "c", "d"), m("a", "b", "c", "d", "e"), False),
        (m("a", "b", "c", "d"), m("c", "d"), False),
        (m("a", "b", "c", "d"), [_user("e")], False),
        (m("a", "b", "c", "d"), m("a", "b", "c"), False),  # a regenerate
        (m("a", "b", "c", "d"), m("a", "b", "c2"), False),  # an edit: a branch
        (again, [*m("a", "b", "c"), {"role": "assistant", "content": "d"}, _user("e")], False),
        (m(*"3456"), m(*"0123456"), True),  # a truncated window
        (tools, [question, answer, _user("And tomorrow?")], False),
        (tools, [question, *tools[1:], _user("And tomorrow?")], False),
        (tools, [answer, _user("And tomorrow?")], False),
        (
            tools,
            [question, answer, {"role": "assistant", "content": None, "tool_calls": [mine]}],
            False,
        ),
        (
            tools[:2],
            [question, tools[1], {"role": "tool", "tool_call_id": "call_1", "content": "x"}],
            False,
        ),
    ]
    for stored, incoming, truncated in cases:
        expected = matched_prefix(stored, incoming, truncated=truncated)
        assert _matched_rows(_rows(stored), incoming, truncated=truncated) == expected
