"""OpenAI-style lists: {"object": "list", "data": [...], "first_id", "last_id", "has_more"}.

Cursor pagination by id: Engram's ids sort by creation time, so `after=<id>` is stable.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from django.db.models import QuerySet

from config.common.errors import ApiError
from config.common.ids import identifier

MAX_LIMIT = 100


def parse_limit(raw: str | None, *, default: int = 20) -> int:
    if raw is None or raw == "":
        return default
    try:
        limit = int(raw)
    except ValueError:
        raise ApiError(
            400, "limit must be an integer.", param="limit", code="invalid_value"
        ) from None
    if not 1 <= limit <= MAX_LIMIT:
        raise ApiError(
            400, f"limit must be between 1 and {MAX_LIMIT}.", param="limit", code="invalid_value"
        )
    return limit


def list_body(items: Iterable, serialize: Callable, *, has_more: bool = False) -> dict:
    data = [serialize(item) for item in items]
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data and "id" in data[0] else None,
        "last_id": data[-1]["id"] if data and "id" in data[-1] else None,
        "has_more": has_more,
    }


def paginate(queryset: QuerySet, query_params, serialize: Callable) -> dict:
    """`limit`, `after`, `before` and `order` (asc|desc) as in OpenAI's list endpoints."""
    limit = parse_limit(query_params.get("limit"))
    order = query_params.get("order", "desc")
    if order not in ("asc", "desc"):
        raise ApiError(400, "order must be 'asc' or 'desc'.", param="order", code="invalid_value")
    queryset = queryset.order_by("id" if order == "asc" else "-id")
    after, before = (identifier(query_params.get(n), n) for n in ("after", "before"))
    if after:
        queryset = (
            queryset.filter(id__gt=after) if order == "asc" else queryset.filter(id__lt=after)
        )
    if before:
        queryset = (
            queryset.filter(id__lt=before) if order == "asc" else queryset.filter(id__gt=before)
        )
    rows = list(queryset[: limit + 1])
    return list_body(rows[:limit], serialize, has_more=len(rows) > limit)
