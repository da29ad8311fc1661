"""Memory benchmark: enrichment overhead, extraction throughput, RSS of web and worker processes.

    python bench/bench_memory.py [--users 100] [--per-user 1000] [--requests 300]

Runs against its own database (`engram_bench`) on the configured PostgreSQL (the embedded one by
default), filled once with `users x per-user` memories (100k by default) whose embeddings are
real all-MiniLM-L6-v2 vectors of a few thousand distinct texts, reused, plus past messages.
Figures:
- enrichment overhead: prepare_turn (store the new message, embed the query, rank memories and
  past messages (memory.retrieval), assembly within the budget), in-process, upstream excluded;
- the same path over HTTP: POST /v1/context against a real uvicorn process (and its RSS);
- extraction throughput of one Celery worker process (offline extractor) and its RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
BENCH_DB = "engram_bench"

NAMES = ["Ana", "Ben", "Chen", "Dara", "Eli", "Fay", "Gus", "Hana", "Ivo", "Jun", "Kai", "Lea"]
ACTIVITIES = [
    "hiking in the mountains",
    "playing the cello",
    "baking sourdough bread",
    "running marathons",
    "painting watercolors",
    "learning Japanese",
    "volunteering at the shelter",
    "rock climbing",
    "growing tomatoes",
    "writing short stories",
    "fixing old bikes",
    "birdwatching",
    "playing chess online",
    "knitting scarves",
    "surfing at dawn",
    "collecting vinyl records",
    "coaching youth soccer",
    "brewing coffee",
    "restoring furniture",
    "photographing wildlife",
]
PLACES = [
    "Lisbon",
    "Berlin",
    "Osaka",
    "Denver",
    "Nairobi",
    "Oslo",
    "Lima",
    "Hanoi",
    "Perth",
    "Quebec",
    "Seville",
    "Tallinn",
    "Austin",
    "Krakow",
    "Dublin",
    "Busan",
]
PEOPLE = ["sister", "brother", "wife", "husband", "best friend", "coworker", "neighbor", "son"]
TEMPLATES = [
    "{n} loves {a}.",
    "{n} went {a} with {p} last weekend.",
    "{n} is planning a trip to {c} in the spring.",
    "{n}'s {p} lives in {c}.",
    "{n} started {a} three years ago.",
    "{n} prefers {a} over watching TV.",
    "{n} moved to {c} for a new job.",
    "{n} wants to try {a} with {p} next month.",
    "{n}'s {p} is really into {a}.",
    "{n} grew up in {c} and misses it.",
]
QUESTIONS = [
    "What hobbies do I have these days?",
    "Where does my {p} live?",
    "When did I start {a}?",
    "Any ideas for my trip to {c}?",
    "What should I do this weekend with my {p}?",
    "Remind me what I said about {a}.",
    "Which city did I grow up in?",
    "What does my {p} enjoy?",
]


def distinct_texts(count: int, rng: random.Random) -> list[str]:
    texts: set[str] = set()
    while len(texts) < count:
        texts.add(
            rng.choice(TEMPLATES).format(
                n=rng.choice(NAMES),
                a=rng.choice(ACTIVITIES),
                p=rng.choice(PEOPLE),
                c=rng.choice(PLACES),
            )
        )
    return sorted(texts)


def question(rng: random.Random) -> str:
    return rng.choice(QUESTIONS).format(
        a=rng.choice(ACTIVITIES), p=rng.choice(PEOPLE), c=rng.choice(PLACES)
    )


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def rss_mb(pid: int) -> float:
    import psutil

    return psutil.Process(pid).memory_info().rss / 2**20


# --- setup ---------------------------------------------------------------------------------------


def bench_database_url() -> str:
    from config.embedded import ensure_environment

    ensure_environment()
    url = urlsplit(os.environ["DATABASE_URL"])
    admin = urlunsplit(url._replace(path="/postgres"))
    import psycopg

    with psycopg.connect(admin, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [BENCH_DB]).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{BENCH_DB}"')
    return urlunsplit(url._replace(path=f"/{BENCH_DB}"))


def django_setup(database_url: str) -> None:
    os.environ["DATABASE_URL"] = database_url
    # The bench's own Redis database: its queue never mixes with a running Engram's.
    redis = urlsplit(os.environ["REDIS_URL"])
    os.environ["REDIS_URL"] = urlunsplit(redis._replace(path="/13"))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.base")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", "--noinput", verbosity=0)


def fill(users: int, per_user: int, messages_per_user: int, rng: random.Random):
    """Bulk-load memories and messages once (COPY); later runs reuse them."""
    from django.db import connection
    from django.utils import timezone

    from accounts.models import Workspace
    from accounts.services import api_key_create, workspace_create
    from config.common.ids import new_id
    from memory.embeddings import get_embedder
    from memory.models import Conversation, Memory, Message

    workspace = Workspace.objects.filter(name="bench").first()
    expected = users * per_user
    loaded = Memory.objects.filter(workspace=workspace, user_id__startswith="user-")
    if workspace and loaded.count() == expected:
        key = api_key_create(workspace=workspace, name="bench").raw_key
        return workspace, key, False
    if workspace:
        workspace.delete()
    workspace = workspace_create(name="bench")
    key = api_key_create(workspace=workspace, name="bench").raw_key
    started = time.perf_counter()
    texts = distinct_texts(3000, rng)
    vectors = get_embedder().embed(texts)
    literal = ["[" + ",".join(f"{x:.6f}" for x in v) + "]" for v in vectors]
    print(f"  embedded {len(texts)} distinct texts in {time.perf_counter() - started:.1f}s")
    now = timezone.now()
    conversations = []
    for u in range(users):
        conversations.append(
            Conversation(workspace=workspace, external_id=f"history-{u}", user_id=f"user-{u}")
        )
    Conversation.objects.bulk_create(conversations)
    with connection.cursor() as cursor:
        raw = cursor.connection
        with raw.cursor().copy(
            "COPY memory_memory (id, workspace_id, user_id, text, kind, metadata, created_at, "
            "updated_at, search_text, embedding) FROM STDIN"
        ) as copy:
            for u in range(users):
                for _ in range(per_user):
                    i = rng.randrange(len(texts))
                    when = now - __import__("datetime").timedelta(minutes=rng.randrange(500_000))
                    copy.write_row(
                        [
                            new_id("mem"),
                            workspace.id,
                            f"user-{u}",
                            texts[i],
                            "fact",
                            "{}",
                            when,
                            when,
                            f"[{when.day} {when:%B %Y}] {texts[i]}",
                            literal[i],
                        ]
                    )
        with raw.cursor().copy(
            "COPY memory_message (id, workspace_id, conversation_id, user_id, role, name, "
            "content, raw, metadata, token_count, incomplete, created_at, search_text, embedding, "
            "context_embedding) FROM STDIN"
        ) as copy:
            for u, conversation in enumerate(conversations):
                for _ in range(messages_per_user):
                    i = rng.randrange(len(texts))
                    when = now - __import__("datetime").timedelta(minutes=rng.randrange(500_000))
                    content = texts[i].replace(texts[i].split()[0], "I", 1)
                    copy.write_row(
                        [
                            new_id("msg"),
                            workspace.id,
                            conversation.id,
                            f"user-{u}",
                            "user",
                            "",
                            content,
                            json.dumps({"role": "user", "content": content}),
                            "{}",
                            20,
                            False,
                            when,
                            f"[{when.day} {when:%B %Y}] User: {content}",
                            literal[i],
                            literal[i],  # the messages are random, not a conversation
                        ]
                    )
        cursor.execute("ANALYZE memory_memory")
        cursor.execute("ANALYZE memory_message")
    print(
        f"  loaded {Memory.objects.filter(workspace=workspace).count()} memories and "
        f"{Message.objects.filter(workspace=workspace).count()} messages "
        f"in {time.perf_counter() - started:.1f}s"
    )
    return workspace, key, True


# --- enrichment -----------------------------------------------------------------------------------


def enrichment(workspace, users: int, requests: int, rng: random.Random) -> dict:
    from memory.turn.contract import TurnContext
    from memory.turn.pipeline import finish_turn, prepare_turn

    def context(user: int, text: str) -> TurnContext:
        body = {
            "model": "gpt-4o-mini",
            "messages": [
                {"role": "system", "content": "You are a helpful assistant."},
                {"role": "user", "content": text},
            ],
        }
        return TurnContext(
            workspace=workspace,
            api_key_id=None,
            request_id="bench",
            body=body,
            model="gpt-4o-mini",
            user_id=f"user-{user}",
            conversation_id=f"bench-{series}-{user}",
        )

    series = rng.randrange(10**9)  # conversations grow over the run: real server-side history

    async def run() -> tuple[list[float], list[float], list[int], list[int]]:
        # Warm-up: every user's rows once (a live service keeps its active users in cache;
        # the first touch of a user after a restart reads from disk and is much slower).
        cold = []
        for user in range(users):
            started = time.perf_counter()
            await prepare_turn(context(user, question(rng)), dry_run=True)
            cold.append((time.perf_counter() - started) * 1000)
        print(f"  first touch of each user (cold cache): p50 {percentile(cold, 50):.1f} ms")
        prepare, finish, tokens, used = [], [], [], []
        for _ in range(requests):
            ctx = context(rng.randrange(users), question(rng))
            started = time.perf_counter()
            prepared = await prepare_turn(ctx)
            prepare.append((time.perf_counter() - started) * 1000)
            tokens.append(prepared.engram["context_tokens"])
            used.append(prepared.engram["memories_used"])
            started = time.perf_counter()
            reply = {"role": "assistant", "content": "Here is what I remember about that."}
            await finish_turn(ctx, prepared, assistant=reply, usage=None, incomplete=False)
            finish.append((time.perf_counter() - started) * 1000)
        return prepare, finish, tokens, used

    prepare, finish, tokens, used = asyncio.run(run())
    return {
        "prepare_ms": [round(t, 1) for t in prepare],
        "prepare_p50_ms": percentile(prepare, 50),
        "prepare_p95_ms": percentile(prepare, 95),
        "prepare_p99_ms": percentile(prepare, 99),
        "finish_p50_ms": percentile(finish, 50),
        "context_tokens_median": statistics.median(tokens),
        "memories_used_median": statistics.median(used),
    }


def embedding_only(requests: int, rng: random.Random) -> dict:
    from memory.embeddings import get_embedder

    embedder = get_embedder()
    times = []
    for _ in range(requests):
        text = question(rng)
        started = time.perf_counter()
        embedder.embed_one(text)
        times.append((time.perf_counter() - started) * 1000)
    return {"embed_p50_ms": percentile(times, 50), "embed_p95_ms": percentile(times, 95)}


# --- processes ------------------------------------------------------------------------------------


def child_env(database_url: str, **extra) -> dict:
    env = dict(os.environ)
    env.update(
        DATABASE_URL=database_url,
        DJANGO_SETTINGS_MODULE="config.settings.base",
        LOG_LEVEL="WARNING",
        HF_HUB_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        **extra,
    )
    return env


def web(database_url: str, key: str, users: int, requests: int, rng: random.Random) -> dict:
    import httpx

    port = 18000 + rng.randrange(1000)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "config.asgi:application",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        cwd=ROOT,
        env=child_env(database_url),
        stdin=subprocess.DEVNULL,
    )
    try:
        client = httpx.Client(
            base_url=f"http://127.0.0.1:{port}",
            headers={"Authorization": f"Bearer {key}"},
            timeout=30,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                client.get("/healthz")
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

        def call():
            body = {
                "model": "gpt-4o-mini",
                "messages": [{"role": "user", "content": question(rng)}],
            }
            started = time.perf_counter()
            response = client.post(
                "/v1/context", json=body, headers={"x-user-id": f"user-{rng.randrange(users)}"}
            )
            response.raise_for_status()
            return (time.perf_counter() - started) * 1000

        for _ in range(10):
            call()
        times = [call() for _ in range(requests)]
        return {
            "http_context_p50_ms": percentile(times, 50),
            "http_context_p95_ms": percentile(times, 95),
            "web_rss_mb": rss_mb(process.pid),
        }
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


def corpus(rng: random.Random, count: int) -> list[dict]:
    """LoCoMo turns when the evaluation data sits beside the repository, else synthetic ones."""
    path = ROOT.parent / "shared" / "eval-data" / "locomo-dev.json"
    turns = []
    if path.exists():
        for sample in json.loads(path.read_text()):
            conversation = sample["conversation"]
            for n in range(1, 40):
                for turn in conversation.get(f"session_{n}") or []:
                    turns.append({"role": "user", "name": turn["speaker"], "content": turn["text"]})
    if not turns:
        turns = [
            {"role": "user", "content": t.replace(t.split()[0], "I", 1)}
            for t in distinct_texts(count, rng)
        ]
    return turns[:count]


def worker(database_url: str, workspace, messages: int, rng: random.Random) -> dict:
    from django.db.models import Max, Min

    from config.celery import app
    from memory.models import Memory, ProcessingJob
    from memory.services import conversation_get_or_create, messages_import

    app.control.purge()  # the enrichment run's jobs: not part of this measurement
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "config",
            "worker",
            "-Q",
            "memory",
            "-P",
            "solo",
            "-c",
            "1",
            "--loglevel",
            "WARNING",
            "-n",
            f"bench-{os.getpid()}@%h",
        ],
        cwd=ROOT,
        env=child_env(database_url, ENGRAM_MEMORY_EXTRACTION="offline"),
        stdin=subprocess.DEVNULL,
    )
    try:
        from config.celery import app

        deadline = time.monotonic() + 120
        while not app.control.ping(timeout=1.0):
            if time.monotonic() > deadline:
                raise RuntimeError("the worker did not start")
        turns = corpus(rng, messages)
        before = Memory.objects.filter(workspace=workspace).count()
        batch = 100
        stamp = rng.random()
        for start in range(0, len(turns), batch):
            conversation, _ = conversation_get_or_create(
                workspace=workspace, external_id=f"extract-{stamp}-{start}", user_id="extract-user"
            )
            messages_import(
                workspace=workspace,
                conversation=conversation,
                messages=turns[start : start + batch],
            )
        jobs = ProcessingJob.objects.filter(
            conversation__external_id__startswith=f"extract-{stamp}-"
        )
        deadline = time.monotonic() + 900
        while jobs.exclude(status__in=["done", "failed"]).exists():
            if time.monotonic() > deadline:
                raise RuntimeError("extraction did not finish")
            time.sleep(0.5)
        window = jobs.aggregate(first=Min("created_at"), last=Max("updated_at"))
        seconds = (window["last"] - window["first"]).total_seconds()
        return {
            "extraction_messages": len(turns),
            "extraction_failed_jobs": jobs.filter(status="failed").count(),
            "extraction_seconds": seconds,
            "extraction_messages_per_s": len(turns) / seconds,
            "memories_extracted": Memory.objects.filter(workspace=workspace).count() - before,
            "worker_rss_mb": rss_mb(process.pid),
        }
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--per-user", type=int, default=1000)
    parser.add_argument("--messages-per-user", type=int, default=200)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--extract-messages", type=int, default=600)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--only-enrichment", action="store_true", help="skip HTTP and worker runs")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    database_url = bench_database_url()
    django_setup(database_url)
    print(
        f"setup: {args.users} users x {args.per_user} memories, "
        f"{args.messages_per_user} past messages each"
    )
    workspace, key, _ = fill(args.users, args.per_user, args.messages_per_user, rng)
    results = {}
    results |= embedding_only(100, rng)
    results |= enrichment(workspace, args.users, args.requests, rng)
    if args.only_enrichment:
        print(json.dumps(results, indent=2, default=str))
        return
    results |= web(database_url, key, args.users, args.requests, rng)
    results |= worker(database_url, workspace, args.extract_messages, rng)
    results["bench_process_rss_mb"] = rss_mb(os.getpid())
    print("\nmemory benchmark")
    print(
        f"  memories in workspace        {args.users * args.per_user:>10,}  ({args.per_user}/user)"
    )
    print(
        f"  query embedding              p50 {results['embed_p50_ms']:6.1f} ms   p95 {results['embed_p95_ms']:6.1f} ms"
    )
    print(
        f"  enrichment (prepare_turn)    p50 {results['prepare_p50_ms']:6.1f} ms   p95 {results['prepare_p95_ms']:6.1f} ms   p99 {results['prepare_p99_ms']:6.1f} ms"
    )
    print(f"  finish_turn                  p50 {results['finish_p50_ms']:6.1f} ms")
    print(
        f"  POST /v1/context over HTTP   p50 {results['http_context_p50_ms']:6.1f} ms   p95 {results['http_context_p95_ms']:6.1f} ms"
    )
    print(
        f"  context tokens (median)      {results['context_tokens_median']:>6}   memories used (median) {results['memories_used_median']}"
    )
    print(
        f"  extraction, one worker       {results['extraction_messages_per_s']:6.1f} messages/s  "
        f"({results['extraction_messages']} messages -> {results['memories_extracted']} memories "
        f"in {results['extraction_seconds']:.1f}s, {results['extraction_failed_jobs']} failed jobs)"
    )
    print(
        f"  RSS: web {results['web_rss_mb']:.0f} MB, worker {results['worker_rss_mb']:.0f} MB, "
        f"bench process {results['bench_process_rss_mb']:.0f} MB"
    )
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "memory.json").write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
