"""A turn around the upstream call: prepare (store, recall, assemble) and finish (store, enqueue).

Runs in the async request path: ORM work goes through on_request_thread in two hops. A worker thread
computes the one query embedding and then ranks memories on its own connection while the first
hop stores the turn (memory.turn.conversation); the second ranks past messages and assembles (memory.turn.recall).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from django.db import transaction
from django.db.models import Exists, OuterRef

from config.common import background
from config.common.errors import DATABASE_UNAVAILABLE, refused_input
from config.common.orm import on_request_thread
from memory.models import Conversation, Session
from memory.retrieval.elsewhere import parallel
from memory.retrieval.search import Found
from memory.services.locks import user_lock
from memory.text import REPLY_PRIMING, content_text, count_messages, kept_reasoning
from memory.turn.assembly import Assembly, Budget, budget_for, request_fits
from memory.turn.contract import PreparedTurn, TurnContext
from memory.turn.conversation import fingerprint, load_and_store
from memory.turn.recall import knowledge_only, memory_hits_elsewhere, recall_and_assemble

logger = logging.getLogger("engram.memory")

QUERY_CHARS = 2000
FINISH_WAIT_SECONDS = 10.0
# How long an answer's store is tried again while the database is unreachable (a restart
# takes seconds); the process keeps the answer in memory meanwhile.
FINISH_RETRY_SECONDS = 60.0


@dataclass
class TurnState:
    workspace_id: str
    user_id: str
    conversation_pk: str
    conversation_id: str
    session: Session | None  # as prepare_turn resolved it
    session_id: str | None
    stored_ids: list[str] = field(default_factory=list)
    stored: list[dict] = field(default_factory=list)  # the request's messages stored_ids name
    created: Conversation | None = None  # the conversation, when this turn's store created it
    fingerprint: str | None = None  # the conversation's transcript's with this request's

    @property
    def session_pk(self) -> str | None:
        return self.session.pk if self.session is not None else None


def _finishing(workspace_id: str, user_id: str) -> tuple[str, str, str]:
    """What a finish_turn holds while it runs: the next prepare_turn of the same (workspace,
    user) waits for it, so a reply stored a moment ago is history in the next turn."""
    return ("finish_turn", workspace_id, user_id)


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


def _embed_then_memories(
    ctx: TurnContext,
    query: str,
    dry_run: bool,
    vector_ready: concurrent.futures.Future[list[float]],
) -> list[Found]:
    """On a worker thread: the query vector (handed over at once), then the memory ranking."""
    try:
        vector = _embed(query)
    except BaseException as exc:
        vector_ready.set_exception(exc)
        raise
    vector_ready.set_result(vector)
    return memory_hits_elsewhere(ctx, query, vector, dry_run)


def _budget_explained(budget: Budget) -> dict:
    return {
        "context_window": budget.window,
        "reserved_for_completion": budget.reserved,
        "reserved_for_definitions": budget.definitions,
        "available": budget.total,
    }


def _explain(assembly: Assembly, budget: Budget, stored_ids: list[str]) -> dict:
    return {
        "context_tokens": assembly.tokens,
        "budget": _budget_explained(budget),
        "blocks": assembly.blocks,
        "stored_message_ids": stored_ids,
    }


def _sources(ctx: TurnContext, assembly: Assembly) -> dict:
    if not ctx.collection_ids:
        return {}
    return {"sources": [s for item in assembly.used.get("knowledge", []) for s in item.sources]}


async def _knowledge_only(ctx: TurnContext, messages: list[dict]) -> PreparedTurn:
    """A turn without a user that names collections: knowledge, nothing remembered."""
    assembly, budget = await on_request_thread(knowledge_only)(ctx, query_text(messages), messages)
    engram = {
        "session_id": None,
        "conversation_id": None,
        "memories_used": 0,
        "memories": [],
        "messages_retrieved": 0,
        "messages": [],
        "history_messages": 0,
        "context_tokens": assembly.tokens,
        **_sources(ctx, assembly),
    }
    headers = {"x-engram-memories-used": "0", "x-engram-context-tokens": str(assembly.tokens)}
    return PreparedTurn(
        messages=assembly.messages,
        engram=engram,
        headers=headers,
        explain=_explain(assembly, budget, []),
    )


async def prepare_turn(ctx: TurnContext, *, dry_run: bool = False) -> PreparedTurn:
    # Before anything of the turn is stored: a refused request leaves no turn behind.
    request_fits(body=ctx.body, model=ctx.upstream_model or ctx.model)
    messages = list(ctx.body.get("messages") or [])
    # An agent with memory off: nothing stored or recalled, as for a turn without a user.
    user_id = ctx.user_id if ctx.remember else None
    if not user_id:
        if ctx.collection_ids:
            return await _knowledge_only(ctx, messages)
        explain: dict = {}
        if dry_run:  # /v1/context: the request as it goes, beside the budget it is within
            tokens = count_messages(messages)
            explain = {
                "context_tokens": tokens,
                "budget": _budget_explained(budget_for(ctx.body, ctx.upstream_model or ctx.model)),
                "blocks": [{"name": "request", "tokens": tokens - REPLY_PRIMING if tokens else 0}],
            }
        return PreparedTurn(messages=messages, explain=explain)
    query = query_text(messages)
    # The query embedding (the costliest step), then the memory ranking on a second connection,
    # run beside the database work of storing the turn; past messages are ranked once it is done.
    vector_ready: concurrent.futures.Future[list[float]] | None = None
    memories: concurrent.futures.Future[list[Found]] | None = None
    if query:
        vector_ready = concurrent.futures.Future()
        memories = parallel().submit(_embed_then_memories, ctx, query, dry_run, vector_ready)
    try:
        await background.wait_for(
            _finishing(ctx.workspace.id, user_id), timeout=FINISH_WAIT_SECONDS
        )
        loaded = await on_request_thread(load_and_store)(ctx, messages, dry_run)
    except BaseException:
        if memories is not None:
            memories.cancel()
        raise
    vector = await asyncio.wrap_future(vector_ready) if vector_ready is not None else None
    if loaded.in_transaction:
        # Inside a caller's transaction (tests) another connection cannot see its rows.
        memories = None
    assembly, budget = await on_request_thread(recall_and_assemble)(
        ctx, loaded, query, vector, messages, dry_run, memories
    )
    used_memories = assembly.used.get("memories", [])
    memories_used = len(used_memories)
    retrieved = assembly.used.get("retrieved_messages", [])
    conversation_id = loaded.conversation.external_id if loaded.conversation else None
    engram = {
        "session_id": loaded.session_id,
        "conversation_id": conversation_id,
        "memories_used": memories_used,
        # which memories this answer was given, and why: what the user sees beside the answer
        # (a count alone said nothing; /v1/context before the turn may differ from the turn)
        "memories": [
            {"id": item.id, "line": item.line, "score": item.score, "why": item.why}
            for item in used_memories
        ],
        "messages_retrieved": len(retrieved),
        # and which of the user's past messages, as for memories
        "messages": [
            {"id": item.id, "line": item.line, "score": item.score, "why": item.why}
            for item in retrieved
        ],
        "history_messages": len(assembly.history_ids),
        "context_tokens": assembly.tokens,
        **_sources(ctx, assembly),
    }
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
            user_id=user_id,
            conversation_pk=loaded.conversation.pk,
            conversation_id=loaded.conversation.external_id,
            session=loaded.session,
            session_id=loaded.session_id,
            stored_ids=loaded.stored_ids,
            stored=loaded.stored,
            created=loaded.conversation if loaded.created else None,
            fingerprint=loaded.fingerprint,
        )
    return PreparedTurn(
        messages=assembly.messages,
        engram=engram,
        headers=headers,
        explain=_explain(assembly, budget, loaded.stored_ids),
        state=state,
    )


def _finish(
    ctx: TurnContext,
    state: TurnState,
    assistant: dict | None,
    usage: dict | None,
    incomplete: bool,
    on_stored: Callable[[], None] | None,
    answer_id: str,
    again: bool,
    recalled: list[dict] | None = None,
) -> None:
    from memory.models import Message
    from memory.services.conversations import conversation_fingerprint_set, messages_append
    from memory.services.processing import extraction_enqueue, summary_enqueue

    # Again after a failure: a connection lost during COMMIT leaves it unknown whether the
    # commit was made; the answer's id says (one query, only then).
    if again and Message.objects.filter(pk=answer_id).exists():
        return  # finish_turn calls on_stored all the same

    # This commit waits for the disk (unlike load_and_store's): the client's last bytes wait
    # for it, and its WAL flush carries the turn's first commit too (one sequence), so an
    # answer the client received survives the database server crashing right after. ~0.2-0.4
    # ms here, after the answer, never before its first token.
    with transaction.atomic():
        user_lock(workspace_id=state.workspace_id, user_id=state.user_id)
        read = _read_again(state, extraction=ctx.extraction)
        conversation = read.conversation
        session = state.session if read.session_kept else None
        request_kept = read.request_kept
        if conversation is None and state.created is not None and _restarted_since(state.created):
            # A conversation's first turn: its row went with the request (one commit), and the
            # answer went nowhere. Its rows again, same ids, then the request as below.
            conversation, session = _created_again(state.created, state.session)
            request_kept = False
        if conversation is None:  # the user was erased during the upstream call
            logger.info("turn of an erased conversation: its answer is not stored")
            return
        added = 0  # tokens this finish stores, past what `read` counted
        if state.stored_ids and not request_kept:
            logger.warning("a turn's request lost by the database (a crash?): stored again")
            added += _tokens(
                messages_append(
                    workspace=ctx.workspace,
                    conversation=conversation,
                    session=session,
                    messages=state.stored,
                    ids=state.stored_ids,
                )
            )
        if on_stored is not None:  # registered first, so it runs before the jobs' sends
            transaction.on_commit(on_stored)
        # A refusal (structured outputs: content null, `refusal` its words) is the answer too:
        # left out, the next turn's history had two user messages in a row.
        refusal = assistant.get("refusal") if assistant is not None else None
        refusal = refusal if isinstance(refusal, str) and refusal else None
        if assistant is not None and (
            assistant.get("content") or assistant.get("tool_calls") or refusal or incomplete
        ):
            message = {"role": "assistant", "content": assistant.get("content")}
            if refusal:
                message["refusal"] = refusal
            if assistant.get("tool_calls"):
                message["tool_calls"] = assistant["tool_calls"]
                message.update(kept_reasoning(assistant))
            usage = usage or {}
            [stored] = messages_append(
                workspace=ctx.workspace,
                conversation=conversation,
                session=session,
                messages=[message],
                ids=[answer_id],
                incomplete=incomplete,
                prompt_tokens=usage.get("prompt_tokens"),
                completion_tokens=usage.get("completion_tokens"),
                recalled=recalled,
            )
            newest: str | None = stored.id
            added += stored.token_count
            answered = not incomplete
        else:
            newest = state.stored_ids[-1] if state.stored_ids else None
            answered = False
        if state.fingerprint is not None:
            # The next request resends this transcript with the answer; not after an answer
            # cut short (or none): its client holds none and resends the same transcript (a
            # retry), which must still name this conversation. This request sent again (a
            # regenerate, an SDK's retry of an answer it never received) names it too.
            conversation_fingerprint_set(
                conversation=conversation,
                fingerprint=fingerprint([message], state.fingerprint) if answered else None,
                retry_fingerprint=state.fingerprint,
            )
        if ctx.extraction:
            extraction_enqueue(
                workspace=ctx.workspace,
                conversation=conversation,
                upto=newest,
                covered=read.covered,
            )
        tokens = read.unsummarized + added if read.unsummarized is not None else None
        summary_enqueue(workspace=ctx.workspace, conversation=conversation, tokens=tokens)


@dataclass
class _ReadAgain:
    conversation: Conversation | None  # None: erased meanwhile (or lost by a crash)
    session_kept: bool = False
    request_kept: bool = True
    covered: str | None = None  # extraction_enqueue's `covered`; None: not read
    unsummarized: int | None = None  # summary_enqueue's `tokens` before this finish's rows


def _read_again(state: TurnState, *, extraction: bool) -> _ReadAgain:
    """In the finish's transaction, under the user's lock, one statement: the conversation read
    again (its summary and title may have moved since prepare_turn); whether its session is
    still there (the answer goes to a session deleted meanwhile without one, as before);
    whether the turn's request is still stored — its commit did not wait for the disk
    (load_and_store), so a database server that crashed during the upstream call and replayed
    its WAL may have lost it, and the answer then went in without its question: a 200 whose
    request was neither history nor extracted; and what the jobs' enqueueing asks (two
    statements of their own before). In SQL written once: the queryset with its subqueries
    was the finish's costliest build (bench/README.md, "Twenty-fourth session")."""
    from django.db import connection

    from config.common.rows import columns, instance
    from memory.services.processing import EXTRACTION_COVERED, UNSUMMARIZED_TOKENS

    session = 'EXISTS (SELECT 1 FROM memory_session s WHERE s."id" = %s)'
    request = 'EXISTS (SELECT 1 FROM memory_message m WHERE m."id" = %s)'
    params = []
    if state.session is not None:
        params.append(state.session.pk)
    if state.stored_ids:
        params.append(state.stored_ids[0])
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {columns(Conversation)},"
            f" {session if state.session is not None else 'FALSE'},"
            f" {request if state.stored_ids else 'TRUE'},"
            f" {EXTRACTION_COVERED if extraction else 'NULL'}, {UNSUMMARIZED_TOKENS}"
            ' FROM memory_conversation WHERE "id" = %s',
            [*params, state.conversation_pk],
        )
        row = cursor.fetchone()
    if row is None:
        return _ReadAgain(conversation=None)
    session_kept, request_kept, covered, tokens = row[-4:]
    return _ReadAgain(
        conversation=instance(Conversation, row),
        session_kept=session_kept,
        request_kept=request_kept,
        covered=(covered or "") if extraction else None,
        unsummarized=tokens or 0,
    )


