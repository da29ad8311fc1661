"""The tool loop of an agent with tools: call the model with the agent's tools added; when it
calls server-side tools, run them (in parallel where it asked for several), append their
results and call it again, up to ENGRAM_TOOLS_MAX_STEPS model calls (the last one with
`tool_choice: "none"`, so the run ends with an answer). A call whose tool's approval policy
holds pauses the run instead (completions.tools.services.execution_pause); a call of a tool the
agent does not have is the client's when the request declared that tool: an answer of only
such calls goes back to the client unchanged. A call of a tool neither has (a model's slip)
gets the error result "there is no tool named …", as a failed call of the agent's, and the
model is called again: handed back, it was a call the client cannot answer. A step that calls both runs the agent's calls first (pausing for an approval as any
step does), then answers with the client's calls alone (`finish_reason: "tool_calls"`), without
calling the model again: the run's history holds the agent's calls and their results as an
assistant message of their own, then the client's calls as the answer, so every call in it is
answered once the client sends its results.

Every model call and every tool call is a step of the Execution (GET /v1/executions/{id}):

    {"index", "type": "model", "at", "duration_ms", "finish_reason", "content", "tool_calls":
     [{"id", "name", "arguments"}], "usage"}
    {"index", "type": "tool", "at", "duration_ms", "tool_call_id", "name", "arguments",
     "status": "completed" | "failed" | "rejected", "result" | "error"}
    (a call whose tool was deleted while the run waited for its approval: "failed", its error
    saying the tool no longer exists, which is also what the model receives)
    {"index", "type": "approval", "at", "approval_id", "decision", "status", "reason"}

The streamed form of the loop is completions.tools.stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

from completions import charging
from completions.providers.base import Call
from completions.providers.registry import Route
from completions.streaming import transcribed
from completions.tools import executor, policy, services, window
from completions.tools.executor import Result, Scope
from completions.tools.models import Approval, Execution, Tool
from completions.tools.steps import call_view, interrupted, step_append
from completions.usage import MAX_COUNT, cache_tokens, count
from config.common.background import spawn
from config.common.errors import ApiError
from config.common.ids import new_id
from config.common.jsonbody import storable
from config.common.orm import on_pool_thread
from memory.text import tool_call_ids

logger = logging.getLogger("engram.tools")

# The body fields the run sets itself on each upstream call.
_PER_CALL = ("messages", "stream", "stream_options")


async def db(fn: Callable[..., Any], **kwargs: Any) -> Any:
    """A write of this module's, on a worker thread (the ORM is sync)."""
    return await on_pool_thread(fn)(**kwargs)


def specs(tools: tuple[Tool, ...] | list[Tool]) -> list[dict]:
    return [
        {
            "type": "function",
            "function": {
                "name": t.name,
                "description": t.description,
                "parameters": t.parameters or {"type": "object", "properties": {}},
            },
        }
        for t in tools
    ]


def tool_name(item: Any) -> Any:
    """The function name of a tool call or a tool definition (None when it has none)."""
    function = item.get("function") if isinstance(item, dict) else None
    return function.get("name") if isinstance(function, dict) else None


def with_agent_tools(client_tools: Any, tools: tuple[Tool, ...]) -> list[dict]:
    """The client's tools with the agent's added (a client tool of the same name gives way:
    the agent's is what runs). Given its own result again, the same list."""
    names = {t.name for t in tools}
    client = [
        t
        for t in client_tools or ()
        if not (isinstance(t, dict) and (t.get("function") or {}).get("name") in names)
    ]
    return [*client, *specs(tools)]


def upstream_body(body: dict, tools: tuple[Tool, ...]) -> dict:
    """The client's body without the per-call fields, with the agent's tools added."""
    out = {k: v for k, v in body.items() if k not in _PER_CALL}
    out["tools"] = with_agent_tools(body.get("tools"), tools)
    return out


