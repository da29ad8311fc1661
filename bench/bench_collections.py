#!/usr/bin/env python
"""Knowledge collections: ingestion throughput of one worker, and search latency at 10k chunks.

    .venv/bin/python bench/bench_collections.py [--docs 4 --pages 25 --chunks 10000 --queries 100]

1. Ingestion: generated PDFs (English-like prose from the standard library's docstrings, about
   3,000 characters a page) are uploaded through the service; one real Celery worker process
   (`celery worker -Q knowledge --pool solo`, the default embedding settings) extracts, chunks and
   embeds them. Timed from the first upload until every document is ready, after a warm-up
   document has loaded the model in the worker. Prints pages/s and chunks/s.
2. Search: the collection is topped up to --chunks chunks (generated prose; vectors are random
   unit vectors unless --real-vectors, since an exact scan costs the same either way), then
   knowledge_search (query embedding + the one ranking statement of memory.retrieval.chunks)
   runs --queries times with eight-word phrases taken from the ingested chunks. Prints its
   p50/p95, those of the statement alone and of its vector side alone. The generated prose
   draws on a small vocabulary, so most query words occur in most chunks: the words in more
   than a fifth of them are dropped before the text scan (the collection's cached term
   statistics, loaded by the warm-up query), a pessimistic case for what is left.

Uses the development database (embedded unless DATABASE_URL is set) in its own workspace,
deleted at the end.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.base")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def vocabulary() -> list[str]:
    import importlib
    import inspect

    words: list[str] = []
    for name in ("collections", "json", "os", "re", "typing", "pathlib", "argparse", "logging"):
        module = importlib.import_module(name)
        for _, obj in inspect.getmembers(module):
            words += re.findall(r"[a-z]{3,12}", (inspect.getdoc(obj) or "").lower())
    return words


def prose(rng: random.Random, words: list[str], chars: int) -> str:
    sentences, size = [], 0
    while size < chars:
        sentence = " ".join(rng.choice(words) for _ in range(rng.randint(7, 18)))
        sentence = sentence.capitalize() + "."
        sentences.append(sentence)
        size += len(sentence) + 1
    return " ".join(sentences)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def wait_ready(document_ids: list[str], timeout: float) -> None:
    from memory.models import Document

    deadline = time.monotonic() + timeout
    while True:
        states = list(Document.objects.filter(id__in=document_ids).values_list("status", "error"))
        if all(s in ("ready", "failed") for s, _ in states) and len(states) == len(document_ids):
            failed = [e for s, e in states if s == "failed"]
            if failed:
                raise SystemExit(f"ingestion failed: {failed}")
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"ingestion did not finish in {timeout}s: {states}")
        time.sleep(0.1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=4)
    parser.add_argument("--pages", type=int, default=25, help="pages per PDF")
    parser.add_argument("--chunks", type=int, default=10_000, help="chunks to search over")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--real-vectors", action="store_true", help="embed the filler too")
    parser.add_argument("--keep", action="store_true", help="keep the workspace (to inspect)")
    args = parser.parse_args()

    import django

    from config.embedded import ensure_environment

    ensure_environment()
    django.setup()
    import numpy as np
    from django.core.management import call_command
    from django.db import connection

    from accounts.services import workspace_create
    from memory.embeddings import get_embedder
    from memory.knowledge import services
    from memory.knowledge.chunking import chunk_blocks
    from memory.knowledge.parsing import extract
    from memory.knowledge.search import knowledge_search
    from memory.models import Chunk, Document
    from memory.retrieval import chunks as chunk_ranking
    from tests.collections_docs import pdf_bytes

    call_command("migrate", verbosity=0)
    rng = random.Random(7)
    words = vocabulary()
    workspace = workspace_create(name="bench-collections")
    collection = services.collection_create(workspace=workspace, name="bench")
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "config",
            "worker",
            "-Q",
            "knowledge",
            "--pool",
            "solo",
            "--loglevel",
            "WARNING",
            "-n",
            f"bench-{os.getpid()}@%h",
        ],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,  # the banner; warnings and errors still reach stderr
    )
    try:
        print(f"collections benchmark: {os.cpu_count()} cpus, one worker (solo pool)")
        warm, _ = services.document_create(
            workspace=workspace, collection=collection, raw=b"Warm-up: loads the model."
        )
        wait_ready([warm.id], timeout=180)

        pdfs = [
            pdf_bytes([prose(rng, words, 3000) for _ in range(args.pages)], title=f"Doc {i}")
            for i in range(args.docs)
        ]
        started = time.perf_counter()
        ids = [
            services.document_create(workspace=workspace, collection=collection, raw=raw)[0].id
            for raw in pdfs
        ]
        wait_ready(ids, timeout=1800)
        elapsed = time.perf_counter() - started
        pages = sum(Document.objects.filter(id__in=ids).values_list("pages", flat=True))
        chunks = Chunk.objects.filter(document_id__in=ids).count()
        chunk_blocks(extract(pdfs[0]).blocks)  # loads the tokenizer
        split_started = time.perf_counter()
        for raw in pdfs:
            chunk_blocks(extract(raw).blocks)
        split = time.perf_counter() - split_started
        print(
            f"ingestion: {args.docs} PDFs, {pages} pages, {chunks} chunks in {elapsed:.1f}s"
            f" -> {pages / elapsed:.2f} pages/s, {chunks / elapsed:.1f} chunks/s"
            f" (extract+chunk alone: {pages / split:.0f} pages/s; the rest is embedding and SQL)"
        )
    finally:
        worker.terminate()
        worker.wait(timeout=30)

    try:
        # top up to --chunks searchable chunks in one ready filler document
        missing = max(0, args.chunks - Chunk.objects.filter(collection=collection).count())
        filler = Document.objects.create(
            workspace=workspace,
            collection=collection,
            title="filler",
            content_hash="filler",
            raw=b"",
            status=Document.Status.READY,
            chunks_total=missing,
            chunks_done=missing,
        )
        fill_started = time.perf_counter()
        embedder = get_embedder()
        for start in range(0, missing, 500):
            texts = [prose(rng, words, 900) for _ in range(min(500, missing - start))]
            if args.real_vectors:
                vectors = embedder.embed(texts)
            else:
                vectors = np.random.default_rng(start).normal(size=(len(texts), 384))
                vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            Chunk.objects.bulk_create(
                Chunk(
                    workspace=workspace,
                    collection=collection,
                    document=filler,
                    chunk_index=start + i,
                    text=text,
                    search_text=text,
                    token_count=0,
                    embedding=vector,
                )
                for i, (text, vector) in enumerate(zip(texts, vectors, strict=True))
            )
        total = Chunk.objects.filter(collection=collection).count()
        # What autovacuum does within a minute of a bulk insert: without statistics the planner
        # walks every chunk of the collection instead of the text index (text side 55 -> 12 ms).
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE memory_chunk")
        print(
            f"search corpus: {total} chunks (filled {missing} in {time.perf_counter() - fill_started:.0f}s)"
        )

        sources = list(Chunk.objects.filter(document_id__in=ids).values_list("text", flat=True))
        knowledge_search(workspace=workspace, collection_ids=[collection.id], query="warm", limit=5)
        timings: dict[str, list[float]] = {"search": [], "ranking SQL": [], "vector side": []}
        for _ in range(args.queries):
            text = rng.choice(sources)
            sentence = rng.choice([s for s in text.split(". ") if len(s.split()) >= 6] or [text])
            query = " ".join(sentence.split()[:8])
            began = time.perf_counter()
            knowledge_search(
                workspace=workspace, collection_ids=[collection.id], query=query, limit=5
            )
            timings["search"].append((time.perf_counter() - began) * 1000)
            vector = embedder.embed_one(query)
            # the statement alone (no query embedding), then with no words (vector side only)
            for part, words in (("ranking SQL", query), ("vector side", "")):
                began = time.perf_counter()
                chunk_ranking.ranked(
                    workspace_id=workspace.id,
                    collection_ids=[collection.id],
                    query=words,
                    vector=vector,
                )
                timings[part].append((time.perf_counter() - began) * 1000)
        figures = ", ".join(
            f"{name} p50 {statistics.median(v):.1f} ms / p95 {percentile(v, 0.95):.1f} ms"
            for name, v in timings.items()
        )
        print(f"knowledge_search over {total} chunks, {args.queries} queries: {figures}")
    finally:
        if args.keep:
            print(f"kept: workspace {workspace.id}, collection {collection.id}")
        else:
            services.collection_delete(workspace=workspace, collection=collection)
            workspace.delete()


if __name__ == "__main__":
    main()
