"""A chat request of an agent with tools sent again: a run whose process died is told from a live
one by its heartbeat (Execution.heartbeat_at) and goes on at once, not after the hour-long
sweep; an SDK's retry of a run that answered gets that answer, its tools not run again."""

from __future__ import annotations

import datetime as dt
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from django.utils import timezone

from completions.charging import estimate
from completions.tools import services
from completions.tools.models import Execution
from completions.tools.services import executions
from tests.completions_support import wait_for
from tests.test_errors import assert_envelope
from tests.test_tools import (
    _shape,
    _stored,
    ask,
    assert_every_call_answered,
    engram,
    lost_mid_call,
    make_agent,
    make_tool,
    script_call_then_answer,
)
from tests.upstream import Reply, openai_completion, openai_stream, openai_tool_stream, tool_call

RETRY = {"x-stainless-retry-count": "1"}  # what the OpenAI SDKs send on their first retry


SILENT_FOR = dt.timedelta(minutes=10)  # past services.LOST_AFTER, well within STALE_RUN


def _silent() -> dt.datetime:
    """A heartbeat as a dead process leaves it."""
    return timezone.now() - SILENT_FOR


def _lost_mid_call(sdk, agent: str, headers: dict) -> tuple[Execution, object]:
    """A run lost mid call (test_tools.lost_mid_call) with its last write recent (the sweep's
    hour is far off) and its heartbeat silent."""
    return lost_mid_call(sdk, agent, headers, updated_at=timezone.now(), heartbeat_at=_silent())


@pytest.mark.parametrize("stream", [False, True])
def test_a_chat_sent_again_after_its_process_died_goes_on_at_once_without_running_its_tool_twice(
    sdk, http, upstream, tool_server, stream
):
    """The web process dies while a tool runs; the SDK sends the request again. The run was
    `running` until the sweep failed it an hour later, so the retry got 409 `run_in_progress`
    all that time. Now its silent heartbeat says the process is gone: the retry fails it as
    the sweep does and goes on from what it recorded, the call in flight answered as
    interrupted, and the conversation holds the turn once."""
    from memory.models import Conversation

    agent = make_agent(http)
    make_tool(http, agent, tool_server.url + "/slow")
    script_call_then_answer(upstream, tool_call("call_1", "weather", {"city": "Oslo"}))
    user = f"died-{stream}"
    headers = {"x-user-id": user}
    lost, first = _lost_mid_call(sdk, agent, headers)
    assert services.LOST_AFTER < SILENT_FOR < services.STALE_RUN
    text = "I could not check the weather."
    if stream:
        upstream.script(Reply(stream=openai_stream([text])))
        chunks = list(ask(sdk, agent, extra_headers=headers | RETRY, stream=True))
        content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        marks = next(c.model_extra["engram"] for c in reversed(chunks) if "engram" in c.model_extra)
    else:
        upstream.script(Reply(json=openai_completion(text)))
        again = ask(sdk, agent, extra_headers=headers | RETRY)
        content, marks = again.choices[0].message.content, engram(again)

    assert content == text
    assert len(tool_server.calls) == 1  # the first try's call only
    assert marks["execution_id"] == lost.id
    assert marks["conversation_id"] == engram(first)["conversation_id"]
    sent = upstream.chat_requests()[-1].body["messages"]
    assert sent[-1]["tool_call_id"] == "call_1" and "interrupted" in sent[-1]["content"]
    assert_every_call_answered(sent)
    run = Execution.objects.get(id=lost.id)
    assert run.status == "completed"
    tools = [s for s in run.steps if s["type"] == "tool"]
    assert [s["status"] for s in tools] == ["failed"] and "interrupted" in tools[0]["error"]
    wait_for(lambda: len(_stored(user)) == 4)
    assert _shape(_stored(user)) == [
        ("user", None, []),  # once
        ("assistant", None, ["call_1"]),
        ("tool", "call_1", []),  # once
        ("assistant", None, []),
    ]
    assert Conversation.objects.filter(user_id=user).count() == 1


