"""Limits, budgets and credits over HTTP, with the official client: rpm, tpm and concurrency per
key and per end user, OpenAI's headers and 429s, budgets (64 concurrent requests against a small
one), credits at the table's price (stream and not), and Redis down."""

from __future__ import annotations

import importlib
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import openai
import pytest

from accounts.limits import limiter
from accounts.models import ApiKey
from completions import charging, pricing
from completions.models import Price, UsageRecord
from completions.usage import buffer
from tests.completions_support import wait_for
from tests.test_coherence import dead_redis_url
from tests.upstream import Reply, openai_completion, openai_stream

HI = [{"role": "user", "content": "Hi"}]
METERED = "metered-model"  # 1 credit per completion token (see `metered`)
pytestmark = pytest.mark.usefixtures("limiter_awake")


@pytest.fixture
def metered(owner, operator_http):
    """A model priced 1 USD per million output tokens, and a unit of a million credits per USD:
    each completion token costs exactly one credit."""
    Price.objects.create(model=METERED, input_per_million=0, output_per_million=1)
    pricing.prices_changed()
    patch_workspace(operator_http, owner, {"credit_unit": {"per_usd": 1_000_000}})


def patch_workspace(operator_http, owner, body):
    resp = operator_http.patch(f"/v1/workspaces/{owner[0].id}", json=body)
    assert resp.status_code == 200, resp.text
    return resp.json()


def patch_key(operator_http, owner, key_id, body):
    resp = operator_http.patch(f"/v1/workspaces/{owner[0].id}/api_keys/{key_id}", json=body)
    assert resp.status_code == 200, resp.text
    return resp.json()


def ask(sdk, *, user=None, model="gpt-4o-mini", **kwargs):
    headers = {"x-user-id": user} if user else {}
    return sdk.chat.completions.with_raw_response.create(
        model=model, messages=HI, extra_headers=headers, **kwargs
    )


# --- rates ----------------------------------------------------------------------------------


def test_rpm_per_key_headers_count_down_then_429(sdk, operator_http, owner, key_id):
    body = patch_key(operator_http, owner, key_id, {"limits": {"rpm": 3}})
    assert body["limits"] == {"rpm": 3, "tpm": None, "max_concurrent": None}
    remaining = []
    for _ in range(3):
        raw = ask(sdk)
        assert raw.headers["x-ratelimit-limit-requests"] == "3"
        remaining.append(int(raw.headers["x-ratelimit-remaining-requests"]))
        assert raw.headers["x-ratelimit-reset-requests"].endswith("s")
    assert remaining == [2, 1, 0]
    with pytest.raises(openai.RateLimitError) as info:
        ask(sdk)
    error = info.value
    assert error.status_code == 429 and error.code == "rate_limit_exceeded"
    assert "requests per minute" in error.message and "API key" in error.message
    assert int(error.response.headers["retry-after"]) >= 1
    assert error.response.headers["x-ratelimit-remaining-requests"] == "0"
    assert error.body["type"] == "requests"
    # the refused request is not counted: full again within the minute (not 1m19s)
    reset = error.response.headers["x-ratelimit-reset-requests"]
    assert reset.endswith("s") and "m" not in reset, reset


def test_headers_reset_after_the_stated_time(sdk, operator_http, owner, key_id):
    patch_key(operator_http, owner, key_id, {"limits": {"rpm": 600}})  # one per 100 ms
    ask(sdk)
    raw = ask(sdk)
    assert int(raw.headers["x-ratelimit-remaining-requests"]) <= 598
    reset = raw.headers["x-ratelimit-reset-requests"]
    assert reset.endswith("ms")
    time.sleep(int(reset[:-2]) / 1000 + 0.05)
    assert ask(sdk).headers["x-ratelimit-remaining-requests"] == "599"  # whole again, less 1


def test_end_user_limit_is_per_end_user(sdk, operator_http, owner):
    body = patch_workspace(operator_http, owner, {"end_user_limits": {"rpm": 2}})
    assert body["end_user_limits"]["rpm"] == 2 and body["limits"]["rpm"] is None
    for _ in range(2):
        ask(sdk, user="alice")
    with pytest.raises(openai.RateLimitError) as info:
        ask(sdk, user="alice")
    assert "end user 'alice'" in info.value.message
    raw = ask(sdk, user="bob")  # another end user is not limited by alice
    assert raw.headers["x-ratelimit-remaining-requests"] == "1"
    # the body's `user` names the end user too (LiteLLM ignored budgets given that way)
    with pytest.raises(openai.RateLimitError):
        sdk.chat.completions.create(model="gpt-4o-mini", messages=HI, user="alice")


@pytest.mark.usefixtures("listed")
def test_an_end_users_limiter_keys_do_not_name_them(sdk, operator_http, owner):
    """The keys outlive the user's erasure (a lifetime budget's for ever): Redis held the id."""
    import redis
    from django.conf import settings

    patch_workspace(
        operator_http,
        owner,
        {"end_user_limits": {"rpm": 5, "tpm": 5000}, "end_user_budget": {"credits": 100}},
    )
    ask(sdk, user="carol@example.com")
    store = redis.Redis.from_url(settings.REDIS_URL)
    keys = [k.decode() for k in store.scan_iter(f"engram:lim:{{{owner[0].id}}}:user:*")]
    # the rpm window outlives the request; the tpm one may be settled away before the scan
    assert any(key.endswith(":rpm") for key in keys), keys
    assert not any("carol" in key for key in keys), keys


def test_tpm_reserves_the_estimate_and_settles_the_real_usage(sdk, operator_http, owner, key_id):
    patch_key(operator_http, owner, key_id, {"limits": {"tpm": 100}})
    first = ask(sdk, max_tokens=40)  # reserves 40 + the prompt's estimate; uses 18
    assert first.headers["x-ratelimit-limit-tokens"] == "100"
    after_first = int(first.headers["x-ratelimit-remaining-tokens"])
    assert 40 <= after_first <= 56
    wait_for(lambda: _settled(owner, key_id, "tpm", below_ms=60_000 * 46 / 100))
    second = ask(sdk, max_tokens=40)
    # without settling it would be after_first - 45 (at most 11); settled, the unused comes back
    assert int(second.headers["x-ratelimit-remaining-tokens"]) >= after_first - 45 + 20
    with pytest.raises(openai.RateLimitError) as info:
        ask(sdk, max_tokens=500)  # can never fit in 100 tokens a minute
    assert "too large" in info.value.message and info.value.code == "rate_limit_exceeded"
    assert info.value.response.headers["x-should-retry"] == "false"


def test_a_request_too_large_for_one_subject_is_not_retried_whatever_another_says(
    sdk, operator_http, owner, key_id
):
    """Too large for the workspace's tpm, and over the key's rpm: the key's rate, checked
    after, answered "try again in 59s" (and the SDKs retried a request that never fits)."""
    patch_workspace(operator_http, owner, {"limits": {"tpm": 100}})
    patch_key(operator_http, owner, key_id, {"limits": {"rpm": 1}})
    ask(sdk, max_tokens=10)
    with pytest.raises(openai.RateLimitError) as info:
        ask(sdk, max_tokens=500)  # can never fit in 100 tokens a minute
    assert "too large" in info.value.message and "workspace" in info.value.message
    assert info.value.response.headers["x-should-retry"] == "false"
    assert "retry-after" not in info.value.response.headers


def _settled(owner, key_id, kind, *, below_ms):
    """The key's GCRA time for `kind` lies less than `below_ms` ahead (its settle landed)."""
    import redis
    from django.conf import settings

    value = redis.Redis.from_url(settings.REDIS_URL).get(
        f"engram:lim:{{{owner[0].id}}}:key:{key_id}:{kind}"
    )
    return value is not None and float(value) - time.time() * 1000 < below_ms


def test_concurrency_limit_per_key(sdk, operator_http, owner, key_id, upstream):
    patch_key(operator_http, owner, key_id, {"limits": {"max_concurrent": 2}})
    slow = openai_completion("slow")
    upstream.script(Reply(json=slow, delay=1.5), Reply(json=slow, delay=1.5))
    with ThreadPoolExecutor(2) as pool:
        running = [pool.submit(ask, sdk) for _ in range(2)]
        wait_for(lambda: len(upstream.chat_requests()) == 2)
        with pytest.raises(openai.RateLimitError) as info:
            ask(sdk)
        assert "concurrent requests" in info.value.message
        assert all(f.result().status_code == 200 for f in running)
    wait_for(lambda: _free(owner, key_id))
    assert ask(sdk).status_code == 200  # the slots were freed when the answers ended


