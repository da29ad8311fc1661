"""LLM extraction, mem0-style: facts as JSON, then ADD / UPDATE / DELETE / NONE per fact.

Malformed replies are asked again (ATTEMPTS), then raise MalformedOutput. A chunk that fails
(MalformedOutput, or LLMError from the upstream) stops the run with LLMExtractionFailed, which
names the messages left undone: the runner hands those to the offline extractor.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable
from typing import TypeVar

from django.db import transaction

from accounts.models import Workspace
from completions.providers import llm as chat_llm
from config.common.jsonbody import storable
from memory.background.extraction.store import UserMemories
from memory.embeddings import get_embedder
from memory.forgotten import forgotten, suppressed_since
from memory.models import Memory, Message, ProcessingJob
from memory.services.forgetting import suppressions_lift
from memory.services.locks import still_held
from memory.services.memories import (
    MemoryChanged,
    Supersede,
    memories_supersede,
    memory_add_sources,
    memory_create,
    memory_delete,
)
from memory.text import day_label, memory_date, memory_search_text, nfc, speaker

ATTEMPTS = 3
CHUNK_MESSAGES = 30
CHUNK_CHARS = 12_000
NEIGHBOURS = 5
NEIGHBOUR_SIMILARITY = 0.3
KINDS = {"fact", "preference", "plan", "relation", "event"}

T = TypeVar("T")


class MalformedOutput(Exception):
    """The model kept answering something that is not the JSON asked for."""


class LLMExtractionFailed(Exception):
    """A chunk failed; `done` holds the ids of the messages of the chunks already applied."""

    def __init__(self, cause: Exception, *, done: set[str], counts: dict[str, int]) -> None:
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.cause = cause
        self.done = done
        self.counts = counts


FACTS_PROMPT = """You maintain a long-term memory about the people in a conversation.
Extract the facts worth remembering about them from the messages below: personal facts,
preferences, plans, relationships and dated events. Write each as one short, self-contained
sentence naming the person. Resolve relative dates ("yesterday") against the message's date.
Give "date" only when the day itself is known; a month or a year ("next year") stays in the
text, with "date" null. A day said without its year is the next such day, or the last one when
told of the past; a birthday or an anniversary has "date" null. Ignore small talk, text the
user hands over to be translated, proofread or answered, and parts played in a role-play.
Reply with JSON only:
{"facts": [{"text": "...", "kind": "fact|preference|plan|relation|event",
            "date": "YYYY-MM-DD or null", "sources": [message numbers]}]}"""

UPDATE_PROMPT = """You maintain a long-term memory. Compare the new facts with the existing
memories and decide, for each new fact, one event:
- ADD: new information (give "text");
- UPDATE: it changes or refines an existing memory (give its "id" and the new "text");
- DELETE: it contradicts an existing memory that should be forgotten (give its "id");
- NONE: already known (give the "id" of the memory that holds it).
Reply with JSON only:
{"actions": [{"event": "ADD|UPDATE|DELETE|NONE", "id": "...", "text": "...", "fact": n}]}"""


def _parse(reply: str) -> dict:
    text = reply.strip()
    fenced = re.search(r"```(?:json)?\s*(.*?)```", text, re.S)
    if fenced:
        text = fenced.group(1).strip()
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end < start:
        raise ValueError("no JSON object")
    data = json.loads(text[start : end + 1])
    if not isinstance(data, dict):
        raise ValueError("not an object")
    # A model may write what PostgreSQL cannot store ("\u0000" in a fact): cleaned, the fact
    # kept, rather than failing the turn's extraction.
    return storable(data)


def ask_json(*, workspace: Workspace, system: str, user: str, validate: Callable[[dict], T]) -> T:
    last = ""
    for _ in range(ATTEMPTS):
        reply = chat_llm.chat(
            workspace=workspace,
            messages=[{"role": "system", "content": system}, {"role": "user", "content": user}],
            response_format={"type": "json_object"},
        )
        last = reply
        try:
            return validate(_parse(reply))
        except (ValueError, TypeError, KeyError):
            continue
    raise MalformedOutput(f"malformed model output after {ATTEMPTS} attempts: {last[:300]!r}")


def _facts(data: dict) -> list[dict]:
    facts = data["facts"]
    if not isinstance(facts, list):
        raise ValueError("facts is not a list")
    clean = []
    for fact in facts:
        if not isinstance(fact, dict) or not isinstance(fact.get("text"), str):
            raise ValueError("a fact without text")
        if fact["text"].strip():
            clean.append(fact)
    return clean


def _actions(data: dict) -> list[dict]:
    actions = data["actions"]
    if not isinstance(actions, list):
        raise ValueError("actions is not a list")
    for action in actions:
        if not isinstance(action, dict):
            raise ValueError("an action is not an object")
        if str(action.get("event", "")).upper() not in {"ADD", "UPDATE", "DELETE", "NONE"}:
            raise ValueError("unknown event")
    return actions


def _chunks(rows: list[Message]) -> list[list[Message]]:
    chunks: list[list[Message]] = []
    current: list[Message] = []
    size = 0
    for row in rows:
        if row.role not in ("user", "assistant") or not row.content:
            continue
        if current and (len(current) >= CHUNK_MESSAGES or size + len(row.content) > CHUNK_CHARS):
            chunks.append(current)
            current, size = [], 0
        current.append(row)
        size += len(row.content)
    if current:
        chunks.append(current)
    return chunks


def _date(raw) -> dt.date | None:
    try:
        return dt.date.fromisoformat(str(raw)) if raw else None
    except ValueError:
        return None


def extract(*, jobs: list[ProcessingJob], rows: list[Message]) -> dict:
    """The model's facts of `rows`, decided against the user's memories, for the jobs (of one
    conversation) of the run."""
    job = jobs[0]
    workspace, user_id = job.workspace, job.conversation.user_id
    store = UserMemories(workspace, user_id)
    counts = {"added": 0, "updated": 0, "deleted": 0, "unchanged": 0}
    done: set[str] = set()
    chunks = _chunks(rows)
    for number, chunk in enumerate(chunks, start=1):
        if counts.get("not_held"):
            break  # erased meanwhile, or its jobs taken by another run: nothing more to do
        transcript = "\n".join(
            f"[{i + 1}] ({day_label(m.created_at)}) {speaker(m.role, m.name)}: {m.content}"
            for i, m in enumerate(chunk)
        )
        try:
            facts = ask_json(
                workspace=workspace, system=FACTS_PROMPT, user=transcript, validate=_facts
            )
            if facts:
                _apply(
                    jobs=jobs,
                    chunk=chunk,
                    facts=facts,
                    store=store,
                    counts=counts,
                    last=number == len(chunks),
                )
        except (MalformedOutput, chat_llm.LLMError) as exc:
            raise LLMExtractionFailed(exc, done=done, counts=counts) from exc
        done.update(m.id for m in chunk)
    return counts


def _named_sources(fact: dict, chunk: list[Message]) -> list[str]:
    """The messages the model said the fact came from."""
    picked = []
    for n in fact.get("sources") or []:
        if isinstance(n, int) and 1 <= n <= len(chunk):
            picked.append(chunk[n - 1].id)
    return picked


def _fact_sources(fact: dict, chunk: list[Message]) -> list[str]:
    return _named_sources(fact, chunk) or [m.id for m in chunk if m.role == "user"]


def _action_fact(action: dict, facts: list[dict]) -> dict | None:
    """The fact an action decides on: by its number, else by its text."""
    index = action.get("fact")
    if isinstance(index, int) and 0 <= index < len(facts):
        return facts[index]
    return next((f for f in facts if f["text"] == action.get("text")), None)


def _action_text(action: dict, fact: dict | None) -> str:
    """The text an action writes: its own, else its fact's, composed as the memories it is
    compared with are stored (services.stored_text)."""
    return nfc(str(action.get("text") or (fact or {}).get("text") or "").strip())


def _update_vectors(
    actions: list[dict], facts: list[dict], numbered: dict[str, Memory]
) -> dict[tuple[str, str], list[float]]:
    """The vectors of the UPDATEs' new texts, by (memory id, text), in one call before the
    user's lock: each as memory_update indexed it under the lock, one call per update (the
    search text on the memory's day; one written since is not updated, MemoryChanged)."""
    wanted: dict[tuple[str, str], str] = {}
    for action in actions:
        target = numbered.get(str(action.get("id")))
        text = _action_text(action, _action_fact(action, facts))
        if str(action["event"]).upper() == "UPDATE" and target is not None and text:
            when = memory_date(target)
            wanted[(target.id, text)] = memory_search_text(text=text, when=when)
    if not wanted:
        return {}
    searched = list(dict.fromkeys(wanted.values()))
    vectors = dict(zip(searched, get_embedder().embed(searched).tolist(), strict=True))
    return {key: vectors[search] for key, search in wanted.items()}


