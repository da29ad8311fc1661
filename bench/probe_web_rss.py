"""What grows in a web process under the soak's kind of load, and whether it stops growing.

    .venv/bin/python bench/probe_web_rss.py                       # tracemalloc's growers
    .venv/bin/python bench/probe_web_rss.py --rss                 # RSS only (no tracemalloc)
    .venv/bin/python bench/probe_web_rss.py --arenas              # RSS, MALLOC_ARENA_MAX=2 or not

One process drives requests straight through Engram's ASGI app (as bench_relay_cpu.py --whole
does) against the embedded database and a mock upstream in its own process: bench_soak.py's mix
(0.5 plain, 0.3 remembered, 0.2 streamed), the remembered turns among `--users` users (x-user-id,
x-conversation-id), each text one no other turn says (bench_soak.py --unique-text's
statements), `--at-once` requests at a time. Every `--every` remembered turns it prints the
process's RSS, what tracemalloc traces, the per-process caches' entries and (not with --rss)
the top growers since the first checkpoint, grouped by the innermost frame of Engram's own code
that allocated them. No Celery worker runs: the turns' jobs wait in Redis, outside the process,
and no memories are extracted (the users' statistics of their memories, which the soak's web
processes also hold, are empty here); the mock's answers are one text ("Paris."), where the
soak's --unique-text answers are each their own.

Under tracemalloc the process's RSS is no measure (its own tables: 303 -> 390 MB over 3,000
turns while what it traced grew ~2 MB); --rss and --arenas measure RSS without it.

One probe at a time per ENGRAM_DATA_DIR: the run that started the embedded PostgreSQL stops it
when it ends, under any other run still using it.

--arenas runs the --rss probe four times, MALLOC_ARENA_MAX=2 and unset in turn (unset first,
then 2, then 2, then unset), and prints each run's RSS at each checkpoint.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MIX = (0.5, 0.3, 0.2)  # plain, remembered, streamed: bench_soak.py's default
STREAM_PIECES = 20  # as bench_soak's mock streams
MOCK_GAP = 0.01  # seconds between the mock's frames (bench_soak's mock: 20 chunks x 10 ms)


def rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def cache_sizes() -> dict[str, int]:
    """Entries of each per-process cache the request path fills."""
    from accounts import authentication
    from completions import pricing, routing
    from completions.agents import cache as agents
    from config.common import tokens
    from memory.retrieval import terms
    from memory.turn import conversation, rows

    return {
        "rows._counted": len(rows._counted),
        "conversation._digests": len(conversation._digests),
        "tokens.count": tokens._count_cached.cache_info().currsize,
        "terms._lexemes": len(terms._lexemes),
        "terms._user_stats": len(terms._user_stats),
        "terms._speakers": len(terms._speakers),
        "auth._touched": len(authentication._touched),
        "routing._snapshots": len(routing._snapshots),
        "pricing._table": len(pricing._table),
        "agents._current": len(agents._current),
    }


def stats_bytes() -> int:
    """The deep size of the users' term statistics held (their df dicts and keys)."""
    from memory.retrieval import terms

    total = 0
    for entry in list(terms._user_stats._entries.values()):
        df = entry.value.df
        total += sys.getsizeof(df) + sum(sys.getsizeof(k) for k in df)
    return total


def lexemes_bytes() -> int:
    from memory.retrieval import terms

    total = sys.getsizeof(terms._lexemes._entries)
    for word, entry in list(terms._lexemes._entries.items()):
        total += sys.getsizeof(word) + sys.getsizeof(entry) + sys.getsizeof(entry.value)
        total += sum(sys.getsizeof(x) for x in entry.value)
    return total


def growers(first: tracemalloc.Snapshot, now: tracemalloc.Snapshot, top: int) -> list[str]:
    """The top growers since `first`, by the innermost frame in Engram's code (else the
    innermost frame) of each allocation's traceback."""
    by_site: dict[str, list[int]] = {}
    for stat in now.compare_to(first, "traceback"):
        if not stat.size_diff:
            continue
        site = None
        for frame in reversed(stat.traceback):  # innermost first (a Traceback is oldest first)
            name = frame.filename
            if str(ROOT) in name and "/.venv/" not in name:
                site = f"{Path(name).relative_to(ROOT)}:{frame.lineno}"
                break
        if site is None:
            frame = stat.traceback[-1]
            site = f"{frame.filename.rsplit('/site-packages/', 1)[-1]}:{frame.lineno}"
        found = by_site.setdefault(site, [0, 0])
        found[0] += stat.size_diff
        found[1] += stat.count_diff
    ranked = sorted(by_site.items(), key=lambda item: -abs(item[1][0]))[:top]
    return [
        f"    {size / 2**20:+8.2f} MB {count:+9d} blocks  {site}" for site, (size, count) in ranked
    ]


