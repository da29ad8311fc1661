"""Knowledge collections over HTTP: thin views over selectors and services."""

from __future__ import annotations

from django.conf import settings
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.authentication import EndUserAllowed
from accounts.limits.middleware import counts_workspace_rates
from config.common import jsonbody
from config.common.closed import ClosedSerializer, read_only_checked
from config.common.errors import ApiError, DomainError, Invalid, api_error, request_too_large
from config.common.openapi import LIST_PARAMETERS, DeletedSerializer, error
from config.common.pagination import paginate
from config.common.times import unix_seconds
from memory.knowledge import openapi as docs
from memory.knowledge import selectors, services
from memory.knowledge.multipart import MultiPartParser
from memory.knowledge.search import collections_check, knowledge_search
from memory.models import Collection, Document
from memory.serializers import CollectionIdsField, IntegerField, StringField

# multipart framing around the file: boundaries, part headers, the title and metadata fields
_MULTIPART_SLACK = 64 * 1024


def collection_body(collection: Collection) -> dict:
    return {
        "id": collection.id,
        "object": "collection",
        "name": collection.name,
        "description": collection.description,
        "metadata": collection.metadata,
        "document_count": getattr(collection, "document_count", None),
        "pending_count": getattr(collection, "pending_count", None),
        "failed_count": getattr(collection, "failed_count", None),
        "created_at": unix_seconds(collection.created_at),
        "updated_at": unix_seconds(collection.updated_at),
    }


def document_body(document: Document) -> dict:
    return {
        "id": document.id,
        "object": "collection.document",
        "collection_id": document.collection_id,
        "title": document.title,
        "filename": document.filename,
        "content_type": document.content_type,
        "size_bytes": document.size_bytes,
        "content_hash": document.content_hash,
        "metadata": document.metadata,
        "external_id": document.external_id or None,
        "version": document.version,
        "status": document.status,
        "error": document.error or None,
        "progress": {"done": document.chunks_done, "total": document.chunks_total},
        "chunk_count": document.chunks_total,
        "pages": document.pages or None,
        "created_at": unix_seconds(document.created_at),
        "updated_at": unix_seconds(document.updated_at),
    }


# JSON bodies' strings and integers are StringField and IntegerField, as the memory API's: DRF's
# own took {"text": 5} as the document "5" and {"name": 7} as the collection "7".
class CollectionInput(ClosedSerializer):
    name = StringField(max_length=200)
    description = StringField(max_length=10_000, allow_blank=True, required=False)
    metadata = serializers.DictField(required=False)


class CollectionListCreateApi(APIView):
    @extend_schema(
        summary="List knowledge collections",
        tags=["collections"],
        parameters=LIST_PARAMETERS,
        responses=docs.CollectionListSerializer,
    )
    def get(self, request):
        collections = selectors.collection_list(workspace=request.workspace)
        return Response(paginate(collections, request.query_params, collection_body))

    @extend_schema(
        summary="Create a collection",
        tags=["collections"],
        request=CollectionInput,
        responses={201: docs.CollectionSerializer},
        examples=[OpenApiExample("Handbook", value={"name": "Handbook"}, request_only=True)],
    )
    def post(self, request):
        data = CollectionInput(data=request.data)
        data.is_valid(raise_exception=True)
        collection = services.collection_create(workspace=request.workspace, **data.validated_data)
        # as the list's .annotate() adds
        collection.document_count = collection.pending_count = collection.failed_count = 0  # type: ignore[attr-defined]
        return Response(collection_body(collection), status=status.HTTP_201_CREATED)


class CollectionDetailApi(APIView):
    @extend_schema(
        summary="One collection", tags=["collections"], responses=docs.CollectionSerializer
    )
    def get(self, request, collection_id: str):
        return Response(
            collection_body(
                selectors.collection_get(workspace=request.workspace, collection_id=collection_id)
            )
        )

    @extend_schema(
        summary="Edit a collection",
        tags=["collections"],
        request=CollectionInput(partial=True),
        responses=docs.CollectionSerializer,
    )
    def patch(self, request, collection_id: str):
        collection = selectors.collection_get(
            workspace=request.workspace, collection_id=collection_id
        )
        body = read_only_checked(  # a collection read, edited and sent back whole
            request.data,
            stored=collection_body(collection),
            writable=CollectionInput().fields,
            ignored=("updated_at", "document_count", "pending_count", "failed_count"),
        )
        data = CollectionInput(data=body, partial=True)
        data.is_valid(raise_exception=True)
        collection = services.collection_update(
            workspace=request.workspace, collection=collection, **data.validated_data
        )
        return Response(collection_body(collection))

    @extend_schema(
        summary="Delete a collection and its documents",
        tags=["collections"],
        responses={200: DeletedSerializer},
    )
    def delete(self, request, collection_id: str):
        collection = selectors.collection_get(
            workspace=request.workspace, collection_id=collection_id
        )
        services.collection_delete(workspace=request.workspace, collection=collection)
        return Response({"id": collection_id, "object": "collection.deleted", "deleted": True})