def test_a_chat_sent_again_while_its_run_is_alive_is_a_409_to_retry_once_it_could_be_lost(
    sdk, http, upstream, tool_server
):
    """A run whose heartbeat is fresh is alive: the retry is 409 `run_in_progress` and runs
    nothing, with a `retry-after` for when the run would be taken as lost (within the 60
    seconds the SDKs wait out), so an SDK's own retry finds it ended or gone on. A run with no
    heartbeat (started before they were kept) is not retried: it is lost only after an hour."""
    agent = make_agent(http)
    make_tool(http, agent, tool_server.url + "/weather")
    script_call_then_answer(upstream, tool_call("call_1", "weather", {"city": "Oslo"}))
    headers = {"x-user-id": "alive", "x-conversation-id": "trip"}
    execution_id = engram(ask(sdk, agent, extra_headers=headers))["execution_id"]
    body = {"model": agent, "messages": [{"role": "user", "content": "Weather in Paris?"}]}
    Execution.objects.filter(id=execution_id).update(status="running", heartbeat_at=timezone.now())

    resp = http.post("/v1/chat/completions", json=body, headers=headers | RETRY)

    assert_envelope(resp, 409, code="run_in_progress")
    assert resp.headers["x-should-retry"] == "true"
    wait = int(resp.headers["retry-after"])
    assert 1 <= wait <= 60
    assert wait <= services.LOST_AFTER.total_seconds() + 1
    assert resp.headers["retry-after-ms"] == str(wait * 1000)
    assert Execution.objects.get(id=execution_id).status == "running"  # not taken over
    assert len(tool_server.calls) == 1
    assert len(upstream.chat_requests()) == 2  # the first run's two model calls only

    Execution.objects.filter(id=execution_id).update(heartbeat_at=None)
    resp = http.post("/v1/chat/completions", json=body, headers=headers)
    assert_envelope(resp, 409, code="run_in_progress")
    assert resp.headers["x-should-retry"] == "false"


def test_of_two_retries_of_a_lost_run_one_takes_it_over_and_the_other_is_a_409(
    sdk, http, upstream, tool_server
):
    """Two retries find the same silent run: the row decides, under its lock, which one fails
    it (the second finds it failed already), and the compare-and-set on its status which one
    goes on with it. The other, reading it again, finds it running with a fresh heartbeat:
    409, nothing run."""
    agent = make_agent(http)
    make_tool(http, agent, tool_server.url + "/slow")
    script_call_then_answer(upstream, tool_call("call_1", "weather", {"city": "Oslo"}))
    headers = {"x-user-id": "raced"}
    lost, _ = _lost_mid_call(sdk, agent, headers)
    one, other = Execution.objects.get(id=lost.id), Execution.objects.get(id=lost.id)
    assert services.execution_is_lost(execution=one) and services.execution_is_lost(execution=other)

    assert [services.execution_lost_fail(execution=e) for e in (one, other)] == [True, False]
    failed = Execution.objects.get(id=lost.id)
    assert failed.status == "failed" and failed.error == services.LOST_ERROR
    # The sweep, coming now, has nothing left to do (its function is the same).
    services.approvals_expire()
    assert Execution.objects.get(id=lost.id).steps == failed.steps
    won = [services.execution_reclaim(execution=e) for e in (one, other)]
    assert won == [True, False]

    # The one that lost the race, sent over HTTP: the run is the winner's now, and alive.
    body = {"model": agent, "messages": [{"role": "user", "content": "Weather in Paris?"}]}
    resp = http.post("/v1/chat/completions", json=body, headers=headers | RETRY)
    assert_envelope(resp, 409, code="run_in_progress")
    assert len(tool_server.calls) == 1
    assert len(upstream.chat_requests()) == 2  # the first try's model calls only


