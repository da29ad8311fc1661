"""What every provider implements, plus the HTTP plumbing the networked ones share.

A provider receives an OpenAI-shaped body and returns OpenAI-shaped results: a `Completion`
(with the upstream's own bytes when they already are OpenAI's response) or an `UpstreamStream`
of OpenAI chunk dicts. Failures before the first byte raise ApiError (retried where allowed);
failures after it raise StreamFailed, which the relay turns into one error frame. An
upstream's errors are read in `upstream_errors`, its events and JSON in `wire`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import aiohttp
import httpx

from completions.providers import hops, http
from completions.providers.upstream_errors import (
    CREDENTIAL_REFUSALS,
    bad_reply,
    credential_refused,
    quota_refused,
    read_failed,
    redirected,
    retry_after_of,
    retry_wait,
    retryable_refusal,
    upstream_error,
    without_key,
)
from completions.providers.wire import CR, LF, SseParser, StreamFailed, dumps, loads
from config.common.background import spawn
from config.common.errors import ApiError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Upstream:
    """Where one provider's requests go: from the environment or a workspace credential."""

    provider: str
    base_url: str
    api_key: str = field(repr=False)
    source: str = "env"
    # An OpenAI-compatible upstream's dialect (completions.models.Dialect): "auto", "openai"
    # or "generic"; see openai_compatible._openai_itself.
    dialect: str = "auto"


@dataclass
class Call:
    body: dict  # OpenAI-shaped: Engram-owned fields removed, messages prepared, model routed
    upstream: Upstream | None
    request_id: str


@dataclass
class Completion:
    data: dict  # an OpenAI chat.completion
    raw: bytes | None = None  # the upstream's bytes, when they are exactly `data`
    upstream_ms: float = 0.0


@dataclass(slots=True)
class Chunk:
    data: dict  # an OpenAI chat.completion.chunk
    raw: bytes | None = None  # the upstream's bytes for `data`, if unmodified


# The member as compact JSON writes it (OpenAI's, after the choices), then with spaces.
_NULL_USAGE = (b',"usage":null', b', "usage": null', b'"usage":null,', b'"usage": null, ')


def without_null_usage(raw: bytes) -> bytes | None:
    """`raw` without its top-level `"usage": null` member (on OpenAI's every chunk when usage
    is asked for), or None (then the chunk is written anew). Only when `"usage"` occurs once
    in the bytes: then it is that key (in a JSON string its quotes would be escaped). Bytes
    operations: a regular expression cost 30,000 instructions a chunk more (117,756 against
    87,623 per relayed frame, bench_relay_cpu.py --callgrind; 108,472 writing it anew)."""
    if raw.count(b'"usage"') != 1:
        return None
    for member in _NULL_USAGE:  # replaced if there (`member in raw` costs ~2,400: base.CR)
        stripped = raw.replace(member, b"", 1)
        if len(stripped) != len(raw):
            return stripped
    return None


# The slot's own descriptor (Chunk has slots): where UsualChunk.data keeps what it parsed.
_DATA: Any = vars(Chunk)["data"]


class UsualChunk(Chunk):
    """A chunk of its stream's usual shape (`UsualShape`): its `text` read from the bytes, `data`
    parsed only if asked for (the relay's usual frame never asks). Made by `UsualShape.read`."""

    __slots__ = ("text", "written", "form", "frame")
    text: str  # choice 0's delta content
    written: bytes  # as `raw` has it
    form: UsualShape
    frame: bytes | None  # the read it came in, when that was this one whole event

    @property  # not __getattr__: that hook made every attribute of the class a slow lookup
    def data(self) -> dict:  # (~900 instructions a relayed frame, callgrind)
        try:
            return _DATA.__get__(self)
        except AttributeError:  # unset: parsed the first time it is read
            if self.raw is None:  # never: raw is only let go after data was read
                raise
            data = loads(self.raw)
            _DATA.__set__(self, data)
            return data

    @data.setter
    def data(self, value: dict) -> None:
        _DATA.__set__(self, value)


_new = object.__new__

# Bytes a JSON string's text cannot hold as they are: a quote ends it, a backslash escapes,
# control characters must be escaped (orjson refuses them).
_NOT_PLAIN = b'"\\' + bytes(range(32))


