"""Where the chat door hands an agent with tools to the tool loop (completions.tools.run), and
`POST /v1/chat/resume`, which continues a paused run. Both answer in the shapes of
/v1/chat/completions (completions.turn.Reply), streamed or not."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from django.utils import timezone

from accounts.limits.policy import NO_POLICY, Policy
from accounts.models import Workspace
from completions import charging, request, routing, validation
from completions.providers.base import Call
from completions.providers.registry import Route
from completions.request import caller_user
from completions.streaming import dumps, ending, own_chunk
from completions.tools import cache, policy, selectors, services
from completions.tools.executor import Scope
from completions.tools.models import Approval, Execution
from completions.tools.run import (
    Resumed,
    Run,
    complete,
    db,
    declares_client_tools,
    failed,
    request_usage,
    upstream_body,
    usage_of,
)
from completions.tools.stream import Streamer, open_first
from completions.turn import Reply, Turn
from config.common import errors, jsonbody
from config.common.background import spawn
from config.common.closed import unknown_fields_check
from config.common.errors import (
    EDGE_ERRORS,
    ApiError,
    Gone,
    Invalid,
    NotFound,
    unexpected_error,
    workspace_key_required,
)
from config.common.ids import identifier
from memory.turn.contract import TurnContext

logger = logging.getLogger("engram.tools")
_SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


def _error_reply(error: ApiError, headers: dict[str, str] | None = None) -> Reply:
    return Reply.of_error(error, headers)


def _reply(status: int, headers: dict[str, str], body: bytes = b"", stream=None) -> Reply:
    if stream is not None:
        return Reply(
            status, {**headers, **_SSE_HEADERS}, stream=stream, content_type="text/event-stream"
        )
    return Reply(status, headers, body)


async def refuse_unsupported(turn: Turn, body: dict) -> None:
    """What an agent with tools cannot do, refused before the turn is admitted or stored: `n`
    over 1 (its run follows one answer: the tools the model calls, then the model again), and
    the deprecated `functions` (its tools go upstream as `tools`, and OpenAI refuses a request
    with both; every OpenAI SDK sends the same functions as `tools`)."""
    assert turn.agent is not None
    n_over_one = (body.get("n") or 1) > 1
    functions = body.get("functions") is not None
    if not (n_over_one or functions):
        return
    if not await cache.tools_async(turn.workspace.id, turn.agent["id"]):
        return
    if functions:
        raise ApiError(
            400,
            "functions is not supported by an agent with tools: its tools go to the model as "
            '`tools`, which cannot be sent beside the deprecated `functions`. Send each as {"type": '
            '"function", "function": {...}} in `tools` (and `function_call` as `tool_choice`).',
            param="functions",
            code="unsupported",
        )
    raise ApiError(
        400,
        "n greater than 1 is not supported by an agent with tools: its run follows one "
        "answer of the model.",
        param="n",
        code="unsupported",
    )


def request_digest(turn: Turn, body: dict) -> str:
    """What makes a chat request the same one sent again: the model (the agent) it names, its
    conversation and session ids, its messages. The OpenAI SDKs retry a timeout, a 5xx or a
    lost connection with the same body and no Idempotency-Key."""
    assert turn.ctx is not None
    what = [turn.model, turn.ctx.conversation_id, turn.ctx.session_id, body.get("messages")]
    payload = json.dumps(what, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def _in_progress(execution: Execution) -> ApiError:
    return ApiError(
        409,
        f"This request is already running as the tool run '{execution.id}': its tools are not "
        f"run a second time. Its steps: GET /v1/executions/{execution.id}. Sent again once "
        "that run has ended, the request goes on from the results its tools recorded; if the "
        "process running it was lost, once it has been silent for "
        f"{int(services.LOST_AFTER.total_seconds())} seconds.",
        code="run_in_progress",
        headers=_come_back(execution),
    )


def _come_back(execution: Execution) -> dict[str, str]:
    """When the 409's request is worth sending again: once the run would be taken as lost
    (its heartbeat LOST_AFTER old), when it goes on here; or, had it answered meanwhile, an SDK's
    retry gets that answer (replay). The SDKs wait out a `retry-after` of up to 60 seconds.
    A run without a heartbeat (started before they were kept) is lost only after an hour:
    not retried, to no avail."""
    if execution.heartbeat_at is None:
        return {"x-should-retry": "false"}
    left = (execution.heartbeat_at + services.LOST_AFTER - timezone.now()).total_seconds()
    wait = min(max(math.ceil(left) + 1, 1), 60)
    return {"x-should-retry": "true", "retry-after": str(wait), "retry-after-ms": str(wait * 1000)}


async def _earlier(turn: Turn) -> Execution | None:
    assert turn.agent is not None and turn.ctx is not None and turn.ctx.user_id
    return await db(
        selectors.execution_of_request,
        workspace=turn.workspace,
        user_id=turn.ctx.user_id,
        agent_id=turn.agent["id"],
        request_digest=turn.request_digest,
    )


async def sent_again(turn: Turn, body: dict) -> None:
    """Before the turn is stored: is this request (same user, agent, conversation, messages)
    one whose tool run did not answer? Still running in a live process: 409, its tools never
    started twice. Its process lost (silent past services.LOST_AFTER): failed as the sweep
    fails it, then as any failed run. Failed after its tools ran (an upstream error, the client
    gone, a process lost): the run goes on from what they recorded (serve), in its own
    conversation (so nothing is stored twice, even without x-conversation-id). An SDK's retry
    of a run that answered meanwhile (its client never got the answer) gets that answer
    (replay), its tools not run again."""
    assert turn.agent is not None and turn.ctx is not None
    ctx = turn.ctx
    if not ctx.user_id or not await cache.tools_async(turn.workspace.id, turn.agent["id"]):
        return  # without a user, two people's same "hi" would be one request
    turn.request_digest = request_digest(turn, body)
    earlier = await _earlier(turn)
    if earlier is not None and services.execution_is_lost(execution=earlier):
        # Failed here (or by another retry of it, or the sweep, first: the row decides), then
        # read again: another retry may have taken it over meanwhile.
        await db(services.execution_lost_fail, execution=earlier)
        earlier = await _earlier(turn)
    if earlier is None:
        if ctx.retried:
            turn.replay_of = await db(
                selectors.execution_answered,
                workspace=turn.workspace,
                user_id=ctx.user_id,
                agent_id=turn.agent["id"],
                request_digest=turn.request_digest,
            )
        return
    if earlier.status == Execution.Status.RUNNING:
        raise _in_progress(earlier)
    turn.retry_of = earlier
    if earlier.conversation_pk and not ctx.conversation_id and not ctx.session_id:
        ctx.conversation_id = await db(
            selectors.conversation_external_id,
            workspace=turn.workspace,
            conversation_pk=earlier.conversation_pk,
        )


async def serve(turn: Turn, route: Route, call: Call, body: dict) -> Reply | None:
    """The answer of an agent call when the agent has tools; None when it has none."""
    assert turn.agent is not None and turn.ctx is not None and turn.prepared is not None
    tools = await cache.tools_async(turn.workspace.id, turn.agent["id"])
    if not tools:
        return None
    ctx = turn.ctx
    if turn.retry_of is not None:
        return await _serve_again(turn, route, body, turn.retry_of, tools)
    execution = await db(
        services.execution_create,
        workspace=turn.workspace,
        agent_id=turn.agent["id"],
        agent_version=turn.agent.get("version"),
        user_id=ctx.user_id or "",
        request_id=turn.request_id,
        model=turn.model,
        route_model=ctx.model,
        stream=turn.stream,
        body=upstream_body(call.body, tools),
        agent_tools=[t.name for t in tools],
        collection_ids=list(ctx.collection_ids),
        conversation_pk=getattr(turn.prepared.state, "conversation_pk", "") or "",
        session_pk=getattr(turn.prepared.state, "session_pk", "") or "",
        request_digest=turn.request_digest,
    )
    execution.messages = list(call.body.get("messages") or [])
    # The conversation holds these (the turn stored the new ones): what a run whose process is
    # lost leaves after them is what the sweep stores (services.approvals_expire); the run's
    # own messages start there (Run.retried).
    execution.pending = {"stored": len(execution.messages), "start": len(execution.messages)}
    run = Run(
        execution=execution,
        tools={t.name: t for t in tools},
        route=route,
        scope=Scope(turn.workspace, ctx.user_id, tuple(ctx.collection_ids), ctx.remember),
        request_id=turn.request_id,
        engram=dict(turn.engram),
        preface=list(turn.tool_calls),
        before_call=_budgeted(turn.charge),
    )
    run.beat()
    return await _serve_run(turn, run, body)


def _budgeted(charge: charging.Charge) -> Callable[[dict], Awaitable[None]]:
    """A run's model calls after its request's first, each reserved against the request's
    budgets (completions.charging.extend) before it is made."""

    async def reserve(body: dict) -> None:
        await charging.extend(charge, body=body)

    return reserve


async def _serve_again(
    turn: Turn, route: Route, body: dict, execution: Execution, tools: tuple
) -> Reply:
    """The request's failed run, claimed back, goes on (Run.retried): no tool runs twice."""
    assert turn.ctx is not None
    if not await db(services.execution_reclaim, execution=execution):
        raise _in_progress(execution)  # another retry of it claimed it first
    execution.stream = turn.stream
    run = Run(
        execution=execution,
        tools={t.name: t for t in tools},
        route=route,
        scope=Scope(
            turn.workspace, turn.ctx.user_id, tuple(execution.collection_ids), turn.ctx.remember
        ),
        request_id=turn.request_id,
        engram=dict(turn.engram),
        preface=list(turn.tool_calls),
        before_call=_budgeted(turn.charge),
    )
    run.retried()
    run.beat()
    return await _serve_run(turn, run, body)


