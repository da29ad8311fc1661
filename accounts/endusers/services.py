"""Issuers: created, edited and deleted here (the API and the admin), so every process forgets
what it cached about them at once."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.db import IntegrityError, transaction

from accounts.endusers import jwks
from accounts.endusers.models import (
    ASYMMETRIC_ALGORITHMS,
    HMAC_ALGORITHMS,
    MAX_LEEWAY_SECONDS,
    MAX_SECRET_LENGTH,
    MIN_SECRET_LENGTH,
    Issuer,
)
from accounts.endusers.tokens import issuers_changed
from accounts.models import Workspace
from accounts.services import workspace_lock_live
from config.common.crypto import SecretUnreadable
from config.common.errors import Invalid
from config.common.rows import lock_existing

FIELDS = (
    "issuer",
    "audiences",
    "jwks_url",
    "hs256_secret",
    "algorithms",
    "user_claim",
    "required_scope",
    "leeway_seconds",
)


def check(issuer: Issuer) -> None:
    """The rules an issuer keeps whatever edit made it: one key source, its algorithms only."""
    # The admin's JSON fields take any JSON: a string there was read a character at a time
    # (audiences "app" accepted the `aud` "a").
    if not _strings(issuer.audiences):
        raise Invalid(
            "At least one audience, as a list of strings: tokens are checked for `aud`.",
            field="audiences",
        )
    if issuer.leeway_seconds > MAX_LEEWAY_SECONDS:
        raise Invalid(f"At most {MAX_LEEWAY_SECONDS} seconds.", field="leeway_seconds")
    has_secret = bool(issuer.hs256_secret_encrypted)
    if bool(issuer.jwks_url) == has_secret:
        raise Invalid("Give either jwks_url or hs256_secret (exactly one).", field="jwks_url")
    # Both bounds here, for every door: the admin took a secret of 100,000 characters.
    if has_secret and not MIN_SECRET_LENGTH <= len(_secret(issuer)) <= MAX_SECRET_LENGTH:
        raise Invalid(
            f"From {MIN_SECRET_LENGTH} to {MAX_SECRET_LENGTH} characters.", field="hs256_secret"
        )
    allowed = HMAC_ALGORITHMS if has_secret else ASYMMETRIC_ALGORITHMS
    if not issuer.algorithms:
        issuer.algorithms = ["HS256"] if has_secret else ["RS256", "ES256"]
    if not _strings(issuer.algorithms):
        raise Invalid("Algorithms are a list of algorithm names.", field="algorithms")
    wrong = [a for a in issuer.algorithms if a not in allowed]
    if wrong:
        source = "an hs256_secret" if has_secret else "a jwks_url"
        raise Invalid(
            f"Algorithms {wrong} cannot be used with {source} (allowed: {', '.join(allowed)}).",
            field="algorithms",
        )
    if issuer.jwks_url:
        try:
            jwks.check_url(issuer.jwks_url)
        except jwks.JwksError as exc:
            raise Invalid(f"{str(exc).capitalize()}.", field="jwks_url") from None


def _secret(issuer: Issuer) -> str:
    try:
        return issuer.get_secret()
    except SecretUnreadable:
        raise Invalid(
            "The stored secret cannot be decrypted with ENGRAM_ENCRYPTION_KEY: give it again.",
            field="hs256_secret",
        ) from None


def _strings(value: object) -> bool:
    """A non-empty list of non-empty strings."""
    return isinstance(value, list) and bool(value) and all(isinstance(v, str) and v for v in value)


def apply(issuer: Issuer, changes: Mapping[str, Any]) -> None:
    for name, value in changes.items():
        if name == "hs256_secret":
            issuer.set_secret(value or "")
        elif name == "jwks_url":
            issuer.jwks_url = value or ""
        else:
            setattr(issuer, name, value)


def _save(issuer: Issuer) -> Issuer:
    try:
        with transaction.atomic():
            issuer.save()
    except IntegrityError:
        raise Invalid("This workspace already trusts that issuer.", field="issuer") from None
    issuers_changed()
    return issuer


@transaction.atomic
def issuer_create(*, workspace: Workspace, **fields) -> Issuer:
    workspace_lock_live(workspace=workspace)
    issuer = Issuer(workspace=workspace)
    apply(issuer, fields)
    check(issuer)
    return _save(issuer)


@transaction.atomic
def issuer_update(*, workspace: Workspace, issuer: Issuer, changes: Mapping[str, Any]) -> Issuer:
    """Partial: switching key source means giving the new one and emptying the other.

    `changes` is a mapping, not keywords: one of its fields is itself named "issuer".
    """
    assert issuer.workspace_id == workspace.id
    lock_existing(issuer)  # or Issuer.DoesNotExist: a deleted issuer's tokens stay refused
    used_secret = issuer.uses_secret
    apply(issuer, changes)
    if issuer.uses_secret != used_secret and "algorithms" not in changes:
        # The key source switched, and HMAC and asymmetric algorithms have none in common: the
        # old ones (the defaults create stored) refused every switch made as documented, a new
        # jwks_url with the secret emptied, until the algorithms were given again.
        issuer.algorithms = []  # check() sets the new source's defaults
    check(issuer)
    return _save(issuer)


@transaction.atomic
def issuer_delete(*, workspace: Workspace, issuer: Issuer) -> None:
    """Its tokens stop working on every process at once."""
    Issuer.objects.filter(workspace=workspace, id=issuer.id).delete()
    issuers_changed()