class TextDocumentInput(ClosedSerializer):
    text = StringField(trim_whitespace=False)
    title = StringField(max_length=300, allow_blank=True, required=False, default="")
    metadata = serializers.DictField(required=False, default=dict)
    # null or "": no key (a text has no file name to default to)
    external_id = StringField(
        max_length=300, allow_blank=True, allow_null=True, required=False, default=None
    )


class FileDocumentInput(ClosedSerializer):
    file = serializers.FileField(allow_empty_file=True)
    title = serializers.CharField(max_length=300, allow_blank=True, required=False, default="")
    metadata = serializers.CharField(required=False, allow_blank=True, default="")
    external_id = serializers.CharField(
        max_length=300, allow_blank=True, required=False, default=None
    )


def _filename(name: str | None) -> str:
    """The upload's own name. Django's multipart parser has already dropped directories and
    NULs and cut it to 255 characters; what PostgreSQL still cannot store is refused, as in
    any JSON body."""
    name = (name or "").rsplit("/", 1)[-1]
    if problem := jsonbody.text_problem(name):
        raise Invalid(f"The file name is not valid: {problem}.", field="file")
    return name


def _external_id_param(query_params) -> str | None:
    """The list's `external_id` filter: a key as a document can have one, or a 400."""
    value = query_params.get("external_id")
    if value is None:
        return None
    problem = jsonbody.text_problem(value)
    if problem or len(value) > 300:
        raise ApiError(
            400,
            f"external_id is not valid: {problem or 'at most 300 characters'}.",
            param="external_id",
            code="invalid_value",
        )
    return value


def _is_upload(request) -> bool:
    """A multipart file upload, rather than a JSON text body."""
    return request.content_type.startswith("multipart/form-data")


def _request_size_check(length: int) -> None:
    """A 413 for a body over every route's limit (ENGRAM_MAX_REQUEST_BYTES): the ASGI handler
    stopped reading it there (config.asgi), and an upload cut short would be read as a
    truncated multipart body."""
    if length > settings.DATA_UPLOAD_MAX_MEMORY_SIZE:
        raise request_too_large()


def _document_input(request) -> dict:
    """(raw bytes, title, filename, metadata, is_text) from a multipart upload or a JSON text
    body."""
    limit = settings.ENGRAM_MAX_DOCUMENT_BYTES
    if _is_upload(request):
        length = int(request.META.get("CONTENT_LENGTH") or 0)
        if length > limit + _MULTIPART_SLACK:  # refuse before reading the body
            raise services.document_too_large(length, whole_upload=True)
        _request_size_check(length)
        data: serializers.Serializer = FileDocumentInput(data=request.data)
        data.is_valid(raise_exception=True)
        upload = data.validated_data["file"]
        if upload.size > limit:
            raise services.document_too_large(upload.size)
        raw_metadata = data.validated_data["metadata"]
        # the JSON bodies' decoder and rules (NUL, surrogates, depth), naming `metadata`
        metadata = jsonbody.loads(raw_metadata, param="metadata") if raw_metadata else {}
        return {
            "raw": upload.read(),
            "title": data.validated_data["title"],
            "filename": _filename(upload.name),
            "metadata": metadata,
            "external_id": data.validated_data["external_id"],
        }
    _request_size_check(int(request.META.get("CONTENT_LENGTH") or 0))
    data = TextDocumentInput(data=request.data)
    data.is_valid(raise_exception=True)
    raw = data.validated_data["text"].encode("utf-8")
    if len(raw) > limit:
        raise services.document_too_large(len(raw))
    return {
        "raw": raw,
        "title": data.validated_data["title"],
        "filename": "",
        "metadata": data.validated_data["metadata"],
        "is_text": True,
        # a text has no file name to be known by: only the key it is given
        "external_id": data.validated_data["external_id"] or "",
    }


