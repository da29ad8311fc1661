"""Django admin for collections and documents: status, progress, errors, and re-running."""

from django.contrib import admin, messages
from django.db.models import BooleanField, ExpressionWrapper, Q

from accounts.admin_workspaces import LiveWorkspaces
from config.admin_deletion import CountsOnDelete
from memory.knowledge import selectors, services
from memory.models import Chunk, Collection, Document

# A document's page shows its first chunks: a long PDF's thousands made a page of thousands of
# rows (every chunk's text, rendered as a form).
CHUNKS_SHOWN = 100


class ChunkInline(admin.TabularInline):
    """A document's chunks as ingestion cut them (read-only; re-run ingestion to change them)."""

    model = Chunk
    verbose_name_plural = f"chunks (the first {CHUNKS_SHOWN})"
    extra = 0
    fields = ("chunk_index", "heading", "text", "token_count", "embedded")
    readonly_fields = fields
    can_delete = False
    ordering = ("chunk_index",)

    def get_queryset(self, request):
        embedded = ExpressionWrapper(Q(embedding__isnull=False), output_field=BooleanField())
        return (
            super()
            .get_queryset(request)
            .filter(chunk_index__lt=CHUNKS_SHOWN)  # not a slice: the formset filters it further
            .defer("search_text", "embedding")
            .annotate(is_embedded=embedded)
        )

    @admin.display(boolean=True, description="embedded")
    def embedded(self, obj) -> bool:
        return obj.is_embedded

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Collection)
class CollectionAdmin(LiveWorkspaces, CountsOnDelete):
    list_display = ("name", "id", "workspace", "documents", "created_at")
    search_fields = ("id", "name", "workspace__name")
    readonly_fields = ("id", "created_at", "updated_at")

    def get_readonly_fields(self, request, obj=None):
        # chosen on the add form (it had none: the add failed), fixed once it exists
        return (*(("workspace",) if obj is not None else ()), *self.readonly_fields)

    @staticmethod
    def owned(collections):
        return (
            (Document, Document.objects.filter(collection__in=collections)),
            (Chunk, Chunk.objects.filter(collection__in=collections)),
        )

    def delete_model(self, request, obj):
        # as DELETE /v1/collections/{id}: the uploads are not loaded, agents stop searching it
        services.collection_delete(workspace=obj.workspace, collection=obj)

    def delete_queryset(self, request, queryset):
        for collection in queryset.select_related("workspace"):
            self.delete_model(request, collection)

    def get_queryset(self, request):
        # What the API's `document_count` says: the ready documents, a rebuild (Document.
        # replaces) being the one it replaces; all rows counted, a re-ingestion from scratch
        # showed a second document, and a queued or failed one a document no search finds.
        return (
            super().get_queryset(request).annotate(document_count=selectors.ready_document_count())
        )

    @admin.display(ordering="document_count")
    def documents(self, obj) -> int:
        return obj.document_count


@admin.register(Document)
class DocumentAdmin(CountsOnDelete):
    list_display = (
        "__str__",
        "collection",
        "workspace",
        "status",
        "progress",
        "pages",
        "short_error",
        "updated_at",
    )
    list_filter = ("status", "content_type")
    search_fields = (
        "id",
        "title",
        "filename",
        "external_id",
        "collection__name",
        "collection__id",
    )
    list_select_related = ("collection", "workspace")
    exclude = ("raw",)
    readonly_fields = (
        "id",
        "workspace",
        "collection",
        "filename",
        "external_id",
        "version",
        "replaces",
        "content_type",
        "content_hash",
        "size_bytes",
        "status",
        "progress",
        "error",
        "pages",
        "created_at",
        "updated_at",
    )
    fields = ("title", "metadata", *readonly_fields)
    inlines = [ChunkInline]
    actions = ("rerun", "rerun_from_scratch")

    def get_queryset(self, request):
        return super().get_queryset(request).defer("raw")

    def has_add_permission(self, request) -> bool:
        return False  # documents come in through the API, which checks and hashes them

    @staticmethod
    def owned(documents):
        return ((Chunk, Chunk.objects.filter(document__in=documents)),)

    def delete_model(self, request, obj):
        # as DELETE /v1/documents/{id}: locked first, so an ingestion's chunks go too
        services.document_delete(workspace=obj.workspace, document=obj)

    def delete_queryset(self, request, queryset):
        for document in queryset.select_related("workspace"):
            self.delete_model(request, document)

    @admin.display(description="progress")
    def progress(self, obj) -> str:
        return f"{obj.chunks_done}/{obj.chunks_total}"

    @admin.display(description="error")
    def short_error(self, obj) -> str:
        return obj.error[:80]

    def _rerun(self, request, queryset, *, from_scratch: bool) -> None:
        queued = sum(
            services.document_rerun(
                workspace=document.workspace, document=document, from_scratch=from_scratch
            )
            for document in queryset
        )
        left = len(queryset) - queued
        note = f"; {left} left as they are (ready, or deleted)" if left else ""
        self.message_user(request, f"Queued {queued} document(s){note}.", messages.SUCCESS)

    @admin.action(
        description="Re-run ingestion (resume: keep embedded chunks; a ready one stays as it is)",
        permissions=["change"],
    )
    def rerun(self, request, queryset):
        self._rerun(request, queryset, from_scratch=False)

    @admin.action(
        description="Re-ingest from the stored bytes (re-extract and re-chunk; a ready one "
        "is searched as it was until its new chunks are ready)",
        permissions=["change"],
    )
    def rerun_from_scratch(self, request, queryset):
        self._rerun(request, queryset, from_scratch=True)
