"""Domain errors, and the one OpenAI error envelope: {"error": {"message", "type", "param", "code"}}.

Services raise `DomainError`s (or let a selector's `DoesNotExist` through); they name the
domain field at fault and know nothing of HTTP. `api_error` is the one place either becomes an
`ApiError` (status, type, code, param): DRF's exception handler, `ErrorEnvelopeMiddleware` and
the chat doors (`completions.request.api_error`, which names headers) all call it.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping

from django.core.exceptions import ObjectDoesNotExist
from django.db import InterfaceError, OperationalError
from django.http import JsonResponse
from rest_framework import exceptions as drf_exceptions

logger = logging.getLogger("engram.errors")

_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    502: "upstream_error",
    503: "service_unavailable",
    504: "timeout_error",
}


class ApiError(Exception):
    """Raise anywhere in a request to answer with the envelope."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str | None = None,  # noqa: A002 - OpenAI's field name
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type or _TYPES.get(status, "invalid_request_error")
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict:
        return error_body(self.message, type=self.type, param=self.param, code=self.code)

    def response(self) -> JsonResponse:
        resp = JsonResponse(self.body(), status=self.status)
        for key, value in self.headers.items():
            resp[key] = value
        return resp


class DomainError(Exception):
    """A rule of the domain refused the work. `field` is the domain's name for the input at
    fault (`conversation_id`, `collection_ids`, `file`...); each edge says how it arrived."""

    def __init__(self, message: str, *, field: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.field = field
        self.code = code


class NotFound(DomainError):
    """No such thing in the caller's workspace (another workspace's is not found either)."""


class Forbidden(DomainError):
    """It exists, but belongs to someone else the caller may not act for."""


def unknown_id(noun: str, value: object) -> str:
    """The one message for an id that names nothing the caller may see."""
    return f"No {noun} '{value}'."


class NotYours(Forbidden):
    """It exists, but is another user's of the workspace. A workspace key, which may name any
    user, is told so (403); an end-user token is answered as for an id that does not exist
    (`api_error(end_user=True)`: 404 `not_found`), so it cannot tell which ids others hold
    (the chat doors answered it 403 where a REST door answers an unknown id 404)."""

    def __init__(self, message: str, *, field: str, noun: str, value: str):
        super().__init__(message, field=field)
        self.unknown = unknown_id(noun, value)


class Invalid(DomainError):
    """The input breaks a rule (shape, size of a small field, emptiness)."""


class TooLarge(DomainError):
    """The input is over a configured size limit."""


class Unsupported(DomainError):
    """The input is of a kind Engram cannot handle."""


class Gone(DomainError):
    """It existed and can no longer be used (a spent or expired single-use token): 410, which
    the OpenAI SDKs do not retry, unlike 409."""


class Conflict(DomainError):
    """Another holds it now (a tool run another process took over): 409, which the OpenAI SDKs
    retry."""


class Unavailable(DomainError):
    """The server cannot do it now (a resource of its own is exhausted, a full disk): 503,
    which the OpenAI SDKs retry; not the client's fault, not a bug."""


# (status, default code) of each kind of domain error.
_DOMAIN_STATUS: dict[type[DomainError], tuple[int, str]] = {
    NotFound: (404, "not_found"),
    Forbidden: (403, "forbidden"),
    Invalid: (400, "invalid_value"),
    TooLarge: (413, "too_large"),
    Unsupported: (415, "unsupported"),
    Gone: (410, "gone"),
    Conflict: (409, "conflict"),
    Unavailable: (503, "unavailable"),
}
# The knowledge API names what is missing; any other missing row is `not_found`.
NOT_FOUND_CODES = {
    "collection": "collection_not_found",
    "document": "document_not_found",
    "agent": "agent_not_found",
}
# A field a closed body does not have (config.common.closed).
UNKNOWN_PARAMETER = "unknown_parameter"
WORKSPACE_KEY_REQUIRED = "workspace_key_required"


def workspace_key_required() -> ApiError:
    """The one refusal of a caller that is not a workspace key (an end-user token, the operator
    key) on a workspace-key route, at every door: the REST views answered `forbidden` and the
    chat doors `workspace_key_required`, with three messages, for the same refusal."""
    return ApiError(
        403,
        "This endpoint needs a workspace API key.",
        type="permission_error",
        code=WORKSPACE_KEY_REQUIRED,
    )


# What `api_error` maps: what a door catches around the domain.
EDGE_ERRORS = (ApiError, DomainError, ObjectDoesNotExist)


def api_error(
    exc: ApiError | DomainError | ObjectDoesNotExist,
    *,
    params: Mapping[str, str] | None = None,
    url_kwargs: Mapping[str, object] | None = None,
    end_user: bool = False,
) -> ApiError:
    """The envelope for one of EDGE_ERRORS (anything else is a bug: the caller's 500).

    `params` maps a domain field to the name the client used for it (the chat doors' headers);
    an unmapped field keeps its own name, which is the body or URL field of the REST APIs.
    `url_kwargs` (the view's) name the id of a row that does not exist. `end_user`: the caller
    is an end-user token, to whom another user's row is one that does not exist (NotYours).
    """
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, DomainError):
        status, code = next(v for k, v in _DOMAIN_STATUS.items() if isinstance(exc, k))
        param = (params or {}).get(exc.field, exc.field) if exc.field else None
        if end_user and isinstance(exc, NotYours):
            return ApiError(404, exc.unknown, param=param, code="not_found")
        return ApiError(status, exc.message, param=param, code=exc.code or code)
    return _not_found(type(exc), url_kwargs or {})


