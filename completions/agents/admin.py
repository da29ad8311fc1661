"""Agents in the admin: the current configuration, edited through completions.agents.services
(a change writes the next version and reaches every process's cache, as the API's do), and the
versions, read-only, below it."""

from django.contrib import admin

from accounts.admin_workspaces import LiveWorkspaces, OwnerConstraints
from completions.agents import policy, services
from completions.agents.models import CONFIG_FIELDS, Agent, AgentVersion
from config.common.errors import DomainError


class AgentForm(OwnerConstraints):
    class Meta:
        model = Agent
        fields = ("workspace", *CONFIG_FIELDS)

    def clean(self):
        data = super().clean() or {}
        for field, check in policy.CHECKS.items():
            if field in data and field not in self.errors:
                try:
                    data[field] = check(data[field])
                except DomainError as exc:
                    self.add_error(field, exc.message)
        self._check_collections(data)
        self._check_memory_tools(data)
        return data

    def _check_memory_tools(self, data: dict) -> None:
        """The service's rule on the form: memory off only without memory built-in tools."""
        memory = data.get("memory")
        if "memory" in self.errors or not self.instance.pk or not isinstance(memory, dict):
            return
        if services.turns_memory_off(self.instance.memory, memory):
            try:
                services.memory_tools_check(
                    workspace=self.instance.workspace, agent_id=self.instance.pk
                )
            except DomainError as exc:
                self.add_error("memory", exc.message)

    def _check_collections(self, data: dict) -> None:
        """The collections are the workspace's (the service's rule, shown on the form): the
        service's refusal at save answered the page with a bare 404."""
        from memory.knowledge.search import collections_check

        workspace = data.get("workspace") or getattr(self.instance, "workspace", None)
        if "collection_ids" in self.errors or workspace is None:
            return
        try:
            collections_check(workspace=workspace, collection_ids=data.get("collection_ids") or [])
        except DomainError as exc:
            self.add_error("collection_ids", exc.message)


class AgentVersionInline(admin.TabularInline):
    model = AgentVersion
    fields = ("version", "name", "model", "instructions", "parameters", "memory", "created_at")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = False

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(Agent)
class AgentAdmin(LiveWorkspaces):
    form = AgentForm
    list_display = ("name", "model", "version", "workspace", "updated_at")
    search_fields = ("name", "id", "model", "workspace__name", "workspace__id")
    readonly_fields = ("id", "version", "created_at", "updated_at")
    inlines = [AgentVersionInline]

    def get_readonly_fields(self, request, obj=None):
        fixed = ("workspace",) if obj is not None else ()
        return (*fixed, *self.readonly_fields)

    def save_model(self, request, obj, form, change):
        values = {field: form.cleaned_data[field] for field in CONFIG_FIELDS}
        if change:
            saved = services.agent_update(workspace=obj.workspace, agent_id=obj.id, **values)
        else:
            saved = services.agent_create(workspace=obj.workspace, **values)
        obj.pk, obj.version = saved.pk, saved.version
        obj._state.adding = False

    def save_related(self, request, form, formsets, change):
        # Versions are written by the services, never from the page (the change message
        # reads what each formset saved: nothing).
        for formset in formsets:
            formset.new_objects, formset.changed_objects, formset.deleted_objects = [], [], []

    def delete_model(self, request, obj):
        services.agent_delete(workspace=obj.workspace, agent_id=obj.id)

    def delete_queryset(self, request, queryset):
        for agent in queryset.select_related("workspace"):
            self.delete_model(request, agent)
