"""Concurrency leases renewed while their requests live.

A concurrency slot is a lease in Redis (reserve.lua: request id -> expiry, in a sorted set per
subject), given back by the request's settle when its answer ends. A process killed mid-answer
(SIGKILL, the OOM killer, a deploy's hard stop) never settles: its slots free themselves when
their leases end. The lease was 11 minutes, so that the longest stream never lost its slot, and
a user of max_concurrent 1 was locked out for 11 minutes after every crash. Now the lease is
short and each process renews those of its requests in flight.

The figures: ENGRAM_LIMITS_LEASE_SECONDS, 30, renewed every third of it (10 s).
- A dead process's slots are free at most 30 s after it died.
- A live request keeps its slot through two renewals in a row failing (Redis away for up to
  ~20 s, or the process frozen that long); past that it loses it, which admits one request
  beyond the limit (never refuses one).
- A renewal is one script call per process (all of its leases, in batches of RENEW_BATCH), on
  a thread of its own: the request path only adds its admission to a set here, and takes it
  out at its settle. The score is this process's clock, as the reserve's.

A request that ends without its settle (a bug: the gateway settles every admitted request) is
not renewed for ever: its admission is held by weak reference, so it goes with the request.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from pathlib import Path
from typing import TYPE_CHECKING

from django.conf import settings

from config.common import inline_redis

if TYPE_CHECKING:
    from accounts.limits.limiter import Admission

logger = logging.getLogger("engram.limits")

RENEW = (Path(__file__).parent / "renew.lua").read_text()
RENEWALS_PER_LEASE = 3
RENEW_BATCH = 500  # leases per script call: Redis runs nothing else while it runs
TIMEOUT_SECONDS = 2.0  # off the request path: a slow Redis is waited for longer

# The admissions of this process's requests in flight, by weak reference (an admission hashes
# by identity). No lock: the request path adds and discards one (~0.5 µs the two; with a lock
# and a WeakValueDictionary it was ~3 µs), the renewer copies the set, and each of those is one
# step under the GIL.
_live: set[weakref.ref[Admission]] = set()
_wake = threading.Event()
_renewer: dict = {"thread": None, "lease": None}
_starting = threading.Lock()  # one renewer per process


def hold(admission: Admission, lease_seconds: float) -> None:
    """Renew `admission`'s leases until `release` (or until it is gone)."""
    _live.add(weakref.ref(admission))
    if _renewer["thread"] is None:
        _start()
    if lease_seconds != _renewer["lease"]:  # the setting changed (tests): renew by the new one
        _wake.set()


def release(admission: Admission) -> None:
    """Its answer ended: its settle gives the slots back."""
    _live.discard(weakref.ref(admission))  # equal to the one held: the same referent


def renew() -> int:
    """Move every held lease's expiry to a lease from now; how many were moved."""
    keys: list[str] = []
    ids: list[str] = []
    for ref in list(_live):
        admission = ref()
        if admission is None:  # gone without its settle: its leases end by themselves
            _live.discard(ref)
            continue
        for subject in admission.subjects:
            if subject.rule.max_concurrent:
                keys.append(subject.prefix + "conc")
                ids.append(admission.lease)
    if not keys:
        return 0
    lease_ms = int(settings.ENGRAM_LIMITS_LEASE_SECONDS * 1000)
    until = str(int(time.time() * 1000) + lease_ms)
    pool = inline_redis.pool(settings.REDIS_URL)
    renewed = 0
    for start in range(0, len(keys), RENEW_BATCH):
        batch = keys[start : start + RENEW_BATCH]
        reply = pool.call_sync(
            "EVAL",
            RENEW,
            str(len(batch)),
            *batch,
            until,
            str(lease_ms),
            *ids[start : start + RENEW_BATCH],
            timeout=TIMEOUT_SECONDS,
        )
        renewed += int(reply)  # type: ignore[call-overload]
    return renewed


def _start() -> None:
    with _starting:
        if _renewer["thread"] is not None:
            return
        thread = threading.Thread(target=_run, name="engram-leases", daemon=True)
        _renewer["thread"] = thread
        thread.start()


def _run() -> None:
    while True:
        lease = settings.ENGRAM_LIMITS_LEASE_SECONDS
        _renewer["lease"] = lease
        _wake.wait(lease / RENEWALS_PER_LEASE)
        _wake.clear()
        try:
            renew()
        except inline_redis.FAILURES as exc:  # the next renewal tries again
            logger.warning("could not renew concurrency leases (%s)", type(exc).__name__)
        except Exception:  # the renewer must outlive anything
            logger.exception("renewing concurrency leases failed")


def _forget_after_fork() -> None:
    """A forked child has no renewer thread and no requests of its own yet."""
    global _wake, _starting
    _wake, _starting = threading.Event(), threading.Lock()
    _live.clear()
    _renewer["thread"] = None


os.register_at_fork(after_in_child=_forget_after_fork)
