"""Turns whose answer never came: their messages are extracted all the same.

A turn's extraction is enqueued when it finishes, in the transaction that stores its answer
(memory.turn.pipeline._finish). A web process that dies between storing the user's message
(prepare_turn) and that leaves the message with no job: the conversation's next turn would
cover it, and a client that never retried never sends one. Celery beat runs
`memory.extract_unanswered` every ENGRAM_UNANSWERED_SWEEP_SECONDS: a user message stored
between ENGRAM_UNANSWERED_AFTER_SECONDS and LOOKBACK ago that no extraction job covers, in a
conversation with extraction on, gets its conversation's job (extraction_enqueue, from what is
covered to its newest message). An answered turn's messages are always covered (the same
transaction), so "not covered" is "not answered". The database is the truth: a second run,
or two at once, find the job (or the unique range refuses the second insert).
"""

from __future__ import annotations

import datetime as dt
import logging

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from memory.models import Conversation, Message, ProcessingJob
from memory.services.locks import user_lock
from memory.services.processing import extraction_enqueue

logger = logging.getLogger("engram.memory")

# A message older than this is left to the conversation's next turn: the scan stays a bounded
# range of the messages' created_at index (run every minute, it sees each message ~55 times;
# a beat down longer than this misses the turns that crashed meanwhile).
LOOKBACK = dt.timedelta(hours=1)
BATCH = 500


def unanswered_extract(*, now: dt.datetime | None = None) -> int:
    """Enqueue the extraction of the conversations whose last turns were never finished;
    how many jobs were made."""
    now = now or timezone.now()
    newest = now - dt.timedelta(seconds=settings.ENGRAM_UNANSWERED_AFTER_SECONDS)
    covered = ProcessingJob.objects.filter(
        conversation_id=OuterRef("conversation_id"),
        kind=ProcessingJob.Kind.EXTRACT,
        upto_message_id__gte=OuterRef("id"),
    )
    conversation_ids = list(
        Message.objects.filter(
            role=Message.Role.USER, created_at__gte=newest - LOOKBACK, created_at__lt=newest
        )
        .filter(~Exists(covered), conversation__extraction=True)
        .order_by()
        .values_list("conversation_id", flat=True)
        .distinct()[:BATCH]
    )
    made = 0
    for conversation in Conversation.objects.filter(pk__in=conversation_ids).select_related(
        "workspace"
    ):
        with transaction.atomic():
            # Under the user's lock, as their turns' writes: an erasure (or the conversation's
            # deletion) runs wholly before, and then there is nothing left to extract, or after.
            user_lock(workspace_id=conversation.workspace_id, user_id=conversation.user_id)
            if not Conversation.objects.filter(pk=conversation.pk).exists():
                continue
            if extraction_enqueue(workspace=conversation.workspace, conversation=conversation):
                made += 1
    if made:
        logger.warning("sweep: %d unanswered turn(s) sent to extraction", made)
    return made
