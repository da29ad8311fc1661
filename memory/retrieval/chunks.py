"""Knowledge chunks of named collections, ranked by the blend (memory.retrieval.fusion).

The scope is the workspace's chunks in those collections whose document is ready. BM25 weighs
the query's words by the collections' cached statistics, after the words in more than a fifth
of the chunks are dropped: the "any word" query with ts_rank_cd read nearly every chunk of a
10k-chunk collection (bench/bench_collections.py: search p50 132 ms, 107 ms of it full text).
"""

from __future__ import annotations

from memory.retrieval import fusion, terms

COLUMNS = ["id", "collection_id", "document_id", "chunk_index", "heading", "text"]
_SCOPE = (
    "t.workspace_id = %(workspace)s AND t.collection_id = ANY(%(collections)s) "
    "AND EXISTS (SELECT 1 FROM memory_document d WHERE d.id = t.document_id "
    "AND d.status = 'ready')"
)
_DOCUMENT = "JOIN memory_document doc ON doc.id = t.document_id"


def ranked(
    *, workspace_id: str, collection_ids: list[str], query: str, vector
) -> list[fusion.Ranked]:
    """The candidates, blended and ranked on each side, best first; row["title"] is the document's."""
    stats = terms.collection_stats(workspace_id=workspace_id, collection_ids=collection_ids)
    sql = fusion.statement(
        table="memory_chunk",
        scope=_SCOPE,
        columns=[*(f"t.{c}" for c in COLUMNS), "doc.title"],
        joins=_DOCUMENT,
    )
    rows = fusion.run(
        sql,
        {"workspace": workspace_id, "collections": list(collection_ids)},
        terms=terms.selective(terms.or_terms(query), stats=stats),
        stats=stats,
        vector=vector,
    )
    names = [*COLUMNS, "title"]
    hits = [
        fusion.Ranked(row[0], dict(zip(names, row, strict=False)), row[-2], bm25=row[-1])
        for row in rows
    ]
    return fusion.blend(hits, vector_share=fusion.CHUNK_VECTOR_SHARE)
