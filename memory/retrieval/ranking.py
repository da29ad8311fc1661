"""Hybrid retrieval of one user's memories or messages in a single SQL round trip.

The same ranking as memory.retrieval.hybrid.hybrid_search (vector and full-text candidates fused by
reciprocal rank), written as one statement for the request path: the ORM's two queries and
their compilation cost more than the scans themselves. Both scans stay exact over the user's
rows, found through the (workspace, user_id, ...) btree indexes: at 1k rows per user that is a
couple of milliseconds, while a filtered HNSW scan is slower here and loses recall. The text
match is an exact scan of the same rows, for the same reason.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from django.db import connection

from memory.retrieval.hybrid import or_terms

CANDIDATES = 50
RRF_K = 60


@dataclass
class Ranked:
    id: str
    row: dict
    similarity: float | None
    ranks: dict[str, int] = field(default_factory=dict)
    score: float = 0.0


_SQL = """
WITH vec AS (
    SELECT id, embedding <=> %(vector)s::vector AS distance
    FROM {table} t
    WHERE {scope} AND embedding IS NOT NULL AND %(has_vector)s
    ORDER BY distance
    LIMIT %(candidates)s
), txt AS (
    -- OFFSET 0 keeps the match on the user's own rows: through the GIN index, a common word
    -- would first collect its postings across every user (measured: 9 ms against 2.5 ms).
    SELECT id, ts_rank_cd(search, query) AS rank
    FROM (SELECT id, search FROM {table} t WHERE {scope} AND %(has_terms)s OFFSET 0) t,
         to_tsquery('english', %(terms)s) query
    WHERE search @@ query
    ORDER BY rank DESC
    LIMIT %(candidates)s
), ranked AS (
    SELECT id, row_number() OVER (ORDER BY distance) AS vrank, 1 - distance AS similarity,
           NULL::bigint AS trank
    FROM vec
    UNION ALL
    SELECT id, NULL, NULL, row_number() OVER (ORDER BY rank DESC) FROM txt
)
SELECT {columns}, min(r.vrank), max(r.similarity), min(r.trank)
FROM ranked r JOIN {table} t ON t.id = r.id {join}
GROUP BY {group}
"""

MEMORY_COLUMNS = [
    "id",
    "user_id",
    "text",
    "kind",
    "event_date",
    "metadata",
    "created_at",
    "updated_at",
]
MESSAGE_COLUMNS = ["id", "role", "name", "content", "created_at", "metadata", "conversation_id"]


def _run(*, table, scope, params, columns, join="", extra_columns=(), group="", query, vector):
    terms = or_terms(query) if query else None
    if terms and SELECTIVE_TERMS:
        terms = _selective(terms, table=table, scope=scope, params=params)
    select = [f"t.{c}" for c in columns] + list(extra_columns)
    sql = _SQL.format(
        table=table,
        scope=scope,
        columns=", ".join(select),
        join=join,
        group="t.id" + (f", {group}" if group else ""),
    )
    values = {
        **params,
        "vector": _literal(vector) if vector is not None else "[0]",
        "has_vector": vector is not None,
        "terms": terms or "x",
        "has_terms": terms is not None,
        "candidates": CANDIDATES,
    }
    if vector is None:
        sql = sql.replace("embedding <=> %(vector)s::vector", "0::float8")
    with connection.cursor() as cursor:
        cursor.execute(sql, values)
        rows = cursor.fetchall()
    names = [c.split(" AS ")[-1].split(".")[-1] for c in select]
    ranked = []
    for row in rows:
        data = dict(zip(names, row[: len(names)], strict=True))
        if isinstance(data.get("metadata"), str):  # Django's psycopg setup leaves jsonb as text
            data["metadata"] = json.loads(data["metadata"])
        vrank, similarity, trank = row[len(names) :]
        hit = Ranked(id=data["id"], row=data, similarity=similarity)
        if vrank is not None:
            hit.ranks["vector"] = int(vrank)
            hit.score += 1.0 / (RRF_K + vrank)
        if trank is not None:
            hit.ranks["text"] = int(trank)
            hit.score += 1.0 / (RRF_K + trank)
        ranked.append(hit)
    return ranked


SELECTIVE_TERMS = True
COMMON_SHARE = 0.2  # a word in more than this share of the user's rows says little
COMMON_FLOOR = 10  # ...once there are enough rows to tell


def _selective(terms: str, *, table: str, scope: str, params: dict) -> str | None:
    """Drop the query words that most of the user's rows contain (their name, "like"...).

    PostgreSQL's text ranking has no inverse document frequency; without this, a question
    naming its subject ranks every row that mentions the subject. The counts come from the
    user's cached term statistics (`scope` must be the user's rows of `table`).
    """
    words = terms.split(" | ")
    if len(words) < 2:
        return terms
    stats = term_stats(table=table, workspace_id=params["workspace"], user_id=params["user"])
    if not stats.rows:
        return terms
    limit = max(COMMON_SHARE * stats.rows, COMMON_FLOOR)
    lexemes = word_lexemes(words)
    # A word the statistics have not seen is kept: it may be in a row newer than they are.
    kept = [w for w in words if lexemes[w] and min(stats.df.get(x, 0) for x in lexemes[w]) <= limit]
    return " | ".join(kept) if kept else None


_lexemes: dict[str, tuple[str, ...]] = {}
LEXEME_CACHE = 50_000


def word_lexemes(words: list[str]) -> dict[str, tuple[str, ...]]:
    """What PostgreSQL's english configuration makes of each word (none for a stop word)."""
    missing = [w for w in dict.fromkeys(words) if w not in _lexemes]
    if missing:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT w, tsvector_to_array(to_tsvector('english', w)) FROM unnest(%s::text[]) w",
                [missing],
            )
            found = {w: tuple(lexemes) for w, lexemes in cursor.fetchall()}
        if len(_lexemes) > LEXEME_CACHE:
            _lexemes.clear()
        _lexemes.update(found)
    return {w: _lexemes.get(w, ()) for w in words}