def _add_usage(total: dict, usage: Any) -> None:
    """Sum one upstream call's usage into `total`, cache reads and writes included: a run is
    charged its calls' sum at the table's price, and each has a price of its own."""
    if not isinstance(usage, dict):
        return
    for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
        # Only counts (completions.usage.count): one call's -5 took 5 off the others' sum
        # (charged for it), `true` counted 1, and 2**31 made the sum no count at all (charged
        # nothing). The sum stops at the usage record's column, as one call's figure does.
        figure = count(usage.get(key))
        if figure is not None:
            total[key] = min(total.get(key, 0) + figure, MAX_COUNT)
    for key, tokens in zip(
        ("cached_tokens", "cache_write_tokens", "cache_write_1h_tokens"),
        cache_tokens(usage),
        strict=True,
    ):
        if tokens:
            summed = total.setdefault("prompt_tokens_details", {})
            summed[key] = min(summed.get(key, 0) + tokens, MAX_COUNT)


@dataclass
class Decision:
    kind: str  # "answer" (no calls, or only the client's calls), "pause", "execute"
    calls: list[dict] = field(default_factory=list)  # the server-side calls of the step
    waiting: list[dict] = field(default_factory=list)  # those that need an approval
    client: list[dict] = field(default_factory=list)  # the client's own calls beside them
    finish: str | None = None  # an answer's finish_reason when it is not the model's


