"""A JWT bearer -> the workspace and end user it names, verified with PyJWT.

`verify` checks the signature (the issuer's JWKS or HS256 secret, only the issuer's algorithms:
never `none`, never an HMAC token against a key-set issuer), `iss`, `aud` (always required),
`exp` (required), `nbf` and `iat` (not in the future) with the issuer's leeway, an optional
scope, and takes the user id from the issuer's claim. Any failure is a 401 that never names the
token: before a trusted key has verified the signature, always the one UNTRUSTED message (it
would otherwise say which issuers the workspaces trust); after, the check that failed.

Verified tokens are cached by their SHA-256 until their `exp` (at most
ENGRAM_TOKEN_CACHE_SECONDS), so a token costs one verification, then a dict lookup, and while
the key that verified it is in its issuer's JWKS as this process holds it (jwks.holds): a key the
provider retired, once a refetch has seen it gone, or a set past its lifetime, verifies the
token again (a cached token went on working for those 5 minutes). Issuers are cached per `iss`
and forgotten on every process when one changes (config.common.coherence).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Awaitable
from dataclasses import dataclass

import jwt
from django.conf import settings

from accounts.endusers import jwks
from accounts.endusers.models import ISSUER_MAX_LENGTH
from accounts.models import Workspace
from config.common import coherence
from config.common.cache import TTLCache
from config.common.crypto import SecretUnreadable
from config.common.errors import ApiError
from config.common.ids import as_user_id, is_id
from config.common.jsonbody import text_problem
from config.common.orm import on_pool_thread

logger = logging.getLogger("engram.endusers")

_MAX_TOKENS = 50_000
_MAX_ISSUERS = 1_000
# The longest token read. Providers' access tokens are a few KB (Azure's with many groups stay
# under 8 KB; proxies cap a header line at 8 to 16 KB): a bigger one is refused before it is
# hashed, decoded or verified. Anyone could send one, unsigned, and each megabyte cost the web
# process ~0.2 s of CPU to parse (a 12 MB signed token was verified, and served, in 13 s).
MAX_TOKEN_CHARS = 16 * 1024


@dataclass(frozen=True)
class IssuerConfig:
    """An Issuer row as verification needs it (the secret decrypted once, when loaded)."""

    id: str
    workspace: Workspace
    issuer: str
    audiences: tuple[str, ...]
    algorithms: tuple[str, ...]
    jwks_url: str
    secret: str
    user_claim: str
    required_scope: str
    leeway_seconds: int


@dataclass(frozen=True)
class EndUser:
    workspace: Workspace
    user_id: str
    issuer_id: str
    valid_until: float  # epoch seconds: exp plus the issuer's leeway
    # The JWKS and key that verified it (jwks.holds); empty for an HS256 secret, whose change
    # forgets every cached token (issuers_changed).
    key_url: str = ""
    key_fingerprint: str = ""


def rejected(reason: str, *, kind: type[ApiError] = ApiError) -> ApiError:
    return kind(
        401,
        f"Invalid end-user token: {reason}.",
        type="invalid_request_error",
        code="invalid_api_key",
    )


class _NotItsKey(ApiError):
    """A refusal before the signature was found good: the token may be another issuer's."""


# Every refusal before a signature is found good reads the same: that no workspace trusts the
# token's `iss`, that the workspace in x-workspace-id does not, that the issuer allows other
# algorithms, holds no such kid, or that the signature is bad. Anyone can send an unsigned token
# naming any `iss` and workspace: told which, they learned which issuers Engram's workspaces
# trust, and which workspace trusts which, with no key of theirs. The reason is logged.
UNTRUSTED = "no issuer trusted here has the key that signed it (its iss, alg, kid and signature)"


def untrusted(reason: str, *, issuer_id: str = "") -> ApiError:
    logger.info(
        "end-user token refused: %s%r", f"issuer {issuer_id}: " if issuer_id else "", reason
    )
    return rejected(UNTRUSTED, kind=_NotItsKey)