def _literal(vector) -> str:
    return "[" + ",".join(f"{float(x):.7g}" for x in vector) + "]"


# A memory's source messages, oldest first, as the API shows them (same round trip).
_SOURCES = """
LEFT JOIN LATERAL (
    SELECT coalesce(json_agg(json_build_object(
        'message_id', s.id, 'conversation_id', sc.external_id,
        'created_at', floor(extract(epoch FROM s.created_at))::bigint, 'metadata', s.metadata
    ) ORDER BY s.created_at, s.id), '[]') AS sources
    FROM memory_memory_sources ms
    JOIN memory_message s ON s.id = ms.message_id
    JOIN memory_conversation sc ON sc.id = s.conversation_id
    WHERE ms.memory_id = t.id
) src ON true
"""


def memories(
    *, workspace_id: str, user_id: str, query: str, vector, with_sources: bool = False
) -> list[Ranked]:
    ranked = _run(
        table="memory_memory",
        scope="t.workspace_id = %(workspace)s AND t.user_id = %(user)s",
        params={"workspace": workspace_id, "user": user_id},
        columns=MEMORY_COLUMNS,
        join=_SOURCES if with_sources else "",
        extra_columns=["src.sources::text AS sources"] if with_sources else (),
        group="src.sources::text" if with_sources else "",
        query=query,
        vector=vector,
    )
    for hit in ranked:
        if isinstance(hit.row.get("sources"), str):
            hit.row["sources"] = json.loads(hit.row["sources"])
    return ranked


# --- past messages: BM25 over each turn's window, fused linearly with cosine similarity ----------
#
# Measured on the LoCoMo dev conversations (issue 6; bench/eval_locomo.py): a turn indexed with
# its neighbours (two before, two after for text; the turns just around it, blended into its
# vector: memory.text.context_vector) finds answers that its own words do not repeat; BM25's
# IDF beats ts_rank there (ts_rank 76 vs BM25 80 R@10 in the offline study), and a linear blend
# of normalized scores beats reciprocal-rank fusion (RRF 67 vs linear 79). The BM25 statistics
# come from the scope's own rows in the same statement: every row holding a query term matches
# the OR query, so the document frequencies over the matches are exact.

