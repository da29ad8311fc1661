"""The SSE relay: upstream chunks go out one by one as they arrive, never buffered.

Engram's own tool calls first when the client declared them (completions.engram_tools, the
model's tool calls numbered after them); an agent's name as `model` in every chunk when one was
called; role delta first; tool-call deltas as they come; the usage chunk only when the client asked
(`stream_options.include_usage`) — Engram always asks the upstream for it, and sends one of its
own, with the estimate charged, for an upstream that reports none; the `engram` object
(credits charged, request id, what memory did) on the last chunk before `data: [DONE]` (see
`Tail`). Before the first chunk, SSE
comments keep the connection alive. A failure after the first byte is one error frame, then
[DONE]. Whatever ends the stream (done, failure, client gone) closes the upstream response
and finishes the turn exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import aiohttp

from completions.providers.base import (
    Chunk,
    StreamFailed,
    UpstreamStream,
    UsualChunk,
    without_null_usage,
)
from completions.providers.upstream_errors import refused_status
from completions.providers.wire import MAX_EVENT_BYTES, dumps
from config.common.errors import ApiError
from memory.text import REASONING_DETAIL_TEXT, content_text

logger = logging.getLogger("engram.gateway")

T = TypeVar("T")


def _text(content: Any) -> str:
    """A delta's content as text: some OpenAI-compatible servers stream a list of parts, which
    failed the answer's assembly (a TypeError) after the client had it whole."""
    return content if type(content) is str else content_text(content)


# The most of an answer's text a stream keeps (the Assembler: for memory and the charge of an
# answer cut before its usage). Each event is bounded (wire.MAX_EVENT_BYTES), the whole answer
# was not: an upstream streaming small chunks without end grew it until the process ran out of
# memory. One event may be an image as a data URL of up to MAX_EVENT_BYTES (OpenRouter's image
# models: ~20 MB), so the bound holds one whole with room; a text answer is far below it (a
# model's largest output, 128k tokens, is ~0.5 M characters). Past it the stream ends with its
# error frame (`answer_too_long`), the upstream closed, the turn stored as far as it came.
MAX_ANSWER_CHARS = 2 * MAX_EVENT_BYTES


def answer_too_long() -> StreamFailed:
    return StreamFailed(
        f"The upstream provider's answer passed {MAX_ANSWER_CHARS:,} characters; Engram ended"
        " the stream there.",
        code="upstream_answer_too_long",
    )


KEEPALIVE = b": keep-alive\n\n"
DONE = b"data: [DONE]\n\n"


def frame(payload: bytes) -> bytes:
    return b"data: " + payload + b"\n\n"


# The attribute of a `waking_task` holding the wakes of the `done_within`s waiting for it (on
# the task, not in a registry: a task cancelled before its first step never runs its finally).
_WAKES = "engram_wakes"
# Engram's tasks of a request are made named, as loop.create_task does without a task
# factory (Engram sets none): unnamed, Python 3.11 formats "Task-<n>" for each (~1,800
# instructions; uvloop's create_task makes the task, then sets a name if one is given).
_WAKING = "engram-upstream-wait"