def test_requests_sent_at_once_under_one_x_request_id_each_take_a_slot(
    sdk, operator_http, owner, key_id, upstream
):
    """A concurrency slot was a lease named by the request id, which is the client's
    x-request-id when it sends one: requests sent at once under one id shared one lease, so
    max_concurrent 2 admitted any number of them (and the first to end freed the slot the
    others held)."""
    patch_key(operator_http, owner, key_id, {"limits": {"max_concurrent": 2}})
    slow = openai_completion("slow")
    upstream.script(Reply(json=slow, delay=1.5), Reply(json=slow, delay=1.5))

    def same():
        return sdk.chat.completions.with_raw_response.create(
            model="gpt-4o-mini",
            messages=HI,
            extra_headers={"x-request-id": "req-retried-by-the-client"},
        )

    with ThreadPoolExecutor(2) as pool:
        running = [pool.submit(same) for _ in range(2)]
        wait_for(lambda: len(upstream.chat_requests()) == 2)
        with pytest.raises(openai.RateLimitError) as info:
            same()
        assert "concurrent requests" in info.value.message
        assert all(f.result().status_code == 200 for f in running)
    wait_for(lambda: _free(owner, key_id))


def test_an_answer_that_ends_while_redis_is_unreachable_frees_its_slot_once_it_is_back(
    sdk, operator_http, owner, key_id, upstream, settings, monkeypatch
):
    """A request admitted before a Redis failure and answered after it: its settle could not
    be sent while the limiter rested, and was dropped, so its concurrency slot stayed taken
    for ENGRAM_LIMITS_LEASE_SECONDS (11 minutes of max_concurrent 1 refusing everything after
    a half-second Redis stall). It is sent once Redis is asked again."""
    from accounts.limits import limiter

    monkeypatch.setattr(limiter, "RETRY_SECONDS", 3600)  # the rest outlasts the answer
    patch_key(operator_http, owner, key_id, {"limits": {"max_concurrent": 1}})
    upstream.script(Reply(json=openai_completion("slow"), delay=1))
    with ThreadPoolExecutor(1) as pool:
        admitted = pool.submit(ask, sdk)
        wait_for(lambda: len(upstream.chat_requests()) == 1)  # its slot taken, on its way
        redis_url, settings.REDIS_URL = settings.REDIS_URL, dead_redis_url()
        assert ask(sdk).status_code == 200  # uncounted (fail open): the limiter rests
        settings.REDIS_URL = redis_url
        assert admitted.result().status_code == 200  # answered while the limiter rested
    limiter.reset()  # the rest is over: Redis is asked again
    assert ask(sdk).status_code == 200, "the answered request's slot was given back"


def test_a_stream_keeps_its_slot_past_its_lease_and_a_dead_process_s_slot_frees_after_one(
    sdk, operator_http, owner, key_id, upstream, settings
):
    """A concurrency slot is a short lease that the process serving the request renews while
    the request lives (accounts.limits.leases): a stream longer than the lease keeps its slot,
    and a slot whose process died (nobody renews it) is free once its lease ends — it was held
    for 11 minutes, locking a user of max_concurrent 1 out after every crash or deploy."""
    import redis

    settings.ENGRAM_LIMITS_LEASE_SECONDS = 1.0  # renewed every third of a second
    patch_key(operator_http, owner, key_id, {"limits": {"max_concurrent": 1}})
    store = redis.Redis.from_url(settings.REDIS_URL)
    key = f"engram:lim:{{{owner[0].id}}}:key:{key_id}:conc"
    pieces = [f"piece {i} " for i in range(30)]
    upstream.script(Reply(stream=openai_stream(pieces), delay=0.1))  # 3 s: three leases

    stream = sdk.chat.completions.create(model="gpt-4o-mini", messages=HI, stream=True)
    chunks = iter(stream)
    next(chunks)  # the answer has begun
    ((_, first_expiry),) = store.zrange(key, 0, -1, withscores=True)
    wait_for(lambda: time.time() * 1000 > first_expiry + 100)  # its first lease is over
    with pytest.raises(openai.RateLimitError) as refused:
        ask(sdk)
    assert "concurrent requests" in refused.value.message  # still held: renewed
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).endswith(
        "piece 29 "
    )
    wait_for(lambda: _free(owner, key_id))  # settled when the answer ended

    # A lease left by a process that died mid-answer: nobody renews it.
    expiry = time.time() * 1000 + 1000
    store.zadd(key, {"req_of_a_dead_process": expiry})
    with pytest.raises(openai.RateLimitError):
        ask(sdk)
    wait_for(lambda: time.time() * 1000 > expiry)
    assert ask(sdk).status_code == 200


def _free(owner, key_id):
    import redis
    from django.conf import settings

    key = f"engram:lim:{{{owner[0].id}}}:key:{key_id}:conc"
    return redis.Redis.from_url(settings.REDIS_URL).zcard(key) == 0


# --- credits and budgets ---------------------------------------------------------------------


def test_credits_charged_is_price_times_usage_and_request_id_echoed(
    sdk, operator_http, owner, upstream
):
    Price.objects.create(
        model="priced-model",
        input_per_million=2,
        cached_input_per_million=Decimal("0.5"),
        output_per_million=3,
    )
    pricing.prices_changed()
    patch_workspace(operator_http, owner, {"credit_unit": {"name": "mc", "per_usd": 1_000_000}})
    upstream.script(Reply(json=openai_completion("x", model="priced-model")))
    raw = ask(sdk, model="priced-model", metadata={"request_id": "client-42"})
    engram = raw.parse().model_extra["engram"]
    assert engram["credits_charged"] == 11 * 2 + 7 * 3  # usage: 11 prompt, 7 completion
    assert engram["request_id"] == "client-42"
    cached = {"prompt_tokens": 10, "completion_tokens": 1, "total_tokens": 11}
    cached["prompt_tokens_details"] = {"cached_tokens": 8}
    upstream.script(Reply(json=openai_completion("x", model="priced-model", usage=cached)))
    engram = ask(sdk, model="priced-model").parse().model_extra["engram"]
    assert engram["credits_charged"] == 2 * 2 + 8 * 0.5 + 1 * 3
    # no metadata: Engram's own request id, the one in the x-request-id header
    raw = ask(sdk, model="priced-model")
    assert raw.parse().model_extra["engram"]["request_id"] == raw.headers["x-request-id"]

    upstream.script(Reply(stream=openai_stream(["a", "b", "c"], model="priced-model")))
    stream = sdk.chat.completions.create(
        model="priced-model", messages=HI, stream=True, metadata={"request_id": "client-43"}
    )
    extras = [c.model_extra["engram"] for c in stream if (c.model_extra or {}).get("engram")]
    assert extras == [{"credits_charged": 5 * 2 + 3 * 3, "request_id": "client-43"}]
    buffer.flush()
    wait_for(lambda: UsageRecord.objects.filter(workspace=owner[0]).count() == 4)
    credits = sorted(
        UsageRecord.objects.filter(workspace=owner[0]).values_list("credits", flat=True)
    )
    assert credits == [11.0, 19.0, 43.0, 43.0]


def test_a_snapshot_is_charged_its_models_price_and_another_model_not_its_prefixs(
    sdk, operator_http, owner, upstream
):
    """o1-mini is not o1: a priced name covers the model's dated snapshots, not other models
    whose names begin with it (o1's price is 13x o1-mini's)."""
    Price.objects.create(model="o1", input_per_million=15, output_per_million=60)
    Price.objects.create(
        model="o1-mini", input_per_million=Decimal("1.10"), output_per_million=Decimal("4.40")
    )
    pricing.prices_changed()
    patch_workspace(operator_http, owner, {"credit_unit": {"name": "mc", "per_usd": 1_000_000}})
    upstream.script(Reply(json=openai_completion("x", model="o1-mini-2024-09-12")))
    engram = ask(sdk, model="o1-mini-2024-09-12").parse().model_extra["engram"]
    assert engram["credits_charged"] == pytest.approx(11 * 1.10 + 7 * 4.40)  # o1-mini's price


def _default_prices() -> dict[str, pricing.ListedPrice]:
    """The rows the migrations seed (a transactional test's flush empties the table)."""
    rows: dict = {}
    for module, name in (
        ("completions.migrations.0006_usage_credits_and_prices", "DEFAULT_PRICES"),
        ("completions.migrations.0017_current_model_prices", "CURRENT_PRICES"),
    ):
        rows |= getattr(importlib.import_module(module), name)
    return {
        model: pricing.ListedPrice(input=Decimal(inp), output=Decimal(out))
        for model, (inp, _cached, out) in rows.items()
    }


