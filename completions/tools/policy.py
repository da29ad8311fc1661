"""The rules of a tool's fields, its approval policy and the addresses HTTP tools may reach.

An approval policy is "never", "always" or a rule on the call's arguments:
`{"argument": "<name>", "op": "eq"|"ne"|"gt"|"gte"|"lt"|"lte"|"in"|"contains", "value": …}`
or `{"any": [rule, …]}`: the call waits for a human when the rule holds. Arguments the model
sent as broken JSON always wait (a rule cannot vouch for them).
"""

from __future__ import annotations

import ipaddress
import json
import re
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings

from completions.providers import hops
from config.common import addresses
from config.common.closed import unknown_fields_check
from config.common.errors import Invalid

NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # OpenAI's rule for a function name
NAME_PATTERN = r"^(?!_engram)[A-Za-z0-9_-]{1,64}$"  # and not Engram's own: for the document
BUILTINS = ("memory_search", "knowledge_search", "remember")
# The built-ins that read or write the end user's memories: not for an agent whose memory is
# off (`memory.enabled: false` means nothing stored, nothing recalled, through tools too).
MEMORY_BUILTINS = ("memory_search", "remember")
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
OPS = ("eq", "ne", "gt", "gte", "lt", "lte", "in", "contains")
MAX_TTL = 7 * 24 * 3600
MAX_TIMEOUT = 120.0
MAX_DESCRIPTION = 4000  # a tool's description, in characters
MAX_REASON = 2000  # a resume's reason, in characters
MAX_HEADERS = 20
# A header's name and value, each: a value had no cap (100,000 characters were stored and sent
# with every call, where servers refuse a header line past 8 KB: nginx's
# large_client_header_buffers, Node's 16 KB for all of them).
MAX_HEADER_NAME = 64
MAX_HEADER_VALUE = 8192
# What a URL cannot hold anywhere (RFC 3986 has no whitespace), and a host name's label.
URL_BLANK = re.compile(r"[\x00-\x20\x7f\s]")
HOST_LABEL = re.compile(r"^(?!-)[A-Za-z0-9_-]{1,63}(?<!-)$")
NUMERIC_LABEL = re.compile(r"^(?:[0-9]+|0[xX][0-9A-Fa-f]*)$")
HEADER_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
HEADER_CONTROL = re.compile(
    r"[\x00-\x08\x0a-\x1f\x7f]"
)  # what a header value cannot hold (tab can)


# Headers a tool may not set: HTTP's framing and hop-by-hop headers (a tool's `Host` or
# `Content-Length` would misroute or corrupt its own request; proxies' are the connection's)
# and the ones Engram sets itself (Idempotency-Key, the loop guard's mark). Refused when a
# tool is written, left out of a call for a tool stored before the rule
# (completions.tools.executor).
RESERVED_HEADERS = frozenset(
    (
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "upgrade",
        "te",
        "trailer",
        "idempotency-key",
        hops.HEADER,
    )
)


def header_reserved(name: str) -> bool:
    lowered = name.lower()
    return lowered in RESERVED_HEADERS or lowered.startswith("proxy-")


# What a read shows for a header's value (a secret, never sent back); the same value written
# back keeps the stored one (completions.tools.services).
HEADER_MASK = "***"

# A header value (or its credential, the part after a scheme such as "Bearer ") this long or
# longer is a secret to take out of what the tool answers (executor.redacted); a shorter one
# ("1", "json") would blank ordinary words of every answer, so it is left in.
MIN_SECRET = 8
# Header names that carry a credential: a value shorter than MIN_SECRET in one of them (or a
# credential after a scheme, "Bearer abc", in any header) is refused at the tool's creation,
# since it could not be masked: a tool echoing its request, or an error page quoting the token
# it refused, would hand it to the model, the run's record and the conversation.
CREDENTIAL_WORDS = ("auth", "key", "token", "secret", "password", "passwd", "cookie", "session")
AUTH_SCHEMES = frozenset(("basic", "bearer", "token", "digest", "apikey"))


def short_credential(header: str, value: str) -> bool:
    """Is this header value a credential too short to mask in the tool's answers?"""
    if value == HEADER_MASK:  # the stored value, written back (services._unmasked)
        return False
    scheme, _, credential = value.strip().partition(" ")
    if credential and scheme.lower() in AUTH_SCHEMES:
        return len(credential.strip()) < MIN_SECRET
    lowered = header.lower()
    return any(word in lowered for word in CREDENTIAL_WORDS) and len(value) < MIN_SECRET


def name(value: Any) -> str:
    if not isinstance(value, str) or not NAME.match(value):
        raise Invalid("name must be 1-64 letters, digits, _ or -.", field="name")
    if value.startswith("_engram"):
        raise Invalid("Names starting with _engram are Engram's own.", field="name")
    return value


