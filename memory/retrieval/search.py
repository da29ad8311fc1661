"""Search of what a user said, what was remembered about them and what the workspace knows.

`memory_search` and `message_search` rank one source each (memory.retrieval.memories and
.messages, both on the blend of memory.retrieval.fusion), add the recency term and build model
instances from the rows; `chunk_search` ranks knowledge chunks on the same blend; `search`
merges the sources asked for into one list, an item joining only when it adds evidence.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from functools import partial
from typing import TypeVar

from django.db import connection, models
from django.db.models import OuterRef, Subquery
from django.db.models.base import DEFERRED

from accounts.models import Workspace
from config.common.times import unix_seconds
from memory.embeddings.base import Tokens
from memory.models import Conversation, Memory, Message
from memory.retrieval import answers, chunks, elsewhere, fusion, late, memories, messages

MIN_SIMILARITY = fusion.MIN_SIMILARITY
# The nearest memories by meaning are kept whatever their similarity (fusion.with_recency): a
# paraphrase may share no word with the memory that answers it, and the floor would drop it
# when nothing else matches. The context's memory block and /v1/search both keep this many.
NEAREST_MEMORIES_KEPT = 2
TYPES = ("memories", "messages", "chunks")


@dataclass
class Found:
    """A ranked memory or past message, with why it ranked and where it came from."""

    kind: str  # "memory" | "message" | "chunk"
    obj: Memory | Message | dict  # a chunk is its row (memory.retrieval.chunks.COLUMNS + title)
    score: float
    similarity: float | None
    ranks: dict[str, int]
    sources: list[dict] = field(default_factory=list)
    kept_nearest: int = 0  # fusion.Ranked.kept_nearest
    blended: float | None = None  # the blend's score, when a re-ranking set `score`
    answers: tuple[str, ...] = ()  # the kinds of answer asked that it holds (answers.held)

    @property
    def id(self) -> str:
        return self.obj["id"] if isinstance(self.obj, dict) else self.obj.id

    def why(self) -> str:
        parts = []
        if "vector" in self.ranks:
            parts.append(f"vector rank {self.ranks['vector']} (similarity {self.similarity:.2f})")
        if "text" in self.ranks:
            parts.append(f"full-text rank {self.ranks['text']}")
        if "recency" in self.ranks:
            parts.append(f"recency rank {self.ranks['recency']}")
        if self.kept_nearest:
            # why a memory that shares no word with the question and scores low was used: a
            # paraphrase may share none with the fact that answers it (Semantic recall)
            parts.append(
                f"kept as one of the {self.kept_nearest} nearest by meaning, "
                "with no word in common and below the similarity floor"
            )
        if "tokens" in self.ranks:
            parts.append(f"token match rank {self.ranks['tokens']}")
        if self.answers:
            parts.append("holds the " + " and ".join(self.answers) + " asked for")
        if self.blended is not None:
            return "; ".join(parts) + f"; blended score {self.blended:.4f}; re-ranked"
        return "; ".join(parts) + f"; blended score {self.score:.4f}"


_M = TypeVar("_M", bound=models.Model)
_FIELDS: dict[type, list[tuple[str, models.Field]]] = {}


def _instance(model: type[_M], values: dict, related: dict[str, models.Model]) -> _M:
    """`model(**values, **related)`, as loaded from the database, through Model.__init__'s
    positional path: the same attributes (a field's default where the row has no value, a
    generated field left unset) and the related objects cached as keyword assignment caches
    them. A message with its conversation took 44 µs by keywords, 22 µs so; a search builds
    ~40 instances."""
    fields = _FIELDS.get(model)
    if fields is None:
        fields = _FIELDS[model] = [(f.attname, f) for f in model._meta.concrete_fields]
    instance = model(
        *[
            DEFERRED if f.generated else values[name] if name in values else f.get_default()
            for name, f in fields
        ]
    )
    instance._state.adding = False
    for name, obj in related.items():
        model._meta.get_field(name).set_cached_value(instance, obj)  # type: ignore[union-attr]
    return instance


def _message(workspace: Workspace, user_id: str, row: dict) -> Message:
    conversation = _instance(
        Conversation,
        {
            "id": row["conversation_id"],
            "external_id": row["conversation_external_id"],
            "workspace_id": workspace.id,
            "user_id": user_id,
        },
        {"workspace": workspace},
    )
    values = dict(row, metadata=messages.message_metadata(row), workspace_id=workspace.id)
    values["user_id"] = user_id
    return _instance(Message, values, {"workspace": workspace, "conversation": conversation})


def message_source(message: Message) -> dict:
    return {
        "message_id": message.id,
        "conversation_id": message.conversation.external_id,
        "created_at": unix_seconds(message.created_at),
        "metadata": message.metadata,
    }


def memory_search(
    *,
    workspace: Workspace,
    user_id: str,
    query: str,
    vector: list[float] | None,
    limit: int,
    min_similarity: float = 0.0,
    with_sources: bool = False,
    keep_best: int = 0,
    metadata: dict | None = None,
    kinds: Sequence[str] = (),
    created_from: dt.datetime | None = None,
    created_until: dt.datetime | None = None,
) -> list[Found]:
    """The user's memories, best first; `metadata`, `kinds`, `created_from` (at or after) and
    `created_until` (before) narrow them as GET /v1/memories's filters do."""
    hits = memories.ranked(
        workspace_id=workspace.id,
        user_id=user_id,
        query=query,
        vector=vector,
        with_sources=with_sources,
        metadata=metadata,
        kinds=kinds,
        created_from=created_from,
        created_until=created_until,
    )
    found = []
    kept = fusion.with_recency(
        hits, when="updated_at", min_similarity=min_similarity, keep_best=keep_best
    )
    for hit in kept[:limit]:
        row = memories.parsed_row(hit.row)
        sources = row.pop("sources", [])
        memory = _instance(Memory, dict(row, workspace_id=workspace.id), {"workspace": workspace})
        found.append(
            Found(
                "memory",
                memory,
                hit.score,
                hit.similarity,
                hit.ranks,
                sources,
                kept_nearest=hit.kept_nearest,
            )
        )
    return found


