"""Knowledge collections: documents uploaded to a collection, split into searchable chunks.

The models live in the memory app (app label `memory`, tables `memory_collection`,
`memory_document`, `memory_chunk`); this package is their one home.
"""

from functools import partial

from django.contrib.postgres.indexes import GinIndex
from django.db import models
from pgvector.django import HnswIndex, VectorField

from accounts.models import Workspace
from config.common.ids import new_id
from config.common.text import shorten
from memory.fields import EMBEDDING_DIMENSIONS, search_vector


class Collection(models.Model):
    id = models.CharField(
        primary_key=True, max_length=40, default=partial(new_id, "col"), editable=False
    )
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True, default="")
    metadata = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return self.name


def document_name(*, title: str, filename: str, document_id: str) -> str:
    """What a document is called wherever a user reads it (search hits, a chat turn's sources
    and the model's knowledge block, the admin): its title, else its file name, else its id.
    A text sent without a title was "" in /v1/collections/search while chat showed its id."""
    return title or filename or document_id


class Document(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued"
        PROCESSING = "processing"
        READY = "ready"
        FAILED = "failed"

    id = models.CharField(
        primary_key=True, max_length=40, default=partial(new_id, "doc"), editable=False
    )
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    collection = models.ForeignKey(Collection, on_delete=models.CASCADE, related_name="documents")
    title = models.CharField(max_length=300, blank=True, default="")
    filename = models.CharField(max_length=300, blank=True, default="")
    content_type = models.CharField(max_length=100, blank=True, default="")
    content_hash = models.CharField(max_length=64)
    size_bytes = models.PositiveIntegerField(default=0)
    raw = models.BinaryField(help_text="the uploaded bytes, kept so ingestion can be re-run")
    metadata = models.JSONField(default=dict, blank=True)
    # The document's identity in its collection across uploads: the client's `external_id`,
    # else the uploaded file's name ("": none, a text sent without one). An upload under a key
    # the collection holds is its next `version`; when that version is ready it replaces the
    # older ones in the same commit (services._switch), so a search sees one version, never
    # two and never none. Uploading a new version had made a second document, and the stale
    # text competed with the new in every search.
    external_id = models.CharField(max_length=300, blank=True, default="")
    version = models.PositiveIntegerField(default=1)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    error = models.TextField(blank=True, default="")
    chunks_total = models.PositiveIntegerField(default=0)
    chunks_done = models.PositiveIntegerField(default=0)
    pages = models.PositiveIntegerField(default=0)
    # Runs started since the last progress (a batch committed): a document whose runs keep
    # dying or running out of time before any progress is failed after ENGRAM_JOB_MAX_ATTEMPTS.
    attempts = models.PositiveSmallIntegerField(default=0)
    # The number of the run that holds the document: each claim counts one, and a run writes
    # only while it is still its own (a fencing token, as a ProcessingJob's `attempts`). The
    # status alone let a run paused past a re-ingestion from scratch write as if the new
    # run's claim were its own (tests/test_collections_ingest.py).
    run = models.PositiveIntegerField(default=0)
    # A re-ingestion from the stored bytes of a ready document (the admin's "re-ingest from
    # scratch") is a document of its own, ingested beside the one it `replaces`, which stays
    # searchable: when it is ready its chunks take the place of the older ones in the same
    # commit, under the older one's id, and its row is deleted (services._switch). Deleting
    # the chunks first left the document out of every search until a worker had run it again.
    # Not listed by the API, never a duplicate's answer, deleted with the one it replaces.
    # No constraint in the database: a workspace's deletion deletes its documents in batches
    # of any order (accounts.deletion), and a batch holding the replaced document but not its
    # rebuild would fail its commit; the ORM's deletions cascade all the same.
    replaces = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        editable=False,
        on_delete=models.CASCADE,
        db_constraint=False,
        related_name="rebuilds",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            # a rebuild holds the bytes of the document it replaces
            models.UniqueConstraint(
                fields=["collection", "content_hash"],
                condition=models.Q(replaces__isnull=True),
                name="document_hash_unique",
            )
        ]
        indexes = [models.Index(fields=["collection", "external_id"], name="document_key")]

    def __str__(self) -> str:
        return document_name(title=self.title, filename=self.filename, document_id=self.id)


class Chunk(models.Model):
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    collection = models.ForeignKey(Collection, on_delete=models.CASCADE, related_name="chunks")
    document = models.ForeignKey(Document, on_delete=models.CASCADE, related_name="chunks")
    chunk_index = models.PositiveIntegerField()
    heading = models.CharField(max_length=500, blank=True, default="")
    text = models.TextField()
    token_count = models.PositiveIntegerField(default=0)
    search_text = models.TextField(blank=True, default="")
    search = search_vector()
    embedding = VectorField(dimensions=EMBEDDING_DIMENSIONS, null=True, blank=True)

    class Meta:
        ordering = ["document", "chunk_index"]
        constraints = [
            models.UniqueConstraint(fields=["document", "chunk_index"], name="chunk_index_unique")
        ]
        indexes = [
            models.Index(fields=["workspace", "collection"]),
            GinIndex(fields=["search"], name="chunk_search_gin"),
            # A large collection's nearest chunks through the graph rather than an exact scan
            # (10k chunks: see memory.retrieval.chunks); the planner keeps the exact scan for
            # small scopes, where it is cheaper.
            HnswIndex(
                name="chunk_embedding_hnsw",
                fields=["embedding"],
                m=16,
                ef_construction=64,
                opclasses=["vector_cosine_ops"],
            ),
        ]

    def __str__(self) -> str:
        return f"#{self.chunk_index} {shorten(self.heading or self.text, 60)}"
