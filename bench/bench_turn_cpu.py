"""What a remembered turn costs in CPU, by process kind: web, worker, PostgreSQL, Redis, mock, load.

    .venv/bin/python bench/bench_turn_cpu.py                     # 600 turns at 12/s, 40 users
    .venv/bin/python bench/bench_turn_cpu.py --turns 200 --rate 10 --json out.json

Starts Engram as bench_soak.py does (`make run`'s supervisor: one web process per core, a
Celery worker and beat, the embedded PostgreSQL and Redis) in front of bench_gateway.py's mock
upstream, with the offline extractor. Sends `--warmup` remembered turns (soak's kind: an
x-user-id and x-conversation-id among `--users`, each a statement about the user, so the worker
extracts), waits until every job is done, reads each process's CPU (user + system, psutil; the
reaped children's too: a PostgreSQL backend that exits is in the postmaster's), then sends
`--turns` more at `--rate` a second (open loop, a rate the machine carries so nothing queues),
waits until their extraction and summary jobs are done and reads again. Prints CPU ms per turn
of each kind, the tasks sent to the broker (Redis' LPUSH count), the calibration and the load
average.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import machine  # noqa: E402
from bench.bench_gateway import child, wait_port  # noqa: E402
from bench.bench_soak import Load, behind_mock  # noqa: E402
from bench.engram_proc import KINDS, cpu_seconds, live_engram, roots, worker_split  # noqa: E402


def _statement_log(on: bool) -> None:
    """Every statement into postgres.log, with the backend's pid (or back to the default)."""
    from django.db import connection

    with connection.cursor() as cursor:
        if on:
            cursor.execute("ALTER SYSTEM SET log_min_duration_statement = 0")
            cursor.execute("ALTER SYSTEM SET log_line_prefix = '%m [%p] '")
        else:
            cursor.execute("ALTER SYSTEM RESET log_min_duration_statement")
            cursor.execute("ALTER SYSTEM RESET log_line_prefix")
        cursor.execute("SELECT pg_reload_conf()")
    connection.close()


def _profile_start(found: dict[str, list[psutil.Process]], out: str) -> list:
    import subprocess

    Path(out).mkdir(parents=True, exist_ok=True)
    _statement_log(True)
    spy = str(Path(sys.executable).parent / "py-spy")
    profilers = []
    for kind in ("web", "worker"):
        for i, proc in enumerate(found[kind]):
            target = f"{out}/{kind}{i + 1}.txt"
            args = [spy, "record", "--pid", str(proc.pid), "--subprocesses", "-f", "raw"]
            args += ["--rate", "200", "--nonblocking", "-o", target]
            profilers.append(
                subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            )
    time.sleep(2)  # py-spy attached
    return profilers


def _profile_stop(profilers: list) -> None:
    import signal

    for proc in profilers:
        proc.send_signal(signal.SIGINT)
    for proc in profilers:
        proc.wait(timeout=60)
    _statement_log(False)


