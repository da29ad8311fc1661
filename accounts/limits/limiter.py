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

Concurrency slots are leases that the serving process renews while its request lives
(accounts.limits.leases): a process that dies frees its slots within ENGRAM_LIMITS_LEASE_SECONDS.

Redis unreachable: rates fail open and budgets fail closed by default
(ENGRAM_LIMITS_RATE_FAIL_OPEN / ENGRAM_LIMITS_BUDGET_FAIL_OPEN), and the choice is logged.
A request admitted without Redis is not settled.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import redis
from django.conf import settings

from accounts.keys import peppered_digest
from accounts.limits import leases
from accounts.limits.policy import MICRO, Policy, Rule
from config.common import inline_redis
from config.common.errors import ApiError

logger = logging.getLogger("engram.limits")

_HERE = Path(__file__).parent
RESERVE = (_HERE / "reserve.lua").read_text()
SETTLE = (_HERE / "settle.lua").read_text()
EXTEND = (_HERE / "extend.lua").read_text()
SEED = (_HERE / "seed.lua").read_text()
SEED_SUFFIX = ":seed"  # beside a budget's key: the seed that set it (seed.lua)
# The reserve's first two arguments, encoded: by its digest (EVALSHA), and whole (EVAL) for a
# Redis that lacks it.
_HEADS = {
    RESERVE: (
        inline_redis.bulk("EVALSHA")
        + inline_redis.bulk(hashlib.sha1(RESERVE.encode()).hexdigest()),
        inline_redis.bulk("EVAL") + inline_redis.bulk(RESERVE),
    ),
    EXTEND: (
        inline_redis.bulk("EVALSHA") + inline_redis.bulk(hashlib.sha1(EXTEND.encode()).hexdigest()),
        inline_redis.bulk("EVAL") + inline_redis.bulk(EXTEND),
    ),
}
# The settle's: always whole, since nothing reads its reply to see a NOSCRIPT; its comment
# lines left out (a third of its size), as Redis hashes the text on every EVAL.
_SETTLE_HEAD = inline_redis.bulk("EVAL") + inline_redis.bulk(
    "\n".join(line for line in SETTLE.splitlines() if not line.lstrip().startswith("--"))
)
# Redis is on the request path: a request waits at most this long before the fail-open/closed
# rule decides, and after a failure Redis is not asked again for RETRY_SECONDS.
TIMEOUT_SECONDS = 0.5
RETRY_SECONDS = 1.0
_FAILURES = inline_redis.FAILURES
_state = {"down_until": 0.0}
DAY_MS = 86_400_000
_EPOCH_DAY = date(1970, 1, 1)
KINDS = {1: "requests per minute", 2: "tokens per minute", 3: "concurrent requests"}


@dataclass(frozen=True)
class Subject:
    label: str  # "workspace", "api key", "end user 'alice'" — said in a 429's message
    prefix: str  # its Redis keys' common part (one hash tag per workspace: one cluster slot)
    rule: Rule
    workspace_id: str  # the usage records that are this subject's: the workspace's,
    api_key_id: str | None = None  # narrowed to a key
    user_id: str | None = None  # or an end user
    # The credit unit its budget counts in (Policy.credits_per_usd): its seed converts the
    # usage records counted in another unit, before the unit's last change, to this one.
    credits_per_usd: Decimal = Decimal(1)


# The credits (micro) a subject's usage records hold since a time (epoch ms; None: ever): the
# database is the truth of what was spent; Redis holds the running figure.
SpentSince = Callable[[Subject, int | None], Awaitable[int]]


@dataclass(frozen=True)
class _Wire:
    """A subject's share of the two scripts' commands, in Redis's wire format: the same for a
    subject, rule and day, so encoded once (`_wire`). A request encodes only its own figures:
    encoding all ~40 arguments of a reserve, and ~20 of a settle, was ~20 µs per request."""

    reserve_keys: bytes  # rpm, tpm, concurrency, budget, budget's seed
    reserve_args: bytes  # rpm, tpm, max_concurrent, budget (-1: none)
    settle_keys: bytes  # tpm, concurrency, budget, budget's seed
    settle_args: bytes  # tpm, has a budget (1 / 0)
    leased: bool  # a concurrency limit: the request holds a lease, renewed (leases.hold)


