"""What Engram remembers: conversations, messages, long-term memories, and their background jobs.

Knowledge collections (Collection, Document, Chunk) are models of this app too; they live in
memory/knowledge/models.py and are imported at the bottom so Django registers them here.

Every row carries its workspace; every lookup is scoped by it (see selectors).
Text that is searched has an embedding (pgvector) and a generated tsvector over `search_text`,
which is the text as it is indexed (speaker and date prefixed), not necessarily as shown.
"""

from functools import partial

from django.contrib.postgres.indexes import GinIndex
from django.db import models
from django.db.models.functions import Now
from pgvector.django import VectorField

from accounts.models import Workspace
from config.common.ids import MAX_ID_CHARS, new_id
from config.common.text import shorten
from memory.fields import EMBEDDING_DIMENSIONS, search_vector

# A turn named by its session alone (no x-conversation-id) belongs to the conversation
# "session:<session id>"; the column holds that name for the longest id a client may send.
SESSION_CONVERSATION_PREFIX = "session:"


class Conversation(models.Model):
    id = models.CharField(
        primary_key=True, max_length=40, default=partial(new_id, "conv"), editable=False
    )
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    external_id = models.CharField(
        max_length=MAX_ID_CHARS + len(SESSION_CONVERSATION_PREFIX),
        help_text="The client's x-conversation-id, or session:<x-session-id>",
    )
    user_id = models.CharField(max_length=200, db_index=True)
    title = models.CharField(max_length=300, blank=True, default="")
    summary = models.TextField(blank=True, default="")
    summary_upto = models.CharField(
        max_length=40, blank=True, default="", help_text="last message id folded into the summary"
    )
    metadata = models.JSONField(default=dict, blank=True)
    extraction = models.BooleanField(
        default=True,
        help_text="Memories are extracted from its turns (off: its last turn's agent said so); "
        "the sweep of unanswered turns reads it (memory.services.unanswered)",
    )
    fingerprint = models.CharField(
        max_length=32,
        blank=True,
        default="",
        help_text="A conversation found without an id: digest of its transcript as of its last "
        "turn (memory.turn.conversation.fingerprint)",
    )
    retry_fingerprint = models.CharField(
        max_length=32,
        blank=True,
        default="",
        help_text="Digest of its last turn's request (its transcript before that turn's answer): "
        "that request sent again without an id (a regenerate, an SDK's retry) lands here",
    )
    # The database's clock, not the web process's (returned by the insert, no query more): a
    # turn that lost its conversation to a crash compares it with the server's start
    # (memory.turn.pipeline._restarted_since), which seconds of skew between hosts got wrong.
    created_at = models.DateTimeField(db_default=Now(), editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            # A client's id is its user's: two users may each have a conversation "support",
            # and one user's id tells another nothing. user_id last, so the index also serves
            # a workspace key's lookup by the id alone (selectors.conversation_find).
            models.UniqueConstraint(
                fields=["workspace", "external_id", "user_id"],
                name="conversation_user_external_id_unique",
            )
        ]
        indexes = [
            models.Index(fields=["workspace", "user_id", "-updated_at"]),
            # A turn without a conversation id finds its conversation by the history it resent.
            models.Index(
                fields=["workspace", "user_id", "fingerprint", "-updated_at"],
                name="conversation_fingerprint",
                condition=~models.Q(fingerprint=""),
            ),
            # ...or by the request it sent again (a regenerate, an SDK's retry).
            models.Index(
                fields=["workspace", "user_id", "retry_fingerprint", "-updated_at"],
                name="conversation_retry_fingerprint",
                condition=~models.Q(retry_fingerprint=""),
            ),
        ]

    def __str__(self) -> str:
        return self.title or self.external_id

    @staticmethod
    def session_external_id(session_id: str) -> str:
        """The external id of the conversation a session names when no conversation id does."""
        return SESSION_CONVERSATION_PREFIX + session_id


class Session(models.Model):
    id = models.CharField(
        primary_key=True, max_length=40, default=partial(new_id, "sess"), editable=False
    )
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    external_id = models.CharField(max_length=200, help_text="x-session-id / body session_id")
    user_id = models.CharField(max_length=200, blank=True, default="")
    conversation = models.ForeignKey(
        Conversation, null=True, blank=True, on_delete=models.SET_NULL, related_name="sessions"
    )
    metadata = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_active_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            # Its user's, as a conversation's id (Conversation.Meta).
            models.UniqueConstraint(
                fields=["workspace", "external_id", "user_id"],
                name="session_user_external_id_unique",
            )
        ]

    def __str__(self) -> str:
        return self.external_id


