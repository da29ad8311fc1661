"""Limits, budgets and credit units in the admin. Every save and delete voids the key cache of
every process (where the request path reads limits), as the provisioning API's writes do."""

from django import forms
from django.contrib import admin

from accounts.admin_workspaces import LiveWorkspaces
from accounts.authentication import keys_changed
from accounts.limits.models import CreditUnit, Limit, Subject
from accounts.limits.services import budget_count_restart, budget_counts_restart


class VoidsKeyCache(LiveWorkspaces):
    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        keys_changed()

    def delete_model(self, request, obj):
        super().delete_model(request, obj)
        keys_changed()

    def delete_queryset(self, request, queryset):
        super().delete_queryset(request, queryset)
        keys_changed()


LIMIT_FIELDS = (
    "workspace",
    "subject",
    "api_key",
    "rpm",
    "tpm",
    "max_concurrent",
    "budget_credits",
    "budget_period",
)


class LimitForm(forms.ModelForm):
    class Meta:
        model = Limit
        fields = LIMIT_FIELDS

    def clean(self):
        data = super().clean() or {}
        key, workspace = data.get("api_key"), data.get("workspace")
        # The request path reads a key's limit in the key's own workspace: one saved under
        # another never applied, and then held the key's one limit, so the API's PUT of that
        # key's limit failed on the unique constraint (a 500).
        if key is not None and workspace is not None and key.workspace_id != workspace.pk:
            self.add_error("api_key", "The API key belongs to another workspace.")
        # The constraints said as what to do: the page read only "Constraint
        # “api_key_iff_key_subject” is violated." (a field in error leaves its constraint out).
        subject = data.get("subject")
        if subject == Subject.API_KEY and key is None:
            self.add_error("api_key", "A limit of an API key names the key.")
        elif subject and subject != Subject.API_KEY and key is not None:
            self.add_error("api_key", "Only a limit of an API key names one: leave it empty.")
        elif subject and workspace is not None and key is None:
            taken = Limit.objects.filter(workspace=workspace, subject=subject, api_key=None)
            if taken.exclude(pk=self.instance.pk).exists():
                self.add_error(
                    "subject",
                    f"This workspace has a limit for “{Subject(subject).label}” already: "
                    "change that one.",
                )
        return data


@admin.register(Limit)
class LimitAdmin(VoidsKeyCache):
    form = LimitForm

    list_display = LIMIT_FIELDS
    list_filter = ("subject", "budget_period")
    search_fields = ("workspace__name", "workspace__id", "api_key__id")
    raw_id_fields = ("workspace", "api_key")

    def save_model(self, request, obj, form, change):
        # As the API (services.limit_update): a row moved to another subject counts anew too.
        moved = {"workspace", "subject", "api_key"} & set(form.changed_data)
        had_budget = change and not moved and form.initial.get("budget_credits") is not None
        budget_count_restart(
            obj, had_budget=had_budget, period=form.initial.get("budget_period", "")
        )
        super().save_model(request, obj, form, change)


@admin.register(CreditUnit)
class CreditUnitAdmin(VoidsKeyCache):
    list_display = ("workspace", "name", "per_usd")
    raw_id_fields = ("workspace",)

    # As the API (services.credit_unit_update): a new value of a credit counts the budgets
    # again, what was spent converted to it.
    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        if {"per_usd", "workspace"} & set(form.changed_data):
            budget_counts_restart(workspace=obj.workspace)

    def delete_model(self, request, obj):
        super().delete_model(request, obj)
        budget_counts_restart(workspace=obj.workspace)

    def delete_queryset(self, request, queryset):
        workspaces = [unit.workspace for unit in queryset]
        super().delete_queryset(request, queryset)
        for workspace in workspaces:
            budget_counts_restart(workspace=workspace)