def waking_task(coroutine: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
    """`coroutine`'s task, whose end wakes a `done_within` waiting for it from the task's own
    last step. A task's done callbacks run a loop turn after it ends, and the waiter they wake
    another turn later: before the first token a stream waits twice (its opening, its first
    chunk), four turns where two do, and each turn of a loop relaying 500 streams is milliseconds
    (bench_streams: reading the first event ahead added three turns and ~90 ms of TTFT p50)."""
    wakes: list[Callable[[], None]] = []

    async def run() -> T:
        try:
            return await coroutine
        finally:
            for wake in wakes:
                wake()

    task = asyncio.Task(run(), loop=asyncio.get_running_loop(), name=_WAKING)
    setattr(task, _WAKES, wakes)
    # A task cancelled before its first step never starts `run`, nor so `coroutine`: closed here,
    # not left to warn that it was never awaited (a no-op once it ran).
    task.add_done_callback(lambda _: coroutine.close())
    return task


async def done_within(future: asyncio.Future, seconds: float) -> bool:
    """Whether `future` is done within `seconds`; never cancels it (a cancelled caller leaves
    it running). asyncio.wait({future}, timeout=...) for one future: that one's sets, counter
    and callbacks cost ~65,000 instructions with the task it waits for, this ~45,000
    (callgrind, uvloop); a stream waits twice (the upstream's headers, its first chunk)."""
    if future.done():
        return True
    waiter = future.get_loop().create_future()

    def wake(_: object = None) -> None:
        if not waiter.done():
            waiter.set_result(None)

    timer = waiter.get_loop().call_later(seconds, wake)
    wakes = getattr(future, _WAKES, None)
    if wakes is not None:  # a waking_task: woken from its last step
        wakes.append(wake)
    else:
        future.add_done_callback(wake)
    try:
        await waiter
    finally:
        timer.cancel()
        if wakes is not None:
            if wake in wakes:
                wakes.remove(wake)
        else:
            future.remove_done_callback(wake)
    return future.done()


async def _first(chunks: AsyncIterator[Chunk]) -> Chunk:
    """The stream's first chunk, read in a task of its own while the keep-alives wait beside
    it (a task made directly: ensure_future(chunks.__anext__()) wrapped the awaitable in a
    coroutine of its own after a failed hasattr, ~4,000 instructions more)."""
    return await chunks.__anext__()


class Finisher(Protocol):
    engram: dict

    def stream_opened(self, stream: UpstreamStream) -> None: ...

    def finish(
        self,
        *,
        status: int,
        assistant: dict | None,
        usage: dict | None,
        incomplete: bool,
        error_code: str = "",
        refused: bool = False,
        written: list[dict] | None = None,
    ) -> None: ...

    async def reply_committed(self) -> None: ...

    def usage_charged(self) -> dict | None: ...


def transcribed(message: Any) -> Any:
    """An answer as memory keeps it: one in audio (`modalities` ["text", "audio"]: content
    null, `audio` its id, base64 data and transcript) with its transcript as its text, and
    without the audio (whose data is megabytes, and whose id expires within hours). Left as it
    came, its content null, it was not stored at all: memory and history never saw what was
    said. Any other message as it is."""
    if not isinstance(message, dict) or "audio" not in message:
        return message
    audio = message["audio"]
    transcript = audio.get("transcript") if isinstance(audio, dict) else None
    kept = {name: value for name, value in message.items() if name != "audio"}
    if not kept.get("content") and isinstance(transcript, str) and transcript:
        kept["content"] = transcript
    return kept


class Assembler:
    """Rebuilds choice 0 (content, refusal, tool calls, reasoning details, an audio answer's
    transcript) and keeps the usage, for memory and accounting; the other choices (`n` > 1)
    each in an Assembler of its own (`others`), for the charge of an answer cut before its
    usage (`written`)."""

    def __init__(self) -> None:
        self.content: list[str] = []
        self.transcript: list[str] = []  # an audio answer's words (`transcribed`), content null
        self.refusal: list[str] = []  # a refusal's words (structured outputs), content null
        self.tool_calls: dict[int, dict] = {}
        self.reasoning_details: list[dict] = []
        self.usage: dict | None = None
        self.head: dict | None = None  # id, created, model of the stream
        self.others: dict[int, Assembler] = {}  # by index: the choices after choice 0
        # What may still be kept, of MAX_ANSWER_CHARS (every choice's text together): past it,
        # the next chunk raises answer_too_long (`add`, or Tail.usual's way to it), so the
        # chunk that passed it was both sent and kept. Read when the stream starts.
        self.room = MAX_ANSWER_CHARS

    def add(self, data: dict) -> None:
        if self.room < 0:
            raise answer_too_long()
        if self.head is None and "id" in data:
            self.head = {
                "id": data.get("id"),
                "created": data.get("created"),
                "model": data.get("model"),
            }
        if data.get("usage"):
            self.usage = data["usage"]
        for choice in data.get("choices") or ():
            index = choice.get("index", 0)
            into = self if index == 0 else self._other(index)
            if into is None:
                continue
            delta = choice.get("delta") or {}
            if content := delta.get("content"):
                text = _text(content)
                into.content.append(text)
                self.room -= len(text)
            if (refusal := delta.get("refusal")) and type(refusal) is str:
                into.refusal.append(refusal)
                self.room -= len(refusal)
            audio = delta.get("audio")
            words = audio.get("transcript") if type(audio) is dict else None
            if words and type(words) is str:
                into.transcript.append(words)
                self.room -= len(words)
            for call in delta.get("tool_calls") or ():
                slot = into.tool_calls.setdefault(
                    call.get("index", 0),
                    {"id": None, "type": "function", "function": {"name": "", "arguments": ""}},
                )
                if call.get("id"):
                    slot["id"] = call["id"]
                function = call.get("function") or {}
                if function.get("name"):
                    slot["function"]["name"] += function["name"]
                    self.room -= len(function["name"])
                if function.get("arguments"):
                    slot["function"]["arguments"] += function["arguments"]
                    self.room -= len(function["arguments"])
            details = delta.get("reasoning_details")
            for detail in details if isinstance(details, list) else ():
                if isinstance(detail, dict):
                    into._add_detail(detail)
                    self.room -= sum(
                        len(value)
                        for name, value in detail.items()
                        if name in REASONING_DETAIL_TEXT and type(value) is str
                    )

    def _other(self, index: Any) -> Assembler | None:
        """The Assembler of choice `index` (not 0), made when it first comes; None for an
        index that is not a number (skipped, as it was)."""
        if type(index) is not int:
            return None
        other = self.others.get(index)
        if other is None:
            other = self.others[index] = Assembler()
        return other

    def _add_detail(self, detail: dict) -> None:
        index = detail.get("index")
        slot = next(
            (d for d in self.reasoning_details if index is not None and d.get("index") == index),
            None,
        )
        if slot is None:
            self.reasoning_details.append(dict(detail))
            return
        for name, value in detail.items():
            # The pieces of one entry (one `index`): text fields concatenated, others kept.
            if name in REASONING_DETAIL_TEXT and isinstance(value, str):
                before = slot.get(name)
                slot[name] = before + value if isinstance(before, str) else value
            elif value is not None:
                slot[name] = value

    def answer(self) -> dict | None:
        """The answer for memory, or None when the stream said nothing yet (its role chunk
        alone: the user stopped it before the first word). `{"role": "assistant", "content":
        null}` is a message OpenAI refuses (and the door, from a client); stored, every later
        turn of the conversation sent it as history, and was refused."""
        if self.head is None or not (
            self.content or self.tool_calls or self.refusal or self.transcript
        ):
            return None
        return self.assistant()

    def written(self) -> list[dict]:
        """Every choice's message as far as the model wrote it (choice 0's first), those that
        wrote nothing left out: what an answer cut before its usage is charged for
        (completions.charging). Its reasoning counts too: the upstream bills it."""
        choices = [self, *(self.others[index] for index in sorted(self.others))]
        return [
            choice.assistant()
            for choice in choices
            if choice.content
            or choice.transcript
            or choice.refusal
            or choice.tool_calls
            or choice.reasoning_details
        ]

    def assistant(self) -> dict:
        text = "".join(self.content) or "".join(self.transcript)  # `transcribed`, streamed
        message: dict = {"role": "assistant", "content": text or None}
        if self.refusal:
            message["refusal"] = "".join(self.refusal)
        if self.tool_calls:
            message["tool_calls"] = [self.tool_calls[i] for i in sorted(self.tool_calls)]
        if self.reasoning_details:
            message["reasoning_details"] = self.reasoning_details
        return message


@dataclass(frozen=True)
class Rewrite:
    """What Engram changes in the upstream's chunks: `model` (an agent's, as the client sent
    it) and the index of the model's tool calls, after the `shift` calls Engram sent first,
    and their `id`, the one those calls went out under (a stream has one id, as OpenAI's)."""

    model: str | None = None
    shift: int = 0
    id: str | None = None


def preface(tool_calls: list[dict], *, stream_id: str, model: str) -> list[bytes]:
    """Engram's own tool calls (completions.engram_tools) as chunks, one call each."""
    created = int(time.time())
    frames = []
    for index, call in enumerate(tool_calls):
        delta: dict[str, Any] = {"tool_calls": [{"index": index, **call}]}
        if index == 0:
            delta = {"role": "assistant", "content": None, **delta}
        choices = [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}]
        frames.append(own_chunk(stream_id=stream_id, created=created, model=model, choices=choices))
    return frames


