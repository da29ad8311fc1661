"""The user's lock, and an extraction run's check under it that its jobs are still its own.

Taken by every write of a user's data (turns, imports, extraction runs, summaries, titles,
edits by hand: shared) and by their erasure (memory.services.users: exclusive), so it stands
below them all; in memory.services.users, beside the erasure, every writer imported the
erasure's module, and the erasure imports the writers it deletes with.
"""

from __future__ import annotations

from django.db import connection

from memory.models import ProcessingJob
from memory.services.fencing import jobs_held_locked


def user_lock(
    *, workspace_id: str, user_id: str, exclusive: bool = False, relaxed_commit: bool = False
) -> None:
    """Hold the user's lock until the transaction ends: shared by the writes of their turns,
    imports and extraction runs, exclusive for their erasure. Without it an erasure racing a turn deadlocked on the
    rows both touch, or failed on a message a turn inserted after the messages went, and the
    turn failed on the conversation deleted under it (a 500 either way); now each waits for
    the other, and a turn after the erasure starts a new conversation. Ids that hash alike
    share a lock: they only wait for each other.

    `relaxed_commit`: the transaction's commit does not wait for its WAL flush either
    (memory.turn.conversation.load_and_store says why), set in the same statement (a turn's
    SET LOCAL was a statement of its own)."""
    kind = "pg_advisory_xact_lock" if exclusive else "pg_advisory_xact_lock_shared"
    relaxed = ", set_config('synchronous_commit', 'off', true)" if relaxed_commit else ""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {kind}(hashtextextended(%s, 0)){relaxed}", [_lock_key(workspace_id, user_id)]
        )


def _lock_key(workspace_id: str, user_id: str) -> str:
    return f"{len(workspace_id)}:{workspace_id}:{user_id}"


def still_held(jobs: list[ProcessingJob]) -> bool:
    """In a background run's write transaction, before it writes: whether every one of its
    jobs is still its own (jobs_still_held)."""
    return len(jobs_still_held(jobs)) == len({job.pk for job in jobs})


def jobs_still_held(jobs: list[ProcessingJob]) -> set[str]:
    """In a background run's write transaction, before it writes: the users' locks (shared,
    taken in one order: an erasure waits for the write, or the write for the erasure), then the
    ids of the jobs still this run's claims (memory.services.fencing.jobs_held_locked), their rows
    locked until the transaction ends, so no other run claims them before this one commits.

    What the run read must not be written when a job is no longer its own: an erasure deleted
    the conversation and its jobs (a memory written then would outlive its user, sourceless),
    or the run's lease lapsed (its worker was stopped, or paused longer than the lease) and
    the sweep gave the job to another run, which writes the same memories (each one twice)."""
    keys = sorted({_lock_key(job.workspace_id, job.conversation.user_id) for job in jobs})
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_advisory_xact_lock_shared(hashtextextended(key, 0)))"
            " FROM unnest(%s::text[]) AS k(key)",
            [keys],
        )
    return jobs_held_locked(jobs=jobs)
