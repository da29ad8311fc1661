"""Tool runs under limits, budgets and credits (#16), over HTTP with the official client: a run
is charged the sum of its upstream calls at the table's price (streamed: on its last chunk)
and settles that sum; POST /v1/chat/resume is admitted like a chat completion (429s in
OpenAI's words, the approval left pending) and answers with the rate-limit headers; a resume's
`metadata.request_id` is echoed and recorded as a chat completion's."""

from __future__ import annotations

from decimal import Decimal

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from completions import pricing
from completions.models import Price, UsageRecord
from completions.tools.models import Approval
from completions.usage import buffer
from tests.completions_support import wait_for
from tests.test_errors import assert_envelope
from tests.test_limits import _budget_spent, patch_key, patch_workspace
from tests.test_tools import engram, make_agent, make_tool
from tests.upstream import Reply, openai_completion, openai_stream, openai_tool_stream, tool_call

WEATHER = [{"role": "user", "content": "Weather in Paris?"}]
pytestmark = pytest.mark.usefixtures("limiter_awake")


def price(operator_http, owner, *, input, output, cached=None):
    """gpt-4o-mini (the agents' model) at these USD per million, a million credits per USD:
    credits are the per-million prices times the tokens."""
    Price.objects.update_or_create(
        model="gpt-4o-mini",
        defaults={
            "input_per_million": input,
            "cached_input_per_million": cached,
            "output_per_million": output,
        },
    )
    pricing.prices_changed()
    patch_workspace(operator_http, owner, {"credit_unit": {"per_usd": 1_000_000}})


def resume_raw(sdk, approval_id, **extra) -> httpx.Response:
    """POST /v1/chat/resume with the official client; the raw response, for its headers."""
    body = {"approval_id": approval_id, "decision": "approve", **extra}
    return sdk.post("/chat/resume", body=body, cast_to=httpx.Response)


def record(request_id: str) -> UsageRecord:
    """The request's usage row (a stream's is buffered once its run's messages are stored)."""

    def written() -> bool:
        buffer.flush()
        return UsageRecord.objects.filter(request_id=request_id).exists()

    wait_for(written)
    return UsageRecord.objects.get(request_id=request_id)


def test_a_streamed_run_charges_every_call_on_its_last_chunk(
    sdk, http, operator_http, owner, key_id, upstream, tool_server
):
    price(operator_http, owner, input=2, output=3)
    patch_key(operator_http, owner, key_id, {"limits": {"rpm": 100, "tpm": 100_000}})
    patch_workspace(operator_http, owner, {"budget": {"credits": 100_000, "period": "none"}})
    agent = make_agent(http)
    make_tool(http, agent, tool_server.url + "/weather")
    upstream.script(  # usage: 9 prompt + 4 completion, then 5 + 2
        Reply(stream=openai_tool_stream([tool_call("call_1", "weather", {"city": "Paris"})])),
        Reply(stream=openai_stream(["It is ", "sunny."])),
    )

    raw = sdk.chat.completions.with_raw_response.create(
        model=agent, messages=WEATHER, stream=True, metadata={"request_id": "client-7"}
    )
    chunks = list(raw.parse())

    assert raw.headers["x-ratelimit-limit-requests"] == "100"
    assert raw.headers["x-ratelimit-remaining-requests"] == "99"
    assert raw.headers["x-ratelimit-limit-tokens"] == "100000"
    assert int(raw.headers["x-ratelimit-remaining-tokens"]) < 100_000 - 1024  # reserved
    charged = [c.model_extra["engram"] for c in chunks if "credits_charged" in _marks(c)]
    assert charged == [chunks[-1].model_extra["engram"]]  # on the last chunk, once
    assert charged[0]["credits_charged"] == (9 + 5) * 2 + (4 + 2) * 3  # both calls, summed
    assert charged[0]["request_id"] == "client-7"
    assert charged[0]["execution_id"].startswith("exec")
    row = record(raw.headers["x-request-id"])
    assert row.credits == 46 and row.total_tokens == 13 + 7 and row.stream
    assert row.client_request_id == "client-7" and row.agent_id == agent
    assert row.agent_version == 1 and row.latency_ms > 0 and row.status_code == 200
    wait_for(lambda: _budget_spent(owner, "ws:") == 46 * 1_000_000)  # settled: the sum


def _marks(chunk) -> dict:
    return (chunk.model_extra or {}).get("engram") or {}


