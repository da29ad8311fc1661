"""Ingestion through the real Celery worker, resuming, de-duplication, deletion and retrieval."""

import itertools
import time

import httpx
import numpy as np
import pytest
from django.utils import timezone

from completions import request as chat_request
from config.common.errors import NotFound
from memory.knowledge import services
from memory.knowledge.search import collections_check, knowledge_search
from memory.models import Chunk, Collection, Document
from tests.collections_docs import corrupt_pdf_bytes, docx_bytes, docx_with_parts, pdf_bytes
from tests.factories import make_workspace

TOPICS = [
    "The quarterly budget review moved to the second floor meeting room.",
    "Visitors must sign the guest book at reception before entering the lab.",
    "The cafeteria serves vegetarian lasagne on Wednesdays and fish on Fridays.",
    "Printer toner is ordered through the facilities portal, never by email.",
    "Bicycle racks are behind the north entrance and are locked at midnight.",
    "The annual hackathon awards a trophy shaped like a rubber duck.",
    "Parking permits are renewed every January at the security desk.",
    "The library lends laptops for up to three days at a time.",
    "Fire drills happen on the first Monday of each quarter at ten o'clock.",
    "The roof garden grows tomatoes, basil and a stubborn lemon tree.",
]


def filler(seed: int, count: int) -> str:
    return " ".join(TOPICS[(seed + i) % len(TOPICS)] for i in range(count))


LIGHTHOUSE_FACT = (
    "The Fresnel lens of the Skerrymore lighthouse is polished every fourteen days with "
    "fine polishing rouge by the keeper."
)
BAKERY_FACT = "The sourdough starter, named Gerald, is fed at six in the morning with rye flour."


def lighthouse_pdf() -> bytes:
    return pdf_bytes(
        [
            "Lighthouse maintenance manual.\n" + filler(0, 12),
            filler(3, 8) + "\n" + LIGHTHOUSE_FACT + "\n" + filler(5, 6),
            "Appendix.\n" + filler(7, 12),
        ],
        title="Lighthouse manual",
    )


BAKERY_MD = f"""# Bakery handbook

## Opening

{filler(1, 10)}

## Sourdough

{BAKERY_FACT} The levain rests for four hours before shaping.

## Closing

{filler(4, 10)}
"""

RUNBOOK_HTML = f"""<!doctype html><html><head><title>Pager runbook</title></head><body>
<h1>Pager runbook</h1><p>{filler(2, 6)}</p><h2>Escalation</h2>
<p>When the ingest queue backs up, page the duty engineer named Priya via the orange phone.</p>
</body></html>"""


def wait_settled(http, collection_id: str, count: int, timeout: float = 240) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        docs = http.get(f"/v1/collections/{collection_id}/documents").json()["data"]
        if len(docs) == count and all(d["status"] in ("ready", "failed") for d in docs):
            return docs
        if time.monotonic() > deadline:
            raise AssertionError(f"documents did not settle: {docs}")
        time.sleep(0.25)


def search(http, ids, query, limit=3):
    resp = http.post(
        "/v1/collections/search", json={"collection_ids": ids, "query": query, "limit": limit}
    )
    assert resp.status_code == 200, resp.text
    return resp.json()["data"]


