"""Background processing with the offline extractor: throughput per worker process, and lag.

    python bench/bench_extraction.py [--turns 1000] [--per-job 10] [--rate 20] [--seconds 60]
                                     [--profile 25] [--one-turn-jobs 400]

Runs against the bench database of bench_memory.py (`engram_bench`, created if missing).
1. Throughput: conversations of LoCoMo turns (or synthetic first-person ones) imported
   `--per-job` turns at a time, then every extraction and summary job they queued run back to
   back in this one process (memory.tasks.extract / .summarize, what one worker pool process
   does per task, broker excluded). Prints turns per second of job time (target >= 50), the
   bench process's CPU time per turn (embedding included; the database's own CPU not) and the
   SQL statements per turn. `--profile N` runs it under cProfile and prints the N costliest
   functions (by their own time, then cumulative). `--one-turn-jobs N` adds N jobs of one turn
   each, each run as soon as its turn is stored (no backlog: nothing to batch), across 20
   conversations: ms and CPU ms per job, SQL statements per job; `--known-memories M` gives
   each of those users M stored memories first (random vectors), to read a lone turn's cost
   against how much the user has; `--soak-statements` makes those turns bench_soak.py's
   first-person statements ("I live in Lisbon.", "I love jazz.", ...), of which most add or
   supersede a memory, as the soak's turns do (LoCoMo's lone turns seldom state a fact).
2. Lag: a real Celery worker (solo pool: one process, queue `memory`) while turns arrive at
   `--rate` per second for `--seconds`, one turn per import across `--users` conversations, as
   chat turns arrive (each reads its conversation first, as a chat turn does); a turn's lag is
   from its job's creation (the turn stored) to the job done.
   Prints p50 / p95 / max (target p95 <= 2 s at 20 turns/s for a minute). `--skip-lag` skips it.
Before and after, the machine line (bench/machine.py): load average, steal, and the
calibration (one ONNX query embedding's p50 on one core).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import machine  # noqa: E402
from bench.bench_memory import bench_database_url, child_env, django_setup  # noqa: E402
from bench.eval_locomo import DATA  # noqa: E402


def load_turns(count: int, rng: random.Random) -> list[dict]:
    turns = []
    if DATA.exists():
        for sample in json.loads(DATA.read_text()):
            conversation = sample["conversation"]
            n = 1
            while f"session_{n}" in conversation:
                for turn in conversation[f"session_{n}"]:
                    turns.append({"role": "user", "name": turn["speaker"], "content": turn["text"]})
                n += 1
    if not turns:  # without the evaluation data: first-person statements
        things = ["jazz", "hiking", "tea", "Berlin", "my sister", "pottery", "chess", "my dog"]
        turns = [
            {"role": "user", "content": f"I really like {rng.choice(things)} and I go often."}
            for _ in range(count)
        ]
    start = rng.randrange(max(1, len(turns) - count))
    return turns[start : start + count]


def soak_turns(count: int, rng: random.Random) -> list[dict]:
    """bench_soak.py's remembered turns: first-person statements, most of them a fact."""
    from bench.bench_soak import statement

    return [{"role": "user", "content": statement(rng)} for _ in range(count)]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


class QueryCounter:
    """Counts the SQL statements this process sends (django's execute_wrapper)."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, execute, sql, params, many, context):
        self.count += 1
        return execute(sql, params, many, context)


def throughput(workspace, turns: list[dict], per_job: int, stamp: str, profile: int = 0) -> dict:
    from django.db import connection

    from memory import tasks
    from memory.models import Memory, ProcessingJob
    from memory.services import conversation_get_or_create, messages_import

    conversations = []
    for start in range(0, len(turns), per_job):
        conversation, _ = conversation_get_or_create(
            workspace=workspace, external_id=f"tp-{stamp}-{start // 200}", user_id=f"tp-{stamp}"
        )
        messages_import(
            workspace=workspace, conversation=conversation, messages=turns[start : start + per_job]
        )
        conversations.append(conversation.id)
    jobs = list(
        ProcessingJob.objects.filter(conversation_id__in=set(conversations), status="pending")
        .order_by("created_at")
        .values_list("id", "kind")
    )

    from memory.embeddings import get_embedder

    get_embedder().embed(["a worker process loads its model once"])  # not part of the figure

    def run() -> None:
        for job_id, kind in jobs:
            (tasks.extract if kind == "extract" else tasks.summarize)(job_id)

    profiler = None
    if profile:
        import cProfile

        profiler = cProfile.Profile()
    counter = QueryCounter()
    cpu = time.process_time()
    started = time.perf_counter()
    with connection.execute_wrapper(counter):
        if profiler is not None:
            profiler.runcall(run)
        else:
            run()
    seconds = time.perf_counter() - started
    cpu = time.process_time() - cpu
    if profiler is not None:
        import pstats

        stats = pstats.Stats(profiler)
        stats.sort_stats("tottime").print_stats(profile)
        stats.sort_stats("cumulative").print_stats(profile)
    failed = ProcessingJob.objects.filter(id__in=[j for j, _ in jobs], status="failed").count()
    return {
        "turns": len(turns),
        "jobs": len(jobs),
        "summary_jobs": sum(1 for _, k in jobs if k == "summarize"),
        "failed_jobs": failed,
        "seconds": round(seconds, 2),
        "turns_per_s": round(len(turns) / seconds, 1),
        "cpu_ms_per_turn": round(1000 * cpu / len(turns), 2),
        "queries_per_turn": round(counter.count / len(turns), 2),
        "memories_of_user": Memory.objects.filter(
            workspace=workspace, user_id=f"tp-{stamp}"
        ).count(),
    }


def known_memories(workspace, user_id: str, count: int, rng: random.Random) -> None:
    """`count` stored memories for the user, written in bulk with random unit vectors: what a
    run's cost is read against, not what it de-duplicates with (nothing is near them)."""
    import numpy as np

    from memory.models import Memory

    vectors = np.random.default_rng(rng.randrange(2**32)).standard_normal((count, 384))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    Memory.objects.bulk_create(
        [
            Memory(
                workspace=workspace,
                user_id=user_id,
                text=f"User knows thing {i}.",
                search_text=f"User knows thing {i}.",
                embedding=vector.tolist(),
            )
            for i, vector in enumerate(vectors)
        ],
        batch_size=500,
    )


