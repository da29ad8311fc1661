"""Engram's own calls to an LLM (memory extraction, summaries): synchronous, for Celery workers.

Routes like the gateway does; raises LLMUnavailable when only the offline `local` provider
is configured, so callers fall back to their offline path.
"""

from __future__ import annotations

import httpx
from django.conf import settings

from accounts.models import Workspace


class LLMUnavailable(Exception):
    """No real LLM is configured: use the offline fallback."""


class LLMError(Exception):
    """The LLM call failed (transport, status, or a malformed reply)."""


def chat(
    *,
    workspace: Workspace,
    messages: list[dict],
    model: str | None = None,
    temperature: float = 0.0,
    response_format: dict | None = None,
    max_tokens: int = 1024,
    timeout: float = 60.0,
) -> str:
    """The assistant's text for a non-streamed chat completion."""
    base_url = settings.OPENAI_BASE_URL
    if not base_url:
        raise LLMUnavailable("no upstream LLM configured")
    body: dict = {
        "model": model or settings.ENGRAM_MEMORY_LLM_MODEL or "gpt-4o-mini",
        "messages": messages,
        "temperature": temperature,
        "max_tokens": max_tokens,
    }
    if response_format:
        body["response_format"] = response_format
    headers = (
        {"Authorization": f"Bearer {settings.OPENAI_API_KEY}"} if settings.OPENAI_API_KEY else {}
    )
    try:
        resp = httpx.post(
            f"{base_url.rstrip('/')}/chat/completions", json=body, headers=headers, timeout=timeout
        )
    except httpx.HTTPError as exc:
        raise LLMError(f"upstream unreachable: {type(exc).__name__}") from exc
    if resp.status_code >= 400:
        raise LLMError(f"upstream answered {resp.status_code}")
    try:
        return resp.json()["choices"][0]["message"]["content"] or ""
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise LLMError("malformed upstream reply") from exc