async def _serve_run(turn: Turn, run: Run, body: dict) -> Reply:
    """The run's answer, streamed or not; the turn finished (charged, recorded, stored)."""
    assert turn.prepared is not None
    headers = {**turn.prepared.headers, **turn.limit_headers()}
    if turn.stream:

        def on_end(status: int, assistant: dict | None, incomplete: bool, code: str) -> dict:
            # Charged now, for the last chunk; finished (usage row, memory) once the tool calls
            # and results are stored, so finish_turn stores the answer after them.
            turn.charge_once(usage=dict(run.charged) or None, answers=charging.answered(assistant))

            async def finish() -> None:
                await _store(run, _before_answer(run, assistant), extraction=False)
                _finish(turn, run, status, assistant, incomplete, code)

            spawn(finish(), name="tools_finish")
            return dict(turn.engram)

        try:
            first = await open_first(run)
        except EDGE_ERRORS as exc:  # before the first byte: the gateway answers its status
            await failed(run, exc)
            error = request.api_error(exc)
            _finish(turn, run, error.status, None, True, error.code or error.type)
            raise
        except asyncio.CancelledError:
            await failed(run, asyncio.CancelledError())
            _finish(turn, run, 499, None, True, "client_closed")
            raise
        streamer = Streamer(
            run,
            include_usage=validation.include_usage(body),
            on_end=on_end,
            first=first,
            charged=turn.usage_charged,
        )
        return _reply(200, {**headers, **turn.timing_headers()}, stream=streamer.frames())
    # A run that fails keeps in the conversation what ran before (the tool calls and their
    # results, as a stream's end stores them): a refund made, then an upstream error, was
    # in the execution alone, and the user's next turn did not know of it.
    try:
        answer = await complete(run)
    except EDGE_ERRORS as exc:  # the gateway answers it; the calls made before are charged here
        error = request.api_error(exc)
        await _store(run, run.transcript, extraction=False)
        _finish(turn, run, error.status, None, True, error.code or error.type)
        raise
    except asyncio.CancelledError:
        spawn(_store(run, run.transcript, extraction=False), name="tools_store")
        _finish(turn, run, 499, None, True, "client_closed")
        raise
    except Exception as exc:  # a bug: the door answers 500; the turn is finished here
        await _store(run, run.transcript, extraction=False)
        _unexpected(turn, run, exc)
        raise
    # Charged before the store, as a stream is: a client that hangs up meanwhile leaves the
    # finish to the gateway, which knows nothing of the run's calls (they cost nothing).
    turn.charge_once(usage=dict(run.charged) or None, answers=charging.answered(answer.assistant))
    # The tool calls and results first; finish_turn stores the answer after them.
    await _store(run, _before_answer(run, answer.assistant), extraction=False)
    charged = _finish(turn, run, 200, answer.assistant, False, "")
    answer.data["engram"] = {**(answer.data.get("engram") or {}), **charged}
    if answer.data.get("usage") is None:  # no figures at all: the usage charged, as OpenAI's
        answer.data["usage"] = turn.usage_charged()
    await turn.reply_committed()
    return _reply(200, {**headers, **turn.timing_headers()}, dumps(answer.data))


