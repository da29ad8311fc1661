"""Writes for knowledge collections: collections, documents, and the ingestion a worker runs."""

from __future__ import annotations

import hashlib
import logging
import time
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import F, Max, Q, QuerySet
from django.utils import timezone

from accounts.models import Workspace
from config.common import coherence, database
from config.common.errors import Invalid, TooLarge, Unsupported
from config.common.jsonbody import metadata_problem
from config.common.lease_thread import renewing
from config.common.rows import lock_existing, lock_if_present
from memory.knowledge import parsing as extraction
from memory.models import Chunk, Collection, Document
from memory.retrieval import terms

logger = logging.getLogger("engram.ingest")

# An ingestion embeds for this long, then queues itself again behind the work already waiting:
# the worker's one pool process (make run) is shared with memory extraction, and a 1.2 MB
# document held it for minutes, so new memories waited as long.
INGEST_SLICE_SECONDS = 5.0


def document_lease() -> timedelta:
    """A running ingestion's lease (ENGRAM_DOCUMENT_LEASE_SECONDS): the run renews its
    document's updated_at every third of it while it lives (its lease thread, and every batch it
    commits); a PROCESSING document untouched for this long belongs to a run that died, and the
    sweep or the next delivery of its task takes it over. A fixed 120 s held a dead run's
    document for two minutes, and an extraction longer than that (a large PDF on a slow
    machine) lost the document to a second run while it still worked."""
    return timedelta(seconds=settings.ENGRAM_DOCUMENT_LEASE_SECONDS)


def _metadata(metadata: dict | None) -> dict:
    if metadata is None:
        return {}
    if problem := metadata_problem(metadata):
        raise Invalid(problem, field="metadata")
    return metadata


def document_too_large(size: int, *, whole_upload: bool = False) -> TooLarge:
    """The refusal of a `size`-byte document; `whole_upload`: `size` is the whole multipart
    request's, refused before reading it (so before the file's own size is known)."""
    limit = settings.ENGRAM_MAX_DOCUMENT_BYTES
    if whole_upload:
        message = (
            f"The upload is {size} bytes in all (the file and its form fields); a document "
            f"may be at most {limit} bytes (ENGRAM_MAX_DOCUMENT_BYTES)."
        )
    else:
        message = f"The document is {size} bytes; the limit is {limit} (ENGRAM_MAX_DOCUMENT_BYTES)."
    return TooLarge(message, field="file", code="document_too_large")


def _unpacks_too_far(size: int, *, at_least: bool = False) -> str:
    limit = settings.ENGRAM_MAX_DOCUMENT_EXPANDED_BYTES
    size_text = f"at least {size}" if at_least else f"{size}"
    return (
        f"unpacks to {size_text} bytes; the limit is {limit} (ENGRAM_MAX_DOCUMENT_EXPANDED_BYTES)"
    )


@transaction.atomic
def collection_create(
    *, workspace: Workspace, name: str, description: str = "", metadata: dict | None = None
) -> Collection:
    return Collection.objects.create(
        workspace=workspace, name=name, description=description, metadata=_metadata(metadata)
    )


@transaction.atomic
def collection_update(
    *,
    workspace: Workspace,
    collection: Collection,
    name: str | None = None,
    description: str | None = None,
    metadata: dict | None = None,
) -> Collection:
    assert collection.workspace_id == workspace.id
    lock_existing(collection)  # or Collection.DoesNotExist: never saved back after a delete
    if name is not None:
        collection.name = name
    if description is not None:
        collection.description = description
    if metadata is not None:
        collection.metadata = _metadata(metadata)
    collection.save()
    return collection


@transaction.atomic
def collection_delete(*, workspace: Workspace, collection: Collection) -> None:
    assert collection.workspace_id == workspace.id
    database.long_statements()  # every chunk of every document, in this transaction
    # The collection's row and its documents' first, as document_delete does.
    if not lock_if_present(collection):
        return
    documents = Document.objects.filter(workspace=workspace, collection=collection)
    list(documents.select_for_update().values_list("pk"))
    Chunk.objects.filter(workspace=workspace, collection=collection).delete()
    # defer the stored bytes: the delete collector would otherwise load every upload
    documents.defer("raw").delete()
    collection.delete()
    terms.collections_changed()
    # Agents that name it stop searching it (completions.agents.cache drops ids that are gone
    # when it reloads): every process's cached agents are cleared on commit.
    coherence.publish("agents")


