"""What Engram's gateway adds: the same load straight at a mock upstream and through Engram.

    .venv/bin/python bench/bench_gateway.py            # ~1.5 minutes
    .venv/bin/python bench/bench_gateway.py --help

A loopback mock upstream (uvicorn, its own process) answers chat completions after a fixed
latency (default 60 ms), or streams N chunks M ms apart. Engram runs as a real uvicorn
process on the embedded database with a workspace key made for it. A closed-loop load
generator (raw HTTP/1.1 keep-alive connections on uvloop, one per client) alternates short
slices: direct at the mock, through Engram, direct, through Engram... so both paths see the
same machine noise. Added latency is Engram's percentile minus the direct percentile.

Engram serves with `--web-processes` uvicorn processes on one port (default: one per core, as
`make run`; config/web.py). Beside its figures it prints the machine's load average, the steal
time of each block and a fixed CPU calibration (bench/machine.py), so a slow machine can be
told from a slow gateway.

`--limits` adds a third path: Engram with a key that has rpm, tpm and concurrency limits and a
budget (key and workspace, all too generous to refuse anything), so every request runs the
limits' Redis script and settles; "limits added" is that path's percentile minus plain Engram's.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PROMPT = {
    "model": "gpt-4o-mini",
    "messages": [
        {"role": "system", "content": "You are a helpful assistant. Answer briefly."},
        {"role": "user", "content": "What is the capital of France, and why is it famous?"},
    ],
    "temperature": 0.2,
    "max_tokens": 64,
}
COMPLETION = {
    "id": "chatcmpl-mock",
    "object": "chat.completion",
    "created": 1700000000,
    "model": "gpt-4o-mini",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": "Paris: the Eiffel Tower, the Louvre, cafés and centuries of history.",
                "refusal": None,
            },
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 31, "completion_tokens": 17, "total_tokens": 48},
}


# --- the mock upstream (a child process) ------------------------------------------------------


def mock_app(latency: float, chunks: int, chunk_gap: float, unique: bool = False):
    body = json.dumps(COMPLETION).encode()
    answered = itertools.count(1)

    def unique_body() -> bytes:  # an answer no other request gets (bench_soak --unique-text)
        message = COMPLETION["choices"][0]["message"]
        content = f"{message['content']} (answer {next(answered)})"
        choice = COMPLETION["choices"][0] | {"message": message | {"content": content}}
        return json.dumps(COMPLETION | {"choices": [choice]}).encode()

    base = {"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1, "model": "m"}

    def sse(payload) -> bytes:
        return b"data: " + json.dumps(payload).encode() + b"\n\n"

    frames = [
        sse(base | {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]})
    ]
    frames += [
        sse(base | {"choices": [{"index": 0, "delta": {"content": f"tok{i} "}}]})
        for i in range(chunks)
    ]
    frames.append(sse(base | {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}))
    usage = {"prompt_tokens": 31, "completion_tokens": chunks, "total_tokens": 31 + chunks}
    tail = sse(base | {"choices": [], "usage": usage}) + b"data: [DONE]\n\n"

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        raw = b""
        while True:
            message = await receive()
            raw += message.get("body", b"")
            if not message.get("more_body"):
                break
        if b'"stream": true' not in raw and b'"stream":true' not in raw:
            await asyncio.sleep(latency)
            answer = unique_body() if unique else body
            head = [
                (b"content-type", b"application/json"),
                (b"content-length", b"%d" % len(answer)),
            ]
            await send({"type": "http.response.start", "status": 200, "headers": head})
            await send({"type": "http.response.body", "body": answer})
            return
        head = [(b"content-type", b"text/event-stream")]
        await send({"type": "http.response.start", "status": 200, "headers": head})
        for index, frame in enumerate(frames):
            if 0 < index <= chunks or index == 0:
                await asyncio.sleep(chunk_gap)  # the first token, then one token per gap
            await send({"type": "http.response.body", "body": frame, "more_body": True})
        await send({"type": "http.response.body", "body": tail})

    return app


def serve_mock(
    port: int, latency: float, chunks: int, chunk_gap: float, unique: bool = False
) -> None:
    import uvicorn

    uvicorn.run(
        mock_app(latency, chunks, chunk_gap, unique),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="off",
        loop="uvloop",
        http="httptools",
        backlog=4096,
    )


# --- the load generator -------------------------------------------------------------------------


@dataclass
class Sample:
    path: str  # "direct" | "engram"
    latency: float
    ttft: float | None
    overhead_header: float | None


@dataclass
class Stats:
    samples: list[Sample] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    cpu: dict[str, float] = field(
        default_factory=dict
    )  # Engram's CPU seconds in each path's slices


class Connection:
    """One keep-alive HTTP/1.1 connection; just enough of the protocol for this benchmark."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def _open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        sock = self.writer.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def request(self, raw: bytes) -> tuple[int, float | None, float | None]:
        """Send one request; (status, seconds to the first SSE data frame, overhead header)."""
        if self.writer is None:
            await self._open()
        started = time.perf_counter()
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        overhead = headers.get(b"x-engram-overhead-ms")
        first = None
        if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
            while True:
                size = int((await self.reader.readuntil(b"\r\n"))[:-2].split(b";")[0], 16)
                if size == 0:
                    await self.reader.readuntil(b"\r\n")
                    break
                data = await self.reader.readexactly(size + 2)
                if first is None and b"data: {" in data:
                    first = time.perf_counter() - started
        else:
            await self.reader.readexactly(int(headers.get(b"content-length", b"0")))
        if headers.get(b"connection", b"").lower() == b"close":
            self.close()
        return status, first, float(overhead) if overhead else None


