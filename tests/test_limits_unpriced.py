"""A model without a price under a budget, over HTTP with the official client: refused before
the upstream call with a 400 that names the model and says how to price it; served as before
where no budget applies, and once an operator prices it (0 included). Agents' tool runs and
their resumes are admitted the same way."""

from __future__ import annotations

import openai
import pytest

from completions import pricing
from completions.models import Price
from completions.tools.models import Approval
from tests.test_errors import assert_envelope
from tests.test_limits import HI, patch_key, patch_workspace
from tests.test_tools import engram, make_tool
from tests.upstream import Reply, openai_completion, tool_call

UNKNOWN = "gpt-9-ultra"  # any name the OpenAI-compatible upstream takes; no price row
pytestmark = pytest.mark.usefixtures("limiter_awake")


def _refused_unpriced(info: pytest.ExceptionInfo) -> None:
    error = info.value
    assert error.status_code == 400 and error.code == "model_not_priced"
    assert error.body["param"] == "model" and error.body["type"] == "invalid_request_error"
    assert UNKNOWN in error.message and "price" in error.message.lower()


@pytest.mark.parametrize(
    "subject",
    ["workspace", "key", "end user"],
)
def test_an_unpriced_model_under_a_budget_is_refused_before_the_upstream_call(
    sdk, operator_http, owner, key_id, upstream, subject
):
    """It cost 0: any model name the upstream takes was a free ride round every budget."""
    budget = {"credits": 5, "period": "day"}
    if subject == "workspace":
        patch_workspace(operator_http, owner, {"budget": budget})
    elif subject == "key":
        patch_key(operator_http, owner, key_id, {"budget": budget})
    else:
        patch_workspace(operator_http, owner, {"end_user_budget": budget})
    headers = {"x-user-id": "ana"}

    with pytest.raises(openai.BadRequestError) as info:
        sdk.chat.completions.create(model=UNKNOWN, messages=HI, extra_headers=headers)
    _refused_unpriced(info)
    assert upstream.chat_requests() == []
    with pytest.raises(openai.BadRequestError) as streamed:  # a stream: refused before it starts
        sdk.chat.completions.create(model=UNKNOWN, messages=HI, stream=True, extra_headers=headers)
    _refused_unpriced(streamed)
    assert upstream.chat_requests() == []

    # Priced by the operator, at 0 for a model free to run: served under the budget.
    Price.objects.create(model=UNKNOWN, input_per_million=0, output_per_million=0)
    pricing.prices_changed()
    answer = sdk.chat.completions.create(model=UNKNOWN, messages=HI, extra_headers=headers)
    assert answer.model_extra["engram"]["credits_charged"] == 0


def test_an_unpriced_model_without_a_budget_is_served_as_before(
    sdk, http, operator_http, owner, key_id, upstream
):
    """Rates alone (and no limit at all) do not need a price: served, 0 credits."""
    assert (
        sdk.chat.completions.create(model=UNKNOWN, messages=HI).model_extra["engram"][
            "credits_charged"
        ]
        == 0
    )
    patch_key(operator_http, owner, key_id, {"limits": {"rpm": 100, "tpm": 100_000}})
    answer = sdk.chat.completions.with_raw_response.create(model=UNKNOWN, messages=HI)
    assert answer.headers["x-ratelimit-limit-requests"] == "100"
    assert len(upstream.chat_requests()) == 2
    # The envelope, as any client sees it, once a budget applies.
    patch_key(operator_http, owner, key_id, {"budget": {"credits": 5, "period": "day"}})
    resp = http.post("/v1/chat/completions", json={"model": UNKNOWN, "messages": HI})
    assert assert_envelope(resp, 400, code="model_not_priced")["param"] == "model"


def _unpriced_agent(http) -> str:
    resp = http.post("/v1/agents", json={"name": "ultra", "model": UNKNOWN})
    assert resp.status_code == 201, resp.text
    return resp.json()["id"]


def test_an_agents_tool_run_on_an_unpriced_model_is_refused_under_a_budget(
    sdk, http, operator_http, owner, upstream, tool_server
):
    agent = _unpriced_agent(http)
    make_tool(http, agent, tool_server.url + "/weather")
    patch_workspace(operator_http, owner, {"budget": {"credits": 5, "period": "none"}})
    calls = [tool_call(f"call_{i}", "weather", {"city": "Paris"}) for i in range(3)]
    upstream.script(*(Reply(json=openai_completion(tool_calls=[c])) for c in calls))

    with pytest.raises(openai.BadRequestError) as info:
        sdk.chat.completions.create(model=agent, messages=HI)
    _refused_unpriced(info)
    assert upstream.chat_requests() == [] and tool_server.calls == []


def test_a_resume_of_an_unpriced_agent_is_refused_under_a_budget_and_stays_pending(
    sdk, http, operator_http, owner, key_id, upstream, tool_server
):
    """Paused before the budget was set: its resume is admitted as a chat completion is."""
    agent = _unpriced_agent(http)
    make_tool(http, agent, tool_server.url + "/weather", approval="always")
    upstream.script(
        Reply(json=openai_completion(tool_calls=[tool_call("c1", "weather", {"city": "X"})])),
        Reply(json=openai_completion("It is sunny.")),
    )
    approval_id = engram(sdk.chat.completions.create(model=agent, messages=HI))["approval_id"]
    patch_key(operator_http, owner, key_id, {"budget": {"credits": 5, "period": "day"}})

    resp = http.post("/v1/chat/resume", json={"approval_id": approval_id, "decision": "approve"})
    assert assert_envelope(resp, 400, code="model_not_priced")["param"] == "model"
    assert UNKNOWN in resp.json()["error"]["message"]
    assert Approval.objects.get(id=approval_id).status == "pending"
    assert tool_server.calls == [] and len(upstream.chat_requests()) == 1
