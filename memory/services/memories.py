"""Memories: every change is written to MemoryEvent, which outlives the memory itself."""

from __future__ import annotations

import datetime as dt
import enum
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from django.db import connection, transaction
from django.db.models import Case, Value, When
from django.db.models.functions import Length

from accounts.models import Workspace
from config.admin_log import log_entries_delete
from config.common import rows
from config.common.vectors import binding_cursor, vector_binary
from memory.embeddings import get_embedder
from memory.forgotten import normalized, user_subjects
from memory.models import Memory, MemoryEvent, Message
from memory.services.forgetting import (
    Written,
    conversations_rewrite,
    conversations_without,
    suppression_record,
    suppression_vectors,
)
from memory.services.locks import user_lock
from memory.text import memory_date, memory_learned_on, memory_search_text, nfc


def _index(
    memory: Memory,
    *,
    embedding: list[float] | None = None,
    ready: Mapping[str, list[float]] | None = None,
) -> None:
    """`ready`: vectors embedded beforehand, by search text (used when it is still the one)."""
    memory.search_text = _search_text(memory)
    if embedding is None:
        embedding = (ready or {}).get(memory.search_text)
    memory.embedding = (
        embedding if embedding is not None else get_embedder().embed_one(memory.search_text)
    )


def _search_text(memory: Memory) -> str:
    """The text a memory is found by: its own, after the day it happened, else was learned
    (its `learned_on`, else its `created_at`: set before the insert, as an import's original
    time is, or a memory posted back in March was labelled with the day it was posted)."""
    return memory_search_text(text=memory.text, when=memory_date(memory))


def _dated(memory: Memory, created_at: dt.datetime | None) -> Memory:
    """A new `memory` with its original time, if it has one (an import's), before it is
    indexed: its search text is dated by it. (The insert stamps now; _keep_created_at writes
    the original back after it.)"""
    if created_at is not None:
        memory.created_at = created_at
    return memory


def stored_text(text: str) -> str:
    """A memory's text as it is stored, whoever writes it (the API, the admin, an extractor,
    an agent's `remember`): without the spaces at its ends, composed (memory.text.nfc), so
    what is found and matched as the same fact is one string however it was typed. Rows
    stored before (rarely anything but NFC: what keyboards and the SDKs send) are not
    rewritten: their index is what they were stored as."""
    return nfc(text.strip())


def _own_messages(workspace: Workspace, user_id: str, ids: list[str]) -> list[Any]:
    """The ids among `ids` of the user's own messages: a memory's sources are linked by id.
    Their whole rows (content, raw body, two vectors parsed from text) were read only to take
    their ids, in every fact an extraction run updated. (list[Any]: add() takes primary keys,
    which django-stubs types as int.)"""
    return list(
        Message.objects.filter(workspace=workspace, user_id=user_id, id__in=ids).values_list(
            "pk", flat=True
        )
    )


def _event(
    *,
    workspace: Workspace,
    memory: Memory,
    event: str,
    old_text: str = "",
    new_text: str = "",
    actor: str,
    reason: str = "",
    source_message_ids: Iterable[str] = (),
) -> MemoryEvent:
    return MemoryEvent.objects.create(
        workspace=workspace,
        memory_id=memory.id,
        user_id=memory.user_id,
        event=event,
        old_text=old_text,
        new_text=new_text,
        actor=actor,
        reason=reason,
        source_message_ids=list(source_message_ids),
    )


@transaction.atomic
def memory_create(
    *,
    workspace: Workspace,
    user_id: str,
    text: str,
    kind: str = "fact",
    event_date: dt.date | None = None,
    metadata: dict | None = None,
    source_message_ids: Iterable[str] = (),
    learned_on: dt.date | None = None,
    actor: str = "api",
    reason: str = "",
    embedding: list[float] | None = None,
    created_at: dt.datetime | None = None,
) -> Memory:
    """`created_at`: the memory's original time (an exported memory posted back), else now."""
    source_ids = list(dict.fromkeys(source_message_ids))
    metadata = dict(metadata or {})
    if learned_on:
        metadata["learned_on"] = learned_on.isoformat()
    memory = Memory(
        workspace=workspace,
        user_id=user_id,
        text=stored_text(text),
        kind=kind,
        event_date=event_date,
        metadata=metadata,
        # a person's, unless it names the messages it came from (an extraction's)
        by_hand=actor in HAND_ACTORS and not source_ids,
    )
    _index(_dated(memory, created_at), embedding=embedding)
    # Under the user's lock (shared), as their turns, imports and extraction runs write: added
    # by hand during their erasure, the memory outlived it without its ADD, which the erasure
    # deleted, and its history answered "No memory". Taken after the embedding: an erasure
    # waits for the inserts only.
    user_lock(workspace_id=workspace.id, user_id=user_id)
    memory.save()
    _keep_created_at({memory.id: created_at} if created_at else {}, [memory])
    if source_ids:
        memory.sources.add(*_own_messages(workspace, user_id, source_ids))
    _event(
        workspace=workspace,
        memory=memory,
        event=MemoryEvent.Event.ADD,
        new_text=memory.text,
        actor=actor,
        reason=reason,
        source_message_ids=source_ids,
    )
    return memory


# How far a saved text's length may be from a new one's and still normalize alike (case,
# spacing, end punctuation and the subject's spelling: "The user" against "User").
_SAME_TEXT_SLACK = 12


