"""Anthropic's Messages API behind the OpenAI shape (translation in anthropic_translate)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Mapping

import aiohttp

from completions.providers.anthropic_translate import (
    finish_reason,
    from_anthropic,
    reasoning_detail,
    to_anthropic,
    usage_from,
)
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
    listed_model,
)
from completions.providers.upstream_errors import (
    quota_refused,
    retry_wait,
    retryable_refusal,
    without_key,
)
from completions.providers.wire import loads_json
from config.common.errors import ApiError

DEFAULT_BASE_URL = "https://api.anthropic.com"
API_VERSION = "2023-06-01"
MODEL_PAGE_SIZE = 1000  # the most Anthropic's /v1/models gives a page
# The words of Anthropic's 400s for the operator's account: out of credit, or at the spend limit
# set for its organization or workspace ("You have reached your specified API usage limits.
# You will regain access on ..."). They have no code of their own.
OPERATOR_LIMITS = ("credit balance is too low", "specified API usage limits")
# The words of Anthropic's 400s for a request past the model's context window ("prompt is too
# long: 205351 tokens > 200000 maximum", "input length and `max_tokens` exceed context limit:
# 188240 + 21333 > 200000, ..."), which OpenAI's and Engram's own check answer with the code
# context_length_exceeded that clients look for.
CONTEXT_EXCEEDED = ("prompt is too long", "exceed context limit")
# The HTTP status of each of Anthropic's error types (its errors page): a stream's error event
# is read as the refusal its status would have been.
ERROR_STATUSES = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}
MODEL_PAGES = 10  # a bound on the pages read: an upstream always saying has_more stops here
# The events before a stream's answer: message_start says only its id, model and input tokens.
# An error after them is a refusal nothing was answered before (AnthropicProvider.stream).
_BEFORE_THE_ANSWER = frozenset({"ping", "message_start"})
# Blocks whose start says nothing yet (AnthropicStream.chunks sends no chunk for them).
_SILENT_STARTS = {"text": "text", "thinking": "thinking", "redacted_thinking": None}


def _before_the_answer(event: tuple[str | None, bytes]) -> bool:
    """Whether a stream's event comes before anything of its answer: a ping, message_start, or
    the start of a text or thinking block without text. Anthropic's overload comes after such a
    start too, as the stream's first words would: the client got a 200 and an error frame, which
    neither Engram nor its SDK retries."""
    name = event[0]
    if name in _BEFORE_THE_ANSWER:
        return True
    if name != "content_block_start":
        return False
    try:
        block = _dict(json.loads(event[1]).get("content_block"))
    except (ValueError, UnicodeDecodeError, AttributeError):
        return False  # the stream reads it as the malformed event it is
    kind = block.get("type")
    if not isinstance(kind, str) or kind not in _SILENT_STARTS:
        return False
    field = _SILENT_STARTS[kind]
    return field is None or not block.get(field)


def _api_root(base_url: str) -> str:
    base = base_url.rstrip("/")
    return base if base.endswith("/v1") else base + "/v1"


def _dict(value: object) -> dict:
    """An event's object field, or {} for what is missing or not an object."""
    return value if isinstance(value, dict) else {}


def _block_index(data: dict) -> int:
    """An event's content block index, or 0 for what is missing or not an integer."""
    index = data.get("index")
    return index if isinstance(index, int) else 0


def _refused(event: tuple[str | None, bytes] | None) -> tuple[int | None, bytes]:
    """The status and body of the refusal a stream's first event is (an error event), or None."""
    if event is None:
        return None, b""
    try:
        data = json.loads(event[1])
    except (ValueError, UnicodeDecodeError):
        return None, b""  # the stream reads it as the malformed event it is
    if not isinstance(data, dict) or (data.get("type") or event[0]) != "error":
        return None, b""
    kind = _dict(data.get("error")).get("type")
    return ERROR_STATUSES.get(kind if isinstance(kind, str) else "", 500), event[1]