def test_the_sweep_fails_a_silent_run_without_waiting_an_hour(sdk, http, upstream, tool_server):
    """Nobody sends the request again: the sweep fails a run whose heartbeat is silent (its
    GET shows it `failed`, its call in the conversation) instead of leaving it `running` for
    an hour; a run whose heartbeat is fresh is left alone."""
    agent = make_agent(http)
    make_tool(http, agent, tool_server.url + "/slow")
    script_call_then_answer(upstream, tool_call("call_1", "weather", {"city": "Oslo"}))
    user = "swept-early"
    lost, _ = _lost_mid_call(sdk, agent, {"x-user-id": user})

    Execution.objects.filter(id=lost.id).update(heartbeat_at=timezone.now())
    services.approvals_expire()
    assert Execution.objects.get(id=lost.id).status == "running"

    Execution.objects.filter(id=lost.id).update(heartbeat_at=_silent())
    services.approvals_expire()
    run = Execution.objects.get(id=lost.id)
    assert run.status == "failed" and run.error == services.LOST_ERROR
    assert _shape(_stored(user)) == [
        ("user", None, []),
        ("assistant", None, ["call_1"]),
        ("tool", "call_1", []),
    ]


def test_a_run_says_it_is_alive_while_its_tool_runs(sdk, http, upstream, tool_server, monkeypatch):
    """A tool call (or a model call) outlasts the heartbeat's period without a write of the
    run: its process touches the heartbeat meanwhile, so the run is not taken as lost."""
    monkeypatch.setattr(services, "HEARTBEAT_EVERY", dt.timedelta(seconds=0.05))
    agent = make_agent(http)
    make_tool(http, agent, tool_server.url + "/slow")  # 1.5 seconds
    script_call_then_answer(upstream, tool_call("call_1", "weather", {"city": "Oslo"}))
    marks: dict = {}

    def started() -> bool:
        run = Execution.objects.first()
        if run is None or not any(m.get("tool_calls") for m in run.messages):
            return False
        marks.setdefault("written", run.updated_at)
        marks.setdefault("beat", run.heartbeat_at)
        return True

    def touched() -> bool:
        run = Execution.objects.get()
        # a touch, not a write of its state (the tool's result would be one)
        assert run.updated_at == marks["written"], "the tool ended before any touch"
        return run.heartbeat_at is not None and run.heartbeat_at > marks["beat"]

    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(ask, sdk, agent, extra_headers={"x-user-id": "beating"})
        wait_for(started)
        wait_for(touched)
        answer = running.result()
    assert answer.choices[0].message.content == "It is sunny."


def test_a_touch_held_up_by_a_lock_on_the_run_gives_up_and_the_beat_goes_on(
    sdk, http, upstream, tool_server, monkeypatch, caplog
):
    """Another transaction holds the run's row (a long write, a stuck session) while its tool
    runs: the heartbeat's touch waited for the lock as long as the connection allowed (10 s,
    a period's touches missed; with the database bounds off, for ever), the beat stopped and
    its pool thread stayed taken. Now a touch gives up past services.TOUCH_TIMEOUT, the next
    comes at its beat, and once the lock is gone the touches get through again and the run
    answers."""
    import logging
    import threading

    from django.db import connection, transaction

    monkeypatch.setattr(services, "HEARTBEAT_EVERY", dt.timedelta(seconds=0.05))
    # read by the heartbeat where it is written
    monkeypatch.setattr(executions, "TOUCH_TIMEOUT", dt.timedelta(seconds=0.2))
    caplog.set_level(logging.WARNING, logger="engram.tools")
    agent = make_agent(http)
    make_tool(http, agent, tool_server.url + "/hold", name="hold")
    upstream.script(
        Reply(json=openai_completion(tool_calls=[tool_call("call_1", "hold", {})])),
        Reply(json=openai_completion("Held.")),
    )
    locked, unlock = threading.Event(), threading.Event()

    def hold_the_row(execution_id: str) -> None:
        try:
            with transaction.atomic():
                Execution.objects.select_for_update().get(id=execution_id)
                locked.set()
                unlock.wait(30)
        finally:
            connection.close()

    def given_up() -> int:
        return sum("heartbeat of run" in r.getMessage() for r in caplog.records)

    with ThreadPoolExecutor(2) as pool:
        try:
            running = pool.submit(ask, sdk, agent, extra_headers={"x-user-id": "held-up"})
            wait_for(lambda: [c["path"] for c in tool_server.calls] == ["/hold"])
            run = Execution.objects.get()
            holder = pool.submit(hold_the_row, run.id)
            assert locked.wait(5)
            wait_for(lambda: given_up() >= 2)  # the lock's 10 s wait would not give up by then
            unlock.set()
            holder.result()
            beat = Execution.objects.get(id=run.id).heartbeat_at
            wait_for(lambda: Execution.objects.get(id=run.id).heartbeat_at > beat)
        finally:
            unlock.set()
            tool_server.release.set()
        answer = running.result()
    assert answer.choices[0].message.content == "Held."
    ended = Execution.objects.get(id=run.id)
    assert ended.status == "completed"
    assert [s["status"] for s in ended.steps if s["type"] == "tool"] == ["completed"]


