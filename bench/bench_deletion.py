#!/usr/bin/env python
"""Deleting a big workspace: time and peak memory of accounts.services.workspace_delete.

    .venv/bin/python bench/bench_deletion.py [--rows 50000 --method service|cascade]

A workspace is filled in SQL (generate_series, a few seconds) with --rows messages (with their
embeddings), --rows memories (each sourced from one message), --rows memory events and --rows
usage records, over 500 conversations; a second workspace gets 100 of each and must come out
untouched. Then a fresh child process deletes the big one and prints its wall time, the
child's RSS before and its peak RSS (ru_maxrss): `service` is the service the admin and the
API call, `cascade` is Django's `workspace.delete()` (its collector, what the service did
before the bulk deletion), for comparison.

Runs against its own database (`engram_bench_deletion`) on the configured PostgreSQL (the
embedded one unless DATABASE_URL is set).
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
BENCH_DB = "engram_bench_deletion"
CONVERSATIONS = 500


def database_url(name: str = BENCH_DB) -> str:
    """The bench's own database `name` on the configured PostgreSQL, created if missing."""
    from config.embedded import ensure_environment

    ensure_environment()
    url = urlsplit(os.environ["DATABASE_URL"])
    import psycopg

    with psycopg.connect(urlunsplit(url._replace(path="/postgres")), autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{name}"')
    return urlunsplit(url._replace(path=f"/{name}"))


def django_setup(url: str) -> None:
    os.environ["DATABASE_URL"] = url
    redis = urlsplit(os.environ["REDIS_URL"])
    os.environ["REDIS_URL"] = urlunsplit(redis._replace(path="/13"))  # the bench's own
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.base")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    import django

    django.setup()


def fill(workspace_id: str, rows: int) -> None:
    """Conversations, messages, memories with their sources, events and usage, in SQL."""
    from django.db import connection

    vector = "[" + ",".join(["0.05"] * 384) + "]"
    w = workspace_id
    with connection.cursor() as c:
        c.execute(
            "INSERT INTO memory_conversation (id, workspace_id, external_id, user_id, title,"
            " summary, summary_upto, metadata, fingerprint, extraction, retry_fingerprint,"
            " created_at, updated_at)"
            " SELECT %s || '_c' || g, %s, 'ext-' || g, 'user-' || g, '', '', '', '{}', '', true, '',"
            " now(), now() FROM generate_series(0, %s) g",
            [w, w, CONVERSATIONS - 1],
        )
        c.execute(
            "INSERT INTO memory_message (id, workspace_id, conversation_id, user_id, role, name,"
            " content, raw, metadata, token_count, incomplete, created_at, search_text,"
            " embedding, context_embedding)"
            " SELECT %s || '_m' || g, %s, %s || '_c' || (g %% %s), 'user-' || (g %% %s), 'user',"
            " '', 'I am planning a cycling trip number ' || g, '{}', '{}', 9, false,"
            " now() - g * interval '1 s',"
            " 'I am planning a cycling trip number ' || g, %s::vector, %s::vector"
            " FROM generate_series(1, %s) g",
            [w, w, w, CONVERSATIONS, CONVERSATIONS, vector, vector, rows],
        )
        c.execute(
            "INSERT INTO memory_memory (id, workspace_id, user_id, text, kind, metadata,"
            " created_at, updated_at, search_text, embedding)"
            " SELECT %s || '_f' || g, %s, 'user-' || (g %% %s), 'Plans cycling trip ' || g,"
            " 'fact', '{}', now(), now() - g * interval '1 s', 'Plans cycling trip ' || g,"
            " %s::vector"
            " FROM generate_series(1, %s) g",
            [w, w, CONVERSATIONS, vector, rows],
        )
        c.execute(
            "INSERT INTO memory_memory_sources (memory_id, message_id)"
            " SELECT %s || '_f' || g, %s || '_m' || g FROM generate_series(1, %s) g",
            [w, w, rows],
        )
        c.execute(
            "INSERT INTO memory_memoryevent (id, workspace_id, memory_id, user_id, event,"
            " old_text, new_text, reason, actor, source_message_ids, created_at)"
            " SELECT %s || '_e' || g, %s, %s || '_f' || g, 'user-' || (g %% %s), 'ADD', '',"
            " 'Plans cycling trip ' || g, '', 'api', '[]', now() FROM generate_series(1, %s) g",
            [w, w, w, CONVERSATIONS, rows],
        )
        c.execute(
            "INSERT INTO completions_usagerecord (workspace_id, api_key_id, user_id, request_id,"
            " client_request_id, model, upstream_model, provider, stream, status_code,"
            " error_code, prompt_tokens, completion_tokens, total_tokens, latency_ms,"
            " incomplete, agent_id, created_at)"
            " SELECT %s, '', 'user-' || (g %% %s), 'req_' || g, '', 'm', 'm', 'openai', false,"
            " 200, '', 10, 5, 15, 1.0, false, '', now() - g * interval '1 s'"
            " FROM generate_series(1, %s) g",
            [w, CONVERSATIONS, rows],
        )
        c.execute("ANALYZE")


def counts(workspace_id: str) -> dict[str, int]:
    from completions.models import UsageRecord
    from memory.models import Conversation, Memory, MemoryEvent, Message

    models = (Conversation, Message, Memory, MemoryEvent, UsageRecord)
    return {
        m._meta.model_name: m._default_manager.filter(workspace_id=workspace_id).count()
        for m in models
    }


def delete(workspace_id: str, method: str) -> None:
    """In the child: delete, then print the seconds, the RSS before and the peak RSS (MB)."""
    import psutil

    from accounts.models import Workspace
    from accounts.services import workspace_delete

    workspace = Workspace.objects.get(pk=workspace_id)
    before = psutil.Process().memory_info().rss / 2**20
    started = time.perf_counter()
    if method == "cascade":
        workspace.delete()
    else:
        workspace_delete(workspace=workspace)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{seconds:.2f} {before:.0f} {peak:.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--method", choices=("service", "cascade"), default="service")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        django_setup(os.environ["DATABASE_URL"])
        delete(args.child, args.method)
        return

    url = database_url()
    django_setup(url)
    from django.core.management import call_command

    call_command("migrate", "--noinput", verbosity=0)
    from accounts.models import Workspace
    from accounts.services import api_key_create, workspace_create

    Workspace.objects.filter(name__startswith="bench-deletion").delete()  # an interrupted run's
    big = workspace_create(name="bench-deletion-big")
    api_key_create(workspace=big, name="bench")
    other = workspace_create(name="bench-deletion-other")
    started = time.perf_counter()
    fill(big.id, args.rows)
    fill(other.id, 100)
    print(f"filled {counts(big.id)} in {time.perf_counter() - started:.1f} s")
    kept = counts(other.id)

    env = {**os.environ, "DATABASE_URL": url}
    child = [sys.executable, __file__, "--method", args.method, "--child", big.id]
    out = subprocess.run(child, env=env, check=True, capture_output=True, text=True).stdout
    seconds, before, peak = out.split()[-3:]
    print(
        f"{args.method}: deleted in {seconds} s; the deleting process's RSS {before} MB before,"
        f" {peak} MB at its peak"
    )
    assert not Workspace.objects.filter(pk=big.id).exists()
    assert not any(counts(big.id).values()), counts(big.id)
    assert counts(other.id) == kept, "the other workspace lost rows"
    Workspace.objects.filter(pk=other.id).delete()


if __name__ == "__main__":
    main()