def test_worker_ingests_every_format_and_a_corrupt_pdf_fails_alone(http, celery_worker, owner):
    col = http.post("/v1/collections", json={"name": "Ops"}).json()
    url = f"/v1/collections/{col['id']}/documents"
    uploads = {
        "pdf": http.post(url, files={"file": ("manual.pdf", lighthouse_pdf(), "application/pdf")}),
        "md": http.post(url, files={"file": ("bakery.md", BAKERY_MD.encode(), "text/markdown")}),
        "docx": http.post(
            url,
            files={
                "file": (
                    "parts.docx",
                    docx_bytes([("Suppliers", [filler(6, 5)])], title="Parts list"),
                    "application/octet-stream",
                )
            },
        ),
        "html": http.post(
            url, files={"file": ("runbook.html", RUNBOOK_HTML.encode(), "text/html")}
        ),
        "text": http.post(
            url, json={"text": "Wi-Fi password for guests is lantern-42.", "title": "Wi-Fi"}
        ),
        "corrupt": http.post(
            url, files={"file": ("broken.pdf", corrupt_pdf_bytes(), "application/pdf")}
        ),
    }
    assert {k: r.status_code for k, r in uploads.items()} == dict.fromkeys(uploads, 202)
    ids = {k: r.json()["id"] for k, r in uploads.items()}

    docs = {d["id"]: d for d in wait_settled(http, col["id"], len(uploads))}
    broken = docs[ids["corrupt"]]
    assert broken["status"] == "failed" and "PDF could not be read" in broken["error"]
    assert broken["chunk_count"] == 0
    for kind in ("pdf", "md", "docx", "html", "text"):
        doc = docs[ids[kind]]
        assert doc["status"] == "ready", doc
        assert doc["error"] is None
        assert doc["chunk_count"] > 0
        assert doc["progress"] == {"done": doc["chunk_count"], "total": doc["chunk_count"]}
        chunks = Chunk.objects.filter(document_id=doc["id"])
        assert chunks.count() == doc["chunk_count"]
        assert not chunks.filter(embedding__isnull=True).exists()
        assert all(c.workspace_id == owner[0].id for c in chunks)
    assert docs[ids["pdf"]]["pages"] == 3 and docs[ids["pdf"]]["chunk_count"] >= 3
    assert docs[ids["pdf"]]["title"] == "Lighthouse manual"  # from the PDF's metadata
    assert docs[ids["md"]]["title"] == "Bakery handbook"  # from the first heading
    assert docs[ids["docx"]]["title"] == "Parts list"
    assert docs[ids["html"]]["title"] == "Pager runbook"
    headings = set(Chunk.objects.filter(document_id=ids["md"]).values_list("heading", flat=True))
    assert "Bakery handbook > Sourdough" in headings

    cases = [
        ("How often is the Fresnel lens polished?", "pdf", "polished every fourteen days"),
        ("What is the sourdough starter fed, and when?", "md", "fed at six in the morning"),
        ("Who supplies the flux capacitor?", "docx", "Zephyr Industries"),
        ("Who do I page when the ingest queue backs up?", "html", "Priya"),
        ("guest wifi password", "text", "lantern-42"),
    ]
    for query, kind, answer in cases:
        hits = search(http, [col["id"]], query)
        top = hits[0]
        assert top["document_id"] == ids[kind], (query, hits)
        assert answer in top["text"] and top["collection_id"] == col["id"]
        assert top["title"] == docs[ids[kind]]["title"] and top["object"] == "collection.chunk"
        assert answer.split()[0] in top["snippet"] and len(top["snippet"]) <= 240
        assert 0 < top["score"] <= 1 and top["score"] >= hits[-1]["score"]

    # identical bytes again: the existing, ready document; no second ingestion
    again = http.post(url, files={"file": ("copy.md", BAKERY_MD.encode(), "text/markdown")})
    assert again.status_code == 200 and again.json()["id"] == ids["md"]
    assert again.json()["status"] == "ready" and again.json()["duplicate"] is True
    assert Document.objects.filter(collection_id=col["id"]).count() == len(uploads)

    # deleting a document removes its chunks and its answers
    pdf_chunks = docs[ids["pdf"]]["chunk_count"]
    total = Chunk.objects.filter(collection_id=col["id"]).count()
    assert http.delete(f"{url}/{ids['pdf']}").status_code == 200
    assert http.get(f"{url}/{ids['pdf']}").status_code == 404
    assert not Chunk.objects.filter(document_id=ids["pdf"]).exists()
    assert Chunk.objects.filter(collection_id=col["id"]).count() == total - pdf_chunks
    hits = search(http, [col["id"]], "How often is the Fresnel lens polished?", limit=10)
    assert hits and all(h["document_id"] != ids["pdf"] for h in hits)


def test_text_with_nul_characters_is_ingested_without_them(http, celery_worker):
    """PostgreSQL text cannot hold a NUL: a PDF whose text operator draws one, UTF-16 text with
    one and a text file with one past the sample `detect` reads each failed to ingest
    ("ingestion failed (DataError); re-run it to resume", which no re-run could)."""
    col = http.post("/v1/collections", json={"name": "Nul"}).json()
    url = f"/v1/collections/{col['id']}/documents"
    pdf = pdf_bytes(["Gate code", "The gate code is 4711."], title="Gatehouse")
    pdf = pdf.replace(b"(Gate code)", b"(Gate\\000code)")  # a NUL in the page's text
    uploads = {
        "pdf": ("gate.pdf", pdf),
        "utf16": ("boat.txt", ("The boat\x00 is moored at pier nine. " * 20).encode("utf-16")),
        "late": ("kiln.txt", filler(0, 200).encode() + b"\x00 The kiln fires at dawn.\n"),
    }
    ids = {}
    for kind, (name, raw) in uploads.items():
        resp = http.post(url, files={"file": (name, raw, "application/octet-stream")})
        assert resp.status_code == 202, resp.text
        ids[kind] = resp.json()["id"]

    docs = {d["id"]: d for d in wait_settled(http, col["id"], len(uploads))}
    for kind, document_id in ids.items():
        assert docs[document_id]["status"] == "ready", (kind, docs[document_id])
    assert docs[ids["pdf"]]["title"] == "Gatehouse" and docs[ids["pdf"]]["pages"] == 2
    texts = list(Chunk.objects.filter(collection_id=col["id"]).values_list("text", flat=True))
    assert not any("\x00" in text for text in texts)
    for query, kind, answer in [
        ("What is the gate code?", "pdf", "4711"),
        ("Where is the boat moored?", "utf16", "pier nine"),
        ("When does the kiln fire?", "late", "kiln fires at dawn"),
    ]:
        top = search(http, [col["id"]], query)[0]
        assert top["document_id"] == ids[kind] and answer in top["text"], (query, top)