# --- an SDK's retry of a run that answered ---------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_an_sdk_retry_of_a_run_that_answered_gets_its_answer_without_running_its_tools_again(
    sdk, http, upstream, tool_server, stream
):
    """The run answered but its client never got the answer (a timeout, a connection lost);
    the SDK retries (x-stainless-retry-count: 1). It was a regenerate: a new run, the tool
    (a POST: side effects) called a second time. Now the retry gets the run's answer, as a
    completion or a stream as it asks, nothing run, stored or charged again. Without the
    SDK's retry count the same request stays a regenerate."""
    from memory.models import Message

    agent = make_agent(http)
    make_tool(http, agent, tool_server.url + "/weather")
    script_call_then_answer(upstream, tool_call("call_1", "weather", {"city": "Oslo"}))
    user = f"replayed-{stream}"
    headers = {"x-user-id": user}
    first = ask(sdk, agent, extra_headers=headers)
    wait_for(lambda: len(_stored(user)) == 4)
    stored = Message.objects.filter(conversation__user_id=user).count()

    if stream:
        chunks = list(ask(sdk, agent, extra_headers=headers | RETRY, stream=True))
        content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        finish = [c.choices[0].finish_reason for c in chunks if c.choices][-1]
        marks = next(c.model_extra["engram"] for c in reversed(chunks) if "engram" in c.model_extra)
        assert chunks[0].choices[0].delta.role == "assistant"
    else:
        again = ask(sdk, agent, extra_headers=headers | RETRY)
        content, finish, marks = (
            again.choices[0].message.content,
            again.choices[0].finish_reason,
            engram(again),
        )
        assert again.model == agent
        assert again.usage is not None and again.usage.total_tokens == first.usage.total_tokens

    assert content == first.choices[0].message.content == "It is sunny."
    assert finish == "stop"
    assert marks["execution_id"] == engram(first)["execution_id"]
    assert marks["conversation_id"] == engram(first)["conversation_id"]
    assert marks["replayed"] is True and marks["credits_charged"] == 0
    assert len(tool_server.calls) == 1
    assert len(upstream.chat_requests()) == 2  # the run's two model calls only
    assert Execution.objects.count() == 1
    assert Message.objects.filter(conversation__user_id=user).count() == stored

    # Without the retry count: the documented regenerate, a new run.
    script_call_then_answer(upstream, tool_call("call_2", "weather", {"city": "Oslo"}))
    regenerated = ask(sdk, agent, extra_headers=headers)
    assert engram(regenerated)["execution_id"] != engram(first)["execution_id"]
    assert "replayed" not in engram(regenerated)
    assert len(tool_server.calls) == 2


