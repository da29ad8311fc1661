"""The built-in `local` provider: Engram's no-LLM mode for trying it offline.

Deterministic and network-free: it answers by quoting the last user message, so an app, its
streaming and Engram's memory can be exercised end to end without any model or key. Engram's
own LLM calls (completions.providers.llm.chat) treat it as "no LLM" and use their offline paths.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import AsyncIterator

from completions.providers.base import (
    Call,
    Chunk,
    Completion,
    Provider,
    Upstream,
    UpstreamStream,
)

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

    async def chunks(self) -> AsyncIterator[Chunk]:
        text = reply_text(self.body["messages"])
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
            yield chunk(index, {}, "stop")
        yield Chunk(data={**base, "choices": [], "usage": _usage(self.body, text)})


class LocalProvider(Provider):
    name = "local"

    def claims(self, model: str) -> bool:
        return model in NAMES or model.startswith("local/")

    def completion(self, body: dict) -> dict:
        text = reply_text(body["messages"])
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
                    "finish_reason": "stop",
                }
                for index in range(body.get("n") or 1)
            ],
            "usage": _usage(body, text),
        }

    async def complete(self, call: Call) -> Completion:
        return Completion(data=self.completion(call.body))

    async def stream(self, call: Call) -> UpstreamStream:
        return LocalStream(call.body)

    async def list_models(self, upstream: Upstream | None) -> list[str]:
        return ["local"]
