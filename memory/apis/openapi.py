"""OpenAPI shapes of the memory, conversation and user APIs (documentation only).

The views build plain dicts (memory.serializers, memory.apis.users); these describe them, and
tests/test_openapi.py holds every live response to them.
"""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter
from rest_framework import serializers

from completions.tools.openapi import ExecutionSerializer
from config.common.openapi import ID_SCHEMA, LIST_PARAMETERS, const, list_of
from memory.serializers import KINDS


def _ts(**kwargs) -> serializers.IntegerField:
    return serializers.IntegerField(help_text="Unix seconds.", **kwargs)


class SourceSerializer(serializers.Serializer):
    message_id = serializers.CharField()
    conversation_id = serializers.CharField()
    created_at = _ts()
    metadata = serializers.DictField()


class MemorySerializer(serializers.Serializer):
    id = serializers.CharField()
    object = const("memory")
    user_id = serializers.CharField()
    text = serializers.CharField()
    kind = serializers.ChoiceField(choices=KINDS)
    event_date = serializers.DateField(
        allow_null=True,
        help_text="The day the event happened or is planned for, when a day is known; null for "
        "a fact, or for an event known only to its week, month or year, which its text says "
        '("User is moving to Bristol in 2027.").',
    )
    metadata = serializers.DictField()
    created_at = _ts()
    updated_at = _ts()
    sources = SourceSerializer(many=True, help_text="The messages it came from.")


class MemoryEventSerializer(serializers.Serializer):
    id = serializers.CharField()
    object = const("memory.event")
    memory_id = serializers.CharField()
    user_id = serializers.CharField()
    event = serializers.ChoiceField(choices=["ADD", "UPDATE", "DELETE", "NONE"])
    old_text = serializers.CharField(allow_blank=True)
    new_text = serializers.CharField(allow_blank=True)
    reason = serializers.CharField(allow_blank=True)
    actor = serializers.CharField(help_text="api, admin, extractor:llm, extractor:offline")
    source_message_ids = serializers.ListField(child=serializers.CharField())
    changes = serializers.DictField(
        child=serializers.DictField(),
        help_text="An UPDATE's changed fields (text, kind, event_date, metadata), each as "
        '`{"old": ..., "new": ...}`, e.g. `{"kind": {"old": "fact", "new": "preference"}}`; '
        "empty for ADD and DELETE, and for an update that only linked source messages.",
    )
    created_at = _ts()


class MemoryHitSerializer(MemorySerializer):
    """A memory with its score and why."""

    score = serializers.FloatField(help_text="Cosine similarity blended with BM25, plus recency.")
    why = serializers.CharField()


class UnifiedSourceSerializer(serializers.Serializer):
    """A message (of a memory or a message item) or a document (of a chunk item)."""

    message_id = serializers.CharField(required=False)
    conversation_id = serializers.CharField(required=False)
    created_at = _ts(required=False)
    metadata = serializers.DictField(required=False)
    collection_id = serializers.CharField(required=False)
    document_id = serializers.CharField(required=False)
    title = serializers.CharField(required=False, allow_blank=True)
    chunk_index = serializers.IntegerField(required=False)
    heading = serializers.CharField(required=False, allow_blank=True)


class UnifiedHitSerializer(serializers.Serializer):
    """One item of the unified ranking; the fields after `why` are its type's."""

    object = const("search.result")
    type = serializers.ChoiceField(choices=["memory", "message", "chunk"])
    id = serializers.CharField(help_text="A chunk's is `<document_id>#<chunk_index>`.")
    text = serializers.CharField()
    score = serializers.FloatField(help_text="Cosine similarity blended with BM25, one scale.")
    created_at = serializers.IntegerField(help_text="Unix seconds; a chunk's: its document's.")
    sources = UnifiedSourceSerializer(
        many=True,
        help_text="A message: itself. A memory: the messages it came from. A chunk: its document.",
    )
    why = serializers.CharField()
    user_id = serializers.CharField(required=False, help_text="memory")
    kind = serializers.ChoiceField(choices=KINDS, required=False, help_text="memory")
    event_date = serializers.DateField(required=False, allow_null=True, help_text="memory")
    metadata = serializers.DictField(required=False, help_text="memory, message")
    conversation_id = serializers.CharField(required=False, help_text="message")
    role = serializers.CharField(required=False, help_text="message")
    name = serializers.CharField(required=False, allow_null=True, help_text="message")
    collection_id = serializers.CharField(required=False, help_text="chunk")
    document_id = serializers.CharField(required=False, help_text="chunk")
    title = serializers.CharField(
        required=False, help_text="chunk: its document's title, else file name, else id"
    )
    chunk_index = serializers.IntegerField(required=False, help_text="chunk")


