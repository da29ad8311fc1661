"""Reads for knowledge collections; every one is scoped to the caller's workspace."""

from __future__ import annotations

from collections.abc import Iterable

from django.db.models import Count, Q, QuerySet

from accounts.models import Workspace
from memory.models import Collection, Document


def _documents(*statuses: str) -> Count:
    # a rebuild (Document.replaces) is the document it replaces, counted once
    return Count(
        "documents",
        filter=Q(documents__status__in=statuses, documents__replaces__isnull=True),
    )


def ready_document_count() -> Count:
    """A collection's `document_count` as the API answers it (the admin's list counts it so)."""
    return _documents(Document.Status.READY)


def collection_list(*, workspace: Workspace) -> QuerySet[Collection]:
    """Each with its documents counted: `document_count` the ready ones (what a search sees),
    `pending_count` those queued or being ingested, `failed_count` those that failed. All
    documents in one count, a new version waiting beside the current one counted twice and a
    failed one forever, said a collection held documents no search could find."""
    return Collection.objects.filter(workspace=workspace).annotate(
        document_count=_documents(Document.Status.READY),
        pending_count=_documents(Document.Status.QUEUED, Document.Status.PROCESSING),
        failed_count=_documents(Document.Status.FAILED),
    )


def collection_get(*, workspace: Workspace, collection_id: str) -> Collection:
    """Raises Collection.DoesNotExist for an unknown id or another workspace's."""
    return collection_list(workspace=workspace).get(id=collection_id)


def collection_ids_existing(
    *, workspace: Workspace | str, collection_ids: Iterable[str]
) -> set[str]:
    """Which of `collection_ids` are the workspace's collections now (a deleted one is gone,
    and its id is never reused)."""
    ids = set(collection_ids)
    if not ids:
        return set()
    found = Collection.objects.filter(workspace=workspace, id__in=ids)
    return set(found.values_list("id", flat=True))


def document_list(
    *,
    workspace: Workspace,
    collection: Collection,
    status: str | None = None,
    external_id: str | None = None,
) -> QuerySet[Document]:
    """`external_id`: the versions of that key (the current one, and a newer one while it is
    ingested or if it failed)."""
    # a rebuild (Document.replaces) is the operator's work on a document, not one of its own
    documents = Document.objects.filter(
        workspace=workspace, collection=collection, replaces__isnull=True
    ).defer("raw")
    if status:
        documents = documents.filter(status=status)
    if external_id is not None:
        documents = documents.filter(external_id=external_id)
    return documents


def document_get(*, workspace: Workspace, collection: Collection, document_id: str) -> Document:
    """Raises Document.DoesNotExist for an unknown id, another collection's or workspace's."""
    return document_list(workspace=workspace, collection=collection).get(id=document_id)