@transaction.atomic
def memory_add(
    *,
    workspace: Workspace,
    user_id: str,
    text: str,
    kind: str = "fact",
    event_date: dt.date | None = None,
    metadata: dict | None = None,
    actor: str = "api",
    reason: str = "",
    created_at: dt.datetime | None = None,
) -> tuple[Memory, bool]:
    """A fact added by a person (`POST /v1/memories`) or an agent (the `remember` tool), and
    whether it was created. The user's memory that already says it (its normalized text, its
    kind and date, and every key of `metadata` alike) is returned as it is, nothing recorded:
    a client's retry of a POST, or an agent remembering what it was told each turn, stored the
    fact again and again, and every chat turn then read it once per copy. `created_at`: a
    new memory's original time (memory_create); one that already says it keeps its own."""
    metadata = dict(metadata or {})
    # Two such adds at once: the second waits for the first's commit, then finds its memory.
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
            [f"memory_add:{workspace.id}:{user_id}:{normalized(text)}"],
        )
    existing = _memory_saying(
        workspace=workspace, user_id=user_id, text=text, kind=kind, event_date=event_date
    )
    if existing is not None and all(  # as JSON, as memory_update compares: true is not 1
        key in existing.metadata and _canonical(existing.metadata[key]) == _canonical(value)
        for key, value in metadata.items()
    ):
        if actor in HAND_ACTORS and not existing.by_hand:
            # An extracted memory a person now says too: theirs from now on, so deleting the
            # conversation it came from keeps it (it went with it, the person's fact too).
            # Under the user's lock, as their writes (a conversation's deletion waits).
            user_lock(workspace_id=workspace.id, user_id=user_id)
            Memory.objects.filter(pk=existing.pk).update(by_hand=True)
            existing.by_hand = True
        return existing, False
    memory = memory_create(
        workspace=workspace,
        user_id=user_id,
        text=text,
        kind=kind,
        event_date=event_date,
        metadata=metadata,
        actor=actor,
        reason=reason,
        created_at=created_at,
    )
    return memory, True


def _memory_saying(
    *, workspace: Workspace, user_id: str, text: str, kind: str, event_date: dt.date | None
) -> Memory | None:
    """The user's oldest memory of `kind` and `event_date` whose text normalizes as `text`'s
    (read among those of about its length: a user may have thousands)."""
    key = normalized(text)
    size = len(stored_text(text))
    candidates = (
        Memory.objects.filter(
            workspace=workspace, user_id=user_id, kind=kind, event_date=event_date
        )
        .annotate(size=Length("text"))
        .filter(size__gte=size - _SAME_TEXT_SLACK, size__lte=size + _SAME_TEXT_SLACK)
        .only("id", "text", "by_hand")
        .order_by("created_at", "id")
    )
    for candidate in candidates:
        if normalized(candidate.text) == key:
            return Memory.objects.get(pk=candidate.pk)
    return None


@dataclass
class NewMemory:
    """One memory for memories_create: the arguments memory_create takes, per memory."""

    text: str
    kind: str
    event_date: dt.date | None
    metadata: dict
    source_message_ids: list[str]
    learned_on: dt.date | None
    embedding: list[float]
    id: str | None = None  # the new memory's id, when the caller chose it
    memory: Memory | None = None  # set by memories_create
    created_at: dt.datetime | None = None  # its original time (an import), else now
    user_id: str = ""  # its user, when not the call's (a run of many users' turns)


# No savepoint of its own (SAVEPOINT and RELEASE were two of a lone turn's statements): its
# only writes are its three inserts, and an error in one ends the caller's transaction too.
@transaction.atomic(savepoint=False)
def memories_create(
    *, workspace: Workspace, user_id: str, new: list[NewMemory], actor: str, reason: str = ""
) -> list[Memory]:
    """memory_create for many memories in three statements (memories, sources, events), not
    four per memory: an extraction job's new facts (bench/bench_extraction.py), each written
    once (config.common.rows.insert) rather than compiled by bulk_create on every call.

    Source messages are taken as given: the caller read them from the user's own conversation.
    """
    if not new:
        return []
    memories = []
    for item in new:
        metadata = dict(item.metadata)
        if item.learned_on:
            metadata["learned_on"] = item.learned_on.isoformat()
        memory = Memory(
            workspace=workspace,
            user_id=item.user_id or user_id,
            text=stored_text(item.text),
            kind=item.kind,
            event_date=item.event_date,
            metadata=metadata,
            # a person's, unless it names the messages it came from (as memory_create says)
            by_hand=actor in HAND_ACTORS and not item.source_message_ids,
        )
        if item.id:
            memory.id = item.id
        _index(_dated(memory, item.created_at), embedding=item.embedding)
        item.memory = memory
        memories.append(memory)
    rows.insert(memories)
    _keep_created_at(
        {m.id: item.created_at for item, m in zip(new, memories, strict=True) if item.created_at},
        memories,
    )
    _link(
        [
            (item.memory.id, message_id)
            for item in new
            if item.memory is not None
            for message_id in dict.fromkeys(item.source_message_ids)
        ]
    )
    rows.insert(
        [
            MemoryEvent(
                workspace=workspace,
                memory_id=memory.id,
                user_id=memory.user_id,
                event=MemoryEvent.Event.ADD,
                new_text=memory.text,
                actor=actor,
                reason=reason,
                source_message_ids=list(dict.fromkeys(item.source_message_ids)),
            )
            for item, memory in zip(new, memories, strict=True)
        ]
    )
    return memories


@dataclass
class Imported:
    """One memory of an import: the memory that says it, and whether the import created it."""

    memory: Memory
    created: bool