class AnthropicStream(HttpStream):
    """Messages API events -> OpenAI chunks: role first, text and tool deltas, finish, usage.
    Thinking goes out as `reasoning_content` deltas while it comes, and each thinking block,
    once whole (its signature comes last), as one `reasoning_details` entry."""

    def __init__(
        self,
        response: aiohttp.ClientResponse,
        upstream_ms: float,
        model: str,
        *,
        upstream: Upstream | None = None,
    ) -> None:
        super().__init__(response, upstream_ms, upstream=upstream)
        self.model = model

    async def chunks(self) -> AsyncIterator[Chunk]:
        base = {
            "id": "chatcmpl-",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": self.model,
        }
        tools: dict[int, int] = {}  # Anthropic block index -> OpenAI tool call index
        # Tool blocks whose input has not come as text yet -> the input their start gave.
        # Anthropic streams no JSON for a call without arguments (its start says `input: {}`):
        # the call's arguments would end as "", not JSON, where OpenAI's are "{}".
        unargued: dict[int, object] = {}
        thinking: dict[int, dict] = {}  # Anthropic block index -> the block as it grows
        details = 0  # reasoning_details entries sent
        usage: dict = {}
        stopped = False  # message_delta said why the answer stopped

        def chunk(delta: dict, finish: str | None = None) -> Chunk:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            return Chunk(data={**base, "choices": [choice]})

        async for event, raw in self.events():
            try:
                data = json.loads(raw)
            except (ValueError, UnicodeDecodeError):
                raise StreamFailed("The upstream provider sent a malformed stream event.") from None
            if not isinstance(data, dict):  # JSON, but not an event: AttributeError further on
                raise StreamFailed("The upstream provider sent a malformed stream event.")
            kind = data.get("type") or event
            if kind == "message_start":
                message = _dict(data.get("message"))
                base["id"] = f"chatcmpl-{message.get('id', '')}"
                base["model"] = message.get("model") or self.model
                usage.update(_dict(message.get("usage")))
                yield chunk({"role": "assistant", "content": ""})
            elif kind == "content_block_start":
                block = _dict(data.get("content_block"))
                if block.get("type") == "tool_use":
                    index = tools[_block_index(data)] = len(tools)
                    unargued[_block_index(data)] = block.get("input")
                    call = {
                        "index": index,
                        "id": block.get("id"),
                        "type": "function",
                        "function": {"name": block.get("name"), "arguments": ""},
                    }
                    yield chunk({"tool_calls": [call]})
                elif block.get("type") == "text" and block.get("text"):
                    yield chunk({"content": block["text"]})
                elif block.get("type") in ("thinking", "redacted_thinking"):
                    thinking[_block_index(data)] = {"thinking": "", "signature": "", **block}
                    if isinstance(block.get("thinking"), str) and block["thinking"]:
                        yield chunk({"reasoning_content": block["thinking"]})
            elif kind == "content_block_delta":
                delta = _dict(data.get("delta"))
                if delta.get("type") == "text_delta":
                    yield chunk({"content": delta.get("text", "")})
                elif delta.get("type") in ("thinking_delta", "signature_delta"):
                    field = delta["type"].removesuffix("_delta")
                    piece = delta.get(field)
                    growing = thinking.get(_block_index(data))
                    if isinstance(piece, str) and growing is not None:
                        growing[field] = f"{growing[field]}{piece}"
                        if field == "thinking" and piece:
                            yield chunk({"reasoning_content": piece})
                elif delta.get("type") == "input_json_delta":
                    index = tools.get(_block_index(data), 0)
                    arguments = {"arguments": delta.get("partial_json", "")}
                    if arguments["arguments"]:
                        unargued.pop(_block_index(data), None)
                    yield chunk({"tool_calls": [{"index": index, "function": arguments}]})
            elif kind == "content_block_stop" and _block_index(data) in unargued:
                given = unargued.pop(_block_index(data))
                given = given if isinstance(given, dict) else {}
                arguments = {"arguments": json.dumps(given, ensure_ascii=False)}
                index = tools[_block_index(data)]
                yield chunk({"tool_calls": [{"index": index, "function": arguments}]})
            elif kind == "content_block_stop" and _block_index(data) in thinking:
                detail = reasoning_detail(thinking.pop(_block_index(data)), details)
                if detail is not None:
                    details += 1
                    yield chunk({"reasoning_details": [detail]})
            elif kind == "message_delta":
                usage.update({k: v for k, v in _dict(data.get("usage")).items() if v is not None})
                reason = _dict(data.get("delta")).get("stop_reason")
                stopped = True
                yield chunk({}, finish_reason(reason))
            elif kind == "message_stop":
                break
            elif kind == "error":
                error = _dict(data.get("error"))
                raise StreamFailed(
                    self.said(str(error.get("message") or "The upstream provider failed.")),
                    type=error.get("type") or "upstream_error",
                )
        else:
            # The body ended without message_stop: whole if its message_delta said why it
            # stopped (proxies in front of Anthropic, Bedrock's translation, end there: the
            # whole answer was an error frame and stored as cut short), as an OpenAI stream
            # without [DONE] whose finish reason came (openai_compatible.OpenAIStream).
            if not stopped:
                raise StreamFailed("The upstream stream ended before it was complete.")
        self.complete = True
        # No usage reported (proxies in front of Anthropic): no usage chunk. Sent with
        # `usage: null`, it went out as a chunk of no choices mid-stream, unasked, and the
        # relay ends a stream that asked with the usage charged.
        if (reported := usage_from(usage)) is not None:
            yield Chunk(data={**base, "choices": [], "usage": reported})


