"""Admin lists of tables that grow with use (messages, memories, usage, end users): paged
without counting every row on every page.

A page of Django's change list ran `SELECT COUNT(*)` over the filtered rows and, for "N total",
once more over all of them; the end-user list counted every (workspace, user) pair: 0.4 s a
page at 51,000 users, growing with them. Above EXACT_UP_TO rows the planner's estimate (what
`EXPLAIN` expects the query to return: the table's statistics, no rows read) is shown instead,
as "about N"; below it the count is exact, so a filter down to a few rows shows their number.
"""

from __future__ import annotations

import json
from functools import cached_property
from typing import Any

from django.contrib import admin
from django.core.exceptions import EmptyResultSet
from django.core.paginator import Paginator
from django.db import connection
from django.db.models import QuerySet

# An exact count of this many rows takes a few milliseconds (the end-user list's grouped
# count: 0.4 s at 51,000 users, ~80 ms at 10,000).
EXACT_UP_TO = 10_000


def planned_rows(sql: str, params: Any) -> int:
    """How many rows PostgreSQL's planner expects `sql` to return."""
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}", params)
        plan = cursor.fetchone()[0]
    if isinstance(plan, str):  # psycopg returns the json as text on some versions
        plan = json.loads(plan)
    return int(plan[0]["Plan"]["Plan Rows"])


class EstimatingPaginator(Paginator):
    """A Paginator whose `count` is the planner's estimate above EXACT_UP_TO rows (then
    `estimated` is True). Its object list is a QuerySet or has `counted_sql()` (the SQL whose
    rows are counted, and its parameters)."""

    estimated = False

    @cached_property
    def count(self) -> int:
        rows = self.object_list
        if isinstance(rows, QuerySet):
            try:
                sql, params = rows.order_by().query.sql_with_params()
            except EmptyResultSet:  # a filter no row can match (.none())
                return 0
        else:
            sql, params = rows.counted_sql()  # type: ignore[attr-defined]
        planned = planned_rows(sql, params)
        if planned <= EXACT_UP_TO:
            return Paginator.count.func(self)  # type: ignore[attr-defined]
        self.estimated = True
        return planned


class LargeList(admin.ModelAdmin):
    """A ModelAdmin over a table that grows with use: no count of every row on each page, and
    none of `list_defer`'s columns read for its list (embeddings, request bodies)."""

    paginator = EstimatingPaginator
    show_full_result_count = False
    list_defer: tuple[str, ...] = ()

    def get_queryset(self, request):
        rows = super().get_queryset(request)
        match = request.resolver_match
        if self.list_defer and match and (match.url_name or "").endswith("_changelist"):
            rows = rows.defer(*self.list_defer)
        return rows
