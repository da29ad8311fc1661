"""Start a live Engram (`python -m config.embedded.supervisor`) for a benchmark, or use ENGRAM_URL/ENGRAM_API_KEY."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

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


def service_rss_mb(supervisor_pid: int) -> dict[str, float]:
    """Memory of `make run`'s web processes (all of them) and of its worker (main process plus its pool), in MB:
    RSS, and PSS (each page shared between processes counted once in all, so a forked pool's
    pages that are still its parent's are not counted three times)."""
    import psutil

    figures: dict[str, float] = {}
    for child in psutil.Process(supervisor_pid).children():
        command = " ".join(child.cmdline())
        if "config.web" in command:
            name = "web"
        elif " worker" in command:
            name = "worker"
        else:
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