def own_chunk(
    *,
    stream_id: str | None,
    created: int | None,
    model: str | None,
    choices: list,
    upstream: dict | None = None,
    **extra,
) -> bytes:
    """A chunk of Engram's own making (not relayed from the upstream) as a frame; `upstream`:
    fields taken as the upstream sent them (`system_fingerprint`, `service_tier`, null ones
    too); `extra` fields (`usage`, `engram`) only where given."""
    data = {
        "id": stream_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        **(upstream or {}),
        "choices": choices,
    }
    data.update((name, value) for name, value in extra.items() if value is not None)
    return frame(dumps(data))


def ending(
    chunk: Callable[..., bytes],
    delta: dict,
    *,
    finish: str,
    usage: dict | None,
    engram: dict,
) -> bytes:
    """The last frames of a stream Engram writes itself (a tool run's, its replay's), by the rule
    the relay's `Tail` keeps for an upstream's: the chunk with the finish reason, then the usage
    chunk (no choices) when the client asked for usage; `engram` on the last of them; then
    [DONE]. `chunk(delta, finish=, usage=, engram=)` writes one chunk (None: no choices).
    The usage chunk stays the last before [DONE], as OpenAI's: the SDKs take `usage` from the
    last chunk (openai-python's ChatCompletionStreamState), and an `engram` chunk after it left
    their final completion's usage None."""
    if usage is None:
        return chunk(delta, finish=finish, engram=engram) + DONE
    return chunk(delta, finish=finish) + chunk(None, usage=usage, engram=engram) + DONE


