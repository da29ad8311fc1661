"""A usage record falls in the period its limits were charged in: a request admitted before
midnight (or a month's end) and answered after it is recorded at its admission, not at its end.
At the service level, under a clock the test sets (the limiter's and the usage records')."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from accounts.limits import limiter
from accounts.limits.policy import Policy, Rule
from completions import charging, pricing, selectors, usage
from completions.models import Price, UsageRecord
from completions.turn import Turn
from completions.usage import buffer

MODEL = "period-model"
ADMITTED = datetime(2026, 1, 31, 23, 59, 59, 500_000, tzinfo=UTC)  # a month's last second
ENDED = datetime(2026, 2, 1, 0, 0, 2, tzinfo=UTC)  # the stream's end, in the next month
FEBRUARY = datetime(2026, 2, 1, tzinfo=UTC)


@pytest.fixture
def clock(monkeypatch):
    """The time the limiter and the usage records read: `clock[0]`."""
    now = [ADMITTED]
    monkeypatch.setattr(limiter, "_now_ms", lambda: int(now[0].timestamp() * 1000))
    monkeypatch.setattr(usage, "now", lambda: now[0])
    limiter.reset()
    yield now
    limiter.reset()


@pytest.mark.parametrize("limited", [True, False])
def test_a_stream_across_a_months_end_is_recorded_in_the_month_it_was_charged_in(
    owner, clock, limited
):
    workspace = owner[0]
    Price.objects.create(model=MODEL, input_per_million=1, output_per_million=1)
    pricing.prices_changed()  # each process caches the table
    policy = Policy(workspace=Rule(budget_micro=100 * 1_000_000, period="month"))

    async def request() -> Turn:
        turn = Turn(workspace=workspace, api_key_id=None, request_id="req-period", started=0.0)
        if limited:
            turn.charge.limits = policy
        body = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "stream": True}
        await charging.admit(
            turn.charge,
            workspace_id=workspace.id,
            key_id=None,
            user_id=None,
            request_id=turn.request_id,
            upstream_model=MODEL,
            provider="openai",
            body=body,
        )
        clock[0] = ENDED  # the answer streams past midnight
        turn.finish(
            status=200,
            assistant={"role": "assistant", "content": "Hello"},
            usage={"prompt_tokens": 400_000, "completion_tokens": 100_000, "total_tokens": 500_000},
        )
        await asyncio.sleep(0.05)  # the settle goes out with its loop turn
        return turn

    turn = asyncio.run(request())
    buffer.flush()
    record = UsageRecord.objects.get(request_id="req-period")
    assert record.created_at == ADMITTED  # when it was admitted, not when it ended
    assert record.credits == pytest.approx(0.5)
    # February's budget, seeded from the records, does not count January's answer again
    assert selectors.usage_credits_since(workspace=workspace, since=FEBRUARY) == 0
    if limited:
        assert turn.charge.admission is not None and turn.charge.admission.day.month == 1
