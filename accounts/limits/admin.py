"""Limits, budgets and credit units in the admin. Every save and delete voids the key cache of
every process (where the request path reads limits), as the provisioning API's writes do."""

from django.contrib import admin

from accounts.authentication import keys_changed
from accounts.limits.models import CreditUnit, Limit


class VoidsKeyCache(admin.ModelAdmin):
    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        keys_changed()

    def delete_model(self, request, obj):
        super().delete_model(request, obj)
        keys_changed()

    def delete_queryset(self, request, queryset):
        super().delete_queryset(request, queryset)
        keys_changed()


@admin.register(Limit)
class LimitAdmin(VoidsKeyCache):
    list_display = (
        "workspace",
        "subject",
        "api_key",
        "rpm",
        "tpm",
        "max_concurrent",
        "budget_credits",
        "budget_period",
    )
    list_filter = ("subject", "budget_period")
    search_fields = ("workspace__name", "workspace__id", "api_key__id")
    raw_id_fields = ("workspace", "api_key")


@admin.register(CreditUnit)
class CreditUnitAdmin(VoidsKeyCache):
    list_display = ("workspace", "name", "per_usd")
    raw_id_fields = ("workspace",)