def message_search(
    *,
    workspace: Workspace,
    user_id: str,
    query: str,
    vector: list[float] | None,
    limit: int,
    exclude_ids: Iterable[str] = (),
    min_similarity: float = 0.0,
    feedback: bool = False,
    every_echo: bool = False,
    created_from: dt.datetime | None = None,
    created_until: dt.datetime | None = None,
) -> list[Found]:
    """The user's past messages, best first. An assistant message quoting a user message that
    ranks too is left out; with `every_echo`, also one quoting the user message before it that
    does not rank (one more query: /v1/search, where the echoes were what a new user saw,
    not a chat turn, whose history holds the user's words)."""
    wanted = limit + _ECHO_SPARE if every_echo else limit
    hits = messages.ranked(
        workspace_id=workspace.id,
        user_id=user_id,
        query=query,
        vector=vector,
        exclude_ids=list(exclude_ids),
        feedback=feedback,
        created_from=created_from,
        created_until=created_until,
    )
    # The rows are read as they come and a Message is built only for what is kept (~20 of
    # ~150 candidates): building every one was ~1 ms of a search's Python time.
    found: list[Found] = []
    seen: set[str] = set()
    said: list[str] = []  # the user's own words among the hits, for spotting echoes
    for hit in fusion.with_recency(hits, when="created_at", min_similarity=min_similarity):
        role = hit.row["role"]
        key = " ".join(hit.row["content"].lower().split())
        if role == "user" and len(key) >= _ECHO_MIN_CHARS and key not in said:
            # The user's words, the first time: an echo of them that ranked first goes, an
            # answer repeating them exactly too. Skipped as its duplicate, the user's message
            # went with it (`every_echo` then left the answer out as an echo): both were lost.
            said.append(key)
            found = [f for f in found if not _echoes(f, [key])]
        elif key in seen:
            continue  # the same words said twice are one piece of evidence
        elif _echoes_text(role, key, said):
            continue
        seen.add(key)
        message = _message(workspace, user_id, hit.row)
        found.append(
            Found(
                "message", message, hit.score, hit.similarity, hit.ranks, [message_source(message)]
            )
        )
        if len(found) == wanted:
            break
    if every_echo:
        found = _without_echoes_of_the_turn_before(workspace, found)
    return found[:limit]


