"""The one door for tenancy: a bearer key becomes `request.workspace`.

The key lookup is cached in-process for ENGRAM_KEY_CACHE_SECONDS (1 s), so the hot path makes
no database round trip per request and a revocation takes effect within that second.
"""

from __future__ import annotations

import hmac
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

from asgiref.sync import sync_to_async
from django.conf import settings
from rest_framework.authentication import BaseAuthentication
from rest_framework.permissions import BasePermission

from accounts.models import Workspace

_TOUCH_EVERY = 60.0
_CACHE_MAX = 10_000


@dataclass(frozen=True)
class Principal:
    """Who is calling: a workspace key, or the operator (ENGRAM_ADMIN_KEY)."""

    workspace: Workspace | None
    key_id: str | None
    is_operator: bool = False


class _KeyCache:
    def __init__(self) -> None:
        self._entries: OrderedDict[str, tuple[float, Principal | None]] = OrderedDict()
        self._touched: dict[str, float] = {}
        self._lock = threading.Lock()

    def get(self, raw_key: str) -> tuple[bool, Principal | None]:
        with self._lock:
            entry = self._entries.get(raw_key)
            if entry is None or entry[0] < time.monotonic():
                return False, None
            return True, entry[1]

    def put(self, raw_key: str, principal: Principal | None) -> None:
        ttl = settings.ENGRAM_KEY_CACHE_SECONDS
        with self._lock:
            self._entries[raw_key] = (time.monotonic() + ttl, principal)
            self._entries.move_to_end(raw_key)
            while len(self._entries) > _CACHE_MAX:
                self._entries.popitem(last=False)

    def due_for_touch(self, key_id: str) -> bool:
        now = time.monotonic()
        with self._lock:
            if now - self._touched.get(key_id, -_TOUCH_EVERY) < _TOUCH_EVERY:
                return False
            self._touched[key_id] = now
            return True

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._touched.clear()


key_cache = _KeyCache()


def bearer_token(authorization: str) -> str | None:
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def _lookup(raw_key: str) -> Principal | None:
    from accounts.selectors import api_key_authenticate
    from accounts.services import api_key_touch

    identity = api_key_authenticate(raw_key=raw_key)
    if identity is None:
        return None
    if key_cache.due_for_touch(identity.key_id):
        api_key_touch(key_id=identity.key_id)
    return Principal(workspace=identity.workspace, key_id=identity.key_id)


def is_operator_key(raw_key: str) -> bool:
    admin_key = settings.ENGRAM_ADMIN_KEY
    return bool(admin_key) and hmac.compare_digest(raw_key.encode(), admin_key.encode())


def resolve_sync(raw_key: str) -> Principal | None:
    if is_operator_key(raw_key):
        return Principal(workspace=None, key_id=None, is_operator=True)
    hit, principal = key_cache.get(raw_key)
    if not hit:
        principal = _lookup(raw_key)
        key_cache.put(raw_key, principal)
    return principal


def refresh_sync(raw_key: str) -> Principal | None:
    """Look the key up now and re-cache it (a refresh ahead of the cache's expiry)."""
    principal = _lookup(raw_key)
    key_cache.put(raw_key, principal)
    return principal


async def resolve_async(raw_key: str) -> Principal | None:
    if is_operator_key(raw_key):
        return Principal(workspace=None, key_id=None, is_operator=True)
    hit, principal = key_cache.get(raw_key)
    if not hit:
        principal = await sync_to_async(_lookup)(raw_key)
        key_cache.put(raw_key, principal)
    return principal


class WorkspaceKeyAuthentication(BaseAuthentication):
    """DRF reads what ApiKeyMiddleware already resolved: there is no second door."""

    def authenticate(self, request):
        principal = getattr(request._request, "principal", None)
        if principal is None:
            return None
        return (None, principal)

    def authenticate_header(self, request):
        return "Bearer"


class IsWorkspace(BasePermission):
    message = "This endpoint needs a workspace API key."

    def has_permission(self, request, view) -> bool:
        return getattr(request._request, "workspace", None) is not None


class IsOperator(BasePermission):
    message = "The provisioning API needs the operator key (ENGRAM_ADMIN_KEY), not a workspace key."

    def has_permission(self, request, view) -> bool:
        principal = getattr(request._request, "principal", None)
        return principal is not None and principal.is_operator