def _tokens(rows: list) -> int:
    return sum(row.token_count for row in rows)


def _restarted_since(created: Conversation) -> bool:
    """Whether the database server started after `created` was stored: a crash, whose recovery
    may have lost that store's commit (load_and_store's does not wait for the disk). Else the
    conversation is missing because the user (or it) was erased meanwhile. One clock, the
    database's: `created_at` is the insert's statement time, returned by it (a web process's
    clock seconds ahead of the database host's missed the crash, and the lost turn was not
    stored; seconds behind, it took an erasure for a crash and stored the erased user's turn
    again; tests/test_memory_turns.py, tests/test_faults_kills.py)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_postmaster_start_time() > %s", [created.created_at])
        row = cursor.fetchone()
    return bool(row and row[0])


def _created_again(
    created: Conversation, session: Session | None
) -> tuple[Conversation | None, Session | None]:
    """The conversation a crash lost, stored again as it was (same id, workspace and user), and
    its session if that went too; None when its client id was taken meanwhile (the client's
    retry, answered on the recovered server, made a new one)."""
    from django.db import IntegrityError

    try:
        with transaction.atomic():
            Conversation.objects.bulk_create([created])
    except IntegrityError:
        return None, None
    logger.warning("a conversation lost by the database (a crash?): stored again")
    if session is not None:
        Session.objects.bulk_create([session], ignore_conflicts=True)  # lost with it, or kept
        if not Session.objects.filter(pk=session.pk).exists():  # its client id taken meanwhile
            session = None
    return created, session


def recall_kept(engram: dict) -> list[dict]:
    """What an answer keeps of its recall (Message.recalled): each memory's and past message's
    id, why and score as its `engram` object gave them — not their lines, whose text a
    deletion of the memory (or the message) must take away with it."""
    return [
        {"type": kind, "id": item["id"], "why": item["why"], "score": item["score"]}
        for kind, key in (("memory", "memories"), ("message", "messages"))
        for item in engram.get(key, ())
    ]


async def finish_turn(
    ctx: TurnContext,
    prepared: PreparedTurn,
    *,
    assistant: dict | None,
    usage: dict | None,
    incomplete: bool,
    on_stored: Callable[[], None] | None = None,
    refused: bool = False,
) -> None:
    """Store the answer, then send its background jobs; `on_stored` is called (from any thread)
    once the answer is committed, before the jobs are sent — or when finishing gave up.
    `refused`: the request was refused for what it holds, and its messages are taken out
    again (`_forget_request`)."""
    state = prepared.state
    try:
        if not isinstance(state, TurnState):
            return  # a pass-through or a dry run: nothing was stored, nothing to finish
        with background.holding(_finishing(state.workspace_id, state.user_id)):
            if refused:
                await on_request_thread(_forget_request)(state)
                return
            finish = on_request_thread(_finish)
            recalled = recall_kept(prepared.engram)
            await _until_stored(
                lambda answer_id, again: finish(
                    ctx, state, assistant, usage, incomplete, on_stored, answer_id, again, recalled
                )
            )
    finally:
        if on_stored is not None:
            on_stored()  # again after the commit's call: setting an event twice is harmless


def _forget_request(state: TurnState) -> None:
    """The request's stored messages deleted: it was refused for what it holds (a part the
    model cannot read, a field it does not take), and a refused request leaves no turn behind,
    as one refused before anything is stored does. Kept, they were the conversation's history
    (unanswered), which every later turn sent on to the same refusal. A conversation this
    request made goes with them unless another turn stored in it meanwhile: kept, a refused
    first turn left an empty conversation listed (and titled, from the refused words). An
    older conversation and the sessions stay; nothing is extracted from what the upstream
    never took."""
    from memory.models import Message

    if not state.stored_ids:  # all of it resent: stored by an earlier turn, not this one
        return
    with transaction.atomic():
        user_lock(workspace_id=state.workspace_id, user_id=state.user_id)
        Message.objects.filter(pk__in=state.stored_ids).delete()
        if state.created is not None:
            Conversation.objects.filter(pk=state.conversation_pk).exclude(
                Exists(Message.objects.filter(conversation_id=OuterRef("pk")))
            ).delete()


async def _until_stored(store: Callable[[str, bool], Awaitable[None]]) -> None:
    """`store(answer_id, again)` (the answer's `_finish`), tried again while the database is
    unreachable, for up to FINISH_RETRY_SECONDS: an answer whose store met a restart is stored
    once the database is back (the client's last bytes wait for it up to the gateway's
    REPLY_STORE_WAIT; after that it goes on here), instead of being delivered and lost."""
    from memory.services.conversations import ordered_ids

    [answer_id] = ordered_ids(1)
    deadline = time.monotonic() + FINISH_RETRY_SECONDS
    pause, again = 0.1, False
    while True:
        try:
            return await store(answer_id, again)
        except DATABASE_UNAVAILABLE as exc:
            # a program limit (class 54, an OperationalError) is the answer's, not the database's
            if refused_input(exc) or time.monotonic() + pause > deadline:
                raise
            logger.warning(
                "storing an answer: database unavailable (%s); again", type(exc).__name__
            )
        await asyncio.sleep(pause)
        pause, again = min(pause * 2, 2.0), True


def finish_turn_soon(
    ctx: TurnContext,
    prepared: PreparedTurn,
    *,
    assistant: dict | None,
    usage: dict | None,
    incomplete: bool,
    on_stored: Callable[[], None] | None = None,
    refused: bool = False,
) -> asyncio.Task | None:
    """What a door calls once a turn is answered (on the event loop, never waiting): the turn's
    `finish_turn` in the background, its task returned; a turn memory stored nothing for (a
    pass-through or a dry run) has nothing to finish: `on_stored` is called at once and no task
    is made (a task that returns at once, its done callback and the door's wait for it cost a
    pass-through ~30,000 instructions, bench_relay_cpu.py --whole --callgrind)."""
    if not isinstance(prepared.state, TurnState):
        if on_stored is not None:
            on_stored()
        return None
    return background.spawn(
        finish_turn(
            ctx,
            prepared,
            assistant=assistant,
            usage=usage,
            incomplete=incomplete,
            on_stored=on_stored,
            refused=refused,
        ),
        name="finish_turn",
    )
