"""The gateway's HTTP endpoints: plain async Django views (no DRF on the hot path).

ApiKeyMiddleware has already authenticated the request (request.workspace, request.api_key_id).
"""

from __future__ import annotations

import time

from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt

from completions import gateway
from completions.models_api import available_models
from config.errors import ApiError


def _method_not_allowed(allowed: str) -> HttpResponse:
    response = ApiError(405, "Method not allowed.", code="method_not_allowed").response()
    response["Allow"] = allowed
    return response


def _workspace_required() -> HttpResponse:
    return ApiError(
        403,
        "This endpoint needs a workspace API key.",
        type="permission_error",
        code="workspace_key_required",
    ).response()


def to_django(reply: gateway.Reply) -> HttpResponse:
    if reply.stream is not None:
        response = StreamingHttpResponse(
            reply.stream, status=reply.status, content_type=reply.content_type
        )
    else:
        response = HttpResponse(reply.body, status=reply.status, content_type=reply.content_type)
    for name, value in reply.headers.items():
        response[name] = value
    return response


@csrf_exempt
async def chat_completions(request: HttpRequest) -> HttpResponse:
    started = time.perf_counter()
    if request.method != "POST":
        return _method_not_allowed("POST")
    reply = await gateway.chat_completions(
        workspace=request.workspace,
        api_key_id=request.api_key_id,
        request_id=request.request_id,
        headers=request.headers,
        raw_body=request.body,
        started=started,
    )
    return to_django(reply)


async def models_list(request: HttpRequest) -> HttpResponse:
    if request.method != "GET":
        return _method_not_allowed("GET")
    if request.workspace is None:
        return _workspace_required()
    return JsonResponse({"object": "list", "data": await available_models(request.workspace.id)})


async def models_retrieve(request: HttpRequest, model_id: str) -> HttpResponse:
    if request.method != "GET":
        return _method_not_allowed("GET")
    if request.workspace is None:
        return _workspace_required()
    for model in await available_models(request.workspace.id):
        if model["id"] == model_id:
            return JsonResponse(model)
    return ApiError(
        404,
        f"The model '{model_id}' does not exist or you do not have access to it.",
        param="model",
        code="model_not_found",
    ).response()
