"""Provider credentials (write-only secrets), model aliases and read-only usage in the admin."""

from django import forms
from django.contrib import admin

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

    def save(self, commit=True):
        credential = super().save(commit=False)
        if self.cleaned_data.get("secret"):
            credential.set_secret(self.cleaned_data["secret"])
        if commit:
            credential.save()
        return credential


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


@admin.register(ModelAlias)
class ModelAliasAdmin(admin.ModelAdmin):
    list_display = ("alias", "target_model", "provider", "workspace", "created_at")
    list_filter = ("provider",)
    search_fields = ("alias", "target_model", "workspace__name", "workspace__id")


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
