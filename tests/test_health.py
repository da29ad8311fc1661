import os
import subprocess
import sys

import httpx
import pytest


def test_healthz(anon_http):
    resp = anon_http.get("/healthz")
    assert resp.status_code == 200 and resp.json() == {"status": "ok"}


def test_probes_answer_get_and_head_only(anon_http):
    assert anon_http.head("/healthz").status_code == 200
    for method in ("POST", "DELETE", "TRACE"):
        for path in ("/healthz", "/readyz"):
            resp = anon_http.request(method, path)
            assert resp.status_code == 405, (method, path, resp.text)
            assert resp.json()["error"]["code"] == "method_not_allowed"
            assert set(resp.headers["allow"].replace(" ", "").split(",")) == {"GET", "HEAD"}


def test_readyz_names_the_missing_worker(anon_http, caplog):
    resp = anon_http.get("/readyz")
    assert resp.status_code == 503
    body = resp.json()
    assert body["down"] == ["worker"]
    # said once, as a warning naming it: not an ERROR of Django's request logger per probe
    assert [r.levelname for r in caplog.records if r.name == "django.request"] == []
    assert any(r.levelname == "WARNING" and "worker" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    "pool", [{"ENGRAM_DB_POOL": "false"}, {"ENGRAM_DB_POOL_TIMEOUT": "1"}], ids=["direct", "pool"]
)
def test_readyz_names_a_database_that_is_down_without_the_drivers_text(tmp_path, pool):
    """/readyz is public: it answered the driver's message, which holds the database's host,
    port, user and name. The body names the check and a generic state; the text is logged."""
    from django.db import connection

    from tests.stack import free_port
    from tests.test_faults import running_stack

    db = connection.settings_dict
    closed = free_port()  # nothing listens there
    with running_stack(tmp_path, host="127.0.0.1", port=closed, **pool) as stack:
        stack.web()
        resp = httpx.get(stack.web_url + "/readyz", timeout=30)
        log = stack.log("web")
    assert resp.status_code == 503, resp.text
    body = resp.json()
    assert "database" in body["down"]
    for secret in ("127.0.0.1", str(closed), db["USER"], db["NAME"], "connection"):
        assert secret not in resp.text, secret
    assert body["errors"]["database"] == body["checks"]["database"] == "unavailable"
    assert str(closed) in log  # the driver's text, for the operator


def test_readyz_ok_with_a_worker(anon_http, celery_worker):
    resp = anon_http.get("/readyz")
    assert resp.status_code == 200, resp.text
    assert resp.json()["status"] == "ok"


def test_secrets_never_reach_logs(owner, operator_http, caplog):
    import logging

    caplog.set_level(logging.DEBUG)
    operator_http.post("/v1/workspaces", json={"name": "logged"})
    key = operator_http.post(f"/v1/workspaces/{owner[0].id}/api_keys", json={"name": "k"}).json()[
        "key"
    ]
    from django.conf import settings

    text = caplog.text
    assert key not in text and owner[1] not in text and settings.ENGRAM_ADMIN_KEY not in text


