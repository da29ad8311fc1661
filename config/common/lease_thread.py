"""A worker process's one lease thread: it renews the lease of every claim the process holds
(memory jobs, a knowledge document's ingestion) while the claim's work runs, however long one
call of that work takes (embedding 200 messages, extracting a large PDF). The database holds
the leases; this only keeps them fresh, and a claim whose renewal finds it gone stops."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterator

from django.db import InterfaceError, OperationalError, connections

logger = logging.getLogger("engram.memory")


@contextlib.contextmanager
def renewing(renew: Callable[[], bool], *, names: str, every: float) -> Iterator[None]:
    """Call `renew` every `every` seconds while the body runs, on the process's lease thread,
    until it returns False (the run lost its lease). The mechanism for any claim a worker holds
    under a lease (memory jobs, a knowledge document's ingestion). Its last renewal, if one is
    under way, is over when this returns."""
    held = _leases.hold(renew, names=names, every=every)
    try:
        yield
    finally:
        _leases.release(held)


class _Held:
    """A run on the lease thread: how to renew its lease, how often, when it is due a renewal,
    and whether one is under way."""

    __slots__ = ("beating", "due", "every", "names", "renew")

    def __init__(self, renew: Callable[[], bool], names: str, every: float) -> None:
        self.renew = renew
        self.names = names
        self.every = every
        self.due = time.monotonic() + every
        self.beating = False


class _Leases:
    """One thread per process renews the leases of every run registered with it, each a third
    of a lease after its claim or its last renewal. A thread started for each run (and its
    connections closed at its end) cost ~60 µs of a pool process's CPU a task, where nearly
    every run ends long before its first renewal (bench/README.md, "Twenty-fifth session").
    Registering a run wakes the thread only when the run is due before the thread's next
    wake-up (a shorter lease than when it went to sleep): not in the steady state."""

    def __init__(self) -> None:
        self._after_fork()
        os.register_at_fork(after_in_child=self._after_fork)

    def _after_fork(self) -> None:
        # a forked pool process inherits no thread: its own starts with its first run
        self._cond = threading.Condition()
        self._runs: dict[int, _Held] = {}
        self._thread: threading.Thread | None = None
        self._wake = math.inf  # when the thread wakes next (-inf: it is awake)

    def hold(self, renew: Callable[[], bool], *, names: str, every: float) -> _Held:
        held = _Held(renew, names, every)
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(target=self._renew, name="leases", daemon=True)
                self._thread.start()
            self._runs[id(held)] = held
            if held.due < self._wake:
                self._cond.notify()
        return held

    def release(self, held: _Held) -> None:
        """Stop renewing; wait (up to 30 s, as the thread's join did) for a renewal under way."""
        deadline = time.monotonic() + 30
        with self._cond:
            self._runs.pop(id(held), None)
            while held.beating and (left := deadline - time.monotonic()) > 0:
                self._cond.wait(left)

    def _renew(self) -> None:
        while True:
            with self._cond:
                now = time.monotonic()
                due = [held for held in self._runs.values() if held.due <= now]
                if not due:
                    # nothing held: asleep until a run registers (which wakes it)
                    self._wake = min((held.due for held in self._runs.values()), default=math.inf)
                    self._cond.wait(None if self._wake == math.inf else self._wake - now)
                    self._wake = -math.inf
                    continue
                for held in due:
                    held.beating = True
            lost = set()
            try:
                for held in due:
                    if not self._beat(held):
                        lost.add(id(held))
            finally:
                connections.close_all()  # this thread's connection: it renews seldom
                with self._cond:
                    now = time.monotonic()
                    for held in due:
                        held.beating = False
                        held.due = now + held.every
                        if id(held) in lost:
                            self._runs.pop(id(held), None)
                    self._cond.notify_all()

    @staticmethod
    def _beat(held: _Held) -> bool:
        """Renew one run's leases; False when it lost them (no more renewals)."""
        try:
            if not held.renew():
                logger.warning("%s lost their lease", held.names)
                return False
        except (OperationalError, InterfaceError) as exc:
            logger.warning("%s: lease not renewed (%s)", held.names, exc)
        except Exception:  # the thread renews the other runs' leases: it must not die of one
            logger.exception("%s: lease not renewed", held.names)
            return False
        return True


_leases = _Leases()