def document_send(document_id: str) -> None:
    """Send the ingestion task now; if Redis is down, the sweep sends it."""
    from config.celery import send
    from memory.knowledge.tasks import ingest_document

    send(ingest_document, document_id, then="the sweep sends it")


def _enqueue(document_id: str) -> None:
    transaction.on_commit(lambda: document_send(document_id))


def document_create(
    *,
    workspace: Workspace,
    collection: Collection,
    raw: bytes,
    title: str = "",
    filename: str = "",
    metadata: dict | None = None,
    is_text: bool = False,
    external_id: str | None = None,
) -> tuple[Document, bool]:
    """(document, created): identical bytes in the collection give back the existing document
    (queued again if it had failed). `is_text`: `raw` is a text sent as one (UTF-8), typed as
    text, Markdown or HTML only.

    `external_id`: the document's key in the collection (None: its `filename`; "": none). A
    new content under a key the collection holds is that key's next version: it is ingested
    beside the current one, which stays searchable until the new one is ready and is then
    replaced in the same commit (_switch)."""
    assert collection.workspace_id == workspace.id
    key = (filename if external_id is None else external_id)[:300]
    if len(raw) > settings.ENGRAM_MAX_DOCUMENT_BYTES:
        raise document_too_large(len(raw))
    # Unicode blanks too (no-break and zero-width spaces, BOMs): they are not ASCII whitespace
    if not raw.strip() or not extraction.visible(raw.decode("utf-8", "ignore")):
        raise Invalid("The document is empty.", field="file", code="empty_document")
    try:
        content_type = extraction.detect(
            raw, max_expanded=settings.ENGRAM_MAX_DOCUMENT_EXPANDED_BYTES, text=is_text
        )
    except extraction.ExpandsTooFar as exc:
        raise TooLarge(
            f"The document {_unpacks_too_far(exc.size)}.", field="file", code="document_too_large"
        ) from None
    except extraction.UnsupportedType as exc:
        raise Unsupported(
            f"Unsupported document type: {exc}. Send PDF, DOCX, HTML, Markdown or plain text.",
            field="file",
            code="unsupported_file_type",
        ) from None
    metadata = _metadata(metadata)
    digest = hashlib.sha256(raw).hexdigest()
    existing = Document.objects.filter(
        collection=collection, content_hash=digest, replaces__isnull=True
    ).defer("raw")
    if found := existing.first():
        if key and found.external_id == key:
            _make_latest(found)
        elif found.external_id != key:
            _take_key_if_replaced(found, key)
        if found.status == Document.Status.FAILED:
            # The tenant's way to re-run a failed document (its error may say "re-run it"; the
            # admin's re-run is the operator's): the same bytes again queue it again, resuming.
            document_rerun(workspace=workspace, document=found)
            found.refresh_from_db(fields=["status", "error", "attempts", "updated_at"])
        return found, False
    try:
        with transaction.atomic():
            version = 1
            if key:
                _key_lock(collection.id, key)  # two uploads of one key: one version each
                latest = _same_key(collection.id, key).aggregate(latest=Max("version"))
                version = (latest["latest"] or 0) + 1
            document = Document.objects.create(
                workspace=workspace,
                collection=collection,
                external_id=key,
                version=version,
                title=title[:300],
                filename=filename[:300],
                content_type=content_type,
                content_hash=digest,
                size_bytes=len(raw),
                raw=raw,
                metadata=metadata,
            )
            _enqueue(document.id)
    except IntegrityError:  # the same bytes uploaded concurrently: one row wins
        if found := existing.first():
            return found, False
        # or the collection was deleted since the caller read it (the foreign key): no such
        # collection, rather than "No such document" to a request that was creating one
        raise Collection.DoesNotExist from None
    return document, True