def test_a_run_is_charged_its_calls_summed_cached_input_included(
    sdk, http, operator_http, owner, upstream, tool_server
):
    price(operator_http, owner, input=2, output=3, cached=Decimal("0.5"))
    patch_workspace(operator_http, owner, {"budget": {"credits": 10_000, "period": "none"}})
    agent = make_agent(http)
    make_tool(http, agent, tool_server.url + "/weather")

    def usage(prompt, cached, completion):
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached},
        }

    call = tool_call("call_1", "weather", {"city": "Paris"})
    upstream.script(
        Reply(json=openai_completion(tool_calls=[call], usage=usage(100, 60, 10))),
        Reply(json=openai_completion("It is sunny.", usage=usage(120, 100, 5))),
    )

    answer = sdk.chat.completions.create(model=agent, messages=WEATHER)

    assert answer.usage.prompt_tokens == 220 and answer.usage.completion_tokens == 15
    assert answer.usage.prompt_tokens_details.cached_tokens == 160
    # (220 - 160) uncached x 2 + 160 cached x 0.5 + 15 completion x 3
    assert engram(answer)["credits_charged"] == 60 * 2 + 160 * 0.5 + 15 * 3
    wait_for(lambda: _budget_spent(owner, "ws:") == 245 * 1_000_000)


@pytest.mark.parametrize("bad", [-5, True, 2**31])
def test_a_calls_usage_figure_that_is_not_a_count_takes_nothing_off_the_runs_other_calls(
    sdk, http, operator_http, owner, upstream, tool_server, bad
):
    """A run sums its calls' usage: a figure was summed whenever it was an int, so one call's
    -5 completion tokens took 5 off the other's 7 (charged 2 credits, and its usage said 2),
    `true` counted 1, and 2**31 made the sum no count at all (charged 0). A figure that is
    not a count is one not reported, as a call without tools takes it
    (completions.usage.count): the run is charged the other call's 7."""
    price(operator_http, owner, input=0, output=1)  # a credit per completion token
    agent = make_agent(http)
    make_tool(http, agent, tool_server.url + "/weather")
    odd = {"prompt_tokens": 11, "completion_tokens": bad, "total_tokens": 11}
    upstream.script(
        Reply(json=openai_completion(tool_calls=[tool_call("c1", "weather", {})], usage=odd)),
        Reply(json=openai_completion("It is sunny.")),  # 11 prompt, 7 completion
    )

    answer = sdk.chat.completions.create(model=agent, messages=WEATHER)

    assert answer.usage.completion_tokens == 7 and answer.usage.prompt_tokens == 22
    assert engram(answer)["credits_charged"] == 7


def _posting_that_breaks():
    """The limiter's posting connection (config.common.inline_redis.Pool.post_in_turn) as
    one that broke under the next send: the kernel refuses the write whole (EPIPE), while a
    peek still finds it open (its peer, returned for the test to hold, never closed)."""
    import socket

    from django.conf import settings

    from config.common import inline_redis

    pool = inline_redis.pool(settings.REDIS_URL)
    ours, theirs = socket.socketpair()
    ours.shutdown(socket.SHUT_WR)
    broken = inline_redis._Connection.__new__(inline_redis._Connection)
    broken.sock, broken.kernel_timed, broken.buffer = ours, True, bytearray()
    broken.timeout, broken.receive_ms = None, 0
    with pool.posting_lock:
        if pool.posting is not None:
            pool.posting.close()
        pool.posting = broken
    return theirs