class UsualShape:
    """An upstream's usual chunks differ only in their text: the same id, created, model and
    members, one choice whose delta is only `content`. From the first such chunk (parsed), the
    bytes before and after its text; a later chunk with the same bytes around a plain text (no
    quote, backslash or control character; UTF-8) is the same JSON with that text, and is not
    parsed: orjson's parse and the checks of its dict were ~10,000 instructions of a relayed
    frame's ~69,000 (bench_relay_cpu.py --callgrind). Anything else is parsed as before."""

    __slots__ = ("prefix", "suffix", "shape", "start", "end", "edges", "bare", "whole")

    def __init__(self, prefix: bytes, suffix: bytes, shape: dict) -> None:
        self.prefix, self.suffix, self.shape = prefix, suffix, shape
        self.start, self.end = len(prefix), -len(suffix)
        # The frame's bytes around the text, and without `"usage":null` (without_null_usage's,
        # once a stream, not a chunk: ~4,000 instructions a frame of OpenAI's chunks); None when
        # the member is not there to take out (then the chunk's data is written anew).
        self.edges = (b"data: " + prefix, suffix + b"\n\n")
        self.bare: tuple[bytes, bytes] | None = None
        if prefix.count(b'"usage"') + suffix.count(b'"usage"') == 1:  # text has no quote
            if (bare := without_null_usage(prefix)) is not None:
                self.bare = (b"data: " + bare, self.edges[1])
            elif (bare := without_null_usage(suffix)) is not None:
                self.bare = (self.edges[0], bare + b"\n\n")
        # The edges of a read that is one whole event of this shape (`read_event`): only where
        # they hold no line end (an event of several `data:` lines is the parser's to join).
        # (Integers: a bytes needle in bytes is first tried as one, a TypeError formatted.)
        edges = self.edges[0] + self.edges[1]
        self.whole = self.edges if LF not in edges[:-2] and CR not in edges else None

    @classmethod
    def of(cls, data: dict, raw: bytes) -> UsualShape | None:
        """The shape of `data` (parsed from `raw`) if it is a usual chunk whose text is written
        plainly (once, as itself) in `raw`; else None."""
        choices = data.get("choices")
        if type(choices) is not list or len(choices) != 1 or "error" in data:
            return None
        [choice] = choices
        delta = choice.get("delta") if type(choice) is dict else None
        if (
            type(delta) is not dict
            or choice.get("index", 0) != 0
            or choice.get("finish_reason")
            or data.get("usage")
            or delta.get("tool_calls")
            or delta.get("reasoning_details")
            or delta.get("audio")  # its transcript is the answer's (streaming.Assembler)
        ):
            return None
        text = delta.get("content")
        if type(text) is not str or not text:
            return None
        try:
            written = text.encode()
        except UnicodeEncodeError:  # a lone surrogate: escaped in the bytes, not plain
            return None
        if len(written.translate(None, _NOT_PLAIN)) != len(written):
            return None
        quoted = b'"' + written + b'"'
        if raw.count(quoted) != 1:  # not written as itself, or not only there
            return None
        at = raw.find(quoted) + 1
        # A copy: the relay changes its chunks' top members (`usage` out, `engram` in).
        return cls(raw[:at], raw[at + len(written) :], dict(data))

    def read(self, raw: bytes) -> UsualChunk | None:
        """`raw` as a chunk of this shape, or None (then it is parsed)."""
        start, end = self.start, self.end
        if len(raw) <= start - end or raw[:start] != self.prefix or raw[end:] != self.suffix:
            return None
        written = raw[start:end]
        if len(written.translate(None, _NOT_PLAIN)) != len(written):
            return None
        try:
            text = written.decode()
        except UnicodeDecodeError:
            return None
        # Made without a call of the class (its __init__ a Python frame: ~1,200 instructions
        # more a relayed frame, callgrind); `data` left unset.
        chunk = _new(UsualChunk)
        chunk.raw, chunk.text, chunk.written = raw, text, written
        chunk.form, chunk.frame = self, None
        return chunk

    def read_event(self, data: bytes) -> UsualChunk | None:
        """`data`, a read of the body, as `read` gives it when it is one whole event of this
        shape (`data: `, the chunk, a blank line), its frame the read itself; else None (then
        the SSE parser splits it). The upstream's usual read: no split, no frame written (the
        parser's slices and tests, the frame's two concatenations: ~3,000 instructions of a
        relayed frame's ~55,700, bench_relay_cpu.py --callgrind)."""
        if self.whole is None:
            return None
        head, tail = self.whole
        start, end = self.start + 6, self.end - 2
        if len(data) <= start - end or data[:start] != head or data[end:] != tail:
            return None
        written = data[start:end]
        if len(written.translate(None, _NOT_PLAIN)) != len(written):
            return None
        try:
            text = written.decode()
        except UnicodeDecodeError:
            return None
        chunk = _new(UsualChunk)
        chunk.raw, chunk.text, chunk.written = data[6:-2], text, written
        chunk.form, chunk.frame = self, data
        return chunk


