"""accounts.limits.limiter against the real (embedded) Redis, below HTTP: a settle is sent with
its loop turn's batch and nothing waits for it, it still lands when Redis has lost the script
(a restart), a budget's period key gets its time to live once, when it is seeded, and a
concurrency lease is renewed while its request lives and ends when its process is gone."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
import redis
from django.conf import settings

from accounts.limits import leases, limiter
from accounts.limits.policy import Policy, Rule
from config.common.errors import ApiError

RULE = Rule(rpm=1000, tpm=100_000, max_concurrent=5, budget_micro=10_000_000, period="day")


async def spent_nothing(subject: limiter.Subject, since_ms: int | None) -> int:
    """The database's figure for subjects no usage record names (these tests' own)."""
    return 0


def reserve(found, request_id: str, *, credits_micro: int, tokens: int = 10, spent_since=None):
    """One reserve, run to its end (spent_nothing unless told)."""
    return asyncio.run(
        limiter.reserve(
            request_id=request_id,
            found=found,
            tokens=tokens,
            credits_micro=credits_micro,
            spent_since=spent_since or spent_nothing,
        )
    )


@pytest.fixture
def store():
    limiter.reset()
    client = redis.Redis.from_url(settings.REDIS_URL)
    yield client
    client.close()
    limiter.reset()


def _subjects():
    workspace = f"ws_{uuid.uuid4().hex[:12]}"
    policy = Policy(workspace=RULE)
    return limiter.subjects(workspace_id=workspace, key_id=None, user_id=None, policy=policy)


async def _reserve_then_settle(found, request_id: str, *, flush_scripts, store) -> None:
    admission = await limiter.reserve(
        request_id=request_id,
        found=found,
        tokens=100,
        credits_micro=3_000_000,
        spent_since=spent_nothing,
    )
    assert admission.counted
    if flush_scripts:
        store.script_flush()  # as after a Redis restart: EVALSHA answers NOSCRIPT
    limiter.settle(admission, tokens=40, credits_micro=1_000_000)  # returns at once
    for _ in range(50):  # the batch goes out on the next loop turn
        await asyncio.sleep(0.01)
        if not store.zcard(found[0].prefix + "conc"):
            return


@pytest.mark.parametrize("flush_scripts", [False, True])
def test_a_settle_lands_without_anyone_waiting_even_after_the_scripts_are_lost(
    store, flush_scripts
):
    found = _subjects()
    asyncio.run(_reserve_then_settle(found, "req-1", flush_scripts=flush_scripts, store=store))
    subject = found[0]
    assert store.zcard(subject.prefix + "conc") == 0  # the lease is freed
    budget_key, _ = limiter.period_key(subject.prefix, "day", _now())
    assert int(store.get(budget_key)) == 1_000_000  # 3 reserved, 1 spent: 2 given back


def test_a_budget_key_gets_its_time_to_live_when_made_and_keeps_it(store):
    found = _subjects()
    subject = found[0]
    budget_key, ttl = limiter.period_key(subject.prefix, "day", _now())

    reserve(found, "first", credits_micro=5)
    first = store.pttl(budget_key)
    assert 0 < first <= ttl + 1000  # the rest of the day, and a day
    store.pexpire(budget_key, 3_600_000)  # an hour left: a later reserve does not reset it
    reserve(found, "second", credits_micro=5)
    assert 0 < store.pttl(budget_key) <= 3_600_000
    assert int(store.get(budget_key)) == 10


def _now():
    from datetime import UTC, datetime

    return datetime.now(UTC)


def test_a_reserve_on_the_next_day_counts_against_that_day_s_budget(store, monkeypatch):
    """A subject's keys are encoded once a day (limiter._wire): the day comes from the
    request's own clock, so the first request after midnight (UTC) opens the new day's budget."""
    from datetime import timedelta

    found = _subjects()
    prefix = found[0].prefix
    today = _now()
    tomorrow = today + timedelta(days=1)

    reserve(found, "today", credits_micro=7)
    monkeypatch.setattr(limiter, "_now_ms", lambda: int(tomorrow.timestamp() * 1000))
    reserve(found, "tomorrow", credits_micro=7)
    reserve(found, "tomorrow-again", credits_micro=7)
    assert int(store.get(limiter.period_key(prefix, "day", today)[0])) == 7
    next_key, ttl = limiter.period_key(prefix, "day", tomorrow)
    assert int(store.get(next_key)) == 14
    assert 0 < store.pttl(next_key) <= ttl  # tomorrow's rest and a day, from tomorrow's clock


def test_a_lease_never_settled_frees_its_slot_when_it_ends(store, settings):
    """A request whose process died holds its concurrency slot until its lease ends; the next
    request that would be refused for it prunes the ended lease and is admitted."""
    settings.ENGRAM_LIMITS_LEASE_SECONDS = 0.2
    workspace = f"ws_{uuid.uuid4().hex[:12]}"
    policy = Policy(workspace=Rule(max_concurrent=1))
    found = limiter.subjects(workspace_id=workspace, key_id=None, user_id=None, policy=policy)

    died = reserve(found, "died", credits_micro=0, tokens=1)  # never settled
    leases.release(died)  # and never renewed: its process is gone
    with pytest.raises(ApiError) as refused:
        reserve(found, "too-soon", credits_micro=0, tokens=1)
    assert refused.value.status == 429 and "concurrent" in str(refused.value)
    time.sleep(0.25)
    after = reserve(found, "after", credits_micro=0, tokens=1)
    assert after.counted and after.lease.startswith("after:")
    assert store.zrange(found[0].prefix + "conc", 0, -1) == [after.lease.encode()]


def test_rates_and_leases_stay_out_of_the_append_only_file_budgets_go_in(store):
    """A restart replays the append-only file: budgets (money) are in it, the rate limits'
    arrival times and the concurrency leases (a minute's state, and requests a restart forgets
    anyway) are not — each write kept out spares Redis its share of an AOF write."""
    from pathlib import Path

    if store.config_get("appendonly")["appendonly"] != "yes":
        pytest.skip("this Redis keeps no append-only file")
    workspace = f"ws_{uuid.uuid4().hex[:12]}"
    rule = Rule(rpm=100, tpm=10_000, max_concurrent=3, budget_micro=10**9, period="day")
    found = limiter.subjects(
        workspace_id=workspace, key_id=None, user_id=None, policy=Policy(workspace=rule)
    )
    prefix = found[0].prefix
    asyncio.run(_reserve_then_settle(found, "req-aof", flush_scripts=False, store=store))
    assert store.exists(prefix + "rpm") and store.exists(prefix + "tpm")  # in Redis, counted
    folder = Path(store.config_get("dir")["dir"])
    written = b"".join(path.read_bytes() for path in folder.rglob("*.aof*") if path.is_file())
    budget_key, _ = limiter.period_key(prefix, "day", _now())
    assert budget_key.encode() in written
    for kind in ("rpm", "tpm", "conc"):
        assert (prefix + kind).encode() not in written


def test_a_budget_without_its_key_starts_from_the_period_s_spending(store):
    """The first requests of a period (or after Redis lost the key) seed it with what the
    database says the subject spent since the period began: set once (NX) however many ask,
    with the period's time to live, and each request counted on top."""
    found = _subjects()
    budget_key, ttl = limiter.period_key(found[0].prefix, "day", _now())
    asked: list[int | None] = []

    async def spent_four(subject: limiter.Subject, since_ms: int | None) -> int:
        asked.append(since_ms)
        await asyncio.sleep(0.01)  # the database's time: both requests ask before either sets
        return 4_000_000

    async def two_at_once() -> None:
        await asyncio.gather(
            *(
                limiter.reserve(
                    request_id=f"req-{n}",
                    found=found,
                    tokens=10,
                    credits_micro=1_000_000,
                    spent_since=spent_four,
                )
                for n in range(2)
            )
        )

    asyncio.run(two_at_once())
    midnight = _now().replace(hour=0, minute=0, second=0, microsecond=0)
    assert asked == [int(midnight.timestamp() * 1000)] * 2
    assert int(store.get(budget_key)) == 4_000_000 + 2 * 1_000_000
    assert 0 < store.pttl(budget_key) <= ttl + 1000

    # 6 of 10 spent: a request of 5 more is over the budget.
    with pytest.raises(ApiError) as refused:
        reserve(found, "over", credits_micro=5_000_000, spent_since=spent_four)
    assert refused.value.code == "insufficient_quota"
    assert len(asked) == 2  # the key is there now: no more questions to the database


