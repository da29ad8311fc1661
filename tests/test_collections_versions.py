"""New versions of a document over HTTP: an upload under a key the collection holds replaces
that key's document once it is ready, never before, and never leaves both searchable.

No worker runs here: each test runs the ingestion task's body (services.document_ingest) itself,
where a worker would, so what a search sees between the steps is fixed.
"""

import numpy as np
import pytest
from django.utils import timezone

from memory.knowledge import services
from memory.models import Chunk, Document
from tests.collections_docs import corrupt_pdf_bytes, pdf_bytes

OLD = "Refunds are paid within thirty days by bank transfer to the customer."
NEW = "Refunds are paid within fourteen days back onto the original credit card."
QUERY = "how are refunds paid"


def _policy(text: str) -> bytes:
    return f"# Refund policy\n\n{text}\n".encode()


@pytest.fixture
def collection(http):
    resp = http.post("/v1/collections", json={"name": "Policies"})
    assert resp.status_code == 201, resp.text
    return resp.json()["id"]


def _upload(http, collection, name, raw, status=202, **fields):
    resp = http.post(
        f"/v1/collections/{collection}/documents", files={"file": (name, raw)}, data=fields
    )
    assert resp.status_code == status, resp.text
    return resp.json()


def _ingested(document_id: str) -> str:
    return services.document_ingest(document_id=document_id)


def _found(http, collection) -> list[str]:
    """The texts a search of the collection finds."""
    resp = http.post(
        "/v1/collections/search",
        json={"collection_ids": [collection], "query": QUERY, "limit": 10},
    )
    assert resp.status_code == 200, resp.text
    return [hit["text"] for hit in resp.json()["data"]]


def _searched(http, collection) -> str:
    """Which versions a search finds: 'old', 'new', 'both' or 'none'."""
    texts = " ".join(_found(http, collection))
    old, new = OLD in texts, NEW in texts
    return {(True, False): "old", (False, True): "new", (True, True): "both"}.get(
        (old, new), "none"
    )


def _listed(http, collection, **params) -> list[dict]:
    resp = http.get(f"/v1/collections/{collection}/documents", params=params)
    assert resp.status_code == 200, resp.text
    return resp.json()["data"]


def test_a_new_version_replaces_the_old_once_it_is_ready(http, collection):
    v1 = _upload(http, collection, "refunds.md", _policy(OLD))
    assert (v1["external_id"], v1["version"]) == ("refunds.md", 1)
    assert _ingested(v1["id"]) == "ready"
    assert _searched(http, collection) == "old"

    v2 = _upload(http, collection, "refunds.md", _policy(NEW))
    assert v2["id"] != v1["id"]
    assert (v2["external_id"], v2["version"], v2["status"]) == ("refunds.md", 2, "queued")
    # queued: the old version is still what a search finds
    assert _searched(http, collection) == "old"
    versions = _listed(http, collection, external_id="refunds.md")
    assert [(d["version"], d["status"]) for d in versions] == [(2, "queued"), (1, "ready")]

    # split into chunks, not embedded yet: still the old one only
    outcome, claimed = services._claim(v2["id"])
    assert outcome == "claimed"
    services._split(claimed)
    assert Chunk.objects.filter(document_id=v2["id"]).exists()
    assert _searched(http, collection) == "old"
    Document.objects.filter(id=v2["id"]).update(status="queued")  # the run hands it back

    assert _ingested(v2["id"]) == "ready"
    assert _searched(http, collection) == "new"
    assert http.get(f"/v1/collections/{collection}/documents/{v1['id']}").status_code == 404
    assert not Chunk.objects.filter(document_id=v1["id"]).exists()
    [current] = _listed(http, collection)
    assert (current["id"], current["version"], current["status"]) == (v2["id"], 2, "ready")
    assert http.get(f"/v1/collections/{collection}").json()["document_count"] == 1


def test_the_same_content_again_is_not_embedded_again(http, collection):
    v1 = _upload(http, collection, "refunds.md", _policy(OLD))
    assert _ingested(v1["id"]) == "ready"
    chunks = list(Chunk.objects.filter(document_id=v1["id"]).values_list("id", "embedding"))

    again = _upload(http, collection, "refunds.md", _policy(OLD), status=200)
    assert (again["id"], again["version"], again["duplicate"]) == (v1["id"], 1, True)
    assert Document.objects.filter(collection_id=collection).count() == 1
    assert _ingested(v1["id"]) == "skip"  # a task sent again finds nothing to do
    now = list(Chunk.objects.filter(document_id=v1["id"]).values_list("id", "embedding"))
    assert [c[0] for c in now] == [c[0] for c in chunks]
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(now, chunks, strict=True))
    assert _searched(http, collection) == "old"


