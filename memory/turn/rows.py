"""A conversation's stored rows as a turn reads them, and the one costly thing worked out from
each row kept per process: its exact token count.

Every remembered turn reads its conversation's newest rows (up to HISTORY_ROWS) and, per row,
parsed its JSON, normalized its text twice (matched_prefix's key, the fingerprint's) and counted
its tokens for the assembly's exact total: ~0.08M instructions a stored message, 22M of a turn
at the soak's ~270-message conversations (bench/README.md, "Thirty-second session ... a
remembered turn's web CPU, profiled"). Of a row's Python, the count is ~85 % (tiktoken, 20.7
µs a row against 3.1 µs to parse its JSON and 0.7 µs to collapse its text, a loaded machine):
now each row is parsed and normalized once a turn, and its count kept by (id, raw text), so a
row whose text changed under its id is counted again and the database stays the truth,
whichever web process stored or deleted what. Only the count is kept: the whole of a row
(~850 bytes: its JSON, parsed message, key and normalized text) kept for the soak's ~54,000
rows grew each web process's RSS by ~70 MB over ten minutes (+11 % by t=310 s), past the
soak's 10 % bound; a count is ~100 bytes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from itertools import islice

from memory.text import content_text, count_message, tool_call_ids

# Counts kept per process (~100 bytes each, ~6.5 MB full): the soak's 200 users' conversations
# of ~270 messages are ~54,000 rows. When full, the oldest half (in order of first sight) is
# dropped.
COUNTED_ROWS = 65_536


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


# Not frozen: a frozen dataclass's __init__ sets each field through object.__setattr__, ~1.2 of
# a row's ~6 us (cProfile, 10,000 rows); one is made a row a turn and never changed after.
@dataclass(slots=True, eq=False)
class Seen:
    """A stored row's message and what a turn works out from it."""

    tag: int  # hash((id, raw)): the row as read (its id and JSON text)
    message: dict  # parsed, this turn's own
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


# hash((row id, raw text)) -> count_message of it. A 64-bit hash: two rows' tags collide with a
# chance of ~1e-10 among the soak's 54,000 rows, and then a history's token total is off by
# one message's count (and a fingerprint prefix, conversation._rows_fingerprint, may be
# taken for another: chance ~2**-64 a turn).
_counted: dict[int, int] = {}


def seen(row_id: str, raw: str) -> Seen:
    """What is worked out from the row `row_id` whose JSON is `raw`; its count kept."""
    message = json.loads(raw)
    role, text = message.get("role"), collapsed(message)
    # As matched_prefix keys a stored message: the store's own tool steps left out (a tool
    # result, an assistant message that only calls tools), the store's call ids left out.
    calls = tuple(tool_call_ids(message))
    key = None if role == "tool" or (role == "assistant" and calls and not text) else (role, text)
    tag = hash((row_id, raw))
    counted = _counted.get(tag)
    if counted is None:
        counted = count_message(message)
        if len(_counted) >= COUNTED_ROWS:
            for old in list(islice(_counted, COUNTED_ROWS // 2)):
                _counted.pop(old, None)
        _counted[tag] = counted
    return Seen(
        tag=tag,
        message=message,
        key=None if key is None else (*key, None, ()),
        normalized=normalized_of(role, text),
        calls=calls,
        counted=counted,
    )
