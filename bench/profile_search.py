"""Where one `POST /v1/search` spends its time, stage by stage, in process.

Replays the LoCoMo questions of a kept `eval_locomo.py --keep` run against the embedded
database it left in `.engram/eval` (started, or reused, here), calling what the endpoint calls
(the query embedding, memory.retrieval.search.search, the item serialization), and prints for
each stage, per question: wall time, this process's CPU and the PostgreSQL backend's CPU (from
/proc/PID/schedstat). CPU figures hold on a shared machine where wall times do not.

    .venv/bin/python bench/eval_locomo.py --keep --skip-context      # once: import a run
    .venv/bin/python bench/profile_search.py                          # the newest kept run
    .venv/bin/python bench/profile_search.py --run 1796285311 --dump /tmp/items.json

`--dump` saves every question's items, to check that a speed change returns the same results.
By default memories are ranked on a second connection, as the endpoint does: that backend's CPU
is not in the per-stage PostgreSQL column and its thread's Python CPU lands in whichever stage
runs meanwhile. `--serial` ranks both on this connection (inside one transaction, as search()
does in one), so each stage's figures are its own.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run", help="the kept run's id (default: the newest)")
    parser.add_argument("--dump", metavar="PATH", help="save each question's items (JSON)")
    parser.add_argument(
        "--serial", action="store_true", help="rank memories on this connection, not a second"
    )
    args = parser.parse_args()

    os.environ.setdefault("ENGRAM_DATA_DIR", str(ROOT / ".engram" / "eval"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from config.embedded import servers

    servers.ensure_environment()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.base")
    import django

    django.setup()
    from django.db import connection, transaction

    from accounts.models import Workspace
    from bench.eval_locomo import CATEGORIES, DATA
    from memory.apis.search import query_embedding, search_item
    from memory.embeddings import get_embedder
    from memory.retrieval import late, memories, messages, search

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT workspace_id, max(user_id) FROM memory_message WHERE user_id LIKE 'locomo-%%' "
            "GROUP BY workspace_id ORDER BY 2 DESC LIMIT 1"
        )
        workspace_id, newest = cursor.fetchone()
        cursor.execute("SELECT pg_backend_pid()")
        backend = cursor.fetchone()[0]
    run = args.run or newest.rsplit("-", 1)[1]
    workspace = Workspace.objects.get(id=workspace_id)
    embedder = get_embedder()
    embedder.embed_one("warm up")

    def backend_ms() -> float:
        return int(Path(f"/proc/{backend}/schedstat").read_text().split()[0]) / 1e6

    totals: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0.0, 0.0, 0])

    @contextlib.contextmanager
    def stage(name: str):
        wall, cpu, pg = time.perf_counter(), time.process_time(), backend_ms()
        try:
            yield
        finally:
            row = totals[name]
            row[0] += (time.perf_counter() - wall) * 1000
            row[1] += (time.process_time() - cpu) * 1000
            row[2] += backend_ms() - pg
            row[3] += 1

    def timed(name: str, fn):
        def inner(*a, **k):
            with stage(name):
                return fn(*a, **k)

        return inner

    def each_statement(execute, sql, params, many, context):
        text = " ".join(sql.split())
        if text.startswith("WITH q"):
            name = "SQL ranking, " + ("memories" if "memory_memory t" in text else "messages")
        else:
            name = "SQL " + text[:48]
        with stage(name):
            return execute(sql, params, many, context)

    memories.ranked = timed("memories.ranked", memories.ranked)
    messages.ranked = timed("messages.ranked", messages.ranked)
    messages._feedback = timed("messages._feedback", messages._feedback)
    late.packed_tokens = timed("late.packed_tokens", late.packed_tokens)
    late.matches = timed("late.matches", late.matches)

    questions = [
        (f"locomo-{sample['sample_id']}-{run}", qa["question"])
        for sample in json.loads(DATA.read_text())
        for qa in sample["qa"]
        if qa["category"] in CATEGORIES and qa.get("evidence")
    ]
    dumped = []
    serial = transaction.atomic() if args.serial else contextlib.nullcontext()
    with serial, connection.execute_wrapper(each_statement):
        for user_id, question in questions:
            with stage("total"):
                with stage("embedding"):
                    vectors, tokens = query_embedding(embedder, question)
                with stage("search()"):
                    found = search.search(
                        workspace=workspace,
                        user_id=user_id,
                        query=question,
                        vector=vectors[0].tolist(),
                        limit=20,
                        types=["memories", "messages"],
                        query_tokens=tokens[0],
                    )
                with stage("serialization"):
                    items = json.dumps([search_item(f) for f in found], default=str)
            if args.dump:
                dumped.append(json.loads(items))
    n = len(questions)
    how = "one connection" if args.serial else "memories on a second connection"
    print(
        f"run {run}: {n} questions ({how}); per question: wall / this process's CPU / PostgreSQL CPU"
    )
    print(f"{'stage':<58} {'wall':>7} {'py CPU':>7} {'pg CPU':>7} {'calls':>6}")
    for name, (wall, cpu, pg, calls) in totals.items():
        print(f"{name:<58} {wall / n:7.2f} {cpu / n:7.2f} {pg / n:7.2f} {calls / n:6.2f}")
    if args.dump:
        Path(args.dump).write_text(json.dumps(dumped))
    return 0


if __name__ == "__main__":
    sys.exit(main())
