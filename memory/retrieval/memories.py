"""One user's memories, ranked by the blend (memory.retrieval.fusion) in one SQL round trip.

BM25 weighs the query's words by the user's cached memory statistics, after the words most of
the user's memories contain are dropped (terms.selective): PostgreSQL's text matching has no
IDF, and without it a question naming its subject would match every memory about the subject.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence

from memory.retrieval import fusion, terms

COLUMNS = ["id", "user_id", "text", "kind", "event_date", "metadata", "created_at", "updated_at"]
_SCOPE = "t.workspace_id = %(workspace)s AND t.user_id = %(user)s"

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


def ranked(
    *,
    workspace_id: str,
    user_id: str,
    query: str,
    vector,
    with_sources: bool = False,
    metadata: dict | None = None,
    kinds: Sequence[str] = (),
    created_from: dt.datetime | None = None,
    created_until: dt.datetime | None = None,
) -> list[fusion.Ranked]:
    """The candidates, blended and ranked on each side, best first. `metadata`: only memories
    whose metadata contains it, in the scope of both sides (not after their candidates are
    cut: a memory it keeps may rank below 50 that it leaves out); `kinds`, `created_from` and
    `created_until` alike."""
    scope = _SCOPE
    if metadata:
        scope += " AND t.metadata @> %(metadata)s::jsonb"
    if kinds:
        scope += " AND t.kind = ANY(%(kinds)s::varchar[])"
    if created_from is not None:
        scope += " AND t.created_at >= %(created_from)s"
    if created_until is not None:
        scope += " AND t.created_at < %(created_until)s"
    columns = [f"t.{c}" for c in COLUMNS]
    if with_sources:
        columns.append("src.sources::text AS sources")
    sql = fusion.statement(
        table="memory_memory",
        scope=scope,
        columns=columns,
        joins=_SOURCES if with_sources else "",
        # OFFSET 0 keeps the text match on the user's own rows: through the GIN index, a common
        # word would first collect its postings across every user (measured: 9 ms against 2.5).
        text_rows=f"(SELECT t.id, t.search FROM memory_memory t WHERE {scope} OFFSET 0) t",
    )
    stats = terms.term_stats(table="memory_memory", workspace_id=workspace_id, user_id=user_id)
    rows = fusion.run(
        sql,
        {
            "workspace": workspace_id,
            "user": user_id,
            "metadata": json.dumps(metadata or {}),
            "kinds": list(kinds),
            "created_from": created_from,
            "created_until": created_until,
        },
        terms=terms.selective(terms.or_terms(query or ""), stats=stats),
        stats=stats,
        vector=vector,
    )
    names = [*COLUMNS, "sources"] if with_sources else COLUMNS
    hits = []
    for row in rows:
        # metadata and sources stay JSON text (Django's psycopg setup leaves json as text): a
        # search keeps `limit` of ~90 candidates and parses theirs (parsed_row)
        data = dict(zip(names, row[: len(names)], strict=True))
        hits.append(fusion.Ranked(data["id"], data, similarity=row[-2], bm25=row[-1]))
    return fusion.blend(hits, vector_share=fusion.MEMORY_VECTOR_SHARE)


def parsed_row(row: dict) -> dict:
    """A ranked row with its metadata and sources parsed."""
    data = dict(row)
    for key in ("metadata", "sources"):
        if isinstance(data.get(key), str):
            data[key] = json.loads(data[key])
    return data
