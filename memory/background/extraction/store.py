"""A user's memories held in memory for one extraction run: nearest neighbours and slots."""

from __future__ import annotations

import json

import numpy as np
from django.db.models import BinaryField, F, Func, Q

from accounts.models import Workspace
from config.common import rows
from config.common.statements import ranking_cursor
from config.common.vectors import vector_binary
from memory.fields import EMBEDDING_DIMENSIONS as DIMENSIONS
from memory.models import Memory

# Enough for any real user; beyond it, the oldest are left out of de-duplication.
MAX_LOADED = 20_000


def _binary_vector() -> Func:
    """The embedding in pgvector's binary form (int16 dimensions, int16 unused, big-endian
    float4s), read with np.frombuffer rather than parsed from '[0.1,...]' text in Python: the
    same vectors, and a user's 854 memories load in 38-41 ms instead of 135-183 ms (measured,
    2026-12-03; what is left is making the Memory objects)."""
    return Func(F("embedding"), function="vector_send", output_field=BinaryField())


# `embedding` comes as its binary form (_binary_vector), into the store's array; `search` is
# never read.
_LOADED_WITHOUT = ("search", "embedding")

# What `around_many` loads, in one statement written once per number of query vectors: for
# each user (u.n), their vectors' k nearest memories (exact, over the user's rows) and every
# memory of their slots (the ORM's `metadata__slot__in`: jsonb -> text compared as jsonb).
# The nearest ids are an InitPlan, run once a user: as a plain subquery of the load
# PostgreSQL may run it again for every memory it filters (make eval's ingestion took 2.6x as
# long). A run of many users' single turns read them one statement a user, a turn each
# (bench/README.md, "Thirty-second session"); a lone turn's run reads its one user here too
# (`around`: its own statement, the same plan under a one-row LATERAL, with the vectors bound
# in binary where it formatted each as text).
_AROUND_MANY = """
SELECT u.n, {columns}, vector_send(memory_memory.embedding)
FROM unnest(%(users)s::varchar[]) WITH ORDINALITY AS u(user_id, n)
CROSS JOIN LATERAL (
 SELECT memory_memory.* FROM memory_memory
 WHERE memory_memory.workspace_id = %(workspace)s AND memory_memory.user_id = u.user_id
 AND memory_memory.embedding IS NOT NULL
 AND (memory_memory.id = ANY(ARRAY(
       SELECT n.id FROM (
        SELECT q.vector FROM (VALUES {queries}) AS q(vector, n)
        WHERE q.n = u.n
       ) AS q
       CROSS JOIN LATERAL (
        SELECT m.id FROM memory_memory m
        WHERE m.workspace_id = %(workspace)s AND m.user_id = u.user_id AND m.embedding IS NOT NULL
        ORDER BY m.embedding <=> q.vector LIMIT %(k)s
       ) n))
      OR (memory_memory.metadata -> 'slot') = ANY(ARRAY(
       SELECT s.slot FROM unnest(%(slots)s::text[]::jsonb[], %(slots_of)s::bigint[]) AS s(slot, n)
       WHERE s.n = u.n)))
 ORDER BY memory_memory.updated_at DESC LIMIT %(limit)s
) AS memory_memory
ORDER BY u.n, memory_memory.updated_at DESC
"""
# By the number of query vectors: each one bound in pgvector's binary form (vector_recv:
# config.common.vectors), where `unnest(%s::text[]::vector[])` had each formatted as 384-float
# text (vector_text: 141-333 µs a vector) and parsed back by PostgreSQL; the same float32s.
_AROUND_MANY_SQL: dict[int, str] = {}
_QUERY_ROW = "(%(v{i})b::vector, %(o{i})s::bigint)"