def test_a_runs_settle_the_connection_refused_whole_is_sent_before_the_next_reserve(
    sdk, http, operator_http, owner, upstream, tool_server
):
    """A tool run's settle goes out on a connection that broke under it: the send is refused
    whole (nothing of it left), which the limiter dropped as a failure mid-send — its
    reservation (the prompt's estimate and max_tokens at the model's price) stood as spent
    for the budget's period. Now a send that took nothing is NotSent, as a Redis that could
    not be reached: the settle is kept and goes before the next reserve, and the budget holds
    what was spent. (Tool runs and plain answers settle through the one helper,
    completions.charging.finish.)"""
    from accounts.limits import limiter

    price(operator_http, owner, input=2, output=3)
    patch_workspace(operator_http, owner, {"budget": {"credits": 100_000, "period": "none"}})
    agent = make_agent(http)
    make_tool(http, agent, tool_server.url + "/weather")
    upstream.script(  # usage: 11 prompt + 7 completion, twice
        Reply(json=openai_completion(tool_calls=[tool_call("call_1", "weather", {"c": "P"})])),
        Reply(json=openai_completion("It is sunny.")),
    )
    peer = _posting_that_breaks()
    try:
        answer = sdk.chat.completions.create(model=agent, messages=WEATHER)
        assert engram(answer)["credits_charged"] == 22 * 2 + 14 * 3
        wait_for(lambda: limiter._state["down_until"] > 0)  # the settle's send failed
        limiter.reset()  # the limiter's rest after the failure, over
        upstream.script(Reply(json=openai_completion("Hi.")))  # 11 + 7 again
        after = sdk.chat.completions.create(
            model=agent, messages=[{"role": "user", "content": "Hi"}]
        )
    finally:
        peer.close()
    assert engram(after)["credits_charged"] == 11 * 2 + 7 * 3
    spent = (22 * 2 + 14 * 3 + 11 * 2 + 7 * 3) * 1_000_000
    wait_for(lambda: _budget_spent(owner, "ws:") == spent)


def test_a_run_whose_client_hangs_up_as_its_messages_are_stored_is_charged_its_calls(
    sdk, http, operator_http, owner, upstream, tool_server, monkeypatch
):
    """A run not streamed stores its tool calls and results after its last model call, then
    is charged: a client that hung up meanwhile (the door cancels the request) left the turn
    to the gateway's finish, which knows nothing of the run's calls, and they cost nothing."""
    import asyncio

    from completions.tools import entry

    price(operator_http, owner, input=0, output=1)  # a credit per completion token
    patch_workspace(operator_http, owner, {"budget": {"credits": 10_000, "period": "none"}})
    agent = make_agent(http)
    make_tool(http, agent, tool_server.url + "/weather")
    upstream.script(  # usage: 7 completion tokens each
        Reply(json=openai_completion(tool_calls=[tool_call("c1", "weather", {"city": "X"})])),
        Reply(json=openai_completion("It is sunny.")),
    )

    async def hung_up(*args, **kwargs):
        raise asyncio.CancelledError

    monkeypatch.setattr(entry, "_store", hung_up)
    with pytest.raises((httpx.HTTPError, openai.APIError)):
        sdk.with_options(max_retries=0).chat.completions.create(
            model=agent, messages=WEATHER, metadata={"request_id": "cut"}
        )

    buffer.flush()
    row = UsageRecord.objects.get(client_request_id="cut")
    assert row.status_code == 499 and row.credits == 14
    wait_for(lambda: _budget_spent(owner, "ws:") == 14 * 1_000_000)


def test_a_streamed_run_cut_by_its_client_in_its_first_call_is_charged_the_text_received(
    http, operator_http, owner, upstream, tool_server
):
    """A plain stream cut short is charged the prompt's estimate and the text received; a
    run's stream cut in its first model call was charged nothing: no call had ended, so the
    run had no usage, and its answer was not passed on."""
    from completions import charging
    from config.common import tokens

    price(operator_http, owner, input=1, output=1)  # a credit per token
    agent = make_agent(http)
    make_tool(http, agent, tool_server.url + "/weather")
    upstream.script(Reply(stream=openai_stream([f"w{i} " for i in range(200)]), delay=0.1))
    body = {"model": agent, "messages": WEATHER, "stream": True}

    seen = ""
    with http.stream("POST", "/v1/chat/completions", json=body) as resp:
        request_id = resp.headers["x-request-id"]
        for line in resp.iter_lines():
            if line.startswith("data: {") and "w1 " in line:
                seen = line
                break  # the client hangs up: the model's text has come
    assert seen

    row = record(request_id)
    assert row.status_code == 499 and row.incomplete and row.error_code == "client_closed"
    received = "".join(f"w{i} " for i in range(2))
    # the prompt's estimate and at least the text the client saw (more may have come since)
    assert row.credits >= charging.prompt_tokens({"messages": WEATHER}) + tokens.count(received)


