"""Where the chat door hands an agent with tools to the tool loop (completions.tools.run), and
`POST /v1/chat/resume`, which continues a paused run. Both answer in the shapes of
/v1/chat/completions (completions.gateway.Reply), streamed or not."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from accounts.models import Workspace
from completions import charging, pricing, routing, usage
from completions.providers.base import Call
from completions.providers.registry import Route
from completions.request import caller_user
from completions.streaming import dumps
from completions.tools import cache, services
from completions.tools.executor import Scope
from completions.tools.models import Approval, Execution
from completions.tools.run import Resumed, Run, complete, db, upstream_body
from completions.tools.stream import Streamer
from config.common import errors, jsonbody
from config.common.background import spawn
from config.common.errors import EDGE_ERRORS, ApiError, Invalid

if TYPE_CHECKING:
    from completions.gateway import Reply, Turn

logger = logging.getLogger("engram.tools")
_SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


def _reply(status: int, headers: dict[str, str], body: bytes = b"", stream=None) -> Reply:
    from completions.gateway import Reply

    if stream is not None:
        return Reply(
            status, {**headers, **_SSE_HEADERS}, stream=stream, content_type="text/event-stream"
        )
    return Reply(status, headers, body)


async def serve(turn: Turn, route: Route, call: Call, body: dict) -> Reply | None:
    """The answer of an agent call when the agent has tools; None when it has none."""
    assert turn.agent is not None and turn.ctx is not None and turn.prepared is not None
    tools = await cache.tools_async(turn.workspace.id, turn.agent["id"])
    if not tools:
        return None
    ctx = turn.ctx
    execution = await db(
        services.execution_create,
        workspace=turn.workspace,
        agent_id=turn.agent["id"],
        user_id=ctx.user_id or "",
        request_id=turn.request_id,
        model=turn.model,
        route_model=ctx.model,
        stream=turn.stream,
        body=upstream_body(call.body, tools),
        collection_ids=list(ctx.collection_ids),
        conversation_pk=getattr(turn.prepared.state, "conversation_pk", "") or "",
        session_pk=getattr(turn.prepared.state, "session_pk", "") or "",
    )
    execution.messages = list(call.body.get("messages") or [])
    run = Run(
        execution=execution,
        tools={t.name: t for t in tools},
        route=route,
        scope=Scope(turn.workspace, ctx.user_id, tuple(ctx.collection_ids)),
        request_id=turn.request_id,
        engram=dict(turn.engram),
        preface=list(turn.tool_calls),
    )
    headers = dict(turn.prepared.headers)
    if turn.stream:

        def on_end(status: int, assistant: dict | None, incomplete: bool, code: str) -> None:
            async def finish() -> None:
                await _store(run, _before_answer(run, assistant), extraction=False)
                turn.upstream_ms = run.upstream_ms
                turn.finish(
                    status=status,
                    assistant=assistant,
                    usage=dict(run.spent) or None,
                    incomplete=incomplete,
                    error_code=code,
                )

            spawn(finish(), name="tools_finish")

        streamer = Streamer(run, include_usage=_include_usage(body), on_end=on_end)
        return _reply(200, {**headers, **turn.timing_headers()}, stream=streamer.frames())
    answer = await complete(run)
    # The tool calls and results first; finish_turn stores the answer after them.
    await _store(run, _before_answer(run, answer.assistant), extraction=False)
    turn.upstream_ms = run.upstream_ms
    turn.finish(status=200, assistant=answer.assistant, usage=dict(run.spent) or None)
    # finish charged the run's every upstream call: credits_charged and the client's request id
    answer.data["engram"] = {**(answer.data.get("engram") or {}), **turn.engram}
    await turn.reply_committed()
    headers |= turn.limit_headers()
    return _reply(200, {**headers, **turn.timing_headers()}, dumps(answer.data))


def _before_answer(run: Run, assistant: dict | None) -> list[dict]:
    """The run's new messages but the answer, which finish_turn stores as the turn's."""
    if assistant is not None and run.transcript and run.transcript[-1] is assistant:
        return run.transcript[:-1]
    return run.transcript


async def _store(
    run: Run, messages: list[dict], *, extraction: bool, resumed: bool = False
) -> None:
    """Into the turn's conversation; a failure loses history, never the answer."""
    try:
        await db(
            services.execution_messages_store,
            execution=run.execution,
            messages=messages,
            extraction=extraction,
            resumed=resumed,
        )
    except Exception:
        logger.exception("storing the tool run's messages failed")


async def _extraction(workspace_id: str, agent_id: str) -> bool:
    """The agent's memory policy: are its turns' memories extracted?"""
    from completions.agents.cache import agents_async

    agent = (await agents_async(workspace_id)).by_id.get(agent_id)
    return agent is None or agent.memory.get("extraction", True) is not False


def _include_usage(body: dict) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


# --- POST /v1/chat/resume -------------------------------------------------------------------


def _resume_fields(raw: bytes) -> tuple[str, bool, str, bool, Any]:
    body = jsonbody.loads_object(raw)
    unknown = sorted(
        set(body) - {"approval_id", "decision", "reason", "stream", "stream_options", "user"}
    )
    if unknown:
        raise Invalid(f"Unknown field '{unknown[0]}'.", field=unknown[0], code="unknown_field")
    approval_id = body.get("approval_id")
    if not isinstance(approval_id, str) or not approval_id:
        raise Invalid(
            "approval_id is required.", field="approval_id", code="missing_required_parameter"
        )
    decision = body.get("decision")
    if decision not in ("approve", "reject"):
        raise Invalid('decision must be "approve" or "reject".', field="decision")
    reason = body.get("reason") or ""
    if not isinstance(reason, str) or len(reason) > 2000:
        raise Invalid("reason must be a string of 2,000 characters at most.", field="reason")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise Invalid("stream must be a boolean.", field="stream")
    return approval_id, decision == "approve", reason, stream, body


