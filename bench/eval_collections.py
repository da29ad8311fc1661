#!/usr/bin/env python
"""Knowledge-collection recall: does knowledge_search put the chunk that answers a question first?

    .venv/bin/python bench/eval_collections.py [--fresh] [--set NAME=VALUE ...]

The labelled set is built from shared/eval-data/locomo-dev.json: every session of the five
conversations becomes one Markdown document ("Speaker: text" paragraphs under a dated heading),
ingested into one collection through the real service (extract, chunk, embed; in-process, no
worker). Each question of categories 1-4 is labelled with the chunks holding its evidence turns;
a question counts as found at k when any of them is among the first k results (limit 10).
LoCoMo questions paraphrase what was said, so this is the paraphrase case that matters.

The questions are split by position: even ones ("tune") are for choosing parameters, odd ones
("report") for the figures quoted. Prints recall@1/@5, MRR and search p50/p95 for each half.
`--set NAME=VALUE` overrides a constant of memory.retrieval.fusion for the run (tuning only).

Uses the development database (embedded unless DATABASE_URL is set); the workspace
"eval-collections" is kept between runs (re-ingested with --fresh).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.base")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DATA = ROOT.parent / "shared" / "eval-data" / "locomo-dev.json"
WORKSPACE = "eval-collections"
CATEGORIES = (1, 2, 3, 4)
LIMIT = 10


def _squash(text: str) -> str:
    return " ".join(text.split())


def documents(samples: list[dict]) -> list[tuple[str, str]]:
    """(title, markdown) per session."""
    docs = []
    for sample in samples:
        conversation, n = sample["conversation"], 1
        while f"session_{n}" in conversation:
            title = f"{sample['sample_id']} session {n}"
            lines = [f"# {title} ({conversation[f'session_{n}_date_time']})", ""]
            for turn in conversation[f"session_{n}"]:
                lines += [f"{turn['speaker']}: {_squash(turn['text'])}", ""]
            docs.append((title, "\n".join(lines)))
            n += 1
    return docs


def questions(samples: list[dict]) -> list[tuple[str, list[str]]]:
    """(question, evidence turn texts) for categories 1-4."""
    out = []
    for sample in samples:
        said = {}
        for key, turns in sample["conversation"].items():
            if key.startswith("session_") and isinstance(turns, list):
                said.update({t["dia_id"]: _squash(t["text"]) for t in turns})
        for qa in sample["qa"]:
            evidence = [said[e] for e in qa.get("evidence", []) if e in said]
            if qa.get("category") in CATEGORIES and evidence:
                out.append((qa["question"], evidence))
    return out


def ingest(samples: list[dict]):
    from accounts.models import Workspace
    from accounts.services import workspace_create
    from memory.knowledge import services
    from memory.models import Collection

    services._enqueue = lambda document_id: None  # ingested here, not by a worker
    Workspace.objects.filter(name=WORKSPACE).delete()
    workspace = workspace_create(name=WORKSPACE)
    collection = services.collection_create(workspace=workspace, name="locomo sessions")
    started = time.perf_counter()
    for title, text in documents(samples):
        document, _ = services.document_create(
            workspace=workspace, collection=collection, raw=text.encode(), title=title
        )
        assert services.document_ingest(document_id=document.id) == "ready"
    print(f"ingested in {time.perf_counter() - started:.0f}s")
    return workspace, Collection.objects.get(id=collection.id)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fresh", action="store_true", help="re-ingest the documents")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()

    import django

    from config.embedded import ensure_environment

    ensure_environment()
    django.setup()
    from django.core.management import call_command

    from accounts.models import Workspace
    from memory.knowledge.search import knowledge_search
    from memory.models import Chunk, Collection

    call_command("migrate", verbosity=0)
    for item in args.set:
        from memory.retrieval import fusion

        name, value = item.split("=", 1)
        assert hasattr(fusion, name), name
        setattr(fusion, name, type(getattr(fusion, name))(value))

    samples = json.loads(DATA.read_text())
    workspace = Workspace.objects.filter(name=WORKSPACE).first()
    collection = workspace and Collection.objects.filter(workspace=workspace).first()
    if args.fresh or collection is None:
        workspace, collection = ingest(samples)
    chunks = list(Chunk.objects.filter(collection=collection).values_list("id", "text"))
    squashed = [(cid, _squash(text)) for cid, text in chunks]
    labelled = []
    for question, evidence in questions(samples):
        # a turn's opening words: a long turn may be split across two chunks
        answers = {cid for cid, text in squashed for e in evidence if e[:80] in text}
        if answers:
            labelled.append((question, answers))
    print(f"{len(chunks)} chunks, {len(labelled)} labelled questions")

    knowledge_search(workspace=workspace, collection_ids=[collection.id], query="warm", limit=1)
    ids = dict(
        ((d, i), cid)
        for cid, d, i in Chunk.objects.filter(collection=collection).values_list(
            "id", "document_id", "chunk_index"
        )
    )
    halves: dict[str, dict[str, list[float]]] = {}
    for n, (question, answers) in enumerate(labelled):
        began = time.perf_counter()
        hits = knowledge_search(
            workspace=workspace, collection_ids=[collection.id], query=question, limit=LIMIT
        )
        took = (time.perf_counter() - began) * 1000
        ranked = [ids[(h["document_id"], h["chunk_index"])] for h in hits]
        first = next((r for r, cid in enumerate(ranked, 1) if cid in answers), None)
        half = halves.setdefault("tune" if n % 2 == 0 else "report", {})
        half.setdefault("r1", []).append(first is not None and first <= 1)
        half.setdefault("r5", []).append(first is not None and first <= 5)
        half.setdefault("rr", []).append(1 / first if first else 0.0)
        half.setdefault("ms", []).append(took)
    figures = {}
    for name, half in halves.items():
        ms = sorted(half["ms"])
        figures[name] = {
            "questions": len(half["r1"]),
            "recall@1": round(100 * statistics.mean(half["r1"]), 1),
            "recall@5": round(100 * statistics.mean(half["r5"]), 1),
            "mrr": round(statistics.mean(half["rr"]), 3),
            "search_ms_p50": round(statistics.median(ms), 1),
            "search_ms_p95": round(ms[int(0.95 * (len(ms) - 1))], 1),
        }
        print(f"{name:>6}: " + ", ".join(f"{k} {v}" for k, v in figures[name].items()))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
