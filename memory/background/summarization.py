"""The rolling summary of a long conversation: LLM-written, or extractive when offline.

What its user forgot (a memory they deleted, memory.services.forgetting) stays out of it: the
new messages' sentences that state a forgotten fact are left out of what the summary is made
from, and the summary's own sentences that state one out of what is written, by the test the
extractor uses (memory.forgotten.without_forgotten). A summary written when a deletion came
meanwhile is checked again against it in its write.
"""

from __future__ import annotations

import copy

from django.conf import settings
from django.db import transaction

from completions.providers.llm import LLMUnavailable
from config.common import tokens
from memory.background.extraction import offline
from memory.forgotten import (
    WRITE_TRIES,
    Forgotten,
    forgotten_facts,
    suppressed_since,
    without_forgotten,
)
from memory.models import Conversation, Message, ProcessingJob
from memory.services.locks import user_lock
from memory.text import count_text, day_label, speaker

SUMMARY_PROMPT = """You keep a running summary of a conversation for an assistant that will not
see the older messages again. Merge the previous summary with the new messages into one summary
of at most {words} words: who the people are, what was decided, facts, open questions, dates.
Reply with the summary text only."""


class EmptySummary(Exception):
    pass


# What one summary call reads at most (tokens of new messages): more come in slices, each folded
# into the summary so far. A bulk import of thousands of messages was one prompt, far past a
# small model's window (a 4,096-token vLLM model), and its summary was never made.
SUMMARY_INPUT_TOKENS = 6000
# The prompt's own words and the message framing around the previous summary and transcript.
_PROMPT_SLACK = 200


def _lines(rows: list[Message]) -> list[str]:
    return [
        f"({day_label(m.created_at)}) {speaker(m.role, m.name)}: {m.content}"
        for m in rows
        if m.content
    ]


def transcript_slices(rows: list[Message], allowance: int) -> list[str]:
    """The new messages' transcript in pieces of at most `allowance` tokens each, whole lines
    where they fit (a line longer than that is cut into pieces of its own)."""
    slices: list[str] = []
    current: list[str] = []
    used = 0
    for line in _lines(rows):
        cost = count_text(line) + 1
        if current and used + cost > allowance:
            slices.append("\n".join(current))
            current, used = [], 0
        if cost > allowance:
            slices.extend(tokens.windows(line, allowance))
            continue
        current.append(line)
        used += cost
    if current:
        slices.append("\n".join(current))
    return slices


def _allowance(job: ProcessingJob) -> int:
    """Tokens of new messages one call may read: the memory model's window less its answer,
    the previous summary (each at most ENGRAM_SUMMARY_MAX_TOKENS) and the prompt."""
    from completions.providers import llm

    window = llm.context_window(workspace=job.workspace)
    room = window - 2 * settings.ENGRAM_SUMMARY_MAX_TOKENS - _PROMPT_SLACK
    return max(256, min(SUMMARY_INPUT_TOKENS, room))


