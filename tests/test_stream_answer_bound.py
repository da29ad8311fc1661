"""A stream's whole answer is bounded (completions.streaming.MAX_ANSWER_CHARS), as each of its
events is (test_stream_bounds.py): an upstream streaming small chunks without end grew the text
Engram keeps for memory and the charge until the process ran out of memory. Past the bound the
stream ends with its error frame, the upstream's connection is closed, and the turn is stored
with what the client got."""

from __future__ import annotations

import json
import threading
import time

import pytest

from completions import streaming
from completions.models import UsageRecord
from completions.usage import buffer
from memory.models import Message
from tests.completions_support import wait_for
from tests.test_completions_gateway import BODY, URL
from tests.upstream import Reply, openai_stream

BOUND = 4096  # the bound in these tests: the real one is 64 Mi characters
PIECE = "0123456789abcdefghijklmnopqrstu "  # 32 characters
PIECES = 3000  # ~96,000 characters: "endless" here, then (the gate) nothing until the test ends


@pytest.fixture
def bounded(monkeypatch, settings):
    monkeypatch.setattr(streaming, "MAX_ANSWER_CHARS", BOUND)
    # Not what ends the stream here: without the bound, it is the read timeout's error instead.
    settings.ENGRAM_UPSTREAM_TIMEOUT = 2


def _stored_answer(conversation: str) -> str | None:
    rows = Message.objects.filter(conversation__external_id=conversation, role="assistant")
    deadline = time.monotonic() + 20
    while not rows.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    row = rows.first()
    return row.content if row is not None else None


@pytest.mark.parametrize("usual", [True, False], ids=["usual-chunks", "parsed-chunks"])
def test_an_endless_answer_ends_the_stream_at_the_bound(http, upstream, bounded, usual):
    gate = threading.Event()
    chunks = openai_stream([PIECE] * PIECES)[: PIECES + 1]  # the role chunk and the pieces
    if not usual:  # a quote in each: parsed, not the usual shape's text (Tail.usual's other way)
        chunks = [chunks[0]] + [
            {**chunk, "choices": [{"index": 0, "delta": {"content": PIECE[:-2] + '" '}}]}
            for chunk in chunks[1:]
        ]
    items = [*chunks, "[DONE]"]
    upstream.script(Reply(stream=items, gate=gate, gate_at=len(items) - 1, delay=0.001))
    conversation = f"endless-{usual}"
    headers = {"x-user-id": "endless", "x-conversation-id": conversation}
    try:
        with http.stream("POST", URL, json={**BODY, "stream": True}, headers=headers) as resp:
            assert resp.status_code == 200
            lines = [line for line in resp.iter_lines() if line and not line.startswith(":")]
    finally:
        gate.set()
    assert lines[-1] == "data: [DONE]"
    error = json.loads(lines[-2][6:])["error"]
    assert error["code"] == "upstream_answer_too_long", error
    assert f"{BOUND:,} characters" in error["message"]
    said = "".join(
        choice["delta"].get("content") or ""
        for line in lines[:-2]
        for choice in json.loads(line[6:]).get("choices", ())
    )
    assert BOUND < len(said) <= BOUND + len(PIECE)  # the piece that passed it, and no more
    wait_for(lambda: upstream.disconnects, timeout=5)  # its connection closed, not read on
    buffer.flush()
    record = UsageRecord.objects.get()
    assert record.incomplete and record.error_code == "stream_failed"
    assert _stored_answer(conversation) == said  # the turn stored as far as the client got it