@dataclass
class Run:
    execution: Execution
    tools: dict[str, Tool]
    route: Route
    scope: Scope
    request_id: str
    engram: dict = field(default_factory=dict)  # memory's `engram` object, kept in answers
    upstream_ms: float = 0.0
    model_calls: int = 0
    spent: dict = field(default_factory=dict)  # this request's upstream calls' usage
    # What this request's upstream calls are charged: each call's usage as the upstream
    # reported it, else its estimate (charging.estimate: the messages it was sent and its
    # answer). An agent run whose upstream reported none was charged the first call's prompt
    # and the last answer alone, however many calls, tool results and answers came between.
    charged: dict = field(default_factory=dict)
    sent: list = field(default_factory=list, repr=False)  # the messages of the last call
    # This request's new messages, for the conversation (completions.tools.entry stores them).
    transcript: list[dict] = field(default_factory=list)
    # Engram's own `_engram…` calls (completions.engram_tools) for a client that declared them:
    # first in a stream, leading the answer's tool_calls otherwise.
    preface: list[dict] = field(default_factory=list)
    # The client's own calls of a step that also called the agent's tools: the run's answer
    # once the agent's calls have run (hand_back).
    handback: dict | None = None
    beating: asyncio.Task | None = field(default=None, repr=False, compare=False)
    # The run was taken from this process (services.TakenOver): nothing of it is written or
    # stored here any longer; its new owner (or the sweep) has it.
    taken_over: bool = False
    # Before each model call of this request after its first (which its admission reserved):
    # the next call's body, reserved against the budgets (completions.charging.extend).
    before_call: Callable[[dict], Awaitable[None]] | None = None
    calls_made: int = 0  # model calls this request made

    def __post_init__(self) -> None:  # a resumed run counts the model calls made before it
        self.model_calls = sum(1 for s in self.execution.steps if s.get("type") == "model")

    @property
    def usage(self) -> dict:
        return self.execution.usage

    @property
    def client_tools(self) -> bool:
        """Did the request declare tools of its own (beside the agent's)?"""
        return declares_client_tools(self.execution, self.tools)

    def client_names(self) -> set[str]:
        """The names of the request's own tools the model may call (an agent's tool of the
        same name is what runs)."""
        requested = requested_tools(self.execution, self.tools)
        return {n for t in requested if isinstance(n := tool_name(t), str)} - set(self.tools)

    def _clients(self, call: dict) -> bool:
        return tool_name(call) in self.client_names()

    def call(self, *, stream: bool) -> Call:
        body = {**self.execution.body, "messages": self.execution.messages, "stream": stream}
        # The agent's tools as they are now (a resumed run's: at the resume), beside the
        # request's own: the run started with them, but one may have been added, changed or
        # deleted while it waited for an approval, and a deleted one the model still saw
        # was called and handed back to the client as if it were the client's.
        offered = with_agent_tools(
            requested_tools(self.execution, self.tools), tuple(self.tools.values())
        )
        if offered:
            body["tools"] = offered
        else:  # every tool deleted: OpenAI refuses an empty `tools`, and its companions
            for key in ("tools", "tool_choice", "parallel_tool_calls"):
                body.pop(key, None)
        if self.model_calls:  # after tool results: fitted to the window (the first call is)
            body["messages"] = window.fitted(body["messages"], body=body, model=self.route.model)
        self.sent = list(body["messages"])  # as sent: the run's own list grows after the call
        choice = body.get("tool_choice")
        if self.model_calls and (choice == "required" or isinstance(choice, dict)):
            # A forced call is made once: forced at every step, the model would call the tool
            # again after each result (a refund run ENGRAM_TOOLS_MAX_STEPS - 1 times).
            body["tool_choice"] = "auto"
        if self.model_calls + 1 >= settings.ENGRAM_TOOLS_MAX_STEPS:
            body["tool_choice"] = "none"  # the last step allowed: an answer, not more calls
        return Call(body=body, upstream=self.route.upstream, request_id=self.request_id)

    async def next_call(self, *, stream: bool) -> Call:
        """The next model call, reserved first when it is not this request's first: one
        admission covered every call of a run, so a run calling its tool again and again spent
        up to ENGRAM_TOOLS_MAX_STEPS times what its budget let it reserve."""
        call = self.call(stream=stream)
        if self.calls_made and self.before_call is not None:
            await self.before_call(call.body)
        return call

    def step(self, kind: str, **values: Any) -> None:
        step_append(self.execution, kind, **values)

    def beat(self) -> None:
        """While the run is `running` in this process, touch its heartbeat every
        services.HEARTBEAT_EVERY (a model or a tool call can outlast it without a write), so
        its request sent again tells this live run from one whose process died. Stops when the
        run ends here (end), is taken from this process, or is dropped unended (the task holds
        it weakly)."""
        if self.beating is None:
            self.beating = spawn(
                _heartbeat(weakref.ref(self), self.execution.id, self.execution.owner),
                name="heartbeat",
            )

    async def save(self, fn: Callable[..., Any] | None = None, **kwargs: Any) -> Any:
        """Write the run's state (`fn`: services.execution_save, or a writer that calls it) if
        it is still this process's. A heartbeat stalled past services.LOST_AFTER (the event
        loop or the database thread pool busy, one touch hung) has a live run taken as lost:
        its next write here raises services.TakenOver, and the run stops before it writes
        over its new owner's state or runs another tool."""
        try:
            return await db(fn or services.execution_save, execution=self.execution, **kwargs)
        except services.TakenOver:
            self.taken_over = True
            raise

    def model_step(self, message: dict, finish_reason: Any, usage: Any, ms: float) -> None:
        # Made storable in place, before the run keeps, stores or runs any of it: a model's
        # NUL or lone surrogate (in its text or a call's arguments) made every write of the
        # run's messages and steps fail in PostgreSQL, a 500 for the client's question.
        message.update(storable(message))
        self._ids_given(message)
        self.model_calls += 1
        self.calls_made += 1
        self.upstream_ms += ms
        _add_usage(self.usage, usage)
        _add_usage(self.spent, usage)
        # No usage reported: the call is charged its estimate, kept in its step for the
        # answer's usage and for its replay (request_usage).
        estimate = None if charging.reported(usage) else charging.estimate(self.sent, message)
        _add_usage(self.charged, estimate or usage)
        self.step(
            "model",
            duration_ms=round(ms, 1),
            finish_reason=finish_reason,
            content=message.get("content"),
            tool_calls=[call_view(c) for c in message.get("tool_calls") or ()],
            usage=usage if isinstance(usage, dict) else None,
            **({"usage_estimated": estimate} if estimate else {}),
        )

    def _ids_given(self, message: dict) -> None:
        """Each call of the agent's tools in `message` with an id no other call of the run has
        (set here when the upstream sent none, an empty one or one used already): the id pairs
        the call with its result and makes its Idempotency-Key (`<execution_id>:<id>`). A
        call without one failed the run (a 500); two with the same one had a tool honouring
        the key answer the second with the first's result."""
        calls = [c for c in message.get("tool_calls") or () if isinstance(c, dict)]
        ours = [c for c in calls if not self._clients(c)]
        if not ours:
            return
        used = {i for m in self.execution.messages for i in tool_call_ids(m)}
        used |= {c.get("id") for c in calls if c not in ours}
        for call in ours:
            if not isinstance(call.get("id"), str) or not call["id"] or call["id"] in used:
                call["id"] = new_id("call")
            used.add(call["id"])

    def decide(self, message: dict) -> Decision:
        calls = [c for c in message.get("tool_calls") or () if isinstance(c, dict)]
        if not calls:
            return Decision("answer")
        if self.model_calls >= settings.ENGRAM_TOOLS_MAX_STEPS:
            return self._cut_short(message, calls)
        # The agent's calls, and those of a tool nobody has (answered as such in execute)
        ours = [c for c in calls if not self._clients(c)]
        if not ours:
            return Decision("answer")  # the client's own tools: it runs them, as without agents
        client = [c for c in calls if c not in ours]
        waiting = [
            c
            for c in ours
            if tool_name(c) in self.tools
            and policy.needs_approval(
                self.tools[c["function"]["name"]].approval, c["function"].get("arguments") or ""
            )
        ]
        return Decision("pause" if waiting else "execute", ours, waiting, client)

    def _cut_short(self, message: dict, calls: list[dict]) -> Decision:
        """The answer at the step limit. A model that called the agent's tools all the same
        (its last call had `tool_choice: "none"`, which some upstreams ignore) answered the
        client with calls of tools it does not have: they are left out (the step's record
        keeps them) and the run ends as one cut short, `finish_reason: "length"`, unless
        the client's own calls remain."""
        client = [c for c in calls if self._clients(c)]
        if len(client) == len(calls):
            return Decision("answer")
        if client:
            message["tool_calls"] = client
            return Decision("answer")
        message.pop("tool_calls", None)
        return Decision("answer", finish="length")

    def hand_back(self, message: dict, decision: Decision, *, pausing: bool) -> dict:
        """The step's message as the run goes on with it: with the agent's calls only when it
        also called the client's tools, which wait in `handback` as the run's answer. The
        message's text goes with what the client sees first: the pause, else its calls."""
        if not decision.client:
            return message
        ours = {**message, "tool_calls": decision.calls}
        theirs = {"role": "assistant", "content": None, "tool_calls": decision.client}
        if "reasoning_details" in message:
            # Both halves of the step follow its signed thinking (Anthropic's): the turn
            # that calls the client's tools is refused without it once they are answered.
            theirs["reasoning_details"] = message["reasoning_details"]
        if not pausing:
            ours, theirs = {**ours, "content": None}, {**theirs, "content": message.get("content")}
        self.handback = theirs
        return ours

    async def execute(
        self,
        message: dict,
        calls: list[dict],
        *,
        rejected: set[str] | frozenset[str] = frozenset(),
        reason: str = "",
        resumed: bool = False,
        gone: set[str] | frozenset[str] = frozenset(),
    ) -> list[tuple[dict, Result, str]]:
        """Run the calls not rejected nor `gone` (their tool was deleted while the run waited),
        append the assistant message and every call's result. (A resumed message was stored
        in the conversation when the run paused.)"""
        message = transcribed(message)
        self.execution.messages.append(message)
        if not resumed:
            self.transcript.append(message)
        # A call of a tool neither the agent nor the request has: the model is told so.
        missing = {c["id"] for c in calls if tool_name(c) not in self.tools} - rejected - gone
        runnable = [c for c in calls if c["id"] not in rejected | gone | missing]
        if runnable:
            # Stored before the tools start: a run resumed again after a failure or a lost
            # process sees these calls as started and never runs them a second time; and a
            # run taken from this process meanwhile stops here, its calls not run.
            await self.save()
        results = iter(
            await executor.execute_all(
                runnable, self.tools, key_prefix=self.execution.id, scope=self.scope
            )
        )
        done = []
        for call in calls:
            if call["id"] in rejected:
                refusal = "The user rejected this call" + (f": {reason}" if reason else ".")
                result, status = Result("", refusal, 0.0), "rejected"
            elif call["id"] in gone:
                name = (call.get("function") or {}).get("name")
                result, status = Result("", f"the tool '{name}' no longer exists", 0.0), "failed"
            elif call["id"] in missing:
                name = tool_name(call)
                result, status = Result("", f"there is no tool named '{name}'", 0.0), "failed"
            else:
                result = next(results)
                status = "completed" if result.error is None else "failed"
            reply = executor.tool_message(call["id"], result)
            self.execution.messages.append(reply)
            self.transcript.append(reply)
            view = call_view(call)
            self.step(
                "tool",
                duration_ms=round(result.ms, 1),
                tool_call_id=view["id"],
                name=view["name"],
                arguments=view["arguments"],
                status=status,
                **({"result": result.content} if result.error is None else {"error": result.error}),
            )
            done.append((call, result, status))
        if runnable:  # their results, kept if what follows fails
            await self.save()
        return done

    def recover(self, resumed: Resumed) -> Resumed | None:
        """Where a run stands when its resume is sent again after it failed. The paused calls
        not started yet: `resumed`, to decide them now. Started: None, the run goes on with a
        model call; their recorded results stay, and a call whose outcome was never recorded
        is answered as interrupted, not run again (at most once)."""
        messages = self.execution.messages
        at = services.paused_step_index(self.execution)
        if at is None:
            return resumed
        # What the conversation does not hold yet: the failed try stored what it ran (end).
        self.transcript.extend(messages[max(at + 1, self.execution.pending.get("stored", 0)) :])
        self.transcript.extend(interrupted(self.execution, since=at))
        return None

    def retried(self) -> None:
        """Where a run that never paused stands when its chat request is sent again after it
        failed (completions.tools.entry): the calls it made keep their recorded results, a
        call whose outcome was never recorded is answered as interrupted (not run again), and
        the loop goes on with a model call. Only what the conversation lacks is stored."""
        messages = self.execution.messages
        stored = self.execution.pending.get("stored", len(messages))
        start = self.execution.pending.get("start", stored)
        self.transcript.extend(messages[stored:])
        self.transcript.extend(interrupted(self.execution, since=start))
        # This request's part starts here: its answer shows none of the calls made before.
        self.execution.request_step = len(self.execution.steps)

    async def pause(self, message: dict, decision: Decision) -> Paused:
        """Pause the run on the step's calls that need an approval."""
        message = self.hand_back(message, decision, pausing=True)
        stored = transcribed(message)  # as Run.answer stores an answer in audio
        waiting = decision.waiting
        ttl = min(self.tools[c["function"]["name"]].approval_ttl_seconds for c in waiting)
        names = {(c.get("function") or {}).get("name") for c in message.get("tool_calls") or ()}
        stamps = {t.name: services.tool_stamp(t) for t in self.tools.values() if t.name in names}
        approval = await self.save(
            services.execution_pause,
            message=stored,
            waiting=waiting,
            ttl_seconds=ttl,
            stamps=stamps,
            handback=self.handback,
        )
        self.transcript.append(stored)
        return Paused(approval, stored=stored, shown={**message, "tool_calls": waiting})

    async def answer(self, message: dict) -> dict:
        """End the run with `message` as its answer (led by `preface`, which a replay shows
        again). Returns the answer as it is stored: an answer in audio (content null) as its
        transcript, as the gateway stores one (completions.streaming.transcribed); kept as it
        came, the conversation lost what was said, and the run held the audio's megabytes."""
        message = transcribed(message)
        self.execution.messages.append(message)
        self.transcript.append(message)
        self.execution.preface = list(self.preface)
        await self.end(Execution.Status.COMPLETED)
        return message

    async def end(self, status: str, error: str = "") -> None:
        if self.beating is not None:
            self.beating.cancel()
        if self.taken_over:  # another's now (or failed as lost): nothing of it is written here
            return
        self.execution.status = status
        self.execution.error = error[:2000]
        if status != Execution.Status.FAILED:  # a failed run keeps it, to be resumed again
            self.execution.pending = {}
        else:
            # A run (or a resume) that failed stores what it ran in the conversation
            # (completions.tools.entry): one sent again stores only what follows.
            self.execution.pending["stored"] = len(self.execution.messages)
        await self.save()

    def engram_of(self, approval: Approval | None = None) -> dict:
        out = {**self.engram, "execution_id": self.execution.id, "request_id": self.request_id}
        if approval is not None:
            out["approval_id"] = approval.id
            out["expires_at"] = int(approval.expires_at.timestamp())
        return out