def _key_lock(collection_id: str, key: str) -> None:
    """Serialize, until the transaction ends, the writers of one key's versions: the numbering
    of a new upload and the switch to a version that became ready."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
            [f"document:{collection_id}:{key}"],
        )


def _same_key(collection_id: str, key: str) -> QuerySet[Document]:
    return Document.objects.filter(collection_id=collection_id, external_id=key).defer("raw")


def _replace_older(document: Document) -> list[str]:
    """Delete the versions of the document's key older than it, with their chunks (in the
    caller's transaction, under the key's lock); the ids deleted. A run still ingesting one of
    them finds its document gone and stops (_Gone)."""
    older = _same_key(document.collection_id, document.external_id).filter(
        version__lt=document.version
    )
    ids = list(older.select_for_update().order_by("id").values_list("id", flat=True))
    if ids:
        Chunk.objects.filter(document_id__in=ids).delete()
        Document.objects.filter(id__in=ids).defer("raw").delete()
    return ids


@transaction.atomic
def _make_latest(document: Document) -> None:
    """The same content uploaded again under its key: it is that key's latest version again
    (nothing is re-embedded). Ready, it replaces the newer versions still being ingested or
    failed now; otherwise when it becomes ready."""
    _collection_key_share(document.collection_id)
    _key_lock(document.collection_id, document.external_id)
    same = _same_key(document.collection_id, document.external_id)
    latest = same.exclude(id=document.id).aggregate(latest=Max("version"))["latest"]
    if latest is None or latest < document.version:
        return
    if not same.filter(id=document.id).update(version=latest + 1):
        return  # deleted meanwhile
    document.refresh_from_db(fields=["version", "status"])
    if document.status == Document.Status.READY:
        _replace_older(document)
        terms.collections_changed()


@transaction.atomic
def _take_key_if_replaced(document: Document, key: str) -> None:
    """The same content uploaded under another key (`key`, "": none) than its document's,
    while a newer version of the document's key waits to replace it: the document moves to
    `key`, as that key's latest version (replacing its older ones if ready). It was answered
    as the upload's document (200, duplicate), then deleted with its old key's older versions
    when the newer one was ready: the content the caller had just been told was there left
    every search. A document that is its key's latest stays under its key."""
    _collection_key_share(document.collection_id)
    for each in sorted({document.external_id, key} - {""}):  # one order: no deadlock
        _key_lock(document.collection_id, each)
    current = Document.objects.filter(id=document.id).values("external_id", "version").first()
    if current is None or not current["external_id"]:
        return  # deleted meanwhile, or a document without a key: never replaced
    same = _same_key(document.collection_id, current["external_id"])
    if not same.filter(version__gt=current["version"]).exists():
        return
    version = 1
    if key:
        latest = _same_key(document.collection_id, key).aggregate(latest=Max("version"))
        version = (latest["latest"] or 0) + 1
    Document.objects.filter(id=document.id).update(external_id=key, version=version)
    document.refresh_from_db(fields=["external_id", "version", "status"])
    if key and document.status == Document.Status.READY:
        _replace_older(document)
        terms.collections_changed()


@transaction.atomic
def document_delete(*, workspace: Workspace, document: Document) -> None:
    """Delete the document and its chunks. Its row is locked first: an ingestion writing chunks
    holds it until its commit, so those chunks are deleted too, rather than failing this
    deletion's commit on their foreign key (tests/test_collections_ingest.py)."""
    assert document.workspace_id == workspace.id
    if not lock_if_present(document):
        return
    Chunk.objects.filter(workspace=workspace, document=document).delete()
    document.delete()
    terms.collections_changed()  # its words leave the collection's term statistics


@transaction.atomic
def document_rerun(*, workspace: Workspace, document: Document, from_scratch: bool = False) -> bool:
    """Queue ingestion again: resuming (chunks already embedded are kept) or from the bytes;
    False when not queued (deleted meanwhile, or ready with nothing to resume).

    A ready document re-ingested from its bytes stays searchable as it is: a rebuild of it
    (`Document.replaces`) is ingested beside it and swapped in when ready (_switch)."""
    assert document.workspace_id == workspace.id
    # The collection's row, the document's, then its chunks: the order a deletion and a running
    # ingestion lock them in. Deleting the chunks first deadlocked with a document deleted
    # meanwhile (it holds the document's row and waits for the chunks).
    _collection_key_share(document.collection_id)
    if not lock_if_present(document):
        return False  # deleted meanwhile: nothing to run again
    if _is_ready(document.id):
        if from_scratch:
            return _rebuild(document.id)
        # Nothing to resume. Queued, it left every search until a worker had run it (the
        # admin's re-run of a ready document, behind a bulk upload: minutes without it).
        return False
    _queue_again(document.id, from_scratch=from_scratch)
    return True


def _queue_again(document_id: str, *, from_scratch: bool) -> None:
    """Queue a document that is not ready (its row locked by the caller) again."""
    fields = {
        "status": Document.Status.QUEUED,
        "error": "",
        "updated_at": timezone.now(),
        "attempts": 0,
    }
    if from_scratch:
        Chunk.objects.filter(document_id=document_id).delete()
        fields |= {"chunks_total": 0, "chunks_done": 0, "pages": 0}
    Document.objects.filter(id=document_id).update(**fields)
    _enqueue(document_id)


