"""What relaying a streamed answer costs Engram per chunk, without the network: the upstream
stream's reading (completions.providers.openai_compatible), the relay (completions.streaming)
and the ASGI door's loop (completions.asgi.send_stream).

    .venv/bin/python bench/bench_relay_cpu.py               # CPU µs per relayed frame
    .venv/bin/python bench/bench_relay_cpu.py --callgrind   # user-space instructions per frame

STREAMS streams at once, each fed the frames of bench_streams.py's mock (a role chunk, 20
pieces, the finish, the usage chunk and [DONE] in one read) one read per frame through aiohttp's
own StreamReader (what an upstream response's body is), relayed to a `send` that frames the
chunked body as uvicorn does. Kinds of stream: `mock` (bench_streams.py's chunks), `openai`
(OpenAI's chunks when usage is asked for: `"usage":null` on each, and the client did not ask
for usage), `usage` (the same, the client asked), `agent` (an agent's name written into each).

CPU time on this shared 2-core machine moves by ±30 % from run to run; `--callgrind` counts the
instructions the process executes (valgrind), the same whatever else runs: the difference of
two runs that differ only in the number of streams relayed, divided by the frames relayed.
Neither counts the sockets' system calls or aiohttp's parsing of the upstream's HTTP, which
bench_streams.py's CPU figures include.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STREAMS = 50  # relayed at once, a frame each in turn
PIECES = 20
KINDS = ("mock", "openai", "usage", "agent")


def upstream_frames(kind: str) -> list[bytes]:
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
    frames += [sse(base | choice({"content": f"piece {i} "})) for i in range(PIECES)]
    usage = {"prompt_tokens": 12, "completion_tokens": PIECES, "total_tokens": 12 + PIECES}
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

    async def main() -> None:
        for _ in range(repetitions):
            await streams()

    uvloop.run(main())
    return sent[0], sent[1]


def callgrind(kind: str, repetitions: int) -> tuple[int, int]:
    """(instructions, data frames) of a child that relays `repetitions` x STREAMS streams."""
    with tempfile.TemporaryDirectory() as folder:
        result = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={Path(folder) / 'callgrind.out'}",
                sys.executable,
                __file__,
                "--inner",
                kind,
                str(repetitions),
            ],
            capture_output=True,
            text=True,
        )
    found = re.search(r"Collected : (\d+)", result.stderr)
    if result.returncode != 0 or not found:
        raise RuntimeError(f"callgrind run failed:\n{result.stderr[-2000:]}")
    return int(found.group(1)), int(result.stdout.split()[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--callgrind", action="store_true", help="instructions, not CPU time")
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--repetitions", type=int, default=40, help="x 50 streams (CPU time)")
    parser.add_argument("--inner", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inner:
        frames, size = run(args.inner[0], int(args.inner[1]))
        print(frames, size)
        return
    print(f"load average {os.getloadavg()[0]:.2f}; {STREAMS} streams at once, {PIECES} pieces each")
    for kind in args.kinds.split(","):
        if args.callgrind:
            base, _ = callgrind(kind, 1)
            more, frames = callgrind(kind, 3)
            per = (more - base) / (frames * 2 / 3)
            print(f"  {kind:<7} user-space instructions per relayed frame: {per:,.0f}")
            continue
        run(kind, 3)  # warm
        started = time.process_time()
        frames, _ = run(kind, args.repetitions)
        seconds = time.process_time() - started
        print(f"  {kind:<7} CPU per relayed frame: {seconds / frames * 1e6:.2f} µs")


if __name__ == "__main__":
    main()
