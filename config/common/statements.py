"""The rankings' statements: planned with their values every time, never prepared.

The database connections bind parameters on the server and prepare a statement once it ran
five times on its connection (config.env.prepared_statements), so PostgreSQL plans it no more.
After five runs of a prepared statement PostgreSQL may switch to a generic plan, made without
the values: measured on the rankings' statements (bench/README.md, "Search latency, stage by
stage"), it changed their results, a memory ranking's row set for 4 of 40 questions and a
message ranking's order for 3, and a generic plan of a chunk ranking may walk the approximate
graph index where the values would pick the exact scan of the user's rows. A statement run
unprepared goes as psycopg's unnamed statement, which PostgreSQL plans at bind time with the
values (a custom plan, constants folded as in the text Django wrote before): the same plans
and results as before (tests/test_prepared_statements.py), their planning still paid.

ranking_cursor() is that one mechanism: every statement that ranks by similarity (memory.
retrieval's rankings, the extractor's nearest memories) runs through it, none through a flag at
its call.
"""

from __future__ import annotations

from typing import Any

import psycopg
from django.db.backends.utils import CursorWrapper

from config.common.vectors import server_cursor


class _Unprepared(psycopg.Cursor):
    """A cursor whose statements are never prepared, whatever the connection's threshold."""

    def execute(
        self, query: Any, params: Any = None, *, prepare: bool | None = None, **kwargs: Any
    ) -> _Unprepared:
        return super().execute(query, params, prepare=False, **kwargs)


def ranking_cursor() -> CursorWrapper:
    """A cursor of Django's connection whose statements are planned with their values each
    run (unprepared, parameters bound on the server; VectorBytes go in binary, as a
    binding_cursor's); Django's wrapper still logs and counts them."""
    return server_cursor(_Unprepared)
