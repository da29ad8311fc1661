"""Routing changes made in this process take effect at once (others: within the cache TTL)."""

from django.db.models.signals import post_delete, post_save


def _invalidate(sender, instance, **kwargs):
    from completions.routing import invalidate

    invalidate(instance.workspace_id)


def connect() -> None:
    from completions.models import ModelAlias, ProviderCredential

    for model in (ModelAlias, ProviderCredential):
        post_save.connect(_invalidate, sender=model, dispatch_uid=f"routing-{model.__name__}")
        post_delete.connect(_invalidate, sender=model, dispatch_uid=f"routing-del-{model.__name__}")