def _without_echoes_of_the_turn_before(workspace: Workspace, found: list[Found]) -> list[Found]:
    """`found` without the assistant messages that quote the conversation's user message just
    before them (one query for all of them)."""
    answers = {
        f.obj.pk: f for f in found if isinstance(f.obj, Message) and f.obj.role == "assistant"
    }
    if not answers:
        return found
    before = Message.objects.filter(
        conversation_id=OuterRef("conversation_id"),
        role="user",
        created_at__lte=OuterRef("created_at"),
    ).exclude(pk=OuterRef("pk"))
    asked = Message.objects.filter(workspace_id=workspace.id, pk__in=list(answers)).annotate(
        asked=Subquery(before.order_by("-created_at", "-id").values("content")[:1])
    )
    echoes = set()
    for pk, text in asked.values_list("pk", "asked"):
        said = " ".join((text or "").lower().split())
        if len(said) >= _ECHO_MIN_CHARS and _echoes(answers[pk], [said]):
            echoes.add(pk)
    return [f for f in found if not (isinstance(f.obj, Message) and f.obj.pk in echoes)]


# An assistant message that quotes a user message word for word (the local model's "You said:
# ...", a model repeating the user) adds nothing the user's own message does not, wherever
# either ranks. Shorter user messages ("yes", "thanks") are quoted by chance, not echoed.
_ECHO_MIN_CHARS = 16
_ECHO_SPARE = 5  # messages ranked past the limit, to take the place of echoes left out


def _echoes_text(role: str, key: str, said: list[str]) -> bool:
    return role == "assistant" and any(s in key for s in said)


def _echoes(found: Found, said: list[str]) -> bool:
    message = found.obj
    assert isinstance(message, Message)
    if message.role != "assistant":  # before normalizing its text: most hits are the user's
        return False
    return _echoes_text(message.role, " ".join(message.content.lower().split()), said)


def chunk_search(
    *, workspace: Workspace, collection_ids: list[str], query: str, vector, limit: int
) -> list[Found]:
    """The best chunks of the ready documents of these collections; a chunk's source is its
    document. The caller has checked the collections are the workspace's."""
    hits = chunks.ranked(
        workspace_id=workspace.id, collection_ids=list(collection_ids), query=query, vector=vector
    )
    found = []
    for hit in hits[:limit]:
        row = dict(hit.row)
        source = {
            k: row[k] for k in ("collection_id", "document_id", "title", "chunk_index", "heading")
        }
        found.append(Found("chunk", row, hit.score, hit.similarity, hit.ranks, [source]))
    return found


