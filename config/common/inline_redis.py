"""Redis round trips on the request path, waited for in line.

Two things ask Redis on every request before the upstream call: the caches' coherence read
(config.common.coherence) and the limits' reserve script (accounts.limits.limiter). Awaiting a
reply the asyncio way costs more than the round trip: under a burst, the request resumes only
after every other ready task of the loop has run its turn, and the pipelined readers this
replaces took three or four loop turns (a pump task, a shield, the waiter) — each ~1 ms at 16
concurrent on this 2-core machine. Limits and budgets added +2.6–2.8 ms at p50 that way
(bench/README.md). A round trip to a Redis on the same host takes ≈ 50 µs (p50, loopback,
28 µs of it CPU; p99 0.8 ms with the other core busy). So the caller sends its command and
reads the reply without yielding, for up to INLINE_WAIT; only a slower reply (Redis starved of
CPU, or far away) is waited for on a thread, off the event loop.

Connections are plain blocking sockets with timeouts, kept in one pool per process and URL:
they belong to no event loop (tests run many) and serve sync callers too. A call takes an idle
connection or opens one (on a thread: connecting may take up to TIMEOUT_SECONDS), so a
connection is never shared by two calls; at most MAX_CONNECTIONS are open. Any error closes the
connection it happened on; a Redis error reply (`-ERR`, `-NOSCRIPT`) leaves it usable.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import os
import select
import socket
import ssl
import struct
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import cast

import redis
from redis.asyncio.connection import parse_url

INLINE_WAIT = 0.001  # s: the longest the event loop waits for a reply without yielding
MAX_CONNECTIONS = 16
POST_WAIT = 0.5  # s: the longest a post's connect or send waits (on a thread)
# What a call can fail with: the server's errors, the network's (timeouts included), a reply
# garbled.
FAILURES = (redis.RedisError, OSError, ValueError)
# A command: its arguments, or the whole of it already in Redis's wire format (`encoded`).
Command = tuple[str, ...] | bytes
_slow = ThreadPoolExecutor(max_workers=MAX_CONNECTIONS, thread_name_prefix="redis-slow")


class _Incomplete(Exception):
    pass


class NotSent(ConnectionError):
    """A post that failed before any of its bytes left: Redis could not be reached (down,
    restarting), or the send on an open connection was refused whole (reset under it). Unlike
    a failure mid-send, it is safe to send the same commands again."""


class _MustOpen(Exception):
    """The posting connection has to be opened first: not on the event loop's thread."""


