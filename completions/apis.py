"""The gateway's Django doors: plain async views (no DRF on the hot path).

POST /v1/chat/completions (when the lean ASGI door is off), POST /v1/context (the exact messages
Engram would send upstream, and why; nothing stored), POST /v1/embeddings (Engram's own
embedding model: completions.embeddings), GET /v1/models. ApiKeyMiddleware has
already authenticated the request (request.workspace, request.api_key_id); every body and header
goes through completions.request, the one parser every door shares.
"""

from __future__ import annotations

import time

from django.http import HttpResponse, HttpResponseBase, JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt

from accounts.limits.middleware import counts_its_own_limits, counts_workspace_rates
from accounts.limits.policy import NO_POLICY
from accounts.requests import ApiRequest
from completions import embeddings, gateway, routing
from completions import request as chat_request
from completions.agents import calls as agent_calls
from completions.agents.cache import AgentConfig
from completions.catalogue import available_models
from completions.turn import Reply
from config.common import errors
from config.common.errors import EDGE_ERRORS, ApiError, api_error, workspace_key_required
from memory.turn.contract import TurnContext
from memory.turn.pipeline import prepare_turn


def _method_not_allowed(allowed: str) -> HttpResponse:
    response = ApiError(405, "Method not allowed.", code="method_not_allowed").response()
    response["Allow"] = allowed
    return response


def to_django(reply: Reply) -> HttpResponseBase:
    response: HttpResponseBase
    if reply.stream is not None:
        response = StreamingHttpResponse(
            reply.stream, status=reply.status, content_type=reply.content_type
        )
    else:
        response = HttpResponse(reply.body, status=reply.status, content_type=reply.content_type)
    for name, value in reply.headers.items():
        response[name] = value
    return response


@counts_its_own_limits  # with its tokens and credits (completions.charging)
@csrf_exempt
async def chat_completions(request: ApiRequest) -> HttpResponseBase:
    started = time.perf_counter()
    if request.method != "POST":
        return _method_not_allowed("POST")
    reply = await gateway.chat_completions(
        workspace=request.workspace,
        api_key_id=request.api_key_id,
        end_user=request.principal.end_user if request.principal else None,
        request_id=request.request_id,
        headers=request.headers,
        raw_body=request.body,
        started=started,
        limits=request.principal.limits if request.principal else NO_POLICY,
    )
    return to_django(reply)


@counts_its_own_limits  # with its tokens (completions.embeddings)
@csrf_exempt
async def embeddings_create(request: ApiRequest) -> HttpResponse:
    if request.method != "POST":
        return _method_not_allowed("POST")
    if request.workspace is None:
        return workspace_key_required().response()
    end_user = request.principal.end_user if request.principal else None
    try:
        parsed = embeddings.parse(request.body, headers=request.headers, end_user=end_user)
        body, headers = await embeddings.embed(
            parsed,
            workspace=request.workspace,
            api_key_id=request.api_key_id,
            request_id=request.request_id,
            limits=request.principal.limits if request.principal else NO_POLICY,
        )
    except EDGE_ERRORS as exc:
        return chat_request.api_error(exc, request.headers, end_user=end_user).response()
    response = HttpResponse(body, content_type="application/json")
    for name, value in headers.items():
        response[name] = value
    return response


# OpenAI APIs Engram does not serve, by their first path segment under /v1/: their 404 says
# where to go instead of "Unknown path" (the Responses API's /v1/responses/{id}/... too).
NOT_SERVED = {
    "responses": "the Responses API (/v1/responses)",
    "completions": "the legacy Completions API (/v1/completions)",
}


def handler404(request, exception=None) -> HttpResponse:
    """config.urls' handler404: config.common.errors.handler404, but for NOT_SERVED's paths."""
    path = request.path.removeprefix("/api")
    if path.startswith("/v1/"):
        first, _, rest = path.removeprefix("/v1/").partition("/")
        if first in NOT_SERVED and (first == "responses" or not rest):
            return ApiError(
                404,
                f"Engram does not serve {NOT_SERVED[first]}: it serves OpenAI's Chat "
                "Completions API. Send the request to POST /v1/chat/completions (with the "
                "SDK: client.chat.completions.create(model=..., messages=[...])).",
                code="not_found",
            ).response()
    return errors.handler404(request, exception)


async def models_list(request: ApiRequest) -> HttpResponse:
    if request.method != "GET":
        return _method_not_allowed("GET")
    if request.workspace is None:
        return workspace_key_required().response()
    return JsonResponse({"object": "list", "data": await available_models(request.workspace.id)})


async def models_retrieve(request: ApiRequest, model_id: str) -> HttpResponse:
    if request.method != "GET":
        return _method_not_allowed("GET")
    if request.workspace is None:
        return workspace_key_required().response()
    if agent_calls.is_agent(model_id):
        try:
            return JsonResponse(await agent_calls.model_async(request.workspace.id, model_id))
        except EDGE_ERRORS as exc:
            return api_error(exc).response()
    for model in await available_models(request.workspace.id):
        if model_id in (model["id"], model.get("agent_id")):
            return JsonResponse(model)
    return ApiError(
        404,
        f"The model '{model_id}' does not exist or you do not have access to it.",
        param="model",
        code="model_not_found",
    ).response()


@counts_workspace_rates  # the chat turn's recall: query embedding, vector queries
@csrf_exempt
async def context_preview(request: ApiRequest) -> HttpResponse:
    if request.method != "POST":
        return _method_not_allowed("POST")
    if request.workspace is None:
        return workspace_key_required().response()
    try:
        body = chat_request.parse_body(request.body, model_required=False)
        ctx = chat_request.turn_context(
            workspace=request.workspace,
            api_key_id=request.api_key_id,
            request_id=request.request_id,
            headers=request.headers,
            body=body,
            end_user=request.principal.end_user if request.principal else None,
        )
        agent = None
        if agent_calls.is_agent(ctx.model):
            agent = await agent_calls.resolve_async(request.workspace.id, ctx.model)
            await agent_calls.apply(ctx, agent)
        # The context the chat door would send: sized for the model the route names.
        ctx.upstream_model = (await routing.resolve_async(request.workspace.id, ctx.model)).model
        prepared = await prepare_turn(ctx, dry_run=True)
    except EDGE_ERRORS as exc:  # named as on the chat door: by the header that carried it
        end_user = request.principal.end_user if request.principal else None
        return chat_request.api_error(exc, request.headers, end_user=end_user).response()
    explain = prepared.explain
    response = JsonResponse(
        {
            "object": "context",
            "model": body.get("model") or "",
            "user_id": ctx.user_id,
            "agent": _agent_explained(ctx, agent),
            "messages": prepared.messages,
            "context_tokens": explain.get("context_tokens", 0),
            "budget": explain.get("budget"),
            "blocks": explain.get("blocks", []),
            "engram": prepared.engram,
        }
    )
    for name, value in prepared.headers.items():
        response[name] = value
    return response


def _agent_explained(ctx: TurnContext, agent: AgentConfig | None) -> dict | None:
    """Which agent version a context came from, and what it added to the request."""
    if agent is None:
        return None
    return {
        "id": agent.id,
        "name": agent.name,
        "version": agent.version,
        "model": agent.model,
        "instructions": agent_calls.instructions(agent, ctx),
        "parameters": dict(agent.parameters),
        "memory": dict(agent.memory),
        "collection_ids": list(agent.collection_ids),
    }
