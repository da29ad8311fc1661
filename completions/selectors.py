"""Reads for the gateway: always scoped to a workspace."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from decimal import Decimal
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
from django.db.models.functions import Cast, Coalesce, TruncDay
from django.utils.timezone import localtime, make_aware

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
    per_usd: Decimal | None = None,
) -> float:
    """The credits the workspace's usage records hold since `since` (None: ever), narrowed to
    a key or an end user: what a budget's subject has spent (accounts.limits.limiter seeds
    Redis with it). With `per_usd` (the credit unit now), each record's credits converted from
    the unit they were counted in to that one: spent before a change of the unit, they keep
    their value in USD (a record without its unit is taken as in today's)."""
    records = UsageRecord.objects.filter(workspace=workspace)
    if since is not None:
        records = records.filter(created_at__gte=since)
    if api_key_id is not None:
        records = records.filter(api_key_id=api_key_id)
    if user_id is not None:  # and what they spent before an erasure (services.user_forget)
        workspace_id = workspace if isinstance(workspace, str) else workspace.id
        erased = erased_user_id(workspace_id=workspace_id, user_id=user_id)
        records = records.filter(user_id__in=(user_id, erased))
    return records.aggregate(total=credits_sum(per_usd=per_usd))["total"] or 0.0


def credits_sum(*, per_usd: Decimal | None) -> Sum:
    """The sum of the records' credits, each converted from the unit it was counted in (its
    `credits_per_usd`) to `per_usd` (the workspace's unit now; a record without its unit is
    taken as in that one); None: as counted, whatever their units. One rule for the budgets'
    seed and the usage report."""
    if per_usd is None:
        return Sum("credits")
    now = Value(float(per_usd), output_field=FloatField())
    then = Coalesce(Cast("credits_per_usd", FloatField()), now)
    return Sum(F("credits") * now / then, output_field=FloatField())


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


def usage_figures(queryset: QuerySet[UsageRecord], *, per_usd: Decimal | None = None) -> dict:
    """Requests, errors, tokens, credits and latency of the rows; the API and the admin share it.
    `per_usd`: the credits in that unit (credits_sum); the API's are in the workspace's unit
    now."""
    return {
        "requests": Count("id"),
        "errors": Count("id", filter=Q(status_code__gte=400)),
        "prompt_tokens": Sum("prompt_tokens"),
        "completion_tokens": Sum("completion_tokens"),
        "total_tokens": Sum("total_tokens"),
        "cached_tokens": Sum("cached_tokens"),
        "cache_write_tokens": Sum("cache_write_tokens"),
        "estimated_requests": Count("id", filter=Q(usage_estimated=True)),
        "credits": credits_sum(per_usd=per_usd),
        "latency_mean": Avg("latency_ms"),
        "latency_p50": Percentile("latency_ms", 0.5),
        "latency_p95": Percentile("latency_ms", 0.95),
    }


def usage_summary(
    *,
    workspace: Workspace,
    start: datetime,
    end: datetime,
    group_by: str | None,
    cursor: Cursor,
    per_usd: Decimal | None = None,
    narrow: dict[str, str] | None = None,
) -> tuple[list[dict], bool, dict | None]:
    """(one page of the groups, whether more follow, the totals) of usage in [start, end),
    credits in the unit `per_usd` (usage_figures), of the records whose columns have the
    values `narrow` gives (a key's, an end user's, a model's).

    Paged as every list is, a group its own cursor (a day as YYYY-MM-DD): aggregated whole, a
    workspace with 500,000 end users was one answer of 500,000 rows. The group "" (no key,
    user or agent) comes last in either order: "" is no cursor (an absent one), so first, in
    a page of one, it gave that page again for ever. A page's query reads the page's groups
    only (`_usage_keyed`, `_usage_days`).

    The totals are the whole range's, so they are read on the first page only (no `after` or
    `before`) and are None on a page past a cursor: read on every page, one pass over the range
    with its percentiles (2.9 s on 1,000,000 records) was most of each page's cost, and a client
    paging through has them from the first page (Stripe's list pages carry no total count by
    default, OpenAI's organization usage pages of buckets no totals at all)."""
    rows = usage_record_list(workspace=workspace).filter(created_at__gte=start, created_at__lt=end)
    rows = rows.filter(**(narrow or {})).order_by()
    figures = usage_figures(rows, per_usd=per_usd)
    if group_by is None:  # the totals are the whole answer: no groups, no pages
        return [], False, rows.aggregate(**figures)
    first_page = not (cursor.after or cursor.before)
    totals = rows.aggregate(**figures) if first_page else None
    if group_by == "day":
        groups = _usage_days(rows, figures=figures, cursor=cursor, start=start, end=end)
    else:
        groups = _usage_keyed(rows, figures=figures, cursor=cursor, column=USAGE_GROUPS[group_by])
    return *cursor.page(groups), totals


def _usage_keyed(
    rows: QuerySet[UsageRecord], *, figures: dict, cursor: Cursor, column: str
) -> list[dict]:
    """Up to limit + 1 groups of `column` in the order read, then the group "" if there is
    room. The keyset (the column past the cursors, "" apart) and the LIMIT are in the SQL, and
    the rows are grouped by the bare column, which the index `usage_user` reads in order for
    end users (the column with many groups), so the aggregation ends at the page's last
    group. Grouped by NULLIF(column, '') to put "" last, every group of the range was
    aggregated and sorted before the LIMIT, on every page. Keys, models and agents are few:
    their first page is usually the range's every group."""
    forward, backward = cursor.directions
    keyed = rows.exclude(**{column: ""})
    if cursor.after:
        keyed = keyed.filter(**{f"{column}__{forward}": cursor.after})
    if cursor.before:
        keyed = keyed.filter(**{f"{column}__{backward}": cursor.before})
    wanted = cursor.limit + 1
    read = keyed.values(column).annotate(**figures).order_by(cursor.order_by(column))
    groups = [{"group": g.pop(column), **g} for g in read[:wanted]]
    if cursor.before or len(groups) == wanted:  # "" is last: never before a cursor
        return groups
    unkeyed = rows.filter(**{column: ""})
    if len(groups) == cursor.limit:  # "" is past the page: only whether it is there
        if unkeyed.exists():
            groups.append({"group": ""})
    elif (found := unkeyed.aggregate(**figures))["requests"]:
        groups.append({"group": "", **found})
    return groups


def _usage_days(
    rows: QuerySet[UsageRecord], *, figures: dict, cursor: Cursor, start: datetime, end: datetime
) -> list[dict]:
    """Up to limit + 1 days in the order read. A cursor's day bounds the range read (the
    index on (workspace, created_at)); each query then reads from the next day with a row to
    as many calendar days on as are still wanted, again past days without rows if it found
    too few: never more than the page's days (grouped by TruncDay over the rest of the range,
    every later day was aggregated on every page)."""
    ascending = cursor.order == "asc"
    low, high = start, end
    if cursor.after:
        after = _usage_day(cursor.after, "after")
        if ascending:
            low = max(low, _midnight(after, days=1) or high)
        else:
            high = min(high, _midnight(after) or low)
    if cursor.before:
        before = _usage_day(cursor.before, "before")
        if ascending:
            high = min(high, _midnight(before) or low)
        else:
            low = max(low, _midnight(before, days=1) or high)
    forwards = cursor.order_by("group") == "group"  # the order read
    wanted = cursor.limit + 1
    days: list[dict] = []
    while len(days) < wanted and low < high:
        left = rows.filter(created_at__gte=low, created_at__lt=high)
        edge = left.order_by("created_at" if forwards else "-created_at")
        moment = edge.values_list("created_at", flat=True).first()
        if moment is None:
            break
        first, more = localtime(moment).date(), wanted - len(days)
        if forwards:
            window = (low, min(high, _midnight(first, days=more) or high))
            low = window[1]
        else:
            window = (max(low, _midnight(first, days=1 - more) or low), high)
            high = window[0]
        read = (
            rows.filter(created_at__gte=window[0], created_at__lt=window[1])
            .annotate(group=TruncDay("created_at"))
            .values("group")
            .annotate(**figures)
            .order_by("group" if forwards else "-group")
        )
        days.extend(read[:more])
    return days


def _midnight(day: date, *, days: int = 0) -> datetime | None:
    """The start of `days` after `day` in the current time zone (TruncDay's); None past the
    calendar's end either way."""
    try:
        return make_aware(datetime.combine(day + timedelta(days=days), time()))
    except (OverflowError, ValueError):
        return None


def _usage_day(value: str, param: str) -> date:
    try:
        day = date.fromisoformat(value)
    except ValueError:
        raise Invalid(
            f"{param} must be a day (YYYY-MM-DD) with group_by=day.", field=param
        ) from None
    return day
