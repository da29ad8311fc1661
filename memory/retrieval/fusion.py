"""The one ranking of everything recalled: cosine similarity blended with normalized BM25.

Memories, past messages and knowledge chunks are each ranked by one SQL statement built here:
the scope's nearest rows by cosine distance (an exact scan over the scope, found through its
btree index: at 1k rows per user a few ms, while a filtered HNSW scan loses recall; a large
collection's chunks go through their graph index instead, see memory.retrieval.chunks) and its best rows by BM25 over the query's content words, with IDF and average
length from the scope's cached term statistics (memory.retrieval.terms); then, here in Python,

    score = share * cosine + (1 - share) * bm25 / best bm25 of the candidates

with a vector share per source, a small recency term for what a user said, and a weight per
source where memories and messages meet in one list. Measured on the LoCoMo dev conversations
(issue 6; bench/eval_locomo.py): BM25's IDF beats PostgreSQL's ts_rank (76 vs 80 R@10 offline)
and this linear blend of normalized scores beats reciprocal-rank fusion (67 vs 79).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from operator import attrgetter

import psycopg
from django.db import connection

from config.common.statements import ranking_cursor
from memory.retrieval.terms import TermStats, query_lexemes

# Vector share of the blend, per source (the rest is BM25 normalized by the best candidate).
MESSAGE_VECTOR_SHARE = 0.6  # LoCoMo offline study, issue 6
MEMORY_VECTOR_SHARE = 0.6
CHUNK_VECTOR_SHARE = 0.6
# Where memories and messages meet (memory.retrieval.search.search): a memory restates what its
# source messages said (offline extraction: nearly word for word), so it takes a message's place
# only when it ranks clearly higher.
MEMORY_WEIGHT = 0.85
# A small term for what was said lately, on the blend's scale: it breaks near-ties only.
RECENCY_SHARE = 0.02
# Below this, a hit with no word in common with the query is noise, whatever its rank.
MIN_SIMILARITY = 0.15
BM25_K1, BM25_B = 1.2, 0.75
CANDIDATES = 50  # per side (vector, text) and per statement
MESSAGE_CANDIDATES = 100  # a message is short: more of them to blend


@dataclass
class Ranked:
    """A row with its two scores, its blended score and its rank on each side."""

    id: str
    row: dict
    similarity: float | None
    bm25: float = 0.0
    ranks: dict[str, int] = field(default_factory=dict)
    score: float = 0.0
    # kept only as one of this many nearest by meaning (with_recency's keep_best): neither a
    # word match nor above the similarity floor
    kept_nearest: int = 0


# {rows} is the scope's rows with id and search (a table, or a fenced subquery of it), {scope}
# a condition on alias t; the statement returns {columns}, similarity, bm25.
_SQL = """
WITH q AS (
    SELECT * FROM unnest(%(lexemes)s::text[], %(idfs)s::float8[]) AS q(lexeme, idf)
), bm AS (
    SELECT t.id,
           sum(q.idf * x.tf * ({k1} + 1)
               / (x.tf + {k1} * (1 - {b} + {b} * length(t.search) / %(avglen)s::numeric))) AS bm25
    FROM {rows},
         -- only the query's lexemes of each row (marked A, then kept): unnesting every lexeme
         -- of every match cost 130 of 220 ms over 2.4k matching chunks
         LATERAL (SELECT lexeme, coalesce(array_length(positions, 1), 1) AS tf
                  FROM unnest(ts_filter(setweight(t.search, 'A', %(lexemes)s::text[]), '{{a}}'))
         ) x
    JOIN q ON q.lexeme = x.lexeme
    WHERE {text_scope}%(has_terms)s AND t.search @@ to_tsquery('english', %(terms)s)
    GROUP BY t.id ORDER BY bm25 DESC LIMIT %(candidates)s
), vec AS (
    SELECT t.id FROM {table} t
    WHERE {scope} AND t.{vector} IS NOT NULL AND %(has_vector)s
    ORDER BY t.{vector} <=> %(vector)s::vector LIMIT %(candidates)s
), ids AS (
    SELECT id FROM bm UNION SELECT id FROM vec
)
SELECT {columns},
       CASE WHEN %(has_vector)s AND t.{vector} IS NOT NULL
            THEN 1 - (t.{vector} <=> %(vector)s::vector) END AS similarity,
       coalesce(bm.bm25, 0) AS bm25
