"""Settings read on the request path. `django.conf.settings.NAME` is a Python call a read
(LazyObject.__getattribute__, and its `getattr(value, "_mask_wrapped", True)` raises and clears
an AttributeError for a plain value): ~3,300-4,000 instructions (callgrind), seven reads a
completion request. `setting(NAME)` reads it once, and again after any setting changes (tests
override them; completions.conf does the same for the gateway's own settings)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.signals import setting_changed

_read: dict[str, Any] = {}


def setting(name: str) -> Any:
    try:
        return _read[name]
    except KeyError:
        value = _read[name] = getattr(settings, name)
        return value


def _forget(**kwargs) -> None:
    _read.clear()


setting_changed.connect(_forget, dispatch_uid="engram-setting-reads")
