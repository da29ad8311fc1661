"""POST /v1/chat/completions, independent of the web framework (apis.py adapts it to Django).

One request: parse and validate the body, build the memory TurnContext from the headers,
route the model (cached, no database query), `prepare_turn`, call the provider, answer (JSON
or the SSE relay), then hand the answer to memory (`finish_turn_soon`) and buffer a usage
record — neither delays the response.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping

from accounts.limits.policy import NO_POLICY, Policy
from accounts.models import Workspace
from completions import charging, engram_tools, request, routing, validation
from completions.agents import calls as agent_calls
from completions.conf import conf
from completions.providers.base import Call
from completions.providers.registry import Route
from completions.providers.upstream_errors import refused_status
from completions.streaming import done_within, dumps, relay, transcribed, waking_task
from completions.turn import Reply, Turn
from config.common.errors import EDGE_ERRORS, unexpected_error, workspace_key_required
from memory.turn.contract import PreparedTurn
from memory.turn.pipeline import prepare_turn

logger = logging.getLogger("engram.gateway")


async def chat_completions(
    *,
    workspace: Workspace | None,
    api_key_id: str | None,
    request_id: str,
    headers: Mapping[str, str],
    raw_body: bytes,
    started: float,
    end_user: str | None = None,
    limits: Policy = NO_POLICY,
) -> Reply:
    if workspace is None:
        return Reply.of_error(workspace_key_required())
    turn = Turn(workspace=workspace, api_key_id=api_key_id, request_id=request_id, started=started)
    turn.end_user = end_user
    turn.charge.limits = limits
    try:
        return await _serve(turn, headers, raw_body)
    except EDGE_ERRORS as exc:  # the provider's ApiError, or the memory's domain error
        error = request.api_error(exc, headers, end_user=turn.end_user)
        turn.finish(
            status=error.status,
            error_code=error.code or error.type,
            refused=refused_status(error.status),
        )
        return Reply.of_error(error, turn.timing_headers())
    except asyncio.CancelledError:  # the client went away before the answer
        turn.finish(status=499, incomplete=True, error_code="client_closed")
        raise
    except Exception as exc:  # a bug: the door answers 500; the limits' lease is freed here
        error = unexpected_error(exc)
        turn.finish(status=error.status, incomplete=True, error_code=error.code or error.type)
        raise


async def _serve(turn: Turn, headers: Mapping[str, str], raw_body: bytes) -> Reply:
    body = validation.parse(raw_body)
    if isinstance(body.get("model"), str):
        turn.model = body["model"]  # named in the usage record even when the body is refused
    validation.validate(body)
    turn.stream = body.get("stream") is True
    turn.client_request_id = validation.client_request_id(body)
    turn.ctx = ctx = request.turn_context(
        workspace=turn.workspace,
        api_key_id=turn.api_key_id,
        request_id=turn.request_id,
        headers=headers,
        body=body,
        end_user=turn.end_user,
    )
    if agent_calls.is_agent(turn.model):
        await agent_calls.apply(ctx, await agent_calls.resolve_async(turn.workspace.id, turn.model))
        turn.agent = ctx.agent
        from completions.tools.entry import refuse_unsupported, sent_again

        await refuse_unsupported(turn, body)  # before anything of the turn is stored
        await sent_again(turn, body)  # before it is stored: a retry's goes where its run's did
    declared = engram_tools.take_declared(body)
    turn.route = route = await routing.resolve_async(turn.workspace.id, ctx.model)
    ctx.upstream_model = route.model
    await _admit(turn, route, body)
    if turn.replay_of is not None:  # nothing stored, recalled or run: the answer it had
        from completions.tools.entry import replay

        return await replay(turn, body)
    turn.prepared = prepared = await prepare_turn(ctx)
    turn.engram = dict(prepared.engram or {})
    if declared:
        turn.tool_calls = engram_tools.tool_calls(declared, ctx, prepared)
    call = Call(
        body={**body, "messages": prepared.messages, "model": route.model},
        upstream=route.upstream,
        request_id=turn.request_id,
    )
    turn.charge.sent = call.body
    turn.upstream_started = time.perf_counter()
    if turn.agent is not None:  # an agent's server-side tools: its run loop answers
        from completions.tools.entry import serve as tools_serve

        reply = await tools_serve(turn, route, call, body)
        if reply is not None:
            return reply
    if turn.stream:
        return await _stream(turn, route, prepared, call, body)
    return await _complete(turn, route, prepared, call)


async def _admit(turn: Turn, route: Route, body: dict) -> None:
    """Limits and budgets, before memory's work and the upstream call (429 when over)."""
    await charging.admit(
        turn.charge,
        workspace_id=turn.workspace.id,
        key_id=turn.api_key_id,
        user_id=turn.ctx.user_id if turn.ctx else None,
        request_id=turn.request_id,
        upstream_model=route.model,
        provider=route.provider.name,
        body=body,
    )


async def _complete(turn: Turn, route: Route, prepared: PreparedTurn, call: Call) -> Reply:
    completion = await route.provider.complete(call)
    turn.upstream_ms = completion.upstream_ms
    data = completion.data
    choices = data.get("choices") or []
    first = choices[0] if choices and isinstance(choices[0], dict) else {}
    assistant = first.get("message")  # what memory stores: the model's, without Engram's calls
    # Every choice's message, charged when the upstream reported no usage (llama.cpp's older
    # servers, proxies): choice 0's alone was, and an `n` of 3 cost a third of its answer.
    written = [
        transcribed(c["message"])
        for c in choices
        if isinstance(c, dict) and isinstance(c.get("message"), dict)
    ]
    turn.finish(
        status=200, assistant=transcribed(assistant), usage=data.get("usage"), written=written
    )
    data["engram"] = turn.engram  # credits_charged and request_id: finish put them there
    # No usage reported (llama.cpp's server, older vLLM, proxies): the estimate charged, as
    # OpenAI's answer always has `usage` and the SDKs read it; the upstream's goes as it came.
    if not charging.reported(data.get("usage")):
        reported = data.get("usage")
        data["usage"] = {
            **(reported if isinstance(reported, dict) else {}),
            **(turn.usage_charged() or {}),
        }
    if turn.agent:
        data["model"] = turn.model  # the agent's name as the client sent it
    if turn.tool_calls and isinstance(assistant, dict):
        first["message"] = {
            **assistant,
            "tool_calls": [*turn.tool_calls, *(assistant.get("tool_calls") or [])],
        }
    payload = dumps(data)
    await turn.reply_committed()
    headers = {**prepared.headers, **turn.limit_headers(), **turn.timing_headers()}
    return Reply(200, headers, payload)


async def _stream(
    turn: Turn, route: Route, prepared: PreparedTurn, call: Call, body: dict
) -> Reply:
    keepalive = conf().keepalive
    opener = waking_task(route.provider.stream(call))
    try:
        opened = await done_within(opener, keepalive)
    except asyncio.CancelledError:
        opener.cancel()
        raise
    if opened:
        stream = opener.result()  # ApiError here is still a proper status and envelope
        turn.upstream_ms = stream.upstream_ms
    headers = {
        **prepared.headers,
        **turn.limit_headers(),
        **turn.timing_headers(),
        "cache-control": "no-cache",
        "x-accel-buffering": "no",
    }
    events = relay(
        turn,
        opener,
        include_usage=validation.include_usage(body),
        keepalive=keepalive,
        model=turn.model if turn.agent else None,
        tool_calls=turn.tool_calls,
        stream_id=f"chatcmpl-{turn.request_id}",
        client_model=turn.model,
    )
    return Reply(200, headers, stream=events, content_type="text/event-stream")
