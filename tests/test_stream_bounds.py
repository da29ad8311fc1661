"""One server-sent event's bound (completions.providers.wire.MAX_EVENT_BYTES): an upstream that
sends one endless event fails its stream there (a 502 before the first byte, the error frame
after it), its connection closed, instead of growing the process's memory without end."""

from __future__ import annotations

import json
import threading

import pytest

from completions.models import UsageRecord
from completions.providers import wire
from completions.usage import buffer
from tests.completions_support import wait_for
from tests.test_completions_gateway import BODY, URL
from tests.upstream import Reply, anthropic_stream, openai_stream

BOUND = 64 << 10  # the bound in these tests: the real one is 32 MiB
# (`delay` below: the upstream looks for Engram's hang-up between its items)
PIECE = b"y" * (16 << 10)
# An event begun and never ended: ten pieces of 16 KiB past a bound of 64 KiB, then (the gate)
# nothing more until the test is over: the old parser waited on, growing.
ENDLESS = [b'data: {"choices": [{"index": 0, "delta": {"content": "', *[PIECE] * 10]


@pytest.fixture
def bounded(monkeypatch, settings):
    monkeypatch.setattr(wire, "MAX_EVENT_BYTES", BOUND)
    # Not what ends the stream here: without the bound, it is the read timeout's error instead.
    settings.ENGRAM_UPSTREAM_TIMEOUT = 2


def _frames(resp) -> list[str]:
    return [line for line in resp.iter_lines() if line and not line.startswith(":")]


def test_the_sse_parser_refuses_an_event_past_its_bound(bounded):
    parser = wire.SseParser()
    assert parser.feed(b"data: " + b"x" * (BOUND - 100)) == []
    with pytest.raises(wire.StreamFailed) as failed:
        parser.feed(b"x" * 200)
    assert failed.value.error["code"] == "upstream_event_too_large"
    assert wire.SseParser().feed(b"data: " + b"x" * (BOUND - 100) + b"\n\n")  # whole: read


def test_an_endless_event_mid_stream_ends_it_with_its_error_frame(http, upstream, bounded):
    gate = threading.Event()
    before = openai_stream(["Hel"])[:2]  # the role chunk and a word, then the endless event
    items = [*before, *ENDLESS, "[DONE]"]
    upstream.script(Reply(stream=items, gate=gate, gate_at=len(items) - 1, delay=0.01))
    try:
        with http.stream("POST", URL, json={**BODY, "stream": True}) as resp:
            assert resp.status_code == 200
            lines = _frames(resp)
    finally:
        gate.set()
    assert lines[-1] == "data: [DONE]"
    error = json.loads(lines[-2][6:])["error"]
    assert error["code"] == "upstream_event_too_large" and "MiB" in error["message"]
    assert any("Hel" in line for line in lines)
    wait_for(lambda: upstream.disconnects, timeout=5)  # its connection closed, not pooled
    buffer.flush()
    record = UsageRecord.objects.get()
    assert record.incomplete and record.error_code == "stream_failed"


@pytest.mark.parametrize("model", ["gpt-4o-mini", "claude-3-5-sonnet"])
def test_an_endless_first_event_is_a_502_before_the_stream(http, upstream, bounded, model):
    gate = threading.Event()
    if model.startswith("claude"):
        start = anthropic_stream([])[:1]  # message_start: before the answer
        endless = [b"event: content_block_delta\n", *ENDLESS]
    else:
        start, endless = [], ENDLESS
    items = [*start, *endless, "[DONE]"]
    upstream.script(Reply(stream=items, gate=gate, gate_at=len(items) - 1, delay=0.01))
    try:
        resp = http.post(URL, json={**BODY, "model": model, "stream": True})
    finally:
        gate.set()
    assert resp.status_code == 502, resp.text
    error = resp.json()["error"]
    assert error["type"] == "upstream_error" and "MiB" in error["message"]
    wait_for(lambda: upstream.disconnects, timeout=5)
