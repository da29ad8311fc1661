"""config.common.inline_redis against the real (embedded) Redis: replies of every kind, error
replies that leave the connection usable, a Redis that is gone, and replies cut in pieces."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis
from django.conf import settings

from config.common import inline_redis


@pytest.fixture
def pool():
    pool = inline_redis.Pool(settings.REDIS_URL)
    yield pool
    pool.close()


def test_replies_of_every_kind(pool):
    async def calls():
        await pool.call("SET", "inline:test:s", "value", timeout=1)
        return [
            await pool.call("GET", "inline:test:s", timeout=1),
            await pool.call("GET", "inline:test:missing", timeout=1),
            await pool.call("INCRBY", "inline:test:n", "5", timeout=1),
            await pool.call("MGET", "inline:test:s", "inline:test:missing", timeout=1),
            await pool.call("EVAL", "return {1, 'two', {3}}", "0", timeout=1),
            await pool.call("PING", timeout=1),
        ]

    got = asyncio.run(calls())
    assert got[0] == b"value"
    assert got[1] is None
    assert isinstance(got[2], int) and got[2] >= 5
    assert got[3] == [b"value", None]
    assert got[4] == [1, b"two", [3]]
    assert got[5] == b"PONG"
    assert pool.call_sync("GET", "inline:test:s", timeout=1) == b"value"


def test_a_command_encoded_in_parts_is_the_same_command(pool):
    """The limits encode the parts of their commands that repeat once (`bulk`), then join them
    with the request's own (`encoded`): Redis must read exactly what the plain form sends."""
    key = inline_redis.bulk("inline:test:parts")

    async def calls():
        await pool.call_many(
            [
                inline_redis.encoded(
                    4,
                    inline_redis.bulk("SET"),
                    key,
                    inline_redis.bulk(-42),
                    inline_redis.bulk("KEEPTTL"),
                )
            ],
            timeout=1,
        )
        (echo,) = await pool.call_many(
            [inline_redis.encoded(2, inline_redis.bulk("ECHO"), inline_redis.bulk("é\r\n"))],
            timeout=1,
        )
        return echo, await pool.call("GET", "inline:test:parts", timeout=1)

    assert asyncio.run(calls()) == ("é\r\n".encode(), b"-42")


def test_an_error_reply_is_raised_and_the_connection_kept(pool):
    async def calls():
        with pytest.raises(redis.ResponseError, match="NOSCRIPT"):
            await pool.call("EVALSHA", "0" * 40, "0", timeout=1)
        return await pool.call("PING", timeout=1)

    assert asyncio.run(calls()) == b"PONG"
    assert pool.open == 1 and len(pool.idle) == 1


def test_waits_longer_than_the_in_line_one_and_writes_larger_than_the_socket_buffer(pool):
    """A reply that comes after INLINE_WAIT (the kernel's receive timeout ends, the clock says
    wait on) is still read, a silent one fails at the call's deadline, and a command larger
    than the socket's buffer goes out whole while Redis drains it."""
    large = "x" * (8 * 2**20)

    async def calls():
        started = time.monotonic()
        late = await pool.call("BLPOP", "inline:test:never", "0.05", timeout=1)
        waited = time.monotonic() - started
        with pytest.raises(TimeoutError):
            await pool.call("BLPOP", "inline:test:never", "5", timeout=0.2)
        stored = await pool.call("SET", "inline:test:large", large, timeout=5)
        length = await pool.call("STRLEN", "inline:test:large", timeout=1)
        await pool.call("DEL", "inline:test:large", timeout=1)
        return late, waited, stored, length

    late, waited, stored, length = asyncio.run(calls())
    assert late is None and waited >= 0.05
    assert stored == b"OK" and length == len(large)


def test_a_redis_that_is_gone_fails_fast_and_frees_its_slot():
    pool = inline_redis.Pool("redis://127.0.0.1:1/0")  # nothing listens on port 1

    async def call():
        return await pool.call("PING", timeout=0.5)

    for _ in range(inline_redis.MAX_CONNECTIONS + 2):  # no slot is lost to a failed connect
        with pytest.raises(OSError):
            asyncio.run(call())
    assert pool.open == 0


@pytest.mark.parametrize("cut", [1, 3, 7, 12])
def test_a_reply_cut_anywhere_is_incomplete_until_whole(cut):
    whole = b"*3\r\n:1\r\n$3\r\ntwo\r\n*1\r\n$-1\r\n"
    with pytest.raises(inline_redis._Incomplete):
        inline_redis._parse(bytearray(whole[:cut]), 0)
    assert inline_redis._parse(bytearray(whole), 0) == ([1, b"two", [None]], len(whole))


