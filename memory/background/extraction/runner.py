"""One extraction run: embed the messages of its jobs, then turn them into memories.

A run takes one job, or several queued jobs of one conversation (memory.services.processing
.jobs_claim), as one range of messages: the result is the same as job by job, in fewer steps.
With the offline extractor it may take several conversations' jobs: each conversation is
indexed and de-duplicated on its own, as in a run of its own, and they share the embedding
run, the messages' write, the commit and the claim.

With an LLM (completions.providers.llm.chat) the model proposes facts and decides ADD / UPDATE / DELETE /
NONE against the nearest memories; without one (LLMUnavailable, or ENGRAM_MEMORY_EXTRACTION =
"offline") the offline extractor runs, de-duplicated by embedding similarity. When the LLM
fails (malformed output after its attempts; an upstream error on the task's last try), the
offline extractor takes the messages the LLM left undone: the result says "offline-fallback"
and why, and the job records it.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import TypeVar

import numpy as np
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q

from accounts.models import Workspace
from completions.providers.llm import LLMError, LLMUnavailable, available
from config.common import rows
from memory.background.extraction import offline
from memory.background.extraction.remarks import without_remarks
from memory.background.extraction.store import UserMemories
from memory.embeddings import get_embedder
from memory.embeddings.base import Tokens
from memory.forgotten import forgotten, suppressions_of
from memory.models import Memory, MemorySuppression, Message, ProcessingJob
from memory.retrieval import late
from memory.services.fencing import jobs_finish
from memory.services.forgetting import suppressions_lift
from memory.services.indexing import messages_index_update
from memory.services.locks import jobs_still_held, still_held
from memory.services.memories import (
    MemoryChanged,
    NewMemory,
    Supersede,
    memories_add_sources,
    memories_create,
    memories_supersede,
)
from memory.text import (
    WINDOW_BEFORE,
    context_vector,
    memory_search_text,
    message_search_text,
    message_window_text,
    nfc,
)

logger = logging.getLogger("engram.memory")

Of = TypeVar("Of", Message, ProcessingJob)


# The messages of a run's ranges, one statement written once: the ranges as three arrays, where
# a Q of each job's range was built and compiled again every run (a lone turn's job: ~2 ms of
# its CPU under cProfile; bench/README.md, "Twenty-fifth session"). The ranges never overlap
# (adjacent ones are joined): no message twice.
_JOB_MESSAGES = """
SELECT {columns} FROM memory_message
JOIN unnest(%s::varchar[], %s::varchar[], %s::varchar[]) AS span(conversation_id, after, upto)
ON memory_message.conversation_id = span.conversation_id
AND memory_message.id > span.after AND memory_message.id <= span.upto
ORDER BY memory_message.id
"""
_NO_SEARCH = ("search",)  # the generated tsvector: never read here


def job_messages(jobs: list[ProcessingJob]) -> list[Message]:
    """The messages the jobs cover (of one conversation or several), in order: one query."""
    spans: list[list[str]] = []  # (conversation, after, upto), adjacent ranges joined
    for job in sorted(jobs, key=lambda j: (j.conversation_id, j.after_message_id)):
        last = spans[-1] if spans else None
        if last and last[0] == job.conversation_id and job.after_message_id <= last[2]:
            last[2] = max(last[2], job.upto_message_id)
        else:
            spans.append([job.conversation_id, job.after_message_id, job.upto_message_id])
    sql = _JOB_MESSAGES.format(columns=rows.columns(Message, without=_NO_SEARCH))
    with connection.cursor() as cursor:
        cursor.execute(sql, [list(column) for column in zip(*spans, strict=True)])
        found = cursor.fetchall()
    return [rows.instance(Message, row, without=_NO_SEARCH) for row in found]


def embed_messages(
    rows: list[Message], also: list[str] | None = None
) -> tuple[list[Message], np.ndarray, dict[str, bytes]]:
    """Vectors for the messages that have none yet (the request path never embeds them), set on
    them (write_messages stores them), and for the texts `also` (the offline extractor's
    facts): the messages given vectors, the vectors of `also` in their order, and the
    messages' packed token vectors by id (memory.retrieval.late; none with
    ENGRAM_SEARCH_TOKEN_MATCH off).
    """
    todo = [m for m in rows if m.embedding is None and m.content]
    also = also or []
    texts = [
        message_search_text(role=m.role, name=m.name, content=m.content, created_at=m.created_at)
        for m in todo
    ]
    # One call for both: the embedder sorts all texts by length, so batches carry little
    # padding, and a run pays for one batched run instead of two. Each distinct text once: a
    # batched run of many users' turns holds the same texts several times (a fact or a message
    # said that day by several users, a canned answer), whose vectors are the same.
    vectors, tokens = _embedded(texts + also, with_tokens=settings.ENGRAM_SEARCH_TOKEN_MATCH)
    packed: dict[str, bytes] = {}
    for message, vector, token in zip(todo, vectors[: len(todo)], tokens[: len(todo)], strict=True):
        message.embedding = vector.tolist()
        if token is not None:
            packed[message.id] = late.pack(token)
    return todo, vectors[len(todo) :], packed


def _embedded(texts: list[str], *, with_tokens: bool) -> tuple[np.ndarray, list[Tokens | None]]:
    """The texts' vectors, in their order, each distinct text embedded once; with
    `with_tokens`, their token vectors too (the same run's), else Nones."""
    if not texts:
        return np.zeros((0, 384), dtype=np.float32), []
    distinct = {text: i for i, text in enumerate(dict.fromkeys(texts))}
    if with_tokens:
        vectors, tokens = get_embedder().embed_with_tokens(list(distinct))
    else:
        vectors, tokens = get_embedder().embed(list(distinct)), [None] * len(distinct)
    if len(distinct) == len(texts):
        return vectors, tokens
    order = [distinct[text] for text in texts]
    return vectors[order], [tokens[i] for i in order]


def write_messages(
    workspace: Workspace,
    rows: list[Message],
    embedded: list[Message],
    tokens: dict[str, bytes] | None = None,
) -> None:
    """Store the new vectors (and the embedded messages' packed `tokens`), and widen the search
    windows of the messages and the earlier ones they now follow: one new row version per
    message, one statement for the run's conversations (memory.services.indexing).

    A message is embedded alone ("[date] speaker: text"); its indexes take in its neighbours.
    """
    groups = by_conversation(rows)
    # every conversation's neighbours in one statement (a batch of many users' single turns
    # read them one statement a conversation: one a turn)
    around = _neighbours_of(
        {conversation: _first(group).created_at for conversation, group in groups.items()},
        {m.id for m in rows},
    )
    changed = [
        m
        for conversation, group in groups.items()
        for m in widen_search_windows(group, neighbours=around.get(conversation, []))
    ]
    written = {m.id: m for m in [*embedded, *changed]}
    if written:
        messages_index_update(
            workspace=workspace,
            messages=list(written.values()),
            embedded={m.id for m in embedded},
            tokens=tokens,
        )


def by_conversation(rows: list[Of]) -> dict[str, list[Of]]:
    """The messages (or jobs) of each conversation, in their order."""
    groups: dict[str, list[Of]] = {}
    for row in rows:
        groups.setdefault(row.conversation_id, []).append(row)
    return groups


SPOKEN = ("user", "assistant")


def _first(rows: list[Message]) -> Message:
    return min(rows, key=lambda m: (m.created_at, m.id))


def widen_search_windows(
    rows: list[Message], neighbours: list[Message] | None = None
) -> list[Message]:
    """Re-index the run's messages, and the ones just before them, with their neighbours: the
    messages whose indexes changed, with their new ones set (not written).

    Both indexes: the full-text window (message_window_text) and the vector blended with the
    turns around it (context_vector). The run's messages are taken as they are in memory
    (with the vectors just made); only their neighbours are read (`neighbours`: read already,
    as _neighbours reads them).
    """
    first = _first(rows)
    mine = {m.id for m in rows}
    if neighbours is None:
        neighbours = _neighbours(rows[0].conversation_id, first.created_at, mine)
    window = sorted(
        [*neighbours, *(m for m in rows if m.role in SPOKEN)], key=lambda m: (m.created_at, m.id)
    )
    before = sorted(
        (m for m in neighbours if m.created_at < first.created_at),
        key=lambda m: (m.created_at, m.id),
        reverse=True,
    )  # nearest first
    changed = []
    # Re-indexed: the run's messages and the WINDOW_BEFORE just before them (whose windows now
    # reach the run's); the ones before those are read only as their windows' start.
    upto = mine | {m.id for m in before[:WINDOW_BEFORE]}
    for index, message in enumerate(window):
        if message.id not in upto:
            continue
        text = message_window_text(window, index)
        vector = context_vector(window, index)
        if text != message.search_text or not _same(vector, message.context_embedding):
            message.search_text = text
            message.context_embedding = vector
            changed.append(message)
    return changed


# One statement for the neighbours of every conversation of the run: for each, the turns just
# before the run's first message in it, and any later ones not in the run (the run's ids, of
# all its conversations: ids are unique). Raw, with the vectors in pgvector's binary form: the
# ORM's union of two querysets took ~10 % of a lone turn's job in the worker (py-spy), most of
# it building the SQL again each run and parsing four 384-float vectors from text; the binary
# form gives the same float32 values (store._binary_vector). Ordered as the two parts were
# read one conversation at a time: the earlier turns nearest first, then the later ones.
_NEIGHBOURS = """
SELECT span.n, n.* FROM unnest(%s::varchar[], %s::timestamptz[]) WITH ORDINALITY
 AS span(conversation_id, first_at, n)
CROSS JOIN LATERAL (
 (SELECT 0 AS part, {columns} FROM {table}
  WHERE conversation_id = span.conversation_id AND role IN ('user', 'assistant')
  AND created_at < span.first_at
  ORDER BY created_at DESC, id DESC LIMIT %s)
 UNION ALL
 (SELECT 1 AS part, {columns} FROM {table}
  WHERE conversation_id = span.conversation_id AND role IN ('user', 'assistant')
  AND created_at >= span.first_at AND NOT (id = ANY(%s::varchar[])))
) AS n
ORDER BY span.n, n.part,
 CASE WHEN n.part = 0 THEN n.created_at END DESC, CASE WHEN n.part = 0 THEN n.id END DESC,
 n.created_at, n.id
"""
_NEIGHBOUR_FIELDS = ("id", "role", "name", "content", "created_at", "search_text")


# The turns read before a run: the WINDOW_BEFORE it re-indexes, and theirs before them. Read
# only WINDOW_BEFORE, the earliest re-indexed turn lost its own start at every run: a chat's
# turn, taken one run per turn, kept "itself and the two after" where an import of the same
# conversation in one run gave it "the two before, itself and the two after".
READ_BEFORE = 2 * WINDOW_BEFORE


_NEIGHBOURS_SQL: list[str] = []


def _neighbours(conversation_id: str, first_at, mine: set[str]) -> list[Message]:
    """The spoken messages just before `first_at` (READ_BEFORE) and those at or after it not
    in `mine`: Message rows with only the window's fields and both vectors loaded (as
    `.only()` loads them: the others deferred)."""
    return _neighbours_of({conversation_id: first_at}, mine).get(conversation_id, [])


def _neighbours_of(firsts: dict, mine: set[str]) -> dict[str, list[Message]]:
    """_neighbours of each conversation (its first message's time in the run: `firsts`), in
    one statement."""
    if not firsts:
        return {}
    if not _NEIGHBOURS_SQL:
        _NEIGHBOURS_SQL.append(
            _NEIGHBOURS.format(
                table=connection.ops.quote_name(Message._meta.db_table),
                columns=", ".join(_NEIGHBOUR_FIELDS)
                + ", vector_send(embedding), vector_send(context_embedding)",
            )
        )
    conversations = list(firsts)
    with connection.cursor() as cursor:
        cursor.execute(
            _NEIGHBOURS_SQL[0],
            [conversations, [firsts[c] for c in conversations], READ_BEFORE, sorted(mine)],
        )
        found = cursor.fetchall()
    names = [*_NEIGHBOUR_FIELDS, "embedding", "context_embedding"]
    # from_db takes a partial row's values in the model's field order
    order = [f.attname for f in Message._meta.concrete_fields if f.attname in names]
    at = [names.index(name) for name in order]
    messages: dict[str, list[Message]] = {}
    for row in found:
        # span.n (1-based), part, the fields, the two vectors
        values = [*row[2:-2], _from_binary(row[-2]), _from_binary(row[-1])]
        messages.setdefault(conversations[row[0] - 1], []).append(
            Message.from_db(connection.alias, order, [values[i] for i in at])
        )
    return messages


def _from_binary(value: bytes | None) -> list[float] | None:
    """pgvector's binary form (int16 dimensions, int16 unused, big-endian float4s) as the
    floats VectorField reads."""
    return None if value is None else np.frombuffer(value, dtype=">f4", offset=4).tolist()


def _same(vector: list[float] | None, stored) -> bool:
    if vector is None or stored is None:
        return vector is None and stored is None
    return bool(np.allclose(vector, stored, atol=1e-6))


# A run whose user was erased meanwhile, or whose jobs another run took: it wrote nothing.
NOT_HELD = {"not_held": True}
Status = ProcessingJob.Status
# In a run's result: its jobs were recorded done in its last write's transaction
# (jobs_done_with), so the task records nothing more (memory.tasks._done).
FINISHED = {"finished": True}


def jobs_done_with(jobs: list[ProcessingJob], *, extractor: str, fallback: str = "") -> dict:
    """Record the jobs done, in the transaction of the run's last write (after it held them):
    the memories and the jobs' done are one commit. Two, a worker killed between them (or a
    commit whose reply was lost) left the job running, and the sweep gave it to another run
    that extracted the turn again; with a model, asked again, the same fact in other words
    was a second memory (tests/test_memory_extraction.py). FINISHED, for the run's result."""
    jobs_finish(jobs=jobs, status=Status.DONE, error=fallback, extractor=extractor)
    return dict(FINISHED)


def runs_offline(workspace: Workspace) -> bool:
    """Whether the workspace's extraction runs the offline extractor (no LLM to ask)."""
    mode = settings.ENGRAM_MEMORY_EXTRACTION
    return mode == "offline" or (mode == "auto" and not available(workspace=workspace))


def extraction_run(*, jobs: list[ProcessingJob], fallback_on_error: bool = True) -> dict:
    """Counts, `extractor` ("llm", "offline" or "offline-fallback") and, on a fallback, why.

    `jobs`: of one workspace, each with its conversation and workspace loaded (jobs_claim);
    of several conversations only when the workspace runs offline.
    fallback_on_error: an upstream error (LLMError) falls back too; the task passes False
    until its last try, so a passing outage is retried with the LLM first.
    """
    if runs_offline(jobs[0].workspace):
        return _offline_run(jobs)
    groups = by_conversation(jobs)
    if len(groups) == 1:
        return _llm_run(jobs, fallback_on_error)
    # Claimed for the offline extractor, and an LLM route appeared since: one after another.
    results = [_llm_run(group, fallback_on_error) for group in groups.values()]
    totals: dict = {}
    for result in results:
        for key, value in result.items():
            if isinstance(value, int) and not isinstance(value, bool):
                totals[key] = totals.get(key, 0) + value
    # the jobs record a fallback if any conversation's run fell back
    fell_back = next((r for r in results if "fallback" in r), results[0])
    return totals | {k: fell_back[k] for k in ("extractor", "fallback") if k in fell_back}


def _offline_run(jobs: list[ProcessingJob]) -> dict:
    """The offline extractor over the jobs' messages, of one conversation or several: one
    embedding run for the messages and their facts, one write of the messages and one commit
    for what they wrote (bench/bench_extraction.py)."""
    workspace = jobs[0].workspace
    first_job = {conversation: group[0] for conversation, group in by_conversation(jobs).items()}
    groups = by_conversation(job_messages(jobs))
    # one reading of names for the run: a user's conversation taken with another of theirs in
    # this run knows the names the other told of ("I have a dog named Pepper" in one, "Pepper
    # hates thunderstorms" in the next, sent a moment apart: the first's memory is not yet
    # written when the run reads the user's memories)
    known = names_known([m for rows in groups.values() for m in rows if m.role == "user"])
    facts = {
        conversation: offline_facts(rows, known=known) for conversation, rows in groups.items()
    }
    texts = [text for _, found_texts in facts.values() for text in found_texts]
    todo, vectors, tokens = embed_messages(
        [m for rows in groups.values() for m in rows], also=texts
    )
    # each conversation's facts with their vectors, remarks left out (before the transaction:
    # the filter's first use in a process embeds its examples)
    kept_facts: dict[str, tuple[list, np.ndarray]] = {}
    start = 0
    for conversation, (found, found_texts) in facts.items():
        kept_facts[conversation] = facts_kept(found, vectors[start : start + len(found_texts)])
        start += len(found_texts)
    counts = {"added": 0, "updated": 0, "unchanged": 0}
    with transaction.atomic():
        held = jobs_still_held(jobs)
        claims = by_conversation(jobs)
        kept = {c for c, group in claims.items() if all(job.pk in held for job in group)}
        # A conversation some of whose jobs another run took (the sweep re-sent part of a
        # lapsed run): written by none of this run; its jobs still here wait for the next one.
        partly = [job for c, group in claims.items() if c not in kept for job in group]
        if still_mine := [job for job in partly if job.pk in held]:
            jobs_finish(jobs=still_mine, status=Status.PENDING)
        not_held = len(first_job) - len(kept)
        if not kept:
            return {"embedded": 0, "extractor": "offline", **NOT_HELD}
        write_messages(
            workspace,
            [m for conversation, rows in groups.items() if conversation in kept for m in rows],
            [m for m in todo if m.conversation_id in kept],
            tokens,
        )
        # The users' suppressions in one statement (one a conversation, a turn in a batch of
        # many users' turns), each for the first of its user's conversations: a conversation
        # may lift some (suppressions_lift), so a later one of the same user reads its own.
        stating = [c for c, (found, _) in kept_facts.items() if c in kept and found]
        read = suppressions_of(
            workspace=workspace,
            user_ids=list(dict.fromkeys(first_job[c].conversation.user_id for c in stating)),
        )
        # And the memories their facts can meet (UserMemories.around), likewise: the first
        # conversation's facts of each user, before any is left out as forgotten (a store of
        # more memories answers the same: each vector's nearest are among them).
        firsts: dict[str, tuple[np.ndarray, set[str]]] = {}
        for conversation in stating:
            found, mine = kept_facts[conversation]
            firsts.setdefault(
                first_job[conversation].conversation.user_id,
                (mine, {fact.slot for fact, _, _ in found if fact.slot}),
            )
        stores = UserMemories.around_many(workspace, firsts, k=NEAR)
        users_seen: set[str] = set()
        later = Later()
        for conversation in stating:
            found, mine = kept_facts[conversation]
            user_id = first_job[conversation].conversation.user_id
            suppressions, store = None, None
            if user_id in users_seen:  # it reads what its user's earlier one wrote
                later.write(workspace)
            else:
                suppressions, store = read.get(user_id, []), stores[user_id]
            users_seen.add(user_id)
            done = _apply_offline(first_job[conversation], found, mine, suppressions, later, store)
            for key, value in done.items():
                counts[key] = counts.get(key, 0) + value
        later.write(workspace)
        for key, value in later.corrections.items():
            counts[key] = counts.get(key, 0) + value
        finished = jobs_done_with(
            [job for c, group in claims.items() if c in kept for job in group], extractor="offline"
        )
    result = {"embedded": len(todo), "extractor": "offline", **counts}
    if not_held:
        result["conversations_not_held"] = not_held
    else:  # every job was this run's, and each was recorded done with its memories
        result |= finished
    return result


def _llm_run(jobs: list[ProcessingJob], fallback_on_error: bool) -> dict:
    job = jobs[0]
    rows = job_messages(jobs)
    todo, _, tokens = embed_messages(rows)
    write_messages(job.workspace, rows, todo, tokens)
    embedded = len(todo)
    from memory.background.extraction import llm

    try:
        counts = llm.extract(jobs=jobs, rows=rows)
        return {"embedded": embedded, "extractor": "llm", **counts}
    except LLMUnavailable:
        if settings.ENGRAM_MEMORY_EXTRACTION == "llm":
            raise
    except llm.LLMExtractionFailed as failed:
        if isinstance(failed.cause, LLMError) and not fallback_on_error:
            raise failed.cause from failed
        logger.warning("memory job %s: LLM extraction failed, offline fallback: %s", job.id, failed)
        rest = [m for m in rows if m.id not in failed.done]
        fallback = f"LLM extraction failed, offline extractor used: {failed}"
        counts = offline_extract(
            jobs=jobs, rows=rest, extractor="offline-fallback", fallback=fallback
        )
        return {
            "embedded": embedded,
            "extractor": "offline-fallback",
            "fallback": fallback,
            "llm": failed.counts,
            **counts,
        }
    # LLMUnavailable in "auto": the route changed since `available` looked
    counts = offline_extract(jobs=jobs, rows=rows, extractor="offline")
    return {"embedded": embedded, "extractor": "offline", **counts}


def offline_facts(
    rows: list[Message], *, known: defaultdict[str, offline.Known] | None = None
) -> tuple[list, list[str]]:
    """The facts of the user's messages, each with its message and subject, and the texts to
    embed them by; `known`: the names each user has told of, read for these rows if not given
    (and added to with what they tell)."""
    found: list[tuple[offline.Fact, Message, str]] = []
    said = [m for m in rows if m.role == "user" and m.content]
    known = names_known(said) if known is None else known
    for message in said:
        subject = message.name or "User"
        # composed, as memories are stored and compared (memory.text.nfc): a fact said with
        # combining accents is the one said without them
        for fact in offline.extract(
            nfc(message.content),
            subject=subject,
            today=message.created_at.date(),
            known=known[message.user_id],
        ):
            found.append((fact, message, subject))
    texts = [
        memory_search_text(text=f.text, when=f.event_date or m.created_at.date())
        for f, m, _ in found
    ]
    return found, texts


def names_known(said: list[Message]) -> defaultdict[str, offline.Known]:
    """Of the users of these messages, the names their memories tell of ("User's dog Pepper")
    among those a message opens a sentence on ("Pepper hates thunderstorms."): one read of the
    memories that name one, and none when no sentence opens on a name."""
    opening: dict[str, set[str]] = {}
    for message in said:
        if names := offline.names_opening(message.content):
            opening.setdefault(message.user_id, set()).update(names)
    known: defaultdict[str, offline.Known] = defaultdict(offline.Known)
    if not opening:
        return known
    naming = Q()
    for name in set().union(*opening.values()):
        naming |= Q(text__contains=name)
    telling = (
        Memory.objects.filter(workspace_id=said[0].workspace_id, user_id__in=list(opening))
        .filter(naming)
        .values_list("user_id", "text", "metadata")
    )
    for user_id, text, metadata in telling:
        subject = (metadata or {}).get("subject") or "User"
        known[user_id].told(subject, text)
    return known


def facts_kept(found: list, vectors: np.ndarray) -> tuple[list, np.ndarray]:
    """The facts (of offline_facts) and their vectors, less conversational remarks."""
    return without_remarks(found, vectors, [fact.slot_touched for fact, _, _ in found])


def offline_extract(
    *, jobs: list[ProcessingJob], rows: list[Message], extractor: str, fallback: str = ""
) -> dict:
    """The offline extractor over `rows`, for the jobs (of one conversation) of an LLM run,
    recorded done with its memories as `extractor` (and the `fallback`'s reason)."""
    found, texts = offline_facts(rows)
    found, vectors = facts_kept(found, get_embedder().embed(texts))
    with transaction.atomic():  # one commit for the run's memories and its jobs' done
        if not still_held(jobs):
            return dict(NOT_HELD)
        counts = _apply_offline(jobs[0], found, vectors)
        return counts | jobs_done_with(jobs, extractor=extractor, fallback=fallback)


NEAR = 3  # a new fact is compared with its this many nearest memories
# A negation's vector is near the statement it denies, though less than a restatement's
# (measured, 2026-12-05: "User doesn't have a cat anymore." / "User has a cat named Miso."
# 0.755, "... / User has a cat." 0.887, "User quit their job at Acme." / "User works at Acme."
# 0.821, "User gave up coffee." / "User drinks two coffees every morning." 0.752); what it
# ends is decided by words (offline.ends), among its nearest memories above this floor.
ENDS_SIMILARITY = 0.6


def _ended(store: UserMemories, fact: offline.Fact, subject: str, vector: list) -> Memory | None:
    """The memory a negation or cessation supersedes ("I no longer live in Paris": "User
    lives in Paris."), if the user has one: the slot's, when it holds the value denied (any,
    for "I quit my job"), else a near memory saying what it denies."""
    assert fact.ends is not None
    if fact.ends.slot:
        current = store.by_slot(fact.ends.slot, subject)
        value = (current.metadata.get("value", "") if current is not None else "").lower()
        if current is not None and value and value == (fact.ends.value.lower() or value):
            return current
    return next(
        (
            memory
            for memory, _ in store.nearest(vector, k=NEAR, min_similarity=ENDS_SIMILARITY)
            if (memory.metadata or {}).get("subject", subject) == subject
            and offline.ends(fact, memory.text, subject)
        ),
        None,
    )


def _not_forgotten(
    workspace: Workspace,
    user_id: str,
    found: list,
    vectors: np.ndarray,
    counts: dict,
    suppressions: list[MemorySuppression] | None = None,
) -> tuple[list, np.ndarray]:
    """The facts (and vectors) less those their user deleted and did not say again since; the
    suppressions said again are lifted (in the run's transaction). `suppressions`: the user's,
    read in the run's transaction (forgotten)."""
    verdict = forgotten(
        workspace=workspace,
        user_id=user_id,
        facts=[(f.text, [m]) for f, m, _ in found],
        suppressions=suppressions,
    )
    suppressions_lift(workspace=workspace, user_id=user_id, ids=verdict.lift)
    if all(verdict.keep):
        return found, vectors
    counts["forgotten"] = verdict.keep.count(False)
    kept = [i for i, keep in enumerate(verdict.keep) if keep]
    return [found[i] for i in kept], vectors[kept]


class Later:
    """The new memories, restatements and supersedes of a run's conversations, written
    together once the last is decided (or before a conversation of a user already in the run:
    it reads them): four statements for the supersedes, three for the memories and one for the
    links a run, where each conversation wrote its own and each superseded memory four (a
    batch of many users' single turns: one of each a turn). A supersede's outcome (a memory
    changed or deleted since the run read it) is known once written: `corrections` to the
    counts, and its conversation's store set as memory_update's caller set it."""

    def __init__(self) -> None:
        self.new: list[NewMemory] = []
        self.links: list[tuple[str, str]] = []
        self.supersedes: list[tuple[Supersede, UserMemories]] = []
        self.corrections: dict[str, int] = {}

    def supersede_now(self, workspace: Workspace) -> None:
        """The supersedes so far written (before what must follow them)."""
        if not self.supersedes:
            return
        memories_supersede(
            workspace=workspace,
            updates=[update for update, _ in self.supersedes],
            actor="extractor:offline",
        )
        for update, store in self.supersedes:
            if update.updated is not None:
                store.replace(update.updated, update.embedding)
                continue
            self.corrections["updated"] = self.corrections.get("updated", 0) - 1
            if isinstance(update.error, MemoryChanged):  # edited since: the newer text stays
                self.corrections["unchanged"] = self.corrections.get("unchanged", 0) + 1
            else:  # its user deleted it during the run: left deleted
                store.remove(update.memory.id)
        self.supersedes = []

    def write(self, workspace: Workspace) -> None:
        # the supersedes first, as when each was written in its conversation's turn
        self.supersede_now(workspace)
        if self.new:
            memories_create(
                workspace=workspace,
                user_id="",
                new=self.new,
                actor="extractor:offline",
                reason="first-person statement",
            )
        memories_add_sources(workspace=workspace, links=self.links)
        self.new, self.links = [], []


def _apply_offline(
    job: ProcessingJob,
    found,
    vectors,
    suppressions: list[MemorySuppression] | None = None,
    later: Later | None = None,
    store: UserMemories | None = None,
) -> dict:
    """`suppressions`, `store`: the user's, read in the run's transaction for these facts
    (before forgotten ones are left out); `later`: the run's writes to make together."""
    counts = {"added": 0, "updated": 0, "unchanged": 0}
    if not found:
        return counts
    workspace, user_id = job.workspace, job.conversation.user_id
    found, vectors = _not_forgotten(workspace, user_id, found, vectors, counts, suppressions)
    if not found:
        return counts
    if store is None:
        store = UserMemories.around(
            workspace,
            user_id,
            vectors=vectors,
            k=NEAR,
            slots={fact.slot for fact, _, _ in found if fact.slot},
        )
    threshold = settings.ENGRAM_MEMORY_DUPLICATE_SIMILARITY
    # Restatements of stored memories: linked in one statement at the end.
    links: list[tuple[str, str]] = []
    # New memories are written together at the end (memories_create); until then they are
    # matched against like stored ones, and a restatement adds to their sources.
    pending: dict[str, NewMemory] = {}
    # Supersedes are written with the run's (Later); this conversation's not yet written
    queue = later if later is not None else Later()
    superseded: list[str] = []

    def flush() -> None:
        if pending:
            queue.supersede_now(workspace)  # written first, as they were decided first
            created = memories_create(
                workspace=workspace,
                user_id=user_id,
                new=list(pending.values()),
                actor="extractor:offline",
                reason="first-person statement",
            )
            for memory in created:
                store.replace(memory, memory.embedding)
            pending.clear()

    def add_source(memory: Memory, message: Message) -> None:
        if memory.id in pending:
            pending[memory.id].source_message_ids.append(message.id)
        else:
            links.append((memory.id, message.id))

    def supersede(
        current: Memory, fact: offline.Fact, message: Message, vec: list, value: str, reason: str
    ) -> None:
        """`current` becomes `fact` (the slot's value `value`, if it has a slot): written with
        the run's other supersedes (Later), counted updated until then."""
        if current.id in pending:
            flush()  # an update needs the stored row
            read = store.get(current.id)
            assert read is not None
            current = read
        metadata = current.metadata | {"value": value} if "slot" in current.metadata else None
        queue.supersedes.append(
            (
                Supersede(
                    memory=current,
                    text=fact.text,
                    event_date=fact.event_date,
                    metadata=metadata,
                    source_message_ids=[message.id],
                    reason=reason,
                    embedding=vec,
                ),
                store,
            )
        )
        superseded.append(current.id)
        counts["updated"] += 1

    for (fact, message, subject), vector in zip(found, vectors, strict=True):
        if superseded:
            # A fact after one of this conversation's supersedes decides on the store as the
            # supersede left it (its new text and vector; a memory deleted meanwhile gone)
            queue.supersede_now(workspace)
            superseded.clear()
        vec = vector.tolist()
        # "I no longer live in Paris": the memory it denies is superseded, as a move
        # supersedes the old place (the slot emptied: a later place fills it again)
        if fact.ends is not None and (ended := _ended(store, fact, subject, vec)) is not None:
            reason = f"ended: {ended.text!r} by {fact.text!r}"
            supersede(ended, fact, message, vec, "", reason)
            continue
        if fact.slot:
            current = store.by_slot(fact.slot, subject)
            if current is not None:
                if current.metadata.get("value", "").lower() == fact.value.lower():
                    add_source(current, message)
                    counts["unchanged"] += 1
                    continue
                old_value = current.metadata.get("value", "")
                reason = f"{fact.slot} changed from {old_value!r} to {fact.value!r}"
                supersede(current, fact, message, vec, fact.value, reason)
                continue
        near = [
            memory
            for memory, _ in store.nearest(vec, k=NEAR, min_similarity=threshold)
            if offline.same_fact(memory.text, fact.text)
        ]
        if near:
            add_source(near[0], message)
            counts["unchanged"] += 1
            continue
        metadata = {"subject": subject}
        if fact.slot:
            metadata |= {"slot": fact.slot, "value": fact.value}
        placeholder = Memory(
            workspace=workspace, user_id=user_id, text=fact.text, metadata=metadata
        )
        pending[placeholder.id] = NewMemory(
            text=fact.text,
            kind=fact.kind,
            event_date=fact.event_date,
            metadata=metadata,
            source_message_ids=[message.id],
            learned_on=message.created_at.date(),
            embedding=vec,
            id=placeholder.id,
        )
        store.add(placeholder, vec)
        counts["added"] += 1
    # written with the run's other conversations' (Later), or now in a run of its own
    for item in pending.values():
        item.user_id = user_id
    queue.new += pending.values()
    queue.links += links
    if later is None:
        queue.write(workspace)
        for key, value in queue.corrections.items():
            counts[key] = counts.get(key, 0) + value
    return counts