def test_a_second_workspace_cannot_search_or_use_the_collection(
    engram_server, owner, celery_worker
):
    workspace, key = owner
    other, other_key = make_workspace("other")
    collection = services.collection_create(workspace=workspace, name="Owner's")
    document, _ = services.document_create(
        workspace=workspace, collection=collection, raw=BAKERY_MD.encode()
    )
    theirs = services.collection_create(workspace=other, name="Other's")
    services.document_create(workspace=other, collection=theirs, raw=BAKERY_MD.encode())
    deadline = time.monotonic() + 120
    while Document.objects.exclude(status="ready").exists():
        assert time.monotonic() < deadline
        time.sleep(0.2)

    with httpx.Client(
        base_url=engram_server.url, headers={"Authorization": f"Bearer {other_key}"}
    ) as client:
        resp = client.post(
            "/v1/collections/search",
            json={"collection_ids": [theirs.id, collection.id], "query": "sourdough"},
        )
        assert resp.status_code == 404
        assert resp.json()["error"]["param"] == "collection_ids"
        assert collection.id in resp.json()["error"]["message"]
        hits = client.post(
            "/v1/collections/search", json={"collection_ids": [theirs.id], "query": "sourdough"}
        ).json()["data"]
        assert hits and {h["collection_id"] for h in hits} == {theirs.id}
        assert document.id not in {h["document_id"] for h in hits}


@pytest.fixture
def ready_collections(owner, celery_worker):
    """Two ready collections of the owner and one of another workspace, via the worker."""
    workspace = owner[0]
    other = make_workspace("other")[0]
    handbook = services.collection_create(workspace=workspace, name="Handbook")
    misc = services.collection_create(workspace=workspace, name="Misc")
    foreign = services.collection_create(workspace=other, name="Foreign")
    services.document_create(workspace=workspace, collection=handbook, raw=BAKERY_MD.encode())
    services.document_create(workspace=workspace, collection=handbook, raw=lighthouse_pdf())
    services.document_create(
        workspace=workspace,
        collection=misc,
        raw=b"The misc collection says the lighthouse lens is cleaned by drones.",
    )
    services.document_create(
        workspace=other, collection=foreign, raw=f"Foreign: {LIGHTHOUSE_FACT}".encode()
    )
    deadline = time.monotonic() + 180
    while Document.objects.exclude(status="ready").exists():
        assert time.monotonic() < deadline, list(Document.objects.values("status", "error"))
        time.sleep(0.2)
    return workspace, handbook, misc, foreign


def test_knowledge_search_ranks_the_answer_first_within_scope(ready_collections):
    workspace, handbook, misc, foreign = ready_collections
    hits = knowledge_search(
        workspace=workspace,
        collection_ids=[handbook.id],
        query="How often is the Fresnel lens polished?",
        limit=4,
    )
    assert LIGHTHOUSE_FACT in hits[0]["text"]
    assert set(hits[0]) >= {
        "collection_id",
        "document_id",
        "title",
        "chunk_index",
        "score",
        "text",
        "snippet",
    }
    assert hits[0]["title"] == "Lighthouse manual"
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    assert {h["collection_id"] for h in hits} == {handbook.id}
    chunk = Chunk.objects.get(
        document_id=hits[0]["document_id"], chunk_index=hits[0]["chunk_index"]
    )
    assert chunk.text == hits[0]["text"]

    both = knowledge_search(
        workspace=workspace,
        collection_ids=[handbook.id, misc.id],
        query="who cleans the lighthouse lens",
        limit=10,
    )
    assert {h["collection_id"] for h in both} == {handbook.id, misc.id}
    # another workspace's collection id yields nothing, even with the exact text
    assert (
        knowledge_search(
            workspace=workspace, collection_ids=[foreign.id], query=LIGHTHOUSE_FACT, limit=5
        )
        == []
    )
    # documents still being ingested are not searched
    Document.objects.filter(collection=misc).update(status="processing")
    scoped = knowledge_search(
        workspace=workspace, collection_ids=[misc.id], query="lighthouse lens", limit=5
    )
    assert scoped == []


def test_collections_check_names_the_first_unknown_or_foreign_id(ready_collections):
    workspace, handbook, misc, foreign = ready_collections
    assert collections_check(workspace=workspace, collection_ids=[handbook.id, misc.id]) is None
    assert collections_check(workspace=workspace, collection_ids=[]) is None
    for ids, named in [
        ([handbook.id, "col_nope", foreign.id], "col_nope"),
        ([foreign.id, "col_nope"], foreign.id),
        ([handbook.id, foreign.id], foreign.id),
    ]:
        with pytest.raises(NotFound) as caught:
            collections_check(workspace=workspace, collection_ids=ids)
        error = chat_request.api_error(caught.value)  # as the chat doors answer it
        assert (error.status, error.param, error.code) == (
            404,
            "x-collection-ids",
            "collection_not_found",
        )
        assert named in error.message
        assert all(i not in error.message for i in ids if i != named)


