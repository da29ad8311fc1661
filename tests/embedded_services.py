"""`make test` on the embedded default: the servers start before pytest-django reads settings.

A plugin (`-p tests.embedded_services` in pyproject.toml) rather than conftest.py: pytest-django
loads the settings before any conftest, and settings start nothing themselves.
"""

import os
from urllib.parse import urlsplit, urlunsplit

import pytest


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config, parser, args) -> None:
    chosen = os.environ.get("DJANGO_SETTINGS_MODULE")
    from config.embedded import ensure_environment  # config/__init__ loads config.celery...

    if chosen is None:  # ...whose setdefault must not outrank pyproject's test settings
        os.environ.pop("DJANGO_SETTINGS_MODULE", None)
    redis_given = bool(os.environ.get("REDIS_URL"))
    ensure_environment()
    url = urlsplit(os.environ["REDIS_URL"])
    # A `make run` of this checkout may be up on the same embedded Redis (its database 0):
    # the tests take database 1, so its worker never takes their tasks nor answers their
    # pings, and its caches are not theirs (the database is apart already: test_engram_*).
    first = int(url.path.strip("/") or 0) if redis_given else 1
    # Under pytest-xdist each worker (gw0, gw1, ...) has a database of its own too, as
    # pytest-django gives it test_engram_gw<N>: its Celery worker takes only its own tasks
    # (kombu prefixes broadcasts with the database), and its caches and limits are its own.
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw"))
    os.environ["REDIS_URL"] = urlunsplit(url._replace(path=f"/{first + worker}"))
