"""Replays pseudo-relevance feedback on vectors (Rocchio) on a saved run, fold by fold.

    .venv/bin/python bench/eval_locomo.py --keep --skip-context --label baseline --report /tmp/b.json
    .venv/bin/python bench/eval_locomo.py --reuse latest --skip-context --limit 100 --dump /tmp/d.json
    .venv/bin/python bench/probe_prf.py /tmp/d.json

The query vector moves toward what the first pass found: q' = normalize(q + alpha * c), c the
mean of the top k items' stored vectors weighted by their blended scores (a message's
`context_embedding`, a memory's `embedding`, read from the kept run's database in
.engram/eval, which this script starts if it is not running). Every saved item (the first 100
of each question's list) is then re-scored as the search would re-score it: its vector share
of the blend moves from cos(q, v) to cos(q', v), i.e. score + 0.6 x (cos(q', v) - cos(q, v)),
times the speaker boost where the search applied it (memory.retrieval.messages). With
`+ found n` the n user turns nearest q' that were not among the saved items join the list with
the score such a turn would roughly have: the vector share of cos(q', v), no text score.

The grid (alpha, k, found) was fixed before any figure was read. The lexical side's feedback
(the top items' rare words) is already in the search (memory.retrieval.messages._feedback) and
in every saved score. Rows as bench/probe_rerank.py's, with the leave-one-out choice.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from bench.eval_locomo import SEARCH_TYPES, dump_row, turn_text  # noqa: E402
from bench.probe_rerank import (  # noqa: E402
    _AGGREGATE,
    MEMORY_WEIGHT,
    _turns,
    assemble,
    fold_table,
    memory_weight,
    weighted,
)
from bench.probe_sentences import embed_all  # noqa: E402

VECTOR_SHARE = 0.6  # memory.retrieval.fusion.MESSAGE_VECTOR_SHARE and MEMORY_VECTOR_SHARE
SPEAKER_BOOST = 1.4  # memory.retrieval.messages.SPEAKER_BOOST
ALPHAS = (0.1, 0.2, 0.3, 0.5)
TOPS = (3, 5, 10)
FOUND = (0, 30)
VECTORS = Path("/tmp/probe_prf_vectors.npz")
_SIMILARITY = re.compile(r"similarity (-?[\d.]+)")
_NAME = re.compile(r"\b[A-Z][a-zA-Z'-]+")  # memory.retrieval.terms.named_in


def _parse(text: str) -> np.ndarray:
    return np.array(json.loads(text), dtype=np.float32)


def stored_vectors(rows: list[dict]) -> dict:
    """Every message of the run's users (id -> dia_id, speaker, user, context vector) and the
    saved memories' vectors, from the kept run's database (cached in VECTORS)."""
    if VECTORS.exists():
        return np.load(VECTORS, allow_pickle=True)["data"].item()
    os.environ.setdefault("ENGRAM_DATA_DIR", str(ROOT / ".engram" / "eval"))
    import psycopg

    from config.embedded.servers import ensure_postgres

    message_id = next(s["id"] for r in rows for it in r["items"] for s in it["sources"])
    memory_ids = [it["id"] for r in rows for it in r["items"] if it["type"] == "memory"]
    with psycopg.connect(ensure_postgres()) as conn:
        found = conn.execute(
            "SELECT user_id FROM memory_message WHERE id = %s", [message_id]
        ).fetchone()
        if found is None:
            raise SystemExit("the dump's messages are not in .engram/eval: dump a kept run")
        run = found[0].rsplit("-", 1)[1]
        messages = {
            mid: {"dia": dia, "name": name, "user": uid, "vector": _parse(vec)}
            for mid, dia, name, uid, vec in conn.execute(
                "SELECT id, metadata->>'dia_id', name, user_id, context_embedding::text "
                "FROM memory_message WHERE user_id LIKE %s AND context_embedding IS NOT NULL",
                [f"locomo-%-{run}"],
            )
        }
        memories = {
            mid: _parse(vec)
            for mid, vec in conn.execute(
                "SELECT id, embedding::text FROM memory_memory "
                "WHERE id = ANY(%s) AND embedding IS NOT NULL",
                [sorted(set(memory_ids))],
            )
        }
    data = {"messages": messages, "memories": memories, "run": run}
    np.savez(VECTORS, data=np.array(data, dtype=object))
    return data


def rocchio_table(rows: list[dict]) -> None:
    data = stored_vectors(rows)
    messages, memories = data["messages"], data["memories"]
    qvec = embed_all([r["question"] for r in rows], Path("/tmp/probe_prf_questions.npz"))
    # each sample's turns, for `found`: the user's message ids and their vectors
    users: dict[str, tuple[list[str], np.ndarray]] = {}
    for sample in {r["sample"] for r in rows}:
        user = f"locomo-{sample}-{data['run']}"
        ids = [m for m, v in messages.items() if v["user"] == user]
        users[sample] = (ids, np.stack([messages[m]["vector"] for m in ids]))

    def vector(item: dict) -> np.ndarray | None:
        if item["type"] == "memory":
            return memories.get(item["id"])
        found = messages.get(item["id"])
        return found["vector"] if found else None

    def boost(row: dict, item: dict) -> float:
        if item["type"] != "message":
            return 1.0
        names = {w.lower() for w in _NAME.findall(row["question"])}
        return SPEAKER_BOOST if (messages[item["id"]]["name"] or "").lower() in names else 1.0

    # The stored vectors and the question's must give the search's own cosines.
    drift = [
        abs(float(vector(it) @ qvec[r["question"]]) - float(m[1]))
        for r in rows
        for it in r["items"]
        if vector(it) is not None and (m := _SIMILARITY.search(it.get("why") or ""))
    ]
    print(f"cosine check: {len(drift)} items, largest |stored - search| {max(drift):.4f}")

    def rocchio(alpha: float, top: int, found: int):
        def rerank(row: dict, given: list) -> list:
            q = qvec[row["question"]]
            ranked = sorted(given, key=weighted, reverse=True)
            pairs = [(weighted(it), v) for it in ranked[:top] if (v := vector(it)) is not None]
            if not pairs:
                return assemble(given, weighted)
            weights = np.array([w for w, _ in pairs])
            centroid = (weights[:, None] * np.stack([v for _, v in pairs])).sum(0) / weights.sum()
            moved = q + alpha * centroid
            moved /= np.linalg.norm(moved)

            def key(item: dict) -> float:
                v = vector(item)
                if v is None:
                    return weighted(item)
                lift = VECTOR_SHARE * boost(row, item) * float(v @ moved - v @ q)
                return weighted(item) + lift * (MEMORY_WEIGHT if item["type"] == "memory" else 1)

            items = list(given)
            if found:
                have = {s["id"] for it in items for s in it["sources"]}
                ids, bank = users[row["sample"]]
                sims = bank @ moved
                added = 0
                for i in np.argsort(-sims):
                    if added == found:
                        break
                    if ids[i] in have:
                        continue
                    added += 1
                    item = {
                        "type": "message",
                        "id": ids[i],
                        "sources": [{"id": ids[i], "dia_id": messages[ids[i]]["dia"]}],
                    }
                    # its first-pass score as a vector-only candidate; key() moves it to q'
                    item["score"] = VECTOR_SHARE * boost(row, item) * float(bank[i] @ q)
                    items.append(item)
            return assemble(items, key)

        return rerank

    changes = {"baseline": memory_weight(MEMORY_WEIGHT)}
    for found in FOUND:
        for alpha in ALPHAS:
            for top in TOPS:
                name = f"rocchio a {alpha} k {top}" + (f" + found {found}" if found else "")
                changes[name] = rocchio(alpha, top, found)
    fold_table(rows, changes)


# --- sub-queries (multi-hop) ------------------------------------------------------------------

SUB_TOPS = (3, 5)  # the first m items each give a sub-query
SUB_WEIGHTS = (0.5, 0.7, 0.9)  # a sub-query's item joins at this share of its own score
SUB_WORDS = 2  # the item's rarest words added to the question (found in 2+ of the user's turns)
SUB_ITEMS = 10  # what each sub-query contributes
SUBQUERIES = Path("/tmp/probe_prf_subqueries.json")
_WORDS = re.compile(r"[a-z]+")


def rare_words(row: dict, item: dict, df: dict[str, int], skip: set[str]) -> list[str]:
    """The item's SUB_WORDS rarest words among the user's turns (in at least two of them: a
    word only this turn has finds only it again), leaving out the question's and stop words."""
    turn = _turns()[0].get((row["sample"], item["sources"][0].get("dia_id")))
    if turn is None:
        return []
    words = {w for w in _WORDS.findall(turn_text(turn).lower()) if len(w) > 2} - skip
    return sorted((w for w in words if df.get(w, 0) >= 2), key=lambda w: (df[w], w))[:SUB_WORDS]