def _finish(
    turn: Turn, run: Run, status: int, assistant: dict | None, incomplete: bool, code: str
) -> dict:
    """Finish the turn once, as the gateway does (completions.turn.Turn.finish: the charge,
    the usage row, memory's part): charged the run's every upstream call, summed. Returns
    the answer's `engram` (credits_charged and the client's request id in it)."""
    turn.upstream_ms = run.upstream_ms
    # Charged each call's usage, the upstream's or its estimate (Run.charged); the usage
    # record keeps the figures the upstream reported (a plain answer's too: completions.turn).
    turn.charge_once(usage=dict(run.charged) or None, answers=charging.answered(assistant))
    turn.finish(
        status=status,
        assistant=assistant,
        usage=dict(run.spent) or None,
        incomplete=incomplete,
        error_code=code,
    )
    return dict(turn.engram)


def _unexpected(turn: Turn, run: Run, exc: Exception) -> None:
    """Finish a turn that a bug (or the database) ended: recorded with the status its answer
    has (config.common.errors.unexpected_error), the calls made charged, the limits' lease
    freed. The run itself was marked failed by the loop (completions.tools.run.complete)."""
    error = unexpected_error(exc)
    _finish(turn, run, error.status, None, True, error.code or error.type)


def _before_answer(run: Run, assistant: dict | None) -> list[dict]:
    """The run's new messages but the answer, which finish_turn stores as the turn's."""
    if assistant is not None and run.transcript and run.transcript[-1] is assistant:
        return run.transcript[:-1]
    return run.transcript


