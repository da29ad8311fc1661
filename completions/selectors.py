"""Reads for the gateway: always scoped to a workspace."""

from __future__ import annotations

from datetime import date, datetime, time
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
    Value,
)
from django.db.models.functions import NullIf, TruncDay
from django.utils.timezone import make_aware

from accounts.models import Workspace
from completions.models import ModelAlias, ProviderCredential, UsageRecord
from completions.services import erased_user_id
from config.common.errors import Invalid
from config.common.pagination import Cursor


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
        "cached_tokens": Sum("cached_tokens"),
        "cache_write_tokens": Sum("cache_write_tokens"),
        "credits": Sum("credits"),
        "latency_mean": Avg("latency_ms"),
        "latency_p50": Percentile("latency_ms", 0.5),
        "latency_p95": Percentile("latency_ms", 0.95),
    }


def usage_summary(
    *, workspace: Workspace, start: datetime, end: datetime, group_by: str | None, cursor: Cursor
) -> tuple[list[dict], bool, dict]:
    """(one page of the groups, whether more follow, the totals) of usage in [start, end).

    Paged as every list is, a group its own cursor (a day as YYYY-MM-DD): aggregated whole, a
    workspace with 500,000 end users was one answer of 500,000 rows. The group "" (no key,
    user or agent) comes last in either order: "" is no cursor (an absent one), so first, in
    a page of one, it gave that page again for ever."""
    rows = usage_record_list(workspace=workspace).filter(created_at__gte=start, created_at__lt=end)
    figures = usage_figures(rows)
    totals = rows.order_by().aggregate(**figures)
    if group_by is None:
        return [], False, totals
    column = USAGE_GROUPS[group_by]
    forward, backward = cursor.directions
    if column == "day":
        rows = rows.annotate(day=TruncDay("created_at"), group=F("day"))
        none = Q(pk__in=[])  # every row has a day
    else:
        rows = rows.annotate(group=NullIf(column, Value("")))
        none = Q(**{column: ""})
    if cursor.after:
        after = _usage_cursor(group_by, cursor.after, "after")
        rows = rows.filter(Q(**{f"{column}__{forward}": after}) | none)
    if cursor.before:
        before = _usage_cursor(group_by, cursor.before, "before")
        rows = rows.filter(Q(**{f"{column}__{backward}": before}) & ~none)
    order = F("group").asc if cursor.order_by("group") == "group" else F("group").desc
    groups = rows.order_by().values("group").annotate(**figures).order_by(order(nulls_last=True))
    return *cursor.page(list(groups[: cursor.limit + 1])), totals


def _usage_cursor(group_by: str, value: str, param: str) -> str | datetime:
    if group_by != "day":
        return value
    try:
        return make_aware(datetime.combine(date.fromisoformat(value), time()))
    except ValueError:
        raise Invalid(
            f"{param} must be a day (YYYY-MM-DD) with group_by=day.", field=param
        ) from None
