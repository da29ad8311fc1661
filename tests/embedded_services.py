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
    ensure_environment()
