"""Limits and budgets in Redis: one script call per request before the upstream call
(`reserve`), one after the answer ends (`settle`).

Why GCRA for rates: one number per limit (the "theoretical arrival time"), exact at any
instant (no window edges letting twice the limit through, as fixed windows do, nor the
approximation of a sliding-window counter), and it yields OpenAI's figures directly:
remaining = what fits before the burst allowance (one minute's worth) is used, reset = when
the allowance is whole again, retry-after = when this request would fit. Tokens are reserved
from an estimate and the difference is settled after the answer (moving the arrival time back
or forward), which GCRA allows because its state is a single time.

Why it is exact under concurrency: the check and the count are one Lua script, which Redis
runs atomically — no request reads a figure another request is about to change (LiteLLM's
overshoot came from a read, then a separate increment). A budget is reserved in full before
the call, so it is overshot only by what admitted requests end up costing beyond their
reservation.

Redis unreachable: rates fail open and budgets fail closed by default
(ENGRAM_LIMITS_RATE_FAIL_OPEN / ENGRAM_LIMITS_BUDGET_FAIL_OPEN), and the choice is logged.
A request admitted without Redis is not settled.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import redis
from django.conf import settings

from accounts.limits.policy import Policy, Rule
from config.common import inline_redis
from config.common.errors import ApiError

logger = logging.getLogger("engram.limits")

_HERE = Path(__file__).parent
RESERVE = (_HERE / "reserve.lua").read_text()
SETTLE = (_HERE / "settle.lua").read_text()
_SHAS = {script: hashlib.sha1(script.encode()).hexdigest() for script in (RESERVE, SETTLE)}
# Redis is on the request path: a request waits at most this long before the fail-open/closed
# rule decides, and after a failure Redis is not asked again for RETRY_SECONDS.
TIMEOUT_SECONDS = 0.5
RETRY_SECONDS = 1.0
_FAILURES = inline_redis.FAILURES
_state = {"down_until": 0.0}
DAY_MS = 86_400_000
KINDS = {1: "requests per minute", 2: "tokens per minute", 3: "concurrent requests"}


@dataclass(frozen=True)
class Subject:
    label: str  # "workspace", "api key", "end user 'alice'" — said in a 429's message
    prefix: str  # its Redis keys' common part (one hash tag per workspace: one cluster slot)
    rule: Rule


@dataclass
class Admission:
    """One admitted request: what it reserved where, and its rate-limit figures."""

    request_id: str
    subjects: list[Subject] = field(default_factory=list)
    budget_keys: list[str] = field(default_factory=list)
    tokens: int = 0
    credits_micro: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    counted: bool = False  # Redis has it: settle

    def settle_args(self, tokens: int, credits_micro: int) -> tuple[list[str], list]:
        keys: list[str] = []
        args: list = [_now_ms(), self.request_id, len(self.subjects)]
        for subject, budget_key in zip(self.subjects, self.budget_keys, strict=True):
            keys += [subject.prefix + "tpm", subject.prefix + "conc", budget_key]
            rule = subject.rule
            args += [
                rule.tpm or 0,
                (tokens - self.tokens) if rule.tpm else 0,
                (credits_micro - self.credits_micro) if rule.has_budget else 0,
            ]
        return keys, args


def subjects(*, workspace_id: str, key_id: str | None, user_id: str | None, policy: Policy):
    """The subjects a request counts against: those with a limit."""
    base = f"engram:lim:{{{workspace_id}}}:"
    found = []
    if not policy.workspace.empty:
        found.append(Subject("workspace", base + "ws:", policy.workspace))
    if key_id and not policy.key.empty:
        found.append(Subject("API key", base + f"key:{key_id}:", policy.key))
    if user_id and not policy.end_user.empty:
        found.append(Subject(f"end user '{user_id}'", base + f"user:{user_id}:", policy.end_user))
    return found


def period_key(prefix: str, period: str, now: datetime) -> tuple[str, int]:
    """The budget's Redis key for the period `now` (UTC) falls in, and its time to live (ms):
    the rest of the period and a day, so settling a long answer still finds it."""
    if period not in ("day", "week", "month"):
        return prefix + "bud:all", 0
    suffix, end_ms = _period(period, now.date())
    return prefix + suffix, end_ms - int(now.timestamp() * 1000) + DAY_MS


@functools.lru_cache(maxsize=32)
def _period(period: str, day: date) -> tuple[str, int]:
    """(key suffix, end in epoch ms) of the period holding `day`: the same all day, so worked
    out once a day (the datetime arithmetic was ~8 µs per subject per request)."""
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    if period == "day":
        end = start + timedelta(days=1)
    elif period == "week":
        start -= timedelta(days=start.weekday())
        end = start + timedelta(days=7)
    else:
        start = start.replace(day=1)
        end = (start + timedelta(days=32)).replace(day=1)
    return f"bud:{period}:{start:%Y%m%d}", int(end.timestamp() * 1000)


async def reserve(
    *,
    request_id: str,
    found: list[Subject],
    tokens: int,
    credits_micro: int,
) -> Admission:
    """Count the request against every subject, or raise the 429 (or 503) that refuses it."""
    admission = Admission(request_id=request_id, subjects=found, tokens=tokens)
    admission.credits_micro = credits_micro
    now = datetime.now(UTC)
    keys: list[str] = []
    args: list = [_now_ms(), request_id, int(settings.ENGRAM_LIMITS_LEASE_SECONDS * 1000), 0]
    for subject in found:
        rule = subject.rule
        budget_key, ttl = period_key(subject.prefix, rule.period, now)
        admission.budget_keys.append(budget_key)
        keys += [subject.prefix + "rpm", subject.prefix + "tpm", subject.prefix + "conc"]
        keys.append(budget_key)
        args += [
            rule.rpm or 0,
            rule.tpm or 0,
            rule.max_concurrent or 0,
            rule.budget_micro if rule.has_budget else -1,
            tokens,
            credits_micro,
            ttl,
        ]
    args[3] = len(found)
    try:
        reply = await _call(RESERVE, keys, args)
    except _FAILURES as exc:
        return _unreachable(admission, exc)
    verdict, who, kind, retry_ms = (int(x) for x in reply[:4])
    admission.headers = _headers([int(x) for x in reply[4:]])
    if verdict == 0:
        admission.counted = True
        return admission
    subject = found[who - 1]
    if verdict == 2:
        raise ApiError(
            429,
            f"You exceeded the budget of the {subject.label} "
            f"({subject.rule.period if subject.rule.period != 'none' else 'lifetime'}). "
            "Raise the budget or wait for the next period.",
            type="insufficient_quota",
            code="insufficient_quota",
            headers={**admission.headers, "x-should-retry": "false"},
        )
    rule = subject.rule
    limit = {1: rule.rpm, 2: rule.tpm, 3: rule.max_concurrent}[kind]
    if retry_ms < 0:
        message = (
            f"Request too large for the {subject.label}'s limit of {limit} tokens per minute "
            f"(it needs about {tokens})."
        )
        headers = {**admission.headers, "x-should-retry": "false"}
    else:
        wait = max(retry_ms, 1)
        message = (
            f"Rate limit reached for the {subject.label} on {KINDS[kind]}: limit {limit}. "
            f"Please try again in {duration(wait)}."
        )
        headers = {
            **admission.headers,
            "retry-after": str(max(1, -(-wait // 1000))),
            "retry-after-ms": str(wait),
        }
    raise ApiError(
        429,
        message,
        type="tokens" if kind == 2 else "requests",
        code="rate_limit_exceeded",
        headers=headers,
    )


def settle(admission: Admission, *, tokens: int, credits_micro: int) -> None:
    """Give back what was reserved and not used (or take what was used beyond it). Returns at
    once: the settle joins its loop turn's one write to Redis (no response waits on it)."""
    if not admission.counted:
        return
    keys, args = admission.settle_args(tokens, credits_micro)
    argv = (str(len(keys)), *keys, *(str(a) for a in args))
    pool = inline_redis.pool(settings.REDIS_URL)

    def settled(reply: object, *, loaded: bool = False) -> None:
        if _script_lost(reply) and not loaded:  # Redis restarted without it: send it whole
            pool.send_in_turn(
                ("EVAL", SETTLE, *argv),
                timeout=TIMEOUT_SECONDS,
                then=lambda again: settled(again, loaded=True),
            )
            return
        if isinstance(reply, _FAILURES):
            _down(reply)
            logger.warning(
                "could not settle request %s (%s): its reservation stands",
                admission.request_id,
                type(reply).__name__,
            )

    if time.monotonic() < _state["down_until"]:
        settled(redis.ConnectionError("resting after a failure"))
        return
    pool.send_in_turn(("EVALSHA", _SHAS[SETTLE], *argv), timeout=TIMEOUT_SECONDS, then=settled)


