"""The one place that reads the environment (django-environ)."""

from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()


def service_urls() -> tuple[str, str]:
    """DATABASE_URL and REDIS_URL; the embedded servers stand in for whichever is unset."""
    import os

    from config import embedded

    if os.environ.get("ENGRAM_REQUIRE_SERVICES") == "1":
        from django.core.exceptions import ImproperlyConfigured

        missing = [name for name in ("DATABASE_URL", "REDIS_URL") if not os.environ.get(name)]
        if missing:
            raise ImproperlyConfigured(f"production needs {', '.join(missing)}")
    embedded.ensure_environment()
    return env("DATABASE_URL"), env("REDIS_URL")
