"""An upstream's refusals and failures in OpenAI's envelope, and when one is tried again:
its error fields read, Engram's provider key masked in them, a refused credential or quota told
apart from the client's own, Retry-After honoured."""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Mapping

from django.conf import settings

from config.common.errors import ApiError

logger = logging.getLogger(__name__)


def without_key(content: bytes, api_key: str) -> bytes:
    """An upstream's answer with Engram's provider key masked: some upstreams (proxies,
    self-hosted servers) quote the request's Authorization in their error message, which is
    relayed to the client and logged. (Shorter than 8 characters it is no secret, "ollama".)"""
    if len(api_key) < 8:
        return content
    return content.replace(api_key.encode(), b"***")


class UpstreamRefusal(ApiError):
    """An upstream's error answer. `said`: its message whole, where `message` (the client's)
    is cut at MESSAGE_LIMIT characters, for what reads the refusal (which fields it names:
    completions.providers.openai_compatible._amended)."""

    said: str = ""


def upstream_error(status: int, content: bytes, headers: Mapping[str, str]) -> ApiError:
    """An upstream's error answer, in OpenAI's envelope: 4xx keep their status, 5xx become 502."""
    message, type_, param, code = error_fields(content)
    passthrough = {name: headers[name] for name in RETRY_HEADERS if headers.get(name)}
    if status >= 500:
        detail = f": {message}" if message else ""
        return ApiError(
            502,
            f"The upstream provider failed with status {status}{detail}",
            type="upstream_error",
            code="upstream_error",
            headers=passthrough,
        )
    error = UpstreamRefusal(
        status,
        message or f"The upstream provider answered {status}.",
        type=type_,
        param=param,
        code=code,
        headers=passthrough,
    )
    error.said = error_fields(content, limit=None)[0]
    return error


# An upstream refusing Engram's own provider key. Relayed as it came, the client's SDK read it
# as a refusal of the client's key (openai.AuthenticationError: apps sign the user out), and
# OpenAI's message quotes the provider key's last characters ("Incorrect API key provided:
# sk-...abcd") to every tenant of the deployment.
CREDENTIAL_REFUSALS = frozenset({401, 403, 407})


def credential_refused(provider: str, source: str, status: int, upstream: ApiError) -> ApiError:
    """A 502 naming the credential to fix; the upstream's own words go to the log only."""
    where = (
        f"the deployment's {provider.upper()}_API_KEY"
        if source == "env"
        else f"the workspace's {provider} provider credential (in the admin)"
    )
    logger.warning(
        "upstream %s refused its credential (%s): status %s, type %s, code %s",
        provider,
        source,
        status,
        upstream.type,
        upstream.code,
    )
    return ApiError(
        502,
        f"The {provider} provider refused the credential Engram used for it (status {status}): "
        f"the operator should check {where}.",
        type="upstream_error",
        code="upstream_credential_refused",
        # The SDKs retry a 502 twice: each retry sent the refused key again, and only the
        # operator can change the answer (as with insufficient_quota).
        headers={"x-should-retry": "false"},
    )


def quota_refused(provider: str, source: str, upstream: ApiError) -> ApiError:
    """A 502 for the provider's account being out of quota (OpenAI's 429 insufficient_quota).
    Relayed, it read as the client's own Engram budget spent (the same code), and the retries
    of Engram and of the SDKs asked again for what only the operator's billing changes."""
    where = (
        f"the account of the deployment's {provider.upper()}_API_KEY"
        if source == "env"
        else f"the account of the workspace's {provider} provider credential (in the admin)"
    )
    logger.warning("upstream %s (%s) is out of quota: %s", provider, source, upstream.message)
    return ApiError(
        502,
        f"The {provider} provider refused the request for lack of quota: the operator should "
        f"check the plan and billing of {where}.",
        type="upstream_error",
        code="upstream_quota_exceeded",
        headers={"x-should-retry": "false"},
    )


def redirected(provider: str, source: str, status: int, location: str | None) -> ApiError:
    """A 502 for an upstream's 3xx, naming the base URL to fix. Redirects are not followed:
    the request, provider key and all, would go wherever the upstream says."""
    where = (
        f"the deployment's {provider.upper()}_BASE_URL"
        if source == "env"
        else f"the base URL of the workspace's {provider} provider credential (in the admin)"
    )
    logger.warning(
        "upstream %s (%s) redirected: status %s to %s", provider, source, status, location
    )
    return ApiError(
        502,
        f"The {provider} provider redirected Engram's request (status {status}): the operator "
        f"should set {where} to where it points.",
        type="upstream_error",
        code="upstream_redirect",
        headers={"x-should-retry": "false"},  # as for a refused credential: only config helps
    )


# How much of an upstream's error that is not a message (a page, pydantic's list of what it
# refused, as JSON) the client reads as the message.
MESSAGE_LIMIT = 500