VECTOR_SHARE = 0.6  # of the blended score; the rest is BM25 normalized by the best match
SPEAKER_BOOST = 1.4  # a question that names who said it
BM25_K1, BM25_B = 1.2, 0.75
MESSAGE_CANDIDATES = 100

_MESSAGE_SQL = """
WITH q AS (
    SELECT to_tsquery('english', %(terms)s) AS query,
           tsvector_to_array(to_tsvector('english', %(words)s)) AS lexemes
), stats AS (
    SELECT count(*)::float8 AS n, greatest(avg(length(t.search)), 1)::float8 AS avglen
    FROM memory_message t WHERE {scope}
), hits AS (
    SELECT t.id, length(t.search) AS len, x.lexeme,
           coalesce(array_length(x.positions, 1), 1) AS tf
    FROM memory_message t, q, unnest(t.search) x
    WHERE {scope} AND %(has_terms)s AND t.search @@ q.query AND x.lexeme = ANY(q.lexemes)
), df AS (
    SELECT lexeme, count(*)::float8 AS df FROM hits GROUP BY lexeme
), bm AS (
    SELECT h.id,
           sum(ln(1 + (s.n - df.df + 0.5) / (df.df + 0.5)) * h.tf * ({k1} + 1)
               / (h.tf + {k1} * (1 - {b} + {b} * h.len / s.avglen))) AS bm25
    FROM hits h JOIN df USING (lexeme) CROSS JOIN stats s
    GROUP BY h.id ORDER BY bm25 DESC LIMIT %(candidates)s
), vec AS (
    SELECT t.id FROM memory_message t
    WHERE {scope} AND t.context_embedding IS NOT NULL AND %(has_vector)s
    ORDER BY t.context_embedding <=> %(vector)s::vector LIMIT %(candidates)s
), ids AS (
    SELECT id FROM bm UNION SELECT id FROM vec
)
SELECT {columns}, c.external_id,
       CASE WHEN %(has_vector)s AND t.context_embedding IS NOT NULL
            THEN 1 - (t.context_embedding <=> %(vector)s::vector) END AS similarity,
       bm.bm25
FROM ids JOIN memory_message t ON t.id = ids.id
JOIN memory_conversation c ON c.id = t.conversation_id
LEFT JOIN bm ON bm.id = t.id
"""

_NAME = re.compile(r"\b[A-Z][a-zA-Z'-]+")


_WORDS = re.compile(r"[A-Za-z0-9']+")
_speakers_cache: dict[tuple[str, str], tuple[float, set[str]]] = {}
SPEAKERS_TTL = 60.0


def speaker_names(*, workspace_id: str, user_id: str) -> set[str]:
    """The names a user's messages were said by (lower-cased), cached for a minute."""
    key = (workspace_id, user_id)
    now = time.monotonic()
    cached = _speakers_cache.get(key)
    if cached and cached[0] > now:
        return cached[1]
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT DISTINCT lower(name) FROM memory_message "
            "WHERE workspace_id = %s AND user_id = %s AND name <> ''",
            [workspace_id, user_id],
        )
        names = {row[0] for row in cursor.fetchall()}
    if len(_speakers_cache) > 10_000:
        _speakers_cache.clear()
    _speakers_cache[key] = (now + SPEAKERS_TTL, names)
    return names


def forget_user(*, workspace_id: str, user_id: str) -> None:
    """Drop what this process derived from a user's rows (their erasure)."""
    _speakers_cache.pop((workspace_id, user_id), None)
    for table in _STATS_SCOPE:
        _term_stats.pop((table, workspace_id, user_id), None)


def named_in(query: str) -> set[str]:
    """Capitalized words of the query, lower-cased: the people a question is about."""
    return {w.lower() for w in _NAME.findall(query)}


