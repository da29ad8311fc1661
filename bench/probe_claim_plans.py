"""What a claim costs PostgreSQL as a backlog forms behind statistics taken when none was queued.

    .venv/bin/python bench/probe_claim_plans.py                  # 100,000 finished, 5,000 queued
    .venv/bin/python bench/probe_claim_plans.py --finished 20000 --queued 2000

In the bench database (bench_memory's), one workspace gets `--finished` finished extraction
jobs, then ANALYZE: the statistics of a table that usually has nothing queued. Then `--queued`
jobs are queued (one per conversation, as many users' single turns) and a claim's two
statements — the compare-and-set and the job's get with its queued checks, as
memory.services.processing.jobs_claim runs them — are timed by EXPLAIN ANALYZE, with the index
each one read, and the same for a claim in a second workspace with nothing else queued. Then
it waits (up to `--wait` s) for autovacuum to analyze the table on its own,
and times them again; then once more after the older half of the backlog finished (its
entries in the unfinished jobs' partial indexes dead until a vacuum). It prints the table's autovacuum settings, and when autovacuum analyzed.
The rows it made are deleted at the end.
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_memory import bench_database_url, django_setup  # noqa: E402


def _make_jobs(workspace, count: int, status: str, tag: str) -> list[str]:
    """`count` jobs of `status`, each in a conversation of its own (bulk: no services)."""
    from django.utils import timezone

    from memory.models import Conversation, ProcessingJob

    now = timezone.now()
    conversations = Conversation.objects.bulk_create(
        [
            Conversation(workspace=workspace, external_id=f"{tag}-{i}", user_id=f"{tag}-u{i}")
            for i in range(count)
        ],
        batch_size=5000,
    )
    jobs = ProcessingJob.objects.bulk_create(
        [
            ProcessingJob(
                workspace=workspace,
                conversation=conversation,
                kind="extract",
                status=status,
                upto_message_id=f"msg_{tag}_{i:08d}",
                created_at=now,
                updated_at=now,
            )
            for i, conversation in enumerate(conversations)
        ],
        batch_size=5000,
    )
    return [job.id for job in jobs]


def _claim_plans(job_id: str) -> list[str]:
    """EXPLAIN ANALYZE of the claim's statements for `job_id` (rolled back): one line each."""
    from django.db import connection, transaction
    from django.utils import timezone

    from memory.services.processing import takeable, taken_with_queue

    now = timezone.now()
    take = takeable(job_id=job_id, now=now)
    get = taken_with_queue(job_id=job_id, now=now, around=True)
    lines = []
    with transaction.atomic(), connection.cursor() as cursor:
        for name, queryset in (("compare-and-set", take), ("get, queued checks", get)):
            sql, params = queryset.query.sql_with_params()
            cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql, params)
            plan = [row[0] for row in cursor.fetchall()]
            scans = [
                re.sub(r"\s+\(cost.*", "", line.strip().removeprefix("->  "))
                for line in plan
                if "Scan" in line and "memory_processingjob" in line
            ]
            took = next(line for line in plan if line.startswith("Execution Time"))
            lines.append(f"    {name}: {took.split(': ')[1]}; " + "; ".join(scans))
        transaction.set_rollback(True)
    return lines


def _last_analyzed() -> tuple:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT last_autoanalyze, n_mod_since_analyze FROM pg_stat_user_tables"
            " WHERE relname = 'memory_processingjob'"
        )
        return cursor.fetchone()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--finished", type=int, default=100_000)
    parser.add_argument("--queued", type=int, default=5_000)
    parser.add_argument("--wait", type=float, default=150, help="for autovacuum's analyze, s")
    parser.add_argument(
        "--postgres-defaults",
        action="store_true",
        help="run with the table's autovacuum settings at PostgreSQL's defaults (as before "
        "migration memory.0013), and put Engram's back at the end",
    )
    args = parser.parse_args()
    django_setup(bench_database_url())
    from django.db import connection

    # The table's settings, as migration memory.0013 sets and resets them.
    analyze_often = importlib.import_module("memory.migrations.0013_job_analyze_often")

    from accounts.services import workspace_create
    from memory.models import ProcessingJob

    workspace = workspace_create(name=f"probe-claim-plans-{int(time.time())}")
    other = workspace_create(name=f"probe-claim-plans-other-{int(time.time())}")
    tag = f"pcp{int(time.time())}"
    if args.postgres_defaults:
        with connection.cursor() as cursor:
            cursor.execute(analyze_often.DEFAULTS)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT reloptions FROM pg_class WHERE relname = 'memory_processingjob'")
            print(f"memory_processingjob's storage options: {cursor.fetchone()[0]}")
        _make_jobs(workspace, args.finished, "done", f"{tag}d")
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE memory_processingjob")
        analyzed = _last_analyzed()[0]
        queued = _make_jobs(workspace, args.queued, "pending", f"{tag}q")
        print(
            f"{args.finished} finished jobs, analyzed; then {args.queued} queued. A claim of a "
            "queued job, before autovacuum analyzes again:"
        )
        print("\n".join(_claim_plans(queued[len(queued) // 2])))
        print("  a claim in another workspace, whose only job it is (the backlog is not its own):")
        print("\n".join(_claim_plans(_make_jobs(other, 1, "pending", f"{tag}o")[0])))
        began = time.monotonic()
        while time.monotonic() - began < args.wait:
            last, changed = _last_analyzed()
            if last is not None and last != analyzed:
                print(f"  autovacuum analyzed the table {time.monotonic() - began:.0f} s later:")
                print("\n".join(_claim_plans(queued[len(queued) // 2 + 1])))
                print("  and in the other workspace:")
                print("\n".join(_claim_plans(_make_jobs(other, 1, "pending", f"{tag}p")[0])))
                # A backlog being worked off: its oldest jobs finished, their index entries
                # dead until a vacuum (each index scan marks those it meets).
                older = queued[: len(queued) // 2]
                ProcessingJob.objects.filter(id__in=older).update(status="done")
                print(
                    f"  then the oldest {len(older)} queued jobs finished (no vacuum yet); "
                    "a claim in the busy workspace, twice:"
                )
                print("\n".join(_claim_plans(queued[-1])))
                print("\n".join(_claim_plans(queued[-2])))
                print("  and in the other workspace:")
                print("\n".join(_claim_plans(_make_jobs(other, 1, "pending", f"{tag}r")[0])))
                break
            time.sleep(2)
        else:
            last, changed = _last_analyzed()
            print(
                f"  autovacuum did not analyze the table within {args.wait:.0f} s "
                f"({changed} rows changed since the last analyze)"
            )
    finally:
        for each in (workspace, other):
            ProcessingJob.objects.filter(workspace=each).delete()
            each.delete()
        if args.postgres_defaults:
            with connection.cursor() as cursor:
                cursor.execute(analyze_often.ANALYZE_OFTEN)
    return 0


if __name__ == "__main__":
    sys.exit(main())
