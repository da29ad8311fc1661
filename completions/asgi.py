"""The gateway's doors at the ASGI level.

POST /v1/chat/completions (and /api/v1/...) is served by `CompletionsApp`, a plain ASGI app
that does what the Django stack does for that path — the request id, the same key check
(accounts.authentication: one door for tenancy), the error envelope, cancelling the work when
the client disconnects — and calls the same `gateway.chat_completions` as the Django view.
Django's ASGI handler costs more per request than the whole latency budget on this 2-core
machine: a thread per request for its sync hops and one more to retire it, MiddlewareMixin's
thread hops for sessions/CSRF/auth/messages, the request signals (see bench/README.md for the
figures). ENGRAM_GATEWAY_FAST_PATH=false serves the path with the Django view instead.

/v1/models goes to `GatewayHandler`: Django with only the async-native middleware.
Every other path is served by the project's normal Django application.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import AsyncGenerator
from typing import Any

from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.exception import convert_exception_to_response
from django.urls import get_resolver
from django.utils.module_loading import import_string

from accounts.authentication import bearer_token, resolve_async
from completions import gateway
from completions.conf import conf
from completions.providers import hops
from completions.streaming import DONE, dumps
from completions.turn import Reply
from config.common.body_headers import body_refusal, send_refusal
from config.common.errors import (
    DATABASE_UNAVAILABLE,
    ApiError,
    database_refused,
    invalid_api_key,
    request_too_large,
    unexpected_error,
)
from config.common.ids import keep_encoded_slashes
from config.common.logging import request_id_var
from config.common.middleware import request_headers, request_id_for

logger = logging.getLogger("engram.gateway")

GATEWAY_MIDDLEWARE = (
    "config.common.middleware.RequestIdMiddleware",
    "config.common.middleware.ErrorEnvelopeMiddleware",
    "completions.middleware.LoopGuardMiddleware",
    "accounts.middleware.ApiKeyMiddleware",
)
_JSON = (b"content-type", b"application/json")
_SSE = (b"content-type", b"text/event-stream")
_BRACKET = DONE[-3]  # `]`, DONE's last byte before its blank line


class _Disconnected(Exception):
    pass


class CompletionsApp:
    async def __call__(self, scope, receive, send) -> None:
        started = time.perf_counter()
        headers = request_headers(scope["headers"])
        request_id = request_id_for(headers.get("x-request-id", ""))
        request_id_var.set(request_id)
        base = [(b"x-request-id", request_id.encode())]
        looped = hops.refused(headers.get(hops.HEADER))
        if looped is not None:  # before the key: a looping Engram sends its upstream's key
            return await self._error(send, looped, base)
        unread = body_refusal(headers, conf().max_body)
        if unread is not None:  # before the key, as every door (config.common.body_headers)
            return await send_refusal(send, unread, base)
        token = bearer_token(headers.get("authorization", ""))
        try:
            principal = await resolve_async(token, headers.get("x-workspace-id")) if token else None
        except ApiError as refused:  # an end-user token that failed a check says which
            return await self._error(send, refused, base)
        except Exception as exc:  # the envelope all the same, not uvicorn's plain-text 500
            return await self._error(send, _unexpected(exc, "the key check failed"), base)
        if principal is None:  # as ApiKeyMiddleware: the key before anything else
            return await self._error(send, invalid_api_key(), base)
        if scope["method"] != "POST":
            error = ApiError(405, "Method not allowed.", code="method_not_allowed")
            return await self._error(send, error, [*base, (b"allow", b"POST")])
        try:
            body = await self._body(receive, headers)
        except _Disconnected:
            return
        except ApiError as error:
            return await self._error(send, error, base)
        # The work runs in this task; a watcher cancels it if the client hangs up, which
        # closes the upstream request (streaming or not).
        current = asyncio.current_task()
        assert current is not None  # an ASGI app is always awaited inside a task
        state = {"done": False, "cut": False}
        # A task made directly, not ensure_future: its isfuture(coroutine) is a hasattr on the
        # class that fails, a formatted AttributeError (~2,300 instructions); named, as
        # streaming.waking_task's (no "Task-<n>" formatted).
        watcher = asyncio.Task(
            self._disconnect(receive, current, state),
            loop=asyncio.get_running_loop(),
            name="engram-disconnect-watch",
        )
        try:
            await self._respond(send, base, principal, request_id, headers, body, started)
        except asyncio.CancelledError:
            if not state["cut"]:
                raise
            current.uncancel()
        finally:
            state["done"] = True
            watcher.cancel()

    @staticmethod
    async def _body(receive, headers: dict) -> bytes:
        limit = conf().max_body  # a declared length over it was refused before (__call__)
        chunks = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _Disconnected
            chunk = message.get("body", b"")
            size += len(chunk)
            if limit is not None and size > limit:
                raise request_too_large()
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    @staticmethod
    async def _disconnect(receive, task: asyncio.Task, state: dict) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        if not state["done"]:
            state["cut"] = True
            task.cancel()

    @staticmethod
    async def _error(send, error: ApiError, head: list) -> None:
        payload = dumps(error.body())
        extra = [(k.encode(), v.encode()) for k, v in error.headers.items()]
        await send(
            {
                "type": "http.response.start",
                "status": error.status,
                "headers": [*head, *extra, _JSON, (b"content-length", b"%d" % len(payload))],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    @staticmethod
    async def _respond(send, base, principal, request_id, headers, body, started) -> None:
        try:
            reply = await gateway.chat_completions(
                workspace=principal.workspace,
                api_key_id=principal.key_id,
                end_user=principal.end_user,
                request_id=request_id,
                headers=headers,
                raw_body=body,
                started=started,
                limits=principal.limits,
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            error = _unexpected(exc, "completion failed")
            reply = Reply.of_error(error)
        head = [*base, *((k.encode(), v.encode()) for k, v in reply.headers.items())]
        if reply.stream is None:
            head += [_JSON, (b"content-length", b"%d" % len(reply.body))]
            await send({"type": "http.response.start", "status": reply.status, "headers": head})
            await send({"type": "http.response.body", "body": reply.body})
            return
        await send_stream(send, reply.status, [*head, _SSE], reply.stream)


def _unexpected(exc: Exception, what: str) -> ApiError:
    """Its envelope (config.common.errors.unexpected_error), logged: a database away as a
    warning with its kind, anything else with its traceback. An input the database refused
    is its 4xx, logged there (no "database unavailable" of a program limit)."""
    refused = database_refused(exc)
    if refused is not None:
        return refused
    if isinstance(exc, DATABASE_UNAVAILABLE):  # a key not cached, or a turn's store
        logger.warning("%s: database unavailable (%s)", what, type(exc).__name__)
    else:
        logger.exception(what)
    return unexpected_error(exc)


async def send_stream(send, status: int, head: list, stream: AsyncGenerator[bytes, None]) -> None:
    """An SSE reply: its status and headers, then each part as it comes."""
    try:
        await send({"type": "http.response.start", "status": status, "headers": head})
        # [DONE] is a stream's last frame: the part that ends with it waits for the stream to
        # end (at once) and goes out with the chunked body's end, one write for both.
        last = b""
        async for part in stream:
            if last:
                await send({"type": "http.response.body", "body": last, "more_body": True})
                last = b""
            # A chunk's frame ends in `}` and a blank line: endswith, which parses its argument,
            # only for a part that may be the last (a relayed frame 52,271 -> 51,903
            # instructions, bench_relay_cpu.py --callgrind).
            if len(part) > 2 and part[-3] == _BRACKET and part.endswith(DONE):
                last = part
            else:
                await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body", "body": last})
    except OSError:  # the client went away mid-write (uvicorn's ClientDisconnected)
        pass
    finally:
        await stream.aclose()


class GatewayHandler(ASGIHandler):
    """Django for the gateway's other async views: only the async-native middleware."""

    def load_middleware(self, is_async: bool = False) -> None:
        self._view_middleware: list[Any] = []
        self._template_response_middleware: list[Any] = []
        self._exception_middleware: list[Any] = []
        # Django's own async response path; private, so django-stubs leaves it out.
        handler = convert_exception_to_response(self._get_response_async)  # type: ignore[attr-defined]
        for path in reversed(GATEWAY_MIDDLEWARE):
            handler = convert_exception_to_response(import_string(path)(handler))
        self._middleware_chain = handler

    async def __call__(self, scope, receive, send) -> None:
        # No ThreadSensitiveContext: these views are async; Django's few sync hops (request
        # signals) share asgiref's one thread instead of starting a thread per request.
        await self.handle(scope, receive, send)


