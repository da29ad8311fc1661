"""Conversation titles, made in the background from the first user message (offline: no LLM).

`messages_append` / `messages_import` enqueue `memory.title_conversation` on commit while a
conversation has no title; the title is set only where it is still empty, so a second
delivery, a title an operator typed, or a race with a later turn changes nothing.
"""

from __future__ import annotations

from celery import shared_task
from django.db import InterfaceError, OperationalError

from config.common.text import shorten

TITLE_CHARS = 60


def title_from(text: str) -> str:
    return shorten(text, TITLE_CHARS)


def conversation_title_generate(*, conversation_id: str) -> str:
    """The conversation's title from its first user message with text ("" when it has none)."""
    from memory.models import Conversation, Message

    contents = (
        Message.objects.filter(conversation_id=conversation_id, role=Message.Role.USER)
        .exclude(content="")
        .order_by("created_at", "id")
        .values_list("content", flat=True)
    )
    title = next((title_from(c) for c in contents[:5] if c.strip()), "")
    if title:
        Conversation.objects.filter(pk=conversation_id, title="").update(title=title)
    return title


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
    conversation_title_generate(conversation_id=conversation_id)
