"""Memory's background work, on the "memory" queue (routed by the `memory.*` names).

Each task takes a ProcessingJob id, claims it atomically (a second delivery finds it taken or
done and returns), holds the claim's lease while it works (the process's lease thread), retries
transient failures with backoff, and records a final failure on the job: `processing.failed` —
never a silent drop. `memory.sweep_jobs` (Celery beat, completions.sweep) sends again what
was lost.

`memory.extract` also claims the other extraction jobs its conversation has queued (offline:
its workspace), and runs them as one (memory.services.processing.jobs_claim): a worker that
falls behind catches up in batches. Should a batch fail for any reason but a transient one, each of its jobs runs again
alone, so one turn's failure is recorded on its own job only.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from celery import shared_task, signals
from celery.exceptions import SoftTimeLimitExceeded
from django.db import IntegrityError, InterfaceError, OperationalError

from config.celery import time_limits
from config.common.lease_thread import renewing

if TYPE_CHECKING:
    from memory.models import ProcessingJob

logger = logging.getLogger("engram.memory")

MAX_RETRIES = 3


@signals.worker_process_init.connect
def _warm_remark_filter(**kwargs: object) -> None:
    """A pool process embeds the remark filter's examples as it starts, on a thread of its own
    (as config.celery's warm-ups): its first extraction does not pay them (~1 s of CPU)."""
    from memory.background.extraction import remarks

    threading.Thread(target=remarks.warm, name="warm-remark-filter", daemon=True).start()


def _retryable() -> tuple[type[Exception], ...]:
    """Failures a later try can get past. IntegrityError among them: a row the run relied on
    was deleted under it (a memory its user deleted while the run linked a source to it); the
    next try reads the rows as they are then. A real conflict fails the same way each try and
    is recorded after the retries."""
    from completions.providers.llm import LLMError

    return (
        LLMError,
        OperationalError,
        InterfaceError,
        IntegrityError,
        ConnectionError,
        TimeoutError,
    )


@contextlib.contextmanager
def _leased(jobs: list[ProcessingJob]) -> Iterator[None]:
    """Renew the jobs' leases every third of it while the body runs (on the process's lease
    thread: the work may sit in one long call, such as embedding 200 messages, for longer than
    a lease). Its last renewal, if one is under way, is over when this returns."""
    from memory.services.fencing import jobs_heartbeat
    from memory.services.processing import lease

    names = "memory job(s) " + ", ".join(job.id for job in jobs)
    with renewing(
        lambda: jobs_heartbeat(jobs=jobs) > 0, names=names, every=lease().total_seconds() / 3
    ):
        yield


Work = Callable[[list["ProcessingJob"]], dict]


def _run(
    task,
    job_id: str,
    work: Work,
    *,
    batch: bool = False,
    any_conversation: Callable[[ProcessingJob], bool] | None = None,
    unit: str = "",
) -> None:
    """Claim the job (with `batch`, and its conversation's other queued jobs of its kind, or
    its workspace's where `any_conversation(job)`: one run for all), run `work` on them under a
    lease, and record the outcome on each. With the `unit` the task was sent for (config.
    coalesce), its unit's jobs even when its own was taken, and the unit's task sent again
    when jobs of it are left."""
    from memory.models import ProcessingJob
    from memory.services.processing import extraction_claim, job_claim, job_send, jobs_claim

    if batch and unit:  # an extraction's task sent for its unit
        jobs, left = extraction_claim(job_id=job_id, unit=unit, any_conversation=any_conversation)
        if left:  # before the work: another worker may take them meanwhile
            job_send(job_id=job_id, kind=ProcessingJob.Kind.EXTRACT, unit=unit)
    elif batch:
        jobs = jobs_claim(job_id=job_id, any_conversation=any_conversation)
    else:
        job = job_claim(job_id=job_id)
        jobs = [job] if job is not None else []
    if not jobs:
        return  # already done, failed, or running elsewhere
    with _leased(jobs):
        _work(task, jobs, work)


def _work(task, jobs: list[ProcessingJob], work: Work) -> None:
    from memory.models import ProcessingJob
    from memory.services.fencing import jobs_finish

    Status = ProcessingJob.Status
    names = ", ".join(job.id for job in jobs)
    try:
        result = work(jobs)
    except SoftTimeLimitExceeded:
        _timed_out(jobs)
        return
    except _retryable() as exc:
        error = f"{type(exc).__name__}: {exc}"
        if task.request.retries < MAX_RETRIES:
            jobs_finish(jobs=jobs, status=Status.PENDING, error=error)
            # the retry claims them all again (their own tasks found them taken and returned)
            raise task.retry(exc=exc, countdown=2**task.request.retries) from exc
        if isinstance(exc, IntegrityError) and len(jobs) > 1:
            # a conflict that outlived the retries may be one job's input: each alone
            logger.warning("memory jobs %s failed together after retries: %s", names, error)
            _one_by_one(jobs, work)
            return
        logger.warning("memory job(s) %s failed after retries: %s", names, error)
        jobs_finish(jobs=jobs, status=Status.FAILED, error=error)
        return
    except Exception as exc:  # recorded on the job, and logged with its traceback
        if len(jobs) > 1:
            logger.exception("memory jobs %s failed together; running them one by one", names)
            _one_by_one(jobs, work)
            return
        logger.exception("memory job %s failed", names)
        jobs_finish(jobs=jobs, status=Status.FAILED, error=f"{type(exc).__name__}: {exc}")
        return
    logger.info("memory job(s) %s done: %s", names, result)
    _done(jobs, result)


def _one_by_one(jobs: list[ProcessingJob], work: Work) -> None:
    """One job's bad input must not fail the others taken with it: each alone, in the turns'
    order."""
    in_order = sorted(jobs, key=lambda job: job.upto_message_id)
    for done, job in enumerate(in_order):
        try:
            _alone(job, work)
        except SoftTimeLimitExceeded:
            _timed_out([job])  # alone, it does not fit its time
            _alone_next(in_order[done + 1 :])
            return


def _timed_out(jobs: list[ProcessingJob]) -> None:
    """A run out of time: a job run alone fails; jobs run together each run alone next."""
    from memory.models import ProcessingJob
    from memory.services.fencing import jobs_finish

    if len(jobs) == 1:
        jobs_finish(jobs=jobs, status=ProcessingJob.Status.FAILED, error="time limit exceeded")
    else:
        _alone_next(jobs)


def _alone_next(jobs: list[ProcessingJob]) -> None:
    """Queued again, each to be claimed alone (processing.TIMED_OUT_IN_BATCH; the sweep sends
    them)."""
    from memory.models import ProcessingJob
    from memory.services.fencing import jobs_finish
    from memory.services.processing import TIMED_OUT_IN_BATCH

    jobs_finish(jobs=jobs, status=ProcessingJob.Status.PENDING, error=TIMED_OUT_IN_BATCH)


def _done(jobs: list[ProcessingJob], result: dict) -> None:
    from memory.models import ProcessingJob
    from memory.services.fencing import jobs_finish

    if result.get("finished"):  # recorded with the run's memories, in its last commit
        return
    # a fallback is no failure, but its reason stays on the record
    jobs_finish(
        jobs=jobs,
        status=ProcessingJob.Status.DONE,
        error=result.get("fallback", ""),
        extractor=result.get("extractor", ""),
    )


def _alone(job: ProcessingJob, work: Work) -> None:
    """One job of a batch that failed, run by itself: a transient failure leaves it PENDING
    (the sweep sends it again after the grace), any other is recorded on it."""
    from memory.models import ProcessingJob
    from memory.services.fencing import jobs_finish

    Status = ProcessingJob.Status
    try:
        result = work([job])
    except SoftTimeLimitExceeded:
        raise  # the batch's own handler records it on this job and the rest
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, _retryable()):
            jobs_finish(jobs=[job], status=Status.PENDING, error=error)
        else:
            logger.exception("memory job %s failed", job.id)
            jobs_finish(jobs=[job], status=Status.FAILED, error=error)
        return
    _done([job], result)


