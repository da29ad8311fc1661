"""Server-side history: which conversation a turn belongs to, what the client resent, storing.

With an x-conversation-id the client may send only its new messages: the conversation's earlier
turns come back from the store. A client that resends its whole history stores nothing twice,
whatever it shows of the tool runs the store holds (matched_prefix).
Without a conversation or session id, the history the client resent names the conversation: the
user's conversation whose fingerprint (its transcript as of its last turn, system prompt
included) is that history's; else a new one. A request with no assistant message yet is a new
chat, as in OpenAI's API. A request that is a conversation's last turn's request again (its
retry_fingerprint: a regenerate, or an SDK's retry of a turn whose answer Engram stored) lands
in that conversation, as a regenerate with its id does; a first message alone only when the
client says it is a retry (TurnContext.retried), within RETRY_WINDOW.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field

from django.db import transaction
from django.db.models import Value
from django.utils import timezone

from memory import selectors
from memory.models import Conversation, Session
from memory.services.locks import user_lock
from memory.text import tool_call_ids
from memory.turn.contract import TurnContext
from memory.turn.rows import StoredRow, collapsed, normalized_of, seen

HISTORY_ROWS = 400  # stored messages considered for de-duplication and server-side history
HEAD_ROLES = ("system", "developer")
# How long after a conversation's last turn a first message alone, sent again as a retry
# (TurnContext.retried), still names it: the OpenAI SDKs retry a request after its timeout (10
# minutes by default) up to twice. Later, "Hi" again is a new chat.
RETRY_WINDOW = dt.timedelta(minutes=30)


_text = collapsed  # a message's text as matched and fingerprinted


def _normalized(message: dict) -> str | None:
    """A message as a fingerprint sees it: role and text (as _text); None: not counted.

    Tool traffic does not count (tool results, tool call ids, an assistant message that only
    calls tools): a client shows a tool run that Engram ran on the server in several shapes
    (the answer alone, the calls merged into it from a stream, calls and results as their own
    messages), and every one of them continues the same conversation.
    """
    return normalized_of(message.get("role"), _text(message))


def fingerprint(messages: list[dict], start: str = "") -> str:
    """A rolling digest of a transcript: fingerprint(a + b) == fingerprint(b, fingerprint(a)).

    System and developer messages count: two chats with different instructions are two
    conversations. The empty transcript's fingerprint is "".
    """
    return _digest(map(_normalized, messages), start)


def _digest(steps: Iterable[str | None], start: str) -> str:
    """fingerprint's steps, from the messages as _normalized made them."""
    digest = start
    for normalized in steps:
        if normalized is None:
            continue
        # surrogatepass: an upstream's answer may hold a lone surrogate (stored as U+FFFD)
        step = f"{digest}\x1e{normalized}".encode("utf-8", "surrogatepass")
        digest = hashlib.sha256(step).hexdigest()[:32]
    return digest


def resent_history(messages: list[dict]) -> list[dict]:
    """What a client that resends its transcript sent as history: everything up to its last
    assistant message (the new part is what follows: a user message, or tool results)."""
    for index in range(len(messages) - 1, -1, -1):
        if messages[index].get("role") == "assistant":
            return messages[: index + 1]
    return []


def _stored_fingerprint(
    messages: list[dict], before: list[StoredRow], *, conversation_pk: str | None
) -> str:
    """The fingerprint of a conversation's transcript as a turn named by its id stores it: the
    request's leading system prompt, the stored messages before what the request resent, the
    request's messages. So a later request without the id that resends that transcript, as
    the OpenAI SDK does, continues this conversation (_found_by_history)."""
    lead = next(
        (i for i, m in enumerate(messages) if m.get("role") not in HEAD_ROLES), len(messages)
    )
    start = fingerprint(messages[:lead])
    if conversation_pk is not None:
        start = _rows_fingerprint(conversation_pk, before, start)
    return fingerprint(messages[lead:], start)


@dataclass
class ByHistory:
    conversation: Conversation | None  # None: no history, or none matched (a new conversation)
    resent: int  # the request's conversation messages that the history holds
    fingerprint: str  # of the request's whole transcript
    again: bool = False  # the conversation's last turn's request sent again (its rows all resent)


