from django.apps import AppConfig


class LimitsConfig(AppConfig):
    name = "accounts.limits"
    label = "limits"
    verbose_name = "Limits and budgets"
    default_auto_field = "django.db.models.BigAutoField"
