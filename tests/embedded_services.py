"""`make test` on the embedded default: the servers start before pytest-django reads settings.

A plugin (`-p tests.embedded_services` in pyproject.toml) rather than conftest.py: pytest-django
loads the settings before any conftest, and settings start nothing themselves.
"""

import os

import pytest


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config, parser, args) -> None:
    chosen = os.environ.get("DJANGO_SETTINGS_MODULE")
    from config.embedded import ensure_environment  # config/__init__ loads config.celery...

    if chosen is None:  # ...whose setdefault must not outrank pyproject's test settings
        os.environ.pop("DJANGO_SETTINGS_MODULE", None)
    redis_given = bool(os.environ.get("REDIS_URL"))
    ensure_environment()
    if not redis_given:
        # A `make run` of this checkout may be up on the same embedded Redis (its database 0):
        # the tests take database 1, so its worker never takes their tasks nor answers their
        # pings, and its caches are not theirs (the database is apart already: test_engram_*).
        os.environ["REDIS_URL"] = os.environ["REDIS_URL"].rsplit("/", 1)[0] + "/1"
