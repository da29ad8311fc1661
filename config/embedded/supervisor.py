"""`make run`: the whole service in one foreground process, supervised.

Checks what would make the start fail (the port, the data folder) before anything heavy, then
prepares the embedding model (in a process of its own: the only one that imports torch), starts
(or reuses) PostgreSQL and Redis, migrates, ensures the demo workspace and key and the operator
key, and runs its children: the web server (ENGRAM_WEB_PROCESSES uvicorn processes, default one
per core, sharing the port: config/web.py), a Celery worker and Celery beat. Each step prints
how long it took; the URLs and keys follow once /readyz answers 200.

A child that dies is restarted after 1 s, 2 s, 4 s... (at most 30 s; back to 1 s after a minute
up). Only Ctrl-C / SIGTERM stop the service: web first (uvicorn finishes its replies and usage
writes), then beat and the worker (warm shutdown: running tasks finish), then the servers this
process started. A second Ctrl-C stops at once. Nothing is left behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from django.core.exceptions import ImproperlyConfigured

from config.embedded import servers as embedded
from config.env import web_processes
from config.web import share_metrics, web_args

BACKOFF_FIRST, BACKOFF_MAX = 1.0, 30.0
SERVERS_CHECK_SECONDS = 1.0  # how often the embedded servers this process started are checked
STABLE_AFTER = 60.0  # a child up this long that dies starts over at the first backoff
READY_TIMEOUT = 300.0
ROOT = Path(__file__).resolve().parents[2]
UPSTREAM_VARIABLES = ("OPENAI_BASE_URL", "ANTHROPIC_BASE_URL")

_signals = 0


def _on_signal(signum, frame) -> None:
    global _signals
    _signals += 1


def catch_signals() -> None:
    """SIGINT / SIGTERM are counted (`signals()`), not raised: the loop stops the children."""
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)


def signals() -> int:
    return _signals


def _log(message: str) -> None:
    print(f"engram: {message}", flush=True)


class StartError(Exception):
    """Why the service cannot start: printed as one line, then a non-zero exit."""


@contextlib.contextmanager
def _step(what: str) -> Iterator[None]:
    started = time.monotonic()
    _log(f"{what}...")
    yield
    _log(f"{what}: done in {time.monotonic() - started:.1f} s")


# --- checks before anything heavy -------------------------------------------------------------


def port_problem(host: str, port: int) -> str | None:
    """Why uvicorn could not listen on host:port, or None."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            sock.bind((host, port))
        except OSError as exc:
            return f"cannot listen on {host}:{port} ({exc.strerror}); stop what uses it or set PORT"
    return None


def data_dir_problem() -> str | None:
    """Why the data folder (ENGRAM_DATA_DIR) is unusable, or None."""
    where = os.environ.get("ENGRAM_DATA_DIR") or str(ROOT / ".engram")
    try:
        path = embedded.data_dir()
        probe = path / f".probe-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        return f"data folder {where} is unusable ({exc.strerror or exc}); fix it or set ENGRAM_DATA_DIR"
    return None


def _addresses(name: str) -> set[str]:
    with contextlib.suppress(OSError, UnicodeError):
        return {str(info[4][0]).split("%")[0] for info in socket.getaddrinfo(name, None)}
    return set()


def _answers_at(host: str) -> tuple[set[str], bool]:
    """The addresses Engram answers at, and whether every loopback address counts."""
    if host in ("0.0.0.0", "::", ""):
        return _addresses(socket.gethostname()) | _addresses(socket.getfqdn()), True
    ours = _addresses(host)
    return ours, any(ipaddress.ip_address(address).is_loopback for address in ours)