def test_a_priced_name_covers_its_snapshots_previews_and_tags_only():
    table = _default_prices()
    covered = {
        "gpt-4o-mini-2024-07-18": "gpt-4o-mini",
        "gpt-4o-2024-08-06": "gpt-4o",
        "gpt-3.5-turbo-0125": "gpt-3.5-turbo",
        "o1-preview": "o1",
        "o1-mini-2024-09-12": "o1-mini",
        "o3-pro-2025-06-10": "o3-pro",
        "claude-3-5-sonnet-20241022": "claude-3-5-sonnet",
        "claude-3-5-sonnet@20241022": "claude-3-5-sonnet",
        "claude-3-7-sonnet-latest": "claude-3-7-sonnet",
        "claude-sonnet-4-20250514": "claude-sonnet-4",
        "claude-opus-4-5-20251101": "claude-opus-4-5",
        "claude-opus-4-1-20250805": "claude-opus-4-1",
        "gpt-5-mini-2025-08-07": "gpt-5-mini",
        "gpt-4o:latest": "gpt-4o",
    }
    for model, name in covered.items():
        assert pricing.lookup(table, model) is table[name], model
    # another model whose name begins with a priced one: unknown, not the priced one's price
    for model in ("o1-ultra", "gpt-4o-mini-tts", "claude-opus-4-7", "o3-deep-research"):
        assert pricing.lookup(table, model).input == 0, model


CLAUDE = "claude-cache-test"  # routed to Anthropic by its name
# Anthropic's usage of a prompt that wrote 1,000 tokens to the cache and read 4,000 from it
CACHE_USAGE = {
    "input_tokens": 100,
    "cache_creation_input_tokens": 1000,
    "cache_read_input_tokens": 4000,
    "output_tokens": 6,
}


def _claude_answer(upstream, *, stream: bool, usage: dict = CACHE_USAGE) -> None:
    from tests.upstream import anthropic_message, anthropic_stream

    if stream:
        events = anthropic_stream(["a", "b"], model=CLAUDE)
        events[0][1]["message"]["usage"] = {**usage, "output_tokens": 1}
        events[-2][1]["usage"] = {"output_tokens": 6}
        upstream.script(Reply(stream=events))
    else:
        upstream.script(Reply(json=anthropic_message("ab", model=CLAUDE) | {"usage": usage}))


def _claude_credits(sdk, *, stream: bool, usage: list | None = None) -> float:
    """The credits charged for the answer (and its usage appended to `usage`)."""
    if not stream:
        answer = ask(sdk, model=CLAUDE).parse()
        if usage is not None:
            usage.append(answer.usage.model_dump())
        return answer.model_extra["engram"]["credits_charged"]
    chunks = list(
        sdk.chat.completions.create(
            model=CLAUDE, messages=HI, stream=True, stream_options={"include_usage": True}
        )
    )
    if usage is not None:
        usage.extend(c.usage.model_dump() for c in chunks if c.usage)
    extras = [c.model_extra["engram"] for c in chunks if (c.model_extra or {}).get("engram")]
    return extras[-1]["credits_charged"]


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_anthropic_cache_writes_and_reads_are_charged_at_their_own_prices(
    sdk, http, operator_http, owner, upstream, stream
):
    """Claude's cache writes (cache_creation_input_tokens) were charged at the input price,
    and its cache reads too when the cached price was blank: Anthropic bills 1.25x the input
    for a 5-minute cache write and 0.1x for a read. Blank prices follow those for a model
    Anthropic serves; set ones are charged as set. The usage record and /v1/usage count both."""
    Price.objects.create(model=CLAUDE, input_per_million=2, output_per_million=10)
    pricing.prices_changed()
    patch_workspace(operator_http, owner, {"credit_unit": {"per_usd": 1_000_000}})

    _claude_answer(upstream, stream=stream)
    # 100 uncached at 2, 1,000 written at 2.5, 4,000 read at 0.2, 6 out at 10
    assert _claude_credits(sdk, stream=stream) == 100 * 2 + 1000 * 2.5 + 4000 * 0.2 + 6 * 10

    Price.objects.filter(model=CLAUDE).update(
        cache_write_per_million=3, cached_input_per_million=Decimal("0.5")
    )
    pricing.prices_changed()
    _claude_answer(upstream, stream=stream)
    assert _claude_credits(sdk, stream=stream) == 100 * 2 + 1000 * 3 + 4000 * 0.5 + 6 * 10

    buffer.flush()
    wait_for(lambda: UsageRecord.objects.filter(workspace=owner[0]).count() == 2)
    rows = UsageRecord.objects.filter(workspace=owner[0])
    assert {(r.prompt_tokens, r.cached_tokens, r.cache_write_tokens) for r in rows} == {
        (5100, 4000, 1000)
    }
    totals = http.get("/v1/usage").json()["totals"]
    assert (totals["prompt_tokens"], totals["cached_tokens"], totals["cache_write_tokens"]) == (
        10200,
        8000,
        2000,
    )
    assert totals["credits"] == 3560 + 5260


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_anthropic_one_hour_cache_writes_are_charged_twice_the_input_price(
    sdk, operator_http, owner, upstream, stream
):
    """Every cache write was charged as a 5-minute one (1.25x the input): Anthropic bills a
    1-hour write 2x, and its usage says which were which (`cache_creation`'s
    ephemeral_5m_input_tokens / ephemeral_1h_input_tokens). A blank cache-write price charges
    the hour's at 2x the input; a set one is the 5-minute price, the hour's 2 / 1.25 of it.
    The answer's usage passes the hour's count on as `cache_write_1h_tokens`."""
    Price.objects.create(model=CLAUDE, input_per_million=2, output_per_million=10)
    pricing.prices_changed()
    patch_workspace(operator_http, owner, {"credit_unit": {"per_usd": 1_000_000}})
    hour = {
        **CACHE_USAGE,
        "cache_creation": {"ephemeral_5m_input_tokens": 400, "ephemeral_1h_input_tokens": 600},
    }

    _claude_answer(upstream, stream=stream, usage=hour)
    reported: list[dict] = []
    # 100 uncached at 2, 400 written for 5 minutes at 2.5 and 600 for an hour at 4, 4,000 read
    # at 0.2, 6 out at 10
    credits = _claude_credits(sdk, stream=stream, usage=reported)
    assert credits == 100 * 2 + 400 * 2.5 + 600 * 4 + 4000 * 0.2 + 6 * 10
    details = reported[-1]["prompt_tokens_details"]
    assert (details["cache_write_tokens"], details["cache_write_1h_tokens"]) == (1000, 600)
    assert reported[-1]["prompt_tokens"] == 5100

    Price.objects.filter(model=CLAUDE).update(cache_write_per_million=3)
    pricing.prices_changed()
    _claude_answer(upstream, stream=stream, usage=hour)
    credits = _claude_credits(sdk, stream=stream)
    assert credits == 100 * 2 + 400 * 3 + 2880 + 4000 * 0.2 + 6 * 10  # 600 at 3 x 2 / 1.25

    _claude_answer(upstream, stream=stream)  # no breakdown: every write a 5-minute one
    assert _claude_credits(sdk, stream=stream) == 100 * 2 + 1000 * 3 + 4000 * 0.2 + 6 * 10
    buffer.flush()
    wait_for(lambda: UsageRecord.objects.filter(workspace=owner[0]).count() == 3)
    rows = UsageRecord.objects.filter(workspace=owner[0])
    assert {(r.prompt_tokens, r.cache_write_tokens) for r in rows} == {(5100, 1000)}


def test_an_agent_runs_summed_usage_keeps_its_calls_one_hour_cache_writes():
    """A run is charged its upstream calls' summed usage: the sum kept the cache writes but
    not which were written for an hour, so a run's were all charged as 5-minute ones."""
    from completions.tools.run import _add_usage
    from completions.usage import cache_tokens

    total: dict = {}
    for written, hour in ((1000, 600), (300, 0), (50, 50)):
        details = {"cached_tokens": 10, "cache_write_tokens": written}
        if hour:
            details["cache_write_1h_tokens"] = hour
        _add_usage(total, {"prompt_tokens": 2000, "prompt_tokens_details": details})
    assert total["prompt_tokens_details"] == {
        "cached_tokens": 30,
        "cache_write_tokens": 1350,
        "cache_write_1h_tokens": 650,
    }
    assert cache_tokens(total) == (30, 1350, 650)


def test_cache_writes_cost_the_input_price_unless_anthropic_serves_the_model(
    sdk, operator_http, owner, upstream
):
    """An OpenAI-compatible upstream that reports cache writes (OpenRouter's
    `prompt_tokens_details.cache_write_tokens`) is charged them at the row's cache-write
    price, or the input price when blank: the 1.25x default is Anthropic's own."""
    Price.objects.create(model="priced-model", input_per_million=2, output_per_million=3)
    pricing.prices_changed()
    patch_workspace(operator_http, owner, {"credit_unit": {"per_usd": 1_000_000}})
    reported = {"prompt_tokens": 10, "completion_tokens": 1, "total_tokens": 11}
    reported["prompt_tokens_details"] = {"cached_tokens": 4, "cache_write_tokens": 5}
    upstream.script(Reply(json=openai_completion("x", model="priced-model", usage=reported)))
    assert ask(sdk, model="priced-model").parse().model_extra["engram"]["credits_charged"] == (
        10 * 2 + 1 * 3
    )
    Price.objects.filter(model="priced-model").update(cache_write_per_million=4)
    pricing.prices_changed()
    upstream.script(Reply(json=openai_completion("x", model="priced-model", usage=reported)))
    assert ask(sdk, model="priced-model").parse().model_extra["engram"]["credits_charged"] == (
        1 * 2 + 4 * 2 + 5 * 4 + 1 * 3
    )