def _rebuild(document_id: str) -> bool:
    """Queue a rebuild of the ready document (its row locked by the caller) from its stored
    bytes; one already queued or running starts over instead. The rebuild copies the
    document but for its key (none: the versions of the key never see it) and replaces
    nothing until it is ready."""
    pending = Document.objects.filter(replaces_id=document_id).defer("raw")
    if rebuild := pending.select_for_update().first():
        _queue_again(rebuild.id, from_scratch=True)
        return True
    source = Document.objects.get(id=document_id)
    rebuild = Document.objects.create(
        workspace_id=source.workspace_id,
        collection_id=source.collection_id,
        replaces=source,
        version=source.version,
        title=source.title,
        filename=source.filename,
        content_type=source.content_type,
        content_hash=source.content_hash,
        size_bytes=source.size_bytes,
        raw=source.raw,
        metadata=source.metadata,
    )
    _enqueue(rebuild.id)
    return True


def _is_ready(document_id: str) -> bool:
    return Document.objects.filter(id=document_id, status=Document.Status.READY).exists()


# --- ingestion (the worker's side) ----------------------------------------------------------


class _Gone(Exception):
    """The document was deleted or re-queued while this run worked on it."""


def _claim(document_id: str) -> tuple[str, Document | None]:
    """('claimed', the document with this run's number in `run`), or 'busy' (another live run
    has it), 'failed' (its runs kept dying) or 'skip' (gone, ready or failed) with None.

    The claim numbers the run (`Document.run`), and every write of the run is fenced by that
    number (`_mine`): a run paused past its lease or past a re-ingestion writes nothing when it
    resumes once a later run has claimed the document.

    Each claim counts a run; progress (a committed batch, `_touch(progress=True)`) sets the
    count back to zero. A document whose worker dies (the memory a damaged file takes, a crash
    in a parser's C code, the hard time limit) or runs out of time before it commits anything
    would otherwise be sent again by the sweep and redelivered by the broker forever, taking a
    worker with it each time: after ENGRAM_JOB_MAX_ATTEMPTS such runs it is failed instead.
    """
    now = timezone.now()
    stale = now - document_lease()
    takeable = Q(status=Document.Status.QUEUED) | Q(
        status=Document.Status.PROCESSING, updated_at__lt=stale
    )
    limit = settings.ENGRAM_JOB_MAX_ATTEMPTS
    mine = Document.objects.filter(takeable, id=document_id)
    with transaction.atomic():  # the row stays locked from the claim to the read of its number
        if mine.filter(attempts__lt=limit).update(
            status=Document.Status.PROCESSING,
            error="",
            updated_at=now,
            attempts=F("attempts") + 1,
            run=F("run") + 1,
        ):
            return "claimed", Document.objects.get(id=document_id)
    if mine.update(
        status=Document.Status.FAILED,
        error=(
            f"ingestion was started {limit} times without progress: each run died or ran out "
            "of time before finishing a batch; re-run it once the cause is fixed"
        ),
        updated_at=now,
    ):
        logger.warning("document %s failed: %d runs without progress", document_id, limit)
        return "failed", None
    status = Document.objects.filter(id=document_id).values_list("status", flat=True).first()
    return ("busy" if status == Document.Status.PROCESSING else "skip"), None


def _collection_key_share(collection_id: str) -> None:
    """Lock the collection's row FOR KEY SHARE (as a chunk's foreign key check takes it) until
    the transaction ends: the first of the rows every writer of a document's chunks locks."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT 1 FROM {Collection._meta.db_table} WHERE id = %s FOR KEY SHARE",
            [collection_id],
        )


def _mine(document: Document) -> QuerySet[Document]:
    """The document's row while it is still this run's: PROCESSING under the run's claim."""
    return Document.objects.filter(
        id=document.id, run=document.run, status=Document.Status.PROCESSING
    )


def _touch(document: Document, *, progress: bool = False, **fields: object) -> None:
    """Renew this run's lease (and set `fields`); `progress`: a batch was committed, so the
    runs counted by `_claim` start again from zero. _Gone when the document is no longer
    this run's. In a transaction, the row stays locked until it ends: what the run writes
    after it lands only while the document is its own."""
    if progress:
        fields["attempts"] = 0
    if not _mine(document).update(updated_at=timezone.now(), **fields):
        raise _Gone


