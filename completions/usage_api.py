"""GET /v1/usage: a workspace's usage over a time range, in total and per key, end user,
model or day — the figures the admin's usage page shows (completions.selectors); and
GET /metrics, the same activity for Prometheus (completions.metrics)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from django.http import HttpRequest, HttpResponse
from drf_spectacular.utils import OpenApiParameter, extend_schema
from prometheus_client import CONTENT_TYPE_LATEST
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.limits.selectors import credit_unit_get
from completions import selectors
from config.common.errors import ApiError, Invalid
from config.common.ids import ID_RULE, identifier, user_identifier
from config.common.openapi import ID_SCHEMA, const
from config.common.pagination import MAX_LIMIT, parse_cursor
from config.common.times import query_time

DEFAULT_DAYS = 30


def _days_before(moment: datetime, days: int) -> datetime:
    """`days` before `moment`, or the earliest time there is: an `end` in the first days of
    year 1 has no default `start` 30 days before it (it was a 500)."""
    try:
        return moment - timedelta(days=days)
    except OverflowError:
        return datetime.min.replace(tzinfo=UTC)


def _figures(row: dict) -> dict:
    def ms(value):
        return None if value is None else round(value, 1)

    return {
        "requests": row["requests"],
        "errors": row["errors"],
        "prompt_tokens": row["prompt_tokens"] or 0,
        "completion_tokens": row["completion_tokens"] or 0,
        "total_tokens": row["total_tokens"] or 0,
        "cached_tokens": row["cached_tokens"] or 0,
        "cache_write_tokens": row["cache_write_tokens"] or 0,
        "estimated_requests": row["estimated_requests"],
        "credits": round(row["credits"] or 0.0, 6),
        "latency_ms": {"p50": ms(row["latency_p50"]), "p95": ms(row["latency_p95"])},
    }


def _group(value) -> str:
    return value.date().isoformat() if isinstance(value, datetime) else (value or "")


def _figure_fields() -> dict[str, serializers.Field]:
    return {
        "requests": serializers.IntegerField(),
        "errors": serializers.IntegerField(help_text="Answers with a status of 400 or more."),
        "prompt_tokens": serializers.IntegerField(),
        "completion_tokens": serializers.IntegerField(),
        "total_tokens": serializers.IntegerField(),
        "cached_tokens": serializers.IntegerField(
            help_text="Of the prompt tokens: read from the upstream's cache."
        ),
        "cache_write_tokens": serializers.IntegerField(
            help_text="Of the prompt tokens: written to the upstream's cache (Anthropic)."
        ),
        "estimated_requests": serializers.IntegerField(
            help_text="Requests whose tokens are Engram's estimate, the upstream having "
            "reported no usage (a stream cut before it, a server that sends none): counted "
            "in the tokens above, as they were charged."
        ),
        "credits": serializers.FloatField(
            help_text="In the workspace's credit unit now (`credit_unit`): credits counted "
            "before a change of the unit are converted, keeping their value in USD."
        ),
        "latency_ms": serializers.DictField(child=serializers.FloatField(allow_null=True)),
    }


# Built with type(): `errors` and `data` are names a declared Serializer keeps for itself.
UsageFigures = type("UsageFiguresSerializer", (serializers.Serializer,), _figure_fields())
UsageGroup = type(
    "UsageGroupSerializer",
    (serializers.Serializer,),
    {
        "group": serializers.CharField(
            help_text="The key id, end user id, model, agent id or day (YYYY-MM-DD); empty for "
            "none (last in either order)."
        ),
        **_figure_fields(),
    },
)
UsageReport = type(
    "UsageReportSerializer",
    (serializers.Serializer,),
    {
        "object": const("usage"),
        "start": serializers.IntegerField(),
        "end": serializers.IntegerField(),
        "group_by": serializers.CharField(allow_null=True),
        "credit_unit": type(
            "UsageCreditUnitSerializer",
            (serializers.Serializer,),
            {
                "name": serializers.CharField(),
                "per_usd": serializers.FloatField(
                    help_text="Credits per USD: the unit every `credits` figure is in."
                ),
            },
        )(),
        "totals": UsageFigures(
            allow_null=True,
            help_text="Of every row in the range, whatever the group: on the first page only "
            "(no `after` or `before`), null on a page past a cursor (the whole range is read "
            "once, not on every page).",
        ),
        "data": UsageGroup(many=True),
        "first_id": serializers.CharField(allow_null=True, help_text="The page's first group."),
        "last_id": serializers.CharField(
            allow_null=True, help_text="The page's last group: `after` for the next page."
        ),
        "has_more": serializers.BooleanField(),
    },
)


# The filters of a report: query parameter -> the usage record's column. One customer's usage
# (an end user's, a key's) was only to be found by paging every group of the range.
NARROWS = {"key_id": "api_key_id", "user_id": "user_id", "model": "model"}


def _narrow(params) -> dict[str, str]:
    found = {}
    for param, column in NARROWS.items():
        raw = params.get(param)
        if raw is None:
            continue
        value = user_identifier(raw, param) if param == "user_id" else identifier(raw, param)
        if value is None:  # given empty: a client's unset variable, not "every one"
            raise Invalid(f"{param} must be {ID_RULE}.", field=param)
        found[column] = value
    return found


class UsageApi(APIView):
    @extend_schema(
        summary="Usage: tokens, requests, credits, errors and latency over a time range",
        tags=["usage"],
        parameters=[
            OpenApiParameter(
                "start", str, description="Unix seconds or ISO 8601 (default: 30 days ago)."
            ),
            OpenApiParameter("end", str, description="Unix seconds or ISO 8601 (default: now)."),
            OpenApiParameter("group_by", str, enum=list(selectors.USAGE_GROUPS)),
            OpenApiParameter("key_id", ID_SCHEMA, description="Only this API key's usage."),
            OpenApiParameter("user_id", ID_SCHEMA, description="Only this end user's usage."),
            OpenApiParameter("model", ID_SCHEMA, description="Only this model's usage."),
            OpenApiParameter(
                "limit",
                {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
                description=f"Groups per page, 1-{MAX_LIMIT} (default {MAX_LIMIT}).",
            ),
            OpenApiParameter(
                "order", str, enum=["asc", "desc"], description="By group (default asc)."
            ),
            OpenApiParameter(
                "after",
                ID_SCHEMA,
                description="The page after this group (a day as YYYY-MM-DD): `last_id`.",
            ),
            OpenApiParameter(
                "before",
                ID_SCHEMA,
                description="The page just before this group (has_more then says whether more "
                "precede it).",
            ),
        ],
        responses=UsageReport,
    )
    def get(self, request):
        now = datetime.now(UTC)
        params = request.query_params
        end = query_time(params.get("end"), "end") or now + timedelta(seconds=1)
        start = query_time(params.get("start"), "start") or _days_before(end, DEFAULT_DAYS)
        if start >= end:
            raise Invalid("start must be before end.", field="start")
        group_by = params.get("group_by") or None
        if group_by is not None and group_by not in selectors.USAGE_GROUPS:
            raise Invalid(
                f"group_by must be one of {', '.join(selectors.USAGE_GROUPS)}.", field="group_by"
            )
        cursor = parse_cursor(
            params,
            default_limit=MAX_LIMIT,
            default_order="asc",
            filters=("start", "end", "group_by", *NARROWS),
        )
        narrow = _narrow(params)
        if group_by is None and (cursor.after or cursor.before):
            # no groups, no pages: the totals came back as if the cursor were a page
            param = "after" if cursor.after else "before"
            raise Invalid(f"{param} pages the groups: give group_by too.", field=param)
        unit = credit_unit_get(workspace=request.workspace)
        per_usd = unit.per_usd if unit else Decimal(1)
        groups, has_more, totals = selectors.usage_summary(
            workspace=request.workspace,
            start=start,
            end=end,
            group_by=group_by,
            cursor=cursor,
            per_usd=per_usd,
            narrow=narrow,
        )
        data = [{"group": _group(g["group"]), **_figures(g)} for g in groups]
        return Response(
            {
                "object": "usage",
                "start": int(start.timestamp()),
                "end": int(end.timestamp()),
                "group_by": group_by,
                "credit_unit": {
                    "name": unit.name if unit else "credits",
                    "per_usd": float(per_usd),
                },
                "totals": None if totals is None else _figures(totals),
                "data": data,
                "first_id": data[0]["group"] if data else None,
                "last_id": data[-1]["group"] if data else None,
                "has_more": has_more,
            }
        )


def metrics_view(request: HttpRequest) -> HttpResponse:
    """GET /metrics: Prometheus's text format, for the operator key only (the scrape reads the
    database and Redis: not for every workspace key)."""
    from completions import metrics

    principal = getattr(request, "principal", None)
    if principal is None or not principal.is_operator:
        return ApiError(
            403, "/metrics needs the operator key.", type="permission_error", code="forbidden"
        ).response()
    if request.method != "GET":
        response = ApiError(405, "Method not allowed.", code="method_not_allowed").response()
        response["Allow"] = "GET"
        return response
    return HttpResponse(metrics.scrape(), content_type=CONTENT_TYPE_LATEST)
