from django.apps import AppConfig


class MemoryConfig(AppConfig):
    name = "memory"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from config.common.health import register_warmup

        # Sub-packages' admin and Celery tasks: knowledge collections, conversation titles.
        from memory.background import titles  # noqa: F401
        from memory.knowledge import admin, tasks  # noqa: F401

        # /readyz loads the embedding model (ONNX, no torch) before it answers 200.
        register_warmup("embeddings", _warm_embedder)


def _warm_embedder() -> None:
    from memory.embeddings import get_embedder

    get_embedder().embed_one("warm-up")  # the first run also sizes ONNX Runtime's buffers
