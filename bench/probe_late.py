"""Replays a late-interaction re-ranking (MaxSim over MiniLM's token vectors) on a saved run.

    .venv/bin/python bench/eval_locomo.py --keep --skip-context --limit 100 --dump /tmp/d.json
    .venv/bin/python bench/probe_late.py /tmp/d.json

A turn's stored vector is the mean of its tokens' vectors, so one word of a long turn that
answers the question is averaged away. Late interaction (ColBERT's MaxSim) keeps the tokens:
each question token finds its most similar token of the turn, and the turn's score is the mean
(or the rare-word-weighted mean) of those maxima — the question and the turn read together
token by token, the nearest this model's weights come to a reranker. MiniLM was trained for
mean pooling, not for this, so whether its token vectors carry the signal is what this
measures. A memory takes its first source turn's score. Each question's first 100 items are
re-ranked with `weighted + λ · MaxSim`; rows as bench/probe_rerank.py's, with the
leave-one-out choice.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import sys
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from bench.eval_locomo import DATA, turn_text, turns  # noqa: E402
from bench.probe_rerank import assemble, fold_table, weighted  # noqa: E402
from bench.probe_sentences import day_label  # noqa: E402

MODEL = "all-MiniLM-L6-v2"
CACHE = Path("/tmp/probe_late_cache.npz")


def corpus(samples: set[str]) -> dict[tuple[str, str], str]:
    out = {}
    for sample in json.loads(DATA.read_text()):
        if sample["sample_id"] not in samples:
            continue
        for _, date, session in turns(sample["conversation"]):
            when = dt.datetime.fromisoformat(date.rstrip("Z"))
            for turn in session:
                prefix = f"[{day_label(when)}] {turn['speaker']}: "
                out[sample["sample_id"], turn["dia_id"]] = prefix + turn_text(turn)
    return out


def token_vectors(texts: list[str]) -> dict[str, tuple[list[str], np.ndarray]]:
    """Each text's wordpieces (without [CLS]/[SEP]) and their unit vectors, from the model's
    last hidden state, one text a run (no padding)."""
    from memory.embeddings.onnx import OnnxEmbedder

    if CACHE.exists():
        data = np.load(CACHE, allow_pickle=True)
        known = dict(zip(data["texts"].tolist(), data["values"].tolist(), strict=True))
    else:
        known = {}
    todo = sorted({t for t in texts if t not in known})
    if todo:
        model = OnnxEmbedder(MODEL)
        for text in todo:
            enc = model._alone.encode(text) if hasattr(model, "_alone") else None
            if enc is None:
                model.tokenizer.no_padding()
                enc = model.tokenizer.encode(text)
            ids = np.array([enc.ids], dtype=np.int64)
            hidden = model.session.run(
                None,
                {
                    "input_ids": ids,
                    "attention_mask": np.ones_like(ids),
                    "token_type_ids": np.zeros_like(ids),
                },
            )[0][0][1:-1]
            hidden = hidden / np.clip(np.linalg.norm(hidden, axis=1, keepdims=True), 1e-12, None)
            known[text] = (enc.tokens[1:-1], hidden.astype(np.float32))
        values = np.empty(len(known), dtype=object)
        values[:] = list(known.values())
        np.savez(CACHE, texts=np.array(list(known), dtype=object), values=values)
    return known


def is_word(token: str) -> bool:
    return any(c.isalnum() for c in token)


def main() -> int:
    rows = json.loads(Path(sys.argv[1]).read_text())
    folds = list(dict.fromkeys(r["sample"] for r in rows))
    turns_of = corpus(set(folds))
    toks = token_vectors([*turns_of.values(), *(r["question"] for r in rows)])
    # Wordpiece document frequencies per conversation (a token's rarity among its turns).
    idf: dict[str, dict[str, float]] = {}
    for sample in folds:
        texts = [t for (s, _), t in turns_of.items() if s == sample]
        df = Counter(tok for t in texts for tok in set(toks[t][0]))
        idf[sample] = {tok: math.log((len(texts) + 1) / (n + 0.5)) for tok, n in df.items()}

    def maxsim(r: dict, dia: str | None, weighting: str) -> float:
        text = turns_of.get((r["sample"], dia)) if dia else None
        if text is None:
            return 0.0
        q_tokens, q = toks[r["question"]]
        t_tokens, t = toks[text]
        best = (q @ t.T).max(axis=1)
        if weighting == "uniform":
            return float(best.mean())
        table = idf[r["sample"]]
        top = max(table.values())
        w = np.array(
            [(table.get(tok, top) if is_word(tok) else 0.0) for tok in q_tokens], dtype=np.float32
        )
        return float((best * w).sum() / max(w.sum(), 1e-9))

    memo: dict[tuple[int, str | None, str], float] = {}

    def late(r: dict, item: dict, weighting: str) -> float:
        dia = item["sources"][0].get("dia_id") if item["sources"] else None
        key = (id(r), dia, weighting)
        if key not in memo:
            memo[key] = maxsim(r, dia, weighting)
        return memo[key]

    def variant(lam: float, weighting: str, pool: int = 100):
        def rerank(r: dict, given: list) -> list:
            head = sorted(given, key=weighted, reverse=True)[:pool]
            return assemble(head, lambda it: weighted(it) + lam * late(r, it, weighting))

        return rerank

    changes = {}
    for weighting in ("uniform", "idf"):
        for lam in (0.1, 0.2, 0.3, 0.5, 1.0, 3.0):
            changes[f"{weighting} λ {lam}"] = variant(lam, weighting)
        changes[f"{weighting} alone, top 30"] = variant(100.0, weighting, pool=30)
    fold_table(rows, {"baseline": variant(0.0, "uniform"), **changes})
    return 0


if __name__ == "__main__":
    sys.exit(main())