def _not_found(missing: type[ObjectDoesNotExist], url_kwargs: Mapping[str, object]) -> ApiError:
    model = _model_of(missing)
    if model is None:
        return ApiError(404, "Not found.", code="not_found")
    name, noun = model._meta.model_name, str(model._meta.verbose_name)
    param = f"{name}_id" if f"{name}_id" in url_kwargs else None
    message = unknown_id(noun, url_kwargs[param]) if param else f"No such {noun}."
    return ApiError(404, message, param=param, code=NOT_FOUND_CODES.get(name, "not_found"))


def _model_of(missing: type[ObjectDoesNotExist]):
    """The model whose DoesNotExist this is; a scan of a few dozen classes, on 404s only."""
    from django.apps import apps

    return next((m for m in apps.get_models() if getattr(m, "DoesNotExist", None) is missing), None)


def error_body(message: str, *, type: str, param: str | None = None, code: str | None = None):  # noqa: A002
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def error_response(status: int, message: str, **kwargs) -> JsonResponse:
    return ApiError(status, message, **kwargs).response()


def invalid_api_key() -> ApiError:
    return ApiError(
        401,
        "Incorrect or missing API key. Pass it as 'Authorization: Bearer sk-...'.",
        type="invalid_request_error",
        code="invalid_api_key",
    )


def request_too_large() -> ApiError:
    """A body over ENGRAM_MAX_REQUEST_BYTES (DATA_UPLOAD_MAX_MEMORY_SIZE), or over a route's own
    limit: every door that reads one answers the same."""
    return ApiError(413, "Request body too large.", code="request_too_large")


def unsupported_content_encoding(coding: str) -> ApiError:
    """A body sent compressed (Content-Encoding: gzip, br...): Engram reads bodies as sent."""
    return ApiError(
        415,
        f"Content-Encoding '{coding}' is not supported; send the body uncompressed.",
        param="content-encoding",
        code="unsupported_media_type",
    )


# The database could not be reached or answer (down, restarting, out of connections, a query
# cancelled): the request may be retried, unlike a bug's 500. The OpenAI SDKs retry a 503 and
# honour retry-after.
DATABASE_UNAVAILABLE = (OperationalError, InterfaceError)
DATABASE_RETRY_AFTER_SECONDS = 1


def server_error() -> ApiError:
    """A bug's answer: the envelope, nothing of the exception (it is in the log)."""
    return ApiError(500, "Internal server error.", type="server_error")


def database_unavailable() -> ApiError:
    return ApiError(
        503,
        "The database is unavailable for the moment; retry shortly.",
        code="database_unavailable",
        headers={"retry-after": str(DATABASE_RETRY_AFTER_SECONDS)},
    )


# SQLSTATE classes in which the database refuses the input itself, which no retry changes:
# 54 "program limit exceeded" (a string too long for a tsvector, an index row over the btree
# maximum, a statement too complex: psycopg's ProgramLimitExceeded, an OperationalError, was
# answered 503 database_unavailable, which the SDKs retry). Not class 22 "data exception" (a
# character the encoding cannot hold, a number out of range): every door refuses such input
# before it is stored (NUL, lone surrogates, sizes: a 400 naming the field), so one that reaches
# the database is a value Engram made (a tool's output, an upstream's answer): a bug, its 500.
_REFUSED_INPUT = {
    "54": (
        413,
        "The request is over a limit of the database (a value too long to store or index, or "
        "a request too complex): send less.",
        "too_large",
    ),
}


def _sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE of a database error: psycopg's own, or the one Django's wrapper holds as
    its cause."""
    for error in (exc, exc.__cause__):
        state = getattr(error, "sqlstate", None)
        if isinstance(state, str):
            return state
    return None


def refused_input(exc: BaseException) -> bool:
    """Did the database refuse the input (SQLSTATE class 54), which no retry changes?"""
    state = _sqlstate(exc)
    return state is not None and state[:2] in _REFUSED_INPUT


def database_refused(exc: BaseException | None) -> ApiError | None:
    """The 4xx of a database error caused by the input (SQLSTATE class 54), else None.
    The answer names no SQL and no value; the database's own words go to the log."""
    if exc is None:
        return None
    state = _sqlstate(exc)
    refusal = _REFUSED_INPUT.get(state[:2]) if state else None
    if refusal is None:
        return None
    diag = getattr(exc.__cause__ if exc.__cause__ is not None else exc, "diag", None)
    logger.warning(
        "the database refused the input: SQLSTATE %s (%s): %s",
        state,
        type(exc).__name__,
        getattr(diag, "message_primary", None) or "",
    )
    status, message, code = refusal
    return ApiError(status, message, code=code)


