"""Deleting every memory of one user (mem0's `delete_all(user_id=...)`), their conversations
kept: each memory as DELETE /v1/memories/{id} deletes it (memory_delete: a DELETE in its
history, a suppression so it is not extracted again, its conversations' summaries and titles
without it), in batches of their own transactions: a user with 100k memories holds no one
giant transaction, nor their lock (their turns wait for a batch only)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from django.db import transaction

from accounts.models import Workspace
from memory.forgotten import user_subjects
from memory.models import Memory
from memory.services.forgetting import (
    Written,
    conversations_rewrite,
    conversations_without_all,
    suppression_vectors,
)
from memory.services.locks import user_lock

BATCH = 200  # memories per transaction (and per embedder call for their suppressions)


def memories_delete(
    *,
    workspace: Workspace,
    user_id: str,
    kinds: Sequence[str] = (),
    metadata: dict | None = None,
    actor: str = "api",
    batch: int = BATCH,
) -> int:
    """The user's memories (of `kinds`, whose metadata contains `metadata`) deleted; how many.
    A memory deleted meanwhile by another call is not counted; one added meanwhile may stay
    (the batches go by id: each memory is read once). Called again, it deletes none."""
    from memory.selectors import memory_list

    subjects = user_subjects(workspace=workspace, user_id=user_id)
    deleted = 0
    after = ""
    while True:
        memories = list(
            memory_list(workspace=workspace, user_id=user_id, kinds=kinds, metadata=metadata)
            .filter(id__gt=after)
            .order_by("id")[:batch]
        )
        if not memories:
            return deleted
        after = memories[-1].id
        # Made before the user's lock, as memory_delete does: their turns wait for no embedder.
        vectors = suppression_vectors([m.text for m in memories], subjects)
        written = conversations_without_all(
            workspace=workspace,
            user_id=user_id,
            memory_ids=[m.id for m in memories],
            forgetting=vectors,
        )
        deleted += _batch_delete(
            workspace=workspace,
            user_id=user_id,
            memories=memories,
            actor=actor,
            vectors=vectors,
            subjects=subjects,
            written=written,
        )


@transaction.atomic
def _batch_delete(
    *,
    workspace: Workspace,
    user_id: str,
    memories: list[Memory],
    actor: str,
    vectors: Mapping[str, list[float]],
    subjects: frozenset[str],
    written: list[Written],
) -> int:
    from memory.services.memories import memory_delete

    user_lock(workspace_id=workspace.id, user_id=user_id, exclusive=True)
    deleted = sum(
        memory_delete(
            workspace=workspace,
            memory=memory,
            actor=actor,
            reason="every memory of the user's was deleted",
            vectors=vectors,
            subjects=subjects,
            conversations=False,  # rewritten once for the batch, below
        )
        for memory in memories
    )
    # After the batch's suppressions are recorded, as memory_delete does for one memory.
    conversations_rewrite(workspace=workspace, user_id=user_id, written=written)
    return deleted