def _check_size(token: str) -> None:
    """Refusals before a token is read: too long, or encrypted."""
    if len(token) > MAX_TOKEN_CHARS:
        raise rejected(f"it is longer than {MAX_TOKEN_CHARS} characters")
    if token.count(".") == 4:
        # Auth0 gives one to a login that names no `audience`: it was told "Pass it as
        # 'Authorization: Bearer sk-...'", as if an end-user token were not accepted at all
        raise rejected(
            "it is encrypted (a JWE, five parts); Engram verifies signed JWTs (JWS, three "
            "parts): an Auth0 token requested without your API's audience is one"
        )


def looks_like_jwt(token: str) -> bool:
    """A compact JWS (base64url header starting `{"`), or a JWE (five parts: refused by
    `_check_size` with its own reason); API keys start `sk-`."""
    return token.startswith("eyJ") and token.count(".") in (2, 4)


# --- issuers ------------------------------------------------------------------------------------


def _issuer_ttl() -> float:
    return settings.ENGRAM_ISSUER_CACHE_SECONDS


issuer_cache: TTLCache[str, tuple[IssuerConfig, ...]] = TTLCache(
    ttl=_issuer_ttl, max_entries=_MAX_ISSUERS
)


def _load_issuers(iss: str) -> tuple[IssuerConfig, ...]:
    from accounts.endusers.selectors import issuers_for

    found = []
    for row in issuers_for(iss=iss):
        try:
            secret = row.get_secret()
        except SecretUnreadable:
            # ENGRAM_ENCRYPTION_KEY lost the key it was encrypted with: this issuer verifies
            # nothing (its tokens are 401) until its secret is given again, and the other
            # workspaces trusting this `iss` are not stopped by it (as routing's credentials)
            logger.error("token issuer %s: its HS256 secret cannot be decrypted; ignored", row.id)
            continue
        found.append(
            IssuerConfig(
                id=row.id,
                workspace=row.workspace,
                issuer=row.issuer,
                audiences=tuple(row.audiences),
                algorithms=tuple(row.algorithms),
                jwks_url=row.jwks_url,
                secret=secret,
                user_claim=row.user_claim,
                required_scope=row.required_scope,
                leeway_seconds=row.leeway_seconds,
            )
        )
    return tuple(found)


def _could_be_issuer(iss: str) -> bool:
    """An `iss` an Issuer row could hold. The rest is refused before the lookup: PostgreSQL
    cannot compare a NUL or a lone surrogate (an unsigned token's made-up `iss` was a 500),
    and each `iss` looked up is cached, so an over-long one held that memory."""
    return len(iss) <= ISSUER_MAX_LENGTH and text_problem(iss) is None


def _issuers(iss: str, workspace_hint: str | None, fresh: bool) -> tuple[IssuerConfig, ...]:
    """The issuers that may have made a token of `iss` (at least one)."""
    found = issuer_cache.get(iss, lambda: _load_issuers(iss)) if fresh else _load_issuers(iss)
    if workspace_hint:
        found = tuple(c for c in found if c.workspace.id == workspace_hint)
        if not found:
            raise untrusted("the workspace in x-workspace-id does not trust this token's issuer")
    if not found:
        raise untrusted("no workspace trusts this token's issuer (iss)")
    return found


# --- verification -------------------------------------------------------------------------------

_FAILURES: tuple[tuple[type[jwt.PyJWTError], str], ...] = (
    (jwt.ExpiredSignatureError, "it has expired (exp)"),
    (jwt.ImmatureSignatureError, "it is not valid yet (nbf or iat in the future)"),
    (jwt.InvalidAudienceError, "wrong audience (aud)"),
    (jwt.InvalidIssuerError, "wrong issuer (iss)"),
    (jwt.InvalidIssuedAtError, "its iat is not a time"),
    (jwt.InvalidSignatureError, "bad signature"),
    (jwt.InvalidAlgorithmError, "its algorithm is not allowed for this issuer"),
    (jwt.DecodeError, "malformed token"),
)


def _reason(exc: jwt.PyJWTError) -> str:
    return next((r for kind, r in _FAILURES if isinstance(exc, kind)), "it was refused")


def _unreadable_time(token: str) -> str:
    claims = jwt.decode(token, options={"verify_signature": False})
    for name in ("exp", "nbf"):
        try:
            int(claims[name])
        except KeyError:
            continue
        except (ValueError, TypeError, OverflowError):
            return f"its {name} is not a time (seconds since the epoch)"
    return "malformed token"


