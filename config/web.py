"""`python -m config.web`: the web server, one uvicorn process per core, all on one port.

    python -m config.web --host 0.0.0.0 --port 8000          # ENGRAM_WEB_PROCESSES (default: cores)
    python -m config.web --single --host ... --port ...      # one process (what each child runs)

Each process binds its own listening socket with SO_REUSEPORT and the kernel spreads new
connections over those sockets by a hash of the connection's addresses. Chosen over one socket
shared by every process (uvicorn --workers, gunicorn): there each event loop, once woken,
accepts every connection queued at that moment (uvloop accepts until EAGAIN), so a burst of
keep-alive clients tends to land on one process while the other core idles; and uvicorn's own
manager restarts a dead worker without the backoff `make run` gives every child. A process that
dies takes its socket with it: new connections go to the other processes meanwhile (the few
queued on its socket, not yet accepted, are reset).

`make run` (config.embedded.supervisor) starts N `--single` children itself and supervises each
with its backoff; with more than one process, `python -m config.web` (docker-compose) does the
same for the web processes alone. Each process starts its warm-ups (the embedding model, the
tokenizer) as soon as it has started, so the first chat on any of them is as fast as the next.
Everything a process caches stays current across processes (config.common.coherence).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket on host:port that other processes of this user may bind too (SO_REUSEPORT)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.set_inheritable(False)
    return sock


def serve_one(host: str, port: int, *, grace: float, log_level: str) -> None:
    """One uvicorn process on its own SO_REUSEPORT socket (uvicorn listens on it)."""
    import uvicorn

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.base")
    import config.asgi  # noqa: F401 - Django set up and the gateway loaded before the warm-ups
    from config.common import health
    from config.common.http_protocol import EnvelopeHttpToolsProtocol

    sock = listening_socket(host, port)
    health.warm_all()
    config = uvicorn.Config(
        "config.asgi:application",
        host=host,
        port=port,
        lifespan="off",  # Django has no lifespan handlers; as `make run` always served it
        http=EnvelopeHttpToolsProtocol,  # what the parser refuses gets the error envelope too
        access_log=False,
        # uvicorn's records go to Django's LOGGING (config.asgi has set it up): its own config
        # printed them in uvicorn's format beside the JSON lines of everything else.
        log_config=None,
        log_level=log_level,
        timeout_graceful_shutdown=grace,
        backlog=2048,
    )
    uvicorn.Server(config).run(sockets=[sock])


# prometheus-client's own variable: where each process writes its counters (read at import).
METRICS_DIR = "PROMETHEUS_MULTIPROC_DIR"


def share_metrics(directory: Path | None = None) -> None:
    """Web processes count into one folder (prometheus-client's multiprocess files), so
    /metrics on whichever process answers reports the sum over all of them; alone, each
    reported only the requests it served itself. Emptied here, before any process starts;
    an operator's own setting is kept."""
    if os.environ.get(METRICS_DIR):
        return
    if directory is None:
        directory = Path(tempfile.mkdtemp(prefix="engram-metrics-"))
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    os.environ[METRICS_DIR] = str(directory)


def supervise(host: str, port: int, *, processes: int, grace: float, log_level: str) -> int:
    """N `--single` children, each restarted with backoff; SIGTERM / Ctrl-C stop them all."""
    from config.embedded import supervisor

    supervisor.catch_signals()
    share_metrics()
    args = web_args(sys.executable, host, port, grace=grace, log_level=log_level)
    children = [supervisor.Child(f"web{i + 1}", args, grace=grace + 5) for i in range(processes)]
    for child in children:
        child.start()
    print(f"engram: {processes} web processes on {host}:{port}", flush=True)
    while not supervisor.signals():
        now = time.monotonic()
        for child in children:
            child.check(now)
        time.sleep(0.2)
    for child in children:
        child.terminate()
    for child in children:
        child.wait()
    return 0


def web_args(python: str, host: str, port: int, *, grace: float, log_level: str) -> list[str]:
    """The command of one web process."""
    return [
        python,
        "-m",
        "config.web",
        "--single",
        "--host",
        host,
        "--port",
        str(port),
        "--grace",
        f"{grace:g}",
        "--log-level",
        log_level,
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--processes", type=int, help="default: ENGRAM_WEB_PROCESSES, else cores")
    parser.add_argument("--single", action="store_true", help="serve in this process")
    parser.add_argument("--grace", type=float, default=10.0, help="seconds to finish replies")
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args()
    if args.single:
        serve_one(args.host, args.port, grace=args.grace, log_level=args.log_level)
        return 0
    from config.env import web_processes

    processes = args.processes or web_processes()
    if processes == 1:
        serve_one(args.host, args.port, grace=args.grace, log_level=args.log_level)
        return 0
    return supervise(
        args.host, args.port, processes=processes, grace=args.grace, log_level=args.log_level
    )


if __name__ == "__main__":
    sys.exit(main())
