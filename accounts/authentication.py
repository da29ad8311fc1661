"""The one door for tenancy: a bearer key becomes a `Principal` (then `request.workspace`).

Every door resolves keys here: the ASGI gateway (`resolve_async`), ApiKeyMiddleware (both
modes), and DRF through the middleware's result. A key's lookup is cached in-process for
ENGRAM_KEY_CACHE_SECONDS (1 s) in the one TTLCache: a request waits on the database only when
its key is not cached at all, and then shares the one lookup in flight; a busy key is reloaded
in the background once it is half that old, so it never waits at expiry (before, every second
each busy key's entry expired and the requests of that moment each made their own lookup: a
~20 ms stall at p99 in bench/bench_gateway.py).

Revocation is immediate on every process: `keys_changed` (api_key_revoke, key and workspace
deletion) voids this process's cache at once and publishes the change on commit; each lookup
first asks config.common.coherence whether anything changed (one shared Redis read, no
database), which clears the cache of any process that has not seen the change yet. When Redis
cannot say, the key is looked up in the database instead of trusting the cache.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import close_old_connections, transaction
from rest_framework.authentication import BaseAuthentication
from rest_framework.permissions import BasePermission

from accounts.limits.policy import NO_POLICY, Policy
from accounts.models import Workspace
from config.common import coherence
from config.common.cache import TTLCache

# last_used_at is written at most once a minute per key per process: a write per request
# would put a row lock and a WAL record on the hot path for a figure nobody needs to the second.
TOUCH_EVERY_SECONDS = 60.0
_MAX_KEYS = 10_000


@dataclass(frozen=True)
class Principal:
    """Who is calling: a workspace key, or the operator (ENGRAM_ADMIN_KEY)."""

    workspace: Workspace | None
    key_id: str | None
    is_operator: bool = False
    # Its limits and budgets, loaded with the key: the request path reads them from here.
    limits: Policy = NO_POLICY


def _key_ttl() -> float:
    return settings.ENGRAM_KEY_CACHE_SECONDS


# raw key -> its Principal, or None for a key that is not valid (cached too: a client retrying
# a bad key does not reach the database every time). Never holds the operator key.
key_cache: TTLCache[str, Principal | None] = TTLCache(
    ttl=_key_ttl, refresh_after=lambda: _key_ttl() / 2, max_entries=_MAX_KEYS
)
# key id -> True while its last_used_at is fresh enough.
_touched: TTLCache[str, bool] = TTLCache(ttl=TOUCH_EVERY_SECONDS, max_entries=_MAX_KEYS)

OPERATOR = Principal(workspace=None, key_id=None, is_operator=True)


def bearer_token(authorization: str) -> str | None:
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def is_operator_key(raw_key: str) -> bool:
    admin_key = settings.ENGRAM_ADMIN_KEY
    return bool(admin_key) and hmac.compare_digest(raw_key.encode(), admin_key.encode())


def _lookup(raw_key: str) -> Principal | None:
    from accounts.limits.selectors import limit_policy
    from accounts.selectors import api_key_authenticate
    from accounts.services import api_key_touch

    identity = api_key_authenticate(raw_key=raw_key)
    if identity is None:
        return None
    if not _touched.peek(identity.key_id)[0]:
        _touched.put(identity.key_id, True)
        api_key_touch(key_id=identity.key_id)
    limits = limit_policy(workspace=identity.workspace, key_id=identity.key_id)
    return Principal(workspace=identity.workspace, key_id=identity.key_id, limits=limits)


def _lookup_on_worker(raw_key: str) -> Principal | None:
    """On a pool thread (not asgiref's one shared thread: a slow lookup must not queue every
    other sync hop behind it), with a healthy connection before and after."""
    close_old_connections()
    try:
        return _lookup(raw_key)
    finally:
        close_old_connections()


_lookup_async = sync_to_async(_lookup_on_worker, thread_sensitive=False)


def resolve_sync(raw_key: str) -> Principal | None:
    """The caller behind `raw_key`, or None for a key that is not valid."""
    if is_operator_key(raw_key):
        return OPERATOR
    if not coherence.check_sync():
        return _lookup(raw_key)  # Redis cannot say whether the cache is current: the database
    return key_cache.get(raw_key, lambda: _lookup(raw_key))


async def resolve_async(raw_key: str) -> Principal | None:
    """As `resolve_sync`, for async doors: the database work on a pool thread."""
    if is_operator_key(raw_key):
        return OPERATOR
    if not await coherence.check_async():
        return await _lookup_async(raw_key)  # Redis cannot say whether the cache is current
    return await key_cache.aget(raw_key, lambda: _lookup_async(raw_key))


def keys_changed() -> None:
    """A key was revoked (or deleted): forget every cached lookup now, and again at commit so
    a lookup that read the row in between is not kept; at commit every other process is told
    too. Revocations are rare; the cost is one lookup per active key in each process."""
    key_cache.clear()
    transaction.on_commit(key_cache.clear)
    coherence.publish("keys")


coherence.register("keys", key_cache.clear)


def clear_caches() -> None:
    """Tests: start from nothing cached."""
    key_cache.clear()
    _touched.clear()
    coherence.reset()


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