def _scopes(claims: dict) -> set[str]:
    found: set[str] = set()
    for name in ("scope", "scp"):  # OAuth2's space-separated string; Azure/Okta's list
        value = claims.get(name)
        if isinstance(value, str):
            found.update(value.split())
        elif isinstance(value, list):
            found.update(v for v in value if isinstance(v, str))
    return found


def verify(token: str, *, workspace_hint: str | None, fresh: bool = True) -> EndUser:
    """The end user a JWT names; ApiError (401, or 403 for a missing scope) otherwise.

    Several workspaces may trust one `iss`: the token is theirs whose keys and audiences it
    is valid for. Any workspace key can register any `iss`, so the mere presence of another
    workspace's issuer must not refuse a token it could not have made (it refused them all
    without x-workspace-id: one tenant could stop another's end users)."""
    _check_size(token)
    try:
        header = jwt.get_unverified_header(token)
        unverified = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        raise rejected("malformed token") from None
    iss = unverified.get("iss")
    if not isinstance(iss, str) or not iss:
        raise rejected("it has no issuer (iss)")
    if not _could_be_issuer(iss):
        raise untrusted("no workspace trusts this token's issuer (iss)")
    candidates = _issuers(iss, workspace_hint, fresh)
    if len(candidates) == 1:
        return _verify_for(candidates[0], token, header)
    verified: list[EndUser] = []
    refusals: list[ApiError] = []
    for config in candidates:
        try:
            verified.append(_verify_for(config, token, header))
        except ApiError as exc:
            refusals.append(exc)
    if len(verified) == 1:
        return verified[0]
    if verified:
        raise rejected("several workspaces trust this token's issuer: send x-workspace-id")
    # the refusal of the issuer whose key signed it says most (expired, wrong audience, ...)
    raise next((r for r in refusals if not isinstance(r, _NotItsKey)), refusals[0])


def _verify_for(config: IssuerConfig, token: str, header: dict) -> EndUser:
    """The end user a JWT names for one issuer's keys, audiences and claims."""
    algorithm = header.get("alg")
    if not isinstance(algorithm, str) or algorithm not in config.algorithms:
        raise untrusted(
            f"its algorithm ({str(algorithm)[:16]}) is not allowed", issuer_id=config.id
        )
    key, fingerprint = _key_for(config, header, algorithm)
    try:
        try:
            claims = _decode(config, token, key, algorithm)
        except jwt.InvalidSignatureError:
            if not (config.jwks_url and jwks.refetched_after_bad_signature(config.jwks_url)):
                raise
            key, fingerprint = _key_for(config, header, algorithm)  # a new key, same kid
            claims = _decode(config, token, key, algorithm)
    except jwt.MissingRequiredClaimError as exc:
        raise rejected(f"it has no {exc.claim} claim") from None
    except (jwt.InvalidSignatureError, jwt.InvalidAlgorithmError, jwt.InvalidKeyError) as exc:
        raise untrusted(_reason(exc), issuer_id=config.id) from None
    except jwt.DecodeError:  # after InvalidSignatureError, one of its kind
        # The token was read whole before (verify) and its signature is good: PyJWT's last
        # DecodeError is a time claim it cannot read as a number ("exp": "tomorrow"), which
        # read "malformed token", as if the app had sent something that was not a JWT.
        raise rejected(_unreadable_time(token)) from None
    except jwt.PyJWTError as exc:
        raise rejected(_reason(exc)) from None
    return _end_user(config, claims, fingerprint)


def _key_for(config: IssuerConfig, header: dict, algorithm: str) -> tuple[object, str]:
    """The key to verify with, and its fingerprint (empty for a secret)."""
    if config.secret:
        return config.secret, ""
    kid = header.get("kid")
    try:
        return jwks.signing_key(
            config.jwks_url, kid=kid if isinstance(kid, str) else None, algorithm=algorithm
        )
    except jwks.NoSuchKey as exc:
        raise untrusted(str(exc), issuer_id=config.id) from None
    except jwks.JwksError as exc:  # the provider's fault, not the token's: said
        raise rejected(str(exc), kind=_NotItsKey) from None


