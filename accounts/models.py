from functools import partial

from django.db import models

from config.common.ids import new_id


class Workspace(models.Model):
    """A tenant: every row Engram stores belongs to exactly one workspace."""

    id = models.CharField(
        primary_key=True, max_length=40, default=partial(new_id, "ws"), editable=False
    )
    name = models.CharField(max_length=200)
    created_at = models.DateTimeField(auto_now_add=True)
    # Set by DELETE /v1/workspaces/{id} (accounts.services.workspace_delete_begin): its keys
    # are gone and it is hidden; a task deletes its rows, then the row itself.
    deleted_at = models.DateTimeField(null=True, blank=True, editable=False)
    # When its deletion was last sent to a worker: the sweep sends it again when it is old.
    deletion_sent_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["created_at"]
        indexes = [
            models.Index(
                fields=["deletion_sent_at"],
                name="workspace_being_deleted",
                condition=models.Q(deleted_at__isnull=False),
            )
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.id})"


class ApiKey(models.Model):
    """A workspace key: shown once; stored as a lookup prefix plus an HMAC-SHA-256 digest."""

    id = models.CharField(
        primary_key=True, max_length=40, default=partial(new_id, "key"), editable=False
    )
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=200, blank=True, default="")
    prefix = models.CharField(max_length=16, unique=True, editable=False)
    digest = models.CharField(max_length=64, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at"]

    def __str__(self) -> str:
        return f"{self.name or 'key'} ({self.prefix}…)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


from accounts.endusers.models import Issuer  # noqa: E402, F401  (the accounts app's models)
