"""Start a live Engram (`python -m config.embedded.supervisor`) for a benchmark, or use ENGRAM_URL/ENGRAM_API_KEY."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def live_engram(*, data_dir: str | None = None, env: dict | None = None, timeout: float = 180):
    """Yields (base_url, api_key). Starts `make run`'s process when ENGRAM_URL is unset."""
    if os.environ.get("ENGRAM_URL") and os.environ.get("ENGRAM_API_KEY"):
        yield os.environ["ENGRAM_URL"].rstrip("/"), os.environ["ENGRAM_API_KEY"]
        return
    port = _free_port()
    child_env = {**os.environ, "PORT": str(port), "HF_HUB_OFFLINE": "1", **(env or {})}
    if data_dir:
        child_env["ENGRAM_DATA_DIR"] = data_dir
    proc = subprocess.Popen(
        [sys.executable, "-m", "config.embedded.supervisor"],
        cwd=ROOT,
        env=child_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    base_url = f"http://127.0.0.1:{port}"
    api_key = None
    try:
        deadline = time.monotonic() + timeout
        for line in proc.stdout:
            if match := re.match(r"API key: (sk-\S+)", line.strip()):
                api_key = match.group(1)
            if "serving on" in line:
                break
            if time.monotonic() > deadline:
                raise RuntimeError("Engram did not start in time")
        if api_key is None:
            raise RuntimeError("Engram printed no API key")
        # Keep draining stdout so the child never blocks on a full pipe.
        import threading

        threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(base_url + "/readyz", timeout=3).status_code == 200:
                    break
            time.sleep(0.5)
        else:
            raise RuntimeError("Engram never became ready")
        live_engram.supervisor_pid = proc.pid  # type: ignore[attr-defined]
        yield base_url, api_key
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def child_kind(proc: psutil.Process) -> str | None:
    """Which of `make run`'s children a process of the supervisor is: "web", "worker", "beat"
    (by its command line), or None."""
    command = " ".join(proc.cmdline())
    if "config.web" in command:
        return "web"
    if " worker" in command:
        return "worker"
    if " beat" in command:
        return "beat"
    return None


def service_rss_mb(supervisor_pid: int) -> dict[str, float]:
    """Memory of `make run`'s web processes (all of them) and of its worker (main process plus its pool), in MB:
    RSS, and PSS (each page shared between processes counted once in all, so a forked pool's
    pages that are still its parent's are not counted three times)."""
    figures: dict[str, float] = {}
    for child in psutil.Process(supervisor_pid).children():
        name = child_kind(child)
        if name not in ("web", "worker"):
            continue
        processes = [child, *child.children(recursive=True)]
        for kind, size in (
            ("RSS", sum(p.memory_info().rss for p in processes)),
            ("PSS", sum(p.memory_full_info().pss for p in processes)),
        ):
            figures[f"{name} {kind}"] = figures.get(f"{name} {kind}", 0.0) + size / 2**20
        if name == "worker":
            figures["worker largest process RSS"] = (
                max(p.memory_info().rss for p in processes) / 2**20
            )
    return figures


# --- CPU by kind of process (bench_turn_cpu, bench_soak) -----------------------------------------

KINDS = ("web", "worker", "beat", "supervisor", "postgres", "redis", "mock", "load")


def _tree_cpu(root: psutil.Process) -> float:
    """CPU seconds of a process and its descendants, live and reaped (children_* times)."""
    total = 0.0
    try:
        times = root.cpu_times()
        total += times.user + times.system + times.children_user + times.children_system
        descendants = root.children(recursive=True)
    except psutil.Error:
        return total
    for proc in descendants:
        try:
            times = proc.cpu_times()
            total += times.user + times.system  # a child's reaped children are in its own
            total += times.children_user + times.children_system
        except psutil.Error:
            pass
    return total


def _state_pid(name: str) -> int:
    """The pid of an embedded server (postgres, redis) of this data folder."""
    data = Path(os.environ.get("ENGRAM_DATA_DIR") or ROOT / ".engram")
    return int(json.loads((data / f"{name}.json").read_text())["pid"])


def roots(supervisor_pid: int, mock_pid: int) -> dict[str, list[psutil.Process]]:
    found: dict[str, list[psutil.Process]] = {kind: [] for kind in KINDS}
    supervisor = psutil.Process(supervisor_pid)
    for proc in supervisor.children():
        if kind := child_kind(proc):
            found[kind].append(proc)
    found["supervisor"] = [supervisor]
    found["postgres"] = [psutil.Process(_state_pid("postgres"))]
    found["redis"] = [psutil.Process(_state_pid("redis"))]
    found["mock"] = [psutil.Process(mock_pid)]
    found["load"] = [psutil.Process()]
    return found


def worker_split(found: dict[str, list[psutil.Process]]) -> tuple[float, float]:
    """(CPU seconds of the worker's main process, of its pool): the main process receives,
    hands over and acknowledges each task (Celery's share); the pool runs them."""
    main = pool = 0.0
    for proc in found["worker"]:
        try:
            times = proc.cpu_times()
            main += times.user + times.system
            pool += _tree_cpu(proc) - (times.user + times.system)
        except psutil.Error:
            pass
    return main, pool


def cpu_seconds(found: dict[str, list[psutil.Process]]) -> dict[str, float]:
    """kind -> CPU seconds. The supervisor's own excludes its children (counted by kind)."""
    figures = {}
    for kind, procs in found.items():
        if kind == "supervisor":
            times = procs[0].cpu_times()
            figures[kind] = times.user + times.system
        elif kind == "load":
            times = procs[0].cpu_times()
            figures[kind] = times.user + times.system  # the mock is its child: not counted here
        else:
            figures[kind] = sum(_tree_cpu(proc) for proc in procs)
    return figures