FROM ids JOIN {table} t ON t.id = ids.id LEFT JOIN bm ON bm.id = t.id {joins}
"""


def statement(
    *,
    table: str,
    scope: str,
    columns: list[str],
    joins: str = "",
    vector: str = "embedding",
    text_rows: str | None = None,
    text_scope: str | None = None,
) -> str:
    """The ranking statement of one source.

    By default the text side reads `table` under `scope`; `text_rows` (a subquery with id and
    search, alias t, fenced by OFFSET 0) and `text_scope` (checked on its rows) replace them
    where the planner would otherwise pick a worse plan: see memories and chunks.
    """
    if text_rows is None:
        text_rows, text_scope = f"{table} t", scope
    return _SQL.format(
        rows=text_rows,
        text_scope=f"{text_scope} AND " if text_scope else "",
        table=table,
        scope=scope,
        columns=", ".join(columns),
        joins=joins,
        vector=vector,
        k1=BM25_K1,
        b=BM25_B,
    )


def run(
    sql: str,
    params: dict,
    *,
    terms: str | None,
    stats: TermStats,
    vector,
    candidates: int = CANDIDATES,
    match: str | None = None,
) -> list[tuple]:
    """Rows of `statement`: its columns, then similarity and bm25.

    BM25 scores the words of `terms`; the text side's candidates are the rows holding any word
    of `match` (by default the same words).
    """
    lexemes = query_lexemes(terms)
    match = match or terms
    values = {
        **params,
        "terms": match or "x",
        "has_terms": bool(terms and lexemes),
        "lexemes": lexemes,
        "idfs": [stats.idf(x) for x in lexemes],
        # as the text a literal had (Django wrote it into the statement): the length
        # normalization runs in numeric, as before; bound as a float8 it ran in float8, and
        # the scores changed in their last bits (bench/README.md, "BM25 in float8")
        "avglen": str(stats.avglen),
        "vector": literal(vector) if vector is not None else "[0]",
        "has_vector": vector is not None,
        "candidates": candidates,
    }
    if vector is None:  # '[0]' has no dimension to compare with
        sql = _DISTANCE.sub("0::float8", sql)
    with ranking_cursor() as cursor:
        native_timestamps(cursor)
        cursor.execute(sql, values)
        return cursor.fetchall()


_DISTANCE = re.compile(r"t\.\w+ <=> %\(vector\)s::vector")
_TIMESTAMPTZ = psycopg.adapters.get_loader(
    psycopg.adapters.types["timestamptz"].oid, psycopg.pq.Format.TEXT
)


def native_timestamps(cursor) -> None:
    """This cursor's timestamps read by psycopg's own loader (in C with psycopg[binary]).

    Django's loader is that class's pure-Python base plus a `replace(tzinfo=UTC)`: 1.3 ms per
    300 timestamps against 0.1, and a search reads ~290 (every candidate's created_at, a
    memory's updated_at too). Both give the same UTC datetimes: Django sets the session's
    TimeZone to its own (UTC), which psycopg's loader follows.
    """
    if connection.timezone_name == "UTC":
        cursor.cursor.adapters.register_loader("timestamptz", _TIMESTAMPTZ)


def literal(vector) -> str:
    """pgvector's text of the query vector. A turn ranks memories and past messages with the
    same vector (two statements, two threads): its text is made once, the second a cache hit
    (14 against 221 µs on a loaded machine; bench/README.md, "Thirty-second session")."""
    return _literal(tuple(vector))


@lru_cache(maxsize=16)
def _literal(values: tuple[float, ...]) -> str:
    # str.format by map: the same text as an f-string with float() per value, in a third of the
    # time (384 values: 0.6 against 0.23 ms)
    return "[" + ",".join(map("{:.7g}".format, values)) + "]"


def blend(
    hits: list[Ranked],
    *,
    vector_share: float,
    feedback: dict[str, float] | None = None,
    feedback_share: float = 0.0,
    boosted: set[str] | None = None,
    boost: float = 1.0,
) -> list[Ranked]:
    """Score each hit (cosine and normalized BM25), rank it on each side; best first.

    `feedback` (normalized scores by id) joins the text side at `feedback_share`; hits whose
    id is in `boosted` are multiplied by `boost`.
    """
    top = max((h.bm25 for h in hits), default=0.0) or 1.0
    text_share = 1 - vector_share
    for hit in hits:
        text = hit.bm25 / top
        if feedback:
            text = (text + feedback_share * feedback.get(hit.id, 0.0)) / (1 + feedback_share)
        hit.score = vector_share * (hit.similarity or 0.0) + text_share * text
        if boosted and hit.id in boosted:
            hit.score *= boost
    # One sort by score gives both the blend ranks and the order returned; the sides are ranked
    # on what they count (a stable sort each, as before). ~0.5 ms of Python per search saved.
    ordered = _rank(hits, "blend", _SCORE)
    _rank([h for h in hits if h.bm25 > 0], "text", _BM25)
    _rank([h for h in hits if h.similarity is not None], "vector", _SIMILARITY)
    return ordered


_SCORE, _BM25, _SIMILARITY = attrgetter("score"), attrgetter("bm25"), attrgetter("similarity")


def _rank(hits: list[Ranked], side: str, key) -> list[Ranked]:
    ordered = sorted(hits, key=key, reverse=True)
    for rank, hit in enumerate(ordered, 1):
        hit.ranks[side] = rank
    return ordered


def with_recency(
    hits: list[Ranked], *, when: str, min_similarity: float, keep_best: int = 0
) -> list[Ranked]:
    """Add the recency term, drop what is neither a word match nor close enough; best first.

    `keep_best`: the nearest few by cosine stay whatever their similarity, so a paraphrase
    sharing no word with the one memory that answers it ("What should I avoid eating?" and
    "User is allergic to peanuts.": cosine 0.19 with MiniLM) is not lost to a fixed threshold
    when nothing else matches.
    """
    by_age = sorted(hits, key=lambda h: h.row[when], reverse=True)
    count = len(by_age)
    for rank, hit in enumerate(by_age):
        hit.ranks["recency"] = rank + 1
        hit.score += RECENCY_SHARE * (1 - rank / count)
    nearest = (
        {h.id for h in sorted(hits, key=lambda h: -(h.similarity or 0.0))[:keep_best]}
        if keep_best
        else set()
    )
    kept = []
    for h in hits:
        if h.bm25 > 0 or (h.similarity or 0.0) >= min_similarity:
            kept.append(h)
        elif h.id in nearest:
            h.kept_nearest = keep_best
            kept.append(h)
    return sorted(kept, key=_SCORE, reverse=True)


def shown_score(score: float, *, digits: int = 6) -> float:
    """A ranking score as an answer shows it, in [0, 1] as the README says, at every door
    (/v1/search, /v1/memories/search, /v1/collections/search). The blend ranks on the raw
    value, which leaves that range: a chunk or a kept-nearest memory of negative cosine and no
    shared word scored -0.0065 at /v1/search, recency and a speaker's boost add on top of 1."""
    return round(min(max(score, 0.0), 1.0), digits)
