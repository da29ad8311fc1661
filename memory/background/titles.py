"""Conversation titles, made in the background from the first user message (offline: no LLM).

`messages_append` / `messages_import` enqueue `memory.title_conversation` on commit while a
conversation has no title, unless one is still waiting (config.coalesce); the title is set only where it is still empty, so a second
delivery, a title an operator typed, or a race with a later turn changes nothing.
"""

from __future__ import annotations

from celery import shared_task
from django.db import InterfaceError, OperationalError

from memory.text import title_from


def conversation_title_generate(*, conversation_id: str) -> str:
    """The conversation's title from its first user message with text ("" when it has none),
    without the sentences that state a fact its user forgot (a memory they deleted: the
    title said it to anyone listing their conversations), checked again in its write against
    a deletion made meanwhile (as a summary's)."""
    from django.db import transaction

    from memory.forgotten import (
        WRITE_TRIES,
        forgotten_facts,
        suppressed_since,
        without_forgotten,
    )
    from memory.models import Conversation, Message
    from memory.services.locks import user_lock
    from memory.text import speaker

    conversation = Conversation.objects.filter(pk=conversation_id).first()
    if conversation is None:
        return ""
    workspace, user_id = conversation.workspace, conversation.user_id
    rows = list(
        Message.objects.filter(conversation_id=conversation_id, role=Message.Role.USER)
        .exclude(content="")
        .order_by("created_at", "id")
        .values_list("content", "name")[:5]
    )
    for _ in range(WRITE_TRIES):
        forgotten = forgotten_facts(workspace=workspace, user_id=user_id)
        contents = without_forgotten(
            forgotten, [c for c, _ in rows], speakers=[speaker("user", name) for _, name in rows]
        )
        title = next((title_from(c) for c in contents if c.strip()), "")
        with transaction.atomic():
            user_lock(workspace_id=workspace.id, user_id=user_id)
            if suppressed_since(workspace=workspace, user_id=user_id, seen=forgotten.seen):
                continue  # forgotten meanwhile: made again
            if title:
                Conversation.objects.filter(pk=conversation_id, title="").update(title=title)
            return title
    return ""  # the next turn asks again (memory.services.conversations)


@shared_task(
    name="memory.title_conversation",
    acks_late=True,
    ignore_result=True,
    autoretry_for=(OperationalError, InterfaceError),
    retry_backoff=True,
    max_retries=3,
    soft_time_limit=30,
    time_limit=60,
)
def title_conversation(conversation_id: str) -> None:
    from config.coalesce import taken

    # Before the read: a turn committed after this sends a task of its own (config.coalesce).
    taken(title_conversation.name, conversation_id)
    conversation_title_generate(conversation_id=conversation_id)