def subquery_table(rows: list[dict]) -> None:
    from memory.retrieval.terms import STOP_WORDS

    turns, speakers = _turns()
    df: dict[str, dict[str, int]] = {}
    for (sample, _), turn in turns.items():
        counts = df.setdefault(sample, {})
        for w in set(_WORDS.findall(turn_text(turn).lower())):
            counts[w] = counts.get(w, 0) + 1
    asked = [r for r in rows if _AGGREGATE.search(r["question"])]
    queries: dict[int, list[str]] = {}  # row index -> sub-queries of its first max(SUB_TOPS)
    for i, r in enumerate(rows):
        if not _AGGREGATE.search(r["question"]):
            continue
        skip = set(STOP_WORDS) | {n.lower() for n in speakers[r["sample"]]}
        skip |= set(_WORDS.findall(r["question"].lower()))
        ranked = assemble(r["items"], weighted)
        queries[i] = []
        for item in ranked[: max(SUB_TOPS)]:
            words = rare_words(r, item, df[r["sample"]], skip)
            queries[i].append(r["question"] + " " + " ".join(words) if words else "")
    print(f"set questions: {len(asked)} of {len(rows)}")
    results = run_subqueries(rows, queries)

    def union(top: int, weight: float):
        def rerank(row: dict, given: list) -> list:
            subs = results.get(str(row["_index"]), {})
            items = list(given)
            for query in queries.get(row["_index"], [])[:top]:
                items += [
                    {**it, "score": weight * it["score"]} for it in subs.get(query, [])[:SUB_ITEMS]
                ]
            return assemble(items, weighted)

        return rerank

    for i, r in enumerate(rows):
        r["_index"] = i
    changes = {"baseline": memory_weight(MEMORY_WEIGHT)}
    for top in SUB_TOPS:
        for weight in SUB_WEIGHTS:
            changes[f"sub-queries top {top} weight {weight}"] = union(top, weight)
    fold_table(rows, changes)


