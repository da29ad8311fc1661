"""Budgets when Redis loses its data (FLUSHALL, as a restart without persistence does) with the
real Redis: between requests, and between a request's reserve and its settle. The database's
usage records are the truth; the counter Redis keeps again must agree with them, and the
budget hold."""
# ruff: noqa: F811  (the fixture `metered` of tests/test_limits.py, imported by name)

from __future__ import annotations

import threading

import openai
import pytest
import redis
from django.conf import settings

from completions.models import UsageRecord
from completions.usage import buffer
from tests.completions_support import wait_for
from tests.test_limits import METERED, _budget_spent, ask, metered, patch_key  # noqa: F401
from tests.upstream import Reply, openai_completion, openai_stream

pytestmark = pytest.mark.usefixtures("limiter_awake")
HI = [{"role": "user", "content": "Hi"}]


def _data_lost() -> None:
    # This worker's database only: under pytest-xdist each worker has its own (FLUSHALL emptied
    # the others' in the middle of their tests: their leases and budgets vanished).
    redis.Redis.from_url(settings.REDIS_URL).flushdb()


def _spent_in_records(owner) -> int:
    buffer.flush()
    return round(
        sum(UsageRecord.objects.filter(workspace=owner[0]).values_list("credits", flat=True))
    )


def test_a_loss_between_requests_starts_the_budget_from_the_usage_records(
    sdk, operator_http, owner, key_id, metered
):
    """Nothing flushed by hand: the seed writes this process's buffered usage first."""
    patch_key(operator_http, owner, key_id, {"budget": {"credits": 10, "period": "day"}})
    assert ask(sdk, model=METERED, max_tokens=7).parse().model_extra["engram"]["credits_charged"]
    _data_lost()
    with pytest.raises(openai.RateLimitError) as info:  # 7 spent + 7 > 10
        ask(sdk, model=METERED, max_tokens=7)
    assert info.value.code == "insufficient_quota"
    ask(sdk, model=METERED, max_tokens=3)  # reserved 3; the upstream reports 7 used
    wait_for(lambda: _spent_in_records(owner) == 14)
    assert _budget_spent(owner, f"key:{key_id}:") == 14_000_000


def test_a_request_in_flight_across_a_loss_is_counted_once_on_the_new_count(
    sdk, operator_http, owner, key_id, metered, upstream
):
    """A stream reserved 7 credits; Redis lost its data; another request seeded the budget
    from the usage records (the stream's not among them yet) and spent 7; the stream ended
    having spent 2. Its settle gave its 5 unused credits back to a count that never held its
    reservation: the budget read 2 spent where the records say 9, and a third request of 7
    was served — 16 spent on a budget of 10. Now the settle sees the count was seeded again
    since and adds the 2 spent: 9, as the records say, and the third request is refused."""
    patch_key(operator_http, owner, key_id, {"budget": {"credits": 10, "period": "day"}})
    gate = threading.Event()
    upstream.script(
        Reply(stream=openai_stream(["a", "b"], model=METERED), gate=gate),  # 2 credits
        Reply(json=openai_completion("x", model=METERED)),  # 7 credits
    )
    stream = sdk.chat.completions.create(model=METERED, messages=HI, stream=True, max_tokens=7)
    try:
        next(iter(stream))  # reserved and answering, held at the gate
        _data_lost()
        assert ask(sdk, model=METERED, max_tokens=7).status_code == 200  # seeded: 0 + 7
    finally:
        gate.set()
    marks = [c.model_extra["engram"] for c in stream if (c.model_extra or {}).get("engram")]
    assert marks[-1]["credits_charged"] == 2

    wait_for(lambda: _spent_in_records(owner) == 9)
    wait_for(lambda: _budget_spent(owner, f"key:{key_id}:") == 9_000_000)
    with pytest.raises(openai.RateLimitError) as info:  # 9 + 7 > 10
        ask(sdk, model=METERED, max_tokens=7)
    assert info.value.code == "insufficient_quota"
    ask(sdk, model=METERED, max_tokens=1)  # what is left is still served