class Message(models.Model):
    class Role(models.TextChoices):
        SYSTEM = "system"
        DEVELOPER = "developer"
        USER = "user"
        ASSISTANT = "assistant"
        TOOL = "tool"
        FUNCTION = "function"

    id = models.CharField(
        primary_key=True, max_length=40, default=partial(new_id, "msg"), editable=False
    )
    # Without single-column indexes of their own (each with its varchar_pattern_ops twin):
    # the composite indexes below lead with these columns and serve their lookups and cascades,
    # and every row version of a message (its insert, then the extractor's index updates) paid
    # for five more index entries with the primary key's twin (migration 0010).
    workspace = models.ForeignKey(
        Workspace, on_delete=models.CASCADE, related_name="+", db_index=False
    )
    conversation = models.ForeignKey(
        Conversation, on_delete=models.CASCADE, related_name="messages", db_index=False
    )
    session = models.ForeignKey(
        Session, null=True, blank=True, on_delete=models.SET_NULL, related_name="messages"
    )
    user_id = models.CharField(max_length=200)
    role = models.CharField(max_length=16, choices=Role.choices)
    name = models.CharField(max_length=200, blank=True, default="")
    content = models.TextField(blank=True, default="", help_text="text content (parts joined)")
    raw = models.JSONField(default=dict, blank=True, help_text="the message as the client sent it")
    tool_calls = models.JSONField(null=True, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    token_count = models.PositiveIntegerField(default=0)
    prompt_tokens = models.PositiveIntegerField(null=True, blank=True)
    completion_tokens = models.PositiveIntegerField(null=True, blank=True)
    incomplete = models.BooleanField(default=False, help_text="a stream cut before its end")
    # An answer's recall, kept with it: which memories and past messages it was given, and why
    # (ids, the ranking's reasons and scores; never their text, which a deletion must take
    # away). None: not an answer of a remembered turn (or stored before it was kept).
    recalled = models.JSONField(
        null=True,
        blank=True,
        help_text="what this answer was given from memory, and why: [{type, id, why, score}]",
    )
    created_at = models.DateTimeField(db_index=True)
    import_key = models.CharField(
        max_length=200,
        blank=True,
        default="",
        db_default="",
        help_text="the Idempotency-Key of the import that stored it: its retry stores nothing",
    )
    search_text = models.TextField(blank=True, default="")
    search = search_vector()
    embedding = VectorField(dimensions=EMBEDDING_DIMENSIONS, null=True, blank=True)
    # What vector search ranks by: the message blended with its neighbours that day
    # (memory.text.context_vector); the message's own embedding until it has neighbours.
    context_embedding = VectorField(dimensions=EMBEDDING_DIMENSIONS, null=True, blank=True)

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [
            models.Index(fields=["conversation", "created_at"]),
            models.Index(fields=["workspace", "user_id", "created_at"]),
            GinIndex(fields=["search"], name="message_search_gin"),
            # The exact vector scan of one user's messages reads only this index, contiguously.
            models.Index(
                fields=["workspace", "user_id"],
                include=["id", "role", "context_embedding"],
                name="message_user_context_vectors",
            ),
            models.Index(
                fields=["conversation", "import_key"],
                condition=~models.Q(import_key=""),
                name="message_import_key",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.role}: {shorten(self.content, 60)}"


class MessageTokens(models.Model):
    """A message's token vectors as the embedder read it, packed (memory.retrieval.late: each
    token's vocabulary id and the signs of its vector, 50 bytes a token, ~2 KB a turn of 40):
    what a search compares with the question token by token. A row of its own, so loading
    messages (a turn reads up to 400) never reads them; deleted with its message."""

    message = models.OneToOneField(
        Message, primary_key=True, on_delete=models.CASCADE, related_name="+"
    )
    packed = models.BinaryField()


class Memory(models.Model):
    """An atomic fact about a user, with the messages it came from."""

    id = models.CharField(
        primary_key=True, max_length=40, default=partial(new_id, "mem"), editable=False
    )
    # No single-column index of its own (nor its varchar_pattern_ops twin): the composite
    # indexes lead with workspace and serve its lookups and cascade (migration 0019).
    workspace = models.ForeignKey(
        Workspace, on_delete=models.CASCADE, related_name="+", db_index=False
    )
    user_id = models.CharField(max_length=200)
    text = models.TextField()
    kind = models.CharField(
        max_length=32, default="fact", help_text="fact, preference, plan, relation, event"
    )
    event_date = models.DateField(
        null=True, blank=True, help_text="when the remembered event happened"
    )
    metadata = models.JSONField(default=dict, blank=True)
    sources = models.ManyToManyField(Message, blank=True, related_name="memories")
    # A person said it (POST /v1/memories, the admin), whether it was new or one extracted
    # before: it is theirs, and deleting a conversation it was also said in keeps it
    # (services.users.derived_only_from). db_default: rows inserted by SQL (the benches).
    by_hand = models.BooleanField(default=False, db_default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    search_text = models.TextField(blank=True, default="")
    search = search_vector()
    embedding = VectorField(dimensions=EMBEDDING_DIMENSIONS, null=True, blank=True)

    class Meta:
        verbose_name_plural = "memories"
        indexes = [
            models.Index(fields=["workspace", "user_id", "updated_at"]),
            # No GIN index of `search`: the ranking reads the user's rows through the btree
            # indexes and matches their words there (memory.retrieval.memories fences the text
            # side with OFFSET 0), so no statement used it; each row version paid for it.
            # The exact vector scan of one user's memories reads only this index, contiguously
            # (half the time of visiting each row in the heap, measured at 100k memories).
            models.Index(
                fields=["workspace", "user_id"],
                include=["id", "embedding"],
                name="memory_user_vectors",
            ),
        ]

    def __str__(self) -> str:
        return shorten(self.text, 80)


class MemoryEvent(models.Model):
    """The history of a memory: every ADD / UPDATE / DELETE, kept after the memory is gone."""

    class Event(models.TextChoices):
        ADD = "ADD"
        UPDATE = "UPDATE"
        DELETE = "DELETE"
        NONE = "NONE"

    id = models.CharField(
        primary_key=True, max_length=40, default=partial(new_id, "mev"), editable=False
    )
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    memory_id = models.CharField(max_length=40, db_index=True)
    user_id = models.CharField(max_length=200)
    event = models.CharField(max_length=8, choices=Event.choices)
    old_text = models.TextField(blank=True, default="")
    new_text = models.TextField(blank=True, default="")
    reason = models.TextField(blank=True, default="")
    actor = models.CharField(
        max_length=64, default="api", help_text="api, admin, extractor:llm, extractor:offline"
    )
    source_message_ids = models.JSONField(default=list, blank=True)
    # What an UPDATE changed: {field: {"old": ..., "new": ...}} for each of text, kind,
    # event_date and metadata that changed. A change of kind, date or metadata alone read as
    # an UPDATE from a text to itself. db_default: rows inserted by SQL (the benches).
    changes = models.JSONField(default=dict, blank=True, db_default={})
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [models.Index(fields=["workspace", "user_id"])]

    def __str__(self) -> str:
        return f"{self.event} {self.memory_id}: {shorten(self.new_text or self.old_text, 60)}"


class MemorySuppression(models.Model):
    """A memory its user (or the workspace, for them) deleted: the extractor does not write it
    again from what was said before the deletion, nor from a copy of it resent later
    (memory.forgotten). Said anew after the deletion, it is remembered
    again and this row goes. Shown nowhere; erased with the user."""

    id = models.CharField(
        primary_key=True, max_length=40, default=partial(new_id, "sup"), editable=False
    )
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    user_id = models.CharField(max_length=200)
    memory_id = models.CharField(max_length=40, help_text="the memory deleted")
    normalized = models.TextField(help_text="its text, normalized (forgotten.normalized)")
    embedding = VectorField(dimensions=EMBEDDING_DIMENSIONS, null=True, blank=True)
    source_message_ids = models.JSONField(default=list, blank=True)
    source_hashes = models.JSONField(
        default=list, blank=True, help_text="digests of its source messages' text"
    )
    deleted_at = models.DateTimeField()

    class Meta:
        indexes = [models.Index(fields=["workspace", "user_id"])]

    def __str__(self) -> str:
        return shorten(self.normalized, 80)


class ProcessingJob(models.Model):
    """Background work for a conversation; claimed atomically so a task is safe to run twice."""

    class Kind(models.TextChoices):
        EXTRACT = "extract"
        SUMMARIZE = "summarize"
        EMBED = "embed"

    class Status(models.TextChoices):
        PENDING = "pending"
        RUNNING = "running"
        DONE = "done"
        FAILED = "failed"

    id = models.CharField(
        primary_key=True, max_length=40, default=partial(new_id, "job"), editable=False
    )
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    # No single-column index of its own (nor its varchar_pattern_ops twin): job_unique_per_range
    # and (conversation, status) lead with it and serve its lookups and cascade (migration 0020).
    conversation = models.ForeignKey(
        Conversation, on_delete=models.CASCADE, related_name="jobs", db_index=False
    )
    kind = models.CharField(max_length=16, choices=Kind.choices)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    upto_message_id = models.CharField(
        max_length=40, help_text="messages up to this id are covered"
    )
    after_message_id = models.CharField(
        max_length=40, blank=True, default="", help_text="messages after this id are covered"
    )
    attempts = models.PositiveIntegerField(default=0)  # claims so far: a run's fencing token
    error = models.TextField(blank=True, default="")  # a failure, or why extraction fell back
    extractor = models.CharField(
        max_length=20, blank=True, default="", help_text="llm, offline or offline-fallback"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    # when the job was last sent (PENDING) or its lease last renewed (RUNNING): see the sweep
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["conversation", "kind", "upto_message_id"], name="job_unique_per_range"
            )
        ]
        indexes = [
            models.Index(fields=["conversation", "status"]),
            # the sweep's scan: only unfinished jobs, oldest first
            models.Index(
                fields=["updated_at"],
                condition=models.Q(status__in=["pending", "running"]),
                name="job_unfinished_by_age",
            ),
            # a run that takes its workspace's other queued jobs (offline extraction): oldest first
            models.Index(
                fields=["workspace", "kind", "upto_message_id"],
                condition=models.Q(status__in=["pending", "running"]),
                name="job_unfinished_by_workspace",
            ),
        ]

    def __str__(self) -> str:
        work = {"extract": "extraction", "summarize": "summary", "embed": "embedding"}
        return (
            f"{work.get(self.kind, self.kind)} of conversation {self.conversation}, {self.status}"
        )


from memory.knowledge.models import Chunk, Collection, Document  # noqa: E402, F401 - registered here
