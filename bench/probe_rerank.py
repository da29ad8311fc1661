"""Replays search-time re-rankings of /v1/search's list on a saved run, fold by fold.

    .venv/bin/python bench/eval_locomo.py --keep --skip-context --limit 100 --dump /tmp/d.json
    .venv/bin/python bench/probe_rerank.py /tmp/d.json

Each family of changes is a few settings of one idea applied to the saved items (the first
`limit` 100 of each question's list); each row gives every conversation's R@10 (its
leave-one-out fold), then the leave-one-out choice (bench/eval_locomo.leave_one_out): for each
conversation, the setting with the best mean on the other four, scored on that one. The
baseline row re-assembles the list as memory.retrieval.search.search does (a memory's score
weighed by fusion.MEMORY_WEIGHT; an item whose source messages all rank above it left out), and
reproduces the live run's figures exactly; the episode-decay rows match live runs under that
change (2026-12-03: 0.9 and 0.8 gave 77.7 and 74.1 live, 77.7 and 74.3 here). The ideas, and
why none was kept, are in README, Memory quality.
"""

from __future__ import annotations

import calendar
import functools
import json
import re
import statistics
import sys
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.eval_locomo import CATEGORIES, DATA, leave_one_out  # noqa: E402

MEMORY_WEIGHT = 0.85  # memory.retrieval.fusion.MEMORY_WEIGHT
LIMIT = 20

Item = dict
Rerank = Callable[[dict, list[Item]], list[Item]]


def weighted(item: Item, memory_weight: float = MEMORY_WEIGHT) -> float:
    return item["score"] * (memory_weight if item["type"] == "memory" else 1.0)


def episode(item: Item) -> tuple[str, date]:
    """The conversation and day of an item's first source."""
    source = item["sources"][0]
    return source["conversation_id"], datetime.fromtimestamp(source["created_at"], UTC).date()


def assemble(items: list[Item], key: Callable[[Item], float]) -> list[Item]:
    results: list[Item] = []
    covered: set[str] = set()
    for item in sorted(items, key=key, reverse=True):
        ids = {s["id"] for s in item["sources"]}
        if ids and ids <= covered:
            continue
        covered |= ids
        results.append(item)
        if len(results) == LIMIT:
            break
    return results


def memory_weight(w: float) -> Rerank:
    return lambda row, items: assemble(items, lambda it: weighted(it, w))


def episode_decay(decay: float, free: int) -> Rerank:
    """Greedy: each item already taken from an episode beyond the first `free` multiplies the
    next one's score from that episode by `decay` (session diversity, for multi-hop)."""

    def rerank(row, items):
        pending = sorted(items, key=weighted, reverse=True)
        taken: dict = {}
        results: list[Item] = []
        covered: set[str] = set()
        while pending and len(results) < LIMIT:

            def adjusted(it):
                return weighted(it) * decay ** max(0, taken.get(episode(it), 0) - free + 1)

            item = pending.pop(max(range(len(pending)), key=lambda i: adjusted(pending[i])))
            ids = {s["id"] for s in item["sources"]}
            if ids and ids <= covered:
                continue
            covered |= ids
            taken[episode(item)] = taken.get(episode(item), 0) + 1
            results.append(item)
        return results

    return rerank


def episode_vote(beta: float, top: int) -> Rerank:
    """Each item's score times 1 + beta * its episode's share of the top items' scores (beta > 0:
    the episode prior of a hierarchical search; beta < 0: soft diversity)."""

    def rerank(row, items):
        ranked = sorted(items, key=weighted, reverse=True)
        votes: dict = {}
        for it in ranked[:top]:
            votes[episode(it)] = votes.get(episode(it), 0.0) + weighted(it)
        most = max(votes.values(), default=1.0) or 1.0
        return assemble(
            items, lambda it: weighted(it) * (1 + beta * votes.get(episode(it), 0) / most)
        )

    return rerank


MONTHS = {m.lower(): i for i, m in enumerate(calendar.month_name) if m}
_M = "|".join(MONTHS)
_DAY = re.compile(rf"\b(\d{{1,2}})(?:st|nd|rd|th)?\s+({_M}),?\s+(\d{{4}})\b", re.I)
_DAY_US = re.compile(rf"\b({_M})\s+(\d{{1,2}})(?:st|nd|rd|th)?,?\s*(\d{{4}})\b", re.I)
_MONTH = re.compile(rf"\b({_M}),?\s+(\d{{4}})\b", re.I)
_YEAR = re.compile(r"\b(?:in|of|during)\s+((?:19|20)\d\d)\b", re.I)