@functools.lru_cache(maxsize=4096)
def _wire(prefix: str, rule: Rule, day: date) -> _Wire:
    bulk = inline_redis.bulk
    suffix, _, _ = _budget_period(rule, day)
    rpm, tpm, conc, budget = (prefix + k for k in ("rpm", "tpm", "conc", suffix))
    seed = budget + SEED_SUFFIX
    return _Wire(
        reserve_keys=b"".join(map(bulk, (rpm, tpm, conc, budget, seed))),
        reserve_args=b"".join(
            map(
                bulk,
                (
                    rule.rpm or 0,
                    rule.tpm or 0,
                    rule.max_concurrent or 0,
                    rule.budget_micro if rule.budget_micro is not None else -1,
                ),
            )
        ),
        settle_keys=b"".join(map(bulk, (tpm, conc, budget, seed))),
        settle_args=bulk(rule.tpm or 0) + bulk(1 if rule.has_budget else 0),
        leased=bool(rule.max_concurrent),
    )


@dataclass(eq=False)  # by identity: held by weak reference while in flight (leases.hold)
class Admission:
    """One admitted request: what it reserved where, and its rate-limit figures."""

    request_id: str
    # Its concurrency leases' name (reserve.lua's ZADD, the settle's ZREM, leases.renew): the
    # request id and a random part. The request id alone is the client's x-request-id when it
    # sends one, and requests sent at once under one id shared one lease: max_concurrent 2
    # admitted any number of them, and the first to end freed the others' slot.
    lease: str = ""
    subjects: list[Subject] = field(default_factory=list)
    wires: list[_Wire] = field(default_factory=list)
    tokens: int = 0
    credits_micro: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    counted: bool = False  # Redis has it: settle
    day: date = _EPOCH_DAY  # the UTC day it was reserved on: its budgets' period keys
    # When it was reserved (epoch ms, the clock `day` was read from): its usage record's time,
    # so the record falls in the period its budget was charged in (completions.turn).
    at_ms: int = 0
    # Per subject: the seed its budget's key had when the request counted on it (0: none), and
    # the micro-credits counted there. The settle takes the difference only from a key that
    # still has that seed: one Redis lost and a request seeded again from the usage records
    # holds none of this request's reservation (settle.lua).
    seeds: list[int] = field(default_factory=list)
    counted_micro: list[int] = field(default_factory=list)

    def settle_command(self, script_head: bytes, tokens: int, credits_micro: int) -> bytes:
        bulk = inline_redis.bulk
        n = len(self.wires)
        return inline_redis.encoded(
            8 + 8 * n,
            script_head,
            bulk(4 * n),
            *(w.settle_keys for w in self.wires),
            bulk(_now_ms()),
            bulk(self.lease),
            bulk(n),
            bulk(tokens - self.tokens),
            bulk(credits_micro),
            *(
                w.settle_args + bulk(seed) + bulk(credits_micro - counted)
                for w, seed, counted in zip(self.wires, self.seeds, self.counted_micro, strict=True)
            ),
        )


def subjects(*, workspace_id: str, key_id: str | None, user_id: str | None, policy: Policy):
    """The subjects a request counts against: those with a limit."""
    base = f"engram:lim:{{{workspace_id}}}:"
    unit = policy.credits_per_usd
    found = []
    if not policy.workspace.empty:
        found.append(
            Subject("workspace", base + "ws:", policy.workspace, workspace_id, credits_per_usd=unit)
        )
    if key_id and not policy.key.empty:
        prefix = base + f"key:{key_id}:"
        found.append(
            Subject("API key", prefix, policy.key, workspace_id, key_id, credits_per_usd=unit)
        )
    if user_id and not policy.end_user.empty:
        label, prefix = f"end user '{user_id}'", base + f"user:{_user_key(user_id)}:"
        found.append(
            Subject(
                label, prefix, policy.end_user, workspace_id, user_id=user_id, credits_per_usd=unit
            )
        )
    return found


