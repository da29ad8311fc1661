"""The request-time contract between the doors and memory.

A door builds a TurnContext (completions.request), awaits memory.turn.pipeline.prepare_turn
before calling the upstream (sending `PreparedTurn.messages` instead of the client's), and
calls memory.turn.pipeline.finish_turn_soon after the answer (or the cut stream) has gone out,
which schedules finish_turn when there is something to store.
With no user id nothing is stored or recalled from memory: the turn is a pass-through, or, when
it names collections, knowledge retrieval only (their chunks join the context).
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
    # The name the upstream receives (an alias's target; the doors set it once routed): the
    # model whose context window the budget is. Blank: `model`.
    upstream_model: str = ""
    user_id: str | None = None  # x-user-id, else the body's `user`
    conversation_id: str | None = None  # x-conversation-id
    session_id: str | None = None  # x-session-id, else the body's `session_id`
    # The client says this request is one it sent before (the OpenAI SDKs' retries send
    # x-stainless-retry-count above 0): a first message alone may then be that retry.
    retried: bool = False
    collection_ids: list[str] = field(default_factory=list)  # x-collection-ids
    # An agent's memory policy (completions.agents.calls.apply); these defaults without one.
    remember: bool = True  # off: nothing stored or recalled, as without a user id
    extraction: bool = True  # off: turns are stored, no memories extracted from them
    retrieve_messages: bool = True  # off: past conversations' messages are not searched
    budgets: dict[str, int] = field(default_factory=dict)  # per-block token caps (caps_for)
    agent: dict | None = None  # {"id", "name", "version"} of the agent called

    @property
    def memory_user_id(self) -> str:
        """The user id, for code past prepare_turn's pass-through (which returns without one)."""
        if not self.user_id:
            raise RuntimeError("a turn without a user id stores and recalls nothing")
        return self.user_id


@dataclass
class PreparedTurn:
    messages: list[dict]  # what the upstream receives
    engram: dict = field(default_factory=dict)  # the response's `engram` object
    headers: dict[str, str] = field(default_factory=dict)  # extra response headers
    explain: dict = field(default_factory=dict)  # /v1/context: blocks, tokens, why each was chosen
    state: Any = None  # memory's own handle for finish_turn
