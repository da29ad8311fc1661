"""A soak: a steady mixed load through `make run`'s Engram for minutes, memory sampled throughout.

    .venv/bin/python bench/bench_soak.py                          # 10 minutes at 150 req/s
    .venv/bin/python bench/bench_soak.py --seconds 15 --rate 10   # a smoke run

Starts Engram as `make run` does (config.embedded.supervisor: one web process per core, a
Celery worker, beat) in front of a mock upstream (bench_gateway.py's: `--latency-ms` for plain
answers, 20 chunks x 10 ms for streams), with the offline extractor (`--extraction`). An
open-loop load generator sends `--rate` requests a second for `--seconds`, a mix
(`--mix plain,memory,stream`, default 0.5,0.3,0.2) of plain completions, memory-enriched ones
(`x-user-id` among `--users` users, each telling facts about themselves, so the worker
extracts) and streamed ones. Every `--sample-seconds` (10) it prints the RSS of each web and
worker process (the worker's pool processes each on their own) and the requests and errors so
far. At the end: the growth of each process's RSS from the sample after the first minute to
the last (target <= 10 %), the errors (target 0) and the extraction lag — from a turn's job
created to done — p50 / p95 (target p95 <= 2 s), then the verdict.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import machine  # noqa: E402
from bench.bench_gateway import PROMPT, child, free_port, percentile, wait_port  # noqa: E402
from bench.engram_proc import child_kind, cpu_seconds, live_engram, roots  # noqa: E402

CITIES = ["Lisbon", "Oslo", "Kyoto", "Lima", "Accra", "Perth", "Quito", "Riga", "Turin", "Hanoi"]
LIKES = ["jazz", "chess", "ramen", "hiking", "sailing", "poetry", "tennis", "baking", "opera"]
JOBS = ["nurse", "pilot", "teacher", "chemist", "carpenter", "lawyer", "designer", "farmer"]


def statement(rng: random.Random, *, unique: bool = False) -> str:
    """A first-person statement: one of 117 texts, or with `unique` one no other turn says
    (a number in it), as real users' turns are: the 117 repeat within an extraction run, which
    lets a run embed each text once (bench/README, *Soak*) and flatters the worker."""
    n = rng.randrange(1, 10**6) if unique else 0  # the default draws as before
    return rng.choice(
        [
            f"I live in {rng.choice(CITIES)}" + (f", at number {n}." if unique else "."),
            f"I love {rng.choice(LIKES)}" + (f" and have done it for {n} days." if unique else "."),
            f"I work as a {rng.choice(JOBS)}" + (f" with {n} colleagues." if unique else "."),
            f"My favorite food is {rng.choice(LIKES)}, and I visit {rng.choice(CITIES)} often"
            + (f", {n} times so far." if unique else "."),
        ]
    )


def processes(supervisor_pid: int) -> dict[str, list]:
    """The web processes and the worker's processes (its main process, then its pool)."""
    import psutil

    found: dict[str, list] = {"web": [], "worker": []}
    for proc in psutil.Process(supervisor_pid).children():
        kind = child_kind(proc)
        if kind == "web":
            found["web"].append(proc)
        elif kind == "worker":
            found["worker"] += [proc, *proc.children(recursive=True)]
    return found


def rss_row(supervisor_pid: int) -> dict[str, float]:
    """name -> RSS MB: web1, web2, ..., worker (main), worker-pool1, ..."""
    import psutil

    row = {}
    found = processes(supervisor_pid)
    for i, proc in enumerate(found["web"]):
        with contextlib.suppress(psutil.Error):
            row[f"web{i + 1}"] = proc.memory_info().rss / 2**20
    for i, proc in enumerate(found["worker"]):
        with contextlib.suppress(psutil.Error):
            row["worker" if i == 0 else f"worker-pool{i}"] = proc.memory_info().rss / 2**20
    return row


