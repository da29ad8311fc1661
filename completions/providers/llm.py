"""Engram's own calls to an LLM (memory extraction, summaries): synchronous, for Celery workers.

Routes like the gateway does (workspace aliases and credentials, then the model's name);
raises LLMUnavailable when the route ends at the offline `local` provider, so callers fall back
to their offline path.
"""

from __future__ import annotations

import re

from django.conf import settings

from accounts.models import Workspace
from completions.providers.base import Call
from completions.providers.registry import Route, Snapshot, route, upstream_for
from completions.routing import snapshot_sync
from config.common.errors import ApiError
from config.common.ids import new_id
from config.common.jsonbody import storable

# Reasoning models served without a reasoning parser (DeepSeek-R1 or Qwen3 on Ollama, llama.cpp,
# vLLM without --reasoning-parser) open their answer with their thinking: "<think>...</think>".
THINKING = re.compile(r"\A\s*<think>.*?</think>\s*", re.S)


class LLMUnavailable(Exception):
    """No real LLM is configured: use the offline fallback."""


class LLMError(Exception):
    """The LLM call failed (transport, status, or a malformed reply)."""


def _default_model(workspace_id: str, snapshot: Snapshot | None = None) -> str:
    """ENGRAM_MEMORY_LLM_MODEL, else a small model of whichever provider is configured
    (`snapshot`: the workspace's routes, when the caller holds them already)."""
    if settings.ENGRAM_MEMORY_LLM_MODEL:
        return settings.ENGRAM_MEMORY_LLM_MODEL
    if snapshot is None:
        snapshot = snapshot_sync(workspace_id)
    if upstream_for(snapshot, "openai") is None and upstream_for(snapshot, "anthropic"):
        return "claude-3-5-haiku-latest"
    return "gpt-4o-mini"


def _route(workspace_id: str, model: str | None) -> Route:
    """The route of `model` (else the default model) from one snapshot of the workspace's
    routes: one coherence check (a Redis round trip) where the default and the route took one
    each — every extraction job asks (runs_offline): 29 -> 16 µs of CPU a call
    (bench/README.md, "Twenty-fifth session")."""
    snapshot = snapshot_sync(workspace_id)
    return route(snapshot, model or _default_model(workspace_id, snapshot))


def available(*, workspace: Workspace, model: str | None = None) -> bool:
    """Whether `chat` would reach a real LLM (else it raises LLMUnavailable): background work
    picks its offline path up front instead of preparing for a call that cannot happen."""
    return _route(workspace.id, model).provider.name != "local"


def context_window(*, workspace: Workspace, model: str | None = None) -> int:
    """The window of the model `chat` would call (as routed: an alias sized by its target)."""
    from memory.turn.assembly import context_window as window_of

    return window_of(_route(workspace.id, model).model)


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
    route = _route(workspace.id, model)
    if route.provider.name == "local":
        raise LLMUnavailable("no upstream LLM configured")
    body: dict = {
        "model": route.model,
        "messages": messages,
        "temperature": temperature,
        "max_tokens": max_tokens,
    }
    if response_format:
        body["response_format"] = response_format
    call = Call(body=body, upstream=route.upstream, request_id=new_id("llm"))
    try:
        data = route.provider.complete_sync(call, timeout=timeout)
    except ApiError as exc:
        raise LLMError(
            f"{route.provider.name} upstream failed ({exc.status}): {exc.message}"
        ) from exc
    try:
        content = data["choices"][0]["message"]["content"] or ""
    except (KeyError, IndexError, TypeError) as exc:
        raise LLMError("malformed upstream reply") from exc
    if not isinstance(content, str):
        raise LLMError("malformed upstream reply")
    # The answer is what follows the thinking: a summary stored (and put in every later turn's
    # context) with the model's reasoning in it, or a JSON reply parsed from braces and fences
    # the reasoning drafted, would be wrong.
    content = THINKING.sub("", content, count=1)
    if content.lstrip().startswith("<think>"):
        raise LLMError(
            "the model's reply was all thinking (no </think> within max_tokens): "
            "use a model without it, or turn its thinking off"
        )
    # Stored by its callers (a summary, a title): a NUL or a lone surrogate cleaned, not fatal.
    return storable(content)
