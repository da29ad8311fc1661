"""Limits, budgets and credits of one completion, for the gateway.

`admit` runs before the upstream call (and before memory's work, which a refused request need
not do): it prices the model (cached), estimates the request's tokens (the prompt counted with
the one tokenizer, plus `max_tokens` or ENGRAM_LIMITS_DEFAULT_MAX_TOKENS) and their credits,
and reserves both in one Redis round trip (accounts.limits.limiter), raising the 429 that
refuses it. `finish` runs once when the answer ends, streamed or not: it charges the
upstream's reported usage at the table's price, puts `credits_charged` and `request_id` in
the answer's `engram` object, and settles the reservation (sent with its loop turn's other
settles; nothing waits for it).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from django.conf import settings

from accounts.limits import limiter
from accounts.limits.policy import NO_POLICY, Policy
from completions import pricing, selectors
from completions.usage import buffer, cache_tokens, count
from config.common import tokens as tokenizer
from config.common.errors import ApiError
from config.common.orm import on_pool_thread

PER_MESSAGE_TOKENS = 4  # OpenAI's framing of each message, roughly


@dataclass
class Charge:
    limits: Policy = NO_POLICY
    price: pricing.ModelPrice = pricing.FREE
    # The prompt's tokens, counted on admission where a limit applies; else only for an
    # answer cut short, which is charged it (`_used`): the request's body kept till then.
    prompt_estimate: int | None = None
    body: dict | None = None
    # The body the upstream was sent (its messages with what memory added): the prompt an
    # answer cut short, or not reported, is charged (`_used`). The client's alone missed the
    # memories, history and instructions Engram put before it.
    sent: dict | None = None
    admission: limiter.Admission | None = None
    micro: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    # The usage the answer was charged (`finish`): the upstream's where it reported one, else
    # the estimate (`_used`), which a stream that asked for usage ends with all the same.
    usage: dict | None = None
    # `usage` is Engram's estimate of an answer (no usage reported): what the usage record
    # shows, marked estimated, beside the credits charged for it.
    estimated: bool = False


def prompt_tokens(body: dict) -> int:
    total = 0
    for message in body.get("messages") or ():
        total += PER_MESSAGE_TOKENS
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            total += tokenizer.count(content)
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    total += tokenizer.count(part["text"])
    return total


def max_tokens(body: dict) -> int:
    """The completion tokens a request may cost: `max_tokens` for each of its `n` choices (one
    choice's worth was reserved for `n` of them: n=100 overshot a budget a hundredfold)."""
    choices = body.get("n")
    if not isinstance(choices, int) or isinstance(choices, bool) or choices < 1:
        choices = 1
    for name in ("max_completion_tokens", "max_tokens"):
        value = body.get(name)
        if isinstance(value, int) and value > 0:
            return value * choices
    return settings.ENGRAM_LIMITS_DEFAULT_MAX_TOKENS * choices


async def admit(
    charge: Charge,
    *,
    workspace_id: str,
    key_id: str | None,
    user_id: str | None,
    request_id: str,
    upstream_model: str,
    provider: str,
    body: dict,
) -> None:
    charge.price = await pricing.price_async(upstream_model, provider=provider)
    charge.body = body
    if charge.limits.empty:
        return
    found = limiter.subjects(
        workspace_id=workspace_id, key_id=key_id, user_id=user_id, policy=charge.limits
    )
    if not found:
        return
    if not charge.price.listed and any(s.rule.has_budget for s in found):
        raise _unpriced(upstream_model)
    charge.prompt_estimate = prompt = prompt_tokens(body)
    completion = max_tokens(body)
    credits = pricing.micro_credits(
        charge.price, prompt=prompt, completion=completion, per_usd=charge.limits.credits_per_usd
    )
    charge.admission = await limiter.reserve(
        request_id=request_id,
        found=found,
        tokens=prompt + completion,
        credits_micro=credits,
        spent_since=_spent_since,
    )
    charge.headers = charge.admission.headers


def _unpriced(model: str) -> ApiError:
    """A budget applies and the model has no price: served, it would cost nothing whatever it
    answered (any name an OpenAI-compatible upstream takes was a free ride round the budget).
    Refused before the call; the operator prices it, at 0 for a model that is free to run."""
    return ApiError(
        400,
        f"The model '{model}' has no price, so a budget cannot count what it costs. An "
        "operator can price it (admin: Prices; a price of 0 makes it free) to use it under "
        "a budget.",
        type="invalid_request_error",
        param="model",
        code="model_not_priced",
    )


async def extend(charge: Charge, *, body: dict) -> None:
    """Reserve one more model call of an admitted request (an agent's tool run calls the model
    after each tool result on the one admission) against its budgets: the call's prompt and
    `max_tokens` at the model's price, as `admit` estimates the first; the 429
    `insufficient_quota` when a budget cannot take it. The settle (`finish`) gives back what
    the calls did not use."""
    admission = charge.admission
    if admission is None or not admission.counted:
        return
    if not any(s.rule.has_budget for s in admission.subjects):
        return
    credits = pricing.micro_credits(
        charge.price,
        prompt=prompt_tokens(body),
        completion=max_tokens(body),
        per_usd=charge.limits.credits_per_usd,
    )
    await limiter.extend(admission, credits_micro=credits, spent_since=_spent_since)


@on_pool_thread
def _spent_since(subject: limiter.Subject, since_ms: int | None) -> int:
    """A budget's subject's spending (micro-credits) in the database, for the limiter's seed:
    this process's buffered usage records written first, so a budget set just after a request
    counts it (other processes' records reach the database within ENGRAM_USAGE_FLUSH_SECONDS).
    Once a period per subject, so the flush is no cost on the request path."""
    with contextlib.suppress(Exception):  # the database is down: the query below says so
        buffer.flush()
    since = datetime.fromtimestamp(since_ms / 1000, tz=UTC) if since_ms is not None else None
    spent = selectors.usage_credits_since(
        workspace=subject.workspace_id,
        since=since,
        api_key_id=subject.api_key_id,
        user_id=subject.user_id,
        per_usd=subject.credits_per_usd,
    )
    return round(spent * pricing.MICRO)


def finish(
    charge: Charge, *, usage: dict | None, answers: list[dict], engram: dict, request_id: str
) -> float:
    """Charge the answer; returns the credits charged (also put in `engram`). `answers`: every
    choice's message as far as it came (none: nothing was answered), charged by its words when
    the upstream reported no usage."""
    prompt, completion, cached, cache_write, cache_write_1h = _used(charge, usage, answers)
    charge.estimated = not reported(usage) and bool(answers)
    charge.usage = (
        usage
        if reported(usage)
        else {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }
    )
    charge.micro = pricing.micro_credits(
        charge.price,
        prompt=prompt,
        completion=completion,
        cached=cached,
        cache_write=cache_write,
        cache_write_1h=cache_write_1h,
        per_usd=charge.limits.credits_per_usd,
    )
    credits = pricing.as_credits(charge.micro)
    engram["credits_charged"] = credits
    engram["request_id"] = request_id
    if charge.admission is not None and charge.admission.counted:
        limiter.settle(charge.admission, tokens=prompt + completion, credits_micro=charge.micro)
    return credits


def answered(assistant: dict | None) -> list[dict]:
    """An answer of one message as `finish` takes it: that message, or none."""
    return [assistant] if assistant is not None else []


def reported(usage: Any) -> bool:
    """Whether the upstream reported the answer's usage (its prompt tokens a count); else it
    is charged an estimate (`_used`, `estimate`)."""
    return isinstance(usage, dict) and count(usage.get("prompt_tokens")) is not None


def _used(
    charge: Charge, usage: dict | None, answers: list[dict]
) -> tuple[int, int, int, int, int]:
    """(prompt, completion, cache-read prompt, cache-written prompt, of those written for an
    hour) tokens: the upstream's
    figures (those that are counts: completions.usage.count; Anthropic's cache figures as
    its translation puts them, completions.providers.anthropic_translate.usage_from); for an
    answer cut short without them, the prompt's estimate and the text received so far, of
    every choice (`answers`: choice 0's alone was counted, an `n` of 3 charged a third)."""
    if isinstance(usage, dict) and (prompt := count(usage.get("prompt_tokens"))) is not None:
        cached, cache_write, cache_write_1h = cache_tokens(usage)
        completion = count(usage.get("completion_tokens")) or 0
        return prompt, completion, cached or 0, cache_write or 0, cache_write_1h or 0
    if not answers:
        return 0, 0, 0, 0, 0  # nothing was answered: nothing is charged
    if charge.sent is not None:
        prompt = prompt_tokens(charge.sent)
    else:
        if charge.prompt_estimate is None:  # no limit applied: not counted on admission
            charge.prompt_estimate = prompt_tokens(charge.body or {})
        prompt = charge.prompt_estimate
    return prompt, sum(generated_tokens(a) for a in answers), 0, 0, 0


def estimate(messages: list, answer: dict) -> dict:
    """The usage of one model call the upstream reported none for, as `finish` charges it: the
    messages it was sent and the answer's words, tiktoken-counted (an agent's run estimates
    each of its calls so: completions.tools.run.Run.model_step)."""
    prompt = prompt_tokens({"messages": messages})
    completion = generated_tokens(answer)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


# What a reasoning detail says in words (its `data` and `signature` are opaque blobs).
_REASONING_WORDS = ("text", "summary")


def generated_tokens(assistant: dict) -> int:
    """The tokens of every word the model wrote of an answer: its content, a refusal, its tool
    calls' names and arguments, its reasoning's text. The content alone was counted: a stream
    of tool calls (or a refusal) cut before its usage cost its prompt only, however long its
    arguments."""
    parts = [assistant.get("content"), assistant.get("refusal")]
    for call in assistant.get("tool_calls") or ():
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            parts += [function.get("name"), function.get("arguments")]
    for detail in assistant.get("reasoning_details") or ():
        if isinstance(detail, dict):
            parts += [detail.get(name) for name in _REASONING_WORDS]
    return sum(tokenizer.count(p) for p in parts if isinstance(p, str) and p)


async def admit_tokens(
    *,
    limits: Policy,
    workspace_id: str,
    key_id: str | None,
    user_id: str | None,
    request_id: str,
    tokens: int,
    credits_micro: int = 0,
) -> limiter.Admission | None:
    """Count a request of Engram's own model (an embedding) against the rates: requests,
    `tokens` and a concurrency slot, and its `credits_micro` (0 for an unpriced model, which
    is Engram's own and free) against the budgets; the 429 when over. None: no limit applies.
    `settle_tokens` ends it."""
    if limits.empty:
        return None
    found = limiter.subjects(
        workspace_id=workspace_id, key_id=key_id, user_id=user_id, policy=limits
    )
    if not found:
        return None
    return await limiter.reserve(
        request_id=request_id,
        found=found,
        tokens=tokens,
        credits_micro=credits_micro,
        spent_since=_spent_since,
    )


def settle_tokens(
    admission: limiter.Admission | None, *, tokens: int, credits_micro: int = 0
) -> None:
    """The end of an `admit_tokens` request: its concurrency slot freed, `tokens` and
    `credits_micro` used."""
    if admission is not None and admission.counted:
        limiter.settle(admission, tokens=tokens, credits_micro=credits_micro)