def memories_import(
    *, workspace: Workspace, user_id: str, items: list[dict], actor: str = "api"
) -> list[Imported]:
    """memory_add for many memories (`POST /v1/memories` with `memories`: a restored export,
    a move from another memory store), one Imported per item in order. As memory_add, the
    user's memory that already says an item (its normalized text, kind and date, and its
    `metadata` keys alike) is returned as it is, nothing recorded, and so is an earlier item of
    the same import: a retried import stores each fact once. The new ones are embedded in one
    batch, before the transaction (a model call per memory was the cost of importing one by
    one), and written by memories_create, all or none. Items are validated beforehand
    (serializers.MemoryImportItemInput)."""
    texts = [stored_text(item["text"]) for item in items]
    probes = [  # the search text memories_create indexes (its date: learned_on, else created_at)
        _search_text(
            _dated(
                Memory(
                    text=text,
                    event_date=item.get("event_date"),
                    metadata=item.get("metadata") or {},
                ),
                item.get("created_at"),
            )
        )
        for text, item in zip(texts, items, strict=True)
    ]
    # Only what the user does not hold yet is embedded (a retried import embedded every item
    # again to find each stored: 13 s of 1,000, bench/bench_memory_import.py); read again
    # under the locks below, where a memory deleted meanwhile is embedded then.
    keys = [normalized(item["text"]) for item in items]
    held = _memories_saying(workspace=workspace, user_id=user_id, items=items, keys=keys)
    wanted = [
        probe
        for probe, item, key in zip(probes, items, keys, strict=True)
        if not _held(held, key, item)
    ]
    distinct = list(dict.fromkeys(wanted))
    vectors = (
        dict(zip(distinct, get_embedder().embed(distinct).tolist(), strict=True))
        if distinct
        else {}
    )
    return _memories_import(
        workspace=workspace,
        user_id=user_id,
        items=items,
        keys=keys,
        probes=probes,
        vectors=vectors,
        actor=actor,
    )


def _held(held: dict[tuple, Memory], key: str, item: dict) -> Memory | None:
    """The user's memory (of `held`, _memories_saying's) that already says `item`, if any."""
    old = held.get((key, item["kind"], item.get("event_date")))
    if old is not None and _holds(old.metadata, dict(item.get("metadata") or {})):
        return old
    return None


@transaction.atomic
def _memories_import(
    *,
    workspace: Workspace,
    user_id: str,
    items: list[dict],
    keys: list[str],
    probes: list[str],
    vectors: dict[str, list[float]],
    actor: str,
) -> list[Imported]:
    # memory_add's lock of each text, taken in one order (no two imports wait on each other
    # in a cycle): a single add of the same fact meanwhile waits for this commit, then finds it.
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_advisory_xact_lock(h)) FROM (SELECT DISTINCT"
            " hashtextextended(k, 0) AS h FROM unnest(%s::text[]) AS k ORDER BY h) AS locks",
            [sorted({f"memory_add:{workspace.id}:{user_id}:{key}" for key in keys})],
        )
    existing = _memories_saying(workspace=workspace, user_id=user_id, items=items, keys=keys)
    slots: list[Imported | NewMemory] = []  # per item: a memory found, or one to write
    made: dict[tuple, list[NewMemory]] = {}  # this import's new memories, by what they say
    claimed: list[str] = []  # extracted memories a person now says too (as memory_add)
    fresh: list[NewMemory] = []  # the memories to write, in the items' order
    for item, key, probe in zip(items, keys, probes, strict=True):
        metadata = dict(item.get("metadata") or {})
        said = (key, item["kind"], item.get("event_date"))
        old = _held(existing, key, item)
        if old is not None:
            if actor in HAND_ACTORS and not old.by_hand:
                claimed.append(old.id)
                old.by_hand = True
            slots.append(Imported(old, False))
            continue
        earlier = next((n for n in made.get(said, []) if _holds(n.metadata, metadata)), None)
        if earlier is None:
            earlier = NewMemory(
                text=item["text"],
                kind=item["kind"],
                event_date=item.get("event_date"),
                metadata=metadata,
                source_message_ids=[],
                learned_on=None,
                # not embedded beforehand: the user's memory saying it was deleted since
                embedding=vectors.get(probe) or get_embedder().embed_one(probe),
                created_at=item.get("created_at"),
            )
            made.setdefault(said, []).append(earlier)
            fresh.append(earlier)
        slots.append(earlier)
    # Under the user's lock (shared), as memory_create: an erasure waits for the inserts.
    user_lock(workspace_id=workspace.id, user_id=user_id)
    if claimed:
        Memory.objects.filter(pk__in=claimed).update(by_hand=True)
    memories_create(
        workspace=workspace,
        user_id=user_id,
        new=fresh,
        actor=actor,
    )
    written: set[int] = set()  # the first item saying a new memory created it; later ones not
    result = []
    for slot in slots:
        if isinstance(slot, NewMemory):
            assert slot.memory is not None
            result.append(Imported(slot.memory, id(slot) not in written))
            written.add(id(slot))
        else:
            result.append(slot)
    return result


def _holds(stored: dict, given: dict) -> bool:
    """Does a memory's metadata hold every given key alike? As JSON, as memory_add compares."""
    return all(
        key in stored and _canonical(stored[key]) == _canonical(value)
        for key, value in given.items()
    )


