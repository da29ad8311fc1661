"""The collections API over HTTP: CRUD, uploads, error envelopes, and tenancy on every endpoint.

Ingestion itself is exercised in test_collections_ingest.py; here no worker runs, so documents
stay `queued` (the tasks go to Redis and are purged by the next worker fixture).
"""

import json

import httpx
import pytest

from memory.models import Chunk, Collection, Document
from tests.collections_docs import docx_bytes, pdf_bytes
from tests.factories import make_workspace


def _error(resp, status, code=None, param=None):
    assert resp.status_code == status, resp.text
    error = resp.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    if code:
        assert error["code"] == code, error
    if param:
        assert error["param"] == param, error
    return error


def _collection(http, name="Handbook", **extra):
    resp = http.post("/v1/collections", json={"name": name, **extra})
    assert resp.status_code == 201, resp.text
    return resp.json()


def test_collection_crud(http):
    created = _collection(http, description="Ops docs", metadata={"team": "sre"})
    assert created["id"].startswith("col_") and created["object"] == "collection"
    assert (created["name"], created["description"], created["metadata"]) == (
        "Handbook",
        "Ops docs",
        {"team": "sre"},
    )
    assert (created["document_count"], created["pending_count"], created["failed_count"]) == (
        0,
        0,
        0,
    )
    other = _collection(http, name="Second")

    listed = http.get("/v1/collections").json()
    assert listed["object"] == "list"
    assert [c["id"] for c in listed["data"]] == [other["id"], created["id"]]  # newest first
    page = http.get("/v1/collections", params={"limit": 1, "order": "asc"}).json()
    assert [c["id"] for c in page["data"]] == [created["id"]] and page["has_more"]

    patched = http.patch(f"/v1/collections/{created['id']}", json={"name": "Runbooks"})
    assert patched.status_code == 200
    assert patched.json()["name"] == "Runbooks" and patched.json()["description"] == "Ops docs"
    patched = http.patch(f"/v1/collections/{created['id']}", json={"metadata": {"v": 2}})
    assert patched.json()["metadata"] == {"v": 2} and patched.json()["name"] == "Runbooks"
    assert http.get(f"/v1/collections/{created['id']}").json()["name"] == "Runbooks"

    _error(http.post("/v1/collections", json={}), 400, "invalid_value", "name")
    _error(http.post("/v1/collections", json={"name": "x", "metadata": [1]}), 400, param="metadata")
    _error(http.patch(f"/v1/collections/{created['id']}", json={"name": ""}), 400, param="name")
    _error(
        http.post(
            "/v1/collections", content=b"{nope", headers={"content-type": "application/json"}
        ),
        400,
        "invalid_json",
    )

    deleted = http.delete(f"/v1/collections/{created['id']}")
    assert deleted.status_code == 200 and deleted.json()["deleted"] is True
    _error(http.get(f"/v1/collections/{created['id']}"), 404, "collection_not_found")
    assert [c["id"] for c in http.get("/v1/collections").json()["data"]] == [other["id"]]


def test_only_a_document_upload_takes_multipart(http):
    """Elsewhere a form body is a 415, not an object field read as {} ("metadata": true once
    created a collection with no metadata)."""
    form = {"name": "Handbook", "metadata": "true"}
    _error(http.post("/v1/collections", data=form), 415, "unsupported_media_type")
    _error(http.post("/v1/collections", files={"name": (None, "Handbook")}), 415)
    assert http.get("/v1/collections").json()["data"] == []
    collection = http.post("/v1/collections", json={"name": "Handbook"}).json()
    upload = http.post(
        f"/v1/collections/{collection['id']}/documents",
        files={"file": ("notes.txt", b"Returns within 30 days.", "text/plain")},
    )
    assert upload.status_code == 202, upload.text


