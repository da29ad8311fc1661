"""Many concurrent streams through Engram: errors, added time to first token, and whether a
client that hangs up frees its upstream stream within a second.

    .venv/bin/python bench/bench_streams.py                       # 500 clients, ~2.5 minutes
    .venv/bin/python bench/bench_streams.py --clients 50 --slices 1 --slice-seconds 5   # smoke

A mock upstream (its own process) streams `--chunks` chunks `--chunk-ms` apart (default 20 x
50 ms, the first after one gap) and notes, for each stream, the moment its client (Engram, or
the load generator on the direct path) closed the connection. `--clients` closed-loop clients
(raw HTTP/1.1, uvloop, started over the first second so they do not march in step) stream
straight at the mock and through Engram in interleaved slices, as bench_gateway.py does. On
the Engram path every `--cut-every`-th stream is abandoned after `--cut-after` chunks: the
client closes its socket, and the mock's note says how long Engram took to close the upstream
stream behind it (the clock is the machine's monotonic clock, shared by the processes).

Prints, per path: streams, errors, time to first token and whole stream p50 / p99; the added
time to first token; the cut streams freed within 1 s; and the machine line (load, steal,
calibration: bench/machine.py). Targets (issue "The gateway at the floor"): 0 errors, added
TTFT p99 <= 50 ms, every cut upstream freed within 1 s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import machine  # noqa: E402
from bench.bench_gateway import (  # noqa: E402
    child,
    cpu_seconds,
    engram_web,
    free_port,
    make_workspace_key,
    percentile,
    wait_listening,
    wait_port,
    wait_quiet,
)

BODY = {
    "model": "gpt-4o-mini",
    "messages": [{"role": "user", "content": "Tell me a story in twenty short pieces."}],
    "stream": True,
}


# --- the mock upstream --------------------------------------------------------------------------


def mock_app(chunks: int, gap: float):
    base = {"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1, "model": "m"}

    def sse(payload) -> bytes:
        return b"data: " + json.dumps(payload).encode() + b"\n\n"

    frames = [sse(base | {"choices": [{"index": 0, "delta": {"role": "assistant"}}]})]
    frames += [
        sse(base | {"choices": [{"index": 0, "delta": {"content": f"piece {i} "}}]})
        for i in range(chunks)
    ]
    usage = {"prompt_tokens": 12, "completion_tokens": chunks, "total_tokens": 12 + chunks}
    stop = {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
    tail = sse(base | stop) + sse(base | {"choices": [], "usage": usage}) + b"data: [DONE]\n\n"
    freed: dict[str, float] = {}  # tag -> when its client closed the connection mid-stream

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        if scope["path"] == "/freed":
            payload = json.dumps(freed).encode()
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": payload})
            return
        raw = b""
        while True:
            message = await receive()
            raw += message.get("body", b"")
            if not message.get("more_body"):
                break
        tag = str(json.loads(raw).get("bench_tag", ""))
        finished = False

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            if not finished:
                freed[tag] = time.monotonic()

        watcher = asyncio.ensure_future(watch())
        head = [(b"content-type", b"text/event-stream")]
        try:
            await send({"type": "http.response.start", "status": 200, "headers": head})
            for frame in frames:  # the role frame after one gap, then a piece per gap
                await asyncio.sleep(gap)
                if watcher.done():
                    return
                await send({"type": "http.response.body", "body": frame, "more_body": True})
            finished = True
            await send({"type": "http.response.body", "body": tail})
        except OSError:
            pass
        finally:
            if finished:
                watcher.cancel()

    return app


def serve_mock(port: int, chunks: int, gap: float) -> None:
    import uvicorn

    uvicorn.run(
        mock_app(chunks, gap),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="off",
        loop="uvloop",
        http="httptools",
        backlog=4096,
    )


# --- the clients --------------------------------------------------------------------------------


@dataclass
class Incomplete(ValueError):
    pass


@dataclass
class Figures:
    ttft: list[float] = field(default_factory=list)
    total: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    cuts: dict[str, float] = field(default_factory=dict)  # tag -> when the client hung up
    frames: int = 0  # data frames received (chunks relayed), [DONE] left out
    cpu: dict[str, float] = field(default_factory=dict)  # process -> CPU seconds in the slices

    def error(self, name: str) -> None:
        self.errors[name] = self.errors.get(name, 0) + 1


def request_bytes(port: int, key: str | None, tag: str) -> bytes:
    payload = json.dumps(BODY | {"bench_tag": tag}).encode()
    auth = f"Authorization: Bearer {key}\r\n" if key else ""
    return (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{auth}"
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
    ).encode() + payload


async def one_stream(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    raw: bytes,
    cut_after: int | None,
    pieces: int,
) -> tuple[int, float | None, float, bool, int]:
    """(status, seconds to the first data frame, seconds in all, cut, data frames) of one
    stream. A stream read to its end must have brought every piece and `[DONE]` (else
    ValueError: an error); the frames are counted, not parsed."""
    started = time.perf_counter()
    writer.write(raw)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    chunked = b"transfer-encoding: chunked" in head.lower()
    first = None
    frames = 0
    seen = 0  # the mock's content pieces ("piece N ")
    done = False
    if not chunked:
        length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        await reader.readexactly(length)
        return status, None, time.perf_counter() - started, False, 0
    while True:
        size = int((await reader.readuntil(b"\r\n"))[:-2].split(b";")[0], 16)
        if size == 0:
            await reader.readuntil(b"\r\n")
            if seen != pieces or not done:
                raise Incomplete(f"incomplete stream: {seen} of {pieces} pieces, [DONE] {done}")
            return status, first, time.perf_counter() - started, False, frames
        data = await reader.readexactly(size + 2)
        if b"data: {" in data:
            frames += data.count(b"data: {")
            seen += data.count(b'"piece ')
            if first is None:
                first = time.perf_counter() - started
            if cut_after is not None and frames >= cut_after:
                return status, first, time.perf_counter() - started, True, frames
        if b"data: [DONE]" in data:
            done = True


async def run_slice(
    *,
    path: str,
    port: int,
    key: str | None,
    clients: int,
    seconds: float,
    figures: Figures,
    cut_every: int,
    cut_after: int,
    serial: list[int],
    pieces: int,
) -> None:
    deadline = time.perf_counter() + seconds

    async def client(number: int) -> None:
        await asyncio.sleep(random.random())  # spread the starts over a second
        reader = writer = None
        while time.perf_counter() < deadline:
            serial[0] += 1
            tag = f"{path}-{serial[0]}"
            cut_now = cut_every and path == "engram" and serial[0] % cut_every == 0
            cut = cut_after if cut_now else None
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                status, first, total, was_cut, frames = await asyncio.wait_for(
                    one_stream(reader, writer, request_bytes(port, key, tag), cut, pieces), 60
                )
            except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError) as exc:
                figures.error(type(exc).__name__)
                if writer is not None:
                    writer.close()
                reader = writer = None
                await asyncio.sleep(0.05)
                continue
            if status != 200:
                figures.error(f"http {status}")
                continue
            figures.frames += frames
            if first is not None:
                figures.ttft.append(first * 1000)
            if was_cut:
                writer.close()  # hang up mid-stream
                figures.cuts[tag] = time.monotonic()
                reader = writer = None
            else:
                figures.total.append(total * 1000)
        if writer is not None:
            writer.close()

    await asyncio.gather(*(client(n) for n in range(clients)))


def cpu(engram_pid: int, mock_pid: int) -> dict[str, float]:
    """CPU seconds so far (user + system) of Engram's web processes, the mock and this load
    generator: per 1,000 relayed frames, what each stream's chunks cost whoever carries them,
    whatever else shares the cores."""
    import psutil

    own = resource.getrusage(resource.RUSAGE_SELF)
    parent = psutil.Process(engram_pid)
    kernel = sum(p.cpu_times().system for p in [parent, *parent.children(recursive=True)])
    return {
        "engram": cpu_seconds(engram_pid),
        "engram_system": kernel,
        "mock": cpu_seconds(mock_pid),
        "client": own.ru_utime + own.ru_stime,
    }


def cpu_report(title: str, figures: Figures) -> dict:
    per = {name: seconds * 1000 / max(figures.frames, 1) for name, seconds in figures.cpu.items()}
    streams = len(figures.total) + len(figures.cuts)
    print(
        f"  {title:<8}{figures.frames:>9}{per['engram']:>10.3f}{per['mock']:>10.3f}"
        f"{per['client']:>10.3f}{figures.cpu['engram'] * 1000 / max(streams, 1):>14.2f}"
        f"{per['engram_system']:>10.3f}"
    )
    return {"frames": figures.frames, "cpu_s": dict(figures.cpu), "cpu_s_per_1000_frames": per}


def report(title: str, figures: Figures) -> dict:
    out = {
        "streams": len(figures.total) + len(figures.cuts),
        "errors": dict(figures.errors),
        "ttft_p50": percentile(figures.ttft, 50),
        "ttft_p99": percentile(figures.ttft, 99),
        "total_p50": percentile(figures.total, 50),
        "total_p99": percentile(figures.total, 99),
    }
    print(
        f"  {title:<8}{out['streams']:>8}{sum(figures.errors.values()):>8}"
        f"{out['ttft_p50']:>10.2f}{out['ttft_p99']:>10.2f}{out['total_p50']:>10.1f}"
        f"{out['total_p99']:>10.1f}"
    )
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=500)
    parser.add_argument("--chunks", type=int, default=20)
    parser.add_argument("--chunk-ms", type=float, default=50)
    parser.add_argument("--slices", type=int, default=2, help="direct/engram alternations")
    parser.add_argument("--slice-seconds", type=float, default=20)
    parser.add_argument("--cut-every", type=int, default=10, help="0: no client hangs up")
    parser.add_argument("--cut-after", type=int, default=5, help="chunks before hanging up")
    parser.add_argument("--web-processes", type=int, default=0, help="default: cores")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--serve-mock", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_mock:
        serve_mock(args.serve_mock, args.chunks, args.chunk_ms / 1000)
        return 0
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # and the children's

    import httpx
    import uvloop

    from config.env import web_processes

    calibration = machine.calibration_ms()
    steal = machine.Steal()
    processes = args.web_processes or web_processes()
    key = make_workspace_key()
    mock_port, engram_port = free_port(), free_port()
    mock_args = [sys.executable, __file__, "--serve-mock", str(mock_port)]
    mock_args += ["--chunks", str(args.chunks), "--chunk-ms", str(args.chunk_ms)]
    results: dict = {"machine": machine.describe(calibration), "args": vars(args)}
    with child(mock_args) as mock, engram_web(engram_port, mock_port, processes) as engram:
        wait_port(mock_port, mock)
        wait_port(engram_port, engram)
        wait_listening(engram.pid, engram_port, processes)
        wait_quiet(engram.pid)
        print(
            f"{args.clients} concurrent streams ({args.chunks} chunks x {args.chunk_ms:g} ms), "
            f"{processes} Engram web process(es), {args.slices} x {args.slice_seconds:g} s "
            f"slices per path, interleaved; every {args.cut_every}th Engram stream cut after "
            f"{args.cut_after} chunks"
        )
        print(f"  machine at start: {machine.line(calibration)}")
        direct, through = Figures(), Figures()
        serial = [0]
        targets = [("direct", mock_port, None, direct), ("engram", engram_port, key, through)]
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            for path, port, token, _ in targets:  # warm: connections, each process's session
                runner.run(
                    run_slice(
                        path=path,
                        port=port,
                        key=token,
                        clients=min(args.clients, 20),
                        seconds=3,
                        figures=Figures(),
                        cut_every=0,
                        cut_after=args.cut_after,
                        serial=serial,
                        pieces=args.chunks,
                    )
                )
            for _ in range(args.slices):
                for path, port, token, figures in targets:
                    before = cpu(engram.pid, mock.pid)
                    runner.run(
                        run_slice(
                            path=path,
                            port=port,
                            key=token,
                            clients=args.clients,
                            seconds=args.slice_seconds,
                            figures=figures,
                            cut_every=args.cut_every,
                            cut_after=args.cut_after,
                            serial=serial,
                            pieces=args.chunks,
                        )
                    )
                    after = cpu(engram.pid, mock.pid)
                    for name in after:
                        figures.cpu[name] = figures.cpu.get(name, 0.0) + after[name] - before[name]
        time.sleep(2.0)  # a cut stream not freed by now is not freed within 1 s anyway
        freed = httpx.get(f"http://127.0.0.1:{mock_port}/freed", timeout=30).json()
    print(
        f"\n  {'path':<8}{'streams':>8}{'errors':>8}{'TTFT p50':>10}{'TTFT p99':>10}"
        f"{'all p50':>10}{'all p99':>10}   (ms)"
    )
    results["direct"] = report("direct", direct)
    results["engram"] = report("engram", through)
    added = {q: results["engram"][f"ttft_p{q}"] - results["direct"][f"ttft_p{q}"] for q in (50, 99)}
    results["added_ttft"] = added
    print(f"  added time to first token: p50 {added[50]:+.2f} ms, p99 {added[99]:+.2f} ms")
    print(
        f"\n  {'path':<8}{'frames':>9}{'Engram':>10}{'mock':>10}{'client':>10}{'Engram':>14}"
        f"{'of which':>10}   (CPU s per 1,000 data frames; Engram's CPU ms per stream; of\n"
        f"  {'':<61}{'kernel':>10}    which in the kernel, per 1,000 frames)"
    )
    results["direct"]["cpu"] = cpu_report("direct", direct)
    results["engram"]["cpu"] = cpu_report("engram", through)
    lags = [(freed[tag] - at) * 1000 for tag, at in through.cuts.items() if tag in freed]
    missing = sum(1 for tag in through.cuts if tag not in freed)
    late = sum(1 for lag in lags if lag > 1000)
    results["cuts"] = {
        "n": len(through.cuts),
        "not_freed": missing,
        "over_1s": late,
        "lag_p50_ms": percentile(lags, 50),
        "lag_p99_ms": percentile(lags, 99),
        "lag_max_ms": max(lags, default=float("nan")),
    }
    c = results["cuts"]
    print(
        f"  cut streams: {c['n']}; upstream freed after p50 {c['lag_p50_ms']:.1f} ms, p99 "
        f"{c['lag_p99_ms']:.1f} ms, max {c['lag_max_ms']:.1f} ms; over 1 s: {late}; "
        f"never: {missing}"
    )
    errors = sum(through.errors.values()) + sum(direct.errors.values())
    verdict = errors == 0 and added[99] <= 50 and late == 0 and missing == 0
    results["machine"]["steal_percent"] = steal.percent()
    print(f"  machine over the run: {machine.line(steal=steal)}")
    print(
        f"  verdict: {'met' if verdict else 'NOT met'} (0 errors: {errors == 0}, added TTFT "
        f"p99 <= 50 ms: {added[99] <= 50}, every cut upstream freed within 1 s: "
        f"{late == 0 and missing == 0})"
    )
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0 if verdict else 1


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
