"""A file the Celery worker and beat touch while they work, for a container's healthcheck.

ENGRAM_HEARTBEAT_FILE names it (unset: nothing is touched; `make run` runs worker and beat on
one host, where one file would say nothing of either). The worker touches it every
HEARTBEAT_SECONDS from its consumer's event loop, only while the consumer is connected to the
broker (a consumer step: Celery stops it when the connection is lost and starts it again once
reconnected), so the file ages when the worker is hung, cut off from Redis, or gone. Beat
touches it at each tick of its scheduler, which wakes at least every HEARTBEAT_SECONDS.

docker-compose.yml's healthchecks read the file's age with the standard library alone
(`CHECK`): `celery inspect ping` says the same of the worker but starts Django and imports
every task module for each check, 2.8 s of CPU and 136 MB here (2 cores, load 4), every
interval, on the machine the worker shares.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from celery import bootsteps
from celery.beat import PersistentScheduler

HEARTBEAT_SECONDS = 10.0
# The healthcheck's bound on the file's age: several heartbeats missed, not one late.
MAX_AGE_SECONDS = 60
# The check docker-compose.yml runs, `{path}` the file: exit 0 only for a file touched within
# MAX_AGE_SECONDS (a missing file raises: exit 1).
CHECK = "import os, sys, time; sys.exit(time.time() - os.stat('{path}').st_mtime > {max_age})"

logger = logging.getLogger("engram.heartbeat")


def heartbeat_file() -> Path | None:
    path = os.environ.get("ENGRAM_HEARTBEAT_FILE", "")
    return Path(path) if path else None


def touch() -> None:
    path = heartbeat_file()
    if path is None:
        return
    try:
        path.touch()
    except OSError as exc:  # an unwritable path: said, never fatal to the worker or beat
        logger.warning("heartbeat file %s not touched (%s)", path, exc)


class WorkerHeartbeat(bootsteps.StartStopStep):
    """A consumer step: started once the consumer is connected and consuming, stopped when
    its connection is lost (Celery restarts the consumer's steps around a reconnect)."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, parent, **kwargs):
        super().__init__(parent, **kwargs)
        self.entry = None

    def start(self, parent) -> None:
        if heartbeat_file() is None:
            return
        self.stop(parent)  # one timer entry however often the consumer restarts
        touch()
        self.entry = parent.timer.call_repeatedly(HEARTBEAT_SECONDS, touch)

    def stop(self, parent) -> None:
        if self.entry is not None:
            self.entry.cancel()
            self.entry = None

    shutdown = stop


class HeartbeatScheduler(PersistentScheduler):
    """Celery's default scheduler, touching the heartbeat file at each tick; with a heartbeat
    file it wakes at least every HEARTBEAT_SECONDS (a tick costs nothing when no task is due)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if heartbeat_file() is not None:
            self.max_interval = min(self.max_interval, HEARTBEAT_SECONDS)  # type: ignore[has-type]

    def tick(self, *args, **kwargs) -> float:
        touch()
        return super().tick(*args, **kwargs)
