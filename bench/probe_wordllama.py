"""A second model on top of the shipped re-ranking: wordllama, whose weights ship in its wheel.

    pip download --no-deps wordllama==0.4.0.post1 toml && \
        .venv/bin/pip install --no-deps --target /tmp/wl wordllama-*.whl toml-*.whl
    ln -s tokenizers /tmp/wl/wordllama/tokenizer   # 0.4.0's loader looks there, else downloads
    ENGRAM_SEARCH_TOKEN_MATCH=false \
        .venv/bin/python bench/eval_locomo.py --keep --skip-context --limit 100 --dump /tmp/d.json
    WORDLLAMA_PATH=/tmp/wl .venv/bin/python bench/probe_wordllama.py /tmp/d.json

Issue 13 allows a second model only if a registry package ships its weights; wordllama 0.4.0
is one that does (l2_supercat, 256-dim static token vectors, 16 MB in the wheel; ~0.8 ms for
42 texts). It is not a dependency: this measures whether it would earn its place, with
bench/probe_late's replay of the shipped re-ranking (blend, place, token match; each fold's
weights fitted on the other four, so every row is held out) and one change per row:
- its cosine between the question and the candidate's source turn (as the worker indexes the
  turn, or the turn's bare words) as one more feature;
- the 5 or 10 turns it ranks first among the rest of the first 100 items joining the pool.
The last column is the weight each fold's fit gave the last feature (over the blend's).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, os.environ.get("WORDLLAMA_PATH", "/tmp/wl"))

from bench.eval_locomo import DATA, turn_text, turns  # noqa: E402
from bench.probe_late import corpus, fitted_held_out, token_tables, zscored  # noqa: E402
from bench.probe_rerank import weighted  # noqa: E402
from memory.retrieval import late  # noqa: E402


def unit(matrix) -> np.ndarray:
    m = np.asarray(matrix, dtype=np.float64)
    return m / (np.linalg.norm(m, axis=1, keepdims=True) + 1e-9)


def main() -> int:
    from wordllama import WordLlama

    full = json.loads(Path(sys.argv[1]).read_text())
    folds = list(dict.fromkeys(r["sample"] for r in full))
    indexed = corpus(set(folds))
    bare = {}
    for sample in json.loads(DATA.read_text()):
        if sample["sample_id"] in folds:
            for _, _, session in turns(sample["conversation"]):
                for turn in session:
                    bare[sample["sample_id"], turn["dia_id"]] = turn_text(turn)
    keys = sorted(indexed)
    questions = list(dict.fromkeys(r["question"] for r in full))
    packed, asked = token_tables(indexed, questions)
    model = WordLlama.load(disable_download=True)
    second = {
        "indexed": dict(zip(keys, unit(model.embed([indexed[k] for k in keys])), strict=True)),
        "bare": dict(zip(keys, unit(model.embed([bare[k] for k in keys])), strict=True)),
    }
    question_vector = dict(zip(questions, unit(model.embed(questions)), strict=True))

    def pool(row: dict, joining: int = 0) -> dict:
        items = sorted(row["items"], key=lambda it: it["score"], reverse=True)
        messages = [it for it in items if it["type"] == "message"]
        kept = [it for it in items if it["type"] == "memory"][: late.POOL] + messages[: late.POOL]
        rest = [it for it in messages[late.POOL :] if it["sources"]]
        q = question_vector[row["question"]]
        rest.sort(key=lambda it: -float(second["indexed"][row["sample"], source(it)] @ q))
        return {**row, "items": kept + rest[:joining]}

    def source(item: dict) -> str | None:
        return item["sources"][0].get("dia_id") if item["sources"] else None

    def featurize(row: dict, extra: str) -> tuple[np.ndarray, list[dict]]:
        items = sorted(row["items"], key=weighted, reverse=True)
        src = [source(it) for it in items]
        match = late.matches(
            asked[row["question"]], {d: packed[row["sample"], d] for d in src if d}
        )
        cols = [
            np.array([weighted(it) for it in items]),
            np.log1p(np.arange(len(items))),
            zscored(np.array([match.get(d, 0.0) if d else 0.0 for d in src])),
        ]
        if extra:
            q = question_vector[row["question"]]
            table = second[extra]
            cols.append(
                zscored(np.array([float(table[row["sample"], d] @ q) if d else 0.0 for d in src]))
            )
        return np.column_stack(cols), items

    def held_out(name: str, rows: list[dict], extra: str = "") -> None:
        feats = {id(r): featurize(r, extra) for r in rows}
        per, by_category, fitted = fitted_held_out(rows, feats)
        last = [weights[0][-1] for weights in fitted.values()]
        print(
            f"{name:<40} "
            + " ".join(f"{v:5.1f}" for v in per.values())
            + f"  mean {statistics.fmean(per.values()):.2f}"
            + f"  multi-hop {100 * statistics.fmean(by_category[1]):.1f}"
            + f"  open-domain {100 * statistics.fmean(by_category[3]):.1f}"
            + "  last weight "
            + " ".join(f"{v:+.2f}" for v in last)
        )

    print("R@10 per fold (" + " ".join(folds) + "), each fold's weights fitted on the other four")
    shipped = [pool(r) for r in full]
    held_out("shipped: blend, place, match", shipped)
    held_out("+ its cosine, the turn as indexed", shipped, "indexed")
    held_out("+ its cosine, the turn's bare words", shipped, "bare")
    for joining in (5, 10):
        joined = [pool(r, joining) for r in full]
        held_out(f"its first {joining} of the rest join the pool", joined)
        held_out(f"its first {joining} join, + its cosine", joined, "indexed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