def test_a_held_lease_is_renewed_and_one_settled_meanwhile_is_not_taken_again(store, settings):
    """A process renews the leases of its requests in flight (accounts.limits.leases), all in
    one script call: each moves to a lease from now. A lease its settle removed while the
    renewal was on its way stays removed (ZADD XX), and a request that is gone without its
    settle (its admission collected) is renewed no more."""
    import gc

    settings.ENGRAM_LIMITS_LEASE_SECONDS = 60
    found = _subjects()
    key = found[0].prefix + "conc"
    live = reserve(found, "live", credits_micro=0)
    settled = reserve(found, "settled", credits_micro=0)
    gone = reserve(found, "gone", credits_micro=0).lease  # its admission dropped: collected
    gc.collect()
    soon = int(time.time() * 1000) + 1000
    # their leases about to end
    store.zadd(key, {live.lease: soon, settled.lease: soon, gone: soon})
    store.zrem(key, settled.lease)  # its settle, landing before the renewal

    leases.renew()

    renewed = {k.decode(): v for k, v in store.zrange(key, 0, -1, withscores=True)}
    assert set(renewed) == {live.lease, gone}  # the settled one not put back
    assert renewed[live.lease] > soon + 50_000  # a lease (60 s) from now
    assert renewed[gone] == soon  # nobody renews it: it ends with its lease
    assert store.pttl(key) > 50_000  # the key outlives the renewed lease
    assert settled.counted and live.counted
    leases.release(live)  # as its settle does
    store.zadd(key, {live.lease: soon})
    leases.renew()
    assert store.zscore(key, live.lease) == soon


