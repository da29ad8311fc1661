"""The context budget is never exceeded and nothing is cut mid-message (property tests)."""

from __future__ import annotations

import itertools

import pytest
from asgiref.sync import async_to_sync
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memory.text import count_message, count_messages
from memory.turn.assembly import (
    Block,
    Item,
    _answered,
    assemble,
    budget_for,
    context_window,
    history_units,
)

words = st.lists(
    st.sampled_from(
        ["the", "cat", "Berlin", "🙂", "memory", "x" * 30, "2023", "naïve", "\n", "tokens", "!"]
    ),
    min_size=0,
    max_size=60,
).map(" ".join)

counter = itertools.count()


@st.composite
def stored_history(draw):
    rows = []
    for _ in range(draw(st.integers(0, 25))):
        kind = draw(st.sampled_from(["user", "assistant", "tools"]))
        if kind == "tools":
            call_id = f"call_{next(counter)}"
            call = {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": call_id,
                        "type": "function",
                        "function": {"name": "f", "arguments": "{}"},
                    }
                ],
            }
            result = {"role": "tool", "tool_call_id": call_id, "content": draw(words)}
            batch = [call, result] if draw(st.integers(0, 5)) else [call]  # sometimes unanswered
        else:
            batch = [{"role": kind, "content": draw(words)}]
        for message in batch:
            rows.append(
                {"id": f"msg_{next(counter)}", "message": message, "tokens": count_message(message)}
            )
    return rows


@st.composite
def request_messages(draw):
    head = [{"role": "system", "content": draw(words)}] if draw(st.booleans()) else []
    body = [
        {"role": draw(st.sampled_from(["user", "assistant"])), "content": draw(words)}
        for _ in range(draw(st.integers(0, 2)))
    ]
    return head + body + [{"role": "user", "content": draw(words)}]


def items(draw, kind):
    return [
        Item(kind=kind, id=f"{kind}_{i}", line=f"- [8 May 2023] {draw(words)}")
        for i in range(draw(st.integers(0, 12)))
    ]


@st.composite
def blocks(draw):
    return [
        Block(
            name=name,
            header=f"Engram: {name}.",
            tag=name,
            items=items(draw, name),
            cap=draw(st.integers(0, 800)),
        )
        for name in ("summary", "memories", "retrieved_messages")
    ]


@settings(max_examples=400, deadline=None)
@given(
    request=request_messages(),
    history=stored_history(),
    blocks=blocks(),
    budget=st.integers(10, 3000),
)
def test_assembly_never_exceeds_the_budget_and_never_cuts(request, history, blocks, budget):
    result = assemble(
        request_messages=request, blocks=blocks, history=history_units(history), budget=budget
    )
    assert result.tokens == count_messages(result.messages)
    if count_messages(request) > budget:
        assert result.messages == request  # nothing added to what is already too long
        return
    assert result.tokens <= budget
    # The client's messages are all there, in order: its system prompt first, the rest last.
    head = [m for m in request if m["role"] == "system"]
    body = request[len(head) :]
    assert result.messages[: len(head)] == head
    assert result.messages[len(result.messages) - len(body) :] == body
    # Whatever was injected is whole: stored messages verbatim, block lines whole items.
    stored = [row["message"] for row in history]
    middle = result.messages[len(head) : len(result.messages) - len(body)]
    injected_history = [m for m in middle if not str(m.get("content", "")).startswith("Engram:")]
    for message in injected_history:
        assert message in stored
    units = history_units(history)
    if units and not _answered(units[-1]):
        units.pop()  # unanswered tool calls are never sent (the request carries no results)
    unit_ids = [i for unit in units for i in unit.ids]
    taken = result.history_ids
    assert taken == (unit_ids[len(unit_ids) - len(taken) :] if taken else [])  # newest stretch
    if taken and len(taken) < len(unit_ids):  # cut short: it starts at a question
        assert by_id_first(history, taken[0])["role"] == "user"
    by_id = {row["id"]: row["message"] for row in history}
    assert injected_history == [by_id[i] for i in taken]
    ids = {c["id"] for m in injected_history for c in m.get("tool_calls") or []}
    answered = {m.get("tool_call_id") for m in injected_history if m["role"] == "tool"}
    assert ids <= answered  # a tool call never travels without its result
    offered = {item.line for block in blocks for item in block.items}
    for message in middle:
        content = str(message.get("content", ""))
        if content.startswith("Engram:"):
            lines = content.split("\n")
            assert lines[1].startswith("<") and lines[-1].startswith("</")
            body_text = "\n".join(lines[2:-1])
            assert any(body_text.startswith(line) for line in offered)


def by_id_first(history, message_id):
    return next(row["message"] for row in history if row["id"] == message_id)


