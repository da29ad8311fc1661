"""One task waiting per unit of work: a send is skipped while a task for the same unit waits.

Behind a backlog every remembered turn sent its own `memory.extract`, and a run with the
offline extractor claims up to 32 of its workspace's queued jobs: the other turns' tasks then
found their jobs taken, each still ~2 ms of the worker's main process (receive, hand-over,
ack) and a pool process's no-op claim (issue #18). Likewise an untitled conversation sent a
title task with every turn until the worker wrote its title. So a send names its unit of work
(the workspace's extraction queue; a conversation's title), and

- the sender SETs `engram:pending:<task>:<unit>` NX with a TTL and sends only if it set it;
  a send that fails deletes the key again (best effort: else the TTL);
- the task DELs the key BEFORE it reads the database (the claim, the untitled conversation):
  whatever commits after the DEL finds no key and sends anew; whatever committed before it
  is visible to the claim that follows.

The database stays the truth; the key only says "a wake-up for this unit is on its way".
Why no job waits for longer than without it (each case a test in tests/test_coalesce.py):

- A turn that finds the key set committed its job before its SET, and the SET came before the
  DEL of the task that key stands for (or of a later one): that task's claim starts after the
  job committed and sees it. Should the claim not take it — the batch's caps (32 jobs, 256
  messages) or the task's own job taken by another run meanwhile — the run sends the unit's
  task again (memory.services.processing.extraction_claim): a run that leaves claimable jobs
  of its unit behind always leaves a task for them.
- Two tasks for one unit (a redelivery, a retry, the sweep's): the second DEL removes a key a
  later send may have set; jobs committed after it send anew. A DEL only ever costs a send,
  never a wake-up.
- Redis loses its data (a restart): the keys go with the queue's messages; the next turns send
  anew, and the sweep sends what was queued (memory.services.sweep).
- A key without its task — the message lost while its key survived (a worker killed between
  taking the message and the task's DEL; the web killed between its SET and its send): turns
  send nothing for that unit until the TTL lapses. The TTL is the sweep's grace
  (ENGRAM_JOB_GRACE_SECONDS), and the sweep sends a unit's due jobs whether or not its key is
  set (and sets it), so a lost message delays a job no longer than before: the grace and a
  sweep period. A title has no sweep: the first turn after the TTL asks again.
- Redis errors on the SET: the send goes out as before this module (and fails the same way:
  the sweep, or the next turn, sends it).

A `memory.extract` sent without a unit (a message of an older release, the sweep's send of a
job that ran out of time in a batch and must run alone) deletes no key and claims as before.
"""

from __future__ import annotations

import logging

from django.conf import settings

from config.celery import BROKER_SOCKET_TIMEOUT, broker_resting, send
from config.common import inline_redis

logger = logging.getLogger("engram.tasks")

PREFIX = "engram:pending:"


def _key(task_name: str, unit: str) -> str:
    return f"{PREFIX}{task_name}:{unit}"


def _pool() -> inline_redis.Pool:
    # The broker's Redis (CELERY_BROKER_URL is REDIS_URL): a key lost with Redis goes with the
    # messages it stands for.
    return inline_redis.pool(settings.REDIS_URL)


def ttl_seconds() -> float:
    """How long a key outlives a lost task: the sweep's grace (the module docstring says why)."""
    return max(1.0, settings.ENGRAM_JOB_GRACE_SECONDS)


def send_once(task, *args: object, unit: str, then: str, force: bool = False) -> bool:
    """Send `task(*args)` unless one sent for `unit` still waits (its key is set); True when
    sent. `force`: sent all the same, and the key set (the sweep: a key whose task was lost)."""
    key = _key(task.name, unit)
    marked = False
    if not broker_resting():  # else `send` logs and skips it anyway
        try:
            reply = _pool().call_sync(
                "SET",
                key,
                "1",
                *(() if force else ("NX",)),
                "PX",
                str(int(ttl_seconds() * 1000)),
                timeout=BROKER_SOCKET_TIMEOUT,
            )
        except inline_redis.FAILURES as exc:  # sent as before: the send says what failed
            logger.info("%s: pending mark not set (%s)", key, type(exc).__name__)
        else:
            if reply is None:
                return False  # a task for the unit waits: it will see this one's work
            marked = True
    if send(task, *args, then=then):
        return True
    if marked:
        taken(task.name, unit)  # no task for the key: the next turn may send
    return False


def taken(task_name: str, unit: str) -> None:
    """The task for `unit` has started (or was not sent): the next send goes out. Called
    before the task reads the database; an error is logged (the TTL lets the key go)."""
    try:
        _pool().call_sync("DEL", _key(task_name, unit), timeout=BROKER_SOCKET_TIMEOUT)
    except inline_redis.FAILURES as exc:
        logger.warning(
            "%s: pending mark not cleared (%s); sends resume after %.0f s",
            _key(task_name, unit),
            type(exc).__name__,
            ttl_seconds(),
        )