def _memories_saying(
    *, workspace: Workspace, user_id: str, items: list[dict], keys: list[str]
) -> dict[tuple, Memory]:
    """_memory_saying for many items in one query: the user's oldest memory saying each
    (normalized text, kind, date), read among those of the items' kinds and lengths."""
    sizes = [len(stored_text(item["text"])) for item in items]
    candidates = (
        Memory.objects.filter(
            workspace=workspace,
            user_id=user_id,
            kind__in={item["kind"] for item in items},
        )
        .annotate(size=Length("text"))
        .filter(size__gte=min(sizes) - _SAME_TEXT_SLACK, size__lte=max(sizes) + _SAME_TEXT_SLACK)
        .defer("embedding")  # 384 floats a row, only compared by text here
        .order_by("created_at", "id")
    )
    wanted = set(keys)
    found: dict[tuple, Memory] = {}
    for memory in candidates.iterator(chunk_size=2000):
        key = normalized(memory.text)
        if key in wanted:
            found.setdefault((key, memory.kind, memory.event_date), memory)
    return found


class _Unset(enum.Enum):
    """event_date not given (None clears it): a sentinel mypy can tell apart."""

    UNSET = enum.auto()


_UNSET = _Unset.UNSET


HAND_ACTORS = ("api", "admin")  # a memory edited by a person, not by an extractor

# The keys of a memory's metadata that Engram writes and reads back: the day it was learned,
# and a one-valued fact's slot, value and subject (the offline extractor updates "lives in
# Paris" by them). The rest of the metadata is the client's.
ENGRAM_METADATA_KEYS = ("learned_on", "slot", "value", "subject")


class MemoryChanged(Exception):
    """The memory was written since the caller read it (`unless_changed`): an extraction run
    that decided on the text it read leaves a newer one, a person's edit above all, alone."""


def _lock_as_read(memory: Memory, *, unless_changed: bool) -> bool:
    """Lock the memory's row until the transaction ends; False when it was deleted since it
    was read. With `unless_changed`, MemoryChanged when it was written since."""
    written = (
        Memory.objects.select_for_update()
        .filter(pk=memory.pk)
        .values_list("updated_at", flat=True)
        .first()
    )
    if written is None:
        return False
    if unless_changed and written != memory.updated_at:
        raise MemoryChanged(f"memory '{memory.pk}' was changed since it was read")
    return True


def _person_lock(*, workspace: Workspace, memory: Memory) -> None:
    """A person's deletion or edit of a memory records a suppression: under the user's lock,
    exclusive (as an erasure, or a conversation's deletion), taken before the memory's row.
    An extraction run's write (under the lock, shared) then runs wholly before, or wholly
    after and sees the suppression: a run that read the user's suppressions before it was
    recorded no longer writes the fact again (memory.background.extraction.llm re-reads them
    in its write). Turns wait only for its few statements: the vectors are made before it
    (under it only for a text changed since the caller read it)."""
    user_lock(workspace_id=workspace.id, user_id=memory.user_id, exclusive=True)


def memory_update(
    *,
    workspace: Workspace,
    memory: Memory,
    text: str | None = None,
    kind: str | None = None,
    event_date: dt.date | None | _Unset = _UNSET,
    metadata: dict | None = None,
    source_message_ids: Iterable[str] = (),
    actor: str = "api",
    reason: str = "",
    embedding: list[float] | None = None,
    unless_changed: bool = False,
) -> Memory:
    """Change the fields given; the others keep what the row holds now (`metadata` replaces
    the client's keys; Engram's, ENGRAM_METADATA_KEYS, stay unless it names them).

    unless_changed: MemoryChanged when the row was written since `memory` was read (an
    extraction run's decision, taken on the text it read, never overwrites a newer edit).

    A person's edit of the text (`actor` api or admin) replaces the fact: the text it replaces
    is suppressed as a deleted memory's is (memory.services.forgetting), unless the new one is
    the same normalized text (case, spacing, end punctuation aside).

    An update that changes nothing the row holds now, and links no source message, writes
    nothing (no history entry, no new vector): `memory`, as the row is, is returned."""
    changes = _Changes(
        text=text,
        kind=kind,
        event_date=event_date,
        metadata=metadata,
        source_message_ids=tuple(source_message_ids),
        actor=actor,
        reason=reason,
        embedding=embedding,
        unless_changed=unless_changed,
    )
    # A client's PATCH of what it read (or an admin's save of an unchanged form) recorded an
    # UPDATE from a text to itself and embedded it again. Checked again on the row as it is
    # now (`memory` may have been read long before): what it holds is what the edit leaves.
    if _changes_nothing(memory, changes) and _changes_nothing(_reread(memory), changes):
        return memory
    if actor not in HAND_ACTORS and connection.in_atomic_block:
        # An extraction run's update, in its run's transaction: the statements written once,
        # without a savepoint of its own (MemoryChanged and DoesNotExist are raised before it
        # writes anything, and it locks nothing then): a soak-like turn's supersede was
        # ~7.9 ms of its job's CPU under cProfile in nine statements (bench/README.md,
        # "Twenty-fifth session").
        return _update_fields(
            workspace=workspace, memory=memory, changes=changes, written_once=True
        )
    return _update(workspace=workspace, memory=memory, changes=changes)


@dataclass(frozen=True)
class _Changes:
    """memory_update's arguments after `memory`."""

    text: str | None
    kind: str | None
    event_date: dt.date | None | _Unset
    metadata: dict | None
    source_message_ids: tuple[str, ...]
    actor: str
    reason: str
    embedding: list[float] | None
    unless_changed: bool


def _merged_metadata(old: dict, given: dict) -> dict:
    """A memory's metadata after an edit gives `given`: Engram's keys stay unless it names
    them. A client tagging a memory ({"pinned": true}) wiped its slot, and "I moved to Berlin"
    then made a second residence memory beside "User lives in Vienna." instead of updating
    it."""
    return {k: old[k] for k in ENGRAM_METADATA_KEYS if k in old} | given


