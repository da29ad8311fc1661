"""A run's follow-up model calls fitted to the model's window.

The first call of a run is the turn memory assembled within the budget (memory.turn.assembly);
each later call adds the step's tool calls and results, up to 16,000 characters a result, and
a small window is soon passed (the upstream refuses the request). Before each later call the
messages are fitted with the same budget and assembly: the system messages in front, the
current turn (its last user message and everything after it: the run's tool calls and their
results, never a result without its call) always; the turns before it as history, newest
first, left out first. Still over: the largest tool results are cut further, each with the cut
mark (completions.tools.executor.cut_again), to no less than MIN_RESULT characters. What the
run records (its messages, its steps) stays whole.
"""

from __future__ import annotations

from completions.tools.executor import cut_again
from memory.text import count_message, count_messages
from memory.turn.assembly import assemble, budget_for, history_units, split_head

MIN_RESULT = 200  # characters a tool result keeps however small the window
_STEPS = 32  # cuts tried at most (each cuts the largest result by a tenth at least)


def fitted(messages: list[dict], *, body: dict, model: str) -> list[dict]:
    """`messages` as a follow-up call of the run sends them within `model`'s window (`body`:
    the call's other fields, whose tools and reserved completion the budget leaves room for)."""
    budget = budget_for(body, model).total
    if count_messages(messages) <= budget:
        return messages
    head, rest = split_head(messages)
    start = max((i for i, m in enumerate(rest) if m.get("role") == "user"), default=0)
    rows = [{"message": m, "tokens": count_message(m), "id": ""} for m in rest[:start]]
    assembly = assemble(
        request_messages=head + rest[start:],
        blocks=[],
        history=history_units(rows),
        budget=budget,
    )
    return _results_cut(assembly.messages, budget)


def _results_cut(messages: list[dict], budget: int) -> list[dict]:
    out = list(messages)
    total = count_messages(out)
    for _ in range(_STEPS):
        if total <= budget:
            break
        results = [
            (count_message(m), i)
            for i, m in enumerate(out)
            if m.get("role") == "tool"
            and isinstance(m.get("content"), str)
            and len(m["content"]) > MIN_RESULT
        ]
        if not results:
            break  # nothing left to cut: sent as it is, as an over-long request is
        tokens, at = max(results)
        content = out[at]["content"]
        keep = max(0, tokens - (total - budget) - 16)  # 16: the mark's own tokens, about
        limit = max(MIN_RESULT, min(len(content) * keep // tokens, len(content) * 9 // 10))
        out[at] = {**out[at], "content": cut_again(content, limit)}
        total = count_messages(out)
    return out