async def _heartbeat(run: weakref.ref[Run], execution_id: str, owner: str) -> None:
    """Run.beat's touches: timed on the event loop, each touch on a pool thread (a blocked
    loop, a pool busy with other work or a hung touch delays them: a live run can pass for
    lost, which its owner token makes safe: Run.save); the run is held weakly, so a run nobody
    drives any longer stops saying it is alive."""
    while True:
        await asyncio.sleep(services.HEARTBEAT_EVERY.total_seconds())
        held = run()
        if held is None or held.execution.status != Execution.Status.RUNNING:
            return
        del held  # not kept alive by the touch
        try:
            alive = await db(services.execution_heartbeat, execution_id=execution_id, owner=owner)
        except Exception:  # the database away: the next touch may get through
            logger.warning("tools: the heartbeat of run %s failed", execution_id, exc_info=True)
            continue
        if not alive:
            # Ended meanwhile, or (silent past services.LOST_AFTER) found lost and taken over
            # by its request sent again: this process no longer speaks for it.
            if (held := run()) is not None and held.execution.status == Execution.Status.RUNNING:
                logger.warning("tools: run %s was taken as lost while it ran", execution_id)
            return


def requested_tools(execution: Execution, agent_tools: Collection[str]) -> list[dict]:
    """The run's request's own tool definitions: its body's without the agent's it started
    with (Execution.agent_tools; for a run started before they were kept, the agent's now,
    `agent_tools`)."""
    started = set(execution.agent_tools or agent_tools)
    return [
        t
        for t in execution.body.get("tools") or ()
        if isinstance(t, dict) and tool_name(t) not in started
    ]


