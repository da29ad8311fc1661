"""What a query's words mean to the text side of ranking, and the statistics that weigh them.

Query terms (content words, any of them), what PostgreSQL's english configuration makes of a
word, per-scope term statistics (rows, average length, document frequency of each lexeme: the
IDF of BM25 and the test for words too common to search by), and the speaker names of a user's
messages. Every cache here is a config.common.cache.TTLCache; `forget_user` drops a user's, and
`collections_changed` every process's collection statistics.
"""

from __future__ import annotations

import functools
import math
import re
import unicodedata
from dataclasses import dataclass

from django.db import connection

from config.common import coherence
from config.common.cache import TTLCache
from memory.text import nfc
from memory.words import FUNCTION_WORDS, PERSONAL_PRONOUNS

_WORD = re.compile(r"[A-Za-z0-9]+")
_SPOKEN = re.compile(r"[A-Za-z0-9']+")
_NAME = re.compile(r"\b[A-Z][a-zA-Z'-]+")


def _words(text: str, ascii_words: re.Pattern, joiners: str = "") -> list[str]:
    """The words of `text`: by `ascii_words` when it is ASCII (what the ranking was measured
    on); else runs of letters and digits of any script with their combining marks (PostgreSQL's
    parser keeps "café", "München", "日本語" and "हिन्दी" whole), joined across `joiners`.
    The ASCII patterns alone made "café" the word "caf" and dropped "日本語" or "Привет": no
    query beyond English matched a word on the full-text side, whatever the texts said."""
    if text.isascii():
        return ascii_words.findall(text)
    text = nfc(text)  # as the rows' text is indexed (memory.text.indexed)
    words, current = [], ""
    for c in text:
        if c.isalnum() or (current and (c in joiners or unicodedata.category(c)[0] == "M")):
            current += c
        elif current:
            words.append(current)
            current = ""
    if current:
        words.append(current)
    return [w.rstrip(joiners) for w in words]


# Words too common in questions to say anything about what is asked: the question's own
# ("what", "should", "any") besides the common ones
STOP_WORDS = (
    FUNCTION_WORDS
    | PERSONAL_PRONOUNS
    | {
        "what",
        "when",
        "where",
        "who",
        "whom",
        "which",
        "why",
        "how",
        "should",
        "there",
        "any",
        "some",
    }
)

COMMON_SHARE = 0.2  # a word in more than this share of the scope's rows says little
COMMON_FLOOR = 10  # ...once there are enough rows to tell

STATS_TTL = 60.0
# A user's statistics are ~250 kB at 1k memories or 700 messages; a collection's ~2 MB at 10k
# chunks, and loading them is one scan (~10 ms per user, ~0.3 s per 10k chunks), so collections
# keep theirs longer. Their rows change when a document becomes ready or is deleted, and the
# writers say so (`collections_changed`), so the TTL only bounds what a lost publish costs.
COLLECTION_STATS_TTL = 600.0
# The config.common.coherence name under which a collection's ready chunks changed.
COLLECTION_TERMS = "collection-terms"


def or_terms(text: str, *, digits: bool = False) -> str | None:
    """A raw tsquery matching any of the question's content words.

    `digits`: a lone digit is a word too. In a document it is what tells one numbered part
    from its neighbours ("code word item 5", "step 3"): without it, a query whose other words
    were in every chunk ranked by meaning alone and the chunk of item 5 came after those of
    items 31 and 11. Memories and messages were measured without it (issue 6) and keep that.
    """
    words = [
        w.lower()
        for w in _words(text, _WORD)
        if w.lower() not in STOP_WORDS and (len(w) > 1 or (digits and w.isdigit()))
    ]
    if not words:
        return None
    return " | ".join(dict.fromkeys(words))


def named_in(query: str) -> set[str]:
    """Capitalized words of the query, lower-cased: the people a question is about."""
    if query.isascii():
        return {w.lower() for w in _NAME.findall(query)}
    return {w.lower() for w in _words(query, _NAME, "'’-") if len(w) > 1 and w[0].isupper()}


def spoken_words(query: str, *, leave_out: set[str]) -> str:
    """The query's words without `leave_out` (lower-cased names)."""
    return " ".join(w for w in _words(query, _SPOKEN, "'’") if w.lower() not in leave_out)


# --- lexemes ------------------------------------------------------------------------------------

_lexemes: TTLCache[str, tuple[str, ...]] = TTLCache(ttl=86_400.0, max_entries=50_000)

