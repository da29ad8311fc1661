"""OpenAI itself, vLLM, Ollama, llama.cpp's server: the body goes through as the client sent it."""

from __future__ import annotations

import json

import httpx

from completions.providers.base import (
    Call,
    Chunk,
    Completion,
    HttpProvider,
    StreamFailed,
    Upstream,
    UpstreamStream,
    loads_json,
    sse_events,
)

DEFAULT_BASE_URL = "https://api.openai.com/v1"


class OpenAIStream(UpstreamStream):
    def __init__(self, response: httpx.Response, upstream_ms: float) -> None:
        self.response = response
        self.upstream_ms = upstream_ms

    async def chunks(self):
        done = False
        async for _event, raw in sse_events(self.response.aiter_raw()):
            if raw == b"[DONE]":
                done = True
                break
            try:
                data = json.loads(raw)
            except (ValueError, UnicodeDecodeError):
                raise StreamFailed("The upstream provider sent a malformed stream chunk.") from None
            if not isinstance(data, dict):
                continue
            if "error" in data and "choices" not in data:
                error = data["error"] if isinstance(data["error"], dict) else {}
                raise StreamFailed(
                    str(error.get("message") or data["error"]),
                    type=error.get("type") or "upstream_error",
                    code=error.get("code"),
                )
            yield Chunk(data=data, raw=raw)
        if not done:
            raise StreamFailed("The upstream stream ended before it was complete.")

    async def aclose(self) -> None:
        await self.response.aclose()


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
        response, upstream_ms = await self.send(call, call.body, stream=False)
        raw = response.content
        return Completion(data=loads_json(raw), raw=raw, upstream_ms=upstream_ms)

    async def stream(self, call: Call) -> UpstreamStream:
        # Engram always asks for usage (to account tokens); the relay drops it when unasked.
        options = call.body.get("stream_options") or {}
        payload = {**call.body, "stream_options": {**options, "include_usage": True}}
        response, upstream_ms = await self.send(call, payload, stream=True)
        return OpenAIStream(response, upstream_ms)

    def complete_sync(self, call: Call, *, timeout: float) -> dict:
        return self.send_sync(call, call.body, timeout=timeout)

    async def list_models(self, upstream: Upstream | None) -> list[str]:
        if upstream is None:
            return []
        from completions.http import async_client

        response = await async_client().get(
            upstream.base_url.rstrip("/") + "/models",
            headers=self.request_headers(upstream),
            timeout=3.0,
        )
        if response.status_code != 200:
            return []
        data = response.json().get("data") or []
        return [m["id"] for m in data if isinstance(m, dict) and isinstance(m.get("id"), str)]
