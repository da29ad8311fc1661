"""`usage` of an answer whose upstream reported none (llama.cpp's server, older vLLM, some
proxies): Engram charges an estimate (completions.charging), and the answer carries it, as
OpenAI's always carries `usage`; an agent's run is estimated call by call (each call's messages
as sent and its answer), so its charge counts the tool results and the answers between."""

from __future__ import annotations

import pytest

from completions.charging import estimate
from tests import test_stream_usage
from tests.test_stream_usage import QUESTION, RETRY, WEATHER, _without_usage, streamed
from tests.test_tools import make_agent, make_tool
from tests.upstream import Reply, openai_completion, openai_stream, openai_tool_stream

URL = "/v1/chat/completions"


strict = test_stream_usage.strict  # the official client, strict about OpenAI's schema


@pytest.fixture(autouse=True)
def priced(transactional_db):
    """A price for the model (a flushed table has lost the default rows): credits to compare."""
    from completions import pricing
    from completions.models import Price

    Price.objects.update_or_create(
        model="gpt-4o-mini", defaults={"input_per_million": 1000, "output_per_million": 3000}
    )
    pricing.prices_changed()


def _no_usage(body: dict) -> dict:
    body.pop("usage", None)
    return body


def _summed(*usages: dict) -> dict:
    keys = ("prompt_tokens", "completion_tokens", "total_tokens")
    return {k: sum(u[k] for u in usages) for k in keys}


def _calls_estimate(upstream, answers: list[dict]) -> dict:
    """Each model call's estimate (the messages it was sent, its answer), summed."""
    sent = [r.body["messages"] for r in upstream.chat_requests()]
    assert len(sent) == len(answers)
    return _summed(*(estimate(m, a) for m, a in zip(sent, answers, strict=True)))


def test_a_plain_answer_without_upstream_usage_has_the_usage_charged(http, upstream):
    upstream.script(Reply(json=_no_usage(openai_completion("Sunny all day."))))
    resp = http.post(URL, json={"model": "gpt-4o-mini", "messages": QUESTION})
    assert resp.status_code == 200, resp.text
    sent = upstream.chat_requests()[-1].body["messages"]
    expected = estimate(sent, {"content": "Sunny all day."})
    assert resp.json()["usage"] == expected and expected["completion_tokens"] > 0
    assert resp.json()["engram"]["credits_charged"] > 0


def test_a_plain_answer_with_upstream_usage_keeps_it(http, upstream):
    usage = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5, "extra": 1}
    upstream.script(Reply(json=openai_completion("Hi", usage=usage)))
    resp = http.post(URL, json={"model": "gpt-4o-mini", "messages": QUESTION})
    assert resp.json()["usage"] == usage


def _tool_run(http, upstream, tool_server, *, user: str | None = None) -> tuple[str, dict]:
    agent = make_agent(http)
    make_tool(http, agent, tool_server.url + "/weather")
    upstream.script(
        Reply(json=_no_usage(openai_completion(tool_calls=[WEATHER]))),
        Reply(json=_no_usage(openai_completion("Sunny."))),
    )
    headers = {"x-user-id": user} if user else {}
    resp = http.post(URL, json={"model": agent, "messages": QUESTION}, headers=headers)
    assert resp.status_code == 200, resp.text
    assert resp.json()["choices"][0]["message"]["content"] == "Sunny."
    return agent, resp.json()


def test_an_agents_run_without_upstream_usage_is_charged_each_call(http, upstream, tool_server):
    """Two model calls: the first's prompt and call, the second's prompt (the tool's result in
    it) and answer. The run was charged the first call's prompt and the answer alone."""
    _agent, body = _tool_run(http, upstream, tool_server)
    expected = _calls_estimate(upstream, [{"tool_calls": [WEATHER]}, {"content": "Sunny."}])
    assert body["usage"] == expected
    tool_result = upstream.chat_requests()[1].body["messages"][-1]
    assert tool_result["role"] == "tool"
    credits = body["engram"]["credits_charged"]

    # The same tokens reported by an upstream cost the same credits: the charge is the sum.
    upstream.reset()
    upstream.script(Reply(json=openai_completion("Sunny.", usage=expected)))
    same = http.post(URL, json={"model": "gpt-4o-mini", "messages": QUESTION}).json()
    assert same["engram"]["credits_charged"] == credits

    # More than one call of it: the run's first call answered at once.
    upstream.reset()
    upstream.script(Reply(json=_no_usage(openai_completion("Sunny."))))
    single = http.post(URL, json={"model": _agent, "messages": QUESTION}).json()
    assert single["usage"] == _calls_estimate(upstream, [{"content": "Sunny."}])
    assert credits > single["engram"]["credits_charged"] > 0


@pytest.mark.parametrize("include_usage", [True, False])
def test_a_streamed_run_without_upstream_usage_ends_with_each_calls_estimate(
    strict, http, upstream, tool_server, include_usage
):
    agent = make_agent(http)
    make_tool(http, agent, tool_server.url + "/weather")
    upstream.script(
        Reply(stream=_without_usage(openai_tool_stream([WEATHER]))),
        Reply(stream=openai_stream(["Sunny."], usage=False)),
    )
    chunks, final = streamed(strict, include_usage=include_usage, model=agent, messages=QUESTION)
    assert final.choices[0].message.content == "Sunny."
    expected = _calls_estimate(upstream, [{"tool_calls": [WEATHER]}, {"content": "Sunny."}])
    if include_usage:
        assert chunks[-1].usage.model_dump(exclude_none=True) == expected
    else:
        assert all(c.usage is None for c in chunks)
    # charged as the non-streamed run is: the same tokens at the table's price
    credits = chunks[-1].model_extra["engram"]["credits_charged"]
    upstream.reset()
    upstream.script(Reply(json=openai_completion("Sunny.", usage=expected)))
    same = http.post(URL, json={"model": "gpt-4o-mini", "messages": QUESTION}).json()
    assert same["engram"]["credits_charged"] == credits


def test_a_replayed_run_without_upstream_usage_has_the_usage_charged(http, upstream, tool_server):
    """An SDK retry served from storage: the usage the run was charged, not none."""
    agent, body = _tool_run(http, upstream, tool_server, user="replay-estimate")
    replay = http.post(
        URL,
        json={"model": agent, "messages": QUESTION},
        headers={"x-user-id": "replay-estimate", **RETRY},
    ).json()
    assert replay["engram"]["replayed"] is True and replay["engram"]["credits_charged"] == 0
    assert len(tool_server.calls) == 1
    assert replay["usage"] == body["usage"] and body["usage"]["total_tokens"] > 0
