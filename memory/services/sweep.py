"""The sweep: background work whose send was lost, or whose worker died, is sent again.

The database is the source of truth; the broker only carries wake-ups. Celery beat runs
`memory.sweep_jobs` every ENGRAM_JOB_SWEEP_SECONDS, and each run sends again:
- a job PENDING for longer than ENGRAM_JOB_GRACE_SECONDS since it was last sent (the send
  failed with Redis down, or the message was lost with Redis' data);
- a job RUNNING whose lease (ENGRAM_JOB_LEASE_SECONDS, renewed by its worker) lapsed: its worker
  was killed. It goes back to PENDING, or to FAILED after ENGRAM_JOB_MAX_ATTEMPTS claims;
- a knowledge document QUEUED past the grace, or PROCESSING past its own lease
  (ENGRAM_DOCUMENT_LEASE_SECONDS, renewed by its ingestion).
Sending re-stamps `updated_at`, so a job is sent at most once per grace. The claim
(compare-and-set) makes any extra delivery a no-op, but not a free one: ~1.7 ms of the worker's
CPU each (2,000 deliveries of a job already done, measured). Behind a backlog every pending job
is past the grace, and sending them all again fed the worker that was already behind up to 100
such deliveries a second (500 a sweep). So pending jobs are sent again only while the broker's
queue holds fewer messages than there are pending jobs: while it holds as many, each may still
have its own (a backlog, not a loss) and the lost one is sent when the queue has drained to
below the count — about when its lost message would have run; a title task's message in the same
queue counts too, so at the latest when the queue is empty. A queue that Redis lost reads as
empty. Extraction jobs are sent for their unit (config.coalesce: one task waits per workspace,
or per conversation with an LLM), so the queue holds one message a unit, not a job: the count
is of units. What the sweep sends, it sends once a unit — one task claims the unit's jobs — and
whether or not the unit's pending mark is set: a mark may outlive its lost task.
Queued knowledge documents behind their own queue's backlog (a bulk upload) likewise.
One sweeper at a time: a transaction-scoped advisory lock; a second sweep finds it taken and
returns.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, Q
from django.utils import timezone

from config.celery import queue_lengths
from memory.knowledge.services import document_lease, document_send
from memory.models import Document, ProcessingJob
from memory.services.processing import (
    TIMED_OUT_IN_BATCH,
    extraction_unit,
    extraction_unit_scope,
    job_send,
    lease,
)

logger = logging.getLogger("engram.memory")

Status = ProcessingJob.Status
# pg_try_advisory_xact_lock's key: any constant no other lock in Engram uses.
SWEEP_LOCK = 0x656E6772616D  # "engram"
BATCH = 500


@dataclass
class Swept:
    sent: int = 0  # jobs sent again (pending past the grace, or running past the lease)
    failed: int = 0  # jobs whose workers died ENGRAM_JOB_MAX_ATTEMPTS times
    queued: int = 0  # pending past the grace, not sent: the queue may hold their messages
    documents: int = 0  # knowledge documents sent again
    documents_queued: int = 0  # queued past the grace, not sent: as `queued`
    locked: bool = False  # another sweep was running: this one did nothing


def jobs_sweep() -> Swept:
    """Send again what is due (see the module docstring); the sends go out after commit."""
    swept = Swept()
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [SWEEP_LOCK])
            if not cursor.fetchone()[0]:
                swept.locked = True
                return swept
        now = timezone.now()
        grace = now - dt.timedelta(seconds=settings.ENGRAM_JOB_GRACE_SECONDS)
        due = list(
            ProcessingJob.objects.select_for_update(skip_locked=True)
            .filter(
                Q(status=Status.PENDING, updated_at__lt=grace)
                | Q(status=Status.RUNNING, updated_at__lt=now - lease())
            )
            .order_by("updated_at")
            .values_list(
                "id", "kind", "status", "attempts", "workspace_id", "conversation_id", "error"
            )[:BATCH]
        )
        pending = [row for row in due if row[2] == Status.PENDING]
        if pending and _queue_covers("memory.*", _pending_jobs):
            swept.queued = len(pending)
            due = [row for row in due if row[2] != Status.PENDING]
        limit = settings.ENGRAM_JOB_MAX_ATTEMPTS
        lost = {row[0] for row in due if row[2] == Status.RUNNING}
        exhausted = {row[0] for row in due if row[2] == Status.RUNNING and row[3] >= limit}
        if exhausted:
            ProcessingJob.objects.filter(id__in=exhausted).update(
                status=Status.FAILED, error=f"its worker was lost {limit} times", updated_at=now
            )
        resend = [_send_for(*row) for row in due if row[0] not in exhausted]
        ProcessingJob.objects.filter(id__in=[i for i, _, _ in resend]).update(
            status=Status.PENDING, updated_at=now
        )
        if lost:
            logger.warning("sweep: %d running job(s) had lost their worker", len(lost))
        swept.sent, swept.failed = len(resend), len(exhausted)
        documents = _due_documents(now, swept)
        swept.documents = len(documents)

        def send() -> None:
            units = set()
            for job_id, kind, unit in resend:
                if unit in units:
                    continue  # one task claims the unit's due jobs (extraction_claim)
                if unit:
                    units.add(unit)
                # Its pending mark or not: the mark may outlive a lost task (config.coalesce).
                job_send(job_id=job_id, kind=kind, unit=unit, force=True)
            for document_id in documents:
                document_send(document_id)

        if resend or documents:
            transaction.on_commit(send)
    return swept


def _send_for(
    job_id: str,
    kind: str,
    status: str,
    attempts: int,
    workspace_id: str,
    conversation: str,
    error: str,
) -> tuple[str, str, str]:
    """(job, kind, unit): an extraction job is sent for its unit (config.coalesce), unless it
    ran out of time in a batch and must run alone."""
    if kind != ProcessingJob.Kind.EXTRACT or error == TIMED_OUT_IN_BATCH:
        return job_id, kind, ""
    return job_id, kind, extraction_unit(workspace_id=workspace_id, conversation_id=conversation)


def _queue_covers(route: str, waiting: Callable[[], int]) -> bool:
    """Whether the broker queue of the tasks `route` holds at least one message per thing
    waiting (`waiting()`). The queue is read first: a thing sent between the two reads counts
    as waiting without its message (one send too many), never the other way round."""
    queue = settings.CELERY_TASK_ROUTES[route]["queue"]
    queued = queue_lengths([queue]).get(queue, 0)
    return queued > 0 and queued >= waiting()


def _pending_jobs() -> int:
    """The messages the pending jobs may have in the queue: one a job, but one a unit for the
    extraction jobs sent for their unit (config.coalesce). One statement."""
    _, field = extraction_unit_scope()
    coalesced = Q(kind=ProcessingJob.Kind.EXTRACT) & ~Q(error=TIMED_OUT_IN_BATCH)
    counts = ProcessingJob.objects.filter(status=Status.PENDING).aggregate(
        alone=Count("id", filter=~coalesced), units=Count(field, distinct=True, filter=coalesced)
    )
    return counts["alone"] + counts["units"]


def _queued_documents() -> int:
    return Document.objects.filter(status=Document.Status.QUEUED).count()


def _due_documents(now: dt.datetime, swept: Swept) -> list[str]:
    grace = now - dt.timedelta(seconds=settings.ENGRAM_JOB_GRACE_SECONDS)
    stale = now - document_lease()
    due = list(
        Document.objects.select_for_update(skip_locked=True)
        .filter(
            Q(status=Document.Status.QUEUED, updated_at__lt=grace)
            | Q(status=Document.Status.PROCESSING, updated_at__lt=stale)
        )
        .order_by("updated_at")
        .values_list("id", "status")[:BATCH]
    )
    queued = [i for i, status in due if status == Document.Status.QUEUED]
    if queued and _queue_covers("knowledge.*", _queued_documents):
        swept.documents_queued = len(queued)
        due = [(i, status) for i, status in due if status != Document.Status.QUEUED]
    ids = [i for i, _ in due]
    # back to QUEUED, re-stamped: the ingestion resumes from its last embedded batch
    Document.objects.filter(id__in=ids).update(status=Document.Status.QUEUED, updated_at=now)
    return ids