def _outgoing(
    chunk: Chunk, include_usage: bool, roles: set[int], rewrite: Rewrite | None = None
) -> bytes:
    """The frame to send for one upstream chunk, b"" to drop it. The upstream's own bytes
    where nothing is changed (the usual chunk: no JSON written)."""
    data, raw = chunk.data, chunk.raw
    if rewrite is not None:
        raw = None
        if rewrite.model is not None and "model" in data:
            data["model"] = rewrite.model
        if rewrite.id is not None and "id" in data:
            data["id"] = rewrite.id
        if rewrite.shift:
            for choice in data.get("choices") or ():
                for call in (choice.get("delta") or {}).get("tool_calls") or ():
                    if choice.get("index", 0) == 0 and isinstance(call, dict):
                        call["index"] = call.get("index", 0) + rewrite.shift
    choices = data.get("choices")
    if not choices and data.get("usage"):
        if not include_usage:
            return b""
    elif not include_usage and "usage" in data:
        del data["usage"]  # Engram asked for usage; a client that did not sees none
        raw = without_null_usage(raw) if raw is not None else None
    if choices:
        for choice in choices:
            index = choice.get("index", 0)
            if index not in roles:
                roles.add(index)
                delta = choice.get("delta")
                if isinstance(delta, dict) and "role" not in delta:
                    choice["delta"] = {"role": "assistant", **delta}
                    raw = None
    return frame(raw if raw is not None else dumps(data))


