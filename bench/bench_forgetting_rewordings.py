"""How well `without_forgotten` finds a forgotten fact said in other words: precision and
recall over bench/forgetting_rewordings.py, each sentence read as a one-sentence summary of the
user alice who forgot the fact, through memory.forgotten itself.

    .venv/bin/python bench/bench_forgetting_rewordings.py [--sweep]

Prints, for the tuning half (even facts) and the held-out half (odd facts), the rule before
(the extractor's test alone: the same text or cosine >= 0.92) and the rule now (with
rewording.reworded), and each sentence the rule now gets wrong. --sweep: the tuning half's
scores over REWORDED thresholds (how it was chosen).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.base")
os.environ.setdefault("DATABASE_URL", "postgres://bench@localhost/unused")  # not connected to
os.environ.setdefault("REDIS_URL", "redis://localhost/13")

from bench.forgetting_rewordings import FACTS, USER  # noqa: E402


def verdicts(half: int) -> list[tuple[bool, bool, str, str]]:
    """(labelled a rewording, left out by without_forgotten, fact, sentence or clause) of one
    half."""
    from accounts.models import Workspace
    from memory.embeddings import get_embedder
    from memory.forgotten import Forgotten, normalized, without_forgotten

    subjects = frozenset({USER})
    out = []
    for n, (fact, rewordings, others) in enumerate(FACTS):
        if n % 2 != half:
            continue
        key = normalized(fact, subjects)
        vector = get_embedder().embed([key]).tolist()
        forgotten = Forgotten(Workspace(id="ws_bench"), USER, [key], vector, frozenset({"s"}))
        items = [(True, item) for item in rewordings] + [(False, item) for item in others]
        texts = [item if isinstance(item, str) else " ".join(item) for _, item in items]
        for (label, item), left in zip(items, without_forgotten(forgotten, texts), strict=True):
            # each part: the last one labelled, the ones before it to be kept; a part is left
            # out when its words are gone (its end mark aside: a clause may end the sentence)
            parts = [item] if isinstance(item, str) else list(item)
            for n, part in enumerate(parts):
                gone = part.rstrip(".;,!? ") not in left
                out.append((label and n == len(parts) - 1, gone, fact, part))
    return out


def scores(rows: list[tuple[bool, bool, str, str]]) -> str:
    tp = sum(1 for label, out, *_ in rows if label and out)
    fp = sum(1 for label, out, *_ in rows if not label and out)
    fn = sum(1 for label, out, *_ in rows if label and not out)
    precision = tp / (tp + fp) if tp + fp else 1.0
    return (
        f"precision {precision:.3f} ({tp}/{tp + fp}), recall {tp / (tp + fn):.3f} ({tp}/{tp + fn})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sweep", action="store_true")
    args = parser.parse_args()
    import django

    django.setup()
    from memory import forgotten
    from memory.background.extraction import rewording

    forgotten.user_subjects = lambda **kwargs: frozenset({USER})  # no database: alice's names
    if args.sweep:
        chosen = rewording.REWORDED
        for threshold in (0.70, 0.72, 0.74, 0.75, 0.76, 0.78, 0.80, 0.85, 0.90, 0.92):
            rewording.REWORDED = threshold
            print(f"REWORDED {threshold:.2f}, tuning half: {scores(verdicts(0))}")
        rewording.REWORDED = chosen
    for half, name in ((0, "tuning"), (1, "held-out")):
        now = verdicts(half)
        chosen, rewording.REWORDED = rewording.REWORDED, 2.0  # never: the extractor's test alone
        before = verdicts(half)
        rewording.REWORDED = chosen
        print(f"{name} half, before: {scores(before)}")
        print(f"{name} half, now (REWORDED {chosen}): {scores(now)}")
        for label, out, fact, sentence in now:
            if label != out:
                kind = "missed" if label else "left out wrongly"
                print(f"  {kind}: {sentence!r} (forgotten: {fact!r})")


if __name__ == "__main__":
    main()
