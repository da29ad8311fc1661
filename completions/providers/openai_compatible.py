"""OpenAI itself, vLLM, Ollama, llama.cpp's server: the body goes through as the client sent it,
less Anthropic's signed thinking (`_outgoing`)."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp.helpers import TimerNoop

from completions.providers.base import (
    Call,
    Chunk,
    Completion,
    HttpProvider,
    HttpStream,
    ListedModel,
    StreamFailed,
    Upstream,
    UpstreamStream,
    UsualShape,
    listed_model,
)
from completions.providers.upstream_errors import (
    UpstreamRefusal,
    bad_reply,
    error_fields,
    read_failed,
    upstream_error,
    without_key,
)
from completions.providers.wire import loads, loads_json
from config.common.errors import ApiError

DEFAULT_BASE_URL = "https://api.openai.com/v1"


# The fields of aiohttp's StreamReader that OpenAIStream.chunks reads and sets itself (private:
# an aiohttp that renamed one sends every stream through `readany`, as before, not a failure).
_READER_FIELDS = ("_buffer", "_eof", "_exception", "_waiter", "_protocol", "_timer")
_READER_KNOWN = set(_READER_FIELDS) <= set(getattr(aiohttp.StreamReader, "__slots__", ()))
# What `OpenAIStream.chunks` takes as the read of the events read ahead when the body had not
# ended with them (any bytes but none: only its emptiness is looked at).
_READ_AHEAD = b"ahead"


def _is_error(data: dict) -> bool:
    """Whether an upstream's JSON object (an answer, a chunk) is an error instead: OpenAI's
    envelope without choices, or vLLM's older shape, its fields at the top (`object` "error")."""
    return ("error" in data and "choices" not in data) or data.get("object") == "error"


def _failed_chunk(data: dict) -> bool:
    """Whether a stream's chunk says the stream failed: an error as `_is_error` reads one, or
    a chunk with choices and an `error` (OpenRouter's failure mid-stream: the error, and a
    choice whose finish_reason is "error"). Relayed as a chunk, the client's SDK raised on its
    `error`, but Engram ended the turn as answered: its record a success, the words cut short
    stored as the whole answer, an agent's run went on with them."""
    if _is_error(data):
        return True
    error = data.get("error")
    return bool(error) and isinstance(error, dict | str)


# How long a stream whose answer is whole waits for its `[DONE]` (see `OpenAIStream`). Not
# nothing: servers that write each event apart (vLLM's, any FastAPI StreamingResponse) often
# have [DONE] a few milliseconds behind the usage chunk, a round trip with Nagle's algorithm,
# and read here it ends the body and the connection goes back to the pool. Short: it is only
# waited in full for an upstream that never ends its body, whose client (and the turn's storing
# and charging) waited the whole read timeout (ENGRAM_UPSTREAM_TIMEOUT, minutes) before.
DONE_GRACE_SECONDS = 1.0