def _heading_title(blocks: list[extraction.Block]) -> str:
    """The heading that titles the whole document: its first block, with no other heading at
    its level or above. The first heading anywhere titled every chunk: a Word document of two
    Heading 1 sections, "Vacation policy" and "Expenses", put the expenses before the model as
    <document title="Vacation policy" heading="Expenses">, and an introduction followed by
    "## Exceptions" was the document "Exceptions"."""
    if not blocks or blocks[0].kind != "heading":
        return ""
    top = blocks[0]
    if any(b.kind == "heading" and b.level <= top.level for b in blocks[1:]):
        return ""
    return top.text


def _split(document: Document) -> None:
    """Extract and chunk the stored bytes; the chunks (without embeddings) land in one commit."""
    from memory.knowledge.chunking import chunk_blocks

    try:
        extracted = extraction.extract(
            bytes(document.raw),
            document.content_type or None,
            max_expanded=settings.ENGRAM_MAX_DOCUMENT_EXPANDED_BYTES,
        )
    except extraction.ExpandsTooFar as exc:  # a PDF's streams: only known decompressed
        raise extraction.ExtractionError(
            f"the document is too large: it {_unpacks_too_far(exc.size, at_least=True)}"
        ) from None
    drafts = chunk_blocks(
        extracted.blocks,
        max_tokens=settings.ENGRAM_CHUNK_TOKENS,
        overlap_tokens=settings.ENGRAM_CHUNK_OVERLAP_TOKENS,
    )
    if not drafts:
        hint = " (a scanned PDF needs OCR, which Engram does not do)" if extracted.pages else ""
        raise extraction.ExtractionError(f"no text could be extracted{hint}")
    title = document.title or extracted.title or _heading_title(extracted.blocks)
    title = title or document.filename
    title = title[:300]
    with transaction.atomic():
        # The collection's row, then the document's, then the chunks: the order collection_delete
        # locks them in. The chunks' foreign key check took the collection's last, and a
        # collection deleted meanwhile deadlocked with the worker (503 to its caller).
        _collection_key_share(document.collection_id)
        _touch(
            document,
            progress=True,
            chunks_total=len(drafts),
            pages=extracted.pages,
            title=title,
        )
        Chunk.objects.bulk_create(
            [
                Chunk(
                    workspace_id=document.workspace_id,
                    collection_id=document.collection_id,
                    document_id=document.id,
                    chunk_index=d.index,
                    heading=d.heading,
                    text=d.text,
                    token_count=d.token_count,
                    search_text="\n".join(p for p in (title, d.heading, d.text) if p),
                )
                for d in drafts
            ],
            ignore_conflicts=True,  # a concurrent run wrote them first: same content
        )


def _embed_pending(document: Document, batch_size: int, until: float) -> bool:
    """Embed the chunks still without a vector, batch by batch, until done (True) or the
    monotonic clock passes `until` with some left (False; after one batch at least)."""
    from memory.embeddings import get_embedder

    embedder = get_embedder()
    pending = Chunk.objects.filter(document_id=document.id, embedding__isnull=True)
    first = True  # a run embeds one batch at least: progress, which _claim's count needs
    while batch := list(
        pending.order_by("chunk_index").values_list("id", "search_text")[:batch_size]
    ):
        if not first and time.monotonic() > until:
            return False
        first = False
        vectors = embedder.embed([text for _, text in batch])
        with transaction.atomic():
            # The document's row before its chunks', the order document_delete locks them in:
            # chunks first, then the row, deadlocked with a deletion (503 to its caller).
            _touch(document)
            Chunk.objects.bulk_update(
                [
                    Chunk(id=pk, embedding=vector)
                    for (pk, _), vector in zip(batch, vectors, strict=True)
                ],
                ["embedding"],
            )
            done = Chunk.objects.filter(document_id=document.id, embedding__isnull=False).count()
            _touch(document, progress=True, chunks_done=done)
    return True


def _release(document: Document) -> None:
    """Hand a document being ingested back to the queue, its progress kept (if still this
    run's)."""
    _mine(document).update(status=Document.Status.QUEUED, updated_at=timezone.now())


def _fail(document: Document, reason: str) -> None:
    _mine(document).update(
        status=Document.Status.FAILED, error=reason[:2000], updated_at=timezone.now()
    )