# --user-id: Engram's requests carry it, so each is a remembered turn (the message stored, memories
# ranked, the answer stored before its last bytes); without it a turn is a pass-through. A "{n}"
# in it becomes the client's number: one user per connection (one user's turns run in order).
USER_ID: str | None = None
CLIENT = "<client>"  # replaced by each client's number in run_slice


def build_request(
    port: int, body: dict, key: str | None, *, user_header: bool = True, user: str | None = None
) -> bytes:
    payload = json.dumps(body).encode()
    auth = f"Authorization: Bearer {key}\r\n" if key else ""
    if key and user:
        auth += f"x-user-id: {user}\r\n"
    elif key and USER_ID and user_header:
        auth += f"x-user-id: {USER_ID.replace('{n}', CLIENT)}\r\n"
    return (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{auth}"
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
    ).encode() + payload


async def run_slice(
    path: str, port: int, raw: bytes | list[bytes], clients: int, seconds: float, stats: Stats
) -> None:
    deadline = time.perf_counter() + seconds

    async def client(number: int) -> None:
        # a list: one request per client (--jwt: each client's own signed token)
        mine = (
            raw[number]
            if isinstance(raw, list)
            else raw.replace(CLIENT.encode(), str(number).encode())
        )
        connection = Connection(port)
        try:
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                try:
                    status, first, overhead = await asyncio.wait_for(connection.request(mine), 30)
                except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError) as exc:
                    name = type(exc).__name__
                    stats.errors[name] = stats.errors.get(name, 0) + 1
                    connection.close()
                    await asyncio.sleep(0.05)
                    continue
                latency = time.perf_counter() - started
                if status != 200:
                    stats.errors[f"http {status}"] = stats.errors.get(f"http {status}", 0) + 1
                    continue
                stats.samples.append(Sample(path, latency, first, overhead))
        finally:
            connection.close()

    began = time.perf_counter()
    await asyncio.gather(*(client(n) for n in range(clients)))
    stats.seconds[path] = stats.seconds.get(path, 0.0) + time.perf_counter() - began


async def interleaved(
    *,
    clients: int,
    slices: int,
    slice_seconds: float,
    targets: dict[str, tuple[int, bytes | list[bytes]]],
    cpu: Callable[[], float] | None = None,
) -> Stats:
    """`cpu`: Engram's CPU seconds so far, read around each slice to tell each path's share."""
    stats = Stats()
    for _ in range(slices):
        for path, (port, raw) in targets.items():
            before = cpu() if cpu else 0.0
            await run_slice(path, port, raw, clients, slice_seconds, stats)
            if cpu:
                stats.cpu[path] = stats.cpu.get(path, 0.0) + cpu() - before
    return stats


