"""An issuer's public keys: its JWKS, fetched and kept in-process.

A key set lives ENGRAM_JWKS_CACHE_SECONDS. Past half of that, the request that notices starts
one refetch on a background thread and goes on with the keys it has, so a busy issuer's keys
are renewed off the request path and nobody waits at expiry. A token naming a `kid` the set
does not hold refetches at once (a rotation: the new key is used without a restart) unless the
set was fetched less than ENGRAM_JWKS_REFETCH_COOLDOWN_SECONDS ago, so a flood of made-up kids
cannot make Engram hammer the provider. When the provider is unreachable the keys already
fetched keep verifying until their lifetime ends; a kid they lack is then a 401.

Other reports this answers: a JWK without `kid` is used when it is the set's only signing key;
a stale set is never trusted beyond its lifetime, nor a retired key once a refetch has seen it
gone: a token verified before is kept (accounts.endusers.tokens) only while `holds` says its
key is still in the set this process holds.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import socket
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from functools import partial
from typing import NamedTuple
from urllib.parse import urlsplit

import jwt
from django.conf import settings

from config.common import addresses

logger = logging.getLogger("engram.endusers")

MAX_JWKS_BYTES = 512 * 1024


class JwksError(Exception):
    """Why a key could not be found: the issuer's key set is not to be had (unreachable, not a
    key set), which the 401 says."""


class NoSuchKey(JwksError):
    """The set holds no key for the token's header (kid, alg): the token is not this issuer's,
    which the 401 does not say (accounts.endusers.tokens.untrusted)."""


class PublicKey(NamedTuple):
    key: object  # what PyJWT verifies with
    fingerprint: str  # the JWK's identity across fetches (`holds`)


def _fingerprint(jwk: dict) -> str:
    """A JWK as a provider serves it, its members in one order: a kid can be reused for a new
    key, so the key's identity is the whole JWK."""
    return json.dumps(jwk, sort_keys=True)


@dataclass
class _KeySet:
    keys: list[dict] = field(default_factory=list)
    fingerprints: frozenset[str] = frozenset()  # of `keys`
    fetched: float = float("-inf")  # monotonic time of the last successful fetch
    attempted: float = float("-inf")  # of the last attempt, successful or not
    error: str = ""  # why the last attempt failed
    refreshing: bool = False


_sets: dict[str, _KeySet] = {}
_locks: dict[str, threading.Lock] = {}
_guard = threading.Lock()


def _lifetime() -> float:
    return settings.ENGRAM_JWKS_CACHE_SECONDS


def _cooldown() -> float:
    return settings.ENGRAM_JWKS_REFETCH_COOLDOWN_SECONDS


def clear() -> None:
    """Tests: forget every key set."""
    with _guard:
        _sets.clear()


# --- where a JWKS may live ----------------------------------------------------------------------


def check_url(url: str) -> None:
    """A JWKS URL Engram may fetch: https (http only where private addresses are allowed) on a
    public address, unless ENGRAM_JWKS_ALLOW_PRIVATE (a workspace key must not turn Engram into
    a probe of its own network)."""
    parts = urlsplit(url)
    allow_private = settings.ENGRAM_JWKS_ALLOW_PRIVATE
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise JwksError("the JWKS URL must be an https URL")
    try:
        port = parts.port  # Django's URL validator lets :99999 through
    except ValueError:
        raise JwksError("the JWKS URL's port is out of range (1-65535)") from None
    if parts.scheme == "http" and not allow_private:
        raise JwksError("the JWKS URL must be https")
    if allow_private:
        return
    try:
        infos = socket.getaddrinfo(parts.hostname, port or 443, proto=socket.IPPROTO_TCP)
    except OSError as exc:
        raise JwksError(f"the JWKS host cannot be resolved ({type(exc).__name__})") from None
    _refuse_private(infos)


def _refuse_private(infos: list) -> None:
    for info in infos:
        if not addresses.public(str(info[4][0])):
            raise JwksError(
                "the JWKS URL points at a private address (set ENGRAM_JWKS_ALLOW_PRIVATE to allow)"
            )


def _connect_public(address: tuple[str, int], *args) -> socket.socket:
    """socket.create_connection to an address this lookup checked. check_url's own lookup is
    not the connection's: a host name answering a public address to the one and a private
    address to the other (DNS rebinding) got past it."""
    host, port = address
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    if not settings.ENGRAM_JWKS_ALLOW_PRIVATE:
        _refuse_private(infos)
    failed: OSError = OSError(f"no address for {host}")
    for info in infos:
        try:
            return socket.create_connection((str(info[4][0]), port), *args)
        except OSError as exc:
            failed = exc
    raise failed