def test_text_and_file_uploads_are_queued_and_typed_by_content(http):
    col = _collection(http)
    resp = http.post(
        f"/v1/collections/{col['id']}/documents",
        json={"text": "# Notes\n\nThe gate code is 4471.", "title": "Notes", "metadata": {"a": 1}},
    )
    assert resp.status_code == 202, resp.text
    doc = resp.json()
    assert doc["id"].startswith("doc_") and doc["status"] == "queued" and doc["duplicate"] is False
    assert doc["content_type"] == "text/markdown" and doc["metadata"] == {"a": 1}
    assert doc["progress"] == {"done": 0, "total": 0} and doc["error"] is None

    # a PDF sent under a text name and type is still a PDF; a DOCX named .pdf is still a DOCX
    pdf = http.post(
        f"/v1/collections/{col['id']}/documents",
        files={"file": ("notes.txt", pdf_bytes(["Page one."]), "text/plain")},
        data={"title": "Scan", "metadata": json.dumps({"source": "scanner"})},
    )
    assert pdf.status_code == 202, pdf.text
    assert pdf.json()["content_type"] == "application/pdf"
    assert (pdf.json()["filename"], pdf.json()["title"]) == ("notes.txt", "Scan")
    assert pdf.json()["metadata"] == {"source": "scanner"}
    word = http.post(
        f"/v1/collections/{col['id']}/documents",
        files={"file": ("report.pdf", docx_bytes([("A", ["b"])]), "application/pdf")},
    )
    assert word.json()["content_type"].endswith("wordprocessingml.document")

    listed = http.get(f"/v1/collections/{col['id']}/documents").json()
    assert {d["id"] for d in listed["data"]} == {doc["id"], pdf.json()["id"], word.json()["id"]}
    counted = http.get(f"/v1/collections/{col['id']}").json()
    # queued: none searchable yet
    assert (counted["document_count"], counted["pending_count"], counted["failed_count"]) == (
        0,
        3,
        0,
    )
    one = http.get(f"/v1/collections/{col['id']}/documents/{doc['id']}").json()
    assert one["status"] == "queued" and one["chunk_count"] == 0
    queued = http.get(f"/v1/collections/{col['id']}/documents", params={"status": "queued"})
    assert len(queued.json()["data"]) == 3
    assert (
        http.get(f"/v1/collections/{col['id']}/documents", params={"status": "ready"}).json()[
            "data"
        ]
        == []
    )
    _error(
        http.get(f"/v1/collections/{col['id']}/documents", params={"status": "nope"}),
        400,
        param="status",
    )
    assert Document.objects.get(id=pdf.json()["id"]).raw[:5] == b"%PDF-"


def test_identical_content_is_deduplicated_by_hash(http):
    col = _collection(http)
    other = _collection(http, name="Other")
    raw = pdf_bytes(["Same bytes."])
    first = http.post(
        f"/v1/collections/{col['id']}/documents", files={"file": ("a.pdf", raw, "application/pdf")}
    )
    again = http.post(
        f"/v1/collections/{col['id']}/documents",
        files={"file": ("renamed.pdf", raw, "application/pdf")},
    )
    assert first.status_code == 202 and again.status_code == 200
    assert again.json()["id"] == first.json()["id"] and again.json()["duplicate"] is True
    assert again.json()["filename"] == "a.pdf"
    text = {"text": "Same words."}
    t1 = http.post(f"/v1/collections/{col['id']}/documents", json=text)
    t2 = http.post(f"/v1/collections/{col['id']}/documents", json=text | {"title": "new title"})
    assert t2.status_code == 200 and t2.json()["id"] == t1.json()["id"]
    # another collection is another corpus: the same bytes are a new document there
    elsewhere = http.post(
        f"/v1/collections/{other['id']}/documents",
        files={"file": ("a.pdf", raw, "application/pdf")},
    )
    assert elsewhere.status_code == 202 and elsewhere.json()["id"] != first.json()["id"]
    assert Document.objects.filter(collection_id=col["id"]).count() == 2


