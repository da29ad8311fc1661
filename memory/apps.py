from django.apps import AppConfig


class MemoryConfig(AppConfig):
    name = "memory"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Sub-packages' admin and Celery tasks: knowledge collections, conversation titles.
        from memory.background import titles  # noqa: F401
        from memory.knowledge import admin, tasks  # noqa: F401
