"""Hybrid retrieval: pgvector similarity and PostgreSQL full-text search, fused by reciprocal rank.

Generic over any model with `embedding` (vector) and `search` (tsvector) columns: memories,
messages and knowledge chunks all rank the same way. The caller's queryset carries the scope
(workspace, user, collection), so the vector scan stays an exact scan over that scope's rows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from django.contrib.postgres.search import SearchQuery, SearchRank
from django.db.models import F, Model, QuerySet
from pgvector.django import CosineDistance

_WORD = re.compile(r"[A-Za-z0-9]+")
# Words too common in questions to say anything about what is asked.
_STOP = {
    "a",
    "an",
    "the",
    "and",
    "or",
    "but",
    "is",
    "are",
    "was",
    "were",
    "be",
    "been",
    "do",
    "does",
    "did",
    "what",
    "when",
    "where",
    "who",
    "whom",
    "which",
    "why",
    "how",
    "i",
    "you",
    "he",
    "she",
    "it",
    "we",
    "they",
    "me",
    "my",
    "your",
    "his",
    "her",
    "its",
    "our",
    "their",
    "to",
    "of",
    "in",
    "on",
    "at",
    "for",
    "with",
    "about",
    "as",
    "by",
    "from",
    "that",
    "this",
    "these",
    "those",
    "have",
    "has",
    "had",
    "can",
    "could",
    "would",
    "should",
    "will",
    "there",
    "any",
    "some",
}


M = TypeVar("M", bound=Model)


@dataclass
class Hit(Generic[M]):
    obj: M
    score: float
    similarity: float | None = None
    text_rank: float | None = None
    ranks: dict[str, int] = field(default_factory=dict)


def or_terms(text: str) -> str | None:
    """A raw tsquery matching any of the question's content words."""
    words = [w.lower() for w in _WORD.findall(text) if w.lower() not in _STOP and len(w) > 1]
    if not words:
        return None
    return " | ".join(dict.fromkeys(words))


def or_query(text: str) -> SearchQuery | None:
    """Any of the question's content words (websearch syntax would demand all of them)."""
    terms = or_terms(text)
    if terms is None:
        return None
    return SearchQuery(terms, search_type="raw", config="english")


def hybrid_search(
    queryset: QuerySet[M],
    *,
    query_text: str,
    query_vector: list[float] | None,
    limit: int,
    candidates: int = 50,
    rrf_k: int = 60,
    vector_weight: float = 1.0,
    text_weight: float = 1.0,
) -> list[Hit[M]]:
    hits: dict[object, Hit[M]] = {}

    def add(rows: list[Any], kind: str, weight: float) -> None:  # rows carry .annotate()'s
        for rank, row in enumerate(rows):
            hit = hits.setdefault(row.pk, Hit(obj=row, score=0.0))
            hit.ranks[kind] = rank + 1
            hit.score += weight / (rrf_k + rank + 1)
            if kind == "vector":
                hit.similarity = 1.0 - float(row.distance)
            else:
                hit.text_rank = float(row.text_rank)

    if query_vector is not None and vector_weight > 0:
        rows = (
            queryset.filter(embedding__isnull=False)
            .annotate(distance=CosineDistance("embedding", query_vector))
            .order_by("distance")[:candidates]
        )
        add(list(rows), "vector", vector_weight)
    tsquery = or_query(query_text) if text_weight > 0 else None
    if tsquery is not None:
        rows = (
            queryset.filter(search=tsquery)
            .annotate(text_rank=SearchRank(F("search"), tsquery, cover_density=True))
            .order_by("-text_rank")[:candidates]
        )
        add(list(rows), "text", text_weight)
    ranked = sorted(hits.values(), key=lambda h: h.score, reverse=True)
    return ranked[:limit]
