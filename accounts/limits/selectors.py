from __future__ import annotations

from decimal import Decimal

from django.db.models import Q

from accounts.limits.models import CreditUnit, Limit, Subject
from accounts.limits.policy import NO_RULE, Policy, rule_of
from accounts.models import Workspace


def limit_policy(*, workspace: Workspace, key_id: str | None) -> Policy:
    """The limits that apply to requests made with `key_id` (one query, and one for the credit
    unit), loaded with the key's lookup (accounts.authentication), never per request."""
    mine = Q(api_key__isnull=True) | Q(api_key_id=key_id) if key_id else Q(api_key__isnull=True)
    rows = Limit.objects.filter(mine, workspace=workspace)
    rules = {row.subject: rule_of(row) for row in rows}
    unit = CreditUnit.objects.filter(workspace=workspace).first()
    return Policy(
        workspace=rules.get(Subject.WORKSPACE, NO_RULE),
        key=rules.get(Subject.API_KEY, NO_RULE),
        end_user=rules.get(Subject.END_USER, NO_RULE),
        credits_per_usd=unit.per_usd if unit else Decimal(1),
        credit_unit=unit.name if unit else "credits",
    )


def limit_get(*, workspace: Workspace, subject: str, key_id: str | None = None) -> Limit | None:
    if subject == Subject.API_KEY:
        return Limit.objects.filter(workspace=workspace, api_key_id=key_id).first()
    return Limit.objects.filter(workspace=workspace, subject=subject, api_key__isnull=True).first()


def credit_unit_get(*, workspace: Workspace) -> CreditUnit | None:
    return CreditUnit.objects.filter(workspace=workspace).first()
