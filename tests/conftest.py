import functools
import os

import httpx
import pytest
from django.conf import settings
from django.core.management.base import CommandError
from django.db import connection
from django.test import TransactionTestCase
from psycopg.errors import DeadlockDetected

from tests.browser import chromium, page  # noqa: F401  (fixtures for the browser tests)
from tests.factories import make_workspace
from tests.livesrv import ThreadedServer

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

FLUSH_ATTEMPTS = 5


def _flush_retried_on_deadlock(teardown):
    """A transactional test's flush is one TRUNCATE of every table, which locks them one by one.
    A process of the test's own (tests/processes.py) that inserts a usage record at that moment
    holds that table and waits for accounts_workspace (its foreign key), which the TRUNCATE may
    already hold: PostgreSQL ends one of the two after deadlock_timeout (1 s), and when it ends
    the TRUNCATE the test errors at teardown (seen once in CI). The flush is rolled back whole,
    so it is run again."""

    @functools.wraps(teardown)
    def flush(self):
        for attempt in range(1, FLUSH_ATTEMPTS + 1):
            try:
                return teardown(self)
            except CommandError as exc:
                if attempt == FLUSH_ATTEMPTS or not _is_deadlock(exc):
                    raise

    return flush


def _is_deadlock(exc: BaseException | None) -> bool:
    while exc is not None:
        if isinstance(exc, DeadlockDetected):
            return True
        exc = exc.__cause__
    return False


TransactionTestCase._fixture_teardown = _flush_retried_on_deadlock(  # type: ignore[method-assign]
    TransactionTestCase._fixture_teardown
)


@pytest.fixture(autouse=True)
def _fresh_key_cache():
    from accounts.authentication import clear_caches

    clear_caches()
    yield
    clear_caches()


@pytest.fixture(scope="session", autouse=True)
def _close_stray_connections(django_db_setup, django_db_blocker):
    """Server threads keep connections to the test database; end them before it is dropped."""
    yield
    with django_db_blocker.unblock(), connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )


@pytest.fixture
def engram_server(transactional_db):
    """Engram's ASGI app on a real loopback port, against the test database."""
    from config.asgi import application

    server = ThreadedServer(application).start()
    yield server
    import asyncio

    from completions.providers.http import close_session

    loop = server.server.servers[0].get_loop()
    asyncio.run_coroutine_threadsafe(close_session(), loop).result(timeout=5)
    server.stop()
    from completions.usage import buffer

    buffer.flush()  # usage records of this test, while its database is still reachable


@pytest.fixture
def owner(transactional_db):
    """(workspace, raw key) of the caller."""
    return make_workspace("owner")


@pytest.fixture
def outsider(transactional_db):
    """(workspace, raw key) of a second workspace that must never see the owner's data."""
    return make_workspace("outsider")


@pytest.fixture
def http(engram_server, owner):
    """An httpx client for the owner's workspace."""
    with httpx.Client(
        base_url=engram_server.url,
        headers={"Authorization": f"Bearer {owner[1]}"},
        timeout=30,
    ) as client:
        yield client


@pytest.fixture
def operator_http(engram_server):
    with httpx.Client(
        base_url=engram_server.url,
        headers={"Authorization": f"Bearer {settings.ENGRAM_ADMIN_KEY}"},
        timeout=30,
    ) as client:
        yield client


@pytest.fixture
def anon_http(engram_server):
    with httpx.Client(base_url=engram_server.url, timeout=30) as client:
        yield client


@pytest.fixture
def sdk(engram_server, owner, upstream):
    """The official `openai` client on the owner's key (no retries: a test sees every status)."""
    import openai

    with openai.OpenAI(
        base_url=engram_server.url + "/v1", api_key=owner[1], max_retries=0, timeout=20
    ) as client:
        yield client


@pytest.fixture
def key_id(owner):
    """The id of the owner's API key."""
    from accounts.models import ApiKey

    return ApiKey.objects.get(workspace=owner[0]).id


@pytest.fixture
def limiter_awake():
    """The limiter's in-process state (a Redis outage's cool-down) reset around the test;
    modules that test limits use it on every test (`pytestmark`)."""
    from accounts.limits import limiter

    limiter.reset()
    yield
    limiter.reset()


@pytest.fixture
def tool_server(settings):
    """A loopback HTTP tool (tests.tools_support.ToolServer) that records every call."""
    from tests.tools_support import ToolServer

    settings.ENGRAM_TOOLS_ALLOW_PRIVATE_NETWORKS = True  # the tool server is on loopback
    server = ToolServer()
    server.server.start()
    yield server
    server.server.stop()


@pytest.fixture
def celery_worker(transactional_db):
    """A real Celery worker (threads, real Redis broker) consuming every Engram queue."""
    from celery.contrib.testing.worker import start_worker

    from config.celery import app

    queues = settings.ENGRAM_WORKER_QUEUES.split(",")
    app.control.purge()
    with start_worker(
        app,
        pool="threads",
        concurrency=2,
        perform_ping_check=False,
        queues=queues,
        shutdown_timeout=30,
        loglevel="WARNING",
    ) as worker:
        yield worker


@pytest.fixture(scope="session")
def _upstream_server():
    from tests.upstream import UpstreamServer

    server = UpstreamServer().start()
    yield server
    server.stop()


@pytest.fixture
def upstream(_upstream_server, settings):
    """The loopback upstream LLM, configured as Engram's OpenAI-compatible and Anthropic upstream."""
    _upstream_server.reset()
    settings.OPENAI_BASE_URL = _upstream_server.url + "/v1"
    settings.OPENAI_API_KEY = "sk-upstream-test"
    settings.ANTHROPIC_BASE_URL = _upstream_server.url
    settings.ANTHROPIC_API_KEY = "sk-ant-upstream-test"
    yield _upstream_server
    _upstream_server.reset()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Keep each phase's report on the test item, so fixtures can tell a failed test."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)