def _bare_document(workspace, text: str) -> Document:
    collection = Collection.objects.create(workspace=workspace, name="Direct")
    return Document.objects.create(
        workspace=workspace,
        collection=collection,
        content_hash=text[:64],
        content_type="text/markdown",
        raw=text.encode(),
    )


def test_ingestion_resumes_where_a_dead_worker_stopped(owner, settings):
    """A run that died after its first batch: the next run keeps that batch and embeds the rest."""
    settings.ENGRAM_INGEST_BATCH = 4
    settings.ENGRAM_CHUNK_TOKENS = 60
    text = "# Long\n\n" + "\n\n".join(filler(i, 3) for i in range(12))
    document = _bare_document(owner[0], text)

    outcome, document = services._claim(document.id)
    assert outcome == "claimed"
    services._split(document)
    chunks = Chunk.objects.filter(document=document)
    total = chunks.count()
    assert total > 8
    # the first batch was embedded and committed; then the worker died
    marker = np.zeros(384, dtype=np.float32)
    marker[7] = 1.0
    first = list(chunks.order_by("chunk_index")[:4])
    for chunk in first:
        chunk.embedding = marker
    Chunk.objects.bulk_update(first, ["embedding"])
    Document.objects.filter(id=document.id).update(chunks_done=4)

    # while its lease is fresh, another delivery leaves it alone (and the task retries later)
    assert services.document_ingest(document_id=document.id) == "busy"
    assert chunks.filter(embedding__isnull=True).count() == total - 4

    stale = timezone.now() - services.document_lease() - timezone.timedelta(seconds=1)
    Document.objects.filter(id=document.id).update(updated_at=stale)
    assert services.document_ingest(document_id=document.id) == "ready"
    document.refresh_from_db()
    assert (document.status, document.chunks_done, document.chunks_total) == ("ready", total, total)
    assert chunks.count() == total  # no chunk written twice
    kept = chunks.order_by("chunk_index")[:4]
    assert all(np.allclose(c.embedding, marker) for c in kept)  # not re-embedded
    rest = chunks.order_by("chunk_index")[4:]
    assert all(c.embedding is not None and not np.allclose(c.embedding, marker) for c in rest)

    # running again is a no-op
    assert services.document_ingest(document_id=document.id) == "skip"
    assert services.document_ingest(document_id="doc_missing") == "skip"


def _time_out_on_calls(monkeypatch, times_out) -> None:
    """The embedder raises Celery's soft time limit on the calls (counted from 1) for which
    `times_out(call)` holds, until `monkeypatch.undo()`."""
    from celery.exceptions import SoftTimeLimitExceeded

    from memory.embeddings import get_embedder

    embedder = get_embedder()
    real_embed = embedder.embed
    calls = itertools.count(1)

    def embed(texts):
        if times_out(next(calls)):
            raise SoftTimeLimitExceeded()
        return real_embed(texts)

    monkeypatch.setattr(embedder, "embed", embed)


def test_a_run_yields_after_its_slice_and_the_next_runs_finish(owner, settings, monkeypatch):
    """An ingestion embeds for INGEST_SLICE_SECONDS, then hands the worker back (memory
    extraction shares its one pool process) with its progress kept."""
    settings.ENGRAM_INGEST_BATCH = 3
    settings.ENGRAM_CHUNK_TOKENS = 60
    document = _bare_document(owner[0], "# Long\n\n" + "\n\n".join(filler(i, 3) for i in range(8)))
    monkeypatch.setattr(services, "INGEST_SLICE_SECONDS", 0.0)  # one batch a run
    outcomes = []
    while (outcome := services.document_ingest(document_id=document.id)) == "yield":
        document.refresh_from_db()
        assert document.status == "queued"  # released: the next run claims it
        outcomes.append(document.chunks_done)
    assert outcome == "ready"
    assert outcomes == list(range(3, document.chunks_total, 3))  # a batch more each run
    assert not Chunk.objects.filter(document=document, embedding__isnull=True).exists()


def test_a_run_out_of_time_releases_the_document_and_the_next_run_finishes(
    owner, settings, monkeypatch
):
    settings.ENGRAM_INGEST_BATCH = 3
    settings.ENGRAM_CHUNK_TOKENS = 60
    document = _bare_document(owner[0], "# Long\n\n" + "\n\n".join(filler(i, 3) for i in range(8)))
    # The soft time limit fires during the second batch.
    _time_out_on_calls(monkeypatch, lambda call: call == 2)
    assert services.document_ingest(document_id=document.id) == "again"
    document.refresh_from_db()
    assert (document.status, document.chunks_done) == ("queued", 3)
    assert document.chunks_total > 6
    monkeypatch.undo()
    assert services.document_ingest(document_id=document.id) == "ready"
    document.refresh_from_db()
    assert document.chunks_done == document.chunks_total
    assert not Chunk.objects.filter(document=document, embedding__isnull=True).exists()


