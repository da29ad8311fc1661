"""Precision and recall of the offline extractor on a labelled set (no server, no database).

bench/data/extractor-labels.json: first-person statements, each with the facts it should yield
(third person, subject "User", dated against "today"), and negatives that should yield none
(requests, questions, small talk, statements about nothing of the user's). A fact counts when
the extractor writes exactly it (case and final period aside). Prints precision, recall, the
negatives that produced something, and every miss.

    .venv/bin/python bench/eval_extractor.py
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from memory.background.extraction.offline import extract  # noqa: E402

LABELS = ROOT / "bench" / "data" / "extractor-labels.json"


def norm(text: str) -> str:
    return " ".join(text.split()).rstrip(".").lower()


def main() -> int:
    labels = json.loads(LABELS.read_text())
    today = dt.date.fromisoformat(labels["today"])
    subject = labels["subject"]
    tp = predicted = expected = 0
    false_negatives, false_positives = [], []
    for row in labels["statements"]:
        got = [f.text for f in extract(row["text"], subject=subject, today=today)]
        want = {norm(f) for f in row["facts"]}
        hits = {norm(g) for g in got} & want
        tp += len(hits)
        predicted += len(got)
        expected += len(want)
        for fact in row["facts"]:
            if norm(fact) not in hits:
                false_negatives.append((row["text"], fact, got))
        for fact in got:
            if norm(fact) not in want:
                false_positives.append((row["text"], fact))
    statements = labels["statements"]
    negatives = sum(1 for r in statements if not r["facts"])
    print(
        f"labelled statements: {len(statements)} ({len(statements) - negatives} with facts, "
        f"{negatives} negatives); facts expected {expected}, written {predicted}"
    )
    print(
        f"precision {100 * tp / max(predicted, 1):.1f} %  recall {100 * tp / max(expected, 1):.1f} %"
    )
    for text, fact in false_positives:
        print(f"  wrote  {fact!r}  from {text!r}")
    for text, fact, got in false_negatives:
        print(f"  missed {fact!r}  from {text!r} (wrote {got})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