def test_upload_errors_use_the_envelope(http, settings):
    col = _collection(http)
    url = f"/v1/collections/{col['id']}/documents"
    settings.ENGRAM_MAX_DOCUMENT_BYTES = 2000
    err = _error(
        http.post(url, files={"file": ("big.txt", b"a " * 1500, "text/plain")}),
        413,
        "document_too_large",
    )
    assert err["message"].startswith("The document is 3000 bytes; the limit is 2000 "), err
    _error(http.post(url, json={"text": "é" * 1001}), 413, "document_too_large")  # 2002 bytes
    # far over the limit: refused from the Content-Length, before the body is read. The
    # message named the whole request's size as the document's.
    huge = http.post(url, files={"file": ("huge.txt", b"x" * 200_000, "text/plain")})
    err = _error(huge, 413, "document_too_large")
    sent = int(huge.request.headers["content-length"])
    assert sent > 200_000
    assert err["message"] == (
        f"The upload is {sent} bytes in all (the file and its form fields); a document may be "
        "at most 2000 bytes (ENGRAM_MAX_DOCUMENT_BYTES)."
    ), err
    assert http.post(url, json={"text": "é" * 999}).status_code == 202
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 5000  # a JSON body is refused before it is read
    _error(http.post(url, json={"text": "a" * 6000}), 413, "request_too_large")

    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
    err = _error(
        http.post(url, files={"file": ("notes.txt", png, "text/plain")}),
        415,
        "unsupported_file_type",
        "file",
    )
    assert "Unsupported document type" in err["message"]
    _error(
        http.post(url, content=b"raw text body", headers={"content-type": "text/plain"}),
        415,
        "unsupported_media_type",
    )
    _error(http.post(url, files={"file": ("e.txt", b"", "text/plain")}), 400, "empty_document")
    # a file under another name is a field the upload does not have (config.common.closed)
    _error(http.post(url, data={"title": "no file"}, files={"x": ("a", b"b")}), 400, param="x")
    _error(http.post(url, data={"title": "t"}, files={"title": (None, "t")}), 400, param="file")
    _error(http.post(url, json={"text": ""}), 400, param="text")
    _error(http.post(url, json={"title": "no text"}), 400, param="text")
    _error(http.post(url, json={"text": "ok", "metadata": "x"}), 400, param="metadata")
    _error(
        http.post(url, files={"file": ("a.txt", b"fine", "text/plain")}, data={"metadata": "{"}),
        400,
        param="metadata",
    )
    assert Document.objects.filter(collection_id=col["id"]).count() == 1


def test_a_word_document_that_unpacks_too_far_is_refused(http, settings):
    """A zip bomb: deflate packs a run of one byte ~1,000:1, so a small upload could unpack to
    gigabytes in the worker. Its declared sizes are read at upload: 413, nothing stored."""
    import io
    import zipfile

    col = _collection(http)
    url = f"/v1/collections/{col['id']}/documents"
    settings.ENGRAM_MAX_DOCUMENT_EXPANDED_BYTES = 1_000_000
    genuine = docx_bytes([("Heading", ["A paragraph."])])
    buffer = io.BytesIO()
    with (
        zipfile.ZipFile(io.BytesIO(genuine)) as source,
        zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as bomb,
    ):
        for part in source.infolist():
            data = source.read(part)
            if part.filename == "word/document.xml":  # the text padded with 2 MB of spaces
                data = data.replace(b"A paragraph.", b"A paragraph." + b" " * 2_000_000)
            bomb.writestr(part.filename, data)
    raw = buffer.getvalue()
    assert len(raw) < 50_000  # a small upload
    err = _error(
        http.post(url, files={"file": ("bomb.docx", raw, "application/octet-stream")}),
        413,
        "document_too_large",
        "file",
    )
    assert "unpacks to" in err["message"] and "ENGRAM_MAX_DOCUMENT_EXPANDED_BYTES" in err["message"]
    assert not Document.objects.filter(collection_id=col["id"]).exists()
    # the genuine document is under the limit and accepted
    ok = http.post(url, files={"file": ("fine.docx", genuine, "application/octet-stream")})
    assert ok.status_code == 202, ok.text


