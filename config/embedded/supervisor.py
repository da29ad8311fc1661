"""`make run`: the whole service in one foreground process group.

Starts (or reuses) the database and Redis, migrates, ensures the demo workspace and key, then
runs a Celery worker and the ASGI web server as children. SIGINT / SIGTERM stop the children,
then the embedded servers this process started; nothing is left behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from config.embedded import servers as embedded

_stopping = False


def _log(message: str) -> None:
    print(f"engram: {message}", flush=True)


def _spawn(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen(args, stdin=subprocess.DEVNULL)


def _stop(children: list[subprocess.Popen]) -> None:
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 15
    for child in children:
        try:
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def main() -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.base")
    python = sys.executable
    port = os.environ.get("PORT", "8000")
    host = os.environ.get("HOST", "127.0.0.1")

    def on_signal(signum, frame):
        global _stopping
        _stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    embedded.ensure_environment()
    _log(
        f"database {_redact(os.environ['DATABASE_URL'])}, redis {_redact(os.environ['REDIS_URL'])}"
    )
    subprocess.run([python, "manage.py", "migrate", "--noinput", "-v", "0"], check=True)
    subprocess.run([python, "manage.py", "ensuredemo"], check=True)

    concurrency = os.environ.get("ENGRAM_WORKER_CONCURRENCY", "2")
    # Without -Q the worker consumes every queue the settings define (ENGRAM_QUEUES).
    queues = os.environ.get("ENGRAM_WORKER_QUEUES", "")
    children = [
        _spawn(
            [
                python,
                "-m",
                "celery",
                "-A",
                "config",
                "worker",
                *(["-Q", queues] if queues else []),
                "--concurrency",
                concurrency,
                "--loglevel",
                "INFO",
                "--without-gossip",
                "--without-mingle",
                "-n",
                f"engram@{host}-{os.getpid()}",
            ]
        ),
        _spawn(
            [
                python,
                "-m",
                "uvicorn",
                "config.asgi:application",
                "--host",
                host,
                "--port",
                port,
                "--no-access-log",
                "--lifespan",
                "off",
                "--timeout-graceful-shutdown",
                "5",
            ]
        ),
    ]
    _log(f"serving on http://{host}:{port}  (Ctrl-C stops everything)")
    try:
        while not _stopping:
            if any(child.poll() is not None for child in children):
                _log("a child process exited; stopping")
                break
            time.sleep(0.2)
    finally:
        _stop(children)
        embedded.stop_owned()
        _log("stopped")
    return 0


def _redact(url: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@")
    return url


if __name__ == "__main__":
    sys.exit(main())
