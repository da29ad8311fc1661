"""Response shapes (plain functions) and input serializers of the memory and conversation APIs."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from django.utils import timezone
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from config.common import jsonbody
from config.common.closed import ClosedSerializer
from config.common.errors import ApiError, Invalid
from config.common.ids import ID_RULE, as_user_id, identifier, is_id, user_identifier
from config.common.jsonbody import metadata_problem
from config.common.times import query_time, unix_seconds
from memory.knowledge.parsing import visible
from memory.knowledge.search import MAX_COLLECTIONS, TOO_MANY_COLLECTIONS
from memory.models import Conversation, Memory, MemoryEvent, Message, Session
from memory.text import nfc


def memory_body(memory: Memory, sources: list[dict] | None = None) -> dict:
    return {
        "id": memory.id,
        "object": "memory",
        "user_id": memory.user_id,
        "text": memory.text,
        "kind": memory.kind,
        "event_date": memory.event_date.isoformat() if memory.event_date else None,
        "metadata": memory.metadata,
        "created_at": unix_seconds(memory.created_at),
        "updated_at": unix_seconds(memory.updated_at),
        "sources": sources if sources is not None else [],
    }


def event_body(event: MemoryEvent) -> dict:
    return {
        "id": event.id,
        "object": "memory.event",
        "memory_id": event.memory_id,
        "user_id": event.user_id,
        "event": event.event,
        "old_text": event.old_text,
        "new_text": event.new_text,
        "reason": event.reason,
        "actor": event.actor,
        "source_message_ids": event.source_message_ids,
        "changes": event.changes,
        "created_at": unix_seconds(event.created_at),
    }


def conversation_body(conversation: Conversation, processing: dict | None = None) -> dict:
    body = {
        "id": conversation.id,
        "object": "conversation",
        "external_id": conversation.external_id,
        "user_id": conversation.user_id,
        "title": conversation.title,
        "summary": conversation.summary,
        "metadata": conversation.metadata,
        "created_at": unix_seconds(conversation.created_at),
        "updated_at": unix_seconds(conversation.updated_at),
    }
    if processing is not None:
        body["processing"] = processing
    return body


def message_body(message: Message, conversation: Conversation | None = None) -> dict:
    conversation = conversation or message.conversation
    return {
        "id": message.id,
        "object": "conversation.message",
        "conversation_id": conversation.external_id,
        "session_id": message.session.external_id if message.session is not None else None,
        "role": message.role,
        "name": message.name or None,
        "content": message.raw.get("content", message.content) if message.raw else message.content,
        "tool_calls": message.tool_calls,
        "metadata": message.metadata,
        "token_count": message.token_count,
        "prompt_tokens": message.prompt_tokens,
        "completion_tokens": message.completion_tokens,
        "incomplete": message.incomplete,
        "recalled": message.recalled,
        "created_at": unix_seconds(message.created_at),
    }


def recalled_marked(bodies: list[dict], deleted: set[str]) -> list[dict]:
    """Message bodies whose `recalled` items each say whether their memory or message is
    `deleted` since (selectors.recalled_deleted): the user sees why an answer said what it
    did, a fact they deleted included, and that it is gone (its text is never kept)."""
    for body in bodies:
        if body.get("recalled"):
            body["recalled"] = [
                {**item, "deleted": item["id"] in deleted} for item in body["recalled"]
            ]
    return bodies


def session_body(session: Session) -> dict:
    return {
        "id": session.external_id,
        "object": "session",
        "user_id": session.user_id,
        "conversation_id": (
            session.conversation.external_id if session.conversation is not None else None
        ),
        "created_at": unix_seconds(session.created_at),
        "last_active_at": unix_seconds(session.last_active_at),
    }


# --- inputs -------------------------------------------------------------------------------------

KINDS = ["fact", "preference", "plan", "relation", "event"]


@dataclass(frozen=True)
class MemoryListFilters:
    """What `GET /v1/memories` narrows to, from its query (memory_list_filters)."""

    kinds: tuple[str, ...] = ()
    conversation_id: str | None = None
    created_from: dt.datetime | None = None  # created at or after
    created_until: dt.datetime | None = None  # created before
    metadata: dict | None = None  # holding these keys and values (jsonb containment)


def list_user_id(query_params) -> str | None:
    """The user a list of memories or conversations narrows to (None: every user's). Given
    empty (`?user_id=`, a client's unset variable) it is a 400 naming it, as the OpenAPI
    document's 1-200 characters say: read as absent, it listed every user's."""
    raw = query_params.get("user_id")
    if raw is not None and not raw.strip():
        raise Invalid(f"user_id must be {ID_RULE}.", field="user_id")
    return user_identifier(raw, "user_id")


# GET /v1/memories's query beside the list parameters (config.common.pagination)
MEMORY_LIST_QUERY = (
    "user_id",
    "kind",
    "conversation_id",
    "created_after",
    "created_before",
    "metadata",
)
MEMORY_LIST_REPEATABLE = ("kind",)  # the one filter that takes several values


def memory_list_filters(query_params) -> MemoryListFilters:
    """`kind` (repeated or comma-separated), `conversation_id`, `created_after`,
    `created_before` and `metadata`; a 400 naming the parameter for what none of them can be."""
    created_from, created_until = _created_range(
        query_params.get("created_after"), query_params.get("created_before")
    )
    return MemoryListFilters(
        kinds=_kinds(query_params.getlist("kind")),
        conversation_id=identifier(query_params.get("conversation_id"), "conversation_id"),
        created_from=created_from,
        created_until=created_until,
        metadata=_metadata_filter(query_params.get("metadata")),
    )


def _kinds(values: list[str]) -> tuple[str, ...]:
    """`kind` filter values, each one kind or several comma-separated."""
    kinds: list[str] = []
    for raw in values:
        for kind in (k.strip() for k in raw.split(",")):
            if kind and kind not in KINDS:
                raise Invalid(f"kind must be one of {', '.join(KINDS)}.", field="kind")
            if kind and kind not in kinds:
                kinds.append(kind)
    return tuple(kinds)


def _created_range(
    created_after: str | None, created_before: str | None
) -> tuple[dt.datetime | None, dt.datetime | None]:
    """`created_after` / `created_before` as the first moment kept and the first left out."""
    after = query_time(created_after, "created_after")
    before = query_time(created_before, "created_before")
    # Compared with `created_at` as a memory shows it, in whole seconds: `created_after` set to
    # a listed memory's `created_at` leaves out that memory and those of the same second.
    return (
        _next_second(after) if after else None,
        _next_second(before) if before and before.microsecond else before,
    )


def memory_search_filters(data: dict) -> MemoryListFilters:
    """A memory search body's filters, read as the list reads its query (memory_list_filters):
    `kind` (a kind, a list of kinds, or kinds comma-separated), `created_after`,
    `created_before` (Unix seconds or ISO 8601) and `metadata` (validated by SearchInput)."""
    kind = data.get("kind")
    if kind is None:
        kinds: tuple[str, ...] = ()
    elif isinstance(kind, str) or (
        isinstance(kind, list) and all(isinstance(k, str) for k in kind)
    ):
        kinds = _kinds([kind] if isinstance(kind, str) else kind)
    else:
        raise Invalid("kind must be a kind or a list of kinds.", field="kind")
    moments = []
    for name in ("created_after", "created_before"):
        value = data.get(name)
        if isinstance(value, bool) or not isinstance(value, (str, int, type(None))):
            raise Invalid(f"{name} must be Unix seconds or an ISO 8601 date or time.", field=name)
        moments.append(None if value is None else str(value))
    created_from, created_until = _created_range(*moments)
    return MemoryListFilters(
        kinds=kinds,
        created_from=created_from,
        created_until=created_until,
        metadata=data.get("metadata"),
    )


def _metadata_filter(raw: str | None) -> dict | None:
    """`metadata`: a JSON object the memories' metadata must contain (None: absent). A
    client moving from mem0 or Zep filters by its own tags ({"source": "crm"})."""
    if raw is None or raw == "":
        return None
    try:  # a body's rules: no NUL, lone surrogate, NaN or 1e400 (jsonb takes none of them)
        value = jsonbody.loads(raw, param="metadata")
        jsonbody.check(value, "metadata")
    except ApiError as exc:
        raise Invalid(f"metadata: {exc.message}", field="metadata") from None
    if problem := metadata_filter_problem(value, " (URL-encoded)"):
        raise Invalid(problem, field="metadata")
    assert isinstance(value, dict)
    return value


def metadata_filter_problem(value: object, encoded: str = "") -> str | None:
    """What a `metadata` filter (the list's query, a search's body) cannot be, or None."""
    if not isinstance(value, dict):
        return f'metadata must be a JSON object, e.g. {{"source": "crm"}}{encoded}.'
    return metadata_problem(value)


@extend_schema_field({"type": "object", "additionalProperties": True})
class MetadataFilterField(serializers.Field):
    """A search body's `metadata`: the memories whose metadata contains this JSON object, as
    GET /v1/memories?metadata= (the same rules: metadata_filter_problem)."""

    def to_internal_value(self, data):
        if problem := metadata_filter_problem(data):
            raise serializers.ValidationError(problem)
        return data

    def to_representation(self, value):
        return value


# DELETE /v1/memories's query: whose memories (required), and the list's filters that narrow it
MEMORIES_DELETE_QUERY = ("user_id", "kind", "metadata")


def memories_delete_user_id(query_params) -> str:
    """DELETE /v1/memories's `user_id`: required, a 400 naming it when absent (never every
    user's memories by a forgotten parameter)."""
    user_id = list_user_id(query_params)
    if user_id is None:
        raise Invalid(
            "user_id is required: the user whose memories are deleted "
            "(DELETE /v1/users/{id} erases everything of theirs).",
            field="user_id",
        )
    return user_id


def _next_second(moment: dt.datetime) -> dt.datetime:
    """The start of the second after `moment`'s (the latest time there is, past year 9999)."""
    try:
        return moment.replace(microsecond=0) + dt.timedelta(seconds=1)
    except OverflowError:
        return dt.datetime.max.replace(tzinfo=dt.UTC)


class StringField(serializers.CharField):
    """A string in a body, as the OpenAPI document types it: DRF's CharField took 0 as "0" (a
    memory stored as "0", a search for "0")."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


# What a memory's text, a query or a document's text may not be (VisibleTextField, the admin)
INVISIBLE_TEXT = "This field shows no character: only spaces and invisible (format) characters."


def visible_text(value: str) -> str:
    """`value` composed (memory.text.nfc) as it is stored, or ValueError when it shows no
    character: the API's rule for a memory's text and a query, and the admin's."""
    value = nfc(value)
    if not visible(value):
        raise ValueError(INVISIBLE_TEXT)
    return value


class VisibleTextField(StringField):
    """A memory's text or a query, composed (memory.text.nfc): blank is refused (DRF strips the spaces at its ends), and
    so is text that shows nothing. str.strip() keeps zero-width spaces, joiners and BOMs, and
    "\u200b" was stored as a memory that every chat turn of its user then read as an empty
    line (the rule documents' text follows: memory.knowledge.parsing.visible)."""

    def to_internal_value(self, data):
        # composed (NFC) before max_length is checked: the text is stored so (stored_text),
        # and a few letters compose to two code points (U+0958 is U+0915 U+093C)
        try:
            return visible_text(super().to_internal_value(data))
        except ValueError as exc:
            raise serializers.ValidationError(str(exc)) from None


class IntegerField(serializers.IntegerField):
    """An integer in a body, as the OpenAPI document types it: DRF's took "10" for 10."""

    def to_internal_value(self, data):
        if isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class IdField(StringField):
    """An id in a body: the same rule as a header, path or query id (config.common.ids)."""

    noun = "An id"

    def __init__(self, **kwargs):
        super().__init__(trim_whitespace=True, **kwargs)

    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        if not is_id(value):
            raise serializers.ValidationError(f"{self.noun} is {ID_RULE}.")
        return value


class UserIdField(IdField):
    noun = "A user id"

    def to_internal_value(self, data):
        return super().to_internal_value(as_user_id(data) if isinstance(data, str) else data)


class CollectionIdField(IdField):
    """A collection id in a body, as x-collection-ids takes it: a malformed one was looked up
    and answered 404 (`7` as "7"), where a header naming it is a 400."""

    noun = "A collection id"


class CollectionIdsField(serializers.ListField):
    """Collection ids in a body: as many as x-collection-ids takes, refused in its words."""

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("error_messages", {})["max_length"] = TOO_MANY_COLLECTIONS
        super().__init__(child=CollectionIdField(), max_length=MAX_COLLECTIONS, **kwargs)


def engram_metadata_problem(metadata: dict) -> str | None:
    """What is wrong with a memory's metadata as a person gives it (the API, the admin), or
    None: its size (jsonbody.metadata_problem), and Engram's keys: a one-valued fact's slot,
    value and subject (memory.services.memories.ENGRAM_METADATA_KEYS) are strings, as Engram
    writes them. A value of 5 or null failed every later extraction of the user's facts of
    that slot."""
    if problem := metadata_problem(metadata):
        return problem
    for key in ("slot", "value", "subject"):
        if key in metadata and not isinstance(metadata[key], str):
            return f"metadata.{key} is Engram's (a one-valued fact's {key}): a string."
    return None


class MemoryMetadataField(serializers.DictField):
    def to_internal_value(self, data):
        metadata = super().to_internal_value(data)
        problem = engram_metadata_problem(metadata)
        if problem:
            raise serializers.ValidationError(problem)
        return metadata


class FlexibleDateTimeField(serializers.DateTimeField):
    """ISO 8601 or a Unix timestamp (what OpenAI's own objects use)."""

    def to_internal_value(self, value):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                return dt.datetime.fromtimestamp(value, tz=dt.UTC)
            except (OverflowError, OSError, ValueError):
                self.fail("invalid", format="a Unix timestamp or ISO 8601")
        return super().to_internal_value(value)


# How far past the server's clock an imported message's time may be: the importer's clock may
# run a little ahead; a later time (9999-12-31) made the user's last_active_at that year.
IMPORT_CLOCK_SKEW = dt.timedelta(days=1)


def not_ahead(value: dt.datetime | None) -> dt.datetime | None:
    """An imported `created_at` (a message's, a memory's), refused when past the server's
    clock by more than IMPORT_CLOCK_SKEW."""
    if value is not None and value > timezone.now() + IMPORT_CLOCK_SKEW:
        raise serializers.ValidationError(
            f"{value.isoformat()} is in the future: a time may be at most "
            f"{IMPORT_CLOCK_SKEW.days} day ahead of the server's clock."
        )
    return value


# A memory is one fact, not a document: the API's cap and the admin's (one fact, one constant).
MEMORY_TEXT_MAX_CHARS = 4000


# A memory object as Engram answers it (memory_body, a memory search's hit) posted back: the
# fields that are Engram's own output, accepted and ignored (a restore or a migration posts
# what it got; a field Engram never wrote stays a 400).
MEMORY_OUTPUT_FIELDS = ("id", "updated_at", "sources", "score", "why")


class MemoryCreateInput(ClosedSerializer):
    user_id = UserIdField()
    text = VisibleTextField(max_length=MEMORY_TEXT_MAX_CHARS)
    kind = serializers.ChoiceField(choices=KINDS, default="fact")
    event_date = serializers.DateField(required=False, allow_null=True)
    metadata = MemoryMetadataField(required=False, default=dict)
    created_at = FlexibleDateTimeField(
        required=False,
        allow_null=True,
        help_text="The memory's original time (Unix seconds or ISO 8601), as an exported "
        "memory says it: kept by a new memory (default: now); at most a day ahead of the "
        "server's clock.",
    )
    object = serializers.ChoiceField(
        choices=["memory"], required=False, help_text="As a memory object says it; ignored."
    )

    def get_fields(self):
        fields = super().get_fields()
        for name in MEMORY_OUTPUT_FIELDS:
            fields[name] = serializers.JSONField(
                required=False,
                allow_null=True,
                help_text="Engram's own output (a memory as listed or exported): ignored.",
            )
        return fields

    def validate_created_at(self, value: dt.datetime | None) -> dt.datetime | None:
        return not_ahead(value)

    def validate(self, attrs):
        for name in (*MEMORY_OUTPUT_FIELDS, "object"):
            attrs.pop(name, None)
        return attrs


# Memories one import (POST /v1/memories with `memories`) holds at most: embedded in one batch
# and written in one transaction, all or nothing. A bigger export goes in several requests
# (a retried one stores nothing twice: each memory is de-duplicated as a single create is).
MAX_IMPORT_MEMORIES = 1000


class MemoryImportItemInput(MemoryCreateInput):
    """One memory of an import: as a single create's body, the user being the import's (an
    exported memory's own `user_id` is Engram's output and ignored, so an export restores
    into another user too)."""

    user_id = serializers.JSONField(  # type: ignore[assignment]  # any value: ignored
        required=False,
        allow_null=True,
        help_text="An exported memory's: ignored (the import's `user_id` is whose).",
    )

    def validate(self, attrs):
        attrs.pop("user_id", None)
        return super().validate(attrs)


class MemoryImportInput(ClosedSerializer):
    user_id = UserIdField()
    # DRF >= 3.15 hands max_length to the ListSerializer; the stubs (3.16.9) do not list it.
    memories = MemoryImportItemInput(  # type: ignore[call-arg]
        many=True,
        allow_empty=False,
        max_length=MAX_IMPORT_MEMORIES,
        help_text=f"At most {MAX_IMPORT_MEMORIES:,} memories, each as a single create's body "
        "(a memory as listed or exported may be sent back as it is).",
    )


class MemoryUpdateInput(ClosedSerializer):
    text = VisibleTextField(max_length=MEMORY_TEXT_MAX_CHARS, required=False)
    kind = serializers.ChoiceField(choices=KINDS, required=False)
    event_date = serializers.DateField(required=False, allow_null=True)
    metadata = MemoryMetadataField(
        required=False,
        help_text="Replaces the client's keys; Engram's (learned_on, slot, value, subject) "
        "stay unless named.",
    )


class SearchInput(ClosedSerializer):
    user_id = UserIdField()
    query = VisibleTextField(max_length=4000)
    limit = IntegerField(min_value=1, max_value=100, default=10)
    metadata = MetadataFilterField(
        required=False,
        allow_null=True,
        help_text="Only memories whose `metadata` holds these keys with these values, e.g. "
        '`{"source": "crm"}` (containment, as `GET /v1/memories?metadata=`).',
    )
    # read by memory_search_filters, as GET /v1/memories reads them
    kind = serializers.JSONField(
        required=False,
        allow_null=True,
        help_text='Only memories of this kind or these kinds: `"plan"`, `["fact", "plan"]` '
        "(as `GET /v1/memories?kind=`).",
    )
    created_after = serializers.JSONField(
        required=False,
        allow_null=True,
        help_text="Only memories created after this moment: Unix seconds or ISO 8601, in whole "
        "seconds (as `GET /v1/memories?created_after=`).",
    )
    created_before = serializers.JSONField(
        required=False,
        allow_null=True,
        help_text="Only memories created before this moment (as `created_after`).",
    )


class UnifiedSearchInput(ClosedSerializer):
    user_id = UserIdField(required=False)
    query = VisibleTextField(max_length=4000)
    limit = IntegerField(min_value=1, max_value=100, default=10)
    metadata = MetadataFilterField(
        required=False,
        allow_null=True,
        help_text="Only memories whose `metadata` holds these keys with these values, e.g. "
        '`{"source": "crm"}` (containment, as `GET /v1/memories?metadata=`); messages and '
        "chunks are not narrowed by it.",
    )
    # read by memory_search_filters, as POST /v1/memories/search reads them
    kind = serializers.JSONField(
        required=False,
        allow_null=True,
        help_text='Only memories of this kind or these kinds: `"plan"`, `["fact", "plan"]`; '
        "messages and chunks are not narrowed by it.",
    )
    created_after = serializers.JSONField(
        required=False,
        allow_null=True,
        help_text="Only memories and messages created after this moment (a message's "
        "`created_at`: when it was said, or imported as said): Unix seconds or ISO 8601, in "
        "whole seconds. Chunks, the workspace's knowledge, are not narrowed by it.",
    )
    created_before = serializers.JSONField(
        required=False,
        allow_null=True,
        help_text="Only memories and messages created before this moment (as `created_after`).",
    )
    types = serializers.ListField(
        child=serializers.ChoiceField(choices=["memories", "messages", "chunks"]),
        min_length=1,
        max_length=3,
        required=False,
    )
    collection_ids = CollectionIdsField(required=False, default=list)

    def validate(self, attrs):
        # Without `types`, what the request names: collections named beside the default
        # types were neither searched nor checked (another workspace's id answered 200), and
        # a body naming only collections was refused for want of a user id.
        if "types" not in attrs:
            named = ["memories", "messages"] if attrs.get("user_id") else []
            if attrs["collection_ids"]:
                named.append("chunks")
            attrs["types"] = named or ["memories", "messages"]
        types = set(attrs["types"])
        if attrs["collection_ids"] and "chunks" not in types:
            raise serializers.ValidationError(
                {
                    "collection_ids": 'Collections hold chunks: add "chunks" to types to '
                    "search them, or leave types out."
                }
            )
        if types & {"memories", "messages"} and not attrs.get("user_id"):
            raise serializers.ValidationError(
                {"user_id": "Memories and messages are a user's: give user_id."}
            )
        if "chunks" in types and not attrs["collection_ids"]:
            raise serializers.ValidationError(
                {"collection_ids": "Chunks come from collections: name them in collection_ids."}
            )
        return attrs


def _is_part(part) -> bool:
    """A content part as the chat doors take it: a typed object whose text, if any, is a string
    (a number there reached the tokenizer)."""
    if not isinstance(part, dict) or not isinstance(part.get("type"), str):
        return False
    return part["type"] != "text" or isinstance(part.get("text"), str)


class ImportMessageInput(serializers.Serializer):
    role = serializers.ChoiceField(choices=["user", "assistant", "system", "developer", "tool"])
    # null or left out as OpenAI allows it (an assistant's tool calls): ImportInput checks each
    # message with the chat doors' rule
    content = serializers.JSONField(required=False, allow_null=True)
    # null as absent, as the chat doors read it: the messages Engram lists and exports, and
    # the OpenAI SDK's message objects dumped whole, say `"name": null`, `"tool_calls": null`
    # where there are none, and an import of them was a 400 "may not be null"
    name = StringField(max_length=200, required=False, allow_blank=True, allow_null=True)
    created_at = FlexibleDateTimeField(required=False, allow_null=True)
    metadata = serializers.DictField(required=False, default=dict, allow_null=True)
    tool_calls = serializers.ListField(
        child=serializers.DictField(), required=False, allow_null=True
    )
    tool_call_id = StringField(max_length=200, required=False, allow_null=True)

    def validate_created_at(self, value: dt.datetime | None) -> dt.datetime | None:
        return not_ahead(value)

    def validate_metadata(self, value: dict | None) -> dict:
        if value is None:
            return {}
        if problem := metadata_problem(value):
            raise serializers.ValidationError(problem)
        return value

    def validate_content(self, value):
        if value is None or isinstance(value, str):
            return value
        if isinstance(value, list) and all(_is_part(p) for p in value):
            return value
        raise serializers.ValidationError(
            "content must be a string or a list of content parts "
            '({"type": "text", "text": "..."} and the like).'
        )


class ImportInput(ClosedSerializer):
    user_id = UserIdField(required=False)  # else x-user-id or ?user_id= (the route's user)
    # DRF >= 3.15 hands max_length to the ListSerializer; the stubs (3.16.9) do not list it.
    messages = ImportMessageInput(many=True, allow_empty=False, max_length=5000)  # type: ignore[call-arg]

    def validate_messages(self, messages: list[dict]) -> list[dict]:
        from completions import validation

        for i, message in enumerate(messages):
            validation.message(message, i)
        return messages
