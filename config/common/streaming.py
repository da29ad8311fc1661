"""A body read from the database in one go, sent from a spool file for as long as the client
takes: `spooled_response`.

A body streamed while it was read (the user's export) held its pooled connection, and the
snapshot its REPEATABLE READ transaction needs, from its first byte to its last: a client that
read slowly (or a few) kept connections out of the pool and vacuum back for as long as it liked.
Now the parts are read through as fast as the database gives them, each written to an unnamed
temporary file under the data folder (`spool`); the transaction ends, the connection goes back
to the pool, and only then is the file sent, a block at a time. The file has no name (O_TMPFILE,
or unlinked as soon as made): closing it, at the body's end, when the client leaves, or when the
response is dropped, frees its space, and a process that dies leaves nothing behind.

The memory held is a part and a block, never the body: the parts go to the file as they come,
the file back out 64 KB at a time (read off the event loop, which a slow disk must not stall).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import tempfile
from collections.abc import AsyncIterator, Generator, Iterable
from pathlib import Path
from typing import IO

from django.db import close_old_connections, connection
from django.http import StreamingHttpResponse

from config.common.errors import Unavailable

logger = logging.getLogger("engram.request")

# A block of the file per write to the client: the size of the parts the export writes.
BLOCK_BYTES = 64 * 1024
# A spool never takes the last of its disk: in the embedded layout the data folder holds
# PostgreSQL's data and WAL too, and PostgreSQL stops (PANIC) when a WAL write finds the disk
# full. An export that would leave less than this free is refused instead (503): eight WAL
# segments of 16 MB. Not more: machines of this kind have been seen with 287 MB free, where a
# 1 GB reserve refused every export, a user's two-page one included.
RESERVE_BYTES = 128 * 1024**2
# The errors of a disk (or a quota) that is full: the request's 503, not a bug's 500.
_FULL = (errno.ENOSPC, errno.EDQUOT)


def spool_dir() -> Path:
    from config.embedded.servers import data_dir

    path = data_dir() / "spool"
    path.mkdir(exist_ok=True)
    return path


def spool(parts: Iterable[bytes]) -> IO[bytes]:
    """`parts` read through and written to an unnamed temporary file, returned at its start;
    the caller closes it. Raises `Unavailable` (nothing written is kept) when the disk is full
    or would be left with less than RESERVE_BYTES."""
    where = spool_dir()
    file = tempfile.TemporaryFile(dir=where)  # noqa: SIM115 - the caller's to close
    try:
        for part in parts:
            _room(where, len(part))
            file.write(part)
        file.flush()
    except BaseException as exc:
        file.close()
        if isinstance(parts, Generator):  # stopped midway: its transaction ends here, now
            parts.close()
        if not isinstance(exc, OSError) or exc.errno not in _FULL:
            raise
        logger.warning("spool: %s is full (%s)", where, exc.strerror)
        raise _no_room() from None
    file.seek(0)
    return file


def spooled_response(parts: Iterable[bytes], *, content_type: str) -> StreamingHttpResponse:
    """A 200 whose body is `parts`, read through (in the view: any error is the view's, with
    its envelope), the connection they read given back, then sent from the spool file. The
    file is closed when the body is sent, cut, left by its client, or the response closed."""
    try:
        file = spool(parts)
    finally:
        # The connection goes back to the pool now, not when the body has been sent (at the
        # request's end, request_finished): the client's pace is no longer the database's.
        if not connection.in_atomic_block:  # a test's transaction: nothing to give back
            close_old_connections()
    size = os.fstat(file.fileno()).st_size
    response = StreamingHttpResponse(_sent(file, size), content_type=content_type)
    response["Content-Length"] = str(size)  # a client can tell a cut body from a whole one
    # A response closed unsent (an error after the view) closes its file too, as FileResponse.
    response._resource_closers.append(file.close)  # type: ignore[attr-defined]
    return response


def _room(where: Path, size: int) -> None:
    disk = os.statvfs(where)
    free = disk.f_bavail * disk.f_frsize
    if free - size < RESERVE_BYTES:
        logger.warning(
            "spool: %s has %d MB free, under the %d MB kept free",
            where,
            free // 2**20,
            RESERVE_BYTES // 2**20,
        )
        raise _no_room()


def _no_room() -> Unavailable:
    return Unavailable(
        "The server has no room to prepare this response now; retry later.",
        code="insufficient_storage",
    )


async def _sent(file: IO[bytes], size: int) -> AsyncIterator[bytes]:
    sent = 0
    try:
        while block := await asyncio.to_thread(file.read, BLOCK_BYTES):
            yield block
            sent += len(block)
    except Exception:
        # The status and the first bytes are out: no envelope can follow. The body ends here,
        # short of its Content-Length (a JSON document without its closing brackets does not
        # parse either).
        logger.exception("spooled response cut after %d of %d bytes", sent, size)
    finally:
        file.close()