class Tail:
    """The stream's last chunks, held until the answer is charged, so `engram` rides on the
    last one: the usage chunk when the client asked for usage (it stays the last chunk, as
    OpenAI's: the SDKs take `usage` from the last chunk), else the chunk that carries the
    finish reason (so every chunk still has a choice, as OpenAI's do without usage); the rule
    `ending` keeps for the streams Engram writes itself. Only those chunks wait, and only for
    the end of the stream, which comes right after them; no token is held back. A usage chunk
    that comes early (before the finish reason, or before more text: some OpenAI-compatible
    servers send it so) waits for the end all the same: it went out at once, the finishing
    chunk after it, and the SDKs' final completion had no usage."""

    def __init__(self, include_usage: bool, roles: set[int], rewrite: Rewrite | None) -> None:
        self.include_usage = include_usage
        self.roles = roles
        self.rewrite = rewrite
        self.held: list[Chunk] = []  # finishing chunks, in their order
        self.usage: Chunk | None = None  # the latest usage chunk (counts are totals)
        # `usual`'s tests of the above (and of the assembler's head and the roles sent) passed:
        # nothing held or rewritten. Unset by `take` and `flush`, which may hold; the head and
        # the roles, once there, stay. Five tests a frame were ~500 instructions: the answer's
        # bound (MAX_ANSWER_CHARS) costs a frame about as much.
        self.plain = False

    def usual(self, chunk: Chunk, assembler: Assembler) -> bytes | None:
        """The frame of the usual chunk, its text added to `assembler`: one choice, index 0 (its
        role sent already), no finish reason, no tool calls, no usage, nothing held or rewritten.
        None, with nothing done, for any other chunk: then `assembler.add` and `take`, which give
        the same frame and text for the usual chunk at ~5,000 instructions more (their loops,
        lookups and calls: a relayed frame ~68,000 -> ~64,000, bench_relay_cpu.py --callgrind)."""
        if not self.plain:  # tested once, not each frame: only `take` and `flush` undo it
            if (
                self.held
                or self.usage is not None
                or self.rewrite is not None
                or assembler.head is None
                or 0 not in self.roles
            ):
                return None
            self.plain = True
        if assembler.room < 0:  # past MAX_ANSWER_CHARS: `add` raises
            return None
        if type(chunk) is UsualChunk:  # the stream's usual shape: its text without a parse
            form = chunk.form  # its frame: the shape's edges around the text, usage as below
            edges = form.bare if not self.include_usage and "usage" in form.shape else form.edges
            if edges is not None:
                if text := chunk.text:
                    assembler.content.append(text)
                    assembler.room -= len(text)
                if edges is form.edges and chunk.frame is not None:
                    return chunk.frame  # the read as it came (UsualShape.read_event)
                return edges[0] + chunk.written + edges[1]
        data = chunk.data
        try:  # what is not one choice with a delta raises here (a usage chunk's [], once)
            [choice] = data["choices"]
            delta = choice["delta"]
        except (KeyError, TypeError, ValueError):
            return None
        if (
            type(delta) is not dict
            or choice.get("finish_reason")
            or choice.get("index", 0) != 0
            or data.get("usage")
            or delta.get("tool_calls")
            or delta.get("reasoning_details")
            or delta.get("refusal")
            or delta.get("audio")
        ):
            return None
        if content := delta.get("content"):
            text = _text(content)
            assembler.content.append(text)
            assembler.room -= len(text)
        raw = chunk.raw
        if not self.include_usage and "usage" in data:  # as _outgoing
            del data["usage"]
            raw = without_null_usage(raw) if raw is not None else None
        return frame(raw if raw is not None else dumps(data))

    def take(self, chunk: Chunk) -> bytes:
        """The bytes to send now for `chunk` (the frames of any chunk held before it first):
        b"" while it is held."""
        self.plain = False
        data = chunk.data
        choices = data.get("choices")
        if not choices:
            if data.get("usage"):  # usage only: sent last if the client asked, else not at all
                if self.include_usage:
                    self.usage = chunk
                return b""
        else:
            for choice in choices:
                if isinstance(choice, dict) and choice.get("finish_reason"):
                    out = self._finishes()  # an earlier finish (another choice) goes out first
                    self.held.append(chunk)
                    return out
        sent = _outgoing(chunk, self.include_usage, self.roles, self.rewrite)
        return self._finishes() + sent if self.held else sent

    def _finishes(self) -> bytes:
        """The held finishing chunks' frames; a held usage chunk waits on for the end."""
        held, self.held = self.held, []
        return b"".join(
            _outgoing(chunk, self.include_usage, self.roles, self.rewrite) for chunk in held
        )

    def flush(self, engram: dict | None = None) -> bytes:
        """The held chunks' frames, the usage chunk last, `engram` on the last; b"" when none
        is held."""
        self.plain = False
        held, self.held = self.held, []
        if self.usage is not None:
            held.append(self.usage)
            self.usage = None
        if engram is not None and held:
            last = held[-1]
            last.data["engram"] = engram
            last.raw = None
        return b"".join(
            _outgoing(chunk, self.include_usage, self.roles, self.rewrite) for chunk in held
        )


