"""Admin lists of tables that grow with use (messages, memories, usage, end users): paged
without counting every row on every page.

A page of Django's change list ran `SELECT COUNT(*)` over the filtered rows and, for "N total",
once more over all of them; the end-user list counted every (workspace, user) pair: 0.4 s a
page at 51,000 users, growing with them. Above EXACT_UP_TO rows the planner's estimate (what
`EXPLAIN` expects the query to return: the table's statistics, no rows read) is shown instead,
as "about N"; below it the count is exact, so a filter down to a few rows shows their number.
The end users, grouped from three tables, have no estimate worth showing: above EXACT_UP_TO
rows their list shows no total (memory.admin_users).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from functools import cached_property
from typing import Any

from django.contrib import admin
from django.core.exceptions import EmptyResultSet
from django.core.paginator import Paginator
from django.db import connection
from django.db.models import QuerySet

from config.admin_save import RefusalsOnTheForm

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
    """A Paginator of a QuerySet whose `count` is the planner's estimate above EXACT_UP_TO rows
    (then `estimated` is True)."""

    estimated = False

    @cached_property
    def count(self) -> int:
        rows: QuerySet = self.object_list  # type: ignore[assignment]
        try:
            sql, params = rows.order_by().query.sql_with_params()
        except EmptyResultSet:  # a filter no row can match (.none())
            return 0
        planned = planned_rows(sql, params)
        if planned <= EXACT_UP_TO:
            return Paginator.count.func(self)  # type: ignore[attr-defined]
        self.estimated = True
        return planned


class LargeList(RefusalsOnTheForm):
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


def choices_filter(field: str, choices: Iterable[tuple[str, str]]) -> type[admin.SimpleListFilter]:
    """A list filter offering fixed choices. Django's filter of a field declared without them
    read the field's every distinct value on each page: a scan of the table (0.3 s at 150,000
    memories, bench/bench_admin_lists.py)."""
    offered = list(choices)

    class ChoicesFilter(admin.SimpleListFilter):
        title = field.replace("_", " ")
        parameter_name = field

        def lookups(self, request, model_admin):
            return offered

        def queryset(self, request, queryset):
            value = self.value()
            return queryset.filter(**{field: value}) if value else queryset

    return ChoicesFilter
