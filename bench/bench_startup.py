"""From `make run` to the first answered chat, twice: a first run on an empty data folder (initdb,
ONNX export, migrations) and a second run on the same folder. Prints, per run: seconds to the
"serving on" line (/readyz 200), the first chat's latency, seconds from `make run` to that answer,
the web and worker RSS (worker: main process + pool, after it ran an extraction that embeds),
whether any of them loaded torch, and how long SIGTERM took to stop everything.

    .venv/bin/python bench/bench_startup.py [--runs 2] [--make "make run"] [--data-dir DIR]

With the shared venv of a worktree: --make "make run VENV=/path/to/.venv".
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _rss_mb(procs: list[psutil.Process]) -> float:
    return sum(p.memory_info().rss for p in procs) / 2**20


def _torch(procs: list[psutil.Process]) -> bool:
    return any("libtorch" in Path(f"/proc/{p.pid}/maps").read_text() for p in procs)


def one_run(command: list[str], data_dir: str) -> dict[str, float | bool]:
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PORT": str(port), "ENGRAM_DATA_DIR": data_dir}
    for name in ("DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE", "ENGRAM_ADMIN_KEY"):
        env.pop(name, None)  # the embedded servers of this data folder, as on a fresh machine
    began = time.monotonic()
    proc = subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    key, ready_at = None, None
    assert proc.stdout is not None
    for line in proc.stdout:
        if match := re.search(r"API key: (sk-\S+)", line):
            key = match.group(1)
        if line.startswith("engram:") and re.search(r"done in|embedding model|ready in", line):
            print("   ", line.strip())
        if "serving on" in line:
            ready_at = time.monotonic()
            break
    if key is None or ready_at is None:
        raise RuntimeError("make run did not become ready")
    threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()  # type: ignore[union-attr]
    user = f"bench-{uuid.uuid4().hex[:8]}"
    headers = {"Authorization": f"Bearer {key}", "x-user-id": user}
    body = {"model": "local", "messages": [{"role": "user", "content": "I live in Porto."}]}
    sent = time.monotonic()
    response = httpx.post(f"{base}/v1/chat/completions", headers=headers, json=body, timeout=120)
    answered = time.monotonic()
    response.raise_for_status()
    # Let the worker run the extraction (it embeds), so its RSS includes the model.
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        listed = httpx.get(f"{base}/v1/memories", params={"user_id": user}, headers=headers)
        if listed.json().get("data"):
            break
        time.sleep(0.5)
    supervisor = next(
        p
        for p in psutil.Process(proc.pid).children(recursive=True)
        if "config.embedded.supervisor" in " ".join(p.cmdline())
    )
    children = supervisor.children()
    web = [p for p in children if "config.web" in p.cmdline()]  # one per core
    worker_main = [p for p in children if "worker" in p.cmdline()]
    worker = [*worker_main, *worker_main[0].children(recursive=True)]
    figures: dict[str, float | bool] = {
        "ready_s": ready_at - began,
        "first_chat_s": answered - sent,
        "make_run_to_first_chat_s": answered - began,
        "web_rss_mb": _rss_mb(web),
        "worker_main_rss_mb": _rss_mb(worker_main),
        "worker_total_rss_mb": _rss_mb(worker),
        "worker_largest_rss_mb": max(p.memory_info().rss for p in worker) / 2**20,
        "torch_loaded": _torch(web + worker),
    }
    family = [supervisor, *supervisor.children(recursive=True)]
    stop = time.monotonic()
    os.killpg(proc.pid, signal.SIGTERM)  # as Ctrl-C reaches `make` and the supervisor
    proc.wait(timeout=180)
    psutil.wait_procs(family, timeout=180)
    figures["stop_s"] = time.monotonic() - stop
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--make", default="make run")
    parser.add_argument("--data-dir", help="default: a new empty folder (a first run)")
    args = parser.parse_args()
    data_dir = args.data_dir or tempfile.mkdtemp(prefix="engram-startup-")
    for run in range(1, args.runs + 1):
        print(f"run {run} ({args.make}, data {data_dir})")
        figures = one_run(shlex.split(args.make), data_dir)
        for name, value in figures.items():
            shown = f"{value:.2f}" if isinstance(value, float) else value
            print(f"  {name:26} {shown}")


if __name__ == "__main__":
    main()
