"""A conversation's stored rows as a turn reads them, with what is worked out from each row once
per process rather than on every turn of its conversation.

Every remembered turn reads its conversation's newest rows (up to HISTORY_ROWS) and, per row,
parsed its JSON, normalized its text twice (matched_prefix's key, the fingerprint's) and counted
its tokens for the assembly's exact total: ~0.08M instructions a stored message, 22M of a turn
at the soak's ~270-message conversations (bench/README.md, "Thirty-second session ... a
remembered turn's web CPU, profiled"). A row's raw message never changes once stored (no code
updates it; a crash's re-store writes the same message under the same id), so what is worked
out from it is kept by its id, and checked against the raw text read: the database stays the
truth, whichever web process stored or deleted what.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from itertools import islice

from memory.text import content_text, count_message, tool_call_ids

# Rows kept per process (~1 KB each): the soak's 200 users' conversations of ~270 messages are
# ~54,000 rows. When full, the oldest half (in order of first sight) is dropped.
SEEN_ROWS = 65_536


def collapsed(message: dict) -> str:
    """A message's text with its whitespace collapsed: what a client echoes back may differ
    from what Engram stored in spacing (stripped, re-wrapped), never in its words."""
    return " ".join(content_text(message.get("content")).split())


def normalized_of(role, text: str) -> str | None:
    """A message as a fingerprint sees it, from its role and collapsed text; None: not counted
    (memory.turn.conversation._normalized)."""
    if role == "tool" or (role == "assistant" and not text):
        return None
    return f"{role}\x1f{text}"


@dataclass(slots=True, frozen=True, eq=False)  # two are equal when they are one (identity)
class Seen:
    """A stored row's message and what a turn works out from it."""

    raw: str  # the row's JSON as read: a row read again is this one only if it is the same
    message: dict  # parsed; shared by every turn that reads the row: copied before it is handed on
    key: tuple | None  # matched_prefix's key of it as a stored message (conversation._key)
    normalized: str | None  # what the fingerprint hashes of it (conversation._normalized)
    calls: tuple  # its tool calls' ids
    counted: int  # count_message(message): its exact share of the assembled request's total


@dataclass(slots=True)
class StoredRow:
    id: str
    seen: Seen
    token_count: int  # as stored (the history's budget counts these)
    incomplete: bool

    @property
    def raw(self) -> dict:
        return self.seen.message


_seen: dict[str, Seen] = {}


def seen(row_id: str, raw: str) -> Seen:
    """What is worked out from the row `row_id` whose JSON is `raw`: kept, or worked out now."""
    found = _seen.get(row_id)
    if found is not None and found.raw == raw:
        return found
    message = json.loads(raw)
    role, text = message.get("role"), collapsed(message)
    calls = tuple(tool_call_ids(message))
    # As matched_prefix keys a stored message: the store's own tool steps left out (a tool
    # result, an assistant message that only calls tools), the store's call ids left out.
    key = None if role == "tool" or (role == "assistant" and calls and not text) else (role, text)
    made = Seen(
        raw=raw,
        message=message,
        key=None if key is None else (*key, None, ()),
        normalized=normalized_of(role, text),
        calls=calls,
        counted=count_message(message),
    )
    if len(_seen) >= SEEN_ROWS:
        for old in list(islice(_seen, SEEN_ROWS // 2)):
            _seen.pop(old, None)
    _seen[row_id] = made
    return made


def forget_all() -> None:
    """Tests: the next read works every row out again."""
    _seen.clear()