def test_a_document_whose_runs_keep_dying_is_failed_not_retried_forever(
    owner, settings, django_capture_on_commit_callbacks
):
    """Runs that die before committing anything (a worker killed by what a file does to it):
    the sweep and the broker's redelivery would send the document again forever; after
    ENGRAM_JOB_MAX_ATTEMPTS such runs it is failed, and a re-run starts the count again."""
    from memory.services.sweep import jobs_sweep

    settings.ENGRAM_JOB_MAX_ATTEMPTS = 3
    document = _bare_document(owner[0], "# Poison\n\n" + filler(0, 4))
    stale = timezone.now() - services.document_lease() - timezone.timedelta(seconds=1)
    for _ in range(3):
        assert services._claim(document.id)[0] == "claimed"  # a worker took it, then died
        Document.objects.filter(id=document.id).update(updated_at=stale)
    assert services.document_ingest(document_id=document.id) == "failed"
    document.refresh_from_db()
    assert document.status == "failed" and "started 3 times without progress" in document.error
    assert not Chunk.objects.filter(document=document).exists()
    Document.objects.filter(id=document.id).update(updated_at=stale)
    with django_capture_on_commit_callbacks(execute=False) as sends:
        assert jobs_sweep().documents == 0  # a failed document is not sent again
    assert sends == []

    with django_capture_on_commit_callbacks(execute=False):
        services.document_rerun(workspace=owner[0], document=document)
    assert services.document_ingest(document_id=document.id) == "ready"
    document.refresh_from_db()
    assert (document.status, document.attempts, document.error) == ("ready", 0, "")


def test_runs_that_make_progress_are_not_counted_against_the_document(owner, settings, monkeypatch):
    """A long document that runs out of time after every batch still finishes: each run that
    commits a batch starts the count again."""
    settings.ENGRAM_JOB_MAX_ATTEMPTS = 2
    settings.ENGRAM_INGEST_BATCH = 2
    settings.ENGRAM_CHUNK_TOKENS = 60
    document = _bare_document(owner[0], "# Long\n\n" + "\n\n".join(filler(i, 3) for i in range(8)))
    # The soft time limit fires at each run's second batch.
    _time_out_on_calls(monkeypatch, lambda call: call % 2 == 0)
    runs = []
    while (outcome := services.document_ingest(document_id=document.id)) == "again":
        runs.append(outcome)
        assert len(runs) < 20
    document.refresh_from_db()
    assert outcome == "ready" and document.status == "ready"
    assert len(runs) > settings.ENGRAM_JOB_MAX_ATTEMPTS  # more runs than the limit, all fine
    assert document.chunks_done == document.chunks_total > 4


def test_a_document_deleted_mid_ingestion_stops_quietly(owner, settings):
    document = _bare_document(owner[0], "# T\n\n" + filler(0, 30))
    outcome, document = services._claim(document.id)
    assert outcome == "claimed"
    services._split(document)
    Document.objects.filter(id=document.id).delete()
    assert services.document_ingest(document_id=document.id) == "skip"
    assert not Chunk.objects.filter(document_id=document.id).exists()


def test_an_unreadable_text_document_fails_with_a_reason(owner):
    document = _bare_document(owner[0], "# Only a heading")
    assert services.document_ingest(document_id=document.id) == "failed"
    document.refresh_from_db()
    assert document.status == "failed" and "no text could be extracted" in document.error


def test_a_pdf_that_unpacks_past_the_limit_fails_as_too_large(owner, settings):
    """A PDF's streams are only known decompressed, so the limit DOCX gets at upload applies
    while the worker reads it: the document fails saying so, with nothing indexed."""
    raw = pdf_bytes(["the same words again and again " * 200] * 20, compress=True)
    settings.ENGRAM_MAX_DOCUMENT_EXPANDED_BYTES = 50_000
    collection = services.collection_create(workspace=owner[0], name="Bombs")
    document, _ = services.document_create(workspace=owner[0], collection=collection, raw=raw)
    assert services.document_ingest(document_id=document.id) == "failed"
    document.refresh_from_db()
    assert document.error.startswith("the document is too large: it unpacks to at least ")
    assert "the limit is 50000 (ENGRAM_MAX_DOCUMENT_EXPANDED_BYTES)" in document.error
    assert not Chunk.objects.filter(document_id=document.id).exists()


def test_task_is_routed_to_the_knowledge_queue():
    from config.celery import app
    from memory.knowledge.tasks import ingest_document

    assert ingest_document.name == "knowledge.ingest_document"
    route = app.amqp.router.route({}, ingest_document.name, (), {})
    assert route["queue"].name == "knowledge"
    assert ingest_document.acks_late and ingest_document.ignore_result