def declares_client_tools(execution: Execution, agent_tools: Collection[str]) -> bool:
    """Did the run's request declare tools of its own beside the agent's (`agent_tools`, their
    names)? A stream then shows the agent's calls in chunks with no choices (Streamer)."""
    return any(tool_name(t) not in agent_tools for t in requested_tools(execution, agent_tools))


@dataclass
class Paused:
    approval: Approval
    # The step whole, the turn's answer in the conversation: the resume stores a result for
    # every call of it, and the upstream refuses a result whose call is not in the assistant
    # message before it.
    stored: dict
    shown: dict  # what the client is shown: the step with the calls to decide only


@dataclass
class Resumed:
    """What a resume does before the loop goes on: the paused step's calls, decided (the
    client's calls of that step, if any, are the run's `handback`)."""

    message: dict
    calls: list[dict]
    rejected: set[str]
    reason: str
    gone: set[str] = field(default_factory=set)  # calls whose tool was deleted meanwhile


# --- not streamed ---------------------------------------------------------------------------


@dataclass
class Answer:
    data: dict  # the chat.completion to send
    assistant: dict | None  # what memory stores as the answer


async def complete(run: Run, resumed: Resumed | None = None) -> Answer:
    try:
        if resumed is not None:
            await run.execute(
                resumed.message,
                resumed.calls,
                rejected=resumed.rejected,
                reason=resumed.reason,
                resumed=True,
                gone=resumed.gone,
            )
        data: dict = {}  # the last model call's answer
        while True:
            if run.handback is not None:
                return await _handed_back(run, data)
            completion = await run.route.provider.complete(await run.next_call(stream=False))
            data = completion.data
            choices = data.get("choices") or []
            first = choices[0] if choices and isinstance(choices[0], dict) else {}
            message: dict = first["message"] if isinstance(first.get("message"), dict) else {}
            run.model_step(
                message, first.get("finish_reason"), data.get("usage"), completion.upstream_ms
            )
            decision = run.decide(message)
            if decision.kind == "execute":
                await run.execute(run.hand_back(message, decision, pausing=False), decision.calls)
                continue
            data["model"] = run.execution.model
            data["usage"] = request_usage(run.execution)
            if decision.kind == "pause":
                paused = await run.pause(message, decision)
                data["choices"] = [
                    {
                        "index": 0,
                        "message": paused.shown,
                        "finish_reason": "tool_calls",
                        "logprobs": None,
                    }
                ]
                data["engram"] = run.engram_of(paused.approval)
                return Answer(data, paused.stored)
            stored = await run.answer(message)
            data["engram"] = run.engram_of()
            if decision.finish is not None and isinstance(first, dict):
                first["finish_reason"] = decision.finish
            if run.preface and isinstance(first, dict):
                calls = [*run.preface, *(message.get("tool_calls") or [])]
                first["message"] = {**message, "tool_calls": calls}
            return Answer(data, stored)
    except BaseException as exc:
        if run.execution.status == Execution.Status.RUNNING:
            await failed(run, exc)
        raise