class OpenAIStream(HttpStream):
    """An OpenAI-compatible stream. Its answer is whole once every choice has its finish
    reason and the usage chunk (no choices) has come after them: asked for with
    `include_usage`, as Engram always asks, it is by OpenAI's protocol the last chunk before
    [DONE]. Then [DONE] (or the body's end) is waited for DONE_GRACE_SECONDS only: an upstream
    that sends neither ends its stream there, its connection closed (its body did not end).
    Usage on a chunk with choices (vLLM's continuous_usage_stats, servers that put it on the
    finishing chunk) ends nothing: only the usage chunk is last by the protocol."""

    def __init__(
        self,
        response: aiohttp.ClientResponse,
        upstream_ms: float,
        *,
        upstream: Upstream | None = None,
        choices: int = 1,
    ) -> None:
        super().__init__(response, upstream_ms, upstream=upstream)
        self.choices = choices  # the request's `n`: the finish reasons a whole answer has

    async def chunks(self) -> AsyncIterator[Chunk]:
        # Straight from the response's reader, its events split in one pass per read (no
        # layer of async iterators per event: each costs its every chunk a resume and a
        # suspend), each chunk's JSON read by orjson.
        content = self.response.content
        # aiohttp's reader read as its `readany` reads (the same tests, the same wait on a
        # future it wakes), in this generator: readany's and _wait's coroutines and _wait's
        # timer context were ~3,800 instructions of a relayed frame's ~51,800 (callgrind).
        # Only the reader of a body with its no-op timer (no total timeout: http.timeout);
        # anything else through readany.
        direct = (
            _READER_KNOWN
            and type(content) is aiohttp.StreamReader
            and type(content._timer) is TimerNoop
        )
        loop = asyncio.get_running_loop()
        parser = self.parser  # with the rest of what `first_event` read ahead
        answered: dict = {}  # the last chunk with choices
        usual: UsualShape | None = None  # the stream's usual chunk, once one came
        reading_usual = self.usual_unparsed
        finished: set[int] = set()  # the choices whose finish reason came
        whole = False  # the last chunk was the usage chunk after every choice's finish reason
        # The events the provider's `first_event` read ahead come first, as one read's.
        ahead: list[tuple[str | None, bytes]] | None = self.early
        self.early = []
        if self.failed is not None:  # the read ahead failed before any whole event
            raise self.failed
        while True:
            if ahead is not None:
                events, ahead = ahead, None
                data = b"" if self.ended else _READ_AHEAD
            else:
                self.waiting = True
                if whole:  # nothing is to come but [DONE]: waited for a moment only
                    try:
                        async with asyncio.timeout(DONE_GRACE_SECONDS) as grace:
                            data = await content.readany()
                    except TimeoutError:
                        self.waiting = False
                        if grace.expired():  # not `complete`: aclose closes the connection
                            return
                        raise  # the read timeout's
                    whole = False
                elif direct:
                    while not content._buffer and not content._eof and content._exception is None:
                        if not content._protocol.connected:  # as _wait
                            raise RuntimeError("Connection closed.")
                        waiter = content._waiter = loop.create_future()  # woken by feed_data,
                        try:  # feed_eof, set_exception
                            await waiter
                        finally:
                            content._waiter = None
                    data = content.read_nowait()  # the stream's failure, if it has one, raised
                else:
                    data = await content.readany()
                self.waiting = False
                if usual is not None and not parser.pending and (same := usual.read_event(data)):
                    answered = usual.shape  # the usual read: one whole event, the usual chunk
                    yield same
                    continue
                events = parser.feed(data) if data else parser.end()
            for event, raw in events:
                if usual is not None and (same := usual.read(raw)) is not None:
                    answered = usual.shape  # the same choices: no finish reason
                    whole = False
                    yield same
                    continue
                if raw == b"[DONE]":
                    self.complete = True
                    return
                try:
                    parsed = loads(raw)
                except (ValueError, UnicodeDecodeError):
                    raise StreamFailed(
                        "The upstream provider sent a malformed stream chunk."
                    ) from None
                if not isinstance(parsed, dict):
                    continue
                if _unreadable(parsed, "delta") and event != "error":
                    raise StreamFailed("The upstream provider sent an unexpected stream chunk.")
                # An event named `error` (SSE's own way to say it, as proxies send it, its
                # fields at the top) too: relayed, it was a chunk of no choices to the client.
                if _failed_chunk(parsed) or event == "error":
                    message, type_, _param, code = error_fields(raw)
                    raise StreamFailed(
                        self.said(message or "The upstream provider failed."),
                        type=type_ or "upstream_error",
                        code=code,
                    )
                choices = parsed.get("choices")
                if choices is None:
                    if not parsed.get("usage"):
                        # No chunk (a proxy's `event: ping`, `{"type": "ping"}`): relayed, the
                        # SDK made a chunk of it whose `choices` was None, and a client's loop
                        # over them raised TypeError.
                        continue
                    parsed["choices"] = choices = []  # usage alone: OpenAI's usage chunk
                    raw = b""  # written anew (`dumps`): not the upstream's bytes
                whole = (
                    choices == [] and bool(parsed.get("usage")) and len(finished) >= self.choices
                )
                if choices:
                    answered = parsed
                    for choice in choices:  # objects: `_unreadable` said so
                        index = choice.get("index", 0)
                        if choice.get("finish_reason") and type(index) is int:
                            finished.add(index)
                        if choice.get("delta") is None:  # a finish without it (some servers):
                            choice["delta"] = {}  # the SDK's delta was None, `.content` raised
                            raw = b""
                    # find, not `in`: a bytes needle in bytes is first tried as an integer, a
                    # formatted TypeError raised and cleared (a relayed frame 70,039 -> 68,712
                    # instructions, bench_relay_cpu.py --callgrind).
                    if raw.find(b"tool_calls") != -1 and _arguments_as_text(parsed, "delta"):
                        yield Chunk(parsed, None)  # rewritten: it goes out as `parsed` says
                        continue
                if usual is None and reading_usual:
                    usual = UsualShape.of(parsed, raw)
                yield Chunk(parsed, raw or None)  # positional: keywords cost ~1,200 more
            if not data:
                # No [DONE]: llama.cpp's server before PR 9459 (2024) and ik_llama.cpp end a
                # stream at its last chunk. One whose answer says why it stopped is complete.
                if _finished(answered):
                    self.complete = True
                    return
                raise StreamFailed("The upstream stream ended before it was complete.")


