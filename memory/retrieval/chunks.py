"""Knowledge chunks of named collections, ranked by the blend (memory.retrieval.fusion).

The scope is the workspace's chunks in those collections whose document is ready. BM25 weighs
the query's words by the collections' cached statistics, after the words in more than a fifth
of the chunks are dropped: the "any word" query with ts_rank_cd read nearly every chunk of a
10k-chunk collection (bench/bench_collections.py: search p50 132 ms, 107 ms of it full text).
The vector side goes through the chunk graph index (chunk_embedding_hnsw, searched with the
connection's hnsw.ef_search and iterative scan: config/settings/base.py) where the planner finds
it cheaper than the exact scan, i.e. for large collections: at 10k chunks the exact scan was
most of the statement's time (p50 12 of 15 ms).
"""

from __future__ import annotations

from memory.knowledge.models import document_name
from memory.retrieval import fusion, terms

COLUMNS = ["id", "collection_id", "document_id", "chunk_index", "heading", "text"]
_COLLECTIONS = "t.workspace_id = %(workspace)s AND t.collection_id = ANY(%(collections)s)"
# The ready documents as an array computed once (an InitPlan): as a join or EXISTS, a planner
# that misjudged how many documents are ready rescanned the chunks once per document
# (bench_collections, 10k chunks, 6 documents: 270 ms against 30 ms).
_READY = (
    "t.document_id = ANY(ARRAY(SELECT d.id FROM memory_document d "
    "WHERE d.workspace_id = %(workspace)s AND d.collection_id = ANY(%(collections)s) "
    "AND d.status = 'ready'))"
)
_SCOPE = f"{_COLLECTIONS} AND {_READY}"
# The text match first, through the GIN index, then the ready check on what matched: planned
# together, the document join walked every chunk of the collection in document order
# (10k chunks, a rare word: 140 ms against 14 ms).
_MATCHED = (
    "(SELECT t.id, t.search, t.document_id FROM memory_chunk t "
    f"WHERE {_COLLECTIONS} AND t.search @@ to_tsquery('english', %(terms)s) OFFSET 0) t"
)
# The text side reads each matching chunk's tsvector (~10 us each): it matches the rarest query
# words until their chunks add up to this many, and the commoner ones only add to the score
# of the chunks found (bench_collections, 10k chunks: 2.4k matches for a typical query).
MATCH_ROWS = 500
# A query whose rarest word is in more chunks than this ranks by its vector alone: its text side
# read every match's tsvector (a word in 2k of 10k chunks: 75 ms) to tell apart chunks that all
# share a common word. Under ~2.5k chunks a word that common is already cut from a query of two
# or more words (terms.selective); only a one-word query reaches this there.
MATCH_MOST = 500
_DOCUMENT = "JOIN memory_document doc ON doc.id = t.document_id"


def ranked(
    *, workspace_id: str, collection_ids: list[str], query: str, vector
) -> list[fusion.Ranked]:
    """The candidates, blended and ranked on each side, best first; row["title"] is the
    document's name (models.document_name) and row["created_at"] its creation."""
    stats = terms.collection_stats(workspace_id=workspace_id, collection_ids=collection_ids)
    sql = fusion.statement(
        table="memory_chunk",
        scope=_SCOPE,
        columns=[*(f"t.{c}" for c in COLUMNS), "doc.title", "doc.filename", "doc.created_at"],
        joins=_DOCUMENT,
        text_rows=_MATCHED,
        text_scope=_READY,
    )
    query_terms = terms.selective(terms.or_terms(query, digits=True), stats=stats)
    match = terms.rarest(query_terms, stats=stats, rows=MATCH_ROWS, most=MATCH_MOST)
    if match is None:
        query_terms = None
    rows = fusion.run(
        sql,
        {"workspace": workspace_id, "collections": list(collection_ids)},
        terms=query_terms,
        match=match,
        stats=stats,
        vector=vector,
    )
    names = [*COLUMNS, "title", "filename", "created_at"]
    hits = []
    for row in rows:
        found = dict(zip(names, row, strict=False))
        found["title"] = document_name(
            title=found["title"], filename=found.pop("filename"), document_id=found["document_id"]
        )
        hits.append(fusion.Ranked(row[0], found, row[-2], bm25=row[-1]))
    return fusion.blend(hits, vector_share=fusion.CHUNK_VECTOR_SHARE)