def test_an_extension_and_a_settle_across_a_loss_count_on_the_new_budget_key(store):
    """A run reserved 3 credits; Redis lost its data (FLUSHALL); another request seeded the
    budget from the records (1 spent) and reserved 0.5; the run reserved its next call (2) on
    the new key and ended having spent 4 in all. Its settle took the 5 reserved minus the 4
    spent off a key that held only 2 of it: 2.5 where the truth is 1 + 0.5 + 4 = 5.5."""
    found = _subjects()
    budget_key, _ = limiter.period_key(found[0].prefix, "day", _now())

    async def spent_one(subject: limiter.Subject, since_ms: int | None) -> int:
        return 1_000_000

    async def across_a_loss() -> None:
        run = await limiter.reserve(
            request_id="run",
            found=found,
            tokens=10,
            credits_micro=3_000_000,
            spent_since=spent_nothing,
        )
        store.flushdb()  # this worker's database: FLUSHALL empties the other workers' too
        await limiter.reserve(
            request_id="other",
            found=found,
            tokens=10,
            credits_micro=500_000,
            spent_since=spent_one,
        )
        await limiter.extend(run, credits_micro=2_000_000, spent_since=spent_nothing)
        assert int(store.get(budget_key)) == 3_500_000
        limiter.settle(run, tokens=10, credits_micro=4_000_000)
        for _ in range(50):  # the settle goes out on the next loop turn
            await asyncio.sleep(0.01)
            if not store.zcard(found[0].prefix + "conc"):
                return

    asyncio.run(across_a_loss())
    assert store.zcard(found[0].prefix + "conc") == 1  # the other request's lease
    assert int(store.get(budget_key)) == 5_500_000


@pytest.mark.parametrize("spent", [9_000_000, 1_000_000])
def test_an_extension_on_a_budget_key_redis_lost_seeds_it_as_a_reserve_does(store, spent):
    """Redis lost its data (FLUSHALL) while an agent's run was in flight: its next model
    call's extension found no budget key and went on unchecked and uncounted, where a plain
    call at that moment was seeded from the usage records (9 of 10 credits spent) and refused.
    It now seeds the key as the reserve does: refused over the budget, counted within it."""
    found = _subjects()
    budget_key, _ = limiter.period_key(found[0].prefix, "day", _now())

    async def spent_so_far(subject: limiter.Subject, since_ms: int | None) -> int:
        return spent

    async def across_a_loss() -> None:
        run = await limiter.reserve(
            request_id="run",
            found=found,
            tokens=10,
            credits_micro=500_000,
            spent_since=spent_nothing,
        )
        store.flushdb()  # this worker's database: FLUSHALL empties the other workers' too
        if spent > 8_000_000:
            with pytest.raises(ApiError) as refused:
                await limiter.extend(run, credits_micro=2_000_000, spent_since=spent_so_far)
            assert (refused.value.status, refused.value.code) == (429, "insufficient_quota")
            assert int(store.get(budget_key)) == spent  # seeded, nothing counted
        else:
            await limiter.extend(run, credits_micro=2_000_000, spent_since=spent_so_far)
            assert int(store.get(budget_key)) == spent + 2_000_000
            assert run.counted_micro == [2_000_000]  # the new key holds this call's alone

    asyncio.run(across_a_loss())
