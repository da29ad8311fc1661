"""Bounded waits on the database (settings.DATABASE_BOUNDS, config.common.database): a request
whose database stalls is answered 503 database_unavailable instead of waiting forever, and the
work that is long by nature (migrations, the worker, an erasure) is not cut short by the bounds.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import connection
from django.db.models.signals import pre_migrate

from memory.models import Message
from tests.processes import ROOT
from tests.stack import wait_until
from tests.test_faults import chat, client, running_stack
from tests.upstream import Reply, openai_stream


@contextlib.contextmanager
def table_locked(table: str) -> Iterator[None]:
    """`table` locked by another transaction (ACCESS EXCLUSIVE: nobody reads or writes it)
    until the block ends: a migration, a long maintenance statement, a stuck session."""
    db = connection.settings_dict
    with psycopg.connect(
        host=db["HOST"], port=db["PORT"], user=db["USER"], dbname=db["NAME"]
    ) as other:
        other.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
        try:
            yield
        finally:
            other.rollback()


def assert_database_unavailable(response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "1"
    assert response.json() == {
        "error": {
            "message": "The database is unavailable for the moment; retry shortly.",
            "type": "service_unavailable",
            "param": None,
            "code": "database_unavailable",
        }
    }


@pytest.mark.parametrize(
    "bound",
    [
        {"ENGRAM_DB_LOCK_TIMEOUT": "1"},
        {"ENGRAM_DB_STATEMENT_TIMEOUT": "1", "ENGRAM_DB_LOCK_TIMEOUT": "0"},
    ],
    ids=["lock-timeout", "statement-timeout"],
)
def test_a_request_whose_table_is_locked_is_answered_503_not_held(
    transactional_db, tmp_path, owner, bound
):
    """Before, the chat turn and the REST request waited on the lock for as long as it was held
    (here: past the client's 30 s, a ReadTimeout), holding the web's thread meanwhile."""
    headers = {"x-user-id": "ana", "x-conversation-id": "locked"}
    with running_stack(tmp_path, **bound) as stack:
        stack.web()
        with client(stack, owner[1], **headers) as http:
            assert chat(http, "Before the lock.").status_code == 200
            with table_locked("memory_message"):
                assert_database_unavailable(chat(http, "While it is locked."))
                assert_database_unavailable(http.get("/v1/conversations/locked/messages"))
                with http.stream(
                    "POST",
                    "/v1/chat/completions",
                    json={
                        "model": "local",
                        "stream": True,
                        "messages": [{"role": "user", "content": "Streamed while locked."}],
                    },
                ) as streamed:
                    streamed.read()
                    assert_database_unavailable(streamed)
            # The lock gone, the web serves again, and what was stored before is all there.
            assert chat(http, "After the lock.").status_code == 200
            listed = http.get("/v1/conversations/locked/messages")
            assert listed.status_code == 200, listed.text
    stored = Message.objects.filter(conversation__external_id="locked", role="user")
    assert sorted(stored.values_list("content", flat=True)) == [
        "After the lock.",
        "Before the lock.",
    ]
    assert Message.objects.filter(conversation__external_id="locked").count() == 4


def test_an_answer_whose_store_meets_a_lock_is_stored_once_the_lock_goes(
    transactional_db, tmp_path, owner, upstream
):
    """The answer's store cancelled by the lock bound is tried again (as while the database is
    down: memory.turn.pipeline._until_stored), not lost and not stored twice; the client gets
    its whole answer."""
    pieces = [f"piece {i} " for i in range(8)]
    upstream.script(Reply(stream=openai_stream(pieces), delay=0.1))
    headers = {"x-user-id": "ana", "x-conversation-id": "midway"}
    body = {"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "Go"}]}
    locked, held = threading.Event(), threading.Event()

    def hold() -> None:
        with table_locked("memory_message"):
            locked.set()
            held.wait(3)  # three lock bounds and more: the store is cancelled, tried again

    holder = threading.Thread(target=hold)
    with running_stack(
        tmp_path, ENGRAM_DB_LOCK_TIMEOUT="1", OPENAI_BASE_URL=upstream.url + "/v1"
    ) as stack:
        stack.web()
        with (
            client(stack, owner[1], **headers) as http,
            http.stream("POST", "/v1/chat/completions", json=body) as response,
        ):
            frames = []
            for line in response.iter_lines():
                if line.startswith("data: "):
                    frames.append(line)
                    if len(frames) == 3:  # the turn's request is stored; its answer is coming
                        holder.start()
                        assert locked.wait(10)
        holder.join()
        assert response.status_code == 200 and frames[-1] == "data: [DONE]"
        answers = Message.objects.filter(conversation__external_id="midway", role="assistant")
        wait_until(answers.exists, timeout=30, what="the answer stored after the lock went")
        assert "storing an answer: database unavailable" in stack.log("web")  # it was cancelled
    assert list(answers.values_list("content", flat=True)) == ["".join(pieces)]
    stored = Message.objects.filter(conversation__external_id="midway", role="user")
    assert list(stored.values_list("content", flat=True)) == ["Go"]


def _show(name: str) -> str:
    with connection.cursor() as cursor:
        cursor.execute(f"SHOW {name}")
        return cursor.fetchone()[0]


def test_connections_are_bounded_by_default(transactional_db):
    assert settings.DATABASE_BOUNDS["options"] == "-c statement_timeout=30000 -c lock_timeout=10000"
    assert (_show("statement_timeout"), _show("lock_timeout")) == ("30s", "10s")
    assert _show("hnsw.ef_search") == "200"  # the options the bounds joined are still set
    params = connection.connection.info.get_parameters()
    assert params["connect_timeout"] == "5"
    assert (params["keepalives_idle"], params["keepalives_interval"]) == ("10", "5")
    assert (params["keepalives_count"], params["tcp_user_timeout"]) == ("4", "30000")
    if connection.connection.info.host.startswith("/"):
        return  # a Unix socket has no TCP keepalives
    sock = socket.socket(fileno=connection.connection.pgconn.socket)
    try:
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 10
    finally:
        sock.detach()  # the connection's own socket: not closed here


def test_migrate_runs_without_the_statement_and_lock_bounds(transactional_db):
    seen = []

    def during(**kwargs):
        seen.append((_show("statement_timeout"), _show("lock_timeout")))

    pre_migrate.connect(during, weak=False)
    try:
        call_command("migrate", verbosity=0, interactive=False)
    finally:
        pre_migrate.disconnect(during)
    assert seen and set(seen) == {("0", "0")}
    assert (_show("statement_timeout"), _show("lock_timeout")) == ("30s", "10s")  # after it


@pytest.fixture
def restored_options(transactional_db):
    """The test process's connection options as they were, after a test that lifts them."""
    from config.common import database

    before = database._options("default")
    yield
    database._set_options("default", before)
    logging.captureWarnings(False)  # what the worker's celeryd_init also turned on