def test_search_validates_its_body(http):
    col = _collection(http)
    _error(http.post("/v1/collections/search", json={"query": "x"}), 400, param="collection_ids")
    _error(
        http.post("/v1/collections/search", json={"collection_ids": [], "query": "x"}),
        400,
        param="collection_ids",
    )
    _error(
        http.post("/v1/collections/search", json={"collection_ids": [col["id"]], "query": ""}),
        400,
        param="query",
    )
    _error(
        http.post(
            "/v1/collections/search",
            json={"collection_ids": [col["id"]], "query": "x", "limit": 0},
        ),
        400,
        param="limit",
    )
    err = _error(
        http.post(
            "/v1/collections/search",
            json={"collection_ids": [col["id"], "col_missing"], "query": "x"},
        ),
        404,
        "collection_not_found",
        "collection_ids",
    )
    assert "col_missing" in err["message"]
    empty = http.post("/v1/collections/search", json={"collection_ids": [col["id"]], "query": "x"})
    assert empty.status_code == 200 and empty.json() == {"object": "list", "data": []}


def test_every_endpoint_is_scoped_to_the_callers_workspace(
    http, outsider_http, anon_http, owner, outsider
):
    col = _collection(http, name="Private")
    doc = http.post(f"/v1/collections/{col['id']}/documents", json={"text": "secret plan"}).json()
    # a second workspace with its own collection, listed only to its own key
    second, second_key = make_workspace("second")
    theirs = Collection.objects.create(workspace=second, name="Theirs")
    mine = _collection(outsider_http, name="Outsider's own")

    owner_paths = [
        ("GET", f"/v1/collections/{col['id']}", None),
        ("PATCH", f"/v1/collections/{col['id']}", {"name": "pwned"}),
        ("DELETE", f"/v1/collections/{col['id']}", None),
        ("GET", f"/v1/collections/{col['id']}/documents", None),
        ("POST", f"/v1/collections/{col['id']}/documents", {"text": "injected"}),
        ("GET", f"/v1/collections/{col['id']}/documents/{doc['id']}", None),
        ("DELETE", f"/v1/collections/{col['id']}/documents/{doc['id']}", None),
        # the owner's document through the outsider's own collection
        ("GET", f"/v1/collections/{mine['id']}/documents/{doc['id']}", None),
        ("DELETE", f"/v1/collections/{mine['id']}/documents/{doc['id']}", None),
    ]
    for method, path, body in owner_paths:
        resp = outsider_http.request(method, path, json=body)
        error = _error(resp, 404)
        assert error["code"] in ("collection_not_found", "document_not_found"), (method, path)
        assert "secret" not in resp.text
    err = _error(
        outsider_http.post(
            "/v1/collections/search", json={"collection_ids": [col["id"]], "query": "secret plan"}
        ),
        404,
        "collection_not_found",
        "collection_ids",
    )
    assert col["id"] in err["message"]
    listed = outsider_http.get("/v1/collections").json()["data"]
    assert [c["id"] for c in listed] == [mine["id"]]
    assert theirs.id not in {c["id"] for c in http.get("/v1/collections").json()["data"]}

    every = [
        ("GET", "/v1/collections"),
        ("POST", "/v1/collections"),
        ("POST", "/v1/collections/search"),
        *[(m, p) for m, p, _ in owner_paths[:7]],
    ]
    for method, path in every:
        resp = anon_http.request(method, path, json={"name": "x"})
        _error(resp, 401, "invalid_api_key")
        bad = anon_http.request(method, path, headers={"Authorization": "Bearer sk-wrong"})
        _error(bad, 401, "invalid_api_key")

    # nothing the outsider tried changed the owner's data
    assert http.get(f"/v1/collections/{col['id']}").json()["name"] == "Private"
    docs = http.get(f"/v1/collections/{col['id']}/documents").json()["data"]
    assert [d["id"] for d in docs] == [doc["id"]]
    assert not Document.objects.filter(workspace=outsider[0]).exclude(collection_id=mine["id"])


