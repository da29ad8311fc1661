"""OpenAPI shapes of the knowledge collections API (documentation only; see apis.py)."""

from __future__ import annotations

from rest_framework import serializers

from config.common.openapi import const, list_of
from memory.knowledge.models import Document


class CollectionSerializer(serializers.Serializer):
    id = serializers.CharField()
    object = const("collection")
    name = serializers.CharField()
    description = serializers.CharField(allow_blank=True)
    metadata = serializers.DictField()
    document_count = serializers.IntegerField(
        help_text="Its ready documents: what a search sees (a key's current version, not the "
        "newer one being ingested)."
    )
    pending_count = serializers.IntegerField(
        help_text="Its documents queued or being ingested (new versions included)."
    )
    failed_count = serializers.IntegerField(
        help_text="Its documents whose ingestion failed (see each one's `error`)."
    )
    created_at = serializers.IntegerField()
    updated_at = serializers.IntegerField()


class ProgressSerializer(serializers.Serializer):
    done = serializers.IntegerField()
    total = serializers.IntegerField()


class DocumentSerializer(serializers.Serializer):
    id = serializers.CharField()
    object = const("collection.document")
    collection_id = serializers.CharField()
    title = serializers.CharField(allow_blank=True)
    filename = serializers.CharField(allow_blank=True)
    content_type = serializers.CharField(allow_blank=True)
    size_bytes = serializers.IntegerField()
    content_hash = serializers.CharField()
    metadata = serializers.DictField()
    external_id = serializers.CharField(
        allow_null=True,
        help_text="The document's key in its collection (the upload's `external_id`, else its "
        "file name; null: none). A new content uploaded under a key the collection holds is "
        "its next version, which replaces the current one once it is ready.",
    )
    version = serializers.IntegerField(
        help_text="1 for a key's first upload, then one more for each new content under it."
    )
    status = serializers.ChoiceField(choices=Document.Status.values)
    error = serializers.CharField(allow_null=True)
    progress = ProgressSerializer(help_text="Chunks embedded so far.")
    chunk_count = serializers.IntegerField()
    pages = serializers.IntegerField(allow_null=True)
    created_at = serializers.IntegerField()
    updated_at = serializers.IntegerField()


class DocumentCreatedSerializer(DocumentSerializer):
    duplicate = serializers.BooleanField(
        help_text="The same content was already in the collection, uploaded by any key of "
        "the workspace (then 200, not 202): the answer is that document as first stored (its "
        "title, file name, key and metadata; the upload's own are not kept); one that had "
        "failed is queued again."
    )


class ChunkHitSerializer(serializers.Serializer):
    object = const("collection.chunk")
    collection_id = serializers.CharField()
    document_id = serializers.CharField()
    title = serializers.CharField(
        help_text="The document's title, else its file name, else its id."
    )
    chunk_index = serializers.IntegerField()
    heading = serializers.CharField(allow_blank=True, allow_null=True)
    score = serializers.FloatField(help_text="Cosine blended with BM25, in [0, 1].")
    text = serializers.CharField()
    snippet = serializers.CharField()
    why = serializers.CharField(help_text="Its rank by meaning and by words, and the blend.")


class FileUploadSerializer(serializers.Serializer):
    file = serializers.FileField(help_text="txt, md, html, pdf or docx (type checked by content).")
    title = serializers.CharField(required=False, allow_blank=True)
    metadata = serializers.CharField(required=False, help_text="A JSON object.")
    external_id = serializers.CharField(
        required=False,
        allow_blank=True,
        help_text="The document's key in the collection (default: the file's name; empty: "
        "none). Uploading new content under a key replaces that key's document once the new "
        "version is ready; until then the old one is searched.",
    )


CollectionListSerializer = list_of(CollectionSerializer, "CollectionList")
DocumentListSerializer = list_of(DocumentSerializer, "DocumentList")
ChunkHitListSerializer = list_of(ChunkHitSerializer, "ChunkHitList", cursor=False)