class ProcessingSerializer(serializers.Serializer):
    pending = serializers.IntegerField(help_text="Extraction and summary jobs not done yet.")
    done = serializers.IntegerField()
    failed = serializers.IntegerField()


class ConversationSerializer(serializers.Serializer):
    id = serializers.CharField()
    object = const("conversation")
    external_id = serializers.CharField(help_text="The client's x-conversation-id.")
    user_id = serializers.CharField()
    title = serializers.CharField(allow_blank=True)
    summary = serializers.CharField(allow_blank=True)
    metadata = serializers.DictField()
    created_at = _ts()
    updated_at = _ts()
    processing = ProcessingSerializer(required=False, help_text="On one conversation.")


class RecalledSerializer(serializers.Serializer):
    type = serializers.ChoiceField(choices=["memory", "message"])
    id = serializers.CharField(help_text="The memory's or message's id.")
    why = serializers.CharField(help_text="The ranking's reasons: vector, full-text, recency.")
    score = serializers.FloatField()
    deleted = serializers.BooleanField(
        help_text="The memory or message is deleted since (its id no longer reads it): the "
        "answer was given it all the same."
    )


class MessageSerializer(serializers.Serializer):
    id = serializers.CharField()
    object = const("conversation.message")
    conversation_id = serializers.CharField()
    session_id = serializers.CharField(allow_null=True)
    role = serializers.CharField()
    name = serializers.CharField(allow_null=True)
    content = serializers.JSONField(help_text="As the client sent it: text, parts or null.")
    tool_calls = serializers.ListField(child=serializers.DictField(), allow_null=True)
    metadata = serializers.DictField()
    token_count = serializers.IntegerField()
    prompt_tokens = serializers.IntegerField(allow_null=True)
    completion_tokens = serializers.IntegerField(allow_null=True)
    incomplete = serializers.BooleanField(help_text="A stream cut before its end.")
    recalled = serializers.ListField(
        child=RecalledSerializer(),
        allow_null=True,
        help_text="On an answer: the memories and past messages it was given, and why (as the "
        "`engram` object of its completion said). Null on other messages.",
    )
    created_at = _ts()


class SessionSerializer(serializers.Serializer):
    id = serializers.CharField()
    object = const("session")
    user_id = serializers.CharField(allow_blank=True)
    conversation_id = serializers.CharField(allow_null=True)
    created_at = _ts()
    last_active_at = _ts()


# type(): a Serializer's own `data` property would shadow the `data` field.
ImportedSerializer = type(
    "ImportedSerializer",
    (serializers.Serializer,),
    {
        "object": const("list"),
        "data": MessageSerializer(many=True),
        "conversation": ConversationSerializer(),
    },
)


class UserCountsSerializer(serializers.Serializer):
    memories = serializers.IntegerField()
    conversations = serializers.IntegerField()
    messages = serializers.IntegerField()


class UserDetailCountsSerializer(UserCountsSerializer):
    sessions = serializers.IntegerField()
    summaries = serializers.IntegerField(help_text="Conversations with a rolling summary.")
    memory_events = serializers.IntegerField(
        help_text="Entries of their memories' history (kept after a memory is deleted)."
    )
    executions = serializers.IntegerField(
        help_text="Agent runs, with the messages they hold (also when the agent's memory is off)."
    )


class UserSerializer(serializers.Serializer):
    id = serializers.CharField(help_text="The end user's id (x-user-id).")
    object = const("user")
    counts = UserCountsSerializer()
    last_active_at = _ts(allow_null=True)


class UserDetailSerializer(UserSerializer):
    counts = UserDetailCountsSerializer()


class UserDeletedCountsSerializer(serializers.Serializer):
    memories = serializers.IntegerField()
    memory_events = serializers.IntegerField()
    messages = serializers.IntegerField()
    conversations = serializers.IntegerField()
    sessions = serializers.IntegerField()
    executions = serializers.IntegerField(help_text="agent tool runs, with their approvals")
    usage_records_pseudonymized = serializers.IntegerField(
        help_text="usage records kept for billing and budgets, the user id replaced by `erased:…`"
    )


class MemoriesDeletedSerializer(serializers.Serializer):
    object = const("list.deleted")
    user_id = serializers.CharField()
    deleted = serializers.IntegerField(help_text="How many memories were deleted (0: none left).")


class UserDeletedSerializer(serializers.Serializer):
    id = serializers.CharField()
    object = const("user.deleted")
    deleted = serializers.BooleanField()
    counts = UserDeletedCountsSerializer()