def test_an_answer_without_cache_figures_costs_its_prompt_and_completion():
    """The common answer (nothing read from or written to a cache) costs what the full sum
    says, and a cache figure that is no count of the prompt is clamped as before."""
    price = pricing.ListedPrice(Decimal("2.5"), Decimal("10")).for_provider("anthropic")
    per_usd = Decimal(1000)

    def credits(**figures) -> int:
        return pricing.micro_credits(price, per_usd=per_usd, **figures)

    assert credits(prompt=31, completion=17) == (31 * 2500 + 17 * 10_000)
    assert credits(prompt=31, completion=17, cached=-4, cache_write=0) == credits(
        prompt=31, completion=17
    )
    assert credits(prompt=31, completion=17, cache_write_1h=9) == credits(prompt=31, completion=17)
    assert credits(prompt=31, completion=0, cached=40) == 31 * 250  # at most the prompt
    assert credits(prompt=30, completion=0, cached=10, cache_write=8, cache_write_1h=3) == (
        12 * 2500 + 10 * 250 + 5 * 3125 + 3 * 5000
    )


def test_a_rows_prices_for_each_provider_are_its_own():
    """A row's prices by provider are kept with the row (every request asks): each provider
    keeps its own, asked in any order, and the row still equals a row of the same prices."""
    row = pricing.ListedPrice(Decimal("2"), Decimal("3"))
    anthropic = row.for_provider("anthropic")
    openai_ = row.for_provider("openai")
    assert anthropic == pricing.ModelPrice(
        input=Decimal("2"),
        cached_input=Decimal("0.2"),
        output=Decimal("3"),
        cache_write=Decimal("2.5"),
        cache_write_1h=Decimal("4"),
    )
    assert openai_ == pricing.ModelPrice(
        input=Decimal("2"),
        cached_input=Decimal("2"),
        output=Decimal("3"),
        cache_write=Decimal("2"),
        cache_write_1h=Decimal("2"),
    )
    assert row.for_provider("anthropic") == anthropic
    assert row.for_provider("openai") == openai_
    assert row == pricing.ListedPrice(Decimal("2"), Decimal("3"))
    assert hash(row) == hash(pricing.ListedPrice(Decimal("2"), Decimal("3")))


@pytest.mark.parametrize(
    "reported",
    [
        {"prompt_tokens": -5_000_000, "completion_tokens": -7, "total_tokens": -5_000_007},
        {"prompt_tokens": 11, "completion_tokens": 7.0, "total_tokens": 18},
        {"prompt_tokens": 11, "completion_tokens": "7", "total_tokens": 18},
        {"prompt_tokens": 11, "completion_tokens": 3_000_000_000, "total_tokens": 3_000_000_011},
    ],
    ids=["negative", "float", "string", "past-the-column"],
)
def test_an_upstream_usage_figure_that_is_not_a_count_is_taken_as_unreported(
    sdk, operator_http, owner, key_id, metered, upstream, reported
):
    """A workspace's own upstream can report any usage: a negative figure gave credits back
    to the budget, a float or a string was a 500 that left the reservation standing, and one
    past the record's integer column stopped every workspace's usage records being written."""
    patch_key(operator_http, owner, key_id, {"budget": {"credits": 100, "period": "day"}})
    upstream.script(Reply(json=openai_completion("x", model=METERED, usage=reported)))
    charged = ask(sdk, model=METERED, max_tokens=7).parse().model_extra["engram"]
    assert 0 <= charged["credits_charged"] <= 1  # at most "x", a token, when nothing is a count
    wait_for(lambda: _budget_spent(owner, f"key:{key_id}:") == charged["credits_charged"] * 10**6)
    ask(sdk, model=METERED, max_tokens=7)  # and the next request, whose record follows it
    buffer.flush()
    records = UsageRecord.objects.filter(workspace=owner[0]).order_by("created_at")
    assert [(r.status_code, r.credits) for r in records] == [
        (200, charged["credits_charged"]),
        (200, 7),
    ]
    assert all(r.prompt_tokens is None or r.prompt_tokens >= 0 for r in records)


@pytest.mark.parametrize("limited", [False, True], ids=["no-limit", "an-rpm-limit"])
def test_a_stream_cut_short_is_charged_its_prompt_with_or_without_limits(
    sdk, http, operator_http, owner, key_id, upstream, limited
):
    """An answer cut short has no usage from the upstream: it is charged the prompt's estimate
    and the text received. The estimate was made only where a limit applied, so without one
    the prompt cost nothing."""
    Price.objects.create(model="priced-model", input_per_million=1, output_per_million=1)
    pricing.prices_changed()
    patch_workspace(operator_http, owner, {"credit_unit": {"per_usd": 1_000_000}})
    if limited:
        patch_key(operator_http, owner, key_id, {"limits": {"rpm": 100}})
    upstream.script(Reply(stream=openai_stream([" a", " b", " c"]), drop_after=3, delay=0.05))
    body = {"model": "priced-model", "messages": HI, "stream": True}
    with http.stream("POST", "/v1/chat/completions", json=body) as resp:
        assert b"error" in b"".join(resp.iter_bytes())  # the upstream went away mid-stream
    buffer.flush()
    record = UsageRecord.objects.get(workspace=owner[0])
    assert record.incomplete
    assert record.credits == charging.prompt_tokens({"messages": HI}) + 2  # " a", " b"


def test_budget_exhausted_is_insufficient_quota(sdk, operator_http, owner, key_id, metered):
    patch_key(operator_http, owner, key_id, {"budget": {"credits": 10, "period": "day"}})
    ok = ask(sdk, model=METERED, max_tokens=7)
    assert ok.parse().model_extra["engram"]["credits_charged"] == 7
    with pytest.raises(openai.RateLimitError) as info:  # 7 spent + 7 reserved > 10
        ask(sdk, model=METERED, max_tokens=7)
    error = info.value
    assert error.code == "insufficient_quota" and error.body["type"] == "insufficient_quota"
    assert error.response.headers["x-should-retry"] == "false"
    assert "budget of the API key" in error.message


def test_a_budget_with_some_left_says_what_is_left_and_that_a_lower_max_tokens_fits(
    sdk, operator_http, owner, key_id, metered
):
    """7 of 10 credits spent, a request reserving 7 more was told "You exceeded the budget"
    (with x-should-retry: false): nothing said that 3 were left, nor that a request with a
    lower max_tokens would be served."""
    patch_key(operator_http, owner, key_id, {"budget": {"credits": 10, "period": "day"}})
    ask(sdk, model=METERED, max_tokens=7)
    with pytest.raises(openai.RateLimitError) as info:
        ask(sdk, model=METERED, max_tokens=7)
    message = info.value.message
    assert info.value.code == "insufficient_quota"
    assert "up to 7 credits" in message and "the 3 left in the budget of the API key" in message
    assert "Lower max_tokens" in message and "exceeded" not in message
    ask(sdk, model=METERED, max_tokens=3)  # it fits: served (and spends the upstream's 7)
    with pytest.raises(openai.RateLimitError) as info:
        ask(sdk, model=METERED, max_tokens=1)
    assert "You exceeded the budget of the API key (day)." in info.value.message


def test_a_request_for_several_choices_reserves_each_choice(
    sdk, operator_http, owner, key_id, metered, upstream
):
    """`n` choices may each cost `max_tokens`: one choice's worth was reserved, so n=100
    went past any budget a hundredfold before its settle. Now it is refused before the call."""
    patch_key(operator_http, owner, key_id, {"budget": {"credits": 10, "period": "day"}})
    with pytest.raises(openai.RateLimitError) as info:  # 2 x 7 reserved > 10
        ask(sdk, model=METERED, max_tokens=7, n=2)
    assert info.value.code == "insufficient_quota"
    assert upstream.chat_requests() == []
    upstream.script(Reply(json=openai_completion("a", model=METERED, n=2)))
    ask(sdk, model=METERED, max_tokens=5, n=2)  # 2 x 5 fits


def test_a_budget_set_just_after_a_request_counts_it(sdk, operator_http, owner, key_id, metered):
    """The budget's first request seeds it from the usage records, this process's buffered
    ones included: a request answered a moment before the budget was set is not forgotten."""
    assert ask(sdk, model=METERED, max_tokens=7).parse().model_extra["engram"]["credits_charged"]
    patch_key(operator_http, owner, key_id, {"budget": {"credits": 10, "period": "day"}})
    with pytest.raises(openai.RateLimitError) as info:  # 7 spent + 7 reserved > 10
        ask(sdk, model=METERED, max_tokens=7)
    assert info.value.code == "insufficient_quota"
    ask(sdk, model=METERED, max_tokens=3)  # what is left of the budget is still served