def _changes_nothing(memory: Memory, changes: _Changes) -> bool:
    """Whether `changes` leave `memory` as it is and link no source message (with
    `unless_changed`, never: the caller asks to hear of a write since its read)."""
    if changes.source_message_ids or changes.unless_changed:
        return False
    if changes.text is not None and stored_text(changes.text) != memory.text:
        return False
    if changes.kind is not None and changes.kind != memory.kind:
        return False
    if not isinstance(changes.event_date, _Unset) and changes.event_date != memory.event_date:
        return False
    if changes.metadata is None:
        return True
    old = memory.metadata or {}
    # as JSON: Python's == holds True equal to 1 and 1 to 1.0, which jsonb keeps apart
    return _canonical(_merged_metadata(old, changes.metadata)) == _canonical(old)


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def _reread(memory: Memory) -> Memory:
    """`memory` with the fields an edit sets read again from its row (Memory.DoesNotExist when
    it was deleted)."""
    memory.refresh_from_db(fields=["text", "kind", "event_date", "metadata", "updated_at"])
    return memory


@transaction.atomic
def _update(*, workspace: Workspace, memory: Memory, changes: _Changes) -> Memory:
    """memory_update through the ORM, in its own savepoint: a person's edit (or an update
    outside a transaction)."""
    return _update_fields(workspace=workspace, memory=memory, changes=changes, written_once=False)


def _update_fields(
    *,
    workspace: Workspace,
    memory: Memory,
    changes: _Changes,
    written_once: bool,
) -> Memory:
    """memory_update's change. `written_once`: the lock and read, the save, the sources and
    the history as statements written once (an extractor's update; the same rows)."""
    assert memory.workspace_id == workspace.id
    text, event_date = changes.text, changes.event_date
    actor, embedding = changes.actor, changes.embedding
    replaces = actor in HAND_ACTORS and text is not None
    ready: dict[str, list[float]] = {}
    subjects: frozenset[str] = frozenset()
    written: list[Written] = []
    if replaces:
        assert text is not None
        subjects = user_subjects(workspace=workspace, user_id=memory.user_id)
        # What the edit embeds, in one call before the user's lock (their turns wait for it):
        # the replaced text as read, and the new one as it will be indexed (what changed
        # meanwhile is embedded under the lock).
        when = memory.event_date if isinstance(event_date, _Unset) else event_date
        search = memory_search_text(text=stored_text(text), when=when or memory_learned_on(memory))
        texts = [search] if embedding is None else []
        replaced = normalized(memory.text, subjects)
        if normalized(text, subjects) != replaced:
            texts.append(replaced)
        if texts:
            ready = dict(zip(texts, get_embedder().embed(texts).tolist(), strict=True))
        if replaced in ready:  # its conversations' summaries and titles say it no more
            forgetting = {replaced: ready[replaced]}
            written = conversations_without(
                workspace=workspace, memory=memory, forgetting=forgetting
            )
        _person_lock(workspace=workspace, memory=memory)
    # The row as it is now (locked): `memory` may have been read long before (an extraction
    # run reads a user's memories, then waits seconds for the model), and saving it whole
    # wrote back its old metadata, kind and date over a person's edit made meanwhile, and its
    # old text into the history as the text replaced.
    if written_once:
        _lock_and_read(memory, unless_changed=changes.unless_changed)
    else:
        if not _lock_as_read(memory, unless_changed=changes.unless_changed):
            # never saved back after a delete: Django's save() would insert it again
            raise Memory.DoesNotExist(f"memory '{memory.pk}' was deleted.")
        memory.refresh_from_db()
    old_text = memory.text
    changed = _set_changes(memory, changes)
    source_ids = list(dict.fromkeys(changes.source_message_ids))
    if not changed and not source_ids:
        # The row already says it (a concurrent PATCH made the same edit while this one
        # waited for its lock, or an extractor's update of what it read): no history entry
        # from a memory to itself, no new vector.
        return memory
    if actor in HAND_ACTORS and memory.text != old_text:
        # the admin's log named it by the text replaced (config.admin_log); an admin edit
        # logs its change, with the new text, after this
        log_entries_delete(model=Memory, rows=Memory.objects.filter(pk=memory.pk))
    _index(memory, embedding=embedding if text is not None else None, ready=ready)
    if replaces and normalized(memory.text, subjects) != normalized(old_text, subjects):
        suppression_record(
            workspace=workspace, memory=memory, text=old_text, vectors=ready, subjects=subjects
        )
        conversations_rewrite(workspace=workspace, user_id=memory.user_id, written=written)
        # Its messages said the text replaced (the suppression now keeps them), not this one:
        # left as its sources, /v1/search hid the correction behind the stale message that
        # outranked it, and deleting their conversation deleted the person's own fact. The
        # history's ADD keeps where the memory first came from.
        memory.sources.clear()
    event = _update_event(
        workspace,
        memory,
        old_text=old_text,
        actor=actor,
        reason=changes.reason,
        source_ids=source_ids,
        changed=changed,
    )
    if written_once:
        rows.update(memory)
        if source_ids:
            _link_own_messages(workspace=workspace, memory=memory, ids=source_ids)
        rows.insert([event])
        return memory
    memory.save(force_update=True)
    if source_ids:
        memory.sources.add(*_own_messages(workspace, memory.user_id, source_ids))
    event.save(force_insert=True)
    return memory


