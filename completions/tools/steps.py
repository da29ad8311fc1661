"""An agent run's record of its calls (completions.tools.run): a step appended to the
execution's `steps`, and the results of calls whose outcome was never recorded. Below both
the run and the run's writes (completions.tools.services.executions), which fail a run that
lost its process with those calls answered as interrupted."""

from __future__ import annotations

import time
from typing import Any

from completions.tools import executor
from completions.tools.executor import Result
from completions.tools.models import Execution


def call_view(call: dict) -> dict:
    function = call.get("function") or {}
    return {
        "id": call.get("id"),
        "name": function.get("name"),
        "arguments": function.get("arguments"),
    }


def step_append(execution: Execution, kind: str, **values: Any) -> None:
    steps = execution.steps
    steps.append({"index": len(steps), "type": kind, "at": int(time.time()), **values})


def interrupted(execution: Execution, *, since: int) -> list[dict]:
    """Answer as interrupted (a failed step) each call of the run's last assistant message at
    or after `since` that has no result, and return those results: a call whose outcome was
    never recorded is not run again (at most once), and a history holding a call without its
    result is refused upstream."""
    messages = execution.messages
    last = next(
        (
            i
            for i in range(len(messages) - 1, since - 1, -1)
            if messages[i].get("role") == "assistant"
        ),
        None,
    )
    if last is None:
        return []
    answered = {m.get("tool_call_id") for m in messages[last + 1 :]}
    replies = []
    for call in messages[last].get("tool_calls") or ():
        if call.get("id") in answered:
            continue
        result = Result("", "interrupted: its outcome is unknown, so it is not run again", 0.0)
        reply = executor.tool_message(call.get("id"), result)
        messages.append(reply)
        replies.append(reply)
        view = call_view(call)
        step_append(
            execution,
            "tool",
            duration_ms=0.0,
            tool_call_id=view["id"],
            name=view["name"],
            arguments=view["arguments"],
            status="failed",
            error=result.error,
        )
    return replies