async def _store(
    run: Run, messages: list[dict], *, extraction: bool, resumed: bool = False
) -> None:
    """Into the turn's conversation; a failure loses history, never the answer. A run taken
    from this process stores nothing: what it ran, the takeover stored (services._interrupt),
    and what follows is its new owner's."""
    if run.taken_over:
        return
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


async def _memory_on(workspace_id: str, execution: Execution) -> bool:
    """The memory policy of the agent version the run started with: may its built-ins read
    and write the end user's memories?"""
    from completions.agents.cache import agents_async, version_async

    agent: Any = None
    if execution.agent_version is not None:
        agent = await version_async(workspace_id, execution.agent_id, execution.agent_version)
    if agent is None:
        agent = (await agents_async(workspace_id)).by_id.get(execution.agent_id)
    return agent is not None and agent.memory.get("enabled", True) is not False


async def replay(turn: Turn, body: dict) -> Reply:
    """An SDK's retry of a request whose run answered (its client never got the answer: a
    timeout, a connection lost): that answer again, as it was (streamed if the retry asks so),
    nothing run, stored or charged a second time (completions.tools.selectors.execution_answered).
    Led by Engram's own calls the answer carried (Execution.preface), and streamed as the run's
    stream shows it (the agent's calls it ran, each with its `engram` marks and result, before
    the answer). What the request that answered did, not the whole run (Execution.request_step):
    a run taken over answered with its new owner's calls and usage, and the OpenAI SDKs' users
    expect a retry's answer to be the one the original would have had, usage figures included.
    `engram.replayed` says it is a replay; the usage record it leaves holds no tokens and no
    credits (the run's were charged once, by the request that answered)."""
    execution = turn.replay_of
    assert isinstance(execution, Execution) and turn.ctx is not None and turn.agent is not None
    answer = execution.messages[-1]
    shown = {"role": "assistant", "content": None, **answer}
    usage = request_usage(execution)
    turn.finish(status=200, usage=usage_of({}))  # nothing called: nothing charged
    engram = {
        **turn.engram,  # credits_charged (nothing) and the request id
        "execution_id": execution.id,
        "replayed": True,
    }
    if execution.conversation_pk:
        conversation = await db(
            selectors.conversation_external_id,
            workspace=turn.workspace,
            conversation_pk=execution.conversation_pk,
        )
        if conversation is not None:
            engram["conversation_id"] = conversation
    stream_id, created = f"chatcmpl-{execution.request_id}", int(time.time())
    finish = _finish_reason(execution, answer)
    headers = {**turn.limit_headers(), **turn.timing_headers()}
    if not turn.stream:
        if execution.preface:  # as completions.tools.run.complete leads the answer with them
            shown["tool_calls"] = [*execution.preface, *(answer.get("tool_calls") or [])]
        data = {
            "id": stream_id,
            "object": "chat.completion",
            "created": created,
            "model": execution.model,
            "choices": [{"index": 0, "message": shown, "finish_reason": finish, "logprobs": None}],
            "usage": usage,
            "engram": engram,
        }
        return _reply(200, headers, dumps(data))
    tools = await cache.tools_async(turn.workspace.id, turn.agent["id"])
    shows_calls = not declares_client_tools(execution, {t.name for t in tools})
    steps = _ran(execution)
    calls = [*execution.preface, *(c for step in steps for c, _ in step if shows_calls)]

    role_sent = False

    def chunk(delta: dict | None, finish: str | None = None, **extra: Any) -> bytes:
        nonlocal role_sent
        if delta is not None and not role_sent:  # with the first delta, as Streamer.chunk
            delta, role_sent = {"role": "assistant", **delta}, True
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return own_chunk(
            stream_id=stream_id,
            created=created,
            model=execution.model,
            choices=[] if delta is None else [choice],
            **extra,
        )

    def delta_of(some: list[dict], **fields: Any) -> dict:
        start = next((i for i, c in enumerate(calls) if c is some[0]), len(calls))
        return {**fields, "tool_calls": [{"index": start + i, **c} for i, c in enumerate(some)]}

    # As the run's stream sent them (completions.tools.stream.Streamer): Engram's own calls
    # first, then each step's calls as they started and their results once it ran, then the
    # answer (the client's calls after every call before them), its finish, usage and engram.
    frames = [chunk(delta_of(execution.preface))] if execution.preface else []
    for step in steps:
        for call, outcome in step:
            mark = {"id": call["id"], "name": outcome["name"], "status": "running"}
            frames.append(
                chunk(
                    delta_of([call]) if shows_calls else None,
                    engram={"tool_call": {**mark, "execution_id": execution.id}},
                )
            )
        frames += [chunk(None, engram={"tool_result": outcome}) for _, outcome in step]
    delta = {k: v for k, v in shown.items() if k not in ("role", "tool_calls")}
    if shown.get("tool_calls"):
        delta = delta_of(shown["tool_calls"], **delta)
    frames += [
        chunk(delta),
        ending(
            chunk,
            {},
            finish=finish,
            usage=usage if validation.include_usage(body) else None,
            engram=engram,
        ),
    ]

    async def replayed() -> Any:
        for frame in frames:
            yield frame

    return _reply(200, headers, stream=replayed())