def test_an_sdk_retry_long_after_its_run_answered_is_a_regenerate(sdk, http, upstream, tool_server):
    """Past the replay window an SDK's retry is a new run, as any regenerate is."""
    from completions.tools import selectors

    agent = make_agent(http)
    make_tool(http, agent, tool_server.url + "/weather")
    script_call_then_answer(upstream, tool_call("call_1", "weather", {"city": "Oslo"}))
    headers = {"x-user-id": "late-retry"}
    first = engram(ask(sdk, agent, extra_headers=headers))
    Execution.objects.filter(id=first["execution_id"]).update(
        updated_at=timezone.now() - selectors.REPLAY_WINDOW - dt.timedelta(minutes=1)
    )
    script_call_then_answer(upstream, tool_call("call_2", "weather", {"city": "Oslo"}))
    again = engram(ask(sdk, agent, extra_headers=headers | RETRY))
    assert again["execution_id"] != first["execution_id"] and "replayed" not in again
    assert len(tool_server.calls) == 2


SOURCES = {
    "type": "function",
    "function": {"name": "_engramSearchSources", "parameters": {"type": "object"}},
}
APPEND = {
    "type": "function",
    "function": {"name": "_engramAppendConversationMessage", "parameters": {"type": "object"}},
}


def _answered(sdk, agent: str, headers: dict, *, stream: bool) -> tuple[Any, dict, list, dict]:
    """The request's answer as the client's SDK assembles it (a stream's final completion), its
    `engram`, a stream's chunks without choices (Engram's marks and results) as sent, and its
    `usage` (a stream's usage chunk: the final completion keeps the last chunk's, none)."""
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    if not stream:
        answer = sdk.chat.completions.create(
            model=agent, messages=messages, tools=[SOURCES, APPEND], extra_headers=headers
        )
        return answer, engram(answer), [], answer.usage.model_dump()
    with sdk.chat.completions.stream(
        model=agent,
        messages=messages,
        tools=[SOURCES, APPEND],
        extra_headers=headers,
        stream_options={"include_usage": True},
    ) as events:
        chunks = [e.chunk for e in events if e.type == "chunk"]
        final = events.get_final_completion()
    marks = [c.model_extra["engram"] for c in chunks if "engram" in c.model_extra]
    usage = next(c.usage for c in reversed(chunks) if c.usage).model_dump()
    return (
        final,
        marks[-1],
        [m for m in marks[:-1] if "tool_call" in m or "tool_result" in m],
        usage,
    )


@pytest.mark.parametrize("stream", [False, True])
def test_an_sdk_retry_of_a_run_that_answered_gets_engrams_own_calls_again(
    sdk, http, upstream, tool_server, stream
):
    """A request that declared Engram's own tools (completions.engram_tools) got its answer
    led by their calls (the sources, the conversation appended to); the SDK's retry of it got
    the answer without them, as if it had not declared them. Its replay is the answer the
    client would have got: the same calls (ids, names, arguments) in the same order, the same
    content, finish_reason and usage, streamed or not as it asks."""
    agent = make_agent(http)
    make_tool(http, agent, tool_server.url + "/weather")
    user = f"replayed-own-{stream}"
    headers = {"x-user-id": user}
    if stream:
        upstream.script(
            Reply(stream=openai_tool_stream([tool_call("call_1", "weather", {"city": "Oslo"})])),
            Reply(stream=openai_stream(["It is sunny."])),
        )
    else:
        script_call_then_answer(upstream, tool_call("call_1", "weather", {"city": "Oslo"}))
    first, _, first_marks, first_usage = _answered(sdk, agent, headers, stream=stream)
    wait_for(lambda: len(_stored(user)) == 4)
    shown = first.choices[0].message
    names = [c.function.name for c in shown.tool_calls]
    own = ["_engramSearchSources", "_engramAppendConversationMessage"]
    assert names == own + (["weather"] if stream else [])  # a stream shows the run's calls

    again, marks, again_marks, usage = _answered(sdk, agent, headers | RETRY, stream=stream)

    assert marks["replayed"] is True and marks["credits_charged"] == 0
    assert again_marks == first_marks  # a stream's: the call running, then its result
    replayed = again.choices[0].message
    assert [c.model_dump() for c in replayed.tool_calls] == [
        c.model_dump() for c in shown.tool_calls
    ]
    assert replayed.content == shown.content == "It is sunny."
    assert again.choices[0].finish_reason == first.choices[0].finish_reason
    assert usage == first_usage and usage["total_tokens"] > 0
    assert len(tool_server.calls) == 1
    assert len(upstream.chat_requests()) == 2  # the run's two model calls only