@functools.lru_cache(maxsize=4096)
def _user_key(user_id: str) -> str:
    """An end user's part of their keys' names: the id's peppered digest, not the id. The keys
    outlive the user's erasure (a budget's until its period ends, a lifetime budget's for ever)
    and Redis must not keep the id meanwhile."""
    return peppered_digest(user_id)[:32]


def period_key(prefix: str, period: str, now: datetime, *, version: int = 0) -> tuple[str, int]:
    """The budget's Redis key for the period `now` (UTC) falls in, and its time to live (ms):
    the rest of the period and a day, so settling a long answer still finds it."""
    rule = Rule(period=period, version=version)
    suffix, _, end_ms = _budget_period(rule, now.date())
    return prefix + suffix, _time_to_live(end_ms, int(now.timestamp() * 1000))


def _budget_period(rule: Rule, day: date) -> tuple[str, int, int]:
    """As `_period`, the key suffix naming the rule's version too (policy.Rule.version)."""
    suffix, start_ms, end_ms = _period(rule.period, day)
    return (f"{suffix}:v{rule.version}" if rule.version else suffix), start_ms, end_ms


def _time_to_live(end_ms: int, now_ms: int) -> int:
    """A budget key's (ms; 0: for ever): the rest of its period and a day, so settling a long
    answer still finds it."""
    return end_ms - now_ms + DAY_MS if end_ms else 0


@functools.lru_cache(maxsize=32)
def _period(period: str, day: date) -> tuple[str, int, int]:
    """(key suffix, start and end in epoch ms; 0, 0 for a budget with no period) of the period
    holding `day`: the same all day, so worked out once a day (the datetime arithmetic was ~8
    µs per subject per request)."""
    if period not in ("day", "week", "month"):
        return "bud:all", 0, 0
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    if period == "day":
        end = start + timedelta(days=1)
    elif period == "week":
        start -= timedelta(days=start.weekday())
        end = start + timedelta(days=7)
    else:
        start = start.replace(day=1)
        end = (start + timedelta(days=32)).replace(day=1)
    return (
        f"bud:{period}:{start:%Y%m%d}",
        int(start.timestamp() * 1000),
        int(end.timestamp() * 1000),
    )


async def reserve(
    *,
    request_id: str,
    found: list[Subject],
    tokens: int,
    credits_micro: int,
    spent_since: SpentSince,
) -> Admission:
    """Count the request against every subject, or raise the 429 (or 503) that refuses it.

    A budget whose period has no key in Redis yet — its first request, or a Redis that lost
    its data (a new server, a flush) — starts from what the database's usage records say was
    spent in the period, not from nothing: the reserve answers which subjects lack one, they
    are seeded, and it is asked again (once a period per subject; `spent_since` writes its own
    process's buffered usage first, and other processes' usage not yet flushed to the
    database, ENGRAM_USAGE_FLUSH_SECONDS, is not in the seed)."""
    admission, figures = await _reserve_once(request_id, found, tokens, credits_micro)
    if figures is not None and figures[0] == UNSEEDED:
        try:
            await _seed(found, figures[1], spent_since)
        except _FAILURES as exc:
            return _unreachable(admission, exc)
        admission, figures = await _reserve_once(request_id, found, tokens, credits_micro)
        if figures is not None and figures[0] == UNSEEDED:  # Redis did not keep the seeds
            return _unreachable(admission, redis.ResponseError("budget seeds not kept"))
    if figures is None:  # Redis unreachable, failing open: served, not counted
        return admission
    return _verdict(admission, figures, found, tokens)


UNSEEDED = 3  # the reserve's verdict for budgets without a key