# Pseudo-relevance feedback: the words the best first-pass messages share, weighted by how rare
# they are among the user's rows, re-score the first pass's candidates by BM25 and join the blend
# at this share. LoCoMo recall@10 +0.4 to +0.7 over k = 3-8 and 5-10 terms (issue 6); new
# candidates from a second full search added nothing, so only the first pass is re-scored.
FEEDBACK_TOP = 5
FEEDBACK_TERMS = 5
FEEDBACK_SHARE = 0.3
TERM_STATS_TTL = 60.0
TERM_STATS_USERS = 128  # ~250 kB each at 1k memories or 700 messages
_SCOPE = (
    "t.workspace_id = %(workspace)s AND t.user_id = %(user)s "
    "AND t.role IN ('user', 'assistant') AND NOT (t.id = ANY(%(exclude)s))"
)


@dataclass
class TermStats:
    """Document frequencies of a user's indexed words, for BM25 outside one statement."""

    expires: float
    rows: int
    avglen: float
    df: dict[str, int]


_term_stats: OrderedDict[tuple[str, str, str], TermStats] = OrderedDict()


# The user's rows each table's statistics count (what its searches scope to).
_STATS_SCOPE = {
    "memory_message": "role IN ('user', 'assistant')",
    "memory_memory": "true",
}


def term_stats(*, table: str = "memory_message", workspace_id: str, user_id: str) -> TermStats:
    """Cached for a minute per user: one scan of the user's rows (~10 ms at 700 messages)."""
    key = (table, workspace_id, user_id)
    now = time.monotonic()
    cached = _term_stats.get(key)
    if cached and cached.expires > now:
        _term_stats.move_to_end(key)
        return cached
    where = f"t.workspace_id = %s AND t.user_id = %s AND {_STATS_SCOPE[table]}"
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT count(*), coalesce(avg(length(t.search)), 1) FROM {table} t WHERE {where}",
            [workspace_id, user_id],
        )
        rows, avglen = cursor.fetchone()
        cursor.execute(
            f"SELECT x.lexeme, count(*) FROM {table} t, unnest(t.search) x WHERE {where} "
            "GROUP BY x.lexeme",
            [workspace_id, user_id],
        )
        df = dict(cursor.fetchall())
    stats = TermStats(now + TERM_STATS_TTL, rows, max(float(avglen), 1.0), df)
    _term_stats[key] = stats
    while len(_term_stats) > TERM_STATS_USERS:
        _term_stats.popitem(last=False)
    return stats


def _message_rows(values: dict) -> list[tuple]:
    sql = _MESSAGE_SQL.format(
        scope=_SCOPE,
        columns=", ".join(f"t.{c}" for c in MESSAGE_COLUMNS),
        k1=BM25_K1,
        b=BM25_B,
    )
    if not values["has_vector"]:
        sql = sql.replace("t.context_embedding <=> %(vector)s::vector", "0::float8")
    with connection.cursor() as cursor:
        cursor.execute(sql, values)
        return cursor.fetchall()


def _blend(rows: list[tuple], names: set[str], feedback: dict[str, float]) -> list[tuple]:
    """(blended score, bm25, row) per row: cosine and normalized BM25, the speaker boost."""
    top_bm25 = max((row[-1] or 0.0 for row in rows), default=0.0) or 1.0
    name_at = MESSAGE_COLUMNS.index("name")
    out = []
    for row in rows:
        similarity, bm25 = row[-2], row[-1] or 0.0
        text = bm25 / top_bm25
        if feedback:
            text = (text + FEEDBACK_SHARE * feedback.get(row[0], 0.0)) / (1 + FEEDBACK_SHARE)
        blended = VECTOR_SHARE * (similarity or 0.0) + (1 - VECTOR_SHARE) * text
        if names and (row[name_at] or "").lower() in names:
            blended *= SPEAKER_BOOST
        out.append((blended, bm25, row))
    return out


