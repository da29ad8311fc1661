"""OpenAI-style lists: {"object": "list", "data": [...], "first_id", "last_id", "has_more"}.

Cursor pagination by id: Engram's ids sort by creation time, so `after=<id>` is stable.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from django.db.models import Q, QuerySet

from config.common.closed import repeated_fields_check, unknown_fields_check
from config.common.errors import ApiError
from config.common.ids import identifier

MAX_LIMIT = 100
LIST_PARAMS = ("limit", "order", "after", "before")


def parse_limit(raw: str | None, *, default: int = 20) -> int:
    if raw is None or raw == "":
        return default
    # ASCII digits only: int() also reads "+5", " 5" and "٣" (Arabic-Indic three).
    if not (raw.isascii() and raw.isdigit()):
        raise ApiError(400, "limit must be an integer.", param="limit", code="invalid_value")
    limit = int(raw)
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


@dataclass(frozen=True)
class Cursor:
    """A list request's `limit`, `order` (asc|desc), `after` and `before`."""

    limit: int
    order: str
    after: str | None
    before: str | None

    @property
    def directions(self) -> tuple[str, str]:
        """The lookups past `after` and before `before` in the list's order."""
        return ("gt", "lt") if self.order == "asc" else ("lt", "gt")

    def bounds(self, key: str) -> dict[str, str]:
        """Filter kwargs that keep `key` strictly after `after` and before `before`."""
        forward, backward = self.directions
        bounds = {}
        if self.after:
            bounds[f"{key}__{forward}"] = self.after
        if self.before:
            bounds[f"{key}__{backward}"] = self.before
        return bounds

    @property
    def backwards(self) -> bool:
        """`before` alone asks for the page just before it: read towards the list's start (in
        the reverse order), then turned back. With `after` too, the window is read forwards."""
        return bool(self.before) and not self.after

    def order_by(self, key: str) -> str:
        """The order to read `key` in: the list's, or its reverse for a page before a cursor."""
        return key if (self.order == "asc") != self.backwards else f"-{key}"

    def page(self, rows: list) -> tuple[list, bool]:
        """The page among `rows` (read with order_by, up to limit + 1), in the list's order, and
        whether more follow in the direction read (before the page, for `before`, as Stripe's
        `ending_before`)."""
        page = rows[: self.limit]
        if self.backwards:
            page.reverse()
        return page, len(rows) > self.limit


def parse_cursor(
    query_params,
    *,
    default_limit: int = 20,
    default_order: str = "desc",
    filters: Sequence[str] = (),
    repeatable: Sequence[str] = (),
) -> Cursor:
    """The one reader of the list parameters, as in OpenAI's list endpoints (a list whose rows
    came whole before it was paginated keeps its old order and as many rows as it can). A
    query parameter that is neither one of them nor one of the list's `filters` is a 400
    `unknown_parameter` naming it, as in a body: `?userid=alice` listed every user's memories,
    the misspelt filter ignored in silence. A parameter given twice is a 400 naming it, but for
    the filters in `repeatable` (`kind`): `?user_id=a&user_id=b` listed b's memories."""
    unknown_fields_check(query_params, (*LIST_PARAMS, *filters))
    repeated_fields_check(query_params, repeatable=repeatable)
    limit = parse_limit(query_params.get("limit"), default=default_limit)
    order = query_params.get("order", default_order)
    if order not in ("asc", "desc"):
        raise ApiError(400, "order must be 'asc' or 'desc'.", param="order", code="invalid_value")
    return Cursor(
        limit=limit,
        order=order,
        after=identifier(query_params.get("after"), "after"),
        before=identifier(query_params.get("before"), "before"),
    )


def _after_row(queryset: QuerySet, field: str, cursor_id: str, direction: str) -> Q:
    """The rows past the row `cursor_id` in (`field`, id) order, `direction` "gt" or "lt"; an
    id not in the list: the rows past it by id alone, as a list ordered by id reads it."""
    value = queryset.filter(id=cursor_id).values_list(field, flat=True).first()
    if value is None:
        return Q(**{f"id__{direction}": cursor_id})
    return Q(**{f"{field}__{direction}": value}) | Q(
        **{field: value, f"id__{direction}": cursor_id}
    )


def paginate(
    queryset: QuerySet,
    query_params,
    serialize: Callable,
    *,
    by: str | None = None,
    default_order: str = "desc",
    filters: Sequence[str] = (),
    repeatable: Sequence[str] = (),
) -> dict:
    """`limit`, `after`, `before` and `order` (asc|desc, `default_order` when not given) as in
    OpenAI's list endpoints; in id order, or with `by` in that field's order (ties by id), the
    cursors still ids: a conversation's messages read in the order they were said, which an
    import's `created_at` sets apart from the order they were stored in."""
    cursor = parse_cursor(
        query_params, default_order=default_order, filters=filters, repeatable=repeatable
    )
    if by is None:
        queryset = queryset.order_by(cursor.order_by("id"))
        bounded = queryset.filter(**cursor.bounds("id"))
    else:
        bounded = queryset.order_by(cursor.order_by(by), cursor.order_by("id"))
        forward, backward = cursor.directions
        if cursor.after:
            bounded = bounded.filter(_after_row(queryset, by, cursor.after, forward))
        if cursor.before:
            bounded = bounded.filter(_after_row(queryset, by, cursor.before, backward))
    page, has_more = cursor.page(list(bounded[: cursor.limit + 1]))
    return list_body(page, serialize, has_more=has_more)
