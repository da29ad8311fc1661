"""Engram in its production shape, for tests: N web processes, M Celery workers, optional beat.

    with cluster(web=2, workers=2, env={...}, log_dir=tmp) as running:
        httpx.get(running.web[0] + "/healthz")

Each web process is uvicorn serving config.asgi:application on a free loopback port; each
worker is `celery -A config worker` (threads) consuming every Engram queue; beat is
`celery -A config beat` (the commands are tests/stack.py's, shared with the fault tests). All
of them use the database and Redis of `service_env` — the test's own database, so rows a test commits are what the processes see. Every process
is its own session (process group), stopped with SIGTERM (SIGKILL after `stop_timeout`);
their output goes to files under `log_dir`, which `Cluster.logs()` reads for failure messages.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx

from tests.stack import beat_args, free_port, listens, web_args, worker_args

ROOT = Path(__file__).resolve().parent.parent


def service_env(**extra: str) -> dict[str, str]:
    """The environment of a child process: this test's database (by name) and Redis."""
    from django.conf import settings
    from django.db import connection

    database = urlsplit(settings.DATABASE_URL)._replace(path="/" + connection.settings_dict["NAME"])
    return {
        "DATABASE_URL": urlunsplit(database),
        "REDIS_URL": settings.REDIS_URL,
        "DJANGO_SETTINGS_MODULE": "config.settings.test",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "PYTHONUNBUFFERED": "1",
        **extra,
    }


@dataclass
class Cluster:
    log_dir: Path
    web: list[str] = field(default_factory=list)  # base URLs
    workers: list[str] = field(default_factory=list)  # Celery node names
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    def logs(self, tail: int = 40) -> str:
        out = []
        for name in self.processes:
            lines = (self.log_dir / f"{name}.log").read_text(errors="replace").splitlines()
            out.append(f"--- {name} ---\n" + "\n".join(lines[-tail:]))
        return "\n".join(out)

    def _start(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen:
        log = open(self.log_dir / f"{name}.log", "wb")  # noqa: SIM115 (the child holds it)
        with log:
            proc = subprocess.Popen(
                args,
                cwd=ROOT,
                env={**os.environ, **env},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.processes[name] = proc
        return proc

    def _check_alive(self) -> None:
        for name, proc in self.processes.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}\n{self.logs()}")

    def stop(self, timeout: float) -> None:
        for proc in self.processes.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in self.processes.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@contextlib.contextmanager
def cluster(
    *,
    web: int = 2,
    workers: int = 2,
    beat: bool = False,
    env: dict[str, str] | None = None,
    log_dir: Path,
    start_timeout: float = 120,
    stop_timeout: float = 30,
) -> Iterator[Cluster]:
    """Start the processes, wait until every web process answers /healthz and every worker
    answers a Celery ping, yield, then stop them all (also when starting failed)."""
    from django.conf import settings

    from config.celery import app

    child_env = service_env(**(env or {}))
    running = Cluster(log_dir=Path(log_dir))
    running.log_dir.mkdir(parents=True, exist_ok=True)
    app.control.purge()  # nothing left queued by earlier tests
    tag = f"{os.getpid()}-{time.monotonic_ns() % 10**6}"
    try:
        for index in range(web):
            port = free_port()
            running._start(f"web{index}", [sys.executable, *web_args(port)], child_env)
            running.web.append(f"http://127.0.0.1:{port}")
        for index in range(workers):
            node = f"worker{index}-{tag}@localhost"
            args = worker_args("-n", node, "-Q", settings.ENGRAM_WORKER_QUEUES)
            running._start(f"worker{index}", [sys.executable, *args], child_env)
            running.workers.append(node)
        if beat:
            schedule = running.log_dir / "beat-schedule"
            running._start("beat", [sys.executable, *beat_args(schedule)], child_env)
        _wait_ready(running, app, start_timeout)
        yield running
    finally:
        running.stop(stop_timeout)


def _wait_ready(running: Cluster, app, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    pending_web = set(running.web)
    pending_workers = set(running.workers)
    while pending_web or pending_workers:
        running._check_alive()
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"not ready: {sorted(pending_web | pending_workers)}\n{running.logs()}"
            )
        for url in list(pending_web):
            index = running.web.index(url)
            if not listens(running.processes[f"web{index}"].pid, int(url.rsplit(":", 1)[1])):
                continue
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                    pending_web.discard(url)
        if pending_workers:
            for reply in app.control.ping(destination=sorted(pending_workers), timeout=1.0):
                pending_workers.difference_update(reply)
        time.sleep(0.2)
