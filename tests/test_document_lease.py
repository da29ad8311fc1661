"""A document's ingestion lease (ENGRAM_DOCUMENT_LEASE_SECONDS): renewed while its run lives,
taken over once it lapsed."""

import datetime as dt
import threading
import time

import pytest
from django.utils import timezone

from memory.knowledge import parsing, services
from memory.models import Chunk, Collection, Document
from tests.factories import make_workspace


def _document(workspace, text: str) -> Document:
    collection = Collection.objects.create(workspace=workspace, name="Leases")
    return Document.objects.create(
        workspace=workspace,
        collection=collection,
        content_hash="lease",
        content_type="text/markdown",
        raw=text.encode(),
    )


def test_a_dead_run_s_document_is_taken_over_once_its_lease_lapsed(settings, owner):
    """A worker killed mid-ingestion held its document for a fixed 120 s; the lease is the
    setting, and past it the next delivery (or the sweep's) takes the document over."""
    settings.ENGRAM_DOCUMENT_LEASE_SECONDS = 5
    document = _document(owner[0], "# Dead\n\nA run claimed this document, then its worker died.")
    assert services._claim(document.id)[0] == "claimed"  # then nothing: the worker was killed

    def aged(seconds: float) -> None:
        past = timezone.now() - dt.timedelta(seconds=seconds)
        Document.objects.filter(id=document.id).update(updated_at=past)

    aged(4)  # within the lease: maybe alive, left alone
    assert services.document_ingest(document_id=document.id) == "busy"
    aged(6)  # past it: dead, taken over
    assert services.document_ingest(document_id=document.id) == "ready"
    document.refresh_from_db()
    assert document.status == "ready" and document.chunks_done == document.chunks_total > 0


@pytest.mark.django_db(transaction=True)
def test_a_live_run_longer_than_its_lease_keeps_the_document(settings, monkeypatch):
    """An extraction that outlasts the lease (a large PDF on a slow machine): its run renews the
    lease while it works, so another delivery finds the document busy rather than taking it over
    and writing it too; the run then finishes it."""
    settings.ENGRAM_DOCUMENT_LEASE_SECONDS = 1.5  # renewed every 0.5 s
    workspace, _ = make_workspace()
    document = _document(workspace, "# Slow\n\nThis document takes its worker a long time to read.")
    real_extract = parsing.extract
    proceed = threading.Event()
    extracting = threading.Event()

    def slow_extract(*args, **kwargs):
        if threading.current_thread().name == "slow-run":
            extracting.set()
            proceed.wait(60)
        return real_extract(*args, **kwargs)

    monkeypatch.setattr(parsing, "extract", slow_extract)
    outcome = []
    run = threading.Thread(
        target=lambda: outcome.append(services.document_ingest(document_id=document.id)),
        name="slow-run",
    )
    run.start()
    try:
        assert extracting.wait(30)
        claimed = Document.objects.get(id=document.id).updated_at
        # Three leases pass while the run reads; every other delivery meanwhile finds it busy.
        until = time.monotonic() + 3 * settings.ENGRAM_DOCUMENT_LEASE_SECONDS
        others = []
        while time.monotonic() < until:
            others.append(services.document_ingest(document_id=document.id))
            time.sleep(0.25)
        assert set(others) == {"busy"}
        assert Document.objects.get(id=document.id).updated_at > claimed  # renewed
    finally:
        proceed.set()
        run.join(60)
    assert outcome == ["ready"]
    document.refresh_from_db()
    assert document.status == "ready" and document.run == 1  # claimed once: one run wrote it
    assert Chunk.objects.filter(document=document).count() == document.chunks_total > 0