def error_fields(
    content: bytes, *, limit: int | None = MESSAGE_LIMIT
) -> tuple[str, str | None, str | None, str | None]:
    """An upstream error's message, type, param and code, as strings, from any of the shapes
    upstreams write (OpenAI's envelope, vLLM's top-level fields, FastAPI's detail); the one
    reader of an error answer and of a stream's error event. A message that is not text (a
    page, JSON) cut at `limit` characters (None: whole)."""
    try:
        data = json.loads(content)
    except (ValueError, UnicodeDecodeError):
        return content[:limit].decode("utf-8", "replace").strip(), None, None, None
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict):  # OpenAI, and Anthropic's {"type": "error", "error": {...}}
        code = error.get("code")
        return (
            str(error.get("message") or ""),
            error.get("type") if isinstance(error.get("type"), str) else None,
            error.get("param") if isinstance(error.get("param"), str) else None,
            str(code) if code is not None else None,
        )
    if isinstance(error, str):
        return error, None, None, None
    if isinstance(data, dict) and isinstance(data.get("message"), str):
        # vLLM's older shape, the fields at the top: {"object": "error", "message", "type", ...}
        code = data.get("code")
        return (
            data["message"],
            data.get("type") if isinstance(data.get("type"), str) else None,
            data.get("param") if isinstance(data.get("param"), str) else None,
            str(code) if code is not None else None,
        )
    if isinstance(data, dict) and "detail" in data:  # FastAPI-style servers
        detail = data["detail"]
        text = detail if isinstance(detail, str) else _json_text(detail, limit)
        return text, None, None, None
    return _json_text(data, limit), None, None, None


def _json_text(value: object, limit: int | None) -> str:
    """An upstream's JSON as JSON (Python's repr of it was what the client read)."""
    return json.dumps(value, ensure_ascii=False)[:limit]


# Passed on to the client with a refusal. `x-should-retry` is how OpenAI's and Anthropic's
# servers tell their SDKs whether a retry can help; dropped, an upstream's "false" was retried
# by Engram (`_final` reads it here) and then again by the client's SDK.
RETRY_HEADERS = ("retry-after", "retry-after-ms", "x-should-retry")


def read_failed(exc: BaseException) -> ApiError:
    """The error of an answer whose body could not be read (a timeout, a connection lost),
    before anything of it went to the client."""
    if isinstance(exc, TimeoutError):
        return ApiError(504, "The upstream provider timed out.", code="upstream_timeout")
    return ApiError(
        502,
        f"The upstream connection failed ({type(exc).__name__}).",
        type="upstream_error",
        code="upstream_unreachable",
    )


def retry_after_of(headers: Mapping[str, str]) -> str | None:
    """An upstream's wait before a retry, in seconds: OpenAI's `retry-after-ms` when it is a
    number (`retry-after` beside it is rounded up to whole seconds: 0.1 s read as 1, or a wait
    of 60 given up on), else `retry-after`."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return str(max(0.0, float(ms)) / 1000)
        except ValueError:
            pass
    return headers.get("retry-after")


def retry_wait(attempt: int, *, retryable: bool, retry_after: str | None = None) -> float | None:
    """The one retry policy of every upstream call, async (gateway) or sync (Celery workers):
    seconds to wait before attempt `attempt + 1`, or None to give up — not retryable, the
    ENGRAM_UPSTREAM_RETRIES budget spent, or a `retry-after` beyond ..._RETRY_MAX_WAIT.
    Without `retry-after`: exponential backoff from ..._RETRY_BACKOFF, with jitter so the
    callers of one failed moment do not all come back at once."""
    if not retryable or attempt >= settings.ENGRAM_UPSTREAM_RETRIES:
        return None
    if retry_after:
        try:
            wait = max(0.0, float(retry_after))
        except ValueError:
            wait = None
        if wait is not None:
            return wait if wait <= settings.ENGRAM_UPSTREAM_RETRY_MAX_WAIT else None
    base = settings.ENGRAM_UPSTREAM_RETRY_BACKOFF * (2**attempt)
    return base * (0.5 + random.random() / 2)


def _final(error: ApiError) -> bool:
    return error.headers.get("x-should-retry") == "false"


def retryable_status(status: int) -> bool:
    return status == 429 or status >= 500


# A 4xx of the moment (a timeout, a conflict, a rate limit) or a client that left (499): it
# says nothing of what the request holds.
_OF_THE_MOMENT = frozenset({408, 409, 429, 499})


def refused_status(status: int) -> bool:
    """Whether an answer's status refuses the request for what it holds (a part the model cannot
    read, a field it does not take, a model it does not have): any other 4xx."""
    return 400 <= status < 500 and status not in _OF_THE_MOMENT


def retryable_refusal(status: int, error: ApiError) -> bool:
    """Whether an upstream's refusal (`status`, as `refusal` read it) may be asked again: what
    the SDKs are told not to retry, Engram does not retry either."""
    return retryable_status(status) and not _final(error)


# The code of a reply no reader can use (not JSON, not the protocol's shape): a client can tell
# it from the upstream's own errors, which pass on theirs (often a wrong base URL or a proxy's
# page).
BAD_REPLY_CODE = "upstream_bad_reply"


def bad_reply(message: str = "The upstream provider sent an unexpected reply.") -> ApiError:
    """The 502 for an upstream reply that is not what its protocol says."""
    return ApiError(502, message, type="upstream_error", code=BAD_REPLY_CODE)
