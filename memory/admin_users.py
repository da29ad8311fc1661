"""End users in the admin. There is no end-user model: a user is a `user_id` on a workspace's
rows, so these pages are views of the admin site (config.admin) rather than a ModelAdmin.

The list shows each (workspace, user) with counts; a user's page shows their memories,
conversations (with summaries) and sessions, and offers the JSON export and the deletion of
everything stored about them, which the API offers too (memory.export.user_export_response,
services.user_delete), behind a confirmation page.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, overload
from urllib.parse import urlencode

from django.contrib import admin, messages
from django.contrib.admin.utils import quote, unquote
from django.core.exceptions import PermissionDenied
from django.core.paginator import Page, Paginator
from django.db import connection
from django.db.models import Count, Max, QuerySet, Value
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBase, QueryDict
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, URLPattern, path, reverse
from django.utils.http import content_disposition_header

from accounts.models import Workspace
from completions.tools.models import Execution
from config.admin_paging import EXACT_UP_TO, planned_rows
from config.common.errors import NotFound
from memory import services
from memory.export import user_export_response
from memory.models import Conversation, Memory, MemoryEvent, Session

PER_PAGE = 100
SHOWN = 100  # of each kind of row on a user's page; the rest in the model's list
# What a user has, where their activity is dated.
_COUNTED = (
    (Memory, "memories", "updated_at"),
    # what a user's deleted memories said stays in their history until they are erased
    (MemoryEvent, "memory_events", "created_at"),
    (Conversation, "conversations", "updated_at"),
    (Session, "sessions", "last_active_at"),
    # an agent with memory off stores no conversation, but its runs keep the user's messages
    (Execution, "executions", "updated_at"),
)


def app_entry(request: HttpRequest) -> dict[str, Any] | None:
    """The "End users" line of the memory app on the admin index; None for a user who may not
    open the pages."""
    if not allowed(request, "view"):
        return None
    return {
        "name": "End users",
        "object_name": "EndUser",
        "admin_url": reverse("admin:memory_enduser_changelist"),
        "add_url": None,
        "view_only": True,
        "perms": {
            "add": False,
            "change": False,
            "delete": allowed(request, "delete"),
            "view": True,
        },
    }


# quote() leaves "." and "..", which the API takes as user ids: a browser resolves such a path
# segment away (/users/<ws>/../ is the list), and the user's page was out of reach. Their dots
# go as _2E, which quote() never writes (it writes "_" as _5F) and unquote() does not read.
_DOT = "_2E"


def user_url(workspace_id: str, user_id: str) -> str:
    segment = quote(user_id)
    if set(segment) == {"."}:
        segment = segment.replace(".", _DOT)
    return reverse("admin:memory_enduser_change", args=[workspace_id, segment])


class EndUsers(Sequence[dict[str, Any]]):
    """Every (workspace, user) with their counts, the most recently active first, grouped and
    paged by the database (a Paginator's object list: its length and slices). Grouped in Python,
    every page loaded every user: 1.2 s a page at 50,000 users, growing with them. Their exact
    number (`len`) is counted only when the planner expects few (config.admin_paging)."""

    def __init__(self, *, workspace_id: str = "", query: str = "") -> None:
        parts, self._params = [], []
        every: list[str] = []
        self._every_params: list[Any] = []
        for i, (model, _, dated) in enumerate(_COUNTED):
            rows = model._default_manager.exclude(user_id="")
            if workspace_id:
                rows = rows.filter(workspace_id=workspace_id)
            if query:
                rows = rows.filter(user_id__icontains=query)
            sql, params = rows.values("user_id").order_by().query.sql_with_params()
            every.append(f"({sql})")
            self._every_params.extend(params)
            counts: dict[str, Any] = {name: Value(0) for _, name, _ in _COUNTED}
            counts[_COUNTED[i][1]] = Count("pk")
            grouped = (
                rows.values("workspace_id", "user_id")
                .annotate(**counts, last=Max(dated))
                .order_by()
            )
            sql, params = grouped.query.sql_with_params()
            parts.append(f"({sql})")
            self._params.extend(params)
        self._union = " UNION ALL ".join(parts)
        self._every = " UNION ALL ".join(every)

    def at_most(self) -> int:
        """The planner's estimate of the rows grouped: there are no more users than these.
        (Its estimate of the users themselves, from each column's sampled statistics, came
        out below 10,000 at 51,000 users.)"""
        return planned_rows(self._every, self._every_params)

    def __len__(self) -> int:
        sql = f"SELECT count(DISTINCT (u.workspace_id, u.user_id)) FROM ({self._union}) u"
        with connection.cursor() as cursor:
            cursor.execute(sql, self._params)
            return cursor.fetchone()[0]

    @overload
    def __getitem__(self, index: int) -> dict[str, Any]: ...

    @overload
    def __getitem__(self, index: slice) -> list[dict[str, Any]]: ...

    def __getitem__(self, index: int | slice) -> dict[str, Any] | list[dict[str, Any]]:
        if isinstance(index, int):
            return self[index : index + 1][0]
        return self._window(index)

    def _window(self, window: slice) -> list[dict[str, Any]]:
        names = [name for _, name, _ in _COUNTED]
        sums = ", ".join(f"sum(u.{name})::bigint" for name in names)
        sql = (
            f"SELECT u.workspace_id, u.user_id, {sums}, max(u.last) AS last_active"
            f" FROM ({self._union}) u GROUP BY 1, 2 ORDER BY last_active DESC, 2 DESC"
            " LIMIT %s OFFSET %s"
        )
        start = window.start or 0
        with connection.cursor() as cursor:
            cursor.execute(sql, [*self._params, window.stop - start, start])
            rows = cursor.fetchall()
        return [
            {
                "workspace_id": row[0],
                "user_id": row[1],
                "url": user_url(row[0], row[1]),
                **dict(zip(names, row[2:-1], strict=True)),
                "last_active": row[-1],
            }
            for row in rows
        ]


@dataclass(frozen=True)
class Window:
    """A page of end users without their total: one row more than a page is read to know
    whether there is a next one."""

    number: int
    object_list: list[dict[str, Any]]
    has_next: bool

    @classmethod
    def of(cls, users: EndUsers, number: str | None) -> Window:
        n = int(number) if number and number.isdigit() and int(number) > 0 else 1
        rows = users[(n - 1) * PER_PAGE : n * PER_PAGE + 1]
        return cls(number=n, object_list=rows[:PER_PAGE], has_next=len(rows) > PER_PAGE)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.object_list)

    def has_previous(self) -> bool:
        return self.number > 1

    def next_page_number(self) -> int:
        return self.number + 1

    def previous_page_number(self) -> int:
        return self.number - 1


# A model's list filtered to one user's rows: the user's page links to it ("All 250 memories"),
# and a row's link from that page carries it as Django's preserved filters, which the row's
# change and delete pages keep (BackToUserPage reads them).
_USER_FILTERS = ("workspace__id__exact", "user_id")


def _section(rows: QuerySet, scope: dict[str, Any]) -> dict[str, Any]:
    """The first SHOWN of a user's rows, their count and the model's list filtered to them:
    a user with thousands of memories got a page of thousands of rows."""
    meta = rows.model._meta
    workspace_filter, user_filter = _USER_FILTERS
    query = urlencode({workspace_filter: scope["workspace"].pk, user_filter: scope["user_id"]})
    return {
        "rows": rows[:SHOWN],
        "count": rows.count(),
        "all_url": reverse(f"admin:{meta.app_label}_{meta.model_name}_changelist") + "?" + query,
        "row_query": urlencode({"_changelist_filters": query}),
    }


def user_page_of(request: HttpRequest) -> str | None:
    """The page of the user whose rows a request's preserved filters name (a row reached from
    that page, or from the list of that user's rows), else None."""
    filters = QueryDict(request.GET.get("_changelist_filters", ""))
    if set(filters) != set(_USER_FILTERS) or any(len(filters.getlist(k)) > 1 for k in filters):
        return None
    try:
        return user_url(filters["workspace__id__exact"], filters["user_id"])
    except NoReverseMatch:  # not an id (a "/" in it): Django's own answer, the model's list
        return None


class BackToUserPage(admin.ModelAdmin):
    """A row deleted from an end user's page goes back to that page: Django went to the list of
    every row of the model (every workspace's memories), and the user's were a search away."""

    def response_delete(self, request, obj_display, obj_id):
        response = super().response_delete(request, obj_display, obj_id)
        page = user_page_of(request)
        if page is not None and response.status_code == 302:
            response["Location"] = page
        return response


# A user's page shows (and their erasure deletes) these models' rows.
_HELD = ("memory", "conversation", "message", "session")


def allowed(request: HttpRequest, action: str) -> bool:
    """The permission on every kind of row the page shows or deletes: a staff user allowed to
    delete memories alone erased the user's conversations, messages and sessions too."""
    return request.user.has_perms([f"memory.{action}_{model}" for model in _HELD])


# What services.user_delete counts, in words: (one, many).
_WORDS = {
    "memories": ("memory", "memories"),
    "memory_events": ("memory event", "memory events"),
    "messages": ("message", "messages"),
    "conversations": ("conversation", "conversations"),
    "sessions": ("session", "sessions"),
    "executions": ("agent run", "agent runs"),
    "usage_records_pseudonymized": ("usage record pseudonymized", "usage records pseudonymized"),
}


def _counted(n: int, what: str) -> str:
    one, many = _WORDS.get(what, (what.replace("_", " "),) * 2)
    return f"{n} {one if n == 1 else many}"


def _check(request: HttpRequest, action: str) -> None:
    if not allowed(request, action):
        raise PermissionDenied


def _user(workspace_id: str, user: str) -> tuple[Workspace, str]:
    return get_object_or_404(Workspace, pk=workspace_id), unquote(user.replace(_DOT, "."))


def user_urls(site) -> list[URLPattern]:
    def list_view(request: HttpRequest) -> HttpResponse:
        _check(request, "view")
        # PostgreSQL refuses a NUL in a query (a 500): what no id or text holds goes
        workspace_id = request.GET.get("workspace", "").replace("\x00", "")
        query = request.GET.get("q", "").replace("\x00", "").strip()
        users = EndUsers(workspace_id=workspace_id, query=query)
        page: Page | Window
        if users.at_most() <= EXACT_UP_TO:
            page = Paginator(users, PER_PAGE).get_page(request.GET.get("p"))
            total = page.paginator.count
        else:  # counting them all took longer than the page (0.4 s at 51,000 users)
            page, total = Window.of(users, request.GET.get("p")), None
        context = {
            **site.each_context(request),
            "title": "End users",
            "page": page,
            "total": total,
            "query": query,
            "workspace_id": workspace_id,
            "workspaces": Workspace.objects.order_by("name"),
        }
        return TemplateResponse(request, "admin/memory/enduser/list.html", context)

    def detail_view(request: HttpRequest, workspace_id: str, user: str) -> HttpResponse:
        _check(request, "view")
        workspace, user_id = _user(workspace_id, user)
        scope = {"workspace": workspace, "user_id": user_id}
        conversations = (
            Conversation.objects.filter(**scope)
            .annotate(message_count=Count("messages"))
            .order_by("-updated_at")
        )
        sessions = (
            Session.objects.filter(**scope)
            .select_related("conversation")
            .order_by("-last_active_at")
        )
        context = {
            **site.each_context(request),
            "title": f"End user {user_id}",
            "workspace": workspace,
            "user_id": user_id,
            "memories": _section(Memory.objects.filter(**scope).order_by("-updated_at"), scope),
            "conversations": _section(conversations, scope),
            "sessions": _section(sessions, scope),
            "export_url": reverse("admin:memory_enduser_export", args=[workspace.pk, user]),
            # no link to a 403 for those who may look but not erase
            "delete_url": (
                reverse("admin:memory_enduser_delete", args=[workspace.pk, user])
                if allowed(request, "delete")
                else None
            ),
        }
        return TemplateResponse(request, "admin/memory/enduser/detail.html", context)

    def export_view(request: HttpRequest, workspace_id: str, user: str) -> HttpResponseBase:
        _check(request, "view")
        workspace, user_id = _user(workspace_id, user)
        try:
            response = user_export_response(workspace=workspace, user_id=user_id)
        except NotFound as exc:  # nothing stored (erased meanwhile): the admin's own 404
            raise Http404(exc.message) from exc
        # Django's header, not one written here: a user id beyond Latin-1 (kept from before
        # the rule, PathIdConverter) MIME-encoded the whole header, which no browser reads as
        # a name, and a line break in the URL's id was a 500 (BadHeaderError). With a file
        # name, as here, it always gives a header.
        filename = f"engram-{workspace.pk}-{quote(user_id)}.json"
        disposition = content_disposition_header(True, filename)
        assert disposition is not None
        response["Content-Disposition"] = disposition
        return response

    def delete_view(request: HttpRequest, workspace_id: str, user: str) -> HttpResponse:
        _check(request, "delete")
        workspace, user_id = _user(workspace_id, user)
        if request.method == "POST":
            counts = services.user_delete(workspace=workspace, user_id=user_id)
            summary = ", ".join(_counted(n, what) for what, n in counts.items())
            messages.success(request, f"Deleted everything stored about {user_id}: {summary}.")
            return redirect(reverse("admin:memory_enduser_changelist"))
        scope = {"workspace": workspace, "user_id": user_id}
        context = {
            **site.each_context(request),
            "title": "Are you sure?",
            "workspace": workspace,
            "user_id": user_id,
            "counts": {name: m._default_manager.filter(**scope).count() for m, name, _ in _COUNTED},
            "cancel_url": user_url(workspace.pk, user_id),
        }
        return TemplateResponse(request, "admin/memory/enduser/delete.html", context)

    return [
        path("memory/users/", site.admin_view(list_view), name="memory_enduser_changelist"),
        path(
            "memory/users/<str:workspace_id>/<str:user>/",
            site.admin_view(detail_view),
            name="memory_enduser_change",
        ),
        path(
            "memory/users/<str:workspace_id>/<str:user>/export/",
            site.admin_view(export_view),
            name="memory_enduser_export",
        ),
        path(
            "memory/users/<str:workspace_id>/<str:user>/delete/",
            site.admin_view(delete_view),
            name="memory_enduser_delete",
        ),
    ]