async def relay(
    turn: Finisher,
    opener: asyncio.Task,
    *,
    include_usage: bool,
    keepalive: float,
    model: str | None = None,
    tool_calls: list[dict] | None = None,
    stream_id: str = "",
    client_model: str = "",
) -> AsyncGenerator[bytes, None]:
    """`model` replaces the upstream's in every chunk; `tool_calls` go out first (named by
    `stream_id` and `client_model`: the upstream has not answered yet)."""
    stream: UpstreamStream | None = None
    pending: asyncio.Future | None = None
    assembler = Assembler()
    roles: set[int] = set()
    rewrite = (
        Rewrite(model, len(tool_calls or ()), stream_id if tool_calls else None)
        if model or tool_calls
        else None
    )
    tail = Tail(include_usage, roles, rewrite)
    outcome = "cut"  # until proven otherwise: the client went away
    error: dict | None = None
    error_status = 200  # the stream's status line has gone out already
    error_code = "stream_failed"  # the usage record's, when `error` is set
    try:
        if tool_calls:
            yield b"".join(preface(tool_calls, stream_id=stream_id, model=model or client_model))
            roles.add(0)
        while not await done_within(opener, keepalive):
            yield KEEPALIVE
        try:
            stream = opener.result()
        except ApiError as exc:
            error, error_status = exc.body()["error"], exc.status
        else:
            turn.stream_opened(stream)
            stream.usual_unparsed = rewrite is None  # Tail.usual's chunks: sent as they came
            chunks = stream.chunks().__aiter__()
            chunk: Chunk | None = None
            if stream.first_ready:  # read ahead: no wait, so no task and no keep-alive for it
                with contextlib.suppress(StopAsyncIteration):
                    chunk = await chunks.__anext__()
            else:
                pending = waking_task(_first(chunks))
                while not await done_within(pending, keepalive):
                    yield KEEPALIVE
                first, pending = pending, None
                with contextlib.suppress(StopAsyncIteration):
                    chunk = first.result()
            if chunk is not None:
                assembler.add(chunk.data)
                if out := tail.take(chunk):
                    yield out
                async for chunk in chunks:
                    usual = tail.usual(chunk, assembler)
                    if usual is not None:
                        yield usual
                    else:
                        assembler.add(chunk.data)
                        if out := tail.take(chunk):
                            yield out
            outcome = "done"
    except StreamFailed as exc:
        error = exc.error
    except TimeoutError:
        error = {"message": "The upstream provider timed out mid-stream.", "type": "timeout_error"}
    except (aiohttp.ClientError, OSError) as exc:
        error = {
            "message": f"The upstream connection failed mid-stream ({type(exc).__name__}).",
            "type": "upstream_error",
        }
    except Exception:  # a bug: the stream still ends as a stream does, and the turn is finished
        logger.exception("relaying a stream failed")
        error = {"message": "Internal server error.", "type": "server_error"}
        error_status, error_code = 500, "server_error"
    finally:
        if pending is not None:
            pending.cancel()
        if outcome != "done" and error is None:  # cancelled, or a failure not named above
            # Finish first: closing a broken upstream connection below may raise too.
            turn.finish(
                status=499,
                assistant=assembler.answer(),
                usage=assembler.usage,
                incomplete=True,
                error_code="client_closed",
                written=assembler.written(),
            )
        if not opener.done():
            opener.cancel()
        elif stream is None and not opener.cancelled() and opener.exception() is None:
            stream = opener.result()
        if stream is not None:
            with contextlib.suppress(Exception):
                await stream.aclose()
    # Finish before the last frames: finishing only schedules work, and a client that leaves
    # during the last write must not skip it. The last frames wait for the answer's commit: a
    # client that saw [DONE] has an answer that is stored (a database away longer than the
    # wait: [DONE] goes out, and the store goes on trying, memory.turn.pipeline).
    turn.finish(
        status=error_status,
        assistant=assembler.answer(),
        usage=assembler.usage,
        incomplete=error is not None,
        error_code=error_code if error is not None else "",
        # The upstream's refusal after the keep-alives began: refused as the gateway's is.
        refused=error is not None and refused_status(error_status),
        written=assembler.written(),
    )
    await turn.reply_committed()
    # The last frames go out as one write, [DONE] with them (the ASGI door sends the stream's
    # end with it too): three or four writes a stream fewer.
    if error is not None:
        error = {"message": "", "type": "upstream_error", "param": None, "code": None} | error
        yield tail.flush() + frame(dumps({"error": error})) + DONE
        return
    # Asked for usage, the stream ends with it: an upstream that reported none (llama.cpp's
    # server, older vLLM, an Anthropic-compatible proxy) is charged an estimate, and the client
    # got no usage at all; it gets the figures charged, in the chunk OpenAI's would end with.
    # The upstream's own usage goes as it came (`Tail`), never a second one beside it.
    reported = tail.usage is not None or assembler.usage is not None
    usage = turn.usage_charged() if include_usage and not reported else None
    last_frames = tail.flush(None if usage is not None else turn.engram or None)
    if usage is not None or (turn.engram and not last_frames):
        # A chunk of Engram's own. An upstream that sent no chunk at all gave no id, created or
        # model to copy: Engram's own, as OpenAI's schema requires them (strict clients
        # refused nulls).
        head = assembler.head or {}
        last_frames += own_chunk(
            stream_id=(rewrite and rewrite.id) or head.get("id") or stream_id,
            created=head.get("created") or int(time.time()),
            model=model or head.get("model") or client_model,
            choices=[],
            usage=usage,
            engram=turn.engram or None,
        )
    yield last_frames + DONE