def test_calls_of_one_loop_turn_share_one_write(pool, monkeypatch):
    """send_in_turn: the commands queued in one turn go out as one batch, each callback gets
    its own reply (an error reply to its own callback only); a later turn is a batch of its
    own."""
    batches = []
    real_call_many = pool.call_many

    async def counted(commands, **kwargs):
        batches.append(len(commands))
        return await real_call_many(commands, **kwargs)

    monkeypatch.setattr(pool, "call_many", counted)

    async def replies_of(commands: list[tuple[str, ...]]) -> list:
        got: dict[int, object] = {}
        for n, args in enumerate(commands):
            pool.send_in_turn(args, timeout=1, then=lambda reply, n=n: got.__setitem__(n, reply))
        while len(got) < len(commands):
            await asyncio.sleep(0.005)
        return [got[n] for n in range(len(commands))]

    async def calls():
        results = await replies_of(
            [*(("INCRBY", "inline:test:turn", "1") for _ in range(9)), ("EVALSHA", "0" * 40, "0")]
        )
        (later,) = await replies_of([("PING",)])
        return results, later

    results, later = asyncio.run(calls())
    counts = results[:9]
    assert sorted(counts) == list(range(counts[0], counts[0] + 9))  # nine distinct increments
    assert isinstance(results[9], redis.ResponseError) and "NOSCRIPT" in str(results[9])
    assert later == b"PONG"
    assert batches == [10, 1]


def test_a_refused_handshake_closes_its_socket_and_frees_its_slot(pool):
    """AUTH refused (this Redis has no password): the caller gets the error, the socket is
    closed and the pool's slot is free again."""
    pool.options["password"] = "not-the-password"
    opened: list[inline_redis._Connection] = []
    real_init = inline_redis._Connection.__init__

    def recorded(self, options, timeout):
        opened.append(self)
        real_init(self, options, timeout)

    inline_redis._Connection.__init__ = recorded  # type: ignore[method-assign]
    try:
        with pytest.raises(redis.ResponseError):
            pool.call_sync("PING", timeout=1)
    finally:
        inline_redis._Connection.__init__ = real_init  # type: ignore[method-assign]
    assert pool.open == 0
    assert opened and opened[0].sock.fileno() == -1  # closed


def test_send_in_turn_hands_each_reply_to_its_callback(pool):
    """send_in_turn: no future, no task per command — the turn's commands go out together and
    each callback gets its own reply (an error reply as a value), or what failed the batch."""
    got: list = []

    async def sends():
        for n in range(3):
            pool.send_in_turn(("ECHO", f"m{n}"), timeout=1, then=got.append)
        pool.send_in_turn(("EVALSHA", "0" * 40, "0"), timeout=1, then=got.append)
        for _ in range(100):
            await asyncio.sleep(0.01)
            if len(got) == 4:
                return

    asyncio.run(sends())
    assert got[:3] == [b"m0", b"m1", b"m2"]
    assert isinstance(got[3], redis.ResponseError) and "NOSCRIPT" in str(got[3])

    gone = inline_redis.Pool("redis://127.0.0.1:1/0")
    failed: list = []

    async def lost():
        gone.send_in_turn(("PING",), timeout=0.5, then=failed.append)
        for _ in range(100):
            await asyncio.sleep(0.01)
            if failed:
                return

    asyncio.run(lost())
    assert len(failed) == 1 and isinstance(failed[0], inline_redis.FAILURES)


def test_a_batch_of_a_loop_closed_before_it_ran_does_not_linger(pool):
    """A loop that closes with its turn's batch still queued (tests start many loops) takes
    the batch with it: the pool keeps no reference to a dead loop."""
    import gc

    loop = asyncio.new_event_loop()

    def queue_one_then_stop() -> None:
        pool.send_in_turn(("PING",), timeout=1, then=lambda reply: None)
        asyncio.get_running_loop().stop()  # ends with this turn: the batch never goes out

    loop.call_soon(queue_one_then_stop)
    loop.run_forever()
    assert len(pool.batches) == 1
    loop.close()
    del loop
    gc.collect()
    assert len(pool.batches) == 0


def test_a_batch_is_read_by_the_loop_and_a_silent_redis_times_out(pool, monkeypatch):
    """The turn's batch (replies nobody waits for) is read by the loop's reader, neither in line
    (the loop held while Redis runs the batch) nor on a thread; a reply that never comes fails
    its callback at the deadline and closes the connection."""
    threaded: list = []
    real_slow = inline_redis._slow

    class Recording:
        def submit(self, fn, *args):
            threaded.append(fn)
            return real_slow.submit(fn, *args)

    got: list = []
    ticks = 0

    async def run() -> None:
        nonlocal ticks
        await pool.call("PING", timeout=1)  # a connection open and idle before the batch
        monkeypatch.setattr(inline_redis, "_slow", Recording())
        pool.send_in_turn(("BLPOP", "inline:test:never", "5"), timeout=0.3, then=got.append)
        pool.send_in_turn(("ECHO", "after"), timeout=0.3, then=got.append)
        while len(got) < 2:
            await asyncio.sleep(0.01)
            ticks += 1

    asyncio.run(run())
    assert all(isinstance(reply, TimeoutError) for reply in got)  # one batch, one deadline
    assert threaded == []
    assert ticks >= 10  # ~30 turns in 0.3 s: the loop ran on meanwhile
    assert pool.open == 0 and not pool.idle  # the connection whose reply never came is gone
