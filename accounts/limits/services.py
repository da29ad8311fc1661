"""Writes of limits, budgets and the credit unit. Each change voids the key cache of every
process (accounts.authentication.keys_changed), where the request path reads limits from."""

from __future__ import annotations

from decimal import Decimal

from django.db import transaction
from django.utils import timezone

from accounts.authentication import keys_changed
from accounts.limits.models import CreditUnit, Limit, Period, Subject
from accounts.models import ApiKey, Workspace
from config.common.errors import Invalid, NotFound

RATE_FIELDS = ("rpm", "tpm", "max_concurrent")


@transaction.atomic
def limit_update(
    *,
    workspace: Workspace,
    subject: str,
    key_id: str | None = None,
    limits: dict | None = None,
    budget: dict | None = None,
) -> Limit:
    """Set the given fields (a None value removes that limit; absent fields are kept).
    `limits`: rpm, tpm, max_concurrent; `budget`: credits, period."""
    api_key = None
    if subject == Subject.API_KEY:
        api_key = ApiKey.objects.filter(workspace=workspace, id=key_id).first()
        if api_key is None:
            raise NotFound(f"No API key '{key_id}'.", field="key_id")
    row, _ = Limit.objects.select_for_update().get_or_create(
        workspace=workspace, subject=subject, api_key=api_key
    )
    had_budget, period = row.budget_credits is not None, row.budget_period
    for name, value in (limits or {}).items():
        if name not in RATE_FIELDS:
            raise Invalid(f"Unknown limit '{name}'.", field=f"limits.{name}")
        setattr(row, name, value)
    if budget:
        if "credits" in budget:
            credits = budget["credits"]
            row.budget_credits = None if credits is None else Decimal(str(credits))
        if "period" in budget:
            if budget["period"] not in Period.values:
                raise Invalid(
                    f"period must be one of {', '.join(Period.values)}.", field="budget.period"
                )
            row.budget_period = budget["period"]
    budget_count_restart(row, had_budget=had_budget, period=period)
    row.save()
    keys_changed()
    return row


def budget_count_restart(row: Limit, *, had_budget: bool, period: str) -> None:
    """Before `row` is saved: a budget set where there was none (`had_budget`), or moved from
    `period` to another, counts again from the usage records (Limit.budget_since). Nothing
    counted it meanwhile; a new amount, or a new rate, changes nothing of what was spent."""
    if row.budget_credits is not None and (not had_budget or row.budget_period != period):
        row.budget_since = timezone.now()


@transaction.atomic
def credit_unit_update(
    *, workspace: Workspace, name: str | None = None, per_usd: Decimal | None = None
) -> CreditUnit:
    """A new `per_usd` changes what a credit is worth, and what was spent keeps its value in
    USD: every budget of the workspace counts again (Limit.budget_since, a new Redis key) from
    the usage records, each converted from the unit it was counted in to the new one
    (completions.selectors.usage_credits_since). Kept, the count went on in the old unit: $7
    spent at 1 credit per USD was still 7 credits at 2 per USD, half what it was worth.

    As for any restart of a count, the requests in flight at the change are not in the new
    count until a later one (the next period's, or after Redis loses the key); a change of the
    unit is an operator's rare act."""
    unit, _ = CreditUnit.objects.select_for_update().get_or_create(workspace=workspace)
    if name is not None:
        unit.name = name
    if per_usd is not None and Decimal(per_usd) != unit.per_usd:
        unit.per_usd = per_usd
        budget_counts_restart(workspace=workspace)
    unit.save()
    keys_changed()
    return unit


def budget_counts_restart(*, workspace: Workspace) -> None:
    """Every budget of the workspace counts again from the usage records, in the credit unit
    now (credit_unit_update; the admin's change or deletion of a unit too)."""
    Limit.objects.filter(workspace=workspace, budget_credits__isnull=False).update(
        budget_since=timezone.now()
    )
