"""Precision and recall of the offline extractor on a labelled set (no server, no database;
the remark filter embeds with the int8 ONNX model, as the worker does by default).

bench/data/extractor-labels.json: first-person statements, each with the facts it should yield
(third person, subject "User", dated against "today"), and negatives that should yield none
(requests, questions, small talk, statements about nothing of the user's). A fact counts when
the extractor writes exactly it (case and final period aside). Prints precision, recall, the
negatives that produced something, and every miss.

That set was written beside the fixes it checks. bench/data/extractor-heldout.json holds
statements written later, before the extractor ever ran on them ("dev": used to find faults;
"heldout": scored only after the fixes), judged more loosely, since their wording is not the
extractor's: a written fact counts when it is well formed (starts with the subject, no
first-person word left: "We adopted a cat" is not a fact about the user) and holds every word
of one expected fact.

    .venv/bin/python bench/eval_extractor.py
"""

from __future__ import annotations

import datetime as dt
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from memory.background.extraction.offline import extract  # noqa: E402
from memory.background.extraction.remarks import without_remarks  # noqa: E402
from memory.text import memory_search_text  # noqa: E402

MODEL = "all-MiniLM-L6-v2"

LABELS = ROOT / "bench" / "data" / "extractor-labels.json"
UNSEEN = ROOT / "bench" / "data" / "extractor-heldout.json"
FIRST_PERSON = re.compile(r"\b(?:I|me|my|mine|we|us|our|ours|myself|ourselves)\b", re.I)


def norm(text: str) -> str:
    return " ".join(text.split()).rstrip(".").lower()


def written(text: str, subject: str, today: dt.date, embedder) -> list[str]:
    """The facts the worker would keep: the extractor's, less remarks when `embedder` is given
    (vectors of the dated text, as memory.background.extraction.runner embeds them)."""
    facts = extract(text, subject=subject, today=today)
    if embedder is None or not facts:
        return [f.text for f in facts]
    vectors = embedder.embed(
        [memory_search_text(text=f.text, when=f.event_date or today) for f in facts]
    )
    kept, _ = without_remarks(facts, vectors, [f.slot_touched for f in facts], embedder)
    return [f.text for f in kept]


def main() -> int:
    from memory.embeddings.onnx import QuantizedOnnxEmbedder

    embedder = QuantizedOnnxEmbedder(MODEL)
    labels = json.loads(LABELS.read_text())
    today = dt.date.fromisoformat(labels["today"])
    subject = labels["subject"]
    tp = predicted = expected = 0
    false_negatives, false_positives = [], []
    for row in labels["statements"]:
        got = written(row["text"], subject, today, embedder)
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
        f"{negatives} negatives); facts expected {expected}, written {predicted} "
        "(with the remark filter, whose fact examples these are)"
    )
    print(
        f"precision {100 * tp / max(predicted, 1):.1f} %  recall {100 * tp / max(expected, 1):.1f} %"
    )
    for text, fact in false_positives:
        print(f"  wrote  {fact!r}  from {text!r}")
    for text, fact, got in false_negatives:
        print(f"  missed {fact!r}  from {text!r} (wrote {got})")
    unseen = json.loads(UNSEEN.read_text())
    for part in (name for name, rows in unseen.items() if isinstance(rows, list)):  # in order
        for filtered in (None, embedder):
            score_unseen(
                part,
                unseen[part],
                dt.date.fromisoformat(unseen["today"]),
                unseen["subject"],
                filtered,
            )
    return 0


def well_formed(fact: str, subject: str) -> bool:
    # "I" alone is a word here; "User" never contains one
    return fact.startswith(subject) and not FIRST_PERSON.search(fact.replace(subject, ""))


def score_unseen(part: str, rows: list[dict], today: dt.date, subject: str, embedder) -> None:
    tp = predicted = expected = 0
    wrong: list[str] = []
    for row in rows:
        got = written(row["text"], subject, today, embedder)
        open_facts = [list(words) for words in row["facts"]]
        predicted += len(got)
        expected += len(open_facts)
        for fact in got:
            match = next(
                (
                    words
                    for words in open_facts
                    if well_formed(fact, subject) and all(w.lower() in fact.lower() for w in words)
                ),
                None,
            )
            if match is None:
                wrong.append(f"  wrote  {fact!r}  from {row['text']!r}")
            else:
                open_facts.remove(match)
                tp += 1
        wrong += [f"  missed {words}  from {row['text']!r} (wrote {got})" for words in open_facts]
    negatives = sum(1 for r in rows if not r["facts"])
    print(
        f"\nunseen statements, {part}, {'remark filter' if embedder else 'patterns only'}: "
        f"{len(rows)} ({negatives} negatives); facts expected "
        f"{expected}, written {predicted}; precision {100 * tp / max(predicted, 1):.1f} %  "
        f"recall {100 * tp / max(expected, 1):.1f} %"
    )
    print("\n".join(wrong))


if __name__ == "__main__":
    sys.exit(main())
