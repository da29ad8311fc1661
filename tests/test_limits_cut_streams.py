"""What an answer cut short without the upstream's usage is charged, over HTTP: the prompt's
estimate and every word the model wrote before the cut, tool calls' arguments included."""

from __future__ import annotations

import pytest

from completions import charging, pricing
from completions.models import Price, UsageRecord
from completions.usage import buffer
from config.common import tokens as tokenizer
from tests.test_limits import HI, patch_key, patch_workspace
from tests.upstream import Reply, openai_tool_stream, tool_call

pytestmark = pytest.mark.usefixtures("limiter_awake")
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "save_note",
            "parameters": {"type": "object", "properties": {"text": {"type": "string"}}},
        },
    }
]


def test_a_stream_of_tool_calls_cut_short_is_charged_its_arguments(
    http, operator_http, owner, key_id, upstream
):
    """Only the content was counted: a client that asked for a tool call with long arguments
    and hung up (or an upstream cut) before the usage chunk paid for its prompt alone."""
    Price.objects.create(model="priced-model", input_per_million=1, output_per_million=1)
    pricing.prices_changed()
    patch_workspace(operator_http, owner, {"credit_unit": {"per_usd": 1_000_000}})
    patch_key(operator_http, owner, key_id, {"budget": {"credits": 100_000, "period": "day"}})
    arguments = '{"text": "' + "a long note about many things " * 40 + '"}'
    call = tool_call("call_1", "save_note", arguments)
    # role, the call's two halves, finish: then the upstream goes away before its usage
    upstream.script(
        Reply(stream=openai_tool_stream([call], model="priced-model"), drop_after=4, delay=0.05)
    )
    body = {"model": "priced-model", "messages": HI, "stream": True, "tools": TOOLS}
    with http.stream("POST", "/v1/chat/completions", json=body) as resp:
        received = b"".join(resp.iter_bytes())
    assert b"error" in received  # the upstream went away mid-stream

    buffer.flush()
    record = UsageRecord.objects.get(workspace=owner[0])
    assert record.incomplete
    written = tokenizer.count("save_note") + tokenizer.count(arguments)
    assert written > 200
    assert record.credits == charging.prompt_tokens({"messages": HI}) + written