def loop_warning(host: str, port: int, environ: Mapping[str, str]) -> str | None:
    """A warning when an upstream variable points at this Engram (every chat would call itself)."""
    ours, loopback = _answers_at(host)
    for variable in UPSTREAM_VARIABLES:
        url = environ.get(variable, "").strip()
        if not url:
            continue
        parts = urlsplit(url if "://" in url else f"http://{url}")
        try:
            upstream_port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            continue
        if upstream_port != port or not parts.hostname:
            continue
        upstream = _addresses(parts.hostname)
        if upstream & ours or (
            loopback and any(ipaddress.ip_address(address).is_loopback for address in upstream)
        ):
            return (
                f"WARNING: {variable}={url} points at this Engram ({host}:{port}): every chat "
                f"would call Engram itself in a loop. Set {variable} to the real upstream "
                "(OpenAI, vLLM, Ollama...) or unset it to use the built-in local model."
            )
    return None


# --- keys --------------------------------------------------------------------------------------


def operator_key(data: Path) -> tuple[str, str]:
    """ENGRAM_ADMIN_KEY, or the one kept in the data folder (made on first run); (key, where)."""
    if key := os.environ.get("ENGRAM_ADMIN_KEY", "").strip():
        return key, "from ENGRAM_ADMIN_KEY"
    path = data / "admin_key"
    key = path.read_text().strip() if path.exists() else ""
    if len(key) < 24:
        key = f"engram-admin-{secrets.token_urlsafe(32)}"
        path.write_text(key + "\n")
        path.chmod(0o600)
    return key, f"kept in {path}"


# --- children ----------------------------------------------------------------------------------


# Resolved here, not in the forked child, which should do as little as possible.
_prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None


def _die_with_parent() -> None:
    """In the child: SIGTERM when the supervisor dies, even by SIGKILL (Linux)."""
    if _prctl is not None:
        _prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class Child:
    name: str
    args: list[str]
    grace: float  # seconds it may take to finish what is in flight after SIGTERM
    nice: int = 0  # added to its CPU niceness (its pool processes inherit it)
    proc: subprocess.Popen | None = None
    started: float = 0.0
    failures: int = 0
    restart_at: float = 0.0

    def start(self) -> subprocess.Popen:
        # Its own process group: a terminal's Ctrl-C reaches only the supervisor, which then
        # stops the children in order; the group also holds a worker's pool processes.
        self.proc = subprocess.Popen(
            self.args,
            stdin=subprocess.DEVNULL,
            cwd=ROOT,
            process_group=0,
            preexec_fn=self._in_child,
        )
        self.started = time.monotonic()
        return self.proc

    def _in_child(self) -> None:
        _die_with_parent()
        if self.nice:
            os.nice(self.nice)

    def check(self, now: float) -> None:
        """Restart a dead child, waiting longer after each quick death."""
        if self.proc is None:
            if now >= self.restart_at:
                _log(f"{self.name} restarted (pid {self.start().pid})")
            return
        code = self.proc.poll()
        if code is None:
            return
        self._kill_group()  # e.g. a worker's pool processes, orphaned by a SIGKILL
        uptime = now - self.started
        if uptime > STABLE_AFTER:
            self.failures = 0
        delay = min(BACKOFF_FIRST * 2**self.failures, BACKOFF_MAX)
        self.failures += 1
        how = f"signal {-code}" if code < 0 else f"code {code}"
        _log(f"{self.name} exited ({how}) after {uptime:.0f} s; restarting in {delay:.0f} s")
        self.proc, self.restart_at = None, now + delay

    def terminate(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def wait(self) -> None:
        """Wait for the child to finish its work; kill it after its grace or a second Ctrl-C."""
        if self.proc is not None:
            deadline = time.monotonic() + self.grace
            signals = _signals
            while self.proc.poll() is None:
                if time.monotonic() > deadline or _signals > signals:
                    _log(f"{self.name} did not stop in time; killing it")
                    break
                time.sleep(0.05)
        self._kill_group()
        if self.proc is not None:
            self.proc.wait()

    def _kill_group(self) -> None:
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)


