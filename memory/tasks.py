"""Memory's background work, on the "memory" queue (routed by the `memory.*` names).

Each task takes a ProcessingJob id, claims it atomically (a second delivery finds it taken or
done and returns), retries transient failures with backoff, and records a final failure on the
job: `processing.failed` — never a silent drop.
"""

from __future__ import annotations

import logging

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from django.db import InterfaceError, OperationalError

logger = logging.getLogger("engram.memory")

MAX_RETRIES = 3


def _retryable() -> tuple[type[Exception], ...]:
    from completions.providers.llm import LLMError

    return (LLMError, OperationalError, InterfaceError, ConnectionError, TimeoutError)


def _run(task, job_id: str, work) -> None:
    from memory.models import ProcessingJob
    from memory.services.processing import job_claim, job_finish

    job = job_claim(job_id=job_id)
    if job is None:
        return  # already done, failed, or running elsewhere
    try:
        result = work(job=job)
    except SoftTimeLimitExceeded:
        job_finish(job_id=job_id, status=ProcessingJob.Status.FAILED, error="time limit exceeded")
        return
    except _retryable() as exc:
        error = f"{type(exc).__name__}: {exc}"
        if task.request.retries < MAX_RETRIES:
            job_finish(job_id=job_id, status=ProcessingJob.Status.PENDING, error=error)
            raise task.retry(exc=exc, countdown=2**task.request.retries) from exc
        logger.warning("memory job %s failed after retries: %s", job_id, error)
        job_finish(job_id=job_id, status=ProcessingJob.Status.FAILED, error=error)
        return
    except Exception as exc:  # recorded on the job, and logged with its traceback
        logger.exception("memory job %s failed", job_id)
        job_finish(
            job_id=job_id,
            status=ProcessingJob.Status.FAILED,
            error=f"{type(exc).__name__}: {exc}",
        )
        return
    logger.info("memory job %s done: %s", job_id, result)
    job_finish(job_id=job_id, status=ProcessingJob.Status.DONE)


@shared_task(
    name="memory.extract",
    bind=True,
    acks_late=True,
    ignore_result=True,
    max_retries=MAX_RETRIES,
    soft_time_limit=900,
    time_limit=960,
)
def extract(self, job_id: str) -> None:
    from memory.background.extraction.runner import extraction_run

    _run(self, job_id, extraction_run)


@shared_task(
    name="memory.summarize",
    bind=True,
    acks_late=True,
    ignore_result=True,
    max_retries=MAX_RETRIES,
    soft_time_limit=300,
    time_limit=330,
)
def summarize(self, job_id: str) -> None:
    from memory.background.summarization import summary_run

    _run(self, job_id, summary_run)
