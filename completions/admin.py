"""Provider credentials (write-only secrets), model aliases and read-only usage in the admin.

Saves and deletes go through completions.services, as the API's do, so they invalidate the
cached routes the same way. A credential is known by (workspace, provider) and an alias by
(workspace, alias): those are fixed once the row exists (delete and add to change them).
"""

from django import forms
from django.contrib import admin

from completions import services
from completions.models import ModelAlias, ProviderCredential, UsageRecord


class ProviderCredentialForm(forms.ModelForm):
    secret = forms.CharField(
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="The provider's API key. Stored encrypted; leave blank to keep the current one.",
    )

    class Meta:
        model = ProviderCredential
        fields = ("workspace", "provider", "base_url")


def _adopt(obj, saved) -> None:
    """The admin goes on with `obj` (its messages, its redirect): make it the saved row."""
    obj.pk = saved.pk
    obj._state.adding = False


@admin.register(ProviderCredential)
class ProviderCredentialAdmin(admin.ModelAdmin):
    form = ProviderCredentialForm
    list_display = ("workspace", "provider", "base_url", "secret_hint", "updated_at")
    list_filter = ("provider",)
    search_fields = ("workspace__name", "workspace__id", "base_url")
    readonly_fields = ("secret_hint", "created_at", "updated_at")
    fields = (
        "workspace",
        "provider",
        "base_url",
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
        )
        _adopt(obj, saved)

    def delete_model(self, request, obj):
        services.provider_credential_delete(workspace=obj.workspace, provider=obj.provider)

    def delete_queryset(self, request, queryset):
        for credential in queryset.select_related("workspace"):
            self.delete_model(request, credential)


@admin.register(ModelAlias)
class ModelAliasAdmin(admin.ModelAdmin):
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


@admin.register(UsageRecord)
class UsageRecordAdmin(admin.ModelAdmin):
    list_display = (
        "created_at",
        "workspace",
        "model",
        "provider",
        "status_code",
        "prompt_tokens",
        "completion_tokens",
        "latency_ms",
        "stream",
    )
    list_filter = ("provider", "status_code", "stream", "incomplete")
    search_fields = ("request_id", "client_request_id", "model", "workspace__id")
    date_hierarchy = "created_at"

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