def parameters(value: Any) -> dict:
    if value is None:
        return {"type": "object", "properties": {}}
    if not isinstance(value, dict) or value.get("type", "object") != "object":
        raise Invalid('parameters must be a JSON schema of "type": "object".', field="parameters")
    if len(json.dumps(value)) > 32_000:
        raise Invalid("parameters is too large (32,000 characters at most).", field="parameters")
    # Checked against JSON Schema's own meta-schema: {"properties": "notadict"} was stored and
    # sent upstream with every call, where a strict provider refuses the whole request.
    from jsonschema import SchemaError, validators

    # jsonschema looks a `$schema` up as a URI before any check: 1 was an AttributeError, {}
    # a TypeError (both a 500).
    if not isinstance(value.get("$schema", ""), str):
        raise Invalid(
            "parameters.$schema must be a string (a meta-schema's URI).", field="parameters"
        )
    try:
        validators.validator_for(value, default=validators.Draft202012Validator).check_schema(value)
    except SchemaError as exc:
        where = "".join(f"[{p!r}]" if isinstance(p, int) else f".{p}" for p in exc.path)
        raise Invalid(
            f"parameters{where} is not valid JSON Schema: {exc.message}", field="parameters"
        ) from None
    except (OverflowError, RecursionError):
        # The `regex` format check compiles each `pattern` and catches only re.error: a
        # repetition past 2**32 - 1 (a{4294967296}) overflows, 1,000 nested groups recurse.
        raise Invalid(
            "parameters is not valid JSON Schema: a pattern is a regular expression Python "
            "cannot compile (a repetition too large, or groups nested too deeply).",
            field="parameters",
        ) from None
    # OpenAI refuses a function whose parameters do not say "type": "object".
    return {"type": "object", **value}


def _rule(value: Any, where: str = "approval") -> None:
    """A rule's checks; `where` its path in the tool (`approval`, `approval.any[0]`), which an
    unknown key is named by (config.common.closed): `{"argument", "op", "vaule"}` got the
    generic shape message, which did not say which key was wrong."""
    if not isinstance(value, dict):
        raise Invalid("An approval rule is an object.", field="approval")
    if "any" in value:
        unknown_fields_check(value, ("any",), where=where)
        if not isinstance(value["any"], list) or not value["any"]:
            raise Invalid('"any" takes a non-empty list of rules.', field="approval")
        for index, rule in enumerate(value["any"]):
            _rule(rule, f"{where}.any[{index}]")
        return
    unknown_fields_check(value, ("argument", "op", "value"), where=where)
    if not isinstance(value.get("argument"), str):
        raise Invalid(
            'An approval rule is {"argument", "op", "value"} or {"any": [...]}.', field="approval"
        )
    if value.get("op", "eq") not in OPS:
        raise Invalid(f"op must be one of {', '.join(OPS)}.", field="approval")
    # Any other value never held: {"op": "in", "value": "US"} let every call run unapproved.
    if value.get("op") == "in" and not isinstance(value.get("value"), list):
        raise Invalid('"in" takes a list as its value.', field="approval")


def approval(value: Any) -> Any:
    if value is None:
        return "never"
    if value in ("never", "always"):
        return value
    _rule(value)
    return value


