"""Provider credentials (write-only secrets), model aliases and read-only usage (with totals
for the current filter) in the admin.

Saves and deletes go through completions.services, as the API's do, so they invalidate the
cached routes the same way. A credential is known by (workspace, provider) and an alias by
(workspace, alias): those are fixed once the row exists (delete and add to change them).
"""

from django import forms
from django.contrib import admin
from django.db.models import OuterRef, Subquery
from django.template.response import TemplateResponse

from accounts.admin_workspaces import LiveWorkspaces
from accounts.models import ApiKey
from completions import pricing, services
from completions.models import (
    Dialect,
    ModelAlias,
    Price,
    Provider,
    ProviderCredential,
    UsageRecord,
)
from completions.selectors import usage_figures
from config.admin_paging import LargeList, choices_filter
from config.admin_save import RefusalsOnTheForm
from config.common import addresses
from config.common.ids import is_id


class ProviderCredentialForm(forms.ModelForm):
    secret = forms.CharField(
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="The provider's API key. Stored encrypted; leave blank to keep the current one.",
    )

    class Meta:
        model = ProviderCredential
        fields = ("workspace", "provider", "base_url", "dialect")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if "dialect" in self.fields:  # a form posted without it (a script) keeps the row's
            self.fields["dialect"].required = False

    def clean_dialect(self) -> str:
        return self.cleaned_data.get("dialect") or self.instance.dialect or Dialect.AUTO

    def clean(self):
        data = super().clean() or {}
        stored = self.instance.pk and self.instance.secret_encrypted
        if (
            stored
            and not data.get("secret")
            and "base_url" in data
            and addresses.origin(data["base_url"] or "") != addresses.origin(self.instance.base_url)
        ):  # as a tool's headers: a stored key never follows the URL to another host, where
            # whoever may edit the row (and never see the key) would have read it
            self.add_error("secret", "The base URL moves to another host: enter the key again.")
        return data


def _adopt(obj, saved) -> None:
    """The admin goes on with `obj` (its messages, its redirect): make it the saved row."""
    obj.pk = saved.pk
    obj._state.adding = False


@admin.register(ProviderCredential)
class ProviderCredentialAdmin(LiveWorkspaces):
    form = ProviderCredentialForm
    list_display = ("workspace", "provider", "base_url", "dialect", "secret_hint", "updated_at")
    list_filter = ("provider",)
    search_fields = ("workspace__name", "workspace__id", "base_url")
    readonly_fields = ("secret_hint", "created_at", "updated_at")
    fields = (
        "workspace",
        "provider",
        "base_url",
        "dialect",
        "secret",
        "secret_hint",
        "created_at",
        "updated_at",
    )

    def get_readonly_fields(self, request, obj=None):
        fixed = ("workspace", "provider") if obj is not None else ()
        return (*fixed, *self.readonly_fields)

    def save_model(self, request, obj, form, change):
        saved = services.provider_credential_set(
            workspace=obj.workspace,
            provider=obj.provider,
            secret=form.cleaned_data.get("secret") or None,  # blank keeps the current one
            base_url=obj.base_url,
            dialect=obj.dialect,
        )
        _adopt(obj, saved)

    def delete_model(self, request, obj):
        services.provider_credential_delete(workspace=obj.workspace, provider=obj.provider)

    def delete_queryset(self, request, queryset):
        for credential in queryset.select_related("workspace"):
            self.delete_model(request, credential)


@admin.register(ModelAlias)
class ModelAliasAdmin(LiveWorkspaces):
    list_display = ("alias", "target_model", "provider", "workspace", "created_at")
    list_filter = ("provider",)
    search_fields = ("alias", "target_model", "workspace__name", "workspace__id")
    fields = ("workspace", "alias", "target_model", "provider")

    def get_readonly_fields(self, request, obj=None):
        return ("workspace", "alias") if obj is not None else ()

    def save_model(self, request, obj, form, change):
        saved = services.model_alias_set(
            workspace=obj.workspace,
            alias=obj.alias,
            target_model=obj.target_model,
            provider=obj.provider,
        )
        _adopt(obj, saved)

    def delete_model(self, request, obj):
        services.model_alias_delete(workspace=obj.workspace, alias=obj.alias)

    def delete_queryset(self, request, queryset):
        for alias in queryset.select_related("workspace"):
            self.delete_model(request, alias)


def _by_id(queryset, field: str, value: str | None):
    """The rows of one id typed or pasted in the URL; none for what no id can be (a NUL made
    PostgreSQL refuse the query: a 500)."""
    if not value:
        return queryset
    return queryset.filter(**{field: value}) if is_id(value) else queryset.none()