# --- figures ------------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def summarize(
    stats: Stats, key: str = "latency", paths: tuple[str, str] = ("direct", "engram")
) -> dict:
    base, measured = paths
    out = {}
    # --jwt and --limits add paths beside the key's: each compared with plain Engram
    for path in (*paths, *EXTRA_PATHS) if paths == ("direct", "engram") else paths:
        values = [getattr(s, key) for s in stats.samples if s.path == path]
        if path in EXTRA_PATHS and not values:
            continue
        values = [v * 1000 for v in values if v is not None]
        out[path] = {
            "n": len(values),
            "rps": len(values) / stats.seconds.get(path, 1.0),
            **{f"p{q}": percentile(values, q) for q in (50, 95, 99)},
        }
    out["added"] = {f"p{q}": out[measured][f"p{q}"] - out[base][f"p{q}"] for q in (50, 95, 99)}
    for extra in EXTRA_PATHS:
        if extra in out and "engram" in out and extra != measured:
            out[f"{extra}_over_engram"] = {
                f"p{q}": out[extra][f"p{q}"] - out["engram"][f"p{q}"] for q in (50, 95, 99)
            }
    header = [s.overhead_header for s in stats.samples if s.overhead_header is not None]
    out["engram_reported_overhead_ms"] = {f"p{q}": percentile(header, q) for q in (50, 95, 99)}
    out["errors"] = dict(stats.errors)
    return out


def rss_mb(pid: int) -> float:
    import psutil

    return psutil.Process(pid).memory_info().rss / 2**20


def cpu_seconds(pid: int | None) -> float:
    """CPU the process and its children (every web process) have used (user + system). Per
    request, it shows what the gateway costs even when other jobs share the cores and latency
    mostly measures waiting for a CPU."""
    if pid is None:
        return float("nan")
    import psutil

    parent = psutil.Process(pid)
    total = 0.0
    for process in [parent, *parent.children(recursive=True)]:
        times = process.cpu_times()
        total += times.user + times.system
    return total


def tree_rss_mb(pid: int) -> float:
    import psutil

    parent = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [parent, *parent.children(recursive=True)]) / 2**20


def cpu_ms_by_path(stats: Stats) -> dict[str, float]:
    """Engram's CPU per request of each path through it, from the CPU read around its slices
    (what a background flush spends after a slice is billed to the next one)."""
    out = {}
    for path, seconds in stats.cpu.items():
        served = sum(1 for s in stats.samples if s.path == path)
        if path != "direct" and served:
            out[path] = seconds / served * 1000
    return out


def cpu_ms_per_request(stats: Stats, cpu: float) -> float:
    # every path but the direct one goes through Engram (--limits and --jwt add their own)
    served = sum(1 for s in stats.samples if s.path != "direct")
    return cpu / served * 1000 if served else float("nan")


def print_block(
    title: str,
    figures: dict,
    unit: str = "latency",
    paths: tuple[str, str] = ("direct", "engram"),
) -> None:
    print(f"\n{title}")
    print(f"  {'path':<8}{'n':>7}{'req/s':>9}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}")
    for path in dict.fromkeys((*paths, *EXTRA_PATHS)):
        if path not in figures:
            continue
        f = figures[path]
        print(
            f"  {path:<8}{f['n']:>7}{f['rps']:>9.0f}{f['p50']:>9.2f}{f['p95']:>9.2f}{f['p99']:>9.2f}"
        )
    a = figures["added"]
    print(f"  {'added ' + unit:<33}{a['p50']:>+9.2f}{a['p95']:>+9.2f}{a['p99']:>+9.2f}")
    for extra, label in (("limited", "limits added"),):
        if f"{extra}_over_engram" in figures:
            j = figures[f"{extra}_over_engram"]
            print(f"  {label:<33}{j['p50']:>+9.2f}{j['p95']:>+9.2f}{j['p99']:>+9.2f}")
    h = figures["engram_reported_overhead_ms"]
    print(f"  {'x-engram-overhead-ms':<33}{h['p50']:>9.0f}{h['p95']:>9.0f}{h['p99']:>9.0f}")
    print(f"  errors: {figures['errors'] or 0}")


