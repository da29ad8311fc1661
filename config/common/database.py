"""Who may run longer than the database bounds (settings.DATABASE_BOUNDS) allow.

Every connection starts bounded: a statement is cancelled past ENGRAM_DB_STATEMENT_TIMEOUT, a
lock wait past ENGRAM_DB_LOCK_TIMEOUT (a request answers 503 database_unavailable and may be
retried). That is right for a request, whose client waits; it is wrong for work that is long
by nature, which would only fail the same way each time it is tried again:

- migrations (an index built, a table rewritten), for the whole command: `migrating()`;
- the Celery worker, for its life (`lift()`, at `celeryd_init`): each task is bounded by its
  own hard time limit (config.celery.HARD_TIME_LIMITS), past which the pool process is killed
  and its connection, ended, rolls its transaction back; a workspace's deletion batches and a
  document's chunks may take longer than a request should wait;
- a deletion that takes in one transaction whatever was stored (a user's erasure, a
  conversation's, a collection's): its statements, for that transaction
  (`long_statements()`); its lock waits stay bounded.

The network bounds (connect timeout, keepalives) stay on everywhere: they fail a connection
only when the server stops answering, never a slow statement.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

from django.db import connection, connections

UNBOUNDED = "-c statement_timeout=0 -c lock_timeout=0"


def lift() -> None:
    """Every connection this process opens from now on unbounded (its later `-c` wins)."""
    for alias in connections:
        _set_options(alias, f"{_options(alias)} {UNBOUNDED}".strip())


@contextlib.contextmanager
def migrating() -> Iterator[None]:
    """The process's connections unbounded while the block runs (`manage.py migrate`): the
    connection in hand and the pool are closed on the way in and out, so that every connection
    taken inside has the lifted options and none taken after keeps them."""
    if any(connections[alias].in_atomic_block for alias in connections):
        yield  # inside a caller's transaction (a test's): closing its connection would end it
        return
    before = {alias: _options(alias) for alias in connections}
    lift()
    try:
        yield
    finally:
        for alias, options in before.items():
            _set_options(alias, options)


def long_statements() -> None:
    """In a transaction whose statements may take long (a user's every row deleted): no
    statement bound until it ends (SET LOCAL). Its lock waits stay bounded."""
    statements_bounded(0)


def statements_bounded(seconds: float) -> None:
    """In a transaction: its statements cancelled past `seconds` (0: never) until it ends,
    whatever the connection's bound (SET LOCAL). A statement's time includes its lock waits."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT set_config('statement_timeout', %s, true)", [f"{round(seconds * 1000)}"]
        )


def _options(alias: str) -> str:
    return connections[alias].settings_dict.get("OPTIONS", {}).get("options", "")


def _set_options(alias: str, options: str) -> None:
    """Change the connection options of `alias` and drop what was opened with the old ones
    (this thread's connection, the pool, which is made again at the next use)."""
    db = connections[alias]
    db.close()
    db.settings_dict.setdefault("OPTIONS", {})["options"] = options
    # PostgreSQL's wrapper makes its pool at first use and keeps it on the class, by alias.
    if alias in getattr(type(db), "_connection_pools", {}):
        db.close_pool()  # type: ignore[attr-defined]  # the PostgreSQL backend's own


# The advisory lock `manage.py migrate` holds: any key no other lock in Engram uses.
MIGRATE_LOCK = "engram:migrate"
MIGRATE_LOCK_POLL_SECONDS = 0.5


@contextlib.contextmanager
def one_migration_at_a_time(alias: str) -> Iterator[None]:
    """Two `migrate` runs on one database (two `make run` on one DATABASE_URL, a deploy's
    migrate job beside a developer's) wait for each other: run together, both create the same
    tables and the second fails (`duplicate key … pg_type_typname_nsp_index`). A session lock:
    a killed run's connection ends, and its lock with it. Tried, not waited for: a waiting
    statement holds a snapshot, and the other run's CREATE INDEX CONCURRENTLY waits for every
    older snapshot to end (a deadlock, PostgreSQL's)."""
    db = connections[alias]
    while True:
        with db.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", [MIGRATE_LOCK])
            if cursor.fetchone()[0]:
                break
        time.sleep(MIGRATE_LOCK_POLL_SECONDS)
    try:
        yield
    finally:
        if db.connection is not None:  # a closed connection released the lock already
            with db.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", [MIGRATE_LOCK])
