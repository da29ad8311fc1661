"""PostgreSQL's CPU for the worker's writes of a remembered turn, statement by statement.

    DATABASE_URL=postgres://postgres@127.0.0.1:PORT/engram .venv/bin/python bench/bench_pg_writes.py

Against a database with bench_turn_cpu.py's turns in it (its ENGRAM_DATA_DIR's PostgreSQL, on
this machine: the backend's CPU is read from /proc), everything in transactions rolled back:

- a run's message index update (memory.services.indexing.messages_index_update) over the
  stored messages, 17 a statement, with the vectors as pgvector text in the statement (as it
  was) and as binary parameters (as it is): the backend's and this process's CPU a message;
- a memory's writes (insert, source link, update) with every index, and without the ones
  migration 0019 drops;
- a job's writes (insert, claim, finish) and a message's insert with every index, and without
  the ones migration 0020 drops.

Old and new alternate, `--rounds` times. CPU time, not wall clock: other work on the machine
moves it less.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.base")
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:1/0")  # settings want one; not used
import django  # noqa: E402

django.setup()
from config.common.vectors import VectorBytes, _VectorBytesDumper, vector_binary  # noqa: E402
from memory.services.indexing import vector_text  # noqa: E402

_UPDATE = (
    "UPDATE memory_message AS m SET embedding = COALESCE(v.own{cast}, m.embedding),"
    " search_text = v.search_text, context_embedding = v.context{cast}"
    " FROM (VALUES {values}) AS v(id, own, search_text, context)"
    " WHERE m.id = v.id AND m.workspace_id = %s"
)
DROPPED_0019 = [
    "memory_search_gin",
    "memory_memory_workspace_id_df1cc20d",
    "memory_memory_workspace_id_df1cc20d_like",
    "memory_memory_id_f80b7899_like",
    "memory_memory_sources_memory_id_7d9906d0",
    "memory_memory_sources_memory_id_7d9906d0_like",
    "memory_memory_sources_message_id_48f66b35_like",
]

DROPPED_0020 = [
    "memory_processingjob_conversation_id_9f211cae",
    "memory_processingjob_conversation_id_9f211cae_like",
    "memory_processingjob_id_9f4a959e_like",
    "memory_processingjob_workspace_id_a2c93350_like",
    "memory_message_session_id_905eb8df_like",
]


def backend_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def index_update(url: str, binary: bool) -> tuple[float, float]:
    """(backend, client) CPU ms a message."""
    with psycopg.connect(url) as conn:
        pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        rows = conn.execute(
            "SELECT id, workspace_id, vector_send(embedding), search_text, "
            "vector_send(context_embedding) FROM memory_message WHERE embedding IS NOT NULL "
            "ORDER BY created_at DESC LIMIT 400"
        ).fetchall()
        cursor = psycopg.Cursor(conn) if binary else psycopg.ClientCursor(conn)
        cursor.adapters.register_dumper(VectorBytes, _VectorBytesDumper)
        form, cast = (vector_binary, "") if binary else (vector_text, "::vector")
        holder = "(%s, %b::vector, %s, %b::vector)" if binary else "(%s, %s, %s, %s)"
        by_workspace: dict[str, list] = {}
        for row in rows:
            by_workspace.setdefault(row[1], []).append(row)
        server, client, done = backend_cpu(pid), time.process_time(), 0
        for round_ in range(4):
            for workspace, mine in by_workspace.items():
                for start in range(0, len(mine), 17):
                    chunk, params = mine[start : start + 17], []
                    for id_, _, own, text, context in chunk:
                        own_v = np.frombuffer(own, ">f4", offset=4).astype(np.float32)
                        ctx_v = np.frombuffer(context, ">f4", offset=4).astype(np.float32)
                        params += [id_, form(own_v), f"{text} {round_}", form(ctx_v)]
                    values = ", ".join([holder] * len(chunk))
                    cursor.execute(_UPDATE.format(cast=cast, values=values), [*params, workspace])
                    done += len(chunk)
        server, client = backend_cpu(pid) - server, time.process_time() - client
        conn.rollback()
    return 1000 * server / max(done, 1), 1000 * client / max(done, 1)


def memory_writes(url: str, drop: bool) -> float:
    """Backend CPU ms a memory: its insert, a source link and an update."""
    with psycopg.connect(url) as conn:
        pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        for name in DROPPED_0019 if drop else []:
            conn.execute(f"DROP INDEX IF EXISTS {name}")
        rows = conn.execute(
            "SELECT DISTINCT ON (m.id) m.id, s.message_id FROM memory_memory m "
            "JOIN memory_memory_sources s ON s.memory_id = m.id LIMIT 300"
        ).fetchall()
        began, done = backend_cpu(pid), 0
        for round_ in range(3):
            for memory, message in rows:
                new = f"{memory}x{round_}"
                conn.execute(
                    "INSERT INTO memory_memory (id, workspace_id, user_id, text, kind, event_date,"
                    " metadata, created_at, updated_at, search_text, embedding) SELECT %s,"
                    " workspace_id, user_id, text, kind, event_date, metadata, now(), now(),"
                    " search_text, embedding FROM memory_memory WHERE id = %s",
                    [new, memory],
                )
                conn.execute(
                    "INSERT INTO memory_memory_sources (memory_id, message_id) VALUES (%s, %s)"
                    " ON CONFLICT DO NOTHING",
                    [new, message],
                )
                conn.execute(
                    "UPDATE memory_memory SET text = text || ' y', search_text = search_text"
                    " || ' y', updated_at = now() WHERE id = %s",
                    [new],
                )
                done += 1
        spent = backend_cpu(pid) - began
        conn.rollback()
    return 1000 * spent / max(done, 1)


def job_writes(url: str, drop: bool) -> float:
    """Backend CPU ms a turn's job (insert, claim, finish) and its two messages' inserts."""
    with psycopg.connect(url) as conn:
        pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        for name in DROPPED_0020 if drop else []:
            conn.execute(f"DROP INDEX IF EXISTS {name}")
        jobs = conn.execute(
            "SELECT id, conversation_id FROM memory_processingjob ORDER BY created_at DESC"
            " LIMIT 300"
        ).fetchall()
        began = backend_cpu(pid)
        for i, (job, conversation) in enumerate(jobs):
            for n in range(2):
                conn.execute(
                    "INSERT INTO memory_message (id, workspace_id, conversation_id, session_id,"
                    " user_id, role, name, content, raw, metadata, token_count, incomplete,"
                    " created_at, search_text) SELECT id || %s, workspace_id, conversation_id,"
                    " session_id, user_id, role, name, content, raw, metadata, token_count,"
                    " incomplete, now(), '' FROM memory_message WHERE conversation_id = %s"
                    " LIMIT 1",
                    [f"x{i}.{n}", conversation],
                )
            conn.execute(
                "INSERT INTO memory_processingjob (id, workspace_id, conversation_id, kind, status,"
                " upto_message_id, after_message_id, attempts, error, extractor, created_at,"
                " updated_at) SELECT id || 'x', workspace_id, conversation_id, kind, 'pending',"
                " upto_message_id || 'x', after_message_id, 0, '', '', now(), now()"
                " FROM memory_processingjob WHERE id = %s",
                [job],
            )
            conn.execute(
                "UPDATE memory_processingjob SET status = 'running', attempts = attempts + 1,"
                " updated_at = now() WHERE id = %s",
                [job + "x"],
            )
            conn.execute(
                "UPDATE memory_processingjob SET status = 'done', updated_at = now() WHERE id = %s",
                [job + "x"],
            )
        spent = backend_cpu(pid) - began
        conn.rollback()
    return 1000 * spent / max(len(jobs), 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    url = os.environ["DATABASE_URL"]
    for _ in range(args.rounds):
        for binary in (False, True):
            server, client = index_update(url, binary)
            name = "binary parameters" if binary else "vectors as text"
            print(
                f"index update, {name:17s}: backend {server:.3f}, client {client:.3f} ms a message"
            )
        for drop in (False, True):
            name = "without 0019's" if drop else "every index"
            print(f"memory writes, {name:16s}: backend {memory_writes(url, drop):.3f} ms a memory")
        for drop in (False, True):
            name = "without 0020's" if drop else "every index"
            print(f"job + 2 messages, {name:14s}: backend {job_writes(url, drop):.3f} ms a turn")
    print(f"load average {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