class Load:
    def __init__(
        self,
        base: str,
        key: str,
        *,
        users: int,
        mix: list[float],
        seed: int,
        unique: bool = False,
    ) -> None:
        self.base, self.key, self.users, self.mix, self.unique = base, key, users, mix, unique
        self.rng = random.Random(seed)
        self.sent = self.done = 0
        self.errors: dict[str, int] = {}
        self.kinds = {"plain": 0, "memory": 0, "stream": 0}
        self.tag = f"soak-{int(time.time())}"

    def error(self, name: str) -> None:
        self.errors[name] = self.errors.get(name, 0) + 1

    async def one(self, session) -> None:
        import aiohttp

        kind = self.rng.choices(["plain", "memory", "stream"], weights=self.mix)[0]
        self.kinds[kind] += 1
        headers = {"Authorization": f"Bearer {self.key}"}
        body = dict(PROMPT)
        if kind == "memory":
            user = self.rng.randrange(self.users)
            headers["x-user-id"] = f"{self.tag}-u{user}"
            headers["x-conversation-id"] = f"{self.tag}-c{user}"
            text = statement(self.rng, unique=self.unique)
            body["messages"] = [{"role": "user", "content": text}]
        elif kind == "stream":
            body["stream"] = True
        try:
            async with session.post(
                self.base + "/v1/chat/completions", json=body, headers=headers
            ) as response:
                payload = await response.read()
                if response.status != 200:
                    self.error(f"http {response.status}")
                elif kind == "stream" and not payload.endswith(b"data: [DONE]\n\n"):
                    self.error("stream cut")
                else:
                    self.done += 1
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            self.error(type(exc).__name__)

    async def run(self, *, rate: float, seconds: float, sample, every: float) -> None:
        import aiohttp

        timeout = aiohttp.ClientTimeout(total=60)
        connector = aiohttp.TCPConnector(limit=1000)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            tasks: set[asyncio.Task] = set()
            began = time.perf_counter()
            next_sample = began
            while (now := time.perf_counter()) - began < seconds:
                if now >= next_sample:
                    sample(now - began)
                    next_sample += every
                due = began + self.sent / rate  # open loop: on schedule, answered or not
                if due > now:
                    await asyncio.sleep(min(due - now, next_sample - now))
                    continue
                self.sent += 1
                task = asyncio.ensure_future(self.one(session))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            if tasks:
                await asyncio.wait(tasks, timeout=60)
            sample(time.perf_counter() - began)