def test_a_resume_over_the_rpm_is_429_and_its_approval_stays_pending(
    sdk, http, operator_http, owner, key_id, upstream, tool_server
):
    patch_key(operator_http, owner, key_id, {"limits": {"rpm": 2}})
    agent = make_agent(http)
    make_tool(http, agent, tool_server.url + "/weather", approval="always")
    upstream.script(
        Reply(json=openai_completion(tool_calls=[tool_call("c1", "weather", {"city": "X"})])),
        Reply(json=openai_completion(tool_calls=[tool_call("c2", "weather", {"city": "Y"})])),
        Reply(json=openai_completion("done")),
    )
    first = sdk.chat.completions.create(model=agent, messages=WEATHER)  # 1 of 2

    again = resume_raw(sdk, engram(first)["approval_id"])  # 2 of 2: runs c1, pauses on c2

    assert again.status_code == 200
    assert again.headers["x-ratelimit-limit-requests"] == "2"
    assert again.headers["x-ratelimit-remaining-requests"] == "0"
    assert again.headers["x-ratelimit-reset-requests"].endswith("s")
    waiting = again.json()["engram"]["approval_id"]
    with pytest.raises(openai.RateLimitError) as info:
        sdk.post(
            "/chat/resume",
            body={"approval_id": waiting, "decision": "approve"},
            cast_to=ChatCompletion,
        )
    error = info.value
    assert error.status_code == 429 and error.code == "rate_limit_exceeded"
    assert "requests per minute" in error.message and "API key" in error.message
    assert int(error.response.headers["retry-after"]) >= 1
    assert error.response.headers["x-ratelimit-remaining-requests"] == "0"
    # refused before the approval was claimed: still pending, c2 not run, nothing upstream
    assert Approval.objects.get(id=waiting).status == "pending"
    assert len(tool_server.calls) == 1 and len(upstream.chat_requests()) == 2
    refused = record(error.response.headers["x-request-id"])
    assert refused.status_code == 429 and refused.error_code == "rate_limit_exceeded"
    assert refused.credits == 0 and refused.agent_id == agent

    patch_key(operator_http, owner, key_id, {"limits": {"rpm": None}})
    answer = resume_raw(sdk, waiting)  # the same approval, once the limit allows it
    assert answer.status_code == 200 and answer.json()["choices"][0]["message"]["content"] == "done"
    assert len(tool_server.calls) == 2


@pytest.mark.parametrize("stream", [False, True])
def test_a_runs_every_model_call_is_reserved_against_the_budget(
    sdk, http, operator_http, owner, upstream, tool_server, stream
):
    """One admission covered every model call of a run: a budget of 20 credits let a run of
    four 7-credit calls spend 28 (and 50 concurrent runs against a budget of 70 spent 490).
    Now each call after the first reserves its own `max_tokens` before it is made: the third
    does not fit (7 + 7 reserved, 7 more > 20), so the run ends there with the budget's 429
    (streamed: its error frame), its two calls charged, the budget never overshot."""
    price(operator_http, owner, input=0, output=1)  # a credit per completion token
    patch_workspace(operator_http, owner, {"budget": {"credits": 20, "period": "none"}})
    agent = make_agent(http)
    make_tool(http, agent, tool_server.url + "/weather")
    calls = [tool_call(f"call_{i}", "weather", {"city": "Paris"}) for i in range(3)]
    if stream:  # each call: 9 prompt, 4 completion tokens
        upstream.script(*(Reply(stream=openai_tool_stream([c])) for c in calls))
        with pytest.raises(openai.APIError) as info:
            list(
                sdk.chat.completions.create(
                    model=agent, messages=WEATHER, max_tokens=7, stream=True
                )
            )
        spent = 2 * 4
    else:  # each call: 11 prompt, 7 completion tokens
        upstream.script(*(Reply(json=openai_completion(tool_calls=[c])) for c in calls))
        with pytest.raises(openai.RateLimitError) as info:
            sdk.chat.completions.create(model=agent, messages=WEATHER, max_tokens=7)
        assert info.value.code == "insufficient_quota"
        assert info.value.response.headers["x-should-retry"] == "false"  # the SDKs' retry
        spent = 2 * 7
    assert "budget of the workspace" in info.value.message

    assert len(upstream.chat_requests()) == 2 and len(tool_server.calls) == 2
    rows = UsageRecord.objects.filter(workspace=owner[0], agent_id=agent)
    wait_for(lambda: buffer.flush() or rows.exists())  # a stream's, once its run is stored
    assert rows.get().credits == spent
    wait_for(lambda: _budget_spent(owner, "ws:") == spent * 1_000_000)  # settled: what was spent


