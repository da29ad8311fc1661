import hmac
from dataclasses import dataclass
from datetime import datetime

from django.db.models import QuerySet

from accounts.keys import key_prefix, looks_like_key, peppered_digest
from accounts.models import ApiKey, Workspace
from config.common.errors import NotFound


@dataclass(frozen=True)
class KeyIdentity:
    workspace: Workspace
    key_id: str
    last_used_at: datetime | None


def api_key_authenticate(*, raw_key: str) -> KeyIdentity | None:
    """Look a key up by prefix, compare digests in constant time; None for anything invalid."""
    if not looks_like_key(raw_key):
        return None
    key = (
        ApiKey.objects.select_related("workspace")
        .filter(prefix=key_prefix(raw_key), revoked_at__isnull=True)
        .first()
    )
    if key is None or not hmac.compare_digest(key.digest, peppered_digest(raw_key)):
        return None
    return KeyIdentity(workspace=key.workspace, key_id=key.id, last_used_at=key.last_used_at)


def workspace_list() -> QuerySet[Workspace]:
    """Operators only: every workspace (the provisioning API's own scope) but those being
    deleted (services.workspace_delete_begin)."""
    return Workspace.objects.filter(deleted_at=None).order_by("created_at")


def workspace_get(*, workspace_id: str) -> Workspace:
    """A workspace not being deleted: one marked deleted is gone to the API."""
    return Workspace.objects.get(id=workspace_id, deleted_at=None)


def workspace_get_for_deletion(*, workspace_id: str) -> Workspace:
    """A workspace, being deleted or not: DELETE again while its deletion runs is answered as
    the first time (the deletion's state), until it is gone."""
    return Workspace.objects.get(id=workspace_id)


def api_key_list(*, workspace: Workspace) -> QuerySet[ApiKey]:
    return ApiKey.objects.filter(workspace=workspace).order_by("created_at")


def api_key_get(*, workspace: Workspace, key_id: str) -> ApiKey:
    """The 404 of DELETE (services.api_key_revoke): PATCH of an unknown key answered "No such
    api key." with no `param` (the URL names it key_id, not apikey_id)."""
    key = ApiKey.objects.filter(workspace=workspace, id=key_id).first()
    if key is None:
        raise NotFound(f"No API key '{key_id}'.", field="key_id")
    return key
