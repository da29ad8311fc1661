"""Usage records, written off the request path.

The request path only appends to an in-process buffer (no I/O, ~1 µs); a daemon thread
bulk-inserts the buffer every ENGRAM_USAGE_FLUSH_SECONDS, and at exit. While the database is
down the records wait in the buffer (bounded); a record whose workspace vanished meanwhile is
dropped (logged), never retried forever.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from decimal import Decimal
from operator import attrgetter

from django.conf import settings

from config.common.setting import setting

logger = logging.getLogger("engram.usage")

_MAX_BUFFER = 50_000
MAX_COUNT = 2**31 - 1  # the usage record's token columns (PostgreSQL integer)


def count(value: object) -> int | None:
    """A token figure of the upstream's usage if it is one (a whole number from 0 to
    MAX_COUNT), else None, as if not reported. A workspace's own upstream can report anything:
    a negative figure gave credits back to its budget, a float or a string was a 500 that left
    the request's reservation standing, and one past the column's range stopped every
    workspace's usage records from being written (each flush failed on it)."""
    if type(value) is int and 0 <= value <= MAX_COUNT:
        return value
    return None


def cache_tokens(usage: dict) -> tuple[int | None, int | None, int | None]:
    """(read from, written to, of those written for an hour) the upstream's cache, of an
    OpenAI usage's prompt tokens: `prompt_tokens_details.cached_tokens`, `.cache_write_tokens`
    (which Anthropic's translation fills from cache_creation_input_tokens, as OpenRouter names
    it) and `.cache_write_1h_tokens` (from its cache_creation.ephemeral_1h_input_tokens),
    counts or None. The one reader for the charge and the usage record."""
    details = usage.get("prompt_tokens_details")
    if not isinstance(details, dict):
        return None, None, None
    return (
        count(details.get("cached_tokens")),
        count(details.get("cache_write_tokens")),
        count(details.get("cache_write_1h_tokens")),
    )


def now() -> datetime:
    """django.utils.timezone.now without its read of settings.USE_TZ (~3,500 instructions)."""
    return datetime.now(tz=UTC if setting("USE_TZ") else None)


def stamped(*, admitted_ms: int | None, started: datetime) -> datetime:
    """A usage record's time: when its request was admitted (its limits' reservation,
    accounts.limits.limiter.Admission.at_ms), else when it started; never when it ended. A
    stream that crossed midnight (or a month's end) was charged in the period it started in
    and recorded in the next: the next period's budget, seeded from the records, counted it
    again, and /v1/usage put it in a day its limits never saw."""
    if admitted_ms:
        return datetime.fromtimestamp(admitted_ms / 1000, tz=UTC if setting("USE_TZ") else None)
    return started


@dataclass
class Usage:
    workspace_id: str
    request_id: str
    status_code: int
    latency_ms: float
    api_key_id: str = ""
    user_id: str = ""
    client_request_id: str = ""
    model: str = ""
    upstream_model: str = ""
    provider: str = ""
    stream: bool = False
    error_code: str = ""
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    upstream_ms: float | None = None
    incomplete: bool = False
    agent_id: str = ""
    agent_version: int | None = None
    credits: float | None = None
    cached_tokens: int | None = None
    cache_write_tokens: int | None = None
    credits_per_usd: Decimal | None = None  # the unit of `credits`
    created_at: datetime = field(default_factory=now)
    usage_estimated: bool = False  # the tokens are the estimate charged (no usage reported)


class UsageBuffer:
    def __init__(self) -> None:
        self._items: list[Usage] = []
        # Records of a flush that failed: written or not, as its commit may have been made
        # and its acknowledgement lost with the connection (_unwritten says which).
        self._unsure: list[Usage] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._flush_lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def add(self, usage: Usage) -> None:
        with self._lock:
            if len(self._items) + len(self._unsure) >= _MAX_BUFFER:
                logger.error("usage buffer full; dropping a record", extra={"n": _MAX_BUFFER})
                return
            self._items.append(usage)
            if self._thread is None:
                self._start()

    def _start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="engram-usage", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            self._wake.wait(settings.ENGRAM_USAGE_FLUSH_SECONDS)
            self._wake.clear()
            try:
                self.flush()
            except Exception as exc:  # the flusher must survive a database outage
                logger.warning("usage flush failed (%s); will retry", type(exc).__name__)

    def flush(self) -> int:
        """Write everything buffered so far; returns how many rows were written."""
        from django.db import close_old_connections

        with self._flush_lock:
            with self._lock:
                items, self._items = self._items, []
            unsure, self._unsure = self._unsure, []
            if not items and not unsure:
                return 0
            try:
                return _write((_unwritten(unsure) if unsure else []) + items)
            except Exception:  # database unavailable: keep the records for the next flush
                with self._lock:
                    self._unsure = (unsure + items)[: max(0, _MAX_BUFFER - len(self._items))]
                raise
            finally:
                close_old_connections()

    def pending(self) -> bool:
        return bool(self._items or self._unsure)