class AnthropicProvider(HttpProvider):
    name = "anthropic"

    def claims(self, model: str) -> bool:
        return model.startswith(("claude-", "anthropic/"))

    def endpoint(self, upstream: Upstream) -> str:
        return _api_root(upstream.base_url) + "/messages"

    def request_headers(self, upstream: Upstream) -> dict[str, str]:
        return {
            "content-type": "application/json",
            "x-api-key": upstream.api_key,
            "anthropic-version": API_VERSION,
        }

    def refusal(
        self, upstream: Upstream, status: int, content: bytes, headers: Mapping[str, str]
    ) -> ApiError:
        """As every provider's; and the operator's account out of credit or at its spend
        limit, which Anthropic answers with a 400 invalid_request_error (the client read it as
        its own request being wrong) or a 402 billing_error (read as the client's own payment
        failing), is the operator's, as OpenAI's insufficient_quota is."""
        error = super().refusal(upstream, status, content, headers)
        if status == 402 or (
            status == 400 and any(words in error.message for words in OPERATOR_LIMITS)
        ):
            return quota_refused(self.name, upstream.source, error)
        return error

    def error_from(self, status: int, content: bytes, headers: Mapping[str, str]) -> ApiError:
        """As every provider's, with the code OpenAI gives the same failure (Anthropic's errors
        have a type and no code), which clients look for: context_length_exceeded (param
        messages) for a prompt past the window, model_not_found (param model) for a model
        Anthropic does not have ("model: claude-x"), rate_limit_exceeded for its rate limit."""
        error = super().error_from(status, content, headers)
        if error.code is not None:
            return error
        if status == 400 and any(words in error.message for words in CONTEXT_EXCEEDED):
            error.code, error.param = "context_length_exceeded", "messages"
        elif status == 404 and error.message.startswith("model:"):
            error.code, error.param = "model_not_found", "model"
        elif status == 429 and error.type == "rate_limit_error":
            error.code = "rate_limit_exceeded"
        return error

    @staticmethod
    def _model(body: dict) -> dict:
        model = body["model"]
        return {**body, "model": model.removeprefix("anthropic/")}

    async def complete(self, call: Call) -> Completion:
        body = self._model(call.body)
        raw, upstream_ms = await self.send_read(call, to_anthropic(body, stream=False))
        if call.upstream is not None:  # an error under status 200 may quote it (from_anthropic)
            raw = without_key(raw, call.upstream.api_key)
        data = from_anthropic(loads_json(raw), model=body["model"])
        return Completion(data=data, upstream_ms=upstream_ms)

    async def stream(self, call: Call) -> UpstreamStream:
        """The open stream, its first event read (past message_start and pings). Anthropic
        answers an overload (or another failure) with status 200 and an error as the stream's
        first event, or right after message_start: the client got a 200 and an error frame,
        which neither Engram nor the client's SDK retries (they retry statuses). Before
        anything was answered, it is the refusal its status would have been, retried as that
        status is."""
        body = self._model(call.body)
        payload = to_anthropic(body, stream=True)
        attempt = 0
        while True:
            response, upstream_ms = await self.send(call, payload)
            stream = AnthropicStream(response, upstream_ms, body["model"], upstream=call.upstream)
            try:
                first = await stream.first_event(skip=_before_the_answer)
            except BaseException:  # cancelled: the client went away
                await stream.aclose()
                raise
            if first is None and (ahead := stream.failed_ahead()) is not None:
                await stream.aclose()
                raise ahead
            status, content = _refused(first)
            if status is None or call.upstream is None:
                return stream
            await stream.aclose()
            error = self.refusal(call.upstream, status, content, {})
            delay = retry_wait(attempt, retryable=retryable_refusal(status, error))
            if delay is None:
                raise error
            await asyncio.sleep(delay)
            attempt += 1

    def complete_sync(self, call: Call, *, timeout: float) -> dict:
        body = self._model(call.body)
        data = self.send_sync(call, to_anthropic(body, stream=False), timeout=timeout)
        return from_anthropic(data, model=body["model"])

    async def list_models(self, upstream: Upstream | None) -> list[ListedModel]:
        """Every page of Anthropic's list (`has_more`, then `after_id` its `last_id`), up to
        MODEL_PAGES of them; the names of the pages read before one that fails are kept."""
        if upstream is None:
            return []
        names: list[ListedModel] = []
        params = {"limit": str(MODEL_PAGE_SIZE)}
        for _ in range(MODEL_PAGES):
            try:
                page = await self._models_page(upstream, params)
            except (aiohttp.ClientError, TimeoutError, ValueError):
                if not names:
                    raise  # as before: the catalogue logs it
                break
            if page is None:
                break
            data = page.get("data")
            models = [m for m in data if isinstance(m, dict)] if isinstance(data, list) else []
            listed = (listed_model(m, m.get("created_at")) for m in models)
            names += [m for m in listed if m is not None]
            last = page.get("last_id")
            if page.get("has_more") is not True or not isinstance(last, str) or not last:
                break
            params = {**params, "after_id": last}
        return names

    async def _models_page(self, upstream: Upstream, params: dict[str, str]) -> dict | None:
        """One page of /v1/models, None when the upstream refused it."""
        from completions.providers.http import session, timeout

        async with session().get(
            _api_root(upstream.base_url) + "/models",
            params=params,
            headers=self.marked_headers(upstream),
            timeout=timeout(read=3.0),
        ) as response:
            if response.status != 200:
                return None
            return _dict(await response.json(content_type=None))
