"""Replays a learned linear re-ranking of /v1/search's list, leave-one-out, on a saved run.

    .venv/bin/python bench/probe_ltr.py /tmp/d.json

For each conversation, a logistic regression is fitted on the other four conversations' saved
items (the first 100 of each question's list; label: the item's source turn is evidence) over a
handful of features the search has or could have at no extra query, then each question of the
held-out conversation is re-ranked by the fitted probability. Every figure is held out by
construction; the feature sets are fixed before any figure was read:

- blend: the search's blended score and its rank (the baseline's own order, as a feature);
- sides: the cosine, log of the text and vector ranks;
- turn: whether the turn asks ('?'), whether its speaker is the one the question names, the
  share of the question's content words in the turn's own text (not its window);
- opening: whether the turn opens its session (LoCoMo's speakers announce their news there:
  13.7 % of the evidence against 4.6 % of the turns; a trait of how the data was made);
- context: the item's day's share of the top 20's scores (an episode vote), how many of the
  first 5 items lie within two turns of it (same day).
"""

from __future__ import annotations

import json
import math
import re
import statistics
import sys
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.eval_locomo import CATEGORIES  # noqa: E402
from bench.probe_rerank import _turn, _turns, assemble, recall10, weighted  # noqa: E402
from memory.retrieval.terms import STOP_WORDS  # noqa: E402

_WHY = re.compile(r"similarity (-?[\d.]+)")
_TEXT = re.compile(r"full-text rank (\d+)")
_VEC = re.compile(r"vector rank (\d+)")
_WORD = re.compile(r"[a-z0-9']+")
_STOP = STOP_WORDS


def _stem(w: str) -> str:
    for suffix in ("ing", "ed", "es", "s"):
        if w.endswith(suffix) and len(w) - len(suffix) >= 3:
            return w[: -len(suffix)]
    return w


def _day(item) -> str:
    d = item["sources"][0].get("dia_id") or ""
    return d.split(":")[0]


def features(row: dict, sets: tuple[str, ...]) -> tuple[np.ndarray, list[dict]]:
    items = sorted(row["items"], key=weighted, reverse=True)
    speakers = _turns()[1][row["sample"]]
    named = [n for n in speakers if re.search(rf"\b{n}\b", row["question"])]
    qwords = {_stem(w) for w in _WORD.findall(row["question"].lower()) if w not in _STOP}
    qwords -= {n.lower() for n in speakers}
    votes: dict[str, float] = {}
    for it in items[:20]:
        votes[_day(it)] = votes.get(_day(it), 0.0) + weighted(it)
    most = max(votes.values(), default=1.0) or 1.0
    top5 = []
    for it in items[:5]:
        d = it["sources"][0].get("dia_id") or ""
        if ":" in d:
            top5.append((d.split(":")[0], int(d.split(":")[1])))
    out = []
    for rank, it in enumerate(items):
        why = it.get("why") or ""
        sim = float(m[1]) if (m := _WHY.search(why)) else 0.0
        trank = int(m[1]) if (m := _TEXT.search(why)) else 200
        vrank = int(m[1]) if (m := _VEC.search(why)) else 200
        turn = _turn(row, it)
        text = turn["text"] if turn else ""
        own = {_stem(w) for w in _WORD.findall(text.lower())}
        f: list[float] = []
        if "blend" in sets:
            f += [weighted(it), math.log(rank + 1)]
        if "sides" in sets:
            f += [sim, math.log(trank), math.log(vrank), float(it["type"] == "memory")]
        if "asks" in sets or "turn" in sets:
            f += [float("?" in text)]
        if "speaker" in sets or "turn" in sets:
            f += [float(bool(turn) and len(named) == 1 and turn["speaker"] == named[0])]
        if "own" in sets or "turn" in sets:
            f += [len(qwords & own) / len(qwords) if qwords else 0.0]
        if "opening" in sets:
            d = it["sources"][0].get("dia_id") or ""
            f += [float(d.endswith(":1"))]
        if "context" in sets:
            d = it["sources"][0].get("dia_id") or ""
            near = 0
            if ":" in d:
                s, n = d.split(":")[0], int(d.split(":")[1])
                near = sum(1 for s2, n2 in top5 if s2 == s and 0 < abs(n2 - n) <= 2)
            f += [votes.get(_day(it), 0.0) / most, float(near)]
        out.append(f)
    return np.array(out, dtype=np.float64), items


def label(row: dict, item: dict) -> int:
    return int(any(s.get("dia_id") in row["evidence"] for s in item["sources"]))


SETS = {
    "blend only": ("blend",),
    "blend + sides": ("blend", "sides"),
    "blend + turn": ("blend", "turn"),
    "blend + context": ("blend", "context"),
    "blend + asks": ("blend", "asks"),
    "blend + speaker": ("blend", "speaker"),
    "blend + own": ("blend", "own"),
    "blend + opening": ("blend", "opening"),
    "all": ("blend", "sides", "turn", "context"),
}


C = 0.1  # the logistic regression's L2 penalty (1.0 gave the same lists)


def held_out_scores(rows: list[dict], sets: tuple[str, ...]) -> tuple[dict, list]:
    """Each question's R@10 under the model fitted on the other conversations, and each fold's
    weights (per raw feature)."""
    feats = [features(r, sets) for r in rows]
    scores: dict[int, float] = {}
    coefs = []
    for fold in dict.fromkeys(r["sample"] for r in rows):
        train = [i for i, r in enumerate(rows) if r["sample"] != fold]
        x = np.vstack([feats[i][0] for i in train])
        y = np.array([label(rows[i], it) for i in train for it in feats[i][1]])
        mu, sd = x.mean(0), x.std(0) + 1e-9
        model = LogisticRegression(C=C, max_iter=2000).fit((x - mu) / sd, y)
        coefs.append(model.coef_[0] / sd)
        for i, r in enumerate(rows):
            if r["sample"] == fold:
                fitted = model.decision_function((feats[i][0] - mu) / sd)
                key = {id(it): p for it, p in zip(feats[i][1], fitted, strict=True)}
                scores[i] = recall10(r, assemble(feats[i][1], lambda it, key=key: key[id(it)]))
    return scores, coefs


def main() -> int:
    rows = json.loads(Path(sys.argv[1]).read_text())
    folds = list(dict.fromkeys(r["sample"] for r in rows))
    baseline = {i: recall10(r, assemble(r["items"], weighted)) for i, r in enumerate(rows)}
    print(f"{'features':<16} " + " ".join(f"{f:>8}" for f in folds) + "   mean")
    for name, sets in {"baseline": (), **SETS}.items():
        scores, coefs = held_out_scores(rows, sets) if sets else (baseline, [])
        per = [
            100 * statistics.fmean(s for i, s in scores.items() if rows[i]["sample"] == f)
            for f in folds
        ]
        cats = " ".join(
            f"{n} {100 * statistics.fmean(s for i, s in scores.items() if rows[i]['category'] == c):.1f}"
            for c, n in CATEGORIES.items()
        )
        up = sum(scores[i] > baseline[i] for i in scores)
        down = sum(scores[i] < baseline[i] for i in scores)
        print(
            f"{name:<16} " + " ".join(f"{v:8.1f}" for v in per) + f" {statistics.fmean(per):6.1f}"
            f"  ({cats}; questions up {up}, down {down})"
        )
        if coefs:
            ranges = zip(np.min(coefs, 0), np.max(coefs, 0), strict=True)
            print("    weights, per fold:", " ".join(f"[{a:.2f}, {b:.2f}]" for a, b in ranges))
    return 0


if __name__ == "__main__":
    sys.exit(main())