def named_period(question: str) -> tuple[date, date] | None:
    """The day (± 1), month or year a question names, if any."""
    if m := _DAY.search(question):
        day = date(int(m[3]), MONTHS[m[2].lower()], int(m[1]))
    elif m := _DAY_US.search(question):
        day = date(int(m[3]), MONTHS[m[1].lower()], int(m[2]))
    elif m := _MONTH.search(question):
        year, month = int(m[2]), MONTHS[m[1].lower()]
        return date(year, month, 1), date(year, month, calendar.monthrange(year, month)[1])
    elif m := _YEAR.search(question):
        return date(int(m[1]), 1, 1), date(int(m[1]), 12, 31)
    else:
        return None
    return day - timedelta(days=1), day + timedelta(days=1)


def date_boost(gamma: float, pool: int) -> Rerank:
    """A question that names a date: items said in that period score 1 + gamma times more,
    from a pool of its first `pool` items."""

    def rerank(row, items):
        period = named_period(row["question"])
        if not period:
            return assemble(items, weighted)
        return assemble(
            items[:pool],
            lambda it: (
                weighted(it) * (1 + gamma if period[0] <= episode(it)[1] <= period[1] else 1)
            ),
        )

    return rerank


@functools.cache
def _turns() -> tuple[dict[tuple[str, str], dict], dict[str, tuple[str, str]]]:
    """Every LoCoMo turn by (sample, dia_id), and each sample's two speakers."""
    turns, speakers = {}, {}
    for sample in json.loads(DATA.read_text()):
        conversation = sample["conversation"]
        speakers[sample["sample_id"]] = (conversation["speaker_a"], conversation["speaker_b"])
        for key, session in conversation.items():
            if key.startswith("session_") and isinstance(session, list):
                for turn in session:
                    turns[sample["sample_id"], turn["dia_id"]] = turn
    return turns, speakers


def _turn(row: dict, item: Item) -> dict | None:
    return _turns()[0].get((row["sample"], item["sources"][0].get("dia_id")))


def speaker_boost(delta: float) -> Rerank:
    """A question naming one of the two speakers: that speaker's turns score 1 + delta times
    more (who said it, as an entity-aware index would know)."""

    def rerank(row, items):
        names = [n for n in _turns()[1][row["sample"]] if re.search(rf"\b{n}\b", row["question"])]
        if len(names) != 1:
            return assemble(items, weighted)

        def key(it):
            turn = _turn(row, it)
            return weighted(it) * (1 + delta if turn and turn["speaker"] == names[0] else 1)

        return assemble(items, key)

    return rerank


def answer_follows(alpha: float, pool: int, questions_only: bool = True) -> Rerank:
    """Each of the first `pool` items that asks something (or any, with `questions_only`
    False) lifts the turn after it to alpha times its own score (the answer rarely repeats the
    question's words); that turn joins the list if it was not in it."""

    def following(dia_id: str) -> str:
        session, n = dia_id.split(":")
        return f"{session}:{int(n) + 1}"

    def rerank(row, items):
        best: dict[str, float] = {}
        for it in items:
            for source in it["sources"]:
                best[source["dia_id"]] = max(best.get(source["dia_id"], 0.0), weighted(it))
        lifted = []
        for it in sorted(items, key=weighted, reverse=True)[:pool]:
            turn = _turn(row, it)
            if turn is None or (questions_only and "?" not in turn["text"]):
                continue
            after = following(turn["dia_id"])
            if (row["sample"], after) not in _turns()[0] or best.get(
                after, 0.0
            ) >= alpha * weighted(it):
                continue
            best[after] = alpha * weighted(it)
            lifted.append({"type": "message", "score": best[after], "sources": [{"dia_id": after}]})
        # a turn is one source whatever item brought it: ids by dia_id
        by_turn = [
            {**it, "sources": [{**s, "id": s["dia_id"]} for s in it["sources"]]}
            for it in [*items, *lifted]
        ]
        return assemble(by_turn, weighted)

    return rerank