@pytest.mark.parametrize("stream", [False, True])
def test_a_live_run_taken_for_lost_stops_at_its_next_step_without_running_tools_twice(
    sdk, http, upstream, tool_server, monkeypatch, stream
):
    """A live run whose heartbeat stalled past services.LOST_AFTER (its touches blocked, or a
    single call in flight that long with none getting through) is taken over by its request
    sent again, which goes on with it. The original process, once its call returned, wrote its
    result over the new owner's state and went on calling the model and running tools: the
    same tools run twice, the run's record and its conversation the two runs' mixed. Now every
    claim gives the run a new owner, and the original's next write (its call's result, or
    before the next tool runs) finds the run another's: it stops there, writes and stores
    nothing, and its client is told (409 `run_taken_over`)."""
    import openai

    monkeypatch.setattr(services, "HEARTBEAT_EVERY", dt.timedelta(hours=1))  # a stalled beat
    agent = make_agent(http)
    make_tool(http, agent, tool_server.url + "/hold", name="hold")
    make_tool(http, agent, tool_server.url + "/weather")
    user = f"taken-over-{stream}"
    headers = {"x-user-id": user}
    if stream:
        upstream.script(Reply(stream=openai_tool_stream([tool_call("call_1", "hold", {})])))
    else:
        upstream.script(Reply(json=openai_completion(tool_calls=[tool_call("call_1", "hold", {})])))
    with ThreadPoolExecutor(1) as pool:
        try:
            if stream:
                original = pool.submit(
                    lambda: list(ask(sdk, agent, extra_headers=headers, stream=True))
                )
            else:
                original = pool.submit(ask, sdk, agent, extra_headers=headers)
            wait_for(lambda: [c["path"] for c in tool_server.calls] == ["/hold"])
            run = Execution.objects.get()
            Execution.objects.filter(id=run.id).update(heartbeat_at=_silent())
            # The retry's run: a call of the other tool, then its answer. Then what the
            # original would get, had it gone on: the same call again, and its own answer.
            script_call_then_answer(
                upstream, tool_call("call_2", "weather", {"city": "Oslo"}), answer="Retried."
            )
            went_on = [tool_call("call_3", "weather", {"city": "Oslo"})]
            upstream.script(
                Reply(stream=openai_tool_stream(went_on))
                if stream
                else Reply(json=openai_completion(tool_calls=went_on)),
                Reply(stream=openai_stream(["Original."]))
                if stream
                else Reply(json=openai_completion("Original.")),
            )
            again = ask(sdk, agent, extra_headers=headers | RETRY)
            assert again.choices[0].message.content == "Retried."
            assert engram(again)["execution_id"] == run.id
        finally:
            tool_server.release.set()
        with pytest.raises(openai.APIError) as raised:
            original.result()
    if not stream:
        assert isinstance(raised.value, openai.APIStatusError)
        assert raised.value.status_code == 409 and raised.value.code == "run_taken_over"
    assert [c["path"] for c in tool_server.calls] == ["/hold", "/weather"]
    assert len(upstream.chat_requests()) == 3  # the original's first call, the retry's two
    ended = Execution.objects.get(id=run.id)
    assert ended.status == "completed" and ended.messages[-1]["content"] == "Retried."
    tools = [(s["tool_call_id"], s["status"]) for s in ended.steps if s["type"] == "tool"]
    assert tools == [("call_1", "failed"), ("call_2", "completed")]  # call_1: interrupted
    wait_for(lambda: len(_stored(user)) == 6)
    assert _shape(_stored(user)) == [
        ("user", None, []),
        ("assistant", None, ["call_1"]),
        ("tool", "call_1", []),
        ("assistant", None, ["call_2"]),
        ("tool", "call_2", []),
        ("assistant", None, []),
    ]


