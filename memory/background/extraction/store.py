"""A user's memories held in memory for one extraction job: nearest neighbours and slots."""

from __future__ import annotations

import numpy as np

from accounts.models import Workspace
from memory.models import Memory

# Enough for any real user; beyond it, the oldest are left out of de-duplication.
MAX_LOADED = 20_000


class UserMemories:
    def __init__(self, workspace: Workspace, user_id: str) -> None:
        self.workspace = workspace
        self.user_id = user_id
        rows = list(
            Memory.objects.filter(workspace=workspace, user_id=user_id, embedding__isnull=False)
            .order_by("-updated_at")
            .defer("search")[:MAX_LOADED]
        )
        self.memories: list[Memory] = rows
        self.vectors = (
            np.array([np.asarray(m.embedding, dtype=np.float32) for m in rows])
            if rows
            else np.zeros((0, 384), dtype=np.float32)
        )

    def nearest(
        self, vector, k: int = 1, min_similarity: float = -1.0
    ) -> list[tuple[Memory, float]]:
        if not self.memories:
            return []
        sims = self.vectors @ np.asarray(vector, dtype=np.float32)
        order = np.argsort(-sims)[:k]
        return [(self.memories[i], float(sims[i])) for i in order if sims[i] >= min_similarity]

    def by_slot(self, slot: str, subject: str) -> Memory | None:
        for memory in self.memories:
            meta = memory.metadata or {}
            if meta.get("slot") == slot and meta.get("subject") == subject:
                return memory
        return None

    def get(self, memory_id: str) -> Memory | None:
        return next((m for m in self.memories if m.id == memory_id), None)

    def add(self, memory: Memory, vector) -> None:
        self.memories.append(memory)
        self.vectors = np.vstack([self.vectors, np.asarray(vector, dtype=np.float32)[None, :]])

    def replace(self, memory: Memory, vector) -> None:
        for i, m in enumerate(self.memories):
            if m.id == memory.id:
                self.memories[i] = memory
                self.vectors[i] = np.asarray(vector, dtype=np.float32)
                return
        self.add(memory, vector)

    def remove(self, memory_id: str) -> None:
        keep = [i for i, m in enumerate(self.memories) if m.id != memory_id]
        self.memories = [self.memories[i] for i in keep]
        self.vectors = self.vectors[keep] if keep else np.zeros((0, 384), dtype=np.float32)
