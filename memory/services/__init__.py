"""Writes: conversations and messages, memories (with history), background jobs, user erasure."""

from memory.services.conversations import (
    conversation_get_or_create,
    conversation_import,
    messages_append,
    messages_import,
    session_resolve,
)
from memory.services.memories import (
    memories_import,
    memory_add,
    memory_create,
    memory_delete,
    memory_update,
)
from memory.services.memories_bulk import memories_delete
from memory.services.processing import extraction_enqueue, summary_enqueue
from memory.services.users import conversation_delete, derived_only_from, user_delete

__all__ = [
    "conversation_delete",
    "derived_only_from",
    "conversation_get_or_create",
    "conversation_import",
    "extraction_enqueue",
    "memories_delete",
    "memories_import",
    "memory_add",
    "memory_create",
    "memory_delete",
    "memory_update",
    "messages_append",
    "messages_import",
    "session_resolve",
    "summary_enqueue",
    "user_delete",
]