def test_deleting_a_collection_removes_documents_and_chunks(http, owner):
    col = _collection(http)
    doc = http.post(f"/v1/collections/{col['id']}/documents", json={"text": "abc def"}).json()
    document = Document.objects.get(id=doc["id"])
    Chunk.objects.create(
        workspace=owner[0], collection_id=col["id"], document=document, chunk_index=0, text="abc"
    )
    assert http.delete(f"/v1/collections/{col['id']}").status_code == 200
    assert not Document.objects.filter(id=doc["id"]).exists()
    assert not Chunk.objects.filter(collection_id=col["id"]).exists()


def test_uploading_a_failed_documents_bytes_again_queues_it_again(http):
    """A document that failed (a worker's crash: "ingestion failed (OperationalError); re-run
    it to resume") could only be re-run from the admin: the same bytes uploaded again gave back
    the failed document, as it was, so a tenant's one way out was to delete it and upload it
    again. Now the upload is the re-run: the same document, queued again, its error gone."""
    col = _collection(http)
    url = f"/v1/collections/{col['id']}/documents"
    first = http.post(url, json={"text": "Returns within 30 days."}).json()
    Document.objects.filter(id=first["id"]).update(
        status="failed", error="ingestion failed (OperationalError); re-run it to resume"
    )
    again = http.post(url, json={"text": "Returns within 30 days."})
    assert again.status_code == 200 and again.json()["duplicate"] is True
    assert again.json()["id"] == first["id"]
    assert again.json()["status"] == "queued" and again.json()["error"] is None
    assert Document.objects.get(id=first["id"]).status == "queued"
    # a document that did not fail is given back as it is
    Document.objects.filter(id=first["id"]).update(status="ready")
    assert http.post(url, json={"text": "Returns within 30 days."}).json()["status"] == "ready"


def test_a_refused_text_document_names_text_not_file(http, settings):
    """A document sent as JSON `{"text"}` that the rules refuse (blank, over the size limit,
    binary-looking) was answered with `param: "file"`, a field the request did not have."""
    col = _collection(http)
    url = f"/v1/collections/{col['id']}/documents"
    _error(http.post(url, json={"text": "  \n\t "}), 400, "empty_document", "text")
    # Unicode blanks (no-break, zero-width, BOM) are empty too: a zero-width space was queued,
    # chunked, and sent to the model as a passage
    blanks = "\u00a0\u2003\u200b\ufeff"
    _error(http.post(url, json={"text": blanks}), 400, "empty_document", "text")
    _error(
        http.post(url, files={"file": ("b.txt", blanks.encode(), "text/plain")}),
        400,
        "empty_document",
        "file",
    )
    control = "".join(chr(c) for c in range(1, 9)) * 50
    _error(http.post(url, json={"text": control}), 415, "unsupported_file_type", "text")
    settings.ENGRAM_MAX_DOCUMENT_BYTES = 100
    _error(http.post(url, json={"text": "a" * 101}), 413, "document_too_large", "text")
    # an upload's own problems still name its `file`
    _error(http.post(url, files={"file": ("e.txt", b" \n", "text/plain")}), 400, param="file")


def _chunked(body: bytes):
    """The body as a generator: httpx sends it with Transfer-Encoding: chunked and no
    Content-Length, as streaming clients (curl -T -, a proxy re-chunking) do."""
    yield from (body[i : i + 7] for i in range(0, len(body), 7))


