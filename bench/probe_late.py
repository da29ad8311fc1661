"""Replays the token match (memory.retrieval.late) on a saved run, each fold held out.

    ENGRAM_SEARCH_TOKEN_MATCH=false \
        .venv/bin/python bench/eval_locomo.py --keep --skip-context --limit 100 --dump /tmp/d.json
    .venv/bin/python bench/probe_late.py /tmp/d.json

(the dump of the blend alone: with the setting on, /v1/search's scores are the re-ranking's.)

A stored vector is the mean of its text's token vectors, so the one word of a long turn that
answers a question is averaged away. Late interaction (ColBERT's MaxSim) keeps the tokens:
each word of the question finds its most similar token of the turn, weighted by its rarity
among the candidates. MiniLM was trained for mean pooling, not for this; whether its token
vectors carry the signal is what this measures, with the product's own functions: every turn
embedded as the worker embeds it (memory.text.message_search_text, the configured embedder's
`embed_with_tokens`), packed as the worker stores it (signs), matched as /v1/search matches
(`late.matches`), on the candidates /v1/search re-ranks (late.POOL of each kind). A memory takes
its first source turn's match.

Rows (R@10 per conversation, as bench/probe_rerank.py's):
- `λ` rows: the blend plus λ x the z-scored match, λ chosen per fold (the leave-one-out line);
- `learned, held out`: for each conversation, a logistic regression on the other four's
  candidates (blend, log of its place in the blend's order, the z-scored match; label: the
  candidate's source turn is evidence), scored on that one — held out by construction;
- `product constants`: late.RANK_WEIGHT / TOKEN_WEIGHT, fitted on all five (what ships);
then each fold's fitted weights, divided by the blend's, beside the product's.

With `--tried`, the changes tried on top of it (thirty-sixth session; none kept), each one more
feature fitted fold by fold as above, held out by construction: set questions re-ranked from
100 candidates of each kind (probe_rerank's cue list) with their own weights; a turn within two
of one of the three first items of the shipped order (same day); token feedback (the question
plus the ten rarest tokens of the three first items, ColBERT-PRF's idea, as its own match).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.base")
# settings for the embedder alone: nothing here opens a connection
os.environ.setdefault("DATABASE_URL", "postgres://probe@localhost/probe")
os.environ.setdefault("REDIS_URL", "redis://localhost/0")

import django  # noqa: E402

django.setup()

from bench.eval_locomo import DATA, turn_text, turns  # noqa: E402
from bench.probe_rerank import assemble, fold_table, recall10, weighted  # noqa: E402
from memory.embeddings import get_embedder  # noqa: E402
from memory.embeddings.base import Tokens  # noqa: E402
from memory.retrieval import late  # noqa: E402
from memory.text import message_search_text  # noqa: E402


def corpus(samples: set[str]) -> dict[tuple[str, str], str]:
    """Every turn of the samples as the worker embeds it, by (sample, dia_id)."""
    out = {}
    for sample in json.loads(DATA.read_text()):
        if sample["sample_id"] not in samples:
            continue
        for _, date, session in turns(sample["conversation"]):
            when = dt.datetime.fromisoformat(date.replace("Z", "+00:00"))
            for turn in session:
                out[sample["sample_id"], turn["dia_id"]] = message_search_text(
                    role="user", name=turn["speaker"], content=turn_text(turn), created_at=when
                )
    return out


def token_tables(text_of: dict, questions: list[str]) -> tuple[dict, dict]:
    """Every turn's tokens packed as the worker stores them, by (sample, dia_id), and every
    question's tokens as /v1/search takes them, by question."""
    keys = sorted(text_of)
    embedder = get_embedder()
    _, turn_tokens = embedder.embed_with_tokens([text_of[k] for k in keys])
    packed = {k: late.pack(t) for k, t in zip(keys, turn_tokens, strict=True) if t is not None}
    _, question_tokens = embedder.embed_with_tokens(questions)
    return packed, dict(zip(questions, question_tokens, strict=True))


def pooled(row: dict) -> dict:
    """The row with the candidates /v1/search re-ranks: late.POOL of each kind, by score."""
    items = sorted(row["items"], key=lambda it: it["score"], reverse=True)
    kept = [it for it in items if it["type"] == "memory"][: late.POOL]
    kept += [it for it in items if it["type"] == "message"][: late.POOL]
    return {**row, "items": kept}