class UpstreamStream:
    """An open upstream stream: iterate `chunks()`, always `aclose()`."""

    upstream_ms: float = 0.0
    # Whether `chunks()` may yield UsualChunks (unparsed until their `data` is read): for the
    # relay of chunks it sends unchanged; a reader of every chunk's `data` pays more for them
    # (an agent's relay: 81,700 -> 86,900 instructions a frame).
    usual_unparsed: bool = False
    # Whether `chunks()` gives its first chunk without waiting for the upstream (the first event
    # was read ahead and is a chunk): the relay takes it at once, with no task to wait beside
    # keep-alives (completions.streaming.relay).
    first_ready: bool = False

    def chunks(self) -> AsyncIterator[Chunk]:
        raise NotImplementedError

    async def aclose(self) -> None:
        return None


class HttpStream(UpstreamStream):
    """A streamed upstream response: read to the end, it goes back to the pool; left early
    (client gone, failure), its connection is closed, which the upstream sees at once."""

    def __init__(
        self,
        response: aiohttp.ClientResponse,
        upstream_ms: float,
        *,
        upstream: Upstream | None = None,
    ) -> None:
        self.response = response
        self.upstream_ms = upstream_ms
        self.complete = False
        self.waiting = False  # in a read of the body (what the read timeout measures)
        self.read_timeout = ReadTimeout.take_over(self)
        self.parser = SseParser()
        self.early: list[tuple[str | None, bytes]] = []  # read ahead (`first_event`), not given
        self.ended = False  # the body's end was read ahead
        self.failed: BaseException | None = None  # the read ahead's failure, raised by `events`
        # the provider key the request carried (`said` masks it)
        self.secret = upstream.api_key if upstream is not None else ""

    def said(self, text: str) -> str:
        """An upstream's words mid-stream (an error event's message) with Engram's provider key
        masked, as `without_key` masks an error answer: relayed as the stream's error frame,
        a proxy's quote of the request's Authorization reached every tenant."""
        if not self.secret:
            return text
        return without_key(text.encode(), self.secret).decode("utf-8", "replace")

    async def first_event(
        self, skip: Callable[[tuple[str | None, bytes]], bool] | None = None
    ) -> tuple[str | None, bytes] | None:
        """The body's first event that `skip` does not skip, read ahead (`events` still gives
        it and those before it); None when the body ended, or its read failed, first (`events`
        raises the failure)."""
        while True:
            for event in self.early:
                if skip is None or not skip(event):
                    return event
            if self.ended or self.failed is not None:
                return None
            # the wait for the upstream's first event is the upstream's time, not Engram's: in
            # x-engram-overhead-ms it read 12 ms p50 where it was 1 (bench_gateway, a 10 ms
            # first chunk), once OpenAI-compatible streams read their first event ahead too
            waited = time.perf_counter()
            try:
                self.waiting = True
                data = await self.response.content.readany()
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                self.failed = exc
                return None
            finally:
                self.waiting = False
                self.upstream_ms += (time.perf_counter() - waited) * 1000
            try:
                if data:
                    self.early += self.parser.feed(data)
                else:
                    self.ended = True
                    self.early += self.parser.end()
            except StreamFailed as exc:  # an event past the parser's bound (wire.MAX_EVENT_BYTES)
                self.failed = exc
                return None

    def failed_ahead(self) -> ApiError | None:
        """The 502 a read ahead's failure to parse is (`first_event`), nothing sent yet: a
        stream event past the bound, as the same reply unstreamed would be a bad reply."""
        if isinstance(self.failed, StreamFailed):
            return bad_reply(str(self.failed))
        return None

    async def events(self) -> AsyncIterator[tuple[str | None, bytes]]:
        """(event name, data) per server-sent event of the body."""
        content = self.response.content
        parser = self.parser
        early, self.early = self.early, []
        for event in early:
            yield event
        if self.failed is not None:
            raise self.failed
        while not self.ended:
            self.waiting = True
            data = await content.readany()
            self.waiting = False
            if not data:
                break
            for event in parser.feed(data):
                yield event
        for event in parser.end():
            yield event

    async def aclose(self) -> None:
        if self.read_timeout is not None:
            self.read_timeout.cancel()
        if not self.complete:
            self.response.close()
        elif self.response.content.at_eof():
            self.response.release()
        else:  # the end of the chunked body may trail [DONE]: keep the connection, off the path
            spawn(self._drain(), name="upstream-drain")

    async def _drain(self) -> None:
        try:
            await asyncio.wait_for(self.response.read(), timeout=5)
        except (TimeoutError, aiohttp.ClientError):
            self.response.close()
        else:
            self.response.release()