def test_a_chunked_body_is_read_on_json_and_multipart_routes(http):
    """DRF and Django's multipart parser took the missing Content-Length for 0: a chunked JSON
    body read as empty ("text: This field is required.") and a chunked upload as "No file was
    submitted."."""
    col = _collection(http)
    url = f"/v1/collections/{col['id']}/documents"
    text = json.dumps({"text": "Chunked notes about kestrels.", "title": "Kestrels"}).encode()
    sent = http.post(url, content=_chunked(text), headers={"content-type": "application/json"})
    assert sent.request.headers["transfer-encoding"] == "chunked"
    assert "content-length" not in sent.request.headers
    assert sent.status_code == 202, sent.text
    assert sent.json()["title"] == "Kestrels"

    form = httpx.Request("POST", url, files={"file": ("owl.md", b"# Owls\n\nThey hoot at night.")})
    body = form.read()
    uploaded = http.post(
        url, content=_chunked(body), headers={"content-type": form.headers["content-type"]}
    )
    assert uploaded.status_code == 202, uploaded.text
    assert uploaded.json()["filename"] == "owl.md"
    assert Document.objects.filter(collection_id=col["id"]).count() == 2


_FILE_PART = (
    b'--B\r\nContent-Disposition: form-data; name="file"; filename="notes.txt"\r\n'
    b"Content-Type: text/plain\r\n\r\nReturns within 30 days."
)


@pytest.mark.parametrize(
    ("content_type", "body", "named"),
    [
        # truncated: the part's content cut short, no closing boundary
        ("multipart/form-data; boundary=B", _FILE_PART[:-8], "closing boundary '--B--'"),
        ("multipart/form-data; boundary=B", _FILE_PART + b"\r\n--B\r\n", "closing boundary"),
        # parts delimited by a boundary other than the Content-Type's
        ("multipart/form-data; boundary=A", _FILE_PART + b"\r\n--B--\r\n", "'--A--'"),
        ("multipart/form-data", _FILE_PART + b"\r\n--B--\r\n", "names no boundary"),
        ("multipart/form-data; boundary=", _FILE_PART + b"\r\n--B--\r\n", "names no boundary"),
        ('multipart/form-data; boundary="B "', _FILE_PART, "Content-Type is not valid"),
    ],
)
def test_a_malformed_multipart_body_is_400_invalid_multipart(http, content_type, body, named):
    """A truncated upload was "file: No file was submitted." (a file that was sent), and a
    body without a boundary `invalid_json`."""
    col = _collection(http)
    url = f"/v1/collections/{col['id']}/documents"
    resp = http.post(url, content=body, headers={"content-type": content_type})
    error = _error(resp, 400, "invalid_multipart")
    assert error["type"] == "invalid_request_error" and named in error["message"]
    assert not Document.objects.exists()
    whole = _FILE_PART + b"\r\n--B--\r\n"  # the same body whole is a document
    sent = http.post(
        url, content=whole, headers={"content-type": "multipart/form-data; boundary=B"}
    )
    assert sent.status_code == 202, sent.text
    assert sent.json()["filename"] == "notes.txt" and sent.json()["size_bytes"] == 23


def test_a_chunked_upload_over_the_limit_is_refused_by_its_received_size(http, settings):
    """The size limits read Content-Length: a chunked upload, with none, is measured as received."""
    settings.ENGRAM_MAX_DOCUMENT_BYTES = 10_000
    col = _collection(http)
    url = f"/v1/collections/{col['id']}/documents"
    form = httpx.Request("POST", url, files={"file": ("big.txt", b"word " * 40_000)})
    body = form.read()
    refused = http.post(
        url, content=_chunked(body), headers={"content-type": form.headers["content-type"]}
    )
    err = _error(refused, 413, "document_too_large", "file")
    assert f"{len(body)} bytes in all" in err["message"]
    assert not Document.objects.filter(collection_id=col["id"]).exists()