def test_a_resume_over_the_budget_is_insufficient_quota(
    sdk, http, operator_http, owner, key_id, upstream, tool_server
):
    price(operator_http, owner, input=0, output=1)  # a credit per completion token
    agent = make_agent(http)
    make_tool(http, agent, tool_server.url + "/weather", approval="always")
    upstream.script(
        Reply(json=openai_completion(tool_calls=[tool_call("c1", "weather", {"city": "X"})])),
        Reply(json=openai_completion("It is sunny.")),  # usage: 11 prompt, 7 completion
    )
    paused = sdk.chat.completions.create(model=agent, messages=WEATHER)
    approval_id = engram(paused)["approval_id"]
    # A resume reserves its upstream call's max_tokens (1,024 by default): more than 100.
    patch_key(operator_http, owner, key_id, {"budget": {"credits": 100, "period": "day"}})

    with pytest.raises(openai.RateLimitError) as info:
        resume_raw(sdk, approval_id)

    error = info.value
    assert error.code == "insufficient_quota" and error.body["type"] == "insufficient_quota"
    assert error.response.headers["x-should-retry"] == "false"
    assert "budget of the API key" in error.message
    assert Approval.objects.get(id=approval_id).status == "pending"
    assert tool_server.calls == []

    patch_key(operator_http, owner, key_id, {"budget": {"credits": 5000, "period": "day"}})
    answer = resume_raw(sdk, approval_id)
    assert answer.status_code == 200
    marks = answer.json()["engram"]
    assert marks["credits_charged"] == 7 and marks["request_id"] == answer.headers["x-request-id"]
    row = record(marks["request_id"])  # a resume's usage row: as a chat completion's
    assert row.credits == 7 and row.total_tokens == 18 and row.status_code == 200
    assert row.agent_id == agent and row.agent_version == 1 and not row.stream
    assert row.upstream_model == "gpt-4o-mini" and row.latency_ms > 0
    # settled: the 1,024 reserved came back but the 7 spent (the refused resume reserved
    # none), on top of the paused call's 7, which the budget's seed counted
    wait_for(lambda: _budget_spent(owner, f"key:{key_id}:") == 14 * 1_000_000)


def test_a_resume_whose_client_hangs_up_before_its_run_gives_its_reservation_back(
    sdk, http, operator_http, owner, key_id, upstream, tool_server, monkeypatch
):
    """A resume is admitted (its reservation made) before its approval is claimed; a client
    that hung up in between (Django cancels the view) left the reservation standing: 1,024
    credits of the budget gone until the period ended, and no usage record."""
    import asyncio

    from completions.tools import entry

    price(operator_http, owner, input=0, output=1)  # a credit per completion token
    agent = make_agent(http)
    make_tool(http, agent, tool_server.url + "/weather", approval="always")
    upstream.script(
        Reply(json=openai_completion(tool_calls=[tool_call("c1", "weather", {"city": "X"})])),
    )
    approval_id = engram(sdk.chat.completions.create(model=agent, messages=WEATHER))["approval_id"]
    patch_key(operator_http, owner, key_id, {"budget": {"credits": 5000, "period": "day"}})

    async def hung_up(*args, **kwargs):
        raise asyncio.CancelledError

    monkeypatch.setattr(entry, "_extraction", hung_up)
    with pytest.raises((httpx.HTTPError, openai.APIError)):
        resume_raw(sdk.with_options(max_retries=0), approval_id, metadata={"request_id": "cut"})

    wait_for(lambda: _budget_spent(owner, f"key:{key_id}:") == 7 * 1_000_000)  # the paused call
    buffer.flush()
    row = UsageRecord.objects.get(client_request_id="cut")
    assert row.status_code == 499 and row.incomplete and row.credits == 0
    assert tool_server.calls == []