def _not_deleted_meanwhile(
    *,
    jobs: list[ProcessingJob],
    chunk: list[Message],
    facts: list[dict],
    actions: list[dict],
    counts: dict[str, int],
) -> list[dict]:
    """The actions less the writes (ADD, UPDATE) of a fact its user deleted, or edited away,
    while the model decided: checked again in the run's write, under the user's lock, which a
    person's deletion takes too (memory.services.memories._person_lock). The check before the
    model was made before that deletion, and the fact came back once."""
    workspace, user_id = jobs[0].workspace, jobs[0].conversation.user_id
    by_id = {m.id: m for m in chunk}
    writes, checked = [], []
    for action in actions:
        text = str(action.get("text") or (_action_fact(action, facts) or {}).get("text") or "")
        if str(action["event"]).upper() in ("ADD", "UPDATE") and text.strip():
            writes.append(action)
            checked.append((text, _action_fact(action, facts) or {}))
    verdict = forgotten(
        workspace=workspace,
        user_id=user_id,
        facts=[(text, [by_id[i] for i in _fact_sources(f, chunk)]) for text, f in checked],
        guessed=frozenset(i for i, (_, f) in enumerate(checked) if not _named_sources(f, chunk)),
    )
    suppressions_lift(workspace=workspace, user_id=user_id, ids=verdict.lift)
    dropped = {id(a) for a, keep in zip(writes, verdict.keep, strict=True) if not keep}
    if dropped:
        counts["forgotten"] = counts.get("forgotten", 0) + len(dropped)
    return [a for a in actions if id(a) not in dropped]


