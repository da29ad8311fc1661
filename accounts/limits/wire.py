"""One pipelined Redis connection per event loop for the limits' scripts.

A burst of requests must not open a connection each: with redis-py's asyncio pool, 64
concurrent requests opened 64 connections and the connects timed out on this loaded 2-core
machine (every one then failed closed). Here every call writes its command on the one
connection at once and a single reader hands the replies back in order (Redis answers in
order), so a burst costs one connection and no waiting for a free one. The protocol is
config.common.coherence's wire, plus integer replies.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import deque

import redis

from config.common.coherence import _Wire


class Pipeline(_Wire):
    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.url = url
        self.waiting: deque[asyncio.Future] = deque()
        self.connecting: asyncio.Future | None = None
        self.pump: asyncio.Task | None = None
        self.shas: dict[str, str] = {}
        self.out: list[bytes] = []  # commands of this loop turn, written with one send

    async def script(self, body: str, keys: list[str], args: list, *, timeout: float):
        """EVALSHA, loading the script once per connection when Redis does not know it."""
        sha = self.shas.get(body)
        if sha is None:
            sha = self.shas[body] = hashlib.sha1(body.encode()).hexdigest()
        argv = [str(len(keys)), *keys, *(str(a) for a in args)]
        async with asyncio.timeout(timeout):
            try:
                return await self.call("EVALSHA", sha, *argv)
            except redis.ResponseError as exc:
                if not str(exc).startswith("NOSCRIPT"):
                    raise
                return await self.call("EVAL", body, *argv)

    async def call(self, *args: str) -> object:
        if self.writer is None:
            await self._connected()
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        if not self.out:
            loop.call_soon(self._flush)
        self.out.append(_encode(args))
        self.waiting.append(future)
        if self.pump is None or self.pump.done():
            self.pump = asyncio.ensure_future(self._pump())
        return await asyncio.shield(future)  # a caller that gives up leaves the order intact

    def _flush(self) -> None:
        """One send for every command of the loop turn: the send is most of a call's cost (a
        syscall that wakes Redis: ~0.4 ms of CPU here under load), so concurrent requests share
        it (their settles too)."""
        out, self.out = self.out, []
        if not out:
            return
        if self.writer is None:
            self._fail(ConnectionResetError("closed meanwhile"))
            return
        self.writer.write(b"".join(out))

    async def _connected(self) -> None:
        if self.connecting is None or self.connecting.done():
            self.connecting = asyncio.ensure_future(self._connect())
            self.connecting.add_done_callback(_retrieved)
        try:
            await asyncio.shield(self.connecting)
        except BaseException:
            self.close()
            raise

    async def _pump(self) -> None:
        reader = self.reader
        try:
            while self.waiting:
                assert reader is not None
                try:
                    value: object = await self._reply(reader)
                    error = None
                except redis.ResponseError as exc:  # one command's error: the stream is intact
                    value, error = None, exc
                future = self.waiting.popleft()
                if future.done():
                    continue
                if error is not None:
                    future.set_exception(error)
                else:
                    future.set_result(value)
        except BaseException as exc:
            self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        waiting, self.waiting = self.waiting, deque()
        self.out = []  # their commands are not sent on a later connection
        for future in waiting:
            if not future.done():
                future.set_exception(ConnectionError(f"redis connection lost ({exc!r})"))
        self.close()

    async def _reply(self, reader: asyncio.StreamReader) -> object:
        line = await reader.readuntil(b"\r\n")
        if line[:1] == b":":
            return int(line[1:-2])
        if line[:1] == b"*":
            return [await self._reply(reader) for _ in range(int(line[1:-2]))]
        # the rest as the coherence wire reads it: put the line back for it
        return await _Wire._reply(self, _Replay(line, reader))  # type: ignore[arg-type]


class _Replay:
    """A reader that gives back one line already read, then reads on."""

    def __init__(self, line: bytes, reader: asyncio.StreamReader) -> None:
        self.line: bytes | None = line
        self.reader = reader

    async def readuntil(self, separator: bytes) -> bytes:
        if self.line is not None:
            line, self.line = self.line, None
            return line
        return await self.reader.readuntil(separator)

    async def readexactly(self, n: int) -> bytes:
        return await self.reader.readexactly(n)


def _encode(args: tuple[str, ...]) -> bytes:
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg.encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def _retrieved(future: asyncio.Future) -> None:
    if not future.cancelled():
        future.exception()