@pytest.mark.parametrize("door", ["chat", "resume"])
def test_a_run_claimed_back_by_either_door_is_no_longer_its_last_process(
    sdk, http, upstream, tool_server, settings, door
):
    """A failed run goes on when its request is sent again: a chat request (its run failed
    after its tools ran) or a resume of its latest approval. The two doors claimed it back
    with twin compare-and-sets (execution_reclaim, approval_claim's _reclaimed) that had
    drifted apart; one claim now serves both, and gives the run a new owner: the process that
    ran it before (taken for lost while alive, say) can no longer write it."""
    settings.ENGRAM_UPSTREAM_RETRIES = 0  # the upstream's 500 fails the run
    agent = make_agent(http)
    make_tool(
        http,
        agent,
        tool_server.url + "/weather",
        approval="always" if door == "resume" else "never",
    )
    calls = [tool_call("call_1", "weather", {"city": "Oslo"})]
    upstream.script(
        Reply(json=openai_completion(tool_calls=calls)),
        Reply(status=500, json={"error": {"message": "down"}}),
        Reply(json=openai_completion("It is sunny.")),
    )
    headers = {"x-user-id": f"claimed-{door}"}
    if door == "resume":
        marks = engram(ask(sdk, agent, extra_headers=headers))
        body = {"approval_id": marks["approval_id"], "decision": "approve"}
        send_again = lambda: http.post("/v1/chat/resume", json=body, headers=headers)  # noqa: E731
    else:
        body = {"model": agent, "messages": [{"role": "user", "content": "Weather in Paris?"}]}
        send_again = lambda: http.post(  # noqa: E731
            "/v1/chat/completions", json=body, headers=headers | RETRY
        )
    assert send_again().status_code == 502  # its tool ran, then the upstream failed
    before = Execution.objects.get()  # as the process that failed it holds it
    assert before.status == "failed" and len(tool_server.calls) == 1

    again = send_again()

    assert again.status_code == 200, again.text
    assert again.json()["choices"][0]["message"]["content"] == "It is sunny."
    assert len(tool_server.calls) == 1
    ended = Execution.objects.get()
    assert ended.status == "completed" and ended.owner not in ("", before.owner)
    before.status, before.messages = "running", before.messages[:1]
    with pytest.raises(services.TakenOver):
        services.execution_save(execution=before)
    assert Execution.objects.get().messages == ended.messages


