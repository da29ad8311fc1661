"""The bytes of an upstream's answer: server-sent events parsed as they come, JSON read and
written (orjson, the standard library where orjson refuses)."""

from __future__ import annotations

import json
from typing import Any

import orjson

from completions.providers.upstream_errors import bad_reply

# Single bytes looked for as integers: on Python 3.11 `b"\r" in data` first tries the needle
# as an integer, raising and clearing a formatted TypeError (~2,400 instructions a test against
# ~150 for `13 in data`); `find` and `startswith` parse their arguments from a format string
# (~1,000 and ~450). Two `in` tests, two finds and two startswith were ~8,000 instructions of a
# relayed frame's ~74,000 (bench_relay_cpu.py --callgrind).
CR, LF = 13, 10

# The most one server-sent event may hold before the stream is failed. Unbounded, an upstream
# that sends one endless event (a proxy's bug, a hostile endpoint a workspace configured) grew
# the process's memory until it was killed, with every stream it relayed. The largest event a
# legitimate upstream sends is one delta holding a whole image as a base64 data URL
# (OpenRouter's image models: a 4096x4096 PNG is ~20 MB of base64) or a large tool call's
# arguments; 32 MiB leaves more than that's room, and bounds a stream's buffer.
MAX_EVENT_BYTES = 32 << 20

# A UTF-8 byte order mark: one at the very start of a stream is not part of it (WHATWG's
# event-stream parsing). Read as the first line's, it made the first event's `data:` line an
# unknown field, and that event was dropped without a word.
BOM = b"\xef\xbb\xbf"


class StreamFailed(Exception):
    """The stream broke after the first byte; `error` is the envelope's inner object."""

    def __init__(self, message: str, *, type: str = "upstream_error", code: str | None = None):  # noqa: A002
        super().__init__(message)
        self.error = {"message": message, "type": type, "param": None, "code": code}


def event_too_large() -> StreamFailed:
    return StreamFailed(
        f"The upstream provider sent a stream event over {MAX_EVENT_BYTES >> 20} MiB.",
        code="upstream_event_too_large",
    )


class SseParser:
    """Server-sent events from the bytes of a stream as they come: (event name, data) per
    event; comments, ids and `retry` skipped; CRLF line ends read as LF. It works on whole
    events with bytes operations: an upstream's usual read (one event: one `data:` line, then a
    blank line) costs one `find` and one slice. An event cut across reads waits for the rest in
    `pending`, grown in place and searched only where it grew: joined to each read and searched
    from its start, an event of 8 MB in 64 KB reads (an image or audio in one delta) took 2 s of
    the event loop, one of 32 MB a minute, every other stream of the process stalled meanwhile.
    An event past MAX_EVENT_BYTES raises StreamFailed (`event_too_large`)."""

    def __init__(self) -> None:
        # The event begun, its CRLFs read as LF but a CR that ended the last read (its LF may
        # come with the next).
        self.pending = bytearray()
        # The stream's first bytes while they may still be a BOM (split across reads); None
        # once past them.
        self.head: bytes | None = b""

    def feed(self, data: bytes) -> list[tuple[str | None, bytes]]:
        if self.head is not None:
            data = self.head + data
            if len(data) < len(BOM) and BOM.startswith(data):
                self.head = data
                return []
            self.head = None
            if data[: len(BOM)] == BOM:  # only there: a BOM later is the data's
                data = data[len(BOM) :]
        pending = self.pending
        if not pending and data[-2:] == b"\n\n" and data[:6] == b"data: ":
            # The usual read, one event of one data line (no line end inside): what the
            # search below gives, without it (a relayed frame ~1,000 instructions fewer).
            value = data[6:-2]
            if LF not in value and CR not in value:
                return [(None, value)]
        carried = b""
        if CR in data or (pending and pending[-1] == CR):
            if pending and pending[-1] == CR:
                del pending[-1]
                data = b"\r" + data
            if data[-1:] == b"\r":  # its LF may come with the next read
                data, carried = data[:-1], b"\r"
            data = data.replace(b"\r\n", b"\n")
        # What was searched before has no blank line: only its last byte may start one.
        search = len(pending) - 1 if pending else 0
        buffer: bytes | bytearray = data
        if pending:
            pending += data
            buffer = pending
        events: list[tuple[str | None, bytes]] = []
        start = 0
        size = len(buffer)
        end = buffer.find(b"\n\n", search) if size else -1
        while end != -1:
            block = bytes(buffer[start:end])
            start = end + 2
            if block[:5] == b"data:" and LF not in block:
                events.append((None, block[6:] if block[5:6] == b" " else block[5:]))
            else:
                event = _event(block)
                if event is not None:
                    events.append(event)
            # The read ended with that event (the usual case): no second search.
            end = buffer.find(b"\n\n", start) if start < size else -1
        if buffer is pending:
            if start:
                del pending[:start]
        elif start < size:
            pending += memoryview(data)[start:]
        pending += carried
        if len(pending) > MAX_EVENT_BYTES and not events:  # those before it go out first:
            raise event_too_large()  # the next read, which only adds to it, raises
        return events

    def end(self) -> list[tuple[str | None, bytes]]:
        """The event the stream ended in without its blank line, if it had data."""
        if len(self.pending) > MAX_EVENT_BYTES:
            raise event_too_large()
        block, self.pending = bytes(self.pending), bytearray()
        event = _event(block.rstrip(b"\r"))
        return [event] if event is not None else []


def _event(block: bytes) -> tuple[str | None, bytes] | None:
    """One event's lines (no blank line among them, but at its edges): None without data."""
    name: str | None = None
    data: list[bytes] = []
    for line in block.split(b"\n"):
        if line.startswith(b"data:"):
            value = line[5:]
            data.append(value[1:] if value.startswith(b" ") else value)
        elif line.startswith(b"event:"):
            name = line[6:].strip().decode()
    return (name, b"\n".join(data)) if data else None


def dumps(data: Any) -> bytes:
    """Compact JSON in UTF-8: the answers Engram writes and the requests it sends upstream (these
    were the stdlib's, ~10 µs each). orjson writes the same bytes as the stdlib's compact form,
    ~20x faster (a completion with its `engram` object: 0.5 against 10.2 µs here); what it refuses
    (a lone surrogate, an integer past 64 bits, a non-string key) the stdlib writes as before.
    NaN, which the stdlib wrote as the invalid `NaN`, is written `null`."""
    try:
        return orjson.dumps(data)
    except TypeError:  # orjson.JSONEncodeError is one
        return json.dumps(data, separators=(",", ":")).encode()  # escaped: valid UTF-8


def loads(raw: bytes) -> Any:
    """JSON from an upstream: orjson first (a streamed chunk: 1.0 against 4.7 µs for the
    stdlib), the stdlib for what orjson refuses (an integer past 64 bits, NaN, a lone
    surrogate, UTF-16) as before. ValueError (or UnicodeDecodeError) when neither reads it."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return json.loads(raw)


def loads_json(raw: bytes) -> dict:
    """An upstream's JSON object (`loads`), or ApiError."""
    try:
        data = loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise bad_reply("The upstream provider sent malformed JSON.") from None
    if not isinstance(data, dict):
        raise bad_reply()
    return data