def one_turn_jobs(
    workspace, turns: list[dict], count: int, stamp: str, memories: int = 0, seed: int = 0
) -> dict:
    from django.db import connection

    from memory import tasks
    from memory.models import ProcessingJob
    from memory.services import conversation_get_or_create, messages_import

    conversations = [
        conversation_get_or_create(
            workspace=workspace, external_id=f"one-{stamp}-{u}", user_id=f"one-{stamp}-{u}"
        )[0]
        for u in range(20)
    ]
    rng = random.Random(seed)
    for conversation in conversations if memories else []:
        known_memories(workspace, conversation.user_id, memories, rng)
    counter = QueryCounter()
    wall = cpu = 0.0
    for i in range(count):
        conversation = conversations[i % len(conversations)]
        messages_import(
            workspace=workspace, conversation=conversation, messages=[turns[i % len(turns)]]
        )
        job = ProcessingJob.objects.get(conversation=conversation, status="pending")
        began, began_cpu = time.perf_counter(), time.process_time()
        with connection.execute_wrapper(counter):
            tasks.extract(job.id)
        wall += time.perf_counter() - began
        cpu += time.process_time() - began_cpu
    return {
        "jobs": count,
        "ms_per_job": round(1000 * wall / count, 1),
        "cpu_ms_per_job": round(1000 * cpu / count, 1),
        "queries_per_job": round(counter.count / count, 1),
    }


def broker_sends() -> int:
    """Messages published to the broker so far: Redis' LPUSH count (one a task sent)."""
    import redis
    from django.conf import settings

    stats = redis.Redis.from_url(settings.CELERY_BROKER_URL).info("commandstats")
    return int(stats.get("cmdstat_lpush", {}).get("calls", 0))


def _marks_cleared() -> None:
    """Delete config.coalesce's pending marks: the throughput half sent tasks (a mark each)
    that no worker ran and the purge dropped, and a mark left outlives its message by up to
    its TTL (the grace, 15 s), all that time the lag half's turns sending nothing."""
    import redis
    from django.conf import settings

    client = redis.Redis.from_url(settings.REDIS_URL)
    for key in client.scan_iter("engram:pending:*"):
        client.delete(key)


