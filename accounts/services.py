from dataclasses import dataclass

from django.db import transaction
from django.utils import timezone

from accounts import deletion
from accounts.authentication import keys_changed
from accounts.endusers.models import Issuer
from accounts.endusers.tokens import issuers_changed
from accounts.keys import generate_key, key_digest, key_prefix
from accounts.models import ApiKey, Workspace
from config.common.errors import NotFound
from config.common.rows import lock_if_present


@dataclass(frozen=True)
class CreatedKey:
    api_key: ApiKey
    raw_key: str  # the only time the secret exists outside the caller's hands


@transaction.atomic
def workspace_create(*, name: str) -> Workspace:
    return Workspace.objects.create(name=name)


@transaction.atomic
def workspace_rename(*, workspace: Workspace, name: str) -> Workspace:
    workspace.name = name
    workspace.save(update_fields=["name"])
    keys_changed()  # the key cache holds the workspace row
    return workspace


def workspace_delete(*, workspace: Workspace) -> None:
    """Delete a workspace and everything it owns; its keys stop working on every process at once.

    Three steps, each its own transaction (none when called inside one, as the admin does):
    its keys and token issuers go first, so nothing new comes in; then its rows, table by table
    in batches (accounts.deletion: nothing is loaded, no lock is held for long); then, with its
    row locked, what was written meanwhile and the workspace itself. Interrupted, it is safe to
    call again: it goes on where it stopped.

    The row lock (config.common.rows.lock_if_present) settles a row of the workspace written
    meanwhile (a usage flush, a turn already past its key check): it either committed before the
    last step, and is deleted with the rest, or waits for it and then fails its own foreign key
    (completions.usage drops such a record). Without the lock, a row committed between the
    collection and the workspace's own delete failed the deletion's commit: a 500
    (tests/test_accounts.py).
    """
    with transaction.atomic():
        if not lock_if_present(workspace):
            return  # deleted meanwhile, by a deletion that tells the caches itself
        deletion.doors_delete(workspace_id=workspace.pk, doors=(ApiKey, Issuer))
        keys_changed()
        issuers_changed()  # its end users' tokens too
    deletion.rows_delete(workspace_id=workspace.pk, batch=deletion.BATCH_ROWS)
    with transaction.atomic():
        if not lock_if_present(workspace):
            return
        deletion.rows_delete(workspace_id=workspace.pk, batch=None)
        Workspace.objects.filter(pk=workspace.pk)._raw_delete(Workspace.objects.db)
        keys_changed()  # a key made meanwhile
        issuers_changed()


@transaction.atomic
def api_key_create(*, workspace: Workspace, name: str = "") -> CreatedKey:
    raw = generate_key()
    key = ApiKey.objects.create(
        workspace=workspace, name=name, prefix=key_prefix(raw), digest=key_digest(raw)
    )
    return CreatedKey(api_key=key, raw_key=raw)


@transaction.atomic
def api_key_revoke(*, workspace: Workspace, key_id: str) -> ApiKey:
    key = ApiKey.objects.select_for_update().filter(workspace=workspace, id=key_id).first()
    if key is None:
        raise NotFound(f"No API key '{key_id}'.", field="key_id")
    if key.revoked_at is None:
        key.revoked_at = timezone.now()
        key.save(update_fields=["revoked_at"])
        keys_changed()
    return key


@transaction.atomic
def api_key_delete(*, workspace: Workspace, key_id: str) -> None:
    """Delete a key (revoking keeps its row); it stops working on every process at once."""
    ApiKey.objects.filter(workspace=workspace, id=key_id).delete()
    keys_changed()


def api_key_touch(*, key_id: str) -> None:
    """Record use; called at most once a minute per key per process (see authentication)."""
    ApiKey.objects.filter(id=key_id).update(last_used_at=timezone.now())
