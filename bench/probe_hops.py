"""Replays multi-hop re-rankings of /v1/search's list on a saved run, fold by fold.

    .venv/bin/python bench/eval_locomo.py --reuse latest --skip-context --limit 100 --dump /tmp/d.json
    .venv/bin/python bench/probe_hops.py /tmp/d.json [family ...]

Families (grids fixed before any figure was read; rows and the leave-one-out choice as
bench/probe_rerank.py's):

- *window decay*: a turn is indexed with two turns either side (memory.retrieval.messages), so
  the turns of one exchange score alike and fill the top ten together. Greedy: an item whose
  source turn lies within `w` turns of one already taken (same session) scores `d` times less
  for each such neighbour. Diversity at the grain of the index's window, not of the day
  (*episode decay*, which pushed single-hop answers below other days' turns).
- *set window decay*: the same for questions that ask for a set only (probe_rerank._AGGREGATE).
- *question penalty*, *question rank*: a turn that asks ('?' at its end, or anywhere) scores
  1 - p times its score, or ranks as if `f` times lower: a question rarely states the fact.
- *session prior*: a session as one retrieval unit (BM25 of its whole text for the question's
  words); each item scores 1 + beta times its session's share of the best session's more.
- *entity hop*: the proper nouns of the first items' own text (a second hop by names) lift
  every later item that names one of them.

None was kept (README, Memory quality, *Multi-hop re-rankings*).
"""

from __future__ import annotations

import functools
import json
import math
import re
import statistics
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.probe_ltr import _WORD, _stem  # noqa: E402
from bench.probe_rerank import (  # noqa: E402
    _AGGREGATE,
    LIMIT,
    MEMORY_WEIGHT,
    Item,
    _turns,
    assemble,
    fold_table,
    memory_weight,
    weighted,
)
from memory.retrieval.terms import STOP_WORDS  # noqa: E402


def _position(dia_id: str | None) -> tuple[str, int] | None:
    if not dia_id or ":" not in dia_id:
        return None
    session, n = dia_id.split(":")
    return session, int(n)


def _near(item: Item, taken: dict[str, set[int]], width: int) -> int:
    """How many taken turns lie within `width` turns of one of the item's source turns."""
    count = 0
    for source in item["sources"]:
        pos = _position(source.get("dia_id"))
        if pos is None:
            continue
        session, n = pos
        count += sum(1 for m in taken.get(session, ()) if m != n and abs(m - n) <= width)
    return count


def window_decay(decay: float, width: int, sets_only: bool = False):
    def rerank(row, items):
        if sets_only and not _AGGREGATE.search(row["question"]):
            return assemble(items, weighted)
        pending = sorted(items, key=weighted, reverse=True)
        taken: dict[str, set[int]] = {}
        results: list[Item] = []
        covered: set[str] = set()
        while pending and len(results) < LIMIT:
            best = max(
                range(len(pending)),
                key=lambda i: weighted(pending[i]) * decay ** _near(pending[i], taken, width),
            )
            item = pending.pop(best)
            ids = {s["id"] for s in item["sources"]}
            if ids and ids <= covered:
                continue
            covered |= ids
            for source in item["sources"]:
                pos = _position(source.get("dia_id"))
                if pos:
                    taken.setdefault(pos[0], set()).add(pos[1])
            results.append(item)
        return results

    return rerank


FAMILIES = {
    "window decay": {
        f"window decay {d} w{w}": window_decay(d, w) for d in (0.95, 0.9, 0.8, 0.7) for w in (1, 2)
    },
    "set window decay": {
        f"set window decay {d} w{w}": window_decay(d, w, True)
        for d in (0.95, 0.9, 0.8, 0.7)
        for w in (1, 2)
    },
}


def _text(row, item) -> str:
    from bench.probe_rerank import _turn

    turn = _turn(row, item)
    return turn["text"] if turn else ""


def question_penalty(p: float, mode: str):
    """A turn that asks (its own text ends with '?', or any '?') scores 1 - p times its score:
    a question rarely states the fact it is about; the answer after it does."""

    def asks(text: str) -> bool:
        text = text.split(" [shares a photo")[0].strip()
        return text.endswith("?") if mode == "ends" else "?" in text

    def rerank(row, items):
        return assemble(
            items,
            lambda it: (
                weighted(it) * (1 - p if it["type"] == "message" and asks(_text(row, it)) else 1)
            ),
        )

    return rerank


FAMILIES["question penalty"] = {
    f"question penalty {p} {m}": question_penalty(p, m)
    for p in (0.05, 0.1, 0.2, 0.3)
    for m in ("ends", "any")
}