def _route(path: str) -> str | None:
    path = path.removeprefix("/api")
    if path == "/v1/chat/completions":
        return "completions"
    if path == "/v1/models" or path.startswith("/v1/models/"):
        return "models"
    return None


def with_gateway(app):
    """Wrap the project's ASGI app so the gateway's paths take their lean doors."""
    completions = CompletionsApp()
    lean = GatewayHandler()
    get_resolver().url_patterns  # noqa: B018 - load the URLconf now, not on a request
    # Everything loaded so far lives as long as the process: keep it out of the cyclic GC's
    # full collections, which otherwise stall the event loop for tens of ms under load.
    gc.freeze()

    async def application(scope, receive, send):
        if scope["type"] != "http":
            return await app(keep_encoded_slashes(scope), receive, send)
        route = _route(scope["path"])
        if route == "completions" and conf().fast_path:
            return await completions(scope, receive, send)  # its own check, the same rule
        headers = request_headers(scope["headers"])
        refused = body_refusal(headers, conf().max_body)
        if refused is not None:  # before any door reads the body (config.common.body_headers)
            head = [(b"x-request-id", request_id_for(headers.get("x-request-id", "")).encode())]
            return await send_refusal(send, refused, head)
        if route is not None:
            await lean(scope, receive, send)
        else:
            await app(keep_encoded_slashes(scope), receive, send)

    return application