# --- processes ----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process {proc.args} exited with {proc.returncode}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}")


AGENT_NAME = "bench-gateway"


def agent_request(port: int, key: str) -> bytes:
    """The same call as PROMPT through an agent that holds its system prompt and parameters
    (created over HTTP, so an --engram-url Engram gets it too): the upstream receives the
    same body either way, and the difference is what calling an agent adds."""
    import httpx

    system, *rest = PROMPT["messages"]
    agent = {
        "name": AGENT_NAME,
        "model": PROMPT["model"],
        "instructions": system["content"],
        "parameters": {"temperature": PROMPT["temperature"], "max_tokens": PROMPT["max_tokens"]},
    }
    resp = httpx.post(
        f"http://127.0.0.1:{port}/v1/agents",
        json=agent,
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )
    if resp.status_code != 201 and (resp.json().get("error") or {}).get("param") != "name":
        raise SystemExit(f"could not create the agent: {resp.text}")
    return build_request(port, {"model": f"agent:{AGENT_NAME}", "messages": rest}, key)


def compare(runner, args, steal, targets: dict, *, clients: int, title: str, unit: str) -> dict:
    """Two paths through Engram, interleaved: the second's percentiles minus the first's."""
    from bench import machine

    paths = tuple(targets)
    steal.start()
    stats = runner.run(
        interleaved(
            clients=clients, slices=args.slices, slice_seconds=args.slice_seconds, targets=targets
        )
    )
    figures = summarize(stats, paths=paths)
    print_block(title, figures, f"latency of {unit}", paths=paths)
    print(f"  machine: {machine.line(steal=steal)}")
    return figures


NO_MEMORY_AGENT = "bench-no-memory"


def no_memory_agent(port: int, key: str) -> None:
    """--jwt: an agent on PROMPT's model with memory off (nothing stored or recalled)."""
    import httpx

    agent = {"name": NO_MEMORY_AGENT, "model": PROMPT["model"], "memory": {"enabled": False}}
    resp = httpx.post(
        f"http://127.0.0.1:{port}/v1/agents",
        json=agent,
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )
    if resp.status_code != 201 and (resp.json().get("error") or {}).get("param") != "name":
        raise SystemExit(f"could not create the agent: {resp.text}")


