"""The built-in `local` provider: Engram's no-LLM mode for trying it offline.

Deterministic and network-free: it answers by quoting the last user message, so an app, its
streaming and Engram's memory can be exercised end to end without any model or key. Engram's
own LLM calls (completions.providers.llm.chat) treat it as "no LLM" and use their offline paths.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

from completions.providers.base import (
    Call,
    Chunk,
    Completion,
    ListedModel,
    Provider,
    Upstream,
    UpstreamStream,
)
from config.common.errors import ApiError

NAMES = ("local",)
_TOKEN = re.compile(r"\w+|[^\w\s]")
_PIECE = re.compile(r"\S+\s*|\s+")


def count_tokens(text: str) -> int:
    """A rough, deterministic token count (words and punctuation)."""
    return len(_TOKEN.findall(text))


def _prompt_text(messages: list[dict]) -> str:
    parts = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
        parts.append(str(content or ""))
    return "\n".join(parts)


def reply_text(messages: list[dict]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):
                content = " ".join(p.get("text", "") for p in content if p.get("type") == "text")
            text = " ".join(str(content or "").split())
            return f"(local model, no LLM configured) You said: {text}"
    return "(local model, no LLM configured) Hello!"


def _unsupported(param: str, what: str) -> ApiError:
    return ApiError(
        400,
        f"{what} is not supported by the local model (no LLM configured): configure an "
        "upstream, or leave it out.",
        param=param,
        code="unsupported",
    )


def _refuse_what_it_cannot_do(body: dict) -> None:
    """A 400 naming what a quoting model cannot honour, as the Anthropic translation refuses
    what Claude cannot do: an answer that ignored it would look like the model's (no
    logprobs, no forced tool call, text where a JSON schema was asked for)."""
    if body.get("logprobs") is True:
        raise _unsupported("logprobs", "'logprobs'")
    choice = body.get("tool_choice")
    if choice == "required" or (isinstance(choice, dict) and choice.get("type") == "function"):
        raise _unsupported("tool_choice", "A 'tool_choice' that forces a tool call")
    fmt = body.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        raise _unsupported("response_format", "A 'json_schema' response format")
    modalities = body.get("modalities")
    if isinstance(modalities, list) and "audio" in modalities:
        raise _unsupported("modalities", "Audio output")


@dataclass(frozen=True)
class Answer:
    text: str
    finish_reason: str


def answer(body: dict) -> Answer:
    """The quote as an upstream would end it: JSON for a `json_object` format, cut before the
    first `stop` sequence, then at `max_completion_tokens` (or `max_tokens`) of its own tokens
    with finish_reason "length"."""
    _refuse_what_it_cannot_do(body)
    text = reply_text(body["messages"])
    fmt = body.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_object":
        text = json.dumps({"reply": text})
    stop = body.get("stop")
    for sequence in [stop] if isinstance(stop, str) else stop or ():
        if sequence and sequence in text:
            text = text[: text.index(sequence)]
    cap = body.get("max_completion_tokens") or body.get("max_tokens")
    if cap is not None:
        tokens = list(_TOKEN.finditer(text))
        if len(tokens) > cap:
            return Answer(text[: tokens[cap - 1].end()], "length")
    return Answer(text, "stop")


def _usage(body: dict, text: str) -> dict:
    prompt = count_tokens(_prompt_text(body["messages"]))
    completion = count_tokens(text) * (body.get("n") or 1)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


class LocalStream(UpstreamStream):
    def __init__(self, body: dict) -> None:
        self.body = body
        self.answer = answer(body)  # refused before the stream starts

    async def chunks(self) -> AsyncIterator[Chunk]:
        text, finish = self.answer.text, self.answer.finish_reason
        n = self.body.get("n") or 1
        base = {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": self.body["model"],
            "system_fingerprint": "engram-local",
        }

        def chunk(index: int, delta: dict, finish: str | None = None) -> Chunk:
            choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
            return Chunk(data={**base, "choices": [choice]})

        for index in range(n):
            yield chunk(index, {"role": "assistant", "content": ""})
        for piece in _PIECE.findall(text):
            for index in range(n):
                yield chunk(index, {"content": piece})
        for index in range(n):
            yield chunk(index, {}, finish)
        yield Chunk(data={**base, "choices": [], "usage": _usage(self.body, text)})


class LocalProvider(Provider):
    name = "local"

    def claims(self, model: str) -> bool:
        return model in NAMES or model.startswith("local/")

    def completion(self, body: dict) -> dict:
        reply = answer(body)
        text, finish = reply.text, reply.finish_reason
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body["model"],
            "system_fingerprint": "engram-local",
            "choices": [
                {
                    "index": index,
                    "message": {"role": "assistant", "content": text, "refusal": None},
                    "logprobs": None,
                    "finish_reason": finish,
                }
                for index in range(body.get("n") or 1)
            ],
            "usage": _usage(body, text),
        }

    async def complete(self, call: Call) -> Completion:
        return Completion(data=self.completion(call.body))

    async def stream(self, call: Call) -> UpstreamStream:
        return LocalStream(call.body)

    async def list_models(self, upstream: Upstream | None) -> list[ListedModel]:
        return [ListedModel("local")]
