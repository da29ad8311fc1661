"""The rolling summary of a long conversation: LLM-written, or extractive when offline."""

from __future__ import annotations

from django.conf import settings

from completions.providers.llm import LLMUnavailable
from memory.background.extraction import offline
from memory.models import Conversation, Message, ProcessingJob
from memory.text import count_text, day_label, speaker

SUMMARY_PROMPT = """You keep a running summary of a conversation for an assistant that will not
see the older messages again. Merge the previous summary with the new messages into one summary
of at most {words} words: who the people are, what was decided, facts, open questions, dates.
Reply with the summary text only."""


class EmptySummary(Exception):
    pass


def _transcript(rows: list[Message]) -> str:
    return "\n".join(
        f"({day_label(m.created_at)}) {speaker(m.role, m.name)}: {m.content}"
        for m in rows
        if m.content
    )


def _llm_summary(job: ProcessingJob, previous: str, rows: list[Message]) -> str:
    from completions.providers import llm

    words = max(50, settings.ENGRAM_SUMMARY_MAX_TOKENS * 3 // 4)
    text = llm.chat(
        workspace=job.workspace,
        messages=[
            {"role": "system", "content": SUMMARY_PROMPT.format(words=words)},
            {
                "role": "user",
                "content": f"Previous summary:\n{previous or '(none)'}\n\nNew messages:\n"
                + _transcript(rows),
            },
        ],
        max_tokens=settings.ENGRAM_SUMMARY_MAX_TOKENS,
    ).strip()
    if not text:
        raise EmptySummary("the model returned an empty summary")
    return text


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
    while lines and count_text("\n".join(lines)) > max_tokens:
        lines.pop(0)
    return "\n".join(lines)


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
    mode = settings.ENGRAM_MEMORY_EXTRACTION
    try:
        if mode == "offline":
            raise LLMUnavailable("offline extraction configured")
        summary = _llm_summary(job, conversation.summary, rows)
        how = "llm"
    except LLMUnavailable:
        summary = extractive_summary(conversation.summary, rows, settings.ENGRAM_SUMMARY_MAX_TOKENS)
        how = "extractive"
    # Only move forward: a late, older job must not roll back a newer summary.
    Conversation.objects.filter(pk=conversation.pk, summary_upto=conversation.summary_upto).update(
        summary=summary, summary_upto=job.upto_message_id
    )
    return {"summarized": len(rows), "how": how}