class DocumentListCreateApi(APIView):
    parser_classes = [jsonbody.JSONParser, MultiPartParser]  # a file upload, or a text as JSON

    @extend_schema(
        summary="List a collection's documents",
        tags=["collections"],
        parameters=[
            OpenApiParameter(
                "status",
                str,
                enum=Document.Status.values,
                description="Only these.",
                required=False,
            ),
            OpenApiParameter(
                "external_id",
                str,
                description="Only the versions of this key (the document's `external_id`).",
                required=False,
            ),
            *LIST_PARAMETERS,
        ],
        responses=docs.DocumentListSerializer,
    )
    def get(self, request, collection_id: str):
        collection = selectors.collection_get(
            workspace=request.workspace, collection_id=collection_id
        )
        wanted = request.query_params.get("status") or None
        if wanted and wanted not in Document.Status.values:
            raise ApiError(
                400,
                f"status must be one of {', '.join(Document.Status.values)}.",
                param="status",
                code="invalid_value",
            )
        documents = selectors.document_list(
            workspace=request.workspace,
            collection=collection,
            status=wanted,
            external_id=_external_id_param(request.query_params),
        )
        return Response(
            paginate(
                documents, request.query_params, document_body, filters=("status", "external_id")
            )
        )

    @counts_workspace_rates  # every chunk of the document embedded (in the background)
    @extend_schema(
        summary="Add a document (202 queued; 200 when the same content is already there)",
        description="A multipart `file` (txt, md, html, pdf, docx, docm, dotx, dotm; type checked "
        "by content) or "
        "JSON `{text, title, metadata, external_id}`. Over `ENGRAM_MAX_DOCUMENT_BYTES` is 413; "
        "a type Engram cannot read is 415; a multipart body Engram cannot split into its parts "
        "(no boundary, another, or cut short), or a form field not in UTF-8, is 400 "
        "`invalid_multipart`. A Celery worker "
        "extracts, chunks and embeds it: poll the document.\n\n"
        "**Versions.** A document is known in its collection by its `external_id` (a file "
        'upload\'s defaults to its file name; a text has one only if given; `""` opts out). New '
        "content under a key the collection holds is a new document with the next `version`: "
        "the current version stays searchable while it is ingested, and when it is ready the "
        "older versions are deleted in the same commit, so a search sees exactly one. If it "
        "fails, the current version stays. The same content again is the 200 duplicate, "
        "nothing re-embedded (and, under its key, its latest version again).",
        tags=["collections"],
        request={
            "application/json": TextDocumentInput,
            "multipart/form-data": docs.FileUploadSerializer,
        },
        responses={202: docs.DocumentCreatedSerializer, 200: docs.DocumentCreatedSerializer},
        examples=[
            OpenApiExample(
                "Text",
                value={"text": "# Returns\nWithin 30 days.", "title": "Returns"},
                request_only=True,
                media_type="application/json",
            )
        ],
    )
    def post(self, request, collection_id: str):
        collection = selectors.collection_get(
            workspace=request.workspace, collection_id=collection_id
        )
        try:
            document, created = services.document_create(
                workspace=request.workspace, collection=collection, **_document_input(request)
            )
        except DomainError as exc:  # the domain's `file` is the JSON body's `text`
            raise api_error(exc, params=None if _is_upload(request) else {"file": "text"}) from None
        body = document_body(document) | {"duplicate": not created}
        return Response(body, status=status.HTTP_202_ACCEPTED if created else status.HTTP_200_OK)


class DocumentDetailApi(APIView):
    @extend_schema(
        summary="One document: `status`, `progress`, `error`",
        tags=["collections"],
        responses=docs.DocumentSerializer,
    )
    def get(self, request, collection_id: str, document_id: str):
        collection = selectors.collection_get(
            workspace=request.workspace, collection_id=collection_id
        )
        return Response(
            document_body(
                selectors.document_get(
                    workspace=request.workspace, collection=collection, document_id=document_id
                )
            )
        )

    @extend_schema(
        summary="Delete a document", tags=["collections"], responses={200: DeletedSerializer}
    )
    def delete(self, request, collection_id: str, document_id: str):
        collection = selectors.collection_get(
            workspace=request.workspace, collection_id=collection_id
        )
        document = selectors.document_get(
            workspace=request.workspace, collection=collection, document_id=document_id
        )
        services.document_delete(workspace=request.workspace, document=document)
        return Response(
            {"id": document_id, "object": "collection.document.deleted", "deleted": True}
        )


class CollectionSearchInput(ClosedSerializer):
    collection_ids = CollectionIdsField(min_length=1)
    query = StringField(max_length=4000)
    limit = IntegerField(min_value=1, max_value=50, required=False, default=5)


@counts_workspace_rates  # a query embedding and vector queries each, as /v1/search
class CollectionSearchApi(APIView):
    # An end user's token searches the collections it names, as its chat's x-collection-ids
    # and /v1/search's chunks do (collections_check, the one rule); managing them needs a
    # workspace key.
    permission_classes = [EndUserAllowed]

    @extend_schema(
        summary="Search collections directly",
        tags=["collections"],
        request=CollectionSearchInput,
        responses={
            200: docs.ChunkHitListSerializer,
            404: error(404, "A collection that is not the workspace's (`collection_not_found`)."),
        },
    )
    def post(self, request):
        data = CollectionSearchInput(data=request.data)
        data.is_valid(raise_exception=True)
        ids = data.validated_data["collection_ids"]
        collections_check(workspace=request.workspace, collection_ids=ids)
        hits = knowledge_search(
            workspace=request.workspace,
            collection_ids=ids,
            query=data.validated_data["query"],
            limit=data.validated_data["limit"],
        )
        return Response(
            {"object": "list", "data": [{"object": "collection.chunk"} | hit for hit in hits]}
        )
