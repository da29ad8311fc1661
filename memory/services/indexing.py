"""Messages' search indexes as the background extraction computes them, written in one statement.

A run of the extractor gives each new message its vector and re-indexes it and its neighbours
(memory.background.extraction.runner.write_messages). bulk_update would send a CASE per field
and per message, the vectors as pgvector's 17-digit text, and touch each message twice (its
vector, then its windows); this sends one UPDATE ... FROM (VALUES ...) per 200 messages.
Measured on 200 LoCoMo messages: 140 ms against 260 ms, a third of the CPU.

The vectors go as bound parameters in pgvector's binary form (vector_recv), not as text in the
statement: PostgreSQL parsing two 384-float texts was half the UPDATE's CPU for each message
(0.25 against 0.12 ms of the backend's CPU a row, 1,600 rows of the bench's messages), and
formatting them in the worker 0.19 against 0.025 ms a row (bench/README.md, twenty-fifth; the binding is config.common.vectors's, shared with
config.common.rows).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from django.db import connection

from accounts.models import Workspace
from config.common.vectors import binding_cursor, vector_binary
from memory.models import Message

BATCH = 200


def vector_text(vector: Iterable[float] | None) -> str | None:
    """pgvector's text form with 9 significant digits: exact for float32 values (what the
    embedder makes), 2.2x faster to format than 17 (141 against 314 µs a vector) and a third
    shorter. One %-format over the whole vector, not a format call per value: the same text,
    ~35 % less CPU (333 against 513 µs a vector on a loaded machine; a lone turn's run
    formats ~6)."""
    if vector is None:
        return None
    values = tuple(vector.tolist() if isinstance(vector, np.ndarray) else vector)
    return "[" + ("%.9g," * len(values) % values)[:-1] + "]"


def messages_index_update(
    *, workspace: Workspace, messages: list[Message], embedded: set[str]
) -> None:
    """Write the messages' search_text and context_embedding, and the embedding of those whose
    ids are in `embedded` (only those: a run working on the next messages may be writing the
    vectors of the others at the same time)."""
    table = connection.ops.quote_name(Message._meta.db_table)
    for start in range(0, len(messages), BATCH):
        chunk = messages[start : start + BATCH]
        params: list = []
        for m in chunk:
            own = vector_binary(m.embedding) if m.id in embedded else None
            params += [m.id, own, m.search_text, vector_binary(m.context_embedding)]
        values = ", ".join(["(%s, %b::vector, %s, %b::vector)"] * len(chunk))
        with binding_cursor() as cursor:
            cursor.execute(
                f"UPDATE {table} AS m SET embedding = COALESCE(v.own, m.embedding),"
                " search_text = v.search_text, context_embedding = v.context"
                f" FROM (VALUES {values}) AS v(id, own, search_text, context)"
                " WHERE m.id = v.id AND m.workspace_id = %s",
                [*params, workspace.id],
            )
