"""Secrets at rest (provider credentials, end-user token issuers' HS256 secrets): Fernet, keyed from ENGRAM_ENCRYPTION_KEY or derived from SECRET_KEY.

ENGRAM_ENCRYPTION_KEY may hold several comma-separated keys: the first encrypts, all decrypt
(rotation). A value that is not a Fernet key is stretched into one with SHA-256.
"""

from __future__ import annotations

import base64
import hashlib
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings


class SecretUnreadable(Exception):
    """The stored secret was encrypted with a key this process does not have."""


def _fernet_key(material: str) -> bytes:
    try:
        Fernet(material.encode())
        return material.encode()
    except (ValueError, TypeError):
        digest = hashlib.sha256(b"engram-provider-credentials:" + material.encode()).digest()
        return base64.urlsafe_b64encode(digest)


@lru_cache(maxsize=4)
def _cipher(configured: str, secret_key: str) -> MultiFernet:
    materials = [m.strip() for m in configured.split(",") if m.strip()] or [secret_key]
    return MultiFernet([Fernet(_fernet_key(m)) for m in materials])


def cipher() -> MultiFernet:
    return _cipher(settings.ENGRAM_ENCRYPTION_KEY or "", settings.SECRET_KEY)


def encrypt(plaintext: str) -> str:
    return cipher().encrypt(plaintext.encode()).decode()


def decrypt(token: str) -> str:
    try:
        return cipher().decrypt(token.encode()).decode()
    except InvalidToken:
        raise SecretUnreadable(
            "a stored secret cannot be decrypted with the configured key"
        ) from None
