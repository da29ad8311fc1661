"""Replays two more re-ranking features on a saved run, each fold held out (issue 13).

    ENGRAM_SEARCH_TOKEN_MATCH=false \
        .venv/bin/python bench/eval_locomo.py --keep --skip-context --limit 100 --dump /tmp/d.json
    .venv/bin/python bench/probe_answer_type.py /tmp/d.json

On top of the shipped re-ranking (blend, its place, the token match: bench/probe_late.py), each
row adds features to the logistic regression fitted on four conversations and scored on the
fifth, so every figure is held out by construction:

- *answer type* (memory.retrieval.answers): a question that asks when, how many, where or for a
  name or title is answered by a turn that holds a time, a number, a place or a name — classic
  question answering's answer-type match. Four products (asks × holds), each 0 or 1, read from
  the LoCoMo turn's own words (the speakers' names, the question's and a sentence's first word
  aside); then as the product reads them (`own text`): each candidate's stored text — a
  message's content, a memory's text — the names known those of the candidates' speakers.
- *question as a statement*: MiniLM compares a question with statements; the question's
  wh-words and auxiliaries dropped ("What does Melanie do to destress?" → "Melanie to
  destress") give a second query vector, its cosine with the turn as the worker embeds it a
  feature (z-scored among the candidates).

The cue lists and rules were written before any figure was read.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.eval_locomo import DATA, turn_text, turns  # noqa: E402
from bench.probe_late import (  # noqa: E402
    corpus,
    fitted_held_out,
    pooled,
    shipped_columns,
    token_tables,
    zscored,
)
from memory.embeddings import get_embedder  # noqa: E402
from memory.retrieval import answers, late  # noqa: E402

DROPPED = {
    *("what", "which", "when", "where", "who", "whom", "whose", "why", "how", "of"),
    *("does", "did", "do", "is", "are", "was", "were", "has", "have", "had", "would", "could"),
    *("should", "can", "will", "kind", "kinds", "type", "types", "sort", "many", "much"),
}


def as_statement(question: str) -> str:
    words = question.rstrip(" ?").split()
    kept = [w for w in words if w.lower().strip(",") not in DROPPED]
    return " ".join(kept) or question


def stored_texts(rows: list[dict]) -> tuple[dict, dict]:
    """Each candidate's own text as stored (a message's content, a memory's text) by id, and
    each message's speaker (its `name`), from the kept run's database."""
    import os

    os.environ.setdefault(
        "ENGRAM_DATA_DIR", str(Path(__file__).resolve().parent.parent / ".engram" / "eval")
    )
    import psycopg

    from config.embedded.servers import ensure_postgres

    message_ids = sorted({it["id"] for r in rows for it in r["items"] if it["type"] == "message"})
    memory_ids = sorted({it["id"] for r in rows for it in r["items"] if it["type"] == "memory"})
    with psycopg.connect(ensure_postgres()) as conn:
        texts, names = {}, {}
        for mid, content, name in conn.execute(
            "SELECT id, content, name FROM memory_message WHERE id = ANY(%s)", [message_ids]
        ):
            texts[mid], names[mid] = content, name
        for mid, text in conn.execute(
            "SELECT id, text FROM memory_memory WHERE id = ANY(%s)", [memory_ids]
        ):
            texts[mid] = text
    return texts, names


def raw_turns() -> tuple[dict, dict]:
    """Every turn's own text by (sample, dia_id), and each sample's speakers."""
    texts, speakers = {}, {}
    for sample in json.loads(DATA.read_text()):
        names = set()
        for _, _, session in turns(sample["conversation"]):
            for turn in session:
                texts[sample["sample_id"], turn["dia_id"]] = turn_text(turn)
                names.add(turn["speaker"])
        speakers[sample["sample_id"]] = names
    return texts, speakers


def main() -> int:
    full = json.loads(Path(sys.argv[1]).read_text())
    rows = [pooled(r) for r in full]
    folds = list(dict.fromkeys(r["sample"] for r in rows))
    text_of = corpus(set(folds))
    questions = list(dict.fromkeys(r["question"] for r in rows))
    packed, asked = token_tables(text_of, questions)
    embedder = get_embedder()
    keys = sorted(text_of)
    turn_vectors = dict(zip(keys, embedder.embed([text_of[k] for k in keys]), strict=True))
    statements = dict(
        zip(questions, embedder.embed([as_statement(q) for q in questions]), strict=True)
    )
    raw, speakers = raw_turns()
    own, speaker = stored_texts(rows)

    def own_holds(row: dict, items: list[dict]) -> list[tuple[str, ...]]:
        """The product's way (memory.retrieval.answers): each item's own text; names known
        from the candidates' speakers and the question's capitalised words."""
        kinds = answers.asked(row["question"])
        known = answers.known_names(row["question"], (speaker.get(it["id"], "") for it in items))
        return [answers.held(kinds, own.get(it["id"], ""), known) for it in items]

    for q in questions[:8]:
        print(f"  {q!r} -> {as_statement(q)!r}")

    def featurize(row: dict, extra: set[str]) -> tuple[np.ndarray, list[dict]]:
        cols, items, src = shipped_columns(row, packed, asked)
        if "answer type" in extra:
            kinds = answers.asked(row["question"])
            known = answers.known_names(row["question"], speakers[row["sample"]])
            their = [answers.held(kinds, raw[row["sample"], d], known) if d else () for d in src]
            for kind in answers.ASKS:
                cols.append(np.array([float(kind in h) for h in their]))
        if "own text" in extra:
            their = own_holds(row, items)
            for kind in answers.ASKS:
                cols.append(np.array([float(kind in h) for h in their]))
        if "statement" in extra:
            s = statements[row["question"]]
            cols.append(
                zscored(
                    np.array([float(turn_vectors[row["sample"], d] @ s) if d else 0.0 for d in src])
                )
            )
        return np.column_stack(cols), items

    first: list[float] = []

    def report(name: str, extra: set[str]) -> dict:
        feats = {id(r): featurize(r, extra) for r in rows}
        per, by_cat, fitted = fitted_held_out(rows, feats)
        each = [v for category in sorted(by_cat) for v in by_cat[category]]
        if not first:
            first.extend(each)
        up = sum(a > b for a, b in zip(each, first, strict=True))
        down = sum(a < b for a, b in zip(each, first, strict=True))
        print(
            f"{name:<34} "
            + " ".join(f"{v:5.1f}" for v in per.values())
            + f"  mean {statistics.fmean(per.values()):.1f}  multi-hop "
            + f"{100 * statistics.fmean(by_cat[1]):.1f}  temporal "
            + f"{100 * statistics.fmean(by_cat[2]):.1f}  open-domain "
            + f"{100 * statistics.fmean(by_cat[3]):.1f}  single-hop "
            + f"{100 * statistics.fmean(by_cat[4]):.1f}"
            + (f"  questions up / down {up} / {down}" if up or down else "")
        )
        for fold, weights in fitted.items():
            print(f"    {fold}: " + " ".join(f"{w:+.3f}" for w in weights[0][1:]))
        return feats

    print("R@10 per fold (" + " ".join(folds) + "), each fold's weights fitted on the other four")
    report("shipped: blend, place, match", set())
    report("+ answer type, the turn's words", {"answer type"})
    product_constants(rows, report("+ answer type, own text (shipped)", {"own text"}))
    report("+ question as a statement", {"statement"})
    report("+ both", {"answer type", "statement"})
    return 0


def product_constants(rows: list[dict], feats: dict) -> None:
    """The shipped form's weights fitted on all five conversations, in the blend's units
    (memory.retrieval.late's constants), with its scale and offset."""
    from sklearn.linear_model import LogisticRegression

    from bench.probe_late import evidence

    x = np.vstack([feats[id(r)][0] for r in rows])
    y = np.concatenate([evidence(r, feats[id(r)][1]) for r in rows])
    mu, sd = x.mean(0), x.std(0) + 1e-9
    model = LogisticRegression(C=0.1, max_iter=2000).fit((x - mu) / sd, y)
    w = model.coef_[0] / sd
    intercept = float(model.intercept_[0] - (model.coef_[0] * mu / sd).sum())
    print(
        "all five (blend, place, match, " + ", ".join(answers.ASKS) + "):",
        " ".join(f"{v:+.3f}" for v in w / w[0]),
        f"scale {w[0]:.3f}, offset {intercept / w[0]:+.3f}; shipped:",
        f"{late.RANK_WEIGHT:+.3f} {late.TOKEN_WEIGHT:+.3f}",
        " ".join(f"{v:+.3f}" for v in answers.WEIGHTS.values()),
        f"scale {late.SCALE:.3f}, offset {late.OFFSET:+.3f}",
    )


if __name__ == "__main__":
    sys.exit(main())