def question_rank(factor: float, mode: str):
    """A turn that asks ranks as if it were `factor` times lower in the list (its rank in the
    blend times `factor`; ties keep the blend's order)."""

    def asks(text: str) -> bool:
        text = text.split(" [shares a photo")[0].strip()
        return text.endswith("?") if mode == "ends" else "?" in text

    def rerank(row, items):
        order = sorted(items, key=weighted, reverse=True)
        keyed = {
            id(it): (rank + 1) * (factor if it["type"] == "message" and asks(_text(row, it)) else 1)
            for rank, it in enumerate(order)
        }
        return assemble(order, lambda it: -keyed[id(it)])

    return rerank


FAMILIES["question rank"] = {
    f"question rank x{f} {m}": question_rank(f, m) for f in (1.5, 2, 3, 4) for m in ("ends", "any")
}


@functools.cache
def _sessions(sample: str) -> dict[str, Counter]:
    """Each session's words (stemmed as probe_ltr does) of one conversation: a session as one
    retrieval unit, the text a session summary would at most hold."""
    words: dict[str, Counter] = {}
    for (s, dia_id), turn in _turns()[0].items():
        if s == sample:
            session = dia_id.split(":")[0]
            words.setdefault(session, Counter()).update(
                _stem(w) for w in _WORD.findall(turn["text"].lower())
            )
    return words


def session_scores(row: dict) -> dict[str, float]:
    """BM25 of each session's whole text for the question's content words, over the best."""
    sessions = _sessions(row["sample"])
    speakers = {n.lower() for n in _turns()[1][row["sample"]]}
    query = {
        _stem(w) for w in _WORD.findall(row["question"].lower()) if w not in STOP_WORDS
    } - speakers
    n = len(sessions)
    avglen = statistics.fmean(sum(c.values()) for c in sessions.values())
    scores = {}
    for session, counts in sessions.items():
        length = sum(counts.values())
        total = 0.0
        for w in query:
            df = sum(1 for c in sessions.values() if w in c)
            tf = counts.get(w, 0)
            if tf:
                idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
                total += idf * tf * 2.2 / (tf + 1.2 * (0.25 + 0.75 * length / avglen))
        scores[session] = total
    best = max(scores.values(), default=0.0) or 1.0
    return {k: v / best for k, v in scores.items()}


def session_prior(beta: float, sets_only: bool = False):
    """Each item scores 1 + beta * its session's BM25 (over the best session's) times more."""

    def rerank(row, items):
        if sets_only and not _AGGREGATE.search(row["question"]):
            return assemble(items, weighted)
        prior = session_scores(row)

        def key(it):
            d = it["sources"][0].get("dia_id") or ""
            return weighted(it) * (1 + beta * prior.get(d.split(":")[0], 0.0))

        return assemble(items, key)

    return rerank


FAMILIES["session prior"] = {
    f"session prior {b}{' sets' if o else ''}": session_prior(b, o)
    for b in (0.05, 0.1, 0.2, 0.3)
    for o in (False, True)
}


_PROPER = re.compile(r"(?<![.!?]\s)(?<!^)\b[A-Z][a-z]{2,}\b")


def entities(text: str, leave_out: set[str]) -> set[str]:
    """Capitalized words not opening a sentence (names of places, people, titles), lower-cased."""
    text = text.split(" [shares a photo")[0]
    return {w.lower() for w in _PROPER.findall(text)} - leave_out


def entity_hop(gamma: float, top: int, sets_only: bool = False):
    """A second hop by names: the proper nouns of the first `top` items' own text (not the
    speakers', not the question's) lift every later item whose own text names one of them by
    1 + gamma ("Which city have both Jean and John visited?": Rome in one finds Rome in the
    other)."""

    def rerank(row, items):
        if sets_only and not _AGGREGATE.search(row["question"]):
            return assemble(items, weighted)
        order = sorted(items, key=weighted, reverse=True)
        skip = {n.lower() for n in _turns()[1][row["sample"]]}
        skip |= {w.lower() for w in re.findall(r"[A-Za-z]+", row["question"])}
        skip |= {"caro", "mel", "hey", "wow", "thanks", "yeah", "glad", "congrats", "awesome"}
        named: set[str] = set()
        for it in order[:top]:
            named |= entities(_text(row, it), skip)
        if not named:
            return assemble(items, weighted)
        lifted = {id(it) for it in order[top:] if named & entities(_text(row, it), skip)}
        return assemble(order, lambda it: weighted(it) * (1 + gamma if id(it) in lifted else 1))

    return rerank


FAMILIES["entity hop"] = {
    f"entity hop {g} top {k}{' sets' if o else ''}": entity_hop(g, k, o)
    for g in (0.05, 0.1, 0.2)
    for k in (3, 5)
    for o in (False, True)
}


def main() -> int:
    rows = json.loads(Path(sys.argv[1]).read_text())
    wanted = sys.argv[2:]
    for family, changes in FAMILIES.items():
        if wanted and family not in wanted:
            continue
        print(f"\n{family}")
        fold_table(rows, {"baseline": memory_weight(MEMORY_WEIGHT), **changes})
    return 0


if __name__ == "__main__":
    sys.exit(main())
