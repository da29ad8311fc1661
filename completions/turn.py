"""One completion request's state from arrival to its usage record (Turn), and the answer
the web framework sends (Reply): shared by the gateway's doors, chat (completions.gateway) and
a paused run's resume (completions.tools.entry)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from accounts.models import Workspace
from completions import charging, usage
from completions.providers.base import UpstreamStream
from completions.providers.registry import Route
from completions.streaming import dumps
from config.common.errors import ApiError
from memory.turn.contract import PreparedTurn, TurnContext
from memory.turn.pipeline import finish_turn_soon

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
    # Its wall-clock start: the usage record's time when no limit admitted it (usage.stamped).
    started_at: datetime = field(default_factory=lambda: usage.now())

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
        if self.charge.estimated:  # the figures its credits were computed from
            tokens = self.charge.usage or {}
        else:
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

    def usage_charged(self) -> dict | None:
        """The usage the answer was charged (charging.Charge.usage), once it was."""
        return self.charge.usage

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
        usage.stamped(  # created_at: in the period its limits were charged in
            admitted_ms=turn.charge.admission.at_ms if turn.charge.admission else None,
            started=turn.started_at,
        ),
        turn.charge.estimated,  # usage_estimated
    )
    usage.record(record)