class ReadTimeout:
    """The upstream's read timeout (ENGRAM_UPSTREAM_TIMEOUT) for a stream's body, one timer a
    stream: aiohttp's own cancels a timer and starts one for every read of the socket (on
    uvloop a libuv timer made and one closed: ~6,800 instructions a read, callgrind; a
    relayed frame costs ~76,000 beside the system calls). The same rule: the stream fails with aiohttp's timeout error
    when the upstream sent nothing for `seconds` while the relay waited for it (a relay busy
    writing to a slow client does not count, as aiohttp stops its timer while the reading is
    paused). The timer looks every quarter of `seconds`: a stall is seen after 1 to 1.25 x.
    It holds the stream weakly: a stream its relay dropped unread goes, and the timer with it."""

    def __init__(self, stream: HttpStream, seconds: float) -> None:
        self.stream = weakref.ref(stream)
        self.content = stream.response.content
        self.seconds = seconds
        self.loop = asyncio.get_running_loop()
        self.seen = self.content.total_bytes
        self.quiet_since = self.loop.time()
        self.handle: asyncio.TimerHandle | None = self.loop.call_later(seconds / 4, self.check)

    @classmethod
    def take_over(cls, stream: HttpStream) -> ReadTimeout | None:
        """Stop aiohttp's per-read timer for this response and start this one instead. The
        setting is the connection's for this response only: aiohttp sets it again for the
        next request on the connection."""
        connection = stream.response.connection
        protocol = connection.protocol if connection is not None else None
        if protocol is None or not protocol.read_timeout:
            return None
        seconds = protocol.read_timeout
        # The timer aiohttp armed with the headers' read stays until the body's next read (or
        # its end): a stall before that fails the stream as it did.
        protocol.read_timeout = None
        return cls(stream, seconds)

    def check(self) -> None:
        content, stream = self.content, self.stream()
        if stream is None or content.is_eof():
            self.handle = None
            return
        now = self.loop.time()
        if content.total_bytes != self.seen or not stream.waiting:
            self.seen = content.total_bytes
            self.quiet_since = now
        elif now - self.quiet_since >= self.seconds:
            self.handle = None
            content.set_exception(aiohttp.SocketTimeoutError("Timeout on reading data from socket"))
            return
        self.handle = self.loop.call_later(self.seconds / 4, self.check)

    def cancel(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None


class Provider:
    name: str = ""

    def claims(self, model: str) -> bool:
        """Whether this provider owns the model name (e.g. claude-* for Anthropic)."""
        return False

    async def complete(self, call: Call) -> Completion:
        raise NotImplementedError

    async def stream(self, call: Call) -> UpstreamStream:
        raise NotImplementedError

    def complete_sync(self, call: Call, *, timeout: float) -> dict:
        raise NotImplementedError

    async def list_models(self, upstream: Upstream | None) -> list[ListedModel]:
        return []


@dataclass(frozen=True)
class ListedModel:
    """A model an upstream lists: its id and when it was made (Unix seconds, as OpenAI's
    `created`; 0 where the upstream did not say)."""

    id: str
    created: int = 0


def listed_model(entry: object, created: object) -> ListedModel | None:
    """An upstream's /models entry as a ListedModel, None without a string id; `created` an
    integer (OpenAI's) or an RFC 3339 time (Anthropic's `created_at`), else 0."""
    if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
        return None
    seconds = 0
    if isinstance(created, int) and not isinstance(created, bool) and created >= 0:
        seconds = created
    elif isinstance(created, str):
        with contextlib.suppress(ValueError):
            seconds = max(
                0, int(datetime.fromisoformat(created.replace("Z", "+00:00")).timestamp())
            )
    return ListedModel(entry["id"], seconds)


class HttpProvider(Provider):
    """Sends with the pooled client; retries connection errors, 429 and 5xx before any byte."""

    def endpoint(self, upstream: Upstream) -> str:
        raise NotImplementedError

    def request_headers(self, upstream: Upstream) -> dict[str, str]:
        raise NotImplementedError

    async def send(self, call: Call, payload: dict) -> tuple[aiohttp.ClientResponse, float]:
        """The upstream's 2xx response (headers read, body not yet) and the ms it took to get
        it, or ApiError. The caller reads the body and must release or close the response."""
        upstream = call.upstream
        if upstream is None:
            raise ApiError(400, f"The {self.name} provider is not configured.", param="model")
        content = dumps(payload)
        headers = self.marked_headers(upstream)
        url = self.endpoint(upstream)
        started = time.perf_counter()
        attempt = 0
        while True:
            retry_after = None
            try:
                response = await http.session().post(
                    url,
                    data=content,
                    headers=headers,
                    timeout=http.timeout(),
                    allow_redirects=False,
                )
            except TimeoutError as exc:
                error = ApiError(
                    504,
                    f"The upstream provider timed out ({type(exc).__name__}).",
                    code="upstream_timeout",
                )
                retryable = isinstance(exc, aiohttp.ConnectionTimeoutError)
            except aiohttp.ClientError as exc:
                error = ApiError(
                    502,
                    f"Could not reach the upstream provider ({type(exc).__name__}).",
                    type="upstream_error",
                    code="upstream_unreachable",
                )
                retryable = True
            else:
                if response.status < 300:
                    return response, (time.perf_counter() - started) * 1000
                try:
                    body = await response.read()
                except (aiohttp.ClientError, TimeoutError):
                    body = b""
                finally:
                    response.release()
                error = self.refusal(upstream, response.status, body, response.headers)
                retry_after = retry_after_of(response.headers)
                retryable = retryable_refusal(response.status, error)
            delay = retry_wait(attempt, retryable=retryable, retry_after=retry_after)
            if delay is None:
                raise error
            await asyncio.sleep(delay)
            attempt += 1

    async def send_read(self, call: Call, payload: dict) -> tuple[bytes, float]:
        """`send`, then the whole body: a non-streamed answer and the ms it all took."""
        started = time.perf_counter()
        response, _ = await self.send(call, payload)
        try:
            content = await response.read()
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise read_failed(exc) from None
        finally:
            response.release()
        return content, (time.perf_counter() - started) * 1000

    def send_sync(self, call: Call, payload: dict, *, timeout: float) -> dict:
        """Engram's own calls (Celery): one attempt per retry budget, the JSON answer."""
        upstream = call.upstream
        if upstream is None:
            raise ApiError(400, f"The {self.name} provider is not configured.", param="model")
        attempt = 0
        while True:
            retry_after = None
            try:
                response = http.sync_client().post(
                    self.endpoint(upstream),
                    content=dumps(payload),
                    headers=self.marked_headers(upstream),
                    timeout=timeout,
                )
            except httpx.HTTPError as exc:
                error = ApiError(502, f"upstream unreachable: {type(exc).__name__}")
                retryable = not isinstance(exc, httpx.ReadTimeout)
            else:
                if response.status_code < 300:
                    try:
                        return response.json()
                    except ValueError:
                        raise ApiError(502, "malformed upstream reply") from None
                error = self.refusal(
                    upstream, response.status_code, response.content, response.headers
                )
                retry_after = retry_after_of(response.headers)
                retryable = retryable_refusal(response.status_code, error)
            delay = retry_wait(attempt, retryable=retryable, retry_after=retry_after)
            if delay is None:
                raise error
            time.sleep(delay)
            attempt += 1

    def marked_headers(self, upstream: Upstream) -> dict[str, str]:
        """request_headers plus the loop guard's mark (completions.providers.hops)."""
        return {**self.request_headers(upstream), hops.HEADER: hops.outgoing()}

    def error_from(self, status: int, content: bytes, headers: Mapping[str, str]) -> ApiError:
        return upstream_error(status, content, headers)

    def refusal(
        self, upstream: Upstream, status: int, content: bytes, headers: Mapping[str, str]
    ) -> ApiError:
        """The upstream's error answer; an Engram refusing our own mark names what to fix."""
        if status < 400:
            return redirected(self.name, upstream.source, status, headers.get("location"))
        content = without_key(content, upstream.api_key)
        error = self.error_from(status, content, headers)
        if status == 400 and error.code == hops.CODE:
            return hops.loop_error(self.name, upstream.source)
        if status in CREDENTIAL_REFUSALS:
            return credential_refused(self.name, upstream.source, status, error)
        if status == 429 and error.code == "insufficient_quota":
            return quota_refused(self.name, upstream.source, error)
        return error
