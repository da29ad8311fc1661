"""Replays a sentence-level vector index on a saved run: would a turn's best sentence find it?

    .venv/bin/python bench/eval_locomo.py --keep --skip-context --limit 100 --dump /tmp/d.json
    .venv/bin/python bench/probe_sentences.py /tmp/d.json

A turn is embedded whole ("[date] speaker: text"); a long turn's vector averages its sentences,
so a question that matches one of them ("What does Melanie do to destress?" -> "It's like
therapy for me") can miss it. Here every turn of the saved conversations is also embedded
sentence by sentence (the same dated form), and each question's list is re-ranked with the
best sentence's cosine: `lift w` adds w x (best sentence - whole turn) to a turn's items;
`+ found k` also lets the turns of the question's k nearest sentences join the list, with the
score a candidate outside the first 100 would roughly have (0.6 x its turn cosine, no text
score) plus the same lift. Rows as bench/probe_rerank.py's, with the leave-one-out choice.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from bench.eval_locomo import DATA, turn_text, turns  # noqa: E402
from bench.probe_rerank import assemble, fold_table, weighted  # noqa: E402

MODEL = "all-MiniLM-L6-v2"
VECTOR_SHARE = 0.6  # memory.retrieval.fusion's cosine share of the blend
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'(\[])")
MIN_CHARS = 12  # shorter pieces ("Wow!", "Thanks.") join the sentence before them


def sentences(text: str) -> list[str]:
    pieces: list[str] = []
    for piece in _SENTENCE_END.split(text.strip()):
        if pieces and (len(piece) < MIN_CHARS or len(pieces[-1]) < MIN_CHARS):
            pieces[-1] += " " + piece
        else:
            pieces.append(piece)
    return pieces


def day_label(when: dt.datetime) -> str:
    return f"{when.day} {when:%B %Y}"


def corpus(samples: set[str]):
    """Every turn of the samples: {(sample, dia_id): (whole text, [sentence texts])}."""
    out = {}
    for sample in json.loads(DATA.read_text()):
        if sample["sample_id"] not in samples:
            continue
        for _, date, session in turns(sample["conversation"]):
            when = dt.datetime.fromisoformat(date.rstrip("Z"))
            for turn in session:
                prefix = f"[{day_label(when)}] {turn['speaker']}: "
                text = turn_text(turn)
                out[sample["sample_id"], turn["dia_id"]] = (
                    prefix + text,
                    [prefix + s for s in sentences(text)],
                )
    return out


def embed_all(texts: list[str], cache: Path) -> dict[str, np.ndarray]:
    from memory.embeddings.onnx import QuantizedOnnxEmbedder

    known: dict[str, np.ndarray] = {}
    if cache.exists():
        data = np.load(cache, allow_pickle=True)
        known = dict(zip(data["texts"].tolist(), data["vectors"], strict=True))
    todo = sorted({t for t in texts if t not in known})
    if todo:
        vectors = QuantizedOnnxEmbedder(MODEL).embed(todo)
        known.update(zip(todo, vectors, strict=True))
        np.savez(
            cache, texts=np.array(list(known), dtype=object), vectors=np.array(list(known.values()))
        )
    return known


def main() -> int:
    rows = json.loads(Path(sys.argv[1]).read_text())
    folds = list(dict.fromkeys(r["sample"] for r in rows))
    turns_of = corpus(set(folds))
    texts = [t for whole, parts in turns_of.values() for t in [whole, *parts]]
    texts += [r["question"] for r in rows]
    vec = embed_all(texts, Path("/tmp/probe_sentences_cache.npz"))
    print(
        f"{len(turns_of)} turns, {sum(len(p) for _, p in turns_of.values())} sentences, "
        f"{sum(len(p) > 1 for _, p in turns_of.values())} turns of more than one"
    )
    by_sample: dict[str, list] = {}
    for key, (whole, parts) in turns_of.items():
        by_sample.setdefault(key[0], []).append((key[1], whole, parts))
    sims: list[dict[str, tuple[float, float]]] = []  # per row: dia_id -> (turn cos, best sentence)
    for r in rows:
        q = vec[r["question"]]
        sims.append(
            {
                dia: (float(vec[whole] @ q), max(float(vec[p] @ q) for p in parts))
                for dia, whole, parts in by_sample[r["sample"]]
            }
        )

    sims_of = {id(r): sim for r, sim in zip(rows, sims, strict=True)}

    def variant(lift: float, found: int, gain_only: bool = False):
        def rerank(r: dict, given: list) -> list:
            sim = sims_of[id(r)]

            def key(item):
                dia = item["sources"][0].get("dia_id") if item["sources"] else None
                turn, best = sim.get(dia, (0.0, 0.0))
                return weighted(item) + lift * (max(best, turn) if gain_only else best - turn)

            items = list(given)
            if found:
                have = {s.get("dia_id") for it in items for s in it["sources"]}
                nearest = sorted(sim, key=lambda d: sim[d][1], reverse=True)[:found]
                for dia in nearest:
                    if dia not in have:
                        turn, best = sim[dia]
                        items.append(
                            {
                                "type": "message",
                                "score": VECTOR_SHARE * (max(best, turn) if gain_only else turn),
                                "sources": [{"id": f"s:{dia}", "dia_id": dia}],
                            }
                        )
            return assemble(items, key)

        return rerank

    changes = {"baseline": variant(0.0, 0)}
    for lift in (0.1, 0.2, 0.3, 0.5, 0.8):
        changes[f"lift {lift}"] = variant(lift, 0)
        for found in (10, 30):
            changes[f"lift {lift} + found {found}"] = variant(lift, found)
    for lift in (0.1, 0.3, 0.6):
        changes[f"max {lift} + found 30"] = variant(lift, 30, gain_only=True)
    fold_table(rows, changes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