async def _seed(
    found: list[Subject], mask: int, spent_since: SpentSince, *, day: date | None = None
) -> None:
    """Each budget key the mask names, set to its subject's spending in the period unless
    another request set it meanwhile (NX), with a name for this seed beside it: a request that
    reserved on a key Redis has since lost sees that the key it settles on is another, which
    holds none of its reservation (settle.lua; given back all the same, each request in flight
    across a loss took its reservation off what the usage records say was spent)."""
    now = _now_ms()
    day = day or _EPOCH_DAY + timedelta(days=now // DAY_MS)  # the admission's, for extend
    keys: list[str] = []
    args: list[str | int] = [secrets.randbelow(2**52) + 1]  # exact as a Lua number, never 0
    for index, subject in enumerate(found):
        if not mask >> index & 1:
            continue
        suffix, start_ms, end_ms = _budget_period(subject.rule, day)
        spent = await spent_since(subject, start_ms if end_ms else None)
        keys += [subject.prefix + suffix, subject.prefix + suffix + SEED_SUFFIX]
        args += [spent, _time_to_live(end_ms, now)]
    command: list[str | int] = ["EVAL", SEED, len(keys), *keys, *args]
    pool = inline_redis.pool(settings.REDIS_URL)
    bulk = inline_redis.bulk
    (reply,) = await pool.call_many(
        [inline_redis.encoded(len(command), *map(bulk, command))], timeout=TIMEOUT_SECONDS
    )
    if isinstance(reply, redis.ResponseError):
        raise reply


async def _reserve_once(
    request_id: str, found: list[Subject], tokens: int, credits_micro: int
) -> tuple[Admission, list[int] | None]:
    """The reserve script's figures (None: Redis unreachable and failing open; failing
    closed raises)."""
    now = _now_ms()
    day = _EPOCH_DAY + timedelta(days=now // DAY_MS)  # UTC
    wires = [_wire(s.prefix, s.rule, day) for s in found]
    lease = f"{request_id}:{secrets.token_hex(6)}"
    admission = Admission(
        request_id=request_id,
        lease=lease,
        subjects=found,
        wires=wires,
        tokens=tokens,
        day=day,
        at_ms=now,
    )
    admission.credits_micro = credits_micro
    bulk = inline_redis.bulk
    n = len(found)
    body = (
        bulk(5 * n),
        *(w.reserve_keys for w in wires),
        bulk(now),
        bulk(lease),
        _lease_ms(settings.ENGRAM_LIMITS_LEASE_SECONDS),
        bulk(n),
        bulk(tokens),
        bulk(credits_micro),
        *(w.reserve_args for w in wires),
    )
    try:
        reply = await _call(RESERVE, 9 + 9 * n, body)
    except _FAILURES as exc:
        return _unreachable(admission, exc), None
    return admission, [int(x) for x in reply.split()]


def _verdict(
    admission: Admission, figures: list[int], found: list[Subject], tokens: int
) -> Admission:
    """The admission the reserve's reply admits, or the 429 it refuses with."""
    verdict, who, kind, retry_ms = figures[:4]
    admission.headers = _headers(figures[4:10])
    if verdict == 0:
        admission.counted = True
        admission.seeds = figures[10:]
        admission.counted_micro = [
            admission.credits_micro if s.rule.has_budget else 0 for s in found
        ]
        if any(w.leased for w in admission.wires):
            leases.hold(admission, settings.ENGRAM_LIMITS_LEASE_SECONDS)
        return admission
    subject = found[who - 1]
    if verdict == 2:
        raise _over_budget(admission, subject, left_micro=retry_ms)
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


def _over_budget(
    admission: Admission, subject: Subject, *, left_micro: int | None = None
) -> ApiError:
    """The 429 of a budget that cannot take the request. One with some left refused a request
    whose reservation (its prompt and max_tokens at the model's price) is more than that, and
    said "You exceeded the budget" all the same: the client could not tell that a lower
    max_tokens would be served."""
    period = subject.rule.period if subject.rule.period != "none" else "lifetime"
    if left_micro and admission.credits_micro > left_micro:
        message = (
            f"This request may cost up to {_credits(admission.credits_micro)} credits (its "
            f"prompt and max_tokens at the model's price), more than the "
            f"{_credits(left_micro)} left in the budget of the {subject.label} ({period}). "
            "Lower max_tokens, raise the budget or wait for the next period."
        )
    else:
        message = (
            f"You exceeded the budget of the {subject.label} ({period}). "
            "Raise the budget or wait for the next period."
        )
    return ApiError(
        429,
        message,
        type="insufficient_quota",
        code="insufficient_quota",
        headers={**admission.headers, "x-should-retry": "false"},
    )


async def extend(admission: Admission, *, credits_micro: int, spent_since: SpentSince) -> None:
    """Reserve `credits_micro` more for an admitted request's budgets (an agent's tool run's
    next model call), or raise the 429 `insufficient_quota` the reserve would: nothing
    counted then. One admission covered a whole run of up to ENGRAM_TOOLS_MAX_STEPS model
    calls: a run that called its tool seven times spent seven times its budget of 7 credits.
    The settle then gives back what the reservation and its extensions did not use.

    A budget key Redis lost since the admission is seeded from the usage records, as
    `reserve` seeds it (`_seed`, `spent_since`), then asked again: the run's later calls went
    on unchecked and uncounted, where a plain call at that moment was seeded and refused."""
    budgeted = [i for i, s in enumerate(admission.subjects) if s.rule.has_budget]
    if not admission.counted or not budgeted or credits_micro <= 0:
        return
    try:
        reply = await _extend_once(admission, budgeted, credits_micro, report_gone=True)
        if reply[0] < 0:
            subjects = [admission.subjects[i] for i in budgeted]
            await _seed(subjects, reply[1], spent_since, day=admission.day)
            reply = await _extend_once(admission, budgeted, credits_micro, report_gone=False)
    except _FAILURES as exc:
        _down(exc)
        if not settings.ENGRAM_LIMITS_BUDGET_FAIL_OPEN:
            raise ApiError(
                503,
                "Limits cannot be checked right now; budgets fail closed "
                "(ENGRAM_LIMITS_BUDGET_FAIL_OPEN=false). Try again shortly.",
                code="limits_unavailable",
                headers={"retry-after": "1"},
            ) from None
        return  # failing open: the call goes on, settled with the rest
    refused, *seeds = reply
    if refused:
        raise _over_budget(admission, admission.subjects[budgeted[refused - 1]])
    admission.credits_micro += credits_micro
    for i, seed in zip(budgeted, seeds, strict=True):
        if seed < 0:  # the key is gone: not counted, as the settle will not count it
            continue
        if seed == admission.seeds[i]:
            admission.counted_micro[i] += credits_micro
        else:  # seeded again since the request counted on it: this call's alone is there
            admission.seeds[i], admission.counted_micro[i] = seed, credits_micro


async def _extend_once(
    admission: Admission, budgeted: list[int], credits_micro: int, *, report_gone: bool
) -> list[int]:
    """extend.lua's reply as numbers (`report_gone`: "-1 mask" for budget keys gone)."""
    bulk = inline_redis.bulk
    n = len(budgeted)
    keys = []
    for i in budgeted:
        subject = admission.subjects[i]
        key = subject.prefix + _budget_period(subject.rule, admission.day)[0]
        keys += [key, key + SEED_SUFFIX]
    body = (
        bulk(2 * n),
        *map(bulk, keys),
        bulk(n),
        bulk(credits_micro),
        *(bulk(admission.subjects[i].rule.budget_micro or 0) for i in budgeted),
        bulk(1 if report_gone else 0),
    )
    reply = await _call(EXTEND, 6 + 3 * n, body)
    return [int(x) for x in reply.split()]


def settle(admission: Admission, *, tokens: int, credits_micro: int) -> None:
    """Give back what was reserved and not used (or take what was used beyond it). Returns at
    once: the settle joins its loop turn's one write to Redis, on a connection Redis does not
    answer on (inline_redis.Pool.post_in_turn) — the script is sent whole (EVAL), so a Redis
    that has lost it (a restart) runs it all the same."""
    if not admission.counted:
        return
    leases.release(admission)

    command = admission.settle_command(_SETTLE_HEAD, tokens, credits_micro)

    def failed(exc: BaseException) -> None:
        _down(exc)
        if isinstance(exc, inline_redis.NotSent):
            # Redis was down when the answer ended (killed, restarting), or the connection
            # broke under the send, which took none of it: kept for Redis's return,
            # as the settles of the answers that end while the limiter rests. Dropped, a Redis
            # that kept its data (append-only) counted the reservation as spent: the prompt's
            # estimate and max_tokens at the model's price, 48 times what a 20-token answer
            # cost, against the budget for the rest of its period.
            _keep_unsent(command)
            return
        logger.warning(
            "could not settle request %s (%s): its reservation stands",
            admission.request_id,
            type(exc).__name__,
        )

    if time.monotonic() < _state["down_until"]:
        _keep_unsent(command)
        return
    inline_redis.pool(settings.REDIS_URL).post_in_turn(command, failed=failed)


# Settles not sent while the limiter rested after a Redis failure: they go before the next
# reserve, in its round trip. Dropped, each one left its request's tokens and credits reserved
# rather than spent, and its concurrency slot taken until its lease ended (11 minutes when the
# lease was: a user of max_concurrent 2 served by one slot after a half-second Redis stall; now
# ENGRAM_LIMITS_LEASE_SECONDS, no longer renewed once the answer ended).
_unsent: list[bytes] = []
MAX_UNSENT = 10_000


def _keep_unsent(command: bytes) -> None:
    if len(_unsent) >= MAX_UNSENT:  # a long outage: the oldest lease frees itself in time
        del _unsent[0]
        logger.warning("settles kept for Redis's return: %d, the oldest dropped", MAX_UNSENT)
    _unsent.append(command)


def _take_unsent() -> list[bytes]:
    """The settles kept while resting, to send now (each once: a settle is not idempotent)."""
    taken = _unsent[:]
    _unsent.clear()
    return taken


def _credits(micro: int) -> str:
    """Micro-credits as credits, without trailing zeros: 3, 0.5, 0.000125."""
    text = f"{Decimal(micro) / MICRO:f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


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
    """Rest RETRY_SECONDS from a failure before asking Redis again. A failure met while resting
    (the requests refused meanwhile, calls that were already on their way) leaves the rest's end
    where it is: each started it over, so under steady traffic a Redis back within a second was
    never asked again and every budgeted request was a 503 until the traffic paused."""
    if time.monotonic() < _state["down_until"]:
        return
    logger.warning(
        "Redis unreachable for limits (%s): rate limits fail %s, budgets fail %s",
        type(exc).__name__,
        "open" if settings.ENGRAM_LIMITS_RATE_FAIL_OPEN else "closed",
        "open" if settings.ENGRAM_LIMITS_BUDGET_FAIL_OPEN else "closed",
    )
    _state["down_until"] = time.monotonic() + RETRY_SECONDS


def _now_ms() -> int:
    return int(time.time() * 1000)


@functools.lru_cache(maxsize=4)
def _lease_ms(seconds: float) -> bytes:
    """ENGRAM_LIMITS_LEASE_SECONDS as the reserve's argument, encoded once."""
    return inline_redis.bulk(int(seconds * 1000))


async def _call(script: str, count: int, body: tuple[bytes, ...]):
    """EVALSHA of `body` (the script's arguments, `count` with the two naming it), read in
    line (config.common.inline_redis), sent again with the whole script when Redis lacks it."""
    if time.monotonic() < _state["down_until"]:
        raise redis.ConnectionError("resting after a failure")
    pool = inline_redis.pool(settings.REDIS_URL)
    by_sha, whole = _HEADS[script]
    # The settles kept while resting go first, in the same round trip: this reserve already
    # counts what they give back. Their replies are not read (a settle's is always 1).
    unsent = _take_unsent()
    try:
        *_, reply = await pool.call_many(
            [*unsent, inline_redis.encoded(count, by_sha, *body)], timeout=TIMEOUT_SECONDS
        )
    except _FAILURES as exc:
        if unsent and isinstance(exc, inline_redis.NotSent):  # surely not sent: kept again
            _unsent[:0] = unsent
        elif unsent:  # perhaps sent, perhaps not: never twice
            logger.warning(
                "%d settle(s) may not have reached Redis: reservations stand", len(unsent)
            )
        raise
    if _script_lost(reply):
        (reply,) = await pool.call_many(
            [inline_redis.encoded(count, whole, *body)], timeout=TIMEOUT_SECONDS
        )
    if isinstance(reply, redis.ResponseError):
        raise reply
    return reply


def _script_lost(reply: object) -> bool:
    """Redis's answer when it lacks the script (restarted, or SCRIPT FLUSH): send it whole."""
    return isinstance(reply, redis.ResponseError) and str(reply).startswith("NOSCRIPT")


def reset() -> None:
    """Tests: forget a failure (the settles kept for Redis's return stay kept)."""
    _state["down_until"] = 0.0
