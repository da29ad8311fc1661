#!/usr/bin/env python
"""The admin's big lists at volume: how long a page takes, and what counting every row cost.

    .venv/bin/python bench/bench_admin_lists.py [--rows 200000 --users 51000]

A workspace is filled in SQL (bench/bench_deletion.py's fill: --rows messages, memories, events
and usage records) plus one memory for each of --users end users; then each list page is
fetched through Django's test client as a superuser (three times; the best is printed) beside
the exact count the page ran before config.admin_paging. The workspace is deleted at the end.
Uses bench_deletion's own database.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_deletion import database_url, django_setup, fill  # noqa: E402

PAGES = {
    "end users": ("admin:memory_enduser_changelist", None),
    "messages": ("admin:memory_message_changelist", "memory.Message"),
    "memories": ("admin:memory_memory_changelist", "memory.Memory"),
    "memory events": ("admin:memory_memoryevent_changelist", "memory.MemoryEvent"),
    "usage records": ("admin:completions_usagerecord_changelist", "completions.UsageRecord"),
}


def best(seconds: list[float]) -> str:
    return f"{min(seconds) * 1000:.0f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--users", type=int, default=51_000)
    parser.add_argument("--slow-ms", type=float, default=0, help="print statements this slow")
    args = parser.parse_args()
    django_setup(database_url())
    from django.apps import apps
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext
    from django.urls import reverse

    from accounts.models import Workspace
    from accounts.services import workspace_create, workspace_delete
    from memory.admin_users import EndUsers

    call_command("migrate", "--noinput", verbosity=0)
    Workspace.objects.filter(name__startswith="bench-admin").delete()
    workspace = workspace_create(name="bench-admin")
    started = time.perf_counter()
    fill(workspace.id, args.rows)
    with connection.cursor() as c:
        c.execute(
            "INSERT INTO memory_memory (id, workspace_id, user_id, text, kind, metadata,"
            " created_at, updated_at, search_text)"
            " SELECT %s || '_u' || g, %s, 'enduser-' || g, 'A fact.', 'fact', '{}', now(),"
            " now(), 'A fact.' FROM generate_series(1, %s) g",
            [workspace.id, workspace.id, args.users],
        )
        c.execute("ANALYZE")
    print(f"filled in {time.perf_counter() - started:.1f} s")
    user, _ = User.objects.get_or_create(username="bench-admin", defaults={"is_staff": True})
    user.is_superuser = user.is_staff = True
    user.save()
    client = Client()
    client.force_login(user)
    try:
        for name, (url_name, label) in PAGES.items():
            page_times, count_times = [], []
            for _ in range(3):
                t = time.perf_counter()
                with CaptureQueriesContext(connection) as queries:
                    response = client.get(reverse(url_name), HTTP_HOST="localhost")
                page_times.append(time.perf_counter() - t)
                for q in queries.captured_queries:
                    if args.slow_ms and float(q["time"]) * 1000 >= args.slow_ms:
                        print(f"  {float(q['time']) * 1000:.0f} ms: {q['sql'][:300]}")
                assert response.status_code == 200, (name, response.status_code)
                t = time.perf_counter()
                if label is None:
                    len(EndUsers())
                else:
                    apps.get_model(label)._default_manager.count()
                count_times.append(time.perf_counter() - t)
            print(f"{name}: a page {best(page_times)}; the exact count alone {best(count_times)}")
    finally:
        workspace_delete(workspace=workspace)
        user.delete()


if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.base")
    main()