class ConversationDeletedCountsSerializer(serializers.Serializer):
    memories = serializers.IntegerField(help_text="extracted from this conversation only")
    messages = serializers.IntegerField()
    sessions = serializers.IntegerField()
    executions = serializers.IntegerField(help_text="agent tool runs, with their approvals")


class ConversationDeletedSerializer(serializers.Serializer):
    id = serializers.CharField()
    object = const("conversation.deleted")
    deleted = serializers.BooleanField()
    counts = ConversationDeletedCountsSerializer()


class ExportedConversationSerializer(ConversationSerializer):
    messages = MessageSerializer(many=True)


class ExportedExecutionSerializer(ExecutionSerializer):
    messages = serializers.ListField(child=serializers.DictField())


class UserExportSerializer(serializers.Serializer):
    object = const("user.export")
    user_id = serializers.CharField()
    memories = MemorySerializer(many=True)
    memory_events = MemoryEventSerializer(many=True)
    conversations = ExportedConversationSerializer(many=True)
    sessions = SessionSerializer(many=True)
    executions = ExportedExecutionSerializer(
        many=True,
        help_text="The user's agent runs (GET /v1/executions/{id}) with their turns, the "
        "answers and the tools' results.",
    )


_MOMENT = {"type": "string", "examples": ["1764547200", "2026-12-01", "2026-12-01T09:30:00+01:00"]}

# GET /v1/memories's filters (memory.serializers.memory_list_filters).
MEMORY_LIST_FILTERS = [
    OpenApiParameter(
        "kind",
        {"type": "array", "items": {"type": "string", "enum": KINDS}},
        style="form",
        explode=True,
        description="Only memories of these kinds: repeated (`kind=fact&kind=plan`) or "
        "comma-separated (`kind=fact,plan`). Another value is 400 naming `kind`.",
        required=False,
    ),
    OpenApiParameter(
        "conversation_id",
        ID_SCHEMA,
        description="Only memories with a source message in this conversation (the client's "
        "id, or Engram's `conv_…`); none when there is no such conversation (of this user). "
        "A client's id is unique per user: one that several users have needs `user_id` (else "
        "400 `ambiguous_conversation`).",
        required=False,
    ),
    OpenApiParameter(
        "metadata",
        str,
        description="Only memories whose `metadata` holds these keys with these values: a JSON "
        'object, e.g. `metadata={"source":"crm"}` (URL-encoded); nested objects match by '
        "containment, as mem0's and Zep's metadata filters. Not an object: 400 naming `metadata`.",
        required=False,
    ),
    OpenApiParameter(
        "created_after",
        _MOMENT,
        description="Only memories created after this moment: Unix seconds or ISO 8601 (UTC "
        "unless it says otherwise), compared with `created_at` as listed, in whole seconds.",
        required=False,
    ),
    OpenApiParameter(
        "created_before",
        _MOMENT,
        description="Only memories created before this moment (as `created_after`).",
        required=False,
    ),
]


def _oldest_first(described: str) -> list[OpenApiParameter]:
    """The list parameters of a list read oldest first by `created_at`: the lists' `order`
    ("by id, default desc") described them wrongly."""
    order = OpenApiParameter(
        "order",
        {"type": "string", "enum": ["asc", "desc"], "default": "asc"},
        description=f"By `created_at`, {described}, ties by id (default asc: oldest first).",
        required=False,
    )
    return [order if parameter.name == "order" else parameter for parameter in LIST_PARAMETERS]


# A conversation's messages read in the order they were said (ConversationMessagesApi).
MESSAGE_LIST_PARAMETERS = _oldest_first("the time each was said (an import's)")
# A memory's history, in the order it changed (MemoryHistoryApi).
MEMORY_HISTORY_PARAMETERS = _oldest_first("the time of each change")

MemoryListSerializer = list_of(MemorySerializer, "MemoryList")


# POST /v1/memories with `memories`: a list (the items' memories in order) and its count
MemoryImportedSerializer = type(
    "MemoryImportedSerializer",
    (list_of(MemorySerializer, "MemoryImportedList", cursor=False),),
    {"created": serializers.IntegerField(help_text="How many of them the import created.")},
)


MemoryEventListSerializer = list_of(MemoryEventSerializer, "MemoryEventList")
MemorySearchResultsSerializer = list_of(MemoryHitSerializer, "MemorySearchResults", cursor=False)
UnifiedSearchResultsSerializer = list_of(UnifiedHitSerializer, "SearchResults", cursor=False)
ConversationListSerializer = list_of(ConversationSerializer, "ConversationList")
MessageListSerializer = list_of(MessageSerializer, "MessageList")
UserListSerializer = list_of(UserSerializer, "UserList")