def test_production_settings_refuse_to_start_without_secrets():
    env = {"DJANGO_SETTINGS_MODULE": "config.settings.production", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert "DJANGO_SECRET_KEY" in proc.stderr or "ImproperlyConfigured" in proc.stderr


def test_the_browsers_own_requests_are_no_errors(anon_http):
    """A browser asks every origin for /favicon.ico (a 401 was a console error on each page),
    and a person types /admin without its slash (a 401 JSON envelope)."""
    assert anon_http.get("/favicon.ico").status_code == 204
    admin = anon_http.get("/admin", follow_redirects=False)
    assert admin.status_code in (301, 302) and admin.headers["location"] == "/admin/"
    assert anon_http.get("/v1/models").status_code == 401  # the API still needs its key


@pytest.mark.parametrize("pool", [{"ENGRAM_DB_POOL": "false"}, {}], ids=["direct", "pool"])
def test_readyz_answers_quickly_when_the_database_stops_answering(tmp_path, pool):
    """A database that accepts connections and then says nothing (a stalled host, a network
    black hole): /readyz waited for it forever, its probe timed out at the orchestrator and
    the process stayed 'ready' in no log. The check ran in the request's own thread, which the
    rest of the request (its sync middleware) then queued behind. Now: 503, database "timeout"."""
    import socket

    from tests.test_faults import running_stack

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)  # the kernel accepts; nothing ever answers
    try:
        port = silent.getsockname()[1]
        with running_stack(tmp_path, host="127.0.0.1", port=port, **pool) as stack:
            stack.web()
            for _ in range(2):  # and again while the first check is still stuck
                resp = httpx.get(stack.web_url + "/readyz", timeout=15)
                assert resp.status_code == 503, resp.text
                assert resp.json()["errors"]["database"] == "timeout"
            assert httpx.get(stack.web_url + "/healthz", timeout=5).status_code == 200
    finally:
        silent.close()


def test_worker_log_lines_are_json_without_the_tasks_arguments(transactional_db, tmp_path):
    """The worker logged in Celery's own format (Celery replaced Django's handlers): a failed
    task's traceback spread over many lines no log pipeline could parse as one event, with no
    request id field. Now Django's LOGGING holds there too: one JSON object a line; and the
    task's arguments (an end user's id here), which Celery hands its log records as `data`,
    stay out of them. Its start-up banner and Python's warnings are JSON lines as well."""
    import json

    from config.celery import app
    from tests.stack import wait_until, worker_args
    from tests.test_faults import running_stack

    # At INFO, as make run and docker-compose run it (the test settings log from WARNING).
    with running_stack(tmp_path, DJANGO_SETTINGS_MODULE="config.settings.base") as stack:
        stack._spawn("worker", worker_args("--without-mingle", "--loglevel", "INFO"), None)
        with app.connection_for_write(stack.redis.url) as conn:
            app.send_task(
                "completions.usage_forget_user",
                # an argument the task does not take: it fails in the worker
                kwargs={"workspace_id": "ws", "user_id": "alice@example.com", "stray": 1},
                connection=conn,
            )
        wait_until(lambda: "stray" in stack.log("worker"), timeout=60, what="the task's failure")
        log = stack.log("worker")
    assert "alice@example.com" not in log
    # Every line is one: Celery's start-up banner (ASCII art, its configuration and tasks on
    # 25 plain lines) and Python's warnings (Celery's SecurityWarning under root: 7 lines on
    # stderr) were printed beside the JSON lines.
    entries = [json.loads(line) for line in log.splitlines() if line.strip()]
    [start] = [e for e in entries if e["message"].endswith(" starting")]
    assert start["logger"] == "celery.apps.worker" and start["pool"] == "thread"
    assert "accounts.workspace_delete" in start["tasks"].split(",")
    assert set(start["queues"].split(",")) == {"default", "memory", "knowledge"}
    if os.geteuid() == 0:
        [warned] = [e for e in entries if e["logger"] == "py.warnings"]
        assert "SecurityWarning" in warned["message"], warned
    failed = [json.loads(line) for line in log.splitlines() if "stray" in line]
    assert len(failed) == 1 and failed[0]["level"] == "ERROR", failed
    assert "Traceback" in failed[0]["exc"] and "request_id" in failed[0]