def _ran(execution: Execution) -> list[list[tuple[dict, dict]]]:
    """The agent's calls the request that answered ran (Execution.request_step), a list a step,
    as its stream showed them: each call, and its `engram.tool_result`
    (completions.tools.stream.Streamer._execute)."""
    steps: list[list[tuple[dict, dict]]] = []
    after_model = True
    for step in execution.steps[execution.request_step :]:
        if step.get("type") != "tool":
            after_model = after_model or step.get("type") == "model"
            continue
        if after_model:
            steps.append([])
            after_model = False
        call = {
            "id": step.get("tool_call_id"),
            "type": "function",
            "function": {"name": step.get("name"), "arguments": step.get("arguments") or ""},
        }
        outcome = {
            "tool_call_id": call["id"],
            "name": step.get("name"),
            "status": step.get("status"),
            "duration_ms": step.get("duration_ms"),
            **({"content": step["result"]} if "result" in step else {"error": step.get("error")}),
        }
        steps[-1].append((call, outcome))
    return steps


def _finish_reason(execution: Execution, answer: dict) -> str:
    """The run's answer's finish_reason: its calls' (the client's own tools), or the last model
    call's; a model that called the agent's tools at the step limit was cut short."""
    if answer.get("tool_calls"):
        return "tool_calls"
    model: dict = next((s for s in reversed(execution.steps) if s.get("type") == "model"), {})
    reason = model.get("finish_reason")
    if reason == "tool_calls":
        return "length"
    return reason if isinstance(reason, str) and reason else "stop"