def inner(args) -> None:
    """The load, in this process; the figures printed as they come."""
    from config.asgi import application  # first: it sets Django up

    key = os.environ["ENGRAM_BENCH_KEY"].encode()
    from bench.bench_relay_cpu import chat_scope, receive_once
    from bench.bench_soak import statement

    rng = random.Random(args.seed)
    tag = f"rss-{int(time.time())}"
    trace = not args.rss
    base_body = {"model": "gpt-4o-mini", "max_tokens": STREAM_PIECES}
    headers = [
        (b"host", b"127.0.0.1:8000"),
        (b"authorization", b"Bearer " + key),
        (b"content-type", b"application/json"),
    ]
    refused: dict[int, int] = {}
    done = {"plain": 0, "memory": 0, "stream": 0}

    async def one() -> None:
        kind = rng.choices(["plain", "memory", "stream"], weights=MIX)[0]
        body = dict(base_body)
        extra = []
        if kind == "memory":
            user = rng.randrange(args.users)
            extra = [
                (b"x-user-id", f"{tag}-u{user}".encode()),
                (b"x-conversation-id", f"{tag}-c{user}".encode()),
            ]
            body["messages"] = [{"role": "user", "content": statement(rng, unique=True)}]
        else:
            body["messages"] = [{"role": "user", "content": "Say hello."}]
            body["stream"] = kind == "stream"
        raw = json.dumps(body).encode()
        scope = chat_scope([*headers, (b"content-length", b"%d" % len(raw)), *extra])
        receive = receive_once(raw)

        async def send(message: Mapping[str, Any]) -> None:
            if message["type"] == "http.response.start" and message["status"] != 200:
                refused[message["status"]] = refused.get(message["status"], 0) + 1

        await application(scope, receive, send)
        done[kind] += 1

    async def main() -> None:
        began = time.perf_counter()
        first: tracemalloc.Snapshot | None = None
        checkpoint = args.warm
        running: set[asyncio.Task] = set()
        while done["memory"] < args.warm + args.turns:
            while len(running) < args.at_once:
                task = asyncio.ensure_future(one())
                running.add(task)
                task.add_done_callback(running.discard)
            await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            if done["memory"] < checkpoint:
                continue
            await asyncio.gather(*running)  # a quiet moment: no request half done
            await asyncio.sleep(1.0)  # the turns' finishes
            snapshot = None
            traced = 0.0
            if trace:  # what the process holds, the probe's own snapshots (~3 MB) left out
                snapshot = tracemalloc.take_snapshot().filter_traces(
                    [tracemalloc.Filter(False, tracemalloc.__file__)]
                )
                traced = sum(stat.size for stat in snapshot.statistics("filename")) / 2**20
            turns = done["memory"] - args.warm
            requests = sum(done.values())
            sizes = cache_sizes()
            print(
                f"  {turns:>6} turns ({requests} requests, {time.perf_counter() - began:.0f} s)"
                f"  RSS {rss_mb():.1f} MB  traced {traced:.1f} MB"
                f"  user stats {stats_bytes() / 2**20:.2f} MB"
                f"  lexemes {lexemes_bytes() / 2**20:.2f} MB",
                flush=True,
            )
            print("    caches: " + ", ".join(f"{k} {v}" for k, v in sizes.items()), flush=True)
            if snapshot is not None:
                if first is None:
                    first = snapshot
                else:
                    print("\n".join(growers(first, snapshot, args.top)), flush=True)
            checkpoint += args.every
        if refused:
            print(f"  refused: {refused}")

    if trace:
        tracemalloc.start(args.frames)
    import uvloop

    uvloop.run(main())


def outer(args) -> None:
    import signal

    from bench import machine
    from bench.bench_gateway import free_port, wait_port
    from bench.bench_relay_cpu import whole_env

    env = whole_env()
    # As the soak runs: the usage records flushed and the caches reloaded on their clocks.
    for name in (
        "ENGRAM_USAGE_FLUSH_SECONDS",
        "ENGRAM_ROUTING_CACHE_SECONDS",
        "ENGRAM_KEY_CACHE_SECONDS",
    ):
        env.pop(name, None)
    port = free_port()
    env["OPENAI_BASE_URL"] = f"http://127.0.0.1:{port}/v1"
    serve = f"import bench.bench_relay_cpu as b; b.WHOLE_GAP = {MOCK_GAP}; b.serve_mock({port})"
    mock = subprocess.Popen([sys.executable, "-c", serve], cwd=ROOT, start_new_session=True)
    try:
        wait_port(port, mock)
        print(f"load average {os.getloadavg()[0]:.2f}, calibration {machine.calibration_ms()} ms")
        print(
            f"mix {MIX} (plain, remembered, streamed), {args.users} users, {args.at_once} at"
            f" once; checkpoints every {args.every} remembered turns after {args.warm}"
        )
        passed = [a for a in sys.argv[1:] if a != "--arenas"]
        if args.arenas:
            passed.append("--rss")
        runs = [("unset", {}), ("2", {"MALLOC_ARENA_MAX": "2"})]
        order = [runs[0], runs[1], runs[1], runs[0]] if args.arenas else [runs[0]]
        for label, extra in order:
            if args.arenas:
                print(f"\n--- MALLOC_ARENA_MAX {label}", flush=True)
            child_env = {**env, **extra}
            if not extra:
                child_env.pop("MALLOC_ARENA_MAX", None)
            subprocess.run(
                [sys.executable, __file__, "--inner", *passed], env=child_env, check=True
            )
    finally:
        os.killpg(mock.pid, signal.SIGTERM)
        mock.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=6000, help="remembered turns measured")
    parser.add_argument("--warm", type=int, default=500, help="remembered turns before")
    parser.add_argument("--every", type=int, default=1000, help="a checkpoint every N turns")
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--at-once", type=int, default=40)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--frames", type=int, default=16, help="tracemalloc's frames kept")
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--rss", action="store_true", help="no tracemalloc")
    parser.add_argument("--arenas", action="store_true", help="MALLOC_ARENA_MAX 2 or unset")
    parser.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inner:
        inner(args)
    else:
        outer(args)


if __name__ == "__main__":
    main()
