"""Knowledge for a turn: which collections a caller may use, and their best chunks for a query.

The contract with context assembly: `collections_check` guards the turn's collection ids
(NotFound naming the first unknown or foreign one) and `knowledge_search` returns the chunks to put in the knowledge
block and in engram["sources"].
"""

from __future__ import annotations

import re

from accounts.models import Workspace
from config.common.errors import NOT_FOUND_CODES, NotFound
from memory.models import Collection
from memory.retrieval import chunks
from memory.retrieval.fusion import shown_score

# How many collections one request may name, at every door: x-collection-ids, the body of
# /v1/search and /v1/collections/search, an agent's own. The bodies took 100 where the header
# took 20.
MAX_COLLECTIONS = 20
TOO_MANY_COLLECTIONS = f"At most {MAX_COLLECTIONS} collection ids."
_SNIPPET_CHARS = 240
_WORD = re.compile(r"[A-Za-z0-9]+")
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")


def collections_check(*, workspace: Workspace, collection_ids: list[str]) -> None:
    """NotFound (field `collection_ids`) naming the first id not in `workspace`: the one check
    of every door that reads collections (x-collection-ids, /v1/search's chunks,
    /v1/collections/search, an agent's), for any key of the workspace, an end user's token
    included: a token may search the workspace's collections it names, never manage them."""
    ids = [str(cid) for cid in collection_ids]
    found = set(
        Collection.objects.filter(workspace=workspace, id__in=ids).values_list("id", flat=True)
    )
    for cid in ids:
        if cid not in found:
            raise NotFound(
                f"No collection '{cid}' in this workspace.",
                field="collection_ids",
                code=NOT_FOUND_CODES["collection"],
            )


def _stem(word: str) -> str:
    return word.lower()[:5]


def snippet(text: str, query: str, *, width: int = _SNIPPET_CHARS) -> str:
    """The sentence of `text` sharing most words with `query` (prefix-matched), cut to `width`."""
    wanted = {_stem(w) for w in _WORD.findall(query) if len(w) > 2}
    sentences = [s.strip() for s in _SENTENCE.split(text) if s.strip()] or [text.strip()]
    best = max(
        range(len(sentences)),
        key=lambda i: (len(wanted & {_stem(w) for w in _WORD.findall(sentences[i])}), -i),
    )
    picked = sentences[best]
    if len(picked) <= width:
        # fill up with what follows, for a little context
        rest = " ".join(sentences[best + 1 :])
        if rest and len(picked) + 1 < width:
            picked = f"{picked} {rest}"
        if len(picked) <= width:
            return picked
    cut = picked[: width - 1].rsplit(" ", 1)[0]
    return cut.rstrip(" ,;:") + "…"


def knowledge_search(
    *,
    workspace: Workspace,
    collection_ids: list[str],
    query: str,
    limit: int,
    vector: list[float] | None = None,
) -> list[dict]:
    """The best chunks of the workspace's ready documents in these collections, best first.

    Each: {collection_id, document_id, title, chunk_index, heading, score, text, snippet, why};
    score is the blend of memory.retrieval.fusion (cosine and BM25 normalized by the best
    candidate), in [0, 1]. `vector`: the query's embedding when the caller already has it (a
    chat turn embeds its query once).
    """
    query = (query or "").strip()[:4000]
    if not collection_ids or not query or limit <= 0:
        return []
    if vector is None:
        from memory.embeddings import get_embedder

        vector = get_embedder().embed_one(query)
    from memory.retrieval.search import Found  # why it ranked, worded as /v1/search words it

    hits = chunks.ranked(
        workspace_id=workspace.id,
        collection_ids=[str(c) for c in collection_ids],
        query=query,
        vector=vector,
    )
    return [
        {
            "collection_id": hit.row["collection_id"],
            "document_id": hit.row["document_id"],
            "title": hit.row["title"],
            "chunk_index": hit.row["chunk_index"],
            "heading": hit.row["heading"],
            "score": shown_score(hit.score, digits=4),
            "text": hit.row["text"],
            "snippet": snippet(hit.row["text"], query),
            "why": Found("chunk", hit.row, hit.score, hit.similarity, hit.ranks).why(),
        }
        for hit in hits[:limit]
    ]
