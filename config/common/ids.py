"""Sortable, prefixed public ids (ws_..., key_..., mem_..., time-ordered like ULIDs), and the
one rule for an id a client sends (`identifier`, `PathIdConverter`)."""

import os
import re
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, lower case


def _encode(value: int, length: int) -> str:
    chars = []
    for _ in range(length):
        value, rem = divmod(value, 32)
        chars.append(_ALPHABET[rem])
    return "".join(reversed(chars))


def new_id(prefix: str) -> str:
    millis = int(time.time() * 1000)
    rand = int.from_bytes(os.urandom(10), "big")
    return f"{prefix}_{_encode(millis, 10)}{_encode(rand, 16)}"


# --- ids from clients ---------------------------------------------------------------------------
# The one rule for an id a client names (x-user-id, a conversation or session id, a path or
# query id, a model name): what Engram's columns and the upstream can hold, checked at the door.
MAX_ID_CHARS = 200
ID_RULE = (
    f"1-{MAX_ID_CHARS} characters of ASCII letters, digits and . _ : @ + - / =, "
    "other than . or .. alone"
)
# ASCII, as the OpenAPI document says: a header's bytes are read as Latin-1, so "ü" sent as
# UTF-8 in x-user-id arrived as "Ã¼", another user than the body's "ü". Not "." or "..": in a
# path they are dot segments, which clients and browsers resolve away (RFC 3986), so a user
# "..", taken by x-user-id, could be read, exported and erased only as %2E%2E.
_ID = re.compile(rf"(?!\.\.?$)[A-Za-z0-9_.:@+\-/=]{{1,{MAX_ID_CHARS}}}")
ID_PATTERN = rf"^{_ID.pattern}$"  # the rule as the OpenAPI document gives it
# The rule as a JSON Schema: every id the OpenAPI document names (body, query, header, path).
# Path parameters get it through SPECTACULAR_SETTINGS' PATH_CONVERTER_OVERRIDES: without it
# drf-spectacular printed the converter's own regex (`\w`, the ENCODED_SLASH control character).
ID_SCHEMA = {"type": "string", "pattern": ID_PATTERN, "minLength": 1, "maxLength": MAX_ID_CHARS}


def is_id(value: str) -> bool:
    return _ID.fullmatch(value) is not None


def identifier(value: object, param: str) -> str | None:
    """An id from a header, a query or the body: None when absent, 400 naming `param` when
    malformed (too long, NUL, spaces, anything outside ID_RULE)."""
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not is_id(value.strip()):
        # Imported here, only to refuse: an import statement costs ~7,000 instructions each
        # time it runs (callgrind), and a chat request checks five ids.
        from config.common.errors import ApiError

        raise ApiError(400, f"{param} must be {ID_RULE}.", param=param, code="invalid_value")
    return value.strip()


def as_user_id(value: str) -> str:
    """A user id as Engram keeps it. Auth0's subs are `provider|id`, and `|` is outside the
    rule while `:` means the same: `auth0|abc` is the user `auth0:abc` whether an end-user
    token, x-user-id, a body, a query or a path names them (the one character mapped; a
    token's user was mapped and x-user-id was refused, so one person had no one id)."""
    return value.replace("|", ":")


def user_identifier(value: object, param: str) -> str | None:
    """A user id from a header, a query or the body: `identifier` after `as_user_id`."""
    return identifier(as_user_id(value) if isinstance(value, str) else value, param)


# An id may hold "/" ("org/alice"); in a path it is sent encoded, %2F (as GitLab's API asks of
# a namespaced project). The server decodes the path before routing, so keep_encoded_slashes
# hands the app the path with each encoded slash as ENCODED_SLASH (outside every id rule),
# which the converter turns back into "/". Without it a user "org/alice" could be listed but
# not read, exported or erased.
ENCODED_SLASH = "\x1f"


def keep_encoded_slashes(scope: dict) -> dict:
    """An ASGI http scope whose path keeps its encoded slashes as ENCODED_SLASH."""
    raw = scope.get("raw_path")
    if not raw or b"%2f" not in raw.lower():
        return scope
    from urllib.parse import unquote

    segments = raw.split(b"?", 1)[0].decode("latin-1").split("/")
    return {**scope, "path": "/".join(unquote(s).replace("/", ENCODED_SLASH) for s in segments)}


class PathIdConverter:
    """`<id:memory_id>` in a URL: one path segment that is an id (its slashes encoded, %2F).
    Anything else (NUL, 201 characters, a space) matches no route: the envelope's 404, before
    a query is made. Wider than the rule in two ways: letters beyond ASCII, and "." or ".."
    alone (sent as %2E), so an id stored before the rule said so can still be read, exported
    and erased."""

    regex = rf"[\w.:@+\-={ENCODED_SLASH}]{{1,{MAX_ID_CHARS}}}"

    def to_python(self, value: str) -> str:
        return value.replace(ENCODED_SLASH, "/")

    def to_url(self, value: str) -> str:
        return value.replace("/", ENCODED_SLASH)


class PathUserIdConverter(PathIdConverter):
    """`<user:user_id>`: a user id in a path, `|` read as `:` (as_user_id)."""

    regex = rf"[\w.:|@+\-={ENCODED_SLASH}]{{1,{MAX_ID_CHARS}}}"

    def to_python(self, value: str) -> str:
        return as_user_id(super().to_python(value))