def search(
    *,
    workspace: Workspace,
    user_id: str | None,
    query: str,
    vector: list[float] | None,
    limit: int,
    types: Iterable[str] = ("memories", "messages"),
    collection_ids: Iterable[str] = (),
    metadata: dict | None = None,
    kinds: Sequence[str] = (),
    created_from: dt.datetime | None = None,
    created_until: dt.datetime | None = None,
    query_tokens: Tokens | None = None,
) -> list[Found]:
    """The sources named in `types` in one ranking; an item adds evidence or it is left out.
    `metadata` and `kinds`: only memories whose metadata contains it, of those kinds (messages
    and chunks as they are). `created_from` / `created_until`: memories and messages created
    in the range (a chunk is the workspace's knowledge, not a user's history: not narrowed).

    A memory restates its source messages: it outranks them only when clearly better
    (fusion.MEMORY_WEIGHT), and a memory whose every source message already ranks above it adds
    nothing (the LoCoMo evaluation counts evidence, not items). Chunks join on their own blended
    score, on the same scale.

    With the question's `query_tokens`, the first late.POOL candidates of each kind (or
    `limit`, if more) are re-ranked with their token match (memory.retrieval.late), and each
    item's score is the re-ranking's.
    """
    types = set(types)
    pool = max(limit, late.POOL) if query_tokens is not None else limit
    ranked: list[Found] = []
    memories_ranked: Future[list[Found]] | None = None
    if "memories" in types and user_id:
        rank_memories = partial(
            memory_search,
            workspace=workspace,
            user_id=user_id,
            query=query,
            vector=vector,
            limit=pool,
            min_similarity=MIN_SIMILARITY,
            keep_best=NEAREST_MEMORIES_KEPT,
            with_sources=True,
            metadata=metadata,
            kinds=kinds,
            created_from=created_from,
            created_until=created_until,
        )
        if "messages" in types and not connection.in_atomic_block:
            # Memories on a second connection while this one ranks messages: two queries of
            # ~7 ms of PostgreSQL CPU each, side by side rather than one after the other.
            memories_ranked = elsewhere.submit(rank_memories)
        else:
            ranked += rank_memories()
    if "messages" in types and user_id:
        ranked += message_search(
            workspace=workspace,
            user_id=user_id,
            query=query,
            vector=vector,
            limit=pool,
            min_similarity=MIN_SIMILARITY,
            feedback=True,
            every_echo=True,
            created_from=created_from,
            created_until=created_until,
        )
    if memories_ranked is not None:
        ranked = memories_ranked.result() + ranked  # in the order the serial search had
    if "chunks" in types and collection_ids:
        ranked += chunk_search(
            workspace=workspace,
            collection_ids=list(collection_ids),
            query=query,
            vector=vector,
            limit=pool,
        )
    ranked.sort(key=_weighted, reverse=True)
    if query_tokens is not None:
        ranked = _token_reranked(ranked, query_tokens, query)
    results: list[Found] = []
    covered: set[str] = set()
    for found in ranked:
        if found.kind != "chunk":
            ids = {s["message_id"] for s in found.sources}
            if ids and ids <= covered:
                continue
            covered |= ids
        results.append(found)
        if len(results) == limit:
            break
    return results


def _weighted(found: Found) -> float:
    return found.score * (fusion.MEMORY_WEIGHT if found.kind == "memory" else 1.0)


def _own_text(found: Found) -> str:
    """A memory's text or a message's content (what the answers' lift reads)."""
    obj = found.obj
    return obj.text if isinstance(obj, Memory) else obj.content if isinstance(obj, Message) else ""


def _token_reranked(ranked: list[Found], query: Tokens, question: str) -> list[Found]:
    """The candidates (in the blend's order) re-ranked with their token match and the kind of
    answer they hold (memory.retrieval.answers); each one's score set to the re-ranking's, its
    why told its match's rank. Only the first late.POOL memories and messages are matched
    (what the weights were fitted on; a `limit` of 100 read and matched five times as many
    tokens, +8 ms a search); the rest rank by blend and place."""
    seen: dict[str, int] = {}
    sources: list[str | None] = []
    for f in ranked:
        seen[f.kind] = seen.get(f.kind, 0) + 1
        matched = f.kind != "chunk" and bool(f.sources) and seen[f.kind] <= late.POOL
        sources.append(f.sources[0]["message_id"] if matched else None)
    match = late.matches(query, late.packed_tokens([s for s in sources if s]))
    if not match:
        return ranked
    kinds = answers.asked(question)
    known = answers.known_names(
        question, (f.obj.name for f in ranked if isinstance(f.obj, Message))
    )
    held = [
        answers.held(kinds, _own_text(f), known) if source else ()
        for f, source in zip(ranked, sources, strict=True)
    ]
    lifts = [answers.lift(h) for h in held]
    keys = late.rescored([_weighted(f) for f in ranked], sources, match, lifts)
    by_match = sorted(match, key=lambda s: match[s], reverse=True)
    places = {s: i + 1 for i, s in enumerate(by_match)}
    for found, source, key, its in zip(ranked, sources, keys, held, strict=True):
        if source in places:
            found.ranks["tokens"] = places[source]
        found.answers = its
        found.blended = found.score
        found.score = late.shown(key)
    return sorted(ranked, key=lambda f: f.score, reverse=True)
