"""The one OpenAI error envelope: {"error": {"message", "type", "param", "code"}}."""

from __future__ import annotations

import logging

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


def _first_error(detail, prefix: str = "") -> tuple[str | None, str]:
    """DRF's nested validation errors -> (param, message) of the first one."""
    if isinstance(detail, dict):
        for key, value in detail.items():
            name = key if key != "non_field_errors" else None
            param, message = _first_error(value, f"{prefix}{name}" if name else prefix)
            return param, message
    if isinstance(detail, list) and detail:
        if all(not isinstance(d, (dict, list)) for d in detail):
            return prefix or None, str(detail[0])
        for index, item in enumerate(detail):
            if item:
                return _first_error(item, f"{prefix}[{index}]." if prefix else f"[{index}].")
    return prefix or None, str(detail)


def drf_exception_handler(exc, context):
    if isinstance(exc, ApiError):
        return exc.response()
    if isinstance(exc, drf_exceptions.ValidationError):
        param, message = _first_error(exc.detail)
        if param:
            param = param.rstrip(".")
        text = f"{param}: {message}" if param else message
        return error_response(400, text, param=param, code="invalid_value")
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
        return error_response(413, "Request body too large.", code="request_too_large")
    return error_response(400, "Bad request.")


def handler403(request, exception=None):
    return error_response(403, "Permission denied.", code="forbidden")


def handler404(request, exception=None):
    return error_response(404, f"Unknown path: {request.method} {request.path}", code="not_found")


def handler500(request):
    return error_response(500, "Internal server error.", type="server_error")
