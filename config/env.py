"""The one place that reads the environment (django-environ)."""

import os
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()


def service_urls() -> tuple[str, str]:
    """DATABASE_URL and REDIS_URL, which must be set: reading settings starts nothing.

    `manage.py`, `make run` and `make test` set them to the embedded servers when unset
    (config.embedded.ensure_environment).
    """
    missing = [name for name in ("DATABASE_URL", "REDIS_URL") if not env.str(name, default="")]
    if missing:
        raise ImproperlyConfigured(
            f"{' and '.join(missing)} not set: set them, or start Engram with `make run` "
            "(or manage.py), which starts the embedded PostgreSQL and Redis."
        )
    return env.str("DATABASE_URL"), env.str("REDIS_URL")


def context_windows() -> dict[str, int]:
    """ENGRAM_CONTEXT_WINDOWS: `name=tokens` pairs, comma-separated (a model name or its
    prefix, as the upstream receives it): the windows of the models a deployment serves itself
    (vLLM's --max-model-len, Ollama's num_ctx, llama.cpp's --ctx-size)."""
    raw = env.str("ENGRAM_CONTEXT_WINDOWS", default="").strip()
    windows: dict[str, int] = {}
    for pair in filter(None, (p.strip() for p in raw.split(","))):
        name, _, tokens = pair.rpartition("=")
        if not name.strip() or not tokens.strip().isdigit() or int(tokens) < 1:
            raise ImproperlyConfigured(
                f"ENGRAM_CONTEXT_WINDOWS: {pair!r} is not name=tokens "
                "(e.g. llama3.1:8b=8192,Qwen/Qwen2.5-7B-Instruct=32768)"
            )
        windows[name.strip().lower()] = int(tokens)
    return windows


def web_processes() -> int:
    """ENGRAM_WEB_PROCESSES: how many web (uvicorn) processes share the port; by default one
    per CPU this process may run on (its affinity: a container's cpuset, not the host's)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    raw = env.str("ENGRAM_WEB_PROCESSES", default="").strip()
    if not raw:
        return cores or 1
    if not raw.isdigit() or int(raw) < 1:
        raise ImproperlyConfigured(
            f"ENGRAM_WEB_PROCESSES={raw!r}: a number of processes, 1 or more"
        )
    return int(raw)


def database_bounds() -> dict[str, object]:
    """What bounds a wait on the database, as libpq connection parameters (`options` holds the
    server-side ones, `-c name=value` each): config.common.database says who lifts which.

    ENGRAM_DB_STATEMENT_TIMEOUT / ENGRAM_DB_LOCK_TIMEOUT (seconds, 0: none): PostgreSQL cancels
    a statement that runs, or waits for a lock, longer. ENGRAM_DB_CONNECT_TIMEOUT: a connection
    not made by then fails. ENGRAM_DB_NETWORK_TIMEOUT: a connection whose server stopped
    answering (a partition, a host gone: no FIN, no reset) fails after about that long, by TCP
    keepalives while it waits for an answer and the kernel's user timeout while what it sent
    is unacknowledged; a server that is merely slow acknowledges both, so no statement of any
    length is cut by it."""
    statement = env.float("ENGRAM_DB_STATEMENT_TIMEOUT", default=30.0)
    lock = env.float("ENGRAM_DB_LOCK_TIMEOUT", default=10.0)
    connect = env.float("ENGRAM_DB_CONNECT_TIMEOUT", default=5.0)
    network = env.float("ENGRAM_DB_NETWORK_TIMEOUT", default=30.0)
    for name, value in (
        ("ENGRAM_DB_STATEMENT_TIMEOUT", statement),
        ("ENGRAM_DB_LOCK_TIMEOUT", lock),
        ("ENGRAM_DB_CONNECT_TIMEOUT", connect),
        ("ENGRAM_DB_NETWORK_TIMEOUT", network),
    ):
        if value < 0:
            raise ImproperlyConfigured(f"{name}={value:g}: seconds, 0 for no bound")
    bounds: dict[str, object] = {
        "options": f"-c statement_timeout={round(statement * 1000)} "
        f"-c lock_timeout={round(lock * 1000)}",
    }
    if connect:
        # libpq's unit is whole seconds, and it takes less than 2 as 2.
        bounds["connect_timeout"] = max(2, round(connect))
    if network:
        # Quiet for a third of it, then 4 probes 1/6 of it apart: about `network` in all.
        bounds |= {
            "keepalives": 1,
            "keepalives_idle": max(1, round(network / 3)),
            "keepalives_interval": max(1, round(network / 6)),
            "keepalives_count": 4,
            "tcp_user_timeout": round(network * 1000),
        }
    return bounds


# psycopg's default: a statement run this many times on a connection is prepared there.
PREPARE_THRESHOLD = 5


def prepared_statements() -> dict[str, object]:
    """ENGRAM_DB_PREPARED_STATEMENTS (default true): the database OPTIONS that bind statements'
    parameters on the server and prepare a statement on its connection once it ran
    PREPARE_THRESHOLD times there (psycopg's automatic prepared statements), so PostgreSQL
    plans it no more: planning was 3.5 of its ~8 ms a remembered turn, every statement planned
    afresh because Django wrote the parameters into its text (bench/README.md, "Twenty-fifth
    session"). False: parameters written into the text as before, nothing prepared; for a
    pgbouncer in transaction pooling older than 1.21, which cannot keep prepared statements
    (1.21 and later do with max_prepared_statements set). The rankings are never prepared
    (config.common.statements says why)."""
    if not env.bool("ENGRAM_DB_PREPARED_STATEMENTS", default=True):
        return {}
    return {"server_side_binding": True, "prepare_threshold": PREPARE_THRESHOLD}
