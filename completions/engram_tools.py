"""Sources and progress as tool calls, for clients that read only OpenAI's schema.

A request that declares function tools named in TOOLS gets calls of them from Engram (never
from the model: they are removed before the upstream call; a `tool_choice` naming one too).
In a stream they come first, before the model's first token; in a JSON answer they lead the
message's `tool_calls`. Each call's `arguments` is a JSON object:

- `_engramSearchProgress`, one call per search Engram made for the turn:
  `{"call_id", "search": "memories" | "messages" | "knowledge", "query", "hits",
  "collection_ids" (knowledge only)}` — `hits` counts what went into the context.
- `_engramSearchSources`, one call: `{"call_id", "sources": [{"type": "memory" | "message" |
  "knowledge", "id", "score", "snippet", ...}]}`; a knowledge source adds `collection_id`,
  `document_id`, `title`, `chunk_index`; a message source its `conversation_id`.
- `_engramAppendConversationMessage`, one call when the turn was stored: `{"call_id",
  "conversation_id", "session_id"}` — the conversation Engram appended the turn to (send it
  back as x-conversation-id to continue it explicitly).

Clients that declare none of them see exactly what they saw before. Engram's calls that a
client resends in its history (and results for them) are removed from it (`_strip_history`).
"""

from __future__ import annotations

import json

from memory.turn.contract import PreparedTurn, TurnContext

PROGRESS = "_engramSearchProgress"
SOURCES = "_engramSearchSources"
APPEND = "_engramAppendConversationMessage"
TOOLS = (PROGRESS, SOURCES, APPEND)
SNIPPET_CHARS = 300
_SEARCHES = {"memories": "memories", "retrieved_messages": "messages", "knowledge": "knowledge"}


def _name(tool: object) -> str | None:
    if isinstance(tool, dict) and tool.get("type") == "function":
        function = tool.get("function")
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            return function["name"]
    return None


def _strip_history(body: dict) -> None:
    """A client that keeps its transcript resends Engram's calls in the assistant messages
    (and maybe results for them): they are Engram's, not the model's, and an upstream refuses
    tool calls without results, so they go, as the stored conversation never had them."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not any(
        isinstance(m, dict) and m.get("tool_calls") for m in messages
    ):
        return
    ours: set[str] = set()
    kept_messages = []
    for message in messages:
        calls = message.get("tool_calls") if isinstance(message, dict) else None
        if isinstance(calls, list) and any(_name(c) in TOOLS for c in calls):
            ours.update(str(c.get("id")) for c in calls if _name(c) in TOOLS)
            message = {**message}
            kept = [c for c in calls if _name(c) not in TOOLS]
            if kept:
                message["tool_calls"] = kept
            else:
                del message["tool_calls"]
                if message.get("content") is None:
                    message["content"] = ""
        elif (
            isinstance(message, dict)
            and message.get("role") == "tool"
            and message.get("tool_call_id") in ours
        ):
            continue
        kept_messages.append(message)
    body["messages"] = kept_messages


def take_declared(body: dict) -> frozenset[str]:
    """The Engram tools the request declares, removed from `body` (which the upstream gets),
    and Engram's earlier calls removed from the history the client resent."""
    _strip_history(body)
    tools = body.get("tools")
    if not isinstance(tools, list):
        return frozenset()
    declared = frozenset(n for n in map(_name, tools) if n in TOOLS)
    if not declared:
        return declared
    kept = [t for t in tools if _name(t) not in TOOLS]
    if kept:
        body["tools"] = kept
    else:  # nothing left for the model: OpenAI refuses tool_choice without tools
        for name in ("tools", "tool_choice", "parallel_tool_calls"):
            body.pop(name, None)
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and _name(choice) in TOOLS:
        body.pop("tool_choice")
    return declared


def _call(name: str, call_id: str, arguments: dict) -> dict:
    arguments = {"call_id": call_id, **arguments}
    return {
        "id": call_id,
        "type": "function",
        "function": {
            "name": name,
            "arguments": json.dumps(arguments, separators=(",", ":"), ensure_ascii=False),
        },
    }


def _source(block: str, item: dict) -> dict:
    source = {
        "type": {"memories": "memory", "retrieved_messages": "message"}.get(block, "knowledge"),
        "id": item.get("id"),
        "score": item.get("score"),
        "snippet": " ".join(str(item.get("text") or "").split())[:SNIPPET_CHARS],
    }
    if block == "knowledge":
        for cited in item.get("sources") or ():
            # its documented fields: `why` is engram.sources' and /v1/context's
            source.update({k: v for k, v in cited.items() if k not in ("score", "why")})
            break
    elif item.get("conversation_id"):
        source["conversation_id"] = item["conversation_id"]
    return source


def tool_calls(declared: frozenset[str], ctx: TurnContext, prepared: PreparedTurn) -> list[dict]:
    """The calls to emit for a turn (complete, in OpenAI's message shape)."""
    from memory.turn.pipeline import query_text

    prefix = f"call_engram_{ctx.request_id[-12:]}"
    blocks = {b["name"]: b.get("items") or [] for b in prepared.explain.get("blocks") or []}
    calls: list[dict] = []
    if PROGRESS in declared:
        query = query_text(list(ctx.body.get("messages") or []))
        searches = []
        if ctx.user_id and ctx.remember:
            searches.append("memories")
            if ctx.retrieve_messages:
                searches.append("retrieved_messages")
        if ctx.collection_ids:
            searches.append("knowledge")
        for n, block in enumerate(searches):
            arguments: dict = {
                "search": _SEARCHES[block],
                "query": query,
                "hits": len(blocks.get(block, [])),
            }
            if block == "knowledge":
                arguments["collection_ids"] = list(ctx.collection_ids)
            calls.append(_call(PROGRESS, f"{prefix}_p{n}", arguments))
    if SOURCES in declared:
        sources = [_source(block, item) for block in _SEARCHES for item in blocks.get(block, [])]
        calls.append(_call(SOURCES, f"{prefix}_s", {"sources": sources}))
    conversation_id = prepared.engram.get("conversation_id")
    if APPEND in declared and conversation_id:
        calls.append(
            _call(
                APPEND,
                f"{prefix}_a",
                {
                    "conversation_id": conversation_id,
                    "session_id": prepared.engram.get("session_id"),
                },
            )
        )
    return calls
