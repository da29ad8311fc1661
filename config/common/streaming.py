"""A body written while it is read from the database, for Django's sync views under ASGI.

Django serves a StreamingHttpResponse over ASGI with an async iterator only: a sync one is read
whole into a list first (its "must consume synchronous iterators" warning), which is the memory
the streaming was meant to save. `streaming_response` takes the sync parts (database reads, which
must run in the request's thread) and hands Django an async iterator that asks for each next
part on that thread (`sync_to_async`, thread-sensitive: the view's own thread and connection).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator

from asgiref.sync import sync_to_async
from django.db import close_old_connections, connection
from django.http import StreamingHttpResponse

logger = logging.getLogger("engram.request")


def streaming_response(parts: Iterator[bytes], *, content_type: str) -> StreamingHttpResponse:
    """A 200 whose body is `parts`. The first part is read here, in the view: an error before
    the first byte (a database away, a bug in the first page) is still the view's, answered
    with the envelope. After it the status is sent: an error ends the body where it is (the
    client gets what was sent, for a JSON document an invalid one) and is logged."""
    first = _next(parts) or b""
    return StreamingHttpResponse(_rest(first, parts), content_type=content_type)


def _next(parts: Iterator[bytes]) -> bytes | None:
    """The next part, read on the request's thread. Then its connection goes back to the pool
    (close_old_connections, as at a request's end): a client reading slowly holds a pooled
    connection while a part is read, not for its whole download (the pool is 20 a process)."""
    part = next(parts, None)
    if not connection.in_atomic_block:  # a test's transaction: nothing to give back
        close_old_connections()
    return part


async def _rest(first: bytes, parts: Iterator[bytes]) -> AsyncIterator[bytes]:
    yield first
    sent = len(first)
    step = sync_to_async(_next, thread_sensitive=True)
    try:
        while (part := await step(parts)) is not None:
            yield part
            sent += len(part)
    except Exception:
        # The status and the first bytes are out: no envelope can follow. The body ends here,
        # short of its end (a JSON document without its closing brackets does not parse).
        logger.exception("streamed response cut after %d bytes", sent)