def test_a_new_version_that_fails_leaves_the_old_searchable(http, collection):
    def pdf(text):
        return pdf_bytes([f"Refund policy.\n{text}"], title="Refunds")

    v1 = _upload(http, collection, "refunds.pdf", pdf(OLD))
    assert _ingested(v1["id"]) == "ready"

    broken = _upload(http, collection, "refunds.pdf", corrupt_pdf_bytes())
    assert broken["version"] == 2
    assert _ingested(broken["id"]) == "failed"
    assert _searched(http, collection) == "old"
    versions = {d["version"]: d for d in _listed(http, collection)}
    assert versions[1]["status"] == "ready"
    assert versions[2]["status"] == "failed" and versions[2]["error"]

    # a version that reads replaces both the current one and the failed one
    v3 = _upload(http, collection, "refunds.pdf", pdf(NEW))
    assert v3["version"] == 3
    assert _ingested(v3["id"]) == "ready"
    assert _searched(http, collection) == "new"
    assert [d["id"] for d in _listed(http, collection)] == [v3["id"]]


def test_a_worker_dying_while_it_ingests_a_new_version_leaves_the_old_and_can_run_again(
    http, collection
):
    v1 = _upload(http, collection, "refunds.md", _policy(OLD))
    assert _ingested(v1["id"]) == "ready"
    v2 = _upload(http, collection, "refunds.md", _policy(NEW))
    outcome, claimed = services._claim(v2["id"])
    assert outcome == "claimed"
    services._split(claimed)  # then the worker died, its lease left to lapse
    assert _searched(http, collection) == "old"
    assert _ingested(v2["id"]) == "busy"  # a redelivery while the lease holds
    stale = timezone.now() - services.document_lease() - timezone.timedelta(seconds=1)
    Document.objects.filter(id=v2["id"]).update(updated_at=stale)

    assert _ingested(v2["id"]) == "ready"
    assert _ingested(v2["id"]) == "skip"  # the task run twice: nothing more
    assert _searched(http, collection) == "new"
    assert [d["id"] for d in _listed(http, collection)] == [v2["id"]]


def test_an_older_content_uploaded_again_wins_over_the_version_being_ingested(http, collection):
    v1 = _upload(http, collection, "refunds.md", _policy(OLD))
    assert _ingested(v1["id"]) == "ready"
    v2 = _upload(http, collection, "refunds.md", _policy(NEW))

    back = _upload(http, collection, "refunds.md", _policy(OLD), status=200)
    assert (back["id"], back["version"], back["duplicate"]) == (v1["id"], 3, True)
    assert http.get(f"/v1/collections/{collection}/documents/{v2['id']}").status_code == 404
    assert _ingested(v2["id"]) == "skip"
    assert _searched(http, collection) == "old"


def test_the_key_is_the_external_id_when_given(http, collection):
    url = f"/v1/collections/{collection}/documents"
    first = http.post(url, json={"text": _policy(OLD).decode(), "external_id": "refunds"}).json()
    assert (first["external_id"], first["version"]) == ("refunds", 1)
    assert _ingested(first["id"]) == "ready"
    # a file under another name, with the same key: the next version
    second = _upload(http, collection, "refunds-2027.md", _policy(NEW), external_id="refunds")
    assert (second["external_id"], second["version"]) == ("refunds", 2)
    assert _ingested(second["id"]) == "ready"
    assert _searched(http, collection) == "new"
    assert [d["id"] for d in _listed(http, collection)] == [second["id"]]


def test_documents_without_a_key_are_never_replaced(http, collection):
    url = f"/v1/collections/{collection}/documents"
    texts = http.post(url, json={"text": _policy(OLD).decode()}).json()
    assert (texts["external_id"], texts["version"]) == (None, 1)
    null = http.post(url, json={"text": "Another text.", "external_id": None})
    assert null.status_code == 202 and null.json()["external_id"] is None
    opted_out = _upload(http, collection, "refunds.md", _policy(NEW), external_id="")
    assert opted_out["external_id"] is None
    assert _ingested(texts["id"]) == "ready" and _ingested(opted_out["id"]) == "ready"
    assert _searched(http, collection) == "both"
    assert len(_listed(http, collection)) == 3


def test_the_external_id_filter_and_field_are_checked(http, collection):
    url = f"/v1/collections/{collection}/documents"
    resp = http.get(url, params={"external_id": "a\x00b"})
    assert resp.status_code == 400 and resp.json()["error"]["param"] == "external_id"
    resp = http.post(url, json={"text": "Some words.", "external_id": "x" * 301})
    assert resp.status_code == 400 and resp.json()["error"]["param"] == "external_id"
    assert _listed(http, collection, external_id="nothing") == []