@pytest.mark.parametrize("period", ["day", "none"])
def test_a_budget_redis_lost_is_taken_up_from_the_usage_records(
    sdk, operator_http, owner, key_id, metered, period
):
    """Redis may lose its data (a new server, a flush): the spending it counted is in the
    usage records, and the next request's budget starts from there, not from nothing."""
    import redis
    from django.conf import settings

    patch_key(operator_http, owner, key_id, {"budget": {"credits": 10, "period": period}})
    assert ask(sdk, model=METERED, max_tokens=7).parse().model_extra["engram"]["credits_charged"]
    buffer.flush()
    wait_for(lambda: UsageRecord.objects.filter(workspace=owner[0], credits=7).exists())
    store = redis.Redis.from_url(settings.REDIS_URL)
    budget_keys = [
        key
        for key in store.keys(f"engram:lim:{{{owner[0].id}}}:key:*:bud:*")
        if not key.endswith(limiter.SEED_SUFFIX.encode())  # the name of its seed, beside it
    ]
    assert len(budget_keys) == 1 and int(store.get(budget_keys[0])) == 7_000_000
    store.delete(*budget_keys)  # what a Redis that lost its data no longer has

    with pytest.raises(openai.RateLimitError) as info:  # 7 spent (in the database) + 7 > 10
        ask(sdk, model=METERED, max_tokens=7)
    assert info.value.code == "insufficient_quota"
    assert int(store.get(budget_keys[0])) == 7_000_000
    assert (store.pttl(budget_keys[0]) > 0) is (period == "day")  # a period's key expires
    ask(sdk, model=METERED, max_tokens=3)  # what is left of the budget is still served


@pytest.mark.parametrize(
    "interruption",
    [{"credits": None}, {"credits": 100, "period": "day"}],
    ids=["budget-removed", "another-period-meanwhile"],
)
def test_a_budget_set_again_counts_what_was_spent_while_it_was_off(
    sdk, operator_http, owner, key_id, metered, interruption
):
    """Nothing counts a budget while it is removed (or counts another period): set again,
    it starts from the usage records. It kept the count it had before and served what the
    records say was already spent: 7 + 7 + 7 credits on a budget of 10."""
    patch_key(operator_http, owner, key_id, {"budget": {"credits": 10, "period": "none"}})
    ask(sdk, model=METERED, max_tokens=7)
    patch_key(operator_http, owner, key_id, {"budget": interruption})
    ask(sdk, model=METERED, max_tokens=7)
    patch_key(operator_http, owner, key_id, {"budget": {"credits": 10, "period": "none"}})

    with pytest.raises(openai.RateLimitError) as info:  # 14 spent, in the usage records
        ask(sdk, model=METERED, max_tokens=1)
    assert info.value.code == "insufficient_quota"


@pytest.mark.parametrize(
    "change",
    [{"limits": {"rpm": 100}}, {"budget": {"credits": 12}}, {}],
    ids=["a-rate", "the-amount", "nothing"],
)
def test_a_change_that_keeps_the_budget_keeps_its_count(
    sdk, operator_http, owner, key_id, metered, upstream, change
):
    """The budget's count was named by its row's last change: a new rpm, a new amount, even a
    PATCH of nothing started it again from the usage records, which do not hold the requests
    in flight. A stream that had reserved 7 of 10 credits was forgotten, and a second request
    of 7 was served beside it: 14 credits spent on a budget of 10 (12)."""
    patch_key(operator_http, owner, key_id, {"budget": {"credits": 10, "period": "day"}})
    gate = threading.Event()
    upstream.script(Reply(stream=openai_stream(["a"] * 7, model=METERED), gate=gate))
    stream = sdk.chat.completions.create(model=METERED, messages=HI, stream=True, max_tokens=7)
    try:
        next(iter(stream))  # reserved 7 and answering, held at the gate
        patch_key(operator_http, owner, key_id, change)
        with pytest.raises(openai.RateLimitError) as info:  # 7 reserved + 7 > 10 (12)
            ask(sdk, model=METERED, max_tokens=7)
        assert info.value.code == "insufficient_quota"
    finally:
        gate.set()
    marks = [c.model_extra["engram"] for c in stream if (c.model_extra or {}).get("engram")]
    assert marks[-1]["credits_charged"] == 7


def test_a_new_credit_unit_keeps_the_value_in_usd_of_what_was_spent(
    sdk, operator_http, owner, key_id, metered
):
    """A budget counts credits; `credit_unit.per_usd` says what one is worth. Changed in the
    middle of a period, the count went on in the old unit: 7 credits spent at a million per
    USD were still 7 at half a million per USD, where they are worth 3.5, and 7 at two
    million, where they are worth 14. What was spent
    keeps its value in USD: the budget counts again, in the new unit, from the usage records,
    each converted from the unit it was counted in."""
    patch_key(operator_http, owner, key_id, {"budget": {"credits": 10, "period": "day"}})
    assert ask(sdk, model=METERED, max_tokens=7).parse().model_extra["engram"]["credits_charged"]
    who = f"key:{key_id}:"
    wait_for(lambda: _budget_spent(owner, who) == 7_000_000)

    # Half a credit a token: the 7 spent are 3.5, and 3.5 + 6 reserved fit in 10 (the old
    # count, 7 + 6, refused it); the answer's 7 tokens cost 3.5.
    patch_workspace(operator_http, owner, {"credit_unit": {"per_usd": 500_000}})
    served = ask(sdk, model=METERED, max_tokens=12).parse().model_extra["engram"]
    assert served["credits_charged"] == 3.5
    wait_for(lambda: _budget_spent(owner, who) == 7_000_000)

    # Back to a credit a token: the 14 tokens spent are 14 credits, over the budget of 10.
    patch_workspace(operator_http, owner, {"credit_unit": {"per_usd": 1_000_000}})
    with pytest.raises(openai.RateLimitError) as info:
        ask(sdk, model=METERED, max_tokens=1)
    assert info.value.code == "insufficient_quota"
    assert _budget_spent(owner, who) == 14_000_000
    records = UsageRecord.objects.filter(workspace=owner[0], credits__gt=0)
    assert sorted((r.credits, r.credits_per_usd) for r in records) == [
        (3.5, Decimal(500_000)),
        (7, Decimal(1_000_000)),
    ]


def test_streamed_answers_settle_their_budget(sdk, operator_http, owner, metered, upstream):
    patch_workspace(operator_http, owner, {"budget": {"credits": 5, "period": "none"}})
    upstream.script(Reply(stream=openai_stream(["a", "b"], model=METERED)))
    stream = sdk.chat.completions.create(model=METERED, messages=HI, stream=True, max_tokens=5)
    extras = [c.model_extra["engram"] for c in stream if (c.model_extra or {}).get("engram")]
    assert extras[0]["credits_charged"] == 2  # two completion tokens, not the 5 reserved
    wait_for(lambda: _budget_spent(owner, "ws:") == 2 * 1_000_000)
    ask(sdk, model=METERED, max_tokens=3)  # 2 + 3 fit in 5 only because 3 came back


def _budget_spent(owner, who):
    """What the budget of `who` ("ws:", "key:<id>:", "user:<id>:") has counted in Redis in
    its current period."""
    import redis
    from django.conf import settings

    value = redis.Redis.from_url(settings.REDIS_URL).get(budget_key(owner, who))
    return int(value) if value is not None else None


def budget_key(owner, who) -> str:
    """The Redis key of the budget of `who` now: its period's and its limit's version."""
    from datetime import UTC, datetime

    from accounts.limits.selectors import limit_policy

    key_id = who.split(":")[1] if who.startswith("key:") else None
    policy = limit_policy(workspace=owner[0], key_id=key_id)
    kind = who.split(":")[0]
    rule = {"ws": policy.workspace, "key": policy.key, "user": policy.end_user}[kind]
    prefix = f"engram:lim:{{{owner[0].id}}}:{who}"
    key, _ = limiter.period_key(prefix, rule.period, datetime.now(UTC), version=rule.version)
    return key


def test_64_concurrent_requests_never_overshoot_a_budget_of_10(
    engram_server, operator_http, owner, key_id, metered, upstream
):
    patch_key(operator_http, owner, key_id, {"budget": {"credits": 70, "period": "month"}})
    sdk = openai.OpenAI(
        base_url=engram_server.url + "/v1", api_key=owner[1], max_retries=0, timeout=30
    )

    def one(_):
        try:
            sdk.chat.completions.create(model=METERED, messages=HI, max_tokens=7)
            return "served"
        except openai.RateLimitError as exc:
            return exc.code

    with ThreadPoolExecutor(64) as pool:
        outcomes = list(pool.map(one, range(64)))
    served = outcomes.count("served")
    assert served <= 10 and outcomes.count("insufficient_quota") == 64 - served
    assert served >= 1
    buffer.flush()
    charged = UsageRecord.objects.filter(workspace=owner[0], status_code=200)
    wait_for(lambda: charged.count() == served)
    spent = sum(charged.values_list("credits", flat=True))
    assert spent <= 70 + 7  # at most one request's reservation beyond the budget