def _unwritten(items: list[Usage]) -> list[Usage]:
    """Those of a failed flush's records that are not in the table. The flush may have failed
    after its commit (the connection lost before the acknowledgement came: a database restart,
    a network cut), and writing them all again counted and charged those requests twice
    (tests/test_faults_limits.py). A record is its workspace, request id and creation time to
    the microsecond (a client's x-request-id may name two requests); one query per slice, on
    the (workspace, created_at) index, only after a failure."""
    from completions.models import UsageRecord

    written: set[tuple[str, str, datetime]] = set()
    for start in range(0, len(items), _CHECK_SLICE):
        part = items[start : start + _CHECK_SLICE]
        written.update(
            UsageRecord.objects.filter(
                workspace_id__in={item.workspace_id for item in part},
                created_at__in=[item.created_at for item in part],
                request_id__in={item.request_id for item in part},
            ).values_list("workspace_id", "request_id", "created_at")
        )
    if not written:
        return items
    logger.warning("usage flush: %d record(s) were written by the flush that failed", len(written))
    return [i for i in items if (i.workspace_id, i.request_id, i.created_at) not in written]


_CHECK_SLICE = 1000
_COLUMNS = tuple(f.name for f in fields(Usage))
_SLICE = 64
_row = attrgetter(*_COLUMNS)


def _write(items: list[Usage]) -> int:
    """COPY the rows in (little Python work while holding the GIL the event loop needs); if
    one row breaks a constraint (its workspace was deleted) or is refused as data, insert one
    by one and drop it: kept, it failed every flush, and no workspace's usage was written."""
    from django.db import DataError, IntegrityError, connection
    from psycopg import DataError as PgDataError
    from psycopg import IntegrityError as PgIntegrityError

    from completions.models import UsageRecord

    table = UsageRecord._meta.db_table
    if connection.vendor == "postgresql":
        try:
            with connection.cursor() as cursor:
                sql = f"COPY {table} ({', '.join(_COLUMNS)}) FROM STDIN"
                with cursor.cursor.copy(sql) as copy:
                    for start in range(0, len(items), _SLICE):
                        for item in items[start : start + _SLICE]:
                            copy.write_row(_row(item))
                        time.sleep(0)  # hand the GIL back to the event loop between slices
            return len(items)
        # the raw cursor's errors are not wrapped
        except (IntegrityError, DataError, PgIntegrityError, PgDataError):
            pass
    written = 0
    for item in items:
        try:
            UsageRecord.objects.create(**asdict(item))
            written += 1
        except (IntegrityError, DataError):
            logger.warning("usage record dropped", extra={"request": item.request_id})
    return written


buffer = UsageBuffer()
atexit.register(lambda: buffer.flush() if buffer.pending() else None)


_observe: Callable[[Usage], None] | None = None  # completions.metrics.observe, once loaded


def record(usage: Usage) -> None:
    global _observe
    # The upstream's figures as they came (completions.gateway): only those the columns hold.
    usage.prompt_tokens = count(usage.prompt_tokens)
    usage.completion_tokens = count(usage.completion_tokens)
    usage.total_tokens = count(usage.total_tokens)
    usage.cached_tokens = count(usage.cached_tokens)
    usage.cache_write_tokens = count(usage.cache_write_tokens)
    buffer.add(usage)
    if _observe is None:  # prometheus-client loads on the first record, not at import; an
        # import statement here cost every request a pass through the import machinery
        from completions.metrics import observe

        _observe = observe
    _observe(usage)
