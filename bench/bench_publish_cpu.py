"""What sending a task costs the sending process: Celery's apply_async against config.publish.

    .venv/bin/python bench/bench_publish_cpu.py                # 8 x 2,000 sends of each
    .venv/bin/python bench/bench_publish_cpu.py --sends 500 --rounds 4

Sends `memory.extract` (a turn's extraction job, as config.celery.send does on commit) to the
embedded Redis, on a database of its own (BENCH_DB: its queue is deleted after), `--sends` by
apply_async, then as many by config.publish, alternating for `--rounds`: CPU µs per send
(time.process_time, the Redis round trip's system calls included) and Python calls per send
(cProfile), and for scale one bare LPUSH of a message of the same size.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH_DB = 14


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sends", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.base")
    os.environ["LOG_LEVEL"] = "WARNING"
    from config.embedded.servers import ensure_postgres, ensure_redis

    os.environ["DATABASE_URL"] = ensure_postgres()
    os.environ["REDIS_URL"] = f"{ensure_redis().rsplit('/', 1)[0]}/{BENCH_DB}"
    import django

    django.setup()
    import redis

    from config.celery import PUBLISH_RETRY_POLICY
    from config.publish import publish
    from memory import tasks

    task = tasks.extract
    broker = redis.Redis.from_url(os.environ["REDIS_URL"], socket_timeout=2)

    def old(i: int) -> None:
        task.apply_async((f"job_{i:026d}",), retry_policy=PUBLISH_RETRY_POLICY)

    def new(i: int) -> None:
        publish(task, (f"job_{i:026d}",), PUBLISH_RETRY_POLICY)

    message = b""

    def bare(i: int) -> None:
        broker.lpush("memory", message)

    try:
        for way in (old, new):  # connections, the queue's declaration, imports
            for i in range(200):
                way(i)
        message = broker.lindex("memory", 0) or b""
        print(f"load average {os.getloadavg()[0]:.2f}; {args.rounds} x {args.sends} sends each")
        cpu: dict[str, list[float]] = {"apply_async": [], "config.publish": [], "bare LPUSH": []}
        for _ in range(args.rounds):
            for name, way in (("apply_async", old), ("config.publish", new), ("bare LPUSH", bare)):
                broker.delete("memory")
                started = time.process_time()
                for i in range(args.sends):
                    way(i)
                cpu[name].append((time.process_time() - started) / args.sends * 1e6)
        for name, way in (("apply_async", old), ("config.publish", new), ("bare LPUSH", bare)):
            profiler = cProfile.Profile()
            profiler.runcall(lambda way=way: [way(i) for i in range(500)])
            calls = pstats.Stats(profiler).total_calls / 500  # type: ignore[attr-defined]
            runs = ", ".join(f"{x:.0f}" for x in cpu[name])
            print(
                f"  {name:<15} CPU per send: median {statistics.median(cpu[name]):.0f} µs "
                f"({runs}); Python calls per send: {calls:.0f}"
            )
    finally:
        broker.delete("memory", "_kombu.binding.memory")


if __name__ == "__main__":
    main()