# --- Redis down ------------------------------------------------------------------------------


@pytest.mark.usefixtures("listed")
def test_redis_down_rates_fail_open_budgets_fail_closed(
    sdk, operator_http, owner, key_id, settings, caplog
):
    patch_key(operator_http, owner, key_id, {"limits": {"rpm": 1}})
    ask(sdk)
    settings.REDIS_URL = dead_redis_url()
    for _ in range(2):  # over the rpm, but it cannot be counted: served (fail open)
        raw = ask(sdk)
        assert raw.status_code == 200 and "x-ratelimit-limit-requests" not in raw.headers
    patch_key(operator_http, owner, key_id, {"budget": {"credits": 100}})
    with pytest.raises(openai.InternalServerError) as info:  # budgets fail closed: 503
        ask(sdk)
    assert info.value.status_code == 503 and info.value.code == "limits_unavailable"
    settings.ENGRAM_LIMITS_BUDGET_FAIL_OPEN = True
    assert ask(sdk).status_code == 200
    settings.ENGRAM_LIMITS_RATE_FAIL_OPEN = False
    with pytest.raises(openai.InternalServerError):
        ask(sdk)


@pytest.mark.usefixtures("listed")
def test_budgets_are_checked_again_once_redis_is_back_however_busy_the_door(
    sdk, operator_http, owner, key_id, settings
):
    """After a Redis failure the limiter rests a second before asking it again. Each request
    refused while it rested started the rest over: under steady traffic a Redis back within a
    second (a restart) was never asked again, and every budgeted request was a 503 until the
    traffic paused for a whole second."""
    patch_key(operator_http, owner, key_id, {"budget": {"credits": 100}})
    assert ask(sdk).status_code == 200
    redis_url, settings.REDIS_URL = settings.REDIS_URL, dead_redis_url()
    with pytest.raises(openai.InternalServerError):
        ask(sdk)
    settings.REDIS_URL = redis_url  # back, while requests keep coming (none waits in between)
    served = []

    def steady_traffic_is_served() -> bool:
        try:
            served.append(ask(sdk).status_code)
        except openai.InternalServerError as refused:
            assert refused.code == "limits_unavailable"
        return bool(served)

    wait_for(steady_traffic_is_served, timeout=30)
    assert served == [200]


def test_limits_and_budgets_in_the_provisioning_api(operator_http, owner, key_id, http):
    body = patch_workspace(
        operator_http,
        owner,
        {
            "name": "renamed",
            "limits": {"rpm": 600, "max_concurrent": 5},
            "budget": {"credits": 12.5, "period": "week"},
            "end_user_budget": {"credits": 1, "period": "day"},
        },
    )
    assert body["name"] == "renamed" and body["budget"] == {"credits": 12.5, "period": "week"}
    assert body["end_user_budget"]["credits"] == 1.0
    body = patch_workspace(operator_http, owner, {"limits": {"rpm": None}})
    assert body["limits"] == {"rpm": None, "tpm": None, "max_concurrent": 5}
    got = operator_http.get(f"/v1/workspaces/{owner[0].id}").json()
    assert got["limits"]["max_concurrent"] == 5 and got["credit_unit"]["per_usd"] == 1.0
    url = f"/v1/workspaces/{owner[0].id}"
    bad = operator_http.patch(url, json={"limits": {"rpm": 0}})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "limits.rpm"
    bad = operator_http.patch(url, json={"budget": {"period": "year"}})
    assert bad.status_code == 400
    # a misspelt field is refused, naming it, not dropped (it left no limit)
    bad = operator_http.patch(url, json={"limits": {"max_concurent": 1}})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "limits.max_concurent"
    bad = operator_http.patch(f"{url}/api_keys/{key_id}", json={"budget": {"credit": 5}})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "budget.credit"
    bad = operator_http.patch(url, json={"credit_unit": {"per_usd": 0}})  # every answer free
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "credit_unit.per_usd"
    # past Redis' 64-bit counts of micro-credits: every request a 503
    bad = operator_http.patch(url, json={"credit_unit": {"per_usd": 10**13}})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "credit_unit.per_usd"
    assert operator_http.get(url).json()["limits"]["max_concurrent"] == 5  # nothing changed
    assert operator_http.patch(f"{url}/api_keys/key_nope", json={}).status_code == 404
    assert operator_http.patch("/v1/workspaces/ws_nope", json={}).status_code == 404
    assert http.patch(url, json={}).status_code == 403  # a workspace key is not the operator


@pytest.mark.usefixtures("listed")
def test_a_group_set_to_null_removes_every_limit_in_it(sdk, operator_http, owner, key_id):
    """ "A limit set to null is removed": `{"rpm": null}` removed one, but
    `"end_user_limits": null` (or `"budget": null`) was a 400, so removing the end users'
    limits meant naming each of them."""
    patch_workspace(
        operator_http,
        owner,
        {
            "limits": {"rpm": 600},
            "budget": {"credits": 50, "period": "week"},
            "end_user_limits": {"rpm": 1, "tpm": 5000, "max_concurrent": 2},
            "end_user_budget": {"credits": 3, "period": "day"},
        },
    )
    ask(sdk, user="alice")
    with pytest.raises(openai.RateLimitError):
        ask(sdk, user="alice")
    body = patch_workspace(operator_http, owner, {"end_user_limits": None, "end_user_budget": None})
    assert body["end_user_limits"] == {"rpm": None, "tpm": None, "max_concurrent": None}
    assert body["end_user_budget"]["credits"] is None
    assert body["limits"]["rpm"] == 600 and body["budget"]["credits"] == 50  # kept
    ask(sdk, user="alice")  # no end-user limit any more
    ask(sdk, user="alice")
    body = patch_workspace(operator_http, owner, {"limits": None, "budget": None})
    assert body["limits"] == {"rpm": None, "tpm": None, "max_concurrent": None}
    assert body["budget"]["credits"] is None
    patch_key(operator_http, owner, key_id, {"limits": {"rpm": 5}, "budget": {"credits": 1}})
    body = patch_key(operator_http, owner, key_id, {"limits": None, "budget": None})
    assert body["limits"] == {"rpm": None, "tpm": None, "max_concurrent": None}
    assert body["budget"] == {"credits": None, "period": "month"}
    # not a limit: a credit unit set to null is still refused, naming it
    bad = operator_http.patch(f"/v1/workspaces/{owner[0].id}", json={"credit_unit": None})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "credit_unit"


# --- usage ----------------------------------------------------------------------------------


def test_usage_query_totals_and_groups(sdk, http, engram_server, owner, outsider, metered):
    ask(sdk, model=METERED, user="alice")  # 7 credits each (7 completion tokens)
    ask(sdk, model=METERED, user="alice")
    ask(sdk, model=METERED, user="bob")
    bad = http.post("/v1/chat/completions", json={"model": METERED, "messages": []})
    assert bad.status_code == 400  # an error, counted as one
    agent = http.post("/v1/agents", json={"name": "metered", "model": METERED}).json()["id"]
    ask(sdk, model="agent:metered", user="bob")
    buffer.flush()
    wait_for(lambda: UsageRecord.objects.filter(workspace=owner[0]).count() == 5)
    usage = http.get("/v1/usage").json()
    totals = usage["totals"]
    assert totals["requests"] == 5 and totals["errors"] == 1 and totals["credits"] == 28
    assert totals["completion_tokens"] == 28 and totals["latency_ms"]["p50"] > 0
    by_agent = http.get("/v1/usage", params={"group_by": "agent"}).json()["data"]
    assert [(g["group"], g["requests"], g["credits"]) for g in by_agent] == [
        (agent, 1, 7),
        ("", 4, 21),
    ]
    by_user = http.get("/v1/usage", params={"group_by": "user"}).json()["data"]
    assert [(g["group"], g["requests"], g["credits"]) for g in by_user] == [
        ("alice", 2, 14),
        ("bob", 2, 14),
        ("", 1, 0),  # no end user: last, in either order
    ]
    by_day = http.get("/v1/usage", params={"group_by": "day"}).json()["data"]
    assert len(by_day) == 1 and by_day[0]["requests"] == 5
    by_key = http.get("/v1/usage", params={"group_by": "key"}).json()["data"]
    assert [g["group"] for g in by_key] == [ApiKey.objects.get(workspace=owner[0]).id]
    later = http.get("/v1/usage", params={"start": "2999-01-01", "end": "2999-01-02"}).json()
    assert later["totals"]["requests"] == 0 and later["data"] == []
    with httpx_client(engram_server, outsider[1]) as other:
        assert other.get("/v1/usage").json()["totals"]["requests"] == 0  # its own workspace only
    for params, param in (
        ({"group_by": "planet"}, "group_by"),
        ({"start": "yesterday"}, "start"),
        ({"start": "2026-02-01", "end": "2026-01-01"}, "start"),
    ):
        resp = http.get("/v1/usage", params=params)
        assert resp.status_code == 400 and resp.json()["error"]["param"] == param