async def resume(
    *,
    workspace: Workspace | None,
    api_key_id: str | None,
    request_id: str,
    headers: Mapping[str, str],
    raw_body: bytes,
    started: float,
    end_user: str | None = None,
) -> Reply:
    if workspace is None:
        error = ApiError(
            403,
            "This endpoint needs a workspace API key.",
            type="permission_error",
            code="workspace_key_required",
        )
        return _reply(error.status, {}, dumps(error.body()))
    try:
        approval_id, approve, reason, stream, body = _resume_fields(raw_body)
        user_id = caller_user(headers=headers, body=body, end_user=end_user)
        claimed = await db(
            services.approval_claim,
            workspace=workspace,
            approval_id=approval_id,
            user_id=user_id,
            approve=approve,
            reason=reason,
        )
        execution = claimed.execution
        route = await routing.resolve_async(workspace.id, execution.route_model)
    except EDGE_ERRORS as exc:
        error = errors.api_error(exc)
        return _reply(error.status, dict(error.headers), dumps(error.body()))
    tools = await cache.tools_async(workspace.id, execution.agent_id)
    run = Run(
        execution=execution,
        tools={t.name: t for t in tools},
        route=route,
        scope=Scope(workspace, execution.user_id or None, tuple(execution.collection_ids)),
        request_id=request_id,
    )
    resumed: Resumed | None = _resumed(run, claimed.approval, approve, reason, claimed.retry)
    if claimed.retry and resumed is not None:
        resumed = run.recover(resumed)
    execution.status = Execution.Status.RUNNING
    execution.stream = stream
    extraction = await _extraction(workspace.id, execution.agent_id)
    account = _Account(run, workspace, api_key_id, request_id, started, stream)
    account.charge.price = await pricing.price_async(route.model)
    if stream:

        def on_end(status: int, assistant: dict | None, incomplete: bool, code: str) -> None:
            account.end(status, assistant, incomplete, code)
            if assistant is not None:  # a failed run's part is stored by its retry, once
                spawn(
                    _store(run, run.transcript, extraction=extraction, resumed=True),
                    name="tools_store",
                )

        streamer = Streamer(run, include_usage=_include_usage(body), on_end=on_end)
        return _reply(200, {}, stream=streamer.frames(resumed))
    try:
        answer = await complete(run, resumed)
    except EDGE_ERRORS as exc:  # the upstream's error: the run is recorded as failed
        error = errors.api_error(exc)
        account.end(error.status, None, True, error.code or error.type)
        return _reply(error.status, dict(error.headers), dumps(error.body()))
    account.end(200, answer.assistant, False, "")
    answer.data["engram"] = {**(answer.data.get("engram") or {}), **account.engram}
    await _store(run, run.transcript, extraction=extraction, resumed=True)
    return _reply(
        200,
        {"openai-processing-ms": str(round((time.perf_counter() - started) * 1000))},
        dumps(answer.data),
    )


def _resumed(run: Run, approval: Approval, approve: bool, reason: str, retry: bool) -> Resumed:
    execution = run.execution
    message = execution.pending.get("message") or {}
    calls = [c for c in message.get("tool_calls") or () if isinstance(c, dict)]
    waiting = set(execution.pending.get("waiting") or ())
    # A tool deleted while the run waited cannot run: its call is answered as rejected.
    gone = {c["id"] for c in calls if (c.get("function") or {}).get("name") not in run.tools}
    run.step(
        "approval",
        approval_id=approval.id,
        decision="approve" if approve else "reject",
        status="retried" if retry else approval.status,
        reason=reason,
    )
    rejected = (set() if approve else waiting) | gone
    return Resumed(message=message, calls=calls, rejected=rejected, reason=reason)


class _Account:
    """The usage record of a resume: every upstream call it made, summed."""

    def __init__(
        self,
        run: Run,
        workspace: Workspace,
        api_key_id: str | None,
        request_id: str,
        started: float,
        stream: bool,
    ):
        self.run, self.workspace, self.api_key_id = run, workspace, api_key_id
        self.request_id, self.started, self.stream = request_id, started, stream
        self.done = False
        # A resume's upstream calls are charged at the table's price like any answer's; the
        # run's limits and budget were reserved by the request that started it.
        self.charge = charging.Charge()
        self.engram: dict = {}

    def end(self, status: int, assistant: dict | None, incomplete: bool, code: str) -> None:
        if self.done:
            return
        self.done = True
        run, tokens = self.run, self.run.spent
        credits = charging.finish(
            self.charge,
            usage=dict(tokens) or None,
            assistant=assistant,
            engram=self.engram,
            request_id=self.request_id,
        )
        usage.record(
            usage.Usage(
                workspace_id=self.workspace.id,
                api_key_id=self.api_key_id or "",
                user_id=run.execution.user_id,
                request_id=self.request_id,
                model=run.execution.model[:200],
                upstream_model=run.route.model[:200],
                provider=run.route.provider.name,
                stream=self.stream,
                status_code=status,
                error_code=code[:64],
                prompt_tokens=tokens.get("prompt_tokens"),
                completion_tokens=tokens.get("completion_tokens"),
                total_tokens=tokens.get("total_tokens"),
                latency_ms=(time.perf_counter() - self.started) * 1000,
                upstream_ms=run.upstream_ms,
                incomplete=incomplete,
                agent_id=run.execution.agent_id,
                credits=credits,
            )
        )
