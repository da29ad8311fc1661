"""POST /v1/chat/completions, independent of the web framework (apis.py adapts it to Django).

One request: parse and validate the body, build the memory TurnContext from the headers,
route the model (cached, no database query), `prepare_turn`, call the provider, answer (JSON
or the SSE relay), then hand the answer to memory (`finish_turn_soon`) and buffer a usage
record — neither delays the response.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass, field
from typing import Any

from accounts.limits.policy import NO_POLICY, Policy
from accounts.models import Workspace
from completions import charging, engram_tools, request, routing, usage, validation
from completions.agents import calls as agent_calls
from completions.conf import conf
from completions.providers.base import Call, UpstreamStream, refused_status
from completions.providers.registry import Route
from completions.streaming import done_within, dumps, relay, transcribed, waking_task
from config.common.errors import EDGE_ERRORS, ApiError, unexpected_error, workspace_key_required
from memory.turn.contract import PreparedTurn, TurnContext
from memory.turn.pipeline import finish_turn_soon, prepare_turn

logger = logging.getLogger("engram.gateway")


# How long an answer's last bytes wait for its commit (a few ms in the usual case): longer only
# when the database is struggling, and then the answer goes out rather than wait on it.
REPLY_STORE_WAIT = 5.0


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes = b""
    stream: AsyncGenerator[bytes, None] | None = None
    content_type: str = "application/json"

    @classmethod
    def of_error(cls, error: ApiError, headers: Mapping[str, str] | None = None) -> Reply:
        """The error's envelope, with its own headers (Retry-After, rate limits) and `headers`."""
        return cls(error.status, {**error.headers, **(headers or {})}, dumps(error.body()))


def _ms(seconds: float) -> str:
    return str(max(0, round(seconds * 1000)))


@dataclass
class Turn:
    """One completion request's state, from arrival to its usage record."""

    workspace: Workspace
    api_key_id: str | None
    request_id: str
    started: float
    model: str = ""
    stream: bool = False
    client_request_id: str = ""
    route: Route | None = None
    ctx: TurnContext | None = None
    prepared: PreparedTurn | None = None
    reply_stored: asyncio.Future | None = None  # done once the answer is committed
    upstream_started: float | None = None
    upstream_ms: float | None = None
    finished: bool = False
    engram: dict = field(default_factory=dict)
    end_user: str | None = None  # an end-user token's user: the only user this turn may be
    agent: dict | None = None  # the agent called: {"id", "name", "version"}
    tool_calls: list[dict] = field(default_factory=list)  # engram_tools' calls to emit
    # An agent with tools: the request's digest, and the failed run it is a retry of
    # (completions.tools.entry.sent_again), which goes on instead of a new run, or the run
    # that answered it, whose answer an SDK's retry gets again (completions.tools.entry.replay).
    request_digest: str = ""
    retry_of: Any = None
    replay_of: Any = None
    charge: charging.Charge = field(default_factory=charging.Charge)
    credits: float | None = None

    def stream_opened(self, stream: UpstreamStream) -> None:
        self.upstream_ms = stream.upstream_ms

    def timing_headers(self) -> dict[str, str]:
        total = time.perf_counter() - self.started
        if self.upstream_ms is not None:
            upstream = self.upstream_ms / 1000
        elif self.upstream_started is not None:  # still waiting: all of it since is upstream
            upstream = time.perf_counter() - self.upstream_started
        else:
            upstream = 0.0
        return {
            "openai-processing-ms": _ms(total),
            "x-engram-upstream-ms": _ms(upstream),
            "x-engram-overhead-ms": _ms(total - upstream),
        }

    def finish(
        self,
        *,
        status: int,
        assistant: dict | None = None,
        usage: dict | None = None,
        incomplete: bool = False,
        error_code: str = "",
        refused: bool = False,
        written: list[dict] | None = None,
    ) -> None:
        """Account the request and hand the answer to memory; once, never blocking. `refused`:
        the request was refused for what it holds, before any answer (`refused_status`), and
        memory takes its messages out again; kept, they were history that every later turn
        of the conversation carried to the same refusal. `written`: a stream's every choice as
        far as it came (streaming.Assembler.written), charged when `usage` did not come."""
        if self.finished:
            return
        self.finished = True
        answers = written if written is not None else charging.answered(assistant)
        self.charge_once(usage=usage, answers=answers)
        tokens = usage if isinstance(usage, dict) else {}
        _record(self, status, tokens, incomplete, error_code)
        if self.prepared is not None and self.ctx is not None:
            loop = asyncio.get_running_loop()
            stored = self.reply_stored = loop.create_future()
            here = threading.get_ident()

            def on_stored() -> None:
                # From the thread that committed, or (a turn memory did not store) from the
                # finishing task on this loop: there at once, without waking the loop through
                # its self-pipe (a write and a read, system calls, per request).
                if threading.get_ident() == here:
                    _settle(stored)
                else:
                    loop.call_soon_threadsafe(_settle, stored)

            finish_turn_soon(
                self.ctx,
                self.prepared,
                assistant=assistant,
                usage=usage,
                incomplete=incomplete,
                on_stored=on_stored,
                refused=refused,
            )

    def charge_once(self, *, usage: dict | None, answers: list[dict]) -> None:
        """Charge the answer unless it was already: a tool run's stream charges before its
        last chunk (which carries the credits) and finishes after storing its messages.
        Credits at the table's price into `engram` (every answer has one); the limits'
        reservation settled in the background (charging.finish)."""
        if self.credits is None:
            self.credits = charging.finish(
                self.charge,
                usage=usage,
                answers=answers,
                engram=self.engram,
                request_id=self.client_request_id or self.request_id,
            )

    def limit_headers(self) -> dict[str, str]:
        return self.charge.headers

    async def reply_committed(self) -> None:
        """Wait until the answer is in the database, so an answer a client has received whole
        survives the process being killed right after; the extraction and summary jobs are
        sent after this point, so a Redis outage does not hold the answer back."""
        stored = self.reply_stored
        if stored is None or stored.done():
            return
        # The future itself, with one timer: asyncio.wait_for on an Event made a task per
        # request for the waiting.
        timer = stored.get_loop().call_later(REPLY_STORE_WAIT, _settle, stored)
        try:
            await stored
        finally:
            timer.cancel()