def approval_ttl(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_TTL:
        raise Invalid(f"approval_ttl_seconds must be 1-{MAX_TTL}.", field="approval_ttl_seconds")
    return value


def timeout(value: Any) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise Invalid("timeout_seconds must be a number.", field="timeout_seconds")
    if not 0 < value <= MAX_TIMEOUT:
        raise Invalid(f"timeout_seconds must be in (0, {MAX_TIMEOUT}].", field="timeout_seconds")
    return float(value)


def builtin(value: Any) -> str:
    if value not in BUILTINS:
        raise Invalid(f"builtin must be one of {', '.join(BUILTINS)}.", field="builtin")
    return value


def memory_builtin_refused(builtin_name: str) -> Invalid:
    return Invalid(
        f"builtin {builtin_name} reads or writes the end user's memories, and this agent's "
        "memory is off (memory.enabled: false); turn its memory on first.",
        field="builtin",
        code="memory_disabled",
    )


def http(value: Any) -> dict:
    """{"url", "method", "headers"} checked; a literal private address is refused here, a host
    name at each call (completions.tools.executor resolves and checks it)."""
    if not isinstance(value, dict) or not isinstance(value.get("url"), str):
        raise Invalid('http must be {"url", "method"?, "headers"?}.', field="http")
    unknown_fields_check(value, ("url", "method", "headers"), where="http")
    url = value["url"]
    if URL_BLANK.search(url):
        # urlsplit and yarl drop a tab or newline and keep a space: "http://exa mple.com/"
        # was stored, then every call failed at the resolver (a DNS error the model read).
        raise Invalid(
            "http.url may not hold spaces or control characters (percent-encode them in the "
            "path or query: %20).",
            field="http.url",
            code="invalid_url",
        )
    try:
        parts = urlsplit(url)  # raises for a bracket left open: "http://[::1"
    except ValueError:
        raise Invalid("http.url must be an http(s) URL.", field="http.url") from None
    try:
        port = parts.port  # raises for a port outside 0-65535 or not a number
    except ValueError:
        port = 0
    if port == 0:  # 0 is no port a server listens on: every call failed to connect
        raise Invalid(
            "http.url has an invalid port (1-65535).", field="http.url", code="invalid_url"
        )
    if parts.scheme not in ("http", "https") or not parts.hostname or len(url) > 2000:
        raise Invalid("http.url must be an http(s) URL.", field="http.url")
    if parts.username is not None or parts.password is not None:
        # A URL is shown back on every read of the tool; its headers are stored encrypted and
        # shown masked. Credentials in the URL were secrets in responses.
        raise Invalid(
            "http.url may not hold credentials (user:password@); give them as "
            "http.headers.Authorization, which is stored encrypted and never shown back.",
            field="http.url",
        )
    try:
        # What the connection does with the name: an empty label or one over 63 characters
        # was stored, then raised a UnicodeError at every call of the tool.
        parts.hostname.encode("idna")
    except UnicodeError:
        raise Invalid("http.url has an invalid host name.", field="http.url") from None
    try:
        host = connected_host(url)
    except ValueError:  # yarl refuses it (a backslash before an @): every call would fail
        raise Invalid("http.url must be an http(s) URL.", field="http.url") from None
    host_name_check(host)
    host_allowed(host)
    method = str(value.get("method") or "POST").upper()
    if method not in METHODS:
        raise Invalid(f"http.method must be one of {', '.join(METHODS)}.", field="http.method")
    # Only null is none: [] or "" were taken as {}, and a PATCH of them dropped the stored
    # secrets without a word.
    headers = {} if value.get("headers") is None else value["headers"]
    if (
        not isinstance(headers, dict)
        or len(headers) > MAX_HEADERS
        or not all(
            isinstance(k, str) and HEADER_NAME.match(k) and isinstance(v, str)
            for k, v in headers.items()
        )
    ):
        raise Invalid("http.headers must be an object of header names to strings.", field="http")
    for header, text in headers.items():
        if len(header) > MAX_HEADER_NAME:
            raise Invalid(
                f"A header name in http.headers is {len(header)} characters; "
                f"{MAX_HEADER_NAME} at most.",
                field="http.headers",
            )
        if len(text) > MAX_HEADER_VALUE:
            raise Invalid(
                f"http.headers.{header} is {len(text)} characters; {MAX_HEADER_VALUE} at most.",
                field="http.headers",
            )
        if header_reserved(header):
            raise Invalid(
                f"http.headers.{header} is set by Engram or HTTP itself; a tool cannot set "
                "Host, Content-Length, Transfer-Encoding, Connection, Keep-Alive, Upgrade, TE, "
                "Trailer, Proxy-* or Idempotency-Key.",
                field="http.headers",
            )
        # A CR was stored and then refused by the HTTP client at every call of the tool.
        if HEADER_CONTROL.search(text):
            raise Invalid(
                f"http.headers.{header} has a control character (CR, LF, ...); "
                "a header's value is one line of text.",
                field="http.headers",
            )
        if short_credential(header, text):
            raise Invalid(
                f"http.headers.{header} holds a credential shorter than {MIN_SECRET} "
                "characters: a secret that short cannot be masked in what the tool answers "
                "(it would blank ordinary words), and a tool echoing it would hand it to the "
                "model and the conversation. Use a longer one.",
                field="http.headers",
                code="secret_too_short",
            )
    return {"url": url, "method": method, "headers": headers}


def connected_host(url: str) -> str:
    """The host the HTTP client connects to for `url`, as aiohttp reads it (through yarl),
    which is not always urlsplit's: yarl maps full-width digits and dots to ASCII
    ("http://１２７.０.０.１/" is 127.0.0.1, urlsplit keeps the full-width name), and aiohttp
    connects to an address without asking the resolver (executor._CheckedResolver), so a
    tool at 127.0.0.1 or 169.254.169.254 written so was never refused. ValueError for a URL
    yarl refuses."""
    from yarl import URL

    return URL(url).raw_host or ""


def host_name_check(host: str) -> None:
    """Invalid unless `host` (as connected_host reads it) is an IP address or a DNS name the
    resolver can be asked for: letters, digits, `_` and `-` in labels of 1-63 characters, none
    starting or ending with `-`, an `xn--` label valid punycode. A name whose last label is a
    number is an IPv4 address or nothing: "256.1.1.1", "2130706433" and "0x7f.1" went to the
    resolver, which reads some of them as addresses (inet_aton's octal and hex forms)."""
    if ":" in host:  # only an IPv6 literal holds one (yarl has taken the port off)
        try:
            ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            raise _bad_host() from None
        return
    name = host[:-1] if host.endswith(".") else host
    labels = name.split(".")
    if len(name) > 253 or not all(HOST_LABEL.match(label) for label in labels):
        raise _bad_host()
    if NUMERIC_LABEL.match(labels[-1]):
        try:
            ipaddress.IPv4Address(name)
        except ValueError:
            raise _bad_host() from None
        return
    for label in labels:
        if label.lower().startswith("xn--"):
            # Punycode, not Python's IDNA 2003 codec: that one refuses ß.de's xn--zca (it
            # maps ß to ss, so the label does not round-trip), which resolvers answer.
            try:
                decoded = label[4:].encode("ascii").decode("punycode")
            except UnicodeError:
                raise _bad_host() from None
            if decoded.isascii():  # empty, or nothing an A-label is for
                raise _bad_host()


def _bad_host() -> Invalid:
    return Invalid(
        "http.url has an invalid host: a DNS name (letters, digits, _ and - in dot-separated "
        "labels of 1-63 characters, not starting or ending with -) or an IP address.",
        field="http.url",
        code="invalid_url",
    )


def address_allowed(address: str) -> bool:
    return settings.ENGRAM_TOOLS_ALLOW_PRIVATE_NETWORKS or addresses.public(address)


def host_allowed(host: str) -> None:
    """Invalid for a literal address (or localhost) that address_allowed refuses."""
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        literal = host.lower().rstrip(".") in ("localhost",) or host.lower().endswith(".localhost")
        if literal and not settings.ENGRAM_TOOLS_ALLOW_PRIVATE_NETWORKS:
            raise _private() from None
        return
    if not address_allowed(host.strip("[]")):
        raise _private()


def _private() -> Invalid:
    return Invalid(
        "http.url is a private or loopback address; the operator allows those with "
        "ENGRAM_TOOLS_ALLOW_PRIVATE_NETWORKS.",
        field="http.url",
        code="private_address",
    )


def _holds(rule: dict, arguments: dict) -> bool:
    if "any" in rule:
        return any(_holds(r, arguments) for r in rule["any"])
    if rule["argument"] not in arguments:
        return False
    actual, expected, op = arguments[rule["argument"]], rule.get("value"), rule.get("op", "eq")
    try:
        if op == "eq":
            return actual == expected
        if op == "ne":
            return actual != expected
        if op == "in":
            if not isinstance(expected, list):  # a rule stored before _rule refused it
                raise TypeError("in takes a list")
            return actual in expected
        if op == "contains":
            return isinstance(actual, str | list) and expected in actual
        if isinstance(actual, bool) or isinstance(expected, bool):
            # Python orders booleans as 0 and 1: `amount gt 100` did not hold for
            # {"amount": true}, and the call ran unapproved.
            raise TypeError("booleans are not ordered")
        return {
            "gt": actual > expected,
            "gte": actual >= expected,
            "lt": actual < expected,
            "lte": actual <= expected,
        }[op]
    except TypeError:  # compared what does not compare: a human decides
        return True


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")


def call_arguments(raw: str) -> dict:
    """A call's arguments as the model sent them, parsed: a JSON object, else ValueError (the
    one parser of the rules here and of the call, completions.tools.executor). NaN and
    Infinity are not JSON, though Python's parser takes them: NaN compares false with
    everything, so `amount gt 100` did not hold for `{"amount": NaN}` and the call ran
    unapproved."""
    try:
        if not isinstance(raw, str):  # an upstream's object, not the string OpenAI sends
            raise ValueError(raw)
        value = json.loads(raw or "{}", parse_constant=_not_json)
    except (ValueError, RecursionError):
        raise ValueError("the arguments are not valid JSON") from None
    if not isinstance(value, dict):
        raise ValueError("the arguments must be a JSON object")
    return value


def needs_approval(policy: Any, arguments: str) -> bool:
    if policy == "never":
        return False
    if policy == "always" or not isinstance(policy, dict):
        return True
    try:
        parsed = call_arguments(arguments)
    except ValueError:
        return True
    return _holds(policy, parsed)