def wait_listening(pid: int, port: int, processes: int, timeout: float = 90) -> None:
    """Until `processes` processes of pid's tree listen on `port` (each web process binds its
    own socket: before they all do, the kernel sends every connection to the first ones)."""
    import psutil

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        parent = psutil.Process(pid)
        listening = 0
        for process in [parent, *parent.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                listening += any(
                    c.status == psutil.CONN_LISTEN and c.laddr.port == port
                    for c in process.net_connections("tcp")
                )
        if listening >= processes:
            return
        time.sleep(0.2)
    raise RuntimeError(f"fewer than {processes} processes listen on {port}")


def wait_quiet(pid: int, timeout: float = 120) -> None:
    """Until pid's tree has finished starting: each web process loads the embedding model and
    the tokenizer at start (seconds of CPU) and would otherwise bill them to the first block."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = cpu_seconds(pid)
        time.sleep(1.0)
        if cpu_seconds(pid) - before < 0.05:
            return


# paths beside direct and engram, each measured against plain Engram
EXTRA_PATHS = ("limited",)


def make_limited_key() -> str:
    """A key of its own workspace with every kind of limit and budget, none of them reached."""
    from accounts.limits.services import limit_update
    from accounts.services import api_key_create, workspace_create

    workspace = workspace_create(name="bench-gateway-limits")
    created = api_key_create(workspace=workspace, name="bench limits")
    rates = {"rpm": 1_000_000_000, "tpm": 2_000_000_000, "max_concurrent": 1_000_000}
    budget = {"credits": 1_000_000_000, "period": "month"}
    for subject, key_id in (("workspace", None), ("api_key", created.api_key.id)):
        limit_update(
            workspace=workspace, subject=subject, key_id=key_id, limits=rates, budget=budget
        )
    limit_update(workspace=workspace, subject="end_user", limits=rates, budget=budget)
    return created.raw_key


def make_workspace_key() -> str:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.base")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    import django

    from config.embedded import ensure_environment

    ensure_environment()
    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)
    from accounts.models import Workspace
    from accounts.services import api_key_create, workspace_create

    workspace = Workspace.objects.filter(name="bench-gateway").first()
    workspace = workspace or workspace_create(name="bench-gateway")
    return api_key_create(
        workspace=workspace, name=f"bench {time.strftime('%Y-%m-%d %H:%M')}"
    ).raw_key


BENCH_ISSUER = "https://bench.engram.invalid/"


def make_end_user_tokens(count: int) -> list[str]:
    """--jwt: an HS256 issuer for the bench workspace and one token per client (sub bench-<n>,
    the user the key's requests name in x-user-id). After make_workspace_key."""
    import jwt

    from accounts.endusers.models import Issuer
    from accounts.endusers.services import issuer_create
    from accounts.models import Workspace

    workspace = Workspace.objects.get(name="bench-gateway")
    secret = "bench-" + os.urandom(24).hex()
    Issuer.objects.filter(workspace=workspace, issuer=BENCH_ISSUER).delete()
    issuer_create(
        workspace=workspace, issuer=BENCH_ISSUER, audiences=["engram-bench"], hs256_secret=secret
    )
    now = int(time.time())
    claims = {"iss": BENCH_ISSUER, "aud": "engram-bench", "iat": now, "exp": now + 3600}
    return [
        jwt.encode(claims | {"sub": f"bench-{n}"}, secret, algorithm="HS256") for n in range(count)
    ]


@contextlib.contextmanager
def child(args: list[str], env: dict | None = None):
    proc = subprocess.Popen(
        args, cwd=ROOT, env={**os.environ, **(env or {})}, start_new_session=True
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def _engram_env(mock_port: int, env: dict | None) -> dict:
    return {
        "DJANGO_SETTINGS_MODULE": "config.settings.base",
        "OPENAI_BASE_URL": f"http://127.0.0.1:{mock_port}/v1",
        "OPENAI_API_KEY": "sk-mock",
        "ANTHROPIC_BASE_URL": "",
        "ANTHROPIC_API_KEY": "",
        "LOG_LEVEL": "WARNING",
        **(env or {}),
    }


def engram_process(port: int, mock_port: int, *, app: str = "config.asgi:application", env=None):
    """Engram as one plain uvicorn process in front of the mock upstream (--layers)."""
    args = [sys.executable, "-m", "uvicorn", *app.split(), "--host", "127.0.0.1"]
    args += ["--port", str(port), "--no-access-log", "--lifespan", "off"]
    args += ["--log-level", "warning", "--backlog", "4096"]
    return child(args, env=_engram_env(mock_port, env))


def engram_web(port: int, mock_port: int, processes: int, env: dict | None = None):
    """Engram as `make run` serves it: `processes` web processes on one port (config/web.py)."""
    args = [sys.executable, "-m", "config.web", "--host", "127.0.0.1", "--port", str(port)]
    args += ["--processes", str(processes), "--log-level", "warning"]
    return child(args, env=_engram_env(mock_port, env))


# --- layers: what each part of the path costs (--layers) -----------------------------------

LAYERS = [
    (
        "Django, full middleware (stock ASGI handler)",
        "django.core.asgi:get_asgi_application --factory",
        {},
    ),
    (
        "Django view, async-native middleware only",
        "config.asgi:application",
        {"ENGRAM_GATEWAY_FAST_PATH": "false"},
    ),
    ("lean ASGI door (the default)", "config.asgi:application", {}),
]


async def client_cost(kind: str, port: int, clients: int, seconds: float) -> tuple[float, float]:
    """(requests/s, CPU ms per request) of one upstream client library in this process."""
    import resource

    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    body = json.dumps(PROMPT).encode()
    headers = {"content-type": "application/json", "authorization": "Bearer x"}
    if kind == "httpx":
        import httpx

        client = httpx.AsyncClient(limits=httpx.Limits(max_connections=None))

        async def one():
            (await client.post(url, content=body, headers=headers)).read()

    else:
        import aiohttp

        client = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))

        async def one():
            async with client.post(url, data=body, headers=headers) as response:
                await response.read()

    count = 0

    async def loop(deadline: float) -> None:
        nonlocal count
        while time.perf_counter() < deadline:
            await one()
            count += 1

    await asyncio.gather(*(loop(time.perf_counter() + 1) for _ in range(clients)))
    count = 0
    before = resource.getrusage(resource.RUSAGE_SELF)
    await asyncio.gather(*(loop(time.perf_counter() + seconds) for _ in range(clients)))
    after = resource.getrusage(resource.RUSAGE_SELF)
    await client.aclose() if kind == "httpx" else await client.close()
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return count / seconds, cpu / count * 1000


def layers(runner, mock_port: int, key: str, clients: int, seconds: float) -> dict:
    import psutil

    out = {}
    print(f"\nlayers, {clients} concurrent clients (CPU per request in the Engram process)")
    print(f"  {'':<48}{'req/s':>7}{'CPU ms':>8}{'p50 ms':>8}{'p99 ms':>8}")
    for title, app, env in LAYERS:
        port = free_port()
        with engram_process(port, mock_port, app=app, env=env) as proc:
            wait_port(port, proc)
            raw = build_request(port, PROMPT, key)
            runner.run(run_slice("engram", port, raw, 4, 1.5, Stats()))  # warm
            process = psutil.Process(proc.pid)
            before = process.cpu_times()
            stats = Stats()
            runner.run(run_slice("engram", port, raw, clients, seconds, stats))
            after = process.cpu_times()
        n = len(stats.samples) or 1
        cpu = (after.user + after.system - before.user - before.system) / n * 1000
        lat = [s.latency * 1000 for s in stats.samples]
        row = {
            "rps": n / seconds,
            "cpu_ms": cpu,
            "p50": percentile(lat, 50),
            "p99": percentile(lat, 99),
            "errors": stats.errors,
        }
        out[title] = row
        print(f"  {title:<48}{row['rps']:>7.0f}{cpu:>8.2f}{row['p50']:>8.1f}{row['p99']:>8.1f}")
    for kind in ("httpx", "aiohttp"):
        rps, cpu = runner.run(client_cost(kind, mock_port, clients, seconds))
        out[f"upstream client {kind}"] = {"rps": rps, "cpu_ms": cpu}
        title = f"upstream client alone: {kind} (CPU in the client)"
        print(f"  {title:<48}{rps:>7.0f}{cpu:>8.2f}")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--latency-ms", type=float, default=60)
    parser.add_argument("--concurrency", default="16,64")
    parser.add_argument("--slices", type=int, default=4, help="direct/engram alternations")
    parser.add_argument("--slice-seconds", type=float, default=3.0)
    parser.add_argument("--stream-chunks", type=int, default=20)
    parser.add_argument("--chunk-ms", type=float, default=10)
    parser.add_argument("--stream-concurrency", type=int, default=16)
    parser.add_argument("--agent-concurrency", type=int, default=16)
    parser.add_argument("--engram-url", help="an already running Engram (with --engram-key)")
    parser.add_argument("--engram-key")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--user-id", help="send x-user-id to Engram: remembered turns")
    parser.add_argument(
        "--jwt",
        action="store_true",
        help="also a block of end users' JWTs (HS256 issuer made here) against the key naming "
        "the same users, both calling an agent with memory off: what verifying a token adds",
    )
    parser.add_argument(
        "--layers",
        action="store_true",
        help="also measure each layer: stock Django, the Django view, the ASGI door, httpx/aiohttp",
    )
    parser.add_argument(
        "--web-processes", type=int, default=0, help="Engram's web processes (default: cores)"
    )
    parser.add_argument(
        "--limits", action="store_true", help="also Engram with limits and budgets on"
    )
    parser.add_argument(
        "--blocks",
        default="plain,agent,stream",
        help="which blocks to run (comma-separated): plain, agent, stream",
    )
    parser.add_argument("--serve-mock", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--unique-answers", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    blocks = set(args.blocks.split(","))
    global USER_ID
    USER_ID = args.user_id
    if args.jwt and args.engram_url:
        parser.error("--jwt makes its issuer in the embedded database: no --engram-url")
    if args.serve_mock:
        serve_mock(
            args.serve_mock,
            args.latency_ms / 1000,
            args.stream_chunks,
            args.chunk_ms / 1000,
            args.unique_answers,
        )
        return 0

    import uvloop

    from bench import machine

    calibration = machine.calibration_ms()
    steal = machine.Steal()
    mock_port = free_port()
    mock_args = [
        sys.executable,
        __file__,
        "--serve-mock",
        str(mock_port),
        "--latency-ms",
        str(args.latency_ms),
        "--stream-chunks",
        str(args.stream_chunks),
        "--chunk-ms",
        str(args.chunk_ms),
    ]
    results: dict = {
        "machine": {**machine.describe(calibration), "python": platform.python_version()},
        "upstream_latency_ms": args.latency_ms,
        "stream": {"chunks": args.stream_chunks, "chunk_ms": args.chunk_ms},
    }
    with contextlib.ExitStack() as stack:
        mock = stack.enter_context(child(mock_args))
        if args.engram_url:
            engram_port = int(args.engram_url.rsplit(":", 1)[1].split("/")[0])
            key, engram_pid = args.engram_key, None
        else:
            key = make_workspace_key()  # also starts the embedded database when needed
            engram_port = free_port()
            from config.env import web_processes

            processes = args.web_processes or web_processes()
            results["web_processes"] = processes
            engram = stack.enter_context(engram_web(engram_port, mock_port, processes))
            engram_pid = engram.pid
            wait_port(engram_port, engram)
            wait_listening(engram_pid, engram_port, processes)
            wait_quiet(engram_pid)
        wait_port(mock_port, mock)

        plain: dict[str, tuple[int, bytes | list[bytes]]] = {
            "direct": (mock_port, build_request(mock_port, PROMPT, None)),
            "engram": (engram_port, build_request(engram_port, PROMPT, key)),
        }
        if args.limits:  # needs this process's Django (made by make_workspace_key)
            limited_key = make_limited_key()
            plain["limited"] = (engram_port, build_request(engram_port, PROMPT, limited_key))
        streamed_body = PROMPT | {"stream": True}
        streamed = {
            "direct": (mock_port, build_request(mock_port, streamed_body, None)),
            "engram": (engram_port, build_request(engram_port, streamed_body, key)),
        }
        load = os.getloadavg()[0]
        results["machine"]["load_average_at_start"] = load
        print(
            f"Gateway benchmark: upstream {args.latency_ms:g} ms, "
            f"{results.get('web_processes', '?')} Engram web process(es), {args.slices} x "
            f"{args.slice_seconds:g} s slices per path, interleaved"
        )
        print(f"  machine at start: {machine.line(calibration)}")
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(interleaved(clients=4, slices=1, slice_seconds=1.5, targets=plain))  # warm
            for clients in [int(c) for c in args.concurrency.split(",")] * ("plain" in blocks):
                steal.start()
                cpu_before = cpu_seconds(engram_pid)
                stats = runner.run(
                    interleaved(
                        clients=clients,
                        slices=args.slices,
                        slice_seconds=args.slice_seconds,
                        targets=plain,
                        cpu=(lambda: cpu_seconds(engram_pid)) if engram_pid else None,
                    )
                )
                figures = summarize(stats)
                cpu_ms = cpu_ms_per_request(stats, cpu_seconds(engram_pid) - cpu_before)
                figures["engram_cpu_ms_per_request"] = cpu_ms
                by_path = figures["engram_cpu_ms_per_request_by_path"] = cpu_ms_by_path(stats)
                figures["load_average"] = os.getloadavg()[0]
                figures["steal_percent"] = steal.percent()
                figures["rss_mb"] = {
                    "engram": tree_rss_mb(engram_pid) if engram_pid else None,
                    "mock": rss_mb(mock.pid),
                    "loadgen": rss_mb(os.getpid()),
                }
                results[f"non_stream_c{clients}"] = figures
                print_block(f"non-stream, {clients} concurrent clients", figures)
                print(
                    "  RSS MB: "
                    + ", ".join(f"{k} {v:.0f}" for k, v in figures["rss_mb"].items() if v)
                )
                print(
                    f"  Engram CPU per request: {cpu_ms:.2f} ms ("
                    + ", ".join(f"{path} {ms:.2f}" for path, ms in by_path.items())
                    + ")"
                )
                print(f"  machine: {machine.line(steal=steal)}")
            # Calling an agent against calling its model directly, both through Engram.
            clients = args.agent_concurrency
            agents = (
                {}
                if "agent" not in blocks
                else {
                    "model": (engram_port, build_request(engram_port, PROMPT, key)),
                    "agent": (engram_port, agent_request(engram_port, key)),
                }
            )
            title = f"agent vs its model through Engram, {clients} concurrent clients"
            if agents:
                results[f"agent_c{clients}"] = compare(
                    runner, args, steal, agents, clients=clients, title=title, unit="an agent"
                )
            if args.jwt:
                # An end user's JWT against the workspace key naming the same user, both
                # calling an agent with memory off: a token always names a user, and a
                # remembered turn's ~50 ms of memory work would drown the auth's cost.
                clients = args.agent_concurrency
                tokens = make_end_user_tokens(clients)
                quiet = {"model": f"agent:{NO_MEMORY_AGENT}", "messages": PROMPT["messages"]}
                no_memory_agent(engram_port, key)
                auths = {
                    "key": (
                        engram_port,
                        [
                            build_request(engram_port, quiet, key, user=f"bench-{n}")
                            for n in range(clients)
                        ],
                    ),
                    "jwt": (
                        engram_port,
                        [build_request(engram_port, quiet, t, user_header=False) for t in tokens],
                    ),
                }
                title = f"end user's JWT vs workspace key, {clients} concurrent clients"
                results[f"jwt_c{clients}"] = compare(
                    runner, args, steal, auths, clients=clients, title=title, unit="a JWT"
                )
            if "stream" in blocks:
                clients = args.stream_concurrency
                steal.start()
                stats = runner.run(
                    interleaved(
                        clients=clients,
                        slices=args.slices,
                        slice_seconds=args.slice_seconds,
                        targets=streamed,
                    )
                )
                ttft = summarize(stats, "ttft")
                total = summarize(stats)
                results[f"stream_c{clients}"] = {
                    "ttft": ttft,
                    "total": total,
                    "load_average": os.getloadavg()[0],
                    "steal_percent": steal.percent(),
                }
                title = f"stream ({args.stream_chunks} chunks x {args.chunk_ms:g} ms), {clients} concurrent"
                print_block(title + ": time to first token", ttft, "TTFT")
                print_block(title + ": whole stream", total)
                print(f"  machine: {machine.line(steal=steal)}")
            if args.layers and key:
                results["layers"] = layers(runner, mock_port, key, 16, args.slice_seconds * 2)
    results["machine"]["load_average_at_end"] = os.getloadavg()[0]
    results["machine"]["calibration_at_end_ms"] = end = machine.calibration_ms()
    print(f"\nmachine at the end: {machine.line(end)}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2))
    errors = sum(
        sum(v.get("errors", {}).values()) for k, v in results.items() if k.startswith("non_stream")
    )
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