class _Deadline:
    """Shuts a fetch's sockets down once ENGRAM_JWKS_TIMEOUT_SECONDS have passed, and fails the
    fetch as late. A socket's timeout bounds each read, not the fetch: a provider sending a byte
    every few seconds held it, and every request waiting for its keys (each on a pool thread),
    for as long as it kept sending."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.passed = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._pass)
        self._timer.daemon = True

    def __enter__(self) -> _Deadline:
        self._timer.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._timer.cancel()
        if self.passed:  # whatever the shut socket made of the answer, it came too late
            raise JwksError(f"the JWKS URL did not answer within {self.seconds:g} s")

    def watch(self, sock: socket.socket) -> socket.socket:
        with self._lock:
            self._sockets.append(sock)
            passed = self.passed
        if passed:
            _shut(sock)
        return sock

    def _pass(self) -> None:
        with self._lock:
            self.passed = True
            sockets = list(self._sockets)
        for sock in sockets:
            _shut(sock)


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # closed already
        sock.shutdown(socket.SHUT_RDWR)  # wakes a read blocked on it (close would not)


class _Checked:
    """A connection to an address its own lookup checked, shut at the fetch's deadline."""

    _deadline: _Deadline
    _tunnel_host: str | None

    def __init__(self, *args, deadline: _Deadline, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._deadline = deadline
        self._create_connection = self._connect

    def _connect(self, address: tuple[str, int], *args) -> socket.socket:
        # Through an HTTPS proxy the proxy resolves the host: check_url's lookup is all there is.
        if getattr(self, "_tunnel_host", None):
            return self._deadline.watch(socket.create_connection(address, *args))
        return self._deadline.watch(_connect_public(address, *args))


class _CheckedHTTPSConnection(_Checked, http.client.HTTPSConnection):
    """TLS still verifies the host name: only the TCP connection goes to the checked address."""


class _CheckedHTTPConnection(_Checked, http.client.HTTPConnection):
    """http: only where ENGRAM_JWKS_ALLOW_PRIVATE allows it (check_url)."""


class _CheckedHTTPS(urllib.request.HTTPSHandler):
    def __init__(self, deadline: _Deadline) -> None:
        super().__init__()
        self._deadline = deadline

    def https_open(self, req):  # the default context: verified
        return self.do_open(partial(_CheckedHTTPSConnection, deadline=self._deadline), req)


class _CheckedHTTP(urllib.request.HTTPHandler):
    def __init__(self, deadline: _Deadline) -> None:
        super().__init__()
        self._deadline = deadline

    def http_open(self, req):
        return self.do_open(partial(_CheckedHTTPConnection, deadline=self._deadline), req)


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None  # a redirect could lead past check_url


def _fetch(url: str) -> list[dict]:
    check_url(url)
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    seconds = settings.ENGRAM_JWKS_TIMEOUT_SECONDS
    with _Deadline(seconds) as deadline:
        opener = urllib.request.build_opener(
            _NoRedirects, _CheckedHTTPS(deadline), _CheckedHTTP(deadline)
        )
        try:
            with opener.open(request, timeout=seconds) as response:
                raw = response.read(MAX_JWKS_BYTES + 1)
        except urllib.error.HTTPError as exc:
            raise JwksError(f"the JWKS URL answered {exc.code}") from None
        except http.client.HTTPException as exc:  # not HTTP, a header line too long, a cut chunk
            raise JwksError(
                f"the JWKS URL gave no valid HTTP answer ({type(exc).__name__})"
            ) from None
        except (OSError, ValueError) as exc:
            raise JwksError(f"the JWKS URL is unreachable ({type(exc).__name__})") from None
    if len(raw) > MAX_JWKS_BYTES:
        raise JwksError("the JWKS is too large")
    try:
        document = json.loads(raw)
    except (ValueError, RecursionError):  # nested past the decoder's limit: not a key set either
        raise JwksError("the JWKS is not JSON") from None
    keys = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(keys, list):
        raise JwksError("the JWKS has no `keys` array")
    return [k for k in keys if isinstance(k, dict) and k.get("use", "sig") == "sig"]


def _lock_of(url: str) -> threading.Lock:
    with _guard:
        return _locks.setdefault(url, threading.Lock())


def _refetch(url: str, entry: _KeySet) -> None:
    """Fetch `url` into `entry`; one fetch per URL at a time (others wait and share it)."""
    attempted = entry.attempted
    with _lock_of(url):
        if entry.attempted != attempted:
            return  # another thread fetched while this one waited
        entry.attempted = time.monotonic()
        try:
            keys = _fetch(url)
            entry.keys, entry.fingerprints = keys, frozenset(_fingerprint(k) for k in keys)
            entry.fetched = entry.attempted
            entry.error = ""
        except JwksError as exc:
            entry.error = str(exc)
            logger.warning("JWKS fetch failed: %s", exc)


def _refresh_in_background(url: str, entry: _KeySet) -> None:
    with _guard:
        if entry.refreshing:
            return
        entry.refreshing = True

    def run() -> None:
        try:
            _refetch(url, entry)
        finally:
            entry.refreshing = False

    threading.Thread(target=run, name="jwks-refresh", daemon=True).start()


def _entry(url: str) -> _KeySet:
    with _guard:
        return _sets.setdefault(url, _KeySet())


def _pick(keys: list[dict], kid: str | None, algorithm: str) -> dict | None:
    if kid is None:
        return keys[0] if len(keys) == 1 else None  # no kid: only an unambiguous set will do
    named = [k for k in keys if k.get("kid") == kid]
    # RFC 7517 4.5 lets keys of different types share a kid (an RSA and an EC key offered as
    # alternatives): the one for the token's alg, else one that names no alg. The first alone
    # refused every token of the second ("the key is for RS256, the token says ES256").
    for wanted in (algorithm, None):
        found = next((k for k in named if k.get("alg") == wanted), None)
        if found is not None:
            return found
    return named[0] if named else None


def holds(url: str, fingerprint: str) -> bool:
    """Whether the key set of `url`, as this process holds it, still has the key (a
    PublicKey's fingerprint) and is within its lifetime; starts a background refresh past
    half of it, as signing_key does, so cached tokens keep the set renewed. Fetches nothing: a
    dict lookup and a set's, on every request of a cached token."""
    entry = _sets.get(url)
    if entry is None or fingerprint not in entry.fingerprints:
        return False
    age = time.monotonic() - entry.fetched
    if age > _lifetime() / 2 and age <= _lifetime():
        _refresh_in_background(url, entry)
    return age <= _lifetime()


def refetched_after_bad_signature(url: str) -> bool:
    """A token's signature failed against the key this process holds for its kid (or for a
    set of one key and a token without kid): the provider may have put a new key under the
    same kid, or rotated its only key. Refetch, as for an unknown kid (at most once per
    cool-down), and say whether the set changed, so the token is tried once more; the set
    was kept until its background refresh, half its lifetime (5 minutes), every new token
    refused meanwhile."""
    entry = _entry(url)
    if time.monotonic() - entry.attempted < _cooldown():
        return False
    before = entry.fingerprints
    _refetch(url, entry)
    return entry.fingerprints != before


def signing_key(url: str, *, kid: str | None, algorithm: str) -> PublicKey:
    """The public key for a token's header (`kid`, `alg`); JwksError says why there is none.
    May fetch (the first use, an expired set, an unknown kid): call it off the event loop."""
    entry = _entry(url)
    now = time.monotonic()
    age = now - entry.fetched
    if age > _lifetime():
        if now - entry.attempted >= _cooldown():  # a provider that is down is retried after it
            _refetch(url, entry)
        if time.monotonic() - entry.fetched > _lifetime():
            raise JwksError(entry.error or "the JWKS could not be fetched")
    elif age > _lifetime() / 2:
        _refresh_in_background(url, entry)
    jwk = _pick(entry.keys, kid, algorithm)
    if jwk is None and kid is not None and time.monotonic() - entry.attempted >= _cooldown():
        _refetch(url, entry)  # a rotation: the provider has a key Engram has not seen yet
        jwk = _pick(entry.keys, kid, algorithm)
    if jwk is None:
        if kid is None:
            raise NoSuchKey("the token has no kid and the JWKS holds several keys")
        if entry.error:
            raise JwksError(f"no key with this kid in the cached JWKS, and {entry.error}")
        raise NoSuchKey("no key with this kid in the issuer's JWKS")
    if jwk.get("alg") not in (None, algorithm):
        raise NoSuchKey(f"the key is for {jwk.get('alg')}, the token says {algorithm}")
    try:
        return PublicKey(jwt.PyJWK(jwk, algorithm=algorithm).key, _fingerprint(jwk))
    except jwt.PyJWTError:
        raise NoSuchKey(f"the key with this kid cannot verify {algorithm}") from None