def _set_changes(memory: Memory, changes: _Changes) -> dict[str, dict[str, Any]]:
    """`changes` set on `memory` (its row as it is now, locked): what they changed (_changed)."""
    text, actor = changes.text, changes.actor
    old_text = memory.text
    before = _tracked(memory)
    if changes.kind is not None:
        memory.kind = changes.kind
    if not isinstance(changes.event_date, _Unset):
        memory.event_date = changes.event_date
    old_metadata = memory.metadata or {}
    if changes.metadata is not None:
        memory.metadata = _merged_metadata(old_metadata, changes.metadata)
    if text is not None:
        memory.text = stored_text(text)
        # A one-valued fact's text changed by hand ("User lives in Rome." for "... Paris.")
        # without its slot's value: the value no longer says what the text does, and the
        # extractor would take the user restating "I live in Paris" for no change. Unknown,
        # the next statement of the slot sets it again. (The extractor rewrites a text with
        # its value the same, "User lives in Berlin (moved there in …)": it keeps it.)
        kept = memory.metadata or {}
        if (
            actor in HAND_ACTORS
            and memory.text != old_text
            and "value" in kept
            and kept["value"] == old_metadata.get("value")
        ):
            memory.metadata = {k: v for k, v in kept.items() if k != "value"}
    return _changed(before, _tracked(memory))


def _tracked(memory: Memory) -> dict[str, Any]:
    """The fields of `memory` its history records the changes of, as the API shows them."""
    return {
        "text": memory.text,
        "kind": memory.kind,
        "event_date": memory.event_date.isoformat() if memory.event_date else None,
        "metadata": memory.metadata or {},
    }


def _changed(before: dict[str, Any], after: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{field: {"old", "new"}} of each field that differs (metadata as JSON: True is not 1)."""
    return {
        name: {"old": before[name], "new": after[name]}
        for name in before
        if _canonical(before[name]) != _canonical(after[name])
    }


# An extractor's update locks and reads its memory in one statement (_lock_as_read's lock,
# then refresh_from_db's read, were two, each built and compiled by the ORM). With
# `unless_changed` the row is locked only as it was read: one written since (or deleted) is
# neither locked nor read, as _lock_as_read's lock of it ended with memory_update's savepoint.
_LOCK_AND_READ = (
    "SELECT {columns} FROM memory_memory WHERE memory_memory.id = %s{as_read} FOR UPDATE"
)
_AS_READ = " AND memory_memory.updated_at = %s"
_READ_WITHOUT = ("search", "embedding")  # the generated tsvector; the vector, set again
_LOCK_SQL: dict[bool, str] = {}


def _lock_and_read(memory: Memory, *, unless_changed: bool) -> None:
    """_lock_as_read and refresh_from_db in one statement: `memory` holds its row as it is
    now, locked until the transaction ends. Memory.DoesNotExist when it was deleted since it
    was read; with `unless_changed`, MemoryChanged when it was written since."""
    sql = _LOCK_SQL.get(unless_changed)
    if sql is None:
        sql = _LOCK_SQL[unless_changed] = _LOCK_AND_READ.format(
            columns=rows.columns(Memory, without=_READ_WITHOUT),
            as_read=_AS_READ if unless_changed else "",
        )
    params: list[Any] = [memory.pk, memory.updated_at] if unless_changed else [memory.pk]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
        if row is None and unless_changed:
            cursor.execute("SELECT 1 FROM memory_memory WHERE id = %s", [memory.pk])
            if cursor.fetchone() is not None:
                raise MemoryChanged(f"memory '{memory.pk}' was changed since it was read")
    if row is None:
        # never saved back after a delete: Django's save() would insert it again
        raise Memory.DoesNotExist(f"memory '{memory.pk}' was deleted.")
    now = rows.instance(Memory, row, without=_READ_WITHOUT)
    for name in _read_names():  # as refresh_from_db sets them
        setattr(memory, name, getattr(now, name))
    memory.__dict__.pop("_prefetched_objects_cache", None)
    memory._state.db = now._state.db


_READ_NAMES: list[str] = []


def _read_names() -> list[str]:
    if not _READ_NAMES:
        _READ_NAMES.extend(
            f.attname for f in Memory._meta.concrete_fields if f.attname not in _READ_WITHOUT
        )
    return _READ_NAMES


# The sources of an extractor's update linked in one statement: _own_messages's ids, then
# sources.add's insert (ON CONFLICT DO NOTHING: no m2m_changed receivers), were two.
_LINK_OWN = """
INSERT INTO memory_memory_sources (memory_id, message_id)
SELECT %s, memory_message.id FROM memory_message
WHERE memory_message.workspace_id = %s AND memory_message.user_id = %s
AND memory_message.id = ANY(%s::varchar[])
ON CONFLICT DO NOTHING
"""


def _link_own_messages(*, workspace: Workspace, memory: Memory, ids: list[str]) -> None:
    """memory.sources.add(*_own_messages(...)) in one statement."""
    with connection.cursor() as cursor:
        cursor.execute(_LINK_OWN, [memory.pk, workspace.id, memory.user_id, ids])


@dataclass(kw_only=True)
class Supersede:
    """One of an extraction run's updates of a memory as it read it (memory_update with
    `unless_changed`), for memories_supersede, which sets `updated` (the memory as written)
    or `error` (MemoryChanged, Memory.DoesNotExist: what memory_update would have raised).
    As memory_update's, an `event_date` not given is kept (None clears it), and `metadata`
    None keeps it; `embedding` is the vector of the search text it will have."""

    memory: Memory
    text: str
    source_message_ids: list[str]
    reason: str
    embedding: list[float]
    event_date: dt.date | None | _Unset = _UNSET
    metadata: dict | None = None
    updated: Memory | None = None
    error: Exception | None = None


# memories_supersede's lock and read: each memory's row locked and read only as it was read
# (its updated_at then), as _lock_and_read's; one written since, or deleted, is neither. Rows
# locked in id order (two runs superseding the same memories wait, never deadlock). The
# expected updated_at is an expression of the row, so READ COMMITTED's re-check of a row
# written meanwhile (its lock waited for) compares the new version's.
_LOCK_MANY = (
    "SELECT {columns} FROM memory_memory WHERE memory_memory.id = ANY(%s::varchar[])"
    " AND memory_memory.updated_at"
    " = (%s::timestamptz[])[array_position(%s::varchar[], memory_memory.id)]"
    " ORDER BY memory_memory.id FOR UPDATE"
)
_LOCK_MANY_SQL: list[str] = []
# The fields an extractor's update writes (rows.update wrote the others too, as read under
# the lock: the same values), for many rows in one statement.
_UPDATE_MANY = """
UPDATE memory_memory SET text = v.text, kind = v.kind, event_date = v.event_date,
metadata = v.metadata, search_text = v.search_text, embedding = v.embedding,
updated_at = v.updated_at
FROM (VALUES {rows}) AS v(id, text, kind, event_date, metadata, search_text, embedding,
updated_at)
WHERE memory_memory.id = v.id
"""
_UPDATE_ROW = (
    "(%s::varchar, %s::text, %s::varchar, %s::date, %s::jsonb, %s::text, %b::vector,"
    " %s::timestamptz)"
)
_UPDATE_FIELDS = ("text", "kind", "event_date", "metadata", "search_text", "updated_at")
# _LINK_OWN for many memories: each its own user's messages, in the updates' order.
_LINK_OWN_MANY = """
INSERT INTO memory_memory_sources (memory_id, message_id)
SELECT l.memory_id, memory_message.id
FROM unnest(%s::varchar[], %s::varchar[], %s::varchar[]) WITH ORDINALITY
  AS l(memory_id, user_id, message_id, n)