async def _handed_back(run: Run, data: dict) -> Answer:
    """The run's answer: the client's own calls of its last step (Run.hand_back), once the
    agent's calls of that step have run. `data`: the last model call's answer, or nothing
    (a resume that made no model call)."""
    message = run.handback
    assert message is not None
    run.handback = None
    await run.answer(message)
    shown = {**message, "tool_calls": [*run.preface, *message["tool_calls"]]}
    out = {
        "id": f"chatcmpl-{run.request_id}",
        "object": "chat.completion",
        "created": int(time.time()),
        **data,
        "model": run.execution.model,
        "choices": [
            {"index": 0, "message": shown, "finish_reason": "tool_calls", "logprobs": None}
        ],
        "usage": request_usage(run.execution),
        "engram": run.engram_of(),
    }
    return Answer(out, message)


def usage_of(spent: dict) -> dict:
    """`usage` of an answer: what this request's upstream calls used (zeros: none made)."""
    return {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0, **spent}


def request_usage(execution: Execution) -> dict | None:
    """The `usage` of the answer of the request now running the run, and of its replay: the
    model calls' from Execution.request_step on, summed as Run.charged sums them (a call the
    upstream reported no usage for: the estimate it was charged, `usage_estimated`); zeros
    when the request made none (a resume that only ran tools); None when it made some and
    none has figures (steps stored before estimates were kept: zeros would be figures nobody
    measured)."""
    spent: dict = {}
    called = False
    for step in execution.steps[execution.request_step :]:
        if step.get("type") == "model":
            called = True
            usage = step.get("usage")
            if not charging.reported(usage):
                usage = step.get("usage_estimated") or usage
            _add_usage(spent, usage)
    return None if called and not spent else usage_of(spent)


async def failed(run: Run, exc: BaseException) -> None:
    message = exc.message if isinstance(exc, ApiError) else type(exc).__name__
    try:
        await run.end(Execution.Status.FAILED, message)
    except Exception:
        # The run's messages or steps are what the database refused: its status still goes
        # in. If the database itself is away, the original error is still the one to raise.
        with contextlib.suppress(Exception):
            await db(
                services.execution_status_set,
                execution=run.execution,
                status=Execution.Status.FAILED,
                error=message,
            )