def test_worker_shutdown_lines_are_json_too(transactional_db, tmp_path):
    """SIGTERM, then SIGINT twice: Celery said "worker: Warm shutdown (MainProcess)" and its
    Ctrl+C warnings with its own `safe_say`, written straight to the file descriptor, blank
    lines around them, beside the JSON lines. Now each is a JSON line of the same formatter."""
    import json
    import signal

    from tests.stack import wait_until, worker_args
    from tests.test_faults import running_stack

    with running_stack(tmp_path, DJANGO_SETTINGS_MODULE="config.settings.base") as stack:
        path = stack.workdir / "worker.log"
        for sig in (signal.SIGTERM, signal.SIGINT):
            path.unlink(missing_ok=True)
            args = worker_args("--without-mingle", "--without-gossip", "--loglevel", "INFO")
            proc = stack._spawn("worker", args, None)
            wait_until(lambda: " ready." in stack.log("worker"), timeout=60, what="worker ready")
            proc.send_signal(sig)
            if sig == signal.SIGINT:  # Ctrl+C twice: "Hitting Ctrl+C again ...", then cold
                wait_until(lambda: "Ctrl+C" in stack.log("worker"), timeout=30, what="warning")
                proc.send_signal(sig)
            assert proc.wait(timeout=60) is not None
            raw = path.read_text()
            assert raw.strip(), "the worker wrote nothing"
            entries = []
            for line in raw.splitlines():
                assert line.strip(), f"a blank line in:\n{raw}"
                entries.append(json.loads(line))  # raises on a plain line
            said = [e for e in entries if "shutdown" in e["message"] or "Ctrl+C" in e["message"]]
            assert said, raw
            assert all(e["logger"] == "celery.apps.worker" for e in said)
            assert {"ts", "level", "logger", "message", "request_id"} <= set(said[0])
            if sig == signal.SIGTERM:
                assert any(e["message"] == "worker: Warm shutdown (MainProcess)" for e in said)
            else:
                assert any("Ctrl+C again" in e["message"] for e in said)


def test_what_a_worker_prints_is_a_json_line_too(transactional_db, tmp_path):
    """Celery redirects print() to its log only when it sets logging up itself, which Engram
    tells it not to: what it printed (`--purge`'s count here, a library's progress bar) came out
    as plain lines. Now each is a JSON line of the logger `celery.redirected`."""
    import json
    import signal

    from config.celery import app
    from tests.stack import wait_until, worker_args
    from tests.test_faults import running_stack

    with running_stack(tmp_path, DJANGO_SETTINGS_MODULE="config.settings.base") as stack:
        with app.connection_for_write(stack.redis.url) as conn:  # one message to purge
            app.send_task("memory.sweep_jobs", connection=conn, queue="default")
        args = worker_args("--without-mingle", "--without-gossip", "--loglevel", "INFO", "--purge")
        proc = stack._spawn("worker", args, None)
        wait_until(lambda: " ready." in stack.log("worker"), timeout=60, what="worker ready")
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        raw = (stack.workdir / "worker.log").read_text()
    entries = [json.loads(line) for line in raw.splitlines()]  # raises on a plain line
    printed = [e for e in entries if e["message"].startswith("purge: Erased")]
    assert printed and all(e["logger"] == "celery.redirected" for e in printed), raw


def test_the_scheduled_sweeps_leave_no_lines_when_nothing_happens(transactional_db, tmp_path):
    """The job sweep runs every 5 s: beat's "Sending due task" and the worker's "received" and
    "succeeded" made three INFO lines every 5 s in a quiet `make run`. They are left out; any
    other task's lines stay (and the sweeps' failures, at ERROR)."""
    import json
    import time

    from config.celery import app
    from tests.stack import beat_args, wait_until, worker_args
    from tests.test_faults import running_stack

    with running_stack(
        tmp_path, DJANGO_SETTINGS_MODULE="config.settings.base", ENGRAM_JOB_SWEEP_SECONDS="0.5"
    ) as stack:
        stack._spawn("worker", worker_args("--without-mingle", "--loglevel", "INFO"), None)
        wait_until(lambda: " ready." in stack.log("worker"), timeout=60, what="worker ready")
        stack._spawn("beat", [*beat_args(tmp_path / "schedule")[:-1], "INFO"], None)
        wait_until(lambda: "Starting" in stack.log("beat"), timeout=60, what="beat started")
        with app.connection_for_write(stack.redis.url) as conn:
            app.send_task(
                "completions.usage_forget_user",
                kwargs={"workspace_id": "ws", "user_id": "nobody"},
                connection=conn,
            )
        wait_until(
            lambda: (
                "usage_forget_user" in stack.log("worker") and "succeeded" in stack.log("worker")
            ),
            timeout=60,
            what="the task's success",
        )
        # Four sweeps' worth after the other task's lines: each would have written three.
        time.sleep(2.0)
        worker, beat = ((stack.workdir / f"{n}.log").read_text() for n in ("worker", "beat"))
    lines = [json.loads(line) for line in (worker + beat).splitlines() if line.startswith("{")]
    said = [e["message"] for e in lines]
    assert any("usage_forget_user" in m and "received" in m for m in said), said
    assert not [m for m in said if "sweep_jobs" in m or "sweep-jobs" in m], said