@pytest.mark.usefixtures("listed")
def test_a_resume_with_redis_down_fails_closed_on_a_budget(
    sdk, http, operator_http, owner, key_id, upstream, tool_server, settings
):
    from tests.test_coherence import dead_redis_url

    agent = make_agent(http)
    make_tool(http, agent, tool_server.url + "/weather", approval="always")
    upstream.script(
        Reply(json=openai_completion(tool_calls=[tool_call("c1", "weather", {"city": "X"})])),
        Reply(json=openai_completion("It is sunny.")),
    )
    approval_id = engram(sdk.chat.completions.create(model=agent, messages=WEATHER))["approval_id"]
    patch_key(operator_http, owner, key_id, {"budget": {"credits": 100}})
    settings.REDIS_URL = dead_redis_url()

    with pytest.raises(openai.InternalServerError) as info:  # budgets fail closed: 503
        resume_raw(sdk, approval_id)

    assert info.value.status_code == 503 and info.value.code == "limits_unavailable"
    assert Approval.objects.get(id=approval_id).status == "pending" and tool_server.calls == []
    settings.ENGRAM_LIMITS_BUDGET_FAIL_OPEN = True  # open: served, not counted
    assert resume_raw(sdk, approval_id).status_code == 200 and len(tool_server.calls) == 1


# --- the client's metadata ------------------------------------------------------------------


def _paused(sdk, http, upstream, tool_server, *, then: Reply) -> str:
    """A run of an agent whose weather tool needs approval, paused: its approval's id."""
    agent = make_agent(http)
    make_tool(http, agent, tool_server.url + "/weather", approval="always")
    call = tool_call("c1", "weather", {"city": "Paris"})
    upstream.script(Reply(json=openai_completion(tool_calls=[call])), then)
    return engram(sdk.chat.completions.create(model=agent, messages=WEATHER))["approval_id"]


def test_a_resume_echoes_the_clients_request_id_and_records_it(sdk, http, upstream, tool_server):
    approval_id = _paused(
        sdk, http, upstream, tool_server, then=Reply(json=openai_completion("It is sunny."))
    )

    raw = resume_raw(sdk, approval_id, metadata={"request_id": "client-r1", "trace": "t-9"})

    assert raw.status_code == 200 and len(tool_server.calls) == 1
    assert ChatCompletion.model_validate(raw.json()).choices[0].message.content == "It is sunny."
    assert raw.json()["engram"]["request_id"] == "client-r1"
    row = record(raw.headers["x-request-id"])  # Engram's id names the row; the client's is kept
    assert row.client_request_id == "client-r1" and row.status_code == 200 and not row.stream


def test_a_streamed_resume_echoes_the_clients_request_id_on_its_last_chunk(
    sdk, http, upstream, tool_server
):
    approval_id = _paused(
        sdk, http, upstream, tool_server, then=Reply(stream=openai_stream(["It is ", "sunny."]))
    )
    long_id = "r" * 250  # the usage record's column holds 200 characters, as chat's

    stream = sdk.post(
        "/chat/resume",
        body={
            "approval_id": approval_id,
            "decision": "approve",
            "stream": True,
            "metadata": {"request_id": long_id},
        },
        cast_to=ChatCompletionChunk,
        stream=True,
        stream_cls=openai.Stream[ChatCompletionChunk],
    )
    chunks = list(stream)

    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "It is sunny." and len(tool_server.calls) == 1
    charged = [c.model_extra["engram"] for c in chunks if "credits_charged" in _marks(c)]
    assert charged == [chunks[-1].model_extra["engram"]]  # on the last chunk, once
    assert charged[0]["request_id"] == long_id[:200]
    row = record(stream.response.headers["x-request-id"])
    assert row.client_request_id == long_id[:200] and row.stream and row.status_code == 200


def test_a_resume_with_bad_metadata_is_400_and_leaves_its_approval_pending(
    sdk, http, upstream, tool_server
):
    approval_id = _paused(
        sdk, http, upstream, tool_server, then=Reply(json=openai_completion("It is sunny."))
    )
    for metadata, param in (
        ("client-r3", "metadata"),
        (["client-r3"], "metadata"),
        ({"request_id": 7}, "metadata.request_id"),
    ):
        body = {"approval_id": approval_id, "decision": "approve", "metadata": metadata}
        error = assert_envelope(http.post("/v1/chat/resume", json=body), 400, code="invalid_type")
        assert error["param"] == param  # chat's rule and words (completions.validation)
    assert Approval.objects.get(id=approval_id).status == "pending" and tool_server.calls == []

    # a refusal once the body is read keeps the client's id in its usage row, as chat's does
    body = {"approval_id": "appr_unknown", "decision": "approve", "metadata": {"request_id": "r4"}}
    unknown = http.post("/v1/chat/resume", json=body)
    assert_envelope(unknown, 404)
    assert record(unknown.headers["x-request-id"]).client_request_id == "r4"
