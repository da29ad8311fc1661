"""Limits in the provisioning API: the serializers and bodies that `PATCH /v1/workspaces/{id}`
and `PATCH /v1/workspaces/{id}/api_keys/{key_id}` share (accounts.apis holds the views)."""

from __future__ import annotations

from django.db import transaction
from rest_framework import serializers

from accounts.limits import selectors, services
from accounts.limits.models import MAX_CREDITS, MAX_PER_USD, MIN_PER_USD, Limit, Period, Subject
from accounts.models import Workspace
from config.common.closed import ClosedSerializer

# The columns' range (PositiveIntegerField).
MAX_RATE = 2_147_483_647


def _rate() -> serializers.IntegerField:
    return serializers.IntegerField(
        min_value=1, max_value=MAX_RATE, allow_null=True, required=False
    )


class RateInput(ClosedSerializer):
    rpm = _rate()
    tpm = _rate()
    max_concurrent = _rate()


class BudgetInput(ClosedSerializer):
    credits = serializers.DecimalField(
        max_digits=20,
        decimal_places=6,
        min_value=0,
        max_value=MAX_CREDITS,
        allow_null=True,
        required=False,
    )
    period = serializers.ChoiceField(choices=Period.values, required=False)


class CreditUnitInput(ClosedSerializer):
    name = serializers.CharField(max_length=40, required=False)
    per_usd = serializers.DecimalField(
        max_digits=20,
        decimal_places=6,
        min_value=MIN_PER_USD,
        max_value=MAX_PER_USD,
        required=False,
    )


# Each group may be null, which removes every limit in it (as `{"rpm": null}` removes one):
# `end_user_limits: null` was a 400, though the rule is "a limit set to null is removed".
class KeyLimitsInput(ClosedSerializer):
    limits = RateInput(required=False, allow_null=True)
    budget = BudgetInput(required=False, allow_null=True)


class WorkspaceLimitsInput(KeyLimitsInput):
    name = serializers.CharField(max_length=200, required=False)
    end_user_limits = RateInput(required=False, allow_null=True)
    end_user_budget = BudgetInput(required=False, allow_null=True)
    credit_unit = CreditUnitInput(required=False)


NO_RATES = dict.fromkeys(services.RATE_FIELDS)
NO_BUDGET = {"credits": None}


def _given(data: dict, group: str) -> dict | None:
    """limit_update's `limits` or `budget` from a body's group: null removes each limit in
    it; left out, None (kept)."""
    if group in data and data[group] is None:
        return NO_BUDGET if group.endswith("budget") else NO_RATES
    return data.get(group)


def _rates(row: Limit | None) -> dict:
    return {name: getattr(row, name, None) for name in services.RATE_FIELDS}


def _budget(row: Limit | None) -> dict:
    credits = row.budget_credits if row else None
    return {
        "credits": None if credits is None else float(credits),
        "period": row.budget_period if row else Period.MONTH,
    }


def key_limits_body(*, workspace: Workspace, key_id: str) -> dict:
    row = selectors.limit_get(workspace=workspace, subject=Subject.API_KEY, key_id=key_id)
    return {"limits": _rates(row), "budget": _budget(row)}


def workspace_limits_body(*, workspace: Workspace) -> dict:
    own = selectors.limit_get(workspace=workspace, subject=Subject.WORKSPACE)
    users = selectors.limit_get(workspace=workspace, subject=Subject.END_USER)
    unit = selectors.credit_unit_get(workspace=workspace)
    return {
        "limits": _rates(own),
        "budget": _budget(own),
        "end_user_limits": _rates(users),
        "end_user_budget": _budget(users),
        "credit_unit": {
            "name": unit.name if unit else "credits",
            "per_usd": float(unit.per_usd) if unit else 1.0,
        },
    }


@transaction.atomic
def apply_workspace(*, workspace: Workspace, data: dict) -> None:
    if "limits" in data or "budget" in data:
        services.limit_update(
            workspace=workspace,
            subject=Subject.WORKSPACE,
            limits=_given(data, "limits"),
            budget=_given(data, "budget"),
        )
    if "end_user_limits" in data or "end_user_budget" in data:
        services.limit_update(
            workspace=workspace,
            subject=Subject.END_USER,
            limits=_given(data, "end_user_limits"),
            budget=_given(data, "end_user_budget"),
        )
    if "credit_unit" in data:
        unit = data["credit_unit"]
        services.credit_unit_update(
            workspace=workspace, name=unit.get("name"), per_usd=unit.get("per_usd")
        )


def apply_key(*, workspace: Workspace, key_id: str, data: dict) -> None:
    services.limit_update(
        workspace=workspace,
        subject=Subject.API_KEY,
        key_id=key_id,
        limits=_given(data, "limits"),
        budget=_given(data, "budget"),
    )