def shipped_columns(row: dict, packed: dict, asked: dict) -> tuple[list, list[dict], list]:
    """The token match's columns (blend, log place, z-scored match) of a row's candidates in
    the blend's order, the candidates, and each one's source turn (dia_id or None)."""
    items = sorted(row["items"], key=weighted, reverse=True)
    src = [it["sources"][0].get("dia_id") if it["sources"] else None for it in items]
    match = late.matches(asked[row["question"]], {d: packed[row["sample"], d] for d in src if d})
    cols = [
        np.array([weighted(it) for it in items]),
        np.log1p(np.arange(len(items))),
        zscored(np.array([match.get(d, 0.0) if d else 0.0 for d in src])),
    ]
    return cols, items, src


def evidence(row: dict, items: list[dict]) -> np.ndarray:
    return np.array(
        [int(any(s.get("dia_id") in row["evidence"] for s in it["sources"])) for it in items]
    )


def logistic(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The regression's weights, divided by the blend's (the first column's)."""
    from sklearn.linear_model import LogisticRegression

    mu, sd = x.mean(0), x.std(0) + 1e-9
    model = LogisticRegression(C=0.1, max_iter=2000).fit((x - mu) / sd, y)
    w = model.coef_[0] / sd
    return w / w[0]


def zscored(values: np.ndarray) -> np.ndarray:
    return (values - values.mean()) / (values.std() or 1.0)


def fitted_held_out(rows: list[dict], feats: dict, groups=lambda row: 0):
    """For each conversation, weights fitted (per group of questions) on the other four's
    candidates, and its questions' R@10 with them: (R@10 per fold, the scores by category,
    each fold's weights by group). `feats[id(row)]` is (features, items) in the blend's order."""
    folds = list(dict.fromkeys(r["sample"] for r in rows))
    per, by_category, fitted = {}, {}, {}
    for fold in folds:
        weights = {}
        for group in {groups(r) for r in rows}:
            train = [r for r in rows if r["sample"] != fold and groups(r) == group]
            x = np.vstack([feats[id(r)][0] for r in train])
            y = np.concatenate([evidence(r, feats[id(r)][1]) for r in train])
            weights[group] = logistic(x, y)
        fitted[fold] = weights
        scores = []
        for r in (r for r in rows if r["sample"] == fold):
            x, items = feats[id(r)]
            key = dict(zip(map(id, items), x @ weights[groups(r)], strict=True))
            scores.append(recall10(r, assemble(items, lambda it, key=key: key[id(it)])))
            by_category.setdefault(r["category"], []).append(scores[-1])
        per[fold] = 100 * statistics.fmean(scores)
    return per, by_category, fitted


def tried(full: list[dict], packed: dict, asked: dict) -> None:
    """The changes tried on top of the shipped re-ranking, each held out by construction."""
    from bench.probe_rerank import _AGGREGATE

    def pool(row: dict, k: int) -> dict:
        items = sorted(row["items"], key=lambda it: it["score"], reverse=True)
        kept = [it for it in items if it["type"] == "memory"][:k]
        return {**row, "items": kept + [it for it in items if it["type"] == "message"][:k]}

    def place(dia_id: str) -> tuple[int, int]:
        day, turn = dia_id[1:].split(":")
        return int(day), int(turn)

    def featurize(row: dict, extra: str) -> tuple[np.ndarray, list[dict]]:
        items = sorted(row["items"], key=weighted, reverse=True)
        src = [it["sources"][0].get("dia_id") if it["sources"] else None for it in items]
        blobs = {d: packed[row["sample"], d] for d in src if d}
        question = asked[row["question"]]
        match = late.matches(question, blobs)
        z = zscored(np.array([match.get(d, 0.0) if d else 0.0 for d in src]))
        cols = [np.array([weighted(it) for it in items]), np.log1p(np.arange(len(items))), z]
        shipped = np.column_stack(cols) @ np.array([1.0, late.RANK_WEIGHT, late.TOKEN_WEIGHT])
        first = [src[i] for i in np.argsort(-shipped) if src[i]][:3]
        if extra == "near the first three":
            heads = [place(d) for d in first]
            cols.append(
                np.array(
                    [
                        float(
                            bool(d)
                            and any(
                                h[0] == place(d)[0] and 0 < abs(h[1] - place(d)[1]) <= 2
                                for h in heads
                            )
                        )
                        for d in src
                    ]
                )
            )
        elif extra == "token feedback":
            dims = question.vectors.shape[1]
            counts: dict[int, int] = {}
            for blob in blobs.values():
                for i in set(late.unpack(blob, dims)[0].tolist()):
                    counts[i] = counts.get(i, 0) + 1
            asked_ids = set(question.ids.tolist())
            rarest: dict[int, tuple[float, np.ndarray]] = {}
            for d in dict.fromkeys(first):
                ids, vectors = late.unpack(blobs[d], dims)
                for i, v in zip(ids.tolist(), vectors, strict=True):
                    if i not in asked_ids and i >= 1000:  # below: marks and pieces of none
                        rarest[i] = (math.log((len(blobs) + 1) / (counts[i] + 0.5)), v)
            chosen = sorted(rarest.values(), key=lambda t: -t[0])[:10]
            if chosen:
                fed = Tokens(
                    ids=np.zeros(len(chosen), dtype=np.int64),  # every piece weighs alike
                    vectors=np.stack([v for _, v in chosen]) * math.sqrt(dims),
                    words=np.ones(len(chosen), dtype=bool),
                )
                more = late.matches(fed, blobs)
                cols.append(zscored(np.array([more.get(d, 0.0) if d else 0.0 for d in src])))
            else:
                cols.append(np.zeros(len(items)))
        return np.column_stack(cols), items

    def held_out(name: str, rows: list[dict], extra: str, groups) -> None:
        feats = {id(r): featurize(r, extra) for r in rows}
        per, by_cat, _ = fitted_held_out(rows, feats, groups)
        print(
            f"{name:<44} "
            + " ".join(f"{v:5.1f}" for v in per.values())
            + f"  mean {statistics.fmean(per.values()):.1f}  multi-hop "
            + f"{100 * statistics.fmean(by_cat[1]):.1f}  open-domain "
            + f"{100 * statistics.fmean(by_cat[3]):.1f}  single-hop "
            + f"{100 * statistics.fmean(by_cat[4]):.1f}"
        )

    def asks_for_a_set(row: dict) -> bool:
        return bool(_AGGREGATE.search(row["question"]))

    print("\ntried (R@10 per fold, each fold's weights fitted on the other four)")
    shipped = [pool(r, late.POOL) for r in full]
    held_out("shipped: blend, place, match", shipped, "", lambda r: 0)
    deeper = [pool(r, 100 if asks_for_a_set(r) else late.POOL) for r in full]
    held_out("set questions from 100 of each kind", deeper, "", asks_for_a_set)
    held_out("+ near the first three", shipped, "near the first three", lambda r: 0)
    held_out("+ token feedback", shipped, "token feedback", lambda r: 0)


def main() -> int:
    full = json.loads(Path(sys.argv[1]).read_text())
    rows = [pooled(r) for r in full]
    folds = list(dict.fromkeys(r["sample"] for r in rows))
    packed, asked = token_tables(
        corpus(set(folds)), list(dict.fromkeys(r["question"] for r in rows))
    )

    def features(row: dict) -> tuple[np.ndarray, list[dict]]:
        """(blend, log place, z-scored match) per candidate, in the blend's order."""
        cols, items, _ = shipped_columns(row, packed, asked)
        return np.column_stack(cols), items

    feats = {id(r): features(r) for r in rows}

    def linear(w: np.ndarray):
        def rerank(row: dict, given: list) -> list:
            x, items = feats[id(row)]
            score = {id(it): s for it, s in zip(items, x @ w, strict=True)}
            return assemble(items, lambda it: score[id(it)])

        return rerank

    changes = {"baseline": linear(np.array([1.0, 0.0, 0.0]))}
    for lam in (0.05, 0.1, 0.2, 0.3):
        changes[f"λ {lam} x match"] = linear(np.array([1.0, 0.0, lam]))
    fold_table(rows, changes)

    def fitted(train: list[dict]) -> np.ndarray:
        x = np.vstack([feats[id(r)][0] for r in train])
        y = np.concatenate([evidence(r, feats[id(r)][1]) for r in train])
        return logistic(x, y)

    held: dict[str, float] = {}
    print("\nlearned, held out (each fold's weights fitted on the other four; / the blend's)")
    for fold in folds:
        w = fitted([r for r in rows if r["sample"] != fold])
        rerank = linear(w)
        mine = [r for r in rows if r["sample"] == fold]
        held[fold] = 100 * statistics.fmean(recall10(r, rerank(r, r["items"])) for r in mine)
        print(f"  {fold}: place {w[1]:+.3f}, match {w[2]:+.3f}; held-out R@10 {held[fold]:.1f}")
    print(f"  mean of the held-out folds: {statistics.fmean(held.values()):.1f}")
    everything = fitted(rows)
    print(
        f"all five: place {everything[1]:+.3f}, match {everything[2]:+.3f}; "
        f"product constants: place {late.RANK_WEIGHT:+.3f}, match {late.TOKEN_WEIGHT:+.3f}"
    )
    fold_table(
        rows,
        {
            "baseline": linear(np.array([1.0, 0.0, 0.0])),
            "product constants": linear(np.array([1.0, late.RANK_WEIGHT, late.TOKEN_WEIGHT])),
        },
    )
    if "--tried" in sys.argv:
        tried(full, packed, asked)
    return 0


if __name__ == "__main__":
    sys.exit(main())