# --- POST /v1/chat/resume -------------------------------------------------------------------


def _resume_fields(raw: bytes) -> tuple[str, bool, str, bool, Any]:
    body = jsonbody.loads_object(raw)
    unknown_fields_check(
        body,
        # `user_id` and `user` name the end user as chat's body does (caller_user reads them)
        {
            "approval_id",
            "decision",
            "reason",
            "stream",
            "stream_options",
            "user",
            "user_id",
            "metadata",
        },
    )
    approval_id = identifier(body.get("approval_id"), "approval_id")  # the id rule, as every id's
    if approval_id is None:
        raise Invalid(
            "approval_id is required.", field="approval_id", code="missing_required_parameter"
        )
    decision = body.get("decision")
    if decision not in ("approve", "reject"):
        raise Invalid('decision must be "approve" or "reject".', field="decision")
    reason = body.get("reason")
    if reason is None:
        reason = ""
    if not isinstance(reason, str) or len(reason) > policy.MAX_REASON:
        raise Invalid(
            f"reason must be a string of {policy.MAX_REASON:,} characters at most.", field="reason"
        )
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise Invalid("stream must be a boolean.", field="stream")
    validation.stream_options(body)  # chat's rule, in its words
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
    limits: Policy = NO_POLICY,
) -> Reply:
    """Continue a paused run. Admitted as a chat completion is (limits and budgets reserved,
    429 when over) before the approval is claimed, so a refused resume leaves it pending;
    charged, settled and recorded as one (completions.turn.Turn)."""
    if workspace is None:
        return _error_reply(workspace_key_required())
    turn = Turn(workspace=workspace, api_key_id=api_key_id, request_id=request_id, started=started)
    turn.charge.limits = limits
    try:
        approval_id, approve, reason, stream, body = _resume_fields(raw_body)
        turn.stream = stream
        # Echoed in `engram` and kept in the usage record, refusals' included, as chat's is.
        turn.client_request_id = validation.client_request_id(body)
        user_id = caller_user(headers=headers, body=body, end_user=end_user)
        approval = await db(
            selectors.approval_get,
            workspace=workspace,
            approval_id=approval_id,
            user_id=user_id,
            end_user=end_user,
        )
        execution = approval.execution
        await _agent_check(workspace.id, execution.agent_id)
        tools = await cache.tools_async(workspace.id, execution.agent_id)
        # Before the approval is claimed: a pending one stays pending, to be rejected; one
        # sent again after a failure is checked too when its calls were not started yet.
        if approve:
            services.approval_current_check(approval=approval, tools=tools)
        turn.model = execution.model
        turn.agent = {"id": execution.agent_id, "name": "", "version": execution.agent_version}
        turn.ctx = TurnContext(
            workspace=workspace,
            api_key_id=api_key_id,
            request_id=request_id,
            body=body,
            model=execution.route_model,
            user_id=user_id or execution.user_id or None,
            agent=turn.agent,
        )
        turn.route = route = await routing.resolve_async(workspace.id, execution.route_model)
        await charging.admit(
            turn.charge,
            workspace_id=workspace.id,
            key_id=api_key_id,
            user_id=turn.ctx.user_id,
            request_id=request_id,
            upstream_model=route.model,
            provider=route.provider.name,
            body={**execution.body, "messages": execution.messages},
        )
        # Read before the claim: nothing after it waits until the run, which finishes the turn.
        memory_on = await _memory_on(workspace.id, execution)
        extraction = await _extraction(workspace.id, execution.agent_id)
        claimed = await _claim(turn, approval, approve, reason, headers)
    except EDGE_ERRORS as exc:  # recorded as the gateway records a refusal; a reservation freed
        error = errors.api_error(exc)
        turn.finish(status=error.status, error_code=error.code or error.type)
        return _error_reply(error, turn.timing_headers())
    except asyncio.CancelledError:  # the client hung up: its reservation freed all the same
        turn.finish(status=499, incomplete=True, error_code="client_closed")
        raise
    except Exception as exc:  # a bug, or the database away: recorded, a reservation freed
        error = unexpected_error(exc)
        turn.finish(status=error.status, error_code=error.code or error.type)
        raise
    if claimed is None:  # an SDK's retry of a resume that answered: that answer again
        return await replay(turn, body)
    execution = claimed.execution
    execution.request_step = len(execution.steps)  # this resume's part: its approval step on
    run = Run(
        execution=execution,
        tools={t.name: t for t in tools},
        route=route,
        scope=Scope(
            workspace, execution.user_id or None, tuple(execution.collection_ids), memory_on
        ),
        request_id=request_id,
        before_call=_budgeted(turn.charge),
    )
    run.beat()
    resumed: Resumed | None = _resumed(run, claimed.approval, approve, reason, claimed.retry)
    if claimed.retry and resumed is not None:
        resumed = run.recover(resumed)
    execution.status = Execution.Status.RUNNING
    execution.stream = stream
    if stream:

        def on_end(status: int, assistant: dict | None, incomplete: bool, code: str) -> dict:
            charged = _finish(turn, run, status, assistant, incomplete, code)
            # A failed run's part too: a resume sent again stores only what follows it.
            spawn(
                _store(run, run.transcript, extraction=extraction, resumed=True),
                name="tools_store",
            )
            return charged

        streamer = Streamer(
            run,
            include_usage=validation.include_usage(body),
            on_end=on_end,
            charged=turn.usage_charged,
        )
        headers = {**turn.limit_headers(), **turn.timing_headers()}
        return _reply(200, headers, stream=streamer.frames(resumed))
    # A resume that fails stores what it ran (the approved calls' results: a refund made)
    # in the conversation, as a run does; a resume sent again stores only what follows.
    try:
        answer = await complete(run, resumed)
    except EDGE_ERRORS as exc:  # the upstream's error: the run is recorded as failed
        error = errors.api_error(exc)
        await _store(run, run.transcript, extraction=extraction, resumed=True)
        _finish(turn, run, error.status, None, True, error.code or error.type)
        return _error_reply(error, turn.timing_headers())
    except asyncio.CancelledError:
        spawn(_store(run, run.transcript, extraction=extraction, resumed=True), name="tools_store")
        _finish(turn, run, 499, None, True, "client_closed")
        raise
    except Exception as exc:  # a bug: the door answers 500; the turn is finished here
        await _store(run, run.transcript, extraction=extraction, resumed=True)
        _unexpected(turn, run, exc)
        raise
    charged = _finish(turn, run, 200, answer.assistant, False, "")
    answer.data["engram"] = {**(answer.data.get("engram") or {}), **charged}
    if answer.data.get("usage") is None:  # no figures at all: the usage charged
        answer.data["usage"] = turn.usage_charged()
    await _store(run, run.transcript, extraction=extraction, resumed=True)
    return _reply(200, {**turn.limit_headers(), **turn.timing_headers()}, dumps(answer.data))