def _children(python: str, host: str, port: int, data: Path) -> list[Child]:
    web_grace = float(os.environ.get("ENGRAM_WEB_GRACE", "10"))
    # One pool process by default: each loads its own embedding model. After `make eval`'s
    # workload the worker took 468 MB RSS with one (ingestion 108 s) and 794 MB with two (66 s);
    # the target is 500 MB on a laptop. Production (docker-compose) sizes its own.
    concurrency = os.environ.get("ENGRAM_WORKER_CONCURRENCY", "1")
    # Without -Q the worker consumes every queue the settings define (ENGRAM_QUEUES).
    queues = os.environ.get("ENGRAM_WORKER_QUEUES", "")
    celery = [python, "-m", "celery", "-A", "config"]
    # Every core serves: one web process each, on one port (SO_REUSEPORT; config/web.py says
    # why), each supervised here with its own backoff.
    processes = web_processes()
    if processes > 1:
        share_metrics(data / "metrics")
    web = web_args(python, host, port, grace=web_grace, log_level="info")
    return [
        Child(
            "worker",
            [
                *celery,
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
            ],
            grace=float(os.environ.get("ENGRAM_WORKER_GRACE", "60")),
            # Web and worker share this machine's cores: when both want more than there is, an
            # answer comes first and a memory later. In the soak (150 req/s, 30 % remembered
            # turns: ~2.6 cores of demand on 2) the worker's batches took the web processes'
            # CPU and requests queued in the last 100 s (web RSS +11 to +34 %).
            nice=int(os.environ.get("ENGRAM_WORKER_NICE", "10")),
        ),
        Child(
            "beat",
            # --quiet: no banner, plain lines amid the JSON ones (beat logs its start itself)
            [
                *celery,
                "--quiet",
                "beat",
                "--loglevel",
                "INFO",
                "-s",
                str(data / "celerybeat-schedule"),
            ],
            grace=10,
        ),
        *(
            Child(f"web{i + 1}" if processes > 1 else "web", web, grace=web_grace + 5)
            for i in range(processes)
        ),
    ]