def _apply(
    *,
    jobs: list[ProcessingJob],
    chunk: list[Message],
    facts: list[dict],
    store: UserMemories,
    counts: dict[str, int],
    last: bool = False,
) -> None:
    """`last`: the run's last chunk, whose write records its jobs done (runner.jobs_done_with;
    a last chunk without a fact to write leaves that to the task)."""
    workspace, user_id = jobs[0].workspace, jobs[0].conversation.user_id
    # Facts their user deleted, from what was said before (or resent since): not proposed.
    by_id = {m.id: m for m in chunk}
    verdict = forgotten(
        workspace=workspace,
        user_id=user_id,
        facts=[(f["text"], [by_id[i] for i in _fact_sources(f, chunk)]) for f in facts],
        guessed=frozenset(i for i, f in enumerate(facts) if not _named_sources(f, chunk)),
    )
    if not all(verdict.keep):
        counts["forgotten"] = counts.get("forgotten", 0) + verdict.keep.count(False)
        facts = [f for f, keep in zip(facts, verdict.keep, strict=True) if keep]
    if not facts:
        return
    learned_on = chunk[-1].created_at.date()
    vectors = get_embedder().embed(
        [memory_search_text(text=f["text"], when=_date(f.get("date")) or learned_on) for f in facts]
    )
    neighbours: dict[str, Memory] = {}
    for vector in vectors:
        for memory, _ in store.nearest(vector, k=NEIGHBOURS, min_similarity=NEIGHBOUR_SIMILARITY):
            neighbours.setdefault(memory.id, memory)
    if neighbours:
        numbered = {str(i): m for i, m in enumerate(neighbours.values())}
        prompt = json.dumps(
            {
                "existing_memories": [{"id": k, "text": m.text} for k, m in numbered.items()],
                "new_facts": [{"fact": i, "text": f["text"]} for i, f in enumerate(facts)],
            },
            ensure_ascii=False,
        )
        actions = ask_json(
            workspace=workspace, system=UPDATE_PROMPT, user=prompt, validate=_actions
        )
    else:
        numbered = {}
        actions = [{"event": "ADD", "text": f["text"], "fact": i} for i, f in enumerate(facts)]
    updating = _update_vectors(actions, facts, numbered)
    # Consecutive UPDATEs are written together (memories_supersede, as the offline runs'
    # supersedes): four statements for them, not four each. Written before any other action,
    # or another UPDATE of one of them, which reads what they leave.
    supersedes: list[Supersede] = []

    def supersede_now() -> None:
        if not supersedes:
            return
        memories_supersede(workspace=workspace, updates=supersedes, actor="extractor:llm")
        for update in supersedes:
            if update.updated is not None:
                store.replace(update.updated, update.embedding)
                counts["updated"] += 1
            elif isinstance(update.error, Memory.DoesNotExist):  # its user deleted it meanwhile
                store.remove(update.memory.id)
            # MemoryChanged: edited while the model decided on its old text; the edit stays
        supersedes.clear()

    # The run's writes for this chunk in one transaction, under the user's lock (see
    # memory.services.locks.jobs_still_held): the model's answers took seconds, in which the
    # user may have been erased, or the run's lease lapsed and another run took its jobs.
    with transaction.atomic():
        if not still_held(jobs):
            counts["not_held"] = 1
            return
        if suppressed_since(workspace=workspace, user_id=user_id, seen=verdict.seen):
            actions = _not_deleted_meanwhile(
                jobs=jobs, chunk=chunk, facts=facts, actions=actions, counts=counts
            )
            # The memories the model decided on that were deleted: out of the run's view, or
            # a NONE linking its source to one failed the chunk's commit (its row gone).
            shown = [m.id for m in numbered.values()]
            kept = set(Memory.objects.filter(id__in=shown).values_list("id", flat=True))
            for memory_id in set(shown) - kept:
                store.remove(memory_id)
        suppressions_lift(workspace=workspace, user_id=user_id, ids=verdict.lift)
        for action in actions:
            event = str(action["event"]).upper()
            fact = _action_fact(action, facts)
            sources = _fact_sources(fact or {}, chunk)
            target = numbered.get(str(action.get("id")))
            text = _action_text(action, fact)
            if event != "UPDATE" or any(u.memory is target for u in supersedes):
                supersede_now()
            stated_kind = (fact or {}).get("kind")
            kind = str(stated_kind) if stated_kind in KINDS else "fact"
            if event == "ADD" and text:
                if any(m.text.strip().lower() == text.lower() for m in store.memories):
                    continue  # the same words again (a re-run): nothing new
                # on the day its search text says (memory_date: its event's, else learned_on);
                # a dated event's vector was of "[learned_on] ..." beside "[its date] ..."
                event_date = _date((fact or {}).get("date"))
                search = memory_search_text(text=text, when=event_date or learned_on)
                vector = get_embedder().embed_one(search)
                memory = memory_create(
                    workspace=workspace,
                    user_id=user_id,
                    text=text,
                    kind=kind,
                    event_date=event_date,
                    source_message_ids=sources,
                    learned_on=learned_on,
                    actor="extractor:llm",
                    embedding=vector,
                )
                store.add(memory, vector)
                counts["added"] += 1
            elif event == "UPDATE" and target is not None and text:
                if text == target.text:
                    continue
                supersedes.append(
                    Supersede(
                        memory=target,
                        text=text,
                        source_message_ids=sources,
                        reason="the model found newer information",
                        embedding=updating[(target.id, text)],
                    )
                )
            elif event == "DELETE" and target is not None and store.get(target.id):
                try:
                    memory_delete(
                        workspace=workspace,
                        memory=target,
                        actor="extractor:llm",
                        reason="contradicted by the conversation",
                        unless_changed=True,
                    )
                except MemoryChanged:  # edited while the model decided on its old text
                    continue
                store.remove(target.id)
                counts["deleted"] += 1
            elif event == "NONE" and target is not None and store.get(target.id):
                memory_add_sources(workspace=workspace, memory=target, source_message_ids=sources)
                counts["unchanged"] += 1
        supersede_now()
        if last:
            from memory.background.extraction.runner import jobs_done_with

            counts.update(jobs_done_with(jobs, extractor="llm"))