class CompletedStream(UpstreamStream):
    """A whole answer as the chunks a stream of it ends with: per choice its message as one
    delta and its finish reason, then the usage."""

    def __init__(self, completion: Completion) -> None:
        self.data = completion.data
        self.upstream_ms = completion.upstream_ms

    async def chunks(self) -> AsyncIterator[Chunk]:
        data = self.data
        head = {
            "id": data.get("id"),
            "object": "chat.completion.chunk",
            "created": data.get("created"),
            "model": data.get("model"),
        }
        for choice in data.get("choices") or ():
            delta = dict(choice.get("message") or {})
            if isinstance(delta.get("tool_calls"), list):  # a delta's calls are numbered
                delta["tool_calls"] = [
                    {"index": i, **call} if isinstance(call, dict) else call
                    for i, call in enumerate(delta["tool_calls"])
                ]
            out = {"index": choice.get("index", 0), "delta": delta}
            out |= {"logprobs": choice.get("logprobs"), "finish_reason": None}
            yield Chunk({**head, "choices": [out]})
            finish = choice.get("finish_reason") or "stop"
            done = {"index": out["index"], "delta": {}, "finish_reason": finish}
            yield Chunk({**head, "choices": [done]})
        if data.get("usage"):
            yield Chunk({**head, "choices": [], "usage": data["usage"]})


def _unreadable(data: dict, key: str) -> bool:
    """Whether an upstream's answer (`key` "message") or chunk ("delta") is of a shape the
    gateway cannot read (it failed there: a 500, or a stream cut without its end): choices not
    a list of objects (an answer without them), a message or delta not an object, tool calls
    not objects whose index is a number and function an object. Content goes as it came (some
    servers send a list of parts); usage that is no count is read as not reported
    (completions.usage.count), as the answer itself is sound."""
    choices = data.get("choices")
    if type(choices) is not list:
        return choices is not None or key == "message"
    for choice in choices:
        if type(choice) is not dict:
            return True
        inner = choice.get(key)
        if inner is None:
            continue
        if type(inner) is not dict:
            return True
        calls = inner.get("tool_calls")
        if calls is not None and not _calls_readable(calls):
            return True
    return False


def _calls_readable(calls: Any) -> bool:
    if type(calls) is not list:
        return False
    for call in calls:
        if type(call) is not dict:
            return False
        index, function = call.get("index"), call.get("function")
        if index is not None and type(index) is not int:
            return False
        if function is None:
            continue
        if type(function) is not dict:
            return False
        name = function.get("name")
        if name is not None and type(name) is not str:
            return False
    return True


def _arguments_as_text(data: dict, key: str) -> bool:
    """Tool calls' `arguments` as the JSON text OpenAI's schema has (in place); whether any was
    not. Some OpenAI-compatible servers (Ollama's and LM Studio's in some versions, proxies in
    front of native APIs) send the arguments as a JSON object: the client's SDK, the stored
    answer, and the transcript a client sends back (validated as text) all need the text."""
    changed = False
    for choice in data.get("choices") or ():
        message = choice.get(key) if isinstance(choice, dict) else None
        calls = message.get("tool_calls") if isinstance(message, dict) else None
        for call in calls if isinstance(calls, list) else ():
            function = call.get("function") if isinstance(call, dict) else None
            if not isinstance(function, dict):
                continue
            arguments = function.get("arguments")
            if arguments is not None and not isinstance(arguments, str):
                function["arguments"] = json.dumps(arguments, ensure_ascii=False)
                changed = True
    return changed