def test_admin_shows_status_and_reruns(admin_client, owner, celery_worker):
    workspace = owner[0]
    collection = services.collection_create(workspace=workspace, name="Admin")
    document, _ = services.document_create(
        workspace=workspace, collection=collection, raw=BAKERY_MD.encode()
    )
    deadline = time.monotonic() + 120
    while Document.objects.get(id=document.id).status != "ready":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    ready_ids = set(Chunk.objects.filter(document=document).values_list("id", flat=True))
    total = len(ready_ids)
    Document.objects.filter(id=document.id).update(status="failed", error="disk on fire")

    page = admin_client.get("/admin/memory/document/")
    assert page.status_code == 200
    assert b"disk on fire" in page.content and b"Bakery handbook" in page.content
    assert f"{total}/{total}".encode() in page.content
    assert admin_client.get(f"/admin/memory/document/{document.id}/change/").status_code == 200
    assert admin_client.get("/admin/memory/collection/").status_code == 200

    def rerun(action: str) -> None:
        resp = admin_client.post(
            "/admin/memory/document/", {"action": action, "_selected_action": [document.id]}
        )
        assert resp.status_code == 302
        deadline = time.monotonic() + 120
        # a ready document is rebuilt beside itself, its rebuild deleted when swapped in
        while (
            Document.objects.get(id=document.id).status != "ready"
            or Document.objects.filter(replaces_id=document.id).exists()
        ):
            assert time.monotonic() < deadline
            time.sleep(0.2)

    rerun("rerun")  # resume: the embedded chunks are kept as they are
    assert set(Chunk.objects.filter(document=document).values_list("id", flat=True)) == ready_ids
    assert Document.objects.get(id=document.id).error == ""
    rerun("rerun_from_scratch")  # re-extract: new chunk rows, same count
    fresh = set(Chunk.objects.filter(document=document).values_list("id", flat=True))
    assert len(fresh) == total and not fresh & ready_ids


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("deleted", ["document", "collection"])
def test_deleting_while_an_ingestion_writes_chunks_deletes_them_too(deleted):
    """Chunks an ingestion commits while the document (or its collection) is being deleted are
    deleted with it; the deletion does not fail its commit on their foreign key."""
    from tests.factories import deleted_while_written

    workspace, _ = make_workspace()
    collection = services.collection_create(workspace=workspace, name="Handbook")
    document, _ = services.document_create(
        workspace=workspace, collection=collection, raw=BAKERY_MD.encode()
    )

    def delete() -> None:
        if deleted == "document":
            services.document_delete(workspace=workspace, document=document)
        else:
            services.collection_delete(workspace=workspace, collection=collection)

    errors = deleted_while_written(
        delete,
        "INSERT INTO memory_chunk (workspace_id, collection_id, document_id, chunk_index,"
        " heading, text, token_count, search_text) VALUES (%s, %s, %s, 0, '', 'x', 1, 'x')",
        [workspace.id, collection.id, document.id],
    )
    assert not errors
    assert not Chunk.objects.filter(document_id=document.id).exists()
    assert not Document.objects.filter(id=document.id).exists()


def _delete_while_ingesting(http, document, url: str, *, started, locked, go):
    """Ingests `document` on a thread; once it has `started`, DELETEs `url` on another; once
    the deletion holds its row (`locked`) and the ingestion waits for a lock, lets the deletion
    go on (`go`). The ingestion's outcomes and the DELETE's response."""
    import threading

    from django.db import connection

    outcome: list[str] = []
    deleted: list[httpx.Response] = []

    def ingest() -> None:
        try:
            outcome.append(services.document_ingest(document_id=document.id))
        finally:
            connection.close()

    ingesting = threading.Thread(target=ingest)
    ingesting.start()
    assert started.wait(30)
    deleting = threading.Thread(target=lambda: deleted.append(http.delete(url)))
    deleting.start()
    assert locked.wait(30)
    _wait_for_a_lock_wait()  # the ingestion waits for the row the deletion holds
    go.set()
    deleting.join(60)
    ingesting.join(60)
    assert not deleting.is_alive() and not ingesting.is_alive()
    return outcome, deleted[0]


def test_deleting_a_document_while_its_chunks_are_embedded_is_not_a_deadlock(
    http, owner, settings, monkeypatch
):
    """DELETE locks the document's row, then deletes its chunks; an embedding batch updated
    the chunks, then renewed the row: each waited for the other until PostgreSQL broke the
    deadlock, and the DELETE was a 503 (or the ingestion failed instead). Here the DELETE holds
    the row while the ingestion's batch starts; it must wait without holding any chunk."""
    import threading

    from config.common import rows
    from memory.embeddings import get_embedder

    settings.ENGRAM_INGEST_BATCH = 2
    settings.ENGRAM_CHUNK_TOKENS = 60
    collection = services.collection_create(workspace=owner[0], name="Deadlock")
    document, _ = services.document_create(
        workspace=owner[0], collection=collection, raw=BAKERY_MD.encode()
    )
    embedding, locked, go = threading.Event(), threading.Event(), threading.Event()

    embedder = get_embedder()
    real_embed = embedder.embed

    def embed(texts):  # the ingestion's first batch waits until the deletion holds the row
        embedding.set()
        assert locked.wait(30)
        return real_embed(texts)

    def lock_if_present(obj):  # the deletion holds the row until the ingestion waits for it
        present = rows.lock_if_present(obj)
        if isinstance(obj, Document):
            locked.set()
            assert go.wait(30)
        return present

    monkeypatch.setattr(embedder, "embed", embed)
    monkeypatch.setattr(services, "lock_if_present", lock_if_present)
    url = f"/v1/collections/{collection.id}/documents/{document.id}"
    outcome, deleted = _delete_while_ingesting(
        http, document, url, started=embedding, locked=locked, go=go
    )

    assert deleted.status_code == 200, deleted.text
    assert outcome == ["skip"]
    assert not Document.objects.filter(id=document.id).exists()
    assert not Chunk.objects.filter(document_id=document.id).exists()