@pytest.mark.parametrize("first", ["newer", "older"])
def test_two_pending_versions_end_with_the_newer_whichever_is_ready_first(http, collection, first):
    v1 = _upload(http, collection, "refunds.md", _policy("An outdated draft of the policy."))
    v2 = _upload(http, collection, "refunds.md", _policy(OLD))
    v3 = _upload(http, collection, "refunds.md", _policy(NEW))
    assert (v1["version"], v2["version"], v3["version"]) == (1, 2, 3)
    if first == "newer":
        assert _ingested(v3["id"]) == "ready"
        assert _ingested(v2["id"]) == "skip"  # replaced while it waited
    else:
        assert _ingested(v2["id"]) == "ready"
        assert _searched(http, collection) == "old"
        assert _ingested(v3["id"]) == "ready"
    assert _ingested(v1["id"]) == "skip"
    assert _searched(http, collection) == "new"
    assert [d["id"] for d in _listed(http, collection)] == [v3["id"]]


def test_the_admins_rerun_of_a_ready_document_keeps_it_searchable(
    http, collection, admin_client, django_capture_on_commit_callbacks
):
    """A ready document has nothing to resume: the re-run queued it, and it left every search
    until a worker had run it (behind a bulk upload, minutes)."""
    doc = _upload(http, collection, "refunds.md", _policy(OLD))
    assert _ingested(doc["id"]) == "ready"
    with django_capture_on_commit_callbacks(execute=False) as sends:
        resp = admin_client.post(
            "/admin/memory/document/", {"action": "rerun", "_selected_action": [doc["id"]]}
        )
    assert resp.status_code == 302 and sends == []
    assert http.get(f"/v1/collections/{collection}/documents/{doc['id']}").json()["status"] == (
        "ready"
    )
    assert _searched(http, collection) == "old"


def _reingest_from_scratch(admin_client, document_id):
    resp = admin_client.post(
        "/admin/memory/document/",
        {"action": "rerun_from_scratch", "_selected_action": [document_id]},
        follow=True,
    )
    assert resp.status_code == 200
    assert [str(m) for m in resp.context["messages"]] == ["Queued 1 document(s)."]


def test_the_admins_reingestion_from_scratch_keeps_a_ready_document_searchable(
    http, collection, admin_client
):
    """It deleted the chunks and queued the document: it left every search (and a chat's
    knowledge) until a worker had run it again. Now it is rebuilt beside the searchable one,
    whose chunks the new ones replace in one commit, under the same document id."""
    doc = _upload(http, collection, "refunds.md", _policy(OLD))
    assert _ingested(doc["id"]) == "ready"
    before = set(Chunk.objects.filter(document_id=doc["id"]).values_list("id", flat=True))

    _reingest_from_scratch(admin_client, doc["id"])
    # queued, then split but not embedded: the document is searched as it was
    assert _searched(http, collection) == "old"
    [rebuild] = Document.objects.filter(replaces_id=doc["id"])
    assert rebuild.status == "queued" and bytes(rebuild.raw) == _policy(OLD)
    outcome, claimed = services._claim(rebuild.id)
    assert outcome == "claimed"
    services._split(claimed)
    assert _searched(http, collection) == "old"
    Document.objects.filter(id=rebuild.id).update(status="queued")
    # the tenant sees its one document, ready, throughout; never the rebuild
    [listed] = _listed(http, collection)
    assert (listed["id"], listed["status"]) == (doc["id"], "ready")
    assert http.get(f"/v1/collections/{collection}/documents/{rebuild.id}").status_code == 404
    # the same bytes uploaded meanwhile are still the document itself
    again = _upload(http, collection, "refunds.md", _policy(OLD), status=200)
    assert again["id"] == doc["id"]

    assert _ingested(rebuild.id) == "ready"
    assert _searched(http, collection) == "old"  # the same text, from the new chunks
    after = set(Chunk.objects.filter(document_id=doc["id"]).values_list("id", flat=True))
    assert after and not after & before
    assert not Document.objects.filter(id=rebuild.id).exists()
    one = http.get(f"/v1/collections/{collection}/documents/{doc['id']}").json()
    assert (one["status"], one["chunk_count"], one["version"]) == ("ready", len(after), 1)
    assert _ingested(rebuild.id) == "skip"  # its task delivered twice