# OpenAI's own API (and Azure's), and OpenAI's model names anywhere (a proxy in front of OpenAI,
# OpenRouter's "openai/..."): the body goes as the client sent it (`_for_other_servers`). Not
# gpt-oss, OpenAI's open weights, which Ollama, vLLM and LM Studio serve.
_OPENAI_HOSTS = ("openai.com", "azure.com")
_OPENAI_MODEL = re.compile(r"^(?:openai/)?(?:gpt-(?!oss)|chatgpt-|o\d|codex-|computer-use-)")


def _openai_itself(upstream: Upstream | None, model: Any) -> bool:
    """Whether the upstream is OpenAI's: as its dialect says (a credential's, OPENAI_DIALECT),
    else by its host or the model's name. A guess fails for a proxy in front of OpenAI under
    names of its own (its reasoning models refused the max_tokens sent them), which the
    "openai" dialect names; "generic" for a server that serves models under OpenAI's names."""
    dialect = upstream.dialect if upstream is not None else "auto"
    if dialect != "auto":
        return dialect == "openai"
    if isinstance(model, str) and _OPENAI_MODEL.match(model):
        return True
    host = (urlsplit(upstream.base_url).hostname or "") if upstream is not None else ""
    return any(host == name or host.endswith("." + name) for name in _OPENAI_HOSTS)


def _outgoing(body: dict, upstream: Upstream | None = None) -> dict:
    """The body as the client sent it, less the `reasoning_details` entries in Anthropic's
    format (signed thinking blocks; a message left with none loses the field). Only Anthropic
    can use them, and a conversation that changed upstream carries them in the history Engram
    stores, where strict servers refuse the field (Mistral: 422 "Extra inputs are not
    permitted"). Other formats (OpenRouter's own) go as they came. No copy when none is there.
    For a server other than OpenAI's, OpenAI's newer names as every server knows them
    (`_for_other_servers`)."""
    messages = body.get("messages")
    if not isinstance(messages, list):
        return body
    details = developer = False
    for m in messages:
        if isinstance(m, dict):
            details = details or "reasoning_details" in m
            developer = developer or m.get("role") == "developer"
    newer = developer or _renamed_cap(body)
    if not details and not (newer and not _openai_itself(upstream, body.get("model"))):
        return body
    if details:
        messages = [_without_anthropic_details(m) for m in messages]
    body = {**body, "messages": messages}
    return body if _openai_itself(upstream, body.get("model")) else _for_other_servers(body)


def _renamed_cap(body: dict) -> bool:
    """Whether the answer's cap is only in `max_completion_tokens` (a client that sent both
    has its `max_tokens` read as it sent it)."""
    return body.get("max_completion_tokens") is not None and body.get("max_tokens") is None


def _for_other_servers(body: dict) -> dict:
    """OpenAI's newer names, which the OpenAI SDK sends, as the servers behind its API's shape
    read them (a copy of `body`, made by `_outgoing`). `max_completion_tokens` as `max_tokens`:
    Ollama and LM Studio read only max_tokens and ignored it (the answer ran on to the
    context's end), Mistral refused it (422); vLLM and llama.cpp read either. A `developer`
    message as a `system` one: Ollama and the chat templates of most open models (Qwen's) left
    it out unsaid, the client's instructions never read; others refused the role (400)."""
    if _renamed_cap(body):
        body["max_tokens"] = body.pop("max_completion_tokens")
    body["messages"] = [
        {**m, "role": "system"} if isinstance(m, dict) and m.get("role") == "developer" else m
        for m in body["messages"]
    ]
    return body


def _without_anthropic_details(message: Any) -> Any:
    details = message.get("reasoning_details") if isinstance(message, dict) else None
    if not isinstance(details, list):
        return message
    kept = [
        d
        for d in details
        if not (isinstance(d, dict) and str(d.get("format") or "").startswith("anthropic"))
    ]
    if len(kept) == len(details):
        return message
    rest = {k: v for k, v in message.items() if k != "reasoning_details"}
    return {**rest, "reasoning_details": kept} if kept else rest


# OpenAI's optional fields that change nothing of the answer (bookkeeping, usage reporting,
# billing tier, caching hints), which strict servers refuse. Mistral's API answers 422
# extra_forbidden naming each ("loc": ["body", "metadata"]): the OpenAI SDK's `metadata`,
# `store` or `user`, and the `stream_options` Engram adds to every stream, failed every request
# to it, so each is dropped for one retry where the refusal names it (`_amended`). A stream
# asked again without `stream_options`: such servers send its usage unasked; one that does not
# is charged its words, as a stream cut short is.
DROPPABLE = (
    "stream_options",
    "metadata",
    "store",
    "service_tier",
    "user",
    "prompt_cache_key",
    "safety_identifier",
)


