"""How messages and memories read: their text, how they are indexed, and their token counts.

Indexed text carries the date and the speaker ("[8 May 2023] Caroline: ..."): questions name
people and times, and dropping either costs retrieval a lot (see the memory-quality issue).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import unicodedata
from collections.abc import Callable

import numpy as np
from django.utils import timezone

from config.common import tokens
from config.common.text import shorten

# A conservative price for an image part (OpenAI bills 85-1105 tokens per image by detail).
IMAGE_TOKENS = 765
# An `input_audio` part: OpenAI bills audio input at about 1 token per 100 ms of sound (its
# gpt-4o audio models' pricing notes); the duration is read from the decoded size at the lowest
# bitrate of its format, so a recording is never counted shorter than it can be.
AUDIO_TOKENS_PER_SECOND = 10
# wav: 16-bit mono PCM at 8 kHz (telephone speech, the lowest rate speech is recorded at);
# mp3: 32 kbit/s (MPEG-1 Layer III's lowest). OpenAI takes only these two; another format
# counts as mp3, the fewer bytes a second.
AUDIO_BYTES_PER_SECOND = {"wav": 16_000, "mp3": 4_000}
# A `file` part (a PDF for OpenAI, which puts each page's extracted text and an image of the
# page in the context): counted as text of its decoded size, about 4 bytes a cl100k token of
# English. Compact text PDFs hold more per byte, scans far less (over-counted: history makes
# room for them); the size is all Engram knows without parsing the document.
FILE_BYTES_PER_TOKEN = 4
# A file known only by its `file_id` (uploaded to the provider, its size unknown here): an
# allowance of about ten PDF pages (~800 tokens of text and IMAGE_TOKENS of image each).
FILE_ID_TOKENS = 16_000
# Per-message framing in OpenAI's chat format, and the reply's priming.
MESSAGE_OVERHEAD = 3
REPLY_PRIMING = 3


def content_text(content) -> str:
    """The text of a message's content: a string, or the text of its parts (images dropped)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                texts.append(part["text"])
            elif isinstance(part, str):
                texts.append(part)
        return "\n".join(texts)
    return str(content)


def image_parts(content) -> int:
    if not isinstance(content, list):
        return 0
    return sum(
        1
        for p in content
        if isinstance(p, dict) and p.get("type") in ("image_url", "input_image", "image")
    )


def _decoded_size(data) -> int:
    """Bytes that base64 `data` (or a data URL's) decodes to, without decoding it."""
    if not isinstance(data, str):
        return 0
    start = data.find(",") + 1 if data.startswith("data:") else 0
    end = len(data)  # indices, not slices: the data may be megabytes
    while end > start and data[end - 1] in "=\r\n\t ":
        end -= 1
    return (end - start) * 3 // 4


def _audio_tokens(audio) -> int:
    if not isinstance(audio, dict):
        return 0
    rate = AUDIO_BYTES_PER_SECOND.get(str(audio.get("format")), AUDIO_BYTES_PER_SECOND["mp3"])
    return math.ceil(_decoded_size(audio.get("data")) * AUDIO_TOKENS_PER_SECOND / rate)


def _file_tokens(file) -> int:
    if not isinstance(file, dict):
        return 0
    if isinstance(file.get("file_data"), str):
        return math.ceil(_decoded_size(file["file_data"]) / FILE_BYTES_PER_TOKEN)
    return FILE_ID_TOKENS if file.get("file_id") else 0


def estimated_parts_tokens(content) -> int:
    """Tokens of a content's parts that have no text to count: images, audio and files, each
    at the estimate above (0 for a string)."""
    if not isinstance(content, list):
        return 0
    tokens = IMAGE_TOKENS * image_parts(content)
    for part in content:
        if isinstance(part, dict) and part.get("type") == "input_audio":
            tokens += _audio_tokens(part.get("input_audio"))
        elif isinstance(part, dict) and part.get("type") == "file":
            tokens += _file_tokens(part.get("file"))
    return tokens


def day_label(when: dt.date | dt.datetime | None) -> str:
    """'8 May 2023': unambiguous, and matches how people ask about dates."""
    if when is None:
        return ""
    return f"{when.day} {when:%B %Y}"


def speaker(role: str, name: str = "") -> str:
    if name:
        return name
    return {"user": "User", "assistant": "Assistant"}.get(role, role.capitalize())