def _wait_ready(url: str, ready: threading.Event, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                if response.status == 200:
                    ready.set()
                    return
        except (OSError, urllib.error.HTTPError):
            pass
        stop.wait(0.25)


def _run_quiet(args: list[str], what: str) -> str:
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise StartError(f"{what} failed: {(done.stderr or done.stdout).strip()[-1500:]}")
    return done.stdout


# --- main --------------------------------------------------------------------------------------


def main() -> int:
    began = time.monotonic()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.base")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    host = os.environ.get("HOST", "127.0.0.1")
    try:
        port = int(os.environ.get("PORT", "8000"))
    except ValueError:
        return _fail(f"PORT={os.environ['PORT']!r} is not a port number")
    try:
        web_processes()
    except ImproperlyConfigured as exc:
        return _fail(str(exc))
    if problem := port_problem(host, port) or data_dir_problem():
        return _fail(problem)
    if warning := loop_warning(host, port, os.environ):
        _log(warning)

    catch_signals()
    data = embedded.data_dir()
    python = sys.executable
    children = _children(python, host, port, data)
    try:
        banner = _start(python, data, children)
    except StartError as exc:
        _shutdown(children)
        return _fail(str(exc))
    base = f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{port}"
    ready, stop = threading.Event(), threading.Event()
    threading.Thread(target=_wait_ready, args=(f"{base}/readyz", ready, stop), daemon=True).start()
    _log("waiting for /readyz (database, Redis, worker, embedding model)...")
    announced = late = False
    servers_checked = 0.0
    try:
        while not _signals:
            now = time.monotonic()
            if now - servers_checked >= SERVERS_CHECK_SECONDS:
                servers_checked = now
                _revive_servers(children)
            for child in children:
                child.check(now)
            if ready.is_set() and not announced:
                announced = True
                _log(f"ready in {now - began:.1f} s")
                pages = [f"Playground: {base}/playground", f"API docs: {base}/docs"]
                for line in [*banner, *pages, f"Admin: {base}/admin/"]:
                    print(f"  {line}", flush=True)
                _log(f"serving on {base}  (Ctrl-C stops everything)")
            elif not (announced or late) and now - began > READY_TIMEOUT:
                _log(f"not ready after {READY_TIMEOUT:.0f} s; see {base}/readyz")
                late = True
            time.sleep(0.2)
    finally:
        stop.set()
        _shutdown(children)
    return 0


def _revive_servers(children: list[Child]) -> None:
    """Start again an embedded server this process started that has died: the children
    reconnect to it by themselves; should its port have been taken meanwhile, they are
    restarted with its new address."""
    try:
        revived = embedded.revive_owned()
    except (RuntimeError, OSError) as exc:  # it failed to start: tried again at the next check
        _log(f"an embedded server could not be restarted ({exc}); trying again")
        return
    moved = False
    for name, url in revived.items():
        variable = "DATABASE_URL" if name == "postgres" else "REDIS_URL"
        _log(f"embedded {name} had exited; restarted ({_redact(url)})")
        if os.environ.get(variable) != url:
            os.environ[variable] = url
            moved = True
    if moved:
        for child in children:
            child.terminate()


def _start(python: str, data: Path, children: list[Child]) -> list[str]:
    """Everything up to the children running; returns the lines that name the keys."""
    # The export (torch; ~10 s on an idle machine, once per data folder) runs beside the rest.
    _log("preparing the embedding model in the background (ONNX export on first run, warm-up)")
    began = time.monotonic()
    export = subprocess.Popen(
        [python, "-m", "memory.embeddings.prepare"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    by_name = {child.name: child for child in children}
    try:
        if not os.environ.get("DATABASE_URL"):
            with _step("starting PostgreSQL"):
                os.environ["DATABASE_URL"] = embedded.ensure_postgres()
        if not os.environ.get("REDIS_URL"):
            with _step("starting Redis"):
                os.environ["REDIS_URL"] = embedded.ensure_redis()
        database, redis = _redact(os.environ["DATABASE_URL"]), _redact(os.environ["REDIS_URL"])
        _log(f"database {database}, redis {redis}")
        key, where = operator_key(data)
        os.environ["ENGRAM_ADMIN_KEY"] = key  # the children's settings read it
        # The worker starts while the database migrates (~20 s saved under load): it touches no
        # table before a task arrives, and none can before the web server starts.
        with _step("starting worker"):
            by_name["worker"].start()
        with _step("migrating the database, demo workspace and keys"):
            demo = _run_quiet([python, "manage.py", "ensuredemo", "--migrate"], "migrate")
        # Web and beat start before the export ends: their imports overlap it, and the web
        # server's /readyz waits for the model (its warm-up waits on the export's lock).
        with _step("starting beat"):
            by_name["beat"].start()
        webs = [child for child in children if child.name.startswith("web")]
        with _step(f"starting web ({len(webs)} process{'es' if len(webs) > 1 else ''})"):
            for child in webs:
                child.start()
        out, err = export.communicate()
    finally:
        if export.poll() is None:
            export.kill()
            export.wait()
    if export.returncode != 0:
        raise StartError(f"preparing the embedding model failed: {err.strip()[-1500:]}")
    _log(f"{out.strip()}; ready {time.monotonic() - began:.1f} s after it started")
    return [
        *demo.splitlines(),
        f"Demo key kept in {data / 'demo_api_key'}",
        f"Operator key: {key}  ({where})",
    ]


def _shutdown(children: list[Child]) -> None:
    by_name = {child.name: child for child in children}
    _log("stopping: web first (finishing replies)...")
    webs = [child for child in children if child.name.startswith("web")]
    for child in webs:
        child.terminate()
    for child in webs:
        child.wait()
    _log("stopping: beat and worker (running tasks finish)...")
    for name in ("beat", "worker"):
        by_name[name].terminate()
    for name in ("beat", "worker"):
        by_name[name].wait()
    embedded.stop_owned()
    _log("stopped")


def _fail(reason: str) -> int:
    print(f"engram: cannot start: {reason}", file=sys.stderr, flush=True)
    return 2


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@")
    return url


if __name__ == "__main__":
    sys.exit(main())
