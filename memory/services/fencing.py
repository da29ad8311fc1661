"""A run's writes on the jobs it claimed (memory.services.processing claims them), each fenced
by the attempt it was claimed with: held still, its lease renewed, its outcome recorded. A run
that lost its lease (the sweep took the job back, another run claimed it again) writes nothing.

Below the claims and the tasks: the user's lock (memory.services.users) locks a run's held
jobs with its writes, and took this from memory.services.processing, which enqueues the tasks
that run the extraction that takes that lock.
"""

from __future__ import annotations

from django.db import connection
from django.db.models import Q, QuerySet
from django.utils import timezone

from memory.models import ProcessingJob

Status = ProcessingJob.Status


def _fenced(jobs: list[ProcessingJob]) -> Q:
    """This run's claims: each job with the attempt number it was claimed with."""
    fence = Q(pk__in=[])
    for job in jobs:
        fence |= Q(id=job.id, attempts=job.attempts)
    return fence & Q(status=Status.RUNNING)


# _fenced as SQL written once, for the statements of every run (its held jobs' lock, its
# finish): the ORM built and compiled their Q again each time (with the claim written once,
# a lone turn's job 12.4 -> 11.6 ms of CPU; bench/README.md, "Twenty-fifth session").
# The ids' ANY first: the primary key finds the rows (the pairs alone, PostgreSQL scanned
# every unfinished job's index entry).
_FENCED_SQL = (
    "id = ANY(%s::varchar[])"
    " AND (id, attempts) IN (SELECT * FROM unnest(%s::varchar[], %s::integer[]))"
    " AND status = %s"
)


def _fence(jobs: list[ProcessingJob]) -> list[list[str] | list[int] | str]:
    """_FENCED_SQL's parameters."""
    ids = [job.id for job in jobs]
    return [ids, ids, [job.attempts for job in jobs], Status.RUNNING.value]


def jobs_held_locked(*, jobs: list[ProcessingJob]) -> set[str]:
    """The ids of those of the jobs still this run's claims (jobs_held), their rows locked
    until the transaction ends."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT id FROM memory_processingjob WHERE {_FENCED_SQL} FOR UPDATE", _fence(jobs)
        )
        return {row[0] for row in cursor.fetchall()}


def jobs_held(*, jobs: list[ProcessingJob]) -> QuerySet[ProcessingJob]:
    """Those of the jobs still this run's claims (claimed with the same attempt, still
    RUNNING): not deleted with their conversation, not taken back by the sweep after their
    lease lapsed, not claimed again by another run."""
    return ProcessingJob.objects.filter(_fenced(jobs))


def jobs_heartbeat(*, jobs: list[ProcessingJob]) -> int:
    """Renew the claims' leases; how many are still this run's (0: it lost them all)."""
    return ProcessingJob.objects.filter(_fenced(jobs)).update(updated_at=timezone.now())


def job_heartbeat(*, job: ProcessingJob) -> bool:
    """Renew the claim's lease; False when the job is no longer this run's (it lost the lease)."""
    return jobs_heartbeat(jobs=[job]) == 1


def jobs_finish(
    *, jobs: list[ProcessingJob], status: str, error: str = "", extractor: str = ""
) -> int:
    """Record the run's outcome on the jobs still this run's (how many: another claim may
    have taken one since)."""
    values: list = [str(status), error[:2000], timezone.now(), *([extractor] if extractor else [])]
    extractor_set = ", extractor = %s" if extractor else ""
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE memory_processingjob SET status = %s, error = %s, updated_at = %s"
            f"{extractor_set} WHERE {_FENCED_SQL}",
            [*values, *_fence(jobs)],
        )
        return cursor.rowcount


def job_finish(*, job: ProcessingJob, status: str, error: str = "", extractor: str = "") -> bool:
    """Record the run's outcome, unless another claim took the job since (then False)."""
    return jobs_finish(jobs=[job], status=status, error=error, extractor=extractor) == 1