# Questions that ask for a set gathered across sessions ("What books has Melanie read?", "Where
# has she camped?", "What do they have in common?"): the cue list was written before any figure
# of this family was read, from the wording of such questions in general, not from LoCoMo's
# labels; only the decay and how many items of one day go free are chosen per fold.
_AGGREGATE = re.compile(
    r"\b(?:what|which) (?:kinds?|types?|sorts?) of\b|\bhow many\b|\bwhat are\b|\bboth\b"
    r"|\bin common\b|\b(?:what|where|who|which \w+) (?:has|have)\b"
    r"|\bwhat (?:\w+ )?(?:activities|books|events|places|things|hobbies|items|pets|instruments"
    r"|sports|games|countries|cities|ways|plans|goals|kinds)\b",
    re.I,
)


def aggregate_decay(decay: float, free: int) -> Rerank:
    """Episode decay (session diversity) for questions that ask for a set only; every other
    question keeps the baseline's list, so single-hop answers are not pushed down."""
    diverse = episode_decay(decay, free)

    def rerank(row, items):
        if _AGGREGATE.search(row["question"]):
            return diverse(row, items)
        return assemble(items, weighted)

    return rerank


FAMILIES: dict[str, dict[str, Rerank]] = {
    "memory weight": {f"memory weight {w}": memory_weight(w) for w in (0.7, 0.8, 0.9, 1.0, 1.2)},
    "episode decay": {
        f"episode decay {d} after {f}": episode_decay(d, f)
        for d in (0.95, 0.9, 0.8, 0.7)
        for f in (1, 2, 3, 5)
    },
    "episode decay, set questions only": {
        f"set decay {d} after {f}": aggregate_decay(d, f)
        for d in (0.95, 0.9, 0.8, 0.7)
        for f in (1, 2, 3)
    },
    "episode vote": {
        f"episode vote {b:+} top {t}": episode_vote(b, t)
        for b in (-0.1, 0.1, 0.2, 0.3)
        for t in (10, 20, 40)
    },
    "date boost": {
        f"date boost {g} pool {p}": date_boost(g, p)
        for g in (0.1, 0.2, 0.5, 1.0)
        for p in (40, 100)
    },
    "speaker boost": {f"speaker boost {d}": speaker_boost(d) for d in (0.05, 0.1, 0.2, 0.3)},
    "answer follows question": {
        f"answer {a} pool {p}": answer_follows(a, p)
        for a in (0.5, 0.7, 0.85, 0.95)
        for p in (5, 20)
    },
    "next turn lifted": {
        f"next turn {a} pool {p}": answer_follows(a, p, False)
        for a in (0.5, 0.7, 0.85)
        for p in (5, 10)
    },
}


def recall10(row: dict, ranked: list[Item]) -> float:
    seen: dict[str, None] = {}
    for item in ranked:
        for source in item["sources"]:
            if source.get("dia_id"):
                seen.setdefault(source["dia_id"], None)
    return len(set(row["evidence"]) & set(list(seen)[:10])) / len(row["evidence"])


def fold_table(rows: list[dict], changes: dict[str, Rerank]) -> None:
    """Each change's R@10 per conversation (its leave-one-out fold), mean and per category,
    then the leave-one-out choice."""
    folds = list(dict.fromkeys(r["sample"] for r in rows))
    cats = list(CATEGORIES)
    width = max(30, *(len(name) + 1 for name in changes))
    print(
        f"{'change':<{width}} "
        + " ".join(f"{f:>8}" for f in folds)
        + "   mean "
        + " ".join(f"{CATEGORIES[c][:9]:>9}" for c in cats)
    )
    table = {}
    for name, rerank in changes.items():
        scores = [(r, recall10(r, rerank(r, r["items"]))) for r in rows]
        per = {f: 100 * statistics.fmean(s for r, s in scores if r["sample"] == f) for f in folds}
        by_cat = [100 * statistics.fmean(s for r, s in scores if r["category"] == c) for c in cats]
        table[name] = per
        print(
            f"{name:<{width}} "
            + " ".join(f"{per[f]:8.1f}" for f in folds)
            + f" {statistics.fmean(per.values()):6.1f} "
            + " ".join(f"{v:9.1f}" for v in by_cat)
        )
    leave_one_out(table)


def main() -> int:
    rows = json.loads(Path(sys.argv[1]).read_text())
    wanted = sys.argv[2:]  # family names; all when none
    for family, changes in FAMILIES.items():
        if wanted and family not in wanted:
            continue
        print(f"\n{family}")
        fold_table(rows, {"baseline": memory_weight(MEMORY_WEIGHT), **changes})
    return 0


if __name__ == "__main__":
    sys.exit(main())