def _streamed(sdk, agent: str, headers: dict) -> tuple[str, list[dict], dict, dict]:
    """A streamed request's text, its `engram` marks of calls and results as sent, its last
    `engram` and its usage chunk's figures."""
    chunks = list(
        ask(
            sdk,
            agent,
            extra_headers=headers,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    marks = [c.model_extra["engram"] for c in chunks if "engram" in c.model_extra]
    usage = next(c.usage for c in reversed(chunks) if c.usage).model_dump()
    calls = [m for m in marks if "tool_call" in m or "tool_result" in m]
    return text, calls, marks[-1], usage


def test_the_replay_of_a_run_taken_over_is_the_answer_of_the_request_that_finished_it(
    sdk, http, upstream, tool_server
):
    """A run lost mid call is taken over by its request sent again, which runs a call of its
    own and answers; the client never gets that answer, and the SDK retries once more. The
    replay showed the first process's interrupted call (its `running` mark and its failed
    result) before the retry's, and a `usage` of the whole run (the first process's model call
    too), neither of which the answer it replays had. Now it is that answer: the same marks,
    the same usage, streamed or not; and it is charged nothing (its usage record holds no
    tokens, no credits)."""
    from completions.models import UsageRecord
    from completions.usage import buffer

    agent = make_agent(http)
    make_tool(http, agent, tool_server.url + "/slow")
    script_call_then_answer(upstream, tool_call("call_1", "weather", {"city": "Oslo"}))
    headers = {"x-user-id": "replayed-takeover"}
    lost, _ = _lost_mid_call(sdk, agent, headers)
    upstream.script(
        Reply(stream=openai_tool_stream([tool_call("call_2", "weather", {"city": "Rome"})])),
        Reply(stream=openai_stream(["Retried."])),
    )
    text, calls, marks, usage = _streamed(sdk, agent, headers | RETRY)
    assert text == "Retried." and marks["execution_id"] == lost.id
    assert [m.get("tool_call", m.get("tool_result"))["status"] for m in calls] == [
        "running",
        "completed",
    ]
    assert usage["total_tokens"] == 13 + 6  # the retry's two model calls, not the first's 18
    assert len(tool_server.calls) == 2  # call_1 by the first process, call_2 by the retry

    replayed_text, replayed_calls, replayed_marks, replayed_usage = _streamed(
        sdk, agent, headers | RETRY
    )
    assert replayed_marks["replayed"] is True and replayed_marks["credits_charged"] == 0
    assert replayed_text == text
    assert replayed_calls == calls  # call_2's mark and result only: not call_1's
    assert replayed_usage == usage

    again = ask(sdk, agent, extra_headers=headers | RETRY)
    assert engram(again)["replayed"] is True
    assert again.choices[0].message.content == "Retried."
    assert again.usage.model_dump() == usage

    assert len(tool_server.calls) == 2 and len(upstream.chat_requests()) == 4  # nothing run
    ids = [marks["request_id"], replayed_marks["request_id"], engram(again)["request_id"]]
    records = UsageRecord.objects.filter(request_id__in=ids)
    wait_for(lambda: buffer.flush() >= 0 and records.count() == 3)
    charged = {r.request_id: (r.total_tokens, r.credits) for r in records}
    assert charged[ids[0]][0] == 19  # the retry that answered: its own two calls
    assert charged[ids[1]] == charged[ids[2]] == (0, 0.0)


def _no_usage(reply: dict) -> dict:
    """An upstream answer without `usage` (some OpenAI-compatible servers send none)."""
    return {k: v for k, v in reply.items() if k != "usage"}


@pytest.mark.parametrize("stream", [False, True])
def test_an_answer_whose_upstream_reported_no_usage_is_replayed_with_the_usage_charged(
    sdk, http, upstream, tool_server, stream
):
    """The run's upstream reported no usage for either of its model calls. The answer carried
    a `usage` of zeros once, then none, and its replay none: Engram charged an estimate of
    each call (completions.charging.estimate), and the answer and its SDK retry's replay both
    carry that usage, the figures charged, never zeros nobody measured."""
    agent = make_agent(http)
    make_tool(http, agent, tool_server.url + "/weather")
    call = tool_call("call_1", "weather", {"city": "Oslo"})
    if stream:
        calling = [c for c in openai_tool_stream([call]) if not isinstance(c, dict) or c["choices"]]
        upstream.script(
            Reply(stream=calling), Reply(stream=openai_stream(["It is sunny."], usage=False))
        )
    else:
        upstream.script(
            Reply(json=_no_usage(openai_completion(tool_calls=[call]))),
            Reply(json=_no_usage(openai_completion("It is sunny."))),
        )
    headers = {"x-user-id": f"no-usage-{stream}"}

    def usage_of_answer(extra: dict) -> Any:
        if not stream:
            return ask(sdk, agent, extra_headers=headers | extra).usage
        chunks = list(
            ask(
                sdk,
                agent,
                extra_headers=headers | extra,
                stream=True,
                stream_options={"include_usage": True},
            )
        )
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        return next((c.usage for c in reversed(chunks) if c.usage), None)

    first = usage_of_answer({})
    replayed = usage_of_answer(RETRY)
    sent = [r.body["messages"] for r in upstream.chat_requests()]
    calls = [
        estimate(sent[0], {"tool_calls": [call]}),
        estimate(sent[1], {"content": "It is sunny."}),
    ]
    expected = {k: calls[0][k] + calls[1][k] for k in calls[0]}
    assert first is not None and first.model_dump(exclude_none=True) == expected
    assert replayed is not None and replayed.model_dump(exclude_none=True) == expected
    assert len(upstream.chat_requests()) == 2 and len(tool_server.calls) == 1
