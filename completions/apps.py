from django.apps import AppConfig


class CompletionsConfig(AppConfig):
    name = "completions"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Celery beat's tick (memory.sweep_jobs) stands outside tasks.py: register it.
        from completions import sweep  # noqa: F401
