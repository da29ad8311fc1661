"""What a turn recalls — memories, past messages, knowledge — fitted into delimited blocks.

Memories are ranked on a second database connection while this one ranks past messages (both
exact per-user scans, see memory.retrieval.fusion); then context assembly fits everything in
the budget.
"""

from __future__ import annotations

import concurrent.futures
import copy
import dataclasses

from config.common.text import tidy_lines
from memory.models import Memory, Message
from memory.retrieval import search
from memory.retrieval.elsewhere import on_own_connection
from memory.text import day_label, memory_date, speaker
from memory.turn.assembly import Block, Item, assemble, budget_for, caps_for, history_units
from memory.turn.contract import TurnContext

MEMORY_CANDIDATES = 12
MESSAGE_CANDIDATES = 10
KNOWLEDGE_CANDIDATES = 8
MIN_MESSAGE_SIMILARITY = 0.3  # a past message with no word in common must be this close


def _memory_hits(ctx: TurnContext, query: str, vector, dry_run: bool) -> list:
    if not query:
        return []
    return search.memory_search(
        workspace=ctx.workspace,
        user_id=ctx.memory_user_id,
        query=query,
        vector=vector,
        limit=MEMORY_CANDIDATES,
        min_similarity=search.MIN_SIMILARITY,
        keep_best=search.NEAREST_MEMORIES_KEPT,
        with_sources=dry_run,  # /v1/context explains where each memory came from
    )


def memory_hits_elsewhere(ctx: TurnContext, query: str, vector, dry_run: bool) -> list:
    """The same, on a worker thread's own connection (memory.retrieval.elsewhere)."""
    return on_own_connection(_memory_hits, ctx=ctx, query=query, vector=vector, dry_run=dry_run)


def _memory_item(found: search.Found) -> Item:
    memory = found.obj
    assert isinstance(memory, Memory)
    return Item(
        kind="memory",
        id=memory.id,
        line=f"- [{day_label(memory_date(memory))}] {memory.text}",
        score=round(found.score, 5),
        why=found.why(),
        sources=found.sources,
        detail={"memory_kind": memory.kind},
    )


def _message_item(found: search.Found) -> Item:
    message = found.obj
    assert isinstance(message, Message)
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


def _not_forgotten(ctx: TurnContext, found: list[search.Found]) -> list[search.Found]:
    """The past messages without their sentences that state a fact the user forgot (a memory
    they deleted, memory.services.forgetting): "I am allergic to peanuts." was read by the
    model from the old message after the memory was deleted. The test summaries and titles
    pass (without_forgotten), on the messages a forgotten memory came from (or a copy of
    one) only: all ten retrieved messages' sentences cost a turn 72 ms of CPU, one message
    3.9 ms (bench/bench_forgetting.py, on a machine whose calibration read 10.5 ms). A
    message left with no words is left out. One query when the user forgot nothing."""
    from memory.forgotten import forgotten_facts, without_forgotten

    forgotten = forgotten_facts(workspace=ctx.workspace, user_id=ctx.memory_user_id)
    if not forgotten:
        return found
    messages = [f.obj for f in found if isinstance(f.obj, Message) and forgotten.said_it(f.obj)]
    if not messages:
        return found
    said = without_forgotten(
        forgotten,
        [m.content for m in messages],
        speakers=[speaker(m.role, m.name) for m in messages],
    )
    left = {m.id: text for m, text in zip(messages, said, strict=True) if text != m.content}
    kept = []
    for f in found:
        if f.id not in left:
            kept.append(f)
        elif left[f.id].strip():
            message = copy.copy(f.obj)
            assert isinstance(message, Message)
            message.content = left[f.id]
            kept.append(dataclasses.replace(f, obj=message))
    return kept


def collections_check(ctx: TurnContext) -> None:
    from memory.knowledge.search import collections_check

    collections_check(workspace=ctx.workspace, collection_ids=ctx.collection_ids)


def _attribute(value: str) -> str:
    """A value inside a tag's double quotes: a quote in a title or heading would end it early."""
    return value.replace('"', "&quot;")


def _knowledge_items(ctx: TurnContext, query: str, vector) -> list[Item]:
    from memory.knowledge.search import knowledge_search

    chunks = knowledge_search(
        workspace=ctx.workspace,
        collection_ids=ctx.collection_ids,
        query=query,
        limit=KNOWLEDGE_CANDIDATES,
        vector=vector,
    )
    items = []
    for chunk in chunks:
        title = str(chunk["title"])  # the document's name (models.document_name), never empty
        heading = str(chunk.get("heading") or "")
        attributes = f'title="{_attribute(title)}"'
        if heading and heading != title:
            attributes += f' heading="{_attribute(heading)}"'
        # the chunk's lines as written: code keeps its indentation, a table its rows
        text = tidy_lines(str(chunk.get("text", "")))
        source = {
            k: chunk.get(k)
            for k in (
                "collection_id",
                "document_id",
                "title",
                "chunk_index",
                "score",
                "snippet",
                "why",
            )
        }
        items.append(
            Item(
                kind="knowledge",
                id=f"{chunk.get('document_id')}#{chunk.get('chunk_index')}",
                line=f'<document {attributes} chunk="{chunk.get("chunk_index")}">\n{text}\n</document>',
                score=chunk.get("score"),
                why=str(chunk.get("why") or ""),
                sources=[source],
            )
        )
    return items


def _knowledge_block(ctx: TurnContext, query: str, vector, caps: dict) -> Block:
    return Block(
        name="knowledge",
        header="Engram: passages from the knowledge collections; cite their titles.",
        tag="knowledge",
        items=_knowledge_items(ctx, query, vector),
        cap=caps["knowledge"],
    )


def knowledge_only(ctx: TurnContext, query: str, messages: list[dict]):
    """A turn without a user: its collections checked (NotFound naming an unknown or foreign
    one), their best chunks fitted beside the request. No memories, no history, nothing stored."""
    collections_check(ctx)
    budget = budget_for(ctx.body, ctx.upstream_model or ctx.model)
    blocks = []
    if query:
        from memory.embeddings import get_embedder

        vector = get_embedder().embed_one(query)
        blocks.append(_knowledge_block(ctx, query, vector, caps_for(budget.total, ctx.budgets)))
    assembly = assemble(request_messages=messages, blocks=blocks, history=[], budget=budget.total)
    return assembly, budget


def recall_and_assemble(
    ctx: TurnContext,
    loaded,
    query: str,
    vector,
    messages: list[dict],
    dry_run: bool,
    memories=None,
):
    """Past messages (and knowledge) here; memories too unless they were searched in parallel."""
    budget = budget_for(ctx.body, ctx.upstream_model or ctx.model)
    caps = caps_for(budget.total, ctx.budgets)
    workspace, user_id = ctx.workspace, ctx.memory_user_id
    messages_found = []
    if memories is None:
        memories = _memory_hits(ctx, query, vector, dry_run)
    if query and ctx.retrieve_messages:
        messages_found = search.message_search(
            workspace=workspace,
            user_id=user_id,
            query=query,
            vector=vector,
            limit=MESSAGE_CANDIDATES,
            exclude_ids=loaded.exclude_ids,
            min_similarity=MIN_MESSAGE_SIMILARITY,
        )
    if messages_found:
        messages_found = _not_forgotten(ctx, messages_found)
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
                keeps_end=True,
            )
        )
    if ctx.collection_ids and query:
        blocks.append(_knowledge_block(ctx, query, vector, caps))
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