def run_subqueries(rows: list[dict], queries: dict[int, list[str]]) -> dict:
    """row index -> sub-query -> its items (as eval_locomo.dump_row saves them), searched on the
    kept run through /v1/search (cached in SUBQUERIES)."""
    if SUBQUERIES.exists():
        return json.loads(SUBQUERIES.read_text())
    import httpx

    from bench.engram_proc import live_engram

    run = stored_vectors(rows)["run"]
    out: dict[str, dict[str, list]] = {}
    with live_engram(data_dir=str(ROOT / ".engram" / "eval")) as (base_url, api_key):
        client = httpx.Client(
            base_url=base_url, headers={"Authorization": f"Bearer {api_key}"}, timeout=120
        )
        for i, subs in queries.items():
            r = rows[i]
            for query in subs:
                if not query or query in out.get(str(i), {}):
                    continue
                resp = client.post(
                    "/v1/search",
                    json={
                        "user_id": f"locomo-{r['sample']}-{run}",
                        "query": query,
                        "limit": 20,
                        "types": SEARCH_TYPES,
                    },
                )
                resp.raise_for_status()
                qa = {"question": query, "category": r["category"], "evidence": r["evidence"]}
                items = dump_row(r["sample"], qa, resp.json()["data"])["items"]
                out.setdefault(str(i), {})[query] = items
    SUBQUERIES.write_text(json.dumps(out))
    return out


def main() -> int:
    rows = json.loads(Path(sys.argv[1]).read_text())
    wanted = sys.argv[2:] or ["rocchio", "sub-queries"]
    if "rocchio" in wanted:
        print("\nrocchio (pseudo-relevance feedback on vectors)")
        rocchio_table(rows)
    if "sub-queries" in wanted:
        print("\nsub-queries (set questions: the question with a top item's rare words, unioned)")
        subquery_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