class EndUserFilter(admin.SimpleListFilter):
    """A text box: end users are too many to list as links."""

    title = "end user"
    parameter_name = "user"
    template = "admin/completions/input_filter.html"

    def lookups(self, request, model_admin):
        return [("", "")]  # one placeholder choice, so the filter is shown

    def queryset(self, request, queryset):
        return _by_id(queryset, "user_id", self.value())

    def choices(self, changelist):
        kept = {k: v for k, v in changelist.params.items() if k != self.parameter_name}
        yield {
            "value": self.value() or "",
            "hidden": sorted(kept.items()),
            "clear": changelist.get_query_string(remove=[self.parameter_name]),
        }


class ApiKeyFilter(admin.SimpleListFilter):
    title = "API key"
    parameter_name = "key"

    def lookups(self, request, model_admin):
        keys = ApiKey.objects.order_by("workspace__name", "name")
        workspace = request.GET.get("workspace__id__exact")
        if workspace:
            keys = keys.filter(workspace_id=workspace)
        return [(key.id, str(key)) for key in keys[:200]]

    def queryset(self, request, queryset):
        return _by_id(queryset, "api_key_id", self.value())


def usage_totals(queryset) -> dict:
    """Requests, errors, tokens, credits and latency over the rows of the current filter (the
    figures of GET /v1/usage)."""
    totals = queryset.order_by().aggregate(**usage_figures(queryset))
    for name in ("latency_mean", "latency_p50", "latency_p95"):
        if totals[name] is not None:
            totals[name] = round(totals[name])
    if totals["credits"] is not None:
        totals["credits"] = round(totals["credits"], 6)
    return totals


@admin.register(UsageRecord)
class UsageRecordAdmin(LargeList):
    """Read-only usage with totals for the current filter, credits included."""

    list_display = (
        "created_at",
        "workspace",
        "key",
        "user_id",
        "model",
        "status_code",
        "prompt_tokens",
        "completion_tokens",
        "total_tokens",
        "credits",
        "latency",
        "stream",
    )
    list_filter = (
        "workspace",
        ApiKeyFilter,
        EndUserFilter,
        "model",
        choices_filter("provider", Provider.choices),
        "status_code",
        "stream",
        "incomplete",
    )
    list_select_related = ("workspace",)
    search_fields = ("request_id", "client_request_id", "model", "user_id", "workspace__id")
    date_hierarchy = "created_at"
    readonly_fields = ("latency", "upstream")

    def get_queryset(self, request):
        keys = ApiKey.objects.filter(id=OuterRef("api_key_id"))
        return (
            super()
            .get_queryset(request)
            .annotate(
                key_name=Subquery(keys.values("name")[:1]),
                key_prefix=Subquery(keys.values("prefix")[:1]),
            )
        )

    @admin.display(description="key")
    def key(self, obj) -> str:
        if not obj.api_key_id:
            return "-"
        if obj.key_prefix is None:
            return obj.api_key_id  # deleted since
        return f"{obj.key_name or 'key'} ({obj.key_prefix}…)"

    @admin.display(description="latency", ordering="latency_ms")
    def latency(self, obj) -> str:
        return f"{round(obj.latency_ms)} ms"

    @admin.display(description="upstream latency")
    def upstream(self, obj) -> str:
        return "-" if obj.upstream_ms is None else f"{round(obj.upstream_ms)} ms"

    def changelist_view(self, request, extra_context=None):
        response = super().changelist_view(request, extra_context)
        if isinstance(response, TemplateResponse) and response.context_data:  # not a redirect
            changelist = response.context_data["cl"]
            response.context_data["totals"] = usage_totals(changelist.queryset)
        return response

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        # the truth of what was spent: budgets and GET /v1/usage count them (an erasure
        # pseudonymizes a user's records instead)
        return False


@admin.register(Price)
class PriceAdmin(RefusalsOnTheForm):
    """List prices per model; a change reaches every process's next request."""

    list_display = (
        "model",
        "input_per_million",
        "cached_input_per_million",
        "cache_write_per_million",
        "output_per_million",
    )
    search_fields = ("model",)

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        pricing.prices_changed()

    def delete_model(self, request, obj):
        super().delete_model(request, obj)
        pricing.prices_changed()

    def delete_queryset(self, request, queryset):
        super().delete_queryset(request, queryset)
        pricing.prices_changed()


from completions.agents import admin as _agents_admin  # noqa: E402, F401 - registers AgentAdmin
from completions.tools import admin as _tools_admin  # noqa: E402, F401 - registers ToolAdmin
