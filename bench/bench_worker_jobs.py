"""A lone soak-like turn's extraction job, two versions of the code alternating job by job.

    python bench/bench_worker_jobs.py --old /tmp/wt-old [--jobs 400] [--users 40]

Each version runs in a process of its own (this checkout's code, and `--old`'s: a worktree of
the commit to compare with), on the same database (this checkout's embedded PostgreSQL, the
bench database of bench_memory.py), each with its own users saying the same turns:
bench_soak.py's first-person statements ("I live in Lisbon.", "I love jazz.", ...), most of
which add or supersede a memory, as the soak's remembered turns do. Job i is run by one
version then the other (which first alternates), each as soon as its turn is stored (no
backlog: nothing to batch; memory.tasks.extract, what a worker pool process does per task).
Prints each version's CPU ms a job (time.process_time of its process: ONNX included, the
database's own CPU not; of it the embedder's calls, and the rest), its statements a job (execute_wrapper), and what its jobs wrote
(memories, sources, history events by kind: the same for both when they behave alike).
`--skip-first N` leaves the first N jobs (each process's warm-up) out of the figures.

`--batch N`: the soak's backlog instead — N turns of N different users (of `--users`, 200 as
the soak's) stored, then one task run, which claims them all (the offline extractor claims
across the workspace's conversations, up to 32 jobs): CPU, statements, embedder calls and
texts embedded per turn; `--jobs` counts turns, `--skip-first` runs.

`--unique-text`: every turn its own text, as `bench_soak.py --unique-text` sends them (a number
in every statement, `statement(rng, unique=True)`; with `--batch`, every answer its own, as the
mock's `--unique-answers`: nothing a run repeats, so nothing embedded once for several turns).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def child(
    root: Path, users: int, seed: int, stamp: str, batch: int = 0, unique: bool = False
) -> int:
    """Run jobs as the parent asks, one a line ("<i>"), answering a JSON line each."""
    sys.path.insert(0, str(root))
    os.chdir(root)
    from bench.bench_memory import django_setup

    django_setup(os.environ["DATABASE_URL"])
    from django.db import connection

    from accounts.models import Workspace
    from accounts.services import workspace_create
    from memory import tasks
    from memory.models import Memory, MemoryEvent, ProcessingJob
    from memory.services import conversation_get_or_create, messages_import

    name = f"bench-worker-jobs-{stamp}-{root.name}"
    workspace = Workspace.objects.filter(name=name).first() or workspace_create(name=name)
    conversations = [
        conversation_get_or_create(
            workspace=workspace, external_id=f"u{u}", user_id=f"{stamp}-u{u}"
        )[0]
        for u in range(users)
    ]
    sys.path.insert(0, str(ROOT))  # this checkout's bench_soak: the same turns for both
    from bench.bench_soak import statement

    rng = random.Random(seed)
    count = 0
    embedding = 0.0  # the CPU of the embedder's calls (ONNX), to tell apart from the rest
    calls = texts = 0  # the embedder's calls and the texts they embedded
    from memory.embeddings import get_embedder

    embedder = get_embedder()
    depth = 0  # a call inside another (the base class's embed_with_tokens calls embed) once

    def timing(method):
        def timed(*args, **kwargs):
            nonlocal embedding, calls, texts, depth
            if depth:
                return method(*args, **kwargs)
            calls += 1
            texts += len(args[0]) if args else len(kwargs.get("texts", []))
            began = time.process_time()
            depth += 1
            try:
                return method(*args, **kwargs)
            finally:
                depth -= 1
                embedding += time.process_time() - began

        return timed

    # the worker embeds with its tokens (memory.retrieval.late) or without; an older checkout
    # has `embed` alone
    for name in ("embed", "embed_with_tokens"):
        if hasattr(embedder, name):
            setattr(embedder, name, timing(getattr(embedder, name)))

    def counter(execute, sql, params, many, context):
        nonlocal count
        count += 1
        return execute(sql, params, many, context)

    print(json.dumps({"ready": True}), flush=True)
    if batch:
        from bench.bench_gateway import COMPLETION
        from memory.services.processing import extraction_unit

        canned = COMPLETION["choices"][0]["message"]["content"]
        answered = 0

        turn = 0
        for line in sys.stdin:
            first = None
            for _ in range(int(line)):
                conversation = conversations[turn % users]
                turn += 1
                # the soak's turn: the statement and the mock upstream's answer (with
                # --unique-text its own, as bench_gateway's mock_app(unique=True) makes it)
                answered += 1
                answer = f"{canned} (answer {answered})" if unique else canned
                messages_import(
                    workspace=workspace,
                    conversation=conversation,
                    messages=[
                        {"role": "user", "content": statement(rng, unique=unique)},
                        {"role": "assistant", "content": answer},
                    ],
                )
                first = first or ProcessingJob.objects.get(
                    conversation=conversation, status="pending", kind="extract"
                )
            assert first is not None
            unit = extraction_unit(workspace_id=workspace.id, conversation_id=first.conversation_id)
            count, embedding, calls, texts = 0, 0.0, 0, 0
            began = time.process_time()
            with connection.execute_wrapper(counter):
                tasks.extract(first.id, unit=unit)
            cpu = time.process_time() - began
            left = ProcessingJob.objects.filter(workspace=workspace, status="pending").count()
            print(
                json.dumps(
                    {
                        "cpu": cpu,
                        "statements": count,
                        "embedding": embedding,
                        "calls": calls,
                        "texts": texts,
                        "left": left,
                    }
                ),
                flush=True,
            )
    for line in sys.stdin:
        i = int(line)
        text = statement(rng, unique=unique)
        conversation = conversations[i % users]
        messages_import(
            workspace=workspace,
            conversation=conversation,
            messages=[{"role": "user", "content": text}],
        )
        job = ProcessingJob.objects.get(conversation=conversation, status="pending", kind="extract")
        count = 0
        embedding = 0.0
        began = time.process_time()
        with connection.execute_wrapper(counter):
            tasks.extract(job.id)
        cpu = time.process_time() - began
        print(json.dumps({"cpu": cpu, "statements": count, "embedding": embedding}), flush=True)
    # what the jobs wrote, to compare between the versions
    written = {
        "memories": Memory.objects.filter(workspace=workspace).count(),
        "sources": Memory.sources.through.objects.filter(memory__workspace=workspace).count(),
    }
    for event in MemoryEvent.objects.filter(workspace=workspace).values_list("event", flat=True):
        written[event] = written.get(event, 0) + 1
    # and a digest of their values (the users' ids are the same in both versions' workspaces):
    # the memories' texts, metadata and vectors, the messages' vectors and search windows
    import hashlib

    from memory.models import Message

    digest = hashlib.sha256()
    for row in (
        Memory.objects.filter(workspace=workspace)
        .order_by("user_id", "text", "created_at")
        .values_list("user_id", "text", "metadata", "embedding")
    ):
        digest.update(repr((row[0], row[1], sorted(row[2].items()), list(row[3]))).encode())
    for row in (
        Message.objects.filter(workspace=workspace)
        .order_by("user_id", "created_at")
        .values_list("user_id", "content", "embedding", "context_embedding", "search_text")
    ):
        digest.update(repr((row[0], row[1], list(row[2]), list(row[3]), row[4])).encode())
    written["digest"] = digest.hexdigest()[:16]
    print(json.dumps(written), flush=True)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--old", type=Path, required=True, help="a checkout of the old code")
    parser.add_argument("--jobs", type=int, default=400)
    parser.add_argument("--users", type=int, default=40)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--skip-first", type=int, default=20)
    parser.add_argument("--batch", type=int, default=0, metavar="N")
    parser.add_argument("--unique-text", action="store_true", help="every turn its own text")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--stamp", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.users, args.seed, args.stamp, args.batch, args.unique_text)

    sys.path.insert(0, str(ROOT))
    from bench import machine
    from bench.bench_memory import bench_database_url

    os.environ["DATABASE_URL"] = bench_database_url()  # both versions on this one database
    calibration = machine.calibration_ms()
    print(f"machine before: {machine.line(calibration)}", flush=True)
    stamp = f"{int(time.time())}"
    versions = {"old": args.old.resolve(), "new": ROOT}
    procs = {}
    for label, root in versions.items():
        procs[label] = subprocess.Popen(
            [
                sys.executable,
                str(Path(__file__).resolve()),
                "--old",
                str(args.old),
                "--child",
                str(root),
                "--users",
                str(args.users),
                "--seed",
                str(args.seed),
                "--stamp",
                stamp,
                "--batch",
                str(args.batch),
            ]
            + (["--unique-text"] if args.unique_text else []),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=root,
        )
        assert json.loads(procs[label].stdout.readline()).get("ready")
    figures: dict[str, dict] = {
        label: {"cpu": 0.0, "embedding": 0.0, "statements": 0, "jobs": 0, "calls": 0, "texts": 0}
        for label in procs
    }
    if args.batch:
        for i in range(args.jobs // args.batch):
            order = ["old", "new"] if i % 2 == 0 else ["new", "old"]
            for label in order:
                proc = procs[label]
                proc.stdin.write(f"{args.batch}\n")
                proc.stdin.flush()
                answer = json.loads(proc.stdout.readline())
                assert answer["left"] == 0, answer  # one run took the batch
                if i >= args.skip_first:
                    for key in ("cpu", "embedding", "statements", "calls", "texts"):
                        figures[label][key] += answer[key]
                    figures[label]["jobs"] += args.batch
    for i in range(0 if args.batch else args.jobs):
        order = ["old", "new"] if i % 2 == 0 else ["new", "old"]
        for label in order:
            proc = procs[label]
            proc.stdin.write(f"{i}\n")
            proc.stdin.flush()
            answer = json.loads(proc.stdout.readline())
            if i >= args.skip_first:
                figures[label]["cpu"] += answer["cpu"]
                figures[label]["embedding"] += answer["embedding"]
                figures[label]["statements"] += answer["statements"]
                figures[label]["jobs"] += 1
    for label, proc in procs.items():
        proc.stdin.close()
        written = json.loads(proc.stdout.readline())
        proc.wait()
        done = figures[label]
        print(
            f"{label} ({versions[label]}): {1000 * done['cpu'] / done['jobs']:.2f} ms of CPU a job"
            f" (embedding {1000 * done['embedding'] / done['jobs']:.2f}, the rest"
            f" {1000 * (done['cpu'] - done['embedding']) / done['jobs']:.2f}),"
            f" {done['statements'] / done['jobs']:.2f} statements a job ({done['jobs']} jobs"
            f" after the first {args.skip_first}"
            + (
                f" runs of {args.batch}; embedder calls {done['calls'] / done['jobs']:.3f},"
                f" texts {done['texts'] / done['jobs']:.3f} a turn"
                if args.batch
                else ""
            )
            + f"); written: {written}"
        )
    print(f"machine after: {machine.line()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