def _found_by_history(ctx: TurnContext, messages: list[dict]) -> ByHistory:
    """Without any id: the user's conversation whose transcript, as of its last turn, is the
    history this request resent; else the one whose last turn's request is this request again
    (a regenerate, or an SDK's retry of a turn whose answer was stored: the client never saw
    it). One indexed query. No history: a new conversation, unless the client says it is a
    retry (the request again, within RETRY_WINDOW)."""
    history = resent_history(messages)
    before = fingerprint(history)
    whole = fingerprint(messages[len(history) :], before)
    if not history and not ctx.retried:
        return ByHistory(None, 0, whole)
    mine = Conversation.objects.filter(workspace=ctx.workspace, user_id=ctx.memory_user_id)
    # Each on its own index, newest first, in one statement (UNION ALL).
    found_again = mine.filter(retry_fingerprint=whole)
    if not history:  # "Hi" again is a new chat, but not the SDK's retry of the "Hi" just answered
        found_again = found_again.filter(updated_at__gte=timezone.now() - RETRY_WINDOW)
    candidates = found_again.annotate(again=Value(True)).order_by("-updated_at")[:1]
    if history:
        by_history = mine.filter(fingerprint=before).annotate(again=Value(False))
        candidates = candidates.union(by_history.order_by("-updated_at")[:1], all=True)
    # The request again is the more telling match: a conversation whose transcript is only
    # this request's history stopped there; the other answered this very request.
    found = next(iter(sorted(candidates, key=lambda c: not c.again)), None)
    if found is None:
        return ByHistory(None, 0, whole)
    if found.again:
        resent = sum(1 for m in messages if m.get("role") not in HEAD_ROLES)
        return ByHistory(found, resent, whole, again=True)
    return ByHistory(found, sum(1 for m in history if m.get("role") not in HEAD_ROLES), whole)


def _key(message: dict, calls: set, results: set) -> tuple | None:
    """A message as a resent transcript is matched against the store: role, text (as _text),
    tool call ids. None: a tool step the store holds (`calls`: the ids of its assistant
    messages' calls; `results`: those its tool results answer), which a client's transcript
    may show in any shape or not at all (of a run Engram made on the server, the JSON answer
    is the final message alone).

    The ids of calls the store holds are left out of an assistant message with text (a stream
    merges the run's calls into its answer); a result's text is not compared (a client shows
    its own version of what Engram's tool answered, or none).
    """
    role, text = message.get("role"), _text(message)
    if role == "tool":
        call_id = message.get("tool_call_id")
        return None if call_id in results else (role, text, call_id, ())
    ids = tool_call_ids(message)
    new = tuple(i for i in ids if i not in calls)
    if role == "assistant" and ids and not new and not text:
        return None
    return (role, text, None, new)


@dataclass
class Match:
    """What of a request the store already holds: the client resent it."""

    incoming: int  # the request's leading messages that the store holds
    rows: int  # the stored rows (the newest) they stand for, tool steps left out included


def _answer(key: tuple | None) -> bool:
    """An assistant message with text, as _key sees it."""
    return key is not None and key[0] == "assistant" and bool(key[1])


def _slots(keyed: list[tuple[int, tuple]], *, alternatives: bool) -> list[tuple[int, list]]:
    """The stored side of a match: (first row, the keys a resent message may have there).
    With `alternatives`, consecutive answers are one place the client shows one of: a
    regenerated answer, or a retry's answer after a cut one, follows the answer it replaces."""
    slots: list[tuple[int, list]] = []
    for i, key in keyed:
        if alternatives and slots and _answer(key) and _answer(slots[-1][1][-1]):
            slots[-1][1].append(key)
        else:
            slots.append((i, [key]))
    return slots


@dataclass
class _Aligned:
    k: int  # ours[:k] ends in the slots' tail
    row: int  # the stored row that tail starts at


def _aligned(
    slots: list[tuple[int, list]], ours: list[tuple[int, tuple]], *, truncated: bool
) -> _Aligned | None:
    """The largest k with ours[:k] ending in the slots' tail; None: no k."""
    longest = len(ours) if truncated else min(len(slots), len(ours))
    for k in range(longest, 0, -1):
        m = min(k, len(slots))
        offset = len(slots) - m
        if m and all(ours[k - m + i][1] in slots[offset + i][1] for i in range(m)):
            return _Aligned(k=k, row=slots[offset][0])
    return None


