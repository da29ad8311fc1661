"""A turn around the upstream call: prepare (store, retrieve, assemble) and finish (store, enqueue).

Runs in the async request path: ORM work goes through sync_to_async in two hops, and the one
query embedding is computed in a worker thread while the first hop talks to the database.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
from dataclasses import dataclass, field

from asgiref.sync import sync_to_async
from django.db import transaction

from completions.enrichment import PreparedTurn, TurnContext
from config.errors import ApiError
from memory import selectors
from memory.context import Block, Item, assemble, budget_for, caps_for, history_units
from memory.models import Conversation, Message, Session
from memory.text import content_text, count_messages, day_label, memory_date, speaker

HISTORY_ROWS = 400  # stored messages considered for dedupe and server-side history
MEMORY_CANDIDATES = 12
MESSAGE_CANDIDATES = 10
KNOWLEDGE_CANDIDATES = 8
QUERY_CHARS = 2000
MIN_MESSAGE_SIMILARITY = 0.3  # a past message with no word in common must be this close
FINISH_WAIT_SECONDS = 10.0

_HEAD_ROLES = ("system", "developer")


@dataclass
class TurnState:
    workspace_id: str
    user_id: str
    conversation_pk: str
    conversation_id: str
    session_pk: str | None
    session_id: str | None
    stored_ids: list[str] = field(default_factory=list)


# finish_turn tasks in flight, per (workspace, user): the next prepare_turn waits for them so a
# reply stored a moment ago is history in the next turn.
_inflight: dict[tuple[str, str], set[asyncio.Task]] = {}


async def _await_finishes(key: tuple[str, str]) -> None:
    loop = asyncio.get_running_loop()
    current = asyncio.current_task()
    pending = [
        t
        for t in _inflight.get(key, ())
        if t is not current and not t.done() and t.get_loop() is loop
    ]
    if pending:
        await asyncio.wait(pending, timeout=FINISH_WAIT_SECONDS)


def query_text(messages: list[dict]) -> str:
    """What the turn is about: the last user message (else the last message with text)."""
    for message in reversed(messages):
        if message.get("role") == "user":
            text = content_text(message.get("content")).strip()
            if text:
                return text[:QUERY_CHARS]
    for message in reversed(messages):
        text = content_text(message.get("content")).strip()
        if text:
            return text[:QUERY_CHARS]
    return ""


def _embed(text: str) -> list[float]:
    from memory.embeddings import get_embedder

    return get_embedder().embed_one(text)


def _conversation_key(ctx: TurnContext, conversation_messages: list[dict]) -> tuple[str, bool]:
    """(external id, whether history is served) for the turn's conversation.

    Only an explicit x-conversation-id asks for server-side history. Without one, a session id
    names the conversation; else the first message does, so a client that resends its whole
    history keeps landing in the same conversation and nothing is stored twice.
    """
    if ctx.conversation_id:
        return ctx.conversation_id, True
    if ctx.session_id:
        return f"session:{ctx.session_id}", False
    first = content_text(conversation_messages[0].get("content")) if conversation_messages else ""
    digest = hashlib.sha256(f"{ctx.user_id}\x00{first}".encode()).hexdigest()[:24]
    return f"auto:{digest}", False


def _same(stored: dict, incoming: dict) -> bool:
    if stored.get("role") != incoming.get("role"):
        return False
    if content_text(stored.get("content")).strip() != content_text(incoming.get("content")).strip():
        return False
    if stored.get("tool_call_id") != incoming.get("tool_call_id"):
        return False
    calls = [c.get("id") for c in stored.get("tool_calls") or []]
    return calls == [c.get("id") for c in incoming.get("tool_calls") or []]


def matched_prefix(stored: list[dict], incoming: list[dict], *, truncated: bool = False) -> int:
    """How many leading incoming messages the store already holds (the client resent them).

    The largest k with incoming[:k] ending in the stored messages' tail. When `stored` is only
    the newest window of a longer conversation (`truncated`), a resent history longer than that
    window still matches by its last len(stored) messages.
    """
    longest = len(incoming) if truncated else min(len(stored), len(incoming))
    for k in range(longest, 0, -1):
        m = min(k, len(stored))
        offset = len(stored) - m
        if m and all(_same(stored[offset + i], incoming[k - m + i]) for i in range(m)):
            return k
    return 0


@dataclass
class _Loaded:
    conversation: Conversation | None
    session: Session | None
    session_id: str | None
    history: list[dict]  # stored rows before what the request resent (oldest first)
    exclude_ids: list[str]
    stored_ids: list[str]
    serve_history: bool
    # An enclosing transaction (a test's) hides its rows from other connections: then all
    # retrieval stays on this thread's connection instead of running in parallel.
    in_transaction: bool = False


def _load_and_store(ctx: TurnContext, messages: list[dict], dry_run: bool) -> _Loaded:
    from django.db import connection

    with transaction.atomic():
        if not dry_run:
            relaxed_commit()
        loaded = _load_and_store_in_transaction(ctx, messages, dry_run)
    loaded.in_transaction = connection.in_atomic_block
    return loaded


def _memory_hits(ctx: TurnContext, query: str, vector, dry_run: bool) -> list:
    if not query:
        return []
    return selectors.memory_search(
        workspace=ctx.workspace,
        user_id=ctx.user_id,
        query=query,
        vector=vector,
        limit=MEMORY_CANDIDATES,
        min_similarity=selectors.MIN_SIMILARITY,
        with_sources=dry_run,  # /v1/context explains where each memory came from
    )


_pool: concurrent.futures.ThreadPoolExecutor | None = None


def _parallel() -> concurrent.futures.ThreadPoolExecutor:
    global _pool
    if _pool is None:
        _pool = concurrent.futures.ThreadPoolExecutor(4, thread_name_prefix="engram-memories")
    return _pool


def _memory_hits_elsewhere(ctx: TurnContext, query: str, vector, dry_run: bool) -> list:
    """The same, on a worker thread's own connection (checked like a request's would be)."""
    from django.db import close_old_connections

    close_old_connections()
    return _memory_hits(ctx, query, vector, dry_run)


def relaxed_commit() -> None:
    """One commit per turn, without waiting for its WAL flush (~1-2 ms of fsync here).

    A crash of the database server could lose the last instant of chat history, never its
    consistency; the request path does not wait on the disk for it.
    """
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL synchronous_commit TO OFF")


def _load_and_store_in_transaction(
    ctx: TurnContext, messages: list[dict], dry_run: bool
) -> _Loaded:
    from memory.services.conversations import (
        conversation_get_or_create,
        messages_append,
        session_resolve,
    )

    workspace, user_id = ctx.workspace, ctx.user_id
    if ctx.collection_ids:
        _collections_check(ctx)
    conversation_messages = [m for m in messages if m.get("role") not in _HEAD_ROLES]
    session = None
    if ctx.session_id and not ctx.conversation_id:
        session = Session.objects.filter(workspace=workspace, external_id=ctx.session_id).first()
    if session is not None and session.conversation_id:
        conversation = Conversation.objects.get(pk=session.conversation_id)
        serve = False
        if conversation.user_id != user_id:
            conversation_get_or_create(
                workspace=workspace, external_id=conversation.external_id, user_id=user_id
            )  # raises the 403
    else:
        external_id, serve = _conversation_key(ctx, conversation_messages)
        if dry_run:
            conversation = Conversation.objects.filter(
                workspace=workspace, external_id=external_id
            ).first()
            if conversation is not None and conversation.user_id != user_id:
                conversation_get_or_create(
                    workspace=workspace, external_id=external_id, user_id=user_id
                )  # raises the 403
        else:
            conversation, _ = conversation_get_or_create(
                workspace=workspace, external_id=external_id, user_id=user_id
            )
    rows = []
    if conversation is not None:
        rows = list(
            Message.objects.filter(conversation=conversation)
            .exclude(role__in=_HEAD_ROLES)
            .order_by("-created_at", "-id")
            .values("id", "raw", "token_count")[:HISTORY_ROWS]
        )
        rows.reverse()
    stored = [r["raw"] for r in rows]
    k = matched_prefix(stored, conversation_messages, truncated=len(rows) == HISTORY_ROWS)
    new = conversation_messages[k:]
    before = rows[: max(0, len(rows) - k)]
    stored_ids: list[str] = []
    session_id = ctx.session_id
    if not dry_run:
        session = session_resolve(
            workspace=workspace,
            conversation=conversation,
            user_id=user_id,
            external_id=ctx.session_id,
        )
        session_id = session.external_id
        if new:
            stored_ids = [
                m.id
                for m in messages_append(
                    workspace=workspace, conversation=conversation, session=session, messages=new
                )
            ]
    elif conversation is not None and not session_id:
        current = selectors.session_current(workspace=workspace, conversation=conversation)
        session_id = current.external_id if current else None
    resent_ids = [r["id"] for r in rows[max(0, len(rows) - k) :]]
    # Messages already in the request or in the history candidates are not "retrieved" again.
    exclude = stored_ids + resent_ids + ([r["id"] for r in before] if serve else [])
    return _Loaded(
        conversation=conversation,
        session=session,
        session_id=session_id,
        history=[{"id": r["id"], "message": r["raw"], "tokens": r["token_count"]} for r in before]
        if serve
        else [],
        exclude_ids=exclude,
        stored_ids=stored_ids,
        serve_history=serve,
    )


def _memory_item(found: selectors.Found) -> Item:
    memory = found.obj
    return Item(
        kind="memory",
        id=memory.id,
        line=f"- [{day_label(memory_date(memory))}] {memory.text}",
        score=round(found.score, 5),
        why=found.why(),
        sources=found.sources,
        detail={"memory_kind": memory.kind},
    )


def _message_item(found: selectors.Found) -> Item:
    message = found.obj
    text = " ".join(message.content.split())
    return Item(
        kind="message",
        id=message.id,
        line=f"- [{day_label(message.created_at)}] {speaker(message.role, message.name)}: {text}",
        score=round(found.score, 5),
        why=found.why(),
        sources=found.sources,
        detail={"conversation_id": message.conversation.external_id},
    )


def _collections_check(ctx: TurnContext) -> None:
    try:
        from memory.knowledge import collections_check
    except ImportError:  # knowledge collections are not installed: no id can exist
        raise ApiError(
            404,
            f"No collection '{ctx.collection_ids[0]}' in this workspace.",
            param="x-collection-ids",
            code="not_found",
        ) from None
    collections_check(workspace=ctx.workspace, collection_ids=ctx.collection_ids)


def _knowledge_items(ctx: TurnContext, query: str) -> list[Item]:
    from memory.knowledge import knowledge_search

    chunks = knowledge_search(
        workspace=ctx.workspace,
        collection_ids=ctx.collection_ids,
        query=query,
        limit=KNOWLEDGE_CANDIDATES,
    )
    items = []
    for chunk in chunks:
        title = chunk.get("title") or chunk.get("document_id")
        text = " ".join(str(chunk.get("text", "")).split())
        source = {
            k: chunk.get(k)
            for k in ("collection_id", "document_id", "title", "chunk_index", "score", "snippet")
        }
        items.append(
            Item(
                kind="knowledge",
                id=f"{chunk.get('document_id')}#{chunk.get('chunk_index')}",
                line=f'<document title="{title}" chunk="{chunk.get("chunk_index")}">\n{text}\n</document>',
                score=chunk.get("score"),
                why="knowledge collection match",
                sources=[source],
            )
        )
    return items


def _retrieve_and_assemble(
    ctx: TurnContext,
    loaded: _Loaded,
    query: str,
    vector,
    messages: list[dict],
    dry_run: bool,
    memories=None,
):
    """Past messages (and knowledge) here; memories too unless they were searched in parallel."""
    budget = budget_for(ctx.body, ctx.model)
    caps = caps_for(budget.total)
    workspace, user_id = ctx.workspace, ctx.user_id
    messages_found = []
    if memories is None:
        memories = _memory_hits(ctx, query, vector, dry_run)
    if query:
        messages_found = selectors.message_search(
            workspace=workspace,
            user_id=user_id,
            query=query,
            vector=vector,
            limit=MESSAGE_CANDIDATES,
            exclude_ids=loaded.exclude_ids,
            min_similarity=MIN_MESSAGE_SIMILARITY,
        )
    if isinstance(memories, concurrent.futures.Future):
        memories = memories.result(timeout=30)
    blocks = []
    summary = loaded.conversation.summary if loaded.conversation and loaded.serve_history else ""
    if summary:
        blocks.append(
            Block(
                name="summary",
                header="Engram: summary of the earlier part of this conversation.",
                tag="conversation_summary",
                items=[Item(kind="summary", id="summary", line=summary, why="rolling summary")],
                cap=caps["summary"],
            )
        )
    if ctx.collection_ids and query:
        blocks.append(
            Block(
                name="knowledge",
                header="Engram: passages from the knowledge collections; cite their titles.",
                tag="knowledge",
                items=_knowledge_items(ctx, query),
                cap=caps["knowledge"],
            )
        )
    blocks.append(
        Block(
            name="memories",
            header="Engram: long-term memories about the user, each dated (when it happened or "
            "was learned). Use them when relevant.",
            tag="memories",
            items=[_memory_item(f) for f in memories],
            cap=caps["memories"],
        )
    )
    blocks.append(
        Block(
            name="retrieved_messages",
            header="Engram: earlier messages from the user's past conversations that may be "
            "relevant, dated.",
            tag="past_messages",
            items=[_message_item(f) for f in messages_found],
            cap=caps["retrieved"],
        )
    )
    assembly = assemble(
        request_messages=messages,
        blocks=blocks,
        history=history_units(loaded.history),
        budget=budget.total,
    )
    return assembly, budget


async def prepare_turn(ctx: TurnContext, *, dry_run: bool = False) -> PreparedTurn:
    messages = list(ctx.body.get("messages") or [])
    if not ctx.user_id:
        explain = {}
        if dry_run:
            tokens = count_messages(messages)
            explain = {"context_tokens": tokens, "blocks": [{"name": "request", "tokens": tokens}]}
        return PreparedTurn(messages=messages, explain=explain)
    query = query_text(messages)
    # The query embedding (the costliest step) runs beside the database work.
    embedding = (
        asyncio.ensure_future(sync_to_async(_embed, thread_sensitive=False)(query))
        if query
        else None
    )
    try:
        await _await_finishes((ctx.workspace.id, ctx.user_id))
        loaded = await sync_to_async(_load_and_store)(ctx, messages, dry_run)
    except BaseException:
        if embedding is not None:
            embedding.cancel()
        raise
    vector = await embedding if embedding is not None else None
    if loaded.in_transaction or not query:
        assembly, budget = await sync_to_async(_retrieve_and_assemble)(
            ctx, loaded, query, vector, messages, dry_run
        )
    else:
        # Memories on a second connection while this one ranks past messages.
        memories = _parallel().submit(_memory_hits_elsewhere, ctx, query, vector, dry_run)
        assembly, budget = await sync_to_async(_retrieve_and_assemble)(
            ctx, loaded, query, vector, messages, dry_run, memories
        )
    memories_used = len(assembly.used.get("memories", []))
    knowledge = [s for item in assembly.used.get("knowledge", []) for s in item.sources]
    conversation_id = loaded.conversation.external_id if loaded.conversation else None
    engram = {
        "session_id": loaded.session_id,
        "conversation_id": conversation_id,
        "memories_used": memories_used,
        "messages_retrieved": len(assembly.used.get("retrieved_messages", [])),
        "history_messages": len(assembly.history_ids),
        "context_tokens": assembly.tokens,
    }
    if ctx.collection_ids:
        engram["sources"] = knowledge
    headers = {
        "x-engram-memories-used": str(memories_used),
        "x-engram-context-tokens": str(assembly.tokens),
    }
    if loaded.session_id:
        headers["x-session-id"] = loaded.session_id
    if conversation_id:
        headers["x-engram-conversation-id"] = conversation_id
    state = None
    if not dry_run and loaded.conversation is not None:
        state = TurnState(
            workspace_id=ctx.workspace.id,
            user_id=ctx.user_id,
            conversation_pk=loaded.conversation.pk,
            conversation_id=conversation_id,
            session_pk=loaded.session.pk if loaded.session else None,
            session_id=loaded.session_id,
            stored_ids=loaded.stored_ids,
        )
    explain = {
        "context_tokens": assembly.tokens,
        "budget": {
            "context_window": budget.window,
            "reserved_for_completion": budget.reserved,
            "available": budget.total,
        },
        "blocks": assembly.blocks,
        "stored_message_ids": loaded.stored_ids,
    }
    return PreparedTurn(
        messages=assembly.messages, engram=engram, headers=headers, explain=explain, state=state
    )


def _finish(
    ctx: TurnContext, state: TurnState, assistant: dict | None, usage: dict | None, incomplete: bool
) -> None:
    from memory.services.conversations import messages_append
    from memory.services.processing import extraction_enqueue, summary_enqueue

    conversation = Conversation.objects.get(pk=state.conversation_pk)
    session = Session.objects.filter(pk=state.session_pk).first() if state.session_pk else None
    with transaction.atomic():
        relaxed_commit()
        if assistant is not None and (
            assistant.get("content") or assistant.get("tool_calls") or incomplete
        ):
            message = {"role": "assistant", "content": assistant.get("content")}
            if assistant.get("tool_calls"):
                message["tool_calls"] = assistant["tool_calls"]
            usage = usage or {}
            [stored] = messages_append(
                workspace=ctx.workspace,
                conversation=conversation,
                session=session,
                messages=[message],
                incomplete=incomplete,
                prompt_tokens=usage.get("prompt_tokens"),
                completion_tokens=usage.get("completion_tokens"),
            )
            newest = stored.id
        else:
            newest = state.stored_ids[-1] if state.stored_ids else None
        extraction_enqueue(workspace=ctx.workspace, conversation=conversation, upto=newest)
        summary_enqueue(workspace=ctx.workspace, conversation=conversation)


async def finish_turn(
    ctx: TurnContext,
    prepared: PreparedTurn,
    *,
    assistant: dict | None,
    usage: dict | None,
    incomplete: bool,
) -> None:
    state = prepared.state
    if not isinstance(state, TurnState):
        return  # a pass-through or a dry run: nothing was stored, nothing to finish
    key = (state.workspace_id, state.user_id)
    task = asyncio.current_task()
    if task is not None:
        _inflight.setdefault(key, set()).add(task)
    try:
        await sync_to_async(_finish)(ctx, state, assistant, usage, incomplete)
    finally:
        if task is not None:
            tasks = _inflight.get(key)
            if tasks is not None:
                tasks.discard(task)
                if not tasks:
                    _inflight.pop(key, None)
