"""A loopback upstream LLM that speaks OpenAI's and Anthropic's protocols with scripted replies.

The only stand-in the tests allow: a real HTTP server on 127.0.0.1 (uvicorn, in a thread).
Tests queue replies with `script(...)`; with nothing queued, it answers "echo: <last user text>".
Every request is recorded in `requests` (path, headers, JSON body).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from tests.livesrv import ThreadedServer


@dataclass
class Reply:
    """One scripted answer.

    json: a full response body (status 200 unless `status`); stream: a list of SSE `data:`
    payloads (dicts, or raw strings such as "[DONE]"; bytes go out as they are), sent `delay` seconds apart after
    `first_delay`; status/headers for errors; `drop_after` closes the stream mid-way;
    `gate` holds a stream before its `gate_at`th item until the test sets it (no timing).
    """

    json: dict | None = None
    stream: list[Any] | None = None
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    first_delay: float = 0.0
    drop_after: int | None = None
    gate: threading.Event | None = None
    gate_at: int = 2


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    body: dict | None
    query: str = ""


async def read_body(receive) -> bytes:
    """An ASGI request's whole body (the loopback servers' one reader)."""
    raw = b""
    while True:
        message = await receive()
        raw += message.get("body", b"")
        if not message.get("more_body"):
            return raw


def request_headers(scope) -> dict[str, str]:
    return {k.decode().lower(): v.decode() for k, v in scope["headers"]}


def openai_completion(
    content: str = "Hello!", *, model: str = "gpt-4o-mini", tool_calls=None, n: int = 1, usage=None
):
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls:
        message = {"role": "assistant", "content": None, "tool_calls": tool_calls}
    return {
        "id": "chatcmpl-upstream",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": i,
                "message": message,
                "finish_reason": "tool_calls" if tool_calls else "stop",
                "logprobs": None,
            }
            for i in range(n)
        ],
        "usage": usage or {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
    }


def openai_stream(
    pieces: list[str], *, model: str = "gpt-4o-mini", usage: bool = True
) -> list[Any]:
    base = {
        "id": "chatcmpl-upstream",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": model,
    }
    chunks: list[Any] = [
        base
        | {
            "choices": [
                {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
            ]
        }
    ]
    chunks += [
        base | {"choices": [{"index": 0, "delta": {"content": p}, "finish_reason": None}]}
        for p in pieces
    ]
    chunks.append(base | {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    if usage:
        chunks.append(
            base
            | {
                "choices": [],
                "usage": {
                    "prompt_tokens": 5,
                    "completion_tokens": len(pieces),
                    "total_tokens": 5 + len(pieces),
                },
            }
        )
    chunks.append("[DONE]")
    return chunks


def tool_call(call_id: str, name: str, arguments: dict | str) -> dict:
    """One tool call of an assistant message, as OpenAI sends it."""
    args = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": args}}


def openai_tool_stream(calls: list[dict], *, model: str = "gpt-4o-mini") -> list[Any]:
    """A streamed answer that calls tools: each call's id and name, then its arguments in two
    pieces (as real upstreams split them), finish_reason "tool_calls", usage, [DONE]."""
    base = {"id": "chatcmpl-upstream", "object": "chat.completion.chunk", "created": 1}
    base["model"] = model

    def chunk(delta: dict, finish: str | None = None) -> dict:
        return base | {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    chunks: list[Any] = [chunk({"role": "assistant", "content": None})]
    for index, call in enumerate(calls):
        args = call["function"]["arguments"]
        half = len(args) // 2
        head = {"index": index, "id": call.get("id"), "type": "function"}
        chunks.append(
            chunk(
                {
                    "tool_calls": [
                        head
                        | {"function": {"name": call["function"]["name"], "arguments": args[:half]}}
                    ]
                }
            )
        )
        chunks.append(
            chunk({"tool_calls": [{"index": index, "function": {"arguments": args[half:]}}]})
        )
    chunks.append(chunk({}, "tool_calls"))
    chunks.append(
        base
        | {"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13}}
    )
    chunks.append("[DONE]")
    return chunks


def _last_user_text(body: dict | None) -> str:
    for message in reversed((body or {}).get("messages", [])):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):
                return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
            return str(content)
    return ""


def tool_history_error(body: dict | None) -> dict | None:
    """OpenAI's 400 for messages whose tool traffic does not pair up: every call of an
    assistant message answered by the tool messages right after it, every tool message
    answering a call of the assistant message before it. None: the history is valid."""
    messages = (body or {}).get("messages")
    if not isinstance(messages, list):
        return None
    calls: list[str] = []  # the calls of the last assistant message not answered yet
    at = 0  # where that message is
    for index, message in enumerate([*messages, {"role": "end"}]):
        role = message.get("role") if isinstance(message, dict) else None
        if role == "tool":
            if message.get("tool_call_id") not in calls:
                return _invalid(
                    "Invalid parameter: messages with role 'tool' must be a response to a "
                    "preceeding message with 'tool_calls'.",
                    f"messages.[{index}].role",
                )
            calls.remove(message["tool_call_id"])
            continue
        if calls:
            return _invalid(
                "An assistant message with 'tool_calls' must be followed by tool messages "
                "responding to each 'tool_call_id'. The following tool_call_ids did not have "
                f"response messages: {', '.join(calls)}",
                f"messages.[{at}].role",
            )
        calls, at = [], index
        if role == "assistant" and isinstance(message.get("tool_calls"), list):
            calls = [c.get("id") for c in message["tool_calls"] if isinstance(c, dict)]
    return None


# The fields of an assistant message in OpenAI's schema (and Mistral's `prefix`): what a strict
# server takes. Anything else ("reasoning_details" from Claude's thinking) is refused.
ASSISTANT_FIELDS = frozenset(
    ("role", "content", "name", "tool_calls", "function_call", "refusal", "audio", "prefix")
)


def extra_field_error(body: dict | None) -> dict | None:
    """Mistral's 422 for an assistant message with a field its schema does not have (pydantic's
    extra="forbid"), or for top-level fields of OpenAI's it does not have (MISTRAL_REFUSES),
    every one in one answer as pydantic lists them; None: every message is plain OpenAI."""
    body = body or {}
    refused = [(["body", name], body[name]) for name in MISTRAL_REFUSES if name in body]
    if refused:
        return _extra_forbidden(refused)
    messages = body.get("messages")
    for index, message in enumerate(messages if isinstance(messages, list) else ()):
        if not isinstance(message, dict) or message.get("role") != "assistant":
            continue
        for name in sorted(set(message) - ASSISTANT_FIELDS):
            loc = ["body", "messages", index, "assistant", name]
            return _extra_forbidden([(loc, message[name])])
    return None


# OpenAI's fields that Mistral's API refuses (422), which the OpenAI SDK and Engram send.
MISTRAL_REFUSES = ("stream_options", "max_completion_tokens", "metadata", "store")


def _extra_forbidden(refused: list[tuple[list, Any]]) -> dict:
    detail = [
        {"type": "extra_forbidden", "loc": loc, "msg": "Extra inputs are not permitted"}
        | {"input": value}
        for loc, value in refused
    ]
    return {
        "object": "error",
        "message": {"detail": detail},
        "type": "invalid_request_message_error",
        "param": None,
        "code": None,
    }


def signed_blocks(reply: Reply) -> list[dict]:
    """The thinking and redacted_thinking blocks a Messages API reply carries (a stream's put
    together from its deltas), as Anthropic signed them."""
    if reply.stream is None:
        content = (reply.json or {}).get("content")
        blocks = content if isinstance(content, list) else []
        return [
            b
            for b in blocks
            if isinstance(b, dict) and b.get("type") in ("thinking", "redacted_thinking")
        ]
    open_blocks: dict[int, dict] = {}
    done = []
    for item in reply.stream:
        data = item[1] if isinstance(item, tuple) else item
        if not isinstance(data, dict):
            continue
        kind, index = data.get("type"), data.get("index")
        index = index if isinstance(index, int) else -1
        block = data.get("content_block")
        block = block if isinstance(block, dict) else {}
        if kind == "content_block_start" and block.get("type") in ("thinking", "redacted_thinking"):
            open_blocks[index] = dict(block)
        elif kind == "content_block_delta" and index in open_blocks:
            delta = data.get("delta")
            for field in ("thinking", "signature"):
                if isinstance(delta, dict) and delta.get("type") == f"{field}_delta":
                    open_blocks[index][field] = open_blocks[index].get(field, "") + delta[field]
        elif kind == "content_block_stop" and index in open_blocks:
            done.append(open_blocks.pop(index))
    return done


def thinking_history_error(body: dict | None, signed: set[str]) -> dict | None:
    """Anthropic's 400 for a request with thinking on whose last assistant turn called tools
    (answered by the tool_result turn after it) without the thinking blocks Anthropic signed
    for that turn first, unchanged (`signed`: the blocks served, as JSON). None: valid."""
    thinking = (body or {}).get("thinking")
    messages = (body or {}).get("messages")
    if not isinstance(thinking, dict) or thinking.get("type") == "disabled":
        return None
    if not isinstance(messages, list) or len(messages) < 2:
        return None
    turn, answer = messages[-2], messages[-1]
    content = turn.get("content") if isinstance(turn, dict) else None
    if turn.get("role") != "assistant" or not isinstance(content, list) or not content:
        return None
    results = answer.get("content") if isinstance(answer, dict) else None
    if not any(isinstance(b, dict) and b.get("type") == "tool_result" for b in results or ()):
        return None
    at = len(messages) - 2
    first = content[0]
    if first.get("type") not in ("thinking", "redacted_thinking"):
        return _anthropic_invalid(
            f"messages.{at}.content.0.type: Expected `thinking` or `redacted_thinking`, but "
            f"found `{first.get('type')}`. When `thinking` is enabled, a final `assistant` "
            "message must start with a thinking block (preceeding the lastmost set of "
            "`tool_use` and `tool_result` blocks)."
        )
    for j, block in enumerate(content):
        if block.get("type") not in ("thinking", "redacted_thinking"):
            break
        if json.dumps(block, sort_keys=True) not in signed:
            return _anthropic_invalid(
                f"messages.{at}.content.{j}: Invalid `signature` in `{block['type']}` block"
            )
    return None


# Anthropic's rule for a tool_use block's id and the tool_use_id of its result.
ANTHROPIC_TOOL_ID = re.compile(r"^[a-zA-Z0-9_-]+$")


def request_error(body: dict | None) -> dict | None:
    """Anthropic's 400 for no messages, a thinking budget below 1,024 or not below max_tokens,
    or a metadata.user_id that is not opaque (an email address)."""
    if not (body or {}).get("messages"):
        return _anthropic_invalid("messages: at least one message is required")
    thinking = (body or {}).get("thinking")
    enabled = isinstance(thinking, dict) and thinking.get("type") == "enabled"
    budget = thinking.get("budget_tokens") if enabled and isinstance(thinking, dict) else None
    if isinstance(budget, int):
        if budget < 1024:
            return _anthropic_invalid(
                "thinking.enabled.budget_tokens: Input should be greater than or equal to 1024"
            )
        if budget >= (body or {}).get("max_tokens", 0):
            return _anthropic_invalid(
                "`max_tokens` must be greater than `thinking.budget_tokens`. Please consult our "
                "documentation at https://docs.claude.com/en/docs/build-with-claude/"
                "extended-thinking#max-tokens-and-context-window-size"
            )
    metadata = (body or {}).get("metadata")
    user_id = metadata.get("user_id") if isinstance(metadata, dict) else None
    if isinstance(user_id, str) and "@" in user_id:
        return _anthropic_invalid(
            "metadata.user_id: user_id appears to contain an email address. Please send a uuid "
            "or hash value instead."
        )
    return None


def tool_id_error(body: dict | None) -> dict | None:
    """Anthropic's 400 for a tool_use id, or a tool_result's tool_use_id, out of its pattern
    (another provider's ids: "functions.get_weather:0", "call_abc|fc_1"). None: valid."""
    messages = (body or {}).get("messages")
    for i, message in enumerate(messages if isinstance(messages, list) else ()):
        content = message.get("content") if isinstance(message, dict) else None
        for j, block in enumerate(content if isinstance(content, list) else ()):
            kind = block.get("type") if isinstance(block, dict) else None
            field = {"tool_use": "id", "tool_result": "tool_use_id"}.get(kind or "")
            if field and not ANTHROPIC_TOOL_ID.match(str(block.get(field))):
                return _anthropic_invalid(
                    f"messages.{i}.content.{j}.{kind}.{field}: String should match pattern "
                    "'^[a-zA-Z0-9_-]+$'"
                )
    return None


# The Messages API's top-level fields (anthropic-sdk-python's MessageCreateParams): Anthropic
# refuses another ("response_format: Extra inputs are not permitted").
ANTHROPIC_FIELDS = {
    "model",
    "messages",
    "max_tokens",
    "cache_control",
    "container",
    "inference_geo",
    "metadata",
    "output_config",
    "service_tier",
    "stop_sequences",
    "stream",
    "system",
    "temperature",
    "thinking",
    "tool_choice",
    "tools",
    "top_k",
    "top_p",
}
# The beta that took `output_format` before `output_config.format` was generally available.
STRUCTURED_OUTPUTS_BETA = "structured-outputs-2025-11-13"
# Claude's models before structured outputs (the loopback's own wording of the refusal).
BEFORE_STRUCTURED = re.compile(r"^claude-(?:[0-3]|instant|(?:opus|sonnet)-4(?:-[01])?(?:-\d{8})?$)")
# What a structured output's schema may not hold (Anthropic's structured outputs page).
UNENFORCED = {
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
    "minLength",
    "maxLength",
    "maxItems",
    "minProperties",
    "maxProperties",
}
IMAGE_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")


def format_error(body: dict | None, headers: dict[str, str]) -> dict | None:
    """Anthropic's 400 for a field the Messages API does not have, and for an `output_config`
    not of its documented shape: `{"format": {"type": "json_schema", "schema": {...}}}` (and
    `effort`), every object in the schema closed (`additionalProperties: false`), none of the
    keywords it does not enforce, on a model that has structured outputs. None: valid."""
    body = body or {}
    beta = STRUCTURED_OUTPUTS_BETA in headers.get("anthropic-beta", "")
    for name in body:
        if name not in ANTHROPIC_FIELDS and not (name == "output_format" and beta):
            return _anthropic_invalid(f"{name}: Extra inputs are not permitted")
    if "output_config" not in body:
        return None
    config = body["output_config"]
    if not isinstance(config, dict):
        return _anthropic_invalid("output_config: Input should be a valid dictionary")
    for name in config:
        if name not in ("effort", "format"):
            return _anthropic_invalid(f"output_config.{name}: Extra inputs are not permitted")
    fmt = config.get("format")
    if fmt is None:
        return None
    if not isinstance(fmt, dict) or fmt.get("type") != "json_schema":
        return _anthropic_invalid("output_config.format.type: Input should be 'json_schema'")
    for name in fmt:
        if name not in ("type", "schema"):
            return _anthropic_invalid(
                f"output_config.format.{name}: Extra inputs are not permitted"
            )
    if not isinstance(fmt.get("schema"), dict):
        return _anthropic_invalid("output_config.format.schema: Field required")
    if BEFORE_STRUCTURED.match(str(body.get("model"))):
        return _anthropic_invalid(
            f"output_config.format: structured outputs are not supported by {body['model']}"
        )
    said = _schema_error(fmt["schema"])
    return _anthropic_invalid(f"output_config.format.schema: {said}") if said else None


def _schema_error(schema: Any) -> str | None:
    if isinstance(schema, list):
        return next((e for e in map(_schema_error, schema) if e), None)
    if not isinstance(schema, dict):
        return None
    kind = schema.get("type")
    is_object = kind == "object" or (isinstance(kind, list) and "object" in kind)
    if (is_object or "properties" in schema) and schema.get("additionalProperties") is not False:
        return "For 'object' type, 'additionalProperties' must be explicitly set to false"
    for name in schema:
        if name in UNENFORCED or (name == "minItems" and schema[name] not in (0, 1)):
            return f"'{name}' is not supported"
    for name in ("properties", "$defs", "definitions"):
        named = schema.get(name)
        if isinstance(named, dict) and (said := _schema_error(list(named.values()))):
            return said
    for name in ("items", "anyOf", "allOf", "prefixItems"):
        if said := _schema_error(schema.get(name)):
            return said
    return None


def content_error(body: dict | None) -> dict | None:
    """Anthropic's 400 for an image or document block whose source it does not take: an image
    other than JPEG, PNG, GIF or WebP; a document other than a base64 PDF, plain text (as
    text), content blocks, a URL or a file, or with a title not of 1 to 500 characters (the
    Messages API's OpenAPI schema). None: valid."""
    messages = (body or {}).get("messages")
    for i, message in enumerate(messages if isinstance(messages, list) else ()):
        content = message.get("content") if isinstance(message, dict) else None
        for j, block in enumerate(content if isinstance(content, list) else ()):
            kind = block.get("type") if isinstance(block, dict) else None
            source = block.get("source") if kind in ("image", "document") else None
            if not isinstance(source, dict):
                continue
            at = f"messages.{i}.content.{j}.{kind}.source"
            where = source.get("type")
            media = source.get("media_type")
            if kind == "image" and where == "base64" and media not in IMAGE_TYPES:
                accepted = ", ".join(f"'{m}'" for m in IMAGE_TYPES)
                return _anthropic_invalid(f"{at}.base64.media_type: Input should be {accepted}")
            if kind == "document" and where == "base64" and media != "application/pdf":
                return _anthropic_invalid(
                    f"{at}.base64.media_type: Input should be 'application/pdf'"
                )
            if kind == "document" and where == "text" and media != "text/plain":
                return _anthropic_invalid(f"{at}.text.media_type: Input should be 'text/plain'")
            if kind == "document" and where not in ("base64", "text", "url", "content", "file"):
                return _anthropic_invalid(f"{at}: Input tag '{where}' does not match")
            title = block.get("title")
            if kind == "document" and title is not None and not 1 <= len(str(title)) <= 500:
                return _anthropic_invalid(
                    f"messages.{i}.content.{j}.document.title: String should have at most 500 "
                    "characters"
                )
    return None


def _anthropic_invalid(message: str) -> dict:
    return {"type": "error", "error": {"type": "invalid_request_error", "message": message}}


def _invalid(message: str, param: str) -> dict:
    return {
        "error": {"message": message, "type": "invalid_request_error", "param": param, "code": None}
    }


# When the upstreams' listed models were made: OpenAI's `created` (Unix seconds), Anthropic's
# `created_at` (RFC 3339), as each lists them.
UPSTREAM_MODEL_CREATED = 1721172741
ANTHROPIC_MODEL_CREATED_AT = "2025-02-19T00:00:00Z"


class UpstreamServer:
    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.replies: deque[Reply] = deque()
        self.disconnects: list[float] = []
        self.open_streams = 0
        # Refuse, as OpenAI does, chat messages whose tool calls and results do not pair up
        # (tool_history_error); off only where the client's own transcript is the point.
        self.checks_tool_history = True
        # Refuse, as Mistral does (422), an assistant message with a field OpenAI's schema does
        # not have (extra_field_error); opt in, as most servers ignore such fields.
        self.refuses_extra_fields = False
        # Anthropic's side: the thinking blocks it signed (as JSON), which a tool_result turn
        # must send back first, unchanged (thinking_history_error); and /v1/models in pages.
        self.signed: set[str] = set()
        self.anthropic_model_pages: list[list[str]] | None = None
        self._lock = threading.Lock()

        async def asgi(scope, receive, send):  # a plain function: uvicorn detects ASGI 3
            await self.app(scope, receive, send)

        self._server = ThreadedServer(asgi)
        self.url = self._server.url

    # --- test API -----------------------------------------------------------------------------
    def start(self) -> UpstreamServer:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def script(self, *replies: Reply) -> None:
        with self._lock:
            self.replies.extend(replies)

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self.replies.clear()
            self.disconnects.clear()
            self.checks_tool_history = True
            self.refuses_extra_fields = False
            self.signed.clear()
            self.anthropic_model_pages = None

    @property
    def last(self) -> Recorded:
        return self.requests[-1]

    def chat_requests(self) -> list[Recorded]:
        return [r for r in self.requests if r.path.endswith(("/chat/completions", "/messages"))]

    # --- ASGI -----------------------------------------------------------------------------------
    async def app(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        raw = await read_body(receive)
        headers = request_headers(scope)
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        path = scope["path"]
        refusal = None
        status = 400
        if self.checks_tool_history and path.endswith("/chat/completions"):
            refusal = tool_history_error(body)
        if refusal is None and self.refuses_extra_fields and path.endswith("/chat/completions"):
            refusal = extra_field_error(body)
            status = 422
        query = scope.get("query_string", b"").decode()
        with self._lock:
            if path.endswith("/messages"):
                refusal = (
                    tool_id_error(body)
                    or format_error(body, headers)
                    or content_error(body)
                    or request_error(body)
                    or thinking_history_error(body, self.signed)
                )
            self.requests.append(Recorded(path=path, headers=headers, body=body, query=query))
            if refusal is not None:  # what OpenAI answers such history; the script waits
                reply = Reply(json=refusal, status=status)
            elif self.replies and path != "/v1/models":
                reply = self.replies.popleft()
            else:
                reply = None
            if reply is not None and path.endswith("/messages"):
                self.signed.update(json.dumps(b, sort_keys=True) for b in signed_blocks(reply))
        if path.endswith("/models") and scope["method"] == "GET" and "anthropic-version" in headers:
            return await self._json(send, 200, self._anthropic_models(query))
        if path.endswith("/models") and scope["method"] == "GET":
            return await self._json(
                send,
                200,
                {
                    "object": "list",
                    "data": [
                        {
                            "id": "upstream-model-a",
                            "object": "model",
                            "created": UPSTREAM_MODEL_CREATED,
                            "owned_by": "loopback",
                        }
                    ],
                },
            )
        if reply is None:
            reply = self._default(path, body)
        if reply.first_delay:
            await asyncio.sleep(reply.first_delay)
        if reply.stream is None:
            if reply.delay and await self._disconnected_within(receive, reply.delay):
                self.disconnects.append(time.monotonic())
                return
            return await self._json(send, reply.status, reply.json or {}, reply.headers)
        await self._stream(scope, receive, send, reply)

    def _anthropic_models(self, query: str) -> dict:
        """Anthropic's model list, a page of `anthropic_model_pages` a request (after_id: the
        last id of the page before), or the one page the OpenAI side lists."""
        pages = self.anthropic_model_pages or [["upstream-model-a"]]
        after = parse_qs(query).get("after_id", [None])[0]
        number = next((i + 1 for i, page in enumerate(pages) if page[-1] == after), 0)
        page = pages[number] if number < len(pages) else []
        return {
            "data": [
                {
                    "type": "model",
                    "id": name,
                    "display_name": name,
                    "created_at": ANTHROPIC_MODEL_CREATED_AT,
                }
                for name in page
            ],
            "has_more": number + 1 < len(pages),
            "first_id": page[0] if page else None,
            "last_id": page[-1] if page else None,
        }

    @staticmethod
    async def _disconnected_within(receive, seconds: float) -> bool:
        """Wait `seconds` unless the client hangs up first (then True)."""

        async def hangup():
            while (await receive())["type"] != "http.disconnect":
                pass

        try:
            await asyncio.wait_for(hangup(), timeout=seconds)
        except TimeoutError:
            return False
        return True

    def _default(self, path: str, body: dict | None) -> Reply:
        text = "echo: " + _last_user_text(body)
        if path.endswith("/messages"):
            if body and body.get("stream"):
                return Reply(stream=anthropic_stream([text]))
            return Reply(json=anthropic_message(text))
        if body and body.get("stream"):
            return Reply(stream=openai_stream([text]))
        return Reply(json=openai_completion(text, model=(body or {}).get("model", "m")))

    async def _json(self, send, status: int, payload: dict, headers: dict | None = None) -> None:
        data = json.dumps(payload).encode()
        head = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(data)).encode()),
        ]
        head += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
        await send({"type": "http.response.start", "status": status, "headers": head})
        await send({"type": "http.response.body", "body": data})

    async def _stream(self, scope, receive, send, reply: Reply) -> None:
        head = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
        head += [(k.encode(), v.encode()) for k, v in reply.headers.items()]
        await send({"type": "http.response.start", "status": reply.status, "headers": head})
        disconnected = asyncio.Event()

        async def watch():
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    disconnected.set()
                    return

        watcher = asyncio.create_task(watch())
        self.open_streams += 1
        try:
            for index, item in enumerate(reply.stream):
                if reply.drop_after is not None and index >= reply.drop_after:
                    return  # end the response early: the client sees a cut stream
                if reply.gate is not None and index == reply.gate_at:
                    await asyncio.to_thread(reply.gate.wait, 30)
                if index and reply.delay:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(disconnected.wait(), timeout=reply.delay)
                if disconnected.is_set():
                    self.disconnects.append(time.monotonic())
                    return
                if isinstance(item, bytes):  # sent as it is: a server's own framing
                    body = item
                elif isinstance(item, tuple):  # (event name, payload): Anthropic's named events
                    event, payload = item
                    body = f"event: {event}\ndata: {json.dumps(payload)}\n\n".encode()
                else:
                    body = (
                        f"data: {item if isinstance(item, str) else json.dumps(item)}\n\n".encode()
                    )
                await send({"type": "http.response.body", "body": body, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        finally:
            self.open_streams -= 1
            watcher.cancel()


def anthropic_message(
    text: str = "Hello!", *, model: str = "claude-3-5-sonnet", content=None, stop_reason="end_turn"
):
    return {
        "id": "msg_upstream",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content or [{"type": "text", "text": text}],
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {"input_tokens": 12, "output_tokens": 6},
    }


def anthropic_stream(pieces: list[str], *, model: str = "claude-3-5-sonnet") -> list[Any]:
    events: list[Any] = [
        (
            "message_start",
            {
                "type": "message_start",
                "message": anthropic_message("", model=model)
                | {
                    "content": [],
                    "stop_reason": None,
                    "usage": {"input_tokens": 12, "output_tokens": 1},
                },
            },
        ),
        (
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        ),
    ]
    events += [
        (
            "content_block_delta",
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": p}},
        )
        for p in pieces
    ]
    events += [
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": len(pieces)},
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    ]
    return events