def test_deleting_a_collection_while_a_document_is_split_is_not_a_deadlock(
    http, owner, monkeypatch
):
    """DELETE of a collection locks its row, then its documents'; the split of a document
    locked the document's row, then (the chunks' foreign key) the collection's: each waited for
    the other until PostgreSQL broke the deadlock, a 503 or a failed ingestion."""
    import threading

    from config.common import rows
    from memory.knowledge import parsing

    collection = services.collection_create(workspace=owner[0], name="Deadlock")
    document, _ = services.document_create(
        workspace=owner[0], collection=collection, raw=BAKERY_MD.encode()
    )
    splitting, locked, go = threading.Event(), threading.Event(), threading.Event()
    real_extract = parsing.extract

    def extract(*args, **kwargs):  # the split waits until the deletion holds the collection
        splitting.set()
        assert locked.wait(30)
        return real_extract(*args, **kwargs)

    def lock_if_present(obj):  # the deletion holds the collection until the split waits
        present = rows.lock_if_present(obj)
        if isinstance(obj, Collection):
            locked.set()
            assert go.wait(30)
        return present

    monkeypatch.setattr(parsing, "extract", extract)
    monkeypatch.setattr(services, "lock_if_present", lock_if_present)
    url = f"/v1/collections/{collection.id}"
    outcome, deleted = _delete_while_ingesting(
        http, document, url, started=splitting, locked=locked, go=go
    )

    assert deleted.status_code == 200, deleted.text
    assert outcome == ["skip"]
    assert not Collection.objects.filter(id=collection.id).exists()
    assert not Chunk.objects.filter(collection_id=collection.id).exists()


def test_reingesting_from_scratch_while_the_document_is_deleted_is_not_a_deadlock(
    http, owner, admin_client, monkeypatch, django_capture_on_commit_callbacks
):
    """The admin's "re-ingest from the stored bytes" deleted the chunks, then updated the
    document's row; DELETE of the document locks the row, then deletes the chunks: each waited
    for the other until PostgreSQL broke the deadlock, a 503 to the DELETE. Here the DELETE
    holds the row while the re-run starts; the re-run must wait without holding any chunk,
    then find the document gone."""
    import threading

    from django.db import connection

    from config.common import rows

    collection = services.collection_create(workspace=owner[0], name="Deadlock")
    document, _ = services.document_create(
        workspace=owner[0], collection=collection, raw=BAKERY_MD.encode()
    )
    assert services.document_ingest(document_id=document.id) == "ready"
    assert Chunk.objects.filter(document_id=document.id).exists()
    locked, go = threading.Event(), threading.Event()
    held = []

    def lock_if_present(obj):  # the deletion (the first to lock the row) holds it a while
        present = rows.lock_if_present(obj)
        if isinstance(obj, Document) and not held:
            held.append(obj.pk)
            locked.set()
            assert go.wait(30)
        return present

    monkeypatch.setattr(services, "lock_if_present", lock_if_present)
    deleted: list[httpx.Response] = []
    reran: list = []

    def rerun() -> None:
        try:
            reran.append(
                admin_client.post(
                    "/admin/memory/document/",
                    {"action": "rerun_from_scratch", "_selected_action": [document.id]},
                )
            )
        finally:
            connection.close()

    url = f"/v1/collections/{collection.id}/documents/{document.id}"
    deleting = threading.Thread(target=lambda: deleted.append(http.delete(url)))
    deleting.start()
    assert locked.wait(30)
    rerunning = threading.Thread(target=rerun)
    rerunning.start()
    _wait_for_a_lock_wait()  # the re-run waits for a row the deletion holds
    go.set()
    deleting.join(60)
    rerunning.join(60)
    assert not deleting.is_alive() and not rerunning.is_alive()

    assert deleted[0].status_code == 200, deleted[0].text
    assert reran and reran[0].status_code == 302, "the re-run raised"
    assert not Document.objects.filter(id=document.id).exists()
    assert not Chunk.objects.filter(document_id=document.id).exists()


