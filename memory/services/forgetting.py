"""Forgetting: a memory its user deleted stays deleted until they say it again.

A deletion by a person (the API, the admin, a deleted conversation; not the extractor's own
DELETE or merge, not an erasure, which deletes everything) leaves a MemorySuppression: the
memory's normalized text and its vector, and digests of the messages it came from. So does a
person's edit of its text, for the text it replaces: the edit replaces the fact. The
extractor then skips a fact that matches it when the fact comes from what was said before the
deletion, or from a copy of it a client resent later (memory.forgotten).
What was written from the same messages loses the fact too, by the same test: the summaries
and titles of their conversations at once (conversations_without, conversations_rewrite), and
every summary and title made later (memory.background.summarization, .titles); and a turn
reads those messages without it when they are retrieved (memory.turn.recall._not_forgotten).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from django.db import transaction
from django.utils import timezone

from accounts.models import Workspace
from memory.embeddings import get_embedder
from memory.forgotten import (
    content_digest,
    forgotten_facts,
    normalized,
    user_subjects,
    without_forgotten,
)
from memory.models import Conversation, Memory, MemorySuppression


def suppression_vectors(
    texts: Iterable[str], subjects: frozenset[str] = frozenset()
) -> dict[str, list[float]]:
    """The vectors suppressions of `texts` would keep, by normalized text, in one embedder
    call: made before the user's lock, which a person's deletion holds (turns wait for it).

    Not the memory's own vector: that one embeds its search text, dated ("[2 January 2026]
    User lives in Paris."), and the date moves a comparison past the threshold both ways
    (measured 2026-12-05: a reworded fact dated months apart 0.891, different facts dated
    alike 0.913, where their normalized texts score 0.943 and 0.833). `subjects`:
    user_subjects of their user."""
    keys = list(dict.fromkeys(normalized(text, subjects) for text in texts))
    if not keys:
        return {}
    return dict(zip(keys, get_embedder().embed(keys).tolist(), strict=True))


def suppression_record(
    *,
    workspace: Workspace,
    memory: Memory,
    text: str | None = None,
    vectors: Mapping[str, list[float]] | None = None,
    subjects: frozenset[str] | None = None,
) -> MemorySuppression:
    """Called by memory_delete for a person's deletion, before the memory's row goes, and by
    memory_update for a person's edit (`text`: the one replaced). `vectors`: of
    suppression_vectors, made beforehand; a text missing there is embedded now. `subjects`:
    the user_subjects those vectors were keyed with (read again when not given)."""
    sources = list(memory.sources.filter(role="user").values_list("id", "content"))
    if subjects is None:
        subjects = user_subjects(workspace=workspace, user_id=memory.user_id)
    text = normalized(memory.text if text is None else text, subjects)
    vector = (vectors or {}).get(text)
    return MemorySuppression.objects.create(
        workspace=workspace,
        user_id=memory.user_id,
        memory_id=memory.id,
        normalized=text,
        embedding=vector if vector is not None else get_embedder().embed_one(text),
        source_message_ids=[i for i, _ in sources],
        source_hashes=sorted({content_digest(c) for _, c in sources if c.strip()}),
        deleted_at=timezone.now(),
    )


@transaction.atomic(savepoint=False)
def suppressions_lift(*, workspace: Workspace, user_id: str, ids: Iterable[str]) -> int:
    """The user said the fact again after deleting it: it may be remembered again."""
    ids = list(ids)
    if not ids:
        return 0
    return MemorySuppression.objects.filter(
        workspace=workspace, user_id=user_id, id__in=ids
    ).delete()[0]


@dataclass(frozen=True)
class Written:
    """A conversation's summary and title as read, and as they are without a forgotten fact."""

    conversation_id: str
    summary: str
    title: str
    new_summary: str
    new_title: str


def conversations_without(
    *, workspace: Workspace, memory: Memory, forgetting: Mapping[str, list[float]]
) -> list[Written]:
    """Before the user's lock: the summaries and titles of the conversations the memory's
    messages are in, without the facts being forgotten (`forgetting`: their normalized texts'
    vectors, as suppression_vectors makes them) nor those forgotten before. Both were written
    from the same messages and still said the fact to the model (the summary) and to anyone
    listing the conversations (the title: its first message's words)."""
    return conversations_without_all(
        workspace=workspace,
        user_id=memory.user_id,
        memory_ids=[memory.id],
        forgetting=forgetting,
    )


def conversations_without_all(
    *,
    workspace: Workspace,
    user_id: str,
    memory_ids: list[str],
    forgetting: Mapping[str, list[float]],
) -> list[Written]:
    """conversations_without for several memories of one user at once (a batch of
    memory.services.memories_bulk.memories_delete): their conversations read and rewritten
    once, not once per memory."""

    sources = Memory.sources.through.objects.filter(memory_id__in=memory_ids)
    rows = list(
        Conversation.objects.filter(
            workspace=workspace, pk__in=sources.values("message__conversation_id")
        )
        .exclude(summary="", title="")
        .values_list("pk", "summary", "title")
    )
    if not rows:
        return []
    forgotten = forgotten_facts(workspace=workspace, user_id=user_id, adding=forgetting)
    new = without_forgotten(forgotten, [s for _, s, _ in rows] + [t for _, _, t in rows])
    return [
        Written(pk, summary, title, new[i], new[len(rows) + i])
        for i, (pk, summary, title) in enumerate(rows)
    ]


def conversations_rewrite(*, workspace: Workspace, user_id: str, written: list[Written]) -> None:
    """Under the user's lock, after the suppression is recorded: conversations_without's
    summaries and titles written. One changed since it was read (a summary job wrote
    meanwhile) is read again and done again (embedded under the lock: only in that race). A
    title left empty is made again in the background, from the first words not forgotten
    (memory.background.titles)."""

    if not written:
        return
    now = {
        pk: (summary, title)
        for pk, summary, title in Conversation.objects.filter(
            pk__in=[w.conversation_id for w in written]
        ).values_list("pk", "summary", "title")
    }
    for w in written:
        if w.conversation_id not in now:
            continue
        summary, title = now[w.conversation_id]
        if (summary, title) == (w.summary, w.title):
            new_summary, new_title = w.new_summary, w.new_title
        else:
            forgotten = forgotten_facts(workspace=workspace, user_id=user_id)
            new_summary, new_title = without_forgotten(forgotten, [summary, title])
        if (new_summary, new_title) == (summary, title):
            continue
        Conversation.objects.filter(pk=w.conversation_id).update(
            summary=new_summary, title=new_title
        )
        if title and not new_title:
            _title_again(w.conversation_id)


def _title_again(conversation_id: str) -> None:
    from config.celery import send
    from memory.background.titles import title_conversation

    transaction.on_commit(
        lambda: send(title_conversation, conversation_id, then="the next turn asks again")
    )