@shared_task(
    name="memory.extract",
    bind=True,
    acks_late=True,
    ignore_result=True,
    max_retries=MAX_RETRIES,
    **time_limits("memory.extract"),
)
def extract(self, job_id: str, unit: str = "") -> None:
    """`unit`: what the web coalesced this task's sends by (memory.services.processing.
    extraction_unit); its pending mark goes before the claim (config.coalesce says why)."""
    from config.coalesce import taken
    from memory.background.extraction.runner import extraction_run, runs_offline

    if unit:
        taken(self.name, unit)
    # An upstream that still fails on the last try leaves the turn to the offline extractor.
    last_try = self.request.retries >= MAX_RETRIES
    _run(
        self,
        job_id,
        lambda jobs: extraction_run(jobs=jobs, fallback_on_error=last_try),
        batch=True,
        # Offline, many users' turns share a run; with an LLM each conversation is its own call.
        any_conversation=lambda job: runs_offline(job.workspace),
        unit=unit,
    )


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

    # One summary job per conversation at a time (summary_enqueue): nothing to batch.
    _run(self, job_id, lambda jobs: summary_run(job=jobs[0]))


@shared_task(
    name="memory.extract_unanswered", ignore_result=True, **time_limits("memory.extract_unanswered")
)
def extract_unanswered() -> None:
    """Celery beat's minute: extraction for the turns whose answer never came (their web
    process died mid-turn), which no turn's finish enqueued."""
    from memory.services.unanswered import unanswered_extract

    unanswered_extract()
