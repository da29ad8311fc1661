"""Facts their user deleted, not written again from old words (memory.services.forgetting),
nor left in what was written from those words: a conversation's summary and title
(`without_forgotten`, the same test).

A fact matches a suppression by its normalized text, or by the cosine similarity of the two
normalized texts' vectors at or above SIMILARITY. It is skipped when every message it came
from is old for that suppression: stored before the deletion, or a resent copy of what was
said before it. A copy is a message stored after the deletion with the text of one the
deleted memory came from (by digest) or of a message of the user's stored before it, and sent
as history: another message was stored with it, after it, in the same request (a client
resending its transcript, say with a new system prompt, as a new conversation). The same words
typed again as a turn's new message are no copy: the fact is remembered again, and the
suppression lifted (the caller deletes it with its own writes).

Read by the services that forget (memory.services.forgetting writes the suppressions, in the
normalized form kept here), by the workers that write from old words (extraction, summaries,
titles) and by a turn's recall: it stands below them all, and imports none of them.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from django.db import connection
from django.utils import timezone

from accounts.models import Workspace
from config.common import rows
from memory.embeddings import get_embedder
from memory.models import MemorySuppression, Message
from memory.text import nfc

_SPACE = re.compile(r"\s+")
# The one subject a fact about the user is compared with. The offline extractor writes "User
# lives in Paris."; the model writes the name it read in the transcript ("Alice: ...", a
# message's `name`), or the user's id, or "The user": "Alice lives in Paris." scored 0.738
# against "User lives in Paris." and a deleted fact came back from the other extractor.
SUBJECT = "user"


def user_subjects(*, workspace: Workspace, user_id: str) -> frozenset[str]:
    """What a fact may call the user by, lower-cased: their id and the names their own
    messages were sent with (never an assistant's)."""
    names = (
        Message.objects.filter(workspace=workspace, user_id=user_id, role="user")
        .exclude(name="")
        .values_list("name", flat=True)
        .distinct()
    )
    return frozenset(_SPACE.sub(" ", n).strip().lower() for n in [user_id, *names] if n.strip())


def normalized(text: str, subjects: frozenset[str] = frozenset()) -> str:
    """A fact's text as suppressions compare it: case, spacing and end punctuation aside, and
    its leading subject, when it is the user (one of `subjects`, "user", "the user"), SUBJECT."""
    text = _SPACE.sub(" ", nfc(text)).strip().rstrip(".!?;: ").lower()
    for name in sorted({"the user", SUBJECT, *subjects}, key=len, reverse=True):
        rest = text[len(name) :]
        if text.startswith(name) and (not rest or rest[0] in " '’"):
            return SUBJECT + rest
    return text


def content_digest(content: str) -> str:
    """A message's text as a resent copy is recognized by (spacing at its ends aside)."""
    return hashlib.sha256(content.strip().encode()).hexdigest()[:32]


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
# a noun ("user has a peanut allergy", 0.881) is not hidden as a fact extracted again (as a
# summary's sentence it is: rewording.reworded). A negation restates it too ("is
# not allergic to peanuts", 0.973): said before the deletion it stays hidden; said after, it
# is new and remembered.
SIMILARITY = 0.92
# Messages stored by one request are microseconds apart (messages_append); a turn's answer is
# stored after the upstream's, never within this.
SAME_REQUEST = dt.timedelta(milliseconds=1)
# A summary's or title's write that finds the user forgot something since it was checked is
# checked again, at most this many times (each deletion is a person's).
WRITE_TRIES = 3


@dataclass
class Verdict:
    keep: list[bool]  # per fact: False, forgotten
    lift: set[str] = field(default_factory=set)  # suppressions said again: to delete
    seen: frozenset[str] = frozenset()  # the suppressions it was decided by


def suppressed_since(*, workspace: Workspace, user_id: str, seen: frozenset[str]) -> bool:
    """Whether the user deleted (or edited) a memory since the suppressions `seen` were read
    (a Verdict's, a Forgotten's): in a run's write transaction, under the user's lock, a
    deletion made while the model decided."""
    return (
        MemorySuppression.objects.filter(workspace=workspace, user_id=user_id)
        .exclude(id__in=seen)
        .exists()
    )


def _matched(
    texts: list[str], vectors: np.ndarray, known: list[str], known_vectors: np.ndarray
) -> np.ndarray:
    """texts x known: whether each normalized text states each forgotten one (the same
    normalized text, or their vectors' cosine similarity at or above SIMILARITY)."""
    same = np.array([[text == k for k in known] for text in texts], dtype=bool)
    return same.reshape(len(texts), len(known)) | (vectors @ known_vectors.T >= SIMILARITY)


def _vectors(rows: Sequence[list[float] | np.ndarray | None], dimensions: int) -> np.ndarray:
    known = np.zeros((len(rows), dimensions), dtype=np.float32)
    for j, vector in enumerate(rows):
        if vector is not None:
            known[j] = np.asarray(vector, dtype=np.float32)
    return known


# The user's suppressions as `forgotten` reads them, in a statement written once: the queryset
# was built and compiled again on every extraction run (~1.75 ms of a lone turn's job under
# cProfile, with its suppressions_lift; bench/README.md "Twenty-fifth session").
# Several users' at once (suppressions_of): a run of many users' turns read them one
# statement a user.
_SUPPRESSIONS = """
SELECT {columns} FROM memory_memorysuppression
WHERE memory_memorysuppression.workspace_id = %s
AND memory_memorysuppression.user_id = ANY(%s::varchar[])
"""
_SUPPRESSION_READ = ("id", "user_id", "normalized", "embedding", "source_hashes", "deleted_at")
_SUPPRESSIONS_SQL: list[tuple[str, tuple[str, ...]]] = []  # the statement, the fields deferred


def _suppressions(*, workspace: Workspace, user_id: str) -> list[MemorySuppression]:
    """MemorySuppression.objects.filter(workspace, user_id).only(*_SUPPRESSION_READ)."""
    return suppressions_of(workspace=workspace, user_ids=[user_id]).get(user_id, [])


def suppressions_of(
    *, workspace: Workspace, user_ids: Sequence[str]
) -> dict[str, list[MemorySuppression]]:
    """_suppressions of each of the users (those with none left out), in one statement: what
    `forgotten` is given as `suppressions`."""
    if not user_ids:
        return {}
    if not _SUPPRESSIONS_SQL:
        deferred = tuple(
            f.attname
            for f in MemorySuppression._meta.concrete_fields
            if f.attname not in _SUPPRESSION_READ
        )
        columns = rows.columns(MemorySuppression, without=deferred)
        _SUPPRESSIONS_SQL.append((_SUPPRESSIONS.format(columns=columns), deferred))
    sql, without = _SUPPRESSIONS_SQL[0]
    with connection.cursor() as cursor:
        cursor.execute(sql, [workspace.id, list(user_ids)])
        found = cursor.fetchall()
    by_user: dict[str, list[MemorySuppression]] = {}
    for row in found:
        suppression = rows.instance(MemorySuppression, row, without=without)
        by_user.setdefault(suppression.user_id, []).append(suppression)
    return by_user


def forgotten(
    *,
    workspace: Workspace,
    user_id: str,
    facts: list[tuple[str, list[Message]]],
    guessed: frozenset[int] = frozenset(),
    suppressions: list[MemorySuppression] | None = None,
) -> Verdict:
    """Which of the facts (text, the messages it came from) may be written, and which
    suppressions they lift. One query when the user deleted nothing.

    `guessed`: the facts whose messages are only the ones they may have come from (a model that
    named none): said anew only if all of them were, since an old one may be what said it.
    `suppressions`: the user's, read in the caller's transaction since its last change to them
    (suppressions_of), else read here."""
    if suppressions is None:
        suppressions = _suppressions(workspace=workspace, user_id=user_id)
    verdict = Verdict(keep=[True] * len(facts), seen=frozenset(s.id for s in suppressions))
    if not suppressions or not facts:
        return verdict
    subjects = user_subjects(workspace=workspace, user_id=user_id)
    texts = [normalized(text, subjects) for text, _ in facts]
    vectors = np.asarray(get_embedder().embed(texts), dtype=np.float32)
    known = _vectors([s.embedding for s in suppressions], vectors.shape[1])
    stored = [normalized(s.normalized, subjects) for s in suppressions]
    matches = _matched(texts, vectors, stored, known)
    for i, (_, sources) in enumerate(facts):
        matched = [s for j, s in enumerate(suppressions) if matches[i, j]]
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


@dataclass(frozen=True)
class Forgotten:
    """A user's forgotten facts (their suppressions' normalized texts and vectors), as a text
    written from their words is compared with them (`without_forgotten`)."""

    workspace: Workspace
    user_id: str
    texts: list[str]  # normalized, as recorded (without_forgotten reads the user's subjects)
    vectors: list[list[float] | None]
    seen: frozenset[str]  # the suppressions read (suppressed_since)
    # the messages their memories came from, by id and by digest (a copy resent): said_it
    sources: frozenset[str] = frozenset()
    digests: frozenset[str] = frozenset()

    def __bool__(self) -> bool:
        return bool(self.texts)

    def said_it(self, message: Message) -> bool:
        """Whether a forgotten memory came from the message, or from a message of the same
        words (content_digest)."""
        return message.id in self.sources or content_digest(message.content) in self.digests


def forgotten_facts(
    *, workspace: Workspace, user_id: str, adding: Mapping[str, list[float]] | None = None
) -> Forgotten:
    """The user's forgotten facts: one query. `adding`: facts being forgotten now, not yet
    recorded (normalized text: its vector)."""
    rows = list(
        MemorySuppression.objects.filter(workspace=workspace, user_id=user_id).values_list(
            "id", "normalized", "embedding", "source_message_ids", "source_hashes"
        )
    )
    known = [(row[1], row[2]) for row in rows] + list((adding or {}).items())
    return Forgotten(
        workspace,
        user_id,
        [text for text, _ in known],
        [vector for _, vector in known],
        frozenset(row[0] for row in rows),
        frozenset(i for row in rows for i in row[3]),
        frozenset(h for row in rows for h in row[4]),
    )


# A line of a summary (or a transcript) may start with a list mark, a date in parentheses and
# its speaker: "- (3 December 2026) User: User is allergic to peanuts." (summarization's
# extractive lines and transcripts; a speaker only after a date, not any text before a colon).
_LINE_HEAD = re.compile(r"\s*(?:[-*\u2022]\s+)?(?:\([^)\n]{1,40}\)\s*(?:([^:\n]{1,60}):\s+)?)?")
# A sentence, or a clause after a semicolon: "User likes tea; she is allergic to peanuts." loses
# the allergy, not the tea
_SENTENCE_END = re.compile(r"(?<=[.!?;])\s+")


def without_forgotten(
    forgotten: Forgotten, texts: Sequence[str], *, speakers: Sequence[str | None] | None = None
) -> list[str]:
    """Each text (a summary, a title, a message's words) without its sentences (and clauses
    after a semicolon) that state a forgotten fact: by the sentence itself ("Alice is allergic
    to peanuts.") or by a fact the offline extractor draws from it ("I am allergic to peanuts."
    said by the user), under the test the extractor's facts pass (`_matched`); or by the
    sentence in other words ("They mentioned a peanut allergy.", rewording.reworded), its
    leading pronoun read as whom it names (rewording.read_in_turn). A line left empty goes.

    `speakers`: who said each text (the subject of its "I"); None, each line may name its own
    after a date ("- (3 May 2026) User: ..."), else the user. One embedder call for them all;
    none when the user forgot nothing."""
    from memory.background.extraction import offline, rewording

    if not forgotten or not texts:
        return list(texts)
    # read here, not with the facts: a turn reads them for every retrieval, and a user's
    # subjects (the names of all their messages) only when a message is to be read this way
    subjects = user_subjects(workspace=forgotten.workspace, user_id=forgotten.user_id)
    today = timezone.now().date()
    # per text, its lines: (head kept as written, sentences, each sentence's keys)
    parsed: list[list[tuple[str, list[str], list[list[str]]]]] = []
    keys: dict[str, int] = {}
    sentence_of: dict[str, str] = {}  # a sentence's key: the sentence (rewording.reworded)
    for n, text in enumerate(texts):
        lines = []
        for line in text.split("\n"):
            head = _LINE_HEAD.match(line) if speakers is None else None
            who = head.group(1) if head and head.group(1) else None
            if speakers is not None:
                who = speakers[n]
            start = head.end() if head else 0
            sentences = [s for s in _SENTENCE_END.split(line[start:]) if s.strip()]
            said = []
            for sentence, read in zip(
                sentences, rewording.read_in_turn(sentences, subjects), strict=True
            ):
                facts = offline.extract(sentence, subject=who or "User", today=today)
                itself = normalized(read, subjects)
                said.append([itself, *(normalized(f.text, subjects) for f in facts)])
                sentence_of.setdefault(itself, read)
                for key in said[-1]:
                    keys.setdefault(key, len(keys))
            lines.append((line[:start], sentences, said))
        parsed.append(lines)
    if not keys:
        return list(texts)
    vectors = np.asarray(get_embedder().embed(list(keys)), dtype=np.float32)
    known = _vectors(forgotten.vectors, vectors.shape[1])
    known_texts = [normalized(text, subjects) for text in forgotten.texts]
    matched = _matched(list(keys), vectors, known_texts, known)
    rows = [keys[key] for key in sentence_of]
    matched[rows] |= rewording.reworded(
        list(sentence_of.values()), vectors[rows], known_texts, known, subjects
    )
    stated = {key for key, i in keys.items() if matched[i].any()}
    out = []
    for text, lines in zip(texts, parsed, strict=True):
        written = []
        for line, (lead, sentences, said) in zip(text.split("\n"), lines, strict=True):
            kept = [stated.isdisjoint(its_keys) for its_keys in said]
            if all(kept):
                written.append(line)  # as it was
            elif any(kept):
                written.append(lead + _joined(sentences, kept))
        out.append("\n".join(written))
    return out


def _joined(sentences: list[str], kept: list[bool]) -> str:
    """The kept sentences and clauses of a line, a clause whose next one went ending its
    sentence ("User likes tea." of "User likes tea; she is allergic to peanuts.")."""
    out: list[str] = []
    for n, sentence in enumerate(sentences):
        if not kept[n]:
            continue
        if out and not kept[n - 1] and out[-1].endswith(";"):
            out[-1] = out[-1][:-1] + "."
        if (not out or out[-1].endswith((".", "!", "?"))) and sentence[:1].islower():
            sentence = sentence[0].upper() + sentence[1:]
        out.append(sentence)
    if out[-1].endswith(";"):
        out[-1] = out[-1][:-1] + "."
    return " ".join(out)