def _llm_summary(job: ProcessingJob, previous: str, rows: list[Message]) -> str:
    """The summary so far with the new messages folded in, a slice at a time."""
    from completions.providers import llm

    words = max(50, settings.ENGRAM_SUMMARY_MAX_TOKENS * 3 // 4)
    for transcript in transcript_slices(rows, _allowance(job)):
        previous = llm.chat(
            workspace=job.workspace,
            messages=[
                {"role": "system", "content": SUMMARY_PROMPT.format(words=words)},
                {
                    "role": "user",
                    "content": f"Previous summary:\n{previous or '(none)'}\n\nNew messages:\n"
                    + transcript,
                },
            ],
            max_tokens=settings.ENGRAM_SUMMARY_MAX_TOKENS,
        ).strip()
        if not previous:
            raise EmptySummary("the model returned an empty summary")
    return previous


def extractive_summary(previous: str, rows: list[Message], max_tokens: int) -> str:
    """Dated lines of what people said about themselves, newest kept when space runs out."""
    lines = [line for line in previous.splitlines() if line.strip()]
    for message in rows:
        if not message.content or message.role not in ("user", "assistant"):
            continue
        who = speaker(message.role, message.name)
        picked = [
            s
            for s in offline.sentences(message.content)
            if not s.endswith("?") and len(s.split()) >= 4
        ]
        if message.role == "user":
            facts = offline.extract(message.content, subject=who, today=message.created_at.date())
            picked = [f.text for f in facts] or picked[:1]
        else:
            picked = picked[:1]  # the assistant's gist: its opening sentence
        for sentence in picked:
            lines.append(f"- ({day_label(message.created_at)}) {who}: {sentence}")
    return "\n".join(newest_that_fit(lines, max_tokens))


def newest_that_fit(lines: list[str], max_tokens: int) -> list[str]:
    """The newest lines whose text (joined by newlines) is at most `max_tokens`: what dropping
    the oldest line at a time until the text fits keeps, found by bisection over the cut. A
    text's count only falls as lines leave its front, so the first cut that fits is the one
    the one-at-a-time loop stopped at. That loop counted the whole text once a line dropped:
    a conversation's first summary (220 messages, ~165 lines dropped) spent 110 of its 145 ms
    there, and the soak's 200 users crossing the trigger within minutes put ~30 s of it in
    front of the extraction jobs (bench/README, *Soak*); bisection counts it ~8 times.
    """
    if count_text("\n".join(lines)) <= max_tokens:
        return lines
    fits, too_many = len(lines), 0  # lines[fits:] fits (nothing at all does), lines[too_many:] not
    while fits - too_many > 1:
        cut = (fits + too_many) // 2
        if count_text("\n".join(lines[cut:])) <= max_tokens:
            fits = cut
        else:
            too_many = cut
    return lines[fits:]


def _without_forgotten(forgotten: Forgotten, rows: list[Message]) -> list[Message]:
    """The messages as the summary reads them: without their sentences that state a forgotten
    fact (copies, not saved; a message left with no words is left out)."""
    said = [m for m in rows if m.content]
    kept = without_forgotten(
        forgotten, [m.content for m in said], speakers=[speaker(m.role, m.name) for m in said]
    )
    changed = {m.pk: text for m, text in zip(said, kept, strict=True) if text != m.content}
    if not changed:
        return rows
    copies = []
    for message in rows:
        if message.pk in changed:
            message = copy.copy(message)
            message.content = changed[message.pk]
            if not message.content:
                continue
        copies.append(message)
    return copies


def summary_run(*, job: ProcessingJob) -> dict:
    conversation = Conversation.objects.get(pk=job.conversation_id)
    rows = list(
        Message.objects.filter(
            conversation=conversation,
            id__gt=conversation.summary_upto,
            id__lte=job.upto_message_id,
        ).order_by("id")
    )
    if not rows:
        return {"summarized": 0}
    workspace, user_id = job.workspace, conversation.user_id
    forgotten = forgotten_facts(workspace=workspace, user_id=user_id)
    said = _without_forgotten(forgotten, rows)
    mode = settings.ENGRAM_MEMORY_EXTRACTION
    try:
        if mode == "offline":
            raise LLMUnavailable("offline extraction configured")
        summary = _llm_summary(job, conversation.summary, said)
        how = "llm"
    except LLMUnavailable:
        summary = extractive_summary(conversation.summary, said, settings.ENGRAM_SUMMARY_MAX_TOKENS)
        how = "extractive"
    for _ in range(WRITE_TRIES):
        [summary] = without_forgotten(forgotten, [summary])
        with transaction.atomic():
            # shared: a person's deletion (exclusive) is recorded wholly before or after
            user_lock(workspace_id=workspace.id, user_id=user_id)
            if not suppressed_since(workspace=workspace, user_id=user_id, seen=forgotten.seen):
                # Only move forward: a late, older job must not roll back a newer summary.
                Conversation.objects.filter(
                    pk=conversation.pk, summary_upto=conversation.summary_upto
                ).update(summary=summary, summary_upto=job.upto_message_id)
                return {"summarized": len(rows), "how": how}
        forgotten = forgotten_facts(workspace=workspace, user_id=user_id)
    raise RuntimeError("the user deleted memories during each of the summary's writes")