# An ASCII run of digits is one unsigned integer to PostgreSQL's parser, which the english
# configuration maps through the simple dictionary to itself ('007' is '007'; tested against
# PostgreSQL). Answered here, not cached: numbers are most of the new words a busy process
# meets (the soak's honest text brings one a turn), and each held ~363 bytes in `_lexemes`
# until its 50,000 were full, ~17 MB of a web process (bench/README, *Soak*). Longer than
# this, a run of digits is left to PostgreSQL (its parser's limits are its own).
NUMBER_DIGITS = 100


def _plain_number(word: str) -> bool:
    return word.isascii() and word.isdigit() and len(word) <= NUMBER_DIGITS


def word_lexemes(words: list[str]) -> dict[str, tuple[str, ...]]:
    """What PostgreSQL's english configuration makes of each word (none for a stop word)."""
    found: dict[str, tuple[str, ...]] = {}
    missing = []
    for word in dict.fromkeys(words):
        if _plain_number(word):
            found[word] = (word,)
            continue
        hit, lexemes = _lexemes.peek(word)
        if hit:
            found[word] = lexemes  # type: ignore[assignment]
        else:
            missing.append(word)
    if missing:  # one query for all the new words of a question
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT w, tsvector_to_array(to_tsvector('english', w)) FROM unnest(%s::text[]) w",
                [missing],
            )
            for word, lexemes in cursor.fetchall():
                found[word] = tuple(lexemes)
                _lexemes.put(word, found[word])
    return {w: found.get(w, ()) for w in words}


def query_lexemes(terms: str | None) -> list[str]:
    """The distinct lexemes of an `or_terms` query."""
    if not terms:
        return []
    lexemes = word_lexemes(terms.split(" | "))
    return list(dict.fromkeys(x for w in lexemes.values() for x in w))


# --- term statistics ----------------------------------------------------------------------------


@dataclass
class TermStats:
    """Document frequencies of a scope's indexed words, for BM25 outside one statement."""

    rows: int
    avglen: float
    df: dict[str, int]

    def idf(self, lexeme: str) -> float:
        return idf(self.df.get(lexeme, 0), self.rows)


def idf(df: int, rows: int) -> float:
    return math.log(1 + (rows - df + 0.5) / (df + 0.5))


# The rows each table's statistics count: what its searches scope to. %(owner)s is the user
# (memories, messages) or the collection (chunks, of documents that are ready).
_STATS_SCOPE = {
    "memory_message": "t.user_id = %(owner)s AND t.role IN ('user', 'assistant')",
    "memory_memory": "t.user_id = %(owner)s",
    "memory_chunk": (
        "t.collection_id = %(owner)s AND EXISTS (SELECT 1 FROM memory_document d "
        "WHERE d.id = t.document_id AND d.status = 'ready')"
    ),
}
# Two entries per active user (memories and messages, both ranked on every turn): 128 users'
# worth, ~250 kB each at 1k rows. With 128 entries, bench_memory's 100 users need 200 and a
# turn missed about a third of the time; at 256 the enrichment figures did not move measurably
# on that run (p50 24.6 -> 25.2 ms, within noise), so this is room, not a measured speed-up.
# And at most USER_STATS_WORDS words in all: an entry grows with every word its user says (a
# soak's 200 users with a new number in every statement: 0.34 -> 1.27 MB of statistics over
# 13,500 turns, bench/probe_web_rss.py), so 256 entries alone bound nothing in bytes. A word
# of a statistics' dict costs ~78 bytes (tracemalloc); 800,000 of them (~62 MB) are the 256
# entries of ~250 kB above: users of that size keep all 256, bigger ones fewer.
USER_STATS_WORDS = 800_000
_user_stats: TTLCache[tuple[str, str, str], TermStats] = TTLCache(
    ttl=STATS_TTL,
    max_entries=2 * 128,
    weigh=lambda stats: len(stats.df),
    max_weight=USER_STATS_WORDS,
)
_collection_stats: TTLCache[tuple[str, str], TermStats] = TTLCache(
    ttl=COLLECTION_STATS_TTL, max_entries=64
)


# A deleted document's words stayed in every process's statistics for ten minutes (weighing
# searches and making them drop query words as too common), a new document's were unweighed.
coherence.register(COLLECTION_TERMS, _collection_stats.clear)


def collections_changed() -> None:
    """A collection's ready chunks changed (a document ready or deleted, a collection deleted):
    every process drops its collection statistics when the current transaction commits."""
    coherence.publish(COLLECTION_TERMS)