class UserMemories:
    """A user's memories (by default all of them, newest first, up to MAX_LOADED), their
    vectors in one array; `around` loads only what a run over known vectors can meet."""

    def __init__(self, workspace: Workspace, user_id: str, only: Q | None = None) -> None:
        self.workspace = workspace
        self.user_id = user_id
        found = Memory.objects.filter(workspace=workspace, user_id=user_id, embedding__isnull=False)
        if only is not None:
            found = found.filter(only)
        # `embedding` stays deferred: the vectors live in self.vectors; memory_update sets a
        # memory's new one before it saves.
        rows = list(
            found.order_by("-updated_at")
            .defer("search", "embedding")
            .annotate(vector_bytes=_binary_vector())[:MAX_LOADED]
        )
        self._vectors = np.zeros((max(64, 2 * len(rows)), DIMENSIONS), dtype=np.float32)
        for i, row in enumerate(rows):
            self._vectors[i] = np.frombuffer(row.vector_bytes, dtype=">f4", offset=4)
            del row.vector_bytes
        self.memories: list[Memory] = list(rows)

    @classmethod
    def around(
        cls, workspace: Workspace, user_id: str, *, vectors: np.ndarray, k: int, slots: set[str]
    ) -> UserMemories:
        """Only the memories a run over these vectors can meet, in one statement: each
        vector's k nearest, and every memory of the slots. nearest(v, k) for one of the vectors
        and by_slot then answer as over all the user's memories — the k nearest of v are among
        them, and what the run adds or changes is added here as it goes — while a run's cost
        no longer grows with how many memories the user has (a user's 854 took 38-41 ms to
        load whole). around_many's statement for one user (one query builder, not two)."""
        return cls.around_many(workspace, {user_id: (vectors, slots)}, k=k)[user_id]

    @classmethod
    def around_many(
        cls, workspace: Workspace, users: dict[str, tuple[np.ndarray, set[str]]], *, k: int
    ) -> dict[str, UserMemories]:
        """`around` for each user (their vectors and slots: `users`), in one statement."""
        if not users:
            return {}
        ids = list(users)
        params: dict = {"users": ids, "workspace": workspace.id, "k": k, "limit": MAX_LOADED}
        params |= {"slots": [], "slots_of": []}
        count = 0
        for n, user_id in enumerate(ids, start=1):
            vectors, slots = users[user_id]
            for vector in vectors:
                params[f"v{count}"], params[f"o{count}"] = vector_binary(vector), n
                count += 1
            params["slots"] += [json.dumps(slot) for slot in sorted(slots)]
            params["slots_of"] += [n] * len(slots)
        sql = _AROUND_MANY_SQL.get(count)
        if sql is None:
            # no vector at all: a row that matches no user (n 0), typed
            queries = ", ".join(_QUERY_ROW.format(i=i) for i in range(count))
            sql = _AROUND_MANY_SQL[count] = _AROUND_MANY.format(
                columns=rows.columns(Memory, without=_LOADED_WITHOUT),
                queries=queries or "(NULL::vector, 0::bigint)",
            )
        # the nearest memories are a ranking: planned with their values (config.common.statements)
        with ranking_cursor() as cursor:
            cursor.execute(sql, params)
            found = cursor.fetchall()
        by_user: dict[str, list[tuple]] = {user_id: [] for user_id in ids}
        for row in found:
            by_user[ids[row[0] - 1]].append(row[1:])
        stores = {}
        for user_id, its in by_user.items():
            store = stores[user_id] = cls.__new__(cls)
            store._load(workspace, user_id, its)
        return stores

    def _load(self, workspace: Workspace, user_id: str, found: list[tuple]) -> None:
        """From rows of `_AROUND`'s shape: the memory's columns, then its vector (binary)."""
        self.workspace = workspace
        self.user_id = user_id
        self._vectors = np.zeros((max(64, 2 * len(found)), DIMENSIONS), dtype=np.float32)
        self.memories = []
        for i, row in enumerate(found):
            self._vectors[i] = np.frombuffer(row[-1], dtype=">f4", offset=4)
            self.memories.append(rows.instance(Memory, row, without=_LOADED_WITHOUT))

    @property
    def vectors(self) -> np.ndarray:
        return self._vectors[: len(self.memories)]

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
        count = len(self.memories)
        if count == len(self._vectors):  # grown by doubling: adding n memories copies O(n)
            self._vectors = np.concatenate([self._vectors, np.zeros_like(self._vectors)])
        self._vectors[count] = np.asarray(vector, dtype=np.float32)
        self.memories.append(memory)

    def replace(self, memory: Memory, vector) -> None:
        for i, m in enumerate(self.memories):
            if m.id == memory.id:
                self.memories[i] = memory
                self._vectors[i] = np.asarray(vector, dtype=np.float32)
                return
        self.add(memory, vector)

    def remove(self, memory_id: str) -> None:
        keep = [i for i, m in enumerate(self.memories) if m.id != memory_id]
        self.memories = [self.memories[i] for i in keep]
        vectors = self._vectors[keep] if keep else np.zeros((0, DIMENSIONS), dtype=np.float32)
        self._vectors = np.concatenate([vectors, np.zeros((64, DIMENSIONS), dtype=np.float32)])
