"""One-time tokens of the admin's add-API-key form: each form shown carries a new one, and the
one POST that uses it makes the key. A reload of that POST's answer (or Back then Forward)
sends the form again with the same token: it makes nothing and names the key made.

The session remembers the tokens given out and, for each used one, the key it made: a token
is not a secret (it makes a key only with the signed-in operator's session and CSRF token),
and the key's secret is never kept anywhere (it is on the POST's answer only). Two sends of
one form at once (a double-click) load the same session before either saves it: the cache's
add, atomic across processes, lets one of them through."""

from __future__ import annotations

import contextlib
import secrets

from django.core.cache import cache

from config.common.inline_redis import FAILURES as REDIS_FAILURES

FIELD = "form_token"
_ISSUED = "accounts.apikey_form_tokens"
_USED = "accounts.apikey_form_tokens_used"
# Forms open at once (tabs) and used tokens remembered: the oldest are forgotten past these.
_ISSUED_KEPT = 20
_USED_KEPT = 20
# A claim outlives any send of the form that the session has not yet recorded as used.
_CLAIM_SECONDS = 3600


def issue(session) -> str:
    token = secrets.token_urlsafe(16)
    session[_ISSUED] = [*session.get(_ISSUED, [])[-(_ISSUED_KEPT - 1) :], token]
    return token


def issued(session, token: str) -> bool:
    return bool(token) and token in session.get(_ISSUED, [])


def key_made(session, token: str) -> str | None:
    """The id of the key the token's form made, if it was used."""
    return session.get(_USED, {}).get(token) if token else None


def claim(token: str) -> bool:
    """True for the one send of the form that may make its key. Redis away: True, the session
    alone guarding (a reload still makes nothing; two sends in the same instant might both):
    making a key needs the database only, and an operator locked out of it while Redis is down
    is worse than a double-click's second key."""
    try:
        return cache.add(_claim(token), 1, timeout=_CLAIM_SECONDS)
    except REDIS_FAILURES:
        return True


def release(token: str) -> None:
    """The send that claimed it made no key (a refusal on the form): a send again may."""
    # Redis away: nothing was claimed while it was, or the claim expires (_CLAIM_SECONDS).
    with contextlib.suppress(*REDIS_FAILURES):
        cache.delete(_claim(token))


def mark_used(session, token: str, *, key_id: str) -> None:
    session[_ISSUED] = [t for t in session.get(_ISSUED, []) if t != token]
    made = {t: k for t, k in session.get(_USED, {}).items() if t != token}
    session[_USED] = dict([*list(made.items())[-(_USED_KEPT - 1) :], (token, key_id)])


def _claim(token: str) -> str:
    return f"accounts:apikey-form-token:{token}"