def _settle(stored: asyncio.Future) -> None:
    """The answer is stored, or it is no longer waited for (REPLY_STORE_WAIT); once."""
    if not stored.done():
        stored.set_result(None)


def _record(turn: Turn, status: int, tokens: dict, incomplete: bool, error_code: str) -> None:
    route, agent = turn.route, turn.agent
    cached, cache_write, _ = usage.cache_tokens(tokens)  # the 1-hour share is in the credits
    # Positionally, in the fields' order: Python 3.11 compiles a call with more than 15
    # keywords to a dict unpacked again by the callee (~10,000 instructions more here).
    record = usage.Usage(
        turn.workspace.id,  # workspace_id
        turn.request_id,  # request_id
        status,  # status_code
        (time.perf_counter() - turn.started) * 1000,  # latency_ms
        turn.api_key_id or "",  # api_key_id
        (turn.ctx.user_id or "")[:200] if turn.ctx else "",  # user_id
        turn.client_request_id,  # client_request_id
        turn.model[:200],  # model
        (route.model if route else "")[:200],  # upstream_model
        route.provider.name if route else "",  # provider
        turn.stream,  # stream
        error_code[:64],  # error_code
        tokens.get("prompt_tokens"),  # prompt_tokens
        tokens.get("completion_tokens"),  # completion_tokens
        tokens.get("total_tokens"),  # total_tokens
        turn.upstream_ms,  # upstream_ms
        incomplete,  # incomplete
        agent["id"] if agent else "",  # agent_id
        agent["version"] if agent else None,  # agent_version
        turn.credits,  # credits
        cached,  # cached_tokens
        cache_write,  # cache_write_tokens
        turn.charge.limits.credits_per_usd,  # credits_per_usd: the unit `credits` are in
    )
    usage.record(record)


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