class _Connection:
    def __init__(self, options: dict, timeout: float) -> None:
        if "path" in options:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            sock.connect(options["path"])
        else:
            sock = socket.create_connection(
                (options.get("host", "localhost"), options.get("port", 6379)), timeout=timeout
            )
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if options.get("connection_class") is not None:  # rediss://
                host = options.get("host", "localhost")
                sock = ssl.create_default_context().wrap_socket(sock, server_hostname=host)
        self.sock = sock
        self.buffer = bytearray()
        self.timeout: float | None = None
        # A plain socket (not TLS) is blocking, its waits bounded by the kernel's own receive
        # timeout (SO_RCVTIMEO): a round trip is two system calls, a send and a receive.
        # Python's timeout mode made it six (FIONBIO each time the timeout changed, and a poll
        # before each send and receive): a PING round trip 42.8 µs of CPU.
        self.kernel_timed = not isinstance(sock, ssl.SSLSocket)
        self.receive_ms = 0  # SO_RCVTIMEO as last set (0: none, the kernel's "forever")
        if self.kernel_timed:
            sock.settimeout(None)
        try:
            if options.get("password"):
                user = [options["username"]] if options.get("username") else []
                self.round_trip(_encode(("AUTH", *user, options["password"])), timeout)
            if options.get("db"):
                self.round_trip(_encode(("SELECT", str(options["db"]))), timeout)
        except BaseException:
            sock.close()
            raise

    def round_trip(self, command: bytes, timeout: float) -> object:
        deadline = time.monotonic() + timeout
        self.send(command, deadline)
        return _raised(self.read(deadline, timeout))

    def send(self, command: bytes, deadline: float) -> None:
        """Write `command`, blocking at most until `deadline` (a full socket buffer)."""
        if not self.kernel_timed:
            self._wait_at_most(max(deadline - time.monotonic(), 0.001))
            self.sock.sendall(command)
            return
        try:  # the usual case: the buffer has room, one system call
            sent = self.sock.send(command, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            sent = 0
        rest = memoryview(command)[sent:]
        while rest:  # a full buffer: wait until it drains, or the deadline
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([], [self.sock], [], left)[1]:
                raise TimeoutError("redis send")
            with contextlib.suppress(BlockingIOError, InterruptedError):
                rest = rest[self.sock.send(rest, socket.MSG_DONTWAIT) :]

    def post(self, data: bytes) -> None:
        """Write `data` whole without waiting (a connection Redis sends no replies on). A
        socket buffer too full to take it means Redis is not reading: BlockingIOError, and the
        connection (holding part of a command) must be closed. A send the kernel refused
        (the connection reset or broken under it, or a buffer too full for a byte) took none
        of it: NotSent, as a connection that could not be opened."""
        if not self.kernel_timed:  # TLS: the send's own wait, bounded; how much left, unknown
            self.send(data, time.monotonic() + POST_WAIT)
            return
        try:
            sent = self.sock.send(data, socket.MSG_DONTWAIT)
        except OSError as exc:  # a send that moved some bytes returns their count instead
            raise NotSent(f"not sent: {exc}") from exc
        if sent < len(data):
            raise BlockingIOError("redis is not reading: the socket buffer is full")

    def alive(self) -> bool:
        """Not closed by Redis (nothing to read on a connection that gets no replies: an end
        of file or an error is all a peek can find)."""
        if not self.kernel_timed:
            return True  # TLS: found out by the send
        try:
            return self.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) != b""
        except (BlockingIOError, InterruptedError):
            return True
        except OSError:
            return False

    def read(self, deadline: float, wait: float) -> object:
        """The next reply (an error reply as a redis.ResponseError value); TimeoutError when
        none has come within `wait` (the bytes read so far are kept for the next `read`)."""
        until = min(deadline, time.monotonic() + wait)
        while True:
            if self.buffer:
                try:
                    value, end = _parse(self.buffer, 0)
                except _Incomplete:
                    pass
                else:
                    del self.buffer[:end]
                    return value
            left = until - time.monotonic()
            if left <= 0:
                raise TimeoutError("redis reply")
            if self.kernel_timed:
                self._receive_within(left)
                try:
                    data = self.sock.recv(65536)
                except (BlockingIOError, InterruptedError):
                    continue  # the kernel's wait is over (or a signal): the clock decides
            else:
                self._wait_at_most(left)
                data = self.sock.recv(65536)  # TimeoutError (socket.timeout) when none came
            if not data:
                raise ConnectionResetError("redis closed the connection")
            self.buffer += data

    def _wait_at_most(self, seconds: float) -> None:
        """TLS: Python's timeout on the socket."""
        if self.timeout != seconds:
            self.sock.settimeout(seconds)
            self.timeout = seconds

    def _receive_within(self, seconds: float) -> None:
        """A plain socket: the kernel's receive timeout, in whole milliseconds rounded up (so
        the in-line wait's is the same call after call, set once)."""
        ms = max(1, math.ceil(seconds * 1000))
        if ms != self.receive_ms:
            seconds_part, ms_part = divmod(ms, 1000)
            self.sock.setsockopt(
                socket.SOL_SOCKET,
                socket.SO_RCVTIMEO,
                struct.pack("@ll", seconds_part, ms_part * 1000),
            )
            self.receive_ms = ms

    def close(self) -> None:
        self.sock.close()


