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
