"""config.common.inline_redis against the real (embedded) Redis: replies of every kind, error
replies that leave the connection usable, a Redis that is gone, and replies cut in pieces."""

from __future__ import annotations

import asyncio
import select
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


async def _until(condition, seconds: float = 2.0) -> None:
    for _ in range(int(seconds / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)


def test_posts_of_one_loop_turn_share_one_write_and_redis_answers_none(pool, monkeypatch):
    """post_in_turn: the commands queued in one turn go out as one write (the first batch on
    a thread, which opens the posting connection; later ones in line), every one lands, and
    Redis sends nothing back on that connection (CLIENT REPLY OFF): nothing to read."""
    writes: list[int] = []
    real_post = inline_redis._Connection.post

    def counted(self, data: bytes) -> None:
        writes.append(data.count(b"INCRBY"))
        real_post(self, data)

    monkeypatch.setattr(inline_redis._Connection, "post", counted)
    store = redis.Redis.from_url(settings.REDIS_URL)
    store.delete("inline:test:posted")
    failed: list = []

    def incr() -> bytes:
        return inline_redis.encoded(
            3, *map(inline_redis.bulk, ("INCRBY", "inline:test:posted", "1"))
        )

    async def posts():
        for _ in range(9):
            pool.post_in_turn(incr(), failed=failed.append)
        await _until(lambda: store.get("inline:test:posted") == b"9")
        pool.post_in_turn(incr(), failed=failed.append)
        await _until(lambda: store.get("inline:test:posted") == b"10")
        await asyncio.sleep(0.05)
        return select.select([pool.posting.sock], [], [], 0)[0]

    readable = asyncio.run(posts())
    assert store.get("inline:test:posted") == b"10"
    assert writes == [9, 1] and failed == []
    assert readable == []  # no reply came back
    store.close()


def test_a_post_after_redis_closed_the_connection_lands_on_a_new_one(pool):
    """Redis closed the posting connection (a restart, a CLIENT KILL): the next batch finds it
    closed before writing, opens another and lands; nothing goes into the dead one unseen."""
    store = redis.Redis.from_url(settings.REDIS_URL)
    store.delete("inline:test:reopened")
    failed: list = []
    command = inline_redis.encoded(2, *map(inline_redis.bulk, ("INCR", "inline:test:reopened")))

    async def posts():
        pool.post_in_turn(command, failed=failed.append)
        await _until(lambda: store.get("inline:test:reopened") == b"1")
        first = pool.posting
        host, port = first.sock.getsockname()[:2]
        store.client_kill(f"{host}:{port}")
        await asyncio.sleep(0.05)
        pool.post_in_turn(command, failed=failed.append)
        await _until(lambda: store.get("inline:test:reopened") == b"2")
        return first

    first = asyncio.run(posts())
    assert store.get("inline:test:reopened") == b"2" and failed == []
    assert pool.posting is not first and first.sock.fileno() == -1
    store.close()


def test_a_post_that_cannot_be_sent_calls_its_failed():
    gone = inline_redis.Pool("redis://127.0.0.1:1/0")  # nothing listens on port 1
    failed: list = []

    async def lost():
        gone.post_in_turn(b"*1\r\n$4\r\nPING\r\n", failed=failed.append)
        gone.post_in_turn(b"*1\r\n$4\r\nPING\r\n", failed=failed.append)
        await _until(lambda: len(failed) == 2)

    asyncio.run(lost())
    assert len(failed) == 2 and all(isinstance(f, inline_redis.FAILURES) for f in failed)
    assert gone.posting is None


def test_a_batch_of_a_loop_closed_before_it_ran_does_not_linger(pool):
    """A loop that closes with its turn's batch still queued (tests start many loops) takes
    the batch with it: the pool keeps no reference to a dead loop."""
    import gc

    loop = asyncio.new_event_loop()

    def queue_one_then_stop() -> None:
        pool.post_in_turn(b"*1\r\n$4\r\nPING\r\n", failed=lambda exc: None)
        asyncio.get_running_loop().stop()  # ends with this turn: the batch never goes out

    loop.call_soon(queue_one_then_stop)
    loop.run_forever()
    assert len(pool.posts) == 1
    loop.close()
    del loop
    gc.collect()
    assert len(pool.posts) == 0


def test_a_forked_child_opens_its_own_connections():
    """After a fork (Celery's prefork pool) the child does not use the connections it
    inherited: both processes' commands would interleave on one socket."""
    import os

    shared = inline_redis.pool(settings.REDIS_URL)
    assert shared.call_sync("PING", timeout=1) == b"PONG"
    inherited = list(shared.idle)
    assert inherited
    child = os.fork()
    if child == 0:  # the child: its own connection, and it works
        code = 1
        try:
            fresh = inline_redis.pool(settings.REDIS_URL)
            ok = fresh.call_sync("ECHO", "child", timeout=1) == b"child"
            code = 0 if ok and not any(c in inherited for c in fresh.idle) else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert shared.call_sync("ECHO", "parent", timeout=1) == b"parent"
    assert any(c in inherited for c in shared.idle)  # the parent's own, still in use
