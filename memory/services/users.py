"""Erasure: a user's every trace in one workspace."""

from __future__ import annotations

from django.db import connection, transaction

from accounts.models import Workspace
from memory.models import Conversation, Memory, MemoryEvent, Message, ProcessingJob, Session
from memory.retrieval import terms


def user_lock(*, workspace_id: str, user_id: str, exclusive: bool = False) -> None:
    """Hold the user's lock until the transaction ends: shared by the writes of their turns,
    imports and extraction runs, exclusive for their erasure. Without it an erasure racing a turn deadlocked on the
    rows both touch, or failed on a message a turn inserted after the messages went, and the
    turn failed on the conversation deleted under it (a 500 either way); now each waits for
    the other, and a turn after the erasure starts a new conversation. Ids that hash alike
    share a lock: they only wait for each other."""
    kind = "pg_advisory_xact_lock" if exclusive else "pg_advisory_xact_lock_shared"
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {kind}(hashtextextended(%s, 0))", [_lock_key(workspace_id, user_id)]
        )


def _lock_key(workspace_id: str, user_id: str) -> str:
    return f"{len(workspace_id)}:{workspace_id}:{user_id}"


def still_the_users(job: ProcessingJob) -> bool:
    """In a background run's write transaction, before it writes: the user's lock (shared: an
    erasure waits for the write, or the write for the erasure), then whether the job is still
    there. An erasure deletes the conversation and its jobs; what the run read before it must
    not be written after it (memory_create links the source messages that still exist: a
    memory written then would outlive its user, sourceless)."""
    return bool(jobs_still_there([job]))


def jobs_still_there(jobs: list[ProcessingJob]) -> set[str]:
    """still_the_users for a run of several users' jobs, in two statements: their users' locks
    (shared, taken in one order), then the ids of the jobs still there."""
    keys = sorted({_lock_key(job.workspace_id, job.conversation.user_id) for job in jobs})
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_advisory_xact_lock_shared(hashtextextended(key, 0)))"
            " FROM unnest(%s::text[]) AS k(key)",
            [keys],
        )
    return set(
        ProcessingJob.objects.filter(pk__in=[job.pk for job in jobs]).values_list("pk", flat=True)
    )


@transaction.atomic
def user_delete(*, workspace: Workspace, user_id: str) -> dict[str, int]:
    user_lock(workspace_id=workspace.id, user_id=user_id, exclusive=True)
    scope = {"workspace": workspace, "user_id": user_id}
    counts = {
        "memories": Memory.objects.filter(**scope).delete()[1].get("memory.Memory", 0),
        "memory_events": MemoryEvent.objects.filter(**scope).delete()[0],
        "messages": Message.objects.filter(**scope).delete()[0],
    }
    deleted = Conversation.objects.filter(**scope).delete()[1]
    counts["conversations"] = deleted.get("memory.Conversation", 0)
    counts["sessions"] = Session.objects.filter(**scope).delete()[0]
    # This process's derived caches (speaker names, word counts) go too; other processes'
    # expire within a minute and only ever ranked the user's own, now deleted, rows.
    transaction.on_commit(lambda: terms.forget_user(workspace_id=workspace.id, user_id=user_id))
    return counts