def test_web_process_log_lines_are_json(tmp_path):
    """A web process (config.web, as `make run` and docker-compose start it) logged uvicorn's
    own lines in uvicorn's format ("INFO:     Started server process") beside Django's JSON:
    two formats in one stream. Now uvicorn's records go through Django's LOGGING as well."""
    import json
    import signal

    from tests.stack import free_port, wait_until
    from tests.test_faults import running_stack

    with running_stack(tmp_path) as stack:
        port = free_port()
        args = ["-m", "config.web", "--single", "--host", "127.0.0.1", "--port", str(port)]
        proc = stack._spawn("web", args, None)
        url = f"http://127.0.0.1:{port}/healthz"

        def up() -> bool:
            assert proc.poll() is None, stack.log("web")
            try:
                return httpx.get(url, timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(up, timeout=90, what="web answering /healthz")
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        log = stack.log("web")
    lines = [line for line in log.splitlines() if "server process" in line]
    assert len(lines) == 2, log  # started, finished
    for line in lines:
        entry = json.loads(line)
        assert entry["logger"].startswith("uvicorn") and "color_message" not in entry, line


def test_metrics_error_codes_are_a_bounded_set_of_labels(db):
    """A 4xx's code is the upstream's own (relayed): an upstream that puts a request's id in
    it made a new engram_errors_total series per failed request, without end (Prometheus
    keeps every series; scrapes grew with each). Past a bound, codes count as "other"."""
    from types import SimpleNamespace

    from completions import metrics

    for n in range(300):
        metrics.observe(
            SimpleNamespace(
                status_code=400,
                error_code=f"req_{n:08d}_code",
                latency_ms=5,
                upstream_ms=None,
                prompt_tokens=0,
                completion_tokens=0,
                credits=0,
            )
        )
    text = metrics.scrape().decode()
    series = [line for line in text.splitlines() if line.startswith("engram_errors_total{")]
    assert len(series) <= 101  # the first 100 codes, and "other"
    assert 'engram_errors_total{code="other"}' in text


def test_a_stuck_readiness_check_does_not_hold_up_the_others():
    """Each blocking check has threads of its own: a worker's ping stuck on a stalled Redis,
    probe after probe, must leave the database's check free to answer."""
    import asyncio
    import threading

    from config.common import health

    stalled = threading.Event()

    async def probes():
        for _ in range(6):
            assert await health._run("worker", stalled.wait, 0.05) == ("worker", "timeout")
        return await health._run("database", lambda: None, 2)

    try:
        assert asyncio.run(probes()) == ("database", "ok")
    finally:
        stalled.set()


def test_a_redis_that_stops_answering_is_a_timeout(settings):
    """redis-py's own TimeoutError (not the builtin) was reported "unavailable" for a Redis
    that accepted and then said nothing; the database's stall is "timeout". Same state now."""
    import asyncio
    import socket

    from config.common import health

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    try:
        settings.REDIS_URL = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
        assert asyncio.run(health._run("redis", health._check_redis)) == ("redis", "timeout")
    finally:
        silent.close()