def _branched(theirs: list[tuple[int, tuple]], ours: list[tuple[int, tuple]]) -> _Aligned | None:
    """A transcript resent from the conversation's first message that leaves out some of what
    the store holds: an earlier message edited and answered again (a branch), or the turns
    another device took meanwhile. The longest ours[:k] found in the store in order, from its
    first message on; it must hold an answer (a client sending only its new message, the
    same as the conversation's first one, is not resending anything)."""
    if not theirs or not ours or ours[0][1] != theirs[0][1]:
        return None
    j = k = 0
    for _, key in ours:
        while j < len(theirs) and theirs[j][1] != key:
            j += 1
        if j == len(theirs):
            break
        j, k = j + 1, k + 1
    if not any(key[0] == "assistant" for _, key in ours[:k]):
        return None
    return _Aligned(k=k, row=theirs[0][0])


def matched_prefix(stored: list[dict], incoming: list[dict], *, truncated: bool = False) -> Match:
    """How many leading incoming messages the store already holds (the client resent them).

    The largest k with incoming[:k] ending in the stored messages' tail, tool steps the store
    holds skipped on both sides (_key): a client resends a server-side tool run as the answer
    alone, or with the calls merged into it, or with calls and results of its own. Tool steps
    of the store's right after that are resent too; anything else after it is new (never
    dropped). When `stored` is only the newest window of a longer conversation (`truncated`),
    a resent history longer than that window still matches by its last messages.

    Else, a regenerate: consecutive stored answers are alternatives (the client shows the one
    it kept), and a transcript resent without the last answer asks for that answer again (it
    is then among the rows resent, never history before the request). So that a client that
    sends only its new message, saying again what it said last ("hello" twice), is not taken
    for one, the transcript must hold an answer. Else a transcript resent from the start that
    leaves out some of the store's messages (_branched): what it shares with the store is
    resent, the rest is new, and none of the stored rows is history before it.
    """
    calls = {i for m in stored for i in tool_call_ids(m)}
    results = {m.get("tool_call_id") for m in stored if m.get("role") == "tool"}
    keyed = [(i, _key(m, calls, results)) for i, m in enumerate(stored)]
    theirs = [(i, key) for i, key in keyed if key is not None]
    return _matched(theirs, len(stored), calls, results, incoming, truncated=truncated)


def _matched_rows(rows: list[StoredRow], incoming: list[dict], *, truncated: bool) -> Match:
    """matched_prefix of the rows' messages, from their keys as memory.turn.rows works them out (a
    stored message's key is its own: the store's calls and results hold its ids)."""
    calls = {i for row in rows for i in row.seen.calls}
    results = {
        row.seen.message.get("tool_call_id")
        for row in rows
        if row.seen.key is None and row.seen.message.get("role") == "tool"
    }
    theirs = [(i, row.seen.key) for i, row in enumerate(rows) if row.seen.key is not None]
    return _matched(theirs, len(rows), calls, results, incoming, truncated=truncated)


def _matched(
    theirs: list[tuple[int, tuple]],
    stored: int,
    calls: set,
    results: set,
    incoming: list[dict],
    *,
    truncated: bool,
) -> Match:
    """matched_prefix, from the stored messages' keys (`theirs`: index and key of each that
    has one, of `stored` messages) and their tool calls' and results' ids."""
    keyed = [(i, _key(m, calls, results)) for i, m in enumerate(incoming)]
    ours = [(i, key) for i, key in keyed if key is not None]
    found = _aligned(_slots(theirs, alternatives=False), ours, truncated=truncated)
    slots = _slots(theirs, alternatives=True)
    if found is None:
        found = _aligned(slots, ours, truncated=truncated)
    if found is None and slots and _answer(slots[-1][1][0]):
        again = _aligned(slots[:-1], ours, truncated=truncated)
        if again is not None and any(key[0] == "assistant" for _, key in ours[: again.k]):
            found = again
    if found is None and not truncated:
        found = _branched(theirs, ours)
    if found is None:
        return Match(incoming=0, rows=0)
    end = ours[found.k - 1][0] + 1
    while end < len(incoming) and _key(incoming[end], calls, results) is None:
        end += 1
    return Match(incoming=end, rows=stored - found.row)


@dataclass
class Loaded:
    conversation: Conversation | None
    session: Session | None
    session_id: str | None
    history: list[dict]  # stored rows before what the request resent (oldest first)
    exclude_ids: list[str]
    stored_ids: list[str]
    serve_history: bool
    stored: list[dict] = field(default_factory=list)  # the messages stored_ids name, in order
    created: bool = False  # the conversation was created by this request's store
    # The fingerprint of the conversation's transcript with this request's messages (found by
    # its history: the request's whole transcript), which the reply extends into the
    # conversation's new fingerprint (finish_turn); None: not known whole (a long conversation).
    fingerprint: str | None = None
    # An enclosing transaction (a test's) hides its rows from other connections: then all
    # retrieval stays on this thread's connection instead of running in parallel.
    in_transaction: bool = False


