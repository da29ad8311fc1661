"""The gateway's settings, read once for the hot path (Django's settings object costs a Python
call per attribute) and read again whenever a setting changes (tests override them)."""

from __future__ import annotations

from dataclasses import dataclass

import aiohttp
from django.conf import settings
from django.core.signals import setting_changed

from completions.providers.base import Upstream


@dataclass(frozen=True)
class Conf:
    fast_path: bool
    max_body: int | None
    keepalive: float
    key_ttl: float
    timeout: aiohttp.ClientTimeout
    upstreams: dict[str, Upstream | None]  # the deployment-wide upstream per provider


def _env_upstream(provider: str) -> Upstream | None:
    from completions.providers.anthropic import DEFAULT_BASE_URL as ANTHROPIC_URL
    from completions.providers.openai_compatible import DEFAULT_BASE_URL as OPENAI_URL

    if provider == "openai":
        base, key, default = settings.OPENAI_BASE_URL, settings.OPENAI_API_KEY, OPENAI_URL
        dialect = settings.OPENAI_DIALECT
    else:
        base, key, default = settings.ANTHROPIC_BASE_URL, settings.ANTHROPIC_API_KEY, ANTHROPIC_URL
        dialect = "auto"
    if not (base or key):
        return None
    return Upstream(provider=provider, base_url=base or default, api_key=key, dialect=dialect)


def _load() -> Conf:
    return Conf(
        fast_path=settings.ENGRAM_GATEWAY_FAST_PATH,
        max_body=settings.DATA_UPLOAD_MAX_MEMORY_SIZE,
        keepalive=settings.ENGRAM_KEEPALIVE_SECONDS,
        key_ttl=settings.ENGRAM_KEY_CACHE_SECONDS,
        timeout=aiohttp.ClientTimeout(
            total=None,
            sock_connect=settings.ENGRAM_UPSTREAM_CONNECT_TIMEOUT,
            sock_read=settings.ENGRAM_UPSTREAM_TIMEOUT,
        ),
        upstreams={p: _env_upstream(p) for p in ("openai", "anthropic")},
    )


_current: Conf | None = None


def conf() -> Conf:
    global _current
    if _current is None:
        _current = _load()
    return _current


def _reset(**kwargs) -> None:
    global _current
    _current = None


setting_changed.connect(_reset, dispatch_uid="engram-gateway-conf")
