"""Vectors bound as parameters in pgvector's binary form (vector_recv), not as text.

pgvector's Django field writes a vector as its text ("[0.0123,...]"): formatting 384 floats in
the worker and PostgreSQL parsing them back. Bound in binary, a vector is 1,540 bytes packed by
numpy and read by vector_recv: a new memory's insert and a superseded memory's update
(config.common.rows), and a run's message index update (memory.services.indexing; bench/README.md,
"Twenty-fifth session").
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

import numpy as np
import psycopg
from django.db import connection
from django.db.backends.utils import CursorDebugWrapper, CursorWrapper
from pgvector import Vector
from psycopg.adapt import Dumper
from psycopg.pq import Format


class VectorBytes(bytes):
    """A vector in pgvector's binary form: int16 dimensions, int16 unused, big-endian float4s."""


class _VectorBytesDumper(Dumper):
    # Sent as it is, in binary, with no type of its own (oid 0): the statement's `%b::vector`
    # makes PostgreSQL take the parameter as a vector and read it with vector_recv.
    format = Format.BINARY
    oid = 0

    def dump(self, obj: VectorBytes) -> bytes:
        return obj


def vector_binary(vector: Iterable[float] | Vector | None) -> VectorBytes | None:
    """The vector as a parameter for `%b::vector` (a cursor of binding_cursor): the float32
    values pgvector's text would have been parsed into. None stays NULL."""
    if vector is None:
        return None
    if isinstance(vector, Vector):  # pgvector's own, as a client may set it
        return VectorBytes(vector.to_binary())
    values = np.asarray(vector, dtype=">f4")
    return VectorBytes(struct.pack(">hh", len(values), 0) + values.tobytes())


def binding_cursor() -> CursorWrapper:
    """A cursor of Django's connection that binds its parameters on the server (with
    ENGRAM_DB_PREPARED_STATEMENTS false Django's own cursors write them into the statement's
    text), so VectorBytes go in binary; Django's wrapper still logs and counts its statements
    (execute_wrapper, CaptureQueriesContext)."""
    return server_cursor(psycopg.Cursor)


def server_cursor(cursor_class: type[psycopg.Cursor]) -> CursorWrapper:
    """A `cursor_class` cursor of Django's connection, VectorBytes registered, in Django's
    wrapper."""
    connection.ensure_connection()
    connection.validate_thread_sharing()
    cursor = cursor_class(connection.connection)
    cursor.adapters.register_dumper(VectorBytes, _VectorBytesDumper)
    wrapper = CursorDebugWrapper if connection.queries_logged else CursorWrapper
    return wrapper(cursor, connection)