def _named(field: str, message: str) -> bool:
    """Whether an upstream's refusal names `field` as a field: quoted (`'max_tokens'`,
    pydantic's `"loc": ["body", "metadata"]`), not a word of its prose ("could not store")."""
    return re.search(rf"[\"'`]{re.escape(field)}(?!\w)", message) is not None


def _amended(call: Call, payload: dict, error: ApiError) -> dict | None:
    """The payload to send once more after the upstream refused it (400 or 422), or None.

    A server that is not OpenAI's refusing a field of DROPPABLE by name: without the fields
    named (all of them at once: pydantic lists every extra field in one answer). A server that
    refuses `max_tokens` and asks for `max_completion_tokens` (OpenAI's reasoning models, o1 to
    gpt-5, behind a proxy under a name `_openai_itself` does not know, so their cap was renamed
    by `_for_other_servers`): the cap under its newer name. One retry: the second answer is
    the client's, whatever it is."""
    if error.status not in (400, 422):
        return None
    # The refusal whole: the client's message is cut at 500 characters, and pydantic's list
    # (each refused field with its input) named a second field past them, which was not dropped.
    message = error.said if isinstance(error, UpstreamRefusal) else error.message
    if (
        "max_tokens" in payload
        and "max_completion_tokens" not in payload
        and (error.param == "max_tokens" or _named("max_tokens", message))
        and "max_completion_tokens" in message
    ):
        amended = {k: v for k, v in payload.items() if k != "max_tokens"}
        return amended | {"max_completion_tokens": payload["max_tokens"]}
    refused = {f for f in DROPPABLE if f in payload and _named(f, message)}
    if _openai_itself(call.upstream, payload.get("model")):
        # OpenAI's refusals of the client's fields are the client's to read ("metadata is
        # only allowed when store is enabled"), not a server without them; `stream_options`,
        # which Engram adds to every stream, goes whoever refuses it, as it always went
        refused &= {"stream_options"}
    if not refused:
        return None
    return {k: v for k, v in payload.items() if k not in refused}


def _finished(chunk: dict) -> bool:
    """Whether a chunk's choices all say why they stopped (a finish_reason)."""
    choices = chunk.get("choices")
    return isinstance(choices, list) and all(
        isinstance(c, dict) and c.get("finish_reason") for c in choices
    )