def test_usage_credits_across_a_change_of_unit_are_in_the_unit_now(
    sdk, http, operator_http, owner, metered
):
    """A report spanning a change of `credit_unit.per_usd` summed credits of two units: 7 at a
    million per USD and 3.5 at half a million (the same 7 tokens, $0.000007 each) made 10.5,
    worth nothing in either unit. Each record's credits are converted to the unit now."""
    ask(sdk, model=METERED, user="alice")  # 7 tokens: 7 credits at a million per USD
    patch_workspace(operator_http, owner, {"credit_unit": {"name": "gems", "per_usd": 500_000}})
    ask(sdk, model=METERED, user="alice")  # 7 tokens: 3.5 credits at half a million
    ask(sdk, model=METERED, user="bob")
    buffer.flush()
    wait_for(lambda: UsageRecord.objects.filter(workspace=owner[0]).count() == 3)
    usage = http.get("/v1/usage").json()
    assert usage["credit_unit"] == {"name": "gems", "per_usd": 500_000.0}
    assert usage["totals"]["credits"] == 10.5  # 3.5 + 3.5 + 3.5
    by_user = http.get("/v1/usage", params={"group_by": "user"}).json()["data"]
    assert [(g["group"], g["credits"]) for g in by_user] == [("alice", 7), ("bob", 3.5)]
    by_day = http.get("/v1/usage", params={"group_by": "day"}).json()["data"]
    assert [g["credits"] for g in by_day] == [10.5]
    patch_workspace(operator_http, owner, {"credit_unit": {"per_usd": 250_000}})
    assert http.get("/v1/usage").json()["totals"]["credits"] == 5.25  # 21 tokens, 1/4 each


def test_usage_narrowed_to_one_end_user_key_or_model(sdk, http, owner, key_id, metered):
    """One customer's usage (to bill an end user, say) was only to be found by paging every
    group of the range: the report takes `user_id`, `key_id` and `model` filters."""
    ask(sdk, model=METERED, user="alice")  # 7 credits each
    ask(sdk, model=METERED, user="alice")
    ask(sdk, model=METERED, user="bob")
    ask(sdk, user="bob")  # gpt-4o-mini: another model
    buffer.flush()
    wait_for(lambda: UsageRecord.objects.filter(workspace=owner[0]).count() == 4)
    alice = http.get("/v1/usage", params={"user_id": "alice"}).json()["totals"]
    assert (alice["requests"], alice["credits"]) == (2, 14)
    bob = http.get("/v1/usage", params={"user_id": "bob", "model": METERED}).json()["totals"]
    assert (bob["requests"], bob["credits"]) == (1, 7)
    by_day = http.get("/v1/usage", params={"user_id": "alice", "group_by": "day"}).json()
    assert [g["requests"] for g in by_day["data"]] == [2]
    assert http.get("/v1/usage", params={"key_id": key_id}).json()["totals"]["requests"] == 4
    other = http.get("/v1/usage", params={"key_id": "key_other"}).json()["totals"]
    assert other["requests"] == 0
    for params, param in (
        ({"user_id": ""}, "user_id"),
        ({"key_id": "a b"}, "key_id"),
        ({"after": "alice"}, "after"),  # a cursor without groups: no page to go to
    ):
        resp = http.get("/v1/usage", params=params)
        assert resp.status_code == 400 and resp.json()["error"]["param"] == param


def test_usage_groups_are_paged_by_cursor_and_the_totals_stay_whole(sdk, http, owner, metered):
    """Every group came in one answer: a workspace with 500,000 end users got 500,000 rows
    from one query. Now `limit` / `after` / `before` / `order` page them as every list does,
    the group its own cursor, the requests without an end user last; the totals are the
    range's, whatever the group, on the first page (null past a cursor)."""
    for user in ("carol", "alice", "dave", "bob"):
        ask(sdk, model=METERED, user=user)
    ask(sdk, model=METERED)  # no end user
    buffer.flush()
    wait_for(lambda: UsageRecord.objects.filter(workspace=owner[0]).count() == 5)

    def page(**params):
        resp = http.get("/v1/usage", params={"group_by": "user", **params})
        assert resp.status_code == 200, resp.text
        body = resp.json()
        paged = params.get("after") or params.get("before")
        assert body["totals"] is None if paged else body["totals"]["requests"] == 5
        return [g["group"] for g in body["data"]], body

    seen, after = [], None
    while True:
        groups, body = page(limit=2, **({"after": after} if after else {}))
        assert (body["first_id"], body["last_id"]) == (groups[0], groups[-1])
        seen += groups
        if not body["has_more"]:
            break
        after = body["last_id"]
    assert seen == ["alice", "bob", "carol", "dave", ""]
    assert page(limit=1)[0] == ["alice"]  # limit=1: one row, however many users
    assert page(order="desc", limit=2)[0] == ["dave", "carol"]
    assert page(order="desc", after="carol")[0] == ["bob", "alice", ""]
    groups, body = page(before="carol", limit=1)
    assert groups == ["bob"] and body["has_more"]  # alice precedes it
    assert page(after="alice", before="dave")[0] == ["bob", "carol"]
    days, body = page(group_by="day")
    assert len(days) == 1 and not body["has_more"]
    assert page(group_by="day", after=days[0])[0] == []
    whole = http.get("/v1/usage").json()  # no group_by: the totals, as before
    assert whole["data"] == [] and whole["totals"]["requests"] == 5 and not whole["has_more"]
    for params, param in (
        ({"limit": "0"}, "limit"),
        ({"limit": "101"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"order": "sideways"}, "order"),
        ({"after": "a b"}, "after"),
        ({"group_by": "day", "after": "yesterday"}, "after"),
        ({"group_by": "day", "before": "2026-13-01"}, "before"),
    ):
        resp = http.get("/v1/usage", params={"group_by": "user", **params})
        error = resp.json()["error"]
        assert resp.status_code == 400 and error["param"] == param, resp.text
        assert set(error) == {"message", "type", "param", "code"}


def _usage_rows(workspace) -> dict[str, list]:
    """Usage records of 7 end users and none, over 6 days with gaps wider than a page (2 days
    apart, then 35 and 159): each group's, and each day's, `created_at`s."""
    from datetime import UTC, datetime, timedelta

    first = datetime(2026, 3, 1, 12, tzinfo=UTC)
    days = [first + timedelta(days=d) for d in (0, 1, 5, 40, 41, 200)]
    rows: list[UsageRecord] = []
    groups: dict[str, list] = {}
    for n in range(40):
        user = "" if n % 6 == 0 else f"u{n % 7:02d}"
        at = days[n % len(days)] + timedelta(minutes=n)
        rows.append(
            UsageRecord(
                workspace=workspace,
                user_id=user,
                request_id=f"r{n}",
                status_code=200,
                latency_ms=n,
                credits=1.0,
                created_at=at,
            )
        )
        groups.setdefault(user, []).append(at)
        groups.setdefault(at.date().isoformat(), []).append(at)
    UsageRecord.objects.bulk_create(rows)
    return groups


def _rows_read(sql: str) -> float:
    """The rows the plan's scans hand on to be grouped, run (EXPLAIN ANALYZE) with the plans
    a table of millions of rows rules out discouraged (a few rows' plans are anyone's guess):
    a plan that has to sort every row of the range still sorts them."""
    import json

    from django.db import connection, transaction

    def leaves(plan):
        below = plan.get("Plans") or []
        return [plan] if not below else [leaf for p in below for leaf in leaves(p)]

    with transaction.atomic(), connection.cursor() as cursor:
        for kind in ("seqscan", "bitmapscan", "sort", "hashagg"):  # what a big table avoids
            cursor.execute(f"SET LOCAL enable_{kind} = off")
        cursor.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + sql)
        (plan,) = cursor.fetchone()
    plan = json.loads(plan) if isinstance(plan, str) else plan
    return sum(leaf["Actual Rows"] * leaf["Actual Loops"] for leaf in leaves(plan[0]["Plan"]))


