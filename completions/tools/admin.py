"""Tools, executions and approvals in the admin. A tool is edited through completions.tools.
services (the same checks and cache invalidation as the API); its header values are write-only:
the page shows their names, and a blank headers field keeps the stored ones while the URL
stays on the same host. Executions and approvals are read-only records."""

import json

from django import forms
from django.contrib import admin

from accounts.admin_workspaces import LiveWorkspaces, OwnerConstraints
from completions.tools import services
from completions.tools.models import Approval, Execution, Tool
from config.admin_paging import LargeList
from config.common import addresses
from config.common.errors import DomainError

_FIELD_OF = {
    "http.url": "http_url",
    "http.method": "http_method",
    "http": "http_url",
    "type": "kind",
}


class ToolForm(OwnerConstraints):
    owner_fields = ("workspace", "agent")

    headers = forms.JSONField(
        required=False,
        help_text='{"Header-Name": "value"}; values are encrypted and never shown again. '
        "Leave blank to keep the stored headers (while the URL stays on the same host).",
    )

    class Meta:
        model = Tool
        fields = (
            "workspace",
            "agent",
            "name",
            "description",
            "parameters",
            "kind",
            "builtin",
            "http_url",
            "http_method",
            "approval",
            "approval_ttl_seconds",
            "timeout_seconds",
        )

    def values(self) -> dict:
        data = self.cleaned_data
        values = {
            "name": data["name"],
            "description": data.get("description") or "",
            "parameters": data.get("parameters") or None,
            "type": data["kind"],
            "approval": data.get("approval") or "never",
            "approval_ttl_seconds": data["approval_ttl_seconds"],
            "timeout_seconds": data["timeout_seconds"],
        }
        if data["kind"] == Tool.Kind.HTTP:
            headers = data.get("headers")
            if headers is None and self.instance.pk:
                headers = services.headers_of(self.instance)
            values["http"] = {
                "url": data.get("http_url") or "",
                "method": data.get("http_method") or "POST",
                "headers": headers or {},
            }
        else:
            values["builtin"] = data.get("builtin") or ""
        return values

    def clean(self):
        data = super().clean() or {}
        if self.errors:
            return data
        agent = data.get("agent")
        if (
            agent is not None
            and data.get("workspace")
            and agent.workspace_id != data["workspace"].id
        ):
            self.add_error("agent", "The agent belongs to another workspace.")
        if (
            self.instance.pk
            and data.get("headers") is None
            and services.headers_of(self.instance)
            and addresses.origin(data.get("http_url") or "")
            != addresses.origin(self.instance.http_url)
        ):  # as the API: stored secrets never follow the URL to another host
            self.add_error("headers", "The URL moves to another host: enter the headers again.")
            return data
        try:
            if agent is None and self.instance.agent_id:  # a change: the agent is read-only
                agent = self.instance.agent
            services.tool_validate(
                values=self.values(), agent=agent, adding=self.instance._state.adding
            )
        except DomainError as exc:
            field = _FIELD_OF.get(exc.field or "", exc.field)
            self.add_error(field if field in self.fields else None, exc.message)
        return data


@admin.register(Tool)
class ToolAdmin(LiveWorkspaces):
    form = ToolForm
    list_display = ("name", "kind", "agent", "approval_display", "workspace", "updated_at")
    search_fields = ("name", "id", "agent__name", "agent__id", "workspace__name")
    readonly_fields = ("id", "header_names", "created_at", "updated_at")

    def get_readonly_fields(self, request, obj=None):
        # A tool (and its encrypted headers) stays with the workspace and agent it was made
        # for: moved, one tenant's agent would call with another tenant's credentials.
        fixed = ("workspace", "agent") if obj is not None else ()
        return (*fixed, *self.readonly_fields)

    @admin.display(description="approval")
    def approval_display(self, obj):
        return obj.approval if isinstance(obj.approval, str) else json.dumps(obj.approval)

    @admin.display(description="stored headers")
    def header_names(self, obj):
        return ", ".join(services.headers_of(obj)) or "—"

    def save_model(self, request, obj, form, change):
        if change:
            saved = services.tool_update(workspace=obj.workspace, tool=obj, values=form.values())
        else:
            saved = services.tool_create(
                workspace=obj.workspace, agent_id=obj.agent_id, values=form.values()
            )
        obj.pk = saved.pk
        obj._state.adding = False

    def delete_model(self, request, obj):
        services.tool_delete(workspace=obj.workspace, tool=obj)

    def delete_queryset(self, request, queryset):
        # through the service, as one delete is: every process forgets the agent's tools
        for tool in queryset.select_related("workspace"):
            self.delete_model(request, tool)


# What an execution's list (and its approvals') never shows: the prompt, context and steps,
# which can run to megabytes a row.
_EXECUTION_BODY = ("body", "messages", "steps", "pending", "usage")


class _ReadOnly(LargeList):
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(Execution)
class ExecutionAdmin(_ReadOnly):
    list_display = ("id", "agent_id", "status", "user_id", "workspace", "created_at")
    list_filter = ("status",)
    search_fields = ("id", "agent_id", "user_id", "request_id")
    exclude = ("messages", "body")  # the prompt and context: the steps say what happened
    list_defer = _EXECUTION_BODY


@admin.register(Approval)
class ApprovalAdmin(_ReadOnly):
    list_display = ("id", "execution", "status", "user_id", "expires_at", "decided_at")
    list_select_related = ("execution",)
    list_defer = tuple(f"execution__{name}" for name in _EXECUTION_BODY)
    list_filter = ("status",)
    search_fields = ("id", "execution__id", "user_id")
