"""Facts their user deleted, not written again from old words (memory.services.forgetting).

A fact matches a suppression by its normalized text, or by the cosine similarity of the two
normalized texts' vectors at or above SIMILARITY. It is skipped when every message it came
from is old for that suppression: stored before the deletion, or a resent copy of what was
said before it. A copy is a message stored after the deletion with the text of one the
deleted memory came from (by digest) or of a message of the user's stored before it, and sent
as history: another message was stored with it, after it, in the same request (a client
resending its transcript, say with a new system prompt, as a new conversation). The same words
typed again as a turn's new message are no copy: the fact is remembered again, and the
suppression lifted (the caller deletes it with its own writes).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import numpy as np

from accounts.models import Workspace
from memory.embeddings import get_embedder
from memory.models import MemorySuppression, Message
from memory.services.forgetting import content_digest, normalized, user_subjects

# Measured with the embedder (2026-12-05, again with the subject made SUBJECT), normalized
# texts: a fact about the user said by the other extractor, "alice is allergic to peanuts" /
# "user is allergic to peanuts", scored 0.738 ("alice's sister is called anna" 0.739, "alice
# lives in berlin" 0.670); with the subject made one it is the same text. A reworded fact
# scores 0.936-0.978 ("user's sister is called anna" / "user has a sister named anna" 0.936,
# "... allergic to peanuts" / "... severely allergic to peanuts" 0.978); different facts at
# most 0.898 ("moved to oslo in 2024" / "moved to oslo" 0.898, "is vegetarian" / "is vegan"
# 0.876, "user's daughter is allergic to peanuts" 0.862, "bob is allergic to peanuts" 0.727,
# "works at google" / "... as an engineer" 0.833, "a dog named rex" / "... max" 0.691,
# "allergic to peanuts" / "... to shellfish" 0.532). 0.92 sits between, above the extractor's
# own duplicate threshold (0.9): a suppression hides only what restates it. A rewording into
# a noun ("user has a peanut allergy", 0.881) is not hidden. A negation restates it too ("is
# not allergic to peanuts", 0.973): said before the deletion it stays hidden; said after, it
# is new and remembered.
SIMILARITY = 0.92
# Messages stored by one request are microseconds apart (messages_append); a turn's answer is
# stored after the upstream's, never within this.
SAME_REQUEST = dt.timedelta(milliseconds=1)


@dataclass
class Verdict:
    keep: list[bool]  # per fact: False, forgotten
    lift: set[str] = field(default_factory=set)  # suppressions said again: to delete
    seen: frozenset[str] = frozenset()  # the suppressions it was decided by


def suppressed_since(*, workspace: Workspace, user_id: str, verdict: Verdict) -> bool:
    """Whether the user deleted (or edited) a memory since the verdict was made: in a run's
    write transaction, under the user's lock, a deletion made while the model decided."""
    return (
        MemorySuppression.objects.filter(workspace=workspace, user_id=user_id)
        .exclude(id__in=verdict.seen)
        .exists()
    )


def forgotten(
    *,
    workspace: Workspace,
    user_id: str,
    facts: list[tuple[str, list[Message]]],
    guessed: frozenset[int] = frozenset(),
) -> Verdict:
    """Which of the facts (text, the messages it came from) may be written, and which
    suppressions they lift. One query when the user deleted nothing.

    `guessed`: the facts whose messages are only the ones they may have come from (a model that
    named none): said anew only if all of them were, since an old one may be what said it."""
    suppressions = list(
        MemorySuppression.objects.filter(workspace=workspace, user_id=user_id).only(
            "id", "normalized", "embedding", "source_hashes", "deleted_at"
        )
    )
    verdict = Verdict(keep=[True] * len(facts), seen=frozenset(s.id for s in suppressions))
    if not suppressions or not facts:
        return verdict
    subjects = user_subjects(workspace=workspace, user_id=user_id)
    texts = [normalized(text, subjects) for text, _ in facts]
    vectors = np.asarray(get_embedder().embed(texts), dtype=np.float32)
    known = np.zeros((len(suppressions), vectors.shape[1]), dtype=np.float32)
    for j, suppression in enumerate(suppressions):
        if suppression.embedding is not None:
            known[j] = np.asarray(suppression.embedding, dtype=np.float32)
    similarity = vectors @ known.T
    stored = [normalized(s.normalized, subjects) for s in suppressions]
    for i, (_, sources) in enumerate(facts):
        matched = [
            s
            for j, s in enumerate(suppressions)
            if stored[j] == texts[i] or similarity[i, j] >= SIMILARITY
        ]
        if not matched:
            continue
        anew = all if i in guessed else any
        if any(anew(_said_anew(message, s) for message in sources) for s in matched):
            verdict.lift.update(s.id for s in matched)
        else:
            verdict.keep[i] = False
    return verdict


def _said_anew(message: Message, suppression: MemorySuppression) -> bool:
    if message.created_at < suppression.deleted_at:
        return False
    return not (_said_before(message, suppression) and _sent_as_history(message))


def _said_before(message: Message, suppression: MemorySuppression) -> bool:
    if content_digest(message.content) in suppression.source_hashes:
        return True
    return Message.objects.filter(
        workspace_id=message.workspace_id,
        user_id=message.user_id,
        created_at__lt=suppression.deleted_at,
        content=message.content,
    ).exists()


def _sent_as_history(message: Message) -> bool:
    return Message.objects.filter(
        conversation_id=message.conversation_id,
        created_at__gt=message.created_at,
        created_at__lte=message.created_at + SAME_REQUEST,
    ).exists()