async def _agent_check(workspace_id: str, agent_id: str) -> None:
    """NotFound when the run's agent was deleted while it waited: its resume went on as the
    agent (the model called, the workspace charged, an answer naming an agent a chat call of
    which is 404), its calls told their tools no longer exist. The approval is left to expire."""
    from completions.agents.cache import agents_async

    if agent_id not in (await agents_async(workspace_id)).by_id:
        raise NotFound(
            f"The agent '{agent_id}' of this approval's run was deleted: the run cannot go on.",
            field="approval_id",
            code="agent_not_found",
        )


async def _claim(
    turn: Turn, approval: Approval, approve: bool, reason: str, headers: Mapping[str, str]
) -> services.Claimed | None:
    """The approval claimed for this resume; None when the resume is an SDK's retry of one
    that answered (turn.replay_of: its answer). A resume sent again while the first still runs
    (the client's read timed out) is 409 `run_in_progress` with when to come back, which the
    SDKs retry, as a chat request's is; it was 410 "already approved", which they do not, and
    the client never had the answer its approval made. Its process lost: failed, then taken
    over as any failed resume."""
    for _ in range(2):
        try:
            return await db(
                services.approval_claim,
                workspace=turn.workspace,
                approval=approval,
                approve=approve,
                reason=reason,
            )
        except Gone:
            earlier = await db(selectors.execution_resumed, approval=approval, approve=approve)
            if earlier is None:
                raise
            if earlier.status != Execution.Status.RUNNING:
                if not request.retried(headers):  # sent again by hand: the approval is used
                    raise
                turn.replay_of = earlier
                return None
            if not services.execution_is_lost(execution=earlier):
                raise _in_progress(earlier) from None
            await db(services.execution_lost_fail, execution=earlier)
    raise _in_progress(earlier)


def _resumed(run: Run, approval: Approval, approve: bool, reason: str, retry: bool) -> Resumed:
    execution = run.execution
    message = execution.pending.get("message") or {}
    calls = [c for c in message.get("tool_calls") or () if isinstance(c, dict)]
    waiting = set(execution.pending.get("waiting") or ())
    # A tool deleted while the run waited cannot run: the model is told it no longer exists,
    # not that the user rejected it (completions.tools.run.Run.execute). A deleted agent's
    # run does not go on at all (_agent_check).
    started = set(execution.agent_tools)  # empty for a run started before they were kept
    gone = {
        c["id"]
        for c in calls
        if (name := (c.get("function") or {}).get("name")) not in run.tools
        and (not started or name in started)
    }
    run.step(
        "approval",
        approval_id=approval.id,
        decision="approve" if approve else "reject",
        status="retried" if retry else approval.status,
        reason=reason,
    )
    rejected = set() if approve else waiting
    run.handback = execution.pending.get("handback")  # the client's calls of the paused step
    return Resumed(
        message=message, calls=calls, rejected=rejected, reason=reason, gone=gone - rejected
    )
