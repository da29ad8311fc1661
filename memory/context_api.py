"""POST /v1/context: the exact messages Engram would send upstream, and why — nothing stored."""

from __future__ import annotations

from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt

from config.errors import ApiError
from config.middleware import json_body
from memory.headers import turn_context

ROLES = {"system", "developer", "user", "assistant", "tool", "function"}


def validate_messages(body: dict) -> list[dict]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(
            400, "messages must be a non-empty array.", param="messages", code="invalid_value"
        )
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise ApiError(
                400,
                f"messages[{index}] must be an object with a role among {sorted(ROLES)}.",
                param=f"messages[{index}].role",
                code="invalid_value",
            )
    if "model" in body and not isinstance(body["model"], str):
        raise ApiError(400, "model must be a string.", param="model", code="invalid_value")
    return messages


@csrf_exempt
async def context_view(request):
    try:
        return await _context(request)
    except ApiError as exc:
        return exc.response()


async def _context(request):
    if request.method != "POST":
        raise ApiError(405, "Use POST.", code="method_not_allowed")
    if request.workspace is None:
        raise ApiError(403, "This endpoint needs a workspace API key.", code="forbidden")
    body = json_body(request)
    validate_messages(body)
    ctx = turn_context(request, body)
    from completions.enrichment import prepare_turn

    prepared = await prepare_turn(ctx, dry_run=True)
    explain = prepared.explain
    payload = {
        "object": "context",
        "model": ctx.model,
        "user_id": ctx.user_id,
        "messages": prepared.messages,
        "context_tokens": explain.get("context_tokens", 0),
        "budget": explain.get("budget"),
        "blocks": explain.get("blocks", []),
        "engram": prepared.engram,
    }
    response = JsonResponse(payload)
    for key, value in prepared.headers.items():
        response[key] = value
    return response
