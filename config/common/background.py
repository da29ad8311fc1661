"""The one holder of asyncio tasks that run beside the request path.

`spawn` starts fire-and-forget work (memory's finish_turn, a cache's background reload, draining
an upstream connection). The event loop keeps only a weak reference to a task, so a task nobody
holds can be collected before it finishes, and a failure nobody awaits surfaces, if ever, as
"Task exception was never retrieved" at collection: `spawn` holds the task until it ends and
logs a failure at once, under the task's name.

`holding(key)` marks the running task as busy with `key` (say, a user's last turn) and
`wait_for(key)` lets a later task wait for those, so work that must come after them does.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Hashable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

logger = logging.getLogger("engram.background")

T = TypeVar("T")

_running: set[asyncio.Task] = set()
_holders: dict[Hashable, set[asyncio.Task]] = {}


def spawn(coro: Coroutine[Any, Any, T], *, name: str) -> asyncio.Task[T]:
    """Run `coro` on the running loop without waiting for it; a failure is logged, not raised."""
    task = asyncio.get_running_loop().create_task(coro, name=name)
    _running.add(task)
    task.add_done_callback(_done)
    return task


def _done(task: asyncio.Task) -> None:
    _running.discard(task)
    if task.cancelled():
        return
    error = task.exception()
    if error is not None:
        logger.error("background task %s failed", task.get_name(), exc_info=error)


@contextmanager
def holding(key: Hashable) -> Iterator[None]:
    """While the block runs, the current task is one that `wait_for(key)` waits for."""
    task = asyncio.current_task()
    if task is None:
        yield
        return
    _holders.setdefault(key, set()).add(task)
    try:
        yield
    finally:
        tasks = _holders.get(key)
        if tasks is not None:
            tasks.discard(task)
            if not tasks:
                del _holders[key]


async def wait_for(key: Hashable, *, timeout: float) -> None:
    """Wait up to `timeout` seconds for the other tasks of this loop holding `key`."""
    loop = asyncio.get_running_loop()
    current = asyncio.current_task()
    pending = [
        t
        for t in _holders.get(key, ())
        if t is not current and not t.done() and t.get_loop() is loop
    ]
    if pending:
        await asyncio.wait(pending, timeout=timeout)