def extraction_lags(since: float, wait: float) -> tuple[list[float], int]:
    """(seconds from created to done of each extraction job since `since`, jobs not done)."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.base")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    import django

    from config.embedded import ensure_environment

    ensure_environment()
    django.setup()
    from datetime import UTC, datetime

    from memory.models import ProcessingJob

    jobs = ProcessingJob.objects.filter(
        kind="extract", created_at__gte=datetime.fromtimestamp(since, UTC)
    )
    deadline = time.monotonic() + wait
    while jobs.exclude(status="done").exists() and time.monotonic() < deadline:
        time.sleep(1)
    done = jobs.filter(status="done").values_list("created_at", "updated_at")
    lags = [(finished - created).total_seconds() for created, finished in done]
    return lags, jobs.exclude(status="done").count()


def behind_mock(latency_ms: float, extraction: str) -> tuple[int, list[str], dict[str, str]]:
    """(port, command, Engram's environment) of bench_gateway's mock upstream answering in
    `latency_ms`, with `extraction` as the memory extractor (bench_turn_cpu.py uses it too)."""
    port = free_port()
    command = [sys.executable, str(ROOT / "bench" / "bench_gateway.py")]
    command += ["--serve-mock", str(port), "--latency-ms", str(latency_ms)]
    env = {
        "OPENAI_BASE_URL": f"http://127.0.0.1:{port}/v1",
        "OPENAI_API_KEY": "sk-mock",
        "ANTHROPIC_BASE_URL": "",
        "ENGRAM_MEMORY_EXTRACTION": extraction,
        "LOG_LEVEL": "WARNING",
    }
    return port, command, env


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--rate", type=float, default=150, help="requests per second")
    parser.add_argument("--mix", default="0.5,0.3,0.2", help="plain,memory,stream shares")
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--latency-ms", type=float, default=60, help="the mock's answer time")
    parser.add_argument("--sample-seconds", type=float, default=10)
    parser.add_argument("--warmup-seconds", type=float, default=60, help="growth counts after")
    parser.add_argument("--extraction", default="offline", help="ENGRAM_MEMORY_EXTRACTION")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--unique-text",
        action="store_true",
        help="every remembered turn's statement and the mock's every answer a text of its own",
    )
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    mix = [float(x) for x in args.mix.split(",")]
    import uvloop

    calibration = machine.calibration_ms()
    steal = machine.Steal()
    mock_port, mock_args, env = behind_mock(args.latency_ms, args.extraction)
    if args.unique_text:
        mock_args.append("--unique-answers")
    series: list[dict] = []
    with child(mock_args) as mock, live_engram(env=env) as (base, key):
        wait_port(mock_port, mock)
        supervisor = live_engram.supervisor_pid  # type: ignore[attr-defined]
        print(
            f"Soak: {args.rate:g} req/s for {args.seconds:g} s, mix plain/memory/stream "
            f"{args.mix}, {len(processes(supervisor)['web'])} web process(es)"
            + (", every remembered text unique" if args.unique_text else "")
        )
        print(f"  machine at start: {machine.line(calibration)}")
        load = Load(base, key, users=args.users, mix=mix, seed=args.seed, unique=args.unique_text)
        started_wall = time.time()

        def sample(at: float) -> None:
            row = rss_row(supervisor)
            series.append({"t": round(at, 1), "rss_mb": row, "sent": load.sent})
            errors = sum(load.errors.values())
            sizes = "  ".join(f"{name} {mb:.0f}" for name, mb in row.items())
            print(
                f"  t={at:6.0f} s  sent {load.sent:>7}  ok {load.done:>7}  errors {errors:>4}"
                f"  RSS MB: {sizes}  (load {os.getloadavg()[0]:.2f})",
                flush=True,
            )

        # Where the CPU went during the load, by kind of process, beside how busy the machine
        # was: whether a lag is the worker's share of a saturated machine or something else.
        found = roots(supervisor, mock.pid)
        cpu_before, busy = cpu_seconds(found), machine.Steal()
        load_started = time.perf_counter()
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(
                load.run(
                    rate=args.rate, seconds=args.seconds, sample=sample, every=args.sample_seconds
                )
            )
        load_seconds = time.perf_counter() - load_started
        cores = {
            kind: (seconds - cpu_before[kind]) / load_seconds
            for kind, seconds in cpu_seconds(found).items()
        }
        busy_percent = busy.busy_percent()
        lags, pending = extraction_lags(started_wall, wait=30)
    after = [s for s in series if s["t"] >= args.warmup_seconds] or series
    growth = {}
    for name in after[-1]["rss_mb"]:
        first = after[0]["rss_mb"].get(name)
        if first:
            growth[name] = 100.0 * (after[-1]["rss_mb"][name] - first) / first
    errors = sum(load.errors.values())
    lag_p95 = percentile(lags, 95)
    print(f"\n  requests: {load.sent} sent, {load.done} answered, by kind {load.kinds}")
    print(f"  errors: {load.errors or 0}")
    print(
        "  RSS growth from t="
        + f"{after[0]['t']:.0f} s to t={after[-1]['t']:.0f} s: "
        + ", ".join(f"{name} {pct:+.1f} %" for name, pct in growth.items())
    )
    print(
        f"  extraction lag (job created -> done): {len(lags)} jobs, p50 "
        f"{percentile(lags, 50):.2f} s, p95 {lag_p95:.2f} s, max {max(lags, default=0):.2f} s; "
        f"not done 30 s after the load: {pending}"
    )
    print(
        f"  CPU during the load: the machine {busy_percent:.1f} % busy "
        f"({os.cpu_count()} cores); cores used by "
        + ", ".join(f"{kind} {used:.2f}" for kind, used in cores.items())
    )
    print(f"  machine over the run: {machine.line(steal=steal)}")
    flat = all(pct <= 10 for pct in growth.values())
    lag_ok = bool(lags) and lag_p95 <= 2 and pending == 0
    verdict = flat and errors == 0 and lag_ok
    print(
        f"  verdict: {'met' if verdict else 'NOT met'} (RSS growth <= 10 %: {flat}, 0 errors: "
        f"{errors == 0}, extraction lag p95 <= 2 s: {lag_ok})"
    )
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        results = {
            "machine": machine.describe(calibration),
            "args": vars(args),
            "series": series,
            "growth_percent": growth,
            "errors": load.errors,
            "extraction_lag_s": {"n": len(lags), "p95": lag_p95, "pending": pending},
            "cpu": {"busy_percent": busy_percent, "cores_by_kind": cores},
            "verdict": verdict,
        }
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0 if verdict else 1


if __name__ == "__main__":
    sys.exit(main())
