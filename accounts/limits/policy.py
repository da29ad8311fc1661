"""What the request path knows of a workspace's limits: frozen values, loaded with the key
(accounts.authentication keeps them in the Principal, in the one key cache, kept coherent
across processes), so checking limits costs no database query."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

MICRO = 1_000_000  # budgets are counted in Redis as integer micro-credits: exact sums


@dataclass(frozen=True)
class Rule:
    rpm: int | None = None
    tpm: int | None = None
    max_concurrent: int | None = None
    budget_micro: int | None = None  # credits * MICRO
    period: str = "month"
    # When its budget's count last started (epoch ms; Limit.budget_since), part of the budget's
    # Redis key: a budget set again starts its count again from the usage records. One removed
    # and set again, or switched to another period and back, kept the count it had before and
    # missed what was spent meanwhile. It was the row's last change: a new rpm started the
    # count again too, without the reservations of the requests in flight, which were served
    # past the budget.
    version: int = 0

    @property
    def empty(self) -> bool:
        return not (self.rpm or self.tpm or self.max_concurrent) and self.budget_micro is None

    @property
    def has_budget(self) -> bool:
        return self.budget_micro is not None

    @property
    def has_rate(self) -> bool:
        return bool(self.rpm or self.tpm or self.max_concurrent)


NO_RULE = Rule()


@dataclass(frozen=True)
class Policy:
    workspace: Rule = NO_RULE
    key: Rule = NO_RULE
    end_user: Rule = NO_RULE  # the default of each end user
    credits_per_usd: Decimal = Decimal(1)
    credit_unit: str = "credits"

    @property
    def empty(self) -> bool:
        return self.workspace.empty and self.key.empty and self.end_user.empty


NO_POLICY = Policy()


def rule_of(row) -> Rule:
    """A Limit row as a Rule."""
    budget = row.budget_credits
    return Rule(
        rpm=row.rpm or None,
        tpm=row.tpm or None,
        max_concurrent=row.max_concurrent or None,
        budget_micro=None if budget is None else int(Decimal(budget) * MICRO),
        period=row.budget_period,
        version=int(row.budget_since.timestamp() * 1000) if row.budget_since else 0,
    )
