"""A resume sent again (an SDK's retry after its read timed out, or a duplicate click): 409
`run_in_progress` while the first still runs (which the SDKs retry, with when to come back),
and an SDK's retry once it answered gets that answer, nothing run or charged again. It was
410 "already approved" either way, which the SDKs do not retry: the client never had the
answer its approval made. A different decision, or the same one sent again by hand after the
answer, stays 410."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from completions.tools.models import Execution
from tests.completions_support import wait_for
from tests.test_errors import assert_envelope
from tests.test_tools import ask, engram, make_agent, make_tool, sse
from tests.upstream import Reply, openai_completion, tool_call

RETRY = {"x-stainless-retry-count": "1"}


@pytest.mark.parametrize("stream", [False, True])
def test_a_resume_sent_again_is_409_while_it_runs_then_gets_its_answer(
    sdk, http, upstream, tool_server, stream
):
    agent = make_agent(http)
    make_tool(http, agent, tool_server.url + "/hold", approval="always")
    upstream.script(
        Reply(json=openai_completion(tool_calls=[tool_call("call_1", "weather", {"c": "x"})])),
        Reply(json=openai_completion("It is sunny.")),
    )
    paused = engram(ask(sdk, agent))
    body = {"approval_id": paused["approval_id"], "decision": "approve"}

    with ThreadPoolExecutor(1) as pool:
        try:
            first = pool.submit(http.post, "/v1/chat/resume", json=body)
            wait_for(lambda: len(tool_server.calls) == 1)  # the approved call in flight
            running = http.post("/v1/chat/resume", json=body, headers=RETRY)
            error = assert_envelope(running, 409, code="run_in_progress")
            assert paused["execution_id"] in error["message"]
            assert running.headers["x-should-retry"] == "true" and running.headers["retry-after"]
            rejected = http.post("/v1/chat/resume", json={**body, "decision": "reject"})
            assert_envelope(rejected, 410, code="approval_used")  # the other decision lost
        finally:
            tool_server.release.set()
        answered = first.result()
    assert answered.status_code == 200, answered.text
    assert answered.json()["choices"][0]["message"]["content"] == "It is sunny."

    if stream:
        with http.stream(
            "POST", "/v1/chat/resume", json={**body, "stream": True}, headers=RETRY
        ) as resp:
            assert resp.status_code == 200
            events = sse(resp)
        assert events[-1] == "[DONE]"
        text = "".join(ch["delta"].get("content") or "" for e in events[:-1] for ch in e["choices"])
        marks = next(e["engram"] for e in reversed(events[:-1]) if "engram" in e)
    else:
        again = http.post("/v1/chat/resume", json=body, headers=RETRY)
        assert again.status_code == 200, again.text
        text, marks = again.json()["choices"][0]["message"]["content"], again.json()["engram"]
        assert again.json()["usage"] == answered.json()["usage"]
    assert text == "It is sunny."
    assert marks["replayed"] is True and marks["execution_id"] == paused["execution_id"]
    assert len(tool_server.calls) == 1 and len(upstream.chat_requests()) == 2
    assert Execution.objects.get(id=paused["execution_id"]).status == "completed"
    # Sent again by hand (no retry count): the approval is used, as before.
    assert_envelope(http.post("/v1/chat/resume", json=body), 410, code="approval_used")


@pytest.mark.parametrize("decision", ["approve", "reject"])
def test_a_resume_of_a_run_whose_agent_was_deleted_is_404_and_calls_nothing(
    sdk, http, upstream, tool_server, decision
):
    """It went on as the deleted agent: the model called and the workspace charged, an answer
    naming an agent a chat call of which is 404."""
    agent = make_agent(http)
    make_tool(http, agent, tool_server.url + "/weather", approval="always")
    upstream.script(
        Reply(json=openai_completion(tool_calls=[tool_call("call_1", "weather", {"c": "x"})])),
        Reply(json=openai_completion("It is sunny.")),
    )
    paused = engram(ask(sdk, agent))
    assert http.delete(f"/v1/agents/{agent}").status_code == 200

    body = {"approval_id": paused["approval_id"], "decision": decision}
    error = assert_envelope(http.post("/v1/chat/resume", json=body), 404, code="agent_not_found")

    assert error["param"] == "approval_id" and agent in error["message"]
    assert len(upstream.chat_requests()) == 1 and tool_server.calls == []
    assert Execution.objects.get(id=paused["execution_id"]).status != "completed"


def test_deleting_an_agent_ends_its_pending_approvals_and_their_runs(
    sdk, http, upstream, tool_server
):
    """Left `pending` until they expired, they were a human's queue of calls no resume could
    approve any more (404 agent_not_found): the list showed what was not so."""
    agent = make_agent(http)
    make_tool(http, agent, tool_server.url + "/weather", approval="always")
    other = make_agent(http, name="other-agent")
    make_tool(http, other, tool_server.url + "/weather", approval="always")
    calls = [tool_call("call_1", "weather", {"c": "x"})]
    upstream.script(
        Reply(json=openai_completion(tool_calls=calls)),
        Reply(json=openai_completion(tool_calls=calls)),
    )
    paused, kept = engram(ask(sdk, agent)), engram(ask(sdk, other))
    assert http.delete(f"/v1/agents/{agent}").status_code == 200

    pending = http.get("/v1/approvals", params={"status": "pending"}).json()["data"]
    assert [a["id"] for a in pending] == [kept["approval_id"]]  # the other agent's stays
    ended = http.get("/v1/approvals", params={"status": "expired"}).json()["data"]
    assert [a["id"] for a in ended] == [paused["approval_id"]]
    assert ended[0]["reason"] == "agent deleted: rejected" and ended[0]["decided_at"]
    run = http.get(f"/v1/executions/{paused['execution_id']}").json()
    assert run["status"] == "failed"
    # its resume is still refused as the deleted agent's, not as an expired approval
    body = {"approval_id": paused["approval_id"], "decision": "approve"}
    assert_envelope(http.post("/v1/chat/resume", json=body), 404, code="agent_not_found")
    assert tool_server.calls == []