def load_and_store(ctx: TurnContext, messages: list[dict], dry_run: bool) -> Loaded:
    from django.db import connection

    with transaction.atomic():
        if not dry_run:
            # The turn's first commit without waiting for its WAL flush (~0.2-0.4 ms of fsync
            # here, before the first token). Its answer's commit (memory.turn.pipeline._finish)
            # waits, and flushes this one with it: an answer the client received survives a
            # crash of the database server; a turn that never got its answer may lose its
            # request to one, as the client lost the answer.
            user_lock(
                workspace_id=ctx.workspace.id, user_id=ctx.memory_user_id, relaxed_commit=True
            )
        loaded = _load_and_store_in_transaction(ctx, messages, dry_run)
    loaded.in_transaction = connection.in_atomic_block
    return loaded


def _stored_rows(conversation: Conversation) -> list[StoredRow]:
    """The conversation's newest HISTORY_ROWS messages but its head's, oldest first: id, raw,
    token_count, incomplete. The queryset's statement, written once: every remembered turn
    reads them (bench/README.md, "Twenty-fourth session"). Each row's exact token count is
    kept by its id and text (memory.turn.rows)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            'SELECT "id", "raw"::text, "token_count", "incomplete" FROM memory_message'
            ' WHERE "conversation_id" = %s AND NOT ("role" IN (%s, %s))'
            ' ORDER BY "created_at" DESC, "id" DESC LIMIT %s',
            [conversation.pk, *HEAD_ROLES, HISTORY_ROWS],
        )
        found = cursor.fetchall()
    return [
        StoredRow(id=i, seen=seen(i, value), token_count=tokens, incomplete=incomplete)
        for i, value, tokens, incomplete in reversed(found)
    ]


# Per conversation, the fingerprint of the stored rows before a turn's request, as of its last
# turn in this process: (the request's head's fingerprint it started from, how many rows, the
# hash of their tags, the digest). The next turn's rows begin with the same ones (its request
# and answer after them): only those are hashed (a ~270-message conversation hashed all of them
# on every turn). Rows compared by their tags (memory.turn.rows: id and raw text): any other
# process's change to the conversation (a deletion, an insert among them, a row rewritten) is a
# different prefix, hashed whole. ~100 bytes a conversation.
DIGESTS_KEPT = 1024
_digests: dict[str, tuple[str, int, int, str]] = {}


def _rows_fingerprint(conversation_pk: str, rows: list[StoredRow], start: str) -> str:
    """fingerprint([r.raw for r in rows], start), from what was hashed of them before."""
    tags = tuple(row.seen.tag for row in rows)
    kept = _digests.get(conversation_pk)
    done, digest = 0, start
    if kept is not None and kept[0] == start and hash(tags[: kept[1]]) == kept[2]:
        done, digest = kept[1], kept[3]
    digest = _digest((row.seen.normalized for row in rows[done:]), digest)
    if len(_digests) >= DIGESTS_KEPT and conversation_pk not in _digests:
        for old in list(_digests)[: DIGESTS_KEPT // 2]:
            _digests.pop(old, None)
    _digests[conversation_pk] = (start, len(tags), hash(tags), digest)
    return digest


def _load_and_store_in_transaction(ctx: TurnContext, messages: list[dict], dry_run: bool) -> Loaded:
    from memory.services.conversations import (
        conversation_create,
        conversation_get_or_create,
        conversation_of_user,
        conversation_owned,
        messages_append,
        session_active_since,
        session_resolve,
    )

    workspace, user_id = ctx.workspace, ctx.memory_user_id
    if ctx.collection_ids:
        from memory.turn.recall import collections_check

        collections_check(ctx)
    conversation_messages = [m for m in messages if m.get("role") not in HEAD_ROLES]
    session = None
    conversation: Conversation | None  # None only in a dry run that found nothing stored
    if ctx.session_id and not ctx.conversation_id:
        session = Session.objects.filter(
            workspace=workspace, external_id=ctx.session_id, user_id=user_id
        ).first()
    resent = 0  # conversation messages the client resent as the found conversation's history
    whole: str | None = None  # found by the history it resent: the request's fingerprint
    again = False  # found as its last turn's request sent again: every stored row was resent
    created = False
    active_read: tuple[Session | None] | None = None  # the conversation's current session, if read
    serve = bool(ctx.conversation_id)  # only an explicit conversation id serves history
    linked = None  # the conversation the named session goes on in, when it is this workspace's
    if session is not None and session.conversation_id:
        linked = Conversation.objects.filter(
            workspace=workspace, pk=session.conversation_id
        ).first()
    if linked is not None:
        conversation = conversation_owned(conversation=linked, user_id=user_id)
    elif not ctx.conversation_id and not ctx.session_id:
        found = _found_by_history(ctx, messages)
        conversation, resent, whole = found.conversation, found.resent, found.fingerprint
        again = found.again
        if conversation is None and not dry_run:
            conversation = conversation_create(
                workspace=workspace, external_id=f"auto:{uuid.uuid4().hex[:24]}", user_id=user_id
            )
            created = True
    else:
        external_id = ctx.conversation_id or Conversation.session_external_id(
            ctx.session_id or ""  # set: this branch has a conversation or a session id
        )
        if dry_run:
            conversation = conversation_of_user(
                workspace=workspace, external_id=external_id, user_id=user_id
            )
        elif not ctx.session_id:
            # The conversation and its current session in one statement (what session_resolve
            # asks below); a new one, Engram's conv_ id, another user's: as with a session id.
            by_id, active = selectors.conversation_and_current_session(
                workspace=workspace,
                external_id=external_id,
                user_id=user_id,
                since=session_active_since(timezone.now()),
            )
            if by_id is not None:
                conversation, active_read = by_id, (active,)
            else:
                conversation, created = conversation_get_or_create(
                    workspace=workspace, external_id=external_id, user_id=user_id
                )
        else:
            conversation, created = conversation_get_or_create(
                workspace=workspace,
                external_id=external_id,
                user_id=user_id,
                of_session=not ctx.conversation_id,
            )
    rows = _stored_rows(conversation) if conversation is not None else []
    truncated = len(rows) == HISTORY_ROWS  # only the newest rows were read
    match = _matched_rows(rows, conversation_messages, truncated=truncated)
    if (
        not match.incoming
        and rows
        and rows[-1].incomplete
        and rows[-1].raw.get("role") == "assistant"
    ):
        # A retry of a turn whose answer was cut mid-stream resends its question without the
        # half answer: matched without it, the question is not stored twice, and the half
        # answer (kept, marked incomplete) is not history the model reads before it again.
        match = _matched_rows(rows[:-1], conversation_messages, truncated=truncated)
        if match.incoming:
            rows = rows[:-1]
    # Found by its history: that history is stored, even after an unanswered message of a turn
    # that failed (which matched_prefix alone would not see past).
    k = max(match.incoming, resent)
    resent_rows = len(rows) if again else min(len(rows), max(match.rows, resent))
    new = conversation_messages[k:]
    before = rows[: len(rows) - resent_rows]
    if whole is None and not truncated:
        # Named by its id (or session): its transcript is known whole only when every stored
        # message was read; then a later turn without the id finds it by its history.
        whole = _stored_fingerprint(
            messages, before, conversation_pk=conversation.pk if conversation else None
        )
    stored_ids: list[str] = []
    session_id = ctx.session_id
    if not dry_run:
        assert conversation is not None  # found or created above
        session = session_resolve(
            workspace=workspace,
            conversation=conversation,
            user_id=user_id,
            external_id=ctx.session_id,
            current=active_read,
        )
        session_id = session.external_id
        if conversation.extraction != ctx.extraction:
            # What a turn that never finishes leaves is extracted by the sweep, if this says so
            # (memory.services.unanswered); changes only when the agent's policy does.
            Conversation.objects.filter(pk=conversation.pk).update(extraction=ctx.extraction)
            conversation.extraction = ctx.extraction
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
    resent_ids = [r.id for r in rows[len(rows) - resent_rows :]]
    # Messages already in the request or in the history candidates are not "retrieved" again.
    exclude = stored_ids + resent_ids + ([r.id for r in before] if serve else [])
    return Loaded(
        conversation=conversation,
        session=session,
        session_id=session_id,
        history=[
            {"id": r.id, "message": r.raw, "tokens": r.token_count, "counted": r.seen.counted}
            for r in before
        ]
        if serve
        else [],
        exclude_ids=exclude,
        stored_ids=stored_ids,
        stored=new if stored_ids else [],
        created=created,
        serve_history=serve,
        fingerprint=whole,
    )