def unexpected_error(exc: BaseException | None) -> ApiError:
    """The answer to an exception no door expected: a 4xx when the database refused the input
    (database_refused: no retry helps), 503 when the database is away (retry), a bug's 500
    otherwise."""
    refused = database_refused(exc)
    if refused is not None:
        return refused
    return database_unavailable() if isinstance(exc, DATABASE_UNAVAILABLE) else server_error()


def _first_error(detail, prefix: str = "") -> tuple[str | None, str, str | None]:
    """DRF's nested validation errors -> (param, message, code) of the first one. A list's
    errors come as a list or, since DRF 3.15, as a dict keyed by index: both name
    `messages[0].content`."""
    if isinstance(detail, dict):
        for key, value in detail.items():
            if key == "non_field_errors":
                where = prefix
            elif isinstance(key, int):
                where = f"{prefix}[{key}]"
            else:
                where = f"{prefix}.{key}" if prefix else str(key)
            return _first_error(value, where)
    if isinstance(detail, list) and detail:
        if all(not isinstance(d, (dict, list)) for d in detail):
            return prefix or None, str(detail[0]), getattr(detail[0], "code", None)
        for index, item in enumerate(detail):
            if item:
                return _first_error(item, f"{prefix}[{index}]")
    return prefix or None, str(detail), getattr(detail, "code", None)


def validation_error(exc: drf_exceptions.ValidationError) -> ApiError:
    """The 400 of a serializer's refusal: its first error, named by its path. A management
    command validating through the same serializer prints its message (accounts' commands)."""
    param, message, code = _first_error(exc.detail)
    if code == UNKNOWN_PARAMETER:  # config.common.closed: named with its whole path
        return ApiError(400, f"Unknown parameter: '{param}'.", param=param, code=code)
    text = f"{param}: {message}" if param else message
    return ApiError(400, text, param=param, code="invalid_value")


def drf_exception_handler(exc, context):
    if isinstance(exc, EDGE_ERRORS):
        return api_error(exc, url_kwargs=context.get("kwargs")).response()
    if isinstance(exc, drf_exceptions.ValidationError):
        return validation_error(exc).response()
    if isinstance(exc, drf_exceptions.ParseError):
        return error_response(400, f"Malformed request body: {exc.detail}", code="invalid_json")
    if isinstance(exc, drf_exceptions.UnsupportedMediaType):
        return error_response(415, str(exc.detail), code="unsupported_media_type")
    if isinstance(exc, drf_exceptions.MethodNotAllowed):
        return error_response(405, str(exc.detail), code="method_not_allowed")
    if isinstance(exc, (drf_exceptions.NotAuthenticated, drf_exceptions.AuthenticationFailed)):
        return invalid_api_key().response()
    if isinstance(exc, drf_exceptions.PermissionDenied):
        return error_response(403, str(exc.detail), code="forbidden")
    if isinstance(exc, drf_exceptions.NotFound):
        return error_response(404, str(exc.detail), code="not_found")
    if isinstance(exc, drf_exceptions.Throttled):
        return error_response(429, str(exc.detail), code="rate_limited")
    if isinstance(exc, drf_exceptions.APIException):
        return error_response(exc.status_code, str(exc.detail))
    from django.core.exceptions import PermissionDenied
    from django.http import Http404

    if isinstance(exc, Http404):
        return error_response(404, "Not found.", code="not_found")
    if isinstance(exc, PermissionDenied):
        return error_response(403, "Permission denied.", code="forbidden")
    return None  # ErrorEnvelopeMiddleware turns anything else into a 500 envelope


def handler400(request, exception=None):
    from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent

    if isinstance(exception, (RequestDataTooBig, TooManyFieldsSent)):
        return request_too_large().response()
    return error_response(400, "Bad request.")


def handler403(request, exception=None):
    return error_response(403, "Permission denied.", code="forbidden")


# An id may hold "/" and goes encoded in a path (config.common.ids.keep_encoded_slashes); sent
# as it is, `/v1/users/org/alice` is a path no route has. Said with the 404 of any deeper path
# under the API, the one place a client reading it can learn why.
ENCODED_SLASH_HINT = 'an id holding "/" goes encoded in a path, as %2F: /v1/users/org%2Falice'


def handler404(request, exception=None):
    path = request.path if len(request.path) <= 300 else f"{request.path[:300]}..."
    message = f"Unknown path: {request.method} {path}"
    api_path = request.path.removeprefix("/api").removeprefix("/v1/")
    if api_path != request.path and api_path.count("/") >= 2:  # /v1/<route>/<id>/<more>
        message += f" ({ENCODED_SLASH_HINT})"
    return error_response(404, message, code="not_found")


def handler500(request):
    # Django calls it inside its `except`: the exception is still the one being handled.
    return unexpected_error(sys.exc_info()[1]).response()