def _load_stats(table: str, workspace_id: str, owner: str) -> TermStats:
    where = f"t.workspace_id = %(workspace)s AND {_STATS_SCOPE[table]}"
    params = {"workspace": workspace_id, "owner": owner}
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT count(*), coalesce(avg(length(t.search)), 1) FROM {table} t WHERE {where}",
            params,
        )
        rows, avglen = cursor.fetchone()
        # ts_stat counts in C what unnest + GROUP BY counted row by row (10k chunks: 190 ms
        # against 720-930 ms); it takes its query as text, so the values are quoted in SQL.
        inner = f"SELECT t.search FROM {table} t WHERE {where}".replace("%(workspace)s", "%L")
        inner = inner.replace("%(owner)s", "%L")
        cursor.execute(
            "SELECT word, ndoc FROM ts_stat(format(%(inner)s, %(workspace)s::text, %(owner)s::text))",
            {**params, "inner": inner},
        )
        df = dict(cursor.fetchall())
    return TermStats(rows, max(float(avglen), 1.0), df)


def term_stats(*, table: str = "memory_message", workspace_id: str, user_id: str) -> TermStats:
    """A user's memories or messages, cached for a minute (one scan, ~10 ms at 700 messages)."""
    return _user_stats.get(
        (table, workspace_id, user_id), lambda: _load_stats(table, workspace_id, user_id)
    )


def collection_stats(*, workspace_id: str, collection_ids: list[str]) -> TermStats:
    """The ready chunks of these collections: each collection's cached statistics, summed."""
    parts = [
        _collection_stats.get(
            (workspace_id, cid), functools.partial(_load_stats, "memory_chunk", workspace_id, cid)
        )
        for cid in dict.fromkeys(collection_ids)
    ]
    if len(parts) == 1:
        return parts[0]
    rows = sum(p.rows for p in parts)
    df: dict[str, int] = {}
    for part in parts:
        for lexeme, count in part.df.items():
            df[lexeme] = df.get(lexeme, 0) + count
    avglen = sum(p.avglen * p.rows for p in parts) / rows if rows else 1.0
    return TermStats(rows, max(avglen, 1.0), df)


def selective(terms: str | None, *, stats: TermStats) -> str | None:
    """Drop the query words that most of the scope's rows contain (their name, "like"...).

    With them, a question naming its subject would match every row that mentions the subject
    and the text scan would read them all. A word the statistics have not seen is kept: it may
    be in a row newer than they are.
    """
    if not terms:
        return None
    words = terms.split(" | ")
    if len(words) < 2 or not stats.rows:
        return terms
    limit = max(COMMON_SHARE * stats.rows, COMMON_FLOOR)
    lexemes = word_lexemes(words)
    kept = [w for w in words if lexemes[w] and min(stats.df.get(x, 0) for x in lexemes[w]) <= limit]
    return " | ".join(kept) if kept else None


def rarest(
    terms: str | None, *, stats: TermStats, rows: int, most: int | None = None
) -> str | None:
    """The rarest words of `terms` whose rows add up to about `rows` (at least one word).

    None when even the rarest word is in more than `most` rows: matching it would read them all.
    """
    if not terms:
        return None
    words = terms.split(" | ")
    lexemes = word_lexemes(words)
    df = {w: max((stats.df.get(x, 0) for x in lexemes[w]), default=0) for w in words}
    if most is not None and min(df.values()) > most:
        return None
    kept: list[str] = []
    total = 0
    for word in sorted(words, key=lambda w: df[w]):
        if kept and total + df[word] > rows:
            break
        kept.append(word)
        total += df[word]
    return " | ".join(kept)


# --- speakers -----------------------------------------------------------------------------------

_speakers: TTLCache[tuple[str, str], frozenset[str]] = TTLCache(ttl=STATS_TTL, max_entries=10_000)


def speaker_names(*, workspace_id: str, user_id: str) -> frozenset[str]:
    """The names a user's messages were said by (lower-cased), cached for a minute."""

    def load() -> frozenset[str]:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT DISTINCT lower(name) FROM memory_message "
                "WHERE workspace_id = %s AND user_id = %s AND name <> ''",
                [workspace_id, user_id],
            )
            return frozenset(row[0] for row in cursor.fetchall())

    return _speakers.get((workspace_id, user_id), load)


def forget_user(*, workspace_id: str, user_id: str) -> None:
    """Drop what this process derived from a user's rows (their erasure)."""
    _speakers.invalidate((workspace_id, user_id))
    for table in ("memory_message", "memory_memory"):
        _user_stats.invalidate((table, workspace_id, user_id))
