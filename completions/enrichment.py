"""The seam between the gateway and memory: what happens around the upstream call.

The gateway builds a TurnContext from the request, awaits `prepare_turn` before calling the
upstream (sending `PreparedTurn.messages` instead of the client's), and schedules `finish_turn`
after the answer (or the cut stream) has gone out. Memory implements both; with no user id they
are a pass-through and store nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from accounts.models import Workspace


@dataclass
class TurnContext:
    workspace: Workspace
    api_key_id: str | None
    request_id: str
    body: dict  # the client's validated chat completions body (Engram-owned fields removed)
    model: str
    user_id: str | None = None  # x-user-id, else the body's `user`
    conversation_id: str | None = None  # x-conversation-id
    session_id: str | None = None  # x-session-id, else the body's `session_id`
    collection_ids: list[str] = field(default_factory=list)  # x-collection-ids


@dataclass
class PreparedTurn:
    messages: list[dict]  # what the upstream receives
    engram: dict = field(default_factory=dict)  # the response's `engram` object
    headers: dict[str, str] = field(default_factory=dict)  # extra response headers
    explain: dict = field(default_factory=dict)  # /v1/context: blocks, tokens, why each was chosen
    state: Any = None  # memory's own handle for finish_turn


async def prepare_turn(ctx: TurnContext, *, dry_run: bool = False) -> PreparedTurn:
    """Store the new messages (unless dry_run) and assemble the context within the budget."""
    from memory import turns

    return await turns.prepare_turn(ctx, dry_run=dry_run)


async def finish_turn(
    ctx: TurnContext,
    prepared: PreparedTurn,
    *,
    assistant: dict | None,
    usage: dict | None,
    incomplete: bool,
) -> None:
    """Store the assistant's reply (content and tool_calls) and enqueue background work."""
    from memory import turns

    await turns.finish_turn(ctx, prepared, assistant=assistant, usage=usage, incomplete=incomplete)
