"""Issuers in the admin: saved through accounts.endusers.services (the API's rules, and every
process forgets its cached tokens); the HS256 secret is write-only."""

from django import forms
from django.contrib import admin

from accounts.admin_workspaces import LiveWorkspaces, OwnerConstraints
from accounts.endusers import services
from accounts.endusers.models import Issuer
from config.common.errors import DomainError


class IssuerForm(OwnerConstraints):
    hs256_secret = forms.CharField(
        required=False,
        widget=forms.PasswordInput(render_value=False),
        help_text="Leave empty to keep the stored secret (or, with a JWKS URL, to drop it); "
        "never shown.",
    )

    class Meta:
        model = Issuer
        fields = (
            "workspace",
            "issuer",
            "audiences",
            "jwks_url",
            "algorithms",
            "user_claim",
            "required_scope",
            "leeway_seconds",
        )

    def clean(self):
        data = super().clean() or {}
        fields = {k: data[k] for k in services.FIELDS if k in data and k != "hs256_secret"}
        if data.get("hs256_secret"):
            fields["hs256_secret"] = data["hs256_secret"]
        elif data.get("jwks_url"):
            # Keys from a URL now: the stored secret goes, as the API's `hs256_secret: null`.
            # Kept, no issuer with a secret could ever be moved to a JWKS here (write-only,
            # the secret had no way to be emptied: "exactly one" every time).
            fields["hs256_secret"] = ""
        self.changes = fields
        trial = Issuer(hs256_secret_encrypted=self.instance.hs256_secret_encrypted)
        services.apply(trial, {k: v for k, v in fields.items() if k != "workspace"})
        try:
            services.check(trial)  # the API's rules, shown on the form
        except DomainError as exc:
            raise forms.ValidationError(exc.message) from None
        return data


@admin.register(Issuer)
class IssuerAdmin(LiveWorkspaces):
    form = IssuerForm
    list_display = ("issuer", "workspace", "user_claim", "created_at")
    search_fields = ("issuer", "workspace__name", "workspace__id")
    readonly_fields = ("id", "created_at", "updated_at")

    def get_readonly_fields(self, request, obj=None):
        fixed = ("workspace",) if obj is not None else ()
        return (*fixed, *self.readonly_fields)

    def save_model(self, request, obj, form, change):
        changes = form.changes
        if change:  # a refusal is shown on the form (config.admin_save)
            saved = services.issuer_update(workspace=obj.workspace, issuer=obj, changes=changes)
        else:
            changes.pop("workspace", None)
            saved = services.issuer_create(workspace=obj.workspace, **changes)
        obj.pk = saved.pk

    def delete_model(self, request, obj):
        services.issuer_delete(workspace=obj.workspace, issuer=obj)

    def delete_queryset(self, request, queryset):
        for issuer in queryset.select_related("workspace"):
            self.delete_model(request, issuer)
