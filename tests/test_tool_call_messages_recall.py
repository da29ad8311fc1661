"""An agent's assistant message that only calls tools is no past message: it has no words to
show, so it is neither put in a turn's `past_messages` block nor returned by `/v1/search`.

It was, found by the words of the turns around it (a message is indexed with its neighbours):
`/v1/context` showed an empty line `- [date] Assistant: ` and `/v1/search` an item with
`text: ''` at full-text rank 1. Over HTTP: the official client calls an agent whose tool
waits for approval, the resume runs it, the background job indexes the messages, then the
same user's next question recalls that run.
"""

from __future__ import annotations

import re
import time

import pytest
from openai.types.chat import ChatCompletion

from memory import tasks
from memory.models import Message, ProcessingJob
from tests.test_tools import engram, make_agent, make_tool
from tests.upstream import Reply, openai_completion, tool_call

pytestmark = pytest.mark.django_db(transaction=True)

USER = "refunds"
HEADERS = {"x-user-id": USER}


def index_messages() -> None:
    """The user's extraction jobs, run here (the job that indexes a message with its
    neighbours; a turn's is created after its response)."""
    jobs = ProcessingJob.objects.filter(conversation__user_id=USER, kind="extract")
    deadline = time.monotonic() + 10
    while not jobs.filter(status="pending").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    for job in jobs.filter(status="pending").order_by("upto_message_id"):
        tasks.extract(job.id)


@pytest.fixture(params=[None, "\n\n"], ids=["null", "blank"])
def refunded(request, sdk, http, upstream, tool_server, settings) -> Message:
    """The question "Refund order 42" asked of an agent whose tool waits for approval, approved, answered
    and indexed: the stored assistant message that only called the tool."""
    settings.ENGRAM_MEMORY_EXTRACTION = "offline"  # the upstream is scripted for the run only
    agent = make_agent(http, name="support")
    make_tool(http, agent, tool_server.url + "/weather", name="refund_order", approval="always")
    calling = openai_completion(tool_calls=[tool_call("call_1", "refund_order", {"order_id": 42})])
    # content null, as OpenAI sends it, or the blank line some models write before their calls
    calling["choices"][0]["message"]["content"] = request.param
    upstream.script(Reply(json=calling), Reply(json=openai_completion("Done.")))
    paused = sdk.chat.completions.create(
        model=agent,
        messages=[{"role": "user", "content": "Refund order 42"}],
        extra_headers=HEADERS,
    )
    assert paused.choices[0].finish_reason == "tool_calls"
    answer = sdk.post(
        "/chat/resume",
        body={"approval_id": engram(paused)["approval_id"], "decision": "approve"},
        cast_to=ChatCompletion,
        options={"headers": HEADERS},
    )
    assert answer.choices[0].message.content == "Done."
    index_messages()
    [call] = Message.objects.filter(user_id=USER, role="assistant", tool_calls__isnull=False)
    assert not call.content.strip()
    assert "refund" in call.search_text.lower()  # its neighbours' words, in its window
    return call


def test_a_message_that_only_called_tools_is_not_a_past_message_in_the_context(http, refunded):
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Refund order 44"}]}
    response = http.post("/v1/context", json=body, headers=HEADERS)
    assert response.status_code == 200, response.text
    context = response.json()
    [block] = [m["content"] for m in context["messages"] if "<past_messages>" in m["content"]]
    assert "Refund order 42" in block  # what the user said is recalled
    lines = [line for line in block.splitlines() if line.startswith("- [")]
    assert lines and not [line for line in lines if re.search(r"\] [^:]+:\s*$", line)]
    recalled = {m["id"] for m in context["engram"]["messages"]}
    assert refunded.id not in recalled


def test_search_returns_no_message_without_words(http, refunded):
    response = http.post(
        "/v1/search", json={"user_id": USER, "query": "Refund order 44", "types": ["messages"]}
    )
    assert response.status_code == 200, response.text
    items = response.json()["data"]
    assert any(i["text"] == "Refund order 42" for i in items)
    assert refunded.id not in {i["id"] for i in items}
    assert all(i["text"].strip() for i in items)