class Pool:
    """The connections to one Redis URL."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.options: dict = dict(parse_url(url))
        self.idle: list[_Connection] = []
        self.open = 0
        self.lock = threading.Lock()
        # This turn's posts, per loop. Weak: a batch whose loop closed before its call_soon ran
        # (tests) goes with the loop.
        self.posts: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, list] = (
            weakref.WeakKeyDictionary()
        )
        self.posting: _Connection | None = None  # CLIENT REPLY OFF: see post_in_turn
        self.posting_lock = threading.Lock()  # one writer at a time on it

    def _take(self) -> _Connection | None:
        with self.lock:
            if self.idle:
                return self.idle.pop()
            if self.open >= MAX_CONNECTIONS:
                raise redis.ConnectionError("every redis connection is busy")
            self.open += 1
            return None  # the caller opens one

    def _connect(self, timeout: float) -> _Connection:
        try:
            return _Connection(self.options, timeout)
        except BaseException as exc:
            self._drop(None)
            if isinstance(exc, OSError):  # nothing was sent: the caller may send it again
                raise NotSent(f"could not connect: {exc}") from exc
            raise

    def _keep(self, connecting: asyncio.Future) -> None:
        if not connecting.cancelled() and connecting.exception() is None:
            self._give_back(connecting.result())

    def _give_back(self, connection: _Connection) -> None:
        with self.lock:
            self.idle.append(connection)

    def _drop(self, connection: _Connection | None) -> None:
        if connection is not None:
            connection.close()
        with self.lock:
            self.open -= 1

    def _send(self, connection: _Connection, commands: list[Command], deadline: float):
        """Write the commands with one send; a connection that fails is closed."""
        try:
            connection.send(b"".join(map(_encode, commands)), deadline)
        except BaseException:
            self._drop(connection)
            raise

    def _finish(
        self,
        connection: _Connection,
        replies: list,
        count: int,
        deadline: float,
        wait: float,
        inline: bool = False,
    ) -> list:
        """Read the rest of `count` replies into `replies`, then give the connection back (or
        close it on a failure). TimeoutError when they have not all come within `wait`."""
        try:
            while len(replies) < count:
                replies.append(connection.read(deadline, wait))
        except TimeoutError:
            if inline:
                raise  # only the in-line wait is over: the caller goes on on a thread
            self._drop(connection)
            raise
        except BaseException:
            self._drop(connection)
            raise
        self._give_back(connection)
        return replies

    async def call(self, *args: str | bytes, timeout: float) -> object:
        """One command's reply (an error reply raised as redis.ResponseError): its arguments,
        or the whole of it already encoded (`encoded`)."""
        (reply,) = await self.call_many([_command(args)], timeout=timeout)
        return _raised(reply)

    async def call_many(self, commands: list[Command], *, timeout: float) -> list:
        """The replies of several commands sent with one write (error replies as
        redis.ResponseError values): in line when they come within INLINE_WAIT, else read on
        a thread."""
        deadline = time.monotonic() + timeout
        connection = self._take()
        loop = asyncio.get_running_loop()
        if connection is None:
            connecting = loop.run_in_executor(_slow, self._connect, timeout)
            try:
                connection = await asyncio.shield(connecting)
            except asyncio.CancelledError:  # the caller left: the new connection is kept
                connecting.add_done_callback(self._keep)
                raise
        self._send(connection, commands, deadline)
        replies: list = []
        try:
            return self._finish(
                connection, replies, len(commands), deadline, INLINE_WAIT, inline=True
            )
        except TimeoutError:
            pass  # the connection is kept for the thread, which fails at once past the deadline
        # Not all here yet: the rest is read on a thread, which gives the connection back even
        # when this caller is cancelled meanwhile (the replies are read and dropped).
        return await loop.run_in_executor(
            _slow, self._finish, connection, replies, len(commands), deadline, timeout
        )

    def post_in_turn(self, command: bytes, *, failed: Callable[[BaseException], None]) -> None:
        """For a command whose reply nobody needs (a limits settle, after the answer): queue it
        for this loop turn's one write on the pool's posting connection, on which Redis sends
        no replies (CLIENT REPLY OFF). Nothing reads, waits or wakes up for it: a settle is its
        share of one send. With replies (a task, a future, a reader and a timer per batch, and
        the wake-up to read them) a settle cost ~55 µs of CPU. `failed` gets the exception
        when the command could not be sent (one of FAILURES; NotSent when none of it left, so
        it may be sent again); one that was sent is not
        confirmed, so `command` must not need its reply (a script sent whole, EVAL, cannot
        meet a NOSCRIPT)."""
        loop = asyncio.get_running_loop()
        batch = self.posts.get(loop)
        if batch is None:
            batch = self.posts[loop] = []
            loop.call_soon(self._post_batch, loop)
        batch.append((command, failed))

    def _post_batch(self, loop: asyncio.AbstractEventLoop) -> None:
        batch = self.posts.pop(loop)
        data = b"".join(command for command, _ in batch)
        # In line when the posting connection is open, alive and free; else (to be opened, or
        # a thread still on it) on a thread, which may wait: connecting takes up to POST_WAIT.
        if self.posting_lock.acquire(blocking=False):
            try:
                self._post(data, may_open=False)
                return
            except _MustOpen:
                pass
            except FAILURES as exc:
                _failed(batch, exc)
                return
            finally:
                self.posting_lock.release()
        sent = loop.run_in_executor(_slow, self._post_locked, data)
        sent.add_done_callback(functools.partial(_failed_if, batch))

    def _post_locked(self, data: bytes) -> None:
        with self.posting_lock:
            self._post(data, may_open=True)

    def _post(self, data: bytes, *, may_open: bool) -> None:
        """Under posting_lock: send on the posting connection, opened first if it is not open
        or Redis has closed it (a restart: checked before each batch, so no batch goes into a
        closed connection unseen); _MustOpen when that is needed and not `may_open`, NotSent
        when it cannot be opened. A failure closes it (the next batch opens another)."""
        if self.posting is not None and not self.posting.alive():
            self.posting.close()
            self.posting = None
        if self.posting is None:
            if not may_open:
                raise _MustOpen
            try:
                connection = _Connection(self.options, POST_WAIT)
            except OSError as exc:  # as Pool._connect
                raise NotSent(f"could not connect: {exc}") from exc
            try:
                connection.send(_encode(("CLIENT", "REPLY", "OFF")), time.monotonic() + POST_WAIT)
            except BaseException as exc:
                connection.close()
                if isinstance(exc, OSError):
                    raise NotSent(f"could not connect: {exc}") from exc
                raise
            self.posting = connection
        try:
            self.posting.post(data)
        except BaseException:
            self.posting.close()
            self.posting = None
            raise

    def call_sync(self, *args: str | bytes, timeout: float) -> object:
        """As `call`, for sync callers (a thread may block)."""
        deadline = time.monotonic() + timeout
        connection = self._take() or self._connect(timeout)
        self._send(connection, [_command(args)], deadline)
        (reply,) = self._finish(connection, [], 1, deadline, timeout)
        return _raised(reply)

    def close(self) -> None:
        with self.lock:
            idle, self.idle = self.idle, []
            self.open -= len(idle)
        for connection in idle:
            connection.close()
        with self.posting_lock:
            if self.posting is not None:
                self.posting.close()
                self.posting = None


_pools: dict[str, Pool] = {}
_pools_lock = threading.Lock()


def _forget_after_fork() -> None:
    """A forked child (a Celery prefork pool process) must not write to its parent's sockets:
    two processes' commands would interleave on one connection. It opens its own."""
    for found in _pools.values():
        found.idle = []
        found.open = 0
        found.posting = None
        found.lock = threading.Lock()
        found.posting_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_after_fork)


