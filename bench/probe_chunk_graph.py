#!/usr/bin/env python
"""How much of the exact nearest-chunk list the chunk graph index finds, and how fast.

    .venv/bin/python bench/probe_chunk_graph.py WORKSPACE_ID COLLECTION_ID [--ef 100 200 500]

Run it on a collection kept by `bench/bench_collections.py --keep [--real-vectors]`. Queries are
eight-word phrases from the collection's own chunks, embedded with the default embedder. For
each hnsw.ef_search it times the vector side's statement (memory.retrieval.chunks' scope, top
50) through the graph (forced: enable_sort off) and exactly (enable_indexscan off), and prints
the share of the exact top 10 and top 50 that the graph found.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.base")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

READY = (
    "t.document_id = ANY(ARRAY(SELECT d.id FROM memory_document d WHERE d.workspace_id = "
    "%(ws)s AND d.collection_id = ANY(%(cols)s) AND d.status = 'ready'))"
)
NEAREST = (
    "SELECT t.id FROM memory_chunk t WHERE t.workspace_id = %(ws)s AND t.collection_id = "
    f"ANY(%(cols)s) AND {READY} AND t.embedding IS NOT NULL "
    "ORDER BY t.embedding <=> %(v)s::vector LIMIT 50"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workspace")
    parser.add_argument("collection")
    parser.add_argument("--ef", type=int, nargs="+", default=[100, 200, 500])
    parser.add_argument("--queries", type=int, default=80)
    args = parser.parse_args()

    from config.embedded import ensure_environment

    ensure_environment()
    import django

    django.setup()
    from django.db import connection

    from memory.embeddings import get_embedder
    from memory.retrieval.fusion import literal

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT text FROM memory_chunk WHERE collection_id = %s ORDER BY random() LIMIT %s",
            [args.collection, args.queries],
        )
        texts = [row[0] for row in cursor.fetchall()]
    rng = random.Random(3)
    phrases = []
    for text in texts:
        words = text.split()
        start = rng.randrange(max(1, len(words) - 8))
        phrases.append(" ".join(words[start : start + 8]))
    embedder = get_embedder()
    vectors = [literal(embedder.embed_one(p)) for p in phrases]

    def nearest(setting: str) -> tuple[list[list[str]], list[float]]:
        found, times = [], []
        for vector in vectors:
            with connection.cursor() as cursor:
                cursor.execute(f"SET {setting} = off")
                began = time.perf_counter()
                cursor.execute(
                    NEAREST, {"ws": args.workspace, "cols": [args.collection], "v": vector}
                )
                found.append([row[0] for row in cursor.fetchall()])
                times.append((time.perf_counter() - began) * 1000)
                cursor.execute(f"RESET {setting}")
        return found, times

    def p(values: list[float], q: float) -> float:
        return sorted(values)[min(len(values) - 1, int(q * len(values)))]

    print(f"{len(vectors)} queries, load {os.getloadavg()[0]:.2f}")
    for ef in args.ef:
        with connection.cursor() as cursor:
            cursor.execute(f"SET hnsw.ef_search = {ef}")
        graph, graph_ms = nearest("enable_sort")
        exact, exact_ms = nearest("enable_indexscan")
        top10 = statistics.mean(
            len(set(a[:10]) & set(b[:10])) / 10 for a, b in zip(exact, graph, strict=True)
        )
        top50 = statistics.mean(
            len(set(a) & set(b)) / 50 for a, b in zip(exact, graph, strict=True)
        )
        print(
            f"ef_search {ef}: graph p50 {statistics.median(graph_ms):.1f} / p95 {p(graph_ms, 0.95):.1f} ms, "
            f"exact p50 {statistics.median(exact_ms):.1f} / p95 {p(exact_ms, 0.95):.1f} ms, "
            f"found {top10:.3f} of the exact top 10, {top50:.3f} of the top 50"
        )


if __name__ == "__main__":
    main()