def test_a_body_past_the_request_limit_is_refused_without_being_spooled_whole(
    http, settings, spooled
):
    """Django spooled a body of any size to a temporary file before any limit was read (a
    chunked one, with no Content-Length to refuse it by, could fill the disk)."""
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 50_000
    chunks = (b"x" * 65_536 for _ in range(80))  # 5 MB

    refused = http.post(
        "/v1/memories", content=chunks, headers={"content-type": "application/json"}
    )

    _error(refused, 413, "request_too_large")
    assert refused.headers.get("x-request-id")  # answered through the middleware
    assert sum(spooled) <= 50_000 + 65_536
    small = http.post(
        "/v1/memories",
        content=_chunked(b'{"user_id": "u", "text": "Hi."}'),
        headers={"content-type": "application/json"},
    )
    assert small.status_code == 201, small.text


def test_an_upload_into_a_collection_deleted_meanwhile_is_collection_not_found(http, monkeypatch):
    """The collection deleted between the upload's read of it and its insert (another client's
    DELETE): the insert's foreign key failed and the upload answered 404 "No such document." to
    a request that was creating one."""
    from memory.knowledge import selectors

    col = _collection(http)
    read = selectors.collection_get

    def read_then_deleted(**kwargs):
        collection = read(**kwargs)
        Collection.objects.filter(id=collection.id).delete()  # the other client's DELETE
        return collection

    monkeypatch.setattr(selectors, "collection_get", read_then_deleted)
    resp = http.post(f"/v1/collections/{col['id']}/documents", json={"text": "Hello there."})
    _error(resp, 404, code="collection_not_found")
    assert not Document.objects.exists()


def test_a_file_name_too_long_for_a_part_header_is_named_as_the_cause(http):
    """A part's headers over Django's 1024 bytes (a 1,000-character file name) were "The
    multipart body is malformed (Request max total header size exceeded.)", which names
    neither the file name nor what to do."""
    col = _collection(http)
    resp = http.post(
        f"/v1/collections/{col['id']}/documents",
        files={"file": ("q" * 1000 + ".txt", b"Returns within 30 days.", "text/plain")},
    )
    error = _error(resp, 400, "invalid_multipart")
    assert "file name" in error["message"] and "1024 bytes" in error["message"], error
    assert not Document.objects.exists()


def test_a_file_name_that_is_not_utf8_is_named_as_the_cause(http):
    """Django drops a part header it cannot decode as UTF-8, and with it the file part: a
    Latin-1 file name ("Präsentation.txt") was "file: No file was submitted.", for a file that
    was sent."""
    col = _collection(http)
    url = f"/v1/collections/{col['id']}/documents"
    body = (
        b'--B\r\nContent-Disposition: form-data; name="file"; filename="Pr\xe4sentation.txt"\r\n'
        b"Content-Type: text/plain\r\n\r\nReturns within 30 days.\r\n--B--\r\n"
    )
    resp = http.post(url, content=body, headers={"content-type": "multipart/form-data; boundary=B"})
    error = _error(resp, 400, "invalid_multipart")
    assert "not UTF-8" in error["message"] and "file name" in error["message"], error
    utf8 = body.replace(b"Pr\xe4sentation", "Präsentation".encode())
    sent = http.post(url, content=utf8, headers={"content-type": "multipart/form-data; boundary=B"})
    assert sent.status_code == 202 and sent.json()["filename"] == "Präsentation.txt", sent.text
    # a text file whose own lines are such a header is no cause: its part has a UTF-8 one
    mail = b'Content-Disposition: attachment; filename="r\xe9sum\xe9.pdf"\r\nSee attachment.\r\n'
    mailed = http.post(url, files={"file": ("mail.txt", mail, "text/plain")})
    assert mailed.status_code == 202, mailed.text