def lag(
    database_url: str,
    workspace,
    turns: list[dict],
    rate: float,
    seconds: float,
    users: int,
    stamp: str,
) -> dict:
    from config.celery import app
    from memory.models import ProcessingJob
    from memory.services import conversation_get_or_create, messages_import

    app.control.purge()
    _marks_cleared()  # their messages just purged: marks left would hold the turns' sends
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "config", "worker", "-Q", "memory", "-P", "solo",
         "-c", "1", "--loglevel", "WARNING", "-n", f"bench-extraction-{os.getpid()}@%h"],
        cwd=ROOT,
        env=child_env(database_url, ENGRAM_MEMORY_EXTRACTION="offline"),
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not app.control.ping(timeout=1.0):
            if time.monotonic() > deadline:
                raise RuntimeError("the worker did not start")
        conversations = [
            conversation_get_or_create(
                workspace=workspace, external_id=f"lag-{stamp}-{u}", user_id=f"lag-{stamp}-{u}"
            )[0]
            for u in range(users)
        ]
        count = int(rate * seconds)
        sends_before = broker_sends()
        began = time.monotonic()
        for i in range(count):
            time.sleep(max(0.0, began + i / rate - time.monotonic()))
            # Read as a chat turn reads it: a conversation titled since is not sent to the
            # worker's title task again (a stale copy sent one with every turn).
            conversation, _ = conversation_get_or_create(
                workspace=workspace,
                external_id=conversations[i % users].external_id,
                user_id=conversations[i % users].user_id,
            )
            messages_import(
                workspace=workspace,
                conversation=conversation,
                messages=[turns[i % len(turns)]],
            )
        sent_seconds = time.monotonic() - began
        jobs = ProcessingJob.objects.filter(conversation__in=conversations, kind="extract")
        deadline = time.monotonic() + 600
        while jobs.exclude(status__in=["done", "failed"]).exists():
            if time.monotonic() > deadline:
                raise RuntimeError("extraction did not catch up in 10 minutes")
            time.sleep(0.2)
        lags = [
            (done - created).total_seconds()
            for created, done in jobs.values_list("created_at", "updated_at")
        ]
        return {
            "rate_turns_per_s": rate,
            "offered_seconds": round(sent_seconds, 1),
            "turns": count,
            "jobs": len(lags),
            "lag_p50_s": round(statistics.median(lags), 3),
            "lag_p95_s": round(percentile(lags, 0.95), 3),
            "lag_max_s": round(max(lags), 3),
            # every task sent while the worker caught up (the sweep's ~1 each 5 s beside them)
            "tasks_sent": broker_sends() - sends_before,
        }
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=60)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--turns", type=int, default=1000)
    parser.add_argument("--per-job", type=int, default=10)
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--skip-lag", action="store_true")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--profile", type=int, default=0, metavar="N")
    parser.add_argument("--one-turn-jobs", type=int, default=0, metavar="N")
    parser.add_argument(
        "--soak-statements",
        action="store_true",
        help="the one-turn jobs' turns are bench_soak.py's first-person statements",
    )
    parser.add_argument(
        "--known-memories",
        type=int,
        default=0,
        metavar="M",
        help="each one-turn user starts with M stored memories",
    )
    args = parser.parse_args()
    rng = random.Random(args.seed)
    database_url = bench_database_url()
    django_setup(database_url)
    from accounts.models import Workspace
    from accounts.services import workspace_create

    workspace = Workspace.objects.filter(name="bench-extraction").first() or workspace_create(
        name="bench-extraction"
    )
    stamp = f"{int(time.time())}"
    turns = load_turns(args.turns, rng)
    calibration = machine.calibration_ms()
    results: dict = {"machine_before": machine.describe(calibration)}
    print(f"machine before: {machine.line(calibration)}")
    steal = machine.Steal()
    results["throughput"] = throughput(workspace, turns, args.per_job, stamp, args.profile)
    tp = results["throughput"]
    print(
        f"throughput, one process: {tp['turns_per_s']} turns/s ({tp['turns']} turns, "
        f"{args.per_job} per job, {tp['jobs']} jobs of which {tp['summary_jobs']} summaries, "
        f"{tp['failed_jobs']} failed, {tp['seconds']} s; target >= 50); "
        f"CPU {tp['cpu_ms_per_turn']} ms/turn, {tp['queries_per_turn']} SQL statements/turn, "
        f"user's memories at the end {tp['memories_of_user']}; {machine.line(steal=steal)}"
    )
    if args.one_turn_jobs:
        steal.start()
        lone_turns = soak_turns(args.one_turn_jobs, rng) if args.soak_statements else turns
        one = results["one_turn_jobs"] = one_turn_jobs(
            workspace, lone_turns, args.one_turn_jobs, stamp, args.known_memories, args.seed
        )
        print(
            f"one-turn jobs, no backlog, users with {args.known_memories} memories besides: "
            f"{one['ms_per_job']} ms a job ({one['cpu_ms_per_job']} ms "
            f"CPU), {one['queries_per_job']} SQL statements a job ({one['jobs']} jobs); "
            f"{machine.line(steal=steal)}"
        )
    if not args.skip_lag:
        steal.start()
        results["lag"] = lag(
            database_url, workspace, turns, args.rate, args.seconds, args.users, stamp
        )
        lg = results["lag"]
        print(
            f"lag at {lg['rate_turns_per_s']} turns/s for {lg['offered_seconds']} s, one worker "
            f"process: p50 {lg['lag_p50_s']} s, p95 {lg['lag_p95_s']} s, max {lg['lag_max_s']} s "
            f"({lg['jobs']} jobs; target p95 <= 2 s); {lg['tasks_sent']} tasks sent; "
            f"{machine.line(steal=steal)}"
        )
    calibration = machine.calibration_ms()
    results["machine_after"] = machine.describe(calibration)
    print(f"machine after: {machine.line(calibration)}")
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "extraction.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
