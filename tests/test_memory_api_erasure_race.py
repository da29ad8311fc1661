"""A memory added by hand while its user is being erased: wholly before the erasure (erased with
the user) or wholly after (kept, with its history), as a turn, an import or an extraction run."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
from django.db import connection, connections, transaction

from memory.models import Memory, MemoryEvent


def _waiting_on_a_user_lock() -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE wait_event_type = 'Lock' AND wait_event = 'advisory'"
        )
        return cursor.fetchone()[0] > 0


def test_a_memory_added_during_an_erasure_is_added_after_it_with_its_history(engram_server, owner):
    from memory.services.locks import user_lock

    workspace, key = owner
    headers = {"Authorization": f"Bearer {key}"}
    erasing, go_on = threading.Event(), threading.Event()

    def erase() -> None:
        # DELETE /v1/users/eve's statements, paused between its memories and their history
        # (memory.services.users.user_delete): a memory added then lost its ADD, and its
        # GET /history said "No memory" of a memory that GET read.
        try:
            with transaction.atomic():
                user_lock(workspace_id=workspace.id, user_id="eve", exclusive=True)
                Memory.objects.filter(workspace=workspace, user_id="eve").delete()
                erasing.set()
                assert go_on.wait(60)
                MemoryEvent.objects.filter(workspace=workspace, user_id="eve").delete()
        finally:
            connections.close_all()

    def add() -> httpx.Response:
        with httpx.Client(base_url=engram_server.url, headers=headers, timeout=60) as http:
            return http.post("/v1/memories", json={"user_id": "eve", "text": "Eve likes figs."})

    with ThreadPoolExecutor(max_workers=2) as pool:
        erasure = pool.submit(erase)
        assert erasing.wait(60)
        added = pool.submit(add)
        deadline = time.monotonic() + 60
        # the add either waits for the erasure's lock (as it should) or is already done
        while not added.done() and not _waiting_on_a_user_lock():
            assert time.monotonic() < deadline
            time.sleep(0.02)
        go_on.set()
        erasure.result()
        response = added.result()
    assert response.status_code == 201, response.text
    memory = response.json()
    with httpx.Client(base_url=engram_server.url, headers=headers, timeout=60) as http:
        assert http.get(f"/v1/memories/{memory['id']}").status_code == 200
        history = http.get(f"/v1/memories/{memory['id']}/history")
        assert history.status_code == 200, history.text
        assert [e["event"] for e in history.json()["data"]] == ["ADD"]
