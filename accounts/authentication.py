"""The one door for tenancy: a bearer key becomes a `Principal` (then `request.workspace`).

Every door resolves keys here: the ASGI gateway (`resolve_async`), ApiKeyMiddleware (both
modes), and DRF through the middleware's result. A key's lookup is cached in-process for
ENGRAM_KEY_CACHE_SECONDS (60 s) in the one TTLCache: a request waits on the database only when
its key is not cached at all, and then shares the one lookup in flight; a busy key is reloaded
in the background once it is half that old, so it never waits at expiry (before, every second
each busy key's entry expired and the requests of that moment each made their own lookup: a
~20 ms stall at p99 in bench/bench_gateway.py).

Revocation is immediate on every process: `keys_changed` (api_key_revoke, key and workspace
deletion) voids this process's cache at once and publishes the change on commit; each lookup
first asks config.common.coherence whether anything changed (one shared Redis read, no
database), which clears the cache of any process that has not seen the change yet. When Redis
cannot say, the key is looked up in the database instead of trusting the cache.

A JWT bearer is an end user's token (accounts.endusers): verified there, it becomes a Principal
with `end_user` set; a token that fails a check raises the 401 that names the check.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from django.db import transaction
from rest_framework.authentication import BaseAuthentication
from rest_framework.permissions import BasePermission

from accounts.endusers import tokens as enduser_tokens
from accounts.endusers.scope import own_user
from accounts.keys import looks_like_key
from accounts.limits.policy import NO_POLICY, Policy
from accounts.models import Workspace
from config.common import coherence
from config.common.cache import TTLCache
from config.common.errors import ApiError, workspace_key_required
from config.common.ids import as_user_id
from config.common.orm import on_pool_thread
from config.common.setting import setting

# last_used_at is written at most once a minute per key per process: a write per request
# would put a row lock and a WAL record on the hot path for a figure nobody needs to the second.
TOUCH_EVERY_SECONDS = 60.0
_MAX_KEYS = 10_000


@dataclass(frozen=True)
class Principal:
    """Who is calling: a workspace key, the operator (ENGRAM_ADMIN_KEY), or an end user's
    token (`end_user`: the user id its issuer's claim names; it reaches only that user)."""

    workspace: Workspace | None
    key_id: str | None
    is_operator: bool = False
    end_user: str | None = None
    issuer_id: str | None = None
    # Its limits and budgets, loaded with the key: the request path reads them from here.
    limits: Policy = NO_POLICY


def _end_user(found: enduser_tokens.EndUser, limits: Policy) -> Principal:
    return Principal(
        workspace=found.workspace,
        key_id=None,
        end_user=found.user_id,
        issuer_id=found.issuer_id,
        limits=limits,
    )


def _end_user_policy(workspace: Workspace) -> Policy:
    """The limits of an end user's token: the workspace's, and its default for each end user
    (a token has no key), loaded once per workspace and forgotten with the keys."""
    from accounts.limits.selectors import limit_policy

    return limit_policy(workspace=workspace, key_id=None)


_end_user_policy_async = on_pool_thread(_end_user_policy)


def _key_ttl() -> float:
    return setting("ENGRAM_KEY_CACHE_SECONDS")


# raw key -> its Principal, or None for a key that is not valid (cached too: a client retrying
# a bad key does not reach the database every time). Never holds the operator key, nor a bearer
# that cannot be a key (accounts.keys.looks_like_key: up to 128 characters): anyone, with no
# key, filled it with made-up bearers of a megabyte each (300 requests, 330 MB more in the web
# process; 10,000 would hold 10 GB) and pushed every real key out of it.
key_cache: TTLCache[str, Principal | None] = TTLCache(
    ttl=_key_ttl, refresh_after=lambda: _key_ttl() / 2, max_entries=_MAX_KEYS
)
# workspace id -> the limits of its end users' tokens (kept and forgotten with the keys').
end_user_policies: TTLCache[str, Policy] = TTLCache(
    ttl=_key_ttl, refresh_after=lambda: _key_ttl() / 2, max_entries=_MAX_KEYS
)
# key id -> True while its last_used_at is fresh enough.
_touched: TTLCache[str, bool] = TTLCache(ttl=TOUCH_EVERY_SECONDS, max_entries=_MAX_KEYS)

OPERATOR = Principal(workspace=None, key_id=None, is_operator=True)


WORKSPACE_HEADER = "x-workspace-id"


def check_claimed_workspace(*, workspace: Workspace | None, claimed: str | None) -> None:
    """x-workspace-id, when sent with a workspace's key or token, must name that workspace: on
    every route, so a client that believes it reaches another workspace is told so instead of
    being answered with this one's data (the operator's key has no workspace to compare)."""
    if claimed and workspace is not None and claimed != workspace.id:
        raise ApiError(
            403,
            f"{WORKSPACE_HEADER} does not match the workspace of this API key.",
            type="permission_error",
            param=WORKSPACE_HEADER,
            code="workspace_mismatch",
        )


def bearer_token(authorization: str) -> str | None:
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def is_operator_key(raw_key: str) -> bool:
    admin_key = setting("ENGRAM_ADMIN_KEY")
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


_lookup_async = on_pool_thread(_lookup)


def resolve_sync(raw_key: str, workspace_hint: str | None = None) -> Principal | None:
    """The caller behind `raw_key`, or None for a key that is not valid (ApiError for a JWT
    that fails a check). `workspace_hint`: x-workspace-id, for an issuer several trust."""
    if is_operator_key(raw_key):
        return OPERATOR
    fresh = coherence.check_sync()
    if enduser_tokens.looks_like_jwt(raw_key):
        found = enduser_tokens.resolve_sync(raw_key, workspace_hint=workspace_hint, fresh=fresh)
        workspace = found.workspace
        if not fresh:
            return _end_user(found, _end_user_policy(workspace))
        return _end_user(
            found, end_user_policies.get(workspace.id, lambda: _end_user_policy(workspace))
        )
    if not looks_like_key(raw_key):
        return None  # never cached (key_cache says why)
    if not fresh:
        return _lookup(raw_key)  # Redis cannot say whether the cache is current: the database
    return key_cache.get(raw_key, lambda: _lookup(raw_key))


async def resolve_async(raw_key: str, workspace_hint: str | None = None) -> Principal | None:
    """As `resolve_sync`, for async doors: the database work on a pool thread."""
    if is_operator_key(raw_key):
        return OPERATOR
    fresh = await coherence.check_async()
    if enduser_tokens.looks_like_jwt(raw_key):
        found = await enduser_tokens.resolve_async(
            raw_key, workspace_hint=workspace_hint, fresh=fresh
        )
        workspace = found.workspace
        if not fresh:
            return _end_user(found, await _end_user_policy_async(workspace))
        policy = await end_user_policies.aget(
            workspace.id, lambda: _end_user_policy_async(workspace)
        )
        return _end_user(found, policy)
    if not looks_like_key(raw_key):
        return None  # never cached (key_cache says why)
    if not fresh:
        return await _lookup_async(raw_key)  # Redis cannot say whether the cache is current
    return await key_cache.aget(raw_key, lambda: _lookup_async(raw_key))


def keys_changed() -> None:
    """A key was revoked (or deleted): forget every cached lookup now, and again at commit so
    a lookup that read the row in between is not kept; at commit every other process is told
    too. Revocations are rare; the cost is one lookup per active key in each process."""
    _forget_keys()
    transaction.on_commit(_forget_keys)
    coherence.publish("keys")


def _forget_keys() -> None:
    key_cache.clear()
    end_user_policies.clear()


coherence.register("keys", _forget_keys)


def clear_caches() -> None:
    """Tests: start from nothing cached."""
    _forget_keys()
    _touched.clear()
    enduser_tokens.clear()
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
    """The default: a workspace key (an end user's token reaches only the views that say
    EndUserAllowed). Another kind of key is config.common.errors.workspace_key_required, as
    on the chat doors; no key, DRF's 401."""

    def has_permission(self, request, view) -> bool:
        principal = getattr(request._request, "principal", None)
        if principal is None:
            return False
        if principal.workspace is None or principal.end_user:
            raise workspace_key_required()
        return True


class EndUserAllowed(BasePermission):
    """A workspace key, or an end user's token: the view keeps the latter to its own user
    (accounts.endusers.scope). The operator key is refused as IsWorkspace and the chat doors
    refuse it (config.common.errors.workspace_key_required)."""

    def has_permission(self, request, view) -> bool:
        if getattr(request._request, "workspace", None) is not None:
            named = request._request.headers.get("x-user-id")
            if named:
                # The chat doors' rule (completions.request): a token's x-user-id may repeat
                # its user, not name another. The REST views read no x-user-id, so one naming
                # bob listed alice's memories under a header that said bob.
                own_user(request._request, as_user_id(named), field="x-user-id")
            return True
        if getattr(request._request, "principal", None) is not None:
            raise workspace_key_required()
        return False


class IsOperator(BasePermission):
    message = "The provisioning API needs the operator key (ENGRAM_ADMIN_KEY), not a workspace key."

    def has_permission(self, request, view) -> bool:
        principal = getattr(request._request, "principal", None)
        if principal is not None and principal.end_user:
            # an end-user token was told it was a workspace key (DRF makes one instance of a
            # permission per request, so the message is this request's)
            self.message = (
                "The provisioning API needs the operator key (ENGRAM_ADMIN_KEY), "
                "not an end-user token."
            )
        return principal is not None and principal.is_operator
