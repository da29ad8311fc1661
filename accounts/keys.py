"""Key material: generation and the peppered digest (no database here)."""

import hashlib
import hmac
import secrets

from django.conf import settings

KEY_PREFIX_LEN = 12  # "sk-" + 9 random characters: enough to look a key up, useless alone


def generate_key() -> str:
    return "sk-" + secrets.token_urlsafe(36).replace("-", "x").replace("_", "y")


def key_prefix(raw_key: str) -> str:
    return raw_key[:KEY_PREFIX_LEN]


def peppered_digest(value: str) -> str:
    """The keyed digest (the key pepper) of what must not be kept as it is: an API key, and an
    end user's id where it outlives their erasure (usage records, limiter keys). Keyed, so a
    guessable value (an e-mail address) cannot be found by hashing candidates."""
    pepper = settings.ENGRAM_KEY_PEPPER.encode()
    return hmac.new(pepper, value.encode(), hashlib.sha256).hexdigest()


def looks_like_key(raw_key: str) -> bool:
    return raw_key.startswith("sk-") and 20 <= len(raw_key) <= 128