def duration(ms: int) -> str:
    """OpenAI's reset format: 20ms, 1s, 1.5s, 6m0s, 1h2m3s."""
    if ms < 1000:
        return f"{ms}ms"
    seconds = ms / 1000
    if seconds < 60:
        return f"{round(seconds, 3):g}s"
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return (f"{hours}h" if hours else "") + f"{minutes}m{secs}s"


def _headers(figures: list[int]) -> dict[str, str]:
    out = {}
    for (limit, remaining, reset), kind in ((figures[:3], "requests"), (figures[3:], "tokens")):
        if limit >= 0:
            out[f"x-ratelimit-limit-{kind}"] = str(limit)
            out[f"x-ratelimit-remaining-{kind}"] = str(remaining)
            out[f"x-ratelimit-reset-{kind}"] = duration(reset)
    return out


def _unreachable(admission: Admission, exc: BaseException) -> Admission:
    _down(exc)
    budget_open = settings.ENGRAM_LIMITS_BUDGET_FAIL_OPEN
    rate_open = settings.ENGRAM_LIMITS_RATE_FAIL_OPEN
    budgets = any(s.rule.has_budget for s in admission.subjects)
    rates = any(s.rule.has_rate for s in admission.subjects)
    if (budgets and not budget_open) or (rates and not rate_open):
        which = "budgets" if budgets and not budget_open else "rate limits"
        setting = "BUDGET" if which == "budgets" else "RATE"
        raise ApiError(
            503,
            f"Limits cannot be checked right now; {which} fail closed "
            f"(ENGRAM_LIMITS_{setting}_FAIL_OPEN=false). Try again shortly.",
            code="limits_unavailable",
            headers={"retry-after": "1"},
        )
    return admission  # failing open: served, not counted