def pool(url: str) -> Pool:
    found = _pools.get(url)
    if found is None:
        with _pools_lock:
            found = _pools.get(url)
            if found is None:
                found = _pools[url] = Pool(url)
    return found


def _failed(batch: list, error: BaseException) -> None:
    for _, failed in batch:
        failed(error)


def _failed_if(batch: list, sent: asyncio.Future) -> None:
    if sent.cancelled():  # the loop closed first: the batch's fate is unknown
        return
    error = sent.exception()
    if error is not None:
        _failed(batch, error)


def _raised(reply: object) -> object:
    if isinstance(reply, redis.ResponseError):
        raise reply
    return reply


def bulk(value: str | int) -> bytes:
    """One argument in Redis's wire format: to encode once the parts of a command that repeat
    from request to request (accounts.limits.limiter's keys and limits)."""
    data = value.encode() if isinstance(value, str) else b"%d" % value
    return b"$%d\r\n%s\r\n" % (len(data), data)


def encoded(count: int, *parts: bytes) -> bytes:
    """A whole command of `count` arguments, each already encoded by `bulk` (in `parts`)."""
    return b"*%d\r\n" % count + b"".join(parts)


def _command(args: tuple[str | bytes, ...]) -> Command:
    """`call`'s arguments as a command: one bytes argument is a command already encoded."""
    if len(args) == 1 and isinstance(args[0], bytes):
        return args[0]
    return cast(tuple[str, ...], args)


def _encode(command: Command) -> bytes:
    if isinstance(command, bytes):
        return command
    return encoded(len(command), *map(bulk, command))


def _parse(buffer: bytearray, at: int) -> tuple[object, int]:
    """One RESP2 reply from `buffer[at:]`: (value, where it ends); _Incomplete when it is cut.
    Errors are returned as redis.ResponseError values, for the caller to raise."""
    end = buffer.find(b"\r\n", at)
    if end < 0:
        raise _Incomplete
    kind = buffer[at]
    line = bytes(buffer[at + 1 : end])
    at = end + 2
    if kind == 0x3A:  # ':' integer
        return int(line), at
    if kind == 0x24:  # '$' bulk string
        size = int(line)
        if size < 0:
            return None, at
        if len(buffer) < at + size + 2:
            raise _Incomplete
        return bytes(buffer[at : at + size]), at + size + 2
    if kind == 0x2A:  # '*' array
        count = int(line)
        if count < 0:
            return None, at
        items = []
        for _ in range(count):
            item, at = _parse(buffer, at)
            items.append(item)
        return items, at
    if kind == 0x2B:  # '+' simple string
        return line, at
    if kind == 0x2D:  # '-' error
        return redis.ResponseError(line.decode(errors="replace")), at
    raise ValueError(f"unexpected redis reply {line[:40]!r}")