def jobs_drained(since: float, wait: float) -> tuple[int, int, list[float]]:
    """(jobs since `since` done, not done after `wait` s, extraction lags in s)."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.base")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    import django

    from config.embedded import ensure_environment

    ensure_environment()
    django.setup()
    from datetime import UTC, datetime

    from django.db import connection

    from memory.models import ProcessingJob

    jobs = ProcessingJob.objects.filter(created_at__gte=datetime.fromtimestamp(since, UTC))
    deadline = time.monotonic() + wait
    while jobs.exclude(status__in=["done", "failed"]).exists() and time.monotonic() < deadline:
        time.sleep(0.5)
    done = jobs.filter(status="done")
    lags = [
        (finished - created).total_seconds()
        for created, finished in done.filter(kind="extract").values_list("created_at", "updated_at")
    ]
    result = done.count(), jobs.exclude(status="done").count(), lags
    connection.close()  # its backend's CPU is not the turns'
    return result


def broker_sends() -> int:
    """Messages published to the broker so far: Redis' LPUSH count (kombu publishes each task
    with one; every one of them the worker receives, hands over and acks). Django set up."""
    import redis
    from django.conf import settings

    stats = redis.Redis.from_url(settings.CELERY_BROKER_URL).info("commandstats")
    return int(stats.get("cmdstat_lpush", {}).get("calls", 0))


def send(base: str, key: str, *, turns: int, rate: float, users: int, seed: int, tag: str) -> Load:
    import uvloop

    load = Load(base, key, users=users, mix=[0, 1, 0], seed=seed)
    load.tag = tag
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(load.run(rate=rate, seconds=turns / rate, sample=lambda at: None, every=1e9))
    return load


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=600)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--rate", type=float, default=12, help="turns per second")
    parser.add_argument("--users", type=int, default=40)
    parser.add_argument("--latency-ms", type=float, default=60, help="the mock's answer time")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument(
        "--profile-dir",
        help="py-spy (raw) the web and worker processes over the measured turns, and log "
        "every statement PostgreSQL runs then (postgres.log under ENGRAM_DATA_DIR); the CPU "
        "figures then include the profilers' pauses",
    )
    args = parser.parse_args()

    calibration = machine.calibration_ms()
    mock_port, mock_args, env = behind_mock(args.latency_ms, "offline")
    tag = f"turncpu-{int(time.time())}"
    with child(mock_args) as mock, live_engram(env=env) as (base, key):
        wait_port(mock_port, mock)
        found = roots(live_engram.supervisor_pid, mock.pid)  # type: ignore[attr-defined]
        print(
            f"Remembered turns: {args.warmup} warm-up, then {args.turns} at {args.rate:g}/s, "
            f"{args.users} users, {len(found['web'])} web process(es)"
        )
        print(f"  machine at start: {machine.line(calibration)}")
        began = time.time()
        warm = send(
            base, key, turns=args.warmup, rate=args.rate, users=args.users, seed=args.seed, tag=tag
        )
        jobs_drained(began, wait=120)
        time.sleep(1)
        steal = machine.Steal()
        profilers = _profile_start(found, args.profile_dir) if args.profile_dir else []
        before, split_before = cpu_seconds(found), worker_split(found)
        sends_before = broker_sends()
        began, clock = time.time(), time.perf_counter()
        load = send(
            base,
            key,
            turns=args.turns,
            rate=args.rate,
            users=args.users,
            seed=args.seed + 1,
            tag=tag,
        )
        sent_for = time.perf_counter() - clock
        done, pending, lags = jobs_drained(began, wait=300)
        if args.profile_dir:
            _profile_stop(profilers)
        time.sleep(1)  # the last job's commit and the worker's ack
        after, split_after = cpu_seconds(found), worker_split(found)
        sends = broker_sends() - sends_before
        elapsed = time.perf_counter() - clock
    per_turn = {kind: 1000 * (after[kind] - before[kind]) / max(load.done, 1) for kind in KINDS}
    engram = sum(per_turn[k] for k in ("web", "worker", "beat", "supervisor", "postgres", "redis"))
    errors = sum(load.errors.values()) + sum(warm.errors.values())
    lags.sort()
    p95 = lags[int(0.95 * (len(lags) - 1))] if lags else float("nan")
    print(
        f"  {load.done} turns answered in {sent_for:.1f} s, {errors} errors; {done} jobs done, "
        f"{pending} not; extraction lag p50 {lags[len(lags) // 2] if lags else 0:.2f} s, "
        f"p95 {p95:.2f} s; drained {elapsed:.1f} s after the first turn"
    )
    print("  CPU ms per turn: " + "  ".join(f"{k} {v:.1f}" for k, v in per_turn.items()))
    main_ms, pool_ms = (
        1000 * (a - b) / max(load.done, 1) for a, b in zip(split_after, split_before, strict=True)
    )
    print(f"  of the worker's: main process {main_ms:.1f}, pool {pool_ms:.1f}")
    print(
        f"  tasks sent to the broker (LPUSH; all received by the worker): {sends}, "
        f"{sends / max(load.done, 1):.2f} per turn"
    )
    print(f"  Engram's (web+worker+beat+supervisor+postgres+redis): {engram:.1f} ms per turn")
    print(f"  machine over the run: {machine.line(steal=steal)}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(
            json.dumps(
                {
                    "machine": machine.describe(calibration),
                    "args": vars(args),
                    "turns": load.done,
                    "errors": errors,
                    "cpu_ms_per_turn": per_turn,
                    "engram_ms_per_turn": engram,
                    "worker_main_pool_ms_per_turn": [main_ms, pool_ms],
                    "tasks_sent": sends,
                    "extraction_lag_p95_s": p95,
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
