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
from memory.models import Message, MessageTokens

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
    *,
    workspace: Workspace,
    messages: list[Message],
    embedded: set[str],
    tokens: dict[str, bytes] | None = None,
) -> None:
    """Write the messages' search_text and context_embedding, and the embedding of those whose
    ids are in `embedded` (only those: a run working on the next messages may be writing the
    vectors of the others at the same time), and their packed token vectors (`tokens`, by id;
    memory.retrieval.late), replacing any an earlier run stored — in the same statement, a
    statement a worker's lone turn does not pay for twice."""
    table = connection.ops.quote_name(Message._meta.db_table)
    tokens = tokens or {}
    for start in range(0, len(messages), BATCH):
        chunk = messages[start : start + BATCH]
        params: list = []
        for m in chunk:
            own = vector_binary(m.embedding) if m.id in embedded else None
            params += [m.id, own, m.search_text, vector_binary(m.context_embedding)]
        values = ", ".join(["(%s, %b::vector, %s, %b::vector)"] * len(chunk))
        packed = [(m.id, tokens[m.id]) for m in chunk if m.id in embedded and m.id in tokens]
        store, store_params = _tokens_stored(workspace, packed)
        with binding_cursor() as cursor:
            cursor.execute(
                f"{store}UPDATE {table} AS m SET embedding = COALESCE(v.own, m.embedding),"
                " search_text = v.search_text, context_embedding = v.context"
                f" FROM (VALUES {values}) AS v(id, own, search_text, context)"
                " WHERE m.id = v.id AND m.workspace_id = %s",
                [*store_params, *params, workspace.id],
            )


def message_tokens_store(*, workspace: Workspace, packed: dict[str, bytes]) -> None:
    """Store these messages' packed token vectors alone (a backfill of messages embedded before
    they were kept: memory.background.tokens_backfill), BATCH a statement."""
    items = list(packed.items())
    for start in range(0, len(items), BATCH):
        clause, params = _tokens_stored(workspace, items[start : start + BATCH])
        with binding_cursor() as cursor:
            cursor.execute(clause + "SELECT 1", params)


def _tokens_stored(workspace: Workspace, packed: list[tuple[str, bytes]]) -> tuple[str, list]:
    """The WITH clause that stores these messages' tokens, and its parameters: only for the
    workspace's messages that still exist (a message deleted while the run embedded it gets
    none). No locking clause: it would skip the rows the UPDATE of the same statement changes
    (a row updated by its own command is not locked again), which is every one of them."""
    if not packed:
        return "", []
    tokens = connection.ops.quote_name(MessageTokens._meta.db_table)
    messages = connection.ops.quote_name(Message._meta.db_table)
    values = ", ".join(["(%s, %b::bytea)"] * len(packed))
    clause = (
        f"WITH stored_tokens AS (INSERT INTO {tokens} (message_id, packed)"
        f" SELECT t.id, t.packed FROM (VALUES {values}) AS t(id, packed)"
        f" JOIN {messages} AS tm ON tm.id = t.id AND tm.workspace_id = %s"
        " ON CONFLICT (message_id) DO UPDATE SET packed = EXCLUDED.packed) "
    )
    return clause, [*(x for pair in packed for x in pair), workspace.id]
