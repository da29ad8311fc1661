"""The tool loop as server-sent events (completions.tools.run has the loop's rules).

The model's deltas go out as they come (its text, refusal, thinking, annotations: `relayed`),
and the answer's signed thinking (`reasoning_details`) whole with its last chunk. Each executed call goes out when it starts as a
tool-call delta of choice 0 (its `index` after every call sent before in the stream) in a chunk
that also carries `"engram": {"tool_call": {"id", "name", "status": "running",
"execution_id"}}` (for a client that declared tools of its own, in a chunk with no choices: the
message its SDK assembles then holds only its own calls, which it runs); its result follows in a chunk with no choices and `"engram": {"tool_result":
{"tool_call_id", "name", "status", "content" | "error", "duration_ms"}}`; SSE comments keep the
stream open while tools run and while the model has not sent its first token. A pause ends with
the waiting calls as deltas and its finish (`finish_reason: "tool_calls"`, `engram.approval_id`,
…). Every end is `completions.streaming.ending`'s: the usage chunk, when asked for, last before
`data: [DONE]` with the `engram` object on it, else `engram` on the chunk with the finish. The
first model call is opened before the answer's status goes out (open_first): its failure then
is that status, as the gateway's is. A failure mid-run (the upstream's, or a bug's) ends the
stream with one error frame, then `data: [DONE]`, as the gateway's relay does.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any

import aiohttp

from completions.conf import conf
from completions.providers.base import Call, Chunk, StreamFailed
from completions.streaming import (
    DONE,
    KEEPALIVE,
    Assembler,
    done_within,
    dumps,
    ending,
    frame,
    own_chunk,
)
from completions.tools.models import Execution
from completions.tools.run import Decision, Resumed, Run, failed, request_usage, tool_name
from config.common.background import spawn
from config.common.errors import ApiError, DomainError, api_error, unexpected_error
from memory.text import kept_reasoning

logger = logging.getLogger("engram.tools")


class Streamer:
    """The run as SSE frames. `on_end(status, assistant, incomplete, code)` is called once,
    before the last chunk: it charges the run and returns what that chunk's `engram` adds
    (`credits_charged`, the client's `request_id`)."""

    def __init__(
        self,
        run: Run,
        *,
        include_usage: bool,
        on_end: Callable[[int, dict | None, bool, str], dict],
        first: tuple[asyncio.Future, float] | None = None,
        charged: Callable[[], dict | None] = lambda: None,
    ) -> None:
        self.run = run
        # The usage the run was charged, once `on_end` charged it: the end's usage when the
        # upstream reported none (completions.streaming.relay ends a plain stream so).
        self.charged = charged
        # The run's first model call and when it began, opened before the answer's status was
        # sent (open_first).
        self.first = first
        self.include_usage = include_usage
        self.on_end = on_end
        # One id for the whole stream, not the upstream's: a run makes several model calls,
        # each with an id of its own, and sends chunks before the first (a resume's results,
        # Engram's own calls); SDKs assemble one message from chunks sharing an id, and clients
        # key a stream on it. The request id makes it findable in the usage records.
        self.id = f"chatcmpl-{run.request_id}"
        # The upstream's `system_fingerprint` and `service_tier`, as its latest chunk sent
        # them: every chunk from the first model chunk on carries them, as a relayed stream's do.
        self.upstream: dict = {}
        self.created = int(time.time())
        self.role_sent = False
        self.index = 0  # the next tool-call index of choice 0 in this stream
        self.finish: str | None = None  # the last model call's finish_reason
        # The model call being read, till it ends: an answer cut short is charged what came of
        # it (completions.charging), as a plain stream cut short is.
        self.reading: Assembler | None = None

    def chunk(
        self,
        delta: dict | None,
        *,
        finish: str | None = None,
        engram: dict | None = None,
        usage: dict | None = None,
        logprobs: Any = None,
    ) -> bytes:
        choices = []
        if delta is not None:
            if not self.role_sent:
                delta = {"role": "assistant", **delta}
                self.role_sent = True
            choices = [{"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish}]
        return own_chunk(
            stream_id=self.id,
            created=self.created,
            model=self.run.execution.model,
            choices=choices,
            upstream=self.upstream,
            usage=usage,
            engram=engram,
        )

    def _usage(self, reported: dict | None) -> dict | None:
        """The end's usage when the client asked for it: the model calls' as the upstream
        reported them, else the estimate the run was charged (`charged`, after `on_end`)."""
        if not self.include_usage or reported is not None:
            return reported
        return self.charged()

    def calls_delta(self, calls: list[dict]) -> dict:
        delta = {
            "tool_calls": [
                {
                    "index": self.index + i,
                    "id": c.get("id"),
                    "type": "function",
                    "function": {
                        "name": (c.get("function") or {}).get("name"),
                        "arguments": (c.get("function") or {}).get("arguments") or "",
                    },
                }
                for i, c in enumerate(calls)
            ]
        }
        self.index += len(calls)
        return delta

    async def frames(self, resumed: Resumed | None = None) -> AsyncGenerator[bytes, None]:
        run = self.run
        ended = False
        failure: Exception
        error: dict
        try:
            try:
                if run.preface:
                    yield self.chunk(self.calls_delta(run.preface))
                if resumed is not None:
                    async for out in self._execute(resumed.message, resumed.calls, resumed):
                        yield out
                while True:
                    message: dict = {}
                    if run.handback is not None:  # the client's calls, once the agent's ran
                        message, run.handback = run.handback, None
                        decision = Decision("answer")
                    else:
                        async for out in self._model(message):
                            yield out
                        decision = run.decide(message)
                    if decision.kind == "execute":
                        ours = run.hand_back(message, decision, pausing=False)
                        async for out in self._execute(ours, decision.calls, None):
                            yield out
                        continue
                    usage = request_usage(run.execution) if self.include_usage else None
                    if decision.kind == "pause":
                        paused = await run.pause(message, decision)
                        shown = paused.shown
                        yield self.chunk(
                            kept_reasoning(shown) | self.calls_delta(shown["tool_calls"])
                        )
                        ended = True
                        charged = self.on_end(200, paused.stored, False, "")
                        usage = self._usage(usage)
                        yield ending(
                            self.chunk,
                            {},
                            finish="tool_calls",
                            usage=usage,
                            engram=run.engram_of(paused.approval) | charged,
                        )
                        return
                    calls = message.get("tool_calls") or []
                    if calls:  # the client's own tools, after the step's signed thinking
                        # (Anthropic's), which the client sends back with their results
                        yield self.chunk(kept_reasoning(message) | self.calls_delta(calls))
                    await run.answer(message)
                    ended = True
                    charged = self.on_end(200, message, False, "")
                    usage = self._usage(usage)
                    # The model's own reason ("length", "content_filter", ...) unless the
                    # answer is the client's calls: a cut answer must not read as complete.
                    finish = "tool_calls" if calls else decision.finish or self.finish or "stop"
                    # The answer's signed thinking, as the answer not streamed carries it.
                    details = message.get("reasoning_details")
                    last = {"reasoning_details": details} if details and not calls else {}
                    yield ending(
                        self.chunk,
                        last,
                        finish=finish,
                        usage=usage,
                        engram=run.engram_of() | charged,
                    )
                    return
            except (
                ApiError,
                DomainError,  # services.TakenOver: the run was taken from this process
                StreamFailed,
                TimeoutError,
                aiohttp.ClientError,
                OSError,
            ) as exc:
                if isinstance(exc, ApiError | DomainError):
                    error = api_error(exc).body()["error"]
                elif isinstance(exc, StreamFailed):
                    error = exc.error
                else:
                    error = {
                        "message": f"The upstream failed ({type(exc).__name__}).",
                        "type": "upstream_error",
                    }
                failure, status, code = exc, 200, "stream_failed"
            except Exception as exc:  # a bug: the stream still ends as every stream does
                if ended:  # the run was finished and charged: nothing left to end
                    raise
                logger.exception("a streamed tool run failed")
                unexpected = unexpected_error(exc)
                error = unexpected.body()["error"]
                failure, status = exc, unexpected.status
                code = unexpected.code or unexpected.type
            await failed(run, failure)
            ended = True
            self.on_end(status, None, True, code)
            yield frame(
                dumps(
                    {
                        "error": {
                            "message": "",
                            "type": "upstream_error",
                            "param": None,
                            "code": None,
                        }
                        | error
                    }
                )
            )
            yield DONE
        finally:
            if self.first is not None:  # opened, never read: the client went away first
                await _close(self.first[0])
                self.first = None
            if not ended:  # the client went away
                self.on_end(499, self.cut_short(), True, "client_closed")
                if run.execution.status == Execution.Status.RUNNING:
                    # Recorded, so a resume sent again goes on from here (no lost process).
                    spawn(
                        run.end(Execution.Status.FAILED, "interrupted: the client went away"),
                        name="tools_client_gone",
                    )

    async def _model(self, message: dict) -> AsyncGenerator[bytes, None]:
        """One upstream call: its text goes out as it comes; `message` receives the answer."""
        run = self.run
        if self.first is not None:
            (opener, started), self.first = self.first, None
        else:
            opener, started = _open_call(run, await run.next_call(stream=True))
        async for out in _kept_alive(opener):
            yield out
        opened = opener.result()
        assembler = self.reading = Assembler()
        finish = None
        try:
            chunks = opened.chunks().__aiter__()
            first = asyncio.ensure_future(chunks.__anext__())  # the model may think a while
            async for out in _kept_alive(first):
                yield out
            async for chunk in _from(first, chunks):
                assembler.add(chunk.data)
                for name in _UPSTREAM_FIELDS:
                    if name in chunk.data:
                        self.upstream[name] = chunk.data[name]
                for choice in chunk.data.get("choices") or ():
                    if choice.get("index", 0) != 0:
                        continue
                    finish = choice.get("finish_reason") or finish
                    # What comes as it comes, as the gateway's relay sends it: the text, the
                    # refusal, the thinking (`reasoning_content`), annotations, audio, logprobs.
                    text = relayed(choice.get("delta"))
                    if text or choice.get("logprobs"):
                        yield self.chunk(text, logprobs=choice.get("logprobs"))
        finally:
            await opened.aclose()
        self.finish = finish
        self.reading = None
        message.update(assembler.assistant())
        run.model_step(message, finish, assembler.usage, (time.perf_counter() - started) * 1000)

    def cut_short(self) -> dict | None:
        """What the model call being read had sent when the client went away, as a plain stream
        cut short passes it on (None: nothing came). Its tool calls are left out: a call cut
        mid-way never ran, and stored, the conversation would hold a call without a result."""
        if self.reading is None or self.reading.head is None:
            return None
        cut = self.reading.assistant()
        cut.pop("tool_calls", None)
        return cut

    async def _execute(
        self, message: dict, calls: list[dict], resumed: Resumed | None
    ) -> AsyncGenerator[bytes, None]:
        run = self.run
        rejected: set[str] = resumed.rejected if resumed else set()
        gone: set[str] = resumed.gone if resumed else set()
        # A client with tools of its own runs every call of the message its SDK assembles:
        # it is shown Engram's calls in chunks with no choices, so that message holds its own.
        shown = not run.client_tools
        for call in calls:
            if call["id"] in rejected or call["id"] in gone or tool_name(call) not in run.tools:
                continue  # a call of no tool (run.Run.execute) runs nothing either
            mark = {"id": call["id"], "name": call["function"]["name"], "status": "running"}
            yield self.chunk(
                self.calls_delta([call]) if shown else None,
                engram={"tool_call": {**mark, "execution_id": run.execution.id}},
            )
        work = asyncio.ensure_future(
            run.execute(
                message,
                calls,
                rejected=rejected,
                reason=resumed.reason if resumed else "",
                resumed=resumed is not None,
                gone=gone,
            )
        )
        async for out in _kept_alive(work):
            yield out
        for call, result, status in work.result():
            outcome: dict[str, Any] = {
                "tool_call_id": call["id"],
                "name": call["function"]["name"],
                "status": status,
                "duration_ms": round(result.ms, 1),
            }
            if result.error is None:
                outcome["content"] = result.content
            else:
                outcome["error"] = result.error
            yield self.chunk(None, engram={"tool_result": outcome})


# The upstream's fields of a chunk that Engram's chunks repeat (Streamer.upstream).
_UPSTREAM_FIELDS = ("system_fingerprint", "service_tier")

# The delta fields the run sends otherwise: the role once (Streamer.chunk); the tool calls as
# each runs, is paused on, or is handed back; the signed thinking (`reasoning_details`) with the
# answer's last chunk, once whole (sent in pieces, the client's SDK would join two steps' entries
# of the same `index`).
_NOT_RELAYED = frozenset({"role", "tool_calls", "function_call", "reasoning_details"})


def relayed(delta: object) -> dict:
    """The fields of an upstream delta that go out as they come (empty values left out)."""
    if not isinstance(delta, dict):
        return {}
    return {k: v for k, v in delta.items() if k not in _NOT_RELAYED and v is not None and v != ""}


async def open_first(run: Run) -> tuple[asyncio.Future, float]:
    """The run's first model call, opened while the answer's status is not sent yet: an upstream
    error within the keep-alive interval (before any byte) is raised here, so the door answers
    its status (502, 504, the upstream's 4xx) as a stream without tools does
    (completions.gateway); later, it is the stream's error frame. Returns the call and when it
    began, for Streamer(first=...)."""
    opener, started = _open_call(run, run.call(stream=True))
    try:
        if await done_within(opener, conf().keepalive):
            opener.result()
    except BaseException:
        opener.cancel()
        raise
    return opener, started


def _open_call(run: Run, call: Call) -> tuple[asyncio.Future, float]:
    """One model call of the run, streamed, started now; and when it began."""
    started = time.perf_counter()
    return asyncio.ensure_future(run.route.provider.stream(call)), started


async def _close(opener: asyncio.Future) -> None:
    """An opened model call nobody reads: cancelled, or its stream closed."""
    if not opener.done():
        opener.cancel()
    elif not opener.cancelled() and opener.exception() is None:
        await opener.result().aclose()


async def _kept_alive(future: asyncio.Future) -> AsyncGenerator[bytes, None]:
    """SSE comments until `future` is done, so proxies keep the stream open while the model
    thinks before its first token or a slow tool runs; cancelled if the client goes away."""
    try:
        while not (await asyncio.wait({future}, timeout=conf().keepalive))[0]:
            yield KEEPALIVE
    finally:
        if not future.done():
            future.cancel()


async def _from(first: asyncio.Future, rest: AsyncIterator[Chunk]) -> AsyncIterator[Chunk]:
    """The stream's chunks: the first (awaited apart, with keep-alives), then the rest."""
    try:
        chunk = first.result()
    except StopAsyncIteration:  # an empty stream
        return
    yield chunk
    async for chunk in rest:
        yield chunk
