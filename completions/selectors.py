"""Reads for the gateway: always scoped to a workspace."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db.models import (
    Aggregate,
    Avg,
    Count,
    F,
    FloatField,
    Q,
    QuerySet,
    Sum,
)
from django.db.models.functions import TruncDay

from accounts.models import Workspace
from completions.models import ModelAlias, ProviderCredential, UsageRecord
from completions.services import erased_user_id


def model_alias_list(*, workspace: Workspace | str) -> QuerySet[ModelAlias]:
    return ModelAlias.objects.filter(workspace=workspace).order_by("alias")


def provider_credential_list(*, workspace: Workspace | str) -> QuerySet[ProviderCredential]:
    return ProviderCredential.objects.filter(workspace=workspace)


def usage_record_list(*, workspace: Workspace | str) -> QuerySet[UsageRecord]:
    return UsageRecord.objects.filter(workspace=workspace).order_by("-created_at")


def usage_credits_since(
    *,
    workspace: Workspace | str,
    since: datetime | None,
    api_key_id: str | None = None,
    user_id: str | None = None,
) -> float:
    """The credits the workspace's usage records hold since `since` (None: ever), narrowed to
    a key or an end user: what a budget's subject has spent (accounts.limits.limiter seeds
    Redis with it)."""
    records = UsageRecord.objects.filter(workspace=workspace)
    if since is not None:
        records = records.filter(created_at__gte=since)
    if api_key_id is not None:
        records = records.filter(api_key_id=api_key_id)
    if user_id is not None:  # and what they spent before an erasure (services.user_forget)
        workspace_id = workspace if isinstance(workspace, str) else workspace.id
        erased = erased_user_id(workspace_id=workspace_id, user_id=user_id)
        records = records.filter(user_id__in=(user_id, erased))
    return records.aggregate(total=Sum("credits"))["total"] or 0.0


class Percentile(Aggregate):
    function = "PERCENTILE_CONT"
    template = "%(function)s(%(fraction)s) WITHIN GROUP (ORDER BY %(expressions)s)"
    output_field = FloatField()

    def __init__(self, expression: str, fraction: float, **extra: Any) -> None:
        super().__init__(expression, fraction=float(fraction), **extra)


# What usage can be grouped by: the record's column for each name.
USAGE_GROUPS = {
    "key": "api_key_id",
    "user": "user_id",
    "model": "model",
    "agent": "agent_id",
    "day": "day",
}


def usage_figures(queryset: QuerySet[UsageRecord]) -> dict:
    """Requests, errors, tokens, credits and latency of the rows; the API and the admin share it."""
    return {
        "requests": Count("id"),
        "errors": Count("id", filter=Q(status_code__gte=400)),
        "prompt_tokens": Sum("prompt_tokens"),
        "completion_tokens": Sum("completion_tokens"),
        "total_tokens": Sum("total_tokens"),
        "credits": Sum("credits"),
        "latency_mean": Avg("latency_ms"),
        "latency_p50": Percentile("latency_ms", 0.5),
        "latency_p95": Percentile("latency_ms", 0.95),
    }


def usage_summary(
    *, workspace: Workspace, start: datetime, end: datetime, group_by: str | None
) -> tuple[list[dict], dict]:
    """(one row per group, ordered by the group; the totals) of usage in [start, end)."""
    rows = usage_record_list(workspace=workspace).filter(created_at__gte=start, created_at__lt=end)
    figures = usage_figures(rows)
    totals = rows.order_by().aggregate(**figures)
    if group_by is None:
        return [], totals
    column = USAGE_GROUPS[group_by]
    if column == "day":
        rows = rows.annotate(day=TruncDay("created_at"))
    groups = list(rows.order_by().values(group=F(column)).annotate(**figures).order_by("group"))
    return groups, totals