class OpenAICompatibleProvider(HttpProvider):
    name = "openai"

    def endpoint(self, upstream: Upstream) -> str:
        return upstream.base_url.rstrip("/") + "/chat/completions"

    def request_headers(self, upstream: Upstream) -> dict[str, str]:
        headers = {"content-type": "application/json", "accept": "application/json"}
        if upstream.api_key:
            headers["authorization"] = f"Bearer {upstream.api_key}"
        return headers

    async def complete(self, call: Call) -> Completion:
        raw, upstream_ms = await self.send_read(call, _outgoing(call.body, call.upstream))
        return self._completion(call, raw, upstream_ms)

    def _completion(self, call: Call, raw: bytes, upstream_ms: float) -> Completion:
        """An answer's JSON as a Completion, or the ApiError it is."""
        data = loads_json(raw)
        if _is_error(data):
            raise self._error_under_200(call, raw)
        if _unreadable(data, "message"):
            raise bad_reply()
        rewritten = _arguments_as_text(data, "message")  # then the upstream's bytes are not `data`
        return Completion(data=data, raw=None if rewritten else raw, upstream_ms=upstream_ms)

    @staticmethod
    def _error_under_200(call: Call, raw: bytes) -> ApiError:
        """An error under status 200 (some OpenAI-compatible servers, proxies), as an answer or
        as a stream's first event: the client gets it as the failure it is, a 502 with the
        upstream's message, never a "success" without choices that the SDK cannot read."""
        said = without_key(raw, call.upstream.api_key) if call.upstream else raw
        message = upstream_error(400, said, {}).message  # the upstream's, as it wrote it
        return ApiError(
            502,
            f"The upstream provider answered an error with status 200: {message}",
            type="upstream_error",
            code="upstream_error",
        )

    async def stream(self, call: Call) -> UpstreamStream:
        # Engram always asks for usage (to account tokens); the relay drops it when unasked.
        options = call.body.get("stream_options") or {}
        payload = {
            **_outgoing(call.body, call.upstream),
            "stream_options": {**options, "include_usage": True},
        }
        response, upstream_ms = await self.send(call, payload)
        if response.content_type == "application/json":
            # JSON, not events: an error under status 200 (proxies: one-api's "quota
            # exhausted"), or a server that ignored `stream`. Read as it came, the client got a
            # 200 and "The upstream stream ended before it was complete", the upstream's words
            # lost; read as an answer, the error is its status and an answer its chunks.
            try:
                raw = await response.read()
            except (aiohttp.ClientError, TimeoutError):
                raise bad_reply("The upstream connection failed.") from None
            finally:
                response.release()
            return CompletedStream(self._completion(call, raw, upstream_ms))
        choices = call.body.get("n")
        if type(choices) is not int or choices < 1:
            choices = 1
        stream = OpenAIStream(response, upstream_ms, upstream=call.upstream, choices=choices)
        # The first event read ahead, as Anthropic's (AnthropicProvider.stream): vLLM, Ollama
        # and proxies answer a failure before the first token with status 200 and an error as
        # the stream's first event. Relayed, the client got a 200 and an error frame, which no
        # SDK retries; nothing has gone out yet, so it is the status the same reply has as JSON.
        try:
            first = await stream.first_event()
        except BaseException:  # cancelled: the client went away
            await stream.aclose()
            raise
        error = self._first_refused(call, stream, first)
        if error is not None:
            await stream.aclose()
            raise error
        # In hand unless `chunks` skips it (data that is JSON but no object; an object's raw
        # data starts with its brace, which _first_refused has read whole).
        stream.first_ready = first is not None and (first[1] == b"[DONE]" or first[1][:1] == b"{")
        return stream

    async def send(self, call: Call, payload: dict) -> tuple[aiohttp.ClientResponse, float]:
        """`HttpProvider.send`, and once more as `_amended` mends a refused payload."""
        try:
            return await super().send(call, payload)
        except ApiError as error:
            again = _amended(call, payload, error)
            if again is None:
                raise
        return await super().send(call, again)

    def send_sync(self, call: Call, payload: dict, *, timeout: float) -> dict:
        """`HttpProvider.send_sync` (Engram's own calls), mended once as `send` is."""
        try:
            return super().send_sync(call, payload, timeout=timeout)
        except ApiError as error:
            again = _amended(call, payload, error)
            if again is None:
                raise
        return super().send_sync(call, again, timeout=timeout)

    def _first_refused(
        self, call: Call, stream: OpenAIStream, first: tuple[str | None, bytes] | None
    ) -> ApiError | None:
        """The error a stream is by its first event, or None when that event starts an answer
        (or is [DONE]): an error object (`_error_under_200`); none at all (an empty body, a
        page with no event: a proxy's HTML under status 200), a read failed, or a first chunk
        no reader can use, as the same answer unstreamed is (`loads_json`, `send_read`)."""
        if first is None:
            if (ahead := stream.failed_ahead()) is not None:
                return ahead
            if stream.failed is not None:
                return read_failed(stream.failed)
            return bad_reply("The upstream stream ended before it sent anything.")
        raw = first[1]
        if raw == b"[DONE]":
            return None
        try:
            data = loads(raw)
        except (ValueError, UnicodeDecodeError):
            return bad_reply("The upstream provider sent a malformed stream chunk.")
        if not isinstance(data, dict):
            return None  # skipped, as the stream skips it
        if _failed_chunk(data) or first[0] == "error":
            return self._error_under_200(call, raw)
        if _unreadable(data, "delta"):
            return bad_reply("The upstream provider sent an unexpected stream chunk.")
        return None

    def complete_sync(self, call: Call, *, timeout: float) -> dict:
        return self.send_sync(call, _outgoing(call.body, call.upstream), timeout=timeout)

    async def list_models(self, upstream: Upstream | None) -> list[ListedModel]:
        if upstream is None:
            return []
        from completions.providers.http import session, timeout

        async with session().get(
            upstream.base_url.rstrip("/") + "/models",
            headers=self.marked_headers(upstream),
            timeout=timeout(read=3.0),
        ) as response:
            if response.status != 200:
                return []
            data = (await response.json(content_type=None)).get("data") or []
        listed = (listed_model(m, m.get("created") if isinstance(m, dict) else None) for m in data)
        return [m for m in listed if m is not None]
