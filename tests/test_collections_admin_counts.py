"""The admin's collection list counts documents as the API's `document_count` does: the ready
ones, a document being re-ingested from scratch (its rebuild, Document.replaces) once."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import User
from django.urls import reverse

from memory.models import Collection, Document

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_rebuild_and_a_queued_document_are_not_counted_as_the_apis_count(client, http, owner):
    workspace = owner[0]
    collection = Collection.objects.create(workspace=workspace, name="Handbook")
    ready = Document.objects.create(
        workspace=workspace,
        collection=collection,
        title="Leave policy",
        content_hash="h1",
        status=Document.Status.READY,
    )
    Document.objects.create(  # the admin's "re-ingest from scratch" of it, under way
        workspace=workspace,
        collection=collection,
        title="Leave policy",
        content_hash="h1",
        replaces=ready,
        status=Document.Status.PROCESSING,
    )
    Document.objects.create(  # a new upload, still queued: no search finds it yet
        workspace=workspace,
        collection=collection,
        title="Travel",
        content_hash="h2",
        status=Document.Status.QUEUED,
    )
    api = http.get(f"/v1/collections/{collection.id}")
    assert api.status_code == 200, api.text
    assert api.json()["document_count"] == 1

    client.force_login(User.objects.create_superuser("root", "root@example.com", "pw"))
    page = client.get(reverse("admin:memory_collection_changelist"))
    assert page.status_code == 200
    html = page.content.decode()
    assert "Handbook" in html
    # the one collection's row: its documents cell
    assert re.findall(r'<td class="field-documents">(\d+)</td>', html) == ["1"]