def document_ingest(*, document_id: str) -> str:
    """Run (or resume) one document's ingestion: 'ready', 'failed', 'busy', 'again', 'yield'
    or 'skip' ('yield': its time slice ran out, INGEST_SLICE_SECONDS, with chunks left).

    Safe to run twice: the claim admits one run at a time, chunks are unique per index and only
    chunks without an embedding are embedded, so a resumed run picks up where the last stopped.
    """
    outcome, document = _claim(document_id)
    if document is None:
        return outcome
    every = document_lease().total_seconds() / 3
    with renewing(lambda: _renew(document), names=f"document {document.id}", every=every):
        return _ingest(document)


def _renew(document: Document) -> bool:
    """Renew the run's lease (the lease thread's call); False when the document is no longer
    its own."""
    try:
        _touch(document)
    except _Gone:
        return False
    return True


def _switch(document: Document) -> str:
    """Make the embedded document ready ('ready') and, in the same commit, delete the older
    versions of its key: a search sees the old version until then and the new one from then,
    never both and never neither. A newer version already ready (the older content uploaded
    again while this one was ingested, or a race) replaces this one instead ('skip')."""
    with transaction.atomic():
        # The collection's row, the key's lock, this document's row, then the older versions'
        # rows and chunks: the order document_delete and document_rerun lock rows in.
        _collection_key_share(document.collection_id)
        if document.replaces_id:
            return _swap_in(document)
        if document.external_id:
            _key_lock(document.collection_id, document.external_id)
        # A re-ingestion from scratch between the count and the write fails the write's fence.
        total = Chunk.objects.filter(document_id=document.id).count()
        _touch(document, status=Document.Status.READY, chunks_total=total, chunks_done=total)
        if not document.external_id:
            return "ready"
        # its number now, under the key's lock: the same content uploaded again renumbers it
        document.version = Document.objects.values_list("version", flat=True).get(id=document.id)
        newer = _same_key(document.collection_id, document.external_id).filter(
            version__gt=document.version, status=Document.Status.READY
        )
        if newer.exists():
            Chunk.objects.filter(document_id=document.id).delete()
            Document.objects.filter(id=document.id).defer("raw").delete()
            return "skip"
        _replace_older(document)
    return "ready"


def _swap_in(rebuild: Document) -> str:
    """The embedded rebuild's chunks take the place of the ready document it replaces, under
    that document's id, in the caller's transaction; the rebuild's row is deleted. A search
    sees the old chunks until the commit and the new ones from then. The replaced document
    deleted meanwhile took its rebuild with it (_Gone)."""
    replaced = Document.objects.filter(id=rebuild.replaces_id).defer("raw")
    key = replaced.values_list("external_id", flat=True).first()
    if key:  # its versions' writers (a newer version's switch deletes it) lock the key first
        _key_lock(rebuild.collection_id, key)
    # The replaced document's row before the rebuild's, as document_delete reaches them.
    if key is None or not replaced.select_for_update().values_list("pk"):
        raise _Gone
    _touch(rebuild)
    built = Document.objects.values("title", "pages").get(id=rebuild.id)
    Chunk.objects.filter(document_id=rebuild.replaces_id).delete()
    total = Chunk.objects.filter(document_id=rebuild.id).update(document_id=rebuild.replaces_id)
    replaced.update(chunks_total=total, chunks_done=total, updated_at=timezone.now(), **built)
    Document.objects.filter(id=rebuild.id).defer("raw").delete()
    return "ready"


def _ingest(document: Document) -> str:
    """The claimed document's ingestion, under its lease (document_ingest)."""
    from celery.exceptions import SoftTimeLimitExceeded

    document_id = document.id
    try:
        if not Chunk.objects.filter(document_id=document_id).exists():
            _split(document)
        batch = settings.ENGRAM_INGEST_BATCH
        if not _embed_pending(document, batch, time.monotonic() + INGEST_SLICE_SECONDS):
            _release(document)
            return "yield"
        outcome = _switch(document)
        terms.collections_changed()  # its chunks now count in the collection's term statistics
        return outcome
    except _Gone:
        return "skip"
    except extraction.ExtractionError as exc:
        _fail(document, str(exc))
    except SoftTimeLimitExceeded:
        # A long document: release it with its progress kept; the task queues itself again.
        _release(document)
        return "again"
    except Exception as exc:
        logger.exception("ingestion of %s failed", document_id)
        _fail(document, f"ingestion failed ({type(exc).__name__}); re-run it to resume")
    return "failed"