# A conversation's title: its first user message's words, this long (memory.background.titles
# makes it; memory.services.conversations tells a title so made from an operator's).
TITLE_CHARS = 60


def title_from(text: str) -> str:
    return shorten(text, TITLE_CHARS)


# How much of one text full-text search indexes. PostgreSQL refuses a tsvector whose lexemes
# pass 1 MB ("string is too long for tsvector"), and the generated `search` column failed the
# row's insert: a pasted log or document (~900,000 characters of distinct words, ~240,000 of
# CJK joined by hyphens, ~5.7 bytes of lexemes each) made the chat turn or the import storing
# it a 503, and every retry failed alike. A message's window holds five texts
# (message_window_text): 5 x 20,000 characters stay under 600 KB at that worst ratio. The
# embedder reads the first 256 tokens, far fewer; the message itself is stored whole.
INDEXED_CHARS = 20_000


def nfc(text: str) -> str:
    """`text` in Unicode's composed form (NFC): how Engram stores a memory's text and compares,
    indexes and searches any text. "café" typed with a combining accent (NFD: macOS, some
    keyboards and PDF extractors) is another string to PostgreSQL's parser, to equality and to
    a digest: it found no memory saying "café" (NFC), nor matched it as the same fact."""
    return text if text.isascii() else unicodedata.normalize("NFC", text)


def indexed(text: str) -> str:
    """The part of `text` full-text search indexes (INDEXED_CHARS), composed (nfc) as the
    query's words are (memory.retrieval.terms)."""
    return nfc(text[:INDEXED_CHARS])


def message_search_text(*, role: str, name: str, content: str, created_at: dt.datetime) -> str:
    return f"[{day_label(created_at)}] {speaker(role, name)}: {indexed(content)}"


WINDOW_BEFORE, WINDOW_AFTER = 2, 2


def message_window_text(messages: list, index: int) -> str:
    """What a past message is found by in full-text search: it and its neighbours that day.

    An answer rarely repeats the words of the question that prompted it; indexing each turn with
    the two before and after it finds it anyway (+10 points of LoCoMo recall@10, issue 6).
    `messages` are one conversation's, in order; each needs role, name, content, created_at.
    """
    center = messages[index]
    day = center.created_at.date()
    lo, hi = max(0, index - WINDOW_BEFORE), min(len(messages), index + WINDOW_AFTER + 1)
    lines = [
        f"{speaker(m.role, m.name)}: {indexed(m.content)}"
        for m in messages[lo:hi]
        if m.created_at.date() == day and m.content
    ]
    return f"[{day_label(center.created_at)}] " + "\n".join(lines)


NEIGHBOUR_WEIGHT = 0.5


def context_vector(messages: list, index: int) -> list[float] | None:
    """What a past message is found by in vector search: it, blended with its neighbours.

    The dense twin of message_window_text: normalize(e + normalize(e + w*prev + w*next)) over
    the turns just before and after it that day, so a terse answer is near the question it
    answers. Measured on LoCoMo (issue 6): recall@10 +0.7 over the message's own vector, steady
    for neighbour weights 0.3-1.0. `messages` need created_at and embedding.
    """
    center = messages[index]
    if center.embedding is None:
        return None
    own = _unit(np.asarray(center.embedding, dtype=np.float32))
    day = center.created_at.date()
    around = own.copy()
    for j in (index - 1, index + 1):
        if 0 <= j < len(messages):
            other = messages[j]
            if other.embedding is not None and other.created_at.date() == day:
                around += NEIGHBOUR_WEIGHT * _unit(np.asarray(other.embedding, dtype=np.float32))
    return _unit(own + _unit(around)).tolist()


