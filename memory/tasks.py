"""Memory's background work, on the "memory" queue (routed by the `memory.*` names).

Each task takes a ProcessingJob id, claims it atomically (a second delivery finds it taken or
done and returns), holds the claim's lease while it works (a heartbeat thread), retries
transient failures with backoff, and records a final failure on the job: `processing.failed` —
never a silent drop. `memory.sweep_jobs` (Celery beat) sends again what was lost.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from django.db import InterfaceError, OperationalError, connections

from config.celery import time_limits

if TYPE_CHECKING:
    from memory.models import ProcessingJob

logger = logging.getLogger("engram.memory")

MAX_RETRIES = 3


def _retryable() -> tuple[type[Exception], ...]:
    from completions.providers.llm import LLMError

    return (LLMError, OperationalError, InterfaceError, ConnectionError, TimeoutError)


@contextlib.contextmanager
def _leased(job: ProcessingJob) -> Iterator[None]:
    """Renew the job's lease every third of it while the body runs (a thread: the work may sit
    in one long call, such as embedding 200 messages, for longer than a lease)."""
    from memory.services.processing import job_heartbeat, lease

    stop = threading.Event()

    def beat() -> None:
        try:
            while not stop.wait(lease().total_seconds() / 3):
                try:
                    if not job_heartbeat(job=job):
                        logger.warning("memory job %s lost its lease", job.id)
                        return
                except (OperationalError, InterfaceError) as exc:
                    logger.warning("memory job %s: lease not renewed (%s)", job.id, exc)
        finally:
            connections.close_all()  # this thread's connection

    thread = threading.Thread(target=beat, name=f"lease-{job.id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=30)


def _run(task, job_id: str, work: Callable[[ProcessingJob], dict]) -> None:
    from memory.models import ProcessingJob
    from memory.services.processing import job_claim, job_finish

    Status = ProcessingJob.Status
    job = job_claim(job_id=job_id)
    if job is None:
        return  # already done, failed, or running elsewhere
    try:
        with _leased(job):
            result = work(job)
    except SoftTimeLimitExceeded:
        job_finish(job=job, status=Status.FAILED, error="time limit exceeded")
        return
    except _retryable() as exc:
        error = f"{type(exc).__name__}: {exc}"
        if task.request.retries < MAX_RETRIES:
            job_finish(job=job, status=Status.PENDING, error=error)
            raise task.retry(exc=exc, countdown=2**task.request.retries) from exc
        logger.warning("memory job %s failed after retries: %s", job_id, error)
        job_finish(job=job, status=Status.FAILED, error=error)
        return
    except Exception as exc:  # recorded on the job, and logged with its traceback
        logger.exception("memory job %s failed", job_id)
        job_finish(job=job, status=Status.FAILED, error=f"{type(exc).__name__}: {exc}")
        return
    logger.info("memory job %s done: %s", job_id, result)
    # a fallback is no failure, but its reason stays on the record
    job_finish(
        job=job,
        status=Status.DONE,
        error=result.get("fallback", ""),
        extractor=result.get("extractor", ""),
    )


@shared_task(
    name="memory.extract",
    bind=True,
    acks_late=True,
    ignore_result=True,
    max_retries=MAX_RETRIES,
    **time_limits("memory.extract"),
)
def extract(self, job_id: str) -> None:
    from memory.background.extraction.runner import extraction_run

    # An upstream that still fails on the last try leaves the turn to the offline extractor.
    last_try = self.request.retries >= MAX_RETRIES
    _run(self, job_id, lambda job: extraction_run(job=job, fallback_on_error=last_try))


@shared_task(
    name="memory.summarize",
    bind=True,
    acks_late=True,
    ignore_result=True,
    max_retries=MAX_RETRIES,
    **time_limits("memory.summarize"),
)
def summarize(self, job_id: str) -> None:
    from memory.background.summarization import summary_run

    _run(self, job_id, lambda job: summary_run(job=job))


@shared_task(name="memory.sweep_jobs", ignore_result=True, **time_limits("memory.sweep_jobs"))
def sweep_jobs() -> None:
    """Celery beat's tick: send again the jobs whose send or worker was lost; resolve the
    tool approvals nobody decided in time as rejected."""
    from completions.tools.services import approvals_expire
    from memory.services.sweep import jobs_sweep

    swept = jobs_sweep()
    if swept.sent or swept.failed or swept.documents:
        logger.info("sweep: %s", swept)
    approvals_expire()
