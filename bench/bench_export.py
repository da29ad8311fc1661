#!/usr/bin/env python
"""A big user's export: peak memory and time of the streamed export against the document built
whole, as GET /v1/users/{id}/export answered before (memory.export).

    .venv/bin/python bench/bench_export.py [--messages 50000 --conversations 50]

One user is filled in SQL (generate_series) with --messages messages (~400 characters each, a
third with a raw content list, with their embeddings) over --conversations conversations, a
session per conversation, a memory and a history entry per 10 messages (each memory sourced
from a message) and 100 agent runs with an approval each; a second user gets a little of each.
Then fresh child processes export the user, each method twice: once plain (wall and CPU time, RSS
before and peak RSS, ru_maxrss) and once under tracemalloc (the peak of Python's allocations,
which the RSS figure holds beside the interpreter and libraries). `old` builds the document
(tests.test_export_stream.whole_export: the selector at e577951) and renders it as the API did
(DRF's JSONRenderer); `new` does what the response does: memory.export.user_export_parts read
through into a spool file (config.common.streaming.spool, the data folder's spool/), then that
file read back a block at a time. Both produce the same bytes (checked).

Runs against its own database (`engram_bench_export`) on the configured PostgreSQL (the
embedded one unless DATABASE_URL is set).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import secrets
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import machine  # noqa: E402
from bench.bench_deletion import database_url, django_setup  # noqa: E402

BENCH_DB = "engram_bench_export"
USER = "exporter"
TEXT = "I am planning a cycling trip along the Norwegian coast, from Bergen to Ålesund, " * 5


def fill(workspace_id: str, user_id: str, messages: int, conversations: int) -> None:
    from django.db import connection

    vector = "[" + ",".join(["0.05"] * 384) + "]"
    w, u = workspace_id, user_id
    k = secrets.token_hex(3) + user_id[:2]  # ids' middle: short (40 characters at most), unique
    with connection.cursor() as c:
        c.execute(
            "INSERT INTO memory_conversation (id, workspace_id, external_id, user_id, title,"
            " summary, summary_upto, metadata, fingerprint, extraction, retry_fingerprint,"
            " created_at, updated_at)"
            " SELECT 'conv_' || %s || '_' || g, %s, %s || '-ext-' || g, %s,"
            " 'Trip ' || g, 'Talked about trips', '', '{}', '', true, '',"
            " now(), now()"
            " FROM generate_series(1, %s) g",
            [k, w, u, u, conversations],
        )
        c.execute(
            "INSERT INTO memory_session (id, workspace_id, external_id, user_id, conversation_id,"
            " metadata, created_at, last_active_at)"
            " SELECT 'sess_' || %s || '_' || g, %s, %s || '-s-' || g, %s,"
            " 'conv_' || %s || '_' || g, '{}', now(), now()"
            " FROM generate_series(1, %s) g",
            [k, w, u, u, k, conversations],
        )
        c.execute(
            "INSERT INTO memory_message (id, workspace_id, conversation_id, session_id, user_id,"
            " role, name, content, raw, metadata, token_count, incomplete, created_at,"
            " search_text, embedding, context_embedding)"
            " SELECT 'msg_' || %s || '_' || g, %s,"
            " 'conv_' || %s || '_' || (g %% %s + 1),"
            " 'sess_' || %s || '_' || (g %% %s + 1), %s,"
            " CASE WHEN g %% 2 = 0 THEN 'user' ELSE 'assistant' END, '', %s || g,"
            " CASE WHEN g %% 3 = 0 THEN jsonb_build_object('role', 'assistant', 'content',"
            "   jsonb_build_array(jsonb_build_object('type', 'text', 'text', %s || g)))"
            "   ELSE '{}'::jsonb END,"
            " '{\"channel\": \"web\"}', 120, false, now() - g * interval '1 s', %s || g,"
            " %s::vector, %s::vector"
            " FROM generate_series(1, %s) g",
            [
                k,
                w,
                k,
                conversations,
                k,
                conversations,
                u,
                TEXT,
                TEXT,
                TEXT,
                vector,
                vector,
                messages,
            ],
        )
        memories = max(messages // 10, 1)
        c.execute(
            "INSERT INTO memory_memory (id, workspace_id, user_id, text, kind, metadata,"
            " created_at, updated_at, search_text, embedding)"
            " SELECT 'mem_' || %s || '_' || g, %s, %s, 'Plans a cycling trip ' || g,"
            " 'plan', '{}', now(), now(), 'Plans a cycling trip ' || g, %s::vector"
            " FROM generate_series(1, %s) g",
            [k, w, u, vector, memories],
        )
        c.execute(
            "INSERT INTO memory_memory_sources (memory_id, message_id)"
            " SELECT 'mem_' || %s || '_' || g, 'msg_' || %s || '_' || g"
            " FROM generate_series(1, %s) g",
            [k, k, memories],
        )
        c.execute(
            "INSERT INTO memory_memoryevent (id, workspace_id, memory_id, user_id, event,"
            " old_text, new_text, reason, actor, source_message_ids, created_at)"
            " SELECT 'mev_' || %s || '_' || g, %s,"
            " 'mem_' || %s || '_' || g, %s, 'ADD', '', 'Plans a cycling trip ' || g,"
            " '', 'extractor:llm', jsonb_build_array('msg_' || %s || '_' || g),"
            " now() FROM generate_series(1, %s) g",
            [k, w, k, u, k, memories],
        )
        runs = "(SELECT 'exec_' || %s || '_' || g AS id, g FROM generate_series(1, 100) g)"
        c.execute(
            "INSERT INTO completions_execution (id, workspace_id, agent_id, user_id,"
            " request_id, request_digest, model, route_model, stream, collection_ids,"
            " conversation_pk, session_pk, status, body, messages, steps, pending, usage, error,"
            " owner, preface, request_step, created_at, updated_at)"
            " SELECT r.id, %s, 'agent_x', %s, 'req_' || r.g, '', 'm', 'm', false, '[]', '', '',"
            " 'completed', '{}', jsonb_build_array("
            "   jsonb_build_object('role', 'system', 'content', 'the agent'),"
            "   jsonb_build_object('role', 'user', 'content', %s),"
            "   jsonb_build_object('role', 'assistant', 'content', %s)),"
            " '[]', '{}', '{\"prompt_tokens\": 300, \"completion_tokens\": 40}', '', '', '[]', 0,"
            " now(), now()"
            f" FROM {runs} r",
            [w, u, TEXT, TEXT, k],
        )
        c.execute(
            "INSERT INTO completions_approval (id, workspace_id, execution_id, user_id,"
            " tool_calls, status, reason, expires_at, created_at)"
            " SELECT 'appr_' || r.id, %s, r.id, %s, '[{\"id\": \"call_1\"}]', 'approved', '',"
            f" now(), now() FROM {runs} r",
            [w, u, k],
        )
        c.execute("ANALYZE")


def export(workspace_id: str, method: str, trace: bool) -> None:
    """In the child: export USER, then print the seconds (wall, then CPU), the RSS before and
    at the peak (MB), the traced peak (MB, 0 untraced), the queries, the bytes, their digest."""
    import psutil
    from django.db import connection
    from rest_framework.renderers import JSONRenderer

    from accounts.models import Workspace
    from config.common.streaming import BLOCK_BYTES, spool
    from memory.export import user_export_parts
    from tests.test_export_stream import whole_export

    workspace = Workspace.objects.get(pk=workspace_id)
    queries = 0

    def counted(execute, sql, params, many, context):
        nonlocal queries
        queries += 1
        return execute(sql, params, many, context)

    connection.ensure_connection()
    before = psutil.Process().memory_info().rss / 2**20
    if trace:
        tracemalloc.start()
    digest, size = hashlib.sha256(), 0
    started, cpu = time.perf_counter(), time.process_time()
    with connection.execute_wrapper(counted):
        parts: Iterable[bytes]
        if method == "old":
            parts = [JSONRenderer().render(whole_export(workspace=workspace, user_id=USER))]
        else:
            file = spool(user_export_parts(workspace=workspace, user_id=USER))
            parts = iter(lambda: file.read(BLOCK_BYTES), b"")
        for part in parts:  # what the server writes out, a part at a time
            digest.update(part)
            size += len(part)
        del parts
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    traced = tracemalloc.get_traced_memory()[1] / 2**20 if trace else 0.0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"{seconds:.2f} {cpu:.2f} {before:.0f} {peak:.0f} {traced:.1f} {queries} {size}"
        f" {digest.hexdigest()}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--conversations", type=int, default=50)
    parser.add_argument("--method", choices=("old", "new"))
    parser.add_argument("--trace", action="store_true")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        django_setup(os.environ["DATABASE_URL"])
        export(args.child, args.method, args.trace)
        return

    calibration = machine.calibration_ms()
    url = database_url(BENCH_DB)
    django_setup(url)
    from django.core.management import call_command

    call_command("migrate", "--noinput", verbosity=0)
    from accounts.models import Workspace
    from accounts.services import workspace_create

    Workspace.objects.filter(name="bench-export").delete()  # an interrupted run's
    workspace = workspace_create(name="bench-export")
    started = time.perf_counter()
    fill(workspace.id, USER, args.messages, args.conversations)
    fill(workspace.id, "someone-else", 500, 5)
    print(
        f"filled {args.messages} messages over {args.conversations} conversations"
        f" in {time.perf_counter() - started:.1f} s"
    )
    steal = machine.Steal()
    env = {**os.environ, "DATABASE_URL": url}
    digests = set()
    try:
        for method in ("old", "new"):
            runs = []
            for trace in (False, True):
                child = [sys.executable, __file__, "--method", method, "--child", workspace.id]
                child += ["--trace"] if trace else []
                done = subprocess.run(child, env=env, check=True, capture_output=True, text=True)
                runs.append(done.stdout.split()[-8:])
            seconds, cpu, before, peak, _, queries, size, digest = runs[0]
            traced = runs[1][4]
            digests.add(digest)
            print(
                f"{method}: {int(size) / 2**20:.1f} MB of JSON in {seconds} s ({cpu} s of CPU),"
                f" {queries} queries;"
                f" RSS {before} MB before, {peak} MB at the peak (+{int(peak) - int(before)} MB);"
                f" tracemalloc peak {traced} MB"
            )
    finally:
        Workspace.objects.filter(pk=workspace.id).delete()
    assert len(digests) == 1, "the two methods wrote different documents"
    print("the same bytes from both;", machine.line(calibration, steal))


if __name__ == "__main__":
    main()
