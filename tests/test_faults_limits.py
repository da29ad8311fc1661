"""Faults with limits and budgets set, over HTTP with real processes (tests/stack.py): Redis
killed under a request that reserved its credits."""

from __future__ import annotations

import re
import time
from decimal import Decimal

import redis as redis_client

from accounts.limits.models import Subject
from accounts.limits.services import credit_unit_update, limit_update
from accounts.models import ApiKey
from completions.models import Price, UsageRecord
from memory.models import Memory, Message, ProcessingJob
from tests.stack import TcpProxy, wait_until
from tests.test_faults import client, running_stack
from tests.upstream import Reply, openai_stream


def _budget_spent(store: redis_client.Redis) -> int | None:
    """The micro-credits the key's budget key holds (None: no key)."""
    keys = [k for k in store.scan_iter("engram:lim:*:bud:*") if not k.endswith(b":seed")]
    (key,) = keys or [None]  # not the name of its seed, beside it
    return None if key is None else int(store.get(key) or 0)


def test_redis_killed_mid_stream_settles_the_budget_to_what_was_spent_once_back(
    tmp_path, owner, _upstream_server
):
    """Redis, keeping its data (append-only, as the embedded one), killed while a budgeted
    stream is answered and started again: the stream ends whole, the turn is stored and
    extracted, the next request is refused 503 while Redis is down and served once it is back,
    and the budget then holds what the usage records say was spent. The answer's settle failed
    (Redis down) and was dropped: the reservation — the prompt's estimate and max_tokens at the
    model's price, 615.75 credits for a 12.75-credit answer — stood as spent for the rest of
    the day."""
    workspace, raw_key = owner
    key_id = ApiKey.objects.get(workspace=workspace).id
    Price.objects.update_or_create(  # the default price, whatever a test before left
        model="gpt-4o-mini",
        defaults={"input_per_million": Decimal("0.15"), "output_per_million": Decimal("0.6")},
    )
    credit_unit_update(workspace=workspace, per_usd=Decimal(1_000_000))  # figures worth reading
    limit_update(
        workspace=workspace,
        subject=Subject.API_KEY,
        key_id=key_id,
        limits={"max_concurrent": 5},
        budget={"credits": 1_000_000, "period": "day"},
    )
    _upstream_server.reset()
    pieces = [f"piece {i} " for i in range(20)]
    _upstream_server.script(Reply(stream=openai_stream(pieces), delay=0.1))
    with running_stack(
        tmp_path,
        append_only=True,
        OPENAI_BASE_URL=_upstream_server.url + "/v1",
        OPENAI_API_KEY="sk-upstream-test",
    ) as stack:
        stack.web()
        stack.worker()
        stack.beat()
        headers = {"x-user-id": "ana", "x-conversation-id": "cut"}
        body = {"model": "gpt-4o-mini", "stream": True}
        body["messages"] = [{"role": "user", "content": "I live in Lisbon."}]
        frames: list[str] = []
        with client(stack, raw_key, **headers) as http:
            with http.stream("POST", "/v1/chat/completions", json=body) as response:
                for line in response.iter_lines():
                    if line.startswith("data: "):
                        frames.append(line)
                        if len(frames) == 3:  # reserved, answering
                            stack.redis.stop()
            assert response.status_code == 200 and frames[-1] == "data: [DONE]"
            assert '"credits_charged":12.75' in frames[-2]
            time.sleep(1.2)  # the limiter rests a second after a failure

            refused = http.post(
                "/v1/chat/completions",
                json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]},
            )
            assert refused.status_code == 503, refused.text
            assert refused.headers["retry-after"] == "1"
            assert refused.json()["error"]["code"] == "limits_unavailable"

            stack.redis.start()
            time.sleep(1.2)
            served = http.post(
                "/v1/chat/completions",
                json={
                    "model": "gpt-4o-mini",
                    "messages": [{"role": "user", "content": "I love jazz."}],
                },
            )
            assert served.status_code == 200, served.text

        answered = UsageRecord.objects.filter(status_code=200)
        wait_until(lambda: answered.count() == 2, timeout=20, what="two usage records")
        spent = round(sum(c or 0.0 for c in answered.values_list("credits", flat=True)) * 1_000_000)
        assert spent == 18_600_000  # 12.75 + 5.85
        store = redis_client.Redis.from_url(stack.redis.url)
        wait_until(
            lambda: _budget_spent(store) == spent,
            timeout=10,
            what=f"the budget at {spent} micro-credits, not {_budget_spent(store)}",
        )
        leases = list(store.scan_iter("engram:lim:*:conc"))
        assert all(store.zcard(key) == 0 for key in leases)  # both slots given back

        stored = Message.objects.filter(conversation__external_id="cut")
        answers = list(stored.filter(role="assistant").values_list("content", flat=True))
        assert sorted(answers) == sorted(["".join(pieces), "echo: I love jazz."])
        wait_until(
            lambda: Memory.objects.filter(user_id="ana", text="User lives in Lisbon.").exists(),
            timeout=60,
            what="the turn extracted",
        )
        # Every turn's job is done in the end: one enqueued while Redis was down waits for
        # the sweep, and a loaded machine can still hold the other when the first is extracted.
        wait_until(
            lambda: set(ProcessingJob.objects.values_list("status", flat=True)) == {"done"},
            timeout=60,
            what="every turn's job done",
        )


def test_usage_written_but_unacknowledged_when_the_database_went_is_counted_once(
    transactional_db, tmp_path, owner
):
    """The database commits a flush of usage records, and the connection is lost before its
    acknowledgement reaches the web process (a restart, a network cut at that instant): the
    flush failed as far as the process knows, and it kept the records for the next flush,
    which wrote them again — each of those requests counted, and charged, twice."""
    from django.db import connection

    workspace, raw_key = owner
    proxy = TcpProxy(int(connection.settings_dict["PORT"])).start()
    try:
        with running_stack(tmp_path, host="127.0.0.1", port=proxy.port) as stack:
            stack.web()
            body = {"model": "local", "messages": [{"role": "user", "content": "Hi"}]}
            records = UsageRecord.objects.filter(workspace=workspace)
            with client(stack, raw_key) as http:
                assert http.post("/v1/chat/completions", json=body).status_code == 200
                wait_until(lambda: records.count() == 1, timeout=20, what="the first record")

                # The next COPY commits; its "COPY 1" never reaches the web process.
                proxy.swallow_after = re.compile(rb"C\x00\x00\x00.COPY \d+\x00", re.DOTALL)
                answered = http.post("/v1/chat/completions", json=body)
                assert answered.status_code == 200, answered.text
                request_id = answered.headers["x-request-id"]
                proxy.swallowed.wait(timeout=20)
                assert proxy.swallowed.is_set(), stack.log("web")
                mine = records.filter(request_id=request_id)
                wait_until(lambda: mine.count() == 1, timeout=20, what="the commit made")

                proxy.swallow_after = None
                proxy.cut()  # the connection lost before its acknowledgement
                proxy.start()
                later = http.post("/v1/chat/completions", json=body)
                assert later.status_code == 200, later.text
                # records are flushed in order: the kept ones go before this one
                last = records.filter(request_id=later.headers["x-request-id"])
                wait_until(lambda: last.count() == 1, timeout=30, what="the next flush")
            assert "usage flush failed" in stack.log("web")
            assert mine.count() == 1
            assert records.count() == 3
    finally:
        proxy.cut()