def _feedback(
    *, workspace_id: str, user_id: str, words: str, blended: list[tuple]
) -> dict[str, float]:
    """Normalized BM25 of the candidates for the first pass's telling words."""
    best = [b[2][0] for b in sorted(blended, key=lambda b: b[0], reverse=True)[:FEEDBACK_TOP]]
    if not best:
        return {}
    stats = term_stats(workspace_id=workspace_id, user_id=user_id)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT tsvector_to_array(to_tsvector('english', content)) "
            "FROM memory_message WHERE id = ANY(%s)",
            [best],
        )
        found = [row[0] for row in cursor.fetchall()]
    skip = {x for lexemes in word_lexemes(words.split()).values() for x in lexemes}
    counts: dict[str, int] = {}
    for lexemes in found:
        for lexeme in lexemes:
            if len(lexeme) > 2 and lexeme not in skip and lexeme in stats.df:
                counts[lexeme] = counts.get(lexeme, 0) + 1
    chosen = sorted(counts, key=lambda x: (-counts[x] * _idf(stats.df[x], stats.rows), x))[
        :FEEDBACK_TERMS
    ]
    if not chosen:
        return {}
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT t.id, length(t.search), x.lexeme, "
            "coalesce(array_length(x.positions, 1), 1) "
            "FROM memory_message t, unnest(t.search) x "
            "WHERE t.id = ANY(%s) AND x.lexeme = ANY(%s)",
            [[b[2][0] for b in blended], chosen],
        )
        hits = cursor.fetchall()
    scores: dict[str, float] = {}
    for message_id, length, lexeme, tf in hits:
        norm = BM25_K1 * (1 - BM25_B + BM25_B * length / stats.avglen)
        weight = _idf(stats.df[lexeme], stats.rows) * tf * (BM25_K1 + 1) / (tf + norm)
        scores[message_id] = scores.get(message_id, 0.0) + weight
    top = max(scores.values(), default=0.0) or 1.0
    return {k: v / top for k, v in scores.items()}


def _idf(df: int, rows: int) -> float:
    return math.log(1 + (rows - df + 0.5) / (df + 0.5))


def messages(
    *,
    workspace_id: str,
    user_id: str,
    query: str,
    vector,
    exclude_ids: list[str],
    feedback: bool = False,
) -> list[Ranked]:
    # Who spoke is matched by the speaker boost; as search terms, names match nearly every
    # row of a two-person conversation and only make the text scan expensive.
    speakers = speaker_names(workspace_id=workspace_id, user_id=user_id)
    content_words = " ".join(w for w in _WORDS.findall(query or "") if w.lower() not in speakers)
    terms = or_terms(content_words) if content_words else None
    values: dict[str, Any] = {
        "workspace": workspace_id,
        "user": user_id,
        "exclude": list(exclude_ids),
        "terms": terms or "x",
        "words": (terms or "").replace("|", " "),
        "has_terms": terms is not None,
        "vector": _literal(vector) if vector is not None else "[0]",
        "has_vector": vector is not None,
        "candidates": MESSAGE_CANDIDATES,
    }
    rows = _message_rows(values)
    names = named_in(query or "")
    blended = _blend(rows, names, {})
    if feedback and rows:
        scores = _feedback(
            workspace_id=workspace_id,
            user_id=user_id,
            words=" ".join([values["words"], *speakers]),
            blended=blended,
        )
        if scores:
            blended = _blend(rows, names, scores)
    scored = []
    for score, bm25, row in blended:
        data = dict(zip(MESSAGE_COLUMNS, row[: len(MESSAGE_COLUMNS)], strict=True))
        if isinstance(data.get("metadata"), str):
            data["metadata"] = json.loads(data["metadata"])
        data["conversation_external_id"] = row[len(MESSAGE_COLUMNS)]
        hit = Ranked(id=data["id"], row=data, similarity=row[-2])
        scored.append((score, bm25, hit))
    # Express the blend as reciprocal ranks, on the scale memories' fused scores use.
    for rank, (_, _, hit) in enumerate(sorted(scored, key=lambda s: s[0], reverse=True)):
        hit.ranks["blend"] = rank + 1
        hit.score = 2.0 / (RRF_K + rank + 1)
    for rank, (_, _, hit) in enumerate(
        sorted((s for s in scored if s[1] > 0), key=lambda s: s[1], reverse=True)
    ):
        hit.ranks["text"] = rank + 1
    for rank, (_, _, hit) in enumerate(
        sorted(
            (s for s in scored if s[2].similarity is not None),
            key=lambda s: s[2].similarity or 0.0,  # None was filtered out above
            reverse=True,
        )
    ):
        hit.ranks["vector"] = rank + 1
    return [hit for _, _, hit in scored]