JOIN memory_message ON memory_message.id = l.message_id
AND memory_message.workspace_id = %s AND memory_message.user_id = l.user_id
ORDER BY l.n
ON CONFLICT DO NOTHING
"""


@transaction.atomic(savepoint=False)
def memories_supersede(*, workspace: Workspace, updates: list[Supersede], actor: str) -> None:
    """memory_update(unless_changed=True) of an extractor (`actor`) for many memories, in an
    extraction run's transaction: the same rows and history as one memory_update each, in four
    statements rather than four per memory (the lock and read, the update, the sources, the
    history), whatever the number of memories and users — a run of many users' turns
    superseded one memory a turn (bench/README.md, "Thirty-second session"). The memories are
    distinct; each was read in this transaction (under its user's lock, jobs_still_held)."""
    if not updates:
        return
    assert len({u.memory.pk for u in updates}) == len(updates)
    if not _LOCK_MANY_SQL:
        _LOCK_MANY_SQL.append(
            _LOCK_MANY.format(columns=rows.columns(Memory, without=_READ_WITHOUT))
        )
    ids = [u.memory.pk for u in updates]
    with connection.cursor() as cursor:
        cursor.execute(_LOCK_MANY_SQL[0], [ids, [u.memory.updated_at for u in updates], ids])
        now = {row[0]: row for row in cursor.fetchall()}
        missing = [pk for pk in ids if pk not in now]
        present: set[str] = set()
        if missing:  # written since the run read it, or deleted
            cursor.execute("SELECT id FROM memory_memory WHERE id = ANY(%s::varchar[])", [missing])
            present = {row[0] for row in cursor.fetchall()}
    written: list[tuple[Supersede, Memory, MemoryEvent]] = []
    for update in updates:
        memory = update.memory
        row = now.get(memory.pk)
        if row is None:
            update.error = (
                MemoryChanged(f"memory '{memory.pk}' was changed since it was read")
                if memory.pk in present
                else Memory.DoesNotExist(f"memory '{memory.pk}' was deleted.")
            )
            continue
        read = rows.instance(Memory, row, without=_READ_WITHOUT)
        for name in _read_names():  # as _lock_and_read sets them
            setattr(memory, name, getattr(read, name))
        memory.__dict__.pop("_prefetched_objects_cache", None)
        memory._state.db = read._state.db
        old_text = memory.text
        changes = _Changes(
            text=update.text,
            kind=None,
            event_date=update.event_date,
            metadata=update.metadata,
            source_message_ids=tuple(update.source_message_ids),
            actor=actor,
            reason=update.reason,
            embedding=update.embedding,
            unless_changed=True,
        )
        changed = _set_changes(memory, changes)
        source_ids = list(dict.fromkeys(update.source_message_ids))
        update.updated = memory
        if not changed and not source_ids:  # as memory_update: nothing written
            continue
        _index(memory, embedding=update.embedding)
        event = _update_event(
            workspace,
            memory,
            old_text=old_text,
            actor=actor,
            reason=update.reason,
            source_ids=source_ids,
            changed=changed,
        )
        written.append((update, memory, event))
    if not written:
        return
    fields = [f for f in Memory._meta.concrete_fields if f.attname in _UPDATE_FIELDS]
    fields.sort(key=lambda f: _UPDATE_FIELDS.index(f.attname))
    values: list[Any] = []
    for _, memory, _ in written:
        prepared = [f.get_db_prep_save(f.pre_save(memory, False), connection) for f in fields]
        values += [memory.pk, *prepared[:5], vector_binary(memory.embedding), prepared[5]]
    with binding_cursor() as cursor:
        cursor.execute(_UPDATE_MANY.format(rows=", ".join([_UPDATE_ROW] * len(written))), values)
    links = [
        (memory.pk, memory.user_id, message_id)
        for update, memory, _ in written
        for message_id in dict.fromkeys(update.source_message_ids)
    ]
    if links:
        memory_ids, user_ids, message_ids = zip(*links, strict=True)
        with connection.cursor() as cursor:
            cursor.execute(
                _LINK_OWN_MANY, [list(memory_ids), list(user_ids), list(message_ids), workspace.id]
            )
    rows.insert([event for _, _, event in written])


def memory_add_sources(
    *, workspace: Workspace, memory: Memory, source_message_ids: Iterable[str]
) -> None:
    """The same fact said again: more provenance, no new memory and no history entry."""
    ids = list(source_message_ids)
    if ids:
        memory.sources.add(*_own_messages(workspace, memory.user_id, ids))


def memories_add_sources(*, workspace: Workspace, links: Iterable[tuple[str, str]]) -> None:
    """memory_add_sources for many (memory id, message id) pairs in one statement (pairs
    already linked are left as they are): an extraction run's restatements.

    The pairs are taken as given, as in memories_create: the caller read the memories as
    `workspace`'s and the messages from their user's own conversation.
    """
    _link(list(dict.fromkeys(links)))


# Sources linked as bulk_create(ignore_conflicts=True) links them (no m2m_changed receivers:
# as sources.add), in a statement written once.
_LINK = """
INSERT INTO memory_memory_sources (memory_id, message_id)
SELECT * FROM unnest(%s::varchar[], %s::varchar[])
ON CONFLICT DO NOTHING
"""


def _link(pairs: list[tuple[str, str]]) -> None:
    """(memory id, message id) pairs linked, those already linked left as they are."""
    if pairs:
        memory_ids, message_ids = zip(*pairs, strict=True)
        with connection.cursor() as cursor:
            cursor.execute(_LINK, [list(memory_ids), list(message_ids)])


@transaction.atomic
def memory_delete(
    *,
    workspace: Workspace,
    memory: Memory,
    actor: str = "api",
    reason: str = "",
    unless_changed: bool = False,
    vectors: Mapping[str, list[float]] | None = None,
    subjects: frozenset[str] | None = None,
    conversations: bool = True,
) -> bool:
    """False when it was deleted meanwhile (by another call: nothing done).

    unless_changed: MemoryChanged when the row was written since `memory` was read (as
    memory_update).

    A person's deletion (`actor` api or admin) leaves a suppression: the extractor does not
    write the memory again from what was said before (memory.services.forgetting), and the
    summaries and titles of the conversations it came from lose it (`conversations`: False
    for a conversation's deletion, which deletes them). `vectors`: its suppression's vector,
    when the caller embedded it beforehand (suppression_vectors, with `subjects`: the
    user_subjects it was keyed with)."""
    assert memory.workspace_id == workspace.id
    written: list[Written] = []
    if actor in HAND_ACTORS:
        if subjects is None:
            subjects = user_subjects(workspace=workspace, user_id=memory.user_id)
        if vectors is None:  # embedded before the user's lock: their turns wait for it
            vectors = suppression_vectors([memory.text], subjects)
        if conversations:  # read and rewritten in memory before the lock too
            text = normalized(memory.text, subjects)
            forgetting = {text: vectors[text]} if text in vectors else {}
            written = conversations_without(
                workspace=workspace, memory=memory, forgetting=forgetting
            )
        _person_lock(workspace=workspace, memory=memory)
    # Its row first: a source an extraction run links meanwhile is either deleted with it or
    # waits and fails its own foreign key, never this deletion's commit (as workspace_delete).
    if not _lock_as_read(memory, unless_changed=unless_changed):
        return False  # deleted meanwhile: that deletion wrote the DELETE event
    memory.refresh_from_db()  # the history keeps the text deleted, not the one read
    if actor in HAND_ACTORS:  # the admin's log keeps its text as edited there (config.admin_log)
        log_entries_delete(
            model=Memory, rows=Memory.objects.filter(pk=memory.pk), keep_deletion=True
        )
    _event(
        workspace=workspace,
        memory=memory,
        event=MemoryEvent.Event.DELETE,
        old_text=memory.text,
        actor=actor,
        reason=reason,
    )
    if actor in HAND_ACTORS:
        suppression_record(workspace=workspace, memory=memory, vectors=vectors, subjects=subjects)
        conversations_rewrite(workspace=workspace, user_id=memory.user_id, written=written)
    memory.delete()
    return True


def _update_event(
    workspace: Workspace,
    memory: Memory,
    *,
    old_text: str,
    actor: str,
    reason: str,
    source_ids: list[str],
    changed: dict,
) -> MemoryEvent:
    """The history's UPDATE of one memory (memory_update's, and a run's batched supersedes')."""
    return MemoryEvent(
        workspace=workspace,
        memory_id=memory.id,
        user_id=memory.user_id,
        event=MemoryEvent.Event.UPDATE,
        old_text=old_text,
        new_text=memory.text,
        actor=actor,
        reason=reason,
        source_message_ids=source_ids,
        changes=changed,
    )


def _keep_created_at(dated: dict[str, dt.datetime], memories: list[Memory]) -> None:
    """The original times of memories just inserted (`dated`: id -> time; an import, an
    exported memory posted back): auto_now_add stamped them now, so one UPDATE after, in the
    caller's transaction."""
    if not dated:
        return
    Memory.objects.filter(pk__in=dated).update(
        created_at=Case(*(When(pk=pk, then=Value(at)) for pk, at in dated.items()))
    )
    for memory in memories:
        memory.created_at = dated.get(memory.id, memory.created_at)
