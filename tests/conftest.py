import os

import httpx
import pytest
from django.conf import settings
from django.db import OperationalError, connection, connections, transaction
from django.test import TransactionTestCase
from psycopg.errors import DeadlockDetected

from tests.browser import chromium, page  # noqa: F401  (fixtures for the browser tests)
from tests.factories import make_workspace
from tests.livesrv import ThreadedServer

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# What the migrations make and no test changes: kept, so that no post_migrate signal has to make
# them again after every test (Django's flush re-created every permission and content type:
# 0.12 s of a transactional test's 0.32 s teardown here).
KEPT_TABLES = frozenset({"django_content_type", "auth_permission"})
DELETE_ATTEMPTS = 5


def _delete_every_row(self) -> None:
    """A transactional test ends with every table emptied by DELETE in one transaction, in
    place of Django's flush (a TRUNCATE of every table, then post_migrate).

    DELETE because the tables of a test hold a few rows: a TRUNCATE makes new files for each
    table and index (0.19 s a test here), and it takes each table's ACCESS EXCLUSIVE lock one by
    one, so a process of the test's own (tests/processes.py) inserting a usage record at that
    moment deadlocked with it (seen in CI). DELETE takes row locks only; Django's foreign keys
    are DEFERRABLE INITIALLY DEFERRED, so the order of the tables does not matter."""
    for alias in self._databases_names(include_mirrors=False):
        db = connections[alias]
        tables = db.introspection.django_table_names(only_existing=True, include_views=False)
        for attempt in range(1, DELETE_ATTEMPTS + 1):
            try:
                with transaction.atomic(using=alias), db.cursor() as cursor:
                    for table in sorted(set(tables) - KEPT_TABLES):
                        cursor.execute(f"DELETE FROM {db.ops.quote_name(table)}")
                break
            except OperationalError as exc:  # a deadlock with a test's own process: again
                if attempt == DELETE_ATTEMPTS or not isinstance(exc.__cause__, DeadlockDetected):
                    raise


TransactionTestCase._fixture_teardown = _delete_every_row  # type: ignore[method-assign]


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
def spooled(monkeypatch) -> list[int]:
    """The sizes of what Django's ASGI handler writes to the temporary file it spools a
    request's body to, in this test's live server."""
    import tempfile

    from django.core.handlers import asgi

    written: list[int] = []

    class Counted(tempfile.SpooledTemporaryFile):
        def write(self, data):
            written.append(len(data))
            return super().write(data)

    monkeypatch.setattr(asgi.tempfile, "SpooledTemporaryFile", Counted)
    return written


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
def outsider_http(engram_server, outsider):
    """An httpx client for the outsider's workspace."""
    with httpx.Client(
        base_url=engram_server.url, headers={"Authorization": f"Bearer {outsider[1]}"}, timeout=30
    ) as client:
        yield client


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
def listed(transactional_db):
    """gpt-4o-mini at its default price (the migration's row, which a test before may have
    flushed): a budget refuses a model without a price (completions.charging._unpriced)."""
    from decimal import Decimal

    from completions import pricing
    from completions.models import Price

    Price.objects.update_or_create(
        model="gpt-4o-mini",
        defaults={"input_per_million": Decimal("0.15"), "output_per_million": Decimal("0.6")},
    )
    pricing.prices_changed()


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


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items):
    """`make test` spreads the tests over pytest-xdist's workers one by one (`--dist loadgroup`),
    except the tests of a module that share a module-scoped fixture (a browser, a set of web
    processes): those go to one worker, which sets it up once. (Before xdist's own hook, which
    reads the group.)"""
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        defs = info.name2fixturedefs.values() if info else ()
        if any(d.scope == "module" for chain in defs for d in chain):
            item.add_marker(pytest.mark.xdist_group(item.module.__name__))