@pytest.mark.parametrize("group_by", ["user", "day"])
def test_a_usage_page_reads_its_own_groups_only_and_pages_stay_whole(owner, outsider, group_by):
    """Each page aggregated the whole range: grouped by NULLIF(user_id, '') (to put "" last)
    and by day over the rest of the range, every group was read and sorted before the page's
    LIMIT. A page's query now holds the keyset and the LIMIT and reads no rows beyond the
    page's groups (users by the index (workspace, user_id, created_at), days by created_at
    windows); paged by 2 in either order, forwards and backwards, the pages are the whole."""
    from datetime import UTC, datetime

    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from completions.selectors import usage_summary
    from completions.usage_api import _group as group_name
    from config.common.pagination import Cursor

    groups = _usage_rows(owner[0])
    _usage_rows(outsider[0])  # another workspace's: in no page of this one
    start, end = datetime(2026, 1, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC)
    if group_by == "user":
        expected = sorted(g for g in groups if g.startswith("u"))
    else:
        expected = sorted(g for g in groups if g[:1].isdigit())

    def summary(*, order: str, after: str | None = None, before: str | None = None):
        cursor = Cursor(limit=2, order=order, after=after, before=before)
        page, more, totals = usage_summary(
            workspace=owner[0], start=start, end=end, group_by=group_by, cursor=cursor
        )
        assert totals is None if (after or before) else totals["requests"] == 40
        names = [group_name(row["group"]) for row in page]
        for name, row in zip(names, page, strict=True):  # each group's figures: its rows'
            assert row["requests"] == len(groups[name]), row
        return names, more

    for order, whole in (("asc", expected), ("desc", expected[::-1])):
        if group_by == "user":
            whole = [*whole, ""]  # no end user: last in either order
        seen: list[str] = []
        after, more = None, True
        while more:
            page, more = summary(order=order, after=after)
            assert len(page) == 2 or not more  # a page is full while more follow
            seen, after = seen + page, page[-1]
        assert seen == whole
        keyed = [g for g in whole if g]
        seen, before, more = [], keyed[-1], True
        while more:  # backwards from the last group that can be a cursor
            page, more = summary(order=order, before=before)
            seen, before = page + seen, page[0]
        assert seen == keyed[:-1]

    # One page past a cursor: the SQL has the keyset and the LIMIT, and its scans hand on
    # no more rows than the page's 2 groups and the one read to know that more follow hold
    # (plus the first row past them).
    after = expected[1]
    with CaptureQueriesContext(connection) as captured:
        page, _ = summary(order="asc", after=after)
    grouped = [q["sql"] for q in captured.captured_queries if "GROUP BY" in q["sql"]]
    assert grouped and all("LIMIT" in sql for sql in grouped)
    if group_by == "user":
        assert all(f"\"user_id\" > '{after}'" in sql for sql in grouped)
    assert page == expected[2:4]
    page_rows = sum(len(groups[g]) for g in expected[2:5])
    assert sum(_rows_read(sql) for sql in grouped) <= page_rows + 1


@pytest.mark.parametrize("group_by", ["user", "day"])
def test_a_usage_page_past_a_cursor_does_not_aggregate_the_whole_range(http, owner, group_by):
    """Every page read the totals, one pass over the whole range with its percentiles (2.9 s
    on 1,000,000 records, most of a page's cost). The first page (no cursor) has them; a page
    past `after` or `before` answers `totals: null`, and none of its statements aggregates
    the range: each is bounded by the page's keyset or LIMIT."""
    from datetime import UTC, datetime

    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from completions.selectors import usage_summary
    from config.common.pagination import Cursor

    _usage_rows(owner[0])
    window = {"start": "2026-01-01", "end": "2027-01-01", "group_by": group_by, "limit": 2}
    first = http.get("/v1/usage", params=window).json()
    assert first["totals"]["requests"] == 40 and first["has_more"]
    start, end = datetime(2026, 1, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC)
    for cursor in ({"after": first["last_id"]}, {"before": first["last_id"]}):
        resp = http.get("/v1/usage", params={**window, **cursor})
        assert resp.status_code == 200, resp.text
        assert resp.json()["totals"] is None and resp.json()["data"] is not None
        with CaptureQueriesContext(connection) as captured:
            page, _, totals = usage_summary(
                workspace=owner[0],
                start=start,
                end=end,
                group_by=group_by,
                cursor=Cursor(
                    **{"limit": 2, "order": "asc", "after": None, "before": None, **cursor}
                ),
            )
        assert totals is None
        statements = [q["sql"] for q in captured.captured_queries]
        assert statements  # the page itself was read
        # The totals' statement: the figures with no GROUP BY, no LIMIT, no group's filter.
        whole = [
            sql
            for sql in statements
            if "PERCENTILE_CONT" in sql and "GROUP BY" not in sql and "user_id" not in sql
        ]
        assert whole == [], whole
    whole = http.get("/v1/usage", params={"start": "2026-01-01", "end": "2027-01-01"}).json()
    assert whole["totals"]["requests"] == 40  # no group_by: the totals are the answer


@pytest.mark.parametrize(
    "end, param",
    [
        ("0001-01-01", "start"),
        ("-62135596800", "start"),
        ("0001-01-01T00:00:00+01:00", "end"),  # itself before the earliest time in UTC
    ],
)
def test_usage_query_ending_in_the_first_days_of_year_one_is_a_400_not_a_500(http, end, param):
    """The default start, 30 days before `end`, is before year 1: it overflowed (a 500)."""
    resp = http.get("/v1/usage", params={"end": end})
    assert resp.status_code == 400 and resp.json()["error"]["param"] == param
    resp = http.get("/v1/usage", params={"end": "0001-01-02"})  # a day after the earliest
    assert resp.status_code == 200 and resp.json()["start"] == -62135596800


def test_a_usage_record_the_database_refuses_is_dropped_alone(owner):
    """One record the database refuses as data (not a constraint) failed every flush after
    it: no workspace's usage was written again, and budgets lost their seeds' truth."""
    from completions.usage import Usage

    workspace_id = owner[0].id
    buffer.add(Usage(workspace_id, "req-before", 200, 1.0))
    buffer.add(Usage(workspace_id, "req-refused", 200, 1.0, model="nul\x00"))
    buffer.add(Usage(workspace_id, "req-after", 200, 1.0))
    buffer.flush()
    written = UsageRecord.objects.values_list("request_id", flat=True)
    assert sorted(written) == ["req-after", "req-before"]


def httpx_client(engram_server, key):
    import httpx

    return httpx.Client(base_url=engram_server.url, headers={"Authorization": f"Bearer {key}"})


def test_metrics_for_the_operator(sdk, http, operator_http, owner, key_id, metered):
    patch_key(operator_http, owner, key_id, {"limits": {"rpm": 1}})
    ask(sdk, model=METERED)
    with pytest.raises(openai.RateLimitError):
        ask(sdk, model=METERED)
    assert http.get("/metrics").status_code == 403  # a workspace key
    scraped = operator_http.get("/metrics")
    assert scraped.status_code == 200 and scraped.headers["content-type"].startswith("text/plain")
    text = scraped.text
    for line in (
        'engram_requests_total{status="200"}',
        'engram_requests_total{status="429"}',
        'engram_limits_hit_total{code="rate_limit_exceeded"}',
        'engram_tokens_total{kind="completion"}',
        "engram_credits_total",
        "engram_request_seconds_bucket",
        "engram_upstream_seconds_bucket",
        "engram_overhead_seconds_bucket",
        'engram_queue_depth{queue="memory"}',
        "engram_extraction_lag_seconds",
    ):
        assert line in text, line


def test_an_end_user_token_is_limited_as_its_subject(engram_server, http, operator_http, owner):
    """The token's subject is the end user the limits count (no x-user-id needed), and a
    change of the workspace's limits reaches tokens already verified."""
    from tests.identity import AUD, ISS, hs256

    secret = "a-limits-test-secret-of-at-least-32-characters"
    issuer = {"issuer": ISS, "audiences": [AUD], "hs256_secret": secret}
    assert http.post("/v1/auth/issuers", json=issuer).status_code == 201

    def as_user(sub: str) -> openai.OpenAI:
        token = hs256(secret, sub=sub)
        return openai.OpenAI(
            base_url=engram_server.url + "/v1", api_key=token, max_retries=0, timeout=20
        )

    dana, eli = as_user("dana"), as_user("eli")
    ask(dana)  # verified and cached before the limit exists
    patch_workspace(operator_http, owner, {"end_user_limits": {"rpm": 1}})
    ask(dana)
    with pytest.raises(openai.RateLimitError) as info:
        ask(dana)
    assert "end user 'dana'" in info.value.message
    ask(eli)  # another subject of the same issuer has its own count


def test_an_answer_of_several_choices_without_usage_is_charged_every_choice(sdk, metered, upstream):
    """An upstream that reports no usage (llama.cpp's older servers, proxies) is charged the
    words of its answer: every choice's, as a stream's are. Choice 0's alone were, so an `n`
    of 2 cost half of what it answered."""
    one = openai_completion("alpha beta gamma delta", model=METERED)
    del one["usage"]
    upstream.script(Reply(json=one))
    single = ask(sdk, model=METERED).parse().model_extra["engram"]["credits_charged"]
    assert single > 0
    two = openai_completion("alpha beta gamma delta", model=METERED, n=2)
    del two["usage"]
    upstream.script(Reply(json=two))
    double = ask(sdk, model=METERED, n=2).parse().model_extra["engram"]["credits_charged"]
    assert double == 2 * single