def _decode(config: IssuerConfig, token: str, key: object, algorithm: str) -> dict:
    return jwt.decode(
        token,
        key,  # type: ignore[arg-type]
        algorithms=[algorithm],
        audience=list(config.audiences),
        issuer=config.issuer,
        leeway=config.leeway_seconds,
        # `sub` and `jti` may be numbers (Laravel's jwt-auth, many in-house issuers): the
        # user's claim is checked below, by Engram's id rule; PyJWT refused the whole token
        options={"require": ["exp", "iss", "aud"], "verify_sub": False, "verify_jti": False},
    )


def _end_user(config: IssuerConfig, claims: dict, fingerprint: str) -> EndUser:
    """The end user a verified token's claims name, once its user claim and scope pass."""
    user_id = claims.get(config.user_claim)
    if isinstance(user_id, int) and not isinstance(user_id, bool):
        user_id = str(user_id)
    if isinstance(user_id, str):
        user_id = as_user_id(user_id)  # Auth0's `provider|id`
    if not isinstance(user_id, str) or not is_id(user_id):
        raise rejected(f"its {config.user_claim} claim is not a user id")
    # Space-separated, as OAuth writes scopes: each is required ("a b" was one scope no token
    # could carry, and a pasted trailing space refused every token too).
    held = _scopes(claims)
    missing = [scope for scope in config.required_scope.split() if scope not in held]
    if missing:
        raise ApiError(
            403,
            f"The token lacks the scope this issuer requires ({' '.join(missing)}).",
            code="insufficient_scope",
        )
    return EndUser(
        workspace=config.workspace,
        user_id=user_id,
        issuer_id=config.id,
        valid_until=float(claims["exp"]) + config.leeway_seconds,
        key_url=config.jwks_url if fingerprint else "",
        key_fingerprint=fingerprint,
    )


_verify_async = on_pool_thread(verify)


# --- the verified-token cache -------------------------------------------------------------------


def _token_ttl() -> float:
    return settings.ENGRAM_TOKEN_CACHE_SECONDS


# (sha256 of the token, x-workspace-id) -> who it names. The token itself is never kept.
token_cache: TTLCache[tuple[str, str], EndUser] = TTLCache(ttl=_token_ttl, max_entries=_MAX_TOKENS)


def _cache_key(token: str, workspace_hint: str | None) -> tuple[str, str]:
    return hashlib.sha256(token.encode()).hexdigest(), workspace_hint or ""


def _current(found: EndUser) -> EndUser:
    if time.time() > found.valid_until:  # cached, but its exp has passed since
        raise rejected("it has expired (exp)")
    return found


def _key_held(found: EndUser) -> bool:
    """Whether the key that verified a cached token still verifies (see the module's doc)."""
    return not found.key_url or jwks.holds(found.key_url, found.key_fingerprint)


def resolve_sync(token: str, *, workspace_hint: str | None, fresh: bool) -> EndUser:
    _check_size(token)  # before it is hashed for the cache
    if not fresh:  # Redis cannot say whether the caches are current: verify against the rows
        return verify(token, workspace_hint=workspace_hint, fresh=False)
    key = _cache_key(token, workspace_hint)

    def load() -> EndUser:
        return verify(token, workspace_hint=workspace_hint)

    found = token_cache.get(key, load)
    if not _key_held(found):
        token_cache.invalidate(key)
        found = token_cache.get(key, load)
    return _current(found)


async def resolve_async(token: str, *, workspace_hint: str | None, fresh: bool) -> EndUser:
    _check_size(token)  # before it is hashed for the cache
    if not fresh:
        return await _verify_async(token, workspace_hint=workspace_hint, fresh=False)
    key = _cache_key(token, workspace_hint)

    def load() -> Awaitable[EndUser]:
        return _verify_async(token, workspace_hint=workspace_hint, fresh=True)

    found = await token_cache.aget(key, load)
    if not _key_held(found):
        token_cache.invalidate(key)
        found = await token_cache.aget(key, load)
    return _current(found)


def issuers_changed() -> None:
    """An issuer was added, edited or deleted: forget issuers and verified tokens here now, at
    commit, and on every other process (as accounts.authentication.keys_changed)."""
    clear()
    from django.db import transaction

    transaction.on_commit(clear)
    coherence.publish("issuers")


def clear() -> None:
    issuer_cache.clear()
    token_cache.clear()


coherence.register("issuers", clear)
coherence.register("keys", clear)  # a deleted workspace's issuers and tokens stop too
