"""What relaying a streamed answer costs Engram per chunk, without the network: the upstream
stream's reading (completions.providers.openai_compatible), the relay (completions.streaming)
and the ASGI door's loop (completions.asgi.send_stream).

    .venv/bin/python bench/bench_relay_cpu.py               # CPU µs per relayed frame
    .venv/bin/python bench/bench_relay_cpu.py --callgrind   # user-space instructions per frame
    .venv/bin/python bench/bench_relay_cpu.py --whole --callgrind  # per whole request
    .venv/bin/python bench/bench_relay_cpu.py --whole --callgrind --remembered  # per remembered turn

STREAMS streams at once, each fed the frames of bench_streams.py's mock (a role chunk, 20
pieces, the finish, the usage chunk and [DONE] in one read) one read per frame through aiohttp's
own StreamReader (what an upstream response's body is), relayed to a `send` that frames the
chunked body as uvicorn does. Kinds of stream: `mock` (bench_streams.py's chunks), `openai`
(OpenAI's chunks when usage is asked for: `"usage":null` on each, and the client did not ask
for usage), `usage` (the same, the client asked), `agent` (an agent's name written into each).

CPU time on this shared 2-core machine moves by ±30 % from run to run; `--callgrind` counts the
instructions the event loop's thread executes (valgrind), the same whatever else runs: counted
in the process between callgrind client requests (after a warm-up), divided by the frames
relayed; `--keep PATH` keeps the profile for callgrind_annotate.
Neither counts the sockets' system calls or aiohttp's parsing of the upstream's HTTP, which
bench_streams.py's CPU figures include.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import gc
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
STREAMS = 50  # relayed at once, a frame each in turn
PIECES = 20
KINDS = ("mock", "openai", "usage", "agent")


def chat_scope(headers: list[tuple[bytes, bytes]]) -> dict:
    """The ASGI scope of a POST to /v1/chat/completions with these headers, as uvicorn makes it."""
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/chat/completions",
        "raw_path": b"/v1/chat/completions",
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }


def receive_once(body: bytes):
    """An ASGI `receive` giving `body` whole, then waiting: the client stays (the door's
    disconnect watcher is cancelled at the end). Made inside the running loop."""
    asked = False
    never = asyncio.get_running_loop().create_future()

    async def receive() -> dict:
        nonlocal asked
        if not asked:
            asked = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await never

    return receive


def upstream_frames(kind: str, pieces: int = PIECES) -> list[bytes]:
    """The upstream's reads: one frame each, the finish and usage chunks with [DONE] in one."""
    base: dict = {"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1}
    base["model"] = "m"
    if kind != "mock":  # OpenAI's: compact, usage null on each chunk but the last
        base |= {"system_fingerprint": "fp_1", "usage": None}

    def sse(payload: dict) -> bytes:
        separators = (",", ":") if kind != "mock" else None
        return b"data: " + json.dumps(payload, separators=separators).encode() + b"\n\n"

    def choice(delta: dict, finish: str | None = None) -> dict:
        return {
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
        }

    frames = [sse(base | choice({"role": "assistant", "content": ""}))]
    frames += [sse(base | choice({"content": f"piece {i} "})) for i in range(pieces)]
    usage = {"prompt_tokens": 12, "completion_tokens": pieces, "total_tokens": 12 + pieces}
    tail = sse(base | choice({}, "stop")) + sse(base | {"choices": [], "usage": usage})
    return [*frames, tail + b"data: [DONE]\n\n"]


class _Protocol:  # what aiohttp's StreamReader asks of its connection
    connected = True
    _reading_paused = False

    def pause_reading(self, **_) -> None:
        pass

    def resume_reading(self, **_) -> None:
        pass


class _Response:
    connection = None  # no socket: no read timeout

    def __init__(self, content) -> None:
        self.content = content

    def close(self) -> None:
        pass

    def release(self) -> None:
        pass

    async def read(self) -> bytes:
        return b""


class _Turn:
    engram = {"credits_charged": 0.000123, "request_id": "req_1"}

    def stream_opened(self, stream) -> None:
        pass

    def finish(self, **_) -> None:
        pass

    async def reply_committed(self) -> None:
        pass

    def usage_charged(self) -> dict | None:
        return None


def run(kind: str, repetitions: int) -> tuple[int, int]:
    """(data frames, bytes) sent to the clients of `repetitions` x STREAMS streams."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.base")
    # The settings refuse to load without these; nothing here connects to them.
    os.environ.setdefault("DATABASE_URL", "postgres://bench@localhost/bench")
    os.environ.setdefault("REDIS_URL", "redis://localhost/0")
    sys.path.insert(0, str(ROOT))
    import django
    import uvloop
    from aiohttp.streams import StreamReader

    django.setup()
    from completions.asgi import send_stream
    from completions.providers.openai_compatible import OpenAIStream
    from completions.streaming import relay

    frames = upstream_frames(kind)
    sent = [0, 0]

    async def send(message: dict) -> None:  # as uvicorn frames a chunked body
        body = message.get("body", b"")
        content = [b"%x\r\n" % len(body), body, b"\r\n"] if body else []
        if not message.get("more_body", False) and message["type"] == "http.response.body":
            content.append(b"0\r\n\r\n")
        out = b"".join(content)
        sent[0] += out.count(b"data: {")
        sent[1] += len(out)

    async def one(reader) -> None:
        opened = asyncio.get_running_loop().create_future()
        opened.set_result(OpenAIStream(_Response(reader), 1.0))  # type: ignore[arg-type]
        stream = relay(
            _Turn(),
            opened,  # type: ignore[arg-type]
            include_usage=kind == "usage",
            keepalive=15,
            model="agent:helper" if kind == "agent" else None,
        )
        await send_stream(send, 200, [], stream)

    async def streams() -> None:
        loop = asyncio.get_running_loop()
        readers = [StreamReader(_Protocol(), 2**16, loop=loop) for _ in range(STREAMS)]  # type: ignore[arg-type]
        tasks = [asyncio.ensure_future(one(reader)) for reader in readers]
        for number, frame in enumerate(frames, 1):
            await asyncio.sleep(0)
            for reader in readers:
                reader.feed_data(frame)
                if number == len(frames):  # the chunked body's end comes with the last frames
                    reader.feed_eof()
            await asyncio.sleep(0)
        await asyncio.gather(*tasks)

    counting = os.environ.get("ENGRAM_BENCH_CALLGRIND_LIB")
    client_requests = ctypes.CDLL(counting) if counting else None

    async def main() -> None:
        for number in range(repetitions):
            if client_requests is not None and number == 1:  # after one to warm up
                client_requests.engram_zero()
                sent[0] = sent[1] = 0
            await streams()
        if client_requests is not None:
            client_requests.engram_dump(b"counted repetitions")

    uvloop.run(main())
    return sent[0], sent[1]


# --- whole requests (--whole) ------------------------------------------------------------------
# The door (CompletionsApp), the key check, limits and routing, memory's pass-through, the
# upstream request (aiohttp, a real socket to a mock in its own process), every frame, and the
# finish (usage record, metrics, memory's finish_turn): what a request costs once, beside what
# each of its frames costs. uvicorn's own parsing and writing are not counted (the ASGI app is
# called directly), nor is the mock.

WHOLE_AT_ONCE = 5  # requests at once: under callgrind each frame must still be its own read
WHOLE_GAP = 0.15  # seconds between the mock's frames (each its own read even under callgrind)
WHOLE_PIECES = (2, 12)  # streams of both lengths: the difference is the per-frame part
WHOLE_WARM = 3  # rounds before the count (connections, imports, caches), then
WHOLE_COUNTED = 10  # rounds counted in the process itself (callgrind's client requests)
WHOLE_SETTLE = 0.5  # seconds before the count starts and before it ends: the rounds' own
# background work (finish_turn, the upstream's drain) inside the rounds that made it
# --remembered: each request a remembered turn (x-user-id, x-conversation-id: one user per
# request of a round), the soak's kind of statement; its work runs on the turn's threads too
# (the query embedding, the stores and rankings, finish_turn), so every thread is counted, and
# the rounds settle longer (a turn's finish under callgrind takes ~1 s).
REMEMBERED_SETTLE = 4.0
REMEMBERED_TEXT = "I moved to Lisbon last spring and I sail on weekends. What should I pack?"
COMPLETION = {
    "id": "chatcmpl-mock",
    "object": "chat.completion",
    "created": 1,
    "model": "m",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Paris."},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 12, "completion_tokens": 2, "total_tokens": 14},
}


def serve_mock(port: int) -> None:
    """The upstream: keep-alive HTTP/1.1; a stream of `max_tokens` pieces (bench_streams.py's
    chunks, each frame its own chunked write WHOLE_GAP apart, the last with the body's end), or
    a JSON completion after WHOLE_GAP."""
    import uvloop

    async def connection(reader, writer) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                found = re.search(rb"(?i)content-length: *(\d+)", head)
                body = json.loads(await reader.readexactly(int(found.group(1)) if found else 0))
                if not body.get("stream"):
                    await asyncio.sleep(WHOLE_GAP)
                    payload = json.dumps(COMPLETION).encode()
                    writer.write(
                        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                        b"content-length: %d\r\n\r\n%s" % (len(payload), payload)
                    )
                    continue
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                    b"transfer-encoding: chunked\r\n\r\n"
                )
                frames = upstream_frames("mock", body.get("max_tokens", PIECES))
                for number, frame in enumerate(frames, 1):
                    await asyncio.sleep(WHOLE_GAP)
                    end = b"0\r\n\r\n" if number == len(frames) else b""
                    writer.write(b"%x\r\n%s\r\n%s" % (len(frame), frame, end))
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(connection, "127.0.0.1", port, backlog=1024)
        await server.serve_forever()

    uvloop.run(main())


def run_whole(kind: str, rounds: int, pieces: int, remembered: bool = False) -> tuple[int, int]:
    """(data frames, requests) of `rounds` x WHOLE_AT_ONCE requests through Engram's ASGI app
    (`kind` stream or json), against the mock at OPENAI_BASE_URL with the key ENGRAM_BENCH_KEY.
    Under callgrind (ENGRAM_BENCH_CALLGRIND_LIB: the client requests' library) the counters are
    zeroed after the first WHOLE_WARM rounds and dumped after the rest, so only those count."""
    import uvloop

    sys.path.insert(0, str(ROOT))
    from config.asgi import application  # first: it sets Django up

    key = os.environ["ENGRAM_BENCH_KEY"].encode()
    # Nor these, which no setting moves: the key's last-used time (a write a minute) and the
    # price table's reload (every 150 s). Bench only.
    from accounts import authentication
    from completions import pricing

    authentication._touched._ttl = 3600.0
    pricing._table._ttl = pricing._table._refresh_after = 3600.0
    if remembered:  # nor a user's term statistics and speakers' reload (a minute's caches:
        # a run under callgrind lasts minutes, where a user's turns come seconds apart)
        from memory.retrieval import terms

        terms._user_stats._ttl = terms._speakers._ttl = 3600.0
    body = json.dumps(
        {
            "model": "gpt-4o-mini",
            "messages": [
                {
                    "role": "user",
                    "content": REMEMBERED_TEXT
                    if remembered
                    else "Tell me a story in short pieces.",
                }
            ],
            "max_tokens": pieces,
            "stream": kind == "stream",
        }
    ).encode()
    scope = chat_scope(
        [
            (b"host", b"127.0.0.1:8000"),
            (b"authorization", b"Bearer " + key),
            (b"content-type", b"application/json"),
            (b"content-length", b"%d" % len(body)),
        ]
    )
    counted = {"frames": 0, "requests": 0}
    refused: list[int] = []

    async def one(slot: int) -> None:
        receive = receive_once(body)

        async def send(message: Mapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                if message["status"] != 200:
                    refused.append(message["status"])
                return
            counted["frames"] += message.get("body", b"").count(b"data: {")

        turn = dict(scope)
        if remembered:
            user = b"bench-%d" % slot
            turn["headers"] = [
                *scope["headers"],
                (b"x-user-id", user),
                (b"x-conversation-id", b"conversation-" + user),
            ]
        await application(turn, receive, send)
        counted["requests"] += 1

    counting = os.environ.get("ENGRAM_BENCH_CALLGRIND_LIB")
    client_requests = ctypes.CDLL(counting) if counting else None

    async def main() -> None:
        settle = REMEMBERED_SETTLE if remembered else WHOLE_SETTLE
        for number in range(rounds):
            if client_requests is not None and number == WHOLE_WARM:
                await asyncio.sleep(settle)
                client_requests.engram_zero()
                counted["frames"] = counted["requests"] = 0
            await asyncio.gather(*(one(slot) for slot in range(WHOLE_AT_ONCE)))
        if client_requests is not None:
            await asyncio.sleep(settle)
            client_requests.engram_dump(b"counted rounds")
        if refused:
            raise RuntimeError(f"Engram refused requests: {refused[:5]}")

    # The cyclic GC off: a full collection walks the whole heap (tens of millions of
    # instructions here), and whether one falls inside the counted rounds swung the figure
    # per request by ±1M between identical runs. What is counted is the requests' own work.
    gc.disable()
    profile_to = os.environ.get("ENGRAM_BENCH_PROFILE")
    if profile_to:
        import cProfile

        profiler = cProfile.Profile(time.process_time)  # CPU, not the waits
        profiler.runcall(uvloop.run, main())
        profiler.dump_stats(profile_to)
    else:
        uvloop.run(main())
    return counted["frames"], counted["requests"]


def whole_env(*, limited: bool = False) -> dict:
    """A workspace key on the embedded database, a mock upstream; the inner runs' variables.
    `limited`: the key of bench_gateway's limited path (rpm, tpm, concurrency and a budget on
    its workspace and itself, none reached)."""
    from bench.bench_gateway import make_limited_key, make_workspace_key

    key = make_workspace_key()  # also sets DATABASE_URL / REDIS_URL (the embedded servers)
    if limited:
        key = make_limited_key()
    metrics = tempfile.mkdtemp(prefix="engram-bench-metrics-")
    return {
        **os.environ,
        "ENGRAM_BENCH_KEY": key,
        "OPENAI_API_KEY": "sk-mock",
        "ANTHROPIC_BASE_URL": "",
        "ANTHROPIC_API_KEY": "",
        "LOG_LEVEL": "WARNING",
        "PROMETHEUS_MULTIPROC_DIR": metrics,  # as the web processes count (config/web.py)
        # No work on the clock: under callgrind a run lasts minutes, and the usage flushes
        # (a connection each), the routing and key caches' reloads would be counted by the
        # minute, not by the request. The usage records are written once, at exit.
        "ENGRAM_USAGE_FLUSH_SECONDS": "3600",
        "ENGRAM_ROUTING_CACHE_SECONDS": "3600",
        "ENGRAM_KEY_CACHE_SECONDS": "3600",
        "PYTHONHASHSEED": "0",  # the same dict and set layouts in every run
    }


# Callgrind's client requests (valgrind/callgrind.h's macros), for Python through ctypes: start
# counting from zero, dump the counts. Outside valgrind they do nothing.
CLIENT_REQUESTS = """#include <valgrind/callgrind.h>
void engram_zero(void) { CALLGRIND_START_INSTRUMENTATION; CALLGRIND_ZERO_STATS; }
void engram_dump(const char *why) { CALLGRIND_DUMP_STATS_AT(why); }
"""


def callgrind(
    inner: list[str],
    env: dict | None = None,
    *,
    in_process: bool = False,
    keep: str = "",
    every_thread: bool = False,
) -> tuple[int, list[str]]:
    """(instructions, the inner run's printed figures) of a child run under callgrind: all of
    the run's, or (`in_process`) those between its own zero and dump, of the main thread or
    (`every_thread`) of all. `keep`: a path to copy the counted profile to (for
    callgrind_annotate; the main thread's, and with `every_thread` KEEP.tNN for the others)."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "callgrind.out"
        if in_process:
            source = Path(folder) / "client_requests.c"
            source.write_text(CLIENT_REQUESTS)
            library = Path(folder) / "client_requests.so"
            subprocess.run(["cc", "-shared", "-fPIC", "-o", library, source], check=True)
            env = {**(env or os.environ), "ENGRAM_BENCH_CALLGRIND_LIB": str(library)}
        # In the process: the event loop's thread only (--separate-threads; its dump is
        # callgrind.out.1-01). The other threads' work in the counted rounds belongs to no
        # request: the imports of a loader thread started during the warm-up rounds (~40M
        # instructions, slow under valgrind) and OpenBLAS's spinning threads (~29M) made half
        # of what was counted, by the clock.
        threads = ["--separate-threads=yes"] if in_process else []
        result = subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *threads]
            # Not instrumented until the count starts: Django's set-up and the warm-up run
            # ~10x faster (minutes under full instrumentation).
            + (["--instr-atstart=no"] if in_process else [])
            + [sys.executable, __file__, *inner],
            capture_output=True,
            text=True,
            env=env,
        )
        found = re.search(r"Collected : (\d+)", result.stderr)
        if in_process:  # the dump the run asked for, of its main thread
            dumped = Path(f"{out}.1-01")
            text = dumped.read_text() if dumped.exists() else ""
            found = re.search(r"^summary: (\d+)", text, re.M)
            if keep and found:
                Path(keep).write_text(text)
        if in_process and every_thread and found:
            # A client request's dump and zero are the calling thread's only: the other
            # threads' counts are in the dumps at exit (callgrind.out-NN), from the count's
            # start (instrumentation starts there) to the process's end, idle after the rounds.
            total = int(found.group(1))
            for dumped in sorted(Path(folder).glob("callgrind.out-*")):
                if dumped.name == "callgrind.out-01":  # the main thread's: counted above
                    continue
                text = dumped.read_text()
                summary = re.search(r"^summary: (\d+)", text, re.M)
                total += int(summary.group(1)) if summary else 0
                if keep:
                    Path(f"{keep}.t{dumped.name.rsplit('-', 1)[1]}").write_text(text)
            found = re.search(r"(\d+)", str(total))
    if result.returncode != 0 or not found:
        raise RuntimeError(f"callgrind run failed:\n{result.stderr[-2000:]}")
    return int(found.group(1)), result.stdout.split()


def whole(args) -> None:
    import signal

    from bench.bench_gateway import free_port, wait_port

    env = whole_env(limited=args.limited)
    port = free_port()
    env["OPENAI_BASE_URL"] = f"http://127.0.0.1:{port}/v1"
    mock = subprocess.Popen(
        [sys.executable, __file__, "--serve-mock", str(port)], start_new_session=True
    )
    try:
        wait_port(port, mock)
        print(f"whole requests, {WHOLE_AT_ONCE} at once, the mock's frames {WHOLE_GAP:g} s apart")
        if args.limited:
            print("  with bench_gateway's limited key (limits and budgets on, none reached)")
        if args.remembered:
            print("  remembered turns (x-user-id), every thread of the process counted")
            env["ENGRAM_BENCH_REMEMBERED"] = "1"
            _forget_bench_conversations()
            if args.history:
                _seed_history(args.history)
                print(f"  each conversation starts with {args.history} stored messages")
        per_request: dict[tuple[str, int], float] = {}
        runs = [("stream", p) for p in WHOLE_PIECES] + [("json", 16)]
        if args.remembered:  # what a turn adds is in the JSON answer's count
            runs = [("json", 16)]
        if args.profile:
            for kind, pieces in runs:
                profile(kind, pieces, env, args.profile)
            return
        if not args.callgrind:
            raise SystemExit("--whole counts with --callgrind (or --profile N)")
        # One run per kind: WHOLE_WARM rounds, then WHOLE_COUNTED rounds counted in the
        # process (the difference of two runs' totals swung by ±1M a request under load: the
        # start-up, the warm-up and the exit were counted too). `--workers` runs at a time
        # (callgrind uses one core each).
        rounds = str(WHOLE_WARM + WHOLE_COUNTED)
        with ThreadPoolExecutor(args.workers) as pool:
            counted = {
                (kind, pieces): pool.submit(
                    callgrind,
                    ["--inner-whole", kind, rounds, str(pieces)],
                    env,
                    in_process=True,
                    keep=f"{args.keep}.{kind}-{pieces}" if args.keep else "",
                    every_thread=args.remembered,
                )
                for kind, pieces in runs
            }
            for kind, pieces in runs:
                instructions, figures = counted[kind, pieces].result()
                per = per_request[kind, pieces] = instructions / int(figures[1])
                what = f"a stream of {pieces} pieces" if kind == "stream" else "a JSON answer"
                print(f"  {what:<24} user-space instructions per request: {per:,.0f}")
        if len(per_request) == 3:
            short, long = (per_request["stream", p] for p in WHOLE_PIECES)
            frame = (long - short) / (WHOLE_PIECES[1] - WHOLE_PIECES[0])
            opening = short - (WHOLE_PIECES[0] + 2) * frame  # + the role chunk and the tail
            print(f"  per frame: {frame:,.0f}; per stream, its frames left out: {opening:,.0f}")
    finally:
        os.killpg(mock.pid, signal.SIGTERM)
        mock.wait()


def _forget_bench_conversations() -> None:
    """The bench workspace's conversations deleted before a run of remembered turns: no worker
    runs, so each run (65 turns) left its messages and jobs in the same five conversations, and
    the next run's turns loaded, ranked and counted a longer history: 56.9M instructions a turn
    from none, 59.8M from 130 messages (twenty-fifth session, one commit; another commit 54.1M
    from none, 78.1M from ~1,060). Each run now starts from none, whatever ran before it in
    the worktree."""
    from memory.models import Conversation

    Conversation.objects.filter(workspace__name="bench-gateway").delete()


def _seed_history(messages: int) -> None:
    """`--history N`: each of the run's conversations starts with N stored messages (a user
    message and an answer in turn, as its turns store them), imported, not run: 130 rounds
    under callgrind took ~20 minutes. The soak's conversations reach ~270 messages."""
    from accounts.models import Workspace
    from memory.services.conversations import conversation_import

    workspace = Workspace.objects.get(name="bench-gateway")
    for slot in range(WHOLE_AT_ONCE):
        conversation_import(
            workspace=workspace,
            external_id=f"conversation-bench-{slot}",
            user_id=f"bench-{slot}",
            messages=[
                {"role": "user", "content": f"{REMEMBERED_TEXT} ({turn})"}
                if i % 2 == 0
                else {"role": "assistant", "content": f"Paris, and a coat ({turn})."}
                for i, turn in ((i, i // 2) for i in range(messages))
            ],
        )


def profile(kind: str, pieces: int, env: dict, top: int) -> None:
    """cProfile of one inner run (20 rounds), the `top` functions by their own time."""
    import pstats

    with tempfile.TemporaryDirectory() as folder:
        out = str(Path(folder) / "profile")
        inner = [sys.executable, __file__, "--inner-whole", kind, "20", str(pieces)]
        # with --remembered: ENGRAM_BENCH_REMEMBERED in env (cProfile sees the main thread only)
        subprocess.run(inner, env={**env, "ENGRAM_BENCH_PROFILE": out}, check=True)
        print(f"\n--- {kind}, {pieces} pieces: 20 x {WHOLE_AT_ONCE} requests, by own time")
        pstats.Stats(out).sort_stats("tottime").print_stats(top)


def main() -> None:
    sys.path.insert(0, str(ROOT))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--callgrind", action="store_true", help="instructions, not CPU time")
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--repetitions", type=int, default=40, help="x 50 streams (CPU time)")
    parser.add_argument("--whole", action="store_true", help="whole requests, not only frames")
    parser.add_argument("--profile", type=int, help="--whole: cProfile's top N functions")
    parser.add_argument("--workers", type=int, default=2, help="--whole: callgrind runs at once")
    parser.add_argument("--keep", help="--callgrind: keep the counted profiles as KEEP.*")
    parser.add_argument("--limited", action="store_true", help="--whole: a key with limits")
    parser.add_argument(
        "--remembered", action="store_true", help="--whole: remembered turns, every thread"
    )
    parser.add_argument(
        "--history", type=int, default=0, help="--remembered: stored messages to start from"
    )
    parser.add_argument("--inner", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--inner-whole", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--serve-mock", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inner:
        frames, size = run(args.inner[0], int(args.inner[1]))
        print(frames, size)
        return
    if args.inner_whole:
        kind, rounds, pieces = args.inner_whole
        remembered = bool(os.environ.get("ENGRAM_BENCH_REMEMBERED"))
        frames, requests = run_whole(kind, int(rounds), int(pieces), remembered)
        print(frames, requests, time.process_time())
        return
    if args.serve_mock:
        serve_mock(args.serve_mock)
        return
    print(f"load average {os.getloadavg()[0]:.2f}")
    if args.whole:
        whole(args)
        return
    print(f"{STREAMS} streams at once, {PIECES} pieces each")
    for kind in args.kinds.split(","):
        if args.callgrind:  # the last two of three repetitions, counted in the process
            keep = f"{args.keep}.{kind}" if args.keep else ""
            counted, figures = callgrind(["--inner", kind, "3"], in_process=True, keep=keep)
            per = counted / int(figures[0])
            print(f"  {kind:<7} user-space instructions per relayed frame: {per:,.0f}")
            continue
        run(kind, 3)  # warm
        started = time.process_time()
        frames, _ = run(kind, args.repetitions)
        seconds = time.process_time() - started
        print(f"  {kind:<7} CPU per relayed frame: {seconds / frames * 1e6:.2f} µs")


if __name__ == "__main__":
    main()