@pytest.mark.parametrize(
    ("parts", "error"),
    [
        ({"word/document.xml": b"<w:document><w:body><w:p>"}, "its document.xml could not be read"),
        ({"word/styles.xml": b"\x00\x01 not XML"}, "its styles.xml could not be read"),
        ({"_rels/.rels": None}, "its .rels is missing"),
    ],
)
def test_a_damaged_docx_fails_with_a_plain_reason(http, owner, parts, error):
    """A Word document whose XML is broken failed with lxml's own words in its `error`
    ("Namespace prefix w on document is not defined, line 1, column 12 (<string>, line 1)")."""
    raw = docx_with_parts(docx_bytes([("Suppliers", [filler(6, 5)])], title="Parts"), parts)
    col = http.post("/v1/collections", json={"name": "Damaged"}).json()
    url = f"/v1/collections/{col['id']}/documents"
    uploaded = http.post(url, files={"file": ("parts.docx", raw, "application/octet-stream")})
    assert uploaded.status_code == 202, uploaded.text
    assert services.document_ingest(document_id=uploaded.json()["id"]) == "failed"
    document = http.get(f"{url}/{uploaded.json()['id']}").json()
    assert document["status"] == "failed" and document["chunk_count"] == 0
    assert document["error"] == f"the DOCX file is damaged: {error}", document


def _wait_for_a_lock_wait() -> None:
    """Until a session of the test database waits for a lock another holds."""
    from django.db import connection

    deadline = time.monotonic() + 30
    with connection.cursor() as cursor:
        while True:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
            if cursor.fetchone()[0]:
                return
            assert time.monotonic() < deadline
            time.sleep(0.05)


def _paused_in_thread(monkeypatch, module, name: str, thread_name: str, *, after: bool = False):
    """Patch `module.name` so that its first call on the thread `thread_name` stops (before
    the real call, or `after` it) until the returned `go` is set; `reached` is set when it
    stops. The other threads' calls pass through."""
    import threading

    real = getattr(module, name)
    reached, go = threading.Event(), threading.Event()

    def paused(*args, **kwargs):
        if threading.current_thread().name != thread_name or reached.is_set():
            return real(*args, **kwargs)
        result = real(*args, **kwargs) if after else None
        reached.set()
        assert go.wait(30)
        return result if after else real(*args, **kwargs)

    monkeypatch.setattr(module, name, paused)
    return reached, go


def _ingest_on_thread(document_id: str, name: str, outcome: list):
    import threading

    from django.db import connection

    def ingest() -> None:
        try:
            outcome.append(services.document_ingest(document_id=document_id))
        finally:
            connection.close()

    thread = threading.Thread(target=ingest, name=name)
    thread.start()
    return thread


@pytest.mark.parametrize("old_paused_at", ["embedding", "splitting"])
def test_an_old_run_paused_while_the_document_is_ingested_from_scratch_writes_nothing(
    owner, settings, monkeypatch, django_capture_on_commit_callbacks, old_paused_at
):
    """A run that stops for a while (a paused worker, a lease that lapsed), while the
    document is re-ingested from scratch and a new run has claimed it: the old run's writes
    are fenced by its claim. Fenced by the status alone, the old run resumed as if the
    document were still its own: paused at its first embedding, it found none of the new
    run's chunks yet and marked the document ready with 0 chunks (the new run then found it
    ready and stopped); paused as it split, it wrote its chunks of the old settings beside
    the new run's."""
    from memory.embeddings import get_embedder
    from memory.knowledge import chunking, parsing

    settings.ENGRAM_INGEST_BATCH = 4
    settings.ENGRAM_CHUNK_TOKENS = 60
    text = "# Long\n\n" + "\n\n".join(filler(i, 3) for i in range(12))
    document = _bare_document(owner[0], text)
    if old_paused_at == "embedding":
        old_reached, old_go = _paused_in_thread(monkeypatch, get_embedder(), "embed", "old")
    else:
        old_reached, old_go = _paused_in_thread(
            monkeypatch, chunking, "chunk_blocks", "old", after=True
        )
    # the new run stops once claimed, before it splits
    new_reached, new_go = _paused_in_thread(monkeypatch, parsing, "extract", "new")
    outcomes: dict[str, list] = {"old": [], "new": []}
    old = _ingest_on_thread(document.id, "old", outcomes["old"])
    assert old_reached.wait(30)

    settings.ENGRAM_CHUNK_TOKENS = 200  # what the re-ingestion is for: other chunks
    with django_capture_on_commit_callbacks(execute=False):
        services.document_rerun(workspace=owner[0], document=document, from_scratch=True)
    new = _ingest_on_thread(document.id, "new", outcomes["new"])
    assert new_reached.wait(30)
    old_go.set()
    old.join(60)
    new_go.set()
    new.join(60)
    assert not old.is_alive() and not new.is_alive()

    assert outcomes == {"old": ["skip"], "new": ["ready"]}
    document.refresh_from_db()
    chunks = Chunk.objects.filter(document=document)
    assert document.status == "ready"
    assert document.chunks_total == document.chunks_done == chunks.count() > 0
    # the new settings' chunks only, each embedded
    assert list(chunks.values_list("chunk_index", flat=True)) == list(range(chunks.count()))
    assert max(chunks.values_list("token_count", flat=True)) > 60
    assert not chunks.filter(embedding__isnull=True).exists()