def _down(exc: BaseException) -> None:
    if time.monotonic() >= _state["down_until"]:
        logger.warning(
            "Redis unreachable for limits (%s): rate limits fail %s, budgets fail %s",
            type(exc).__name__,
            "open" if settings.ENGRAM_LIMITS_RATE_FAIL_OPEN else "closed",
            "open" if settings.ENGRAM_LIMITS_BUDGET_FAIL_OPEN else "closed",
        )
    _state["down_until"] = time.monotonic() + RETRY_SECONDS


def _now_ms() -> int:
    return int(time.time() * 1000)


async def _call(script: str, keys: list[str], args: list):
    """EVALSHA, read in line (config.common.inline_redis), loading the script when Redis
    lacks it."""
    if time.monotonic() < _state["down_until"]:
        raise redis.ConnectionError("resting after a failure")
    pool = inline_redis.pool(settings.REDIS_URL)
    argv = [str(len(keys)), *keys, *(str(a) for a in args)]
    try:
        return await pool.call("EVALSHA", _SHAS[script], *argv, timeout=TIMEOUT_SECONDS)
    except redis.ResponseError as exc:
        if not _script_lost(exc):
            raise
        return await pool.call("EVAL", script, *argv, timeout=TIMEOUT_SECONDS)


def _script_lost(reply: object) -> bool:
    """Redis's answer when it lacks the script (restarted, or SCRIPT FLUSH): send it whole."""
    return isinstance(reply, redis.ResponseError) and str(reply).startswith("NOSCRIPT")


def reset() -> None:
    """Tests: forget a failure."""
    _state["down_until"] = 0.0