def test_known_windows_and_the_default(settings):
    settings.ENGRAM_DEFAULT_CONTEXT_WINDOW = 1234
    assert context_window("gpt-4o-mini") == 128_000
    assert context_window("openai/gpt-4o") == 128_000
    assert context_window("claude-3-5-sonnet-latest") == 200_000
    assert context_window("gpt-4") == 8_192
    assert context_window("llama3:8b") == 8_192  # Llama 3; 3.1 and later have 128 K
    assert context_window("llama3.1:8b") == 128_000
    assert context_window("llama3-70b-8192") == 8_192
    assert context_window("my-local-llama") == 1234
    # GPT-5 takes at most 272 K tokens of input (its 400 K count 128 K of output), and
    # gpt-5-chat 128 K: a window of 400 K filled a long conversation past what it accepts.
    assert context_window("gpt-5") == context_window("gpt-5-mini-2025-08-07") == 272_000
    assert context_window("gpt-5-chat-latest") == 128_000
    # Claude's tokenizer counts up to a third more than cl100k for the same text: its window,
    # filled in cl100k tokens, was overfilled and the turn refused ("prompt is too long")
    claude = budget_for({"max_tokens": 4000}, "anthropic/claude-sonnet-4-5")
    assert claude.window == 200_000 and claude.total * 1.35 <= 200_000 - 4000
    assert budget_for({"max_tokens": 4000}, "gpt-4o").total == 128_000 - 4000
    assert budget_for({"max_tokens": 34}, "my-local-llama").total == 1200
    assert budget_for({"max_completion_tokens": 200}, "gpt-4").total == 8_192 - 200


@pytest.mark.django_db
@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    turns=st.lists(st.tuples(words, words), min_size=0, max_size=12),
    question=words.filter(lambda w: w.strip()),
    window=st.integers(150, 1500),
    reserve=st.integers(1, 120),
)
def test_prepare_turn_stays_within_small_windows(
    django_db_blocker, turns, question, window, reserve
):
    """The same property through the real path: stored history, memories, retrieval."""
    from django.test import override_settings

    from memory.services import memory_create
    from memory.turn.contract import TurnContext
    from memory.turn.pipeline import finish_turn, prepare_turn
    from tests.factories import make_workspace

    # override_settings, not an assignment: it tells the readers that cache settings
    # (config.common.setting, the windows' cache) that the setting changed.
    with override_settings(ENGRAM_DEFAULT_CONTEXT_WINDOW=window):
        workspace, _ = make_workspace()
        user = f"user-{next(counter)}"

        def context(text, **body):
            return TurnContext(
                workspace=workspace,
                api_key_id=None,
                request_id="r",
                body={"model": "tiny", "messages": [{"role": "user", "content": text}], **body},
                model="tiny",
                user_id=user,
                conversation_id=f"c-{user}",
            )

        for said, answered in turns:
            ctx = context(said or "hi")
            prepared = async_to_sync(prepare_turn)(ctx)
            async_to_sync(finish_turn)(
                ctx,
                prepared,
                assistant={"role": "assistant", "content": answered},
                usage=None,
                incomplete=False,
            )
            memory_create(workspace=workspace, user_id=user, text=f"{user} said {said}"[:300])
        ctx = context(question, max_tokens=reserve)
        prepared = async_to_sync(prepare_turn)(ctx, dry_run=True)
        budget = window - reserve
        tokens = count_messages(prepared.messages)
        assert tokens == prepared.explain["context_tokens"]
        mandatory = count_messages(ctx.body["messages"])
        if mandatory <= budget:
            assert tokens <= budget
        else:
            assert prepared.messages == ctx.body["messages"]


@pytest.mark.parametrize(
    "extra",
    [
        {"thinking": {"type": "enabled", "budget_tokens": 30_000}},
        {"reasoning_effort": "high"},
    ],
)
def test_a_claude_turns_reserve_is_the_max_tokens_anthropic_receives(http, upstream, extra):
    """Anthropic counts extended thinking in max_tokens and refuses a prompt that leaves less
    than max_tokens of its window: with no max_tokens asked, Engram sends the thinking budget
    plus the answer's default, so the context must leave room for that much, not only for the
    answer's default (a long conversation was filled to within 4096 tokens of the window, and
    every turn of it with thinking on was refused)."""
    from tests.upstream import Reply, anthropic_message

    model = "claude-sonnet-4-5"
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], **extra}
    upstream.script(Reply(json=anthropic_message("ok", model=model)))
    chat = http.post("/v1/chat/completions", json=body, headers={"x-user-id": "u1"})
    assert chat.status_code == 200, chat.text
    sent = upstream.last.body["max_tokens"]
    preview = http.post("/v1/context", json=body, headers={"x-user-id": "u1"}).json()
    budget = preview["budget"]
    assert budget["reserved_for_completion"] >= sent
    assert budget["available"] <= budget["context_window"] - sent


def test_a_stored_refusal_counts_its_words():
    """A refusal (content null, its words in `refusal`) is stored as the answer and sent back
    as history: uncounted, a long one slipped past the context window's check."""
    words = "I can't help with that request, as it asks for something I must not do. " * 40
    refusal = {"role": "assistant", "content": None, "refusal": words}
    silent = {"role": "assistant", "content": None}
    assert count_message(refusal) - count_message(silent) >= len(words) // 8
    assert count_messages([refusal]) > count_messages([{"role": "assistant", "content": "ok"}])
