from django.apps import AppConfig


class MemoryConfig(AppConfig):
    name = "memory"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Knowledge collections live in a sub-package: register their admin and Celery tasks.
        from memory.knowledge import admin, tasks  # noqa: F401
        # Conversation titles' task (memory.background.titles).
        from memory.background import titles  # noqa: F401