def test_the_same_content_from_another_key_of_the_workspace_is_the_same_document(
    http, engram_server, owner
):
    """Documents belong to the workspace, not to the key that uploaded them: the same content
    in the same collection is its one document whichever key sends it, answered 200 with
    `duplicate: true` (202 for a new one), as it was first stored (title, file name, key,
    metadata): nothing of the second upload is kept, and nothing is embedded twice."""
    from accounts.services import api_key_create

    col = _collection(http)
    url = f"/v1/collections/{col['id']}/documents"
    first = http.post(
        url,
        files={"file": ("policy.md", b"# Policy\n\nReturns within 30 days.", "text/markdown")},
        data={"title": "Policy", "metadata": json.dumps({"team": "a"})},
    )
    assert first.status_code == 202 and first.json()["duplicate"] is False
    second_key = api_key_create(workspace=owner[0], name="second").raw_key
    with httpx.Client(
        base_url=engram_server.url, headers={"Authorization": f"Bearer {second_key}"}
    ) as other:
        again = other.post(
            url,
            files={"file": ("copy.md", b"# Policy\n\nReturns within 30 days.", "text/markdown")},
            data={"title": "Copy", "metadata": json.dumps({"team": "b"})},
        )
    assert again.status_code == 200 and again.json()["duplicate"] is True
    body = again.json()
    assert body["id"] == first.json()["id"]
    assert (body["title"], body["filename"], body["external_id"], body["metadata"]) == (
        "Policy",
        "policy.md",
        "policy.md",
        {"team": "a"},
    )
    assert Document.objects.filter(collection_id=col["id"]).count() == 1


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/documents", {"text": 5}, "text"),
        ("/documents", {"text": "Some words.", "title": 7}, "title"),
        ("/documents", {"text": "Some words.", "external_id": 12}, "external_id"),
        ("", {"name": 7}, "name"),
        ("", {"name": "Handbook", "description": ["a"]}, "description"),
        ("search", {"query": 42}, "query"),
        ("search", {"query": "refunds", "limit": "5"}, "limit"),
    ],
)
def test_a_json_value_of_another_type_is_a_400_not_a_string(http, path, body, param):
    """DRF's CharField took a number for its digits: {"text": 5} was stored and embedded as
    the document "5", {"name": 7} made the collection "7"."""
    col = _collection(http)
    if path == "search":
        url, body = "/v1/collections/search", {"collection_ids": [col["id"]]} | body
    elif path:
        url = f"/v1/collections/{col['id']}{path}"
    else:
        url = "/v1/collections"
    _error(http.post(url, json=body), 400, "invalid_value", param)
    assert not Document.objects.exists()
    assert Collection.objects.count() == 1


@pytest.mark.parametrize(
    ("field", "value"),
    [("title", b"Pr\xe4sentation"), ("metadata", b'{"team": "R\xe9sum\xe9"}')],
)
def test_a_form_field_that_is_not_utf8_is_400_invalid_multipart(http, field, value):
    """Django decodes a form field with errors="replace": a Latin-1 title was stored as
    "Pr\\ufffdsentation" (and a metadata value likewise), bad input taken silently where the
    JSON doors refuse a body that is not UTF-8."""
    col = _collection(http)
    url = f"/v1/collections/{col['id']}/documents"
    body = (
        _FILE_PART
        + b'\r\n--B\r\nContent-Disposition: form-data; name="'
        + field.encode()
        + b'"\r\n\r\n'
        + value
        + b"\r\n--B--\r\n"
    )
    resp = http.post(url, content=body, headers={"content-type": "multipart/form-data; boundary=B"})
    error = _error(resp, 400, "invalid_multipart")
    assert "not UTF-8" in error["message"], error
    assert not Document.objects.exists()
    utf8 = body.replace(value, value.decode("latin-1").encode())
    sent = http.post(url, content=utf8, headers={"content-type": "multipart/form-data; boundary=B"})
    assert sent.status_code == 202, sent.text
    stored = Document.objects.get()
    assert "\ufffd" not in stored.title + json.dumps(stored.metadata, ensure_ascii=False)
