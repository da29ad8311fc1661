"""What stalls a web process's event loop, over a whole slice of load (not one request).

    .venv/bin/python bench/probe_stalls.py                        # 16 clients, 20 s, plain turns
    .venv/bin/python bench/probe_stalls.py --user-id "probe-{n}" --clients 4   # remembered turns

Runs one Engram web process (`config.web --single`) in front of bench_gateway's mock upstream,
instrumented from inside: a coroutine on its loop wakes every millisecond and records how late
it woke (the loop's lag); a watchdog thread, whenever the loop is more than 4 ms late, samples
what every thread is doing; gc callbacks time each collection by generation. After the load it
prints the lags over 3 ms, the most frequent thread stacks during them, and the GC passes after
start-up. How to read it: a lag while the main thread sits in the loop's C code and no other
thread runs Python is the process waiting for a CPU (other processes); a lag while another
thread is in Python is that thread holding the GIL; a long GC pass is the collector.

What it showed (2026-12-03, this 2-core machine shared with other sessions, load average 2.5):
plain turns, 16 clients — of 89 late samples, 84 had the main thread inside the loop's C code
and every other thread idle (CPU contention, not Engram's periodic work); the usage flush
thread was in Python in 2, a key refresh's query in 2. After the start-up `gc.freeze()`, no
collection over 1.3 ms in 12 s (130 passes, 85 ms in all); before it, 129 ms and 53 ms full
passes. Remembered turns, 4 clients: lags to 25-40 ms while the four query embeddings (ONNX,
GIL released) and the database hops compete with the loop for the two cores.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import collections
import contextlib
import gc
import json
import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

LATE = 0.004  # the watchdog samples stacks when the loop is this late
REPORTED = 0.003  # lags over this are listed


def instrument(report_path: str) -> None:
    """In the web process: GC timings, a 1 ms heartbeat on the loop, a stack-sampling watchdog."""
    began = time.perf_counter()
    passes: list[tuple[float, int, float]] = []
    started = {"t": 0.0}

    def on_gc(phase, info):
        if phase == "start":
            started["t"] = time.perf_counter()
        else:
            now = time.perf_counter()
            passes.append((now - began, info["generation"], (now - started["t"]) * 1000))

    gc.callbacks.append(on_gc)
    lags: list[float] = []
    beat = {"t": time.perf_counter()}
    stacks: collections.Counter = collections.Counter()

    def watchdog() -> None:
        me = threading.get_ident()
        while True:
            time.sleep(0.001)
            if time.perf_counter() - beat["t"] <= LATE:
                continue
            names = {t.ident: t.name for t in threading.enumerate()}
            for ident, frame in sys._current_frames().items():
                if ident == me:
                    continue
                where = traceback.extract_stack(frame)[-3:]
                text = " <- ".join(
                    f"{os.path.basename(f.filename)}:{f.lineno}:{f.name}" for f in reversed(where)
                )
                stacks[f"{names.get(ident, '?')} | {text}"] += 1

    async def heartbeat() -> None:
        while True:
            before = beat["t"] = time.perf_counter()
            await asyncio.sleep(0.001)
            lag = time.perf_counter() - before - 0.001
            if lag > REPORTED:
                lags.append(lag * 1000)

    import uvicorn.server

    original = uvicorn.server.Server.startup

    async def startup(self, sockets=None):
        asyncio.get_running_loop().create_task(heartbeat())
        threading.Thread(target=watchdog, name="probe-watchdog", daemon=True).start()
        return await original(self, sockets)

    uvicorn.server.Server.startup = startup  # type: ignore[method-assign]

    def report() -> None:
        settled = [p for p in passes if p[0] > 5.0]  # after start-up and the warm-ups
        out = {
            "lags_ms": sorted(lags),
            "stacks": stacks.most_common(20),
            "gc_after_start": {
                "passes": len(settled),
                "total_ms": sum(p[2] for p in settled),
                "slowest": sorted(settled, key=lambda p: -p[2])[:10],
            },
            "gc_before": sorted(passes, key=lambda p: -p[2])[:5],
        }
        Path(report_path).write_text(json.dumps(out))

    atexit.register(report)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--user-id", help="x-user-id (a {n} is the client's number)")
    parser.add_argument("--serve-web", nargs=2, metavar=("PORT", "REPORT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_web:
        port, report_path = args.serve_web
        instrument(report_path)
        from config.web import serve_one

        with contextlib.suppress(KeyboardInterrupt):  # how the driver stops it
            serve_one("127.0.0.1", int(port), grace=5, log_level="warning")
        return 0

    import uvloop

    from bench import bench_gateway as gw
    from bench import machine

    gw.USER_ID = args.user_id
    key = gw.make_workspace_key()
    mock_port, port = gw.free_port(), gw.free_port()
    report_path = f"/tmp/engram-stalls-{os.getpid()}.json"
    web = [sys.executable, __file__, "--serve-web", str(port), report_path]
    mock = [
        sys.executable,
        str(ROOT / "bench" / "bench_gateway.py"),
        "--serve-mock",
        str(mock_port),
    ]
    with gw.child(mock) as mock_proc, gw.child(web, env=gw._engram_env(mock_port, {})) as proc:
        gw.wait_port(port, proc)
        gw.wait_port(mock_port, mock_proc)
        gw.wait_quiet(proc.pid)
        raw = gw.build_request(port, gw.PROMPT, key)
        stats = gw.Stats()
        steal = machine.Steal()
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(gw.run_slice("engram", port, raw, args.clients, args.seconds, stats))
        os.kill(proc.pid, signal.SIGINT)
        proc.wait(timeout=30)
    figures = gw.summarize(stats)["engram"]
    found = json.loads(Path(report_path).read_text())
    Path(report_path).unlink()
    print(
        f"{args.clients} clients for {args.seconds:g} s: {figures['n']} requests, latency p50 "
        f"{figures['p50']:.1f} / p99 {figures['p99']:.1f} ms (60 ms upstream)"
    )
    print(f"  machine: {machine.line(steal=steal)}")
    lags = found["lags_ms"]
    print(
        f"  loop lags over {REPORTED * 1000:.0f} ms: {len(lags)}; the longest: "
        + ", ".join(f"{x:.1f}" for x in lags[-10:])
    )
    print("  what the threads were doing while the loop was over 4 ms late (samples):")
    for stack, count in found["stacks"]:
        print(f"    {count:>5}  {stack}")
    gc_after = found["gc_after_start"]
    print(
        f"  GC after start-up: {gc_after['passes']} passes, {gc_after['total_ms']:.1f} ms in all; "
        "slowest (s after start, generation, ms): "
        + ", ".join(f"({t:.1f}, {g}, {ms:.2f})" for t, g, ms in gc_after["slowest"][:5])
    )
    print(
        "  GC during start-up, slowest: "
        + ", ".join(f"({t:.1f}, {g}, {ms:.2f})" for t, g, ms in found["gc_before"])
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