def _unit(vector: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm else vector


def memory_date(memory) -> dt.date:
    """When a memory happened, else when it was learned."""
    return memory.event_date or memory_learned_on(memory)


def memory_learned_on(memory) -> dt.date:
    """The day of the messages a memory came from (its metadata's `learned_on`), else of its
    creation. The metadata is the client's too: a `learned_on` there that is no ISO date ("soon",
    5) is not Engram's and is passed over (it made adding or editing the memory a 500)."""
    learned = (memory.metadata or {}).get("learned_on")
    if isinstance(learned, str):
        try:
            return dt.date.fromisoformat(learned)
        except ValueError:
            pass
    return (memory.created_at or timezone.now()).date()


def memory_search_text(*, text: str, when: dt.date | dt.datetime | None) -> str:
    return f"[{day_label(when)}] {indexed(text)}" if when else indexed(text)


# --- tokens --------------------------------------------------------------------------------------


count_text = tokens.count


def tool_call_ids(message: dict) -> list:
    """The ids of a stored message's tool calls, in order. The door checks them now; a row
    stored before it did may hold anything there (`"tool_calls": true`), which must not fail
    every later turn of its conversation."""
    calls = message.get("tool_calls")
    if not isinstance(calls, list):
        return []
    return [call.get("id") for call in calls if isinstance(call, dict)]


def kept_reasoning(message: dict) -> dict:
    """What of an answer's reasoning is stored with it: the signed thinking before its tool
    calls (Anthropic's, as `reasoning_details`), required back with their results, so history
    served from the store carries it. Not a finished answer's: its thinking is not asked for
    again, and some upstreams refuse a message field they do not know. One rule for every
    door that stores an answer (the turn, an agent's tool run)."""
    details = message.get("reasoning_details")
    if message.get("tool_calls") and isinstance(details, list):
        return {"reasoning_details": details}
    return {}


# The text fields of a `reasoning_details` entry (OpenRouter's convention): a stream sends them
# in pieces, and every one goes back upstream with the message (Anthropic's signature and
# redacted data too).
REASONING_DETAIL_TEXT = ("text", "summary", "data", "signature")


def reasoning_text(message: dict) -> str:
    """The text of a message's `reasoning_details`, as sent back upstream."""
    details = message.get("reasoning_details")
    return "\n".join(
        detail[name]
        for detail in (details if isinstance(details, list) else ())
        if isinstance(detail, dict)
        for name in REASONING_DETAIL_TEXT
        if isinstance(detail.get(name), str)
    )


def count_message(
    message: dict, *, estimated: bool = True, counter: Callable[[str], int] = count_text
) -> int:
    """Tokens one chat message costs in a request (content, name, tool calls, the reasoning
    details it carries back, framing). `estimated=False` leaves out the parts only estimated
    (images, audio, files): a floor of what the upstream counts, not a ceiling. `counter`
    counts a text (utf8_bytes: a bound that costs no tokenizing)."""
    tokens = MESSAGE_OVERHEAD + counter(str(message.get("role", "")))
    content = message.get("content")
    tokens += counter(content_text(content))
    if estimated:
        tokens += estimated_parts_tokens(content)
    if message.get("name"):
        tokens += 1 + counter(str(message["name"]))
    if message.get("tool_calls"):
        tokens += counter(json.dumps(message["tool_calls"], separators=(",", ":")))
    if message.get("function_call"):
        tokens += counter(json.dumps(message["function_call"], separators=(",", ":")))
    if message.get("tool_call_id"):
        tokens += counter(str(message["tool_call_id"]))
    if message.get("reasoning_details"):
        tokens += counter(reasoning_text(message))
    if message.get("refusal"):  # a model's refusal, stored as its answer and sent back
        tokens += counter(str(message["refusal"]))
    return tokens


def count_messages(
    messages: list[dict], *, estimated: bool = True, counter: Callable[[str], int] = count_text
) -> int:
    if not messages:
        return 0
    total = sum(count_message(m, estimated=estimated, counter=counter) for m in messages)
    return total + REPLY_PRIMING


def utf8_bytes(text: str) -> int:
    """At least cl100k's count of `text` (each of its tokens is a byte of UTF-8 or more),
    without tokenizing it: ASCII's length is known at once."""
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def utf8_bytes_of_messages(messages: list[dict]) -> int:
    """count_messages(messages, estimated=False, counter=utf8_bytes), the common message (a
    role and a text, nothing else) counted in line: every request is bounded by it (request
    window checks), and its calls per message (count_message, content_text, utf8_bytes twice)
    cost ~7,000 instructions (callgrind), in line ~1,000."""
    if not messages:
        return 0
    total = REPLY_PRIMING
    for message in messages:
        role, content = message.get("role"), message.get("content")
        if type(role) is str and type(content) is str and len(message) == 2:  # those two only
            total += MESSAGE_OVERHEAD + (len(role) if role.isascii() else utf8_bytes(role))
            total += len(content) if content.isascii() else utf8_bytes(content)
        else:
            total += count_message(message, estimated=False, counter=utf8_bytes)
    return total