def test_a_document_deleted_while_it_is_rebuilt_takes_its_rebuild_with_it(
    http, collection, admin_client
):
    doc = _upload(http, collection, "refunds.md", _policy(OLD))
    assert _ingested(doc["id"]) == "ready"
    _reingest_from_scratch(admin_client, doc["id"])
    [rebuild] = Document.objects.filter(replaces_id=doc["id"])
    # a second re-ingestion starts the pending rebuild over rather than adding another
    _reingest_from_scratch(admin_client, doc["id"])
    assert list(Document.objects.filter(replaces_id=doc["id"])) == [rebuild]

    deleted = http.delete(f"/v1/collections/{collection}/documents/{doc['id']}")
    assert deleted.status_code == 200, deleted.text
    assert not Document.objects.filter(collection_id=collection).exists()
    assert _ingested(rebuild.id) == "skip"
    assert _searched(http, collection) == "none"


def test_a_new_version_ready_while_the_current_one_is_rebuilt_replaces_both(
    http, collection, admin_client
):
    v1 = _upload(http, collection, "refunds.md", _policy(OLD))
    assert _ingested(v1["id"]) == "ready"
    _reingest_from_scratch(admin_client, v1["id"])
    [rebuild] = Document.objects.filter(replaces_id=v1["id"])
    v2 = _upload(http, collection, "refunds.md", _policy(NEW))
    assert _ingested(v2["id"]) == "ready"
    assert _ingested(rebuild.id) == "skip"
    assert _searched(http, collection) == "new"
    assert [d["id"] for d in _listed(http, collection)] == [v2["id"]]


def _counts(http, collection) -> tuple[int, int, int]:
    one = http.get(f"/v1/collections/{collection}").json()
    [listed] = [c for c in http.get("/v1/collections").json()["data"] if c["id"] == collection]
    counts = (one["document_count"], one["pending_count"], one["failed_count"])
    assert (listed["document_count"], listed["pending_count"], listed["failed_count"]) == counts
    return counts


def test_document_count_is_what_a_search_sees_and_the_rest_is_counted_apart(http, collection):
    """document_count counted every row: a new version being ingested beside the current one
    made one document two, and a failed upload was counted forever."""
    v1 = _upload(http, collection, "refunds.md", _policy(OLD))
    assert _counts(http, collection) == (0, 1, 0)
    assert _ingested(v1["id"]) == "ready"
    assert _counts(http, collection) == (1, 0, 0)
    v2 = _upload(http, collection, "refunds.md", _policy(NEW))
    assert _counts(http, collection) == (1, 1, 0)
    broken = _upload(http, collection, "scan.pdf", corrupt_pdf_bytes())
    assert _ingested(broken["id"]) == "failed"
    assert _counts(http, collection) == (1, 1, 1)
    assert _ingested(v2["id"]) == "ready"
    assert _counts(http, collection) == (1, 0, 1)


def test_a_replaced_versions_content_uploaded_under_another_key_stays(http, collection):
    """The old content uploaded under another name while a new version of its own key was
    ingested: answered 200 with the old version (the duplicate), which the new version then
    deleted, so the content the caller had just been told was there left every search. It
    moves to the upload's key instead."""
    v1 = _upload(http, collection, "refunds.md", _policy(OLD))
    assert _ingested(v1["id"]) == "ready"
    v2 = _upload(http, collection, "refunds.md", _policy(NEW))

    kept = _upload(http, collection, "refunds-2026.md", _policy(OLD), status=200)
    assert (kept["id"], kept["duplicate"]) == (v1["id"], True)
    assert (kept["external_id"], kept["version"]) == ("refunds-2026.md", 1)

    assert _ingested(v2["id"]) == "ready"
    assert _searched(http, collection) == "both"
    assert [d["id"] for d in _listed(http, collection, external_id="refunds.md")] == [v2["id"]]
    assert [d["id"] for d in _listed(http, collection, external_id="refunds-2026.md")] == [v1["id"]]


def test_a_current_versions_content_uploaded_under_another_key_stays_under_its_own(
    http, collection
):
    v1 = _upload(http, collection, "refunds.md", _policy(OLD))
    again = _upload(http, collection, "copy.md", _policy(OLD), status=200)
    assert (again["id"], again["external_id"], again["version"]) == (v1["id"], "refunds.md", 1)


def test_a_workspace_with_a_document_being_rebuilt_is_deleted_in_batches(
    http, collection, admin_client, owner
):
    """A workspace's deletion deletes its documents in batches of any order: a batch holding
    a document but not its rebuild must not fail its commit on the rebuild's reference."""
    from accounts import deletion

    doc = _upload(http, collection, "refunds.md", _policy(OLD))
    assert _ingested(doc["id"]) == "ready"
    _reingest_from_scratch(admin_client, doc["id"])
    assert Document.objects.filter(replaces_id=doc["id"]).exists()

    deletion.rows_delete(workspace_id=owner[0].id, batch=1)
    assert not Document.objects.filter(workspace_id=owner[0].id).exists()
    assert not Chunk.objects.filter(workspace_id=owner[0].id).exists()