def test_the_celery_worker_runs_without_the_statement_and_lock_bounds(restored_options):
    from celery import signals

    from config.celery import app

    assert _show("statement_timeout") == "30s"
    # What `celery worker` sends before its pool processes start.
    signals.celeryd_init.send(sender="engram@test", instance=None, conf=app.conf, options={})
    assert (_show("statement_timeout"), _show("lock_timeout")) == ("0", "0")
    assert _show("hnsw.ef_search") == "200"


def test_an_erasure_runs_its_statements_without_the_statement_bound(owner, upstream, http):
    """A user's erasure deletes whatever they have in one transaction: it may take longer than a
    request's statement bound, and is not cut short by it; its lock waits stay bounded."""
    from memory import services

    for text in ("I live in Lisbon.", "I love jazz."):
        response = http.post(
            "/v1/chat/completions",
            headers={"x-user-id": "ana"},
            json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]},
        )
        assert response.status_code == 200, response.text
    seen = []

    def watch(execute, sql, params, many, context):
        if sql.startswith("DELETE") and "memory_message" in sql:
            raw = context["connection"].connection
            seen.append(
                tuple(
                    raw.execute(f"SHOW {n}").fetchone()[0]
                    for n in ("statement_timeout", "lock_timeout")
                )
            )
        return execute(sql, params, many, context)

    with connection.execute_wrapper(watch):
        counts = services.user_delete(workspace=owner[0], user_id="ana")
    assert counts["messages"] >= 2
    assert seen and set(seen) == {("0", "10s")}
    assert _show("statement_timeout") == "30s"  # SET LOCAL: for the erasure's transaction only


def test_the_bounds_are_read_from_the_environment(monkeypatch):
    from django.core.exceptions import ImproperlyConfigured

    from config.env import database_bounds

    monkeypatch.setenv("ENGRAM_DB_STATEMENT_TIMEOUT", "2.5")
    monkeypatch.setenv("ENGRAM_DB_LOCK_TIMEOUT", "0")
    monkeypatch.setenv("ENGRAM_DB_CONNECT_TIMEOUT", "0")
    monkeypatch.setenv("ENGRAM_DB_NETWORK_TIMEOUT", "0")
    # 0: no bound (PostgreSQL's own 0; no connect timeout, no keepalives set)
    assert database_bounds() == {"options": "-c statement_timeout=2500 -c lock_timeout=0"}
    monkeypatch.setenv("ENGRAM_DB_NETWORK_TIMEOUT", "60")
    assert database_bounds()["keepalives_idle"] == 20
    assert database_bounds()["tcp_user_timeout"] == 60000
    monkeypatch.setenv("ENGRAM_DB_LOCK_TIMEOUT", "-1")
    with pytest.raises(ImproperlyConfigured, match="ENGRAM_DB_LOCK_TIMEOUT"):
        database_bounds()


def test_two_migrations_run_at_once_on_a_new_database_both_succeed():
    """Two `migrate` runs on one database (two `make run` on one DATABASE_URL; a deploy's job
    beside a developer's) each created the same tables, and the second failed on PostgreSQL's
    catalog (`duplicate key value violates unique constraint "pg_type_typname_nsp_index"`).
    They now take turns: both succeed, the second finding nothing left to do."""
    db = connection.settings_dict
    name = f"engram_migrate_{uuid.uuid4().hex[:8]}"
    admin = dict(host=db["HOST"], port=db["PORT"], user=db["USER"], dbname="postgres")
    with psycopg.connect(**admin, autocommit=True) as server:
        server.execute(f'CREATE DATABASE "{name}"')
    try:
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "config.settings.base",
            "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{name}",
        }
        runs = [
            subprocess.Popen(
                [sys.executable, "manage.py", "migrate", "--noinput", "-v0"],
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for _ in range(2)
        ]
        outputs = [run.communicate(timeout=300)[0] for run in runs]
        assert [run.returncode for run in runs] == [0, 0], outputs
        with psycopg.connect(**{**admin, "dbname": name}) as migrated:
            applied = migrated.execute("SELECT count(*) FROM django_migrations").fetchone()[0]
        assert applied > 0
    finally:
        with psycopg.connect(**admin, autocommit=True) as server:
            server.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
